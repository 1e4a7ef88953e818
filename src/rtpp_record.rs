//! Recording channels: the files `R`, `C` and `-a` write (see doc/PROTOCOL.md,
//! "Recording"). [`crate::rtpp_record_reader`] reads them back for
//! `extractaudio`; [`crate::rtpp_copy`] sends the `C CALLID udp:HOST:PORT`
//! copies, which write no file.
//!
//! # Channels
//!
//! A [`RecordFile`] is one recorded direction of one stream (RTP or RTCP).
//! Packets are appended to a 64 KiB buffer allocated when the channel is
//! created and reach the disk in one large `write(2)` when the buffer fills,
//! on [`RecordFile::flush`], on [`RecordFile::finish`] and on drop, so the
//! packet path never allocates and a shutdown loses nothing. The first write
//! error (disk full, EIO, directory removed, ...) stops the channel for good:
//! what already reached the disk stays, the error is returned exactly once,
//! and later calls do nothing and return `Ok`, so the caller logs one line
//! per channel. With a spool directory (`-S`) the file is written there and
//! moved into the final directory (`-r`) by `finish`, or by drop, even after
//! a write error.
//!
//! Files are created with `O_CREAT | O_EXCL` and mode 0644: an existing file
//! is never clobbered; the new one gets a numeric suffix instead
//! (`NAME.1`, `NAME.2`, ...), and the move out of the spool follows the same
//! rule.
//!
//! # Ad-hoc format (the default)
//!
//! No file header. Per packet a 40-byte header in the host's byte order,
//! laid out as the classic C `struct pkt_hdr_adhoc` is on x86-64 Linux,
//! followed by the packet bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | address family of the sender, host order (`AF_INET` = 2, `AF_INET6` = 10) |
//! | 2 | 2 | sender's UDP port, network order |
//! | 4 | 4 or 16 | sender's IPv4 or IPv6 address; for IPv4, bytes 8..20 are zero |
//! | 20 | 4 | zero (alignment of the `double` that follows) |
//! | 24 | 8 | arrival time, `f64` seconds since the Unix epoch |
//! | 32 | 2 | packet length, `u16` |
//! | 34 | 6 | zero (struct tail padding) |
//!
//! The address block is the classic union of `{family, port, in_addr}` and
//! `{family, port, in6_addr}`, 20 bytes: an IPv6 sender fills it exactly,
//! which is how the classic daemon already stored IPv6. Only the sender is
//! stored; [`read_recording`](crate::rtpp_record_reader::read_recording)
//! reports no destination for this format. IPv6 flow labels and scope ids
//! do not fit and are not kept.
//!
//! # PCAP format (`-P`)
//!
//! A classic libpcap file (magic 0xa1b2c3d4 in host order, version 2.4,
//! snaplen 65535, microsecond timestamps) with link type `LINKTYPE_NULL`:
//! each frame starts with a 4-byte host-order address family, then a
//! synthesized IP header and a UDP header from the sender to the local
//! address the packet arrived on, then the packet.
//!
//! - IPv4 frames use family 2 and a 20-byte IPv4 header (TTL 127, an
//!   identification counter per file, a valid header checksum); the UDP
//!   checksum is 0 ("not computed"), as the classic daemon wrote it.
//! - IPv6 frames use family 24, the BSD `AF_INET6` value that libpcap,
//!   tcpdump and Wireshark recognise in `LINKTYPE_NULL` captures (the Linux
//!   value 10 is not recognised there), and a 40-byte IPv6 header (hop limit
//!   127); the UDP checksum is computed, since 0 is invalid over IPv6.
//!
//! Keeping `LINKTYPE_NULL` leaves IPv4 recordings byte-compatible with the
//! classic daemon and lets one file hold both families, which a
//! per-file link type could not.
//!
//! # File names
//!
//! [`record_file_name`] builds `CALLID=TAG.SUFFIX` and [`copy_file_name`]
//! the `NAME` of `C`. Every byte that could change where the file lands or
//! make the name ambiguous is written as `%XX` (upper-case hex): `/`, `%`,
//! `=`, NUL, space and other control bytes (< 0x21, 0x7f), bytes >= 0x80, and
//! a `.` at the start of the name. A name is therefore always one path
//! component that is neither `.` nor `..` nor hidden, and decoding `%XX`
//! gives back the exact Call-ID and tag bytes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// On-disk layout of a recording file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// The classic per-packet 40-byte header format.
    Adhoc,
    /// A libpcap capture with synthesized IP and UDP headers (`-P`).
    Pcap,
}

