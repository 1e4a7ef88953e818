//! Hardening: "never crashes, never leaks, never hands media to a stranger"
//! as tested properties of the real daemon on loopback. Random and mutated
//! commands by the hundred thousand, hostile media of every size, an
//! attacker racing and flooding the relay ports, port and descriptor
//! exhaustion, session churn measured in RSS, over-long names, vanishing
//! clients, SIGTERM under load, and what `-u` confines.
//!
//! Each test gets its control port and media range from `common::ports`.
//! The figures each test measures are
//! printed (`cargo test --test hardening -- --nocapture` shows them) and
//! written down in the README.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    port, ports, reply_addr, rtp_packet, test_user, Call, Peer, Rtpproxy, TempDir, TEST_USER,
};

const LO: &str = "127.0.0.1";

fn udp_daemon(control: u16, range: (u16, u16), extra: &[&str]) -> Rtpproxy {
    let s = format!("udp:{LO}:{control}");
    let (m, mm) = (range.0.to_string(), range.1.to_string());
    let mut args = vec!["-s", &s, "-l", LO, "-m", &m, "-M", &mm];
    args.extend_from_slice(extra);
    Rtpproxy::start(&args)
}

fn unix_daemon(range: (u16, u16), extra: &[&str]) -> Rtpproxy {
    let (m, mm) = (range.0.to_string(), range.1.to_string());
    let mut args = vec!["-l", LO, "-m", &m, "-M", &mm];
    args.extend_from_slice(extra);
    Rtpproxy::start(&args)
}

/// Resident memory of a process in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted after the command name.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A well-formed command of any verb, naming one of a few dozen calls so
/// that commands meet the sessions earlier ones made.
fn valid_command(rng: &mut Rng) -> Vec<u8> {
    let call = format!("hc{}", rng.below(40));
    let media = rng.pick(&["", ";1", ";2"]);
    let ft = format!("f{}{media}", rng.below(3));
    let tt = format!("t{}{media}", rng.below(3));
    let port = 4000 + 2 * rng.below(500);
    let addr = rng.pick(&[LO, LO, "0.0.0.0", "::1", "127.0.0.2", "bogus", "1.2.3", ""]);
    let mods = rng.pick(&[
        "",
        "",
        "a",
        "s",
        "w",
        "6",
        "i",
        "e",
        "ie",
        "z20",
        "z15",
        "z0",
        "c0,8,101",
        "c",
        "c8,,0",
        "x",
        "q9",
        "z1000",
        "aswz40c18",
    ]);
    let cmd = match rng.below(20) {
        0..=4 => format!("U{mods} {call} {addr} {port} {ft}"),
        5..=7 => format!("U{mods} {call} {addr} {port} {ft} {tt}"),
        8..=10 => format!("L{mods} {call} {addr} {port} {ft} {tt}"),
        11 | 12 => format!("D {call} {ft} {tt}"),
        13 => format!("Q {call} {ft} {tt}"),
        14 => format!("{} {call} {ft}", rng.pick(&["R", "S", "Q", "D"])),
        15 => format!(
            "P{} {call} {} {} {ft} {tt}",
            rng.pick(&["", "-1", "0", "2", "x"]),
            rng.pick(&["/nonexistent/prompt", "prompt", "/", ""]),
            rng.pick(&["0,8", "session", "18", "999"])
        ),
        16 => format!(
            "C {call} {} {ft}",
            rng.pick(&["copy", "../../x", "/abs", "."])
        ),
        17 => rng
            .pick(&["I", "G", "G nsess_active npkts_rcvd", "G nope", "V"])
            .into(),
        18 => rng
            .pick(&["VF 20050322", "VF 20081224", "VF", "V a b", "Z"])
            .into(),
        // X empties the table: rare, so sessions pile up to exhaustion.
        _ if rng.below(50) == 0 => "X".into(),
        _ => format!("U {call} {LO} {port} {ft} {tt} /tmp/none.sock tag%20x"),
    };
    cmd.into_bytes()
}

/// A few random edits of a valid command: bit flips, random bytes,
/// inserted control bytes and whitespace, cut ranges, long tokens.
fn mutate(rng: &mut Rng, mut cmd: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(cmd.len() + 1);
        match rng.below(7) {
            0 if at < cmd.len() => cmd[at] ^= 1 << rng.below(8),
            1 if at < cmd.len() => cmd[at] = rng.next() as u8,
            2 => {
                let n = 1 + rng.below(8);
                let junk = rng.bytes(n);
                cmd.splice(at..at, junk);
            }
            3 => {
                let ws = [b' ', b'\t', b'\r', b'\n', 0, 0xff, b'%', b';'];
                cmd.insert(at, ws[rng.below(ws.len())]);
            }
            4 => {
                let end = (at + rng.below(12)).min(cmd.len());
                cmd.drain(at..end);
            }
            5 => {
                let long = vec![b"aZ9;%/."[rng.below(7)]; 900 + rng.below(300)];
                cmd.splice(at..at, long);
            }
            _ => cmd.truncate(at),
        }
    }
    cmd
}

/// One command of the random mix: half valid, a third mutated, the rest
/// random bytes. `udp` is defused everywhere: `C CALLID udp:HOST:PORT`
/// with a host name would resolve it, and these tests send nothing beyond
/// loopback.
fn random_command(rng: &mut Rng) -> Vec<u8> {
    let mut cmd = match rng.below(20) {
        0..=9 => valid_command(rng),
        10..=16 => {
            let c = valid_command(rng);
            mutate(rng, c)
        }
        _ => {
            let n = rng.below(200);
            rng.bytes(n)
        }
    };
    for i in 0..cmd.len().saturating_sub(2) {
        if cmd[i..i + 3].eq_ignore_ascii_case(b"udp") {
            cmd[i] = b'x';
        }
    }
    cmd
}

