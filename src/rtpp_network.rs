//! Addresses and sockets: parsing and printing addresses, opening media
//! sockets with TOS set, the media port table, and reading datagrams in
//! batches. The poll(2) sets are `rtpp_poll`.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use nix::libc;

use crate::rtpp_defines::{ControlSpec, CPORT};
use crate::rtpp_util::Random;

/// Parses the `-s` argument: `unix:PATH`, `udp:ADDR[:PORT]`,
/// `udp6:ADDR[:PORT]`, `tcp:ADDR[:PORT]`, `tcp6:ADDR[:PORT]`, `cunix:PATH`
/// or a bare path.
pub fn parse_control_spec(spec: &str) -> Result<ControlSpec, String> {
    for (scheme, ipv6, tcp) in [
        ("udp:", false, false),
        ("udp6:", true, false),
        ("tcp:", false, true),
        ("tcp6:", true, true),
    ] {
        if let Some(rest) = spec.strip_prefix(scheme) {
            let addr = parse_listen_addr(rest, ipv6)?;
            return Ok(if tcp {
                ControlSpec::Tcp(addr)
            } else {
                ControlSpec::Udp(addr)
            });
        }
    }
    if let Some(path) = spec.strip_prefix("cunix:") {
        if path.is_empty() {
            return Err("empty control socket path".into());
        }
        return Ok(ControlSpec::Cunix(PathBuf::from(path)));
    }
    let path = match spec.strip_prefix("unix:") {
        Some(path) => path,
        None => {
            // A bare path is a unix socket, as in the classic daemon; but
            // `upd:...` or `bogus:...` is a typo, not a file to create.
            if let Some(scheme) = unknown_scheme(spec) {
                return Err(format!(
                    "unknown scheme \"{scheme}:\" (accepted: unix:PATH, udp:ADDR[:PORT], udp6:ADDR[:PORT], tcp:ADDR[:PORT], tcp6:ADDR[:PORT], cunix:PATH, or a path)"
                ));
            }
            spec
        }
    };
    if path.is_empty() {
        return Err("empty control socket path".into());
    }
    Ok(ControlSpec::Unix(PathBuf::from(path)))
}

/// The `ADDR[:PORT]` of a UDP or TCP control socket; 22222 when no port
/// is given. Over IPv6 `[::1]:9000` is unambiguous; otherwise the port
/// follows the LAST colon, as the classic daemon read it (`udp6:::1:9000`).
fn parse_listen_addr(rest: &str, ipv6: bool) -> Result<SocketAddr, String> {
    let (host, port) = if !ipv6 {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (rest, CPORT),
        }
    } else if let Some(inner) = rest.strip_prefix('[') {
        match inner.split_once(']') {
            Some((h, "")) => (h, CPORT),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, parse_port(p)?),
                None => return Err(format!("invalid IPv6 address: {rest}")),
            },
            None => return Err(format!("invalid IPv6 address: {rest}")),
        }
    } else if rest == "*" {
        (rest, CPORT)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (h, parse_port(p)?),
            _ => (rest, CPORT),
        }
    };
    Ok(SocketAddr::new(resolve_host(host, ipv6)?, port))
}

/// The `scheme` of a `scheme:rest` value, when it has one: a letter, then
/// letters, digits, `+`, `-` or `.` up to the first colon. A path (`/run/x`,
/// `./x:y`, `x.sock`) has none.
pub fn unknown_scheme(value: &str) -> Option<&str> {
    let (scheme, _) = value.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let schemelike = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let known = ["unix", "udp", "udp6", "tcp", "tcp6", "cunix"];
    (schemelike && !known.contains(&scheme)).then_some(scheme)
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port: {s}")),
    }
}

/// Resolves a listen address: an IP literal, `*` (any) or a host name.
pub fn resolve_host(host: &str, ipv6: bool) -> Result<IpAddr, String> {
    if host == "*" || host.is_empty() {
        return Ok(if ipv6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if ip.is_ipv6() == ipv6 {
            Ok(ip)
        } else {
            Err(format!(
                "{host} is not an {} address",
                if ipv6 { "IPv6" } else { "IPv4" }
            ))
        };
    }
    let found = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("can't resolve {host}: {e}"))?
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv6() == ipv6);
    found.ok_or_else(|| {
        format!(
            "no {} address for {host}",
            if ipv6 { "IPv6" } else { "IPv4" }
        )
    })
}

