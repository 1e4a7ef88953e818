//! The probe packet: a G.711-shaped RTP packet whose payload carries what
//! the receiver needs to measure the relay.
//!
//! Layout: a 12-byte RTP header (version 2, payload type 0 = PCMU, 16-bit
//! sequence, timestamp advancing one sample per payload byte, SSRC per
//! stream) then 8 payload bytes per millisecond of packet time (160 at
//! 20 ms). The payload starts with a magic, the run id (so a stray packet of
//! an earlier run is not counted), the stream number, a 32-bit sequence
//! number (the RTP one wraps after 22 minutes at 50 pps), the
//! CLOCK_MONOTONIC send time and whether the packet went out in a burst; the
//! rest is PCMU silence.

/// Length of the RTP header.
pub const RTP_HEADER_LEN: usize = 12;
/// G.711 at 20 ms: 160 samples of one byte.
pub const PAYLOAD_LEN: usize = 160;
/// Length of a probe packet of 20 ms, the flood's packet.
pub const PACKET_LEN: usize = RTP_HEADER_LEN + PAYLOAD_LEN;
/// G.711: 8000 one-byte samples per second.
const BYTES_PER_MS: usize = 8;
/// The probe's own fields end here; a shorter packet cannot carry them.
pub const PROBE_LEN: usize = 37;
/// Longest packet time a probe may have, milliseconds.
pub const MAX_PTIME_MS: u64 = 100;
/// Shortest packet time: its payload must still hold the probe's fields.
pub const MIN_PTIME_MS: u64 = 5;
const MAGIC: [u8; 4] = *b"RtpB";
/// PCMU encodes silence as 0xFF.
const PCMU_SILENCE: u8 = 0xFF;

/// Length on the wire of a G.711 packet of `ptime_ms` milliseconds.
pub fn packet_len(ptime_ms: u64) -> usize {
    let ptime = ptime_ms.clamp(MIN_PTIME_MS, MAX_PTIME_MS) as usize;
    RTP_HEADER_LEN + BYTES_PER_MS * ptime
}

/// Whether a packet went out on schedule or in a burst after a silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Burst {
    /// Sent when due.
    None,
    /// The first (oldest) packet of a burst.
    First,
    /// Any later packet of a burst.
    Rest,
}

/// What one probe packet says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Which stream (call and direction) it belongs to.
    pub stream: u32,
    /// Its position in the stream, from 0.
    pub seq: u32,
    /// When it was handed to the kernel, CLOCK_MONOTONIC ns.
    pub sent_ns: u64,
    /// Whether it was part of a burst.
    pub burst: Burst,
}

/// Why a received datagram is not one of this run's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// Shorter or longer than a probe.
    Length,
    /// Not a probe at all (no magic or not RTP version 2).
    Foreign,
    /// A probe of another run.
    OtherRun,
}

/// Fills `buf` with the parts of a probe that never change for a stream;
/// `buf` is the whole packet, at least [`PROBE_LEN`] bytes.
pub fn write_template(buf: &mut [u8], run: u32, stream: u32) {
    if buf.len() < PROBE_LEN {
        return;
    }
    buf.fill(PCMU_SILENCE);
    buf[0] = 0x80; // version 2, no padding, no extension, no CSRC
    buf[1] = 0x00; // no marker, payload type 0 (PCMU)
    let ssrc = run.rotate_left(16) ^ stream.wrapping_mul(0x9E37_79B9);
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[12..16].copy_from_slice(&MAGIC);
    buf[16..20].copy_from_slice(&run.to_be_bytes());
    buf[20..24].copy_from_slice(&stream.to_be_bytes());
}

/// Writes the per-packet fields of `probe` into a buffer prepared by
/// [`write_template`] for the same stream.
pub fn stamp(buf: &mut [u8], probe: &Probe) {
    if buf.len() < PROBE_LEN {
        return;
    }
    buf[2..4].copy_from_slice(&(probe.seq as u16).to_be_bytes());
    // One G.711 sample per payload byte.
    let samples = (buf.len() - RTP_HEADER_LEN) as u32;
    let rtp_ts = probe.seq.wrapping_mul(samples);
    buf[4..8].copy_from_slice(&rtp_ts.to_be_bytes());
    buf[20..24].copy_from_slice(&probe.stream.to_be_bytes());
    buf[24..28].copy_from_slice(&probe.seq.to_be_bytes());
    buf[28..36].copy_from_slice(&probe.sent_ns.to_be_bytes());
    buf[36] = match probe.burst {
        Burst::None => 0,
        Burst::First => 1,
        Burst::Rest => 2,
    };
}

