//! Prompt playback (`P`, `S`) driven over the real sockets on loopback:
//! what reaches the party (payload bytes, RTP framing, source port), the
//! pace, codec choice, media held back while a prompt plays, and players
//! ending with their session.
//!
//! Each test gets its UDP control port and media range (twenty ports) from
//! `common::ports`.

mod common;

use common::{port, ports, udp};

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{reply_addr, rtp_packet, Call, Peer, Rtpproxy, TempDir};

const MAKEANN: &str = env!("CARGO_BIN_EXE_makeann");

/// Bytes of one 10 ms G.711 packet.
const G711_FRAME: usize = 80;

/// `U{u_mods}` from the caller, `L{l_mods}` from the callee, then one
/// packet each way so both parties are latched and the path is known good.
fn setup_call(rp: &Rtpproxy, call_id: &str, u_mods: &str, l_mods: &str) -> Call {
    let call = Call::setup(rp, call_id, u_mods, l_mods, ("ftag;1", "ttag;1"));
    assert_relays(&call, 1);
    call
}

/// One packet caller -> callee and one back, each from the right relay port.
fn assert_relays(call: &Call, seq: u16) {
    let p = rtp_packet(seq, 0);
    call.caller.send(call.to_caller_leg, &p);
    let (got, from) = call.callee.recv().expect("callee got nothing");
    assert_eq!((got, from), (p, call.to_callee_leg));
    let q = rtp_packet(seq.wrapping_add(1000), 0);
    call.callee.send(call.to_callee_leg, &q);
    let (got, from) = call.caller.recv().expect("caller got nothing");
    assert_eq!((got, from), (q, call.to_caller_leg));
}

/// An RTP packet as the test reads it, independently of the daemon's parser.
#[derive(Debug)]
struct Rtp {
    marker: bool,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

fn parse_rtp(p: &[u8]) -> Rtp {
    assert!(p.len() >= 12, "short packet: {p:?}");
    assert_eq!(p[0], 0x80, "not plain RTP v2 (no padding/extension/CSRC)");
    Rtp {
        marker: p[1] & 0x80 != 0,
        payload_type: p[1] & 0x7f,
        seq: u16::from_be_bytes([p[2], p[3]]),
        timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        payload: p[12..].to_vec(),
    }
}

/// Receives exactly `n` packets (each within `gap_ms` of the previous),
/// checking that every one comes from `relay`.
fn receive(peer: &Peer, n: usize, relay: SocketAddr, gap_ms: u64) -> Vec<Rtp> {
    (0..n)
        .map(|i| {
            let (p, from) = peer
                .recv_within(gap_ms)
                .unwrap_or_else(|| panic!("prompt packet {i} of {n} did not arrive"));
            assert_eq!(
                from, relay,
                "packet {i} must come from the party's relay port"
            );
            parse_rtp(&p)
        })
        .collect()
}

/// Checks the framing of one played stream: the marker on the first packet
/// only, consecutive sequence numbers, timestamps advancing by the samples
/// of a packet, one SSRC, one payload type. Returns the payload bytes.
fn check_stream(packets: &[Rtp], payload_type: u8, samples: u32) -> Vec<u8> {
    let first = &packets[0];
    let mut bytes = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let k = i as u32;
        assert_eq!(p.marker, i == 0, "marker on packet {i}");
        assert_eq!(p.payload_type, payload_type, "payload type of packet {i}");
        assert_eq!(p.ssrc, first.ssrc, "SSRC of packet {i}");
        assert_eq!(p.seq, first.seq.wrapping_add(i as u16), "seq of packet {i}");
        assert_eq!(
            p.timestamp,
            first.timestamp.wrapping_add(k * samples),
            "timestamp of packet {i}"
        );
        bytes.extend_from_slice(&p.payload);
    }
    bytes
}

/// `count` samples of a 440 Hz tone with a slow 3 Hz swell, so that no two
/// packets carry the same bytes.
fn tone(count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| {
            let t = i as f64 / 8000.0;
            let level = 4000.0 + 12000.0 * (t * 3.0 * std::f64::consts::TAU).sin().abs();
            let s = (level * (t * 440.0 * std::f64::consts::TAU).sin()) as i16;
            s.to_le_bytes()
        })
        .collect()
}

