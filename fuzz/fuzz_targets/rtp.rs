//! The RTP parser, the per-packet observers and the re-packetizer (`z`).
//! The whole input is parsed as one packet; then it is read as a stream of
//! packets with arrival gaps, each shown to the sequence analyzer, the
//! quality meter and a DTMF catcher (RFC 4733 events, on the payload type
//! of the stream's first packet), and fed to a re-packetizer, whose output
//! is dequeued as the loop would. Every output must be valid RTP that fits
//! the daemon's buffer, neither dequeue nor flush may go on for ever, the
//! analyzer's sums must not overflow, a caught digit must format within
//! its buffer, and the quality report must hold numbers in their ranges.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtp;
use rtpproxy::rtp_resizer::{Enqueued, Resizer};
use rtpproxy::rtpp_analyzer::RtpAnalyzer;
use rtpproxy::rtpp_defines::ByParty;
use rtpproxy::rtpp_dtmf::{DtmfCatcher, SUFFIX_MAX};
use rtpproxy::rtpp_quality::{QualityMeter, QualityReport};

/// The daemon's output buffer for re-packetized audio (rtpp_proc).
const RESIZED_MAX: usize = 8192 + 12;
/// Packets fed per input.
const MAX_PACKETS: usize = 512;
/// More outputs than any queue can hold: reaching it means a loop.
const MAX_OUTPUTS: usize = 100_000;

fn check_output(out: &[u8], len: usize) {
    assert!(len <= out.len());
    let h = rtp::parse(&out[..len]).expect("re-packetizer wrote invalid RTP");
    assert!(h.payload_offset + h.payload_len <= len);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = rtp::parse(data) {
        assert!(h.payload_offset >= rtp::RTP_HEADER_LEN);
        assert!(h.payload_offset + h.payload_len <= data.len());
        let _ = rtp::samples_in(h.payload_type, h.payload_len);
    }

    // Stream form: [target][ms gap, len lo, len hi, packet...]*.
    let Some((&target, mut rest)) = data.split_first() else {
        return;
    };
    let mut r = Resizer::new((u32::from(target) % 100 + 1) * 10);
    let mut now = Instant::now();
    let mut out = vec![0u8; RESIZED_MAX];
    let mut outputs = 0usize;
    let mut analyzer = RtpAnalyzer::new();
    let mut meter = QualityMeter::default();
    let mut catcher: Option<DtmfCatcher> = None;
    for _ in 0..MAX_PACKETS {
        let [gap, lo, hi, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*gap));
        observe(&mut analyzer, &mut meter, &mut catcher, packet, now);
        let verdict = r.enqueue(packet, now);
        if verdict == Enqueued::Queued {
            assert!(r.next_due().is_some(), "queued audio with no due time");
        }
        while let Some(n) = r.dequeue(now, &mut out) {
            check_output(&out, n);
            outputs += 1;
            assert!(outputs < MAX_OUTPUTS, "dequeue does not end");
        }
        if let Some(due) = r.next_due() {
            assert!(due > now, "a packet due now was not dequeued");
        }
    }
    while let Some(n) = r.flush(&mut out) {
        check_output(&out, n);
        outputs += 1;
        assert!(outputs < MAX_OUTPUTS, "flush does not end");
    }
    assert!(r.next_due().is_none(), "flush left audio queued");
    let stats = analyzer.stats();
    assert!(stats.nrcvd + stats.ndups + stats.perrs <= MAX_PACKETS as u64);
    let q = QualityReport::build(&ByParty::new(meter, QualityMeter::default())).caller;
    assert!(q.received <= MAX_PACKETS as u64 && q.dups <= q.received);
    assert!((0.0..=100.0).contains(&q.loss_pct));
    assert!(q.jitter_ms.is_none_or(|j| j.is_finite() && j >= 0.0));
    assert!(q.mos.is_none_or(|m| (1.0..=4.5).contains(&m)));
});

/// What the packet path does with each packet of a stream before relaying
/// it: analyze and measure it, or count it as not RTP; look for an event
/// in it.
fn observe(
    analyzer: &mut RtpAnalyzer,
    meter: &mut QualityMeter,
    catcher: &mut Option<DtmfCatcher>,
    packet: &[u8],
    now: Instant,
) {
    let Ok(h) = rtp::parse(packet) else {
        analyzer.parse_error();
        return;
    };
    let dup = analyzer.observe(&h);
    meter.rtp.observe(&h, now, dup);
    let c = catcher.get_or_insert_with(|| DtmfCatcher::new(b"t".to_vec(), h.payload_type, false));
    if let Some(event) = c.observe(&h, packet) {
        let mut out = [0u8; SUFFIX_MAX];
        let n = event.write_suffix(1, &mut out);
        assert!(n > 0 && n <= SUFFIX_MAX);
        assert!(b"0123456789*#ABCD ".contains(&event.digit));
    }
}
