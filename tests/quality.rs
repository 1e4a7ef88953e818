//! Call quality over the real sockets (doc/PROTOCOL.md, "Call quality"):
//! the test injects loss, duplicates, reordering, jitter and a gap into
//! the RTP of a call, and exchanges RTCP SR/RR with a known hold time, and
//! reads the figures back from the `-A` record, the INFO line, `Q` and the
//! `G` totals.
//!
//! Timing: the jitter and gap are made with real sleeps to absolute
//! deadlines (errors do not add up), the daemon and the test thread in
//! the real-time class when allowed. Tolerances: jitter within 1 ms of
//! what the A.8 estimate of the injected pattern gives, the gap within
//! 6 ms, the mean of four round trips within 12 ms (RTCP sockets are
//! polled about every 10 ms, which may move each arrival by that much).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{parse_flat_json, port, ports, udp, Call, Json, Peer, Rtpproxy, TempDir};

const SSRC_CALLER: u32 = 0x1234_5678;
const SSRC_CALLEE: u32 = 0x9abc_def0;

/// A G.711 (PT 0) packet.
fn g711(seq: u16, ts: u32, ssrc: u32, marker: bool) -> Vec<u8> {
    let mut p = vec![0x80, u8::from(marker) << 7];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xff, 160));
    p
}

