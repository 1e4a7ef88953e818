//! Addresses and sockets: parsing and printing addresses, opening media
//! sockets with TOS set, the media port table and the poll(2) set.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use nix::libc;

use crate::rtpp_defines::{ControlSpec, CPORT};
use crate::rtpp_util::Random;

/// Parses the `-s` argument: `unix:PATH`, `udp:ADDR[:PORT]`,
/// `udp6:ADDR[:PORT]` or a bare path.
pub fn parse_control_spec(spec: &str) -> Result<ControlSpec, String> {
    if let Some(rest) = spec.strip_prefix("udp:") {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (rest, CPORT),
        };
        let ip = resolve_host(host, false)?;
        return Ok(ControlSpec::Udp(SocketAddr::new(ip, port)));
    }
    if let Some(rest) = spec.strip_prefix("udp6:") {
        // `[::1]:9000` is unambiguous; otherwise the port follows the LAST
        // colon, as the classic daemon read it (`udp6:::1:9000`).
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            match inner.split_once(']') {
                Some((h, "")) => (h, CPORT),
                Some((h, p)) => match p.strip_prefix(':') {
                    Some(p) => (h, parse_port(p)?),
                    None => return Err(format!("invalid udp6 address: {rest}")),
                },
                None => return Err(format!("invalid udp6 address: {rest}")),
            }
        } else if rest == "*" {
            (rest, CPORT)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() => (h, parse_port(p)?),
                _ => (rest, CPORT),
            }
        };
        let ip = resolve_host(host, true)?;
        return Ok(ControlSpec::Udp(SocketAddr::new(ip, port)));
    }
    let path = spec.strip_prefix("unix:").unwrap_or(spec);
    if path.is_empty() {
        return Err("empty control socket path".into());
    }
    Ok(ControlSpec::Unix(PathBuf::from(path)))
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

/// A dense poll(2) set: slot `i` of the pollfd array belongs to `owners[i]`.
/// Removal moves the last entry into the hole, so the set never has gaps and
/// poll's cost follows the live sockets; the caller learns which owner moved.
pub struct PollSet<T: Copy> {
    fds: Vec<libc::pollfd>,
    owners: Vec<T>,
}

impl<T: Copy> PollSet<T> {
    /// An empty set.
    pub fn new() -> PollSet<T> {
        PollSet {
            fds: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// Watches `fd` for input; returns its slot.
    pub fn add(&mut self, fd: RawFd, owner: T) -> usize {
        self.fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        self.owners.push(owner);
        self.fds.len() - 1
    }

    /// Stops watching a slot; returns the owner that now sits in `slot`
    /// (moved from the end), whose recorded slot must be updated.
    pub fn remove(&mut self, slot: usize) -> Option<T> {
        if slot >= self.fds.len() {
            return None;
        }
        self.fds.swap_remove(slot);
        self.owners.swap_remove(slot);
        self.owners.get(slot).copied()
    }

    /// Points a slot at another descriptor (-1 = ignored by poll).
    pub fn set_fd(&mut self, slot: usize, fd: RawFd) {
        if let Some(p) = self.fds.get_mut(slot) {
            p.fd = fd;
            p.revents = 0;
        }
    }

    /// Waits up to `timeout_ms` for input on any slot.
    pub fn poll(&mut self, timeout_ms: i32) -> io::Result<usize> {
        for p in self.fds.iter_mut() {
            p.revents = 0;
        }
        // SAFETY: the pointer and length describe our own live Vec.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// True when the slot has input (or an error/hang-up to collect).
    pub fn ready(&self, slot: usize) -> bool {
        self.fds
            .get(slot)
            .is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
    }

    /// Who owns a slot.
    pub fn owner(&self, slot: usize) -> Option<T> {
        self.owners.get(slot).copied()
    }

    /// Number of watched sockets.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// True when nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}

impl<T: Copy> Default for PollSet<T> {
    fn default() -> Self {
        PollSet::new()
    }
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
    fn poll_set_reports_moved_owner() {
        let mut set: PollSet<u32> = PollSet::new();
        set.add(10, 100);
        set.add(11, 101);
        set.add(12, 102);
        assert_eq!(set.remove(0), Some(102));
        assert_eq!(set.owner(0), Some(102));
        assert_eq!(set.remove(1), None);
        assert_eq!(set.len(), 1);
    }
}
