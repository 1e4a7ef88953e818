//! Latching (`Peer::accept` / `signal`), the rule that keeps media from
//! strangers ("RTP bleed", doc/PROTOCOL.md): a random sequence of packets from
//! a few sources, re-signallings and clock steps, checked against the rule
//! stated plainly. Once a symmetric party is latched and no update window
//! is open, a packet from any other source is rejected and changes nothing,
//! unless it comes from the signalled address taking back a party a
//! stranger raced to; an asymmetric party with a known host never takes
//! another host's.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtpp_session::{Peer, Verdict};

fn source(b: u8) -> SocketAddr {
    // Four hosts, four ports each: same host other port matters too.
    let host = 1 + (b >> 2 & 3);
    let port = 4000 + u16::from(b & 3);
    SocketAddr::from(([127, 0, 0, host], port))
}

fuzz_target!(|data: &[u8]| {
    let mut p = Peer::default();
    let start = Instant::now();
    let mut now = start;
    for op in data.chunks_exact(2).take(4096) {
        let (kind, arg) = (op[0] & 3, op[1]);
        match kind {
            0 | 1 => {
                let src = source(arg);
                let before = p.clone();
                let window_open = before.update_until.is_some_and(|t| now < t);
                let verdict = p.accept(src, now);
                if verdict == Verdict::Reject {
                    assert_eq!(p.addr, before.addr, "a rejected packet moved the party");
                    continue;
                }
                // Accepted: the source is the party's from now on (any port
                // of the host for an asymmetric party).
                let addr = p.addr.expect("accepted with no address");
                if p.asymmetric {
                    assert_eq!(addr.ip(), src.ip());
                    if let Some(b) = before.addr {
                        assert_eq!(b.ip(), src.ip(), "asymmetric party took another host");
                        assert_eq!(addr, b, "asymmetric party moved");
                    }
                } else {
                    assert_eq!(addr, src);
                    assert!(p.latched);
                    if before.latched && before.addr != Some(src) {
                        // Only a re-signalling's window, or the signalled
                        // address taking back what a stranger raced to.
                        let reclaim = before.signalled == Some(src)
                            && before.reclaim_until.is_some_and(|t| now < t);
                        assert!(window_open || reclaim, "latched party taken over by {src}");
                    }
                    if p.signalled == Some(src) {
                        assert!(p.reclaim_until.is_none());
                    }
                }
            }
            2 => {
                let remote = (arg & 0x80 != 0).then(|| source(arg));
                let before = p.clone();
                let asymmetric = arg & 0x40 != 0;
                p.signal(remote, asymmetric, now);
                if before.latched && before.untrusted && !asymmetric {
                    assert_eq!(
                        p.addr, before.addr,
                        "signalling moved a NAT-corrected party"
                    );
                }
            }
            _ => {
                // Up to 2.55 s per step: the 10 s update window closes
                // within a few steps.
                now += Duration::from_millis(u64::from(arg) * 10);
            }
        }
    }
});
