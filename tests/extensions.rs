//! The protocol extensions after 1.2 that OpenSIPS, the Sippy B2BUA and
//! rtpproxy 2.x/3.x users rely on (doc/PROTOCOL.md, "Extensions"): `I`
//! with `b`/`l`, `G` with 3.x's names and `v`, `n` (new port), `l`/`r`
//! (where a leg opens), `N` (stop recording), extended `Q`, `&&`
//! sub-commands and `Q ... && D`, and what `VF` answers.
//!
//! Control ports and media ranges come from `common::ports`.

mod common;

use std::time::Duration;

use common::{port, ports, reply_addr, rtp_packet, setup_call, udp, Call, Rtpproxy, TempDir};

/// Sends `n` packets each way and checks they arrive.
fn exchange(call: &Call, first_seq: u16, n: u16) {
    for seq in first_seq..first_seq + n {
        call.caller.send(call.to_caller_leg, &rtp_packet(seq, 0));
        assert!(call.callee.recv().is_some(), "caller -> callee {seq}");
        call.callee.send(call.to_callee_leg, &rtp_packet(seq, 0));
        assert!(call.caller.recv().is_some(), "callee -> caller {seq}");
    }
}

fn daemon(extra: &[&str]) -> Rtpproxy {
    udp(port(), ports(16).range(), extra)
}

#[test]
fn info_brief_and_load_lines_in_order() {
    let rp = daemon(&[]);
    let call = setup_call(&rp, "info1");
    exchange(&call, 1, 3);
    let lines = |cmd: &str| -> Vec<String> { rp.command(cmd).lines().map(String::from).collect() };
    let want = [
        "sessions created: 1",
        "active sessions: 1",
        "active streams: 2",
        "packets received: 6",
        "packets transmitted: 6",
    ];
    assert_eq!(lines("Ib"), want);
    let il = lines("Il");
    assert_eq!(il[..5], want);
    assert!(il[5].starts_with("average load: "), "{il:?}");
    let load: f64 = il[5]["average load: ".len()..].parse().expect("a number");
    assert!((0.0..=2.0).contains(&load), "{load}");
    assert!(il[6].starts_with("\tinfo1/ftag;1: caller = "), "{il:?}");
    let ibl = lines("Ibl");
    assert_eq!(ibl.len(), 6);
    assert_eq!(lines("ILB"), ibl);
    // Plain I: the five lines, then one line per RTP and RTCP stream.
    let i = lines("I");
    assert_eq!(i[..5], want);
    assert_eq!(i.len(), 7);
    assert_eq!(rp.command("Ix"), "E1");
    // Over UDP the reply starts with the cookie.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let ctl = rp.udp_addr();
    sock.send_to(b"hb1 Ib", ctl).expect("send");
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).expect("reply");
    assert!(buf[..n].starts_with(b"hb1 sessions created: 1\n"));
}

#[test]
fn a_crowded_info_still_fits_one_datagram() {
    let sessions = 80;
    let rp = udp(port(), ports(2 * sessions + 10).range(), &["-d", "INFO"]);
    // Long Call-IDs, as some B2BUAs make them: 80 sessions need more than
    // one datagram.
    let long = "x".repeat(500);
    for i in 0..sessions {
        let r = rp.command(&format!("U {long}{i} 127.0.0.1 5000 ftag{i}"));
        assert!(!r.starts_with('E'), "{r}");
    }
    // Sent and read as a B2BUA would: one datagram, cookie first.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3))).ok();
    sock.send_to(b"big I", rp.udp_addr()).expect("send");
    let mut buf = vec![0u8; 70000];
    let n = sock
        .recv(&mut buf)
        .expect("I must be answered, not dropped");
    assert!(n <= 65000, "{n}");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("big sessions created: 80\n"),
        "{}",
        &text[..80]
    );
    let listed = text.lines().filter(|l| l.starts_with('\t')).count();
    let not_listed: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("streams not listed: "))
        .expect("the count of streams left out")
        .parse()
        .expect("a number");
    assert_eq!(listed + not_listed, 2 * usize::from(sessions));
    assert!(listed > 0);
    assert!(
        rp.log().contains("stream lines left out"),
        "the reason is logged"
    );
    // Ib is always small.
    assert_eq!(rp.command("Ib").lines().count(), 5);
}