/// Size of the per-packet header of the ad-hoc format.
pub const ADHOC_HEADER_LEN: usize = 40;
/// Size of the libpcap global file header.
pub const PCAP_FILE_HEADER_LEN: usize = 24;
/// libpcap magic number for microsecond timestamps.
pub const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// Snapshot length written into the global header.
const PCAP_SNAPLEN: u32 = 65535;
/// Size of the libpcap per-packet record header.
pub(crate) const PCAP_RECORD_HEADER_LEN: usize = 16;
/// The link type written: a host-order address family, then the IP packet.
pub(crate) const LINKTYPE_NULL: u32 = 0;
/// Address families as the ad-hoc header stores them (Linux values).
pub(crate) const ADHOC_AF_INET: u16 = 2;
pub(crate) const ADHOC_AF_INET6: u16 = 10;
/// Address families in a `LINKTYPE_NULL` frame.
pub(crate) const NULL_AF_INET: u32 = 2;
pub(crate) const NULL_AF_INET6: u32 = 24;
pub(crate) const IPV4_HEADER_LEN: usize = 20;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
pub(crate) const UDP_HEADER_LEN: usize = 8;
pub(crate) const IPPROTO_UDP: u8 = 17;
const SYNTH_TTL: u8 = 127;
/// Longest PCAP per-packet header: record header, family, IPv6, UDP.
const MAX_HEADER_LEN: usize = PCAP_RECORD_HEADER_LEN + 4 + IPV6_HEADER_LEN + UDP_HEADER_LEN;
/// Size of the per-channel write buffer unless the caller picks another.
pub const BUFFER_SIZE: usize = 64 * 1024;
/// How many numeric suffixes are tried before giving up on a name.
const MAX_NAME_SUFFIX: u32 = 1000;
/// Longest file name most file systems accept (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// A recording channel stopped on a write error; reported once per channel.
#[derive(Debug)]
pub struct RecordError {
    /// The file being written (in the spool when spooling).
    pub path: PathBuf,
    /// What the kernel said.
    pub source: io::Error,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error writing recording {}: {}; recording stopped",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One recorded stream direction written to a file in the ad-hoc or PCAP format.
#[derive(Debug)]
pub struct RecordFile {
    /// `None` once stopped by an error or closed.
    file: Option<File>,
    format: RecordFormat,
    buf: Vec<u8>,
    /// Where the file is being written.
    path: PathBuf,
    /// The final directory and the wanted name there, when spooling.
    destination: Option<(PathBuf, String)>,
    ip_id: u16,
    skipped: u64,
    stopped: bool,
    closed: bool,
}

impl RecordFile {
    /// Creates a recording file named `file_name` in `spool_dir` (moved to
    /// `final_dir` on finish) or directly in `final_dir`.
    pub fn create(
        final_dir: &Path,
        spool_dir: Option<&Path>,
        file_name: &str,
        format: RecordFormat,
    ) -> io::Result<Self> {
        Self::create_sized(final_dir, spool_dir, file_name, format, BUFFER_SIZE)
    }

