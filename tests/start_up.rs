//! What an operator sees when the daemon starts and is driven: the pidfile
//! is never taken from another live process (and not written at all in the
//! foreground without `-p`), the start line names the version, sockets,
//! ports and user, every failed command is logged with the command and who
//! sent it, `--version`, and the warning when no syslog daemon listens.
//!
//! Control ports and media ranges come from `common::ports`.

mod common;

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin_path, pid_alive, port, ports, unix_command, Background, Rtpproxy, TempDir};

/// A process this test started, killed and reaped however the test ends.
struct Bystander(Child);

impl Bystander {
    /// A `sleep` standing for a process that is not rtpproxy.
    fn sleep() -> Bystander {
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        Bystander(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pid no process has: one that ran and was reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    pid
}

fn media_args() -> Vec<String> {
    let (m, mm) = ports(20).range();
    [
        "-l",
        "127.0.0.1",
        "-m",
        &m.to_string(),
        "-M",
        &mm.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with<'a>(args: &[&'a str], more: &'a [String]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(more.iter().map(String::as_str));
    v
}

#[test]
fn a_pidfile_naming_a_live_process_is_never_overwritten() {
    let dir = TempDir::new("pid-live");
    let pidfile = dir.join("rtpproxy.pid");
    let pidfile_s = pidfile.display().to_string();
    let other = Bystander::sleep();
    let content = format!("{}\n", other.pid());
    std::fs::write(&pidfile, &content).expect("pidfile");
    let ctl = format!("unix:{}", dir.join("ctl.sock").display());
    let media = media_args();
    for foreground in [true, false] {
        let mut args = vec!["-F", "-s", &ctl, "-p", &pidfile_s];
        if foreground {
            args.push("-f");
        }
        let out = Command::new(bin_path())
            .args(with(&args, &media))
            .stdin(Stdio::null())
            .output()
            .expect("run rtpproxy");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "foreground {foreground}: {err}");
        let refusal: Vec<&str> = err.lines().filter(|l| !l.contains("WARNING")).collect();
        assert_eq!(refusal.len(), 1, "not one line: {err}");
        assert!(
            refusal[0].contains(&pidfile_s) && refusal[0].contains(&other.pid().to_string()),
            "the line names neither the pidfile nor the pid: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(&pidfile).expect("pidfile kept"),
            content
        );
        assert!(pid_alive(other.pid()));
        // Refused before anything was opened.
        assert!(
            !dir.join("ctl.sock").exists(),
            "the control socket was made"
        );
    }
}

#[test]
fn a_stale_or_garbled_pidfile_is_taken_over_and_removed_at_exit() {
    for stale in [format!("{}\n", dead_pid()), "not a pid\n".to_string()] {
        let dir = TempDir::new("pid-stale");
        let pidfile = dir.join("rtpproxy.pid");
        std::fs::write(&pidfile, &stale).expect("pidfile");
        let pidfile_s = pidfile.display().to_string();
        let media = media_args();
        let bg = Background::start_in(dir, &with(&["-F", "-p", &pidfile_s], &media));
        let pid = bg.running_pid();
        assert_eq!(
            std::fs::read_to_string(bg.pidfile()).expect("pidfile"),
            format!("{pid}\n")
        );
        bg.signal("TERM");
        assert!(common::wait_pid_gone(pid, Duration::from_secs(5)));
        assert!(!bg.pidfile().exists(), "pidfile left behind");
    }
}

#[test]
fn the_foreground_writes_no_pidfile_without_p() {
    // The classic default pidfile, which a service instance may own: a
    // debugging instance in the foreground must leave it as it is.
    let default = Path::new("/var/run/rtpproxy.pid");
    let before = std::fs::read(default).ok();
    let media = media_args();
    let mut rp =
        Rtpproxy::start_without_pidfile(&media.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read(default).ok(),
        before,
        "{} changed",
        default.display()
    );
    let mut found = std::fs::read_dir(rp.dir())
        .expect("daemon dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned());
    assert!(!found.any(|n| n.ends_with(".pid")), "a pidfile was written");
    // -p still writes one in the foreground.
    assert!(rp.terminate().is_some_and(|s| s.success()));
    let rp = Rtpproxy::start(&media.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(rp.dir().join("rtpproxy.pid").exists());
}

#[test]
fn the_start_line_names_version_control_listen_ports_and_user() {
    let control = port();
    let spec = format!("udp:127.0.0.1:{control}");
    let (m, mm) = ports(20).range();
    let (m_s, mm_s) = (m.to_string(), mm.to_string());
    let rp = Rtpproxy::start(&[
        "-s",
        &spec,
        "-l",
        "127.0.0.1",
        "-m",
        &m_s,
        "-M",
        &mm_s,
        "-d",
        "INFO",
    ]);
    let user = if nix_is_root() { "root" } else { "" };
    let want = format!(
        "INFO:rtpproxy:rtpproxy {} started: pid {}, control udp:127.0.0.1:{control}, listen 127.0.0.1, ports {m}-{mm}, user {user}",
        env!("CARGO_PKG_VERSION"),
        rp.pid()
    );
    let log = rp.log();
    assert!(
        log.lines().any(|l| l.contains(&want)),
        "no start line `{want}` in:\n{log}"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Waits (bounded) for a log line containing every one of `parts`.
fn wait_for_line(rp: &Rtpproxy, parts: &[&str]) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let log = rp.log();
        if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return Some(l.to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn failed_commands_are_logged_with_the_command_and_the_client() {
    let control = port();
    let spec = format!("udp:127.0.0.1:{control}");
    let media = media_args();
    // WARN: what an operator who only wants problems still sees.
    let rp = Rtpproxy::start(&with(&["-s", &spec, "-d", "WARN"], &media));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let from = sock.local_addr().expect("addr");
    let ask = |cmd: &[u8]| {
        sock.send_to(cmd, ("127.0.0.1", control)).expect("send");
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("reply");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
    };
    // A syntax error whose bytes try to forge a second log line.
    assert_eq!(ask(b"c1 Ux call\nINFO:forged 1.2.3.4"), "c1 E4");
    let line = wait_for_line(&rp, &["command syntax error (E4)", "from udp:"])
        .unwrap_or_else(|| panic!("no syntax error line:\n{}", rp.log()));
    assert!(
        line.contains("\"Ux call\\nINFO:forged 1.2.3.4\"")
            && line.contains(&format!("from udp:{from}")),
        "{line}"
    );
    assert!(!rp.log().lines().any(|l| l.starts_with("INFO:forged")));
    // A command that parses but fails: E8, the session is unknown.
    assert_eq!(ask(b"c3 D nosuchcall ft"), "c3 E8");
    let line = wait_for_line(&rp, &["command failed (E8)", "\"D nosuchcall ft\""])
        .unwrap_or_else(|| panic!("no failure line for D:\n{}", rp.log()));
    assert!(
        line.starts_with("WARN:") || line.contains(" WARN:"),
        "{line}"
    );
    // A long command is cut in the log, with its length.
    let long = format!("c4 Q {}", "x".repeat(5000));
    assert_eq!(ask(long.as_bytes()), "c4 E1");
    let line = wait_for_line(&rp, &["(5002 bytes)"])
        .unwrap_or_else(|| panic!("no cut line:\n{}", rp.log()));
    assert!(line.len() < 400, "{line}");
}

#[test]
fn unix_clients_are_named_by_pid_and_uid() {
    let media = media_args();
    let rp = Rtpproxy::start(&with(&["-d", "WARN"], &media));
    let ctl = rp.control_path().expect("unix").to_path_buf();
    assert_eq!(unix_command(&ctl, "D nosuchcall ft").as_deref(), Some("E8"));
    // The client was this test process.
    let who = format!("unix client pid {} uid ", std::process::id());
    let line = wait_for_line(&rp, &["command failed (E8)", &who])
        .unwrap_or_else(|| panic!("no line naming `{who}`:\n{}", rp.log()));
    assert!(line.contains("\"D nosuchcall ft\""), "{line}");
}

#[test]
fn version_names_the_software_then_the_protocol() {
    let out = Command::new(bin_path())
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("rtpproxy {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(lines[1], "Basic version: 20040107");
    let v = Command::new(bin_path()).arg("-v").output().expect("run -v");
    assert_eq!(
        &lines[1..].join("\n"),
        String::from_utf8_lossy(&v.stdout).trim_end()
    );
}

#[test]
fn a_missing_syslog_is_said_on_stderr_when_going_to_the_background() {
    let listening = UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log"))
        .is_ok();
    let media = media_args();
    let bg = Background::start(&with(&["-F"], &media));
    let pid = bg.running_pid();
    let warned = bg.stderr.contains("/dev/log");
    bg.signal("TERM");
    assert!(common::wait_pid_gone(pid, Duration::from_secs(5)));
    if listening {
        assert!(!warned, "warned though syslog listens: {}", bg.stderr);
    } else {
        assert!(
            warned,
            "no warning without a syslog daemon: {:?}",
            bg.stderr
        );
        assert_eq!(bg.stderr.lines().count(), 1, "{}", bg.stderr);
    }
}