/// What [`blast_udp`] saw.
#[derive(Debug, Default)]
struct Blast {
    sent: usize,
    answered: usize,
    retransmitted: usize,
    errors: usize,
}

/// Sends every command with its own cookie, keeping at most `window`
/// unanswered; a command unanswered for a second is sent again (as a SIP
/// proxy would; the reply cache answers it), three times at most.
fn blast_udp(to: SocketAddr, commands: &mut dyn Iterator<Item = Vec<u8>>, window: usize) -> Blast {
    let sock = UdpSocket::bind(format!("{LO}:0")).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(1000)))
        .expect("timeout");
    let mut outstanding: HashMap<Vec<u8>, (Vec<u8>, u32)> = HashMap::new();
    let mut stats = Blast::default();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut more = true;
    loop {
        while more && outstanding.len() < window {
            let Some(cmd) = commands.next() else {
                more = false;
                break;
            };
            let cookie = format!("h{}", stats.sent).into_bytes();
            let mut dgram = cookie.clone();
            dgram.push(b' ');
            dgram.extend_from_slice(&cmd);
            sock.send_to(&dgram, to).expect("send command");
            outstanding.insert(cookie, (dgram, 0));
            stats.sent += 1;
        }
        if outstanding.is_empty() {
            return stats;
        }
        assert!(Instant::now() < deadline, "blast took over 300 s");
        match sock.recv(&mut buf) {
            Ok(n) => {
                let reply = &buf[..n];
                assert!(reply.ends_with(b"\n"), "reply without newline: {reply:?}");
                let cookie = reply.split(|&c| c == b' ').next().unwrap_or_default();
                if outstanding.remove(cookie).is_some() {
                    stats.answered += 1;
                    let body = &reply[cookie.len()..];
                    if body.starts_with(b" E") {
                        stats.errors += 1;
                    }
                }
            }
            Err(_) => {
                for (cookie, (dgram, tries)) in outstanding.iter_mut() {
                    *tries += 1;
                    assert!(
                        *tries <= 3,
                        "no reply to {:?} after 3 tries",
                        String::from_utf8_lossy(cookie)
                    );
                    sock.send_to(dgram, to).expect("resend");
                    stats.retransmitted += 1;
                }
            }
        }
    }
}

/// `I` parsed: the active count it states and its RTP stream lines.
fn info(rp: &Rtpproxy) -> (usize, Vec<String>) {
    let text = rp.command("I");
    let active = text
        .lines()
        .find_map(|l| l.strip_prefix("active sessions: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no active count in {text:?}"));
    let streams = text
        .lines()
        .filter_map(|l| l.strip_prefix('\t'))
        .filter(|l| !l.starts_with("C "))
        .map(str::to_string)
        .collect();
    (active, streams)
}

/// The daemon still answers `V`, and `I`, `G` and `Q` agree: as many RTP
/// and RTCP lines as sessions, `G nsess_active` the same, and each listed
/// session whose ids print plainly answers `Q`.
fn assert_consistent(rp: &Rtpproxy) -> usize {
    assert_eq!(rp.command("V"), "20040107");
    let (active, streams) = info(rp);
    assert_eq!(streams.len(), active, "I lists {} streams", streams.len());
    let rtcp = rp
        .command("I")
        .lines()
        .filter(|l| l.starts_with("\tC "))
        .count();
    assert_eq!(rtcp, active, "one RTCP line per session");
    assert_eq!(
        rp.command("Gv nsess_active"),
        format!("nsess_active={active}")
    );
    let mut queried = 0;
    for line in &streams {
        let Some((ids, _)) = line.split_once(": caller = ") else {
            panic!("odd I line {line:?}");
        };
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        let Some((call, tag)) = ids.split_once('/') else {
            continue;
        };
        if plain(call) && plain(tag) && call.len() < 200 && tag.len() < 200 {
            let q = rp.command(&format!("Q {call} {tag}"));
            assert!(!q.starts_with('E'), "I lists {call}/{tag} but Q says {q}");
            queried += 1;
        }
    }
    println!("consistent: {active} sessions, {queried} of them queried by Q");
    active
}

#[test]
fn hundred_thousand_random_udp_commands_leave_it_consistent() {
    let control = port();
    let rp = udp_daemon(control, ports(100).range(), &["-d", "CRIT"]);
    let to: SocketAddr = format!("{LO}:{control}").parse().expect("addr");
    let mut rng = Rng(0x5eed_0001);
    // Warm-up: sessions exist, buffers are sized, and the reply cache has
    // turned over at its bound (65536 replies, at most 4 MiB of them, for
    // 30 s: some 25 MiB with its tables); RSS is taken after it.
    let warm = blast_udp(to, &mut (0..120_000).map(|_| random_command(&mut rng)), 64);
    assert_eq!(warm.answered, warm.sent);
    let before = rss_kib(rp.pid());
    let start = Instant::now();
    let stats = blast_udp(to, &mut (0..100_000).map(|_| random_command(&mut rng)), 64);
    let took = start.elapsed();
    let after = rss_kib(rp.pid());
    println!(
        "random UDP commands: {} sent, {} answered ({} errors), {} retransmitted, {:.1} s, \
         RSS {before} -> {after} KiB",
        stats.sent,
        stats.answered,
        stats.errors,
        stats.retransmitted,
        took.as_secs_f64()
    );
    assert_eq!(stats.answered, 100_000, "every command answered");
    assert_consistent(&rp);
    // Nothing may grow with the number of commands.
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} to {after} KiB"
    );

    // A monitoring loop of I: each reply (about 13 KB with 50 sessions) is
    // cached for retransmission, and 20 000 of them once took 250 MB.
    assert_eq!(rp.command("X"), "0");
    for i in 0..50 {
        let port = 4000 + 2 * i;
        let r = rp.command(&format!("U mon{i} {LO} {port} ftag-with-a-longer-tag"));
        assert!(!r.starts_with('E'), "{r}");
    }
    let sessions = assert_consistent(&rp);
    let info_len = rp.command("I").len();
    let before = rss_kib(rp.pid());
    // Eight at a time: 64 replies of 12 KB would overflow our own socket.
    let stats = blast_udp(to, &mut (0..20_000).map(|_| b"I".to_vec()), 8);
    assert_eq!(stats.answered, 20_000);
    let after = rss_kib(rp.pid());
    println!("20000 I ({sessions} sessions, {info_len}-byte replies): RSS {before} -> {after} KiB");
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

