//! rtpproxy: start-up (options, sockets, daemon life) and the poll loop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use getopts::Options;
use rtpproxy::rtpp_account::AccountFile;
use rtpproxy::rtpp_log;

use rtpproxy::rtpp_account::EndReason;
use rtpproxy::rtpp_command::exec::{execute, Context};
use rtpproxy::rtpp_command::{parse, Reply};
use rtpproxy::rtpp_control::Control;
use rtpproxy::rtpp_defines::{
    BindMode, Config, ControlSpec, BATCH_MIN_SOCKETS, BATCH_WINDOW, CPROTOVER, MAX_PACKET,
    NOTIFY_CAP, PROTO_CAPS, RTCP_POLL_INTERVAL, TIMETICK,
};
use rtpproxy::rtpp_log::show;
use rtpproxy::rtpp_log::Level;

use rtpproxy::rtpp_network::{resolve_host, PortTable, RecvBatch};
use rtpproxy::rtpp_notify::Notifier;
use rtpproxy::rtpp_poll::{Cadence, Poller};
use rtpproxy::rtpp_proc::{relay_ready, run_timers};
use rtpproxy::rtpp_session::Sessions;
use rtpproxy::rtpp_state::Daemon;
use rtpproxy::rtpp_util::{
    already_running_as, check_writable_dir, close_fds, drop_privileges, inherited_fds,
    raise_nofile, resolve_run_as, Random, RunAs,
};

/// How long shutdown goes on relaying packets already queued.
const FINAL_DRAIN: Duration = Duration::from_millis(100);

/// What the command line asks for.
enum Action {
    Run(Box<Config>),
    Version,
    Help,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optflag("f", "", "stay in the foreground, log to stderr");
    o.optflag("v", "", "print the protocol version and extensions, exit");
    o.optflag("2", "", "send packets shorter than 128 bytes twice");
    o.optflag("F", "", "allow root in UDP control mode without -u");
    o.optflag("i", "", "idle timeout per direction");
    o.optflag("P", "", "record in PCAP format");
    o.optflag("a", "", "record every session");
    o.optflag("R", "", "do not record RTCP");
    o.optflag("h", "", "print this help");
    o.optflag("?", "", "print this help");
    o.optmulti("l", "", "IPv4 listen address(es)", "addr[/addr]");
    o.optmulti("6", "", "IPv6 listen address(es)", "addr[/addr]");
    o.optmulti(
        "s",
        "",
        "control socket",
        "unix:PATH|udp:ADDR[:PORT]|udp6:ADDR[:PORT]",
    );
    o.optmulti("t", "", "TOS of media packets (-1 = leave alone)", "tos");
    o.optmulti("r", "", "recording directory", "dir");
    o.optmulti("S", "", "spool directory", "dir");
    o.optmulti("p", "", "pidfile", "file");
    o.optmulti("T", "", "session idle timeout in seconds", "ttl");
    o.optmulti("L", "", "open files limit", "nofile");
    o.optmulti("m", "", "lowest media port", "port");
    o.optmulti("M", "", "highest media port", "port");
    o.optmulti("u", "", "user (and group) to run as", "user[:group]");
    o.optmulti("n", "", "timeout notification socket", "unix:PATH");
    o.optmulti("A", "", "append one JSON line per ended session", "file");
    o.optmulti("d", "", "log level and syslog facility", "level[:facility]");
    o
}

fn usage() -> String {
    "usage: rtpproxy [-2fvFiPaR] [-l addr1[/addr2]] [-6 addr1[/addr2]] [-s path]\n\
     \x20 [-t tos] [-r rdir [-S sdir]] [-T ttl] [-L nofile] [-m port_min]\n\
     \x20 [-M port_max] [-u uname[:gname]] [-n timeout_socket] [-d log_level[:log_facility]]\n\
     \x20 [-p pid_file] [-A acct_file]\n"
        .to_string()
}

