//! The one harness every integration test uses: start the real daemon on
//! loopback, talk to its control socket, send and receive media, and clean
//! up (the daemon is killed and its temp dir removed on drop, also when a
//! test fails).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod listen;
#[allow(unused_imports)]
pub use listen::LineListener;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The test binary this module is compiled into (`core`, `record`, ...).
const TEST_BINARY: &str = env!("CARGO_CRATE_NAME");

/// A directory removed when dropped: the one scratch directory every test
/// uses.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Makes a fresh, empty directory under the system temp dir, named
    /// `rtpp-BINARY-NAME-PID-N`: the test binary, `name`, the process and
    /// a counter, so that no two directories of one run or of two runs
    /// side by side are the same.
    pub fn new(name: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "rtpp-{TEST_BINARY}-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Each test binary's share of the UDP port space: (binary, first, last).
///
/// Every port a test binds or has a daemon, Kamailio or sipp bind (media
/// ranges, control ports, SIP ports, a peer's fixed port) comes from its
/// binary's share through [`ports`], so the tests of one binary, which run
/// in parallel, never meet, and two binaries never share a port even when
/// run at the same time. The shares lie in 10000-32767: above the
/// well-known and registered service ports a test machine may run (SIP's
/// 5060, ...), and below the kernel's ephemeral ports (32768 and up on
/// Linux), which the tests' own sockets bound to port 0 get. The
/// hand-over tests' share, 28000-31999, is the one the soak test's and
/// the benchmark's media ports (30000 and up) also use: neither runs with
/// the test suite. They stay clear of [`RESERVED`]. A new test binary that needs
/// ports gets a line here; the compile-time check below refuses shares
/// that overlap.
pub const PORT_SHARES: &[(&str, u16, u16)] = &[
    ("core", 10000, 15399),
    ("quality", 15400, 15999),
    ("daemon_life", 16000, 17199),
    ("record", 17200, 18399),
    ("notify", 18400, 19399),
    ("hardening", 19400, 20599),
    ("interop_kamailio", 20600, 21959),
    ("play", 23000, 23399),
    ("resize", 23400, 24099),
    ("operator", 24100, 24699),
    ("start_up", 24700, 25199),
    ("control_streams", 25200, 25799),
    ("interop_sippy", 25800, 26999),
    ("observers", 27000, 27599),
    ("extensions", 27600, 27999),
    ("hep", 22400, 22599),
    ("metrics", 22600, 22799),
    ("handover", 28000, 31999),
];

/// Ports no test may use: (first, last, whose).
pub const RESERVED: &[(u16, u16, &str)] = &[
    (21960, 21999, "the fuzz target's media ports"),
    (22222, 22222, "the daemon's default control port"),
    (22300, 22399, "the benchmark's control ports"),
    (22999, 22999, "the soak test's control port"),
];

const PORTS_FROM: u16 = 10000;
const PORTS_TO: u16 = 32767;

/// Compile-time check of [`PORT_SHARES`]: inside 10000-32767, even first
/// ports, no overlap with each other or with [`RESERVED`].
const _: () = {
    const fn overlap(a: (u16, u16), b: (u16, u16)) -> bool {
        a.0 <= b.1 && b.0 <= a.1
    }
    let mut i = 0;
    while i < PORT_SHARES.len() {
        let (_, first, last) = PORT_SHARES[i];
        assert!(first % 2 == 0 && first <= last);
        assert!(first >= PORTS_FROM && last <= PORTS_TO);
        let mut j = 0;
        while j < RESERVED.len() {
            assert!(!overlap((first, last), (RESERVED[j].0, RESERVED[j].1)));
            j += 1;
        }
        let mut k = i + 1;
        while k < PORT_SHARES.len() {
            assert!(!overlap(
                (first, last),
                (PORT_SHARES[k].1, PORT_SHARES[k].2)
            ));
            k += 1;
        }
        i += 1;
    }
};

/// Ports of this binary's share handed out so far.
static PORTS_USED: AtomicU32 = AtomicU32::new(0);

/// Consecutive UDP ports, used by one test only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBlock {
    /// The first port; always even, so a block starts an RTP/RTCP pair.
    pub first: u16,
    /// How many ports the block holds.
    pub len: u16,
}

impl PortBlock {
    /// The last port of the block.
    pub fn last(&self) -> u16 {
        self.first + (self.len - 1)
    }

