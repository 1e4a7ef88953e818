//! HEP to Homer: `--hep udp:HOST:PORT[/ID]` sends, for every stream that
//! ends, a HEPv3 packet carrying its quality report, and with `--hep-rtcp`
//! a HEPv3 packet for each RTCP report a party sends through the relay.
//!
//! What is sent, and why (rtpproxy(8), "HEP"):
//!
//! * HEPv3 (also called EEP; sipcapture's HEP specification): `HEP3`, the
//!   total length (u16, the whole datagram), then chunks of vendor id
//!   (u16, 0 = generic), type id (u16) and length (u16, the 6-byte chunk
//!   header included), then the value, all in network byte order.
//!   Receivers walk the chunks by type, whatever their order; we send them in type order, as the HEP document
//!   lists them, except the payload last as rtpengine's `homer.c` does:
//!   0x0001 IP family (u8: 2 IPv4, 10 IPv6), 0x0002 IP protocol (u8: 17
//!   UDP), 0x0003/0x0004 IPv4 or 0x0005/0x0006 IPv6 source/destination,
//!   0x0007/0x0008 source/destination port (u16), 0x0009 seconds and 0x000a
//!   microseconds of the time (u32), 0x000b protocol type (u8), 0x000c
//!   capture agent id (u32), 0x0011 correlation id (the Call-ID), 0x000f
//!   payload. No 0x000e auth key: the option has no place for one yet.
//! * RTCP goes as protocol type 5 with a JSON rendering of the SR/RR, not
//!   the raw bytes. Every sender Homer takes RTCP from does so: rtpengine
//!   (`daemon/rtcp.c`, `homer_*` handlers, `PROTO_RTCP_JSON` 0x05),
//!   rtpproxy 3.x (`modules/acct_rtcp_hep`: `rtcp2json`, `proto_type = 5`,
//!   Call-ID as correlation id), heplify (`protos/rtcp.go`), Asterisk's
//!   `res_hep_rtcp`. heplify-server stores the payload as text
//!   (`decoder.go` drops NUL and invalid UTF-8 bytes) in the
//!   `hep_proto_5_*` tables that Homer's UI reads as JSON, so raw RTCP would
//!   arrive mangled. The keys are heplify's and rtpengine's:
//!   `sender_information` {`ntp_timestamp_sec`, `ntp_timestamp_usec`,
//!   `octets`, `rtp_timestamp`, `packets`}, `ssrc`, `type`, `report_count`,
//!   `report_blocks` [{`source_ssrc`, `highest_seq_no`, `fraction_lost`,
//!   `ia_jitter`, `packets_lost`, `lsr`, `dlsr`}]. Source and destination
//!   are the party and the relay's socket it sent to, as rtpengine
//!   (`rtcp_parse`: `mp->fsin`, `sfd->socket.local`) and rtpproxy 3.x
//!   (`raddr`, `laddr`) do.
//! * The end-of-stream report goes as protocol type 34 (0x22, "MOS full
//!   report [JSON]" in the HEP type list), one packet per direction;
//!   heplify-server files types 34, 35 and 38 as QoS reports
//!   (`hep_proto_35_*`). Its keys follow sipcapture's RTP agent reports
//!   (`CORRELATION_ID`, `RTP_SIP_CALL_ID`, `TOTAL_PK`, `EXPECTED_PK`,
//!   `PACKET_LOSS`, `TL_BYTE`, `SRC_IP` ... `DIR`, `REPORT_NAME`, `TYPE`,
//!   as in hepgen.js's `reports_rtp.js`), plus ours for what the relay
//!   alone knows (tags, start, duration, why it ended).
//! * The capture agent id defaults to 101, rtpproxy 3.x's `acct_rtcp_hep`
//!   default (`core_hep.c`: `capt_id = 101`), so a Homer set up for the
//!   classic relay keeps its node; rtpengine has no default (its
//!   `--homer-id`), heplify uses 2002.
//!
//! A dead collector costs nothing: the socket is non-blocking, each packet
//! is sent once, and a failed send (EAGAIN, ECONNREFUSED from an earlier
//! ICMP port unreachable, ENOBUFS ...) is only counted
//! (`nhep_dropped` of `G`), never retried. The RTCP mirror is in the packet
//! path: it encodes into buffers allocated once, here.

use std::io::{self, Write as _};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs, UdpSocket,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::rtpp_account::{json_string, CallRecord};
use crate::rtpp_defines::{HepTarget, Party};
use crate::rtpp_quality::DirectionQuality;
use crate::rtpp_rtcp::{self, ReportBlock, SenderInfo};

