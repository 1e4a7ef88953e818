//! RTCP as the relay reads it (RFC 3550 section 6): a compound packet is
//! checked whole before anything in it is believed, then its sender
//! reports (SR) and receiver reports (RR) give their report blocks; SDES,
//! BYE, APP, the feedback messages and every other type are stepped over
//! by their length. Relaying never depends on this: a packet that fails
//! the check is relayed all the same and only left out of the analysis.
//!
//! The check (RFC 3550 A.2, loosened for RFC 5506 reduced-size RTCP, which
//! may start with any type): the datagram is a whole number of 32-bit
//! words; every packet in it has version 2, a type in 192-223 (the range
//! RFC 5761 keeps for RTCP, so RTP sent to the RTCP port does not pass),
//! and a length that ends inside the datagram; the lengths tile the
//! datagram exactly; only the last packet may be padded, by a count that
//! fits its body; an SR or RR holds the report blocks its count announces.
//! Encrypted RTCP (SRTCP) carries a trailer after the packets and so fails
//! the check: its reports are not readable anyway.
//!
//! Nothing is allocated: [`parse`] returns a view of the datagram whose
//! iterators read fields in place.

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;

/// Bytes of a packet's common header (version, count, type, length).
const HEADER_LEN: usize = 4;
/// Bytes of an SR's sender SSRC and sender info.
const SENDER_INFO_LEN: usize = 24;
/// Bytes of an RR's sender SSRC.
const RR_SSRC_LEN: usize = 4;
/// Bytes of one report block.
pub const BLOCK_LEN: usize = 24;

/// Why a datagram is not analyzed as RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpError {
    /// Shorter than one packet header.
    Short,
    /// Not a whole number of 32-bit words.
    NotWords,
    /// A packet whose version is not 2.
    BadVersion,
    /// A packet type outside 192-223.
    BadType,
    /// A packet's length runs past the datagram.
    BadLength,
    /// Padding on a packet that is not the last, or a count that does not
    /// fit the packet.
    BadPadding,
    /// An SR or RR too short for the report blocks its count announces.
    BadCount,
}

/// The sender info of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// NTP timestamp of the report: seconds in the upper 32 bits, the
    /// fraction in the lower.
    pub ntp: u64,
    /// The same instant in the sender's RTP timestamp units.
    pub rtp_ts: u32,
    /// Packets and payload octets sent so far.
    pub packets: u32,
    pub octets: u32,
}

impl SenderInfo {
    /// The middle 32 bits of the NTP timestamp: what a receiver echoes as
    /// LSR.
    pub fn ntp_middle(&self) -> u32 {
        (self.ntp >> 16) as u32
    }
}

/// One report block: what the reporter received from source `ssrc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Packets lost since the previous report, over 256.
    pub fraction_lost: u8,
    /// Packets lost since reception began (24 bits, signed: duplicates
    /// can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, in the source's RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from
    /// the source; 0 when none was.
    pub lsr: u32,
    /// Delay since that SR was received, in 1/65536 s.
    pub dlsr: u32,
}

/// One packet of a compound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Sr {
        info: SenderInfo,
        blocks: Blocks<'a>,
    },
    Rr {
        ssrc: u32,
        blocks: Blocks<'a>,
    },
    /// Any other type, stepped over.
    Other {
        packet_type: u8,
    },
}

/// A checked compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compound<'a> {
    bytes: &'a [u8],
}

/// Checks `datagram` as compound RTCP (see the module text); on success
/// its packets can be read without further checks.
pub fn parse(datagram: &[u8]) -> Result<Compound<'_>, RtcpError> {
    if datagram.len() < HEADER_LEN {
        return Err(RtcpError::Short);
    }
    if !datagram.len().is_multiple_of(4) {
        return Err(RtcpError::NotWords);
    }
    let mut rest = datagram;
    while !rest.is_empty() {
        let (len, _) = check_packet(rest)?;
        rest = rest.get(len..).ok_or(RtcpError::BadLength)?;
    }
    Ok(Compound { bytes: datagram })
}

