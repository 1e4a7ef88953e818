//! Daemon life as a distro package and an init script see it: forking into
//! the background, the start-up report to the caller, the pidfile, the
//! control socket's owner and mode, `-u`, signals, `-L`, the option errors,
//! `-v`/`-h`, and the SysV init script.
//!
//! Each test gets its control ports and media ranges from `common::ports`.
//! Tests that need root (`-u`, the root checks) fail with a line saying so
//! when run as another user.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    bin_path, pid_alive, port, ports, proc_stat, reply_addr, rtp_packet, wait_pid_gone, Background,
    Peer, PortBlock, Rtpproxy, TempDir,
};

/// The account `-u` tests switch to.
use common::{test_user, TEST_USER};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (to switch users and create {TEST_USER}); run the tests as root"
    );
}

/// The four ids of a `Uid:`/`Gid:` line and the `Groups:` list.
fn proc_ids(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .map(|v| v.parse().expect("id"))
            .collect()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// A signal mask line of `/proc/PID/status` (`SigIgn`, `SigCgt`).
fn signal_mask(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .expect("mask line")
        .trim();
    u64::from_str_radix(hex, 16).expect("hex mask")
}

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Ends a background daemon with `sig` and checks that it cleaned up.
fn assert_ends_cleanly(bg: &Background, sig: &str) {
    let pid = bg.running_pid();
    bg.signal(sig);
    assert!(
        wait_pid_gone(pid, Duration::from_secs(5)),
        "pid {pid} still running 5 s after SIG{sig}"
    );
    if let Some(ctl) = bg.control_path() {
        assert!(!ctl.exists(), "SIG{sig} left the control socket");
    }
    assert!(!bg.pidfile().exists(), "SIG{sig} left the pidfile");
}

/// `-m FIRST -M LAST` for `block`.
fn media_args(block: PortBlock) -> [String; 4] {
    let (m, mm) = block.range();
    ["-m".into(), m.to_string(), "-M".into(), mm.to_string()]
}

/// `-m FIRST -M LAST` for a fresh block of `n` media ports.
fn media(n: u16) -> [String; 4] {
    media_args(ports(n))
}

/// `args` followed by `more`, as the `&[&str]` the harness takes.
fn with<'a>(args: &[&'a str], more: &'a [String]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(more.iter().map(String::as_str));
    all
}

#[test]
fn background_daemon_detaches_serves_and_cleans_up() {
    let range = media(100);
    let bg = Background::start(&with(&["-F", "-l", "127.0.0.1"], &range));
    let pid = bg.running_pid();
    assert!(
        bg.stderr_besides_syslog().is_empty(),
        "unexpected output: {}",
        bg.stderr
    );
    assert!(pid_alive(pid));
    let stat = proc_stat(pid).expect("stat");
    // Detached: not a child of the test (its starter exited), leading a
    // session and a process group of its own.
    assert_ne!(stat.ppid, std::process::id(), "{stat:?}");
    assert_eq!(stat.session, pid, "{stat:?}");
    assert_eq!(stat.pgrp, pid, "{stat:?}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
        Path::new("/")
    );
    for fd in 0..3 {
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("fd"),
            Path::new("/dev/null"),
            "fd {fd}"
        );
    }
    assert_eq!(bg.command("V").as_deref(), Some("20040107"));
    let ctl = bg.control_path().expect("unix control");
    let mode = std::fs::metadata(ctl).expect("socket").permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "control socket mode {mode:o}");
    // PIPE ignored; TERM, INT and HUP caught.
    assert_ne!(
        signal_mask(pid, "SigIgn:") & bit(13),
        0,
        "SIGPIPE not ignored"
    );
    let caught = signal_mask(pid, "SigCgt:");
    for sig in [1, 2, 15] {
        assert_ne!(caught & bit(sig), 0, "signal {sig} not caught");
    }
    assert_ends_cleanly(&bg, "TERM");
}

