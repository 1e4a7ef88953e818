//! HEP to Homer through the real daemon on loopback (rtpproxy(8), "HEP"):
//! `--hep udp:HOST:PORT/ID --hep-rtcp` sends each RTCP SR/RR a party sends
//! as Homer's RTCP JSON (type 5) and, when the session ends, one quality
//! report per direction (type 34), correlated by the Call-ID; a collector
//! that is not there costs the call nothing and shows in `G`.
//!
//! What arrives is written into a PCAP file and decoded by tshark, with
//! `tests/hep/hep.lua` as the HEP dissector (Wireshark 4.0 has none of its
//! own) and tshark's JSON dissector for the payloads. tshark is installed
//! by `tests/run.sh`; without it the test fails with one line naming the
//! package.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{parse_flat_json, port, ports, reply_addr, rtp_packet, udp, Json, Peer, TempDir};
use rtpproxy::rtpp_record::{RecordFile, RecordFormat};

/// One party: its RTP socket and its RTCP socket on the port above.
struct Party {
    rtp: Peer,
    rtcp: Peer,
}

impl Party {
    /// Binds an RTP/RTCP pair of this binary's port share.
    fn new() -> Party {
        let block = ports(2);
        let at = |p: u16| Peer::at(&format!("127.0.0.1:{p}")).expect("bind a port of the share");
        Party {
            rtp: at(block.first),
            rtcp: at(block.first + 1),
        }
    }
}

/// The RTCP address of a relay leg whose RTP address is `rtp`.
fn rtcp_of(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port() + 1)
}

/// A call between two parties: `U` from the caller, `L` from the callee.
/// Returns the relay addresses (where the caller sends, where the callee
/// sends).
fn set_up(
    rp: &common::Rtpproxy,
    call_id: &str,
    caller: &Party,
    callee: &Party,
) -> (SocketAddr, SocketAddr) {
    let u = rp.command(&format!(
        "U {call_id} 127.0.0.1 {} ftag;1",
        caller.rtp.port()
    ));
    let l = rp.command(&format!(
        "L {call_id} 127.0.0.1 {} ftag;1 ttag;1",
        callee.rtp.port()
    ));
    (reply_addr(&l, "127.0.0.1"), reply_addr(&u, "127.0.0.1"))
}

/// Sends `n` RTP packets from `from` to the relay at `to`, and checks that
/// every one reaches `other`.
fn relay_rtp(from: &Peer, to: SocketAddr, n: u16, other: &Peer) {
    for seq in 1..=n {
        from.send(to, &rtp_packet(seq, 0));
    }
    let got = (0..n).filter(|_| other.recv_within(1000).is_some()).count();
    assert_eq!(got, usize::from(n), "RTP lost on the way");
}

/// An SR of `ssrc` with one report block about `about`, 8 words.
fn sender_report(ssrc: u32, about: u32) -> Vec<u8> {
    let mut p = vec![0x81, 200, 0, 12];
    for w in [
        ssrc,
        3_900_000_000,
        0x8000_0000,
        3200,
        20,
        3440,
        about,
        0x0500_0002,
    ] {
        p.extend(w.to_be_bytes());
    }
    for w in [1020u32, 12, 0x1234_5678, 6554] {
        p.extend(w.to_be_bytes());
    }
    p
}

/// An RR of `ssrc` with one report block about `about`.
fn receiver_report(ssrc: u32, about: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    for w in [ssrc, about, 0, 15, 3, 0, 0] {
        p.extend(w.to_be_bytes());
    }
    p
}

/// An SDES with a CNAME, to follow a report in a compound packet.
fn sdes(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 202, 0, 3];
    p.extend(ssrc.to_be_bytes());
    p.extend([1, 4, b'h', b'o', b's', b't', 0, 0]);
    p
}

/// Sends RTCP from a party to the relay and checks that it is relayed.
fn relay_rtcp(from: &Peer, to: SocketAddr, packet: &[u8], other: &Peer) {
    from.send(to, packet);
    let (got, _) = other.recv_within(1000).expect("RTCP relayed");
    assert_eq!(got, packet);
}