fn parse_args(args: &[String]) -> Result<Action, String> {
    let m = options()
        .parse(args)
        .map_err(|e| format!("{e} (rtpproxy -h lists the options)"))?;
    // Like getopt(3): a repeated option's last value wins.
    let last = |flag: &str| m.opt_strs(flag).pop();
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument: {extra}"));
    }
    if m.opt_present("h") || m.opt_present("?") {
        return Ok(Action::Help);
    }
    if m.opt_present("v") {
        return Ok(Action::Version);
    }
    let mut cfg = Config {
        foreground: m.opt_present("f"),
        double_small: m.opt_present("2"),
        allow_root_udp: m.opt_present("F"),
        independent_ttl: m.opt_present("i"),
        record_pcap: m.opt_present("P"),
        record_all: m.opt_present("a"),
        record_rtcp: !m.opt_present("R"),
        ..Config::default()
    };
    cfg.bind = parse_bind(last("l").as_deref(), last("6").as_deref())?;
    if let Some(s) = last("s") {
        cfg.control = match rtpproxy::rtpp_network::parse_control_spec(&s)
            .map_err(|e| format!("invalid value for -s: {e}"))?
        {
            ControlSpec::Unix(path) => ControlSpec::Unix(absolute("s", &path)?),
            udp => udp,
        };
    }
    if let Some(t) = last("t") {
        cfg.tos = parse_tos(&t).ok_or_else(|| format!("invalid value for -t: {t}"))?;
    }
    if let Some(t) = last("T") {
        cfg.max_ttl = match t.parse::<u32>() {
            Ok(v) if v > 0 => v,
            _ => return Err(format!("invalid value for -T: {t}")),
        };
    }
    if let Some(l) = last("L") {
        cfg.nofile = match l.parse::<u64>() {
            Ok(v) if v > 0 => Some(v),
            _ => return Err(format!("invalid value for -L: {l}")),
        };
    }
    for (flag, slot) in [("m", &mut cfg.port_min), ("M", &mut cfg.port_max)] {
        if let Some(v) = m.opt_strs(flag).pop() {
            *slot = match v.parse::<u16>() {
                Ok(p) if p >= 1 => p,
                _ => return Err(format!("invalid value for -{flag}: {v}")),
            };
        }
    }
    // The first RTP port is the even one at or above -m, and its RTCP twin
    // (one above) must not pass -M.
    if u32::from(cfg.port_min) + u32::from(cfg.port_min % 2) >= u32::from(cfg.port_max) {
        return Err(format!(
            "invalid port range -m {} -M {}: no RTP/RTCP pair fits",
            cfg.port_min, cfg.port_max
        ));
    }
    cfg.record_dir = dir_option(&m, "r")?;
    cfg.spool_dir = dir_option(&m, "S")?;
    if cfg.spool_dir.is_some() && cfg.record_dir.is_none() {
        return Err("-S requires -r".into());
    }
    if let Some(p) = last("p") {
        cfg.pid_file = pidfile_option(&p)?;
    }
    if let Some(u) = last("u") {
        let (user, group) = match u.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (u.clone(), None),
        };
        if user.is_empty() || group.as_deref() == Some("") {
            return Err(format!("invalid value for -u: {u}"));
        }
        cfg.run_user = Some(user);
        cfg.run_group = group;
    }
    if let Some(n) = last("n") {
        let path = n.strip_prefix("unix:").unwrap_or(&n);
        if path.is_empty() || n.starts_with("udp:") || n.starts_with("udp6:") {
            return Err(format!(
                "invalid value for -n: {n} (a unix socket path is required)"
            ));
        }
        cfg.notify_socket = Some(absolute("n", Path::new(path))?);
    }
    if let Some(a) = last("A") {
        if a.is_empty() {
            return Err("invalid value for -A: empty path".into());
        }
        cfg.accounting_file = Some(absolute("A", Path::new(&a))?);
    }
    if let Some(d) = last("d") {
        let (level, facility) = match d.split_once(':') {
            Some((l, f)) => (l, Some(f)),
            None => (d.as_str(), None),
        };
        cfg.log_level =
            Some(Level::parse(level).ok_or_else(|| format!("invalid log level for -d: {level}"))?);
        if let Some(f) = facility {
            if rtpp_log::parse_facility(f).is_none() {
                return Err(format!("invalid log facility for -d: {f}"));
            }
            cfg.log_facility = Some(f.to_string());
        }
    }
    Ok(Action::Run(Box::new(cfg)))
}

fn dir_option(m: &getopts::Matches, flag: &str) -> Result<Option<PathBuf>, String> {
    let Some(d) = m.opt_strs(flag).pop() else {
        return Ok(None);
    };
    if !Path::new(&d).is_dir() {
        return Err(format!("invalid value for -{flag}: {d} is not a directory"));
    }
    Ok(Some(absolute(flag, Path::new(&d))?))
}

