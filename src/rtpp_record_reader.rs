//! Reading recordings back: the packets `extractaudio` decodes.
//!
//! [`read_recording`] takes a whole file and tells the two formats that
//! [`crate::rtpp_record`] writes apart by the libpcap magic number; anything
//! else is read as ad-hoc. PCAP files made by other tools are read too:
//! either byte order, nanosecond timestamps, and the link types captures of
//! UDP commonly use (BSD loopback, Ethernet with up to two VLAN tags, Linux
//! cooked v1 and v2, raw IP), with IPv6 extension headers before UDP.
//! Frames holding no whole UDP datagram are skipped, and a truncated last
//! record ends the list without an error, so a recording cut short by a
//! crash still gives up what reached the disk.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::rtpp_record::{
    ADHOC_AF_INET, ADHOC_AF_INET6, ADHOC_HEADER_LEN, IPPROTO_UDP, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
    LINKTYPE_NULL, NULL_AF_INET, NULL_AF_INET6, PCAP_FILE_HEADER_LEN, PCAP_MAGIC,
    PCAP_RECORD_HEADER_LEN, UDP_HEADER_LEN,
};

/// libpcap magic number for nanosecond timestamps.
const PCAP_MAGIC_NSEC: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LOOP: u32 = 108;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;
/// Other IPv6 values found in `LINKTYPE_NULL` captures (FreeBSD, macOS),
/// plus the Linux one, accepted when reading.
const NULL_AF_INET6_OTHERS: [u32; 3] = [10, 28, 30];
/// Frames above this size in a PCAP file mean the file is not one we can
/// read (libpcap itself refuses more than 256 KiB).
const MAX_PCAP_FRAME: usize = 256 * 1024;

/// One packet read back from a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedPacket {
    /// Who sent it.
    pub src: SocketAddr,
    /// The local address it arrived on (PCAP only; ad-hoc does not store it).
    pub dst: Option<SocketAddr>,
    /// Arrival time, seconds since the Unix epoch (any value a file holds).
    pub arrival: f64,
    /// The RTP or RTCP packet.
    pub data: Vec<u8>,
}

/// Why a recording could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// A PCAP file shorter than its global header.
    TruncatedHeader,
    /// A PCAP link type this reader does not decode.
    UnsupportedLinkType(u32),
    /// An ad-hoc record with an unknown address family, i.e. not a recording.
    BadAddressFamily {
        /// Byte offset of the record in the file.
        offset: usize,
        /// The family found there.
        family: u16,
    },
    /// A PCAP record claiming a frame larger than any capture holds.
    BadFrameLength {
        /// Byte offset of the record in the file.
        offset: usize,
        /// The length found there.
        length: u32,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::TruncatedHeader => write!(f, "truncated PCAP file header"),
            FormatError::UnsupportedLinkType(t) => write!(f, "unsupported PCAP link type {t}"),
            FormatError::BadAddressFamily { offset, family } => write!(
                f,
                "not a recording: unknown address family {family} at offset {offset}"
            ),
            FormatError::BadFrameLength { offset, length } => write!(
                f,
                "not a recording: frame length {length} at offset {offset}"
            ),
        }
    }
}

impl std::error::Error for FormatError {}

/// Reads every packet of a recording, telling ad-hoc from PCAP by the
/// magic number; a truncated last record ends the list without an error.
pub fn read_recording(bytes: &[u8]) -> Result<Vec<RecordedPacket>, FormatError> {
    match pcap_byte_order(bytes) {
        Some((big_endian, nanos)) => read_pcap(bytes, big_endian, nanos),
        None => read_adhoc(bytes),
    }
}

/// `Some((big_endian, nanosecond_timestamps))` when `bytes` starts with a
/// libpcap magic number.
fn pcap_byte_order(bytes: &[u8]) -> Option<(bool, bool)> {
    let magic: [u8; 4] = bytes.get(0..4)?.try_into().ok()?;
    let le = u32::from_le_bytes(magic);
    let be = u32::from_be_bytes(magic);
    match (le, be) {
        (PCAP_MAGIC, _) => Some((false, false)),
        (PCAP_MAGIC_NSEC, _) => Some((false, true)),
        (_, PCAP_MAGIC) => Some((true, false)),
        (_, PCAP_MAGIC_NSEC) => Some((true, true)),
        _ => None,
    }
}