/// Runs makeann on raw PCM `pcm`, writing `TEMPLATE.<pt>` in `dir`.
fn makeann(dir: &Path, pcm: &[u8], template: &str, extra: &[&str]) -> PathBuf {
    let input = dir.join(format!("{template}.raw"));
    std::fs::write(&input, pcm).expect("write PCM");
    let out = dir.join(template);
    let status = Command::new(MAKEANN)
        .args(extra)
        .arg(&input)
        .arg(&out)
        .status()
        .expect("run makeann");
    assert!(status.success(), "makeann failed: {status}");
    out
}

/// Writes a hand-made prompt file `NAME.<pt>` and returns the prompt name.
fn hand_made(dir: &Path, name: &str, payload_type: u8, bytes: &[u8]) -> String {
    let prompt = dir.join(name);
    std::fs::write(dir.join(format!("{name}.{payload_type}")), bytes).expect("write prompt");
    prompt.display().to_string()
}

/// `frames` G.711 frames of bytes that differ from packet to packet.
fn pattern(frames: usize, salt: u8) -> Vec<u8> {
    (0..frames * G711_FRAME)
        .map(|i| {
            (i as u8)
                .wrapping_mul(7)
                .wrapping_add(salt ^ (i / G711_FRAME) as u8)
        })
        .collect()
}

/// Numbers of a `Q` reply: TTL, from the named side, from the other, relayed, dropped.
fn query(rp: &Rtpproxy, cmd: &str) -> Vec<u64> {
    let q = rp.command(cmd);
    let f: Vec<u64> = q
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(f.len(), 5, "Q reply {q:?}");
    f
}

#[test]
fn makeann_prompt_plays_twice_to_latched_caller() {
    let dir = TempDir::new("play-makeann");
    // 0.3 s of tone: 30 packets of PCMU per play.
    let prompt = makeann(dir.path(), &tone(2400), "hello", &[]);
    let file = std::fs::read(dir.path().join("hello.0")).expect("makeann wrote hello.0");
    assert_eq!(file.len(), 2400);
    let rp = udp(port(), ports(20).range(), &[]);
    let call = setup_call(&rp, "play1", "", "");

    let started = Instant::now();
    let reply = rp.command(&format!("P2 play1 {} 0,8 ftag;1 ttag;1", prompt.display()));
    assert_eq!(reply, "0");
    let packets = receive(&call.caller, 60, call.to_caller_leg, 500);
    let elapsed = started.elapsed();
    assert_eq!(check_stream(&packets, 0, 80), [file.clone(), file].concat());
    assert!(packets.iter().all(|p| p.payload.len() == G711_FRAME));
    // 60 packets 10 ms apart: the last leaves 590 ms after the first.
    assert!(
        elapsed >= Duration::from_millis(580) && elapsed < Duration::from_millis(900),
        "two plays of 30 packets took {elapsed:?}"
    );
    assert!(
        call.caller.recv_within(300).is_none(),
        "more than two plays arrived"
    );
    // Nothing of the prompt went to the other party.
    assert!(call.callee.recv_within(50).is_none());
    // Once it has finished, media reaches the caller again.
    assert_relays(&call, 50);
    assert_eq!(
        rp.command("Gv nplrs_created nplrs_destroyed npkts_played"),
        "nplrs_created=1 nplrs_destroyed=1 npkts_played=60"
    );
}

#[test]
fn hand_made_prompt_plays_whole_frames_to_callee() {
    let dir = TempDir::new("play-hand");
    let frames = pattern(12, 0x5a);
    // A partial frame at the end is never sent.
    let mut file = frames.clone();
    file.extend_from_slice(&[0xee; 33]);
    let prompt = hand_made(dir.path(), "alaw", 8, &file);
    let rp = udp(port(), ports(20).range(), &[]);
    let call = setup_call(&rp, "play2", "", "");

    // FROMTAG = the callee's tag: the prompt goes to the callee.
    assert_eq!(
        rp.command(&format!("P play2 {prompt} 8 ttag;1 ftag;1")),
        "0"
    );
    let packets = receive(&call.callee, 12, call.to_callee_leg, 500);
    assert_eq!(check_stream(&packets, 8, 80), frames);
    assert!(call.callee.recv_within(200).is_none(), "partial frame sent");
    assert!(call.caller.recv_within(20).is_none());
}

