//! Recording through the real daemon on loopback (doc/PROTOCOL.md, "Recording"):
//! `R` and `-a` write `CALLID=TAG.{o,a}.{rtp,rtcp}` in the classic ad-hoc
//! format or in PCAP (`-P`), `-R` leaves RTCP out, `-S` spools until the
//! session ends however it ends, `C` copies one party's media to a UDP
//! target or a file, hostile Call-IDs cannot leave the directory, a full or
//! missing directory stops a recording but never the relay, and what is
//! recorded decodes with tshark and with `extractaudio`.
//!
//! Each test gets its control port and media range (40 ports) from
//! `common::ports`, so that they run in parallel.
//!
//! The tests that mount a tmpfs need root (CI runs as root) and fail with a
//! message saying so otherwise; tshark and sox are installed by
//! `tests/run.sh`, and a test needing a missing one fails with one line
//! naming the package.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{port, ports, reply_addr, Peer, Rtpproxy, TempDir};
use rtpproxy::g711::{linear_to_ulaw, ulaw_to_linear};
use rtpproxy::rtpp_record_reader::read_recording;

/// The from-tag and to-tag of every scripted call; the files carry the
/// from-tag with its media number.
const FROM_TAG: &str = "ftag;1";
const TO_TAG: &str = "ttag;1";
/// Packets each party sends in a scripted call.
const PACKETS: usize = 50;
/// One RTCP packet each way after this many RTP packets.
const RTCP_EVERY: usize = 10;
/// Bytes of the classic per-packet header.
const ADHOC_HEADER: usize = 40;
/// SSRCs of the two parties; the payload bytes derive from them too.
const CALLER_SSRC: u32 = 0xca11_e4a0;
const CALLEE_SSRC: u32 = 0x0ca1_1ee5;

/// Starts a daemon on IPv4 loopback with UDP control and 40 media ports,
/// all of them its own.
fn daemon(extra: &[&str]) -> Rtpproxy {
    common::udp(port(), ports(40).range(), extra)
}

/// The same on IPv6 loopback only.
fn daemon6(extra: &[&str]) -> Rtpproxy {
    let s = format!("udp6:[::1]:{}", port());
    let (min, max) = ports(40).range();
    let (min, max) = (min.to_string(), max.to_string());
    let mut args = vec!["-s", &s, "-6", "::1", "-m", &min, "-M", &max, "-d", "INFO"];
    args.extend_from_slice(extra);
    Rtpproxy::start(&args)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// An RTP socket and its RTCP twin on the next port.
fn peer_pair(ip: &str) -> (Peer, Peer) {
    for _ in 0..100 {
        let rtp = Peer::new(ip);
        let Some(next) = rtp.port().checked_add(1) else {
            continue;
        };
        if let Some(rtcp) = Peer::at(&SocketAddr::new(rtp.addr().ip(), next).to_string()) {
            return (rtp, rtcp);
        }
    }
    panic!("no two adjacent free UDP ports on {ip}");
}

/// A call set up through `U` and `L`: each party's RTP and RTCP sockets and
/// the relay address each must send its RTP to (RTCP: the next port).
struct Call {
    call_id: Vec<u8>,
    /// The creating from-tag, with its media number.
    from_tag: String,
    caller: Peer,
    caller_rtcp: Peer,
    callee: Peer,
    callee_rtcp: Peer,
    to_caller_leg: SocketAddr,
    to_callee_leg: SocketAddr,
}

impl Call {
    /// A command about this call: `VERB CALLID ARGS`.
    fn command(&self, rp: &Rtpproxy, verb: &str, args: &str) -> String {
        let mut cmd = format!("{verb} ").into_bytes();
        cmd.extend_from_slice(&self.call_id);
        cmd.push(b' ');
        cmd.extend_from_slice(args.as_bytes());
        rp.command_bytes(&cmd)
    }

    /// The recording file name of this call for a suffix like `o.rtp`, as
    /// the daemon encodes it (printable Call-IDs only).
    fn file(&self, suffix: &str) -> String {
        format!(
            "{}={}.{suffix}",
            String::from_utf8_lossy(&self.call_id),
            self.from_tag
        )
    }
}

fn rtcp_of(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip(), a.port() + 1)
}

/// Offer from the caller (`U`), answer from the callee (`L`), on `ip`.
fn setup_call(rp: &Rtpproxy, call_id: &[u8], ip: &str) -> Call {
    setup_stream(rp, call_id, ip, 1)
}

/// Media stream `n` of a call: tags `ftag;N` and `ttag;N`.
fn setup_stream(rp: &Rtpproxy, call_id: &[u8], ip: &str, n: u32) -> Call {
    let (from_tag, to_tag) = (format!("ftag;{n}"), format!("ttag;{n}"));
    let six = if ip.contains(':') { "6" } else { "" };
    let (caller, caller_rtcp) = peer_pair(ip);
    let (callee, callee_rtcp) = peer_pair(ip);
    let mut call = Call {
        call_id: call_id.to_vec(),
        from_tag: from_tag.clone(),
        caller,
        caller_rtcp,
        callee,
        callee_rtcp,
        to_caller_leg: SocketAddr::from(([0, 0, 0, 0], 0)),
        to_callee_leg: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let u = call.command(
        rp,
        &format!("U{six}"),
        &format!("{ip} {} {from_tag}", call.caller.port()),
    );
    let l = call.command(
        rp,
        &format!("L{six}"),
        &format!("{ip} {} {from_tag} {to_tag}", call.callee.port()),
    );
    call.to_callee_leg = reply_addr(&u, ip);
    call.to_caller_leg = reply_addr(&l, ip);
    call
}

/// An RTP packet: version 2, `pt`, `seq`, `ts`, `ssrc`, then `payload`.
fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Packet `k` of a scripted party: 160 payload bytes that differ per packet
/// and per party, so that a swapped or repeated packet shows.
fn scripted_rtp(ssrc: u32, k: usize) -> Vec<u8> {
    let fill = (ssrc as u8) ^ (k as u8).wrapping_mul(31);
    let payload: Vec<u8> = (0..160u8).map(|i| fill.wrapping_add(i)).collect();
    let seq = ((ssrc >> 16) as u16).wrapping_add(k as u16);
    rtp(0, seq, (k as u32) * 160, ssrc, &payload)
}

/// RTCP packet `k` of a scripted party: a sender report shape, 28 bytes.
fn scripted_rtcp(ssrc: u32, k: usize) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..20u8).map(|i| i ^ k as u8 ^ ssrc as u8));
    p
}