/// Parses the ADDR and PORT of `U`/`L`; `None` for anything unusable,
/// including the unspecified address and port 0 (nothing to pre-fill).
pub fn parse_remote(addr: &[u8], port: &[u8], ipv6: bool) -> Option<SocketAddr> {
    let addr = std::str::from_utf8(addr).ok()?;
    let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
    let ip: IpAddr = if ipv6 {
        IpAddr::V6(
            addr.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?,
        )
    } else {
        IpAddr::V4(addr.parse().ok()?)
    };
    if ip.is_unspecified() || port == 0 {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

/// Opens a non-blocking UDP socket bound to `addr` with the media TOS set.
pub fn open_udp(addr: SocketAddr, tos: Option<u8>) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(addr)?;
    sock.set_nonblocking(true)?;
    if let Some(tos) = tos {
        set_tos(sock.as_raw_fd(), addr.is_ipv6(), tos);
    }
    Ok(sock)
}

fn set_tos(fd: RawFd, ipv6: bool, tos: u8) {
    let value: libc::c_int = tos.into();
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TOS)
    };
    // SAFETY: fd is an open socket and value lives across the call.
    // A failure only means the kernel refused the marking; media still flows.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The even RTP ports of the `-m`/`-M` range, handed out in random order.
/// A released pair goes to the back of the queue, so a port is not reused
/// right away while stray packets for the old call may still arrive.
pub struct PortTable {
    free: VecDeque<u16>,
    total: usize,
}

impl PortTable {
    /// Builds the table for `[min, max]`; every pair (p, p+1) lies inside.
    pub fn new(min: u16, max: u16, rng: &mut Random) -> PortTable {
        let first = min + (min % 2);
        let mut ports: Vec<u16> = (u32::from(first)..u32::from(max))
            .step_by(2)
            .map(|p| p as u16)
            .collect();
        rng.shuffle(&mut ports);
        PortTable {
            total: ports.len(),
            free: ports.into(),
        }
    }

    /// Opens an RTP/RTCP socket pair on `ip`, trying free ports until both
    /// bind (a port may be taken by another program); `None` when exhausted.
    pub fn allocate_pair(
        &mut self,
        ip: IpAddr,
        tos: Option<u8>,
    ) -> Option<(u16, UdpSocket, UdpSocket)> {
        for _ in 0..self.free.len() {
            let port = self.free.pop_front()?;
            let rtp = open_udp(SocketAddr::new(ip, port), tos);
            let rtcp = open_udp(SocketAddr::new(ip, port + 1), tos);
            match (rtp, rtcp) {
                (Ok(a), Ok(b)) => return Some((port, a, b)),
                _ => self.free.push_back(port),
            }
        }
        None
    }

    /// Takes the pairs of `ports` out of the free list, as a hand-over
    /// brings them in use; false when one of them is not free (or not in
    /// the range), which a consistent hand-over never sends.
    pub fn claim_all(&mut self, ports: &std::collections::HashSet<u16>) -> bool {
        let before = self.free.len();
        self.free.retain(|p| !ports.contains(p));
        before - self.free.len() == ports.len()
    }

    /// Returns a pair to the table.
    pub fn release(&mut self, port: u16) {
        self.free.push_back(port);
    }

    /// Pairs currently free.
    pub fn free_pairs(&self) -> usize {
        self.free.len()
    }

    /// Pairs in the range.
    pub fn total_pairs(&self) -> usize {
        self.total
    }
}

/// Datagrams one `recvmmsg(2)` call may return.
pub const RECV_BATCH: usize = 16;
/// Room per datagram: the largest UDP payload.
const RECV_SLOT: usize = 65536;

/// Buffers for reading a socket's queued datagrams in one system call.
/// Allocated once; reading allocates nothing.
pub struct RecvBatch {
    data: Vec<u8>,
    lens: [usize; RECV_BATCH],
    addrs: [libc::sockaddr_storage; RECV_BATCH],
    count: usize,
}