    /// Like [`RecordFile::create`] with a write buffer of `capacity` bytes,
    /// so thousands of mostly idle channels (RTCP) need not hold 64 KiB each.
    pub fn create_sized(
        final_dir: &Path,
        spool_dir: Option<&Path>,
        file_name: &str,
        format: RecordFormat,
        capacity: usize,
    ) -> io::Result<Self> {
        let capacity = capacity.max(MAX_HEADER_LEN + 2048);
        if !is_single_component(file_name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("recording file name {file_name:?} is not a single path component"),
            ));
        }
        let dir = spool_dir.unwrap_or(final_dir);
        let (file, path) = create_unique(dir, file_name)?;
        let mut buf = Vec::with_capacity(capacity);
        if format == RecordFormat::Pcap {
            buf.extend_from_slice(&pcap_file_header());
        }
        Ok(RecordFile {
            file: Some(file),
            format,
            buf,
            path,
            destination: spool_dir.map(|_| (final_dir.to_path_buf(), file_name.to_owned())),
            ip_id: 0,
            skipped: 0,
            stopped: false,
            closed: false,
        })
    }

    /// Appends one packet that `src` sent to the local address `dst`.
    ///
    /// Returns the error that stopped the channel the first time writing
    /// fails; afterwards, and for packets too large for the format (which
    /// UDP cannot deliver), it does nothing and returns `Ok`.
    pub fn write_packet(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        arrival: SystemTime,
        packet: &[u8],
    ) -> Result<(), RecordError> {
        if self.file.is_none() {
            return Ok(());
        }
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = match self.format {
            RecordFormat::Adhoc => encode_adhoc_header(&mut header, src, arrival, packet.len()),
            RecordFormat::Pcap => {
                let id = self.ip_id;
                let n = encode_pcap_header(&mut header, src, dst, arrival, packet, id);
                if n.is_some() {
                    self.ip_id = id.wrapping_add(1);
                }
                n
            }
        };
        let Some(header_len) = header_len else {
            self.skipped += 1;
            return Ok(());
        };
        let header = &header[..header_len];
        let record_len = header_len + packet.len();
        let capacity = self.buf.capacity();
        if self.buf.len() + record_len > capacity {
            self.flush()?;
            if self.file.is_none() {
                return Ok(());
            }
        }
        if record_len > capacity {
            // Only a near-64 KiB datagram gets here: written straight through
            // so the buffer never grows past what was allocated up front.
            let result = match self.file.as_mut() {
                Some(file) => file.write_all(header).and_then(|()| file.write_all(packet)),
                None => Ok(()),
            };
            return result.map_err(|e| self.stop(e));
        }
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(packet);
        Ok(())
    }

    /// Writes the buffered packets to the file now.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        match file.write_all(&self.buf) {
            Ok(()) => {
                self.buf.clear();
                Ok(())
            }
            Err(e) => Err(self.stop(e)),
        }
    }

    /// Flushes and closes the file, moving it into the final directory when
    /// spooled; returns where it now is.
    ///
    /// A write error not yet reported by `write_packet` or `flush` is
    /// returned here (the file is still moved); an error reported before is
    /// not repeated.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        self.close()
    }

    /// Where the file is currently being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format this channel writes.
    pub fn format(&self) -> RecordFormat {
        self.format
    }

    /// Whether a write error stopped the channel.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// How many packets were not recorded because no header could describe them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn stop(&mut self, source: io::Error) -> RecordError {
        self.file = None;
        self.buf.clear();
        self.stopped = true;
        RecordError {
            path: self.path.clone(),
            source,
        }
    }

    fn close(&mut self) -> io::Result<PathBuf> {
        if self.closed {
            return Ok(self.path.clone());
        }
        self.closed = true;
        let flushed = self.flush();
        self.file = None;
        if let Some((dir, name)) = self.destination.take() {
            match move_unique(&self.path, &dir, &name) {
                Ok(moved) => self.path = moved,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "can't move recording {} into {}: {e}",
                            self.path.display(),
                            dir.display()
                        ),
                    ))
                }
            }
        }
        match flushed {
            Ok(()) => Ok(self.path.clone()),
            Err(e) => Err(io::Error::new(
                e.source.kind(),
                format!("{}; file kept as {}", e, self.path.display()),
            )),
        }
    }
}

impl Drop for RecordFile {
    fn drop(&mut self) {
        // Ends of sessions and shutdown must not lose buffered packets nor
        // leave files in the spool; nobody is left to hear about errors.
        let _ = self.close();
    }
}

fn is_single_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn numbered_name(name: &str, n: u32) -> String {
    if n == 0 {
        name.to_owned()
    } else {
        format!("{name}.{n}")
    }
}

fn create_unique(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    for n in 0..MAX_NAME_SUFFIX {
        let path = dir.join(numbered_name(name, n));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("can't create recording {}: {e}", path.display()),
                ))
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "can't create recording {}: {MAX_NAME_SUFFIX} files of that name exist",
            dir.join(name).display()
        ),
    ))
}

/// Moves `from` to `dir/name` (or a numbered variant) without replacing an
/// existing file, copying when the two are on different file systems.
fn move_unique(from: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 0..MAX_NAME_SUFFIX {
        let to = dir.join(numbered_name(name, n));
        match rename_noreplace(from, &to) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
                match copy_noreplace(from, &to) {
                    Ok(()) => {
                        std::fs::remove_file(from)?;
                        return Ok(to);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{MAX_NAME_SUFFIX} files named {name} exist"),
    ))
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(()),
            // Older kernels and some file systems lack the flag: fall back.
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    // link(2) refuses to replace, then the spool name goes away.
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

fn copy_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(from)?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)?;
    let copied = io::copy(&mut src, &mut dst).and_then(|_| dst.flush());
    if let Err(e) = copied {
        let _ = std::fs::remove_file(to);
        return Err(e);
    }
    Ok(())
}

/// Seconds and microseconds since the epoch; times before it count as 0.
fn split_time(t: SystemTime) -> (u64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_micros()),
        Err(_) => (0, 0),
    }
}

fn seconds_f64(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(_) => 0.0,
    }
}

/// Fills `out` with the ad-hoc header; `None` if the length does not fit.
fn encode_adhoc_header(
    out: &mut [u8; MAX_HEADER_LEN],
    src: SocketAddr,
    arrival: SystemTime,
    len: usize,
) -> Option<usize> {
    let plen = u16::try_from(len).ok()?;
    let h = &mut out[..ADHOC_HEADER_LEN];
    h.fill(0);
    match src {
        SocketAddr::V4(a) => {
            h[0..2].copy_from_slice(&ADHOC_AF_INET.to_ne_bytes());
            h[2..4].copy_from_slice(&a.port().to_be_bytes());
            h[4..8].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            h[0..2].copy_from_slice(&ADHOC_AF_INET6.to_ne_bytes());
            h[2..4].copy_from_slice(&a.port().to_be_bytes());
            h[4..20].copy_from_slice(&a.ip().octets());
        }
    }
    h[24..32].copy_from_slice(&seconds_f64(arrival).to_ne_bytes());
    h[32..34].copy_from_slice(&plen.to_ne_bytes());
    Some(ADHOC_HEADER_LEN)
}