fn sleep_until(at: Instant) {
    if let Some(d) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// A daemon writing its records to `file`.
fn daemon(file: &Path) -> Rtpproxy {
    let acct = file.to_str().unwrap().to_string();
    let rp = udp(port(), ports(20).range(), &["-A", &acct]);
    // Timing tests measure the daemon, not a busy machine.
    let _ = common::make_realtime(rp.pid()) && common::make_realtime(0);
    rp
}

/// The one record of `file`, once the session ended.
fn record(file: &Path, rp: &Rtpproxy) -> BTreeMap<String, Json> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(line) = text.lines().next().filter(|_| text.ends_with('\n')) {
            return parse_flat_json(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
        assert!(Instant::now() < deadline, "no record:\n{}", rp.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn num(rec: &BTreeMap<String, Json>, key: &str) -> f64 {
    match rec.get(key) {
        Some(Json::Num(v)) => *v,
        other => panic!("{key}: {other:?} in {rec:?}"),
    }
}

fn is_null(rec: &BTreeMap<String, Json>, key: &str) -> bool {
    matches!(rec.get(key), Some(Json::Null))
}

fn near(rec: &BTreeMap<String, Json>, key: &str, want: f64, tolerance: f64) {
    let got = num(rec, key);
    assert!(
        (got - want).abs() <= tolerance,
        "{key} = {got}, want {want} ± {tolerance}"
    );
}

/// The E-model as doc/PROTOCOL.md states it, for G.711 with PLC.
fn r_g711(loss_pct: f64, one_way_ms: f64, jitter_ms: f64) -> f64 {
    let d = one_way_ms + 2.0 * jitter_ms + 20.0;
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    93.2 - id - 95.0 * loss_pct / (loss_pct + 25.1)
}

fn mos(r: f64) -> f64 {
    1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
}

/// The G value of `name`.
fn g(rp: &Rtpproxy, name: &str) -> u64 {
    rp.command(&format!("G {name}")).parse().expect("a count")
}

/// Sends the caller's 200 numbers 1000..=1199 as fast as the relay takes
/// them: every 10th missing, 5 sent twice, 4 pairs swapped.
fn send_damaged(call: &Call) -> usize {
    let mut order = Vec::new();
    for i in 0..200u16 {
        match (i % 10, i % 50, i % 40) {
            (5, _, _) | (_, 31, _) => continue,
            (_, 30, _) => order.extend([i + 1, i]),
            (_, _, 2) => order.extend([i, i]),
            _ => order.push(i),
        }
    }
    for &i in &order {
        let seq = 1000 + i;
        let p = g711(seq, u32::from(seq) * 160, SSRC_CALLER, false);
        call.caller.send(call.to_caller_leg, &p);
        std::thread::sleep(Duration::from_micros(200));
    }
    order.len()
}

/// Sends the callee's 150 packets every 20 ms, the odd ones 8 ms late,
/// with a 300 ms pause (silence: the timestamps skip it too) before the
/// 100th.
fn send_jittered(call: &Call) {
    let start = Instant::now() + Duration::from_millis(20);
    for i in 0..150u32 {
        let pause = if i >= 100 { 300 } else { 0 };
        let late = if i % 2 == 1 { 8 } else { 0 };
        sleep_until(start + Duration::from_millis(u64::from(i * 20 + pause + late)));
        let ts = i * 160 + pause * 8;
        let p = g711(i as u16, ts, SSRC_CALLEE, i == 100);
        call.callee.send(call.to_callee_leg, &p);
    }
}

/// What the A.8 estimate averages over `samples` differences of
/// `d_ms` each, starting from 0.
fn a8_mean(d_ms: f64, samples: u32) -> f64 {
    let (mut j, mut sum) = (0.0, 0.0);
    for _ in 0..samples {
        j += (d_ms - j) / 16.0;
        sum += j;
    }
    sum / f64::from(samples)
}

#[test]
fn loss_duplicates_reordering_jitter_and_gap_reach_the_record() {
    let dir = TempDir::new("quality");
    let file = dir.join("calls.json");
    let rp = daemon(&file);
    let call = Call::setup(&rp, "q1", "", "", ("ftag", "ttag"));
    let sent = send_damaged(&call);
    assert_eq!(sent, 185);
    assert_eq!(call.callee.drain(300), sent, "{}", rp.log());
    send_jittered(&call);
    assert_eq!(call.caller.drain(300), 150);

    // Live, by name: the FROMTAG party's direction, then the other's.
    let q = rp.command("Qv q1 ftag ttag rtpq_loss rtpq_rtt rtpa_nlost");
    assert_eq!(q, "rtpq_loss=10.000000 rtpq_rtt=-1.000000 rtpa_nlost=20");
    let q = rp.command("Q q1 ttag ftag rtpq_loss");
    assert_eq!(q, "0.000000");
    assert_eq!(rp.command("D q1 ftag ttag"), "0");
    let rec = record(&file, &rp);

    // The caller: 200 expected, 180 distinct + 5 duplicates received.
    for (key, want) in [
        ("expected_caller", 200.0),
        ("received_caller", 185.0),
        ("dups_caller", 5.0),
        ("reordered_caller", 4.0),
        ("ssrc_changes_caller", 0.0),
        ("loss_caller", 10.0),
        ("pt_caller", 0.0),
        // The classic estimate: duplicates offset losses (200 - 185).
        ("lost_caller", 15.0),
    ] {
        assert_eq!(num(&rec, key), want, "{key} in {rec:?}");
    }
    // The callee: clean numbers, jitter and one long gap.
    for (key, want) in [
        ("expected_callee", 150.0),
        ("received_callee", 150.0),
        ("loss_callee", 0.0),
        ("lost_callee", 0.0),
        ("dups_callee", 0.0),
        ("reordered_callee", 0.0),
    ] {
        assert_eq!(num(&rec, key), want, "{key} in {rec:?}");
    }
    let jitter = a8_mean(8.0, 149);
    near(&rec, "jitter_callee", jitter, 1.0);
    near(&rec, "jitter_max_callee", 8.0, 1.5);
    assert_eq!(
        rec.get("jitter_clock_callee"),
        Some(&Json::Str("static".into()))
    );
    // Between the 99th (8 ms late) and the 100th: 20 + 300 - 8.
    near(&rec, "max_gap_callee", 312.0, 6.0);
    // No RTCP: no round trip, nothing reported by the far end.
    for key in [
        "rtt_caller",
        "rtt_callee",
        "rtcp_loss_caller",
        "rtcp_jitter_callee",
    ] {
        assert!(is_null(&rec, key), "{key} in {rec:?}");
    }

    // The score follows the documented formula from the recorded figures.
    let r_caller = r_g711(10.0, 0.0, num(&rec, "jitter_caller"));
    near(&rec, "r_caller", r_caller, 0.1);
    near(&rec, "mos_caller", mos(num(&rec, "r_caller")), 0.006);
    let r_callee = r_g711(0.0, 0.0, num(&rec, "jitter_callee"));
    near(&rec, "r_callee", r_callee, 0.1);
    assert!(r_callee > 80.0 && (60.0..70.0).contains(&r_caller));
    let bands = "Gv nstreams_mos_good nstreams_mos_fair nstreams_mos_poor nstreams_mos_bad";
    assert_eq!(
        rp.command(bands),
        "nstreams_mos_good=1 nstreams_mos_fair=0 nstreams_mos_poor=1 nstreams_mos_bad=0"
    );
    // The INFO line says the same, with units.
    let log = rp.log();
    let line = log
        .lines()
        .find(|l| l.contains("session ended (Deleted): call_id=q1"))
        .unwrap_or_else(|| panic!("{log}"));
    for part in [
        " loss_caller=10.00% ",
        " dups_caller=5 ",
        " rtt_caller=NONE ",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
}

/// A sender report of `ssrc` whose NTP middle word is `lsr`.
fn sr(ssrc: u32, lsr: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    let ntp = (0xe100_0000_0000_0000u64) | (u64::from(lsr) << 16);
    p.extend_from_slice(&ntp.to_be_bytes());
    for w in [160u32 * 50, 50, 8000] {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p
}

/// A receiver report from `ssrc` with one block about `about`: 25 % lost
/// lately, 12 in all, jitter 80 (10 ms at 8 kHz), and the LSR/DLSR pair.
fn rr(ssrc: u32, about: u32, lsr: u32, dlsr: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    for w in [ssrc, about, (64 << 24) | 12, 1200, 80, lsr, dlsr] {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p
}

fn rtcp_port(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip(), a.port() + 1)
}

#[test]
fn rtcp_reports_and_the_round_trip_reach_the_record() {
    let dir = TempDir::new("quality");
    let file = dir.join("calls.json");
    let rp = daemon(&file);
    let call = Call::setup(&rp, "q2", "", "", ("ftag", "ttag"));
    // Some clean RTP both ways first, so the directions have an SSRC.
    for i in 0..50u16 {
        let ts = u32::from(i) * 160;
        call.caller
            .send(call.to_caller_leg, &g711(i, ts, SSRC_CALLER, false));
        call.callee
            .send(call.to_callee_leg, &g711(i, ts, SSRC_CALLEE, false));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(call.callee.drain(200), 50);
    assert_eq!(call.caller.drain(200), 50);

    let (caller_rtcp, callee_rtcp) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    // Not RTCP (an RTP header): relayed, counted, not believed.
    caller_rtcp.send(rtcp_port(call.to_caller_leg), &g711(7, 7, 7, false));
    // The caller's SR passes the relay; the callee holds it 100 ms
    // (6554/65536 s) and its RR reaches the relay 150 ms after the SR:
    // 50 ms from the relay to the callee and back. Four exchanges: the
    // record holds their mean, which halves the polling error.
    for k in 0..4u32 {
        let lsr = 0x3456_7800 + (k << 16);
        let t0 = Instant::now();
        caller_rtcp.send(rtcp_port(call.to_caller_leg), &sr(SSRC_CALLER, lsr));
        sleep_until(t0 + Duration::from_millis(150));
        let report = rr(SSRC_CALLEE, SSRC_CALLER, lsr, 6554);
        callee_rtcp.send(rtcp_port(call.to_callee_leg), &report);
        sleep_until(t0 + Duration::from_millis(200));
    }

    let q = rp.command("Q q2 ttag ftag rtpq_rtt");
    let rtt: f64 = q.parse().expect("a float");
    assert!((38.0..=62.0).contains(&rtt), "{q}");
    assert_eq!(rp.command("Q q2 ftag ttag rtpq_rtt"), "-1.000000");
    assert_eq!(rp.command("D q2 ftag ttag"), "0");
    let rec = record(&file, &rp);
    near(&rec, "rtt_callee", 50.0, 12.0);
    assert!(is_null(&rec, "rtt_caller"), "{rec:?}");
    // What the callee reported about the caller's RTP.
    for (key, want) in [
        ("rtcp_loss_caller", 25.0),
        ("rtcp_lost_caller", 12.0),
        ("rtcp_jitter_caller", 10.0),
        ("rtcp_errs_caller", 1.0),
        ("rtcp_errs_callee", 0.0),
    ] {
        assert_eq!(num(&rec, key), want, "{key} in {rec:?}");
    }
    for key in ["rtcp_loss_callee", "rtcp_lost_callee", "rtcp_jitter_callee"] {
        assert!(is_null(&rec, key), "{key} in {rec:?}");
    }
    // The caller's score takes the worse of the relay's figures and the
    // far end's (25 %, 10 ms); its one-way delay is the callee's leg taken
    // for both: a whole round trip.
    let rtt = num(&rec, "rtt_callee");
    let r_caller = r_g711(25.0, rtt, num(&rec, "jitter_caller").max(10.0));
    near(&rec, "r_caller", r_caller, 0.1);
    let r_callee = r_g711(0.0, rtt, num(&rec, "jitter_callee"));
    near(&rec, "r_callee", r_callee, 0.1);
    assert_eq!(g(&rp, "nstreams_mos_bad"), 1);
    assert_eq!(g(&rp, "nstreams_mos_good"), 1);
    assert_eq!(g(&rp, "nrtcp_perrs"), 1);
}

#[test]
fn a_silent_call_has_no_score() {
    let dir = TempDir::new("quality");
    let file = dir.join("calls.json");
    let rp = daemon(&file);
    let _call = Call::setup(&rp, "q3", "", "", ("ftag", "ttag"));
    assert_eq!(
        rp.command("Q q3 ftag ttag rtpq_mos rtpq_jitter"),
        "-1.000000 -1.000000"
    );
    assert_eq!(rp.command("Q q3 ftag ttag rtpq_nope"), "E1");
    assert_eq!(rp.command("D q3 ftag"), "0");
    let rec = record(&file, &rp);
    for key in ["mos_caller", "r_callee", "pt_caller", "jitter_callee"] {
        assert!(is_null(&rec, key), "{key} in {rec:?}");
    }
    assert_eq!(
        rec.get("jitter_clock_caller"),
        Some(&Json::Str("none".into()))
    );
    let all =
        rp.command("Gv nstreams_mos_good nstreams_mos_fair nstreams_mos_poor nstreams_mos_bad");
    assert_eq!(
        all,
        "nstreams_mos_good=0 nstreams_mos_fair=0 nstreams_mos_poor=0 nstreams_mos_bad=0"
    );
}
