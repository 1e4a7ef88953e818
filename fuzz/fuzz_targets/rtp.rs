//! The RTP parser and the re-packetizer (`z`). The whole input is parsed as
//! one packet; then it is read as a stream of packets with arrival gaps,
//! fed to a re-packetizer, and what comes out is dequeued as the loop
//! would. Every output must be valid RTP that fits the daemon's buffer,
//! and neither dequeue nor flush may go on for ever.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtp;
use rtpproxy::rtp_resizer::{Enqueued, Resizer};

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
    for _ in 0..MAX_PACKETS {
        let [gap, lo, hi, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*gap));
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
});