fn pcap_file_header() -> [u8; PCAP_FILE_HEADER_LEN] {
    let mut h = [0u8; PCAP_FILE_HEADER_LEN];
    h[0..4].copy_from_slice(&PCAP_MAGIC.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&PCAP_SNAPLEN.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_NULL.to_ne_bytes());
    h
}

/// Puts both ends in one family: a mixed pair is written as IPv6 with the
/// IPv4 end mapped (`::ffff:a.b.c.d`).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    fn to_v6(a: SocketAddr) -> SocketAddr {
        match a {
            SocketAddr::V4(v4) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            v6 => v6,
        }
    }
    match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (src, dst)
        }
        _ => (to_v6(src), to_v6(dst)),
    }
}

/// Fills `out` with the PCAP record header and the synthesized frame
/// headers; `None` if the packet is too large for an IP datagram.
fn encode_pcap_header(
    out: &mut [u8; MAX_HEADER_LEN],
    src: SocketAddr,
    dst: SocketAddr,
    arrival: SystemTime,
    packet: &[u8],
    ip_id: u16,
) -> Option<usize> {
    let (src, dst) = same_family(src, dst);
    let udp_len = u16::try_from(UDP_HEADER_LEN + packet.len()).ok()?;
    let ip_len = match src {
        SocketAddr::V4(_) => IPV4_HEADER_LEN,
        SocketAddr::V6(_) => IPV6_HEADER_LEN,
    };
    let header_len = PCAP_RECORD_HEADER_LEN + 4 + ip_len + UDP_HEADER_LEN;
    let frame_len = u32::try_from(header_len - PCAP_RECORD_HEADER_LEN + packet.len()).ok()?;
    let h = &mut out[..header_len];
    h.fill(0);
    let (secs, usecs) = split_time(arrival);
    // The classic 32-bit seconds field; wraps in 2106.
    h[0..4].copy_from_slice(&(secs as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&usecs.to_ne_bytes());
    h[8..12].copy_from_slice(&frame_len.to_ne_bytes());
    h[12..16].copy_from_slice(&frame_len.to_ne_bytes());
    let ip = &mut h[PCAP_RECORD_HEADER_LEN + 4..];
    let (family, udp_checksum) = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            let total = u16::try_from(IPV4_HEADER_LEN + UDP_HEADER_LEN + packet.len()).ok()?;
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
            ip[8] = SYNTH_TTL;
            ip[9] = IPPROTO_UDP;
            ip[12..16].copy_from_slice(&s.ip().octets());
            ip[16..20].copy_from_slice(&d.ip().octets());
            let sum = internet_checksum(0, &ip[..IPV4_HEADER_LEN]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            (NULL_AF_INET, 0u16)
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = SYNTH_TTL;
            ip[8..24].copy_from_slice(&s.ip().octets());
            ip[24..40].copy_from_slice(&d.ip().octets());
            let sum = udp6_checksum(s.ip(), d.ip(), s.port(), d.port(), packet);
            (NULL_AF_INET6, sum)
        }
        _ => return None,
    };
    h[PCAP_RECORD_HEADER_LEN..PCAP_RECORD_HEADER_LEN + 4].copy_from_slice(&family.to_ne_bytes());
    let udp = &mut h[PCAP_RECORD_HEADER_LEN + 4 + ip_len..];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&udp_checksum.to_be_bytes());
    Some(header_len)
}

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum.
fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = words.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The Internet checksum (RFC 1071) of `data`, starting from `sum`.
fn internet_checksum(sum: u32, data: &[u8]) -> u16 {
    let mut s = checksum_add(sum, data);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// UDP checksum over the IPv6 pseudo-header (RFC 8200, 8.1).
fn udp6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> u16 {
    let len = (UDP_HEADER_LEN + payload.len()) as u32;
    let mut sum = checksum_add(0, &src.octets());
    sum = checksum_add(sum, &dst.octets());
    sum = checksum_add(sum, &len.to_be_bytes());
    sum = checksum_add(sum, &[0, 0, 0, IPPROTO_UDP]);
    let mut udp = [0u8; UDP_HEADER_LEN];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    sum = checksum_add(sum, &udp);
    match internet_checksum(sum, payload) {
        // 0 means "no checksum", which IPv6 forbids; all ones is the same sum.
        0 => 0xffff,
        c => c,
    }
}

/// Appends `bytes` to `out`, writing unsafe bytes as `%XX`; `at_start`
/// says whether `bytes` begins the file name (a leading `.` is escaped).
fn push_encoded(out: &mut String, bytes: &[u8], at_start: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, &b) in bytes.iter().enumerate() {
        let unsafe_byte = !(0x21..0x7f).contains(&b)
            || b == b'/'
            || b == b'%'
            || b == b'='
            || (b == b'.' && i == 0 && at_start);
        if unsafe_byte {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        } else {
            out.push(char::from(b));
        }
    }
}