#[test]
fn hup_and_int_end_the_background_daemon_cleanly() {
    for sig in ["HUP", "INT"] {
        let block = ports(100);
        let range = media_args(block);
        let bg = Background::start(&with(&["-F", "-l", "127.0.0.1"], &range));
        assert_eq!(bg.command("V").as_deref(), Some("20040107"));
        // A live session must not keep the daemon from ending.
        let u = bg.command("U call1 127.0.0.1 4000 ftag").expect("U reply");
        assert!(block.contains(reply_addr(&u, "127.0.0.1").port()), "{u}");
        assert_ends_cleanly(&bg, sig);
    }
}

#[test]
fn every_ending_signal_logs_and_exits_0() {
    for (sig, num) in [("TERM", 15), ("INT", 2), ("HUP", 1)] {
        let range = media(100);
        let mut rp = Rtpproxy::start(&with(&["-l", "127.0.0.1"], &range));
        let caller = Peer::new("127.0.0.1");
        let u = rp.command(&format!("U sigcall 127.0.0.1 {} ftag", caller.port()));
        let to = reply_addr(&u, "127.0.0.1");
        caller.send(to, &rtp_packet(1, 1));
        let ctl = rp.control_path().expect("unix").to_path_buf();
        let pidfile = rp.dir().join("rtpproxy.pid");
        assert!(pidfile.exists());
        common::signal(rp.pid(), sig);
        let status = rp.wait_exit(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "SIG{sig}: {status:?}\n{}",
            rp.log()
        );
        let log = rp.log();
        assert!(
            log.contains(&format!("got signal {num}")),
            "SIG{sig}: {log}"
        );
        assert!(log.contains("rtpproxy ended"), "SIG{sig}: {log}");
        assert!(!ctl.exists(), "SIG{sig} left the control socket");
        assert!(!pidfile.exists(), "SIG{sig} left the pidfile");
    }
}

/// The start-up errors a package's init system must see as a failed start.
#[test]
fn startup_failures_exit_1_with_the_reason() {
    let check = |bg: &Background, want: &str| {
        assert_eq!(bg.status.code(), Some(1), "{want}: {}", bg.stderr);
        assert!(bg.stderr.contains(want), "want {want:?} in: {}", bg.stderr);
        assert!(bg.stderr.starts_with("rtpproxy: "), "{}", bg.stderr);
        assert!(bg.pid.is_none());
    };

    // A UDP control port another program holds.
    let held = port();
    let holder = std::net::UdpSocket::bind(("127.0.0.1", held)).expect("bind the held port");
    let control = format!("udp:127.0.0.1:{held}");
    let bg = Background::start(&["-F", "-s", &control, "-l", "127.0.0.1"]);
    check(&bg, "Address already in use");
    assert!(!bg.pidfile().exists());
    drop(holder);

    // A unix socket a live daemon answers on: refused, and the live one
    // keeps its socket.
    let range = media(100);
    let live = Background::start(&with(&["-F"], &range));
    live.running_pid();
    let ctl = live.control_path().expect("unix").display().to_string();
    let other = TempDir::new("second");
    let pid2 = other.path().join("second.pid").display().to_string();
    let bg = Background::start_in(other, &["-F", "-s", &ctl, "-p", &pid2]);
    check(&bg, "in use by a running daemon");
    assert_eq!(live.command("V").as_deref(), Some("20040107"));

    // Not a directory.
    let bg = Background::start(&["-F", "-r", "/nonexistent/rtpp-rec"]);
    check(&bg, "invalid value for -r");
    assert!(!bg.control_path().expect("unix").exists());

    // Unknown user.
    let bg = Background::start(&["-u", "rtpp-no-such-user"]);
    check(&bg, "invalid value for -u: unknown user rtpp-no-such-user");

    // A pidfile that cannot be written fails in the daemon itself, after
    // the fork: the report reaches the caller, the socket is removed.
    let dir = TempDir::new("nopid");
    let ctl = format!("unix:{}", dir.path().join("ctl.sock").display());
    let ctl_path = dir.path().join("ctl.sock");
    let bg = Background::start_in(dir, &["-F", "-s", &ctl, "-p", "/proc/rtpp-test.pid"]);
    check(&bg, "can't write pidfile /proc/rtpp-test.pid");
    assert!(!ctl_path.exists(), "failed start left its control socket");
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.path().join("ctl.sock");
    // A socket file nobody listens on, as a killed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let range = media(100);
    let bg = Background::start_in(dir, &with(&["-F"], &range));
    bg.running_pid();
    assert_eq!(bg.command("V").as_deref(), Some("20040107"));
    assert_ends_cleanly(&bg, "TERM");
}

