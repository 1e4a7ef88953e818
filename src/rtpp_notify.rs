//! Session notifications (`-n`, extensions 20081224 and 20150617): one
//! line per timed-out session, and one per digit DTMF catching reports,
//! written to a stream socket another program listens on, a unix socket or
//! a TCP port (see "Timeout notification" and "DTMF catching" in
//! doc/PROTOCOL.md).
//!
//! The relay loop must never wait for that program. Sockets are made
//! non-blocking before `connect(2)`; a TCP connect still in progress is
//! looked at again from the loop (see [`Notifier::next_check`]) instead of
//! being waited for; output waits in a bounded buffer per target, and
//! whatever cannot be delivered (no listener, or a listener that does not
//! read) is dropped and counted instead of being waited for.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, getpeername, getsockopt, recv, send, socket, sockopt, AddressFamily, MsgFlags,
    SockFlag, SockType, SockaddrIn, UnixAddr,
};

use crate::rtpp_defines::NotifyTarget;
use crate::rtpp_log;

/// Most bytes kept for a peer that is slow to read; beyond this new
/// notifications are dropped, so a stuck peer costs bounded memory.
pub const BUFFER_LIMIT: usize = 64 * 1024;
/// Most `%%CC_SELF%%` targets (distinct controller addresses and ports)
/// kept, as in the classic daemon; a `U` that would need another one
/// arms nothing.
pub const MAX_SELF_TARGETS: usize = 64;
/// A TCP connect not done by then has failed: its notifications are
/// dropped rather than kept for a host that does not answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the loop looks at a TCP connect in progress. On loopback or
/// a LAN it is done within the first look.
pub const CONNECT_CHECK: Duration = Duration::from_millis(10);

/// Where one notification connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A unix stream socket.
    Unix(PathBuf),
    /// A TCP port, the connection bound to `local` when given.
    Tcp {
        remote: SocketAddrV4,
        local: Option<Ipv4Addr>,
    },
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Unix(path) => write!(f, "unix:{}", path.display()),
            Destination::Tcp {
                remote,
                local: None,
            } => write!(f, "tcp:{remote}"),
            Destination::Tcp {
                remote,
                local: Some(local),
            } => write!(f, "tcp:{remote} (from {local})"),
        }
    }
}

impl Destination {
    /// Where a `-n` target sends: `controller` is the IPv4 address the
    /// arming command came from (127.0.0.1 when there is none: a unix or
    /// IPv6 control socket) and `local` the control socket's own IPv4
    /// address, both only for `tcp:%%CC_SELF%%:PORT`.
    pub fn of(
        target: &NotifyTarget,
        controller: Option<Ipv4Addr>,
        local: Option<Ipv4Addr>,
    ) -> Destination {
        match target {
            NotifyTarget::Unix(path) => Destination::Unix(path.clone()),
            NotifyTarget::Tcp { addr, .. } => Destination::Tcp {
                remote: *addr,
                local: None,
            },
            NotifyTarget::TcpSelf { port, .. } => Destination::Tcp {
                remote: SocketAddrV4::new(controller.unwrap_or(Ipv4Addr::LOCALHOST), *port),
                local,
            },
        }
    }
}

/// A target of the notifier, as an armed session keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetId(usize);

/// Every notification target: those `-n` named, then the `%%CC_SELF%%`
/// ones met so far. One connection per target, reused by every
/// notification to it.
#[derive(Debug)]
pub struct Notifier {
    channels: Vec<Channel>,
    /// How many of `channels` `-n` named.
    fixed: usize,
    /// When connects in progress were last looked at.
    checked: Instant,
}

impl Notifier {
    /// A notifier for the `-n` destinations; nothing is opened yet.
    pub fn new(fixed: Vec<Destination>) -> Notifier {
        let channels: Vec<Channel> = fixed.into_iter().map(Channel::new).collect();
        Notifier {
            fixed: channels.len(),
            channels,
            checked: Instant::now(),
        }
    }

    /// The target for `to`: a known one, or a new one while fewer than
    /// [`MAX_SELF_TARGETS`] were added; None past that bound.
    pub fn target(&mut self, to: &Destination) -> Option<TargetId> {
        if let Some(i) = self.channels.iter().position(|c| c.to == *to) {
            return Some(TargetId(i));
        }
        if self.channels.len() - self.fixed >= MAX_SELF_TARGETS {
            return None;
        }
        self.channels.push(Channel::new(to.clone()));
        Some(TargetId(self.channels.len() - 1))
    }