#[test]
fn g_speaks_3x_names_values_and_v() {
    let rp = daemon(&["-T", "2"]);
    let call = setup_call(&rp, "g1");
    exchange(&call, 1, 2);
    // One-way RTP: only the caller sends.
    let oneway = setup_call(&rp, "g2");
    oneway.caller.send(oneway.to_caller_leg, &rtp_packet(1, 0));
    assert!(oneway.callee.recv().is_some());
    // A session whose second leg never opened, left to time out.
    rp.command("U g3 127.0.0.1 5000 ftag");
    assert_eq!(rp.command("D g1 ftag;1"), "0");
    assert_eq!(rp.command("D g2 ftag;1"), "0");
    std::thread::sleep(Duration::from_millis(3500));
    let g = rp.command(
        "Gv nsess_created nsess_complete nsess_timeout nsess_nortp nsess_owrtp nsess_destroyed",
    );
    assert_eq!(
        g,
        "nsess_created=3 nsess_complete=2 nsess_timeout=1 nsess_nortp=0 nsess_owrtp=1 nsess_destroyed=3"
    );
    // Values only, in the order asked, repeats kept.
    assert_eq!(
        rp.command("G nsess_created nsess_created nsess_complete"),
        "3 3 2"
    );
    let total: f64 = rp.command("G total_duration").parse().expect("float");
    assert!(total > 2.0, "{total}");
    assert!(rp.command("G pps_in").contains('.'));
    assert_eq!(rp.command("G nsess_created nope"), "E1");
    assert_eq!(rp.command("Gx nsess_created"), "E1");
    // No names: every counter as name=value, 3.x's and ours.
    let all = rp.command("G");
    for name in [
        "nsess_active=0",
        "nplrs_created=0",
        "npkts_resizer_in=0",
        "ncmds_rcvd_ndups=0",
        "nlog_dropped=",
    ] {
        assert!(all.contains(name), "{name} in {all}");
    }
}

#[test]
fn n_gives_a_fresh_port_and_closes_the_old_one() {
    let rp = daemon(&[]);
    let call = setup_call(&rp, "n1");
    exchange(&call, 1, 1);
    // Un from the caller: the port U answers (the callee's side) moves.
    let u = rp.command(&format!("Un n1 127.0.0.1 {} ftag;1", call.caller.port()));
    let moved = reply_addr(&u, "127.0.0.1");
    assert_ne!(moved, call.to_callee_leg);
    call.callee.send(call.to_callee_leg, &rtp_packet(5, 0));
    assert!(
        call.caller.recv_within(300).is_none(),
        "the old port still relays"
    );
    call.callee.send(moved, &rtp_packet(6, 0));
    assert!(call.caller.recv().is_some(), "the new port does not relay");
    // Ln likewise for the other leg.
    let l = rp.command(&format!(
        "Ln n1 127.0.0.1 {} ftag;1 ttag;1",
        call.callee.port()
    ));
    let moved_l = reply_addr(&l, "127.0.0.1");
    assert_ne!(moved_l, call.to_caller_leg);
    call.caller.send(moved_l, &rtp_packet(7, 0));
    assert!(call.callee.recv().is_some());
    // A creating Un is a plain U.
    let u = rp.command("Un n2 127.0.0.1 5000 ft");
    assert!(!u.starts_with('E'), "{u}");
}

#[test]
fn n_without_a_free_pair_is_e7_and_keeps_the_old_ports() {
    // Room for two pairs only.
    let range = ports(4).range();
    let rp = udp(port(), range, &[]);
    let call = setup_call(&rp, "full1");
    let u = rp.command(&format!("Un full1 127.0.0.1 {} ftag;1", call.caller.port()));
    assert_eq!(u, "E7");
    exchange(&call, 1, 1);
}

