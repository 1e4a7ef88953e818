//! Operator extras: retransmit-safe UDP commands, the `G` counters,
//! graceful drain and the `-A` accounting file.
//! Control ports and media ranges come from `common::ports`.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{parse_flat_json, port, ports, reply_addr, rtp_packet, Json, Peer, Rtpproxy, TempDir};

fn raw(sock: &UdpSocket, to: &str, msg: &str) -> String {
    sock.send_to(msg.as_bytes(), to).expect("send");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("reply");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

#[test]
fn retransmitted_commands_are_answered_from_the_cache() {
    let control = port();
    let spec = format!("udp:127.0.0.1:{control}");
    let (m, mm) = ports(100).range();
    let rp = Rtpproxy::start(&[
        "-s",
        &spec,
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
    ]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = &format!("127.0.0.1:{control}");
    let first = raw(&s, to, "c1 U rt1 127.0.0.1 5000 ft");
    let again = raw(&s, to, "c1 U rt1 127.0.0.1 5000 ft");
    assert_eq!(first, again);
    assert!(rp.command("I").contains("sessions created: 1"));
    assert_eq!(raw(&s, to, "c2 D rt1 ft"), "c2 0");
    // The repeated D must not turn into E8.
    assert_eq!(raw(&s, to, "c2 D rt1 ft"), "c2 0");
    // A new cookie is a new command.
    assert_eq!(raw(&s, to, "c3 D rt1 ft"), "c3 E8");
    // The same cookie from another sender is another command too.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(raw(&other, to, "c2 D rt1 ft"), "c2 E8");
    // Answered from the cache: counted as duplicates, and as replies. The
    // G itself is received but not yet answered when it counts.
    let g = rp.command("G ncmds_rcvd_ndups ncmds_rcvd ncmds_repld");
    let v: Vec<u64> = g.split(' ').filter_map(|n| n.parse().ok()).collect();
    assert_eq!(v.len(), 3, "{g}");
    assert_eq!(v[0], 2, "{g}");
    assert_eq!(v[2], v[1] - 1 + v[0], "{g}");
}

#[test]
fn g_reports_counters() {
    let control = port();
    let spec = format!("udp:127.0.0.1:{control}");
    let (m, mm) = ports(100).range();
    let rp = Rtpproxy::start(&[
        "-s",
        &spec,
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
    ]);
    assert_eq!(rp.command("VF 20141004"), "1");
    let caller = Peer::new("127.0.0.1");
    let callee = Peer::new("127.0.0.1");
    let u = rp.command(&format!("U g1 127.0.0.1 {} ft", caller.port()));
    let l = rp.command(&format!("L g1 127.0.0.1 {} ft tt", callee.port()));
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "127.0.0.1"), reply_addr(&l, "127.0.0.1"));
    for i in 0..5 {
        caller.send(to_caller_leg, &rtp_packet(i, 0));
        assert!(callee.recv().is_some());
        callee.send(to_callee_leg, &rtp_packet(i, 0));
        assert!(caller.recv().is_some());
    }
    Peer::new("127.0.0.1").send(to_caller_leg, b"stranger");
    std::thread::sleep(Duration::from_millis(100));
    let g = rp.command("Gv nsess_created nsess_active npkts_rcvd npkts_relayed npkts_discard");
    assert_eq!(
        g,
        "nsess_created=1 nsess_active=1 npkts_rcvd=11 npkts_relayed=10 npkts_discard=1"
    );
    // Without v, the values alone, in the order asked (3.x's G).
    assert_eq!(rp.command("G npkts_discard nsess_created"), "1 1");
    rp.command("D g1 ft");
    let all = rp.command("G");
    for want in [
        "nsess_destroyed=1",
        "npkts_relayed=10",
        "ncmds_errs=0",
        "nsess_active=0",
    ] {
        assert!(all.split(' ').any(|kv| kv == want), "{want} in {all}");
    }
    assert_eq!(rp.command("G no_such_counter"), "E1");
    let errs = rp.command("Gv ncmds_errs");
    assert_eq!(errs, "ncmds_errs=1");
}

