//! Stream control sockets (`-s tcp:`, `tcp6:`, `cunix:`) driven over real
//! connections: many commands per connection, one per line, answered in
//! order; bounded clients, buffers and idle time; the loop and the media
//! never wait for a client.
//!
//! Ports (control, media) come from `common::ports`.

mod common;

use common::{
    controlled_by, port, port_of, ports, reply_addr, rtp_packet, Peer, Rtpproxy, TempDir,
};

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A stream the tests talk over: TCP or unix.
trait Io: Read + Write {
    fn set_timeout(&self, t: Duration);
}

impl Io for TcpStream {
    fn set_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).expect("timeout");
    }
}

impl Io for UnixStream {
    fn set_timeout(&self, t: Duration) {
        self.set_read_timeout(Some(t)).expect("timeout");
    }
}

/// One control connection, kept open across commands like OpenSIPS or
/// the Sippy B2BUA keep theirs.
struct Client {
    io: Box<dyn Io>,
    /// Bytes read, not yet split into lines.
    pending: Vec<u8>,
}

impl Client {
    fn tcp(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        Client {
            io: Box::new(s),
            pending: Vec::new(),
        }
    }

    fn unix(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect");
        Client {
            io: Box::new(s),
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).expect("write");
    }

    /// Reads what arrives within `t` (at most one read's worth); false at
    /// end of file or on an error.
    fn fill(&mut self, t: Duration) -> Option<bool> {
        self.io.set_timeout(t);
        let mut buf = [0u8; 65536];
        match self.io.read(&mut buf) {
            Ok(0) => Some(false),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                Some(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(_) => Some(false),
        }
    }

    /// The next line, without its `\n`, within `limit`.
    fn line_within(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let text = String::from_utf8(line).expect("UTF-8 reply");
                return Some(text.trim_end_matches('\n').to_string());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if self.fill(left.max(Duration::from_millis(1))) == Some(false) {
                return None;
            }
        }
    }

    fn line(&mut self) -> String {
        self.line_within(Duration::from_secs(3))
            .expect("no reply line within 3 s")
    }

    /// Sends one command line and reads its one-line reply.
    fn ask(&mut self, cmd: &str) -> String {
        self.send(format!("{cmd}\n").as_bytes());
        self.line()
    }

    /// True when the daemon closes the connection within `limit` (what
    /// was still on the way is read and thrown away).
    fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.fill(Duration::from_millis(100)) {
                Some(false) => return true,
                Some(true) => self.pending.clear(),
                None => {}
            }
        }
        false
    }
}

/// Starts a daemon with TCP control on 127.0.0.1 and `n` media ports.
fn tcp_daemon(n: u16, extra: &[&str]) -> (Rtpproxy, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", port()).parse().expect("addr");
    let rp = controlled_by(&format!("tcp:{addr}"), ports(n).range(), extra);
    (rp, addr)
}

#[test]
fn commands_on_one_connection_are_answered_in_order() {
    let (rp, addr) = tcp_daemon(20, &[]);
    let mut c = Client::tcp(addr);
    assert_eq!(c.ask("V"), "20040107");
    assert_eq!(c.ask("VF 20050322"), "1");
    assert_eq!(c.ask("VF 20150617"), "1");
    assert_eq!(c.ask("VF 19990101"), "0");
    let u = port_of(&c.ask("U call 127.0.0.1 4000 ftag"));
    let l = port_of(&c.ask("L call 127.0.0.1 4002 ftag ttag"));
    assert_ne!(u, l);
    assert_eq!(c.ask("Q call ftag ttag").split_whitespace().count(), 5);
    assert_eq!(c.ask("D call ftag ttag"), "0");
    assert_eq!(c.ask("D call ftag ttag"), "E8");
    // Many more on the same connection, all in one write.
    let batch: String = (0..200).map(|i| format!("VF {}\n", 20040107 + i)).collect();
    c.send(batch.as_bytes());
    for i in 0..200 {
        let want = if i == 0 { "1" } else { "0" };
        assert_eq!(c.line(), want, "reply {i}");
    }
    assert!(c.line_within(Duration::from_millis(200)).is_none());
    // A failed command is logged with the client's address.
    assert_eq!(c.ask("Z"), "E3");
    let log = rp.log();
    assert!(log.contains("from tcp:127.0.0.1:"), "{log}");
}