/// A UDP socket whose datagrams carry the kernel's arrival time, so the
/// pace is measured where packets land, not when this thread got to them.
fn stamped_socket() -> UdpSocket {
    use nix::sys::socket::{setsockopt, sockopt};
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    setsockopt(&sock, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    sock
}

/// Next datagram with its kernel arrival time (wall clock).
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, Duration)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn};
    use std::io::IoSliceMut;
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<SockaddrIn>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .ok()?;
    let len = msg.bytes;
    let stamp = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => Some(Duration::from(ts)),
        _ => None,
    })?;
    Some((len, stamp))
}

/// A call whose caller is the timestamping socket; returns the socket.
fn stamped_call(rp: &Rtpproxy, call_id: &str) -> UdpSocket {
    let caller = stamped_socket();
    let port = caller.local_addr().expect("addr").port();
    rp.command(&format!("U {call_id} 127.0.0.1 {port} ftag"));
    rp.command(&format!("L {call_id} 127.0.0.1 4000 ftag ttag"));
    caller
}

/// Receives `n` prompt packets: (sequence number, kernel arrival time).
fn receive_stamped(sock: &UdpSocket, n: usize) -> Vec<(u16, Duration)> {
    let mut buf = [0u8; 2048];
    (0..n)
        .map(|i| {
            let (len, at) = recv_stamped(sock, &mut buf)
                .unwrap_or_else(|| panic!("packet {i} of {n} did not arrive"));
            assert_eq!(len, 12 + G711_FRAME);
            (u16::from_be_bytes([buf[2], buf[3]]), at)
        })
        .collect()
}

/// Deviation in microseconds of each packet from its slot on the 10 ms
/// grid, `origin + N x 10 ms`, checking the sequence numbers on the way.
/// The origin is where the grid lies for most packets (the median offset),
/// so that one late packet 0 does not shift every slot.
fn deviations(packets: &[(u16, Duration)]) -> Vec<i64> {
    let seq0 = packets[0].0;
    let offsets: Vec<i64> = packets
        .iter()
        .enumerate()
        .map(|(n, &(seq, at))| {
            assert_eq!(seq, seq0.wrapping_add(n as u16), "packet {n} out of order");
            at.as_micros() as i64 - n as i64 * 10_000
        })
        .collect();
    let origin = median(&offsets);
    offsets.iter().map(|o| o - origin).collect()
}

fn median(values: &[i64]) -> i64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// The largest deviation (by magnitude) and the packet it belongs to.
fn worst(dev: &[i64]) -> (usize, i64) {
    dev.iter()
        .enumerate()
        .max_by_key(|(_, d)| d.abs())
        .map(|(n, d)| (n, *d))
        .unwrap_or_default()
}

/// The pace test's bounds. A packet belongs within 5 ms of its slot. A
/// virtual machine is now and then descheduled by its host for several
/// milliseconds (steal time), which delays any process, real-time or not;
/// such a stall shows as a few late packets, so 1 % of the packets may be
/// later, by up to `HOST_STALL_US`. Drift is what the daemon alone causes:
/// the grid of the last 100 packets must be where the first 100 put it.
const SLOT_US: i64 = 5_000;
const HOST_STALL_US: i64 = 30_000;
const DRIFT_US: i64 = 1_000;