#[test]
fn drain_keeps_calls_refuses_new_ones_and_exits_when_done() {
    let control = port();
    let spec = format!("udp:127.0.0.1:{control}");
    let (m, mm) = ports(100).range();
    let mut rp = Rtpproxy::start(&[
        "-s",
        &spec,
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-d",
        "INFO",
    ]);
    let caller = Peer::new("127.0.0.1");
    let callee = Peer::new("127.0.0.1");
    let u = rp.command(&format!("U dr1 127.0.0.1 {} ft", caller.port()));
    let l = rp.command(&format!("L dr1 127.0.0.1 {} ft tt", callee.port()));
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "127.0.0.1"), reply_addr(&l, "127.0.0.1"));
    common::signal(rp.pid(), "USR1");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Wait until the signal is seen: V then fails so the proxy keeps away.
    let mut buf = [0u8; 256];
    let mut draining = false;
    for i in 0..100 {
        s.send_to(format!("v{i} V").as_bytes(), ("127.0.0.1", control))
            .unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).ends_with("E15\n") {
                draining = true;
                break;
            }
        }
        // A loopback round trip takes microseconds: pace the probes so
        // that the signal's delivery, not their count, ends the wait.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(draining, "{}", rp.log());
    // A new session gets no reply at all, so Kamailio tries another relay.
    s.send_to(b"n1 U dr2 127.0.0.1 5000 ft", ("127.0.0.1", control))
        .unwrap();
    assert!(
        s.recv(&mut buf).is_err(),
        "new session answered while draining"
    );
    // The running call and every command about it keep working.
    for i in 0..50 {
        caller.send(to_caller_leg, &rtp_packet(i, 0));
        callee.send(to_callee_leg, &rtp_packet(i, 0));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(callee.drain(200), 50, "no packet lost while draining");
    assert_eq!(caller.drain(50), 50);
    assert!(rp.command("Q dr1 ft").ends_with(" 100 0"));
    assert_eq!(
        reply_addr(
            &rp.command(&format!("L dr1 127.0.0.1 {} ft tt", callee.port())),
            "127.0.0.1"
        ),
        to_caller_leg
    );
    assert!(rp.alive());
    // The last session ends: the daemon exits by itself.
    assert_eq!(rp.command("D dr1 ft tt"), "0");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rp.alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(rp.log().contains("drained"), "{}", rp.log());
}

fn num(rec: &BTreeMap<String, Json>, key: &str) -> f64 {
    match rec.get(key) {
        Some(Json::Num(n)) => *n,
        other => panic!("{key}: {other:?} in {rec:?}"),
    }
}

fn text(rec: &BTreeMap<String, Json>, key: &str) -> String {
    match rec.get(key) {
        Some(Json::Str(s)) => s.clone(),
        other => panic!("{key}: {other:?} in {rec:?}"),
    }
}