#[test]
fn run_as_user_drops_every_root_privilege() {
    require_root("-u");
    let (uid, gid) = test_user();
    for (spec, want_gid) in [
        (TEST_USER.to_string(), gid),
        (format!("{TEST_USER}:nogroup"), 65534),
    ] {
        // Owned by the user, so that the daemon can still remove its
        // socket and pidfile there after the switch.
        let dir = TempDir::new("runas");
        let rec = dir.path().join("rec");
        std::fs::create_dir(&rec).expect("rec dir");
        for p in [dir.path(), rec.as_path()] {
            std::os::unix::fs::chown(p, Some(uid), Some(want_gid)).expect("chown");
        }
        let rec_arg = rec.display().to_string();
        let range = media(50);
        let bg = Background::start_in(
            dir,
            &with(
                &["-u", &spec, "-l", "127.0.0.1", "-r", &rec_arg, "-a"],
                &range,
            ),
        );
        let pid = bg.running_pid();
        let (uids, gids, groups) = proc_ids(pid);
        assert_eq!(uids, vec![uid; 4], "{spec}: Uid");
        assert_eq!(gids, vec![want_gid; 4], "{spec}: Gid");
        assert_eq!(groups, vec![want_gid], "{spec}: Groups");
        assert!(!groups.contains(&0));

        let meta = std::fs::metadata(bg.control_path().expect("unix")).expect("socket");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, want_gid),
            "{spec}: socket owner"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        // The pidfile stays root's: systemd distrusts one the service
        // account could rewrite.
        assert_eq!(std::fs::metadata(bg.pidfile()).expect("pidfile").uid(), 0);

        // A recorded call: its files belong to the user.
        let caller = Peer::new("127.0.0.1");
        let callee = Peer::new("127.0.0.1");
        let u = bg
            .command(&format!("U rec1 127.0.0.1 {} ftag", caller.port()))
            .expect("U");
        let l = bg
            .command(&format!("L rec1 127.0.0.1 {} ftag ttag", callee.port()))
            .expect("L");
        let to_callee_leg = reply_addr(&u, "127.0.0.1");
        let to_caller_leg = reply_addr(&l, "127.0.0.1");
        for seq in 0..5 {
            caller.send(to_caller_leg, &rtp_packet(seq, 0));
            assert!(callee.recv().is_some(), "{spec}: not relayed");
            callee.send(to_callee_leg, &rtp_packet(seq, 0));
            assert!(caller.recv().is_some(), "{spec}: not relayed back");
        }
        assert_eq!(bg.command("D rec1 ftag ttag").as_deref(), Some("0"));
        let files: Vec<_> = std::fs::read_dir(&rec)
            .expect("rec dir")
            .flatten()
            .collect();
        assert!(!files.is_empty(), "{spec}: nothing recorded");
        for f in files {
            let meta = f.metadata().expect("meta");
            assert_eq!(meta.uid(), uid, "{spec}: {:?}", f.path());
        }
        assert_ends_cleanly(&bg, "TERM");
    }
}

#[test]
fn recording_dir_must_be_writable_by_the_user() {
    require_root("-u");
    test_user();
    let dir = TempDir::new("recperm");
    // Root's 0755 directory: rtpp-test may not write there.
    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec).expect("rec dir");
    std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let rec_arg = rec.display().to_string();
    let bg = Background::start(&["-u", TEST_USER, "-r", &rec_arg]);
    assert_eq!(bg.status.code(), Some(1), "{}", bg.stderr);
    assert!(
        bg.stderr.contains("invalid value for -r")
            && bg.stderr.contains(&format!("not writable by {TEST_USER}")),
        "{}",
        bg.stderr
    );
    // Checked before anything was opened.
    assert!(!bg.control_path().expect("unix").exists());
    assert!(!bg.pidfile().exists());
}