/// Datagrams arriving at `collector` until `n` came and then nothing for
/// 300 ms (a surplus would show), or 5 s passed.
fn collect(collector: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let wait = if got.len() >= n { 300 } else { 200 };
        collector
            .set_read_timeout(Some(Duration::from_millis(wait)))
            .expect("timeout");
        match collector.recv_from(&mut buf) {
            Ok((len, from)) => got.push((buf[..len].to_vec(), from)),
            Err(_) if got.len() >= n => break,
            Err(_) => {}
        }
    }
    got
}

/// Writes the datagrams into a PCAP file as UDP from the daemon to `to`.
fn write_pcap(path: &Path, datagrams: &[(Vec<u8>, SocketAddr)], to: SocketAddr) {
    let dir = path.parent().expect("dir");
    let name = path.file_name().and_then(|n| n.to_str()).expect("name");
    let mut file = RecordFile::create(dir, None, name, RecordFormat::Pcap).expect("pcap");
    for (d, from) in datagrams {
        file.write_packet(*from, to, SystemTime::now(), d)
            .expect("pcap write");
    }
    file.finish().expect("pcap finish");
}

/// What tshark's HEP dissector makes of one datagram.
#[derive(Debug)]
struct Decoded {
    version: String,
    proto_type: u8,
    capture_id: u32,
    correlation_id: String,
    src_port: u16,
    dst_port: u16,
    /// The payload, as the dissector delimited it.
    payload: String,
    /// `json.path_with_value` of every JSON value tshark found in it.
    json: String,
    /// The dissector's errors (lengths) and tshark's expert notes.
    errors: String,
}

const FIELDS: [&str; 10] = [
    "hep.version",
    "hep.proto_type",
    "hep.capture_id",
    "hep.correlation_id",
    "hep.src_port",
    "hep.dst_port",
    "hep.payload",
    "json.path_with_value",
    "hep.error",
    "_ws.expert.message",
];

/// Decodes a PCAP file of HEP datagrams to `port` with tshark.
fn tshark_hep(file: &Path, port: u16) -> Vec<Decoded> {
    let lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hep/hep.lua");
    let mut cmd = Command::new("tshark");
    cmd.arg("-X")
        .arg(format!("lua_script:{}", lua.display()))
        .arg("-r")
        .arg(file)
        .args(["-d", &format!("udp.port=={port},hep"), "-T", "fields"])
        .args([
            "-E",
            "separator=\t",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
        ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("tshark is not installed: apt-get install tshark")
        }
        Err(e) => panic!("running tshark: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), FIELDS.len(), "{line:?} ({stderr})");
            let hex = f[6].replace(':', "");
            let payload: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                .collect();
            Decoded {
                version: f[0].to_string(),
                proto_type: f[1].parse().unwrap_or_else(|_| panic!("{line:?}")),
                capture_id: f[2].parse().unwrap_or_else(|_| panic!("{line:?}")),
                correlation_id: f[3].to_string(),
                src_port: f[4].parse().unwrap_or_else(|_| panic!("{line:?}")),
                dst_port: f[5].parse().unwrap_or_else(|_| panic!("{line:?}")),
                payload: String::from_utf8(payload).expect("UTF-8 payload"),
                json: f[7].to_string(),
                errors: format!("{}{}", f[8], f[9]),
            }
        })
        .collect()
}

fn num(report: &std::collections::BTreeMap<String, Json>, key: &str) -> f64 {
    match report.get(key) {
        Some(Json::Num(n)) => *n,
        other => panic!("{key}: {other:?} in {report:?}"),
    }
}

fn text<'a>(report: &'a std::collections::BTreeMap<String, Json>, key: &str) -> &'a str {
    match report.get(key) {
        Some(Json::Str(s)) => s,
        other => panic!("{key}: {other:?} in {report:?}"),
    }
}