#[test]
fn ten_seconds_of_prompt_keep_a_10ms_pace_without_drift() {
    const PACKETS: usize = 1000;
    let dir = TempDir::new("play-pace");
    // 10 s made by makeann from a looped 0.25 s tone.
    let prompt = makeann(dir.path(), &tone(2000), "long", &["-l", "80000", "-L"]);
    let rp = udp(port(), ports(20).range(), &[]);
    let realtime = common::make_realtime(rp.pid());
    let caller = stamped_call(&rp, "pace1");
    assert_eq!(
        rp.command(&format!("P pace1 {} 0 ftag ttag", prompt.display())),
        "0"
    );
    let packets = receive_stamped(&caller, PACKETS);
    let mut buf = [0u8; 2048];
    assert!(
        recv_stamped(&caller, &mut buf).is_none(),
        "more than {PACKETS} packets"
    );
    let dev = deviations(&packets);
    let (worst_n, worst) = worst(&dev);
    let off_slot = dev.iter().filter(|d| d.abs() >= SLOT_US).count();
    let drift = median(&dev[PACKETS - 100..]) - median(&dev[..100]);
    let from_first = dev.iter().map(|d| (d - dev[0]).abs()).max().unwrap_or(0);
    println!(
        "pace over {PACKETS} packets ({:?}): max deviation {worst} us (packet {worst_n}), \
         {from_first} us from start + N x 10 ms, {off_slot} packets off by 5 ms or more, \
         drift {drift} us, daemon real-time: {realtime}",
        packets[PACKETS - 1].1 - packets[0].1
    );
    assert!(
        off_slot <= PACKETS / 100 && worst.abs() < HOST_STALL_US,
        "{off_slot} packets 5 ms or more off their slot, packet {worst_n} by {worst} us \
         (daemon real-time: {realtime})"
    );
    assert!(drift.abs() < DRIFT_US, "drift of {drift} us over 10 s");
}

#[test]
fn stalled_daemon_catches_up_without_drift() {
    const PACKETS: usize = 600;
    let dir = TempDir::new("play-stall");
    let prompt = hand_made(dir.path(), "stall", 0, &pattern(PACKETS, 8));
    let rp = udp(port(), ports(20).range(), &[]);
    let realtime = common::make_realtime(rp.pid());
    let caller = stamped_call(&rp, "stall1");
    assert_eq!(rp.command(&format!("P stall1 {prompt} 0 ftag ttag")), "0");

    // A 100 ms stop (as if the machine had stalled the daemon): the packets
    // due meanwhile follow at once and the rest stay on the original grid.
    let mut packets = receive_stamped(&caller, 50);
    common::signal(rp.pid(), "STOP");
    std::thread::sleep(Duration::from_millis(100));
    common::signal(rp.pid(), "CONT");
    packets.extend(receive_stamped(&caller, 250));
    let dev = deviations(&packets);
    let late = dev.iter().filter(|&&d| d > 20_000).count();
    let after = median(&dev[150..]) - median(&dev[..50]);
    println!(
        "100 ms stall: {late} packets late by more than 20 ms, then the grid moved by {after} us, \
         daemon real-time: {realtime}"
    );
    assert!((5..=15).contains(&late), "{late} packets were late");
    assert!(
        after.abs() < DRIFT_US,
        "the stall moved the grid by {after} us"
    );

    // A 1 s stop is more than a receiver can use: no burst, the prompt
    // resumes where it stopped at one packet per 10 ms.
    common::signal(rp.pid(), "STOP");
    std::thread::sleep(Duration::from_secs(1));
    common::signal(rp.pid(), "CONT");
    let resumed = receive_stamped(&caller, PACKETS - 300);
    let first = resumed[0].1;
    let burst = resumed
        .iter()
        .take_while(|(_, at)| *at - first < Duration::from_millis(25))
        .count();
    assert_eq!(
        resumed[0].0,
        packets[299].0.wrapping_add(1),
        "a packet was skipped"
    );
    assert!(burst <= 4, "{burst} packets within 25 ms after a 1 s stall");
    let (n, w) = worst(&deviations(&resumed));
    println!("after a 1 s stall: {burst} packets in the first 25 ms, then max deviation {w} us");
    assert!(
        deviations(&resumed)
            .iter()
            .filter(|d| d.abs() >= SLOT_US)
            .count()
            <= 3,
        "packet {n} is {w} us off the new grid"
    );
}