/// One command over the unix socket: a connection of its own. Returns the
/// reply (empty when the daemon closed without one, as for an empty
/// command).
fn unix_raw(path: &Path, cmd: &[u8]) -> String {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    // A command over MAX_COMMAND_LEN is cut; the daemon may close before
    // reading the rest, which makes this write fail: not our concern.
    let _ = s.write_all(cmd);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn random_unix_commands_each_on_a_connection_leave_it_consistent() {
    let rp = unix_daemon(ports(100).range(), &["-d", "CRIT"]);
    let path = rp.control_path().expect("unix").to_path_buf();
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..300 {
        unix_raw(&path, &random_command(&mut rng));
    }
    let before = rss_kib(rp.pid());
    let start = Instant::now();
    let (mut answered, mut silent) = (0, 0);
    for _ in 0..5000 {
        let reply = unix_raw(&path, &random_command(&mut rng));
        if reply.is_empty() {
            silent += 1;
        } else {
            assert!(reply.ends_with('\n'), "{reply:?}");
            answered += 1;
        }
    }
    let after = rss_kib(rp.pid());
    println!(
        "random unix commands: 5000 connections, {answered} answered, {silent} closed without \
         a reply (empty commands), {:.1} s, RSS {before} -> {after} KiB",
        start.elapsed().as_secs_f64()
    );
    // Only an empty command goes unanswered, and few are empty.
    assert!(silent < 100, "{silent} commands got no reply");
    assert_consistent(&rp);
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

/// A call set up with `U{umods}` and a plain `L`, tagged `ftag` and `ttag`
/// (the tags this file's `Q` and `D` name).
fn setup_call(rp: &Rtpproxy, call_id: &str, umods: &str) -> Call {
    Call::setup(rp, call_id, umods, "", ("ftag", "ttag"))
}

/// `Q`'s five numbers.
fn query(rp: &Rtpproxy, call_id: &str) -> [u64; 5] {
    let q = rp.command(&format!("Q {call_id} ftag ttag"));
    let v: Vec<u64> = q
        .split_whitespace()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("Q: {q}")))
        .collect();
    v.try_into().unwrap_or_else(|_| panic!("Q: {q}"))
}

/// Both directions relay a fresh packet.
fn assert_relays(call: &Call, seq: u16) {
    let p = rtp_packet(seq, 0);
    call.caller.send(call.to_caller_leg, &p);
    assert_eq!(call.callee.recv().expect("caller -> callee").0, p);
    call.callee.send(call.to_callee_leg, &p);
    assert_eq!(call.caller.recv().expect("callee -> caller").0, p);
}

/// Every size 0..=2048, then a stride up to the largest UDP payload.
fn hostile_sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..=2048).collect();
    sizes.extend((2049..65507).step_by(509));
    sizes.push(65507);
    sizes
}

/// Packets that are not RTP, or RTP with lying headers.
fn malformed_rtp() -> Vec<Vec<u8>> {
    let good = rtp_packet(7, 0);
    let with_b0 = |b0: u8, tail: &[u8]| {
        let mut p = good[..12].to_vec();
        p[0] = b0;
        p.extend_from_slice(tail);
        p
    };
    vec![
        with_b0(0x00, &good[12..]),               // version 0
        with_b0(0x40, &good[12..]),               // version 1
        with_b0(0xc0, &good[12..]),               // version 3
        with_b0(0x8f, &[]),                       // 15 CSRCs, none there
        with_b0(0x90, &[0xbe, 0xde, 0xff, 0xff]), // extension of 256 KiB
        with_b0(0x90, &[0xbe, 0xde]),             // extension header cut
        with_b0(0xa0, &[1, 2, 3, 0]),             // padding count 0
        with_b0(0xa0, &[1, 2, 3, 200]),           // padding past the payload
        with_b0(0xbf, &[0xff; 3]),                // everything at once
        b"\x80".to_vec(),                         // one byte
        b"INVITE sip:x SIP/2.0\r\n\r\n".to_vec(), // not media at all
        vec![0xff; 1500],                         // all ones
        vec![0; 172],                             // all zeros
    ]
}