/// The file name `CALLID=TAG.SUFFIX` of an `R`/`-a` recording, with unsafe
/// bytes percent-encoded (see the module documentation).
///
/// A name longer than `NAME_MAX` is returned as is and refused by
/// [`RecordFile::create`] with `ENAMETOOLONG`.
pub fn record_file_name(call_id: &[u8], tag: &[u8], suffix: &str) -> String {
    let mut name = String::with_capacity(call_id.len() + tag.len() + suffix.len() + 2);
    push_encoded(&mut name, call_id, true);
    name.push('=');
    push_encoded(&mut name, tag, false);
    name.push('.');
    push_encoded(&mut name, suffix.as_bytes(), false);
    name
}

/// The encoded base name for `C CALLID NAME` (the caller appends `.rtp` or
/// `.rtcp`); `None` if NAME is empty or too long for a file name.
pub fn copy_file_name(name: &[u8]) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    push_encoded(&mut out, name, true);
    if out.len() + ".rtcp".len() > NAME_MAX {
        return None;
    }
    Some(out)
}

/// Helpers shared by the tests of the writer and of the reader, which
/// check the reader against files this module wrote.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{RecordFile, RecordFormat, PCAP_FILE_HEADER_LEN};
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub(crate) use crate::test_support::TempDir;

    pub(crate) fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    pub(crate) fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    pub(crate) const RTP: [u8; 12] = [0x80, 0, 0, 1, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];

    /// Writes `packets` to a new recording in `format`; returns its bytes.
    pub(crate) fn record(
        format: RecordFormat,
        packets: &[(SocketAddr, SocketAddr, SystemTime, &[u8])],
    ) -> Vec<u8> {
        let dir = TempDir::new(&format!("rec{}", packets.len()));
        let mut f = RecordFile::create(dir.path(), None, "x.rtp", format).unwrap();
        for (s, d, t, p) in packets {
            f.write_packet(*s, *d, *t, p).unwrap();
        }
        let path = f.finish().unwrap();
        std::fs::read(path).unwrap()
    }

    /// The global header every PCAP recording starts with.
    pub(crate) fn pcap_file_header() -> [u8; PCAP_FILE_HEADER_LEN] {
        super::pcap_file_header()
    }
}

/// Buffers larger than a recording ever gets are not believed of a
/// hand-over's bytes: each costs its capacity up front.
const CARRIED_BUFFER_MAX: usize = BUFFER_SIZE;

/// A recording as a hand-over carries it (doc/PROTOCOL.md, "Hand-over"):
/// the open file itself, whose offset the two processes share, and the
/// packets buffered but not yet written, which the new process writes.
/// It arrives "closed": until the new process owns the whole state,
/// dropping it must neither write nor move anything; [`RecordFile::adopt`]
/// makes it live.
impl crate::rtpp_handover::wire::Carry for RecordFile {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        match &self.file {
            Some(f) => {
                w.u8(1);
                w.fd(f);
            }
            None => w.u8(0),
        }
        w.u8(match self.format {
            RecordFormat::Adhoc => 0,
            RecordFormat::Pcap => 1,
        });
        w.len(self.buf.capacity());
        w.bytes(&self.buf);
        w.put(&self.path);
        w.put(&self.destination);
        w.u16(self.ip_id);
        w.u64(self.skipped);
        w.bool(self.stopped);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        use crate::rtpp_handover::wire::{check_file, refuse};
        let file = match r.u8()? {
            0 => None,
            1 => {
                let fd = r.fd()?;
                check_file(&fd)?;
                Some(File::from(fd))
            }
            v => return refuse(format!("bad recording file tag {v}")),
        };
        let format = match r.u8()? {
            0 => RecordFormat::Adhoc,
            1 => RecordFormat::Pcap,
            v => return refuse(format!("bad recording format {v}")),
        };
        let capacity = r.u32()? as usize;
        if capacity > CARRIED_BUFFER_MAX {
            return refuse(format!("recording buffer of {capacity} bytes"));
        }
        let capacity = capacity.max(MAX_HEADER_LEN + 2048);
        let held = r.bytes(capacity)?;
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(held);
        let path: PathBuf = r.take()?;
        let destination: Option<(PathBuf, String)> = r.take()?;
        if destination
            .as_ref()
            .is_some_and(|(_, name)| !is_single_component(name))
        {
            return refuse("recording destination is not a file name");
        }
        Ok(RecordFile {
            file,
            format,
            buf,
            path,
            destination,
            ip_id: r.u16()?,
            skipped: r.u64()?,
            stopped: r.bool()?,
            closed: true,
        })
    }
}