#[test]
fn session_codec_list_picks_the_prompt() {
    let dir = TempDir::new("play-session");
    let both = hand_made(dir.path(), "both", 0, &pattern(4, 1));
    hand_made(dir.path(), "both", 8, &pattern(4, 2));
    let only_u = hand_made(dir.path(), "onlyu", 0, &pattern(4, 3));
    let rp = udp(port(), ports(20).range(), &[]);
    // The caller offers PCMA then PCMU; the callee answers without a list.
    let call = setup_call(&rp, "sess1", "c8,0", "");

    assert_eq!(
        rp.command(&format!("P sess1 {both} session ftag;1 ttag;1")),
        "0"
    );
    let got = receive(&call.caller, 4, call.to_caller_leg, 500);
    assert_eq!(
        check_stream(&got, 8, 80),
        pattern(4, 2),
        "PROMPT.8 expected"
    );
    assert!(call.caller.recv_within(100).is_none());

    // The first codec of the list with a file wins: PCMU here.
    assert_eq!(
        rp.command(&format!("P sess1 {only_u} session ftag;1 ttag;1")),
        "0"
    );
    let got = receive(&call.caller, 4, call.to_caller_leg, 500);
    assert_eq!(check_stream(&got, 0, 80), pattern(4, 3));

    // The callee gave no list: nothing to choose from.
    assert_eq!(
        rp.command(&format!("P sess1 {both} session ttag;1 ftag;1")),
        "E6"
    );
    // Once it sends one (L with c), `session` uses it.
    rp.command(&format!(
        "Lc0 sess1 127.0.0.1 {} ftag;1 ttag;1",
        call.callee.port()
    ));
    assert_eq!(
        rp.command(&format!("P sess1 {both} session ttag;1 ftag;1")),
        "0"
    );
    let got = receive(&call.callee, 4, call.to_callee_leg, 500);
    assert_eq!(check_stream(&got, 0, 80), pattern(4, 1));
    assert!(call.callee.recv_within(100).is_none());
    assert_relays(&call, 10);
}

#[test]
fn unknown_prompt_and_p0_start_nothing() {
    let dir = TempDir::new("play-none");
    let prompt = hand_made(dir.path(), "p", 0, &pattern(4, 9));
    let rp = udp(port(), ports(20).range(), &[]);
    let call = setup_call(&rp, "none1", "", "");

    let missing = dir.path().join("missing").display().to_string();
    assert_eq!(rp.command(&format!("P none1 {missing} 0,8 ftag;1")), "E6");
    // A file exists, but not for any codec of the list.
    assert_eq!(rp.command(&format!("P none1 {prompt} 8,18 ftag;1")), "E6");
    assert_eq!(rp.command(&format!("P0 none1 {prompt} 0 ftag;1")), "0");
    assert!(
        call.caller.recv_within(200).is_none(),
        "a prompt was played"
    );
    // The call is unchanged: media flows both ways and nothing was dropped.
    for seq in 0..5 {
        assert_relays(&call, 100 + seq);
    }
    let q = query(&rp, "Q none1 ftag;1 ttag;1");
    assert_eq!((q[1], q[2], q[3], q[4]), (6, 6, 12, 0), "{q:?}");
    assert!(rp.command("I").contains("active sessions: 1"));
}

