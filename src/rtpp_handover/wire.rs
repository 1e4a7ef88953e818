//! The bytes of a hand-over: a bounded writer and a reader that trusts
//! nothing. Every length is checked against what is left and against a
//! cap before anything is allocated, every descriptor is named by its
//! place in the list that came with the bytes and may be taken once, and
//! moments are carried as signed offsets from the encoder's "now", since
//! an `Instant` means nothing in another process.
//!
//! This module knows no other module of the crate: the modules whose
//! structures are carried implement [`Carry`] next to their private
//! fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Longest byte string carried in one piece (a prompt path, a tag, a
/// notification buffer).
pub const BYTES_MAX: usize = 1 << 20;
/// Most items of one carried list (sessions, cache entries, slots).
pub const ITEMS_MAX: usize = 1 << 20;
/// Furthest a carried moment may lie from "now": a session's age, a
/// deadline. Ten years covers every daemon's uptime.
const OFFSET_MAX_NS: i64 = 10 * 365 * 24 * 3600 * 1_000_000_000;

/// Why bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type WireResult<T> = Result<T, WireError>;

/// A refusal saying what was wrong.
pub fn refuse<T>(what: impl Into<String>) -> WireResult<T> {
    Err(WireError(what.into()))
}

/// Appends values, and the descriptors they name, for one hand-over.
pub struct Writer {
    pub bytes: Vec<u8>,
    pub fds: Vec<RawFd>,
    now: Instant,
}

impl Writer {
    pub fn new(now: Instant) -> Writer {
        Writer {
            bytes: Vec::new(),
            fds: Vec::new(),
            now,
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    /// A count of what follows; the reader checks it against its cap.
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.bytes.extend_from_slice(v);
    }

    /// A moment, as its distance from the encoder's now.
    pub fn instant(&mut self, t: Instant) {
        let ns = if t >= self.now {
            i64::try_from(t.duration_since(self.now).as_nanos()).unwrap_or(OFFSET_MAX_NS)
        } else {
            -i64::try_from(self.now.duration_since(t).as_nanos()).unwrap_or(OFFSET_MAX_NS)
        };
        self.i64(ns.clamp(-OFFSET_MAX_NS, OFFSET_MAX_NS));
    }

    /// A descriptor that goes with the bytes, by its place in the list.
    pub fn fd(&mut self, fd: &impl AsRawFd) {
        self.len(self.fds.len());
        self.fds.push(fd.as_raw_fd());
    }

    pub fn put<T: Carry>(&mut self, v: &T) {
        v.put(self);
    }
}

/// Reads values back; every read is bounded by what is left.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    fds: Vec<Option<OwnedFd>>,
    now: Instant,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], fds: Vec<OwnedFd>, now: Instant) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            fds: fds.into_iter().map(Some).collect(),
            now,
        }
    }

    fn take_n(&mut self, n: usize) -> WireResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return refuse(format!("truncated at byte {}", self.pos));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> WireResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take_n(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> WireResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> WireResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> WireResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> WireResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> WireResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn f64(&mut self) -> WireResult<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub fn bool(&mut self) -> WireResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => refuse(format!("bad flag {v}")),
        }
    }

    /// A count of at most `cap` items, each at least `each` bytes long:
    /// a count the remaining bytes cannot hold is refused before any
    /// allocation.
    pub fn len(&mut self, cap: usize, each: usize) -> WireResult<usize> {
        let n = self.u32()? as usize;
        let left = self.bytes.len() - self.pos;
        if n > cap || n.saturating_mul(each.max(1)) > left {
            return refuse(format!("count {n} out of bounds at byte {}", self.pos));
        }
        Ok(n)
    }

    pub fn bytes(&mut self, cap: usize) -> WireResult<&'a [u8]> {
        let n = self.len(cap, 1)?;
        self.take_n(n)
    }

    pub fn instant(&mut self) -> WireResult<Instant> {
        let ns = self.i64()?;
        if !(-OFFSET_MAX_NS..=OFFSET_MAX_NS).contains(&ns) {
            return refuse(format!("moment {ns} ns away"));
        }
        let d = Duration::from_nanos(ns.unsigned_abs());
        let t = if ns >= 0 {
            self.now.checked_add(d)
        } else {
            self.now.checked_sub(d)
        };
        t.map_or_else(|| refuse("moment before the clock's origin"), Ok)
    }

    /// The descriptor an index names; each may be taken once.
    pub fn fd(&mut self) -> WireResult<OwnedFd> {
        let i = self.u32()? as usize;
        match self.fds.get_mut(i).map(Option::take) {
            Some(Some(fd)) => Ok(fd),
            Some(None) => refuse(format!("descriptor {i} named twice")),
            None => refuse(format!("descriptor {i} of {} named", self.fds.len())),
        }
    }

    pub fn take<T: Carry>(&mut self) -> WireResult<T> {
        T::take(self)
    }

    /// Bytes left unread.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Descriptors that came with the bytes and nothing named.
    pub fn unused_fds(&self) -> usize {
        self.fds.iter().filter(|f| f.is_some()).count()
    }
}