impl RecordFile {
    /// Makes a recording that arrived in a hand-over this process's own.
    pub(crate) fn adopt(&mut self) {
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{at, record, v4, TempDir, RTP};
    use super::*;
    use crate::rtpp_record_reader::{read_recording, read_u32};

    #[test]
    #[cfg(target_endian = "little")]
    fn adhoc_ipv4_record_has_classic_layout() {
        let t = at(1_700_000_000, 250_000);
        let bytes = record(
            RecordFormat::Adhoc,
            &[(v4("192.0.2.1:4000"), v4("198.51.100.2:35000"), t, &RTP)],
        );
        let mut want = vec![0u8; 40];
        want[0..2].copy_from_slice(&[2, 0]);
        want[2..4].copy_from_slice(&[0x0f, 0xa0]);
        want[4..8].copy_from_slice(&[192, 0, 2, 1]);
        want[24..32].copy_from_slice(&1_700_000_000.25f64.to_le_bytes());
        want[32..34].copy_from_slice(&[12, 0]);
        want.extend_from_slice(&RTP);
        assert_eq!(bytes, want);
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn adhoc_ipv6_record_fills_the_address_block() {
        let src: SocketAddr = "[2001:db8::1]:5004".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::2]:35000".parse().unwrap();
        let bytes = record(RecordFormat::Adhoc, &[(src, dst, at(10, 0), &RTP)]);
        assert_eq!(bytes.len(), 40 + RTP.len());
        assert_eq!(&bytes[0..2], &[10, 0]);
        assert_eq!(&bytes[2..4], &[0x13, 0x8c]);
        assert_eq!(
            &bytes[4..20],
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&bytes[20..24], &[0; 4]);
        assert_eq!(&bytes[24..32], &10.0f64.to_le_bytes());
        assert_eq!(&bytes[32..34], &[12, 0]);
        assert_eq!(&bytes[34..40], &[0; 6]);
    }

    #[test]
    fn adhoc_file_has_no_header_when_empty() {
        assert!(record(RecordFormat::Adhoc, &[]).is_empty());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn pcap_global_header_and_ipv4_record() {
        let t = at(1_700_000_000, 123_456);
        let bytes = record(
            RecordFormat::Pcap,
            &[(v4("192.0.2.1:4000"), v4("198.51.100.2:35000"), t, &RTP)],
        );
        assert_eq!(
            &bytes[..24],
            &[
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0,
                0, 0
            ]
        );
        let r = &bytes[24..];
        assert_eq!(&r[0..4], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&r[4..8], &123_456u32.to_le_bytes());
        let frame_len = 4 + 20 + 8 + RTP.len() as u32;
        assert_eq!(&r[8..12], &frame_len.to_le_bytes());
        assert_eq!(&r[12..16], &frame_len.to_le_bytes());
        assert_eq!(&r[16..20], &[2, 0, 0, 0]);
        let ip = &r[20..40];
        assert_eq!(
            ip,
            &[0x45, 0, 0, 40, 0, 0, 0, 0, 127, 17, 0x4f, 0x8e, 192, 0, 2, 1, 198, 51, 100, 2]
        );
        // A valid header sums to all ones.
        assert_eq!(internet_checksum(0, ip), 0);
        assert_eq!(&r[40..48], &[0x0f, 0xa0, 0x88, 0xb8, 0, 20, 0, 0]);
        assert_eq!(&r[48..], &RTP);
    }

    #[test]
    fn pcap_ip_id_counts_per_file() {
        let p = (
            v4("192.0.2.1:4000"),
            v4("198.51.100.2:35000"),
            at(1, 0),
            &RTP[..],
        );
        let bytes = record(RecordFormat::Pcap, &[p, p]);
        let rec = 16 + 4 + 20 + 8 + RTP.len();
        assert_eq!(&bytes[24 + 20 + 4..24 + 20 + 6], &[0, 0]);
        assert_eq!(&bytes[24 + rec + 20 + 4..24 + rec + 20 + 6], &[0, 1]);
    }

    #[test]
    fn pcap_ipv6_record_has_valid_udp_checksum() {
        let src: SocketAddr = "[2001:db8::1]:5004".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::2]:35000".parse().unwrap();
        let bytes = record(RecordFormat::Pcap, &[(src, dst, at(5, 0), &RTP)]);
        let r = &bytes[24..];
        assert_eq!(read_u32(r, 16, cfg!(target_endian = "big")), Some(24));
        let ip = &r[20..60];
        assert_eq!(ip[0], 0x60);
        assert_eq!(&ip[4..6], &(8 + RTP.len() as u16).to_be_bytes());
        assert_eq!(ip[6], 17);
        let udp = &r[60..];
        let mut sum = checksum_add(0, &ip[8..40]);
        sum = checksum_add(sum, &(udp.len() as u32).to_be_bytes());
        sum = checksum_add(sum, &[0, 0, 0, 17]);
        assert_ne!(&udp[6..8], &[0, 0]);
        assert_eq!(internet_checksum(sum, udp), 0);
    }

    #[test]
    fn many_packets_cross_buffer_boundaries() {
        let dir = TempDir::new("many");
        let mut f = RecordFile::create(dir.path(), None, "m.rtp", RecordFormat::Pcap).unwrap();
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for i in 0..500u64 {
            f.write_packet(v4("10.0.0.1:1000"), v4("10.0.0.2:2000"), at(i, 0), &payload)
                .unwrap();
        }
        let huge = vec![7u8; 65507];
        f.write_packet(v4("10.0.0.1:1000"), v4("10.0.0.2:2000"), at(999, 0), &huge)
            .unwrap();
        // The buffer never grew past what create() allocated.
        assert_eq!(f.buf.capacity(), BUFFER_SIZE);
        let got = read_recording(&std::fs::read(f.finish().unwrap()).unwrap()).unwrap();
        assert_eq!(got.len(), 501);
        assert!(got[..500].iter().all(|p| p.data == payload));
        assert_eq!(got[500].data, huge);
    }

    #[test]
    fn oversized_packet_is_skipped_not_fatal() {
        let dir = TempDir::new("oversized");
        let mut f = RecordFile::create(dir.path(), None, "o.rtp", RecordFormat::Pcap).unwrap();
        let huge = vec![0u8; 70_000];
        assert!(f
            .write_packet(v4("10.0.0.1:1"), v4("10.0.0.2:2"), at(1, 0), &huge)
            .is_ok());
        assert_eq!(f.skipped(), 1);
        assert!(!f.is_stopped());
    }

    #[test]
    fn existing_file_is_not_clobbered() {
        let dir = TempDir::new("exists");
        std::fs::write(dir.join("a.rtp"), b"keep").unwrap();
        let f = RecordFile::create(dir.path(), None, "a.rtp", RecordFormat::Adhoc).unwrap();
        assert_eq!(f.path(), dir.join("a.rtp.1"));
        drop(f);
        assert_eq!(std::fs::read(dir.join("a.rtp")).unwrap(), b"keep");
        assert!(dir.join("a.rtp.1").exists());
    }

    #[test]
    fn created_with_mode_0644() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        let f = RecordFile::create(dir.path(), None, "m.rtp", RecordFormat::Adhoc).unwrap();
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
        // The process umask can only remove bits.
        assert_eq!(mode & !0o644, 0);
        assert_eq!(mode & 0o600, 0o600);
    }

