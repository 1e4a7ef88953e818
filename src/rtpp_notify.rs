//! Session notifications (`-n`, extension 20081224): one line per
//! timed-out session, and one per digit DTMF catching reports, written to a
//! stream socket another program listens on (see "Timeout notification"
//! and "DTMF catching" in doc/PROTOCOL.md).
//!
//! The relay loop must never wait for that program. The socket is made
//! non-blocking before `connect(2)`, output waits in a bounded buffer, and
//! whatever cannot be delivered now (no listener, or a listener that does
//! not read) is dropped and counted instead of being waited for.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    connect, recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
};

use crate::rtpp_log;

/// Most bytes kept for a peer that is slow to read; beyond this new
/// notifications are dropped, so a stuck peer costs bounded memory.
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// Writes timeout notifications to the `-n` socket without ever blocking.
#[derive(Debug)]
pub struct Notifier {
    path: PathBuf,
    conn: Option<OwnedFd>,
    /// Queued lines; `buf[head..]` is still owed to the peer.
    buf: Vec<u8>,
    head: usize,
    /// Length of each queued line, oldest first. Kept apart from the bytes
    /// because a decoded tag may itself contain a newline.
    lines: VecDeque<usize>,
    /// Bytes of the oldest queued line already written on `conn`; on a new
    /// connection the line starts over so the peer never sees half a line.
    partial: usize,
    sent: u64,
    dropped: u64,
    /// Some while the listener cannot be reached: how many notifications
    /// that outage has cost. Lets the outage be logged once, not per line.
    outage_drops: Option<u64>,
    /// Notifications dropped since the buffer was last found full; logged
    /// once when the stall starts and once when it ends.
    stall_drops: u64,
}

impl Notifier {
    /// Makes a notifier for the stream socket at `path`; nothing is opened yet.
    pub fn new(path: PathBuf) -> Notifier {
        Notifier {
            path,
            conn: None,
            buf: Vec::new(),
            head: 0,
            lines: VecDeque::new(),
            partial: 0,
            sent: 0,
            dropped: 0,
            outage_drops: None,
            stall_drops: 0,
        }
    }

    /// The socket path notifications go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one notification line (the '\n' is added) and tries to send what is pending.
    pub fn notify(&mut self, message: &[u8]) {
        self.notify_parts(&[message]);
    }

    /// Like [`Notifier::notify`], for a line made of `parts` in order; the
    /// packet path reports events this way without building the line first.
    pub fn notify_parts(&mut self, parts: &[&[u8]]) {
        // One connect attempt per notification: a listener that keeps
        // failing must not turn one call into a loop.
        let mut may_connect = true;
        let line_len = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        if self.queued() + line_len > BUFFER_LIMIT {
            // The peer may have read since the last try; make room first.
            self.pump(&mut may_connect);
        }
        if self.queued() + line_len > BUFFER_LIMIT {
            self.dropped += 1;
            if self.stall_drops == 0 {
                rtpp_log!(
                    Err,
                    "notification socket {} is not reading ({} bytes pending), dropping notifications",
                    self.path.display(),
                    self.queued()
                );
            }
            self.stall_drops += 1;
            return;
        }
        if self.stall_drops > 0 {
            rtpp_log!(
                Info,
                "notification socket {} is reading again, {} notifications were dropped",
                self.path.display(),
                self.stall_drops
            );
            self.stall_drops = 0;
        }
        self.enqueue(parts);
        self.pump(&mut may_connect);
    }

    /// Tries again to send what is pending (the loop calls this once a second and when `wants_write`).
    pub fn flush(&mut self) {
        if self.queued() > 0 {
            let mut may_connect = true;
            self.pump(&mut may_connect);
        } else if self
            .conn
            .as_ref()
            .is_some_and(|c| peer_closed(c.as_raw_fd()))
        {
            // Let go of a dead peer now; the next notification reconnects.
            rtpp_log!(
                Info,
                "notification socket {} closed by peer",
                self.path.display()
            );
            self.conn = None;
        }
    }

    /// The connected fd while output is pending, so the loop can wait for POLLOUT if it wants.
    pub fn pending_fd(&self) -> Option<RawFd> {
        if self.queued() == 0 {
            return None;
        }
        self.conn.as_ref().map(|c| c.as_raw_fd())
    }