#[test]
fn hostile_media_is_relayed_or_dropped_and_counted() {
    let rp = udp_daemon(port(), ports(100).range(), &["-d", "ERR"]);
    let call = setup_call(&rp, "media1", "");
    assert_relays(&call, 1);

    // The latched caller sends every size: the relay passes bytes on, it
    // does not judge them; the callee gets each one intact.
    let sizes = hostile_sizes();
    let mut got = 0;
    for &n in &sizes {
        let p: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
        call.caller.send(call.to_caller_leg, &p);
        match call.callee.recv_within(1000) {
            Some((q, _)) => {
                assert_eq!(q.len(), n, "size {n} relayed as {}", q.len());
                assert_eq!(q, p);
                got += 1;
            }
            None => panic!("a {n}-byte packet was not relayed"),
        }
    }
    for p in malformed_rtp() {
        call.caller.send(call.to_caller_leg, &p);
        assert_eq!(call.callee.recv().expect("malformed relayed").0, p);
        got += 1;
    }
    let relayed_before = query(&rp, "media1")[3];

    // A stranger sends the same, to both legs: all of it dropped, counted.
    // Paced, so that the kernel's socket buffer keeps (nearly) every one.
    let counters = |rp: &Rtpproxy| -> (u64, u64) {
        let g = rp.command("Gv npkts_rcvd npkts_discard");
        let v: Vec<u64> = g
            .split_whitespace()
            .filter_map(|kv| kv.split_once('=')?.1.parse().ok())
            .collect();
        (v[0], v[1])
    };
    let (rcvd0, discard0) = counters(&rp);
    let stranger = Peer::new(LO);
    let mut strange = 0u64;
    for &n in sizes.iter().step_by(3) {
        let p = vec![0x80u8; n];
        stranger.send(call.to_caller_leg, &p);
        stranger.send(call.to_callee_leg, &p);
        strange += 2;
        std::thread::sleep(Duration::from_micros(100 + n as u64 / 100));
    }
    for p in malformed_rtp() {
        stranger.send(call.to_caller_leg, &p);
        strange += 1;
    }
    assert!(
        call.callee.recv_within(300).is_none(),
        "stranger's packet relayed"
    );
    assert!(
        call.caller.recv_within(100).is_none(),
        "stranger's packet relayed"
    );
    assert!(stranger.recv_within(100).is_none(), "stranger got media");
    let q = query(&rp, "media1");
    assert_eq!(q[3], relayed_before, "nothing more relayed");
    // Whatever reached the daemon was dropped and counted; nearly all did.
    let (rcvd, discard) = counters(&rp);
    assert_eq!(
        rcvd - rcvd0,
        discard - discard0,
        "a stranger's packet not dropped"
    );
    assert!(
        (rcvd - rcvd0) * 10 >= strange * 9,
        "{} of {strange} arrived",
        rcvd - rcvd0
    );
    assert!(q[4] >= rcvd - rcvd0, "Q counts {} drops", q[4]);

    // Floods on a port allocated but never latched (only U) and on the
    // ports of a deleted session.
    let idle = rp.command(&format!("U idle1 {LO} 9 ftag"));
    let idle_port = reply_addr(&idle, LO);
    let gone = setup_call(&rp, "gone1", "");
    assert_eq!(rp.command("D gone1 ftag ttag"), "0");
    let flood = Peer::new(LO);
    let junk = vec![0x80u8; 200];
    for _ in 0..5000 {
        flood.send(idle_port, &junk);
        // Nobody listens there now: the kernel answers with ICMP.
        let _ = flood.sock.send_to(&junk, gone.to_caller_leg);
        let _ = flood.sock.send_to(&junk, gone.to_callee_leg);
    }
    let idle_q = rp.command("Q idle1 ftag");
    let dropped: u64 = idle_q
        .split_whitespace()
        .nth(4)
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "idle port flood not counted: {idle_q}");
    assert_relays(&call, 9);
    assert_eq!(assert_consistent(&rp), 2);
    let total_bad = sizes.len() + malformed_rtp().len() + strange as usize + 15000;
    println!(
        "hostile media: {got} odd packets relayed intact by the latched party, {strange} \
         from a stranger dropped, {total_bad} bad packets in all; idle port Q: {idle_q}"
    );
}

/// Payload marks: what the attacker sends, and what the real parties do.
const EVIL: &[u8] = b"EVIL";

fn evil_packet(seq: u16) -> Vec<u8> {
    let mut p = rtp_packet(seq, 0);
    p[12..16].copy_from_slice(EVIL);
    p
}

fn is_evil(p: &[u8]) -> bool {
    p.get(12..16) == Some(EVIL)
}

/// Reads a socket until it is quiet for `ms`: (genuine, evil) counts.
fn drain_marked(peer: &Peer, ms: u64) -> (usize, usize) {
    let (mut good, mut evil) = (0, 0);
    for _ in 0..100_000 {
        match peer.recv_within(ms) {
            Some((p, _)) if is_evil(&p) => evil += 1,
            Some(_) => good += 1,
            None => break,
        }
    }
    (good, evil)
}