/// The daemon works in `/` once in the background, so every path it keeps
/// is made absolute first (the pidfile and the control socket are also
/// removed at exit, which must not hit a file of the same name in `/`).
fn absolute(flag: &str, path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("invalid value for -{flag}: {e}"))
}

/// `-p`: the directory must exist; the file itself is written (and can
/// still fail) once the daemon runs.
fn pidfile_option(p: &str) -> Result<PathBuf, String> {
    if p.is_empty() {
        return Err("invalid value for -p: empty path".into());
    }
    let path = absolute("p", Path::new(p))?;
    if path.is_dir() {
        return Err(format!("invalid value for -p: {p} is a directory"));
    }
    if !path.parent().is_some_and(Path::is_dir) {
        return Err(format!("invalid value for -p: {p}: no such directory"));
    }
    Ok(path)
}

fn parse_tos(t: &str) -> Option<Option<u8>> {
    if t == "-1" {
        return Some(None);
    }
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok()?,
        None => t.parse::<u8>().ok()?,
    };
    Some(Some(v))
}

/// Builds the listen addresses from `-l` and `-6`. A `/` in either means
/// bridge mode, where each of the two interfaces is IPv4 or IPv6, not both.
fn parse_bind(l: Option<&str>, six: Option<&str>) -> Result<BindMode, String> {
    let split = |s: Option<&str>| -> (Option<String>, Option<String>, bool) {
        match s {
            None => (None, None, false),
            Some(s) => match s.split_once('/') {
                Some((a, b)) => (non_empty(a), non_empty(b), true),
                None => (non_empty(s), None, false),
            },
        }
    };
    let (l0, l1, lb) = split(l);
    let (s0, s1, sb) = split(six);
    let v4 = |h: &Option<String>| -> Result<Option<std::net::IpAddr>, String> {
        h.as_deref()
            .map(|h| resolve_host(h, false).map_err(|e| format!("invalid value for -l: {e}")))
            .transpose()
    };
    let v6 = |h: &Option<String>| -> Result<Option<std::net::IpAddr>, String> {
        h.as_deref()
            .map(|h| resolve_host(h, true).map_err(|e| format!("invalid value for -6: {e}")))
            .transpose()
    };
    let (l0, l1, s0, s1) = (v4(&l0)?, v4(&l1)?, v6(&s0)?, v6(&s1)?);
    if lb || sb {
        let pick = |a: Option<std::net::IpAddr>, b: Option<std::net::IpAddr>, which: &str| {
            match (a, b) {
            (Some(_), Some(_)) => Err(format!(
                "either IPv4 or IPv6 should be configured for the {which} interface in bridging mode, not both"
            )),
            (None, None) => Err(format!(
                "the {which} interface should be either IPv4 or IPv6 in bridging mode"
            )),
            (Some(x), None) | (None, Some(x)) => Ok(x),
        }
        };
        let first = pick(l0, s0, "first")?;
        let second = pick(l1, s1, "second")?;
        return Ok(BindMode::Bridge([first, second]));
    }
    if l0.is_none() && s0.is_none() {
        if l.is_some() || six.is_some() {
            return Err("empty listen address".into());
        }
        return Ok(BindMode::Single {
            v4: Some(std::net::IpAddr::from([0, 0, 0, 0])),
            v6: None,
        });
    }
    Ok(BindMode::Single { v4: l0, v6: s0 })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(Action::Run(cfg)) => cfg,
        Ok(Action::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("Basic version: {CPROTOVER}");
            for (stamp, what) in PROTO_CAPS {
                let note = if *stamp == NOTIFY_CAP {
                    " (with -n)"
                } else {
                    ""
                };
                println!("Extension {stamp}: {what}{note}");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rtpproxy: {e}");
            return ExitCode::from(1);
        }
    };
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtpproxy: {e}");
            ExitCode::from(1)
        }
    }
}

