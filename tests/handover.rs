//! Hand-over (SIGUSR2, doc/PROTOCOL.md "Hand-over"): the running daemon
//! starts its binary again and gives it every socket, file and session;
//! calls go on without losing or repeating a packet.
//!
//! The tests keep RTP flowing both ways through real calls while they
//! signal the daemon, and count at the receiving sockets, by sequence
//! number, what arrived. They check that the new process answers `I` and
//! `Q` as the old one did, still protects latched parties from strangers,
//! ends calls by `D` and by timeout with the notification and accounting
//! record of the whole call, continues recordings, remote copies and
//! prompts where they were, and that a binary that cannot take over
//! leaves the old daemon serving with one log line saying why.
//!
//! Every daemon a test starts (and every process that took over from it)
//! is killed by `common::Rtpproxy`'s drop, by pid.

mod common;

use common::{port, ports, rtp_packet, udp, Call, LineListener, Peer, Rtpproxy, TempDir};
use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What one receiving socket got: packets by sequence number, and the
/// longest silence between two arrivals.
#[derive(Default, Clone)]
struct Received {
    seen: HashMap<u16, u32>,
    max_gap: Duration,
    last: Option<Instant>,
}

impl Received {
    fn count(&mut self, seq: u16, at: Instant) {
        *self.seen.entry(seq).or_default() += 1;
        if let Some(last) = self.last {
            self.max_gap = self.max_gap.max(at - last);
        }
        self.last = Some(at);
    }
}

/// Media of `calls` in both directions: one packet per call and direction
/// every `interval`, `packets` in all, with sequence numbers 0, 1, ...
/// `during` runs on this thread while the media flows.
struct Media {
    calls: Vec<Call>,
}

/// What arrived at every receiving socket, callers' first.
struct Outcome {
    got: Vec<Received>,
    elapsed: Duration,
}

impl Media {
    fn run<T>(&self, packets: u16, interval: Duration, during: impl FnOnce() -> T) -> (Outcome, T) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut socks: Vec<UdpSocket> = Vec::new();
        for c in &self.calls {
            socks.push(c.caller.sock.try_clone().expect("clone"));
        }
        for c in &self.calls {
            socks.push(c.callee.sock.try_clone().expect("clone"));
        }
        let receiver = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || receive_all(&socks, &stop))
        };
        let mut sends = Vec::new();
        for c in &self.calls {
            let a = c.caller.sock.try_clone().expect("clone");
            let b = c.callee.sock.try_clone().expect("clone");
            sends.push((a, c.to_caller_leg, b, c.to_callee_leg));
        }
        let started = Instant::now();
        let sender = thread::spawn(move || {
            for seq in 0..packets {
                let due = started + interval * u32::from(seq);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                let p = rtp_packet(seq, 0);
                for (a, to_a, b, to_b) in &sends {
                    let _ = a.send_to(&p, to_a);
                    let _ = b.send_to(&p, to_b);
                }
            }
        });
        let result = during();
        sender.join().expect("sender");
        let elapsed = started.elapsed();
        thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let got = receiver.join().expect("receiver");
        // The clones share the sockets' flags: give the tests back
        // blocking sockets with their read timeouts.
        for c in &self.calls {
            for p in [&c.caller, &c.callee] {
                p.sock.set_nonblocking(false).expect("blocking");
            }
        }
        (Outcome { got, elapsed }, result)
    }
}

/// Reads every socket until `stop`, counting by sequence number.
fn receive_all(socks: &[UdpSocket], stop: &AtomicBool) -> Vec<Received> {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::BorrowedFd;
    let mut got = vec![Received::default(); socks.len()];
    for s in socks {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let mut fds: Vec<PollFd> = socks
            .iter()
            // SAFETY: the sockets outlive the poll.
            .map(|s| {
                PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) },
                    PollFlags::POLLIN,
                )
            })
            .collect();
        if poll(&mut fds, 50u16).unwrap_or(0) == 0 {
            continue;
        }
        let now = Instant::now();
        for (i, s) in socks.iter().enumerate() {
            while let Ok(n) = s.recv(&mut buf) {
                if n >= 4 {
                    got[i].count(u16::from_be_bytes([buf[2], buf[3]]), now);
                }
            }
        }
    }
    got
}