/// Floods both relay ports from the attacker sockets for as long as
/// `stop` is unset (bounded: 20 000 rounds).
fn flood(
    attackers: &[&Peer],
    targets: [SocketAddr; 2],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let socks: Vec<UdpSocket> = attackers
        .iter()
        .map(|a| a.sock.try_clone().expect("clone"))
        .collect();
    std::thread::spawn(move || {
        let mut sent = 0;
        for i in 0..20_000u16 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for s in &socks {
                for t in targets {
                    let _ = s.send_to(&evil_packet(i), t);
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        sent
    })
}

/// The real parties exchange `n` packets each way, 2 ms apart; returns
/// what each received (genuine, evil), caller's first. About 250 small
/// datagrams fill a socket's default receive buffer, so `n` stays below.
fn exchange(call: &Call, first_seq: u16, n: u16) -> ((usize, usize), (usize, usize)) {
    for i in 0..n {
        call.caller
            .send(call.to_caller_leg, &rtp_packet(first_seq + i, 0));
        call.callee
            .send(call.to_callee_leg, &rtp_packet(first_seq + i, 0));
        std::thread::sleep(Duration::from_millis(2));
    }
    (
        drain_marked(&call.caller, 300),
        drain_marked(&call.callee, 300),
    )
}

#[test]
fn attacker_racing_a_symmetric_call_gets_nothing_after_lock_in() {
    let rp = udp_daemon(port(), ports(50).range(), &["-d", "INFO"]);
    let call = setup_call(&rp, "bleed1", "");
    let legs = [call.to_caller_leg, call.to_callee_leg];
    // One attacker on the parties' host, one on another loopback address.
    let near = Peer::new(LO);
    let far = Peer::new("127.0.0.2");
    let mut report = Vec::new();

    // Before latching: the attackers reach both relay ports first.
    for i in 0..20 {
        for a in [&near, &far] {
            for leg in legs {
                a.send(leg, &evil_packet(i));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    // During: the real parties start talking while the attackers go on.
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flood(&[&near, &far], legs, Arc::clone(&stop));
    let ((c_good, c_evil), (e_good, e_evil)) = exchange(&call, 100, 50);
    let before_lock = drain_marked(&near, 200).0 + drain_marked(&far, 200).0;
    // Until a real party has spoken, the attacker holding its side gets
    // what the other party sends, and its packets reach the other party:
    // the race is inherent to latching. It ends at the real party's first
    // packet, so most of the stream reaches the real parties.
    report.push(format!(
        "until lock-in the attackers got {before_lock} packets and slipped {} in",
        c_evil + e_evil
    ));
    assert!(
        c_good >= 40 && e_good >= 40,
        "real parties got {c_good}/{e_good} of 50"
    );

    // After lock-in: the flood goes on; the attackers get nothing and the
    // parties lose nothing.
    let (caller_got, callee_got) = exchange(&call, 200, 200);
    let after_lock = drain_marked(&near, 200).0 + drain_marked(&far, 200).0;
    assert_eq!(caller_got, (200, 0), "caller's stream");
    assert_eq!(callee_got, (200, 0), "callee's stream");
    assert_eq!(after_lock, 0, "attackers received media after lock-in");
    report.push(format!("after lock-in: attackers got {after_lock}"));

    // A re-INVITE re-signals the caller; the caller keeps talking, which
    // closes the update window at its next packet.
    stop.store(true, Ordering::Relaxed);
    let sent1 = flooding.join().expect("flood");
    let u = rp.command(&format!("U bleed1 {LO} {} ftag ttag", call.caller.port()));
    assert_eq!(reply_addr(&u, LO), call.to_callee_leg);
    call.caller.send(call.to_caller_leg, &rtp_packet(500, 0));
    assert!(call.callee.recv().is_some());
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flood(&[&near, &far], legs, Arc::clone(&stop));
    let (caller_got, callee_got) = exchange(&call, 600, 200);
    let after_resignal = drain_marked(&near, 200).0 + drain_marked(&far, 200).0;
    assert_eq!((caller_got, callee_got), ((200, 0), (200, 0)));
    assert_eq!(
        after_resignal, 0,
        "attackers received media after a re-INVITE"
    );
    stop.store(true, Ordering::Relaxed);
    let sent2 = flooding.join().expect("flood");

    // Re-signalled again, and the caller stays silent until the 10 s
    // window has run out: then the attackers are strangers again.
    rp.command(&format!("U bleed1 {LO} {} ftag ttag", call.caller.port()));
    std::thread::sleep(Duration::from_millis(10_300));
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flood(&[&near, &far], legs, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(200));
    let (caller_got, callee_got) = exchange(&call, 900, 200);
    let after_window = drain_marked(&near, 200).0 + drain_marked(&far, 200).0;
    stop.store(true, Ordering::Relaxed);
    let sent3 = flooding.join().expect("flood");
    assert_eq!((caller_got, callee_got), ((200, 0), (200, 0)));
    assert_eq!(after_window, 0, "attackers received media after the window");
    let q = query(&rp, "bleed1");
    report.push(format!(
        "attacker packets sent {}, delivered after lock-in 0; Q {q:?}",
        40 * 2 + sent1 + sent2 + sent3
    ));
    println!("RTP bleed, symmetric: {}", report.join("; "));
}

#[test]
fn attacker_on_another_host_never_feeds_or_reads_an_asymmetric_party() {
    let rp = udp_daemon(port(), ports(50).range(), &["-d", "INFO"]);
    // `a`: the caller sends from any port of its host and gets media at
    // the signalled address.
    let call = setup_call(&rp, "bleed2", "a");
    let far = Peer::new("127.0.0.2");
    let stop = Arc::new(AtomicBool::new(false));
    // Before, during and after the parties start: the attacker floods the
    // asymmetric party's relay port from another host address.
    for i in 0..50 {
        far.send(call.to_caller_leg, &evil_packet(i));
    }
    let flooding = flood(&[&far], [call.to_caller_leg; 2], Arc::clone(&stop));
    let (caller_got, callee_got) = exchange(&call, 1, 200);
    // The caller's other port on its own host is accepted (asymmetric).
    let other_port = Peer::new(LO);
    other_port.send(call.to_caller_leg, &rtp_packet(999, 0));
    assert!(call.callee.recv().is_some(), "same host, other port");
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().expect("flood") + 50;
    let attacker_got = drain_marked(&far, 300).0;
    assert_eq!(caller_got, (200, 0), "caller's stream");
    assert_eq!(callee_got, (200, 0), "callee's stream");
    assert_eq!(attacker_got, 0);
    let q = query(&rp, "bleed2");
    assert!(
        q[4] as usize >= sent,
        "drops {} < attacker packets {sent}",
        q[4]
    );
    println!("RTP bleed, asymmetric: attacker sent {sent}, received {attacker_got}; Q {q:?}");
}

#[test]
fn exhausted_port_range_is_e10_and_recovers_after_d() {
    // Ten RTP/RTCP pairs: five calls of two legs.
    let rp = udp_daemon(port(), ports(20).range(), &["-d", "INFO"]);
    let mut calls: Vec<(String, Call)> = (0..5)
        .map(|i| {
            let id = format!("ex{i}");
            let c = setup_call(&rp, &id, "");
            (id, c)
        })
        .collect();
    for (i, (_, c)) in calls.iter().enumerate() {
        assert_relays(c, i as u16);
    }
    for round in 0..20 {
        assert_eq!(rp.command(&format!("U more{round} {LO} 4000 ftag")), "E10");
        // The calls in progress do not notice.
        for (_, c) in &calls {
            assert_relays(c, 100 + round as u16);
        }
        // Ports come back with D, and go again.
        let victim = round % 5;
        assert_eq!(rp.command(&format!("D {} ftag ttag", calls[victim].0)), "0");
        let c = setup_call(&rp, &format!("re{round}"), "");
        assert_relays(&c, 1);
        assert_eq!(rp.command(&format!("D re{round} ftag ttag")), "0");
        let id = format!("ex{victim}-{round}");
        let c = setup_call(&rp, &id, "");
        assert_relays(&c, 2);
        calls[victim] = (id, c);
    }
    assert_eq!(assert_consistent(&rp), 5);
}

#[test]
fn open_files_limit_is_an_e_code_a_warning_and_recoverable() {
    // -L lowers the limit too (soft and hard): 64 descriptors, 4 per call.
    let rp = udp_daemon(port(), ports(200).range(), &["-L", "64", "-d", "INFO"]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", rp.pid())).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 64 ")),
        "{limits}"
    );
    let mut calls = Vec::new();
    let mut refused = None;
    for i in 0..40 {
        let caller = Peer::new(LO);
        let u = rp.command(&format!("U fd{i} {LO} {} ftag", caller.port()));
        if u.starts_with('E') {
            refused = Some((i, u));
            break;
        }
        let callee = Peer::new(LO);
        let l = rp.command(&format!("L fd{i} {LO} {} ftag ttag", callee.port()));
        if l.starts_with('E') {
            refused = Some((i, l));
            break;
        }
        calls.push(Call {
            to_callee_leg: reply_addr(&u, LO),
            to_caller_leg: reply_addr(&l, LO),
            caller,
            callee,
        });
    }
    let (at, code) = refused.expect("64 descriptors never ran out");
    assert!(code == "E10" || code == "E7", "{code}");
    assert!(calls.len() >= 8, "only {} calls fit", calls.len());
    for (i, c) in calls.iter().enumerate() {
        assert_relays(c, i as u16);
    }
    // The once-a-second check warns at 80% of the limit.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !rp.log().contains("open files allowed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rp.log().contains("open files allowed"), "{}", rp.log());
    // Deleting calls gives the descriptors back.
    for i in 0..3 {
        assert_eq!(rp.command(&format!("D fd{i} ftag ttag")), "0");
    }
    rp.command(&format!("D fd{at} ftag"));
    for i in 0..2 {
        let c = setup_call(&rp, &format!("again{i}"), "");
        assert_relays(&c, 7);
    }
    println!(
        "open files: -L 64 held {} calls, the next was {code}; warned; recovered after D",
        calls.len()
    );
    assert_consistent(&rp);
}

#[test]
fn unix_control_survives_running_out_of_descriptors() {
    // 64: descriptors run out (two per U) before the poll set reaches the
    // limit (the unix control keeps 33 entries in it).
    let rp = unix_daemon(ports(80).range(), &["-L", "64", "-d", "INFO"]);
    let path = rp.control_path().expect("unix").to_path_buf();
    // Sessions take the descriptors until U fails; that U still gets its
    // answer (the daemon keeps a descriptor in reserve for a client).
    let mut made = 0;
    let mut refused = String::new();
    for i in 0..40 {
        let r = unix_raw(&path, format!("U ufd{i} {LO} 4000 ftag\n").as_bytes());
        if !r.starts_with(|c: char| c.is_ascii_digit()) {
            refused = r;
            break;
        }
        made += 1;
    }
    assert!(made > 5 && made < 40, "{made} sessions");
    assert_eq!(
        refused,
        "E10\n",
        "the U that found no descriptor: {}",
        rp.log()
    );
    // Clients that connect and say nothing hold the descriptors left (the
    // rest wait in the backlog) while a real command comes in; each
    // silent one is dropped after 2 s.
    let silent: Vec<UnixStream> = (0..3)
        .filter_map(|_| UnixStream::connect(&path).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let cpu_before = cpu_ticks(rp.pid());
    let start = Instant::now();
    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s.write_all(b"D ufd0 ftag\n").expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let waited = start.elapsed();
    let cpu = cpu_ticks(rp.pid()) - cpu_before;
    drop(silent);
    println!(
        "unix control out of descriptors: {made} sessions then {refused:?}; behind 3 silent \
         clients D answered {reply:?} after {:.2} s, daemon CPU {cpu} ticks meanwhile",
        waited.as_secs_f64()
    );
    assert_eq!(reply, "0\n");
    // Waiting for a descriptor must not spin: a clock tick is 10 ms, so
    // this allows the daemon a tenth of the time it waited.
    let allowed = waited.as_millis() as u64 / 10 / 10 + 5;
    assert!(
        cpu <= allowed,
        "{cpu} ticks of CPU while waiting {waited:?}"
    );
    assert!(rp.log().contains("out of file descriptors"), "{}", rp.log());
    // Freed descriptors serve the next calls.
    assert!(
        unix_raw(&path, format!("U again {LO} 4000 ftag").as_bytes())
            .starts_with(|c: char| c.is_ascii_digit())
    );
    assert_eq!(unix_raw(&path, b"V"), "20040107\n");
}

#[test]
fn ten_thousand_sessions_churned_do_not_grow_rss() {
    // One call at a time needs one pair per leg.
    let control = port();
    let rp = udp_daemon(control, ports(20).range(), &["-d", "CRIT"]);
    let to: SocketAddr = format!("{LO}:{control}").parse().expect("addr");
    let churn = |from: usize, n: usize| {
        let mut cmds = (from..from + n).flat_map(|i| {
            [
                format!("U churn{i} {LO} 4000 ftag;1"),
                format!("L churn{i} {LO} 4002 ftag;1 ttag;1"),
                format!("D churn{i} ftag ttag"),
            ]
            .map(String::into_bytes)
        });
        // One call at a time: its three commands must run in order.
        let stats = blast_udp(to, &mut cmds, 1);
        assert_eq!(stats.answered, 3 * n);
        assert_eq!(stats.errors, 0, "a churn command failed");
    };
    // Warm-up: 25 000 calls fill the reply cache to its bound (65536
    // replies, 21 845 calls' worth), so its memory is in the baseline and
    // from there on it only turns over. Measured: RSS rises for the first
    // 20 000 calls, then stays put to the KiB for 40 000 more.
    churn(0, 25_000);
    let before = rss_kib(rp.pid());
    let start = Instant::now();
    churn(25_000, 10_000);
    let after = rss_kib(rp.pid());
    println!(
        "churn: 10000 sessions created and deleted in {:.1} s, RSS {before} -> {after} KiB",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(assert_consistent(&rp), 0);
    assert_eq!(
        rp.command("Gv nsess_created nsess_destroyed"),
        "nsess_created=35000 nsess_destroyed=35000"
    );
    assert!(
        after <= before + 1024,
        "RSS grew from {before} to {after} KiB"
    );
}

#[test]
fn over_long_names_are_e_codes_not_crashes() {
    let rp = udp_daemon(port(), ports(20).range(), &["-d", "INFO"]);
    let id = |n: usize| "i".repeat(n);
    assert!(!rp
        .command(&format!("U {} {LO} 4000 ftag", id(1024)))
        .starts_with('E'));
    for (cmd, want) in [
        (format!("U {} {LO} 4000 ftag", id(1025)), "E1"),
        (format!("U call {LO} 4000 {}", id(1025)), "E1"),
        (format!("U call {LO} 4000 ftag {}", id(5000)), "E1"),
        (format!("L {} {LO} 4000 ftag ttag", id(7000)), "E1"),
        (format!("D {} ftag", id(2000)), "E1"),
        (format!("Q call {}", id(2000)), "E1"),
        (format!("C {} {} ftag", id(1024), id(1100)), "E1"),
        (format!("P {} {} 0 ftag", id(10), id(5000)), "E1"),
        (format!("U call {LO} 4000 ftag ttag {} tag", id(3000)), "E1"),
    ] {
        assert_eq!(rp.command(&cmd), want, "{}", &cmd[..40]);
    }
    // Datagrams past the command buffer (8 KiB) are cut there: whatever
    // is left is parsed, and answered.
    for n in [8200, 20_000, 65_000] {
        let r = rp.command(&format!("U {} {LO} 4000 ftag", id(n)));
        assert!(r.starts_with('E'), "{n}-byte Call-ID: {r}");
    }
    // A notification tag of a few KB is fine as long as it fits.
    let ok = rp.command(&format!("U call2 {LO} 4000 ftag ttag /x {}", id(6000)));
    assert!(!ok.starts_with('E'), "{ok}");

    // The same over the unix socket, up to a 1 MiB command.
    let unix = unix_daemon(ports(20).range(), &["-d", "INFO"]);
    let path = unix.control_path().expect("unix").to_path_buf();
    assert_eq!(
        unix_raw(&path, format!("U {} {LO} 4000 f", id(1025)).as_bytes()),
        "E1\n"
    );
    for n in [9000, 100_000, 1 << 20] {
        let r = unix_raw(&path, format!("U {} {LO} 4000 f\n", id(n)).as_bytes());
        assert!(r.starts_with('E'), "{n}: {r:?}");
    }
    assert_eq!(assert_consistent(&rp), 2);
    assert_eq!(assert_consistent(&unix), 0);
}

#[test]
fn udp_clients_that_vanish_before_the_reply_cost_nothing() {
    let control = port();
    let rp = udp_daemon(control, ports(40).range(), &["-d", "ERR"]);
    let to: SocketAddr = format!("{LO}:{control}").parse().expect("addr");
    let mut vanished = 0;
    for i in 0..3000 {
        // Sent, then the socket closes: the reply hits a closed port and
        // the kernel answers the daemon with ICMP port unreachable.
        let s = UdpSocket::bind(format!("{LO}:0")).expect("bind");
        let cmd = match i % 3 {
            0 => format!("v{i} U vanish{} {LO} 4000 ftag", i % 10),
            1 => format!("v{i} I"),
            _ => format!("v{i} D vanish{} ftag", (i + 5) % 10),
        };
        s.send_to(cmd.as_bytes(), to).expect("send");
        drop(s);
        vanished += 1;
        if i % 100 == 0 {
            assert_eq!(rp.command("V"), "20040107", "after {i} vanished clients");
        }
    }
    let active = assert_consistent(&rp);
    assert!(active <= 10);
    println!("vanishing UDP clients: {vanished} commands whose sender left, daemon fine");
}

/// Packets in a recording, by sequence number (RTP only).
fn recorded_seqs(path: &Path) -> BTreeSet<u16> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rtpproxy::rtpp_record_reader::read_recording(&bytes)
        .expect("recording reads back")
        .iter()
        .filter(|p| p.data.len() >= 12)
        .map(|p| u16::from_be_bytes([p.data[2], p.data[3]]))
        .collect()
}

fn received_seqs(peer: &Peer) -> BTreeSet<u16> {
    let mut seqs = BTreeSet::new();
    for _ in 0..100_000 {
        match peer.recv_within(50) {
            Some((p, _)) if p.len() >= 12 => {
                seqs.insert(u16::from_be_bytes([p[2], p[3]]));
            }
            Some(_) => {}
            None => break,
        }
    }
    seqs
}

#[test]
fn sigterm_under_load_finishes_every_recording() {
    // Two legs each: 60 pairs of the 120 ports.
    const CALLS: usize = 30;
    let rec = TempDir::new("hard-rec");
    let spool = TempDir::new("hard-spool");
    let (r, s) = (
        rec.path().display().to_string(),
        spool.path().display().to_string(),
    );
    let mut rp = unix_daemon(
        ports(120).range(),
        &["-r", &r, "-S", &s, "-a", "-d", "INFO"],
    );
    let ctl = rp.control_path().expect("unix").to_path_buf();
    let pidfile = rp.dir().join("rtpproxy.pid");
    assert!(pidfile.exists());
    let calls: Vec<Call> = (0..CALLS)
        .map(|i| setup_call(&rp, &format!("term{i}"), ""))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Both parties of every call send as fast as 2 ms allows until told
    // to stop (bounded: 5000 rounds).
    let senders: Vec<(UdpSocket, SocketAddr, UdpSocket, SocketAddr)> = calls
        .iter()
        .map(|c| {
            (
                c.caller.sock.try_clone().expect("clone"),
                c.to_caller_leg,
                c.callee.sock.try_clone().expect("clone"),
                c.to_callee_leg,
            )
        })
        .collect();
    let flag = Arc::clone(&stop);
    let load = std::thread::spawn(move || {
        let mut rounds = 0u16;
        while !flag.load(Ordering::Relaxed) && rounds < 5000 {
            for (a, to_a, b, to_b) in &senders {
                let _ = a.send_to(&rtp_packet(rounds, 0), to_a);
                let _ = b.send_to(&rtp_packet(rounds, 0), to_b);
            }
            rounds += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        rounds
    });
    std::thread::sleep(Duration::from_millis(1500));
    let status = rp.terminate().expect("exited within 5 s of SIGTERM");
    stop.store(true, Ordering::Relaxed);
    let rounds = load.join().expect("load");
    assert!(status.success(), "{status}\n{}", rp.log());
    assert!(!ctl.exists(), "control socket left behind");
    assert!(!pidfile.exists(), "pidfile left behind");
    let spooled: Vec<_> = std::fs::read_dir(spool.path()).expect("spool").collect();
    assert!(spooled.is_empty(), "spool not emptied: {spooled:?}");
    // Every packet a party received went through the relay, which records
    // before it forwards: each must be in the finished recording.
    let mut recorded = 0;
    for (i, c) in calls.iter().enumerate() {
        let o = rec.path().join(format!("term{i}=ftag.o.rtp"));
        let a = rec.path().join(format!("term{i}=ftag.a.rtp"));
        let (got_callee, got_caller) = (received_seqs(&c.callee), received_seqs(&c.caller));
        let (rec_o, rec_a) = (recorded_seqs(&o), recorded_seqs(&a));
        assert!(
            !got_callee.is_empty() && !got_caller.is_empty(),
            "call {i} had no media"
        );
        assert!(
            got_callee.is_subset(&rec_o),
            "call {i}: relayed but not recorded (o)"
        );
        assert!(
            got_caller.is_subset(&rec_a),
            "call {i}: relayed but not recorded (a)"
        );
        recorded += rec_o.len() + rec_a.len();
    }
    let files = std::fs::read_dir(rec.path()).expect("rec").count();
    assert_eq!(files, CALLS * 4, "o/a x rtp/rtcp for every call");
    println!(
        "SIGTERM under load: {CALLS} calls, {rounds} rounds sent, {recorded} packets recorded, \
         {files} files moved out of the spool, socket and pidfile removed"
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn after_u_recordings_stay_confined_and_root_only_prompts_are_e6() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "-u needs root; run the tests as root"
    );
    let (uid, gid) = test_user();
    let top = TempDir::new("hard-priv");
    let rec = top.path().join("rec");
    let prompts = top.path().join("prompts");
    for d in [&rec, &prompts] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::os::unix::fs::chown(&rec, Some(uid), Some(gid)).expect("chown");
    // A prompt the user may read, and one only root may.
    std::fs::write(prompts.join("open.0"), vec![0xffu8; 800]).expect("prompt");
    std::fs::write(prompts.join("secret.0"), vec![0xffu8; 800]).expect("prompt");
    std::fs::set_permissions(
        prompts.join("secret.0"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    // A root-owned directory next to the recordings: nothing may appear.
    let outside = top.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");

    let r = rec.display().to_string();
    let rp = udp_daemon(
        port(),
        ports(40).range(),
        &["-u", TEST_USER, "-r", &r, "-d", "INFO"],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", rp.pid())).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&uid.to_string())),
        "{status}"
    );
    // C names that try to leave -r, one direction each (a direction
    // already recorded keeps its file), and R on a call of its own.
    let calls: Vec<Call> = (1..=3)
        .map(|i| setup_call(&rp, &format!("priv{i}"), ""))
        .collect();
    let escape = format!("{}/x", outside.display());
    for cmd in [
        format!("C priv1 {escape} ftag"),
        "C priv1 ../outside/y ttag ftag".to_string(),
        "C priv2 /etc/rtpp-owned ftag".to_string(),
        "C priv2 .. ttag ftag".to_string(),
        "R priv3 ftag".to_string(),
    ] {
        assert_eq!(rp.command(&cmd), "0", "{cmd}");
    }
    for (i, c) in calls.iter().enumerate() {
        assert_relays(c, i as u16);
    }
    let (open, secret) = (prompts.join("open"), prompts.join("secret"));
    assert_eq!(
        rp.command(&format!("P priv1 {} 0 ftag", secret.display())),
        "E6"
    );
    assert_eq!(
        rp.command(&format!("P priv1 {} 0 ftag", open.display())),
        "0"
    );
    for i in 1..=3 {
        assert_eq!(rp.command(&format!("D priv{i} ftag ttag")), "0");
    }

    assert!(files_under(&outside).is_empty(), "written outside -r");
    assert!(!Path::new("/etc/rtpp-owned.rtp").exists());
    let written = files_under(&rec);
    // Four C directions of two files each (RTP, RTCP), and R's four.
    assert_eq!(written.len(), 4 * 2 + 4, "{written:?}");
    for f in &written {
        let meta = std::fs::metadata(f).expect("meta");
        assert_eq!(meta.uid(), uid, "{} not owned by {TEST_USER}", f.display());
        assert_eq!(
            f.parent(),
            Some(rec.as_path()),
            "{} not directly in -r",
            f.display()
        );
    }
    println!(
        "-u {TEST_USER}: {} recordings, all in -r and owned by uid {uid}; root-only prompt E6",
        written.len()
    );
}
