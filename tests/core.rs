//! The daemon core driven over its real sockets on loopback: every command
//! and error code, latching, timeouts, streams, IPv6 and bridging.
//! Each test gets its control port and media range from `common::ports`.

mod common;

use common::{port, ports, udp};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{reply_addr, rtp_packet, setup_call, Call, Peer, Rtpproxy};

fn assert_relays(call: &Call, seq: u16) {
    let p = rtp_packet(seq, 0);
    call.caller.send(call.to_caller_leg, &p);
    let (got, from) = call.callee.recv().expect("callee got nothing");
    assert_eq!(got, p);
    assert_eq!(
        from, call.to_callee_leg,
        "media must come from the callee's relay port"
    );
    let q = rtp_packet(seq.wrapping_add(1000), 0);
    call.callee.send(call.to_callee_leg, &q);
    let (got, from) = call.caller.recv().expect("caller got nothing");
    assert_eq!(got, q);
    assert_eq!(from, call.to_caller_leg);
}

#[test]
fn version_and_extensions() {
    let rp = udp(port(), ports(100).range(), &[]);
    assert_eq!(rp.command("V"), "20040107");
    assert_eq!(rp.command("V 20050322"), "20040107");
    for stamp in [
        "20040107", "20050322", "20060704", "20071116", "20071218", "20080403", "20081102",
        "20141004",
    ] {
        assert_eq!(rp.command(&format!("VF {stamp}")), "1", "{stamp}");
    }
    assert_eq!(rp.command("VF 20081224"), "0", "notifications need -n");
    assert_eq!(rp.command("VF 19990101"), "0");
    assert_eq!(rp.command("V a b"), "E2");
    assert_eq!(rp.command("VF"), "E2");
    let dir = common::TempDir::new("notify");
    let sock = dir.path().join("n.sock");
    let n = format!("unix:{}", sock.display());
    let rp2 = udp(port(), ports(100).range(), &["-n", &n]);
    assert_eq!(rp2.command("VF 20081224"), "1");
}

#[test]
fn error_codes() {
    let rp = udp(port(), ports(100).range(), &[]);
    assert_eq!(rp.command(""), "E0");
    assert_eq!(rp.command("Z foo"), "E3");
    assert_eq!(rp.command("U call 127.0.0.1 4000"), "E4");
    assert_eq!(rp.command("L call 127.0.0.1"), "E4");
    assert_eq!(rp.command("U c 127.0.0.1 4000 f t /s bad%zz"), "E4");
    assert_eq!(rp.command("P c prompt 0"), "E4");
    assert_eq!(rp.command("D call"), "E1");
    assert_eq!(rp.command("Dw call f t"), "E1");
    assert_eq!(rp.command("R call"), "E1");
    assert_eq!(rp.command("Sx call f"), "E1");
    assert_eq!(rp.command("Q call"), "E1");
    assert_eq!(rp.command("C call name"), "E1");
    assert_eq!(rp.command("Uz5 c 127.0.0.1 4000 f"), "E1");
    assert_eq!(rp.command("Uz c 127.0.0.1 4000 f"), "E1");
    assert_eq!(rp.command("Uc8,,0 c 127.0.0.1 4000 f"), "E1");
    assert_eq!(rp.command("Uiii c 127.0.0.1 4000 f"), "E1");
    // Outside bridge mode `e` names no interface; the classic daemon
    // stored a null address and crashed on the next I or L.
    assert_eq!(rp.command("Ue c 127.0.0.1 4000 f"), "E1");
    assert!(rp.command("I").contains("active sessions: 0"));
    assert_eq!(rp.command("D nosuch f t"), "E8");
    assert_eq!(rp.command("Q nosuch f t"), "E8");
    assert_eq!(rp.command("S nosuch f t"), "E8");
    assert_eq!(rp.command("R nosuch f t"), "E8");
    assert_eq!(rp.command("P nosuch prompt 0 f t"), "E8");
    assert_eq!(rp.command("C nosuch name f t"), "E8");
    // L on an unknown call is not an error: port 0.
    assert_eq!(rp.command("L nosuch 127.0.0.1 4000 f t"), "0 127.0.0.1");
    let long = "x".repeat(5000);
    assert_eq!(rp.command(&format!("U {long} 127.0.0.1 4000 f")), "E1");
    // None of the above created anything.
    assert!(rp.command("I").contains("sessions created: 0"));
    assert_eq!(rp.command("V"), "20040107");
}

