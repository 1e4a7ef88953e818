//! The per-packet observers over the real sockets: the RTP analysis of
//! what each party sends, in the extended `Q` (extension 20150420) and
//! summed into the `rtpa_*` counters of `G` when a session ends; DTMF
//! catching (extension 20230205), turned on by `U ... && M3:1 TAG [PT
//! [h]]` for what the FROMTAG party sends and `L ... && M3:1` for what the
//! TOTAG party sends, with digits arriving as lines on the `-n` socket.
//!
//! Each test gets its UDP control port and media range from
//! `common::ports`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    port, ports, reply_addr, rtp_packet, udp, Call, LineListener, Peer, Rtpproxy, TempDir,
};

const RTPA: &str = "Gv rtpa_nsent rtpa_nrcvd rtpa_ndups rtpa_nlost rtpa_perrs";

fn rtpa(nsent: u64, nrcvd: u64, ndups: u64, nlost: u64, perrs: u64) -> String {
    format!(
        "rtpa_nsent={nsent} rtpa_nrcvd={nrcvd} rtpa_ndups={ndups} rtpa_nlost={nlost} rtpa_perrs={perrs}"
    )
}

/// Sends `packets` from `from` to the relay port `to`, and waits until the
/// other party got what is relayed (so the daemon has seen them all).
fn send_all(from: &Peer, to: std::net::SocketAddr, packets: &[Vec<u8>], other: &Peer) {
    for p in packets {
        from.send(to, p);
    }
    assert_eq!(other.drain(200), packets.len());
}

#[test]
fn g_sums_the_analysis_of_ended_sessions() {
    let rp = udp(port(), ports(20).range(), &[]);
    let Call {
        caller,
        callee,
        to_caller_leg,
        to_callee_leg,
    } = Call::setup(&rp, "obs1", "", "", ("ftag", "ttag"));

    // The caller: 100..=119 without 105, 110 twice, and two datagrams that
    // are not RTP (relayed all the same).
    let mut from_caller: Vec<Vec<u8>> = (100..120)
        .filter(|&s| s != 105)
        .map(|s| rtp_packet(s, 0))
        .collect();
    from_caller.push(rtp_packet(110, 0));
    from_caller.push(b"\x00\x01junk".to_vec());
    from_caller.push(Vec::new());
    send_all(&caller, to_caller_leg, &from_caller, &callee);
    // The callee: 65530..=65535 and 0..=3, across the wrap.
    let from_callee: Vec<Vec<u8>> = (65530..=65535)
        .chain(0..4)
        .map(|s| rtp_packet(s, 0))
        .collect();
    send_all(&callee, to_callee_leg, &from_callee, &caller);
    // A stranger's packets are not the party's: not analyzed.
    let stranger = Peer::new("127.0.0.1");
    for s in 0..5 {
        stranger.send(to_caller_leg, &rtp_packet(s, 0));
    }
    assert_eq!(callee.drain(100), 0);

    // A live session is not in the sums yet.
    assert_eq!(rp.command(RTPA), rtpa(0, 0, 0, 0, 0));
    assert_eq!(rp.command("D obs1 ftag ttag"), "0");
    assert_eq!(rp.command(RTPA), rtpa(30, 29, 1, 1, 2), "{}", rp.log());
    // Plain G lists them after the classic counters, before the quality
    // totals.
    let all = rp.command("G");
    assert!(all.contains(&rtpa(30, 29, 1, 1, 2)), "{all}");
    let names: Vec<&str> = all.split(' ').filter_map(|p| p.split('=').next()).collect();
    let want = [
        "nlog_dropped",
        "rtpa_nsent",
        "rtpa_nrcvd",
        "rtpa_ndups",
        "rtpa_nlost",
        "rtpa_perrs",
        "nstreams_mos_good",
        "nstreams_mos_fair",
        "nstreams_mos_poor",
        "nstreams_mos_bad",
        "nrtcp_perrs",
    ];
    assert_eq!(names[names.len() - want.len()..], want, "{all}");
    // Without v, G answers the values only.
    let values = rp.command("G rtpa_nlost rtpa_perrs");
    assert_eq!(values, "1 2");
}