#[test]
fn root_needs_u_or_f() {
    require_root("the root checks");
    let (uid, _) = test_user();

    // UDP control as root without -u or -F: refused, nothing left bound.
    let refused = port();
    let control = format!("udp:127.0.0.1:{refused}");
    let bg = Background::start(&["-s", &control, "-l", "127.0.0.1"]);
    assert_eq!(bg.status.code(), Some(1), "{}", bg.stderr);
    assert!(
        bg.stderr.contains("root") && bg.stderr.contains("-u") && bg.stderr.contains("-F"),
        "{}",
        bg.stderr
    );
    assert!(std::net::UdpSocket::bind(("127.0.0.1", refused)).is_ok());
    // TCP control likewise.
    let refused = port();
    let control = format!("tcp:127.0.0.1:{refused}");
    let bg = Background::start(&["-s", &control, "-l", "127.0.0.1"]);
    assert_eq!(bg.status.code(), Some(1), "{}", bg.stderr);
    assert!(
        bg.stderr.contains("TCP") && bg.stderr.contains("-u") && bg.stderr.contains("-F"),
        "{}",
        bg.stderr
    );
    assert!(std::net::TcpListener::bind(("127.0.0.1", refused)).is_ok());

    // With -F it runs as root; with -u as the user.
    let control = format!("udp:127.0.0.1:{}", port());
    let range = media(50);
    let bg = Background::start(&with(&["-F", "-s", &control, "-l", "127.0.0.1"], &range));
    assert_eq!(proc_ids(bg.running_pid()).0, vec![0; 4]);
    assert_ends_cleanly(&bg, "TERM");
    let dir = TempDir::new("udpuser");
    std::os::unix::fs::chown(dir.path(), Some(uid), None).expect("chown");
    let control = format!("udp:127.0.0.1:{}", port());
    let range = media(50);
    let bg = Background::start_in(
        dir,
        &with(
            &["-u", TEST_USER, "-s", &control, "-l", "127.0.0.1"],
            &range,
        ),
    );
    assert_eq!(proc_ids(bg.running_pid()).0, vec![uid; 4]);
    assert!(bg.stderr_besides_syslog().is_empty(), "{}", bg.stderr);
    assert_ends_cleanly(&bg, "TERM");

    // Unix control as root without -u: a warning, which -F silences.
    let bg = Background::start(&[]);
    bg.running_pid();
    assert!(
        bg.stderr.contains("WARNING") && bg.stderr.contains("root"),
        "{}",
        bg.stderr
    );
    assert_ends_cleanly(&bg, "INT");
    let bg = Background::start(&["-F"]);
    bg.running_pid();
    assert!(bg.stderr_besides_syslog().is_empty(), "{}", bg.stderr);
    assert_ends_cleanly(&bg, "INT");
}