    /// Queues one notification line for a target and tries to send it.
    pub fn notify(&mut self, id: TargetId, message: &[u8]) {
        self.notify_parts(id, &[message]);
    }

    /// Like [`Notifier::notify`], for a line made of `parts` in order; the
    /// packet path reports events this way without building the line first.
    pub fn notify_parts(&mut self, id: TargetId, parts: &[&[u8]]) {
        if let Some(c) = self.channels.get_mut(id.0) {
            let was_connecting = c.connecting();
            c.notify_parts(parts);
            if c.connecting() && !was_connecting {
                self.checked = Instant::now();
            }
        }
    }

    /// Tries again to send what is pending everywhere, and lets go of
    /// peers that closed (the loop calls this once a second).
    pub fn flush(&mut self) {
        for c in &mut self.channels {
            c.flush();
        }
    }

    /// When the loop should call [`Notifier::check_connects`]: while a TCP
    /// connect is in progress, every [`CONNECT_CHECK`].
    pub fn next_check(&self) -> Option<Instant> {
        self.channels
            .iter()
            .any(Channel::connecting)
            .then_some(self.checked + CONNECT_CHECK)
    }

    /// Finishes connects that are done (and sends what waited for them),
    /// fails those past [`CONNECT_TIMEOUT`].
    pub fn check_connects(&mut self, now: Instant) {
        self.checked = now;
        for c in self.channels.iter_mut().filter(|c| c.connecting()) {
            c.pump(&mut false);
        }
    }

    /// Notifications fully written, over every target.
    pub fn sent(&self) -> u64 {
        self.channels.iter().map(|c| c.sent).sum()
    }

    /// Notifications lost, over every target.
    pub fn dropped(&self) -> u64 {
        self.channels.iter().map(|c| c.dropped).sum()
    }
}

/// A connection, or a TCP connect still in progress.
#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    /// When the connect began, while it is not done.
    connecting: Option<Instant>,
}

/// What a look at a connect in progress found.
enum ConnectState {
    Done,
    Pending,
    Failed(Errno),
}

/// One target: its connection and the lines queued for it.
#[derive(Debug)]
struct Channel {
    to: Destination,
    conn: Option<Conn>,
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

impl Channel {
    /// A channel to `to`; nothing is opened yet.
    fn new(to: Destination) -> Channel {
        Channel {
            to,
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

    fn connecting(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.connecting.is_some())
    }

    /// Queues one notification line (the '\n' is added) and tries to send what is pending.
    #[cfg(test)]
    fn notify(&mut self, message: &[u8]) {
        self.notify_parts(&[message]);
    }

    /// Queues one notification line made of `parts` in order (the '\n' is
    /// added) and tries to send what is pending.
    fn notify_parts(&mut self, parts: &[&[u8]]) {
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
                    self.to,
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
                self.to,
                self.stall_drops
            );
            self.stall_drops = 0;
        }
        self.enqueue(parts);
        self.pump(&mut may_connect);
    }

    /// Tries again to send what is pending, or lets go of a peer that closed.
    fn flush(&mut self) {
        if self.queued() > 0 || self.connecting() {
            let mut may_connect = true;
            self.pump(&mut may_connect);
        } else if self
            .conn
            .as_ref()
            .is_some_and(|c| peer_closed(c.fd.as_raw_fd()))
        {
            // Let go of a dead peer now; the next notification reconnects.
            rtpp_log!(Info, "notification socket {} closed by peer", self.to);
            self.conn = None;
        }
    }

    /// The connected fd while output is pending.
    #[cfg(test)]
    fn pending_fd(&self) -> Option<RawFd> {
        if self.queued() == 0 {
            return None;
        }
        self.conn.as_ref().map(|c| c.fd.as_raw_fd())
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
    /// notification only waits for a peer that is there (or a TCP connect
    /// still in progress).
    fn pump(&mut self, may_connect: &mut bool) {
        if !self.settle_connection() {
            return;
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
                if self.connecting() {
                    return;
                }
            }
            match self.send_queued() {
                Ok(()) => return,
                Err(e) => {
                    rtpp_log!(
                        Warn,
                        "notification socket {}: {}, reconnecting",
                        self.to,
                        e.desc()
                    );
                    self.disconnect();
                }
            }
        }
    }