/// `--hep`'s capture agent id when the option names none.
pub const DEFAULT_CAPTURE_ID: u32 = 101;
/// HEP protocol type of RTCP as JSON.
pub const PROTO_RTCP_JSON: u8 = 5;
/// HEP protocol type of a full quality (MOS) report as JSON.
pub const PROTO_QOS_REPORT: u8 = 0x22;

const CHUNK_HEADER_LEN: usize = 6;
/// The 16-bit total length bounds a datagram.
const MAX_DATAGRAM: usize = u16::MAX as usize;
/// Report blocks rendered per RTCP packet: a compound packet carries a
/// handful; the cap keeps the JSON within its buffer whatever arrives.
const MAX_REPORT_BLOCKS: usize = 64;
/// The longest RTCP JSON: the sender information and the report blocks
/// at their widest, with room to spare.
const RTCP_JSON_CAPACITY: usize = 256 + MAX_REPORT_BLOCKS * 192;

/// Parses `--hep`'s value: `udp:HOST:PORT[/ID]`, HOST an IPv4 address, an
/// IPv6 address (bare, the port after the last colon, or in brackets) or a
/// name resolved now; ID the capture agent id (u32).
pub fn parse_hep_target(spec: &str) -> Result<HepTarget, String> {
    let bad = |why: &str| format!("invalid value for --hep: {spec} ({why}; udp:HOST:PORT[/ID])");
    let rest = match spec.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("udp:") => &spec[4..],
        _ => return Err(bad("not udp:")),
    };
    let (rest, capture_id) = match rest.rsplit_once('/') {
        Some((r, id)) if id.bytes().all(|b| b.is_ascii_digit()) => match id.parse::<u32>() {
            Ok(id) => (r, id),
            Err(_) => return Err(bad("the capture id is not a number 0-4294967295")),
        },
        Some(_) => return Err(bad("the capture id is not a number 0-4294967295")),
        None => (rest, DEFAULT_CAPTURE_ID),
    };
    let (host, port) = match rest.strip_prefix('[') {
        Some(b) => match b.split_once("]:") {
            Some(hp) => hp,
            None => return Err(bad("no port")),
        },
        None => rest.rsplit_once(':').ok_or_else(|| bad("no port"))?,
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(bad("invalid port")),
    };
    let addr = resolve(host, port).ok_or_else(|| bad("unknown host"))?;
    Ok(HepTarget { addr, capture_id })
}

/// An address literal as is; a name resolved now (start-up), its first
/// address taken.
fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    let is_name = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !is_name {
        return None;
    }
    (host, port).to_socket_addrs().ok()?.next()
}

/// One HEP packet to encode.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub time: SystemTime,
    pub proto_type: u8,
    pub capture_id: u32,
    pub correlation_id: &'a [u8],
    pub payload: &'a [u8],
}

/// Writes `p` as one HEPv3 datagram into `out`, which is cleared first.
/// False, `out` left empty, when it would pass the 16-bit total length.
///
/// Both addresses go as IPv4 chunks when both are IPv4, else both as IPv6
/// (an IPv4 one mapped, `::ffff:a.b.c.d`), since the family chunk is one
/// for the pair. Times before 1970 are sent as 0; the seconds wrap in 2106.
pub fn encode(p: &Packet<'_>, out: &mut Vec<u8>) -> bool {
    out.clear();
    let v4 = match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some((s, d)),
        _ => None,
    };
    let addr_len = if v4.is_some() {
        2 * (6 + 4)
    } else {
        2 * (6 + 16)
    };
    let total = 6
        + 2 * 7
        + addr_len
        + 2 * 8
        + 2 * 10
        + 7
        + 10
        + 2 * CHUNK_HEADER_LEN
        + p.correlation_id.len()
        + p.payload.len();
    let Ok(total16) = u16::try_from(total) else {
        return false;
    };
    let since = p.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&total16.to_be_bytes());
    chunk(out, 0x0001, &[if v4.is_some() { 2 } else { 10 }]);
    chunk(out, 0x0002, &[17]);
    match v4 {
        Some((s, d)) => {
            chunk(out, 0x0003, &s.octets());
            chunk(out, 0x0004, &d.octets());
        }
        None => {
            chunk(out, 0x0005, &as_v6(p.src.ip()).octets());
            chunk(out, 0x0006, &as_v6(p.dst.ip()).octets());
        }
    }
    chunk(out, 0x0007, &p.src.port().to_be_bytes());
    chunk(out, 0x0008, &p.dst.port().to_be_bytes());
    chunk(out, 0x0009, &(since.as_secs() as u32).to_be_bytes());
    chunk(out, 0x000a, &since.subsec_micros().to_be_bytes());
    chunk(out, 0x000b, &[p.proto_type]);
    chunk(out, 0x000c, &p.capture_id.to_be_bytes());
    chunk(out, 0x0011, p.correlation_id);
    chunk(out, 0x000f, p.payload);
    true
}