#[test]
fn framing_two_in_one_write_a_split_command_and_crlf() {
    let (_rp, addr) = tcp_daemon(20, &[]);
    let mut c = Client::tcp(addr);
    c.send(b"V\nVF 20071116\n");
    assert_eq!(c.line(), "20040107");
    assert_eq!(c.line(), "1");
    // Half a command waits for the rest of its line.
    c.send(b"VF 2005");
    assert!(
        c.line_within(Duration::from_millis(500)).is_none(),
        "a command without its newline was run"
    );
    c.send(b"0322\n");
    assert_eq!(c.line(), "1");
    // `\r\n` ends a line too, and an empty line is an empty command.
    c.send(b"V\r\n\r\n\nVF 20081224\r\n");
    assert_eq!(c.line(), "20040107");
    assert_eq!(c.line(), "E0");
    assert_eq!(c.line(), "E0");
    assert_eq!(c.line(), "0");
}

#[test]
fn last_command_runs_at_half_close_and_the_daemon_then_closes() {
    let (_rp, addr) = tcp_daemon(20, &[]);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"VF 20050322\nV").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read to end");
    assert_eq!(out, "1\n20040107\n");
}

#[test]
fn over_long_line_is_e1_and_the_connection_goes_on() {
    let (rp, addr) = tcp_daemon(20, &[]);
    let mut c = Client::tcp(addr);
    // 8192 bytes are a command (E3: no such command letter).
    let longest = format!("Z{}\n", "x".repeat(8191));
    assert_eq!(c.ask(longest.trim_end()), "E3");
    // One more is not; the rest of the line is dropped as it comes.
    let over = "V".repeat(8200);
    c.send(over.as_bytes());
    assert_eq!(c.line(), "E1");
    c.send("V".repeat(20000).as_bytes());
    assert!(c.line_within(Duration::from_millis(300)).is_none());
    c.send(b"still the long line\nV\n");
    assert_eq!(c.line(), "20040107");
    assert!(c.line_within(Duration::from_millis(200)).is_none());
    assert!(rp.log().contains("command longer than 8192 bytes"));
    let g = c.ask("G ncmds_errs");
    assert_eq!(g, "2", "E3 and E1 counted as errors");
}

/// A live call through the relay: RTP both ways, timed.
struct Call {
    caller: Peer,
    callee: Peer,
    to_caller_leg: SocketAddr,
    to_callee_leg: SocketAddr,
    seq: u16,
}

impl Call {
    fn set_up(c: &mut Client) -> Call {
        let caller = Peer::new("127.0.0.1");
        let callee = Peer::new("127.0.0.1");
        let u = c.ask(&format!("U live 127.0.0.1 {} ftag", caller.port()));
        let l = c.ask(&format!("L live 127.0.0.1 {} ftag ttag", callee.port()));
        Call {
            to_callee_leg: reply_addr(&u, "127.0.0.1"),
            to_caller_leg: reply_addr(&l, "127.0.0.1"),
            caller,
            callee,
            seq: 0,
        }
    }

    /// One packet there and back; the time it took.
    fn round_trip(&mut self) -> Duration {
        let sent = Instant::now();
        let p = rtp_packet(self.seq, 0);
        self.seq = self.seq.wrapping_add(1);
        self.caller.send(self.to_caller_leg, &p);
        let (got, _) = self
            .callee
            .recv_within(2000)
            .unwrap_or_else(|| panic!("packet {} lost on the way out", self.seq));
        self.callee.send(self.to_callee_leg, &got);
        let (back, _) = self
            .caller
            .recv_within(2000)
            .unwrap_or_else(|| panic!("packet {} lost on the way back", self.seq));
        assert_eq!(back, p);
        sent.elapsed()
    }
}

#[test]
fn client_that_never_reads_does_not_stop_others_or_media() {
    let (rp, addr) = tcp_daemon(120, &[]);
    let realtime = common::make_realtime(rp.pid()) && common::make_realtime(0);
    let mut other = Client::tcp(addr);
    let mut call = Call::set_up(&mut other);
    // Sessions with long Call-IDs make each `I` reply some 40 KB: 1000 of
    // them are far more than the kernel's socket buffers and the
    // daemon's bound for replies waiting to be read.
    for i in 0..50 {
        let id = format!("{i:03}{}", "c".repeat(300));
        port_of(&other.ask(&format!("U {id} 127.0.0.1 {} ftag", 5000 + 2 * i)));
    }
    let mut stuck = TcpStream::connect(addr).expect("connect");
    stuck
        .write_all("I\n".repeat(1000).as_bytes())
        .expect("write");

    let mut worst = Duration::ZERO;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        worst = worst.max(call.round_trip());
        let t = Instant::now();
        assert_eq!(other.ask("V"), "20040107");
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("worst round trip while a client did not read: {worst:?} (real-time: {realtime})");
    assert!(
        worst < Duration::from_millis(250),
        "the loop waited for a client that does not read: {worst:?}"
    );
    let log = rp.log();
    assert!(log.contains("does not read its replies"), "{log}");
    // It was closed: reading now finds the end, after fewer replies than asked.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    loop {
        match stuck.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the daemon did not close the client: {e}"),
        }
    }
    assert_eq!(other.ask("G nsess_created"), "51");
    let whole = 1000 * 50 * 2 * 300;
    assert!(got < whole, "{got} bytes: every reply was kept");
    assert_eq!(other.ask("V"), "20040107");
}