/// What each party sent.
#[derive(Default)]
struct Sent {
    caller_rtp: Vec<Vec<u8>>,
    callee_rtp: Vec<Vec<u8>>,
    caller_rtcp: Vec<Vec<u8>>,
    callee_rtcp: Vec<Vec<u8>>,
}

impl Sent {
    fn extend(&mut self, more: Sent) {
        self.caller_rtp.extend(more.caller_rtp);
        self.callee_rtp.extend(more.callee_rtp);
        self.caller_rtcp.extend(more.caller_rtcp);
        self.callee_rtcp.extend(more.callee_rtcp);
    }
}

/// Sends `p` from `from` to `to` and waits until `at` got exactly it from
/// `via` (the relay's other leg).
fn cross(rp: &Rtpproxy, from: &Peer, to: SocketAddr, at: &Peer, via: SocketAddr, p: &[u8]) {
    from.send(to, p);
    match at.recv_within(2000) {
        Some((got, src)) if got == p && src == via => {}
        other => panic!(
            "packet from {} to {to} not relayed intact to {} from {via}: got {:?}\ndaemon log:\n{}",
            from.addr(),
            at.addr(),
            other.map(|(d, s)| (d.len(), s)),
            rp.log()
        ),
    }
}

/// Media both ways in lock step, packets `first..first + n` of each party:
/// each packet is sent once the previous one has crossed the relay, and
/// after every `RTCP_EVERY` RTP packets one RTCP packet goes each way.
fn exchange(rp: &Rtpproxy, call: &Call, first: usize, n: usize) -> Sent {
    let mut sent = Sent::default();
    for k in first..first + n {
        let p = scripted_rtp(CALLER_SSRC, k);
        cross(
            rp,
            &call.caller,
            call.to_caller_leg,
            &call.callee,
            call.to_callee_leg,
            &p,
        );
        sent.caller_rtp.push(p);
        let q = scripted_rtp(CALLEE_SSRC, k);
        cross(
            rp,
            &call.callee,
            call.to_callee_leg,
            &call.caller,
            call.to_caller_leg,
            &q,
        );
        sent.callee_rtp.push(q);
        if k % RTCP_EVERY == RTCP_EVERY - 1 {
            let p = scripted_rtcp(CALLER_SSRC, k);
            cross(
                rp,
                &call.caller_rtcp,
                rtcp_of(call.to_caller_leg),
                &call.callee_rtcp,
                rtcp_of(call.to_callee_leg),
                &p,
            );
            sent.caller_rtcp.push(p);
            let q = scripted_rtcp(CALLEE_SSRC, k);
            cross(
                rp,
                &call.callee_rtcp,
                rtcp_of(call.to_callee_leg),
                &call.caller_rtcp,
                rtcp_of(call.to_caller_leg),
                &q,
            );
            sent.callee_rtcp.push(q);
        }
    }
    sent
}

/// The span of wall-clock time packets were sent in; every recorded
/// arrival time must fall inside it.
struct Window {
    start: f64,
    end: f64,
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

impl Window {
    fn open() -> Window {
        let now = epoch_seconds(SystemTime::now());
        Window {
            start: now,
            end: now,
        }
    }

    fn close(&mut self) {
        self.end = epoch_seconds(SystemTime::now());
    }

    fn contains(&self, t: f64) -> bool {
        // The f64 of the file keeps well under a microsecond; allow one
        // millisecond for it and the clock's granularity.
        t >= self.start - 1e-3 && t <= self.end + 1e-3
    }
}

/// Checks an ad-hoc recording field by field: per packet a 40-byte header
/// (host order: family, port in network order, the sender's address
/// zero-padded to 16 bytes, 4 bytes of padding, the arrival time as an f64,
/// the length, 6 bytes of padding) and then exactly the packet sent.
fn assert_adhoc(path: &Path, sender: SocketAddr, want: &[Vec<u8>], window: &Window) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let expected_len: usize = want.iter().map(|p| ADHOC_HEADER + p.len()).sum();
    assert_eq!(
        bytes.len(),
        expected_len,
        "{}: {} packets of 40 + their length bytes",
        path.display(),
        want.len()
    );
    let name = path.display();
    let mut at = 0;
    let mut last_time = 0.0;
    for (k, p) in want.iter().enumerate() {
        let h = &bytes[at..at + ADHOC_HEADER];
        let u16_ne = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        match sender.ip() {
            IpAddr::V4(ip) => {
                assert_eq!(u16_ne(0), 2, "{name} packet {k}: family AF_INET");
                assert_eq!(&h[4..8], &ip.octets(), "{name} packet {k}: address");
                assert_eq!(&h[8..20], &[0; 12], "{name} packet {k}: address padding");
            }
            IpAddr::V6(ip) => {
                assert_eq!(u16_ne(0), 10, "{name} packet {k}: family AF_INET6");
                assert_eq!(&h[4..20], &ip.octets(), "{name} packet {k}: address");
            }
        }
        assert_eq!(
            u16::from_be_bytes([h[2], h[3]]),
            sender.port(),
            "{name} packet {k}: port in network order"
        );
        assert_eq!(
            &h[20..24],
            &[0; 4],
            "{name} packet {k}: padding before time"
        );
        let mut t = [0u8; 8];
        t.copy_from_slice(&h[24..32]);
        let t = f64::from_ne_bytes(t);
        assert!(
            window.contains(t),
            "{name} packet {k}: arrival {t} outside {}..{}",
            window.start,
            window.end
        );
        assert!(t >= last_time, "{name} packet {k}: arrival goes back");
        last_time = t;
        assert_eq!(
            usize::from(u16_ne(32)),
            p.len(),
            "{name} packet {k}: length"
        );
        assert_eq!(&h[34..40], &[0; 6], "{name} packet {k}: tail padding");
        assert_eq!(
            &bytes[at + ADHOC_HEADER..at + ADHOC_HEADER + p.len()],
            &p[..],
            "{name} packet {k}: bytes"
        );
        at += ADHOC_HEADER + p.len();
    }
}