impl Outcome {
    /// Every socket got packets 0..n exactly once.
    fn assert_whole(&self, n: u16, what: &str) {
        for (i, r) in self.got.iter().enumerate() {
            let missing: Vec<u16> = (0..n).filter(|s| !r.seen.contains_key(s)).collect();
            let twice: Vec<u16> = r
                .seen
                .iter()
                .filter(|(_, &c)| c > 1)
                .map(|(&s, _)| s)
                .collect();
            assert!(
                missing.is_empty() && twice.is_empty() && r.seen.len() == usize::from(n),
                "{what}: socket {i}: {} of {n} packets, missing {missing:?}, twice {twice:?}",
                r.seen.len()
            );
        }
    }

    fn max_gap(&self) -> Duration {
        self.got.iter().map(|r| r.max_gap).max().unwrap_or_default()
    }
}

/// `n` calls on `rp`, named `{prefix}{i}`.
fn calls(rp: &Rtpproxy, prefix: &str, n: usize) -> Vec<Call> {
    (0..n)
        .map(|i| Call::setup(rp, &format!("{prefix}{i}"), "", "", ("ftag", "ttag")))
        .collect()
}

/// `I`'s answer without the idle timers, which count down.
fn info_without_ttls(rp: &Rtpproxy) -> String {
    rp.command("I")
        .lines()
        .map(|l| l.split(", ttl =").next().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Q`'s answer without its first figure, the idle time left.
fn query_without_ttl(rp: &Rtpproxy, call: &str) -> String {
    let q = rp.command(&format!("Q {call} ftag ttag"));
    q.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
}

#[test]
fn calls_go_on_through_a_hand_over_without_losing_a_packet() {
    let dir = TempDir::new("whole");
    let acct = dir.join("acct.json");
    let acct_arg = acct.display().to_string();
    let rp = udp(port(), ports(200).range(), &["-A", &acct_arg]);
    let media = Media {
        calls: calls(&rp, "whole", 20),
    };
    let old = rp.live_pid().expect("pidfile");
    let (out, new) = media.run(150, Duration::from_millis(10), || {
        thread::sleep(Duration::from_millis(500));
        rp.hand_over()
    });
    let new = new.unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    assert_ne!(new, old);
    out.assert_whole(150, "across the hand-over");
    assert!(
        rp.log().contains("took over 20 sessions"),
        "log:\n{}",
        rp.log()
    );

    // The same answers from the new process as from the old one.
    let (info, q) = (info_without_ttls(&rp), query_without_ttl(&rp, "whole3"));
    let again = rp
        .hand_over()
        .unwrap_or_else(|| panic!("second hand-over; log:\n{}", rp.log()));
    assert_ne!(again, new);
    assert_eq!(info_without_ttls(&rp), info);
    assert_eq!(query_without_ttl(&rp, "whole3"), q);
    assert!(info.contains("active sessions: 20"), "{info}");

    // Latched parties are still protected from a stranger.
    let stranger = Peer::new("127.0.0.1");
    let c = &media.calls[0];
    stranger.send(c.to_caller_leg, &rtp_packet(9999, 0));
    assert!(
        c.callee.recv_within(300).is_none(),
        "a stranger's packet was relayed"
    );
    c.caller.send(c.to_caller_leg, &rtp_packet(150, 0));
    let (p, from) = c.callee.recv().expect("the caller's packet");
    assert_eq!(
        (&p[2..4], from),
        (&150u16.to_be_bytes()[..], c.to_callee_leg)
    );

    // D works, and the accounting record covers the whole call.
    assert_eq!(rp.command("D whole0 ftag ttag"), "0");
    c.caller.send(c.to_caller_leg, &rtp_packet(151, 0));
    assert!(c.callee.recv_within(300).is_none(), "relayed after D");
    let text = std::fs::read_to_string(&acct).expect("accounting file");
    let line = text
        .lines()
        .find(|l| l.contains("\"whole0\""))
        .unwrap_or_else(|| panic!("no record: {text}"));
    let rec = common::parse_flat_json(line).expect("json");
    for (field, want) in [("rtp_caller_packets", 151.0), ("rtp_callee_packets", 150.0)] {
        assert!(
            matches!(rec.get(field), Some(common::Json::Num(n)) if *n == want),
            "{field} in {line}"
        );
    }
}

/// Waits (bounded) until `what` holds.
fn eventually(limit: Duration, mut what: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if what() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    what()
}

#[test]
fn timeouts_notify_and_drains_work_in_the_new_process() {
    let dir = TempDir::new("timeout");
    let path = dir.join("notify.sock");
    let arg = format!("unix:{}", path.display());
    let mut listener = LineListener::unix(&path);
    let rp = udp(port(), ports(20).range(), &["-T", "3", "-n", &arg]);
    let u = rp.command(&format!("U idle 127.0.0.1 4000 ftag ttag {arg} idle%20one"));
    common::port_of(&u);
    rp.hand_over()
        .unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    let line = listener
        .line_within(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("no timeout notification; log:\n{}", rp.log()));
    assert_eq!(line, "idle one\n");
    assert!(rp.command("I").contains("active sessions: 0"));

    // A drain started before a hand-over goes on in the new process.
    let rp = udp(port(), ports(20).range(), &[]);
    let call = Call::setup(&rp, "drained", "", "", ("ftag", "ttag"));
    let old = rp.live_pid().expect("pid");
    common::signal(old, "USR1");
    assert!(eventually(Duration::from_secs(3), || rp.command("V") == "E15"));
    let new = rp
        .hand_over()
        .unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    assert_eq!(rp.command("V"), "E15", "the new process is not draining");
    call.caller.send(call.to_caller_leg, &rtp_packet(1, 0));
    assert!(
        call.callee.recv().is_some(),
        "the drained call's media stopped"
    );
    assert_eq!(rp.command("D drained ftag ttag"), "0");
    assert!(
        common::wait_pid_gone(new, Duration::from_secs(5)),
        "the new process did not exit when the last call ended"
    );
}

#[test]
fn recordings_and_copies_go_on_in_the_same_file_and_stream() {
    let rec = TempDir::new("rec");
    let rec_dir = rec.path().display().to_string();
    let rp = udp(port(), ports(20).range(), &["-r", &rec_dir, "-R"]);
    let call = Call::setup(&rp, "rec", "", "", ("ftag", "ttag"));
    let copy = Peer::new("127.0.0.1");
    assert_eq!(rp.command("R rec ftag ttag"), "0");
    assert_eq!(
        rp.command(&format!("C rec udp:127.0.0.1:{} ftag ttag", copy.port())),
        "0"
    );
    let media = Media { calls: vec![call] };
    let (out, new) = media.run(200, Duration::from_millis(10), || {
        thread::sleep(Duration::from_millis(800));
        rp.hand_over()
    });
    new.unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    out.assert_whole(200, "recorded call");
    let mut copied = Received::default();
    while let Some((p, _)) = copy.recv_within(300) {
        copied.count(u16::from_be_bytes([p[2], p[3]]), Instant::now());
    }
    Outcome {
        got: vec![copied],
        elapsed: Duration::ZERO,
    }
    .assert_whole(200, "remote copy");
    assert_eq!(rp.command("D rec ftag ttag"), "0");
    // Each direction: 200 records of a 40-byte header and the packet.
    for side in ["o", "a"] {
        let file = rec.join(format!("rec=ftag.{side}.rtp"));
        let len = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}; log:\n{}", file.display(), rp.log()))
            .len();
        assert_eq!(len, 200 * (40 + 172), "{}", file.display());
    }
    let wav = rec.join("rec.wav");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_extractaudio"))
        .arg(rec.join("rec=ftag"))
        .arg(&wav)
        .status()
        .expect("run extractaudio");
    assert!(status.success(), "extractaudio failed");
    let samples = (std::fs::metadata(&wav).expect("wav").len() - 44) / 2;
    assert!(samples >= 200 * 160, "{samples} samples: the call was 2 s");
}

#[test]
fn a_prompt_plays_on_from_where_it_was() {
    let dir = TempDir::new("prompt");
    // 300 frames of 10 ms, each frame's bytes telling its number.
    let frames: Vec<u8> = (0..300u32)
        .flat_map(|f| (0..80u32).map(move |i| (f * 7 + i) as u8))
        .collect();
    std::fs::write(dir.join("hold.0"), &frames).expect("prompt");
    let prompt = dir.join("hold").display().to_string();
    let rp = udp(port(), ports(20).range(), &[]);
    let call = Call::setup(&rp, "play", "", "", ("ftag", "ttag"));
    assert_eq!(rp.command(&format!("P1 play {prompt} 0 ttag ftag")), "0");
    let handed = thread::scope(|s| {
        let h = s.spawn(|| {
            thread::sleep(Duration::from_millis(1000));
            rp.hand_over()
        });
        let mut got = Vec::new();
        while let Some((p, _)) = call.callee.recv_within(500) {
            got.push(p);
            if got.len() > 400 {
                break;
            }
        }
        (h.join().expect("hand-over thread"), got)
    });
    let (new, got) = handed;
    new.unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    assert_eq!(got.len(), 300, "packets of the prompt; log:\n{}", rp.log());
    let first = u16::from_be_bytes([got[0][2], got[0][3]]);
    for (k, p) in got.iter().enumerate() {
        let seq = u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(seq, first.wrapping_add(k as u16), "packet {k}: sequence");
        assert_eq!(&p[12..], &frames[k * 80..(k + 1) * 80], "packet {k}: audio");
    }
}

/// Starts a daemon from a copy of the binary in `dir` (which a test then
/// replaces), with UDP control and the given media range.
fn daemon_from_copy(dir: &TempDir, range: (u16, u16)) -> (Rtpproxy, std::path::PathBuf) {
    let bin = dir.join("rtpproxy");
    copy_by_cp(&common::bin_path(), &bin);
    let mut args = vec!["-s".to_string(), format!("udp:127.0.0.1:{}", port())];
    args.extend(common::loopback_args(range, &[]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Rtpproxy::start_from(&bin, &args), bin)
}

/// Installs `script` at `bin` the way a package does: beside it, then
/// renamed over the running file.
fn install_script(bin: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let source = bin.with_extension("src");
    std::fs::write(&source, script).expect("write script");
    let aside = bin.with_extension("new");
    copy_by_cp(&source, &aside);
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&aside, bin).expect("install script");
}

/// Copies a file that is to be run with cp(1): were this process to write
/// it, a daemon another test thread forks at that moment would hold it
/// open for writing until its exec, and running the file would fail with
/// ETXTBSY.
fn copy_by_cp(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp {} {}", from.display(), to.display());
}

/// The old daemon still serves after a failed hand-over: same pid, media
/// relayed, commands answered, and one log line saying why.
fn assert_still_serving(rp: &Rtpproxy, call: &Call, pid: u32, why: &str) {
    assert!(
        eventually(Duration::from_secs(10), || rp
            .log()
            .contains("failed, serving on")),
        "no failure line; log:\n{}",
        rp.log()
    );
    let log = rp.log();
    let line = log
        .lines()
        .find(|l| l.contains("failed, serving on"))
        .unwrap_or_default();
    assert!(
        line.contains(why),
        "the failure line {line:?} does not say {why:?}"
    );
    assert_eq!(
        rp.live_pid(),
        Some(pid),
        "the pidfile no longer names the old daemon"
    );
    assert_eq!(rp.command("V"), "20040107");
    for seq in 0..5 {
        call.caller.send(call.to_caller_leg, &rtp_packet(seq, 0));
        let (p, _) = call
            .callee
            .recv()
            .unwrap_or_else(|| panic!("packet {seq} not relayed"));
        assert_eq!(&p[2..4], &seq.to_be_bytes());
    }
    assert!(rp.command("I").contains("active sessions: 1"));
}

#[test]
fn a_binary_that_exits_at_once_leaves_the_old_daemon_serving() {
    let dir = TempDir::new("exits");
    let (rp, bin) = daemon_from_copy(&dir, ports(20).range());
    let call = Call::setup(&rp, "stays", "", "", ("ftag", "ttag"));
    let pid = rp.live_pid().expect("pid");
    install_script(&bin, "#!/bin/sh\nexit 3\n");
    common::signal(pid, "USR2");
    assert_still_serving(&rp, &call, pid, "exited (exit status: 3)");
}

#[test]
fn a_binary_of_another_state_version_leaves_the_old_daemon_serving() {
    let dir = TempDir::new("version");
    let (rp, bin) = daemon_from_copy(&dir, ports(20).range());
    let call = Call::setup(&rp, "stays", "", "", ("ftag", "ttag"));
    let pid = rp.live_pid().expect("pid");
    install_script(
        &bin,
        "#!/usr/bin/env python3\n\
         import socket, struct, sys\n\
         fd = [int(a.split('=')[1]) for a in sys.argv if a.startswith('--handover-fd=')][0]\n\
         s = socket.socket(fileno=fd)\n\
         s.send(b'H' + struct.pack('<I', 999))\n\
         s.settimeout(10)\n\
         s.recv(100)\n",
    );
    common::signal(pid, "USR2");
    assert_still_serving(&rp, &call, pid, "state version 999");
}

/// Raises this test process's open-files limit: hundreds of calls hold
/// thousands of sockets, counting the clones of the media threads.
fn raise_nofile(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < want {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard).max(soft), hard);
    }
}

/// A daemon for `n` calls: unix control (no port), `-L` raised.
fn big_daemon(range: (u16, u16), extra: &[&str]) -> Rtpproxy {
    let mut args = common::loopback_args(range, &["-L", "16384"]);
    args.extend(extra.iter().map(|a| a.to_string()));
    Rtpproxy::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn twenty_hand_overs_under_500_calls_lose_nothing() {
    raise_nofile(16384);
    let block = ports(2000);
    let rp = big_daemon(block.range(), &[]);
    let media = Media {
        calls: calls(&rp, "load", 500),
    };
    let (out, pids) = media.run(200, Duration::from_millis(150), || {
        let mut pids = Vec::new();
        for _ in 0..20 {
            thread::sleep(Duration::from_millis(1000));
            match rp.hand_over() {
                Some(pid) => pids.push(pid),
                None => break,
            }
        }
        pids
    });
    assert_eq!(pids.len(), 20, "hand-overs done; log:\n{}", rp.log());
    out.assert_whole(200, "500 calls through 20 hand-overs");
    assert!(info_without_ttls(&rp).contains("active sessions: 500"));
    println!(
        "500 calls, 20 hand-overs in {:?}: longest silence at a receiver {:?}",
        out.elapsed,
        out.max_gap()
    );
}

/// The figures in README.md, "Performance": how long media waits during a
/// hand-over at 100 and 1000 calls (the longest gap between two arrivals
/// at any receiver, packets every 20 ms per call and direction at 100
/// calls, every 100 ms at 1000), and the CPU the two processes spend, as
/// they log it. Run alone, in release, on an otherwise idle machine:
/// `cargo test --release --test handover -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_the_media_gap_of_a_hand_over() {
    raise_nofile(16384);
    let block = ports(4000);
    for (n, interval) in [(100, 20), (1000, 100)] {
        let rp = big_daemon(block.range(), &[]);
        let media = Media {
            calls: calls(&rp, "gap", n),
        };
        let interval = Duration::from_millis(interval);
        // The same media without a hand-over: the gaps the generator and
        // the machine make by themselves.
        let (quiet, ()) = media.run(40, interval, || ());
        quiet.assert_whole(40, "calls before the measurement");
        let (out, new) = media.run(80, interval, || {
            thread::sleep(interval * 40);
            rp.hand_over()
        });
        new.unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
        out.assert_whole(80, "measured calls");
        let log = rp.log();
        let old = log
            .lines()
            .find(|l| l.contains("handed over"))
            .unwrap_or_default();
        let new = log
            .lines()
            .find(|l| l.contains("took over"))
            .unwrap_or_default();
        println!(
            "{n} calls, a packet every {interval:?} per direction: longest gap {:?} \
             (without a hand-over: {:?})\n  old: {old}\n  new: {new}",
            out.max_gap(),
            quiet.max_gap()
        );
        drop(rp);
    }
}

/// The shipped unit's ExecReload= command, run as systemd would run it
/// (its `$$` made `$`, MAINPID in the environment), against a daemon whose
/// pidfile stands in for /run/rtpproxy/rtpproxy.pid: it returns 0 once a
/// new process took over, and fails when none can.
#[test]
fn the_units_reload_command_waits_for_the_new_process() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/rtpproxy.service"),
    )
    .expect("unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload=/bin/sh -c "))
        .expect("ExecReload= runs sh -c");
    let script = line.trim_matches('\'').replace("$$", "$");
    let dir = TempDir::new("unit");
    let (rp, bin) = daemon_from_copy(&dir, ports(20).range());
    let pidfile = rp.dir().join("rtpproxy.pid");
    let script = script.replace("/run/rtpproxy/rtpproxy.pid", &pidfile.display().to_string());
    // Its 20 s bound cut to 3 s, so the failing case does not wait long.
    assert!(script.contains("-gt 200"), "{script}");
    let script = script.replace("-gt 200", "-gt 30");
    let reload = |pid: u32| {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env("MAINPID", pid.to_string())
            .output()
            .expect("run the reload command")
    };
    let old = rp.live_pid().expect("pid");
    let out = reload(old);
    assert!(
        out.status.success(),
        "{}; log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        rp.log()
    );
    let new = rp.live_pid().expect("a new pid");
    assert_ne!(new, old);
    assert!(!common::pid_alive(old));

    install_script(&bin, "#!/bin/sh\nexit 3\n");
    let out = reload(new);
    assert!(!out.status.success(), "the reload command did not fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("pid {new} serves on")));
    assert_eq!(rp.live_pid(), Some(new));
}