#[test]
fn replies_beyond_the_socket_buffer_are_written_whole_over_time() {
    const SESSIONS: usize = 25;
    const ASKED: usize = 12;
    let dir = TempDir::new("big-reply");
    let path = dir.join("ctl.sock");
    let s = format!("cunix:{}", path.display());
    let (m, mm) = ports(2 * SESSIONS as u16 + 2).range();
    let (m, mm) = (m.to_string(), mm.to_string());
    let rp = Rtpproxy::start(&["-s", &s, "-l", "127.0.0.1", "-m", &m, "-M", &mm]);
    let mut c = Client::unix(&path);
    // About 2 KB of `I` per session, some 56 KB per `I`: twelve of them
    // asked at once are three times what a unix socket takes, so the
    // daemon must keep them and write as the client reads.
    let ids: Vec<String> = (0..SESSIONS)
        .map(|i| format!("{i:04}{}", "i".repeat(1000)))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        port_of(&c.ask(&format!("U {id} 127.0.0.1 {} ftag", 5000 + 2 * i)));
    }
    c.send("I\n".repeat(ASKED).as_bytes());
    c.send(b"V\n");
    let mut bytes = 0;
    for n in 0..ASKED {
        let mut lines = Vec::new();
        while lines.len() < 5 + 2 * SESSIONS {
            // Read slowly, so the daemon must write in many passes.
            std::thread::sleep(Duration::from_millis(1));
            let line = c
                .line_within(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("reply {n} cut after {} lines", lines.len()));
            lines.push(line);
        }
        assert_eq!(
            lines[1],
            format!("active sessions: {SESSIONS}"),
            "reply {n}"
        );
        for id in &ids {
            let found = lines.iter().filter(|l| l.contains(id.as_str())).count();
            assert_eq!(found, 2, "reply {n}, session {}", &id[..4]);
        }
        bytes += lines.iter().map(|l| l.len() + 1).sum::<usize>();
    }
    assert!(bytes > 600_000, "only {bytes} bytes");
    // The reply after them, and nothing else.
    assert_eq!(c.line(), "20040107");
    assert!(c.line_within(Duration::from_millis(200)).is_none());
    assert!(!rp.log().contains("does not read its replies"));
}

#[test]
fn idle_client_is_closed_after_a_minute() {
    let (rp, addr) = tcp_daemon(20, &[]);
    let mut idle = Client::tcp(addr);
    assert_eq!(idle.ask("V"), "20040107");
    let since = Instant::now();
    let mut busy = Client::tcp(addr);
    // A client that keeps talking keeps its connection.
    while since.elapsed() < Duration::from_secs(50) {
        assert_eq!(busy.ask("V"), "20040107");
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(
        !idle.closed_within(Duration::from_secs(8)),
        "closed after {:?}, before the minute",
        since.elapsed()
    );
    assert!(
        idle.closed_within(Duration::from_secs(10)),
        "still open {:?} after its last command",
        since.elapsed()
    );
    let closed_after = since.elapsed();
    assert!(closed_after >= Duration::from_secs(59), "{closed_after:?}");
    assert_eq!(busy.ask("V"), "20040107");
    assert!(rp.log().contains("idle for 60 s, closing"), "{}", rp.log());
}

#[test]
fn forty_clients_thirty_two_served_the_rest_later() {
    let (rp, addr) = tcp_daemon(20, &[]);
    let mut clients: Vec<Client> = (0..40).map(|_| Client::tcp(addr)).collect();
    for c in clients.iter_mut() {
        c.send(b"V\n");
    }
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    for (i, c) in clients.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.line_within(left.max(Duration::from_millis(50))) {
            Some(reply) => {
                assert_eq!(reply, "20040107");
                served.push(i);
            }
            None => waiting.push(i),
        }
    }
    assert_eq!((served.len(), waiting.len()), (32, 8), "{served:?}");
    // The daemon does not spin while clients wait for a place: its CPU
    // time over a quiet second stays small.
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    };
    let before = cpu(rp.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu(rp.pid()) - before;
    assert!(spent < 20, "{spent} ticks of CPU in a quiet second");
    // Eight served clients leave: the eight waiting ones get their turn.
    let mut left: Vec<(usize, Client)> = clients
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !served[..8].contains(i))
        .collect();
    for (i, c) in left.iter_mut() {
        if waiting.contains(i) {
            assert_eq!(c.line(), "20040107", "client {i} was not let in");
        }
    }
    for (_, c) in left.iter_mut() {
        assert_eq!(c.ask("VF 20050322"), "1");
    }
}

