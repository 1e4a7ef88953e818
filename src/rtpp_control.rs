//! Control sockets: a listening unix stream socket (one command per
//! connection, no cookie) or a UDP socket (one command per datagram, cookie
//! first). Reading is non-blocking: a client that connects and never writes
//! costs a poll slot until its deadline, never the loop's time.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::rtpp_command::{split_cookie, ErrorCode, Reply};
use crate::rtpp_defines::{ControlSpec, COMMAND_BATCH, CONTROL_CLIENT_TIMEOUT, MAX_COMMAND_LEN};
use crate::rtpp_poll::{Cadence, Owner, Poller, Token};
use crate::rtpp_state::Daemon;

/// Unix clients served at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 32;
/// How long the listener rests when no descriptor is left to accept with.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Who sent a command, for the log line of one that failed.
pub enum Origin<'a> {
    Udp(SocketAddr),
    /// A unix client has no address; its process and account, asked of
    /// the kernel only when a line names it, do instead.
    Unix(&'a UnixStream),
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Udp(addr) => write!(f, "udp:{addr}"),
            Origin::Unix(stream) => {
                use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
                match getsockopt(stream, PeerCredentials) {
                    Ok(c) => write!(f, "unix client pid {} uid {}", c.pid(), c.uid()),
                    Err(_) => write!(f, "unix client"),
                }
            }
        }
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    deadline: Instant,
}

/// A listening unix socket and the clients it accepted.
struct UnixControl {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Option<Client>>,
    /// One registration per client place, kept while the place is free
    /// (descriptor -1), so a client can always be let in: sessions are
    /// refused before the poll set outgrows the open-files limit.
    places: Vec<Token>,
    /// A descriptor held in reserve (on /dev/null): when sessions have
    /// taken every descriptor the limit allows, closing it lets one
    /// more client in, so a `D` can still come and free some.
    spare: Option<File>,
    /// The listener is out of the poll set until then: accept(2) fails
    /// for want of a descriptor, and polling a listener that stays
    /// readable would spin the loop.
    paused_until: Option<Instant>,
}

enum Kind {
    Unix(UnixControl),
    Udp(UdpSocket, ReplyCache),
}

/// How long a UDP reply is kept for a retransmitted command.
pub const REPLY_CACHE_TTL: Duration = Duration::from_secs(30);
/// At most this many replies are kept (the oldest go first): about 20 000
/// commands a second for 30 s would need more, but a SIP proxy retransmits
/// within a second or two, and this bounds the memory to a few MiB.
pub const REPLY_CACHE_MAX: usize = 65536;
/// And at most this many bytes of cookies and replies: the count alone
/// let `I` replies (a dozen KB with 50 sessions, more with more) pile up
/// to gigabytes within the 30 s, as tests/hardening.rs found.
pub const REPLY_CACHE_MAX_BYTES: usize = 4 << 20;

type CacheKey = (SocketAddr, Box<[u8]>);

/// Replies by (sender, cookie), so a SIP proxy that missed a reply and sends
/// the same command again gets the same answer without it running twice.
#[derive(Default)]
struct ReplyCache {
    replies: HashMap<CacheKey, Box<[u8]>>,
    order: VecDeque<(Instant, CacheKey)>,
    /// Cookie and reply bytes held.
    bytes: usize,
}

impl ReplyCache {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < REPLY_CACHE_TTL
                && self.order.len() <= REPLY_CACHE_MAX
                && self.bytes <= REPLY_CACHE_MAX_BYTES
            {
                break;
            }
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            if let Some(reply) = self.replies.remove(&key) {
                self.bytes -= key.1.len() + reply.len();
            }
        }
    }

    fn get(&self, from: SocketAddr, cookie: &[u8]) -> Option<&[u8]> {
        self.replies
            .get(&(from, Box::<[u8]>::from(cookie)))
            .map(|r| &r[..])
    }

    fn put(&mut self, from: SocketAddr, cookie: &[u8], reply: &[u8], now: Instant) {
        let key: CacheKey = (from, cookie.into());
        if !self.replies.contains_key(&key) {
            // Room first: the queue never holds more than its bound, so
            // it never doubles its buffer for one entry over it.
            while self.order.len() >= REPLY_CACHE_MAX {
                self.drop_oldest();
            }
        }
        let size = cookie.len() + reply.len();
        match self.replies.insert(key.clone(), reply.into()) {
            None => self.order.push_back((now, key)),
            Some(old) => self.bytes -= cookie.len() + old.len(),
        }
        self.bytes += size;
        self.expire(now);
    }
}

/// The daemon's control socket and its pending clients.
pub struct Control {
    kind: Kind,
    /// The listener's (or UDP socket's) registration.
    socket: Option<Token>,
    buf: Vec<u8>,
    reply: Vec<u8>,
}

