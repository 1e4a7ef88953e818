//! Session timeout notifications (`-n`, extensions 20081224 and 20150617)
//! driven over the real sockets: a listener in the test, unix or TCP,
//! receives what the daemon writes when a session armed by
//! `U ... NOTIFY_SOCKET [NOTIFY_TAG]` times out.
//!
//! Each test gets its control port, TCP listener ports and media range
//! (twenty ports; more for the tests that create hundreds of sessions)
//! from `common::ports`.

mod common;

use common::{port, port_of, ports, udp};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{rtp_packet, Call, LineListener, TempDir};

/// `-n unix:PATH` for a socket in `dir`, and the path.
fn notify_socket(dir: &TempDir) -> (PathBuf, String) {
    let path = dir.path().join("notify.sock");
    let arg = format!("unix:{}", path.display());
    (path, arg)
}

#[test]
fn timeout_sends_decoded_tag_or_the_two_ports() {
    let dir = TempDir::new("notify-basic");
    let (path, arg) = notify_socket(&dir);
    let mut listener = LineListener::unix(&path);
    let rp = udp(port(), ports(20).range(), &["-T", "2", "-n", &arg]);
    assert_eq!(rp.command("VF 20081224"), "1");

    let created = Instant::now();
    let tagged = rp.command(&format!(
        "U tagged 127.0.0.1 4000 ftag ttag {arg} hello%20world"
    ));
    port_of(&tagged);
    // No tag, and the socket named without `unix:`.
    let u = port_of(&rp.command(&format!(
        "U ports 127.0.0.1 4002 ftag ttag {}",
        path.display()
    )));
    let l = port_of(&rp.command("L ports 127.0.0.1 4004 ftag ttag"));
    assert_ne!(u, l);
    // Only a timeout notifies: an armed session deleted by D does not.
    port_of(&rp.command(&format!("U deleted 127.0.0.1 4006 ftag ttag {arg} deleted")));
    assert_eq!(rp.command("D deleted ftag ttag"), "0");

    let mut lines = BTreeSet::new();
    for _ in 0..2 {
        let line = listener
            .line_within(Duration::from_secs(6))
            .unwrap_or_else(|| panic!("no notification; got {lines:?}; log:\n{}", rp.log()));
        lines.insert(line);
    }
    let after = created.elapsed();
    let want = BTreeSet::from(["hello world\n".to_string(), format!("{u} {l}\n")]);
    assert_eq!(lines, want);
    assert!(
        after >= Duration::from_millis(1900),
        "notified {after:?} after creation, before the 2 s TTL"
    );
    assert!(listener.line_within(Duration::from_millis(300)).is_none());
    assert!(rp.command("I").contains("active sessions: 0"));
}

/// rtpproxy 2.x's reading of a six-argument U, which the Sippy B2BUA and
/// OpenSIPS's `rtpproxy_offer("n")` send: `FROMTAG NOTIFY_SOCKET
/// NOTIFY_TAG`, no to-tag. Kamailio's answer (`FROMTAG TOTAG SOCKET`) is
/// the test above.
#[test]
fn six_arguments_are_socket_and_tag_without_a_to_tag() {
    let dir = TempDir::new("notify-six");
    let (path, arg) = notify_socket(&dir);
    let mut listener = LineListener::unix(&path);
    let rp = udp(port(), ports(20).range(), &["-T", "2", "-n", &arg]);
    port_of(&rp.command(&format!("U six1 127.0.0.1 4000 ftag;1 {arg} r%20one")));
    let bare = path.display().to_string();
    port_of(&rp.command(&format!("U six2 127.0.0.1 4002 ftag;1 {bare} r%20two")));
    // The answer finds the session by its from-tag and signs up the callee.
    let l = rp.command("L six1 127.0.0.1 4004 ftag;1 ttag;1");
    assert!(port_of(&l) > 0);
    let mut lines = BTreeSet::new();
    for _ in 0..2 {
        let line = listener
            .line_within(Duration::from_secs(6))
            .unwrap_or_else(|| panic!("no notification; got {lines:?}; log:\n{}", rp.log()));
        lines.insert(line);
    }
    assert_eq!(
        lines,
        BTreeSet::from(["r one\n".to_string(), "r two\n".to_string()])
    );
    let log = rp.log();
    assert!(!log.contains("invalid socket name"), "{log}");
    let ended: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session ended"))
        .collect();
    assert_eq!(ended.len(), 2, "{log}");
    assert!(
        ended
            .iter()
            .any(|l| l.contains("call_id=six1") && l.contains("to_tag=ttag;1")),
        "{log}"
    );
    assert!(
        ended
            .iter()
            .all(|l| !l.contains("to_tag=/") && !l.contains("to_tag=unix")),
        "{log}"
    );
}