/// A value that crosses a hand-over: written by the old process, read
/// back (checked) by the new one.
pub trait Carry: Sized {
    fn put(&self, w: &mut Writer);
    fn take(r: &mut Reader<'_>) -> WireResult<Self>;
}

/// `Carry` for a struct whose fields all carry, written field by field in
/// the order given; `check` (optional) refuses a value whose fields do not
/// hold together, such as an index past its array.
macro_rules! carry_fields {
    ($t:ident { $($f:ident),* $(,)? }) => {
        $crate::rtpp_handover::wire::carry_fields!($t { $($f),* } check |_v| true);
    };
    ($t:ident { $($f:ident),* $(,)? } check |$v:ident| $ok:expr) => {
        impl $crate::rtpp_handover::wire::Carry for $t {
            fn put(&self, w: &mut $crate::rtpp_handover::wire::Writer) {
                $( $crate::rtpp_handover::wire::Carry::put(&self.$f, w); )*
            }
            fn take(
                r: &mut $crate::rtpp_handover::wire::Reader<'_>,
            ) -> $crate::rtpp_handover::wire::WireResult<Self> {
                let $v = $t {
                    $( $f: $crate::rtpp_handover::wire::Carry::take(r)?, )*
                };
                if !$ok {
                    return $crate::rtpp_handover::wire::refuse(concat!(
                        "inconsistent ",
                        stringify!($t)
                    ));
                }
                Ok($v)
            }
        }
    };
}
pub(crate) use carry_fields;

macro_rules! carry_plain {
    ($($t:ty => $m:ident),*) => {$(
        impl Carry for $t {
            fn put(&self, w: &mut Writer) {
                w.$m(*self);
            }
            fn take(r: &mut Reader<'_>) -> WireResult<Self> {
                r.$m()
            }
        }
    )*};
}

carry_plain!(u8 => u8, u16 => u16, u32 => u32, u64 => u64, i64 => i64, f64 => f64, bool => bool, Instant => instant);

impl Carry for i32 {
    fn put(&self, w: &mut Writer) {
        w.u32(*self as u32);
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        Ok(r.u32()? as i32)
    }
}

impl Carry for usize {
    fn put(&self, w: &mut Writer) {
        w.u64(*self as u64);
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        usize::try_from(r.u64()?).or_else(|_| refuse("size out of range"))
    }
}

impl<T: Carry> Carry for Option<T> {
    fn put(&self, w: &mut Writer) {
        match self {
            None => w.u8(0),
            Some(v) => {
                w.u8(1);
                v.put(w);
            }
        }
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        match r.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::take(r)?)),
            v => refuse(format!("bad option tag {v}")),
        }
    }
}

macro_rules! carry_tuple {
    ($($n:tt $t:ident),*) => {
        impl<$($t: Carry),*> Carry for ($($t,)*) {
            fn put(&self, w: &mut Writer) {
                $( self.$n.put(w); )*
            }
            fn take(r: &mut Reader<'_>) -> WireResult<Self> {
                Ok(($($t::take(r)?,)*))
            }
        }
    };
}

carry_tuple!(0 A, 1 B);
carry_tuple!(0 A, 1 B, 2 C);
carry_tuple!(0 A, 1 B, 2 C, 3 D);
carry_tuple!(0 A, 1 B, 2 C, 3 D, 4 E);

impl<T: Carry, const N: usize> Carry for [T; N] {
    fn put(&self, w: &mut Writer) {
        for v in self {
            v.put(w);
        }
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        let mut items = Vec::with_capacity(N);
        for _ in 0..N {
            items.push(T::take(r)?);
        }
        items
            .try_into()
            .or_else(|_| refuse("array of the wrong length"))
    }
}

impl<T: Carry> Carry for Vec<T> {
    fn put(&self, w: &mut Writer) {
        w.len(self.len());
        for v in self {
            v.put(w);
        }
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        let n = r.len(ITEMS_MAX, 1)?;
        // Grown as items prove to be there: a count alone buys no memory
        // beyond a small start.
        let mut items = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            items.push(T::take(r)?);
        }
        Ok(items)
    }
}

impl Carry for Box<[u8]> {
    fn put(&self, w: &mut Writer) {
        w.bytes(self);
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        Ok(r.bytes(BYTES_MAX)?.into())
    }
}

impl Carry for std::path::PathBuf {
    fn put(&self, w: &mut Writer) {
        use std::os::unix::ffi::OsStrExt;
        w.bytes(self.as_os_str().as_bytes());
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        use std::os::unix::ffi::OsStrExt;
        let raw = r.bytes(4096)?;
        if raw.contains(&0) {
            return refuse("path with a NUL byte");
        }
        Ok(std::ffi::OsStr::from_bytes(raw).into())
    }
}

impl Carry for String {
    fn put(&self, w: &mut Writer) {
        w.bytes(self.as_bytes());
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        String::from_utf8(r.bytes(BYTES_MAX)?.to_vec()).or_else(|_| refuse("text not UTF-8"))
    }
}

