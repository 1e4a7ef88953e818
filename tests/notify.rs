//! Session timeout notifications (`-n`, extension 20081224) driven over the
//! real sockets: a listener in the test receives what the daemon writes
//! when a session armed by `U ... NOTIFY_SOCKET [NOTIFY_TAG]` times out.
//!
//! Each test gets its UDP control port and media range (twenty ports; 700
//! for the test that creates hundreds of sessions) from `common::ports`.

mod common;

use common::{port, ports, udp};

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{reply_addr, rtp_packet, Peer, TempDir};

/// The program that listens for notifications: a unix stream listener.
struct Listener {
    path: PathBuf,
    listener: UnixListener,
    conn: Option<UnixStream>,
    /// Bytes read from the current connection, not yet split into lines.
    pending: Vec<u8>,
}

impl Listener {
    fn bind(path: &Path) -> Listener {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind notification socket");
        listener.set_nonblocking(true).expect("non-blocking");
        Listener {
            path: path.to_path_buf(),
            listener,
            conn: None,
            pending: Vec::new(),
        }
    }

    /// Accepts the daemon's connection if it has come, without waiting.
    fn try_accept(&mut self) -> bool {
        if self.conn.is_none() {
            if let Ok((s, _)) = self.listener.accept() {
                s.set_nonblocking(true).expect("non-blocking");
                self.conn = Some(s);
            }
        }
        self.conn.is_some()
    }

    /// Next whole line (with its '\n') within `limit`.
    fn line_within(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(String::from_utf8(line).expect("UTF-8 notification"));
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut got = false;
            if self.try_accept() {
                let mut buf = [0u8; 65536];
                match self.conn.as_mut().map(|c| c.read(&mut buf)) {
                    Some(Ok(0)) => self.conn = None,
                    Some(Ok(n)) => {
                        self.pending.extend_from_slice(&buf[..n]);
                        got = true;
                    }
                    Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {}
                    Some(Err(e)) => panic!("reading notifications: {e}"),
                    None => {}
                }
            }
            if !got {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Closes the connection and the listener and removes the socket file,
    /// as a listening program does when it exits.
    fn close(self) -> PathBuf {
        let path = self.path.clone();
        drop(self);
        let _ = std::fs::remove_file(&path);
        path
    }
}

/// `-n unix:PATH` for a socket in `dir`, and the path.
fn notify_socket(dir: &TempDir) -> (PathBuf, String) {
    let path = dir.path().join("notify.sock");
    let arg = format!("unix:{}", path.display());
    (path, arg)
}

fn port_of(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a port reply: {reply:?}"))
}

#[test]
fn timeout_sends_decoded_tag_or_the_two_ports() {
    let dir = TempDir::new("notify-basic");
    let (path, arg) = notify_socket(&dir);
    let mut listener = Listener::bind(&path);
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
    let mut listener = Listener::bind(&path);
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

    let mut listener = Listener::bind(&path);
    port_of(&rp.command(&format!("U s1 127.0.0.1 4000 ftag ttag {arg} one")));
    assert_eq!(listener.line_within(wait).as_deref(), Some("one\n"));

    // The listening program restarts: connection and socket go, a new
    // listener binds the same path.
    let path = listener.close();
    let mut listener = Listener::bind(&path);
    port_of(&rp.command(&format!("U s2 127.0.0.1 4000 ftag ttag {arg} two")));
    assert_eq!(listener.line_within(wait).as_deref(), Some("two\n"));

    // While nobody listens a notification is lost, the daemon carries on,
    // and a listener that comes back gets the next one.
    let path = listener.close();
    port_of(&rp.command(&format!("U s3 127.0.0.1 4000 ftag ttag {arg} three")));
    let deadline = Instant::now() + wait;
    while rp.command("I").contains("s3/") {
        assert!(Instant::now() < deadline, "s3 did not time out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut listener = Listener::bind(&path);
    port_of(&rp.command(&format!("U s4 127.0.0.1 4000 ftag ttag {arg} four")));
    assert_eq!(listener.line_within(wait).as_deref(), Some("four\n"));
    assert!(listener.line_within(Duration::from_millis(300)).is_none());
}

#[test]
fn foreign_socket_arms_nothing_and_bad_tags_are_e4() {
    let dir = TempDir::new("notify-misc");
    let (path, arg) = notify_socket(&dir);
    let mut listener = Listener::bind(&path);
    let rp = udp(port(), ports(20).range(), &["-T", "1", "-n", &arg]);

    // Another socket than -n: the session is made, nothing is armed.
    let elsewhere = dir.path().join("elsewhere.sock");
    let mut other = Listener::bind(&elsewhere);
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
    let mut listener = Listener::bind(&path);
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
    let mut listener = Listener::bind(&path);
    let rp = udp(port(), ports(700).range(), &["-T", "2", "-n", &arg]);
    // Both ends real-time when allowed, so that the round trips measure
    // the daemon, not a busy machine's scheduler.
    let realtime = common::make_realtime(rp.pid()) && common::make_realtime(0);

    // The live call, whose relaying is timed.
    let caller = Peer::new("127.0.0.1");
    let callee = Peer::new("127.0.0.1");
    let u = rp.command(&format!("U live 127.0.0.1 {} ftag", caller.port()));
    let l = rp.command(&format!("L live 127.0.0.1 {} ftag ttag", callee.port()));
    let to_callee_leg: SocketAddr = reply_addr(&u, "127.0.0.1");
    let to_caller_leg: SocketAddr = reply_addr(&l, "127.0.0.1");

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
    let mut worst = Duration::ZERO;
    let mut rtts = Vec::new();
    let start = Instant::now();
    let mut seq = 0u16;
    while start.elapsed() < Duration::from_secs(5) {
        let sent = Instant::now();
        let p = rtp_packet(seq, 0);
        caller.send(to_caller_leg, &p);
        let (got, _) = callee
            .recv_within(1000)
            .unwrap_or_else(|| panic!("packet {seq} lost on the way to the callee"));
        assert_eq!(got, p);
        callee.send(to_callee_leg, &got);
        let (back, _) = caller
            .recv_within(1000)
            .unwrap_or_else(|| panic!("packet {seq} lost on the way back"));
        assert_eq!(back, p);
        let rtt = sent.elapsed();
        worst = worst.max(rtt);
        rtts.push(rtt);
        listener.try_accept();
        seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20).saturating_sub(sent.elapsed()));
    }
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
