//! Control sockets: a listening unix stream socket (one command per
//! connection, no cookie), a UDP socket (one command per datagram, cookie
//! first), or a listening stream socket, TCP or unix (`tcp:`, `tcp6:`,
//! `cunix:`: many commands per connection, one per line, see `stream`).
//! Reading and writing are non-blocking: a client that connects and never
//! writes, or never reads, costs a poll slot and bounded memory until its
//! deadline, never the loop's time.

pub mod framing;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::rtpp_command::{split_cookie, ErrorCode, Reply};
use crate::rtpp_defines::{ControlSpec, COMMAND_BATCH, CONTROL_CLIENT_TIMEOUT, MAX_COMMAND_LEN};
use crate::rtpp_network::{listen_tcp, out_of_files};
use crate::rtpp_poll::{Cadence, Owner, Poller, Token};
use crate::rtpp_state::Daemon;
use stream::StreamControl;

/// Clients of a listening socket served at once; more wait in the listen
/// backlog.
pub const MAX_CLIENTS: usize = 32;
/// How long the listener rests when no descriptor is left to accept with.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Who sent a command, for the log line of one that failed and for a
/// `%%CC_SELF%%` notification target.
pub enum Origin<'a> {
    Udp(SocketAddr),
    /// A unix client has no address; its process and account, asked of
    /// the kernel only when a line names it, do instead.
    Unix(&'a UnixStream),
    /// A TCP client, by its address.
    Tcp(SocketAddr),
}

impl Origin<'_> {
    /// The sender's IPv4 address; None for a unix or an IPv6 client. An
    /// IPv4 client of a dual-stack IPv6 socket counts as IPv4.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self {
            Origin::Udp(addr) | Origin::Tcp(addr) => match addr {
                SocketAddr::V4(a) => Some(*a.ip()),
                SocketAddr::V6(a) => a.ip().to_ipv4_mapped(),
            },
            Origin::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Udp(addr) => write!(f, "udp:{addr}"),
            Origin::Tcp(addr) => write!(f, "tcp:{addr}"),
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

/// A listening socket, unix or TCP.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, from)| Conn::Tcp(s, from)),
        }
    }

    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

/// An accepted control connection.
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream, SocketAddr),
}

impl Conn {
    /// Non-blocking, and for TCP without Nagle's delay: a reply is one
    /// small write the client waits for.
    fn prepare(&self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_nonblocking(true),
            Conn::Tcp(s, _) => {
                // Only a delay if refused.
                let _ = s.set_nodelay(true);
                s.set_nonblocking(true)
            }
        }
    }

    fn origin(&self) -> Origin<'_> {
        match self {
            Conn::Unix(s) => Origin::Unix(s),
            Conn::Tcp(_, from) => Origin::Tcp(*from),
        }
    }

    fn as_raw_fd(&self) -> RawFd {
        match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Tcp(s, _) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s, _) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s, _) => s.write(buf),
        }
    }
}

/// A listening socket with a fixed number of client places, and the means
/// to let a client in when descriptors run out.
struct Acceptor {
    listener: Listener,
    /// The socket file of a unix listener, removed at exit.
    path: Option<PathBuf>,
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

impl Acceptor {
    fn new(listener: Listener, path: Option<PathBuf>) -> Acceptor {
        Acceptor {
            listener,
            path,
            places: Vec::new(),
            spare: open_spare(),
            paused_until: None,
        }
    }

    /// Registers the (empty) client places; false when the poll set is full.
    fn register_places(&mut self, poller: &mut Poller) -> bool {
        for i in 0..MAX_CLIENTS {
            match poller.register(-1, Owner::Control(1 + i), Cadence::EveryPass) {
                Some(t) => self.places.push(t),
                None => return false,
            }
        }
        true
    }

    /// A client gave its descriptor back: keep one in reserve again.
    fn client_closed(&mut self) {
        if self.spare.is_none() {
            self.spare = open_spare();
        }
    }