    /// The `i`th port of the block (0: the first).
    pub fn port(&self, i: u16) -> u16 {
        assert!(i < self.len, "port {i} of a block of {}", self.len);
        self.first + i
    }

    /// The block as a media range, `(-m, -M)`.
    pub fn range(&self) -> (u16, u16) {
        (self.first, self.last())
    }

    /// The block as an inclusive range.
    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last()
    }

    /// True when `port` is one of the block's.
    pub fn contains(&self, port: u16) -> bool {
        self.ports().contains(&port)
    }
}

/// Hands out `n` consecutive ports of this test binary's share
/// ([`PORT_SHARES`]) that no other caller gets: a block starts on an even
/// port, and blocks never overlap. Panics when the share is used up or the
/// binary has none, naming the table to extend.
pub fn ports(n: u16) -> PortBlock {
    assert!(n > 0, "an empty port block");
    let &(_, first, last) = PORT_SHARES
        .iter()
        .find(|(name, _, _)| *name == TEST_BINARY)
        .unwrap_or_else(|| {
            panic!("test binary {TEST_BINARY} has no port share: add one to PORT_SHARES in tests/common/mod.rs")
        });
    // Whole pairs, so that the next block starts even too.
    let take = u32::from(n).next_multiple_of(2);
    let offset = PORTS_USED.fetch_add(take, Ordering::SeqCst);
    let start = u32::from(first) + offset;
    let end = start + u32::from(n) - 1;
    assert!(
        end <= u32::from(last),
        "{TEST_BINARY}'s port share {first}-{last} is used up ({n} more ports wanted): enlarge it in PORT_SHARES in tests/common/mod.rs"
    );
    PortBlock {
        first: start as u16,
        len: n,
    }
}

/// One port of this binary's share (a control, SIP or peer port).
pub fn port() -> u16 {
    ports(1).first
}

/// The port of a `U`/`L` reply (`PORT [ADDR[ 6]]`); panics otherwise.
pub fn port_of(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a port reply: {reply:?}"))
}

/// The daemon binary under test.
pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rtpproxy"))
}

enum Ctrl {
    Unix(PathBuf),
    Udp(SocketAddr),
    /// `tcp:`/`tcp6:`: one command per connection works there too, ended
    /// by the half-close.
    Tcp(SocketAddr),
    /// `cunix:`, likewise.
    Cunix(PathBuf),
}

/// A running daemon in the foreground.
pub struct Rtpproxy {
    child: Child,
    ctrl: Ctrl,
    log_path: PathBuf,
    dir: TempDir,
    cookie: AtomicU32,
}