/// Runs the binary with `args` and nothing else; (status, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin_path())
        .args(args)
        .output()
        .expect("run rtpproxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_bad_option_value_is_one_line_naming_the_option() {
    let dir = TempDir::new("badopts");
    let ctl = format!("unix:{}", dir.path().join("ctl.sock").display());
    let pid = dir.path().join("pid").display().to_string();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("file");
    let file = file.display().to_string();
    let cases: &[(&[&str], char)] = &[
        (&["-l", "not-an-address.invalid"], 'l'),
        (&["-l", "::1"], 'l'),
        (&["-l", "127.0.0.1/127.0.0.2/127.0.0.3"], 'l'),
        (&["-6", "::1/::1/::1"], '6'),
        (&["-6", "127.0.0.1"], '6'),
        (&["-6", "not-an-address.invalid"], '6'),
        (&["-s", "udp:127.0.0.1:99999"], 's'),
        (&["-s", "udp:no-such-host.invalid"], 's'),
        (&["-s", "unix:"], 's'),
        // An unknown scheme is refused, not taken for a socket path.
        (&["-s", "bogus:foo"], 's'),
        (&["-s", "upd:127.0.0.1:22222"], 's'),
        (&["-s", "UDP4:127.0.0.1"], 's'),
        (&["-t", "256"], 't'),
        (&["-t", "0x100"], 't'),
        (&["-t", "ef"], 't'),
        (&["-r", "/nonexistent/rtpp"], 'r'),
        (&["-r", &file], 'r'),
        (&["-r", "/tmp", "-S", "/nonexistent/rtpp"], 'S'),
        (&["-S", "/tmp"], 'S'),
        (&["-p", "/nonexistent/dir/rtpproxy.pid"], 'p'),
        (&["-p", "/tmp"], 'p'),
        (&["-p", ""], 'p'),
        (&["-T", "0"], 'T'),
        (&["-T", "-5"], 'T'),
        (&["-T", "x"], 'T'),
        (&["-L", "0"], 'L'),
        (&["-L", "many"], 'L'),
        (&["-m", "0"], 'm'),
        (&["-m", "70000"], 'm'),
        (&["-M", "x"], 'M'),
        (&["-m", "40001", "-M", "40002"], 'm'),
        (&["-m", "65535"], 'm'),
        (&["-u", ""], 'u'),
        (&["-u", ":nogroup"], 'u'),
        (&["-u", "root:"], 'u'),
        (&["-u", "rtpp-no-such-user"], 'u'),
        (&["-u", "root:rtpp-no-such-group"], 'u'),
        (&["-n", "udp:127.0.0.1:5000"], 'n'),
        (&["-n", "unix:"], 'n'),
        (&["-n", "tpc:127.0.0.1:5000"], 'n'),
        (&["-n", "tcp:127.0.0.1"], 'n'),
        (&["-n", "tcp6:[::1]:5000"], 'n'),
        (&["-s", "tcp:127.0.0.1:0"], 's'),
        (&["-s", "tcp6:127.0.0.1"], 's'),
        (&["-s", "cunix:"], 's'),
        (&["-d", "LOUD"], 'd'),
        (&["-d", "INFO:LOG_NOPE"], 'd'),
        (&["-d", ""], 'd'),
    ];
    // Every option that takes a value, and that value missing.
    let missing: Vec<[&str; 1]> = [
        "-l", "-6", "-s", "-t", "-r", "-S", "-p", "-T", "-L", "-m", "-M", "-u", "-n", "-d",
    ]
    .iter()
    .map(|o| [*o])
    .collect();
    let all = cases.iter().map(|(a, c)| (a.to_vec(), *c)).chain(
        missing
            .iter()
            .map(|a| (a.to_vec(), a[0].chars().nth(1).unwrap_or('?'))),
    );
    for (args, opt) in all {
        // Without -f: the errors must come before the fork, in the caller.
        let mut argv = vec!["-F", "-s", &ctl, "-p", &pid];
        if args[0] == "-s" || args[0] == "-p" {
            argv.clear();
            argv.push("-F");
        }
        argv.extend_from_slice(&args);
        let (code, out, err) = run(&argv);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.starts_with("rtpproxy: "), "{args:?}: {err}");
        let named = err.contains(&format!("-{opt}")) || err.contains(&format!("'{opt}'"));
        assert!(named, "{args:?}: the message does not name -{opt}: {err}");
        assert!(
            !dir.path().join("ctl.sock").exists() && !dir.path().join("pid").exists(),
            "{args:?}: something was opened"
        );
    }
    // An unknown option is named too.
    let (code, _, err) = run(&["-Q"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains('Q'), "{err}");
}

