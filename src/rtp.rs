//! RTP header parsing and codec frame facts.

/// Fixed RTP header length.
pub const RTP_HEADER_LEN: usize = 12;

/// A validated view of an RTP packet's header (RFC 3550 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Offset of the payload (after CSRCs and any extension).
    pub payload_offset: usize,
    /// Payload length, excluding padding.
    pub payload_len: usize,
}

/// Why a packet is not usable as RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than its header claims.
    Truncated,
    /// Version field is not 2.
    BadVersion,
    /// Padding count larger than the payload.
    BadPadding,
}

/// Parses the header of `packet`; never reads out of bounds.
pub fn parse(packet: &[u8]) -> Result<RtpHeader, RtpError> {
    if packet.len() < RTP_HEADER_LEN {
        return Err(RtpError::Truncated);
    }
    let b0 = packet[0];
    if b0 >> 6 != 2 {
        return Err(RtpError::BadVersion);
    }
    let csrc_count = usize::from(b0 & 0x0f);
    let mut offset = RTP_HEADER_LEN + 4 * csrc_count;
    if b0 & 0x10 != 0 {
        let ext = packet.get(offset..offset + 4).ok_or(RtpError::Truncated)?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        offset += 4 + 4 * words;
    }
    if offset > packet.len() {
        return Err(RtpError::Truncated);
    }
    let mut end = packet.len();
    if b0 & 0x20 != 0 {
        let pad = usize::from(packet[end - 1]);
        if pad == 0 || pad > end - offset {
            return Err(RtpError::BadPadding);
        }
        end -= pad;
    }
    Ok(RtpHeader {
        marker: packet[1] & 0x80 != 0,
        payload_type: packet[1] & 0x7f,
        seq: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        payload_offset: offset,
        payload_len: end - offset,
    })
}

/// Writes a plain RTP header (no CSRC, extension or padding) at the start
/// of `out`; returns its length, `None` when `out` is shorter than that.
pub fn write_header(
    out: &mut [u8],
    marker: bool,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
) -> Option<usize> {
    let h = out.get_mut(..RTP_HEADER_LEN)?;
    h[0] = 0x80;
    h[1] = (u8::from(marker) << 7) | (payload_type & 0x7f);
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&timestamp.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(RTP_HEADER_LEN)
}

/// How a codec's payload divides into frames: bytes and samples (8 kHz)
/// per frame. `None` for payload types that cannot be split or joined.
pub fn frame_size(payload_type: u8) -> Option<(usize, u32)> {
    match payload_type {
        // G.711 has no frames; 10 ms of it is the natural unit.
        0 | 8 => Some((80, 80)),
        3 => Some((33, 160)),
        4 => Some((24, 240)),
        18 => Some((10, 80)),
        _ => None,
    }
}

/// Samples (8 kHz) carried by `payload_len` bytes of a known codec.
pub fn samples_in(payload_type: u8, payload_len: usize) -> Option<u32> {
    let (bytes, samples) = frame_size(payload_type)?;
    if payload_type == 0 || payload_type == 8 {
        return u32::try_from(payload_len).ok();
    }
    u32::try_from(payload_len / bytes).ok().map(|n| n * samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(b0: u8, extra: &[u8]) -> Vec<u8> {
        let mut p = vec![b0, 0x80 | 8, 0x12, 0x34, 0, 0, 1, 0, 0xde, 0xad, 0xbe, 0xef];
        p.extend_from_slice(extra);
        p
    }

    #[test]
    fn plain_header_parses() {
        let h = parse(&packet(0x80, &[1, 2, 3])).unwrap();
        assert!(h.marker);
        assert_eq!(h.payload_type, 8);
        assert_eq!(h.seq, 0x1234);
        assert_eq!(h.timestamp, 256);
        assert_eq!(h.ssrc, 0xdead_beef);
        assert_eq!((h.payload_offset, h.payload_len), (12, 3));
    }

    #[test]
    fn csrc_extension_and_padding() {
        // one CSRC, extension of one word, 2 payload bytes, 2 bytes padding
        let mut extra = vec![0, 0, 0, 1];
        extra.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        extra.extend_from_slice(&[7, 7, 0, 2]);
        let h = parse(&packet(0x80 | 0x20 | 0x10 | 1, &extra)).unwrap();
        assert_eq!(h.payload_offset, 12 + 4 + 8);
        assert_eq!(h.payload_len, 2);
    }

    #[test]
    fn bad_packets_are_rejected() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpError::Truncated));
        assert_eq!(parse(&packet(0x40, &[])), Err(RtpError::BadVersion));
        assert_eq!(parse(&packet(0x80 | 0x0f, &[])), Err(RtpError::Truncated));
        assert_eq!(
            parse(&packet(0x80 | 0x10, &[0, 0, 0xff, 0xff])),
            Err(RtpError::Truncated)
        );
        assert_eq!(
            parse(&packet(0x80 | 0x20, &[1, 0])),
            Err(RtpError::BadPadding)
        );
        assert_eq!(
            parse(&packet(0x80 | 0x20, &[1, 9])),
            Err(RtpError::BadPadding)
        );
    }

    #[test]
    fn written_header_parses_back() {
        let mut buf = [0u8; 16];
        assert_eq!(write_header(&mut buf[..11], true, 0, 1, 2, 3), None);
        assert_eq!(
            write_header(&mut buf, true, 18, 0xfffe, 0x8000_0001, 7),
            Some(12)
        );
        let h = parse(&buf).unwrap();
        assert!(h.marker);
        assert_eq!(
            (h.payload_type, h.seq, h.timestamp, h.ssrc),
            (18, 0xfffe, 0x8000_0001, 7)
        );
        assert_eq!((h.payload_offset, h.payload_len), (12, 4));
    }

    #[test]
    fn samples_per_codec() {
        assert_eq!(samples_in(0, 160), Some(160));
        assert_eq!(samples_in(3, 66), Some(320));
        assert_eq!(samples_in(18, 20), Some(160));
        assert_eq!(samples_in(96, 20), None);
    }
}