/// Checks the packet at the start of `rest`; returns its length and the
/// length of its body (after the header, without padding).
fn check_packet(rest: &[u8]) -> Result<(usize, usize), RtcpError> {
    let [b0, packet_type, l0, l1, ..] = *rest else {
        return Err(RtcpError::Short);
    };
    if b0 >> 6 != 2 {
        return Err(RtcpError::BadVersion);
    }
    if !(192..=223).contains(&packet_type) {
        return Err(RtcpError::BadType);
    }
    let len = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
    let packet = rest.get(..len).ok_or(RtcpError::BadLength)?;
    let mut body = len - HEADER_LEN;
    if b0 & 0x20 != 0 {
        let pad = usize::from(packet.last().copied().unwrap_or(0));
        if len != rest.len() || pad == 0 || pad > body {
            return Err(RtcpError::BadPadding);
        }
        body -= pad;
    }
    let count = usize::from(b0 & 0x1f);
    let fixed = match packet_type {
        PT_SR => SENDER_INFO_LEN,
        PT_RR => RR_SSRC_LEN,
        _ => return Ok((len, body)),
    };
    if fixed + count * BLOCK_LEN > body {
        return Err(RtcpError::BadCount);
    }
    Ok((len, body))
}

impl<'a> Compound<'a> {
    /// The packets, in order.
    pub fn packets(&self) -> Packets<'a> {
        Packets { rest: self.bytes }
    }
}

/// The packets of a checked compound.
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Packets<'a> {
    type Item = Packet<'a>;

    fn next(&mut self) -> Option<Packet<'a>> {
        // The compound was checked: every step below succeeds; the checks
        // are repeated only as cheap bounds, never trusted to hold.
        let (len, body_len) = check_packet(self.rest).ok()?;
        let packet = self.rest.get(..len)?;
        self.rest = self.rest.get(len..)?;
        let [b0, packet_type, ..] = *packet else {
            return None;
        };
        let count = usize::from(b0 & 0x1f);
        let body = packet.get(HEADER_LEN..HEADER_LEN + body_len)?;
        Some(match packet_type {
            PT_SR => Packet::Sr {
                info: SenderInfo {
                    ssrc: word(body, 0),
                    ntp: (u64::from(word(body, 4)) << 32) | u64::from(word(body, 8)),
                    rtp_ts: word(body, 12),
                    packets: word(body, 16),
                    octets: word(body, 20),
                },
                blocks: Blocks::new(body.get(SENDER_INFO_LEN..)?, count),
            },
            PT_RR => Packet::Rr {
                ssrc: word(body, 0),
                blocks: Blocks::new(body.get(RR_SSRC_LEN..)?, count),
            },
            packet_type => Packet::Other { packet_type },
        })
    }
}

/// The report blocks of one SR or RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks<'a> {
    bytes: &'a [u8],
}

impl<'a> Blocks<'a> {
    fn new(after_fixed: &'a [u8], count: usize) -> Blocks<'a> {
        // Profile extensions may follow the blocks: only `count` are read.
        let bytes = after_fixed.get(..count * BLOCK_LEN).unwrap_or(&[]);
        Blocks { bytes }
    }
}

impl Iterator for Blocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let b = self.bytes.get(..BLOCK_LEN)?;
        self.bytes = self.bytes.get(BLOCK_LEN..).unwrap_or(&[]);
        let lost = word(b, 4);
        // Sign-extends the 24-bit count.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: word(b, 0),
            fraction_lost: (lost >> 24) as u8,
            cumulative_lost,
            highest_seq: word(b, 8),
            jitter: word(b, 12),
            lsr: word(b, 16),
            dlsr: word(b, 20),
        })
    }
}