impl Carry for IpAddr {
    fn put(&self, w: &mut Writer) {
        match self {
            IpAddr::V4(a) => {
                w.u8(4);
                w.bytes.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                w.u8(6);
                w.bytes.extend_from_slice(&a.octets());
            }
        }
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        match r.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
            v => refuse(format!("bad address family {v}")),
        }
    }
}

impl Carry for SocketAddr {
    fn put(&self, w: &mut Writer) {
        self.ip().put(w);
        w.u16(self.port());
        if let SocketAddr::V6(a) = self {
            w.u32(a.scope_id());
        }
    }
    fn take(r: &mut Reader<'_>) -> WireResult<Self> {
        let ip = IpAddr::take(r)?;
        let port = r.u16()?;
        Ok(match ip {
            IpAddr::V4(_) => SocketAddr::new(ip, port),
            IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, port, 0, r.u32()?)),
        })
    }
}

/// Checks that `fd` is a UDP socket bound where the bytes say: a
/// descriptor of another kind, or bound elsewhere, is refused.
pub fn check_udp(fd: &OwnedFd, bound: Option<SocketAddr>) -> WireResult<()> {
    check_socket(fd, nix::sys::socket::SockType::Datagram, bound)
}

/// Checks that `fd` is a socket of `kind`, and when `bound` is given, of
/// that address's family, port and (unless unspecified) address.
pub fn check_socket(
    fd: &OwnedFd,
    kind: nix::sys::socket::SockType,
    bound: Option<SocketAddr>,
) -> WireResult<()> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrStorage};
    match getsockopt(fd, sockopt::SockType) {
        Ok(t) if t == kind => {}
        Ok(t) => return refuse(format!("descriptor is a {t:?} socket, not {kind:?}")),
        Err(e) => return refuse(format!("descriptor is not a socket: {e}")),
    }
    let Some(want) = bound else {
        return Ok(());
    };
    let got = getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|s| {
            s.as_sockaddr_in()
                .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
                .or_else(|| {
                    s.as_sockaddr_in6()
                        .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
                })
        });
    match got {
        Some(g)
            if g.port() == want.port()
                && g.is_ipv4() == want.is_ipv4()
                && (want.ip().is_unspecified() || g.ip() == want.ip()) =>
        {
            Ok(())
        }
        other => refuse(format!("socket bound to {other:?}, the bytes say {want}")),
    }
}

/// Checks that `fd` is open on a regular file (a recording, the `-A`
/// file) or a FIFO.
pub fn check_file(fd: &OwnedFd) -> WireResult<()> {
    match nix::sys::stat::fstat(fd.as_raw_fd()) {
        Ok(st) => {
            let kind = st.st_mode & nix::libc::S_IFMT;
            if kind == nix::libc::S_IFREG || kind == nix::libc::S_IFIFO {
                Ok(())
            } else {
                refuse("descriptor is not a file")
            }
        }
        Err(e) => refuse(format!("descriptor is not open: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back() {
        let now = Instant::now();
        let mut w = Writer::new(now);
        let addr: SocketAddr = "[::1]:5004".parse().unwrap();
        w.put(&7u16);
        w.put(&Some(addr));
        w.put(&(now - Duration::from_secs(3)));
        w.put(&vec![1u64, 2, 3]);
        w.put(&Box::<[u8]>::from(&b"tag"[..]));
        let later = now + Duration::from_millis(5);
        let mut r = Reader::new(&w.bytes, Vec::new(), later);
        assert_eq!(r.take::<u16>().unwrap(), 7);
        assert_eq!(r.take::<Option<SocketAddr>>().unwrap(), Some(addr));
        let t: Instant = r.take().unwrap();
        assert_eq!(later - t, Duration::from_secs(3));
        assert_eq!(r.take::<Vec<u64>>().unwrap(), vec![1, 2, 3]);
        assert_eq!(&*r.take::<Box<[u8]>>().unwrap(), b"tag");
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn lies_are_refused() {
        let now = Instant::now();
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0x0f], Vec::new(), now);
        assert!(r.take::<Vec<u64>>().is_err());
        let mut r = Reader::new(&[0, 0, 0, 0], Vec::new(), now);
        assert!(r.fd().is_err());
        let mut r = Reader::new(&[2], Vec::new(), now);
        assert!(r.take::<bool>().is_err());
        let mut w = Writer::new(now);
        w.i64(i64::MIN);
        let mut r = Reader::new(&w.bytes, Vec::new(), now);
        assert!(r.take::<Instant>().is_err());
    }

    #[test]
    fn a_descriptor_is_taken_once() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = OwnedFd::from(s);
        let mut w = Writer::new(Instant::now());
        w.fd(&fd);
        w.fd(&fd);
        let bytes = w.bytes.clone();
        let mut r = Reader::new(&bytes, vec![fd], Instant::now());
        let got = r.fd().unwrap();
        assert!(check_udp(&got, None).is_ok());
        assert!(r.fd().is_err());
    }
}