impl Control {
    /// Opens the socket `-s` names. A unix socket file left by a dead
    /// daemon is replaced; one a live daemon answers on is refused.
    pub fn open(spec: &ControlSpec) -> io::Result<Control> {
        let kind = match spec {
            ControlSpec::Udp(addr) => {
                let sock = UdpSocket::bind(addr)?;
                sock.set_nonblocking(true)?;
                Kind::Udp(sock, ReplyCache::default())
            }
            ControlSpec::Unix(path) => {
                if path.exists() {
                    if UnixStream::connect(path).is_ok() {
                        return Err(io::Error::new(
                            ErrorKind::AddrInUse,
                            format!("{} is in use by a running daemon", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                listener.set_nonblocking(true)?;
                Kind::Unix(UnixControl {
                    listener,
                    path: path.clone(),
                    clients: (0..MAX_CLIENTS).map(|_| None).collect(),
                    places: Vec::new(),
                    spare: open_spare(),
                    paused_until: None,
                })
            }
        };
        Ok(Control {
            kind,
            socket: None,
            buf: vec![0; MAX_COMMAND_LEN],
            reply: Vec::with_capacity(1024),
        })
    }

    /// The unix socket's path, if any (to chown or remove it).
    pub fn unix_path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Unix(u) => Some(&u.path),
            Kind::Udp(..) => None,
        }
    }

    /// The UDP socket's address, if any.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            Kind::Udp(s, _) => s.local_addr().ok(),
            Kind::Unix(_) => None,
        }
    }

    /// Registers the control socket and the (empty) client places with
    /// the poller; false when the poll set has no room for them.
    pub fn register(&mut self, poller: &mut Poller) -> bool {
        let fd = match &mut self.kind {
            Kind::Udp(s, _) => s.as_raw_fd(),
            Kind::Unix(u) => {
                for i in 0..u.clients.len() {
                    match poller.register(-1, Owner::Control(1 + i), Cadence::EveryPass) {
                        Some(t) => u.places.push(t),
                        None => return false,
                    }
                }
                u.listener.as_raw_fd()
            }
        };
        self.socket = poller.register(fd, Owner::Control(0), Cadence::EveryPass);
        self.socket.is_some()
    }

    /// Serves whatever is ready: new connections, client data, datagrams.
    /// `exec` runs one command (without cookie) and returns the reply.
    pub fn serve(
        &mut self,
        daemon: &mut Daemon,
        now: Instant,
        mut exec: impl FnMut(&mut Daemon, &[u8], &Origin) -> Reply,
    ) {
        let Some(socket) = self.socket else {
            return;
        };
        let listener_ready = daemon.poller.is_ready(socket);
        match &mut self.kind {
            Kind::Udp(sock, cache) => {
                if listener_ready {
                    serve_udp(
                        sock,
                        &mut self.buf,
                        &mut self.reply,
                        cache,
                        now,
                        |c, from| match c {
                            Some(command) => Some(exec(daemon, command, &Origin::Udp(from))),
                            None => {
                                // Counted at once: a G later in this batch sees it.
                                daemon.counters.commands_repeated += 1;
                                daemon.counters.replies_sent += 1;
                                None
                            }
                        },
                    );
                }
            }
            Kind::Unix(u) => {
                u.serve_clients(daemon, now, &mut self.reply, &mut exec);
                u.accept_ready(socket, listener_ready, &mut daemon.poller, now);
            }
        }
    }

    /// When the loop must wake for a client's deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.kind {
            Kind::Udp(..) => None,
            Kind::Unix(u) => u
                .clients
                .iter()
                .flatten()
                .map(|c| c.deadline)
                .chain(u.paused_until)
                .min(),
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Kind::Unix(u) = &self.kind {
            let _ = std::fs::remove_file(&u.path);
        }
    }
}

impl UnixControl {
    /// Runs the command of every client that finished sending (or ran out
    /// of time), answers it and frees its place.
    fn serve_clients(
        &mut self,
        daemon: &mut Daemon,
        now: Instant,
        reply: &mut Vec<u8>,
        exec: &mut impl FnMut(&mut Daemon, &[u8], &Origin) -> Reply,
    ) {
        let mut closed = false;
        for (slot, &place) in self.clients.iter_mut().zip(&self.places) {
            let Some(client) = slot else { continue };
            let done = daemon.poller.is_ready(place) && read_client(client);
            if !done && now < client.deadline {
                continue;
            }
            if !client.buf.is_empty() {
                let answer = exec(daemon, &client.buf, &Origin::Unix(&client.stream));
                // Silent: the connection closes with no reply.
                answer.format(None, reply);
                // The reply is a few bytes into an empty socket buffer; a
                // client that is gone just misses it.
                let _ = client.stream.write(reply);
            }
            daemon.poller.set_fd(place, -1);
            *slot = None;
            closed = true;
        }
        // A client just gave its descriptor back: keep it in reserve.
        if closed && self.spare.is_none() {
            self.spare = open_spare();
        }
    }