impl RecvBatch {
    /// Allocates room for [`RECV_BATCH`] datagrams of any size.
    pub fn new() -> RecvBatch {
        RecvBatch {
            data: vec![0; RECV_BATCH * RECV_SLOT],
            lens: [0; RECV_BATCH],
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            addrs: unsafe { std::mem::zeroed() },
            count: 0,
        }
    }

    /// Reads what `fd` holds, without blocking: one call, however many
    /// datagrams are queued (up to [`RECV_BATCH`]), so a socket with one
    /// packet costs one system call, not a read plus an EAGAIN.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        // SAFETY: plain data, filled in below.
        let mut iovs: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        for (i, (iov, hdr)) in iovs.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            let slot = &mut self.data[i * RECV_SLOT..(i + 1) * RECV_SLOT];
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = RECV_SLOT;
            hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer in hdrs points into buffers that live
        // across the call, with the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(RECV_BATCH);
        for (len, hdr) in self.lens.iter_mut().zip(&hdrs).take(n) {
            *len = (hdr.msg_len as usize).min(RECV_SLOT);
        }
        self.count = n;
        Ok(n)
    }

    /// Reads one datagram from `fd`, without blocking: cheaper than
    /// [`RecvBatch::recv`] when one is all the socket is likely to hold,
    /// as on a call's stream between two passes of the loop.
    pub fn recv_one(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        let mut namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: the buffer and address storage are ours and outlive the
        // call; the lengths given are theirs.
        let n = unsafe {
            libc::recvfrom(
                fd,
                self.data.as_mut_ptr().cast(),
                RECV_SLOT,
                libc::MSG_DONTWAIT,
                (&mut self.addrs[0] as *mut libc::sockaddr_storage).cast(),
                &mut namelen,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.lens[0] = (n as usize).min(RECV_SLOT);
        self.count = 1;
        Ok(1)
    }

    /// Datagram `i` of the last read and its sender.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let from = sockaddr_to_std(&self.addrs[i])?;
        let data = self.data.get(i * RECV_SLOT..i * RECV_SLOT + self.lens[i])?;
        Some((data, from))
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

/// Converts a kernel socket address to the std type.
fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Listens on a TCP address, non-blocking, with `backlog` pending
/// connections (the system's most when None). SO_REUSEADDR lets a
/// restarted daemon bind while connections of the one before linger in
/// TIME_WAIT.
pub fn listen_tcp(addr: SocketAddr, backlog: Option<i32>) -> io::Result<TcpListener> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrStorage,
    };
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    let backlog = match backlog {
        Some(n) => Backlog::new(n)?,
        None => Backlog::MAXCONN,
    };
    listen(&fd, backlog)?;
    Ok(TcpListener::from(fd))
}