/// Start-up in the classic order, then the loop until a signal ends it.
/// Everything that can fail is done before the daemon reports to the
/// shell that started it, so a zero exit status means it is serving.
fn run(cfg: &Config) -> Result<(), String> {
    // Taken before anything is opened: whatever is open now was inherited.
    let inherited = if cfg.foreground {
        Vec::new()
    } else {
        inherited_fds()
    };
    let run_as = match &cfg.run_user {
        Some(u) => Some(
            resolve_run_as(u, cfg.run_group.as_deref())
                .map_err(|e| format!("invalid value for -u: {e}"))?,
        ),
        None => None,
    };
    check_identity(cfg, run_as.as_ref())?;
    for (flag, dir) in [("r", &cfg.record_dir), ("S", &cfg.spool_dir)] {
        if let Some(dir) = dir {
            check_writable_dir(dir, run_as.as_ref())
                .map_err(|e| format!("invalid value for -{flag}: {e}"))?;
        }
    }
    // Opened before the switch to -u, like the control socket: the file
    // may live where only the starting user can create it.
    let accounting = match &cfg.accounting_file {
        Some(path) => Some(
            AccountFile::open(path)
                .map_err(|e| format!("invalid value for -A: can't open {}: {e}", path.display()))?,
        ),
        None => None,
    };
    if let Some(want) = cfg.nofile {
        let granted = raise_nofile(want)?;
        if granted < want {
            eprintln!("rtpproxy: WARNING: open files limit is {granted}, not {want} (-L)");
        }
    }
    let mut poller = Poller::new();
    let mut control = Control::open(&cfg.control)
        .map_err(|e| format!("can't open control socket {}: {e}", show_control(cfg)))?;
    if !control.register(&mut poller) {
        return Err("invalid value for -L: too few open files for the control socket".into());
    }
    secure_control_socket(&control, run_as.as_ref())?;

    let level = cfg.log_level.unwrap_or(if cfg.foreground {
        Level::Dbug
    } else {
        Level::Warn
    });
    let report = if cfg.foreground {
        rtpp_log::open_stderr(level);
        None
    } else {
        let report = daemonize()?;
        close_fds(&inherited);
        let facility = cfg
            .log_facility
            .as_deref()
            .and_then(rtpp_log::parse_facility)
            .unwrap_or(syslog::Facility::LOG_DAEMON);
        rtpp_log::open_syslog(level, facility);
        Some(report)
    };
    let (pidfile, shutdown) = match finish_start_up(cfg, run_as.as_ref()) {
        Ok(done) => done,
        Err(e) => {
            if let Some(report) = report {
                rtpp_log!(Crit, "{e}");
                report.failed(&e);
            }
            return Err(e);
        }
    };

    let mut rng = Random::new();
    let ports = PortTable::new(cfg.port_min, cfg.port_max, &mut rng);
    let mut daemon = Daemon::new(poller, ports);
    daemon.accounting = accounting;
    daemon.notifier = cfg.notify_socket.clone().map(Notifier::new);
    let mut sessions = Sessions::new();
    rtpp_log!(Info, "rtpproxy started, pid {}", std::process::id());
    if let Some(report) = report {
        report.ok();
    }

    run_loop(cfg, &mut control, &mut sessions, &mut daemon, &shutdown);

    match shutdown.signal() {
        0 => rtpp_log!(Info, "drained: the last session ended, exiting"),
        sig => rtpp_log!(Info, "got signal {sig}, exiting"),
    }
    relay_queued_media(cfg, &mut sessions, &mut daemon.poller);
    sessions.end_all(EndReason::Shutdown, &mut daemon);
    drop(control);
    drop(pidfile);
    rtpp_log!(Info, "rtpproxy ended");
    Ok(())
}

/// The poll loop: relay what is ready, run the once-a-second timers, then
/// serve control commands. Relaying comes first so media never waits
/// behind a burst of commands, and commands are bounded per pass so they
/// cannot starve media either.
fn run_loop(
    cfg: &Config,
    control: &mut Control,
    sessions: &mut Sessions,
    daemon: &mut Daemon,
    shutdown: &Shutdown,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut batch = RecvBatch::new();
    let mut nofile = rtpproxy::rtpp_util::NofileWatch::new();
    let mut clock = Clock::new();
    while !shutdown.stop.load(Ordering::Relaxed) {
        if shutdown.drain.load(Ordering::Relaxed) && !daemon.draining {
            daemon.draining = true;
            rtpp_log!(
                Warn,
                "draining: no new sessions from now on, exiting when the last of {} ends",
                sessions.active()
            );
        }
        if daemon.draining && sessions.active() == 0 {
            break;
        }
        let wake = [control.next_deadline(), sessions.next_due()]
            .into_iter()
            .flatten()
            .fold(clock.next_wake(&daemon.poller), Instant::min);
        let Some(ready) = clock.poll(&mut daemon.poller, wake) else {
            continue;
        };
        let now = Instant::now();
        clock.busy = ready > 0
            && relay_ready(
                sessions,
                daemon.poller.events(Cadence::EveryPass),
                cfg.double_small,
                now,
                &mut batch,
            );
        if clock.rtcp_due(now, &daemon.poller) {
            if let Ok(n) = daemon.poller.poll(Cadence::Slow, 0) {
                if n > 0 {
                    let events = daemon.poller.events(Cadence::Slow);
                    relay_ready(sessions, events, cfg.double_small, now, &mut batch);
                }
            }
        }
        run_timers(sessions, now, &mut buf, cfg.double_small);
        if clock.tick_due(now) {
            sessions.expire(cfg, now, daemon);
            nofile.check(sessions.active());
        }
        control.serve(daemon, now, |daemon, raw| {
            run_command(cfg, sessions, daemon, raw, now)
        });
    }
}