/// Waits (bounded) for a line of the daemon's log that contains `needle`.
fn log_line(rp: &Rtpproxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let log = rp.log();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon in the background works in `/`, so a relative prompt name is
/// looked for there: a name relative to `/` plays, and a missing one is E6
/// with a log line naming the absolute files it tried.
#[test]
fn relative_prompt_name_resolves_against_the_working_directory() {
    let dir = TempDir::new("play-relative");
    let absolute = hand_made(dir.path(), "hello", 0, &pattern(3, 7));
    let relative = absolute.trim_start_matches('/');
    let ctl = format!("udp:127.0.0.1:{}", port());
    let (m, mm) = ports(8).range();
    let (m, mm) = (m.to_string(), mm.to_string());
    let args = [
        "-s",
        &ctl,
        "-l",
        "127.0.0.1",
        "-m",
        &m,
        "-M",
        &mm,
        "-d",
        "DBUG",
    ];
    let rp = Rtpproxy::start_in(Path::new("/"), &args);
    let call = setup_call(&rp, "rel1", "", "");

    assert_eq!(rp.command(&format!("P rel1 {relative} 0 ftag;1")), "0");
    let got = receive(&call.caller, 3, call.to_caller_leg, 500);
    assert_eq!(check_stream(&got, 0, 80), pattern(3, 7));

    let missing = format!("rtpp-play-missing-{}.sln", std::process::id());
    assert_eq!(rp.command(&format!("P rel1 {missing} 0,8 ftag;1")), "E6");
    let line = log_line(&rp, "can't play prompt");
    assert!(
        line.contains(&format!("prompt /{missing}: ")),
        "the log names the prompt as sought: {line}"
    );
    assert!(
        line.contains(&format!("/{missing}.0, /{missing}.8")),
        "the log names the files tried: {line}"
    );
}

#[test]
fn media_to_the_party_waits_while_a_prompt_plays() {
    let dir = TempDir::new("play-hold");
    // 5 packets per play: P-1 must loop it.
    let prompt = hand_made(dir.path(), "moh", 0, &pattern(5, 4));
    let rp = udp(port(), ports(20).range(), &[]);
    let call = setup_call(&rp, "hold1", "", "");
    let before = query(&rp, "Q hold1 ftag;1 ttag;1");

    assert_eq!(
        rp.command(&format!("P-1 hold1 {prompt} 0 ftag;1 ttag;1")),
        "0"
    );
    // For 600 ms the callee talks to the caller every 20 ms and the caller
    // keeps talking to the callee.
    let mut prompt_packets = Vec::new();
    let mut sent = 0u64;
    let until = Instant::now() + Duration::from_millis(600);
    let mut next_send = Instant::now();
    while Instant::now() < until {
        if Instant::now() >= next_send {
            call.callee
                .send(call.to_callee_leg, &rtp_packet(200 + sent as u16, 0));
            let up = rtp_packet(300 + sent as u16, 0);
            call.caller.send(call.to_caller_leg, &up);
            let (got, _) = call.callee.recv().expect("caller's media must still flow");
            assert_eq!(got, up);
            sent += 1;
            next_send += Duration::from_millis(20);
        }
        if let Some((p, from)) = call.caller.recv_within(5) {
            assert_eq!(from, call.to_caller_leg);
            let r = parse_rtp(&p);
            assert_eq!(
                r.payload.len(),
                G711_FRAME,
                "media from the callee reached the caller during the prompt"
            );
            prompt_packets.push(r);
        }
    }
    // About 60 packets: the 5-packet prompt looped many times.
    assert!(
        prompt_packets.len() >= 40,
        "only {} prompt packets in 600 ms",
        prompt_packets.len()
    );
    let bytes = check_stream(&prompt_packets, 0, 80);
    for (i, chunk) in bytes.chunks(5 * G711_FRAME).enumerate() {
        assert_eq!(chunk, &pattern(5, 4)[..chunk.len()], "play {i}");
    }
    let q = query(&rp, "Q hold1 ftag;1 ttag;1");
    assert_eq!(
        q[2] - before[2],
        sent,
        "callee's packets counted as received"
    );
    assert_eq!(
        q[4] - before[4],
        sent,
        "held-back packets counted as dropped"
    );
    assert_eq!(q[3] - before[3], sent, "only the caller's packets relayed");

    assert_eq!(rp.command("S hold1 ftag;1 ttag;1"), "0");
    // At most a packet already in flight; then only relayed media.
    std::thread::sleep(Duration::from_millis(30));
    while call.caller.recv_within(10).is_some() {}
    assert!(
        call.caller.recv_within(100).is_none(),
        "prompt still playing"
    );
    assert_relays(&call, 900);
    let q = query(&rp, "Q hold1 ftag;1 ttag;1");
    assert_eq!(q[4] - before[4], sent, "nothing dropped after S");
    // Stopping twice is harmless.
    assert_eq!(rp.command("S hold1 ftag;1 ttag;1"), "0");
}

/// Reads prompt packets until none arrive for 150 ms; returns how many.
fn until_silent(peer: &Peer) -> usize {
    let mut n = 0;
    while peer.recv_within(150).is_some() {
        n += 1;
        assert!(n < 10_000, "prompt never stops");
    }
    n
}

#[test]
fn deleting_a_session_mid_prompt_frees_its_player() {
    let dir = TempDir::new("play-del");
    let prompt = hand_made(dir.path(), "loop", 0, &pattern(3, 5));
    let rp = udp(port(), ports(20).range(), &[]);
    let call = setup_call(&rp, "del1", "", "");
    assert_eq!(
        rp.command(&format!("P-1 del1 {prompt} 0 ftag;1 ttag;1")),
        "0"
    );
    receive(&call.caller, 10, call.to_caller_leg, 500);
    assert_eq!(rp.command("D del1 ftag ttag"), "0");
    let late = until_silent(&call.caller);
    assert!(late <= 2, "{late} prompt packets after D");
    assert!(call.caller.recv_within(300).is_none());
    let info = rp.command("I");
    assert!(info.contains("active sessions: 0"), "{info}");
    assert!(!info.contains('\t'), "{info}");
    // The daemon serves the next call, with a new player, as before.
    let call = setup_call(&rp, "del2", "", "");
    assert_eq!(rp.command(&format!("P del2 {prompt} 0 ftag;1")), "0");
    receive(&call.caller, 3, call.to_caller_leg, 500);
}

#[test]
fn timed_out_session_mid_prompt_frees_its_player() {
    let dir = TempDir::new("play-ttl");
    let prompt = hand_made(dir.path(), "loop", 0, &pattern(3, 6));
    let mut rp = udp(port(), ports(20).range(), &["-T", "2"]);
    let call = setup_call(&rp, "ttl1", "", "");
    let started = Instant::now();
    assert_eq!(
        rp.command(&format!("P-1 ttl1 {prompt} 0 ftag;1 ttag;1")),
        "0"
    );
    // Nobody sends: the prompt plays until the idle timeout ends the session.
    let played = until_silent(&call.caller);
    let lasted = started.elapsed();
    assert!(
        lasted > Duration::from_millis(1500) && lasted < Duration::from_secs(5),
        "prompt stopped after {lasted:?} ({played} packets)"
    );
    assert!(played > 100, "{played} packets");
    assert!(call.caller.recv_within(300).is_none());
    assert!(rp.alive());
    let info = rp.command("I");
    assert!(info.contains("active sessions: 0"), "{info}");
    assert!(!info.contains('\t'), "{info}");
    assert!(rp.log().contains("(Timeout)"), "{}", rp.log());
}

#[test]
fn double_send_applies_to_prompt_packets() {
    let dir = TempDir::new("play-double");
    let prompt = hand_made(dir.path(), "twice", 0, &pattern(5, 7));
    let rp = udp(port(), ports(20).range(), &["-2"]);
    let caller = Peer::new("127.0.0.1");
    rp.command(&format!("U dbl1 127.0.0.1 {} ftag", caller.port()));
    let l = rp.command("L dbl1 127.0.0.1 4000 ftag ttag");
    let relay = reply_addr(&l, "127.0.0.1");

    // The caller is only pre-filled by its U: the prompt goes there too.
    assert_eq!(rp.command(&format!("P dbl1 {prompt} 0 ftag ttag")), "0");
    let got = receive(&caller, 10, relay, 500);
    assert!(caller.recv_within(200).is_none(), "more than 10 packets");
    let mut single = Vec::new();
    for pair in got.chunks(2) {
        assert_eq!(pair[0].seq, pair[1].seq, "each packet sent twice");
        assert_eq!(pair[0].payload, pair[1].payload);
        assert_eq!(pair[0].marker, pair[1].marker);
        single.push(Rtp {
            payload: pair[0].payload.clone(),
            ..pair[0]
        });
    }
    assert_eq!(check_stream(&single, 0, 80), pattern(5, 7));
}

/// With GSM built in, makeann writes `PROMPT.3` and the player sends one
/// 33-byte frame per 20 ms packet.
#[cfg(feature = "gsm")]
#[test]
fn gsm_prompt_is_paced_at_20ms() {
    let dir = TempDir::new("play-gsm");
    // 0.5 s: 25 GSM frames.
    let prompt = makeann(dir.path(), &tone(4000), "gsm", &[]);
    let file = std::fs::read(dir.path().join("gsm.3")).expect("makeann wrote gsm.3");
    assert_eq!(file.len(), 25 * 33);
    let rp = udp(port(), ports(20).range(), &[]);
    let call = setup_call(&rp, "gsm1", "c3,0", "");
    let started = Instant::now();
    assert_eq!(
        rp.command(&format!(
            "P gsm1 {} session ftag;1 ttag;1",
            prompt.display()
        )),
        "0"
    );
    let got = receive(&call.caller, 25, call.to_caller_leg, 500);
    let elapsed = started.elapsed();
    assert_eq!(check_stream(&got, 3, 160), file);
    assert!(
        elapsed >= Duration::from_millis(470) && elapsed < Duration::from_millis(800),
        "25 GSM packets took {elapsed:?}"
    );
}