fn read_u16(bytes: &[u8], at: usize, big_endian: bool) -> Option<u16> {
    let b: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big_endian {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

/// The `u32` at `at` in the given byte order; `None` past the end. Also
/// used by the writer's tests to check the headers it writes.
pub(crate) fn read_u32(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

fn read_adhoc(bytes: &[u8]) -> Result<Vec<RecordedPacket>, FormatError> {
    let native_be = cfg!(target_endian = "big");
    let mut packets = Vec::new();
    let mut offset = 0usize;
    while let Some(h) = bytes.get(offset..offset + ADHOC_HEADER_LEN) {
        let family = read_u16(h, 0, native_be).unwrap_or(0);
        let port = read_u16(h, 2, true).unwrap_or(0);
        let src = match family {
            ADHOC_AF_INET => {
                let mut a = [0u8; 4];
                a.copy_from_slice(&h[4..8]);
                SocketAddr::new(IpAddr::from(a), port)
            }
            ADHOC_AF_INET6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&h[4..20]);
                SocketAddr::new(IpAddr::from(a), port)
            }
            _ => return Err(FormatError::BadAddressFamily { offset, family }),
        };
        let mut t = [0u8; 8];
        t.copy_from_slice(&h[24..32]);
        let arrival = f64::from_ne_bytes(t);
        let len = usize::from(read_u16(h, 32, native_be).unwrap_or(0));
        let start = offset + ADHOC_HEADER_LEN;
        let Some(data) = bytes.get(start..start + len) else {
            break;
        };
        packets.push(RecordedPacket {
            src,
            dst: None,
            arrival,
            data: data.to_vec(),
        });
        offset = start + len;
    }
    Ok(packets)
}

fn read_pcap(
    bytes: &[u8],
    big_endian: bool,
    nanos: bool,
) -> Result<Vec<RecordedPacket>, FormatError> {
    let linktype = read_u32(bytes, 20, big_endian).ok_or(FormatError::TruncatedHeader)? & 0xffff;
    match linktype {
        LINKTYPE_NULL | LINKTYPE_ETHERNET | LINKTYPE_RAW | LINKTYPE_LOOP | LINKTYPE_LINUX_SLL
        | LINKTYPE_IPV4 | LINKTYPE_IPV6 | LINKTYPE_LINUX_SLL2 => {}
        other => return Err(FormatError::UnsupportedLinkType(other)),
    }
    let subsec_scale = if nanos { 1e-9 } else { 1e-6 };
    let mut packets = Vec::new();
    let mut offset = PCAP_FILE_HEADER_LEN;
    while let Some(h) = bytes.get(offset..offset + PCAP_RECORD_HEADER_LEN) {
        let secs = read_u32(h, 0, big_endian).unwrap_or(0);
        let frac = read_u32(h, 4, big_endian).unwrap_or(0);
        let incl = read_u32(h, 8, big_endian).unwrap_or(0);
        let incl_len = incl as usize;
        if incl_len > MAX_PCAP_FRAME {
            return Err(FormatError::BadFrameLength {
                offset,
                length: incl,
            });
        }
        let start = offset + PCAP_RECORD_HEADER_LEN;
        let Some(frame) = bytes.get(start..start + incl_len) else {
            break;
        };
        offset = start + incl_len;
        let Some((src, dst, data)) = decode_frame(linktype, frame) else {
            continue;
        };
        packets.push(RecordedPacket {
            src,
            dst: Some(dst),
            arrival: f64::from(secs) + f64::from(frac) * subsec_scale,
            data: data.to_vec(),
        });
    }
    Ok(packets)
}

/// The UDP datagram inside one captured frame, if it holds one.
fn decode_frame(linktype: u32, frame: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let ip = match linktype {
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            // The family is in the byte order of the capturing host, which
            // need not be the file's: small values tell which it is.
            let raw: [u8; 4] = frame.get(0..4)?.try_into().ok()?;
            let le = u32::from_le_bytes(raw);
            let family = if le <= 0xffff {
                le
            } else {
                u32::from_be_bytes(raw)
            };
            let is_v6 = family == NULL_AF_INET6 || NULL_AF_INET6_OTHERS.contains(&family);
            if family != NULL_AF_INET && !is_v6 {
                return None;
            }
            frame.get(4..)?
        }
        LINKTYPE_ETHERNET => {
            let mut at = 12;
            let mut ethertype = read_u16(frame, at, true)?;
            // Skip up to two VLAN tags (802.1Q, 802.1ad).
            for _ in 0..2 {
                if ethertype == 0x8100 || ethertype == 0x88a8 {
                    at += 4;
                    ethertype = read_u16(frame, at, true)?;
                }
            }
            if ethertype != 0x0800 && ethertype != 0x86dd {
                return None;
            }
            frame.get(at + 2..)?
        }
        LINKTYPE_LINUX_SLL => frame.get(16..)?,
        LINKTYPE_LINUX_SLL2 => frame.get(20..)?,
        _ => frame,
    };
    decode_ip(ip)
}