#[test]
fn tcp6_on_ipv6_loopback() {
    let p = port();
    let s = format!("tcp6:[::1]:{p}");
    let (m, mm) = ports(20).range();
    let (m, mm) = (m.to_string(), mm.to_string());
    let rp = Rtpproxy::start(&["-s", &s, "-6", "::1", "-m", &m, "-M", &mm, "-d", "INFO"]);
    let addr: SocketAddr = format!("[::1]:{p}").parse().expect("addr");
    let mut c = Client::tcp(addr);
    assert_eq!(c.ask("V"), "20040107");
    let reply = c.ask("U6 v6call ::1 4000 ftag");
    assert!(reply.ends_with(" ::1 6"), "{reply}");
    assert_eq!(c.ask("D v6call ftag"), "0");
    assert_eq!(c.ask("Z"), "E3");
    assert!(rp.log().contains("from tcp:[::1]:"), "{}", rp.log());
    // Nothing listens on IPv4 for it.
    assert!(TcpStream::connect(("127.0.0.1", p)).is_err());
}

#[test]
fn cunix_socket_gets_the_unix_mode_and_owner_and_goes_at_exit() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (uid, gid) = common::test_user();
    let dir = TempDir::new("cunix");
    // The daemon, once switched to the user, removes its socket there.
    nix::unistd::chown(
        dir.path(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .expect("chown");
    let path = dir.join("ctl.sock");
    let s = format!("cunix:{}", path.display());
    let (m, mm) = ports(20).range();
    let (m, mm) = (m.to_string(), mm.to_string());
    let mut rp = Rtpproxy::start(&[
        "-s",
        &s,
        "-u",
        common::TEST_USER,
        "-l",
        "127.0.0.1",
        "-m",
        &m,
        "-M",
        &mm,
    ]);
    let meta = std::fs::metadata(&path).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    let mut c = Client::unix(&path);
    assert_eq!(c.ask("V"), "20040107");
    port_of(&c.ask("U ucall 127.0.0.1 4000 ftag"));
    assert_eq!(c.ask("D ucall ftag"), "0");
    // A second daemon on the same path is refused while this one runs.
    let second = std::process::Command::new(common::bin_path())
        .args(["-f", "-F", "-s", &s, "-l", "127.0.0.1"])
        .output()
        .expect("run");
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by a running daemon"), "{err}");
    assert_eq!(c.ask("V"), "20040107");
    assert!(rp.terminate().is_some_and(|st| st.success()));
    assert!(!path.exists(), "socket left behind");
}

#[test]
fn creating_u_while_draining_closes_the_connection_after_earlier_replies() {
    let (mut rp, addr) = tcp_daemon(20, &["-T", "60"]);
    let mut c = Client::tcp(addr);
    port_of(&c.ask("U kept 127.0.0.1 4000 ftag"));
    common::signal(rp.pid(), "USR1");
    let deadline = Instant::now() + Duration::from_secs(3);
    while c.ask("V") != "E15" {
        assert!(Instant::now() < deadline, "no drain");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.send(b"VF 20050322\nU new 127.0.0.1 4002 ftag\nV\n");
    assert_eq!(c.line(), "1");
    // Nothing more: no reply to the U, none to the V after it, then the end.
    assert_eq!(c.line_within(Duration::from_secs(3)), None);
    assert!(c.pending.is_empty(), "a reply came after the refused U");
    assert_eq!(
        c.fill(Duration::from_millis(500)),
        Some(false),
        "not closed"
    );
    // Existing sessions go on; once the last one ends the daemon exits.
    let mut c = Client::tcp(addr);
    assert_eq!(c.ask("D kept ftag"), "0");
    assert!(rp
        .wait_exit(Duration::from_secs(5))
        .is_some_and(|s| s.success()));
}