#[test]
fn port_exhaustion_answers_e10_and_e7() {
    // Two pairs only: FIRST/FIRST+1 and FIRST+2/FIRST+3.
    let media = ports(4);
    let rp = udp(port(), media.range(), &[]);
    let in_range = |reply: &str| media.contains(reply_addr(reply, "127.0.0.1").port());
    let a = rp.command("U a 127.0.0.1 4000 f");
    let b = rp.command("U b 127.0.0.1 4002 f");
    assert!(in_range(&a) && in_range(&b), "{a} {b}");
    assert_eq!(rp.command("U c 127.0.0.1 4004 f"), "E10");
    assert_eq!(rp.command("L a 127.0.0.1 4006 f t"), "E7");
    assert_eq!(rp.command("D b f"), "0");
    let l = rp.command("L a 127.0.0.1 4006 f t");
    assert!(in_range(&l), "port reusable after D: {l}");
    assert!(rp.command("I").contains("active sessions: 1"));
}

#[test]
fn relays_both_ways_after_u_and_l() {
    let rp = udp(port(), ports(100).range(), &[]);
    let call = setup_call(&rp, "relay1");
    for seq in 0..20 {
        assert_relays(&call, seq);
    }
    let q = rp.command("Q relay1 ftag;1 ttag");
    let f: Vec<u64> = q.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(f.len(), 5, "{q}");
    assert_eq!((f[1], f[2], f[3], f[4]), (20, 20, 40, 0), "{q}");
    // Q from the other side swaps the two counts.
    let q2 = rp.command("Q relay1 ttag;1 ftag");
    assert!(q2.ends_with("20 20 40 0"), "{q2}");
    let info = rp.command("I");
    assert!(info.contains("stats = 20/20/40/0"), "{info}");
    assert_eq!(rp.command("D relay1 ftag ttag"), "0");
    assert!(rp.command("I").contains("active sessions: 0"));
}

#[test]
fn info_lists_streams_and_rtcp_twins() {
    let rp = udp(port(), ports(100).range(), &[]);
    let caller = Peer::new("127.0.0.1");
    let u = rp.command(&format!("U info1 127.0.0.1 {} ft", caller.port()));
    let port: u16 = u.split_whitespace().next().unwrap().parse().unwrap();
    let info = rp.command("I");
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines[0], "sessions created: 1");
    assert_eq!(lines[1], "active sessions: 1");
    assert_eq!(lines[2], "active streams: 2");
    assert_eq!(lines[3], "packets received: 0");
    assert_eq!(lines[4], "packets transmitted: 0");
    // As 1.2 prints it: the caller's leg, not open yet, shows the address
    // it will open on with port 0. The TTL may have ticked once on a
    // loaded machine.
    let want = format!(
        "\tinfo1/ft: caller = 127.0.0.1:0/127.0.0.1:{}, callee = 127.0.0.1:{port}/NONE, stats = 0/0/0/0, ttl = ",
        caller.port()
    );
    assert!(lines[5].starts_with(&want), "{}", lines[5]);
    assert!(
        lines[5].ends_with("60/60") || lines[5].ends_with("59/59"),
        "{}",
        lines[5]
    );
    // RTCP streams have no timers of their own: -1/-1, as in 1.2.
    let want = format!(
        "\tC info1/ft: caller = 127.0.0.1:0/127.0.0.1:{}, callee = 127.0.0.1:{}/NONE, stats = 0/0/0/0, ttl = -1/-1",
        caller.port() + 1,
        port + 1
    );
    assert_eq!(lines[6], want);
    assert_eq!(lines.len(), 7);
}

#[test]
fn latched_party_ignores_stranger() {
    let rp = udp(port(), ports(100).range(), &[]);
    let call = setup_call(&rp, "bleed1");
    assert_relays(&call, 1);
    let stranger = Peer::new("127.0.0.1");
    for i in 0..10 {
        stranger.send(call.to_caller_leg, &rtp_packet(500 + i, 0));
    }
    assert!(
        call.callee.recv_within(200).is_none(),
        "stranger's media relayed"
    );
    // The callee keeps talking: it must still reach the caller, not the stranger.
    call.callee.send(call.to_callee_leg, &rtp_packet(7, 0));
    assert!(call.caller.recv().is_some());
    assert!(
        stranger.recv_within(200).is_none(),
        "stranger received media"
    );
    let q = rp.command("Q bleed1 ftag;1");
    assert!(q.ends_with(" 10"), "strangers are counted as dropped: {q}");
}