    /// Looks at the connection before sending: a connect in progress is
    /// finished or failed, a peer that closed is let go. False while a
    /// connect is still in progress (nothing can be sent yet).
    fn settle_connection(&mut self) -> bool {
        let Some(c) = &mut self.conn else {
            return true;
        };
        let fd = c.fd.as_raw_fd();
        let Some(since) = c.connecting else {
            if peer_closed(fd) {
                rtpp_log!(
                    Warn,
                    "notification socket {} closed by peer, reconnecting",
                    self.to
                );
                self.disconnect();
            }
            return true;
        };
        match connect_state(fd, since) {
            ConnectState::Pending => false,
            ConnectState::Done => {
                c.connecting = None;
                self.connected();
                true
            }
            ConnectState::Failed(e) => {
                self.conn = None;
                self.unreachable(e);
                self.drop_queued();
                false
            }
        }
    }

    /// Writes until the queue is empty or the socket is full.
    fn send_queued(&mut self) -> Result<(), Errno> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let fd = conn.fd.as_raw_fd();
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

    /// Starts a connection; false when it failed at once. A TCP connect
    /// may be left in progress.
    fn connect(&mut self) -> bool {
        match open_nonblocking(&self.to) {
            Ok(conn) => {
                let done = conn.connecting.is_none();
                self.conn = Some(conn);
                self.partial = 0;
                if done {
                    self.connected();
                }
                true
            }
            Err(e) => {
                self.unreachable(e);
                false
            }
        }
    }

    fn connected(&mut self) {
        match self.outage_drops.take() {
            Some(lost) => rtpp_log!(
                Info,
                "notification socket {} is back, {} notifications were dropped",
                self.to,
                lost
            ),
            None => rtpp_log!(Dbug, "connected to notification socket {}", self.to),
        }
    }

    /// Logs the start of an outage (once, not per notification).
    fn unreachable(&mut self, e: Errno) {
        if self.outage_drops.is_none() {
            rtpp_log!(
                Err,
                "can't connect to notification socket {}: {}; dropping notifications until it is back",
                self.to,
                e.desc()
            );
            self.outage_drops = Some(0);
        }
    }
}

/// Opens a stream socket to `to` without waiting. Non-blocking is set
/// before `connect(2)`: with a full listen backlog a blocking unix connect
/// sleeps, a non-blocking one fails with EAGAIN at once; ECONNREFUSED
/// (nobody listening) and ENOENT (no socket file) come back the same way.
/// A TCP connect usually returns EINPROGRESS and is finished later.
fn open_nonblocking(to: &Destination) -> Result<Conn, Errno> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let result = match to {
        Destination::Unix(path) => {
            let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None)?;
            let addr = UnixAddr::new(path)?;
            (connect(fd.as_raw_fd(), &addr), fd)
        }
        Destination::Tcp { remote, local } => {
            let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
            if let Some(ip) = local {
                bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(*ip, 0)))?;
            }
            (connect(fd.as_raw_fd(), &SockaddrIn::from(*remote)), fd)
        }
    };
    match result {
        (Ok(()), fd) => Ok(Conn {
            fd,
            connecting: None,
        }),
        (Err(Errno::EINPROGRESS), fd) => Ok(Conn {
            fd,
            connecting: Some(Instant::now()),
        }),
        (Err(e), _) => Err(e),
    }
}

