//! The per-packet observers over the real sockets: the RTP analysis of
//! what each party sends, summed into the `rtpa_*` counters of `G` when a
//! session ends. DTMF catching is turned on by a sub-command of `U`/`L`;
//! on the packet path it is covered by the unit tests of `rtpp_proc`.
//!
//! Each test gets its UDP control port and media range from
//! `common::ports`.

mod common;

use common::{port, ports, reply_addr, rtp_packet, udp, Peer};

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
    let caller = Peer::new("127.0.0.1");
    let callee = Peer::new("127.0.0.1");
    let u = rp.command(&format!("U obs1 127.0.0.1 {} ftag", caller.port()));
    let l = rp.command(&format!("L obs1 127.0.0.1 {} ftag ttag", callee.port()));
    let (to_callee_leg, to_caller_leg) = (reply_addr(&u, "127.0.0.1"), reply_addr(&l, "127.0.0.1"));

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
    // Plain G lists them after the classic counters.
    let all = rp.command("G");
    assert!(all.ends_with(&rtpa(30, 29, 1, 1, 2)), "{all}");
    let names: Vec<&str> = all.split(' ').filter_map(|p| p.split('=').next()).collect();
    let want = [
        "nlog_dropped",
        "rtpa_nsent",
        "rtpa_nrcvd",
        "rtpa_ndups",
        "rtpa_nlost",
        "rtpa_perrs",
    ];
    assert_eq!(names[names.len() - want.len()..], want, "{all}");
    // Without v, G answers the values only.
    let values = rp.command("G rtpa_nlost rtpa_perrs");
    assert_eq!(values, "1 2");
}