    /// Lets waiting clients into the free places of `clients`, or rests
    /// the listener while no descriptor is left to accept with.
    fn accept_ready<T>(
        &mut self,
        socket: Token,
        ready: bool,
        poller: &mut Poller,
        now: Instant,
        clients: &mut [Option<T>],
        mut make: impl FnMut(Conn) -> T,
    ) {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        if ready && self.paused_until.is_none() && self.accept_clients(poller, clients, &mut make) {
            crate::rtpp_log!(
                Err,
                "can't accept a control connection: out of file descriptors (see -L)"
            );
            self.paused_until = Some(now + ACCEPT_PAUSE);
        }
        // While every place is taken the listener is left out of the poll
        // set too: waiting connections keep it readable, and polling it
        // would spin the loop until a place is free.
        let full = clients.iter().all(Option::is_some);
        let fd = if full || self.paused_until.is_some() {
            -1
        } else {
            self.listener.as_raw_fd()
        };
        poller.set_fd(socket, fd);
    }

    /// Accepts waiting connections into free client places. True when one
    /// is left waiting for want of a descriptor, the spare one included.
    fn accept_clients<T>(
        &mut self,
        poller: &mut Poller,
        clients: &mut [Option<T>],
        make: &mut impl FnMut(Conn) -> T,
    ) -> bool {
        for (slot, &place) in clients.iter_mut().zip(&self.places) {
            if slot.is_some() {
                continue;
            }
            let conn = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if out_of_files(&e) => {
                    // Give up the reserve for this client; it comes back
                    // when a client closes.
                    if self.spare.take().is_none() {
                        return true;
                    }
                    match self.listener.accept() {
                        Ok(c) => c,
                        Err(e) => return out_of_files(&e),
                    }
                }
                Err(_) => return false,
            };
            if conn.prepare().is_err() {
                continue;
            }
            poller.set_fd(place, conn.as_raw_fd());
            *slot = Some(make(conn));
        }
        false
    }
}

struct Client {
    conn: Conn,
    buf: Vec<u8>,
    deadline: Instant,
}

/// A listening unix socket and the clients it accepted.
struct UnixControl {
    acceptor: Acceptor,
    clients: Vec<Option<Client>>,
}