/// Checks every recording of a scripted call made with `R`.
fn assert_call_recorded(dir: &Path, call: &Call, sent: &Sent, window: &Window, rtcp: bool) {
    let mut want = vec![call.file("o.rtp"), call.file("a.rtp")];
    if rtcp {
        want.extend([call.file("o.rtcp"), call.file("a.rtcp")]);
    }
    assert_eq!(
        names(dir),
        want.iter().cloned().collect(),
        "{}",
        dir.display()
    );
    assert_adhoc(
        &dir.join(call.file("o.rtp")),
        call.caller.addr(),
        &sent.caller_rtp,
        window,
    );
    assert_adhoc(
        &dir.join(call.file("a.rtp")),
        call.callee.addr(),
        &sent.callee_rtp,
        window,
    );
    if rtcp {
        assert_adhoc(
            &dir.join(call.file("o.rtcp")),
            call.caller_rtcp.addr(),
            &sent.caller_rtcp,
            window,
        );
        assert_adhoc(
            &dir.join(call.file("a.rtcp")),
            call.callee_rtcp.addr(),
            &sent.callee_rtcp,
            window,
        );
    }
}

/// Names of the entries of `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Every file below `dir`, at any depth.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Polls `ready` every 50 ms for at most `limit`.
fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon's log lines at level ERR.
fn error_lines(rp: &Rtpproxy) -> Vec<String> {
    rp.log()
        .lines()
        .filter(|l| l.contains(" ERR:"))
        .map(str::to_owned)
        .collect()
}

/// Fails unless the tests run as root (they mount file systems).
fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root to mount a tmpfs: run the tests as root (CI does)"
    );
}

/// A tmpfs mounted for one test; unmounted on drop, also when the test
/// fails (lazily if something still holds it).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs -o {options} failed");
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "remounting {} read-only",
            self.dir.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.dir).status();
        if !plain.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn r_records_each_direction_in_classic_format() {
    let rec = TempDir::new("rec-adhoc");
    let rp = daemon(&["-r", path_str(rec.path())]);
    let call = setup_call(&rp, b"adhoc1@host", "127.0.0.1");
    assert_eq!(call.command(&rp, "R", &format!("{FROM_TAG} {TO_TAG}")), "0");
    let mut window = Window::open();
    let sent = exchange(&rp, &call, 0, PACKETS);
    window.close();
    assert_eq!(call.command(&rp, "D", &format!("{FROM_TAG} {TO_TAG}")), "0");
    // 50 RTP packets of 172 bytes each way, 5 RTCP packets of 28.
    let o_rtp = rec.path().join(call.file("o.rtp"));
    assert_eq!(
        std::fs::metadata(&o_rtp).expect("o.rtp").len(),
        (PACKETS * (ADHOC_HEADER + 172)) as u64
    );
    let a_rtcp = rec.path().join(call.file("a.rtcp"));
    assert_eq!(
        std::fs::metadata(&a_rtcp).expect("a.rtcp").len(),
        (PACKETS / RTCP_EVERY * (ADHOC_HEADER + 28)) as u64
    );
    assert_call_recorded(rec.path(), &call, &sent, &window, true);
}