#[test]
fn listener_restarted_at_the_same_path_gets_the_next_notification() {
    let dir = TempDir::new("notify-restart");
    let (path, arg) = notify_socket(&dir);
    let rp = udp(port(), ports(20).range(), &["-T", "1", "-n", &arg]);
    let wait = Duration::from_secs(5);

    let mut listener = LineListener::unix(&path);
    port_of(&rp.command(&format!("U s1 127.0.0.1 4000 ftag ttag {arg} one")));
    assert_eq!(listener.line_within(wait).as_deref(), Some("one\n"));

    // The listening program restarts: connection and socket go, a new
    // listener binds the same path.
    let path = listener.close().expect("a unix socket");
    let mut listener = LineListener::unix(&path);
    port_of(&rp.command(&format!("U s2 127.0.0.1 4000 ftag ttag {arg} two")));
    assert_eq!(listener.line_within(wait).as_deref(), Some("two\n"));

    // While nobody listens a notification is lost, the daemon carries on,
    // and a listener that comes back gets the next one.
    let path = listener.close().expect("a unix socket");
    port_of(&rp.command(&format!("U s3 127.0.0.1 4000 ftag ttag {arg} three")));
    let deadline = Instant::now() + wait;
    while rp.command("I").contains("s3/") {
        assert!(Instant::now() < deadline, "s3 did not time out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut listener = LineListener::unix(&path);
    port_of(&rp.command(&format!("U s4 127.0.0.1 4000 ftag ttag {arg} four")));
    assert_eq!(listener.line_within(wait).as_deref(), Some("four\n"));
    assert!(listener.line_within(Duration::from_millis(300)).is_none());
}

#[test]
fn foreign_socket_arms_nothing_and_bad_tags_are_e4() {
    let dir = TempDir::new("notify-misc");
    let (path, arg) = notify_socket(&dir);
    let mut listener = LineListener::unix(&path);
    let rp = udp(port(), ports(20).range(), &["-T", "1", "-n", &arg]);

    // Another socket than -n: the session is made, nothing is armed.
    let elsewhere = dir.path().join("elsewhere.sock");
    let mut other = LineListener::unix(&elsewhere);
    port_of(&rp.command(&format!(
        "U other 127.0.0.1 4000 ftag ttag unix:{} foreign",
        elsewhere.display()
    )));
    assert!(rp.log().contains("invalid socket name"), "{}", rp.log());
    // Tags that are not valid URL encoding.
    for bad in ["bad%zz", "bad%4", "bad%", "%g0"] {
        assert_eq!(
            rp.command(&format!("U bad 127.0.0.1 4002 ftag ttag {arg} {bad}")),
            "E4",
            "{bad}"
        );
    }
    // A correctly armed session times out with it, as a sentinel.
    port_of(&rp.command(&format!(
        "U sentinel 127.0.0.1 4004 ftag ttag {arg} sentinel"
    )));
    let info = rp.command("I");
    assert!(info.contains("sessions created: 2"), "{info}");

    assert_eq!(
        listener.line_within(Duration::from_secs(5)).as_deref(),
        Some("sentinel\n")
    );
    assert!(listener.line_within(Duration::from_millis(1500)).is_none());
    assert!(rp.command("I").contains("active sessions: 0"));
    assert!(
        !other.try_accept(),
        "the daemon connected to a foreign socket"
    );
}

#[test]
fn without_n_nothing_is_armed() {
    let dir = TempDir::new("notify-off");
    let (path, arg) = notify_socket(&dir);
    let mut listener = LineListener::unix(&path);
    let rp = udp(port(), ports(20).range(), &["-T", "1"]);
    assert_eq!(rp.command("VF 20081224"), "0");
    port_of(&rp.command(&format!("U off 127.0.0.1 4000 ftag ttag {arg} tag")));
    assert!(
        rp.log().contains("must permit notification socket with -n"),
        "{}",
        rp.log()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rp.command("I").contains("active sessions: 0") {
        assert!(Instant::now() < deadline, "session did not time out");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(listener.line_within(Duration::from_millis(300)).is_none());
    assert!(!listener.try_accept());
}

/// A tag of `len` bytes naming session `i`, unique and easy to check.
fn long_tag(i: usize, len: usize) -> String {
    let head = format!("stuck-{i:04}-");
    format!("{head}{}", "x".repeat(len - head.len()))
}

#[test]
fn stuck_listener_does_not_delay_relaying() {
    const SESSIONS: usize = 300;
    const TAG_LEN: usize = 1000;
    let dir = TempDir::new("notify-stuck");
    let (path, arg) = notify_socket(&dir);
    let mut listener = LineListener::unix(&path);
    let rp = udp(port(), ports(700).range(), &["-T", "2", "-n", &arg]);
    // Both ends real-time when allowed, so that the round trips measure
    // the daemon, not a busy machine's scheduler.
    let realtime = common::make_realtime(rp.pid()) && common::make_realtime(0);

    // The live call, whose relaying is timed.
    let live = Call::setup(&rp, "live", "", "", ("ftag", "ttag"));

    // 300 sessions that time out together, 300 KB of notifications: more
    // than the socket and the daemon's buffer hold for a listener that
    // accepts and never reads.
    let tags: BTreeSet<String> = (0..SESSIONS).map(|i| long_tag(i, TAG_LEN)).collect();
    for (i, tag) in tags.iter().enumerate() {
        port_of(&rp.command(&format!(
            "U stuck{i} 127.0.0.1 {} ftag ttag {arg} {tag}",
            5000 + 2 * i
        )));
    }

    // A round trip through the relay every 20 ms for 5 s, across the
    // moment those sessions expire (2-3 s after they were made).
    let mut rtts = paced_round_trips(&live, Duration::from_secs(5), || {
        listener.try_accept();
    });
    let worst = rtts.iter().copied().max().unwrap_or_default();
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    println!(
        "relay round trip over {} exchanges while {SESSIONS} sessions timed out into a stuck \
         listener: median {median:?}, max {worst:?}, real-time: {realtime}",
        rtts.len()
    );
    let info = rp.command("I");
    assert!(info.contains("active sessions: 1"), "{info}");
    assert!(
        worst < Duration::from_millis(50),
        "relay round trip took up to {worst:?} (real-time: {realtime})"
    );

    // The listener reads at last: whole lines, each a tag, not all of them
    // (the rest was dropped rather than waited for), and the daemon is fine.
    let mut seen = BTreeSet::new();
    while let Some(line) = listener.line_within(Duration::from_millis(2500)) {
        let tag = line.strip_suffix('\n').expect("whole line");
        assert!(tags.contains(tag), "not a tag: {line:?}");
        assert!(seen.insert(tag.to_string()), "repeated: {tag}");
    }
    println!(
        "stuck listener got {} of {SESSIONS} notifications once it read",
        seen.len()
    );
    assert!(!seen.is_empty(), "nothing was notified");
    assert!(
        seen.len() < SESSIONS,
        "nothing was dropped: it never got stuck"
    );
    assert_eq!(rp.command("V"), "20040107");
}

/// A round trip through the relay every 20 ms for `run`, from the caller
/// to the callee and back, each packet checked; `between` runs after each.
/// Returns every round trip's time; a lost packet fails the test.
fn paced_round_trips(call: &Call, run: Duration, mut between: impl FnMut()) -> Vec<Duration> {
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut seq = 0u16;
    while start.elapsed() < run {
        let sent = Instant::now();
        let p = rtp_packet(seq, 0);
        call.caller.send(call.to_caller_leg, &p);
        let (got, _) = call
            .callee
            .recv_within(1000)
            .unwrap_or_else(|| panic!("packet {seq} lost on the way to the callee"));
        assert_eq!(got, p);
        call.callee.send(call.to_callee_leg, &got);
        let (back, _) = call
            .caller
            .recv_within(1000)
            .unwrap_or_else(|| panic!("packet {seq} lost on the way back"));
        assert_eq!(back, p);
        rtts.push(sent.elapsed());
        between();
        seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20).saturating_sub(sent.elapsed()));
    }
    rtts
}

/// Sends one UDP command from `from_ip` (any 127.x address) and returns
/// the reply without cookie.
fn udp_from(from_ip: &str, ctl: SocketAddr, cmd: &str) -> String {
    let s = std::net::UdpSocket::bind((from_ip, 0)).expect("bind controller");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.send_to(format!("c1 {cmd}").as_bytes(), ctl)
        .expect("send");
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).expect("reply");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.strip_prefix("c1 ")
        .unwrap_or_else(|| panic!("no cookie in {text:?}"))
        .trim_end()
        .to_string()
}

#[test]
fn cc_self_notifies_each_udp_controller_on_its_own_address() {
    let np = port();
    let cp = port();
    // The control socket on 127.0.0.5: notifications leave from there.
    let ctl: SocketAddr = format!("127.0.0.5:{cp}").parse().expect("addr");
    let target = format!("tcp:%%CC_SELF%%:{np}");
    let rp = common::controlled_by(
        &format!("udp:{ctl}"),
        ports(20).range(),
        &["-T", "2", "-n", &target],
    );
    assert_eq!(rp.command("VF 20150617"), "1");
    assert_eq!(rp.command("VF 20081224"), "1");
    // Two controllers, one port number, each listening on its own address.
    let mut a = LineListener::tcp(&format!("127.0.0.2:{np}"));
    let mut b = LineListener::tcp(&format!("127.0.0.3:{np}"));
    for (from, call) in [
        ("127.0.0.2", "a1"),
        ("127.0.0.3", "b1"),
        ("127.0.0.2", "a2"),
    ] {
        let reply = udp_from(
            from,
            ctl,
            &format!("U {call} 127.0.0.1 4000 ftag ttag {target} tag-{call}"),
        );
        port_of(&reply);
    }
    let wait = Duration::from_secs(6);
    let mut got_a = BTreeSet::new();
    for _ in 0..2 {
        got_a.insert(a.line_within(wait).expect("controller A's notifications"));
    }
    assert_eq!(
        got_a,
        BTreeSet::from(["tag-a1\n".to_string(), "tag-a2\n".to_string()])
    );
    assert_eq!(b.line_within(wait).as_deref(), Some("tag-b1\n"));
    assert!(a.line_within(Duration::from_millis(300)).is_none());
    assert!(b.line_within(Duration::from_millis(300)).is_none());
    // One connection per controller, bound to the control socket's address.
    let control_ip: std::net::IpAddr = [127, 0, 0, 5].into();
    assert_eq!(a.peers().len(), 1, "{:?}", a.peers());
    assert_eq!(b.peers().len(), 1, "{:?}", b.peers());
    assert!(a
        .peers()
        .iter()
        .chain(&b.peers())
        .all(|p| p.ip() == control_ip));
}

#[test]
fn cc_self_from_unix_control_goes_to_127_0_0_1() {
    let np = port();
    let target = format!("tcp:%%CC_SELF%%:{np}");
    let (m, mm) = ports(20).range();
    let (m, mm) = (m.to_string(), mm.to_string());
    let mut listener = LineListener::tcp(&format!("127.0.0.1:{np}"));
    // The harness's default control socket: unix.
    let rp = common::Rtpproxy::start(&[
        "-l",
        "127.0.0.1",
        "-m",
        &m,
        "-M",
        &mm,
        "-T",
        "1",
        "-n",
        &target,
    ]);
    assert!(rp.control_path().is_some());
    port_of(&rp.command(&format!("U u1 127.0.0.1 4000 ftag ttag {target} from-unix")));
    assert_eq!(
        listener.line_within(Duration::from_secs(5)).as_deref(),
        Some("from-unix\n")
    );
}

#[test]
fn tcp_target_receives_and_names_not_configured_are_refused() {
    let dir = TempDir::new("notify-tcp");
    let (path, unix_arg) = notify_socket(&dir);
    let mut unix = LineListener::unix(&path);
    let (np, other_port) = (port(), port());
    let target = format!("tcp:127.0.0.1:{np}");
    let mut tcp = LineListener::tcp(&format!("127.0.0.1:{np}"));
    let mut other = LineListener::tcp(&format!("127.0.0.1:{other_port}"));
    let rp = udp(
        port(),
        ports(20).range(),
        &["-T", "1", "-n", &target, "-n", &unix_arg],
    );
    // Named exactly as given to -n: armed.
    port_of(&rp.command(&format!("U t1 127.0.0.1 4000 ftag ttag {target} by-tcp")));
    port_of(&rp.command(&format!("U u1 127.0.0.1 4002 ftag ttag {unix_arg} by-unix")));
    // Not given to -n: the session is made, nothing is armed.
    for (call, name) in [
        ("r1", format!("tcp:127.0.0.1:{other_port}")),
        ("r2", format!("tcp:%%CC_SELF%%:{np}")),
        ("r3", format!("tcp:localhost:{np}")),
    ] {
        port_of(&rp.command(&format!("U {call} 127.0.0.1 4004 ftag ttag {name} refused")));
        assert!(
            rp.log().contains(&format!("invalid socket name {name}")),
            "{name}: {}",
            rp.log()
        );
    }
    let wait = Duration::from_secs(5);
    assert_eq!(tcp.line_within(wait).as_deref(), Some("by-tcp\n"));
    assert_eq!(unix.line_within(wait).as_deref(), Some("by-unix\n"));
    // The refused ones timed out too, silently.
    let deadline = Instant::now() + wait;
    while !rp.command("I").contains("active sessions: 0") {
        assert!(Instant::now() < deadline, "sessions did not time out");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(tcp.line_within(Duration::from_millis(300)).is_none());
    assert!(other.line_within(Duration::from_millis(300)).is_none());
    assert!(other.peers().is_empty(), "connected to a target not given");
}

/// A TCP port that answers no connection: its one-place accept queue is
/// taken by a connection nobody accepts, so the kernel drops every SYN
/// and a connect stays in progress.
fn unanswering_port() -> (std::os::fd::OwnedFd, std::net::TcpStream, u16) {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let p = port();
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    let addr: SockaddrIn = format!("127.0.0.1:{p}").parse().expect("addr");
    bind(fd.as_raw_fd(), &addr).expect("bind");
    listen(&fd, Backlog::new(0).expect("backlog")).expect("listen");
    let filler = std::net::TcpStream::connect(("127.0.0.1", p)).expect("fill the queue");
    (fd, filler, p)
}

#[test]
fn dead_tcp_targets_do_not_stall_relaying() {
    // Ten per target: the binary's port share has room for no more.
    const SESSIONS: usize = 30;
    // Nobody listens on one; the other never answers a SYN.
    let refused = port();
    let (_hold, _filler, silent) = unanswering_port();
    let t1 = format!("tcp:127.0.0.1:{refused}");
    let t2 = format!("tcp:127.0.0.1:{silent}");
    let t3 = format!("tcp:%%CC_SELF%%:{refused}");
    let rp = udp(
        port(),
        ports(2 * SESSIONS as u16 + 4).range(),
        &["-T", "2", "-n", &t1, "-n", &t2, "-n", &t3],
    );
    let realtime = common::make_realtime(rp.pid()) && common::make_realtime(0);
    let live = Call::setup(&rp, "live", "", "", ("ftag", "ttag"));
    for i in 0..SESSIONS {
        let target = [&t1, &t2, &t3][i % 3];
        port_of(&rp.command(&format!(
            "U dead{i} 127.0.0.1 {} ftag ttag {target} dead-{i}",
            5000 + 2 * i
        )));
    }
    // Round trips for 8 s: across the timeouts and past the 5 s a connect
    // may take.
    let worst = paced_round_trips(&live, Duration::from_secs(8), || {})
        .into_iter()
        .max()
        .unwrap_or_default();
    println!(
        "worst relay round trip while notifications failed: {worst:?} (real-time: {realtime})"
    );
    assert!(
        worst < Duration::from_millis(50),
        "relay round trip took up to {worst:?} (real-time: {realtime})"
    );
    let info = rp.command("I");
    assert!(info.contains("active sessions: 1"), "{info}");
    let log = rp.log();
    for (target, why) in [(&t1, "refused"), (&t2, "timed out")] {
        let what = format!("can't connect to notification socket {target}:");
        assert!(
            log.lines().any(|l| l.contains(&what) && l.contains(why)),
            "{target}: {log}"
        );
    }
    assert_eq!(rp.command("V"), "20040107");
}