enum Kind {
    Unix(UnixControl),
    Udp(UdpSocket, ReplyCache),
    Stream(StreamControl),
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
            ControlSpec::Unix(path) => Kind::Unix(UnixControl {
                acceptor: Acceptor::new(Listener::Unix(listen_unix(path)?), Some(path.clone())),
                clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            }),
            ControlSpec::Cunix(path) => Kind::Stream(StreamControl::new(Acceptor::new(
                Listener::Unix(listen_unix(path)?),
                Some(path.clone()),
            ))),
            ControlSpec::Tcp(addr) => Kind::Stream(StreamControl::new(Acceptor::new(
                Listener::Tcp(listen_tcp(*addr, None)?),
                None,
            ))),
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
            Kind::Unix(u) => u.acceptor.path.as_deref(),
            Kind::Stream(s) => s.acceptor.path.as_deref(),
            Kind::Udp(..) => None,
        }
    }

    /// The UDP socket's address, if any.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            Kind::Udp(s, _) => s.local_addr().ok(),
            Kind::Unix(_) | Kind::Stream(_) => None,
        }
    }

    /// Registers the control socket and the (empty) client places with
    /// the poller; false when the poll set has no room for them.
    pub fn register(&mut self, poller: &mut Poller) -> bool {
        let fd = match &mut self.kind {
            Kind::Udp(s, _) => s.as_raw_fd(),
            Kind::Unix(UnixControl { acceptor, clients }) => {
                if !acceptor.register_places(poller) {
                    return false;
                }
                // Clients a hand-over brought in take their places.
                for (client, &place) in clients.iter().zip(&acceptor.places) {
                    if let Some(c) = client {
                        poller.set_fd(place, c.conn.as_raw_fd());
                    }
                }
                acceptor.listener.as_raw_fd()
            }
            Kind::Stream(StreamControl { acceptor, .. }) => {
                if !acceptor.register_places(poller) {
                    return false;
                }
                acceptor.listener.as_raw_fd()
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
                u.acceptor.accept_ready(
                    socket,
                    listener_ready,
                    &mut daemon.poller,
                    now,
                    &mut u.clients,
                    |conn| Client {
                        conn,
                        buf: Vec::new(),
                        deadline: now + CONTROL_CLIENT_TIMEOUT,
                    },
                );
            }
            Kind::Stream(s) => {
                s.serve(daemon, now, &mut self.reply, &mut exec);
                s.accept_ready(socket, listener_ready, &mut daemon.poller, now);
            }
        }
    }

    /// When the loop must wake for a client's deadline, or at once for
    /// commands already read and not yet run.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.kind {
            Kind::Udp(..) => None,
            Kind::Unix(u) => u
                .clients
                .iter()
                .flatten()
                .map(|c| c.deadline)
                .chain(u.acceptor.paused_until)
                .min(),
            Kind::Stream(s) => s.next_deadline(),
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(path) = self.unix_path() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Listens on a unix socket file, replacing one a dead daemon left.
fn listen_unix(path: &Path) -> io::Result<UnixListener> {
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
    Ok(listener)
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
        for (slot, &place) in self.clients.iter_mut().zip(&self.acceptor.places) {
            let Some(client) = slot else { continue };
            let done = daemon.poller.is_ready(place) && read_client(client);
            if !done && now < client.deadline {
                continue;
            }
            if !client.buf.is_empty() {
                let answer = exec(daemon, &client.buf, &client.conn.origin());
                // Silent: the connection closes with no reply.
                answer.format(None, reply);
                // The reply is a few bytes into an empty socket buffer; a
                // client that is gone just misses it.
                let _ = client.conn.write(reply);
            }
            daemon.poller.set_fd(place, -1);
            *slot = None;
            closed = true;
        }
        if closed {
            self.acceptor.client_closed();
        }
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

/// Reads what the client sent; true when its command is complete: what
/// one write brought (Kamailio writes the command at once, with no final
/// newline and no half-close, then waits for the reply, and the classic
/// daemon took one read as the command), end of file, an error, or the
/// size limit.
fn read_client(client: &mut Client) -> bool {
    let mut chunk = [0u8; 2048];
    loop {
        match client.conn.read(&mut chunk) {
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

/// Most replies a hand-over's cache may hold; the cache's own bound.
const CARRIED_REPLIES_MAX: usize = REPLY_CACHE_MAX;

/// What a hand-over carries of the control socket (doc/PROTOCOL.md,
/// "Hand-over"): the listening or UDP socket itself, so commands queued on
/// it wait for the new process, and the UDP reply cache, so a proxy's
/// retransmission is answered and not run twice. The unix socket's accepted
/// clients are carried too, with what they sent so far; a stream socket's
/// clients are not: their connections close and the client sends again.
impl Control {
    pub fn handover_put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        match &self.kind {
            Kind::Unix(u) => {
                w.u8(0);
                w.fd(&u.acceptor.listener.as_raw_fd());
                w.put(&u.acceptor.path);
                put_unix_clients(&u.clients, w);
            }
            Kind::Udp(sock, cache) => {
                w.u8(1);
                w.fd(sock);
                w.put(&sock.local_addr().ok());
                w.len(cache.order.len());
                for (at, key) in &cache.order {
                    let reply = cache.replies.get(key).map(|r| &r[..]).unwrap_or_default();
                    w.put(at);
                    w.put(&key.0);
                    w.bytes(&key.1);
                    w.bytes(reply);
                }
            }
            Kind::Stream(s) => {
                w.u8(2);
                w.fd(&s.acceptor.listener.as_raw_fd());
                w.put(&s.acceptor.path);
            }
        }
    }

    /// The control socket from a hand-over's bytes, and the unix socket
    /// file it listens on: given back with [`Control::adopt`] only once
    /// the whole state is taken, so a refused hand-over never removes the
    /// old process's socket file.
    pub fn handover_take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<(Control, Option<PathBuf>)> {
        use crate::rtpp_handover::wire::{check_socket, refuse};
        use nix::sys::socket::SockType;
        let tag = r.u8()?;
        let fd = r.fd()?;
        let (kind, path) = match tag {
            0 | 2 => {
                let path: Option<PathBuf> = r.take()?;
                check_socket(&fd, SockType::Stream, None)?;
                let listener = match &path {
                    Some(_) => Listener::Unix(UnixListener::from(fd)),
                    None => Listener::Tcp(TcpListener::from(fd)),
                };
                let acceptor = Acceptor::new(listener, None);
                let kind = match (tag, &path) {
                    (0, Some(_)) => Kind::Unix(UnixControl {
                        acceptor,
                        clients: take_unix_clients(r)?,
                    }),
                    (0, None) => return refuse("unix control socket without a path"),
                    _ => Kind::Stream(StreamControl::new(acceptor)),
                };
                (kind, path)
            }
            1 => {
                let bound: Option<SocketAddr> = r.take()?;
                check_socket(&fd, SockType::Datagram, bound)?;
                (Kind::Udp(UdpSocket::from(fd), take_cache(r)?), None)
            }
            v => return refuse(format!("bad control socket kind {v}")),
        };
        let control = Control {
            kind,
            socket: None,
            buf: vec![0; MAX_COMMAND_LEN],
            reply: Vec::with_capacity(1024),
        };
        Ok((control, path))
    }

    /// Makes the carried control socket this process's own: its socket
    /// file is removed when this process exits.
    pub fn adopt(&mut self, path: Option<PathBuf>) {
        match &mut self.kind {
            Kind::Unix(u) => u.acceptor.path = path,
            Kind::Stream(s) => s.acceptor.path = path,
            Kind::Udp(..) => {}
        }
    }
}

fn put_unix_clients(clients: &[Option<Client>], w: &mut crate::rtpp_handover::wire::Writer) {
    let carried: Vec<(usize, &Client)> = clients
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.as_ref()?)))
        .filter(|(_, c)| matches!(c.conn, Conn::Unix(_)))
        .collect();
    w.len(carried.len());
    for (i, c) in carried {
        w.len(i);
        w.fd(&c.conn.as_raw_fd());
        w.bytes(&c.buf);
        w.put(&c.deadline);
    }
}