#[test]
fn r_without_media_number_records_every_stream() {
    let rec = TempDir::new("rec-streams");
    let rp = daemon(&["-r", path_str(rec.path())]);
    let first = setup_stream(&rp, b"streams@host", "127.0.0.1", 1);
    let second = setup_stream(&rp, b"streams@host", "127.0.0.1", 2);
    // As Kamailio's start_recording() sends it: tags without media numbers.
    assert_eq!(first.command(&rp, "R", "ftag ttag"), "0");
    let mut window = Window::open();
    let sent_first = exchange(&rp, &first, 0, PACKETS);
    let sent_second = exchange(&rp, &second, 100, PACKETS);
    window.close();
    assert_eq!(first.command(&rp, "D", "ftag ttag"), "0");
    let (rec_first, rec_second) = (rec.path().join("1"), rec.path().join("2"));
    for (dir, call) in [(&rec_first, &first), (&rec_second, &second)] {
        std::fs::create_dir(dir).expect("create sorting directory");
        for suffix in ["o.rtp", "a.rtp", "o.rtcp", "a.rtcp"] {
            let name = call.file(suffix);
            std::fs::rename(rec.path().join(&name), dir.join(&name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    assert_eq!(names(rec.path()), ["1", "2"].map(String::from).into());
    assert_call_recorded(&rec_first, &first, &sent_first, &window, true);
    assert_call_recorded(&rec_second, &second, &sent_second, &window, true);
}

/// Packets each party sends right before TERM, without waiting.
const BURST: usize = 100;

/// How a spooled test call ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Delete,
    Timeout,
    DeleteAll,
    Terminate,
}

/// Records a call through `-S`, checks that the files are in the spool
/// while it runs, ends it as `end` says and checks that the complete files
/// are then in `-r` and nothing is left in the spool.
fn spool_scenario(end: End) {
    let rec = TempDir::new("rec-final");
    let spool = TempDir::new("rec-spool");
    let mut args = vec!["-r", path_str(rec.path()), "-S", path_str(spool.path())];
    if matches!(end, End::Timeout) {
        args.extend(["-T", "2"]);
    }
    let mut rp = daemon(&args);
    let call_id = format!("spool-{end:?}@host");
    let call = setup_call(&rp, call_id.as_bytes(), "127.0.0.1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    let mut window = Window::open();
    let mut sent = exchange(&rp, &call, 0, PACKETS);
    // Across a 1-second flush, so that part of the call is on disk and
    // part still buffered when the session ends.
    std::thread::sleep(Duration::from_millis(1100));
    sent.extend(exchange(&rp, &call, PACKETS, PACKETS));
    if matches!(end, End::Terminate) {
        // A burst the relay has not read yet when the signal comes (small
        // enough for the socket buffers): sent before TERM, so recorded.
        for k in 2 * PACKETS..2 * PACKETS + BURST {
            let (p, q) = (scripted_rtp(CALLER_SSRC, k), scripted_rtp(CALLEE_SSRC, k));
            call.caller.send(call.to_caller_leg, &p);
            call.callee.send(call.to_callee_leg, &q);
            sent.caller_rtp.push(p);
            sent.callee_rtp.push(q);
        }
    }
    let all: BTreeSet<String> = ["o.rtp", "a.rtp", "o.rtcp", "a.rtcp"]
        .iter()
        .map(|s| call.file(s))
        .collect();
    assert_eq!(names(spool.path()), all, "spooled while the call runs");
    assert!(
        names(rec.path()).is_empty(),
        "nothing in -r during the call"
    );
    match end {
        End::Delete => assert_eq!(call.command(&rp, "D", FROM_TAG), "0"),
        End::DeleteAll => assert_eq!(rp.command("X"), "0"),
        End::Timeout => {
            let moved = wait_for(Duration::from_secs(6), || names(rec.path()) == all);
            assert!(moved, "not moved on timeout:\n{}", rp.log());
            assert!(rp.log().contains("(Timeout)"), "{}", rp.log());
        }
        End::Terminate => {
            // Signalled directly, within microseconds of the burst.
            let pid = nix::unistd::Pid::from_raw(rp.pid() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("TERM");
            let status = rp.terminate().expect("daemon ends on TERM");
            assert!(status.success(), "{status}:\n{}", rp.log());
        }
    }
    // Packets still queued at TERM are read, and stamped, during shutdown.
    window.close();
    assert!(
        names(spool.path()).is_empty(),
        "spool left: {:?}",
        names(spool.path())
    );
    assert_call_recorded(rec.path(), &call, &sent, &window, true);
}

#[test]
fn spool_is_emptied_on_delete() {
    spool_scenario(End::Delete);
}

#[test]
fn spool_is_emptied_on_timeout() {
    spool_scenario(End::Timeout);
}

#[test]
fn spool_is_emptied_on_delete_all() {
    spool_scenario(End::DeleteAll);
}

#[test]
fn spool_is_emptied_on_terminate_losing_nothing() {
    spool_scenario(End::Terminate);
}

#[test]
fn big_r_option_records_no_rtcp() {
    let rec = TempDir::new("rec-norctp");
    let rp = daemon(&["-R", "-r", path_str(rec.path())]);
    let call = setup_call(&rp, b"nortcp@host", "127.0.0.1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    let mut window = Window::open();
    let sent = exchange(&rp, &call, 0, PACKETS);
    window.close();
    assert!(!sent.caller_rtcp.is_empty(), "RTCP was relayed");
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    assert_call_recorded(rec.path(), &call, &sent, &window, false);
}

#[test]
fn a_option_records_from_creation() {
    let rec = TempDir::new("rec-all");
    let rp = daemon(&["-a", "-r", path_str(rec.path())]);
    let mut window = Window::open();
    let call = setup_call(&rp, b"all1@host", "127.0.0.1");
    let all: BTreeSet<String> = ["o.rtp", "a.rtp", "o.rtcp", "a.rtcp"]
        .iter()
        .map(|s| call.file(s))
        .collect();
    assert_eq!(names(rec.path()), all, "recording since U, without R");
    let mut sent = exchange(&rp, &call, 0, PACKETS / 2);
    // R on a session already recorded keeps its channels: no second file.
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    sent.extend(exchange(&rp, &call, PACKETS / 2, PACKETS / 2));
    window.close();
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    assert_call_recorded(rec.path(), &call, &sent, &window, true);
}

#[test]
fn a_option_leaves_nothing_of_a_refused_session() {
    let rec = TempDir::new("rec-refused");
    // Two port pairs: one session of two legs takes them all.
    let s = format!("udp:127.0.0.1:{}", port());
    let (m, mm) = ports(4).range();
    let rp = Rtpproxy::start(&[
        "-s",
        &s,
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
        "-a",
        "-r",
        path_str(rec.path()),
    ]);
    let call = setup_call(&rp, b"first@host", "127.0.0.1");
    assert_eq!(rp.command("U second@host 127.0.0.1 4000 ftag;1"), "E10");
    let first: BTreeSet<String> = ["o.rtp", "a.rtp", "o.rtcp", "a.rtcp"]
        .iter()
        .map(|s| call.file(s))
        .collect();
    assert_eq!(names(rec.path()), first, "no files for the refused call");
}

/// Everything that arrives at `peer` until it has been quiet for 300 ms.
fn collect(peer: &Peer) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some((p, _)) = peer.recv_within(300) {
        got.push(p);
        assert!(got.len() < 10_000, "endless stream at {}", peer.addr());
    }
    got
}

#[test]
fn copy_to_udp_forwards_one_party() {
    // No -r: copies to UDP need no directory.
    let rp = daemon(&[]);
    let call = setup_call(&rp, b"copyudp@host", "127.0.0.1");
    let (caller_copy, caller_copy_rtcp) = peer_pair("127.0.0.1");
    let (callee_copy, callee_copy_rtcp) = peer_pair("127.0.0.1");
    // The FROMTAG party's media: the caller's with the tags in order, the
    // callee's with them swapped.
    let to_caller_copy = format!("udp:127.0.0.1:{} {FROM_TAG}", caller_copy.port());
    assert_eq!(call.command(&rp, "C", &to_caller_copy), "0");
    let to_callee_copy = format!("udp:127.0.0.1:{} {TO_TAG} {FROM_TAG}", callee_copy.port());
    assert_eq!(call.command(&rp, "C", &to_callee_copy), "0");
    let sent = exchange(&rp, &call, 0, PACKETS);
    assert_eq!(collect(&caller_copy), sent.caller_rtp, "caller's RTP copy");
    assert_eq!(
        collect(&caller_copy_rtcp),
        sent.caller_rtcp,
        "caller's RTCP copy on PORT+1"
    );
    assert_eq!(collect(&callee_copy), sent.callee_rtp, "callee's RTP copy");
    assert_eq!(
        collect(&callee_copy_rtcp),
        sent.callee_rtcp,
        "callee's RTCP copy on PORT+1"
    );
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
}

#[test]
fn copy_to_file_records_one_party() {
    let rec = TempDir::new("rec-copy");
    let rp = daemon(&["-r", path_str(rec.path())]);
    let call = setup_call(&rp, b"copyfile@host", "127.0.0.1");
    assert_eq!(
        call.command(&rp, "C", &format!("caller-copy {FROM_TAG}")),
        "0"
    );
    assert_eq!(
        call.command(&rp, "C", &format!("callee-copy {TO_TAG} {FROM_TAG}")),
        "0"
    );
    let mut window = Window::open();
    let sent = exchange(&rp, &call, 0, PACKETS);
    window.close();
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    let want: BTreeSet<String> = [
        "caller-copy.rtp",
        "caller-copy.rtcp",
        "callee-copy.rtp",
        "callee-copy.rtcp",
    ]
    .map(String::from)
    .into();
    assert_eq!(names(rec.path()), want);
    let at = |n: &str| rec.path().join(n);
    assert_adhoc(
        &at("caller-copy.rtp"),
        call.caller.addr(),
        &sent.caller_rtp,
        &window,
    );
    assert_adhoc(
        &at("caller-copy.rtcp"),
        call.caller_rtcp.addr(),
        &sent.caller_rtcp,
        &window,
    );
    assert_adhoc(
        &at("callee-copy.rtp"),
        call.callee.addr(),
        &sent.callee_rtp,
        &window,
    );
    assert_adhoc(
        &at("callee-copy.rtcp"),
        call.callee_rtcp.addr(),
        &sent.callee_rtcp,
        &window,
    );
}

#[test]
fn copy_to_file_keeps_a_running_r_recording() {
    let rec = TempDir::new("rec-r-then-c");
    let rp = daemon(&["-r", path_str(rec.path())]);
    let call = setup_call(&rp, b"rthenc@host", "127.0.0.1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    let mut window = Window::open();
    let mut sent = exchange(&rp, &call, 0, PACKETS / 2);
    // The caller's direction is recorded already: C must not cut it short.
    assert_eq!(
        call.command(&rp, "C", &format!("late-copy {FROM_TAG}")),
        "0"
    );
    sent.extend(exchange(&rp, &call, PACKETS / 2, PACKETS / 2));
    window.close();
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    assert_call_recorded(rec.path(), &call, &sent, &window, true);
}

/// Undoes the `%XX` escapes of a recording file name.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex escape");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn hostile_call_ids_stay_inside_the_directory() {
    // -r and -S sit two levels below the directory that is listed, so that
    // an escape by `..` would show in the listing.
    let base = TempDir::new("rec-hostile");
    let rec = base.path().join("a/b/rec");
    let spool = base.path().join("a/b/spool");
    std::fs::create_dir_all(&rec).expect("create -r");
    std::fs::create_dir_all(&spool).expect("create -S");
    let rp = daemon(&["-r", path_str(&rec), "-S", path_str(&spool)]);
    let call_ids: [&[u8]; 3] = [
        b"../../../../escaped\xff\x80@host",
        b"/tmp/../../etc/x=y%2F..",
        b"..",
    ];
    let mut calls = Vec::new();
    for call_id in call_ids {
        let call = setup_call(&rp, call_id, "127.0.0.1");
        assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
        exchange(&rp, &call, 0, RTCP_EVERY);
        calls.push(call);
    }
    // C names a file itself: one for each party.
    let copy = setup_call(&rp, b"copy@host", "127.0.0.1");
    assert_eq!(
        copy.command(&rp, "C", &format!("../../copied {FROM_TAG}")),
        "0"
    );
    assert_eq!(
        copy.command(&rp, "C", &format!("/etc/passwd {TO_TAG} {FROM_TAG}")),
        "0"
    );
    exchange(&rp, &copy, 0, RTCP_EVERY);
    calls.push(copy);
    // A Call-ID too long for a file name: logged, no file, media flows.
    let long_id = [b'L'; 300];
    let long = setup_call(&rp, &long_id, "127.0.0.1");
    assert_eq!(long.command(&rp, "R", FROM_TAG), "0");
    exchange(&rp, &long, 0, RTCP_EVERY);
    let too_long = error_lines(&rp)
        .iter()
        .filter(|l| l.contains("File name too long"))
        .count();
    assert_eq!(too_long, 4, "one ERR line per channel:\n{}", rp.log());
    calls.push(long);
    for call in &calls {
        assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    }
    let mut files = Vec::new();
    walk(base.path(), &mut files);
    for f in &files {
        assert_eq!(f.parent(), Some(rec.as_path()), "{} escaped", f.display());
    }
    let mut recorded: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut copies = BTreeSet::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).expect("ASCII name");
        assert!(!name.starts_with('.'), "hidden or dot name {name}");
        match name.split_once('=') {
            Some((call_id, rest)) => {
                assert!(rest.starts_with("ftag;1."), "{name}");
                *recorded.entry(percent_decode(call_id)).or_default() += 1;
            }
            None => {
                copies.insert(name.to_owned());
            }
        }
    }
    let want: BTreeMap<Vec<u8>, usize> = call_ids.iter().map(|c| (c.to_vec(), 4)).collect();
    assert_eq!(recorded, want, "R file names decode back to the Call-IDs");
    let want: BTreeSet<String> = [
        "%2E.%2F..%2Fcopied.rtp",
        "%2E.%2F..%2Fcopied.rtcp",
        "%2Fetc%2Fpasswd.rtp",
        "%2Fetc%2Fpasswd.rtcp",
    ]
    .map(String::from)
    .into();
    assert_eq!(copies, want, "C file names");
    assert_eq!(rp.command("V"), "20040107");
}

#[test]
fn full_directory_stops_only_that_recording() {
    require_root("full_directory_stops_only_that_recording");
    let base = TempDir::new("rec-full");
    let dir = base.path().join("tiny");
    std::fs::create_dir(&dir).expect("create mount point");
    let _tmpfs = Tmpfs::mount(&dir, "size=64k");
    // Declared after the mount: the daemon is stopped before the unmount.
    let rp = daemon(&["-r", path_str(&dir)]);
    let call = setup_call(&rp, b"full@host", "127.0.0.1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    // A few packets each way reach the disk at the next 1-second flush,
    // while there is room.
    let mut sent = exchange(&rp, &call, 0, 5);
    std::thread::sleep(Duration::from_millis(1200));
    // Then the caller alone sends far more than 64 KiB.
    const FLOOD: usize = 500;
    for k in 5..5 + FLOOD {
        let p = scripted_rtp(CALLER_SSRC, k);
        cross(
            &rp,
            &call.caller,
            call.to_caller_leg,
            &call.callee,
            call.to_callee_leg,
            &p,
        );
        sent.caller_rtp.push(p);
    }
    std::thread::sleep(Duration::from_millis(1200));
    // Relaying goes on both ways.
    sent.extend(exchange(&rp, &call, 5 + FLOOD, 5));
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    assert_eq!(rp.command("V"), "20040107");

    let errors = error_lines(&rp);
    let o_rtp = call.file("o.rtp");
    let about_o: Vec<&String> = errors.iter().filter(|l| l.contains(&o_rtp)).collect();
    assert_eq!(
        about_o.len(),
        1,
        "one ERR line for the full recording, got {errors:#?}"
    );
    assert!(about_o[0].contains("No space left"), "{}", about_o[0]);
    // No recording is reported more than once.
    for name in names(&dir) {
        let n = errors.iter().filter(|l| l.contains(&name)).count();
        assert!(n <= 1, "{n} ERR lines about {name}: {errors:#?}");
    }
    // The partial file is kept and holds the start of the call.
    let kept = std::fs::read(dir.join(&o_rtp)).expect("partial recording kept");
    assert!(kept.len() <= 64 * 1024);
    let packets = read_recording(&kept).expect("partial recording readable");
    assert!(
        !packets.is_empty() && packets.len() < sent.caller_rtp.len(),
        "{} of {} packets recorded",
        packets.len(),
        sent.caller_rtp.len()
    );
    for (k, p) in packets.iter().enumerate() {
        assert_eq!(p.data, sent.caller_rtp[k], "packet {k} of the partial file");
        assert_eq!(p.src, call.caller.addr());
    }
}

#[test]
fn missing_directory_is_logged_and_relaying_goes_on() {
    let base = TempDir::new("rec-missing");
    let rec = base.path().join("rec");
    std::fs::create_dir(&rec).expect("create -r");
    let rp = daemon(&["-r", path_str(&rec)]);
    std::fs::remove_dir(&rec).expect("remove -r");
    let call = setup_call(&rp, b"missing@host", "127.0.0.1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    exchange(&rp, &call, 0, PACKETS);
    assert!(
        rp.command(&format!("Q missing@host {FROM_TAG}"))
            .ends_with(&format!(" {PACKETS} {PACKETS} {} 0", 2 * PACKETS)),
        "{}",
        rp.log()
    );
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    let errors = error_lines(&rp);
    assert!(
        errors
            .iter()
            .any(|l| l.contains("can't create recording") && l.contains("No such file")),
        "{errors:#?}"
    );
    assert!(!rec.exists());
}

#[test]
fn missing_final_directory_keeps_the_spooled_file() {
    let base = TempDir::new("rec-gone");
    let rec = base.path().join("rec");
    let spool = base.path().join("spool");
    std::fs::create_dir(&rec).expect("create -r");
    std::fs::create_dir(&spool).expect("create -S");
    let rp = daemon(&["-r", path_str(&rec), "-S", path_str(&spool)]);
    let call = setup_call(&rp, b"gone@host", "127.0.0.1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    let mut window = Window::open();
    let sent = exchange(&rp, &call, 0, PACKETS);
    std::fs::remove_dir(&rec).expect("remove -r");
    let more = exchange(&rp, &call, PACKETS, PACKETS);
    window.close();
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    assert_eq!(rp.command("V"), "20040107");
    let errors = error_lines(&rp);
    for suffix in ["o.rtp", "a.rtp", "o.rtcp", "a.rtcp"] {
        let n = errors
            .iter()
            .filter(|l| l.contains("can't move") && l.contains(&call.file(suffix)))
            .count();
        assert_eq!(n, 1, "one ERR line about {suffix}: {errors:#?}");
    }
    // Nothing is lost: the files stay in the spool, complete.
    let mut all = sent;
    all.extend(more);
    assert_call_recorded(&spool, &call, &all, &window, true);
}

#[test]
fn read_only_directory_is_logged_and_relaying_goes_on() {
    require_root("read_only_directory_is_logged_and_relaying_goes_on");
    let base = TempDir::new("rec-ro");
    let dir = base.path().join("ro");
    std::fs::create_dir(&dir).expect("create mount point");
    let tmpfs = Tmpfs::mount(&dir, "size=64k");
    // A read-only -r is refused at start-up; one that turns read-only
    // while the daemon runs must cost only the recordings.
    let rp = daemon(&["-r", path_str(&dir)]);
    tmpfs.remount_read_only();
    let call = setup_call(&rp, b"ro@host", "127.0.0.1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    exchange(&rp, &call, 0, PACKETS);
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    let errors = error_lines(&rp);
    let about: Vec<&String> = errors
        .iter()
        .filter(|l| l.contains("can't create recording") && l.contains("Read-only"))
        .collect();
    assert_eq!(about.len(), 4, "one ERR line per channel: {errors:#?}");
    assert!(names(&dir).is_empty());
}

/// Decodes a PCAP file with tshark, the given UDP port taken as RTP, and
/// returns (sequence number, payload type) per packet.
fn tshark_rtp(file: &Path, port: u16) -> Vec<(u16, u8)> {
    let out = match Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-d", &format!("udp.port=={port},rtp")])
        .args(["-T", "fields", "-e", "rtp.seq", "-e", "rtp.p_type"])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("tshark is not installed: apt-get install tshark")
        }
        Err(e) => panic!("running tshark: {e}"),
    };
    assert!(
        out.status.success(),
        "tshark rejected {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let mut f = line.split('\t');
            let seq = f.next().and_then(|s| s.parse().ok());
            let pt = f.next().and_then(|s| s.parse().ok());
            match (seq, pt) {
                (Some(seq), Some(pt)) => (seq, pt),
                _ => panic!("{}: a packet not decoded as RTP: {line:?}", file.display()),
            }
        })
        .collect()
}

/// What tshark should find for packets sent: their seq and payload type.
fn seq_and_pt(packets: &[Vec<u8>]) -> Vec<(u16, u8)> {
    packets
        .iter()
        .map(|p| (u16::from_be_bytes([p[2], p[3]]), p[1] & 0x7f))
        .collect()
}

fn pcap_scenario(rp: &Rtpproxy, ip: &str, rec: &Path) {
    let call = setup_call(rp, b"pcap@host", ip);
    assert_eq!(call.command(rp, "R", FROM_TAG), "0");
    let sent = exchange(rp, &call, 0, PACKETS);
    assert_eq!(call.command(rp, "D", FROM_TAG), "0");
    // Each file holds what arrived on one leg of the relay: decode that
    // port as RTP.
    let o = rec.join(call.file("o.rtp"));
    let a = rec.join(call.file("a.rtp"));
    assert_eq!(
        tshark_rtp(&o, call.to_caller_leg.port()),
        seq_and_pt(&sent.caller_rtp),
        "{}",
        o.display()
    );
    assert_eq!(
        tshark_rtp(&a, call.to_callee_leg.port()),
        seq_and_pt(&sent.callee_rtp),
        "{}",
        a.display()
    );
    // The synthesized headers carry the real addresses.
    let packets = read_recording(&std::fs::read(&o).expect("read o.rtp")).expect("parse o.rtp");
    assert_eq!(packets.len(), PACKETS);
    for (p, want) in packets.iter().zip(&sent.caller_rtp) {
        assert_eq!(p.src, call.caller.addr());
        assert_eq!(p.dst, Some(call.to_caller_leg));
        assert_eq!(&p.data, want);
    }
}

#[test]
fn pcap_recording_decodes_as_rtp_ipv4() {
    let rec = TempDir::new("rec-pcap4");
    let rp = daemon(&["-P", "-r", path_str(rec.path())]);
    pcap_scenario(&rp, "127.0.0.1", rec.path());
}

#[test]
fn pcap_recording_decodes_as_rtp_ipv6() {
    let rec = TempDir::new("rec-pcap6");
    let rp = daemon6(&["-P", "-r", path_str(rec.path())]);
    pcap_scenario(&rp, "::1", rec.path());
}

#[test]
fn ipv6_senders_fill_the_adhoc_address_block() {
    let rec = TempDir::new("rec-adhoc6");
    let rp = daemon6(&["-r", path_str(rec.path())]);
    let call = setup_call(&rp, b"adhoc6@host", "::1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    let mut window = Window::open();
    let sent = exchange(&rp, &call, 0, PACKETS);
    window.close();
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");
    assert_call_recorded(rec.path(), &call, &sent, &window, true);
}

/// Sample rate of G.711.
const RATE: usize = 8000;
/// Samples per 20 ms packet.
const FRAME: usize = 160;
/// Packets in the 2-second call.
const AUDIO_PACKETS: usize = 100;

/// The caller's tone (1 kHz) and the callee's (440 Hz, quieter), as sent.
fn tone(hz: f64, amplitude: f64, n: usize) -> i16 {
    let t = n as f64 / RATE as f64;
    (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16
}

/// What a tone is after a trip through µ-law.
fn quantised(hz: f64, amplitude: f64) -> Vec<i16> {
    (0..AUDIO_PACKETS * FRAME)
        .map(|n| ulaw_to_linear(linear_to_ulaw(tone(hz, amplitude, n))))
        .collect()
}

/// Runs extractaudio and fails with its stderr when it fails.
fn extractaudio(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_extractaudio"))
        .args(args)
        .output()
        .expect("run extractaudio");
    assert!(
        out.status.success(),
        "extractaudio {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sox --i` must accept the file; returns (channels, duration in seconds).
fn sox_info(path: &Path) -> (u32, f64) {
    let query = |flag: &str| -> String {
        let out = match Command::new("sox").args(["--i", flag]).arg(path).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("sox is not installed: apt-get install sox")
            }
            Err(e) => panic!("running sox: {e}"),
        };
        assert!(
            out.status.success(),
            "sox --i {flag} rejected {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(query("-r"), "8000", "sample rate");
    assert_eq!(query("-b"), "16", "bits per sample");
    let channels = query("-c").parse().expect("channel count");
    let duration = query("-D").parse().expect("duration");
    (channels, duration)
}

/// The samples of a 16-bit PCM WAV as extractaudio writes it (44-byte
/// header), one Vec per channel.
fn wav_channels(path: &Path, channels: usize) -> Vec<Vec<i16>> {
    let b = std::fs::read(path).expect("read WAV");
    assert!(
        b.len() >= 44 && &b[36..40] == b"data",
        "plain 44-byte header"
    );
    let mut out = vec![Vec::new(); channels];
    for (i, s) in b[44..].chunks_exact(2).enumerate() {
        out[i % channels].push(i16::from_le_bytes([s[0], s[1]]));
    }
    out
}

/// Finds `want` in `got` (silence around it allowed) and returns its offset.
fn find_exact(got: &[i16], want: &[i16], what: &str) -> usize {
    let slack = got.len().checked_sub(want.len()).unwrap_or_else(|| {
        panic!(
            "{what}: {} samples, shorter than the {} sent",
            got.len(),
            want.len()
        )
    });
    let offset = (0..=slack)
        .find(|&d| got[d..d + want.len()] == *want)
        .unwrap_or_else(|| panic!("{what}: the audio sent is not in the output"));
    let outside = got[..offset].iter().chain(&got[offset + want.len()..]);
    assert!(outside.into_iter().all(|&s| s == 0), "{what}: noise around");
    offset
}

#[test]
fn extractaudio_gives_back_the_call_audio() {
    let rec = TempDir::new("rec-audio");
    let rp = daemon(&["-r", path_str(rec.path())]);
    let call = setup_call(&rp, b"audio@host", "127.0.0.1");
    assert_eq!(call.command(&rp, "R", FROM_TAG), "0");
    let (o_hz, o_amp, a_hz, a_amp) = (1000.0, 12000.0, 440.0, 5000.0);
    // Both parties send 20 ms PCMU packets in real time for 2 s.
    let start = Instant::now();
    for k in 0..AUDIO_PACKETS {
        let due = start + Duration::from_millis(20 * k as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let ts = (k * FRAME) as u32;
        let samples = k * FRAME..(k + 1) * FRAME;
        let o: Vec<u8> = samples
            .clone()
            .map(|n| linear_to_ulaw(tone(o_hz, o_amp, n)))
            .collect();
        let a: Vec<u8> = samples
            .map(|n| linear_to_ulaw(tone(a_hz, a_amp, n)))
            .collect();
        let mut p = rtp(0, 4000 + k as u16, 0x1000_0000 + ts, CALLER_SSRC, &o);
        let mut q = rtp(0, 9000 + k as u16, 0x7000_0000 + ts, CALLEE_SSRC, &a);
        if k == 0 {
            p[1] |= 0x80;
            q[1] |= 0x80;
        }
        call.caller.send(call.to_caller_leg, &p);
        call.callee.send(call.to_callee_leg, &q);
        assert_eq!(
            call.callee.recv().map(|r| r.0),
            Some(p),
            "caller's packet {k}"
        );
        assert_eq!(
            call.caller.recv().map(|r| r.0),
            Some(q),
            "callee's packet {k}"
        );
    }
    assert_eq!(call.command(&rp, "D", FROM_TAG), "0");

    let base = rec.path().join("audio@host=ftag;1");
    let stereo = rec.path().join("stereo.wav");
    extractaudio(&["-s", path_str(&base), path_str(&stereo)]);
    let (channels, duration) = sox_info(&stereo);
    assert_eq!(channels, 2);
    assert!(
        (duration - 2.0).abs() < 0.025,
        "stereo WAV lasts {duration} s, the call 2 s"
    );
    let got = wav_channels(&stereo, 2);
    find_exact(&got[0], &quantised(o_hz, o_amp), "channel 1 (caller)");
    find_exact(&got[1], &quantised(a_hz, a_amp), "channel 2 (callee)");

    // Mono: the average of the two channels, sample by sample.
    let mixed = rec.path().join("mixed.wav");
    extractaudio(&[path_str(&base), path_str(&mixed)]);
    let (channels, duration) = sox_info(&mixed);
    assert_eq!(
        (channels, duration),
        (1, (got[0].len() as f64) / RATE as f64)
    );
    let want: Vec<i16> = got[0]
        .iter()
        .zip(&got[1])
        .map(|(&o, &a)| ((i32::from(o) + i32::from(a)) / 2) as i16)
        .collect();
    assert!(
        wav_channels(&mixed, 1)[0] == want,
        "mono is not the average"
    );

    // One direction alone: exactly the caller's 2 s.
    let o_file = rec.path().join(call.file("o.rtp"));
    let mono = rec.path().join("mono.wav");
    extractaudio(&[path_str(&o_file), path_str(&mono)]);
    let (channels, duration) = sox_info(&mono);
    assert_eq!(channels, 1);
    assert!((duration - 2.0).abs() < 1e-6, "mono WAV lasts {duration} s");
    let got = wav_channels(&mono, 1);
    assert_eq!(
        find_exact(&got[0], &quantised(o_hz, o_amp), "caller alone"),
        0
    );

    // A one-way call (the callee never sends): its empty .a.rtp must not
    // halve the caller's audio in the mono output. Sent unpaced: the
    // packets are placed by their RTP timestamps.
    let one_way = setup_call(&rp, b"oneway@host", "127.0.0.1");
    assert_eq!(one_way.command(&rp, "R", FROM_TAG), "0");
    for k in 0..AUDIO_PACKETS {
        let o: Vec<u8> = (k * FRAME..(k + 1) * FRAME)
            .map(|n| linear_to_ulaw(tone(o_hz, o_amp, n)))
            .collect();
        let p = rtp(0, k as u16, (k * FRAME) as u32, CALLER_SSRC, &o);
        cross(
            &rp,
            &one_way.caller,
            one_way.to_caller_leg,
            &one_way.callee,
            one_way.to_callee_leg,
            &p,
        );
    }
    assert_eq!(one_way.command(&rp, "D", FROM_TAG), "0");
    let a_file = rec.path().join(one_way.file("a.rtp"));
    assert_eq!(std::fs::metadata(&a_file).expect("a.rtp").len(), 0);
    let base = rec.path().join("oneway@host=ftag;1");
    let mono = rec.path().join("oneway.wav");
    extractaudio(&[path_str(&base), path_str(&mono)]);
    assert_eq!(sox_info(&mono), (1, 2.0));
    let got = wav_channels(&mono, 1);
    assert_eq!(
        find_exact(&got[0], &quantised(o_hz, o_amp), "one-way call"),
        0
    );
}
