//! The RTCP reader and the quality meter: the input is a stream of
//! datagrams from the two parties of a call with arrival gaps, each read
//! as RTCP (checked whole, then its SRs and report blocks taken into both
//! parties' meters) or as RTP. Reading a checked compound must never step
//! outside it, a report block must come whole, and the quality report of
//! both directions must hold numbers in their ranges whatever the parties
//! sent: loss a percentage, the MOS 1 to 4.5, no NaN, round trips below
//! ten seconds.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtp;
use rtpproxy::rtpp_analyzer::RtpAnalyzer;
use rtpproxy::rtpp_defines::{ByParty, Party};
use rtpproxy::rtpp_quality::{self, DirectionQuality, QualityMeter, QualityReport};
use rtpproxy::rtpp_hep;
use rtpproxy::rtpp_rtcp::{self, Packet, BLOCK_LEN};

/// Datagrams fed per input.
const MAX_DATAGRAMS: usize = 256;

fuzz_target!(|data: &[u8]| {
    check_reader(data);
    // Stream form: [flags, gap ms, len lo, len hi, datagram]*; flags bit 0:
    // the callee sent it; bit 1: it is RTP, else RTCP.
    let mut rest = data;
    let mut now = Instant::now();
    let mut meters: ByParty<QualityMeter> = ByParty::default();
    let mut analyzers: ByParty<RtpAnalyzer> = ByParty::default();
    for _ in 0..MAX_DATAGRAMS {
        let [flags, gap, lo, hi, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*gap));
        let party = if flags & 1 == 0 {
            Party::Caller
        } else {
            Party::Callee
        };
        if flags & 2 == 0 {
            rtpp_quality::observe_rtcp(&mut meters, party, datagram, now);
        } else if let Ok(h) = rtp::parse(datagram) {
            let dup = analyzers[party].observe(&h);
            meters[party].rtp.observe(&h, now, dup);
        }
    }
    let report = QualityReport::build(&meters);
    check(&report.caller);
    check(&report.callee);
});

/// The whole input as one datagram: a compound that passes is read to the
/// end without surprises.
fn check_reader(data: &[u8]) {
    // The HEP mirror's JSON of the same datagram: made exactly when the
    // reader takes it and it holds an SR or RR, and then valid JSON-shaped.
    let mut json = Vec::new();
    let made = rtpp_hep::rtcp_json(data, &mut json);
    assert_eq!(made, !json.is_empty());
    if made {
        assert!(json.starts_with(b"{\"type\":20") && json.ends_with(b"}"));
    }
    let Ok(compound) = rtpp_rtcp::parse(data) else {
        assert!(!made, "JSON made of a datagram the reader refuses");
        return;
    };
    let mut blocks = 0usize;
    for packet in compound.packets() {
        match packet {
            Packet::Sr { blocks: b, .. } | Packet::Rr { blocks: b, .. } => blocks += b.count(),
            Packet::Other { packet_type } => assert!((192..=223).contains(&packet_type)),
        }
    }
    assert!(blocks * BLOCK_LEN <= data.len());
}

fn check(q: &DirectionQuality) {
    assert!((0.0..=100.0).contains(&q.loss_pct));
    assert!(q.lost <= q.expected);
    for v in [q.jitter_ms, q.jitter_max_ms, q.rtcp_jitter_ms]
        .into_iter()
        .flatten()
    {
        assert!(v.is_finite() && v >= 0.0, "{q:?}");
    }
    assert!(q.rtcp_loss_pct.is_none_or(|l| (0.0..=100.0).contains(&l)));
    assert!(q.rtt_ms.is_none_or(|r| (0.0..10_000.0).contains(&r)));
    assert!(q.max_gap_ms.is_finite() && q.max_gap_ms >= 0.0);
    assert!(q.r_factor.is_none_or(f64::is_finite));
    assert!(q.mos.is_none_or(|m| (1.0..=4.5).contains(&m)));
    assert_eq!(q.mos.is_some(), q.received > 0);
}