/// Whether a connect begun at `since` is done, failed, or still going.
fn connect_state(fd: RawFd, since: Instant) -> ConnectState {
    // SAFETY: fd is the connection's own socket, open while it is borrowed.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match getsockopt(&borrowed, sockopt::SocketError) {
        Ok(0) => {}
        Ok(e) => return ConnectState::Failed(Errno::from_raw(e)),
        Err(e) => return ConnectState::Failed(e),
    }
    match getpeername::<SockaddrIn>(fd) {
        Ok(_) => ConnectState::Done,
        Err(Errno::ENOTCONN) if since.elapsed() < CONNECT_TIMEOUT => ConnectState::Pending,
        Err(Errno::ENOTCONN) => ConnectState::Failed(Errno::ETIMEDOUT),
        Err(e) => ConnectState::Failed(e),
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

// Carried across a hand-over (doc/PROTOCOL.md, "Hand-over"): every target
// in its place (sessions name them by index), with its connection and the
// lines still owed to the peer, so the listener sees no reconnect.
impl crate::rtpp_handover::wire::Carry for Destination {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        match self {
            Destination::Unix(path) => {
                w.u8(0);
                w.put(path);
            }
            Destination::Tcp { remote, local } => {
                w.u8(1);
                w.put(&std::net::SocketAddr::V4(*remote));
                w.put(&local.map(std::net::IpAddr::V4));
            }
        }
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        use crate::rtpp_handover::wire::refuse;
        use std::net::{IpAddr, SocketAddr};
        match r.u8()? {
            0 => Ok(Destination::Unix(r.take()?)),
            1 => match (r.take::<SocketAddr>()?, r.take::<Option<IpAddr>>()?) {
                (SocketAddr::V4(remote), None) => Ok(Destination::Tcp {
                    remote,
                    local: None,
                }),
                (SocketAddr::V4(remote), Some(IpAddr::V4(l))) => Ok(Destination::Tcp {
                    remote,
                    local: Some(l),
                }),
                _ => refuse("notification target not IPv4"),
            },
            v => refuse(format!("bad notification target kind {v}")),
        }
    }
}

impl crate::rtpp_handover::wire::Carry for TargetId {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.put(&self.0);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        Ok(TargetId(r.take()?))
    }
}

impl crate::rtpp_handover::wire::Carry for Channel {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.put(&self.to);
        match &self.conn {
            Some(c) => {
                w.u8(1);
                w.fd(&c.fd);
                w.put(&c.connecting);
            }
            None => w.u8(0),
        }
        w.bytes(self.buf.get(self.head..).unwrap_or_default());
        w.put(&self.lines.iter().copied().collect::<Vec<usize>>());
        w.put(&self.partial);
        w.put(&(self.sent, self.dropped, self.outage_drops, self.stall_drops));
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        use crate::rtpp_handover::wire::{check_socket, refuse};
        let to = r.take()?;
        let conn = match r.u8()? {
            0 => None,
            1 => {
                let fd = r.fd()?;
                check_socket(&fd, nix::sys::socket::SockType::Stream, None)?;
                Some(Conn {
                    fd,
                    connecting: r.take()?,
                })
            }
            v => return refuse(format!("bad notification connection tag {v}")),
        };
        let buf = r.bytes(BUFFER_LIMIT)?.to_vec();
        let lines: Vec<usize> = r.take()?;
        let partial: usize = r.take()?;
        let total = lines.iter().try_fold(0usize, |a, &n| a.checked_add(n));
        if total != Some(buf.len())
            || lines.contains(&0)
            || partial >= lines.first().map_or(1, |&n| n)
        {
            return refuse("inconsistent notification queue");
        }
        let (sent, dropped, outage_drops, stall_drops) = r.take()?;
        Ok(Channel {
            to,
            conn,
            buf,
            head: 0,
            lines: lines.into(),
            partial,
            sent,
            dropped,
            outage_drops,
            stall_drops,
        })
    }
}

impl crate::rtpp_handover::wire::Carry for Notifier {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.put(&self.channels);
        w.put(&self.fixed);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        let channels: Vec<Channel> = r.take()?;
        let fixed: usize = r.take()?;
        if fixed > channels.len() || channels.len() - fixed > MAX_SELF_TARGETS {
            return crate::rtpp_handover::wire::refuse("too many notification targets");
        }
        Ok(Notifier {
            channels,
            fixed,
            checked: Instant::now(),
        })
    }
}