impl Rtpproxy {
    /// Starts the daemon with `-f` and `args`. Without `-s` it listens on a
    /// unix socket in its temp dir; without `-p` its pidfile goes there too.
    /// As root, `-F` is added for UDP and TCP control (tests run as root in CI).
    /// Waits until the control socket answers `V`.
    pub fn start(args: &[&str]) -> Rtpproxy {
        match Rtpproxy::try_start(args) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like `start`, with `cwd` as the daemon's working directory (the
    /// background daemon works in `/`).
    pub fn start_in(cwd: &Path, args: &[&str]) -> Rtpproxy {
        match Rtpproxy::try_start_as(Some(cwd), args, true) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like `start`, but reports a daemon that does not come up.
    pub fn try_start(args: &[&str]) -> Result<Rtpproxy, String> {
        Rtpproxy::try_start_as(None, args, true)
    }

    /// Like `start`, but without adding `-p`: in the foreground the daemon
    /// then writes no pidfile at all.
    pub fn start_without_pidfile(args: &[&str]) -> Rtpproxy {
        match Rtpproxy::try_start_as(None, args, false) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like `start`, running the binary at `bin` (a copy, which a test
    /// may replace under the running daemon).
    pub fn start_from(bin: &Path, args: &[&str]) -> Rtpproxy {
        match Rtpproxy::try_start_with(bin, None, args, true) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn try_start_as(
        cwd: Option<&Path>,
        args: &[&str],
        add_pidfile: bool,
    ) -> Result<Rtpproxy, String> {
        Rtpproxy::try_start_with(&bin_path(), cwd, args, add_pidfile)
    }

    fn try_start_with(
        bin: &Path,
        cwd: Option<&Path>,
        args: &[&str],
        add_pidfile: bool,
    ) -> Result<Rtpproxy, String> {
        let dir = TempDir::new("daemon");
        let mut argv: Vec<String> = vec!["-f".into()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let spec = match args.iter().position(|a| *a == "-s") {
            Some(i) => args.get(i + 1).map(|s| s.to_string()).unwrap_or_default(),
            None => {
                let p = dir.path().join("ctl.sock");
                argv.push("-s".into());
                argv.push(format!("unix:{}", p.display()));
                format!("unix:{}", p.display())
            }
        };
        if add_pidfile && !args.contains(&"-p") {
            argv.push("-p".into());
            argv.push(dir.path().join("rtpproxy.pid").display().to_string());
        }
        let ctrl = parse_ctrl(&spec);
        let network = matches!(ctrl, Ctrl::Udp(_) | Ctrl::Tcp(_));
        if network && !args.contains(&"-u") && !args.contains(&"-F") {
            argv.push("-F".into());
        }
        let log_path = dir.path().join("stderr.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut command = Command::new(bin);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let child = command
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn rtpproxy: {e}"))?;
        let mut r = Rtpproxy {
            child,
            ctrl,
            log_path,
            dir,
            cookie: AtomicU32::new(1),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                return Err(format!(
                    "rtpproxy {argv:?} exited with {status}:\n{}",
                    r.log()
                ));
            }
            if r.try_command_within(b"V", Duration::from_millis(100))
                .as_deref()
                == Some("20040107")
            {
                return Ok(r);
            }
            if Instant::now() > deadline {
                return Err(format!("rtpproxy {argv:?} did not answer V:\n{}", r.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one command, returns the reply without cookie or final newline.
    pub fn command(&self, cmd: &str) -> String {
        self.command_bytes(cmd.as_bytes())
    }

    /// Sends one command given as raw bytes.
    pub fn command_bytes(&self, cmd: &[u8]) -> String {
        match self.try_command_bytes(cmd) {
            Some(r) => r,
            None => panic!(
                "no reply to {:?}; daemon log:\n{}",
                String::from_utf8_lossy(cmd),
                self.log()
            ),
        }
    }

    fn try_command_bytes(&self, cmd: &[u8]) -> Option<String> {
        self.try_command_within(cmd, Duration::from_secs(3))
    }

    fn try_command_within(&self, cmd: &[u8], timeout: Duration) -> Option<String> {
        let timeout = Some(timeout);
        match &self.ctrl {
            Ctrl::Unix(path) | Ctrl::Cunix(path) => {
                let mut s = UnixStream::connect(path).ok()?;
                s.set_read_timeout(timeout).ok()?;
                s.write_all(cmd).ok()?;
                s.shutdown(std::net::Shutdown::Write).ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                Some(out.trim_end_matches('\n').to_string())
            }
            Ctrl::Tcp(addr) => {
                let mut s = std::net::TcpStream::connect(addr).ok()?;
                s.set_read_timeout(timeout).ok()?;
                s.write_all(cmd).ok()?;
                s.shutdown(std::net::Shutdown::Write).ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                Some(out.trim_end_matches('\n').to_string())
            }
            Ctrl::Udp(addr) => {
                let bind = if addr.is_ipv6() {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                };
                let s = UdpSocket::bind(bind).ok()?;
                s.set_read_timeout(timeout).ok()?;
                let cookie = format!(
                    "{}_{}",
                    std::process::id(),
                    self.cookie.fetch_add(1, Ordering::SeqCst)
                );
                let mut msg = cookie.clone().into_bytes();
                msg.push(b' ');
                msg.extend_from_slice(cmd);
                s.send_to(&msg, addr).ok()?;
                let mut buf = vec![0u8; 65536];
                // The ephemeral port may be one a test's earlier socket had:
                // a late reply to that one is not ours, so wait on for ours.
                let prefix = format!("{cookie} ");
                for _ in 0..64 {
                    let n = s.recv(&mut buf).ok()?;
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if let Some(rest) = text.strip_prefix(&prefix) {
                        return Some(rest.trim_end_matches('\n').to_string());
                    }
                }
                None
            }
        }
    }

    /// Where a unix control socket lives (None for UDP and TCP).
    pub fn control_path(&self) -> Option<&Path> {
        match &self.ctrl {
            Ctrl::Unix(p) | Ctrl::Cunix(p) => Some(p),
            Ctrl::Udp(_) | Ctrl::Tcp(_) => None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's temp dir (pidfile, default control socket, stderr log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The UDP control address; panics for any other control socket.
    pub fn udp_addr(&self) -> SocketAddr {
        match &self.ctrl {
            Ctrl::Udp(a) => *a,
            Ctrl::Tcp(a) => panic!("TCP control socket {a}"),
            Ctrl::Unix(p) | Ctrl::Cunix(p) => panic!("unix control socket {}", p.display()),
        }
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits (bounded) for the exit; SIGKILL if it hangs.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Rtpproxy {
    /// The process serving now: the one started, or after a hand-over
    /// (SIGUSR2) the one its pidfile names, when that process's command
    /// line names this daemon's temp dir (so a reused pid is never taken
    /// for it).
    pub fn live_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("rtpproxy.pid")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let dir = self.dir.path().display().to_string();
        let ours = String::from_utf8_lossy(&cmdline).contains(&dir);
        (ours && pid_alive(pid)).then_some(pid)
    }

    /// Sends SIGUSR2 and waits (bounded) until the pidfile names a new
    /// live process that answers `V`: its pid, or None when the old one
    /// is still the one serving after 10 s.
    pub fn hand_over(&self) -> Option<u32> {
        let old = self.live_pid()?;
        signal(old, "USR2");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(new) = self.live_pid().filter(|&p| p != old) {
                if wait_pid_gone(old, Duration::from_secs(5))
                    && self
                        .try_command_within(b"V", Duration::from_secs(1))
                        .is_some()
                {
                    return Some(new);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Rtpproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A process that took over by SIGUSR2 is not our child.
        if let Some(pid) = self.live_pid().filter(|&p| p != self.child.id()) {
            signal(pid, "KILL");
            wait_pid_gone(pid, Duration::from_secs(5));
        }
    }
}

/// Starts the daemon on IPv4 loopback with UDP control on `port`, media
/// ports `range` and INFO logging, plus `extra` options.
pub fn udp(port: u16, range: (u16, u16), extra: &[&str]) -> Rtpproxy {
    controlled_by(&format!("udp:127.0.0.1:{port}"), range, extra)
}

/// The options most tests start a daemon with: IPv4 loopback, media ports
/// `range`, INFO logging, then `extra`.
pub fn loopback_args(range: (u16, u16), extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["-l", "127.0.0.1", "-m"].map(String::from).into();
    args.push(range.0.to_string());
    args.push("-M".into());
    args.push(range.1.to_string());
    args.extend(["-d", "INFO"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Starts the daemon on IPv4 loopback with the control socket `spec`
/// (`udp:`, `tcp:`, `unix:`, ...), media ports `range` and INFO logging,
/// plus `extra` options.
pub fn controlled_by(spec: &str, range: (u16, u16), extra: &[&str]) -> Rtpproxy {
    let mut args = vec!["-s".to_string(), spec.to_string()];
    args.extend(loopback_args(range, extra));
    Rtpproxy::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The account tests run the daemon as with `-u`.
pub const TEST_USER: &str = "rtpp-test";

/// The test account's uid and gid, creating the account when missing.
/// Creation is idempotent and tolerates another test creating it at the
/// same time: whatever useradd says, the account is looked up again.
pub fn test_user() -> (u32, u32) {
    let lookup = || {
        nix::unistd::User::from_name(TEST_USER)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    };
    if let Some(ids) = lookup() {
        return ids;
    }
    let _ = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            TEST_USER,
        ])
        .status();
    lookup().unwrap_or_else(|| panic!("cannot create the test user {TEST_USER} with useradd"))
}

/// Sends a signal by name to a pid we started.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

fn parse_ctrl(spec: &str) -> Ctrl {
    if let Some(rest) = spec.strip_prefix("tcp:") {
        return match parse_ctrl(&format!("udp:{rest}")) {
            Ctrl::Udp(addr) => Ctrl::Tcp(addr),
            other => other,
        };
    }
    if let Some(rest) = spec.strip_prefix("tcp6:") {
        return match parse_ctrl(&format!("udp6:{rest}")) {
            Ctrl::Udp(addr) => Ctrl::Tcp(addr),
            other => other,
        };
    }
    if let Some(path) = spec.strip_prefix("cunix:") {
        return Ctrl::Cunix(PathBuf::from(path));
    }
    if let Some(rest) = spec.strip_prefix("udp:") {
        let addr = if rest.contains(':') {
            rest.to_string()
        } else {
            format!("{rest}:22222")
        };
        return Ctrl::Udp(addr.parse().expect("udp control address"));
    }
    if let Some(rest) = spec.strip_prefix("udp6:") {
        let addr = if let Some(b) = rest.strip_prefix('[') {
            format!("[{}", b)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => format!("[{h}]:{p}"),
                None => format!("[{rest}]:22222"),
            }
        };
        return Ctrl::Udp(addr.parse().expect("udp6 control address"));
    }
    Ctrl::Unix(PathBuf::from(spec.strip_prefix("unix:").unwrap_or(spec)))
}

/// A media endpoint: one UDP socket on loopback.
pub struct Peer {
    pub sock: UdpSocket,
}

impl Peer {
    /// Binds an ephemeral port on `ip` ("127.0.0.1" or "::1").
    pub fn new(ip: &str) -> Peer {
        let bind = if ip.contains(':') {
            format!("[{ip}]:0")
        } else {
            format!("{ip}:0")
        };
        let sock = UdpSocket::bind(bind).expect("bind peer");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        Peer { sock }
    }

    /// Binds a given port (for RTP/RTCP pairs); None if it is taken.
    pub fn at(addr: &str) -> Option<Peer> {
        let sock = UdpSocket::bind(addr).ok()?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        Some(Peer { sock })
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local addr")
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn send(&self, to: SocketAddr, data: &[u8]) {
        self.sock.send_to(data, to).expect("send");
    }

    /// Next datagram within `ms`, with its source.
    pub fn recv_within(&self, ms: u64) -> Option<(Vec<u8>, SocketAddr)> {
        self.sock
            .set_read_timeout(Some(Duration::from_millis(ms.max(1))))
            .ok()?;
        let mut buf = vec![0u8; 65536];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        buf.truncate(n);
        Some((buf, from))
    }

    /// Next datagram within 500 ms.
    pub fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        self.recv_within(500)
    }

    /// Reads until nothing arrives for `ms`; returns how many came.
    pub fn drain(&self, ms: u64) -> usize {
        let mut n = 0;
        while self.recv_within(ms).is_some() {
            n += 1;
            if n > 1_000_000 {
                break;
            }
        }
        n
    }
}

/// A 172-byte G.711-shaped RTP packet with a sequence number.
pub fn rtp_packet(seq: u16, marker: u8) -> Vec<u8> {
    let mut p = vec![0x80, marker << 7, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..160).map(|i| (i as u8).wrapping_add(seq as u8)));
    p
}

/// Parses a `PORT [ADDR [6]]` reply into the relay's address for that leg.
pub fn reply_addr(reply: &str, default_ip: &str) -> SocketAddr {
    let mut it = reply.split_whitespace();
    let port: u16 = it
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a port reply: {reply:?}"));
    let ip = it.next().unwrap_or(default_ip);
    if ip.contains(':') {
        format!("[{ip}]:{port}").parse().expect("addr")
    } else {
        format!("{ip}:{port}").parse().expect("addr")
    }
}

/// A call set up through `U` and `L` between two parties on 127.0.0.1:
/// each party's socket and the relay address it sends to (and hears the
/// other party from).
pub struct Call {
    pub caller: Peer,
    pub callee: Peer,
    /// Where the caller sends (the port `L` answered).
    pub to_caller_leg: SocketAddr,
    /// Where the callee sends (the port `U` answered).
    pub to_callee_leg: SocketAddr,
}

impl Call {
    /// Sets up `call_id` on `rp` between two fresh parties on 127.0.0.1:
    /// `U{u_mods} CALL_ID 127.0.0.1 PORT FROMTAG` from the caller's port,
    /// then `L{l_mods} CALL_ID 127.0.0.1 PORT FROMTAG TOTAG` from the
    /// callee's, `tags` being (FROMTAG, TOTAG). No media is sent.
    pub fn setup(
        rp: &Rtpproxy,
        call_id: &str,
        u_mods: &str,
        l_mods: &str,
        (from_tag, to_tag): (&str, &str),
    ) -> Call {
        let caller = Peer::new("127.0.0.1");
        let callee = Peer::new("127.0.0.1");
        let u = rp.command(&format!(
            "U{u_mods} {call_id} 127.0.0.1 {} {from_tag}",
            caller.port()
        ));
        let l = rp.command(&format!(
            "L{l_mods} {call_id} 127.0.0.1 {} {from_tag} {to_tag}",
            callee.port()
        ));
        Call {
            to_callee_leg: reply_addr(&u, "127.0.0.1"),
            to_caller_leg: reply_addr(&l, "127.0.0.1"),
            caller,
            callee,
        }
    }
}

/// The plain call most tests relay media on: [`Call::setup`] without
/// modifiers, tagged `ftag;1` and `ttag;1`.
pub fn setup_call(rp: &Rtpproxy, call_id: &str) -> Call {
    Call::setup(rp, call_id, "", "", ("ftag;1", "ttag;1"))
}

impl Rtpproxy {
    /// Waits (bounded) for the process to exit on its own, e.g. after a
    /// signal sent with `signal`; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
}

/// Reads `/proc/PID/stat`; None when there is no such process.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the
    // last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
    })
}

/// True while `pid` runs (a zombie waiting to be reaped does not count).
pub fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Waits (bounded) until `pid` no longer runs; true if it ended in time.
pub fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Sends one command to a unix control socket and returns the reply
/// without its final newline; None when nobody answers within a second.
pub fn unix_command(path: &Path, cmd: &str) -> Option<String> {
    let mut s = UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    s.shutdown(std::net::Shutdown::Write).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.trim_end_matches('\n').to_string())
}

/// A daemon started without `-f`: the command returns once the daemon has
/// forked into the background (or failed to start), and the daemon's pid
/// comes from its pidfile. A daemon still running when this is dropped is
/// killed by that pid, after checking that the pid still is this daemon
/// (its command line names this daemon's temp dir).
pub struct Background {
    dir: TempDir,
    /// How the starting command exited.
    pub status: std::process::ExitStatus,
    /// What the starting command wrote to stderr.
    pub stderr: String,
    /// The daemon's pid, read from the pidfile after a successful start.
    pub pid: Option<u32>,
    pidfile: PathBuf,
    control: Option<PathBuf>,
}

impl Background {
    /// Runs the daemon without `-f` in a fresh temp dir. Unless given, `-p`
    /// puts the pidfile and `-s` a unix control socket (`ctl.sock`) there.
    pub fn start(args: &[&str]) -> Background {
        Background::start_in(TempDir::new("bg"), args)
    }

    /// Like `start`, in a temp dir the caller prepared (e.g. chowned).
    pub fn start_in(dir: TempDir, args: &[&str]) -> Background {
        let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let control = match args.iter().position(|a| *a == "-s") {
            Some(i) => args.get(i + 1).and_then(|s| match parse_ctrl(s) {
                Ctrl::Unix(p) | Ctrl::Cunix(p) => Some(p),
                Ctrl::Udp(_) | Ctrl::Tcp(_) => None,
            }),
            None => {
                let p = dir.path().join("ctl.sock");
                argv.push("-s".into());
                argv.push(format!("unix:{}", p.display()));
                Some(p)
            }
        };
        let pidfile = match args.iter().position(|a| *a == "-p") {
            Some(i) => PathBuf::from(args.get(i + 1).copied().unwrap_or_default()),
            None => {
                let p = dir.path().join("rtpproxy.pid");
                argv.push("-p".into());
                argv.push(p.display().to_string());
                p
            }
        };
        let err_path = dir.path().join("start.err");
        let err = std::fs::File::create(&err_path).expect("stderr file");
        let mut child = Command::new(bin_path())
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn rtpproxy");
        // The starting process waits up to 10 s for the daemon's report.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rtpproxy {argv:?} did not return to its caller within 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let mut bg = Background {
            dir,
            status,
            stderr,
            pid: None,
            pidfile,
            control,
        };
        if status.success() {
            bg.pid = std::fs::read_to_string(&bg.pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok());
        }
        bg
    }

    /// What the starting command wrote to stderr, less the warning that no
    /// syslog daemon listens (test machines often run none).
    pub fn stderr_besides_syslog(&self) -> String {
        self.stderr
            .lines()
            .filter(|l| !l.contains("no syslog daemon listens"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The pid of a daemon that started; panics with its stderr otherwise.
    pub fn running_pid(&self) -> u32 {
        match (self.status.success(), self.pid) {
            (true, Some(pid)) => pid,
            _ => panic!(
                "rtpproxy did not start ({}), pid {:?}:\n{}",
                self.status, self.pid, self.stderr
            ),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pidfile(&self) -> &Path {
        &self.pidfile
    }

    /// The unix control socket's path (None for UDP control).
    pub fn control_path(&self) -> Option<&Path> {
        self.control.as_deref()
    }

    /// Sends a command over the unix control socket.
    pub fn command(&self, cmd: &str) -> Option<String> {
        unix_command(self.control.as_deref()?, cmd)
    }

    /// True when `pid` is a process of this daemon (its command line names
    /// this daemon's temp dir), so it may be signalled.
    fn owns(&self, pid: u32) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let dir = self.dir.path().display().to_string();
        pid_alive(pid) && String::from_utf8_lossy(&cmdline).contains(&dir)
    }

    /// Sends a signal by name to the daemon, if it still runs.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid.filter(|&p| self.owns(p)) {
            signal(pid, name);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let from_file = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        for pid in [self.pid, from_file].into_iter().flatten() {
            if self.owns(pid) {
                signal(pid, "KILL");
                wait_pid_gone(pid, Duration::from_secs(5));
            }
        }
    }
}

/// A JSON value of a flat accounting record.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Str(String),
    Num(f64),
    Null,
}

/// Parses one flat JSON object (string, number and null values only, as
/// the `-A` records are), strictly: anything else is an error.
pub fn parse_flat_json(line: &str) -> Result<BTreeMap<String, Json>, String> {
    let mut it = line.trim_end_matches('\n').chars().peekable();
    let mut out = BTreeMap::new();
    let expect = |it: &mut std::iter::Peekable<std::str::Chars>, c: char| match it.next() {
        Some(x) if x == c => Ok(()),
        other => Err(format!("expected {c:?}, found {other:?}")),
    };
    fn string(it: &mut std::iter::Peekable<std::str::Chars>) -> Result<String, String> {
        if it.next() != Some('"') {
            return Err("expected a string".into());
        }
        let mut s = String::new();
        loop {
            match it.next().ok_or("unterminated string")? {
                '"' => return Ok(s),
                '\\' => match it.next().ok_or("unterminated escape")? {
                    '"' => s.push('"'),
                    '\\' => s.push('\\'),
                    '/' => s.push('/'),
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'b' => s.push('\u{8}'),
                    'f' => s.push('\u{c}'),
                    'u' => {
                        let hex: String = it.by_ref().take(4).collect();
                        let code = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                        s.push(char::from_u32(code).ok_or("surrogate escape")?);
                    }
                    other => return Err(format!("bad escape \\{other}")),
                },
                c if (c as u32) < 0x20 => return Err("raw control character".into()),
                c => s.push(c),
            }
        }
    }
    expect(&mut it, '{')?;
    loop {
        let key = string(&mut it)?;
        expect(&mut it, ':')?;
        let value = match it.peek() {
            Some('"') => Json::Str(string(&mut it)?),
            Some('n') => {
                let word: String = it.by_ref().take(4).collect();
                if word != "null" {
                    return Err(format!("bad literal {word}"));
                }
                Json::Null
            }
            _ => {
                let mut num = String::new();
                while let Some(&c) = it.peek() {
                    if !(c.is_ascii_digit() || c == '.' || c == '-') {
                        break;
                    }
                    num.push(c);
                    it.next();
                }
                Json::Num(num.parse().map_err(|_| format!("bad number {num:?}"))?)
            }
        };
        if out.insert(key.clone(), value).is_some() {
            return Err(format!("duplicate key {key}"));
        }
        match it.next() {
            Some(',') => continue,
            Some('}') => break,
            other => return Err(format!("expected , or }}, found {other:?}")),
        }
    }
    if it.next().is_some() {
        return Err("text after the object".into());
    }
    Ok(out)
}

/// Puts a process (or, with 0, the calling thread) in the real-time
/// scheduling class, when allowed (root). Timing tests use it so that what
/// they measure is the daemon, not the other processes of a busy machine
/// preempting it. Returns whether it was granted.
pub fn make_realtime(pid: u32) -> bool {
    use nix::libc::{sched_param, sched_setscheduler, SCHED_FIFO};
    let param = sched_param { sched_priority: 10 };
    // SAFETY: a plain system call on a process the test started (or on the
    // calling thread); `param` outlives the call.
    unsafe { sched_setscheduler(pid as i32, SCHED_FIFO, &param) == 0 }
}