/// The loop's clock: the once-a-second tick, the RTCP poll's cadence, and
/// the window in which packets gather between polls under load.
struct Clock {
    next_tick: Instant,
    next_rtcp: Instant,
    last_poll: Instant,
    /// The last pass found media ready.
    busy: bool,
}

impl Clock {
    fn new() -> Clock {
        let now = Instant::now();
        Clock {
            next_tick: now + TIMETICK,
            next_rtcp: now,
            last_poll: now,
            busy: false,
        }
    }

    /// The latest the next poll may sleep until: the tick, or the RTCP
    /// poll while there are RTCP sockets, so an idle daemon sleeps in
    /// poll's 1 s timeout.
    fn next_wake(&self, poller: &Poller) -> Instant {
        if poller.is_empty(Cadence::Slow) {
            self.next_tick
        } else {
            self.next_tick.min(self.next_rtcp)
        }
    }

    /// Polls the every-pass set until `wake` at the latest; `None` when the
    /// poll must be retried.
    fn poll(&mut self, poller: &mut Poller, wake: Instant) -> Option<usize> {
        if self.busy && poller.len(Cadence::EveryPass) >= BATCH_MIN_SOCKETS {
            // Let packets gather (see BATCH_WINDOW), but never past a timer.
            let until = (self.last_poll + BATCH_WINDOW).min(wake);
            if let Some(pause) = until.checked_duration_since(Instant::now()) {
                std::thread::sleep(pause);
            }
        }
        let now = Instant::now();
        // Round up so a wake-up is never early and spinning.
        let timeout_ms = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000)
            .min(1000) as i32;
        self.last_poll = now;
        match poller.poll(Cadence::EveryPass, timeout_ms) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => None,
            Err(e) => {
                // EINVAL: more entries than the open-files limit (lowered
                // under a running daemon). Retrying at once would spin.
                rtpp_log!(Err, "poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        }
    }

    /// True (once per interval) when the RTCP set is due for a poll.
    fn rtcp_due(&mut self, now: Instant, poller: &Poller) -> bool {
        if poller.is_empty(Cadence::Slow) || now < self.next_rtcp {
            return false;
        }
        self.next_rtcp = now + RTCP_POLL_INTERVAL;
        true
    }

    /// True (once a second) when the timers are due.
    fn tick_due(&mut self, now: Instant) -> bool {
        if now < self.next_tick {
            return false;
        }
        self.next_tick += TIMETICK;
        if self.next_tick <= now {
            self.next_tick = now + TIMETICK;
        }
        true
    }
}

/// At shutdown: relays, and so records, what the media sockets still hold,
/// so that a packet that arrived before the signal is in the recordings
/// (doc/PROTOCOL.md, "Classic defects"). Bounded, since parties keep
/// sending.
fn relay_queued_media(cfg: &Config, sessions: &mut Sessions, poller: &mut Poller) {
    let mut batch = RecvBatch::new();
    let deadline = Instant::now() + FINAL_DRAIN;
    while Instant::now() < deadline {
        let mut media = false;
        for cadence in [Cadence::EveryPass, Cadence::Slow] {
            if let Ok(n) = poller.poll(cadence, 0) {
                if n > 0 {
                    let events = poller.events(cadence);
                    media |= relay_ready(
                        sessions,
                        events,
                        cfg.double_small,
                        Instant::now(),
                        &mut batch,
                    );
                }
            }
        }
        // A pending control command keeps poll reporting readiness; only
        // media matters here.
        if !media {
            return;
        }
    }
}

fn run_command(
    cfg: &Config,
    sessions: &mut Sessions,
    daemon: &mut Daemon,
    raw: &[u8],
    now: Instant,
) -> Reply {
    rtpp_log!(Dbug, "received command \"{}\"", show(raw).trim());
    daemon.counters.commands_received += 1;
    let reply = match parse(raw) {
        Ok(cmd) => {
            for c in cmd.modifiers().into_iter().flat_map(|m| m.unknown()) {
                rtpp_log!(Warn, "unknown command modifier `{c}'");
            }
            let mut ctx = Context {
                cfg,
                sessions,
                daemon,
                now,
            };
            execute(&cmd, &mut ctx)
        }
        Err(e) => {
            rtpp_log!(Err, "command syntax error (E{})", e.0);
            Reply::Error(e)
        }
    };
    if matches!(reply, Reply::Error(_)) {
        daemon.counters.commands_failed += 1;
    } else {
        daemon.counters.commands_succeeded += 1;
    }
    if rtpp_log::enabled(Level::Dbug) {
        let mut out = Vec::new();
        reply.format(None, &mut out);
        rtpp_log!(Dbug, "sending reply \"{}\"", show(&out).trim_end());
    }
    reply
}

/// Mode of the unix control socket. The SIP proxy usually runs as another
/// account than the relay: it connects as a member of the socket's group
/// (see `-u` in the man page); nobody else may drive the relay.
const CONTROL_SOCKET_MODE: u32 = 0o660;
/// How long the shell that started the daemon waits for its report.
const START_UP_TIMEOUT: Duration = Duration::from_secs(10);

fn show_control(cfg: &Config) -> String {
    match &cfg.control {
        ControlSpec::Unix(path) => format!("unix:{}", path.display()),
        ControlSpec::Udp(addr) => format!("udp:{addr}"),
    }
}

/// Who may run how: `-u` needs root unless we already are that account;
/// root without `-u` gets a warning with a unix control socket and a
/// refusal with a UDP one (whoever reaches it could drive a root process),
/// unless `-F`.
fn check_identity(cfg: &Config, run_as: Option<&RunAs>) -> Result<(), String> {
    let is_root = nix::unistd::geteuid().is_root();
    if let Some(run_as) = run_as {
        if !is_root && !already_running_as(run_as) {
            return Err(format!(
                "invalid value for -u: switching to user {} needs root",
                run_as.user
            ));
        }
        return Ok(());
    }
    if !is_root || cfg.allow_root_udp {
        return Ok(());
    }
    match cfg.control {
        ControlSpec::Udp(_) => Err(
            "running as root with a UDP control socket is refused: give -u user, or -F to run as root anyway"
                .into(),
        ),
        ControlSpec::Unix(_) => {
            eprintln!(
                "rtpproxy: WARNING: running as root is not recommended: give -u user, or -F to silence this warning"
            );
            Ok(())
        }
    }
}

/// Gives the unix control socket its mode and, with `-u`, its owner, so
/// the SIP proxy can connect and the unprivileged daemon still owns it.
fn secure_control_socket(control: &Control, run_as: Option<&RunAs>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = control.unix_path() else {
        return Ok(());
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(CONTROL_SOCKET_MODE))
        .map_err(|e| format!("can't set the mode of {}: {e}", path.display()))?;
    if let Some(run_as) = run_as {
        nix::unistd::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(|e| {
            format!(
                "can't give the control socket {} to {}: {e}",
                path.display(),
                run_as.user
            )
        })?;
    }
    Ok(())
}

/// The rest of start-up, in the daemon itself: signals, pidfile, then the
/// switch to `-u`. The pidfile is removed again when a later step fails.
/// Signals come first: whoever reads the pidfile may signal the daemon at
/// once (an init script's `stop` or `drain`), and USR1's default action
/// would kill it.
fn finish_start_up(cfg: &Config, run_as: Option<&RunAs>) -> Result<(PidFile, Shutdown), String> {
    let shutdown = Shutdown::install()?;
    let pidfile = PidFile::create(&cfg.pid_file)?;
    if let Some(run_as) = run_as {
        drop_privileges(run_as)
            .map_err(|e| format!("can't switch to user {}: {e}", run_as.user))?;
    }
    Ok((pidfile, shutdown))
}

/// Forks to the background: detached from the terminal in a session of its
/// own, working in `/`, stdio on /dev/null. The original process waits for
/// the daemon's start-up report and exits with it; only the daemon returns.
fn daemonize() -> Result<StartUpReport, String> {
    use daemonize::{Daemonize, Outcome};
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("can't create the start-up pipe: {e}"))?;
    // umask 027: recordings are call audio, not for every local account.
    match Daemonize::new()
        .working_directory("/")
        .umask(0o027)
        .execute()
    {
        Outcome::Parent(Ok(_)) => {
            drop(tx);
            std::process::exit(await_start_up(rx));
        }
        Outcome::Parent(Err(e)) => Err(format!("can't daemonize: {e}")),
        Outcome::Child(Ok(_)) => {
            let report = StartUpReport { pipe: tx };
            // The second fork left the daemon in the session the first
            // child made; it leads a session of its own instead, as the
            // classic daemon did after daemon(3). It never opens a
            // terminal, so it cannot gain a controlling one this way.
            if let Err(e) = nix::unistd::setsid() {
                let e = format!("can't start a new session: {e}");
                report.failed(&e);
                return Err(e);
            }
            Ok(report)
        }
        Outcome::Child(Err(e)) => {
            let e = format!("can't daemonize: {e}");
            StartUpReport { pipe: tx }.failed(&e);
            Err(e)
        }
    }
}