#[test]
fn prefilled_party_is_locked_by_its_first_packet() {
    // The classic "RTP bleed": a party whose first packet came from exactly
    // the pre-filled address stayed open to the first stranger.
    let rp = udp(port(), ports(100).range(), &[]);
    let call = setup_call(&rp, "bleed2");
    call.caller.send(call.to_caller_leg, &rtp_packet(1, 0));
    assert!(call.callee.recv().is_some());
    let stranger = Peer::new("127.0.0.1");
    stranger.send(call.to_caller_leg, &rtp_packet(2, 0));
    assert!(call.callee.recv_within(200).is_none());
    call.callee.send(call.to_callee_leg, &rtp_packet(3, 0));
    assert!(
        call.caller.recv().is_some(),
        "media still reaches the real caller"
    );
    assert!(stranger.recv_within(200).is_none());
}

#[test]
fn first_packet_corrects_prefill_then_locks() {
    let rp = udp(port(), ports(100).range(), &[]);
    let callee = Peer::new("127.0.0.1");
    let natted = Peer::new("127.0.0.1");
    // The SDP names a private address nobody listens on.
    let u = rp.command("U nat1 127.0.0.1 9 ftag");
    let l = rp.command(&format!("L nat1 127.0.0.1 {} ftag ttag", callee.port()));
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "127.0.0.1"), reply_addr(&l, "127.0.0.1"));
    natted.send(to_caller_leg, &rtp_packet(1, 0));
    assert!(callee.recv().is_some());
    callee.send(to_callee_leg, &rtp_packet(2, 0));
    let (_, from) = natted.recv().expect("media goes to the latched source");
    assert_eq!(from, to_caller_leg);
    let other = Peer::new("127.0.0.1");
    other.send(to_caller_leg, &rtp_packet(3, 0));
    assert!(
        callee.recv_within(200).is_none(),
        "second correction refused"
    );
}

#[test]
fn resignal_opens_update_window() {
    let rp = udp(port(), ports(100).range(), &[]);
    let call = setup_call(&rp, "move1");
    assert_relays(&call, 1);
    let moved = Peer::new("127.0.0.1");
    // Before re-signalling, a new source is a stranger.
    moved.send(call.to_caller_leg, &rtp_packet(2, 0));
    assert!(call.callee.recv_within(200).is_none());
    // A re-INVITE names the caller's new address: it may take over.
    let u = rp.command(&format!("U move1 127.0.0.1 {} ftag;1 ttag;1", moved.port()));
    assert_eq!(reply_addr(&u, "127.0.0.1"), call.to_callee_leg);
    moved.send(call.to_caller_leg, &rtp_packet(3, 0));
    assert!(call.callee.recv().is_some());
    call.callee.send(call.to_callee_leg, &rtp_packet(4, 0));
    assert!(moved.recv().is_some(), "media follows the moved caller");
    assert!(call.caller.recv_within(200).is_none());
    // And then it is locked again.
    call.caller.send(call.to_caller_leg, &rtp_packet(5, 0));
    assert!(call.callee.recv_within(200).is_none());
}

#[test]
fn asymmetric_party_gets_media_at_signalled_address() {
    let rp = udp(port(), ports(100).range(), &[]);
    let recv_sock = Peer::new("127.0.0.1");
    let send_sock = Peer::new("127.0.0.1");
    let callee = Peer::new("127.0.0.1");
    let u = rp.command(&format!("Ua asym1 127.0.0.1 {} ftag", recv_sock.port()));
    let l = rp.command(&format!("L asym1 127.0.0.1 {} ftag ttag", callee.port()));
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "127.0.0.1"), reply_addr(&l, "127.0.0.1"));
    send_sock.send(to_caller_leg, &rtp_packet(1, 0));
    assert!(callee.recv().is_some(), "asymmetric caller's media relayed");
    callee.send(to_callee_leg, &rtp_packet(2, 0));
    assert!(recv_sock.recv().is_some(), "sent to the signalled address");
    assert!(send_sock.recv_within(200).is_none(), "not to the source");
}

#[test]
fn rtcp_is_relayed_and_guessed_from_rtp() {
    let rp = udp(port(), ports(100).range(), &[]);
    let call = setup_call(&rp, "rtcp1");
    let caller_rtcp = Peer::at(&format!("127.0.0.1:{}", call.caller.port() + 1));
    let callee_rtcp = Peer::at(&format!("127.0.0.1:{}", call.callee.port() + 1));
    let (Some(caller_rtcp), Some(callee_rtcp)) = (caller_rtcp, callee_rtcp) else {
        // Port+1 taken by something else on this machine: nothing to test.
        return;
    };
    let rtcp_of = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);
    caller_rtcp.send(
        rtcp_of(call.to_caller_leg),
        b"\x81\xc8\x00\x01rtcp-from-caller",
    );
    let (got, from) = callee_rtcp.recv().expect("RTCP to callee's port+1");
    assert_eq!(got, b"\x81\xc8\x00\x01rtcp-from-caller");
    assert_eq!(from, rtcp_of(call.to_callee_leg));
    callee_rtcp.send(rtcp_of(call.to_callee_leg), b"back");
    assert_eq!(caller_rtcp.recv().expect("RTCP back").0, b"back");
    let info = rp.command("I");
    assert!(info.contains("\tC rtcp1/ftag;1:"), "{info}");
}