    /// Notifications fully written to the socket.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Notifications lost: no listener, a full buffer, or a broken connection.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes waiting for the peer, including the part of a line already
    /// written on the current connection (it is re-sent on a new one).
    fn queued(&self) -> usize {
        self.buf.len() - self.head
    }

    fn enqueue(&mut self, parts: &[&[u8]]) {
        let line_len = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        if self.head > 0 && self.buf.len() + line_len > BUFFER_LIMIT {
            // Reclaim what was sent, so the buffer never grows past the limit.
            self.buf.drain(..self.head);
            self.head = 0;
        }
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        self.buf.push(b'\n');
        self.lines.push_back(line_len);
    }

    /// Sends what is queued, (re)connecting at most once if `may_connect`.
    /// When no connection can be had, everything queued is dropped: a
    /// notification only waits for a peer that is there.
    fn pump(&mut self, may_connect: &mut bool) {
        if let Some(c) = &self.conn {
            if peer_closed(c.as_raw_fd()) {
                rtpp_log!(
                    Warn,
                    "notification socket {} closed by peer, reconnecting",
                    self.path.display()
                );
                self.disconnect();
            }
        }
        loop {
            if self.queued() == 0 {
                return;
            }
            if self.conn.is_none() {
                let connected = *may_connect && self.connect();
                *may_connect = false;
                if !connected {
                    self.drop_queued();
                    return;
                }
            }
            match self.send_queued() {
                Ok(()) => return,
                Err(e) => {
                    rtpp_log!(
                        Warn,
                        "notification socket {}: {}, reconnecting",
                        self.path.display(),
                        e.desc()
                    );
                    self.disconnect();
                }
            }
        }
    }