#[test]
fn q_reports_the_analysis_of_each_direction() {
    let rp = udp(port(), ports(20).range(), &[]);
    let Call {
        caller,
        callee,
        to_caller_leg,
        to_callee_leg,
    } = Call::setup(&rp, "obs2", "", "", ("ftag", "ttag"));
    let mut from_caller: Vec<Vec<u8>> = (100..120)
        .filter(|&s| s != 105)
        .map(|s| rtp_packet(s, 0))
        .collect();
    from_caller.push(rtp_packet(110, 0));
    from_caller.push(b"junk".to_vec());
    send_all(&caller, to_caller_leg, &from_caller, &callee);
    let from_callee: Vec<Vec<u8>> = (0..8).map(|s| rtp_packet(s, 0)).collect();
    send_all(&callee, to_callee_leg, &from_callee, &caller);
    let names = "rtpa_nsent rtpa_nrcvd rtpa_ndups rtpa_perrs rtpa_nlost";
    assert_eq!(
        rp.command(&format!("Q obs2 ftag ttag {names}")),
        "20 19 1 1 1"
    );
    assert_eq!(
        rp.command(&format!("Q obs2 ttag ftag {names}")),
        "8 8 0 0 0"
    );
    assert_eq!(rp.command("Qv obs2 ftag ttag rtpa_nlost"), "rtpa_nlost=1");
}

/// An RFC 4733 event packet (volume 10) of payload type `pt`.
fn dtmf(pt: u8, seq: u16, ts: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x0d0d_0d0du32.to_be_bytes());
    p.extend_from_slice(&[event, if end { 0x80 | 10 } else { 10 }]);
    p.extend_from_slice(&duration.to_be_bytes());
    p
}

/// A digit as a sender sends it: a start packet, one update, three end
/// packets, all with timestamp `ts`.
fn digit(pt: u8, first_seq: u16, ts: u32, event: u8) -> Vec<Vec<u8>> {
    vec![
        dtmf(pt, first_seq, ts, event, false, 160),
        dtmf(pt, first_seq + 1, ts, event, false, 320),
        dtmf(pt, first_seq + 2, ts, event, true, 480),
        dtmf(pt, first_seq + 3, ts, event, true, 480),
        dtmf(pt, first_seq + 4, ts, event, true, 480),
    ]
}

/// A daemon with `-n`, its listener, and a call between two peers; `u_tail`
/// and `l_tail` end the U and the L (notify socket and tag, `&& ...`).
struct DtmfCall {
    rp: Rtpproxy,
    lines: LineListener,
    caller: Peer,
    callee: Peer,
    to_caller_leg: SocketAddr,
    to_callee_leg: SocketAddr,
    u_reply: String,
    l_reply: String,
    _dir: TempDir,
}

fn dtmf_call(u_tail: &str, l_tail: &str) -> DtmfCall {
    let dir = TempDir::new("dtmf");
    let path = dir.join("notify.sock");
    let lines = LineListener::unix(&path);
    let n = format!("unix:{}", path.display());
    let rp = udp(port(), ports(20).range(), &["-n", &n]);
    let (caller, callee) = (Peer::new("127.0.0.1"), Peer::new("127.0.0.1"));
    let u_tail = u_tail.replace("NOTIFY", &n);
    let u_reply = rp.command(&format!(
        "U dtmf 127.0.0.1 {} ftag ttag{u_tail}",
        caller.port()
    ));
    let l_reply = rp.command(&format!(
        "L dtmf 127.0.0.1 {} ftag ttag{l_tail}",
        callee.port()
    ));
    DtmfCall {
        to_callee_leg: reply_addr(&u_reply, "127.0.0.1"),
        to_caller_leg: reply_addr(&l_reply, "127.0.0.1"),
        rp,
        lines,
        caller,
        callee,
        u_reply,
        l_reply,
        _dir: dir,
    }
}

