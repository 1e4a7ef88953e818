//! Serving `GET /metrics` from the poll loop, the way the control module
//! serves its stream clients: a non-blocking listener and a fixed number
//! of client places in the poll set polled every pass, each client with a
//! bounded request (`request::REQUEST_LIMIT`) and a deadline, its answer written
//! over as many passes as the client's reading takes. A client that sends
//! nothing, or junk without end, costs a place until its deadline and a
//! few KiB of memory, never the loop's time: nothing here blocks.
//!
//! A connection lives in three phases: reading the request (until
//! [`SCRAPE_DEADLINE`] after it was accepted), writing the answer (again
//! at most [`SCRAPE_DEADLINE`]), then, the answer out and our side shut,
//! reading and dropping what the client still sends for at most
//! [`LINGER`] (a close with unread data would reset the connection and
//! could destroy the answer before the client read it).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::request::{Decision, RequestReader};
use super::{render, Snapshot};
use crate::rtpp_log;
use crate::rtpp_network::{listen_tcp, out_of_files};
use crate::rtpp_poll::{Cadence, Owner, Poller, Token};
use crate::rtpp_session::Sessions;
use crate::rtpp_state::Daemon;

/// Scrapers served at once; more wait in the listen backlog. Prometheus
/// keeps one connection per target at a time, so four leave room for a
/// second server and a person with curl.
pub const MAX_SCRAPERS: usize = 4;
/// Connections the kernel keeps waiting for a place; past that it drops
/// new ones' SYNs, and their clients retry later.
const LISTEN_BACKLOG: i32 = 16;
/// How long a client may take to send its request, and again to read
/// the answer.
pub const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);
/// How long, after the answer, what the client still sends is read and
/// dropped before the connection closes.
pub const LINGER: Duration = Duration::from_secs(1);
/// And at most this much of it.
const LINGER_DISCARD: usize = 64 * 1024;
/// How long the listener rests when no descriptor is left to accept with.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics listener and its clients.
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    /// The listener's registration.
    socket: Option<Token>,
    /// One registration per client place, kept while the place is free
    /// (descriptor -1), so taking a client never needs a new poll entry.
    places: Vec<Token>,
    scrapers: Vec<Option<Scraper>>,
    /// The listener is out of the poll set until then (accept(2) failed
    /// for want of a descriptor; polling it would spin).
    paused_until: Option<Instant>,
    /// The exposition text, kept to reuse its allocation.
    body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Writing,
    Lingering,
}

struct Scraper {
    stream: TcpStream,
    from: SocketAddr,
    request: RequestReader,
    /// The answer; `out[written..]` is still owed.
    out: Vec<u8>,
    written: usize,
    phase: Phase,
    /// The phase ends then, and the connection with it.
    deadline: Instant,
    /// Bytes dropped while lingering.
    discarded: usize,
}