/// One HTTP scrape of `--metrics`: the body.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to --metrics");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: rtpproxy\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn stream_control_and_metrics_listeners_are_carried() {
    let ctl = format!("tcp:127.0.0.1:{}", port());
    let metrics = format!("127.0.0.1:{}", port());
    let rp = common::controlled_by(&ctl, ports(20).range(), &["--metrics", &metrics]);
    let call = Call::setup(&rp, "tcp", "", "", ("ftag", "ttag"));
    assert!(scrape(&metrics).contains("rtpproxy_sessions_created_total 1"));
    rp.hand_over()
        .unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    assert!(rp.command("I").contains("active sessions: 1"));
    let body = scrape(&metrics);
    assert!(body.contains("rtpproxy_sessions_created_total 1"), "{body}");
    call.caller.send(call.to_caller_leg, &rtp_packet(1, 0));
    assert!(call.callee.recv().is_some(), "media after the hand-over");
}

#[test]
fn a_unix_client_connected_before_the_hand_over_gets_its_reply() {
    use std::io::{Read, Write};
    let (m, mm) = ports(20).range();
    let (m, mm) = (m.to_string(), mm.to_string());
    let rp = Rtpproxy::start(&["-l", "127.0.0.1", "-m", &m, "-M", &mm, "-d", "INFO"]);
    let path = rp.control_path().expect("unix control").to_path_buf();
    let mut early = std::os::unix::net::UnixStream::connect(&path).expect("connect");
    early
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    // Connected, nothing sent yet: the old process accepted the client and
    // waits for its command, which goes to the new one.
    thread::sleep(Duration::from_millis(200));
    rp.hand_over()
        .unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    early.write_all(b"VF 20040107").expect("write the command");
    early
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut reply = String::new();
    let _ = early.read_to_string(&mut reply);
    assert_eq!(reply.trim(), "1", "log:\n{}", rp.log());
}

