//! Stream control sockets (`tcp:`, `tcp6:`, `cunix:`): a client keeps its
//! connection and writes many commands on it, each ending in `\n`; every
//! command gets one reply, in order, each ending in `\n`; no cookie (see
//! "Stream sockets" in doc/PROTOCOL.md).
//!
//! Everything is bounded so that no client can hold the loop or grow the
//! daemon: what is read but not yet run ([`INPUT_LIMIT`]), the replies
//! waiting for a client that does not read them ([`OUTPUT_LIMIT`]), the
//! commands run per pass ([`CLIENT_BATCH`], and `COMMAND_BATCH` over all
//! clients), and the time a silent client keeps its place
//! (`CONTROL_IDLE_TIMEOUT`).

use std::io::{self, ErrorKind};
use std::time::Instant;

use super::framing::{Line, LineFramer};
use super::{Acceptor, Conn, Origin};
use crate::rtpp_command::{ErrorCode, Reply};
use crate::rtpp_defines::{COMMAND_BATCH, CONTROL_IDLE_TIMEOUT, MAX_COMMAND_LEN};
use crate::rtpp_log;
use crate::rtpp_poll::{Poller, Token};
use crate::rtpp_state::Daemon;

/// Bytes read from a client and not yet run: room for at least one
/// command of the longest kind and its line end. Past it the client is
/// not read until its commands have run, so a fast writer is slowed by
/// its own socket buffer, not by the daemon's memory.
pub const INPUT_LIMIT: usize = 2 * MAX_COMMAND_LEN;
/// A client is closed when a reply is due while more than this of its
/// earlier replies still waits to be written: it does not read them. A
/// single reply of any size (an `I` of a busy relay) is always queued, and
/// written over time.
pub const OUTPUT_LIMIT: usize = 1 << 20;
/// Commands of one client run per pass of the loop; the rest wait in its
/// buffer for the next pass, so the media and the other clients go on.
pub const CLIENT_BATCH: usize = 16;
/// Reads of one client per pass: a client that streams a line too long to
/// keep (dropped as it arrives) cannot hold the loop either.
const READS_PER_PASS: usize = 8;
/// Written replies are cut from the front of the output buffer once this
/// much of it is spent, so a long reply is not copied for every write.
const OUTPUT_COMPACT: usize = 64 * 1024;

/// A listening stream socket and its clients.
pub(super) struct StreamControl {
    pub(super) acceptor: Acceptor,
    clients: Vec<Option<StreamClient>>,
    /// The place served first in the next pass; it moves on every pass,
    /// so the commands per pass are shared among busy clients.
    first: usize,
    /// Set when a client has commands already read that this pass left
    /// for the next one: the loop must not sleep.
    backlog: Option<Instant>,
}

impl StreamControl {
    pub(super) fn new(acceptor: Acceptor) -> StreamControl {
        StreamControl {
            acceptor,
            clients: (0..super::MAX_CLIENTS).map(|_| None).collect(),
            first: 0,
            backlog: None,
        }
    }

    /// Reads, runs and answers the commands of ready clients (at most
    /// `COMMAND_BATCH` in all), writes pending replies, and closes clients
    /// that are done, broken, idle or not reading.
    pub(super) fn serve(
        &mut self,
        daemon: &mut Daemon,
        now: Instant,
        reply: &mut Vec<u8>,
        exec: &mut impl FnMut(&mut Daemon, &[u8], &Origin) -> Reply,
    ) {
        let mut budget = COMMAND_BATCH;
        let n = self.clients.len();
        self.backlog = None;
        for k in 0..n {
            let i = (self.first + k) % n;
            let (Some(slot), Some(&place)) = (self.clients.get_mut(i), self.acceptor.places.get(i))
            else {
                continue;
            };
            let Some(client) = slot else { continue };
            let ready = daemon.poller.is_ready(place);
            if !ready && !client.has_backlog() && now < client.idle_until {
                continue;
            }
            let mut mine = budget.min(CLIENT_BATCH);
            let before = mine;
            let keep = client.serve(ready, now, &mut mine, daemon, reply, exec);
            budget -= before - mine;
            if keep {
                let (input, output) = (client.wants_input(), client.wants_output());
                daemon.poller.set_interest(place, input, output);
                if client.has_backlog() {
                    self.backlog = Some(now);
                }
            } else {
                rtpp_log!(Dbug, "control client {} closed", client.conn.origin());
                daemon.poller.set_fd(place, -1);
                *slot = None;
                self.acceptor.client_closed();
            }
        }
        self.first = (self.first + 1) % n.max(1);
    }

    /// Lets waiting clients in.
    pub(super) fn accept_ready(
        &mut self,
        socket: Token,
        ready: bool,
        poller: &mut Poller,
        now: Instant,
    ) {
        self.acceptor
            .accept_ready(socket, ready, poller, now, &mut self.clients, |conn| {
                rtpp_log!(Dbug, "control client {} connected", conn.origin());
                StreamClient::new(conn, now)
            });
    }

    /// The earliest idle deadline, the listener's pause, or now when
    /// commands wait in a buffer.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .flatten()
            .map(|c| c.idle_until)
            .chain(self.acceptor.paused_until)
            .chain(self.backlog)
            .min()
    }
}