/// Reads a received datagram of `len` bytes back into a probe of run `run`.
pub fn decode(datagram: &[u8], run: u32, len: usize) -> Result<Probe, ProbeError> {
    if datagram.len() != len || len < PROBE_LEN {
        return Err(ProbeError::Length);
    }
    if datagram[0] >> 6 != 2 || datagram[12..16] != MAGIC {
        return Err(ProbeError::Foreign);
    }
    if read_u32(&datagram[16..20]) != run {
        return Err(ProbeError::OtherRun);
    }
    let burst = match datagram[36] {
        0 => Burst::None,
        1 => Burst::First,
        2 => Burst::Rest,
        _ => return Err(ProbeError::Foreign),
    };
    Ok(Probe {
        stream: read_u32(&datagram[20..24]),
        seq: read_u32(&datagram[24..28]),
        sent_ns: read_u64(&datagram[28..36]),
        burst,
    })
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_bytes(run: u32, probe: &Probe) -> [u8; PACKET_LEN] {
        let mut buf = [0u8; PACKET_LEN];
        write_template(&mut buf, run, probe.stream);
        stamp(&mut buf, probe);
        buf
    }

    #[test]
    fn probe_roundtrips() {
        let p = Probe {
            stream: 4001,
            seq: 70_000,
            sent_ns: 123_456_789_012,
            burst: Burst::First,
        };
        let buf = probe_bytes(7, &p);
        assert_eq!(decode(&buf, 7, PACKET_LEN), Ok(p));
    }

    #[test]
    fn packet_size_follows_the_packet_time() {
        assert_eq!(packet_len(20), PACKET_LEN);
        assert_eq!(packet_len(10), 92);
        assert_eq!(packet_len(1000), packet_len(MAX_PTIME_MS));
        assert!(packet_len(MIN_PTIME_MS) >= PROBE_LEN);
        let mut buf = vec![0u8; packet_len(10)];
        write_template(&mut buf, 3, 1);
        let p = Probe {
            stream: 1,
            seq: 2,
            sent_ns: 5,
            burst: Burst::Rest,
        };
        stamp(&mut buf, &p);
        assert_eq!(read_u32(&buf[4..8]), 2 * 80);
        assert_eq!(decode(&buf, 3, 92), Ok(p));
        assert_eq!(decode(&buf, 3, PACKET_LEN), Err(ProbeError::Length));
    }

    #[test]
    fn probe_is_well_formed_rtp() {
        let p = Probe {
            stream: 3,
            seq: 65_537,
            sent_ns: 1,
            burst: Burst::None,
        };
        let buf = probe_bytes(1, &p);
        assert_eq!(buf[0], 0x80);
        assert_eq!(buf[1] & 0x7f, 0);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 1);
        assert_eq!(read_u32(&buf[4..8]), 65_537 * 160);
        assert_eq!(buf[PACKET_LEN - 1], 0xFF);
    }

    #[test]
    fn other_runs_and_strangers_are_rejected() {
        let p = Probe {
            stream: 0,
            seq: 0,
            sent_ns: 0,
            burst: Burst::None,
        };
        let buf = probe_bytes(1, &p);
        assert_eq!(decode(&buf, 2, PACKET_LEN), Err(ProbeError::OtherRun));
        assert_eq!(decode(&buf[..100], 1, PACKET_LEN), Err(ProbeError::Length));
        let mut foreign = buf;
        foreign[12] = b'x';
        assert_eq!(decode(&foreign, 1, PACKET_LEN), Err(ProbeError::Foreign));
        let mut not_rtp = buf;
        not_rtp[0] = 0x40;
        assert_eq!(decode(&not_rtp, 1, PACKET_LEN), Err(ProbeError::Foreign));
        let mut odd_mark = buf;
        odd_mark[36] = 9;
        assert_eq!(decode(&odd_mark, 1, PACKET_LEN), Err(ProbeError::Foreign));
    }
}