/// Appends one generic-vendor chunk; the caller has checked that the
/// whole datagram, and so each chunk, fits 16 bits.
fn chunk(out: &mut Vec<u8>, type_id: u16, value: &[u8]) {
    let len = (CHUNK_HEADER_LEN + value.len()) as u16;
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&type_id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Renders an RTCP packet (compound or not) as the JSON Homer shows: the
/// first SR or RR gives `type`, `ssrc` and, for an SR,
/// `sender_information`; the report blocks of every SR and RR are listed.
/// SDES, BYE, APP and the rest are skipped. False, `out` left empty, when
/// the packet is not RTCP (as `rtpp_rtcp::parse` checks it, the reader the
/// quality figures use) or has no SR or RR: nothing is sent for it. `out`
/// is cleared first and never grows past [`RTCP_JSON_CAPACITY`].
pub fn rtcp_json(rtcp: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let Ok(compound) = rtpp_rtcp::parse(rtcp) else {
        return false;
    };
    let mut blocks = 0usize;
    let mut first = true;
    for packet in compound.packets() {
        let (packet_type, ssrc, info, list) = match packet {
            rtpp_rtcp::Packet::Sr { info, blocks } => {
                (rtpp_rtcp::PT_SR, info.ssrc, Some(info), blocks)
            }
            rtpp_rtcp::Packet::Rr { ssrc, blocks } => (rtpp_rtcp::PT_RR, ssrc, None, blocks),
            rtpp_rtcp::Packet::Other { .. } => continue,
        };
        if first {
            first = false;
            let _ = write!(out, "{{\"type\":{packet_type},\"ssrc\":{ssrc}");
            if let Some(info) = info {
                sender_information(&info, out);
            }
            out.extend_from_slice(b",\"report_blocks\":[");
        }
        for block in list {
            if blocks < MAX_REPORT_BLOCKS {
                report_block(&block, blocks, out);
                blocks += 1;
            }
        }
    }
    if first {
        return false;
    }
    let _ = write!(out, "],\"report_count\":{blocks}}}");
    true
}

fn sender_information(info: &SenderInfo, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        ",\"sender_information\":{{\"ntp_timestamp_sec\":{},\"ntp_timestamp_usec\":{},\
         \"rtp_timestamp\":{},\"packets\":{},\"octets\":{}}}",
        info.ntp >> 32,
        info.ntp & 0xffff_ffff,
        info.rtp_ts,
        info.packets,
        info.octets,
    );
}

fn report_block(b: &ReportBlock, index: usize, out: &mut Vec<u8>) {
    let comma = if index > 0 { "," } else { "" };
    let _ = write!(
        out,
        "{comma}{{\"source_ssrc\":{},\"fraction_lost\":{},\"packets_lost\":{},\
         \"highest_seq_no\":{},\"ia_jitter\":{},\"lsr\":{},\"dlsr\":{}}}",
        b.ssrc, b.fraction_lost, b.cumulative_lost, b.highest_seq, b.jitter, b.lsr, b.dlsr,
    );
}

/// The `--hep` collector: a non-blocking UDP socket and the buffers every
/// packet is encoded into.
#[derive(Debug)]
pub struct HepSender {
    socket: UdpSocket,
    target: HepTarget,
    /// `--hep-rtcp`: RTCP is mirrored too.
    mirror_rtcp: bool,
    datagram: Vec<u8>,
    json: Vec<u8>,
    sent: u64,
    dropped: u64,
}

impl HepSender {
    /// Opens a non-blocking socket connected to the collector. Connected,
    /// because only then does Linux report the ICMP errors of a dead
    /// collector (port unreachable ...), on the next send, where they are
    /// counted; an unconnected socket never hears of them. Connecting a
    /// UDP socket sends nothing and never blocks.
    pub fn new(target: HepTarget, mirror_rtcp: bool) -> io::Result<HepSender> {
        let local = match target.addr {
            SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
        };
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        socket.connect(target.addr)?;
        Ok(HepSender {
            socket,
            target,
            mirror_rtcp,
            datagram: Vec::with_capacity(MAX_DATAGRAM),
            json: Vec::with_capacity(RTCP_JSON_CAPACITY),
            sent: 0,
            dropped: 0,
        })
    }