#[test]
fn l_and_r_pick_the_leg_address() {
    let (m, mm) = ports(16).range();
    let (m, mm) = (m.to_string(), mm.to_string());
    let ctl = format!("udp:127.0.0.1:{}", port());
    let rp = Rtpproxy::start(&[
        "-l",
        "127.0.0.1",
        "-6",
        "::1",
        "-s",
        &ctl,
        "-m",
        &m,
        "-M",
        &mm,
    ]);
    let u = rp.command("Ul127.0.0.1 lr1 127.0.0.1 5000 ft");
    assert!(u.ends_with(" 127.0.0.1") && !u.starts_with('E'), "{u}");
    let u = rp.command("Ur127.0.0.1 lr2 127.0.0.1 5000 ft");
    assert!(u.ends_with(" 127.0.0.1") && !u.starts_with('E'), "{u}");
    let u = rp.command("U6l[::1] lr3 ::1 5000 ft");
    assert!(u.ends_with(" ::1 6"), "{u}");
    let u = rp.command("U6r::1 lr4 ::1 5000 ft");
    assert!(u.ends_with(" ::1 6"), "{u}");
    // The L after an l/r U answers on the same address.
    let l = rp.command("L lr3 ::1 5002 ft tt");
    assert!(l.ends_with(" ::1 6"), "{l}");
    assert_eq!(rp.command("Ul lr5 127.0.0.1 5000 ft"), "E1");
    // Not an address of this host.
    assert_eq!(rp.command("Ul192.0.2.1 lr6 127.0.0.1 5000 ft"), "E1");
    assert_eq!(rp.command("Gv nsess_created"), "nsess_created=4");
}