/// The daemon's end of the start-up pipe: `ok`, or why it gave up.
struct StartUpReport {
    pipe: std::os::fd::OwnedFd,
}

impl StartUpReport {
    fn ok(self) {
        self.send("ok");
    }

    fn failed(self, why: &str) {
        self.send(why);
    }

    fn send(self, text: &str) {
        // A shell that stopped waiting is not the daemon's problem.
        let _ = std::fs::File::from(self.pipe).write_all(text.as_bytes());
    }
}

/// In the original process: waits (bounded) until every daemon-side end of
/// the pipe is closed and turns the report into an exit status.
fn await_start_up(pipe: std::os::fd::OwnedFd) -> i32 {
    use nix::poll::{poll, PollFd, PollFlags};
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut pipe = std::fs::File::from(pipe);
    let deadline = Instant::now() + START_UP_TIMEOUT;
    let mut report = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "rtpproxy: the daemon did not finish starting within {} s; see the system log",
                START_UP_TIMEOUT.as_secs()
            );
            return 1;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                eprintln!("rtpproxy: waiting for the daemon to start: {e}");
                return 1;
            }
        }
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if report.len() < 4096 => report.extend_from_slice(&chunk[..n]),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("rtpproxy: waiting for the daemon to start: {e}");
                return 1;
            }
        }
    }
    match String::from_utf8_lossy(&report).trim() {
        "ok" => 0,
        "" => {
            eprintln!("rtpproxy: the daemon exited while starting; see the system log");
            1
        }
        why => {
            eprintln!("rtpproxy: {why}");
            1
        }
    }
}