/// The big-endian word at `at`; 0 past the end (not reached on checked
/// input).
fn word(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Builders of RTCP packets for tests here and in the rest of the crate.
#[cfg(test)]
pub mod build {
    use super::*;

    /// A packet header for `count`, `packet_type` and `body_len` bytes of
    /// body (a multiple of 4).
    pub fn header(count: u8, packet_type: u8, body_len: usize) -> Vec<u8> {
        let words = (body_len / 4) as u16;
        let mut h = vec![0x80 | count, packet_type];
        h.extend_from_slice(&words.to_be_bytes());
        h
    }

    pub fn block(b: &ReportBlock) -> Vec<u8> {
        let lost = (u32::from(b.fraction_lost) << 24) | (b.cumulative_lost as u32 & 0x00ff_ffff);
        [b.ssrc, lost, b.highest_seq, b.jitter, b.lsr, b.dlsr]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect()
    }

    pub fn sr(info: &SenderInfo, blocks: &[ReportBlock]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&info.ssrc.to_be_bytes());
        body.extend_from_slice(&info.ntp.to_be_bytes());
        for w in [info.rtp_ts, info.packets, info.octets] {
            body.extend_from_slice(&w.to_be_bytes());
        }
        blocks.iter().for_each(|b| body.extend(block(b)));
        let mut p = header(blocks.len() as u8, PT_SR, body.len());
        p.extend(body);
        p
    }

    pub fn rr(ssrc: u32, blocks: &[ReportBlock]) -> Vec<u8> {
        let mut body = ssrc.to_be_bytes().to_vec();
        blocks.iter().for_each(|b| body.extend(block(b)));
        let mut p = header(blocks.len() as u8, PT_RR, body.len());
        p.extend(body);
        p
    }

    /// An SDES with one CNAME item, padded to a word.
    pub fn sdes(ssrc: u32, cname: &[u8]) -> Vec<u8> {
        let mut body = ssrc.to_be_bytes().to_vec();
        body.push(1);
        body.push(cname.len() as u8);
        body.extend_from_slice(cname);
        body.push(0);
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let mut p = header(1, 202, body.len());
        p.extend(body);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn info() -> SenderInfo {
        SenderInfo {
            ssrc: 0x1111_1111,
            ntp: 0xe000_1234_5678_9abc,
            rtp_ts: 16000,
            packets: 100,
            octets: 16000,
        }
    }

    fn report(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 25,
            cumulative_lost: 7,
            highest_seq: 0x0001_0005,
            jitter: 80,
            lsr: 0x1234_5678,
            dlsr: 0x0000_8000,
        }
    }

    fn packets(datagram: &[u8]) -> Vec<Packet<'_>> {
        parse(datagram).unwrap().packets().collect()
    }

    #[test]
    fn sr_with_a_block_then_sdes() {
        let mut d = sr(&info(), &[report(0x2222_2222)]);
        d.extend(sdes(0x1111_1111, b"alice@host"));
        let got = packets(&d);
        assert_eq!(got.len(), 2);
        let Packet::Sr { info: i, blocks } = got[0] else {
            panic!("{got:?}");
        };
        assert_eq!(i, info());
        assert_eq!(i.ntp_middle(), 0x1234_5678);
        assert_eq!(blocks.collect::<Vec<_>>(), [report(0x2222_2222)]);
        assert_eq!(got[1], Packet::Other { packet_type: 202 });
    }

    #[test]
    fn rr_blocks_and_negative_cumulative_loss() {
        let mut b = report(5);
        b.cumulative_lost = -3;
        let d = rr(9, &[report(4), b]);
        let Packet::Rr { ssrc, blocks } = packets(&d)[0] else {
            panic!();
        };
        assert_eq!(ssrc, 9);
        let all: Vec<_> = blocks.collect();
        assert_eq!(all, [report(4), b]);
        assert_eq!(all[1].cumulative_lost, -3);
    }

    #[test]
    fn reduced_size_and_empty_rr_pass() {
        // RFC 5506: a lone feedback packet (PSFB, PLI) is RTCP too.
        let mut pli = header(1, 206, 8);
        pli.extend_from_slice(&[0; 8]);
        assert_eq!(packets(&pli), [Packet::Other { packet_type: 206 }]);
        let empty = rr(3, &[]);
        assert_eq!(packets(&empty).len(), 1);
    }

    #[test]
    fn padding_only_on_the_last_packet() {
        // An RR with 4 bytes of padding (count 4), last in the compound.
        let mut padded = rr(1, &[]);
        padded[0] |= 0x20;
        padded[3] += 1;
        padded.extend_from_slice(&[0, 0, 0, 4]);
        let mut d = sr(&info(), &[]);
        d.extend(&padded);
        assert_eq!(packets(&d).len(), 2);
        // The same padded packet first is refused.
        let mut bad = padded.clone();
        bad.extend(sr(&info(), &[]));
        assert_eq!(parse(&bad), Err(RtcpError::BadPadding));
        // A count of 0, or more than the body, is refused.
        let mut zero = padded.clone();
        *zero.last_mut().unwrap() = 0;
        assert_eq!(parse(&zero), Err(RtcpError::BadPadding));
        let mut big = padded;
        *big.last_mut().unwrap() = 12;
        assert_eq!(parse(&big), Err(RtcpError::BadPadding));
    }

    #[test]
    fn malformed_packets_are_refused() {
        let good = sr(&info(), &[report(2)]);
        assert_eq!(parse(&[]), Err(RtcpError::Short));
        assert_eq!(parse(&good[..3]), Err(RtcpError::Short));
        // Cut short: not whole words, then a length past the end.
        assert_eq!(parse(&good[..good.len() - 1]), Err(RtcpError::NotWords));
        assert_eq!(parse(&good[..good.len() - 4]), Err(RtcpError::BadLength));
        // A trailer after the packets (SRTCP's index and tag) does not
        // tile: whatever it reads as, it runs past the end.
        let mut trailer = good.clone();
        trailer.extend_from_slice(&[0x80, 200, 0, 5]);
        assert_eq!(parse(&trailer), Err(RtcpError::BadLength));
        // Version 1, and RTP (type 0) sent to the RTCP port.
        let mut v1 = good.clone();
        v1[0] = (v1[0] & 0x3f) | 0x40;
        assert_eq!(parse(&v1), Err(RtcpError::BadVersion));
        let mut rtp = vec![0x80, 0, 0, 1];
        rtp.extend_from_slice(&[0; 4]);
        assert_eq!(parse(&rtp), Err(RtcpError::BadType));
        // A second packet with a bad version spoils the compound.
        let mut second = good.clone();
        let mut tail = rr(1, &[]);
        tail[0] = 0x00;
        second.extend(tail);
        assert_eq!(parse(&second), Err(RtcpError::BadVersion));
    }

    #[test]
    fn report_count_beyond_the_packet_is_refused() {
        // The SR says two blocks and carries one.
        let mut sr2 = sr(&info(), &[report(2)]);
        sr2[0] = (sr2[0] & !0x1f) | 2;
        assert_eq!(parse(&sr2), Err(RtcpError::BadCount));
        // An RR claiming 31 blocks in 8 bytes.
        let mut rr31 = rr(1, &[]);
        rr31[0] |= 0x1f;
        assert_eq!(parse(&rr31), Err(RtcpError::BadCount));
        // An SR too short for its sender info.
        let mut short = header(0, PT_SR, 8);
        short.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&short), Err(RtcpError::BadCount));
        // Padding eating into the blocks counts against them.
        let mut padded = rr(1, &[report(2)]);
        padded[0] |= 0x20;
        *padded.last_mut().unwrap() = 8;
        assert_eq!(parse(&padded), Err(RtcpError::BadCount));
    }

    #[test]
    fn profile_extension_after_the_blocks_is_stepped_over() {
        let mut d = rr(1, &[report(2)]);
        d[3] += 2;
        d.extend_from_slice(&[0xaa; 8]);
        let Packet::Rr { blocks, .. } = packets(&d)[0] else {
            panic!();
        };
        assert_eq!(blocks.collect::<Vec<_>>(), [report(2)]);
    }
}
