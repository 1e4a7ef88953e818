//! Operator extras: retransmit-safe UDP commands and the `G` counters.
//! Control ports 22460-22479, media 19600-19799.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{reply_addr, rtp_packet, Peer, Rtpproxy};

fn raw(sock: &UdpSocket, to: &str, msg: &str) -> String {
    sock.send_to(msg.as_bytes(), to).expect("send");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("reply");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

#[test]
fn retransmitted_commands_are_answered_from_the_cache() {
    let rp = Rtpproxy::start(&[
        "-s",
        "udp:127.0.0.1:22460",
        "-l",
        "127.0.0.1",
        "-m",
        "19600",
        "-M",
        "19699",
    ]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = "127.0.0.1:22460";
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
    let g = rp.command("G ncmds_repld");
    assert_eq!(g, "ncmds_repld=2", "{}", rp.log());
}

#[test]
fn g_reports_counters() {
    let rp = Rtpproxy::start(&[
        "-s",
        "udp:127.0.0.1:22461",
        "-l",
        "127.0.0.1",
        "-m",
        "19700",
        "-M",
        "19799",
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
    let g = rp.command("G nsess_created nsess_active npkts_rcvd npkts_relayed npkts_discard");
    assert_eq!(
        g,
        "nsess_created=1 nsess_active=1 npkts_rcvd=11 npkts_relayed=10 npkts_discard=1"
    );
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
    let errs = rp.command("G ncmds_errs");
    assert_eq!(errs, "ncmds_errs=1");
}

#[test]
fn drain_keeps_calls_refuses_new_ones_and_exits_when_done() {
    let mut rp = Rtpproxy::start(&[
        "-s",
        "udp:127.0.0.1:22462",
        "-l",
        "127.0.0.1",
        "-m",
        "19800",
        "-M",
        "19899",
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
        s.send_to(format!("v{i} V").as_bytes(), "127.0.0.1:22462")
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
    s.send_to(b"n1 U dr2 127.0.0.1 5000 ft", "127.0.0.1:22462")
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