#[test]
fn re_packetized_audio_goes_on_whole() {
    let rp = udp(port(), ports(20).range(), &[]);
    let caller = Peer::new("127.0.0.1");
    let callee = Peer::new("127.0.0.1");
    common::port_of(&rp.command(&format!("Uz40 rs 127.0.0.1 {} ft", caller.port())));
    let l = rp.command(&format!("L rs 127.0.0.1 {} ft tt", callee.port()));
    let to = common::reply_addr(&l, "127.0.0.1");
    // 100 packets of 20 ms G.711, each payload byte telling its place.
    let audio: Vec<u8> = (0..100 * 160).map(|i: u32| (i * 7 % 251) as u8).collect();
    let (got, new) = thread::scope(|s| {
        let h = s.spawn(|| {
            thread::sleep(Duration::from_millis(1000));
            rp.hand_over()
        });
        let reader = s.spawn(|| {
            let mut got = Vec::new();
            while let Some((d, _)) = callee.recv_within(400) {
                got.push(d);
            }
            got
        });
        let start = Instant::now();
        for (i, chunk) in audio.chunks(160).enumerate() {
            let due = start + Duration::from_millis(20) * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&(i as u32 * 160).to_be_bytes());
            p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            p.extend_from_slice(chunk);
            caller.send(to, &p);
        }
        (reader.join().expect("reader"), h.join().expect("hand-over"))
    });
    new.unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    let out: Vec<u8> = got.iter().flat_map(|p| p[12..].to_vec()).collect();
    assert_eq!(
        out.len(),
        audio.len(),
        "{} packets out; log:\n{}",
        got.len(),
        rp.log()
    );
    assert!(out == audio, "the audio came out changed");
    assert!(got.iter().all(|p| p.len() == 12 + 320), "not 40 ms packets");
    for (k, p) in got.iter().enumerate().skip(1) {
        let (seq, prev) = (u16::from_be_bytes([p[2], p[3]]), &got[k - 1]);
        assert_eq!(
            seq,
            u16::from_be_bytes([prev[2], prev[3]]).wrapping_add(1),
            "packet {k}"
        );
    }
}

#[test]
fn the_notification_connection_is_carried() {
    let addr = format!("127.0.0.1:{}", port());
    let mut listener = LineListener::tcp(&addr);
    let target = format!("tcp:{addr}");
    let rp = udp(port(), ports(20).range(), &["-T", "2", "-n", &target]);
    common::port_of(&rp.command(&format!("U one 127.0.0.1 4000 ftag ttag {target} one")));
    let first = listener
        .line_within(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("no first notification; log:\n{}", rp.log()));
    assert_eq!(first, "one\n");
    let before = listener.peers();
    assert_eq!(before.len(), 1);
    common::port_of(&rp.command(&format!("U two 127.0.0.1 4002 ftag ttag {target} two")));
    rp.hand_over()
        .unwrap_or_else(|| panic!("no hand-over; log:\n{}", rp.log()));
    let second = listener
        .line_within(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("no notification after the hand-over; log:\n{}", rp.log()));
    assert_eq!(second, "two\n");
    assert_eq!(listener.peers(), before, "the daemon connected again");
}