#[test]
fn n_command_stops_recording_and_copies() {
    let rec = TempDir::new("ext-rec");
    let r = rec.path().display().to_string();
    let rp = daemon(&["-r", &r]);
    let call = setup_call(&rp, "rec1");
    assert_eq!(rp.command("R rec1 ftag;1"), "0");
    exchange(&call, 1, 2);
    // N stops what the from-tag party (the caller) sends.
    assert_eq!(rp.command("N rec1 ftag;1"), "0");
    exchange(&call, 3, 2);
    // Na stops the rest; then there is nothing left to stop.
    assert_eq!(rp.command("Na rec1 ftag;1 ttag;1"), "0");
    assert_eq!(rp.command("N rec1 ftag;1"), "E8");
    assert_eq!(rp.command("Na rec1 ftag;1"), "E8");
    assert_eq!(rp.command("N nosuch ftag"), "E8");
    assert_eq!(rp.command("Nx rec1 ftag;1"), "E1");
    assert_eq!(rp.command("N rec1"), "E1");
    // The files were finished at N, in the recording directory, while
    // the call goes on: the caller's has 2 packets, the callee's 4.
    let size = |side: &str| {
        std::fs::metadata(rec.join(format!("rec1=ftag;1.{side}.rtp")))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    assert!(
        size("o") > 0 && size("a") > size("o"),
        "{} {}",
        size("o"),
        size("a")
    );
    exchange(&call, 5, 1);
    // A C copy to a file ends at N too.
    assert_eq!(rp.command("C rec1 copy1 ftag;1"), "0");
    call.caller.send(call.to_caller_leg, &rtp_packet(9, 0));
    assert!(call.callee.recv().is_some());
    assert_eq!(rp.command("N rec1 ftag;1"), "0");
    assert_eq!(rp.command("N rec1 ftag;1"), "E8");
}

#[test]
fn q_names_values_and_v() {
    let rp = daemon(&[]);
    let call = setup_call(&rp, "q1");
    exchange(&call, 1, 3);
    call.caller.send(call.to_caller_leg, &rtp_packet(4, 0));
    assert!(call.callee.recv().is_some());
    let plain = rp.command("Q q1 ftag;1 ttag;1");
    let fields: Vec<&str> = plain.split(' ').collect();
    assert_eq!(fields[1..], ["4", "3", "7", "0"], "{plain}");
    let v = rp.command("Qv q1 ftag;1 ttag;1");
    assert!(
        v.starts_with("ttl=") && v.ends_with(" npkts_ina=4 npkts_ino=3 nrelayed=7 ndropped=0"),
        "{v}"
    );
    assert_eq!(rp.command("Q q1 ftag;1 ttag;1 npkts_ino npkts_ina"), "3 4");
    assert_eq!(rp.command("Qv q1 ttag;1 ftag;1 npkts_ina"), "npkts_ina=3");
    assert_eq!(rp.command("Q q1 ftag;1 ttag;1 nope"), "E1");
    // The session is looked up first.
    assert_eq!(rp.command("Q nosuch ftag;1 ttag;1 nope"), "E8");
    assert_eq!(rp.command("Qx q1 ftag;1"), "E1");
}

#[test]
fn sub_commands_run_after_the_command_or_not_at_all() {
    let rp = daemon(&[]);
    // A sub-command that does not parse: nothing runs.
    assert_eq!(rp.command("U sub1 127.0.0.1 5000 ft && M9:1 x"), "E1");
    assert_eq!(rp.command("U sub1 127.0.0.1 5000 ft &&"), "E1");
    assert_eq!(rp.command("Gv nsess_created"), "nsess_created=0");
    assert_eq!(rp.command("D sub1 ft && D"), "E1");
    assert_eq!(rp.command("G && D"), "E1");
    // DTMF catching needs a notification target: -1, the U still done.
    let u = rp.command("U sub1 127.0.0.1 5000 ft && M3:1 tag 101");
    let (port, tail) = u.split_once(' ').expect("PORT ...");
    assert!(port.parse::<u16>().is_ok(), "{u}");
    assert!(tail.ends_with(" && -1"), "{u}");
    assert_eq!(rp.command("Gv nsess_created"), "nsess_created=1");
    // A bad M3:1 argument is -1 too, not E1.
    let u = rp.command("U sub1 127.0.0.1 5000 ft && M3:1 tag 300");
    assert!(u.ends_with(" && -1"), "{u}");
}

#[test]
fn q_then_d_deletes_the_queried_stream() {
    let rp = daemon(&[]);
    let call = setup_call(&rp, "qd1");
    exchange(&call, 1, 2);
    let q = rp.command("Q qd1 ftag;1 ttag;1 && D");
    let fields: Vec<&str> = q.split(' ').collect();
    assert_eq!(fields.len(), 5, "{q}");
    assert_eq!(fields[1..], ["2", "2", "4", "0"]);
    assert_eq!(rp.command("Gv nsess_active"), "nsess_active=0");
    assert_eq!(rp.command("Q qd1 ftag;1 ttag;1 && D"), "E8");
    assert_eq!(rp.command("Q qd1 ftag;1 ttag;1 && D x"), "E1");
    // A weakly held stream survives: the query answers, the D says -1.
    rp.command("Uw qd2 127.0.0.1 5000 ft");
    let q = rp.command("Qv qd2 ft tt nrelayed && D");
    assert_eq!(q, "nrelayed=0 && -1");
    assert_eq!(rp.command("Gv nsess_active"), "nsess_active=1");
}

#[test]
fn vf_answers_exactly_what_is_built() {
    let rp = daemon(&[]);
    for stamp in [
        "20040107", "20050322", "20060704", "20071116", "20071218", "20080403", "20081102",
        "20090810", "20140323", "20140617", "20141004", "20150330", "20150420", "20150617",
        "20191015", "20200226", "20230205", "20230314",
    ] {
        assert_eq!(rp.command(&format!("VF {stamp}")), "1", "{stamp}");
    }
    // Without -n; OpenSIPS's TTL probe; 3.x's later ones; nonsense.
    for stamp in [
        "20081224", "20170313", "20230424", "20250523", "20260306", "2015", "x",
    ] {
        assert_eq!(rp.command(&format!("VF {stamp}")), "0", "{stamp}");
    }
}