impl MetricsServer {
    /// Listens on `addr` (not yet polled: see [`MetricsServer::register`]).
    pub fn open(addr: SocketAddr) -> io::Result<MetricsServer> {
        let listener = listen_tcp(addr, Some(LISTEN_BACKLOG))?;
        let addr = listener.local_addr()?;
        Ok(MetricsServer {
            listener,
            addr,
            socket: None,
            places: Vec::new(),
            scrapers: (0..MAX_SCRAPERS).map(|_| None).collect(),
            paused_until: None,
            body: String::new(),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers the listener and the (empty) client places, polled every
    /// pass, so a scrape is answered in the pass it arrives in; false when
    /// the poll set has no room for them.
    pub fn register(&mut self, poller: &mut Poller) -> bool {
        if !poller.has_room(MAX_SCRAPERS + 1) {
            return false;
        }
        for i in 0..MAX_SCRAPERS {
            match poller.register(-1, Owner::Metrics(1 + i), Cadence::EveryPass) {
                Some(t) => self.places.push(t),
                None => return false,
            }
        }
        let fd = self.listener.as_raw_fd();
        self.socket = poller.register(fd, Owner::Metrics(0), Cadence::EveryPass);
        self.socket.is_some()
    }

    /// Serves whatever is ready: reads requests, answers them, closes
    /// clients that are done or past their deadline, lets waiting ones in.
    pub fn serve(&mut self, daemon: &mut Daemon, sessions: &Sessions, now: Instant) {
        let Some(socket) = self.socket else {
            return;
        };
        let mut rendered = false;
        for (slot, &place) in self.scrapers.iter_mut().zip(&self.places) {
            let Some(scraper) = slot else { continue };
            let ready = daemon.poller.is_ready(place);
            if !ready && now < scraper.deadline {
                continue;
            }
            let mut keep = scraper.step(ready, now);
            if let Some(decision) = scraper.decided().filter(|_| keep) {
                if decision == Decision::Metrics && !rendered {
                    // Once per pass, however many scrapes it answers.
                    rendered = true;
                    let snapshot = Snapshot {
                        counters: &sessions.counters(&daemon.counters),
                        active: sessions.active(),
                        draining: daemon.draining,
                        metrics: &daemon.metrics,
                    };
                    render(&mut self.body, &snapshot);
                }
                keep = scraper.answer(decision, &self.body, now);
            }
            if keep {
                let (input, output) = scraper.interest();
                daemon.poller.set_interest(place, input, output);
            } else {
                rtpp_log!(Dbug, "metrics client {} closed", scraper.from);
                daemon.poller.set_fd(place, -1);
                *slot = None;
            }
        }
        let ready = daemon.poller.is_ready(socket);
        self.accept_ready(socket, ready, &mut daemon.poller, now);
    }

    /// When the loop must wake for a client's deadline or the listener's
    /// pause.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.scrapers
            .iter()
            .flatten()
            .map(|s| s.deadline)
            .chain(self.paused_until)
            .min()
    }

    /// Takes waiting connections into free places; leaves the listener
    /// out of the poll set while every place is taken (waiting
    /// connections keep it readable, and polling it would spin) or while
    /// descriptors are out.
    fn accept_ready(&mut self, socket: Token, ready: bool, poller: &mut Poller, now: Instant) {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        if ready && self.paused_until.is_none() {
            self.accept_clients(poller, now);
        }
        let full = self.scrapers.iter().all(Option::is_some);
        let fd = if full || self.paused_until.is_some() {
            -1
        } else {
            self.listener.as_raw_fd()
        };
        poller.set_fd(socket, fd);
    }

    fn accept_clients(&mut self, poller: &mut Poller, now: Instant) {
        for (slot, &place) in self.scrapers.iter_mut().zip(&self.places) {
            if slot.is_some() {
                continue;
            }
            let (stream, from) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if out_of_files(&e) => {
                    rtpp_log!(
                        Err,
                        "can't accept a metrics connection: out of file descriptors (see -L)"
                    );
                    self.paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
                Err(_) => return,
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            // The answer is one write the client waits for.
            let _ = stream.set_nodelay(true);
            rtpp_log!(Dbug, "metrics client {from} connected");
            poller.set_fd(place, stream.as_raw_fd());
            *slot = Some(Scraper {
                stream,
                from,
                request: RequestReader::default(),
                out: Vec::new(),
                written: 0,
                phase: Phase::Reading,
                deadline: now + SCRAPE_DEADLINE,
                discarded: 0,
            });
        }
    }
}

impl Scraper {
    /// One pass for this client; false when it is to be closed. A
    /// request this pass decided is then answered with [`Scraper::answer`].
    fn step(&mut self, ready: bool, now: Instant) -> bool {
        if now >= self.deadline {
            if self.phase != Phase::Lingering {
                rtpp_log!(
                    Dbug,
                    "metrics client {} cut off: no request or answer within {} s",
                    self.from,
                    SCRAPE_DEADLINE.as_secs()
                );
            }
            return false;
        }
        match self.phase {
            // A client that closes without a byte (a port check) gets no
            // answer.
            Phase::Reading => {
                !ready
                    || self
                        .read_request()
                        .is_ok_and(|eof| !eof || self.request.held() > 0)
            }
            Phase::Writing => self.write_phase(now),
            Phase::Lingering => self.linger(),
        }
    }

    /// The answer due, once the request is read and not yet answered.
    fn decided(&self) -> Option<Decision> {
        match self.phase {
            Phase::Reading => self.request.decision(),
            Phase::Writing | Phase::Lingering => None,
        }
    }

    /// Starts writing the answer to the request read; `body` is the
    /// exposition text of a scrape. False when the connection broke.
    fn answer(&mut self, decision: Decision, body: &str, now: Instant) -> bool {
        response(decision, body, &mut self.out);
        self.phase = Phase::Writing;
        self.deadline = now + SCRAPE_DEADLINE;
        self.write_phase(now)
    }

    /// Writes what the socket takes of the answer; once all of it is out,
    /// shuts our side and lingers. False when the connection broke.
    fn write_phase(&mut self, now: Instant) -> bool {
        if !self.write_out() {
            return false;
        }
        if self.written < self.out.len() {
            return true;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        self.out = Vec::new();
        self.phase = Phase::Lingering;
        self.deadline = now + LINGER;
        self.linger()
    }

    /// What the client's poll entry waits for in this phase.
    fn interest(&self) -> (bool, bool) {
        match self.phase {
            Phase::Reading | Phase::Lingering => (true, false),
            Phase::Writing => (false, true),
        }
    }

    /// Reads what the client sent, no more than the request limit; true
    /// when the client closed its side.
    fn read_request(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        while self.request.room() > 0 {
            let room = self.request.room().min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    self.request.end_of_file();
                    return Ok(true);
                }
                Ok(n) => {
                    self.request.push(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Writes the answer until done or the socket is full; false when the
    /// connection is broken.
    fn write_out(&mut self) -> bool {
        while let Some(rest) = self.out.get(self.written..).filter(|r| !r.is_empty()) {
            match self.stream.write(rest) {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads and drops what the client still sends; false once it closed
    /// its side, or sent more than a scraper would.
    fn linger(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        while self.discarded < LINGER_DISCARD {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => self.discarded += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }
}

/// The whole HTTP answer for `decision` into `out`; `body` is the
/// exposition text of a scrape (ignored otherwise).
pub fn response(decision: Decision, body: &str, out: &mut Vec<u8>) {
    let (code, reason) = decision.status();
    let (content_type, text) = match decision {
        Decision::Metrics => (CONTENT_TYPE, body),
        Decision::NotFound => (
            "text/plain; charset=utf-8",
            "Not found: the metrics are at /metrics\n",
        ),
        Decision::MethodNotAllowed => ("text/plain; charset=utf-8", "Only GET is served\n"),
        Decision::BadRequest => ("text/plain; charset=utf-8", "Bad request\n"),
        Decision::TooLarge => ("text/plain; charset=utf-8", "Request too large\n"),
    };
    out.clear();
    out.reserve(text.len() + 160);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        text.len()
    );
    if decision == Decision::MethodNotAllowed {
        out.extend_from_slice(b"Allow: GET\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
}

/// The listener as a hand-over carries it (doc/PROTOCOL.md, "Hand-over"):
/// connections queued on it wait there for the new process; a scrape in
/// progress is cut and the scraper asks again.
impl crate::rtpp_handover::wire::Carry for MetricsServer {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.fd(&self.listener);
        w.put(&self.addr);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        let fd = r.fd()?;
        let addr = r.take()?;
        crate::rtpp_handover::wire::check_socket(
            &fd,
            nix::sys::socket::SockType::Stream,
            Some(addr),
        )?;
        Ok(MetricsServer {
            listener: TcpListener::from(fd),
            addr,
            socket: None,
            places: Vec::new(),
            scrapers: (0..MAX_SCRAPERS).map(|_| None).collect(),
            paused_until: None,
            body: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_length_type_and_close() {
        let mut out = Vec::new();
        response(Decision::Metrics, "a 1\n", &mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        response(Decision::MethodNotAllowed, "ignored", &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET\r\n") && !text.contains("ignored"));
        response(Decision::TooLarge, "", &mut out);
        assert!(out.starts_with(b"HTTP/1.1 431 "));
    }
}