    /// Lets waiting clients in, or rests the listener while no descriptor
    /// is left to accept with.
    fn accept_ready(&mut self, socket: Token, ready: bool, poller: &mut Poller, now: Instant) {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
            poller.set_fd(socket, self.listener.as_raw_fd());
        }
        if !ready || self.paused_until.is_some() {
            return;
        }
        if self.accept_clients(poller, now) {
            crate::rtpp_log!(
                Err,
                "can't accept a control connection: out of file descriptors (see -L)"
            );
            self.paused_until = Some(now + ACCEPT_PAUSE);
            poller.set_fd(socket, -1);
        }
    }

    /// Accepts waiting connections into free client places. True when one
    /// is left waiting for want of a descriptor, the spare one included.
    fn accept_clients(&mut self, poller: &mut Poller, now: Instant) -> bool {
        for (slot, &place) in self.clients.iter_mut().zip(&self.places) {
            if slot.is_some() {
                continue;
            }
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if out_of_files(&e) => {
                    // Give up the reserve for this client; it comes back
                    // when a client closes.
                    if self.spare.take().is_none() {
                        return true;
                    }
                    match self.listener.accept() {
                        Ok((s, _)) => s,
                        Err(e) => return out_of_files(&e),
                    }
                }
                Err(_) => return false,
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            poller.set_fd(place, stream.as_raw_fd());
            *slot = Some(Client {
                stream,
                buf: Vec::new(),
                deadline: now + CONTROL_CLIENT_TIMEOUT,
            });
        }
        false
    }
}

fn serve_udp(
    sock: &UdpSocket,
    buf: &mut [u8],
    reply: &mut Vec<u8>,
    cache: &mut ReplyCache,
    now: Instant,
    mut exec: impl FnMut(Option<&[u8]>, SocketAddr) -> Option<Reply>,
) {
    cache.expire(now);
    for _ in 0..COMMAND_BATCH {
        let (len, from) = match sock.recv_from(buf) {
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let Some(datagram) = buf.get(..len) else {
            return;
        };
        let answer = match split_cookie(datagram) {
            Some((cookie, command)) => match cache.get(from, cookie) {
                Some(cached) => {
                    exec(None, from);
                    cached
                }
                None => {
                    let answer =
                        exec(Some(command), from).unwrap_or(Reply::Error(ErrorCode::EMPTY));
                    if answer == Reply::Silent {
                        continue;
                    }
                    answer.format(Some(cookie), reply);
                    cache.put(from, cookie, reply, now);
                    &reply[..]
                }
            },
            // Not even a cookie: nothing to echo.
            None => b"E0\n",
        };
        // The sender may be gone; its loss, not ours.
        let _ = sock.send_to(answer, from);
    }
}

/// Opens the reserve descriptor; None when even that fails.
fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

/// EMFILE or ENFILE: the process or the system has no descriptor left.
fn out_of_files(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE) | Some(nix::libc::ENFILE)
    )
}

/// Reads what the client sent; true when its command is complete: what
/// one write brought (Kamailio writes the command at once, with no final
/// newline and no half-close, then waits for the reply, and the classic
/// daemon took one read as the command), end of file, an error, or the
/// size limit.
fn read_client(client: &mut Client) -> bool {
    let mut chunk = [0u8; 2048];
    loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => {
                let room = MAX_COMMAND_LEN.saturating_sub(client.buf.len());
                client.buf.extend_from_slice(&chunk[..n.min(room)]);
                if client.buf.len() >= MAX_COMMAND_LEN {
                    return true;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return !client.buf.is_empty(),
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_cache_is_bounded_in_bytes_and_keeps_the_newest() {
        let mut cache = ReplyCache::default();
        let from: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let now = Instant::now();
        let big = vec![b'x'; 100 * 1024];
        for i in 0..200 {
            cache.put(from, format!("c{i}").as_bytes(), &big, now);
            assert!(cache.bytes <= REPLY_CACHE_MAX_BYTES);
        }
        assert!(cache.get(from, b"c199").is_some());
        assert!(cache.get(from, b"c0").is_none());
        assert_eq!(cache.replies.len(), cache.order.len());
        // Replacing a reply accounts for the old one.
        cache.put(from, b"c199", b"0\n", now);
        let held: usize = cache.replies.iter().map(|(k, r)| k.1.len() + r.len()).sum();
        assert_eq!(cache.bytes, held);
        // Expiry by age empties it.
        cache.expire(now + REPLY_CACHE_TTL);
        assert_eq!((cache.replies.len(), cache.bytes), (0, 0));
    }
}