/// Reads the accounting file until it holds `lines` lines (bounded).
fn wait_for_lines(path: &std::path::Path, lines: usize, rp: &Rtpproxy) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let got: Vec<String> = text.lines().map(String::from).collect();
        if got.len() >= lines {
            assert!(text.ends_with('\n'), "partial line in {text:?}");
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {lines} accounting lines:\n{text}\n{}",
            got.len(),
            rp.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn accounting_file_gets_one_json_line_per_ended_session() {
    let dir = TempDir::new("acct");
    let file = dir.path().join("calls.json");
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let control = port();
    let spec = format!("udp:127.0.0.1:{control}");
    let (m, mm) = ports(50).range();
    let rp = Rtpproxy::start(&[
        "-s",
        &spec,
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-T",
        "2",
        "-A",
        file.to_str().unwrap(),
    ]);
    // A Call-ID with a quote, a backslash and a byte that is not UTF-8.
    let call_id: &[u8] = b"acct\"1\\\xff@host";
    let caller = Peer::new("127.0.0.1");
    let callee = Peer::new("127.0.0.1");
    let cmd = |verb: &str, rest: String| {
        let mut c = verb.as_bytes().to_vec();
        c.extend_from_slice(call_id);
        c.extend_from_slice(rest.as_bytes());
        rp.command_bytes(&c)
    };
    let u = cmd("U ", format!(" 127.0.0.1 {} ft", caller.port()));
    let l = cmd("L ", format!(" 127.0.0.1 {} ft tt", callee.port()));
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "127.0.0.1"), reply_addr(&l, "127.0.0.1"));
    for i in 0..5 {
        caller.send(to_caller_leg, &rtp_packet(i, 0));
        assert!(callee.recv().is_some());
    }
    for i in 0..4 {
        callee.send(to_callee_leg, &rtp_packet(i, 0));
        assert!(caller.recv().is_some());
    }
    // The created file is not world-readable.
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o007, 0, "mode {mode:o}");
    assert!(
        std::fs::read_to_string(&file).unwrap().is_empty(),
        "a record before the call ended"
    );
    assert_eq!(cmd("D ", " ft tt".into()), "0");
    let lines = wait_for_lines(&file, 1, &rp);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let rec = parse_flat_json(&lines[0]).unwrap_or_else(|e| panic!("{e}: {}", lines[0]));
    assert_eq!(text(&rec, "call_id"), "acct\"1\\\u{ff}@host");
    assert_eq!(text(&rec, "from_tag"), "ft");
    assert_eq!(text(&rec, "to_tag"), "tt");
    assert_eq!(text(&rec, "reason"), "deleted");
    for (key, want) in [
        ("port_caller", f64::from(to_caller_leg.port())),
        ("port_callee", f64::from(to_callee_leg.port())),
        ("rtp_caller_packets", 5.0),
        ("rtp_caller_bytes", 5.0 * 172.0),
        ("rtp_callee_packets", 4.0),
        ("rtp_callee_bytes", 4.0 * 172.0),
        ("rtcp_caller_packets", 0.0),
        ("rtcp_callee_bytes", 0.0),
        ("relayed", 9.0),
        ("dropped", 0.0),
        ("lost_caller", 0.0),
        ("lost_callee", 0.0),
    ] {
        assert_eq!(num(&rec, key), want, "{key} in {}", lines[0]);
    }
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = num(&rec, "start");
    let duration = num(&rec, "duration");
    assert!(
        start >= before.as_secs_f64() - 0.01 && start <= after.as_secs_f64(),
        "start {start} not between {before:?} and {after:?}"
    );
    assert!(duration >= 0.0 && start + duration <= after.as_secs_f64() + 0.01);
    // The classic 20 and 18 quality figures per direction
    // (tests/quality.rs checks those).
    assert_eq!(rec.len(), 20 + 2 * 18, "{rec:?}");

    // A session nobody deletes ends by timeout, and is accounted too.
    let u = rp.command(&format!("U acct2 127.0.0.1 {} ft2", caller.port()));
    caller.send(reply_addr(&u, "127.0.0.1"), &rtp_packet(7, 0));
    let lines = wait_for_lines(&file, 2, &rp);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let rec = parse_flat_json(&lines[1]).unwrap_or_else(|e| panic!("{e}: {}", lines[1]));
    assert_eq!(text(&rec, "call_id"), "acct2");
    assert_eq!(rec.get("to_tag"), Some(&Json::Null));
    assert_eq!(text(&rec, "reason"), "timeout");
    assert_eq!(
        num(&rec, "port_caller"),
        0.0,
        "the caller's leg was never opened"
    );
    assert!(num(&rec, "duration") >= 2.0, "{}", lines[1]);
    assert!(
        rp.log().contains("session ended (Timeout): call_id=acct2"),
        "{}",
        rp.log()
    );
}

#[test]
fn accounting_file_errors_at_start_up_and_at_write() {
    let control = port();
    let spec = format!("udp:127.0.0.1:{control}");
    let (m, mm) = ports(50).range();
    let err = match Rtpproxy::try_start(&[
        "-s",
        &spec,
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-A",
        "/nonexistent-rtpp-dir/calls.json",
    ]) {
        Ok(_) => panic!("a daemon started with -A in a missing directory"),
        Err(e) => e,
    };
    assert!(err.contains("invalid value for -A"), "{err}");

    // Every write to /dev/full fails: logged once, then the file is given
    // up and the daemon keeps relaying and logging each call.
    let control = port();
    let spec = format!("udp:127.0.0.1:{control}");
    let (m, mm) = ports(50).range();
    let rp = Rtpproxy::start(&[
        "-s",
        &spec,
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-d",
        "INFO",
        "-A",
        "/dev/full",
    ]);
    for n in 0..2 {
        rp.command(&format!("U full{n} 127.0.0.1 5000 ft"));
        assert_eq!(rp.command(&format!("D full{n} ft")), "0");
    }
    assert_eq!(rp.command("V"), "20040107");
    let log = rp.log();
    assert_eq!(log.matches("accounting file /dev/full").count(), 1, "{log}");
    assert_eq!(log.matches("session ended (Deleted)").count(), 2, "{log}");
}