/// One connected client.
struct StreamClient {
    conn: Conn,
    /// Read, not yet run.
    input: LineFramer,
    /// Replies; `output[written..]` is still owed to the client.
    output: Vec<u8>,
    written: usize,
    /// The client will send nothing more.
    eof: bool,
    /// Close once the replies are out: after end of file, or after a
    /// command that gets no reply (a creating `U` while draining).
    closing: bool,
    /// Closed then unless a byte is read from it or written to it.
    idle_until: Instant,
}

impl StreamClient {
    fn new(conn: Conn, now: Instant) -> StreamClient {
        StreamClient {
            conn,
            input: LineFramer::default(),
            output: Vec::new(),
            written: 0,
            eof: false,
            closing: false,
            idle_until: now + CONTROL_IDLE_TIMEOUT,
        }
    }

    /// One pass for this client; false when it is to be closed.
    fn serve(
        &mut self,
        ready: bool,
        now: Instant,
        budget: &mut usize,
        daemon: &mut Daemon,
        reply: &mut Vec<u8>,
        exec: &mut impl FnMut(&mut Daemon, &[u8], &Origin) -> Reply,
    ) -> bool {
        if ready {
            if !self.write_out(now) {
                return false;
            }
            if self.wants_input() && self.read_in(now).is_err() {
                return false;
            }
        }
        if !self.run_commands(budget, daemon, reply, exec) {
            return false;
        }
        if self.eof && self.input.held() == 0 {
            self.closing = true;
        }
        if !self.write_out(now) {
            return false;
        }
        if self.closing && !self.wants_output() {
            return false;
        }
        if now >= self.idle_until {
            rtpp_log!(
                Info,
                "control client {} idle for {} s, closing",
                self.conn.origin(),
                CONTROL_IDLE_TIMEOUT.as_secs()
            );
            return false;
        }
        true
    }

    fn wants_input(&self) -> bool {
        !self.eof && !self.closing && self.input.held() < INPUT_LIMIT
    }

    fn wants_output(&self) -> bool {
        self.written < self.output.len()
    }

    /// A command is read and waits to be run.
    fn has_backlog(&self) -> bool {
        !self.closing && self.input.has_line(self.eof)
    }

    /// Reads what the client sent, up to [`INPUT_LIMIT`] held.
    fn read_in(&mut self, now: Instant) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        for _ in 0..READS_PER_PASS {
            if !self.wants_input() {
                break;
            }
            let room = (INPUT_LIMIT - self.input.held()).min(chunk.len());
            match self.conn.read(&mut chunk[..room]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.idle_until = now + CONTROL_IDLE_TIMEOUT;
                    self.input.push(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Runs the commands read, as many as `budget` allows, queueing their
    /// replies; false when the client is to be closed for not reading.
    fn run_commands(
        &mut self,
        budget: &mut usize,
        daemon: &mut Daemon,
        reply: &mut Vec<u8>,
        exec: &mut impl FnMut(&mut Daemon, &[u8], &Origin) -> Reply,
    ) -> bool {
        let keep = loop {
            if *budget == 0 || self.closing {
                break true;
            }
            let pending = self.output.len() - self.written;
            if pending > OUTPUT_LIMIT {
                rtpp_log!(
                    Warn,
                    "control client {} does not read its replies ({pending} bytes pending), closing",
                    self.conn.origin()
                );
                break false;
            }
            let answer = match self.input.next(self.eof) {
                None => break true,
                Some(Line::Command(at)) => {
                    exec(daemon, self.input.command(at), &self.conn.origin())
                }
                Some(Line::TooLong) => too_long(daemon, &self.conn.origin()),
            };
            *budget -= 1;
            if answer == Reply::Silent {
                // No reply would leave the client waiting and pair its
                // next reply with this command: it is closed instead, as
                // the unix socket closes without a reply.
                self.closing = true;
            } else {
                answer.format(None, reply);
                self.output.extend_from_slice(reply);
            }
        };
        if self.closing {
            self.input.clear();
        } else {
            self.input.compact();
        }
        keep
    }

    /// Writes pending replies until done or the socket is full; false when
    /// the connection is broken.
    fn write_out(&mut self, now: Instant) -> bool {
        while self.wants_output() {
            match self.conn.write(&self.output[self.written..]) {
                Ok(0) => return false,
                Ok(n) => {
                    self.written += n;
                    self.idle_until = now + CONTROL_IDLE_TIMEOUT;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if !self.wants_output() {
            self.output.clear();
            self.written = 0;
        } else if self.written >= OUTPUT_COMPACT {
            self.output.drain(..self.written);
            self.written = 0;
        }
        true
    }
}

/// The answer to a line over `MAX_COMMAND_LEN`, counted as a failed
/// command like any other answered with an error.
fn too_long(daemon: &mut Daemon, origin: &Origin) -> Reply {
    rtpp_log!(
        Err,
        "command longer than {MAX_COMMAND_LEN} bytes from {origin}: answered E1, the rest of the line dropped"
    );
    daemon.counters.commands_received += 1;
    daemon.counters.commands_failed += 1;
    daemon.counters.replies_sent += 1;
    // Its verb is gone with the line: counted as `other`.
    daemon.metrics.count_command(b"", Some(ErrorCode::SYNTAX.0));
    Reply::Error(ErrorCode::SYNTAX)
}