/// The pidfile (`-p`), removed when dropped: at exit, or when a later step
/// of start-up fails.
struct PidFile {
    path: PathBuf,
}

impl PidFile {
    fn create(path: &Path) -> Result<PidFile, String> {
        let written =
            std::fs::File::create(path).and_then(|mut f| writeln!(f, "{}", std::process::id()));
        match written {
            Ok(()) => Ok(PidFile {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(format!("can't write pidfile {}: {e}", path.display())),
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // After -u this fails unless the user may write to the pidfile's
        // directory; init scripts and systemd remove what is left.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The signals that end the daemon (TERM, INT, HUP): each sets the flag
/// the loop checks and records which one it was.
struct Shutdown {
    stop: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
    /// SIGUSR1: stop taking new sessions, exit when the last one ends.
    drain: Arc<AtomicBool>,
}

impl Shutdown {
    fn install() -> Result<Shutdown, String> {
        use nix::sys::signal::{signal, SigHandler, Signal};
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let shutdown = Shutdown {
            stop: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
            drain: Arc::new(AtomicBool::new(false)),
        };
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&shutdown.drain))
            .map_err(|e| format!("can't install signal handler: {e}"))?;
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal_hook::flag::register_usize(sig, Arc::clone(&shutdown.signal), sig as usize)
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&shutdown.stop)))
                .map_err(|e| format!("can't install signal handler: {e}"))?;
        }
        // A peer that went away must cost a failed write (EPIPE), never the
        // process. The Rust runtime ignores SIGPIPE before main already;
        // saying so here keeps it true however the binary is built.
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
            .map_err(|e| format!("can't ignore SIGPIPE: {e}"))?;
        Ok(shutdown)
    }

    /// The signal that ended the loop (0 if none did).
    fn signal(&self) -> usize {
        self.signal.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn cfg(s: &str) -> Config {
        match parse_args(&args(s)) {
            Ok(Action::Run(c)) => *c,
            Ok(_) => panic!("not a run"),
            Err(e) => panic!("{e}"),
        }
    }

    fn bad(s: &str) -> String {
        match parse_args(&args(s)) {
            Err(e) => e,
            Ok(_) => panic!("{s} accepted"),
        }
    }

    #[test]
    fn defaults() {
        let c = cfg("-f");
        assert_eq!(c.max_ttl, 60);
        assert_eq!(c.tos, Some(0xb8));
        assert_eq!((c.port_min, c.port_max), (35000, 65000));
        assert_eq!(
            c.control,
            ControlSpec::Unix("/var/run/rtpproxy.sock".into())
        );
    }

    #[test]
    fn bind_modes() {
        assert_eq!(
            cfg("-l 127.0.0.1").bind,
            BindMode::Single {
                v4: Some("127.0.0.1".parse().unwrap()),
                v6: None
            }
        );
        assert_eq!(
            cfg("-l 127.0.0.1/127.0.0.2").bind,
            BindMode::Bridge(["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()])
        );
        assert_eq!(
            cfg("-l 127.0.0.1 -6 /::1").bind,
            BindMode::Bridge(["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()])
        );
        assert!(bad("-l 127.0.0.1/ ").contains("second"));
        assert!(bad("-l 127.0.0.1/127.0.0.2 -6 ::1").contains("not both"));
        assert!(bad("-l ::1").contains("-l"));
        assert!(bad("-6 127.0.0.1").contains("-6"));
    }

    #[test]
    fn bad_values_name_the_option() {
        assert!(bad("-T 0").contains("-T"));
        assert!(bad("-T x").contains("-T"));
        assert!(bad("-t 300").contains("-t"));
        assert!(bad("-m 0").contains("-m"));
        assert!(bad("-M 70000").contains("-M"));
        assert!(bad("-m 4000 -M 4000").contains("port range"));
        assert!(bad("-L -5").contains("-L"));
        assert!(bad("-d LOUD").contains("-d"));
        assert!(bad("-d INFO:LOG_NOPE").contains("-d"));
        assert!(bad("-s udp:1.2.3.4:0").contains("-s"));
        assert!(bad("-r /nonexistent/dir").contains("-r"));
        assert!(bad("-S /tmp").contains("-S requires -r"));
        assert!(bad("-u :grp").contains("-u"));
        assert!(bad("-n udp:1.2.3.4:5").contains("-n"));
        assert!(bad("-Z").contains('Z'));
        assert!(bad("-f stray").contains("stray"));
    }

    #[test]
    fn pidfile_and_port_edges() {
        assert!(bad("-p /nonexistent/dir/x.pid").contains("-p"));
        assert!(bad("-p /tmp").contains("-p"));
        assert!(bad("-m 65535").contains("port range"));
        assert!(bad("-m 65534 -M 65534").contains("port range"));
        let c = cfg("-m 65534 -M 65535");
        assert_eq!((c.port_min, c.port_max), (65534, 65535));
        let c = cfg("-m 35001 -M 35003");
        assert_eq!((c.port_min, c.port_max), (35001, 35003));
    }

    #[test]
    fn kept_paths_are_absolute() {
        let c = cfg("-p x.pid -s unix:ctl.sock -n notify.sock -r . -S . -A acct.json");
        assert!(c.accounting_file.is_some_and(|p| p.is_absolute()));
        assert!(c.pid_file.is_absolute());
        assert!(matches!(&c.control, ControlSpec::Unix(p) if p.is_absolute()));
        assert!(c.notify_socket.is_some_and(|p| p.is_absolute()));
        assert!(c.record_dir.is_some_and(|p| p.is_absolute()));
        assert!(c.spool_dir.is_some_and(|p| p.is_absolute()));
    }

    #[test]
    fn tos_values() {
        assert_eq!(cfg("-t -1").tos, None);
        assert_eq!(cfg("-t 0x10").tos, Some(16));
        assert_eq!(cfg("-t 184").tos, Some(184));
    }
}