/// EMFILE or ENFILE: the process or the system has no descriptor left.
pub fn out_of_files(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE) | Some(nix::libc::ENFILE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_specs_parse() {
        assert_eq!(
            parse_control_spec("udp:127.0.0.1:9000"),
            Ok(ControlSpec::Udp("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            parse_control_spec("udp:127.0.0.1"),
            Ok(ControlSpec::Udp("127.0.0.1:22222".parse().unwrap()))
        );
        assert_eq!(
            parse_control_spec("udp:*"),
            Ok(ControlSpec::Udp("0.0.0.0:22222".parse().unwrap()))
        );
        assert_eq!(
            parse_control_spec("udp6:::1:9000"),
            Ok(ControlSpec::Udp("[::1]:9000".parse().unwrap()))
        );
        assert_eq!(
            parse_control_spec("udp6:[::1]:9001"),
            Ok(ControlSpec::Udp("[::1]:9001".parse().unwrap()))
        );
        assert_eq!(
            parse_control_spec("udp6:[::1]"),
            Ok(ControlSpec::Udp("[::1]:22222".parse().unwrap()))
        );
        assert_eq!(
            parse_control_spec("unix:/tmp/x.sock"),
            Ok(ControlSpec::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(
            parse_control_spec("/tmp/y.sock"),
            Ok(ControlSpec::Unix("/tmp/y.sock".into()))
        );
        assert!(parse_control_spec("udp:127.0.0.1:0").is_err());
        assert!(parse_control_spec("udp:127.0.0.1:99999").is_err());
        assert!(parse_control_spec("udp:::1").is_err());
        assert!(parse_control_spec("unix:").is_err());
        for typo in [
            "bogus:foo",
            "upd:127.0.0.1:22222",
            "tcp4:127.0.0.1:22222",
            "UDP:1.2.3.4",
            "TCP:1.2.3.4",
        ] {
            let e = parse_control_spec(typo).unwrap_err();
            assert!(e.contains("unknown scheme"), "{typo}: {e}");
        }
        assert_eq!(
            parse_control_spec("./ctl:1.sock"),
            Ok(ControlSpec::Unix("./ctl:1.sock".into()))
        );
    }

    #[test]
    fn stream_control_specs_parse() {
        let tcp = |s: &str| parse_control_spec(s);
        let at = |a: &str| Ok(ControlSpec::Tcp(a.parse().unwrap()));
        assert_eq!(tcp("tcp:127.0.0.1:9000"), at("127.0.0.1:9000"));
        // The port defaults to the UDP one.
        assert_eq!(tcp("tcp:127.0.0.1"), at("127.0.0.1:22222"));
        assert_eq!(tcp("tcp:*:9000"), at("0.0.0.0:9000"));
        assert_eq!(tcp("tcp6:[::1]:9001"), at("[::1]:9001"));
        assert_eq!(tcp("tcp6:[::1]"), at("[::1]:22222"));
        assert_eq!(tcp("tcp6:::1:9002"), at("[::1]:9002"));
        assert_eq!(tcp("tcp6:*"), at("[::]:22222"));
        assert_eq!(
            tcp("cunix:/run/x.sock"),
            Ok(ControlSpec::Cunix("/run/x.sock".into()))
        );
        for bad in [
            "tcp:127.0.0.1:0",
            "tcp:::1",
            "tcp6:127.0.0.1",
            "tcp6:[::1]x",
            "tcp6:[::1",
            "cunix:",
        ] {
            assert!(tcp(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ControlSpec::Tcp("127.0.0.5:1".parse().unwrap()).bound_ipv4(),
            Some([127, 0, 0, 5].into())
        );
        assert_eq!(
            ControlSpec::Udp("0.0.0.0:1".parse().unwrap()).bound_ipv4(),
            None
        );
        assert_eq!(ControlSpec::Cunix("/x".into()).bound_ipv4(), None);
    }

    #[test]
    fn remotes_parse() {
        assert_eq!(
            parse_remote(b"10.0.0.1", b"4000", false),
            Some("10.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            parse_remote(b"::1", b"4000", true),
            Some("[::1]:4000".parse().unwrap())
        );
        assert_eq!(parse_remote(b"0.0.0.0", b"4000", false), None);
        assert_eq!(parse_remote(b"10.0.0.1", b"0", false), None);
        assert_eq!(parse_remote(b"::1", b"4000", false), None);
        assert_eq!(parse_remote(b"junk", b"4000", false), None);
        assert_eq!(parse_remote(b"10.0.0.1", b"x", false), None);
    }

    #[test]
    fn port_table_stays_in_range_and_even() {
        let mut rng = Random::with_seed(7);
        let t = PortTable::new(35001, 35011, &mut rng);
        let mut ports: Vec<u16> = t.free.iter().copied().collect();
        ports.sort();
        assert_eq!(ports, vec![35002, 35004, 35006, 35008, 35010]);
        assert_eq!(t.total_pairs(), 5);
    }

    #[test]
    fn recv_batch_reads_all_queued_datagrams_with_senders() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx6 = UdpSocket::bind("[::1]:0");
        for i in 0..3u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = RecvBatch::new();
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 3);
        for i in 0..3u8 {
            let (d, from) = b.get(usize::from(i)).unwrap();
            assert_eq!(d, &[i; 10]);
            assert_eq!(from, tx.local_addr().unwrap());
        }
        assert!(b.get(3).is_none());
        assert_eq!(
            b.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        if let Ok(tx6) = tx6 {
            let rx6 = UdpSocket::bind("[::1]:0").unwrap();
            rx6.set_nonblocking(true).unwrap();
            tx6.send_to(b"six", rx6.local_addr().unwrap()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert_eq!(b.recv(rx6.as_raw_fd()).unwrap(), 1);
            assert_eq!(b.get(0).unwrap(), (&b"six"[..], tx6.local_addr().unwrap()));
        }
    }
}