#[test]
fn rtcp_and_quality_reports_decode_as_hep_with_the_call_id() {
    let hep_port = port();
    let collector = UdpSocket::bind(("127.0.0.1", hep_port)).expect("collector");
    let target = format!("udp:127.0.0.1:{hep_port}/77");
    let rp = udp(port(), ports(20).range(), &["--hep", &target, "--hep-rtcp"]);
    let call_id = "hep-1@127.0.0.1";
    let (caller, callee) = (Party::new(), Party::new());
    let (to_caller_leg, to_callee_leg) = set_up(&rp, call_id, &caller, &callee);
    relay_rtp(&caller.rtp, to_caller_leg, 20, &callee.rtp);
    relay_rtp(&callee.rtp, to_callee_leg, 15, &caller.rtp);
    let (caller_leg_rtcp, callee_leg_rtcp) = (rtcp_of(to_caller_leg), rtcp_of(to_callee_leg));
    relay_rtcp(
        &caller.rtcp,
        caller_leg_rtcp,
        &sender_report(1, 2),
        &callee.rtcp,
    );
    relay_rtcp(
        &callee.rtcp,
        callee_leg_rtcp,
        &receiver_report(2, 1),
        &caller.rtcp,
    );
    let compound = [sender_report(1, 2), sdes(1)].concat();
    relay_rtcp(&caller.rtcp, caller_leg_rtcp, &compound, &callee.rtcp);
    // Not RTCP that Homer can show: relayed, not mirrored, counted.
    relay_rtcp(
        &caller.rtcp,
        caller_leg_rtcp,
        b"\x81\xc8\x00\x01junk",
        &callee.rtcp,
    );
    assert_eq!(rp.command(&format!("D {call_id} ftag;1 ttag;1")), "0");

    let got = collect(&collector, 5);
    assert_eq!(got.len(), 5, "3 RTCP and 2 reports: {got:?}\n{}", rp.log());
    assert_eq!(rp.command("G nhep_sent nhep_dropped"), "5 1");
    let dir = TempDir::new("hep-pcap");
    let pcap = dir.join("hep.pcap");
    write_pcap(&pcap, &got, collector.local_addr().expect("addr"));
    let decoded = tshark_hep(&pcap, hep_port);
    assert_eq!(decoded.len(), 5);
    for d in &decoded {
        assert_eq!((d.version.as_str(), d.capture_id), ("3", 77), "{d:?}");
        assert_eq!(d.correlation_id, call_id, "{d:?}");
        assert!(d.errors.is_empty(), "{d:?}");
        assert!(!d.json.is_empty(), "tshark found no JSON: {d:?}");
    }
    let rtcp: Vec<&Decoded> = decoded.iter().filter(|d| d.proto_type == 5).collect();
    let reports: Vec<&Decoded> = decoded.iter().filter(|d| d.proto_type == 34).collect();
    assert_eq!((rtcp.len(), reports.len()), (3, 2), "{decoded:#?}");
    check_rtcp(
        &rtcp,
        (&caller, &callee),
        (caller_leg_rtcp, callee_leg_rtcp),
    );
    check_reports(&reports, (&caller, &callee), (to_caller_leg, to_callee_leg));
}

/// The RTCP mirrored: the caller's SR, the callee's RR, the caller's SR of
/// the compound packet, each from the party to the relay's RTCP socket.
fn check_rtcp(
    rtcp: &[&Decoded],
    (caller, callee): (&Party, &Party),
    legs: (SocketAddr, SocketAddr),
) {
    let from_caller = (caller.rtcp.port(), legs.0.port());
    let from_callee = (callee.rtcp.port(), legs.1.port());
    let flows: Vec<(u16, u16)> = rtcp.iter().map(|d| (d.src_port, d.dst_port)).collect();
    assert_eq!(flows, [from_caller, from_callee, from_caller]);
    for (d, ty) in rtcp.iter().zip([200, 201, 200]) {
        for want in [
            format!("/type:{ty}"),
            "/report_blocks/[]/source_ssrc:".to_string(),
            "/report_count:1".to_string(),
        ] {
            assert!(d.json.contains(&want), "{want} in {d:?}");
        }
        assert_eq!(
            d.json.contains("/sender_information/packets:20"),
            ty == 200,
            "{d:?}"
        );
        // tshark's JSON dissector finds nothing in JSON it cannot parse,
        // and every value where it can: 10 of an RR, 5 more of an SR.
        let values = if ty == 200 { 15 } else { 10 };
        assert_eq!(d.json.split('|').count(), values, "{d:?}");
        assert!(
            d.payload.starts_with('{') && d.payload.ends_with('}'),
            "{d:?}"
        );
    }
}