#[test]
fn caught_digit_is_one_line_and_still_relayed() {
    let mut c = dtmf_call(" NOTIFY Ttimeout && M3:1 Dd1%20x 101", "");
    assert!(!c.u_reply.contains("&&"), "{}", c.u_reply);
    let mut sent = digit(101, 1, 8000, 5);
    // A lone end packet of another timestamp reports nothing.
    sent.push(dtmf(101, 6, 9000, 7, true, 800));
    // Another payload type is not watched.
    sent.extend(digit(100, 7, 10000, 9));
    for p in &sent {
        c.caller.send(c.to_caller_leg, p);
    }
    assert_eq!(c.callee.drain(200), sent.len(), "{}", c.rp.log());
    let line = c.lines.line_within(Duration::from_secs(2));
    assert_eq!(
        line.as_deref(),
        Some("Dd1 x 5 10 480 0\n"),
        "{}",
        c.rp.log()
    );
    assert_eq!(c.lines.line_within(Duration::from_millis(300)), None);
}

#[test]
fn hidden_digits_are_reported_and_dropped() {
    let mut c = dtmf_call(" NOTIFY Ttimeout && M3:1 Dh 96 h", "");
    assert!(!c.u_reply.contains("&&"), "{}", c.u_reply);
    c.caller.send(c.to_caller_leg, &rtp_packet(1, 0));
    for p in digit(96, 2, 320, 11) {
        c.caller.send(c.to_caller_leg, &p);
    }
    c.caller.send(c.to_caller_leg, &rtp_packet(7, 0));
    // The two audio packets only.
    assert_eq!(c.callee.drain(200), 2, "{}", c.rp.log());
    let line = c.lines.line_within(Duration::from_secs(2));
    assert_eq!(line.as_deref(), Some("Dh # 10 480 0\n"), "{}", c.rp.log());
    // TTL A B RELAYED DROPPED: the five event packets are dropped.
    let q = c.rp.command("Q dtmf ftag ttag");
    assert!(q.ends_with(" 7 0 2 5"), "{q}");
}

#[test]
fn l_catches_the_callee_side_and_repeating_changes_the_payload_type() {
    let mut c = dtmf_call(" NOTIFY Ttimeout", " && M3:1 callee 101");
    assert!(!c.l_reply.contains("&&"), "{}", c.l_reply);
    // Again, another tag and payload type: only the payload type changes.
    let again = c.rp.command(&format!(
        "L dtmf 127.0.0.1 {} ftag ttag && M3:1 other 97",
        c.callee.port()
    ));
    assert!(!again.contains("&&"), "{again}");
    for p in digit(101, 1, 160, 1).iter().chain(&digit(97, 6, 320, 2)) {
        c.callee.send(c.to_callee_leg, p);
    }
    assert_eq!(c.caller.drain(200), 10, "{}", c.rp.log());
    let line = c.lines.line_within(Duration::from_secs(2));
    assert_eq!(
        line.as_deref(),
        Some("callee 2 10 480 1\n"),
        "{}",
        c.rp.log()
    );
    assert_eq!(c.lines.line_within(Duration::from_millis(300)), None);
}

#[test]
fn without_a_notify_target_catching_is_refused() {
    let mut c = dtmf_call(" && M3:1 Dd1", "");
    // The U itself is done: its reply, then the sub-command's -1.
    assert!(c.u_reply.ends_with(" && -1"), "{}", c.u_reply);
    let plain = c.u_reply.trim_end_matches(" && -1");
    assert_eq!(reply_addr(plain, "127.0.0.1"), c.to_callee_leg);
    for p in digit(101, 1, 160, 3) {
        c.caller.send(c.to_caller_leg, &p);
    }
    assert_eq!(c.callee.drain(200), 5);
    assert_eq!(c.lines.line_within(Duration::from_millis(500)), None);
}