    #[test]
    fn spooled_file_moves_on_finish_without_clobbering() {
        let dir = TempDir::new("spool");
        let spool = dir.join("spool");
        let fin = dir.join("final");
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::create_dir_all(&fin).unwrap();
        std::fs::write(fin.join("c=t.o.rtp"), b"older").unwrap();
        let mut f =
            RecordFile::create(&fin, Some(&spool), "c=t.o.rtp", RecordFormat::Adhoc).unwrap();
        assert_eq!(f.path(), spool.join("c=t.o.rtp"));
        f.write_packet(v4("10.0.0.1:1"), v4("10.0.0.2:2"), at(1, 0), &RTP)
            .unwrap();
        let moved = f.finish().unwrap();
        assert_eq!(moved, fin.join("c=t.o.rtp.1"));
        assert!(!spool.join("c=t.o.rtp").exists());
        assert_eq!(std::fs::read(fin.join("c=t.o.rtp")).unwrap(), b"older");
        assert_eq!(std::fs::read(&moved).unwrap().len(), 40 + RTP.len());
    }

    #[test]
    fn drop_flushes_and_moves_out_of_spool() {
        let dir = TempDir::new("drop");
        let spool = dir.join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let mut f =
            RecordFile::create(dir.path(), Some(&spool), "d.rtp", RecordFormat::Pcap).unwrap();
        f.write_packet(v4("10.0.0.1:1"), v4("10.0.0.2:2"), at(1, 0), &RTP)
            .unwrap();
        drop(f);
        let got = read_recording(&std::fs::read(dir.join("d.rtp")).unwrap()).unwrap();
        assert_eq!(got.len(), 1);
        assert!(!spool.join("d.rtp").exists());
    }