impl Notifier {
    /// Whether `id` names one of the targets.
    pub fn has_target(&self, id: TargetId) -> bool {
        id.0 < self.channels.len()
    }
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
        let mut n = Channel::new(Destination::Unix(path.clone()));
        assert_eq!(n.to, Destination::Unix(path.clone()));
        n.notify(b"tag");
        let mut peer = accept(&listener);
        assert_eq!(read_line(&mut peer), "tag\n");
        n.notify(b"40000 40002");
        assert_eq!(read_line(&mut peer), "40000 40002\n");
        n.notify_parts(&[b"dtmf", b" 5 10 480 0"]);
        assert_eq!(read_line(&mut peer), "dtmf 5 10 480 0\n");
        assert_eq!((n.sent, n.dropped), (3, 0));
        assert_eq!(n.pending_fd(), None);
    }

    #[test]
    fn new_listener_on_same_path_gets_next_notification() {
        let dir = TempDir::new("notify");
        let path = dir.join("relisten.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut n = Channel::new(Destination::Unix(path.clone()));
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
        assert_eq!((n.sent, n.dropped), (2, 0));
    }

    #[test]
    fn flush_lets_go_of_a_closed_peer() {
        let dir = TempDir::new("notify");
        let path = dir.join("idleclose.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut n = Channel::new(Destination::Unix(path.clone()));
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
        let mut n = Channel::new(Destination::Unix(path.clone()));
        let t = Instant::now();
        n.notify(b"lost");
        n.notify(b"lost too");
        n.flush();
        assert!(t.elapsed() < Duration::from_millis(10));
        assert_eq!((n.sent, n.dropped), (0, 2));
        assert_eq!(n.pending_fd(), None);

        // A socket file nobody listens on any more: ECONNREFUSED.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let t = Instant::now();
        n.notify(b"refused");
        assert!(t.elapsed() < Duration::from_millis(10));
        assert_eq!((n.sent, n.dropped), (0, 3));
    }

    #[test]
    fn listener_appearing_later_gets_later_notifications() {
        let dir = TempDir::new("notify");
        let path = dir.join("later.sock");
        let mut n = Channel::new(Destination::Unix(path.clone()));
        n.notify(b"early");
        assert_eq!(n.dropped, 1);
        let listener = UnixListener::bind(&path).unwrap();
        n.notify(b"late");
        let mut peer = accept(&listener);
        assert_eq!(read_line(&mut peer), "late\n");
        assert_eq!((n.sent, n.dropped), (1, 1));
    }

    /// A 100-byte notification line (99 bytes + '\n') carrying `i`.
    fn numbered(i: usize) -> Vec<u8> {
        format!("{i:099}").into_bytes()
    }

    /// Reads until `count` lines arrived, checking each is whole and that
    /// they come in increasing order.
    fn read_numbered(peer: &mut BufReader<UnixStream>, n: &mut Channel, mut count: u64) {
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
        let mut n = Channel::new(Destination::Unix(path.clone()));
        n.notify(&numbered(0));
        let mut peer = accept(&listener);
        let t = Instant::now();
        for i in 1..10_000 {
            n.notify(&numbered(i));
        }
        let spent = t.elapsed();
        assert!(spent < Duration::from_millis(200), "took {spent:?}");
        assert!(n.dropped > 0);
        assert!(n.queued() <= BUFFER_LIMIT);
        assert!(n.pending_fd().is_some());
        let pending = n.lines.len() as u64;
        assert_eq!(n.sent + n.dropped + pending, 10_000);

        // Once the peer reads, everything kept arrives whole and in order.
        let delivered = n.sent + pending;
        read_numbered(&mut peer, &mut n, delivered);
        assert_eq!(n.sent, delivered);
        assert_eq!(n.pending_fd(), None);
    }

    #[test]
    fn line_cut_by_broken_connection_is_resent_whole() {
        use nix::sys::socket::{setsockopt, sockopt};
        let dir = TempDir::new("notify");
        let path = dir.join("partial.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut n = Channel::new(Destination::Unix(path.clone()));
        n.notify(&numbered(0));
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_nonblocking(true).unwrap();
        // A small send buffer makes the kernel take a backlog in chunks
        // that do not end on a line boundary.
        setsockopt(&n.conn.as_ref().unwrap().fd, sockopt::SndBuf, &4096).unwrap();
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
        assert_eq!(n.dropped, 0);
        drop(peer);
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        let pending = n.lines.len() as u64;
        let sent_before = n.sent;
        n.flush();
        let mut peer = accept(&listener);
        read_numbered(&mut peer, &mut n, pending);
        assert_eq!((n.sent, n.dropped), (sent_before + pending, 0));
        peer.get_mut()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = peer.read_to_end(&mut rest);
        assert!(rest.is_empty());
    }

    #[test]
    fn bookkeeping_restarts_a_cut_line() {
        let mut n = Channel::new(Destination::Unix(PathBuf::from("/nonexistent")));
        n.enqueue(&[b"abc"]);
        n.enqueue(&[b"d", b"e"]);
        n.advance(5);
        assert_eq!((n.sent, n.head, n.partial), (1, 4, 1));
        n.disconnect();
        assert_eq!(&n.buf[n.head + n.partial..], b"de\n");
        n.advance(3);
        assert_eq!((n.sent, n.queued()), (2, 0));
    }

    /// Lets the notifier finish its TCP connects, as the loop would.
    fn settle(n: &mut Notifier) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.next_check().is_some() && Instant::now() < deadline {
            std::thread::sleep(CONNECT_CHECK);
            n.check_connects(Instant::now());
        }
    }

    fn tcp(remote: std::net::SocketAddr, local: Option<Ipv4Addr>) -> Destination {
        match remote {
            std::net::SocketAddr::V4(remote) => Destination::Tcp { remote, local },
            std::net::SocketAddr::V6(_) => panic!("IPv4 only"),
        }
    }

    #[test]
    fn tcp_target_gets_lines_on_one_reused_connection() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = tcp(listener.local_addr().unwrap(), None);
        let mut n = Notifier::new(vec![to.clone()]);
        let id = n.target(&to).unwrap();
        assert_eq!(n.target(&to), Some(id), "one target per destination");
        n.notify(id, b"first");
        settle(&mut n);
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut peer = BufReader::new(s);
        let mut line = String::new();
        peer.read_line(&mut line).unwrap();
        assert_eq!(line, "first\n");
        n.notify(id, b"second");
        settle(&mut n);
        line.clear();
        peer.read_line(&mut line).unwrap();
        assert_eq!(line, "second\n");
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "a second connection was made");
        assert_eq!((n.sent(), n.dropped()), (2, 0));
    }

    #[test]
    fn broken_tcp_connection_is_made_again_for_the_next_line() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = tcp(listener.local_addr().unwrap(), None);
        let mut n = Notifier::new(vec![to.clone()]);
        let id = n.target(&to).unwrap();
        n.notify(id, b"one");
        settle(&mut n);
        let (first, _) = listener.accept().unwrap();
        drop(first);
        // The loop's once-a-second flush notices the peer left.
        std::thread::sleep(Duration::from_millis(50));
        n.flush();
        n.notify(id, b"two");
        settle(&mut n);
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert_eq!(line, "two\n");
        assert_eq!((n.sent(), n.dropped()), (2, 0));
    }

    #[test]
    fn tcp_connection_is_bound_to_the_local_address() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.2:0").unwrap();
        let mut n = Notifier::new(Vec::new());
        let to = tcp(listener.local_addr().unwrap(), Some([127, 0, 0, 7].into()));
        let id = n.target(&to).unwrap();
        n.notify(id, b"bound");
        settle(&mut n);
        let (_, from) = listener.accept().unwrap();
        assert_eq!(from.ip(), std::net::IpAddr::from([127, 0, 0, 7]));
    }

    #[test]
    fn dead_tcp_target_costs_a_drop_not_time() {
        // A port nobody listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut n = Notifier::new(Vec::new());
        let id = n.target(&tcp(port, None)).unwrap();
        let t = Instant::now();
        for _ in 0..100 {
            n.notify(id, b"lost");
            n.check_connects(Instant::now());
        }
        settle(&mut n);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!((n.sent(), n.dropped()), (0, 100));
        assert!(n.next_check().is_none());
    }

    #[test]
    fn self_targets_are_bounded() {
        let fixed = Destination::Unix(PathBuf::from("/nonexistent"));
        let mut n = Notifier::new(vec![fixed.clone()]);
        for i in 0..MAX_SELF_TARGETS {
            let to = Destination::Tcp {
                remote: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1000 + i as u16),
                local: None,
            };
            assert!(n.target(&to).is_some(), "{i}");
        }
        let one_more = Destination::Tcp {
            remote: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 999),
            local: None,
        };
        assert_eq!(n.target(&one_more), None);
        assert_eq!(n.target(&fixed), Some(TargetId(0)));
    }
}