    /// True with `--hep-rtcp`.
    pub fn mirrors_rtcp(&self) -> bool {
        self.mirror_rtcp
    }

    /// Where packets go.
    pub fn target(&self) -> HepTarget {
        self.target
    }

    /// The local address packets leave from.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// HEP packets sent (`nhep_sent`).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// HEP packets not sent: send errors, RTCP that did not parse, a
    /// packet too long for HEP (`nhep_dropped`).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Sends one stream's end-of-stream quality report (`json`, see
    /// [`quality_report_json`]) that `src` sent to `dst`, correlated by
    /// `call_id`.
    pub fn send_quality_report(
        &mut self,
        call_id: &[u8],
        src: SocketAddr,
        dst: SocketAddr,
        json: &[u8],
        now: SystemTime,
    ) {
        let packet = Packet {
            src,
            dst,
            time: now,
            proto_type: PROTO_QOS_REPORT,
            capture_id: self.target.capture_id,
            correlation_id: call_id,
            payload: json,
        };
        self.send(&packet);
    }

    /// Mirrors one RTCP packet that `src` sent to the relay's `dst`, as
    /// JSON; RTCP without an SR or RR, or malformed, is counted dropped.
    /// Allocation-free: it is called in the packet path.
    pub fn send_rtcp(
        &mut self,
        call_id: &[u8],
        src: SocketAddr,
        dst: SocketAddr,
        rtcp: &[u8],
        now: SystemTime,
    ) {
        let mut json = std::mem::take(&mut self.json);
        if rtcp_json(rtcp, &mut json) {
            let packet = Packet {
                src,
                dst,
                time: now,
                proto_type: PROTO_RTCP_JSON,
                capture_id: self.target.capture_id,
                correlation_id: call_id,
                payload: &json,
            };
            self.send(&packet);
        } else {
            self.dropped += 1;
        }
        self.json = json;
    }

    /// Encodes and sends once; any failure is counted, never retried.
    fn send(&mut self, packet: &Packet<'_>) {
        if !encode(packet, &mut self.datagram) {
            self.dropped += 1;
            return;
        }
        match self.socket.send(&self.datagram) {
            Ok(n) if n == self.datagram.len() => self.sent += 1,
            _ => self.dropped += 1,
        }
    }
}

/// What the end-of-stream report says about one direction of a session:
/// what `sender` sent from `src` to the relay's `dst`.
///
/// The quality figures (MOS, jitter ...) join this struct, and
/// [`quality_report_json`], when the per-stream analysis lands.
#[derive(Debug, Clone, Copy)]
pub struct StreamReport<'a> {
    pub call_id: &'a [u8],
    pub from_tag: &'a [u8],
    pub to_tag: Option<&'a [u8]>,
    pub sender: Party,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub packets: u64,
    pub bytes: u64,
    /// The quality of what the sender sent (`rtpp_quality`): packets
    /// expected and lost by the sequence numbers, jitter, MOS ...
    pub quality: DirectionQuality,
    pub rtcp_packets: u64,
    /// Since the Unix epoch.
    pub start: Duration,
    pub duration: Duration,
    /// `deleted`, `timeout` ... as the accounting record says.
    pub reason: &'static str,
}

impl<'a> StreamReport<'a> {
    /// The report of what `sender` sent, taken from the session's
    /// accounting record.
    pub fn of(
        record: &CallRecord<'a>,
        sender: Party,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> StreamReport<'a> {
        StreamReport {
            call_id: record.call_id,
            from_tag: record.from_tag,
            to_tag: record.to_tag,
            sender,
            src,
            dst,
            packets: record.rtp[sender].packets,
            bytes: record.rtp[sender].bytes,
            quality: *record.quality.direction(sender),
            rtcp_packets: record.rtcp[sender].packets,
            start: record.start,
            duration: record.duration,
            reason: record.reason.name(),
        }
    }
}

