//! Remote copies: the `C CALLID udp:HOST:PORT` channel (see doc/PROTOCOL.md,
//! "Recording").
//!
//! [`parse_remote_target`] turns the command's target into an address, and
//! [`RemoteCopy`] forwards every packet of the channel to HOST:PORT (RTCP to
//! PORT+1) from its own unconnected, non-blocking UDP socket; send errors
//! are counted, never fatal.

use std::cell::Cell;
use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs, UdpSocket,
};

/// Parses the target of `C CALLID udp:HOST:PORT`: `udp:1.2.3.4:9000`,
/// `udp:[::1]:9000`, `udp6:::1:9000` (port after the last colon) or a host
/// name (resolved now, preferring IPv4 for `udp:` and IPv6 for `udp6:`).
///
/// PORT must leave room for RTCP on PORT+1, so it is 1..=65534.
pub fn parse_remote_target(spec: &str) -> Option<SocketAddr> {
    let (rest, prefer_v6) = if let Some(r) = strip_prefix_ignore_case(spec, "udp6:") {
        (r, true)
    } else if let Some(r) = strip_prefix_ignore_case(spec, "udp:") {
        (r, false)
    } else {
        return None;
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        rest.rsplit_once(':')?
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    if port == 0 || port == u16::MAX {
        return None;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let is_host_name = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !is_host_name {
        return None;
    }
    let candidates: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    candidates
        .iter()
        .copied()
        .find(|a| a.is_ipv6() == prefer_v6)
        .or_else(|| candidates.first().copied())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// A `C CALLID udp:HOST:PORT` channel: copies of packets sent over UDP.
#[derive(Debug)]
pub struct RemoteCopy {
    socket: UdpSocket,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    errors: Cell<u64>,
}

impl RemoteCopy {
    /// Opens a non-blocking socket of the target's family for copies to
    /// `target` (RTP) and the next port (RTCP).
    pub fn new(target: SocketAddr) -> io::Result<Self> {
        let local = match target {
            SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
        };
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        let mut rtcp = target;
        rtcp.set_port(target.port().wrapping_add(1));
        Ok(RemoteCopy {
            socket,
            rtp: target,
            rtcp,
            errors: Cell::new(0),
        })
    }

    /// Sends a copy of `packet`, to PORT+1 when it is RTCP; failures
    /// (full socket buffer, unreachable target) are only counted.
    pub fn send(&self, packet: &[u8], rtcp: bool) {
        let to = if rtcp { self.rtcp } else { self.rtp };
        if self.rtcp.port() == 0 && rtcp {
            self.errors.set(self.errors.get() + 1);
            return;
        }
        if self.socket.send_to(packet, to).is_err() {
            self.errors.set(self.errors.get() + 1);
        }
    }

    /// Where RTP copies go.
    pub fn target(&self) -> SocketAddr {
        self.rtp
    }

    /// How many copies could not be sent.
    #[cfg(test)]
    pub fn send_errors(&self) -> u64 {
        self.errors.get()
    }
}

// Carried across a hand-over (doc/PROTOCOL.md, "Hand-over") with its
// socket, so the copy goes on from the same source port.
impl crate::rtpp_handover::wire::Carry for RemoteCopy {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.fd(&self.socket);
        w.put(&self.rtp);
        w.put(&self.rtcp);
        w.u64(self.errors.get());
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        let fd = r.fd()?;
        crate::rtpp_handover::wire::check_udp(&fd, None)?;
        Ok(RemoteCopy {
            socket: UdpSocket::from(fd),
            rtp: r.take()?,
            rtcp: r.take()?,
            errors: Cell::new(r.u64()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn remote_targets_parse() {
        assert_eq!(
            parse_remote_target("udp:127.0.0.1:9000"),
            Some(v4("127.0.0.1:9000"))
        );
        assert_eq!(
            parse_remote_target("udp:[::1]:9000"),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(
            parse_remote_target("udp6:::1:9000"),
            Some("[::1]:9000".parse().unwrap())
        );
        assert_eq!(
            parse_remote_target("UDP:10.1.2.3:5"),
            Some(v4("10.1.2.3:5"))
        );
        for bad in [
            "",
            "udp:",
            "udp:1.2.3.4",
            "udp:1.2.3.4:",
            "udp:1.2.3.4:0",
            "udp:1.2.3.4:65535",
            "udp:1.2.3.4:99999",
            "udp:1.2.3.4:+9",
            "tcp:1.2.3.4:9",
            "udp:[::1:9",
            "udp:[::1]9",
            "udp:bad host:9",
            "udp:é:9",
            "udp::9",
        ] {
            assert_eq!(parse_remote_target(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn remote_copy_sends_rtp_and_rtcp_to_adjacent_ports() {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) else {
            return; // The next port is taken by someone else: nothing to check.
        };
        for s in [&rtp, &rtcp] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let copy = RemoteCopy::new(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)).unwrap();
        copy.send(b"rtp", false);
        copy.send(b"rtcp", true);
        let mut buf = [0u8; 16];
        let (n, _) = rtp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"rtp");
        let (n, _) = rtcp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"rtcp");
        assert_eq!(copy.send_errors(), 0);
    }
}