#[test]
fn rtcp_address_guessed_from_latched_rtp_source() {
    let rp = udp(port(), ports(100).range(), &[]);
    let callee = Peer::new("127.0.0.1");
    // Pre-fill nothing for the caller (port 0), latch it by RTP.
    let u = rp.command("U guess1 127.0.0.1 0 ftag");
    let l = rp.command(&format!("L guess1 127.0.0.1 {} ftag ttag", callee.port()));
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "127.0.0.1"), reply_addr(&l, "127.0.0.1"));
    let (caller, caller_rtcp) = loop {
        let p = Peer::new("127.0.0.1");
        if let Some(r) = Peer::at(&format!("127.0.0.1:{}", p.port() + 1)) {
            break (p, r);
        }
    };
    caller.send(to_caller_leg, &rtp_packet(1, 0));
    assert!(callee.recv().is_some());
    let callee_rtcp_leg = SocketAddr::new(to_callee_leg.ip(), to_callee_leg.port() + 1);
    let callee_rtcp = Peer::new("127.0.0.1");
    callee_rtcp.send(callee_rtcp_leg, b"rtcp");
    assert_eq!(caller_rtcp.recv().expect("guessed RTCP port").0, b"rtcp");
}

#[test]
fn idle_session_times_out() {
    let rp = udp(port(), ports(100).range(), &["-T", "2"]);
    let call = setup_call(&rp, "ttl1");
    assert_relays(&call, 1);
    assert!(rp.command("I").contains("active sessions: 1"));
    let deadline = Instant::now() + Duration::from_secs(6);
    while rp.command("I").contains("active sessions: 1") {
        assert!(Instant::now() < deadline, "session never timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rp.log().contains("Timeout"));
    assert_eq!(rp.command("Q ttl1 ftag;1"), "E8");
}

#[test]
fn one_way_traffic_keeps_session_unless_independent() {
    for independent in [false, true] {
        let extra: &[&str] = if independent {
            &["-T", "2", "-i"]
        } else {
            &["-T", "2"]
        };
        let rp = udp(port(), ports(100).range(), extra);
        let call = setup_call(&rp, "oneway");
        let start = Instant::now();
        let mut seq = 0;
        while start.elapsed() < Duration::from_millis(3500) {
            call.caller.send(call.to_caller_leg, &rtp_packet(seq, 0));
            seq += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        let alive = rp.command("I").contains("active sessions: 1");
        assert_eq!(alive, !independent, "independent={independent}");
    }
}

#[test]
fn x_deletes_everything() {
    let rp = udp(port(), ports(100).range(), &[]);
    for i in 0..5 {
        rp.command(&format!("U xcall{i} 127.0.0.1 {} f", 5000 + 2 * i));
    }
    assert!(rp.command("I").contains("active sessions: 5"));
    assert_eq!(rp.command("X"), "0");
    let info = rp.command("I");
    assert!(
        info.contains("active sessions: 0") && info.contains("sessions created: 5"),
        "{info}"
    );
}

#[test]
fn media_numbers_make_separate_streams() {
    let rp = udp(port(), ports(100).range(), &[]);
    let a1 = rp.command("U multi 127.0.0.1 5000 ft;1");
    let a2 = rp.command("U multi 127.0.0.1 5002 ft;2");
    assert_ne!(a1, a2);
    assert_eq!(
        rp.command("U multi 127.0.0.1 5000 ft;1"),
        a1,
        "update keeps its port"
    );
    rp.command("L multi 127.0.0.1 6000 ft;1 tt;1");
    rp.command("L multi 127.0.0.1 6002 ft;2 tt;2");
    assert!(rp.command("I").contains("active sessions: 2"));
    // A numbered tag deletes one stream, an unnumbered one all of them.
    assert_eq!(rp.command("D multi ft;2 tt;2"), "0");
    assert!(rp.command("I").contains("active sessions: 1"));
    rp.command("U multi 127.0.0.1 5002 ft;2");
    assert!(rp.command("I").contains("active sessions: 2"));
    assert_eq!(rp.command("D multi ft tt"), "0");
    assert!(rp.command("I").contains("active sessions: 0"));
    // BYE from the callee: tags swapped.
    rp.command("U multi2 127.0.0.1 5000 ft;1");
    assert_eq!(rp.command("D multi2 tt ft"), "0");
    assert!(rp.command("I").contains("active sessions: 0"));
}

#[test]
fn weak_holders_keep_session_after_d() {
    let rp = udp(port(), ports(100).range(), &["-T", "2"]);
    rp.command("Uw weak1 127.0.0.1 5000 ft");
    rp.command("U strong1 127.0.0.1 5002 ft");
    assert_eq!(rp.command("D weak1 ft"), "0");
    assert_eq!(rp.command("D strong1 ft"), "0");
    let info = rp.command("I");
    assert!(
        info.contains("weak1/ft") && !info.contains("strong1/ft"),
        "{info}"
    );
    // The weakly held session ends with its idle timeout.
    let deadline = Instant::now() + Duration::from_secs(6);
    while rp.command("I").contains("weak1/ft") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn double_sends_small_packets_with_2() {
    let rp = udp(port(), ports(100).range(), &["-2"]);
    let call = setup_call(&rp, "dbl");
    call.caller
        .send(call.to_caller_leg, b"\x80\x00\x00\x01small");
    assert_eq!(call.callee.drain(300), 2, "small packet sent twice");
    call.caller.send(call.to_caller_leg, &[0x80u8; 200]);
    assert_eq!(call.callee.drain(300), 1, "large packet once");
}

#[test]
fn junk_packets_are_relayed_or_dropped_never_fatal() {
    let rp = udp(port(), ports(100).range(), &[]);
    let call = setup_call(&rp, "junk");
    call.caller.send(call.to_caller_leg, b"");
    call.caller.send(call.to_caller_leg, b"x");
    call.caller.send(call.to_caller_leg, &[0xffu8; 65000]);
    assert_eq!(call.callee.drain(300), 3, "the relay is payload-agnostic");
    // Packets on a port of a deleted session go nowhere.
    rp.command("D junk ftag");
    call.caller.send(call.to_caller_leg, b"late");
    assert!(call.callee.recv_within(200).is_none());
    assert_eq!(rp.command("V"), "20040107");
}

#[test]
fn ipv6_session_on_loopback() {
    let control = format!("udp6:[::1]:{}", port());
    let (m, mm) = ports(100).range();
    let rp = Rtpproxy::start(&[
        "-s",
        &control,
        "-6",
        "::1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-d",
        "INFO",
    ]);
    let caller = Peer::new("::1");
    let callee = Peer::new("::1");
    let u = rp.command(&format!("U6 v6call ::1 {} ftag", caller.port()));
    assert!(u.ends_with(" ::1 6"), "{u}");
    let l = rp.command(&format!("L6 v6call ::1 {} ftag ttag", callee.port()));
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "::1"), reply_addr(&l, "::1"));
    caller.send(to_caller_leg, &rtp_packet(1, 0));
    assert_eq!(callee.recv().expect("v6 relay").1, to_callee_leg);
    callee.send(to_callee_leg, &rtp_packet(2, 0));
    assert!(caller.recv().is_some());
    let info = rp.command("I");
    assert!(info.contains("caller = ::1:"), "{info}");
}

#[test]
fn bridges_ipv4_and_ipv6() {
    let control = format!("udp:127.0.0.1:{}", port());
    let (m, mm) = ports(100).range();
    let rp = Rtpproxy::start(&[
        "-s",
        &control,
        "-l",
        "127.0.0.1",
        "-6",
        "/::1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-d",
        "INFO",
    ]);
    let caller = Peer::new("127.0.0.1");
    let callee = Peer::new("::1");
    // INVITE from the IPv4 side (i) to the IPv6 side (e).
    let u = rp.command(&format!("Uie br1 127.0.0.1 {} ftag", caller.port()));
    assert!(u.ends_with(" ::1 6"), "the callee gets the IPv6 leg: {u}");
    let l = rp.command(&format!("L6ei br1 ::1 {} ftag ttag", callee.port()));
    assert!(
        l.ends_with(" 127.0.0.1"),
        "the caller gets the IPv4 leg: {l}"
    );
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "::1"), reply_addr(&l, "127.0.0.1"));
    caller.send(to_caller_leg, &rtp_packet(1, 0));
    let (_, from) = callee.recv().expect("v4 -> v6");
    assert_eq!(from, to_callee_leg);
    callee.send(to_callee_leg, &rtp_packet(2, 0));
    let (_, from) = caller.recv().expect("v6 -> v4");
    assert_eq!(from, to_caller_leg);
}