#[test]
fn version_lists_every_extension() {
    let (code, out, err) = run(&["-v"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Basic version: 20040107");
    let stamps: Vec<&str> = lines[1..]
        .iter()
        .map(|l| {
            l.strip_prefix("Extension ")
                .and_then(|r| r.split(':').next())
                .unwrap_or_else(|| panic!("not an extension line: {l}"))
        })
        .collect();
    assert_eq!(
        stamps,
        [
            "20040107", "20050322", "20060704", "20071116", "20071218", "20080403", "20081102",
            "20081224", "20090810", "20140323", "20140617", "20141004", "20150330", "20150420",
            "20150617", "20191015", "20200226", "20230205", "20230314"
        ]
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("Extension 20081224") && l.ends_with("(with -n)")));
}

#[test]
fn help_prints_usage_and_exits_0() {
    for flag in ["-h", "-?"] {
        let (code, out, err) = run(&[flag]);
        assert_eq!(code, Some(0), "{flag}: {err}");
        assert!(out.starts_with("usage: rtpproxy "), "{flag}: {out}");
        for opt in [
            "-l", "-6", "-s", "-t", "-r", "-S", "-p", "-T", "-L", "-m", "-M", "-u", "-n", "-d",
        ] {
            assert!(
                out.contains(&format!("[{opt} ")),
                "{flag}: {opt} missing: {out}"
            );
        }
    }
}

#[test]
fn nofile_limit_is_raised_and_a_shortfall_warned() {
    let range = media(10);
    let rp = Rtpproxy::start(&with(&["-L", "4096"], &range));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", rp.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, ["4096", "4096"], "{line}");
    drop(rp);

    // More than the kernel allows anyone (fs.nr_open): granted what can be.
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let want = (nr_open + 1).to_string();
    let range = media(10);
    let rp = Rtpproxy::start(&with(&["-L", &want], &range));
    assert!(
        rp.log().contains("WARNING: open files limit is"),
        "{}",
        rp.log()
    );
    assert_eq!(rp.command("V"), "20040107");
}

#[test]
fn sysv_init_script_starts_reports_and_stops() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sysv_init.sh");
    // The script makes its scratch directory under TMPDIR.
    let tmp = TempDir::new("sysv");
    let (first, last) = ports(20).range();
    let mut cmd = Command::new("sh");
    cmd.arg(&script)
        .arg(bin_path())
        .arg(first.to_string())
        .arg(last.to_string())
        .env("TMPDIR", tmp.path())
        .env_remove("START_STOP_DAEMON");
    // The packaged layout's checks run the daemon as the test account.
    if is_root() {
        test_user();
        cmd.env("RTPP_TEST_USER", TEST_USER);
    } else {
        eprintln!("not root: the init script's checks with RTPPROXY_USER are skipped");
    }
    let out = cmd.output().expect("run sh");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sysv_init.sh: ok"));
}

/// `tests/syslog_level.sh`, running in a mount namespace of its own; ended
/// (SIGTERM, which runs its cleanup, then SIGKILL) if still running when
/// dropped, so that a failing test leaves no process behind.
struct NsScript {
    child: std::process::Child,
}