    /// Writes until the queue is empty or the socket is full.
    fn send_queued(&mut self) -> Result<(), Errno> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let fd = conn.as_raw_fd();
        loop {
            let start = self.head + self.partial;
            if start == self.buf.len() {
                return Ok(());
            }
            match send(fd, &self.buf[start..], send_flags()) {
                // Zero bytes taken from a non-empty buffer: treat as full
                // rather than spin.
                Ok(0) | Err(Errno::EAGAIN) => return Ok(()),
                Ok(n) => self.advance(n),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Accounts for `n` more bytes written on the current connection.
    fn advance(&mut self, n: usize) {
        self.partial += n;
        while let Some(&len) = self.lines.front() {
            if self.partial < len {
                break;
            }
            self.partial -= len;
            self.head += len;
            self.lines.pop_front();
            self.sent += 1;
        }
        if self.lines.is_empty() {
            self.buf.clear();
            self.head = 0;
            self.partial = 0;
        }
    }

    fn disconnect(&mut self) {
        self.conn = None;
        // Whatever part of a line reached the old peer is lost with it;
        // the new peer gets the whole line.
        self.partial = 0;
    }

    fn drop_queued(&mut self) {
        let lost = self.lines.len() as u64;
        self.dropped += lost;
        if let Some(n) = &mut self.outage_drops {
            *n += lost;
        }
        self.lines.clear();
        self.buf.clear();
        self.head = 0;
        self.partial = 0;
    }

    fn connect(&mut self) -> bool {
        match open_nonblocking(&self.path) {
            Ok(fd) => {
                match self.outage_drops.take() {
                    Some(lost) => rtpp_log!(
                        Info,
                        "notification socket {} is back, {} notifications were dropped",
                        self.path.display(),
                        lost
                    ),
                    None => rtpp_log!(
                        Dbug,
                        "connected to notification socket {}",
                        self.path.display()
                    ),
                }
                self.conn = Some(fd);
                self.partial = 0;
                true
            }
            Err(e) => {
                if self.outage_drops.is_none() {
                    rtpp_log!(
                        Err,
                        "can't connect to notification socket {}: {}; dropping notifications until it is back",
                        self.path.display(),
                        e.desc()
                    );
                    self.outage_drops = Some(0);
                }
                false
            }
        }
    }
}

/// Opens a unix stream socket to `path` without waiting. Non-blocking is
/// set before `connect(2)`: with a full listen backlog a blocking connect
/// sleeps, a non-blocking one fails with EAGAIN at once. ECONNREFUSED
/// (nobody listening) and ENOENT (no socket file) come back the same way.
fn open_nonblocking(path: &Path) -> Result<OwnedFd, Errno> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match connect(fd.as_raw_fd(), &addr) {
        // Unix sockets connect at once on Linux; where a system reports
        // EINPROGRESS, writes simply wait (EAGAIN) or fail into a reconnect.
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(fd),
        Err(e) => Err(e),
    }
}

/// True when the peer has closed (EOF) or the connection failed. The peer
/// is not meant to talk; anything it sent is read and thrown away so an
/// EOF behind it can be seen.
fn peer_closed(fd: RawFd) -> bool {
    let mut scratch = [0u8; 512];
    // Bounded so a chatty peer cannot hold the loop here.
    for _ in 0..16 {
        match recv(fd, &mut scratch, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
    false
}

/// A peer that went away must show up as EPIPE, not as a SIGPIPE that
/// kills the daemon.
#[cfg(not(target_vendor = "apple"))]
fn send_flags() -> MsgFlags {
    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT
}

/// Apple has no MSG_NOSIGNAL; the Rust runtime ignores SIGPIPE there.
#[cfg(target_vendor = "apple")]
fn send_flags() -> MsgFlags {
    MsgFlags::MSG_DONTWAIT
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::{Duration, Instant};

    use crate::test_support::TempDir;

    fn accept(listener: &UnixListener) -> BufReader<UnixStream> {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        BufReader::new(s)
    }

    fn read_line(r: &mut BufReader<UnixStream>) -> String {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn notification_arrives_as_tag_line() {
        let dir = TempDir::new("notify");
        let path = dir.join("arrives.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut n = Notifier::new(path.clone());
        assert_eq!(n.path(), path.as_path());
        n.notify(b"tag");
        let mut peer = accept(&listener);
        assert_eq!(read_line(&mut peer), "tag\n");
        n.notify(b"40000 40002");
        assert_eq!(read_line(&mut peer), "40000 40002\n");
        n.notify_parts(&[b"dtmf", b" 5 10 480 0"]);
        assert_eq!(read_line(&mut peer), "dtmf 5 10 480 0\n");
        assert_eq!((n.sent(), n.dropped()), (3, 0));
        assert_eq!(n.pending_fd(), None);
    }

    #[test]
    fn new_listener_on_same_path_gets_next_notification() {
        let dir = TempDir::new("notify");
        let path = dir.join("relisten.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut n = Notifier::new(path.clone());
        n.notify(b"one");
        let mut peer = accept(&listener);
        assert_eq!(read_line(&mut peer), "one\n");
        drop(peer);
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        n.notify(b"two");
        let mut peer = accept(&listener);
        assert_eq!(read_line(&mut peer), "two\n");
        assert_eq!((n.sent(), n.dropped()), (2, 0));
    }

    #[test]
    fn flush_lets_go_of_a_closed_peer() {
        let dir = TempDir::new("notify");
        let path = dir.join("idleclose.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut n = Notifier::new(path.clone());
        n.notify(b"one");
        drop(accept(&listener));
        n.flush();
        assert!(n.conn.is_none());
        n.notify(b"two");
        let mut peer = accept(&listener);
        assert_eq!(read_line(&mut peer), "two\n");
    }

    #[test]
    fn no_listener_drops_without_blocking() {
        let dir = TempDir::new("notify");
        let path = dir.join("absent.sock");
        let mut n = Notifier::new(path.clone());
        let t = Instant::now();
        n.notify(b"lost");
        n.notify(b"lost too");
        n.flush();
        assert!(t.elapsed() < Duration::from_millis(10));
        assert_eq!((n.sent(), n.dropped()), (0, 2));
        assert_eq!(n.pending_fd(), None);

        // A socket file nobody listens on any more: ECONNREFUSED.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let t = Instant::now();
        n.notify(b"refused");
        assert!(t.elapsed() < Duration::from_millis(10));
        assert_eq!((n.sent(), n.dropped()), (0, 3));
    }

    #[test]
    fn listener_appearing_later_gets_later_notifications() {
        let dir = TempDir::new("notify");
        let path = dir.join("later.sock");
        let mut n = Notifier::new(path.clone());
        n.notify(b"early");
        assert_eq!(n.dropped(), 1);
        let listener = UnixListener::bind(&path).unwrap();
        n.notify(b"late");
        let mut peer = accept(&listener);
        assert_eq!(read_line(&mut peer), "late\n");
        assert_eq!((n.sent(), n.dropped()), (1, 1));
    }

    /// A 100-byte notification line (99 bytes + '\n') carrying `i`.
    fn numbered(i: usize) -> Vec<u8> {
        format!("{i:099}").into_bytes()
    }

    /// Reads until `count` lines arrived, checking each is whole and that
    /// they come in increasing order.
    fn read_numbered(peer: &mut BufReader<UnixStream>, n: &mut Notifier, mut count: u64) {
        let mut last = None;
        while count > 0 {
            n.flush();
            let line = read_line(peer);
            assert_eq!(line.len(), 100, "split line {line:?}");
            let i: usize = line.trim_end().parse().unwrap();
            assert!(last.is_none_or(|l| i > l));
            last = Some(i);
            count -= 1;
        }
    }

    #[test]
    fn peer_that_never_reads_costs_no_time() {
        let dir = TempDir::new("notify");
        let path = dir.join("stuck.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut n = Notifier::new(path.clone());
        n.notify(&numbered(0));
        let mut peer = accept(&listener);
        let t = Instant::now();
        for i in 1..10_000 {
            n.notify(&numbered(i));
        }
        let spent = t.elapsed();
        assert!(spent < Duration::from_millis(200), "took {spent:?}");
        assert!(n.dropped() > 0);
        assert!(n.queued() <= BUFFER_LIMIT);
        assert!(n.pending_fd().is_some());
        let pending = n.lines.len() as u64;
        assert_eq!(n.sent() + n.dropped() + pending, 10_000);

        // Once the peer reads, everything kept arrives whole and in order.
        let delivered = n.sent() + pending;
        read_numbered(&mut peer, &mut n, delivered);
        assert_eq!(n.sent(), delivered);
        assert_eq!(n.pending_fd(), None);
    }

    #[test]
    fn line_cut_by_broken_connection_is_resent_whole() {
        use nix::sys::socket::{setsockopt, sockopt};
        let dir = TempDir::new("notify");
        let path = dir.join("partial.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut n = Notifier::new(path.clone());
        n.notify(&numbered(0));
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_nonblocking(true).unwrap();
        // A small send buffer makes the kernel take a backlog in chunks
        // that do not end on a line boundary.
        setsockopt(n.conn.as_ref().unwrap(), sockopt::SndBuf, &4096).unwrap();
        let mut scratch = vec![0u8; 1 << 16];
        let mut i = 1;
        while n.partial == 0 && i < 10_000 {
            n.notify(&numbered(i));
            i += 1;
            if n.queued() > 8_000 {
                // Let the socket take a large backlog at once.
                while peer.read(&mut scratch).is_ok_and(|r| r > 0) {}
            }
        }
        assert!(n.partial > 0, "no partial write seen");
        assert_eq!(n.dropped(), 0);
        drop(peer);
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        let pending = n.lines.len() as u64;
        let sent_before = n.sent();
        n.flush();
        let mut peer = accept(&listener);
        read_numbered(&mut peer, &mut n, pending);
        assert_eq!((n.sent(), n.dropped()), (sent_before + pending, 0));
        peer.get_mut()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = peer.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }

    #[test]
    fn bookkeeping_restarts_a_cut_line() {
        let mut n = Notifier::new(PathBuf::from("/nonexistent"));
        n.enqueue(&[b"abc"]);
        n.enqueue(&[b"d", b"e"]);
        n.advance(5);
        assert_eq!((n.sent(), n.head, n.partial), (1, 4, 1));
        n.disconnect();
        assert_eq!(&n.buf[n.head + n.partial..], b"de\n");
        n.advance(3);
        assert_eq!((n.sent(), n.queued()), (2, 0));
    }
}