#[test]
fn bridges_two_ipv4_interfaces() {
    let control = format!("udp:127.0.0.1:{}", port());
    let (m, mm) = ports(100).range();
    let rp = Rtpproxy::start(&[
        "-s",
        &control,
        "-l",
        "127.0.0.1/127.0.0.2",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-d",
        "INFO",
    ]);
    let u = rp.command("Uei br2 127.0.0.2 5000 ftag");
    assert!(u.ends_with(" 127.0.0.1"), "{u}");
    let l = rp.command("L br2 127.0.0.1 5002 ftag ttag");
    assert!(l.ends_with(" 127.0.0.2"), "{l}");
    // A single letter picks the caller's leg; the other leg defaults to the first.
    let u = rp.command("Ue br3 127.0.0.2 5000 ftag");
    assert!(u.ends_with(" 127.0.0.1"), "{u}");
    let l = rp.command("L br3 127.0.0.1 5002 ftag ttag");
    assert!(l.ends_with(" 127.0.0.2"), "{l}");
}

#[test]
fn two_hundred_sessions_relay_without_loss() {
    let rp = udp(port(), ports(1000).range(), &["-d", "WARN"]);
    let calls: Vec<Call> = (0..200)
        .map(|i| setup_call(&rp, &format!("many{i}")))
        .collect();
    let rounds = 10u16;
    for round in 0..rounds {
        for c in &calls {
            c.caller.send(c.to_caller_leg, &rtp_packet(round, 0));
            c.callee.send(c.to_callee_leg, &rtp_packet(round + 100, 0));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut lost = 0;
    for c in &calls {
        lost += usize::from(rounds) - c.callee.drain(1);
        lost += usize::from(rounds) - c.caller.drain(1);
    }
    assert_eq!(lost, 0);
    let info = rp.command("I");
    assert!(info.contains("active sessions: 200"));
    assert_eq!(info.matches("stats = 10/10/20/0").count(), 200);
}

#[test]
fn unix_socket_control_and_silent_client() {
    let (m, mm) = ports(100).range();
    let rp = Rtpproxy::start(&[
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-d",
        "INFO",
    ]);
    let path = rp.control_path().expect("unix control").to_path_buf();
    // A client that connects and never writes must not stall the daemon.
    let silent: Vec<_> = (0..5)
        .map(|_| std::os::unix::net::UnixStream::connect(&path).expect("connect"))
        .collect();
    let start = Instant::now();
    let call = setup_call(&rp, "unix1");
    assert_relays(&call, 1);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(rp.command("I").contains("active sessions: 1"));
    drop(silent);
    // Without a final newline or half-close, the command still gets served.
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"V").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "20040107\n");
}