fn decode_ip(ip: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let version = ip.first()? >> 4;
    let (src, dst, udp) = match version {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < IPV4_HEADER_LEN || *ip.get(9)? != IPPROTO_UDP {
                return None;
            }
            let frag = read_u16(ip, 6, true)?;
            if frag & 0x3fff != 0 {
                // Fragments of a datagram cannot be decoded one by one.
                return None;
            }
            let total = usize::from(read_u16(ip, 2, true)?);
            let end = total.min(ip.len());
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (IpAddr::from(s), IpAddr::from(d), ip.get(ihl..end)?)
        }
        6 => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            let payload_len = usize::from(read_u16(ip, 4, true)?);
            let end = (IPV6_HEADER_LEN + payload_len).min(ip.len());
            let mut next = *ip.get(6)?;
            let mut at = IPV6_HEADER_LEN;
            // Hop-by-hop, routing and destination options may precede UDP.
            for _ in 0..8 {
                if !matches!(next, 0 | 43 | 60) {
                    break;
                }
                next = *ip.get(at)?;
                at += (usize::from(*ip.get(at + 1)?) + 1) * 8;
            }
            if next != IPPROTO_UDP || at > end {
                return None;
            }
            (IpAddr::from(s), IpAddr::from(d), ip.get(at..end)?)
        }
        _ => return None,
    };
    let sport = read_u16(udp, 0, true)?;
    let dport = read_u16(udp, 2, true)?;
    let ulen = usize::from(read_u16(udp, 4, true)?);
    if ulen < UDP_HEADER_LEN {
        return None;
    }
    let data = udp.get(UDP_HEADER_LEN..ulen.min(udp.len()))?;
    Some((
        SocketAddr::new(src, sport),
        SocketAddr::new(dst, dport),
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtpp_record::test_support::{at, pcap_file_header, record, v4, RTP};
    use crate::rtpp_record::RecordFormat;
    use std::time::UNIX_EPOCH;

    #[test]
    fn round_trip_both_formats() {
        let a = v4("192.0.2.1:4000");
        let b = v4("198.51.100.2:35000");
        let a6: SocketAddr = "[2001:db8::1]:5004".parse().unwrap();
        let b6: SocketAddr = "[2001:db8::2]:35002".parse().unwrap();
        let big = vec![0x5a; 1500];
        let input = [
            (a, b, at(1_700_000_000, 20_000), &RTP[..]),
            (a6, b6, at(1_700_000_000, 40_000), &big[..]),
            (a, b, at(1_700_000_001, 999_999), &[][..]),
        ];
        for format in [RecordFormat::Adhoc, RecordFormat::Pcap] {
            let got = read_recording(&record(format, &input)).unwrap();
            assert_eq!(got.len(), input.len());
            for (g, (s, d, t, p)) in got.iter().zip(input.iter()) {
                assert_eq!(g.src, *s);
                let want_dst = (format == RecordFormat::Pcap).then_some(*d);
                assert_eq!(g.dst, want_dst);
                let want_t = t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
                assert!((g.arrival - want_t).abs() < 1e-6, "{format:?}");
                assert_eq!(&g.data[..], *p);
            }
        }
    }

    #[test]
    fn readers_survive_garbage() {
        assert_eq!(read_recording(&[]), Ok(vec![]));
        assert_eq!(
            read_recording(&[0xd4, 0xc3, 0xb2, 0xa1, 2]),
            Err(FormatError::TruncatedHeader)
        );
        assert!(matches!(
            read_recording(&[7u8; 100]),
            Err(FormatError::BadAddressFamily { offset: 0, .. })
        ));
        let mut pcap = pcap_file_header().to_vec();
        pcap[20] = 0x77;
        assert!(matches!(
            read_recording(&pcap),
            Err(FormatError::UnsupportedLinkType(_))
        ));
        // Pseudo-random bytes behind both kinds of start: no panic, whatever the result.
        let mut x: u32 = 12345;
        for len in 0..600 {
            let mut data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = read_recording(&data);
            if data.len() >= 24 {
                data[..24].copy_from_slice(&pcap_file_header());
                let _ = read_recording(&data);
                data[20] = 1;
                let _ = read_recording(&data);
                data[20] = 101;
                let _ = read_recording(&data);
            }
            if data.len() >= 2 {
                data[0] = 2;
                data[1] = 0;
                let _ = read_recording(&data);
            }
        }
    }

    #[test]
    fn truncated_tail_keeps_earlier_packets() {
        let p = (v4("10.0.0.1:1"), v4("10.0.0.2:2"), at(1, 0), &RTP[..]);
        for format in [RecordFormat::Adhoc, RecordFormat::Pcap] {
            let bytes = record(format, &[p, p]);
            for cut in 1..RTP.len() + 20 {
                let got = read_recording(&bytes[..bytes.len() - cut]).unwrap();
                assert_eq!(got.len(), 1, "{format:?} cut {cut}");
            }
        }
    }

    #[test]
    fn reads_big_endian_ethernet_captures() {
        let mut file = Vec::new();
        file.extend_from_slice(&PCAP_MAGIC.to_be_bytes());
        file.extend_from_slice(&[
            0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1,
        ]);
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        frame.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 20, 0, 0]);
        frame.extend_from_slice(&RTP);
        file.extend_from_slice(&3u32.to_be_bytes());
        file.extend_from_slice(&500_000u32.to_be_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        file.extend_from_slice(&frame);
        let got = read_recording(&file).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].src, v4("10.0.0.1:5000"));
        assert_eq!(got[0].dst, Some(v4("10.0.0.2:5001")));
        assert_eq!(got[0].arrival, 3.5);
        assert_eq!(got[0].data, RTP);
    }
}