/// The JSON of one end-of-stream report: one flat object, the keys of
/// sipcapture's RTP agent reports where they mean the same, ours for the
/// rest. `DIR` is 0 for what the caller sent, 1 for the callee.
pub fn quality_report_json(r: &StreamReport<'_>) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("{\"CORRELATION_ID\":");
    json_string(&mut out, r.call_id);
    out.push_str(",\"RTP_SIP_CALL_ID\":");
    json_string(&mut out, r.call_id);
    out.push_str(",\"FROM_TAG\":");
    json_string(&mut out, r.from_tag);
    out.push_str(",\"TO_TAG\":");
    match r.to_tag {
        Some(t) => json_string(&mut out, t),
        None => out.push_str("null"),
    }
    let end = r.start + r.duration;
    let dir = u8::from(r.sender == Party::Callee);
    use std::fmt::Write as _;
    let _ = write!(
        out,
        ",\"TYPE\":\"HANGUP\",\"REASON\":\"{}\",\"SENDER\":\"{}\",\"DIR\":{dir},\
         \"REPORT_NAME\":\"{}\",\"SRC_IP\":\"{}\",\"SRC_PORT\":{},\"DST_IP\":\"{}\",\"DST_PORT\":{},\
         \"REPORT_TS\":{},\"START_TS\":{},\"DURATION\":{},\"TOTAL_PK\":{},\"EXPECTED_PK\":{},\
         \"PACKET_LOSS\":{},\"TL_BYTE\":{},\"RTCP_PK\":{}",
        r.reason,
        r.sender,
        r.src,
        r.src.ip(),
        r.src.port(),
        r.dst.ip(),
        r.dst.port(),
        seconds(end),
        seconds(r.start),
        seconds(r.duration),
        r.packets,
        r.quality.expected,
        r.quality.lost,
        r.bytes,
        r.rtcp_packets,
    );
    write_quality(&mut out, &r.quality);
    out.push('}');
    out
}

/// Appends the measured quality figures of a report, under the names
/// sipcapture's RTP agent gives them (times in ms, as there) and ours for
/// the rest; a figure not measured is left out rather than sent as null.
fn write_quality(out: &mut String, q: &DirectionQuality) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        ",\"OUT_ORDER\":{},\"SSRC_CHG\":{},\"DUPLICATES\":{},\"MAX_DELTA\":{:.3}",
        q.reordered, q.ssrc_changes, q.dups, q.max_gap_ms
    );
    let measured = [
        ("MOS", q.mos),
        ("MEAN_MOS", q.mos),
        ("RFACTOR", q.r_factor),
        ("MEAN_RFACTOR", q.r_factor),
        ("JITTER", q.jitter_ms),
        ("MEAN_JITTER", q.jitter_ms),
        ("MAX_JITTER", q.jitter_max_ms),
        ("RTT", q.rtt_ms),
        ("RTCP_PACKET_LOSS_PCT", q.rtcp_loss_pct),
        ("RTCP_JITTER", q.rtcp_jitter_ms),
    ];
    for (name, value) in measured {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            let _ = write!(out, ",\"{name}\":{v:.3}");
        }
    }
    if let Some(pt) = q.payload_type {
        let _ = write!(out, ",\"CODEC_PT\":{pt},\"CODEC_NAME\":\"{}\"", q.codec);
    }
    if let Some(clock) = q.clock_rate {
        let _ = write!(out, ",\"CLOCK\":{clock}");
    }
}