#[test]
fn udp_cookie_and_empty_command() {
    let control = port();
    let _rp = udp(control, ports(100).range(), &[]);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1024];
    for (msg, want) in [
        (&b"abc V"[..], &b"abc 20040107\n"[..]),
        (b"abd", b"abd E0\n"),
        (b"abe   \n", b"abe E0\n"),
        (b"  ", b"E0\n"),
        (b"k1 VF 20050322", b"k1 1\n"),
    ] {
        s.send_to(msg, ("127.0.0.1", control)).unwrap();
        let n = s.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], want, "{:?}", String::from_utf8_lossy(msg));
    }
}

#[test]
fn high_bytes_in_call_id_are_safe() {
    // The classic daemon hashed bytes >= 0x80 to negative indices.
    let rp = udp(port(), ports(100).range(), &[]);
    let mut cmd = b"U call\xff\xfe\x80 127.0.0.1 5000 ftag".to_vec();
    let port = rp.command_bytes(&cmd);
    assert!(port.parse::<u16>().is_ok() || port.contains(' '), "{port}");
    cmd = b"D call\xff\xfe\x80 ftag".to_vec();
    assert_eq!(rp.command_bytes(&cmd), "0");
    assert!(rp.command("I").contains("active sessions: 0"));
}

#[test]
fn bad_options_exit_1_with_one_line() {
    for args in [
        vec!["-T", "x"],
        vec!["-m", "0"],
        vec!["-l", "not-an-address.invalid"],
        vec!["-s", "udp:127.0.0.1:99999"],
        vec!["-d", "LOUD"],
        vec!["-t", "999"],
        vec!["-S", "/tmp"],
        vec!["-Q"],
    ] {
        let out = std::process::Command::new(common::bin_path())
            .args(&args)
            .arg("-f")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("rtpproxy: "), "{args:?}: {err}");
    }
}

/// Receives one datagram and returns the IPv4 TOS byte it carried.
fn recv_tos(peer: &Peer) -> Option<u8> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let fd = peer.sock.as_raw_fd();
    let mut buf = [0u8; 2048];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u8; 64];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: fd is a live socket and msg describes valid buffers.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return None;
    }
    // SAFETY: walking the control buffer the kernel just filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TOS {
                return Some(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    None
}