/// The two end-of-stream reports: flat JSON, one per direction, with what
/// each party sent.
fn check_reports(
    reports: &[&Decoded],
    (caller, callee): (&Party, &Party),
    legs: (SocketAddr, SocketAddr),
) {
    for d in reports {
        let r = parse_flat_json(&d.payload).unwrap_or_else(|e| panic!("{e}: {}", d.payload));
        let (party, leg, packets, rtcp, dir) = match text(&r, "SENDER") {
            "caller" => (caller, legs.0, 20.0, 3.0, 0.0),
            "callee" => (callee, legs.1, 15.0, 1.0, 1.0),
            other => panic!("sender {other}"),
        };
        assert_eq!((d.src_port, d.dst_port), (party.rtp.port(), leg.port()));
        assert_eq!(text(&r, "CORRELATION_ID"), "hep-1@127.0.0.1");
        assert_eq!(text(&r, "FROM_TAG"), "ftag;1");
        assert_eq!(text(&r, "TO_TAG"), "ttag;1");
        assert_eq!(
            (text(&r, "TYPE"), text(&r, "REASON")),
            ("HANGUP", "deleted")
        );
        assert_eq!(text(&r, "SRC_IP"), "127.0.0.1");
        assert_eq!(num(&r, "SRC_PORT"), f64::from(party.rtp.port()));
        assert_eq!(num(&r, "DST_PORT"), f64::from(leg.port()));
        assert_eq!(num(&r, "DIR"), dir);
        assert_eq!(num(&r, "TOTAL_PK"), packets);
        assert_eq!(num(&r, "EXPECTED_PK"), packets);
        assert_eq!(num(&r, "PACKET_LOSS"), 0.0);
        // The quality meter's figures: a score, the codec, no reordering.
        let mos = num(&r, "MOS");
        assert!((1.0..=4.5).contains(&mos), "{r:?}");
        assert_eq!((num(&r, "CODEC_PT"), num(&r, "OUT_ORDER")), (0.0, 0.0));
        assert_eq!(num(&r, "TL_BYTE"), packets * 172.0);
        assert_eq!(num(&r, "RTCP_PK"), rtcp);
        assert!(
            num(&r, "DURATION") > 0.0 && num(&r, "START_TS") > 1.6e9,
            "{r:?}"
        );
    }
}

#[test]
fn a_missing_collector_costs_the_call_nothing_and_shows_in_g() {
    // A port of the share that nothing listens on.
    let hep_port = port();
    let target = format!("udp:127.0.0.1:{hep_port}");
    let rp = udp(port(), ports(20).range(), &["--hep", &target, "--hep-rtcp"]);
    let (caller, callee) = (Party::new(), Party::new());
    let (to_caller_leg, to_callee_leg) = set_up(&rp, "hep-2", &caller, &callee);
    for round in 0..5u32 {
        relay_rtp(&caller.rtp, to_caller_leg, 20, &callee.rtp);
        relay_rtp(&callee.rtp, to_callee_leg, 20, &caller.rtp);
        let sr = sender_report(1, 2);
        relay_rtcp(&caller.rtcp, rtcp_of(to_caller_leg), &sr, &callee.rtcp);
        let rr = receiver_report(2, round);
        relay_rtcp(&callee.rtcp, rtcp_of(to_callee_leg), &rr, &caller.rtcp);
    }
    assert_eq!(rp.command("D hep-2 ftag;1 ttag;1"), "0");
    let counts = rp.command("G nhep_sent nhep_dropped");
    let n: Vec<u64> = counts
        .split(' ')
        .map(|v| v.parse().expect("count"))
        .collect();
    // 10 RTCP and 2 reports; each ICMP port unreachable fails the next send.
    assert_eq!(n[0] + n[1], 12, "{counts}");
    assert!(n[1] >= 5, "dropped: {counts}");
    assert_eq!(rp.command("G npkts_discard"), "0");
}