/// Seconds with microsecond precision.
fn seconds(d: Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

// Carried across a hand-over (doc/PROTOCOL.md, "Hand-over"): the same
// connected socket and its counts.
impl crate::rtpp_handover::wire::Carry for HepSender {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.fd(&self.socket);
        w.put(&self.target.addr);
        w.u32(self.target.capture_id);
        w.put(&(self.mirror_rtcp, self.sent, self.dropped));
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        let fd = r.fd()?;
        crate::rtpp_handover::wire::check_udp(&fd, None)?;
        let target = HepTarget {
            addr: r.take()?,
            capture_id: r.u32()?,
        };
        let (mirror_rtcp, sent, dropped) = r.take()?;
        Ok(HepSender {
            socket: UdpSocket::from(fd),
            target,
            mirror_rtcp,
            datagram: Vec::with_capacity(MAX_DATAGRAM),
            json: Vec::with_capacity(RTCP_JSON_CAPACITY),
            sent,
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtpp_account::EndReason;
    use crate::rtpp_defines::ByParty;
    use crate::rtpp_quality::QualityReport;
    use std::time::Duration;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    fn packet<'a>(src: &str, dst: &str, cid: &'a [u8], payload: &'a [u8]) -> Packet<'a> {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            time: at(0x6553_f100, 123_456),
            proto_type: 5,
            capture_id: 0x0102_0304,
            correlation_id: cid,
            payload,
        }
    }

    /// The chunks after the addresses, the same for both families.
    const TAIL: [u8; 53] = [
        0, 0, 0, 7, 0, 8, 0x13, 0x88, // src port 5000
        0, 0, 0, 8, 0, 8, 0x17, 0x70, // dst port 6000
        0, 0, 0, 9, 0, 10, 0x65, 0x53, 0xf1, 0x00, // seconds
        0, 0, 0, 10, 0, 10, 0, 0x01, 0xe2, 0x40, // 123456 us
        0, 0, 0, 11, 0, 7, 5, // protocol type
        0, 0, 0, 12, 0, 10, 1, 2, 3, 4, // capture id
    ];

    #[test]
    fn ipv4_packet_byte_for_byte() {
        let mut out = Vec::new();
        let p = packet("192.0.2.1:5000", "198.51.100.2:6000", b"ab", b"{}");
        assert!(encode(&p, &mut out));
        let mut want = vec![b'H', b'E', b'P', b'3', 0, 109];
        want.extend([0, 0, 0, 1, 0, 7, 2]); // IPv4
        want.extend([0, 0, 0, 2, 0, 7, 17]); // UDP
        want.extend([0, 0, 0, 3, 0, 10, 192, 0, 2, 1]);
        want.extend([0, 0, 0, 4, 0, 10, 198, 51, 100, 2]);
        want.extend(TAIL);
        want.extend([0, 0, 0, 0x11, 0, 8, b'a', b'b']); // correlation id
        want.extend([0, 0, 0, 0x0f, 0, 8, b'{', b'}']); // payload
        assert_eq!(out, want);
        assert_eq!(out.len(), 109);
    }

    #[test]
    fn ipv6_packet_byte_for_byte() {
        let mut out = Vec::new();
        let p = packet("[2001:db8::1]:5000", "[::1]:6000", b"c", b"");
        assert!(encode(&p, &mut out));
        let mut want = vec![b'H', b'E', b'P', b'3', 0, 130];
        want.extend([0, 0, 0, 1, 0, 7, 10]); // IPv6
        want.extend([0, 0, 0, 2, 0, 7, 17]);
        want.extend([0, 0, 0, 5, 0, 22, 0x20, 1, 0x0d, 0xb8]);
        want.extend([0; 11]);
        want.push(1);
        want.extend([0, 0, 0, 6, 0, 22]);
        want.extend([0; 15]);
        want.push(1);
        want.extend(TAIL);
        want.extend([0, 0, 0, 0x11, 0, 7, b'c']);
        want.extend([0, 0, 0, 0x0f, 0, 6]);
        assert_eq!(out, want);
    }

    #[test]
    fn mixed_families_go_as_ipv6_with_the_ipv4_one_mapped() {
        let mut out = Vec::new();
        let p = packet("192.0.2.1:5000", "[::1]:6000", b"", b"");
        assert!(encode(&p, &mut out));
        assert_eq!(out[12], 10);
        assert_eq!(&out[20..26], [0, 0, 0, 5, 0, 22]);
        assert_eq!(
            &out[26..42],
            "::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    #[test]
    fn the_total_length_bounds_the_payload() {
        let mut out = Vec::new();
        let fits = vec![b'x'; MAX_DATAGRAM - 107];
        assert!(encode(
            &packet("192.0.2.1:1", "192.0.2.2:2", b"ab", &fits),
            &mut out
        ));
        assert_eq!(out.len(), MAX_DATAGRAM);
        assert_eq!(&out[4..6], [0xff, 0xff]);
        let over = vec![b'x'; MAX_DATAGRAM - 106];
        assert!(!encode(
            &packet("192.0.2.1:1", "192.0.2.2:2", b"ab", &over),
            &mut out
        ));
        assert!(out.is_empty());
    }

    /// An SR with one report block (lost: -2, a duplicate surplus), then an
    /// SDES with a CNAME, as phones send them.
    pub(crate) fn sr_sdes() -> Vec<u8> {
        let mut p = vec![0x81, 200, 0, 12];
        for w in [
            0x1111_1111u32,
            3_900_000_000,
            0x8000_0000,
            160_000,
            1000,
            172_000,
        ] {
            p.extend(w.to_be_bytes());
        }
        p.extend(0x2222_2222u32.to_be_bytes());
        p.extend([10, 0xff, 0xff, 0xfe]);
        for w in [65_546u32, 42, 0xaabb_ccdd, 65_536] {
            p.extend(w.to_be_bytes());
        }
        p.extend([0x81, 202, 0, 3]);
        p.extend(0x1111_1111u32.to_be_bytes());
        p.extend([1, 4, b'h', b'o', b's', b't', 0, 0]);
        p
    }

    fn json(rtcp: &[u8]) -> Option<String> {
        let mut out = Vec::with_capacity(RTCP_JSON_CAPACITY);
        rtcp_json(rtcp, &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn sender_reports_become_homer_json() {
        assert_eq!(
            json(&sr_sdes()).unwrap(),
            "{\"type\":200,\"ssrc\":286331153,\"sender_information\":{\"ntp_timestamp_sec\":3900000000,\
             \"ntp_timestamp_usec\":2147483648,\"rtp_timestamp\":160000,\"packets\":1000,\"octets\":172000},\
             \"report_blocks\":[{\"source_ssrc\":572662306,\"fraction_lost\":10,\"packets_lost\":-2,\
             \"highest_seq_no\":65546,\"ia_jitter\":42,\"lsr\":2864434397,\"dlsr\":65536}],\
             \"report_count\":1}"
        );
    }

    #[test]
    fn receiver_reports_list_every_block() {
        let mut rr = vec![0x82, 201, 0, 13];
        rr.extend(7u32.to_be_bytes());
        for ssrc in [8u32, 9] {
            rr.extend(ssrc.to_be_bytes());
            rr.extend([0, 0, 0, 3]);
            rr.extend([0; 16]);
        }
        assert_eq!(
            json(&rr).unwrap(),
            "{\"type\":201,\"ssrc\":7,\"report_blocks\":[\
             {\"source_ssrc\":8,\"fraction_lost\":0,\"packets_lost\":3,\"highest_seq_no\":0,\"ia_jitter\":0,\"lsr\":0,\"dlsr\":0},\
             {\"source_ssrc\":9,\"fraction_lost\":0,\"packets_lost\":3,\"highest_seq_no\":0,\"ia_jitter\":0,\"lsr\":0,\"dlsr\":0}],\
             \"report_count\":2}"
        );
        // An empty RR (no blocks) is still a report.
        assert_eq!(
            json(&[0x80, 201, 0, 1, 0, 0, 0, 5]).unwrap(),
            "{\"type\":201,\"ssrc\":5,\"report_blocks\":[],\"report_count\":0}"
        );
    }

    #[test]
    fn what_is_not_an_sr_or_rr_is_not_mirrored() {
        let good = sr_sdes();
        let mut v1 = good.clone();
        v1[0] = 0x41;
        let mut long = good.clone();
        long[3] = 13; // runs past the datagram
        let mut count = good.clone();
        count[0] = 0x82; // two blocks in a one-block length
        let mut trailing = good.clone();
        trailing.extend([0x80, 201]);
        let sdes_only = good[52..].to_vec();
        for (what, p) in [
            ("empty", Vec::new()),
            ("version 1", v1),
            ("too long", long),
            ("count", count),
            ("trailing bytes", trailing),
            ("SDES only", sdes_only),
            ("RTP", vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        ] {
            assert_eq!(json(&p), None, "{what}");
        }
    }

    #[test]
    fn report_blocks_are_capped() {
        // 31-block RRs, three in one compound packet: 93 blocks, 64 kept.
        let mut p = Vec::new();
        for _ in 0..3 {
            p.extend([0x9f, 201, 0, 187]);
            p.extend(1u32.to_be_bytes());
            p.extend([0xffu8; 31 * 24]);
        }
        let out = json(&p).unwrap();
        assert!(out.ends_with("\"report_count\":64}"), "{out}");
        assert!(out.len() <= RTCP_JSON_CAPACITY);
    }

    fn report(call_id: &[u8]) -> String {
        let record = CallRecord {
            call_id,
            from_tag: b"ft;1",
            to_tag: None,
            reason: EndReason::Timeout,
            start: Duration::new(1_700_000_000, 5_000_000),
            duration: Duration::from_millis(2500),
            ports: ByParty::both(0),
            rtp: ByParty::from_fn(|p| crate::rtpp_account::Sent {
                packets: if p == Party::Caller { 100 } else { 7 },
                bytes: 17200,
            }),
            rtcp: ByParty::both(crate::rtpp_account::Sent {
                packets: 2,
                bytes: 0,
            }),
            relayed: 0,
            dropped: 0,
            lost: ByParty::both(3),
            quality: QualityReport {
                caller: DirectionQuality::default(),
                callee: DirectionQuality {
                    payload_type: Some(8),
                    codec: "G.711",
                    expected: 10,
                    received: 7,
                    lost: 3,
                    loss_pct: 30.0,
                    reordered: 1,
                    jitter_ms: Some(1.5),
                    jitter_max_ms: Some(2.25),
                    clock_rate: Some(8000),
                    max_gap_ms: 40.0625,
                    r_factor: Some(52.5),
                    mos: Some(2.6789),
                    ..DirectionQuality::default()
                },
            },
        };
        let src = "[2001:db8::7]:4000".parse().unwrap();
        let dst = "[2001:db8::1]:35000".parse().unwrap();
        quality_report_json(&StreamReport::of(&record, Party::Callee, src, dst))
    }

    #[test]
    fn the_quality_report_is_one_flat_object() {
        assert_eq!(
            report(b"c1@host"),
            "{\"CORRELATION_ID\":\"c1@host\",\"RTP_SIP_CALL_ID\":\"c1@host\",\"FROM_TAG\":\"ft;1\",\
             \"TO_TAG\":null,\"TYPE\":\"HANGUP\",\"REASON\":\"timeout\",\"SENDER\":\"callee\",\"DIR\":1,\
             \"REPORT_NAME\":\"[2001:db8::7]:4000\",\"SRC_IP\":\"2001:db8::7\",\"SRC_PORT\":4000,\
             \"DST_IP\":\"2001:db8::1\",\"DST_PORT\":35000,\"REPORT_TS\":1700000002.505000,\
             \"START_TS\":1700000000.005000,\"DURATION\":2.500000,\"TOTAL_PK\":7,\"EXPECTED_PK\":10,\
             \"PACKET_LOSS\":3,\"TL_BYTE\":17200,\"RTCP_PK\":2,\"OUT_ORDER\":1,\"SSRC_CHG\":0,\
             \"DUPLICATES\":0,\"MAX_DELTA\":40.062,\"MOS\":2.679,\"MEAN_MOS\":2.679,\
             \"RFACTOR\":52.500,\"MEAN_RFACTOR\":52.500,\"JITTER\":1.500,\"MEAN_JITTER\":1.500,\
             \"MAX_JITTER\":2.250,\"CODEC_PT\":8,\"CODEC_NAME\":\"G.711\",\"CLOCK\":8000}"
        );
    }

    #[test]
    fn odd_call_ids_stay_valid_json() {
        let r = report(b"q\"b\\s\x01\x1f\x7f\xc3\xa9\xff\xfe@x");
        // Quote and backslash escaped, control bytes as \u00XX, valid UTF-8
        // (é) kept, bytes that are not UTF-8 as \u00XX of the byte.
        let want = "\"q\\\"b\\\\s\\u0001\\u001f\\u007f\u{e9}\\u00ff\\u00fe@x\"";
        assert!(
            r.starts_with(&format!("{{\"CORRELATION_ID\":{want},")),
            "{r}"
        );
        assert!(!r.bytes().any(|b| b < 0x20), "{r}");
    }

    fn listener() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    #[test]
    fn the_sender_sends_reports_and_rtcp() {
        let collector = listener();
        let target = HepTarget {
            addr: collector.local_addr().unwrap(),
            capture_id: 77,
        };
        let mut hep = HepSender::new(target, true).unwrap();
        let (src, dst) = (
            "127.0.0.2:4001".parse().unwrap(),
            "127.0.0.1:35001".parse().unwrap(),
        );
        hep.send_rtcp(b"cid", src, dst, &sr_sdes(), SystemTime::now());
        hep.send_rtcp(b"cid", src, dst, b"junk", SystemTime::now());
        hep.send_quality_report(b"cid", src, dst, b"{}", SystemTime::now());
        let mut buf = [0u8; 2048];
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(&buf[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([buf[4], buf[5]])), n);
        assert_eq!(buf[82], PROTO_RTCP_JSON);
        let n = collector.recv(&mut buf).unwrap();
        assert_eq!(buf[82], PROTO_QOS_REPORT);
        assert_eq!(&buf[83..93], [0, 0, 0, 12, 0, 10, 0, 0, 0, 77]);
        assert_eq!(&buf[n - 2..n], b"{}");
        assert_eq!((hep.sent(), hep.dropped()), (2, 1));
    }

    #[test]
    fn a_dead_collector_is_counted_and_costs_no_allocation() {
        let port = listener().local_addr().unwrap().port(); // closed again
        let target = HepTarget {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            capture_id: 1,
        };
        let mut hep = HepSender::new(target, true).unwrap();
        let buffers = (hep.datagram.as_ptr(), hep.json.as_ptr());
        let (src, dst) = (
            "127.0.0.2:4001".parse().unwrap(),
            "127.0.0.1:35001".parse().unwrap(),
        );
        for _ in 0..20 {
            hep.send_rtcp(b"cid", src, dst, &sr_sdes(), SystemTime::now());
            // Time for the ICMP error to come back, as between packets.
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(hep.sent() + hep.dropped(), 20);
        // Loopback answers with ICMP port unreachable, which fails the next
        // send: every other packet at least.
        assert!(hep.dropped() >= 9, "{} dropped", hep.dropped());
        assert_eq!((hep.datagram.as_ptr(), hep.json.as_ptr()), buffers);
    }
}