#[test]
fn media_carries_tos() {
    use nix::libc;
    use std::os::fd::AsRawFd;
    for (tos, want) in [(None, 0xb8u8), (Some("0x20"), 0x20), (Some("-1"), 0)] {
        let extra: Vec<&str> = tos.map(|t| vec!["-t", t]).unwrap_or_default();
        let rp = udp(port(), ports(50).range(), &extra);
        let call = setup_call(&rp, "tos");
        let on: libc::c_int = 1;
        // SAFETY: setting an int socket option on a live socket.
        unsafe {
            libc::setsockopt(
                call.callee.sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_RECVTOS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        call.caller.send(call.to_caller_leg, &rtp_packet(1, 0));
        assert_eq!(recv_tos(&call.callee), Some(want), "-t {tos:?}");
    }
}

/// Voluntary context switches so far: one per wake-up from poll(2).
fn wakeups(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

#[test]
fn idle_daemon_wakes_once_a_second() {
    // A whole port table and no sessions: poll's 1 s timeout is the only
    // wake-up, also after the last session of a busy spell ended.
    let media = ports(1000);
    let rp = udp(port(), media.range(), &["-d", "WARN"]);
    let u = rp.command("U idle-wake 127.0.0.1 9 ftag");
    assert!(media.contains(reply_addr(&u, "127.0.0.1").port()), "{u}");
    assert_eq!(rp.command("D idle-wake ftag"), "0");
    std::thread::sleep(Duration::from_millis(300));
    let before = wakeups(rp.pid());
    std::thread::sleep(Duration::from_secs(3));
    let woke = wakeups(rp.pid()) - before;
    // Three timer ticks; the margin covers a tick landing at either edge.
    assert!(woke <= 6, "{woke} wake-ups in 3 s with no sessions");
}

#[test]
fn a_burst_on_one_stream_arrives_whole_and_in_order() {
    // Enough calls for the loop to batch (64 polled sockets and more);
    // one stream then gets 200 back-to-back packets, more than one read
    // takes and more than a call's stream brings between two passes.
    let rp = udp(port(), ports(400).range(), &["-d", "WARN"]);
    let calls: Vec<Call> = (0..40)
        .map(|i| setup_call(&rp, &format!("burst-{i}")))
        .collect();
    let call = &calls[7];
    assert_relays(call, 1);
    const N: u16 = 200;
    for seq in 0..N {
        call.caller.send(call.to_caller_leg, &rtp_packet(seq, 0));
    }
    let mut got = Vec::new();
    while got.len() < usize::from(N) {
        let Some((p, _)) = call.callee.recv_within(2000) else {
            break;
        };
        got.push(u16::from_be_bytes([p[2], p[3]]));
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

/// Sends one packet from the caller and returns how long after `since`
/// the callee got it (with its sequence number checked).
fn relayed_after(call: &Call, seq: u16, since: Instant) -> Duration {
    call.caller.send(call.to_caller_leg, &rtp_packet(seq, 0));
    arrival_after(call, seq, since)
}

fn arrival_after(call: &Call, seq: u16, since: Instant) -> Duration {
    let (p, _) = call
        .callee
        .recv_within(2000)
        .unwrap_or_else(|| panic!("packet {seq} never arrived"));
    assert_eq!(u16::from_be_bytes([p[2], p[3]]), seq, "lost or reordered");
    since.elapsed()
}

/// Sends `n` packets 100 ms apart, each received before the next goes;
/// returns when the last was sent.
fn steady(call: &Call, seq: &mut u16, n: usize) -> Instant {
    let mut sent = Instant::now();
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
        }
        sent = Instant::now();
        let took = relayed_after(call, *seq, sent);
        assert!(
            took < Duration::from_millis(60),
            "a steady packet took {took:?}"
        );
        *seq += 1;
    }
    sent
}

/// Sends `n` packets at once, `after` the last steady one, and checks
/// that the k-th arrives before the rhythm had it due (k+1 intervals after
/// the last), with a margin for a loaded machine.
fn burst_within_rhythm(call: &Call, seq: &mut u16, n: u16, last: Instant, after: Duration) {
    std::thread::sleep(after.saturating_sub(last.elapsed()));
    for i in 0..n {
        call.caller
            .send(call.to_caller_leg, &rtp_packet(*seq + i, 0));
    }
    for i in 0..n {
        let took = arrival_after(call, *seq + i, last);
        let due = Duration::from_millis(100 * (u64::from(i) + 1) + 30);
        assert!(took < due, "packet {i} of a burst held {took:?}");
    }
    *seq += n;
}

#[test]
fn a_socket_resting_between_packets_holds_none_past_its_rhythm() {
    // A steady stream's socket is left out of the polls for most of its
    // interval (100 ms here, so that a hold would show far above timing
    // noise). Whatever the stream then does, no packet may wait past the
    // moment the rhythm had it due, and a talk spurt after silence is not
    // held at all.
    let rp = udp(port(), ports(40).range(), &["-d", "WARN"]);
    let calls: Vec<Call> = (0..10)
        .map(|i| setup_call(&rp, &format!("rest-{i}")))
        .collect();
    let call = &calls[3];
    assert_relays(call, 1);
    let mut seq = 10;
    // Early packets: 10 ms after a steady one, while its socket rests.
    let last = steady(call, &mut seq, 8);
    burst_within_rhythm(call, &mut seq, 5, last, Duration::from_millis(10));
    // Packets on time, but several at once: the first is read alone.
    let last = steady(call, &mut seq, 8);
    burst_within_rhythm(call, &mut seq, 3, last, Duration::from_millis(100));
    // Silence, then a talk spurt that starts with a burst of ten.
    let last = steady(call, &mut seq, 8);
    std::thread::sleep(Duration::from_secs(1).saturating_sub(last.elapsed()));
    let burst = Instant::now();
    for i in 0..10 {
        call.caller
            .send(call.to_caller_leg, &rtp_packet(seq + i, 0));
    }
    for i in 0..10 {
        let took = arrival_after(call, seq + i, burst);
        assert!(
            took < Duration::from_millis(60),
            "burst packet {i} took {took:?}"
        );
    }
    // Nothing was lost or doubled on the way.
    assert_eq!(call.callee.drain(50), 0);
}

#[test]
fn a_stream_silent_for_seconds_is_relayed_again_at_once() {
    // After 2 s without a packet an RTP socket is polled on the slow
    // cadence; the packet that ends the silence and those after it must
    // still arrive promptly, both ways.
    let rp = udp(port(), ports(8).range(), &["-d", "WARN"]);
    let call = setup_call(&rp, "silent");
    assert_relays(&call, 1);
    std::thread::sleep(Duration::from_millis(3500));
    for (i, seq) in (100..120u16).enumerate() {
        let sent = Instant::now();
        let took = relayed_after(&call, seq, sent);
        assert!(took < Duration::from_millis(60), "packet {i} took {took:?}");
        let q = rtp_packet(seq + 1000, 0);
        call.callee.send(call.to_callee_leg, &q);
        let (got, _) = call.caller.recv_within(500).expect("caller got nothing");
        assert_eq!(got, q);
        assert!(
            sent.elapsed() < Duration::from_millis(120),
            "packet {i} back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        rp.command("I").contains("stats = 21/21/42/0"),
        "{}",
        rp.command("I")
    );
}

#[test]
fn rtcp_and_rtp_after_a_long_silence_are_relayed() {
    // Ten seconds without RTCP puts an RTCP socket on the idle clock
    // (polled every 100 ms); the RTP sockets are on the RTCP clock by then.
    // Both must still relay, the RTP packet promptly.
    let rp = udp(port(), ports(8).range(), &["-d", "WARN"]);
    let call = setup_call(&rp, "long-silence");
    assert_relays(&call, 1);
    let caller_rtcp = Peer::at(&format!("127.0.0.1:{}", call.caller.port() + 1));
    let callee_rtcp = Peer::at(&format!("127.0.0.1:{}", call.callee.port() + 1));
    let (Some(caller_rtcp), Some(callee_rtcp)) = (caller_rtcp, callee_rtcp) else {
        // Port+1 taken by something else on this machine: nothing to test.
        return;
    };
    let rtcp_of = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);
    std::thread::sleep(Duration::from_millis(11_500));
    let sent = Instant::now();
    caller_rtcp.send(rtcp_of(call.to_caller_leg), b"\x81\xc9\x00\x01late-rr");
    let (got, _) = callee_rtcp.recv_within(2000).expect("RTCP after silence");
    assert_eq!(got, b"\x81\xc9\x00\x01late-rr");
    assert!(
        sent.elapsed() < Duration::from_millis(400),
        "{:?}",
        sent.elapsed()
    );
    let took = relayed_after(&call, 7, Instant::now());
    assert!(
        took < Duration::from_millis(60),
        "RTP after silence took {took:?}"
    );
    callee_rtcp.send(rtcp_of(call.to_callee_leg), b"back");
    assert_eq!(caller_rtcp.recv_within(2000).expect("RTCP back").0, b"back");
}