    #[test]
    fn spool_on_another_file_system_is_copied() {
        // /dev/shm is a tmpfs on Linux, normally not the file system of the
        // temporary directory; where it is missing both sit on one.
        let shm = Path::new("/dev/shm");
        let spool = if shm.is_dir() {
            TempDir::new_in(shm, "xdev_spool")
        } else {
            TempDir::new("xdev_spool")
        };
        let fin = TempDir::new("xdev_final");
        std::fs::write(fin.join("x.rtp"), b"older").unwrap();
        let mut f =
            RecordFile::create(fin.path(), Some(spool.path()), "x.rtp", RecordFormat::Adhoc)
                .unwrap();
        f.write_packet(v4("10.0.0.1:1"), v4("10.0.0.2:2"), at(1, 0), &RTP)
            .unwrap();
        let moved = f.finish().unwrap();
        assert_eq!(moved, fin.join("x.rtp.1"));
        assert_eq!(std::fs::read(&moved).unwrap().len(), 40 + RTP.len());
        assert_eq!(std::fs::read(fin.join("x.rtp")).unwrap(), b"older");
        assert!(!spool.join("x.rtp").exists());
    }

    /// A channel whose file is `/dev/full`, where every write fails with ENOSPC.
    fn full_channel() -> RecordFile {
        let file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        RecordFile {
            file: Some(file),
            format: RecordFormat::Adhoc,
            buf: Vec::with_capacity(BUFFER_SIZE),
            path: PathBuf::from("/dev/full"),
            destination: None,
            ip_id: 0,
            skipped: 0,
            stopped: false,
            closed: false,
        }
    }

    #[test]
    fn write_error_stops_the_channel_once() {
        let mut f = full_channel();
        let payload = [0u8; 1000];
        let mut errors = 0;
        for i in 0..1000 {
            if let Err(e) = f.write_packet(v4("10.0.0.1:1"), v4("10.0.0.2:2"), at(i, 0), &payload) {
                assert_eq!(e.source.raw_os_error(), Some(nix::libc::ENOSPC));
                assert!(e.to_string().contains("/dev/full"));
                errors += 1;
            }
        }
        assert_eq!(errors, 1);
        assert!(f.is_stopped());
        assert!(f.flush().is_ok());
        // Already reported: finishing is quiet.
        assert_eq!(f.finish().unwrap(), PathBuf::from("/dev/full"));
    }

    #[test]
    fn write_error_found_by_finish_is_reported_there() {
        let mut f = full_channel();
        f.write_packet(v4("10.0.0.1:1"), v4("10.0.0.2:2"), at(1, 0), &RTP)
            .unwrap();
        let err = f.finish().unwrap_err();
        assert_eq!(err.raw_os_error(), None);
        assert!(err.to_string().contains("No space left"), "{err}");
    }

    #[test]
    fn missing_directory_is_an_error_at_create() {
        let dir = TempDir::new("missing");
        let err =
            RecordFile::create(&dir.join("nope"), None, "x", RecordFormat::Adhoc).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn file_names_cannot_escape_the_directory() {
        let n = record_file_name(b"../x", b"t/../y", "o.rtp");
        assert_eq!(n, "%2E.%2Fx=t%2F..%2Fy.o.rtp");
        assert!(!n.contains('/'));
        assert_eq!(
            record_file_name(b"abc@host", b"tag1;1", "a.rtcp"),
            "abc@host=tag1;1.a.rtcp"
        );
        assert_eq!(
            record_file_name(b"a%b=c\0\x7f\x80\xff d", b"", "o.rtp"),
            "a%25b%3Dc%00%7F%80%FF%20d=.o.rtp"
        );
        assert_eq!(copy_file_name(b"..").as_deref(), Some("%2E."));
        assert_eq!(
            copy_file_name(b"../../etc/passwd").as_deref(),
            Some("%2E.%2F..%2Fetc%2Fpasswd")
        );
        assert_eq!(copy_file_name(b""), None);
        assert_eq!(copy_file_name(&[b'a'; 300]), None);
        let dir = TempDir::new("names");
        let f = RecordFile::create(dir.path(), None, &n, RecordFormat::Adhoc).unwrap();
        assert_eq!(f.path().parent(), Some(dir.path()));
    }

    #[test]
    fn file_names_decode_back() {
        fn decode(s: &str) -> Vec<u8> {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            out
        }
        let call_id: Vec<u8> = (0..=255u8).collect();
        let n = record_file_name(&call_id, b"=x", "o.rtp");
        let (c, rest) = n.split_once('=').unwrap();
        assert_eq!(decode(c), call_id);
        assert_eq!(rest, "%3Dx.o.rtp");
    }

    #[test]
    fn create_refuses_path_names() {
        let dir = TempDir::new("refuse");
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            let err = RecordFile::create(dir.path(), None, bad, RecordFormat::Adhoc).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