fn take_unix_clients(
    r: &mut crate::rtpp_handover::wire::Reader<'_>,
) -> crate::rtpp_handover::wire::WireResult<Vec<Option<Client>>> {
    use crate::rtpp_handover::wire::{check_socket, refuse};
    let mut clients: Vec<Option<Client>> = (0..MAX_CLIENTS).map(|_| None).collect();
    let n = r.len(MAX_CLIENTS, 16)?;
    for _ in 0..n {
        let i = r.u32()? as usize;
        let fd = r.fd()?;
        check_socket(&fd, nix::sys::socket::SockType::Stream, None)?;
        let buf = r.bytes(MAX_COMMAND_LEN)?.to_vec();
        let deadline = r.take()?;
        match clients.get_mut(i) {
            Some(slot @ None) => {
                *slot = Some(Client {
                    conn: Conn::Unix(UnixStream::from(fd)),
                    buf,
                    deadline,
                });
            }
            _ => return refuse(format!("control client place {i} out of range or taken")),
        }
    }
    Ok(clients)
}

fn take_cache(
    r: &mut crate::rtpp_handover::wire::Reader<'_>,
) -> crate::rtpp_handover::wire::WireResult<ReplyCache> {
    let mut cache = ReplyCache::default();
    let n = r.len(CARRIED_REPLIES_MAX, 16)?;
    for _ in 0..n {
        let at: Instant = r.take()?;
        let from: SocketAddr = r.take()?;
        let cookie = r.bytes(MAX_COMMAND_LEN)?;
        let reply = r.bytes(REPLY_CACHE_MAX_BYTES)?;
        cache.put(from, cookie, reply, at);
    }
    Ok(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_listener_reuses_addresses_and_tells_ipv4_clients() {
        use nix::sys::socket::{getsockopt, sockopt::ReuseAddr};
        let l = listen_tcp("127.0.0.1:0".parse().unwrap(), None).unwrap();
        assert!(getsockopt(&l, ReuseAddr).unwrap());
        let v4: SocketAddr = "127.0.0.2:5060".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.3]:5060".parse().unwrap();
        let v6: SocketAddr = "[::1]:5060".parse().unwrap();
        assert_eq!(Origin::Udp(v4).ipv4(), Some([127, 0, 0, 2].into()));
        assert_eq!(Origin::Tcp(mapped).ipv4(), Some([127, 0, 0, 3].into()));
        assert_eq!(Origin::Tcp(v6).ipv4(), None);
        assert_eq!(Origin::Tcp(v4).to_string(), "tcp:127.0.0.2:5060");
    }

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