impl NsScript {
    /// Waits up to `secs` for the script to exit.
    fn wait(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NsScript {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            common::signal(self.child.id(), "TERM");
            if self.wait(15).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// The packaged settings through a real syslog daemon: the SysV script,
/// reading `contrib/default/rtpproxy`, runs the daemon at its
/// `RTPPROXY_LOG_LEVEL`, and rsyslogd gets the start line and a session's
/// accounting line; a `-d` in `RTPPROXY_OPTS` wins over that level; without
/// `/dev/log` the daemon says so on stderr.  `tests/syslog_level.sh` does
/// the namespace, rsyslogd and the init script; this side makes the call.
#[test]
fn packaged_log_level_reaches_syslog() {
    if !is_root() {
        eprintln!(
            "skipped packaged_log_level_reaches_syslog: it needs root \
             (a mount namespace with a /dev/log of its own)"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defaults =
        std::fs::read_to_string(root.join("contrib/default/rtpproxy")).expect("defaults");
    assert!(
        defaults.lines().any(|l| l == "RTPPROXY_LOG_LEVEL=\"INFO\""),
        "contrib/default/rtpproxy does not set RTPPROXY_LOG_LEVEL=\"INFO\""
    );
    let dir = TempDir::new("syslog");
    let (first, last) = ports(20).range();
    let out = std::fs::File::create(dir.join("script.out")).expect("script.out");
    let err = std::fs::File::create(dir.join("script.err")).expect("script.err");
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(root.join("tests/syslog_level.sh"))
        .arg(bin_path())
        .arg(dir.path())
        .arg(first.to_string())
        .arg(last.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("run unshare (util-linux)");
    let mut script = NsScript { child };
    let output = |dir: &TempDir| {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        format!(
            "script stdout:\n{}\nscript stderr:\n{}\ninit script:\n{}\nsyslog:\n{}",
            read("script.out"),
            read("script.err"),
            read("init.out"),
            read("syslog.out")
        )
    };

    // The daemon runs under the init script once "ready" appears.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !dir.join("ready").exists() {
        if let Ok(Some(st)) = script.child.try_wait() {
            panic!("syslog_level.sh exited ({st}) early:\n{}", output(&dir));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "syslog_level.sh not ready within 30 s:\n{}",
            output(&dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // One call, with a little media each way.
    let ctl = dir.join("ctl.sock");
    let caller = Peer::new("127.0.0.1");
    let callee = Peer::new("127.0.0.1");
    let u = common::unix_command(&ctl, &format!("U call1 127.0.0.1 {} tag1", caller.port()))
        .expect("U");
    let l = common::unix_command(
        &ctl,
        &format!("L call1 127.0.0.1 {} tag1 tag2", callee.port()),
    )
    .expect("L");
    let to_callee_leg = reply_addr(&u, "127.0.0.1");
    let to_caller_leg = reply_addr(&l, "127.0.0.1");
    for seq in 0..3 {
        caller.send(to_caller_leg, &rtp_packet(seq, 0));
        assert!(callee.recv().is_some(), "not relayed");
        callee.send(to_callee_leg, &rtp_packet(seq, 0));
        assert!(caller.recv().is_some(), "not relayed back");
    }
    assert_eq!(
        common::unix_command(&ctl, "D call1 tag1").as_deref(),
        Some("0")
    );
    std::fs::write(dir.join("go"), "").expect("go");

    let status = script.wait(90);
    assert!(
        status.is_some_and(|st| st.success()),
        "syslog_level.sh: {status:?}\n{}",
        output(&dir)
    );

    // Without /dev/log, the background daemon says so.
    let nolog = std::fs::read_to_string(dir.join("nolog.err")).unwrap_or_default();
    assert!(
        nolog.contains("/dev/log"),
        "no word of /dev/log on stderr without syslog: {nolog:?}\n{}",
        output(&dir)
    );

    let syslog = std::fs::read_to_string(dir.join("syslog.out")).unwrap_or_default();
    let started = format!("rtpproxy {} started", env!("CARGO_PKG_VERSION"));
    let starts = syslog.lines().filter(|l| l.contains(&started)).count();
    assert_eq!(
        starts,
        1,
        "want one {started:?} line: the defaults file's INFO, then -d WARN in \
         RTPPROXY_OPTS winning\n{}",
        output(&dir)
    );
    assert!(
        syslog
            .lines()
            .any(|l| l.contains("session ended (") && l.contains("call1")),
        "no accounting line for call1 in syslog\n{}",
        output(&dir)
    );
}

/// The packaged paths and log level agree across the unit, the defaults
/// file, the SysV script and the SIP proxies' example configurations.
#[test]
fn packaged_settings_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    let unit = read("contrib/systemd/rtpproxy.service");
    let line = |key: &str| -> String {
        let found: Vec<&str> = unit.lines().filter(|l| l.starts_with(key)).collect();
        assert_eq!(found.len(), 1, "the unit's {key} lines: {found:?}");
        found[0].to_string()
    };
    assert_eq!(line("RuntimeDirectory="), "RuntimeDirectory=rtpproxy");
    assert_eq!(line("RuntimeDirectoryMode="), "RuntimeDirectoryMode=0755");
    assert_eq!(line("PIDFile="), "PIDFile=/run/rtpproxy/rtpproxy.pid");
    assert_eq!(
        line("ExecStartPre="),
        "ExecStartPre=/bin/chown ${RTPPROXY_USER} /run/rtpproxy"
    );
    assert!(unit.contains("\nEnvironment=RTPPROXY_LOG_LEVEL=INFO\n"));
    let exec = line("ExecStart=");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let at = |w: &str| words.iter().position(|x| *x == w);
    assert!(exec.contains("-p /run/rtpproxy/rtpproxy.pid"), "{exec}");
    assert!(exec.contains("-d ${RTPPROXY_LOG_LEVEL}"), "{exec}");
    assert!(
        at("-d") < at("$RTPPROXY_OPTS") && at("-d").is_some(),
        "-d must come before $RTPPROXY_OPTS: {exec}"
    );

    let reload = line("ExecReload=");
    assert!(
        reload.contains("kill -USR2 \"$$old\"") && reload.contains("/run/rtpproxy/rtpproxy.pid"),
        "ExecReload= must hand over (SIGUSR2) and wait on the PIDFile=: {reload}"
    );

    let sock = "-s unix:/run/rtpproxy/rtpproxy.sock";
    assert!(unit.contains(&format!("Environment=\"RTPPROXY_OPTS={sock}\"")));
    let defaults = read("contrib/default/rtpproxy");
    assert!(defaults.contains(&format!("\nRTPPROXY_OPTS=\"{sock}\"\n")));
    assert!(defaults.contains("\nRTPPROXY_LOG_LEVEL=\"INFO\"\n"));
    // Every example but the one over UDP keeps the socket.
    for l in defaults.lines().filter(|l| l.contains("RTPPROXY_OPTS=\"")) {
        assert!(l.contains(sock) || l.contains("-s udp:"), "{l}");
    }
    let sysv = read("contrib/sysv/rtpproxy");
    assert!(sysv.contains("PIDFILE=${env_pidfile:-${PIDFILE:-/run/$NAME/$NAME.pid}}"));
    for cfg in [
        "contrib/kamailio/kamailio-rtpproxy.cfg",
        "contrib/opensips/opensips-rtpproxy.cfg",
    ] {
        assert!(
            read(cfg).contains(
                r#"modparam("rtpproxy", "rtpproxy_sock", "unix:/run/rtpproxy/rtpproxy.sock")"#
            ),
            "{cfg} does not point at the packaged control socket"
        );
    }
}

/// Every file under `contrib/`, `tests/`, `fuzz/` and `.ci/` that starts
/// with `#!/bin/sh`, skipping build output and fuzz corpora.
fn shell_scripts(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            if path.is_dir() {
                if !["target", "corpus", "artifacts", "coverage"]
                    .iter()
                    .any(|skip| name == *skip)
                {
                    walk(root, &path, found);
                }
                continue;
            }
            let mut head = [0u8; 10];
            let n = std::fs::File::open(&path)
                .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                .unwrap_or(0);
            if head[..n].starts_with(b"#!/bin/sh") {
                let rel = path.strip_prefix(root).expect("under the root");
                found.push(rel.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    for dir in ["contrib", "tests", "fuzz", ".ci"] {
        walk(root, &root.join(dir), &mut found);
    }
    found.sort();
    found
}

/// Every shell script parses with `sh -n`, and passes shellcheck where it
/// is installed.
#[test]
fn contrib_shell_scripts_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts = shell_scripts(root);
    for known in [
        "contrib/sysv/rtpproxy",
        "contrib/freebsd/rtpproxy",
        "contrib/debian/postinst",
        "contrib/debian/prerm",
        "contrib/debian/postrm",
        "tests/sysv_init.sh",
        "tests/syslog_level.sh",
        "tests/run.sh",
    ] {
        assert!(
            scripts.iter().any(|s| s == known),
            "{known} not found among the shell scripts: {scripts:?}"
        );
    }
    let shellcheck = Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !shellcheck {
        eprintln!("shellcheck is not installed: only sh -n checks the scripts");
    }
    for script in &scripts {
        let out = Command::new("sh")
            .arg("-n")
            .arg(root.join(script))
            .output()
            .expect("run sh -n");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if shellcheck {
            let out = Command::new("shellcheck")
                .args(["--shell=sh", "--external-sources"])
                .arg(root.join(script))
                .output()
                .expect("run shellcheck");
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
