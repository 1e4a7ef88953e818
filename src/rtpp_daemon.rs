//! Daemon life: who may run, the move to the background and the report to
//! the shell that started it, the pidfile, and the signals that end it.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rtpp_control::Control;
use crate::rtpp_defines::{BindMode, Config, ControlSpec};
use crate::rtpp_log::{self, Level};
use crate::rtpp_util::{already_running_as, close_fds, drop_privileges, RunAs};

/// Mode of the unix control socket. The SIP proxy usually runs as another
/// account than the relay: it connects as a member of the socket's group
/// (see `-u` in the man page); nobody else may drive the relay.
const CONTROL_SOCKET_MODE: u32 = 0o660;
/// How long the shell that started the daemon waits for its report.
const START_UP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn show_control(cfg: &Config) -> String {
    match &cfg.control {
        ControlSpec::Unix(path) => format!("unix:{}", path.display()),
        ControlSpec::Udp(addr) => format!("udp:{addr}"),
        ControlSpec::Tcp(addr) => format!("tcp:{addr}"),
        ControlSpec::Cunix(path) => format!("cunix:{}", path.display()),
    }
}

/// The line that opens every run's log: what runs, where it listens and
/// as whom, so one look at the log answers "which relay, which version".
pub fn start_line(cfg: &Config, run_as: Option<&RunAs>) -> String {
    let listen = match &cfg.bind {
        BindMode::Single { v4, v6 } => {
            let shown: Vec<String> = v4.iter().chain(v6).map(|a| a.to_string()).collect();
            shown.join(" and ")
        }
        BindMode::Bridge([a, b]) => format!("{a}/{b} (bridging)"),
    };
    let user = match run_as {
        Some(r) => r.user.clone(),
        None => {
            let uid = nix::unistd::geteuid();
            match nix::unistd::User::from_uid(uid) {
                Ok(Some(u)) => u.name,
                _ => format!("uid {uid}"),
            }
        }
    };
    let metrics = cfg
        .metrics
        .map_or(String::new(), |a| format!(", metrics http://{a}/metrics"));
    format!(
        "rtpproxy {} started: pid {}, control {}, listen {listen}, ports {}-{}, user {user}{metrics}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        show_control(cfg),
        cfg.port_min,
        cfg.port_max,
    )
}

/// Who may run how: `-u` needs root unless we already are that account;
/// root without `-u` gets a warning with a unix control socket and a
/// refusal with a UDP or TCP one (whoever reaches it could drive a root
/// process), unless `-F`.
pub fn check_identity(cfg: &Config, run_as: Option<&RunAs>) -> Result<(), String> {
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
        ControlSpec::Tcp(_) => Err(
            "running as root with a TCP control socket is refused: give -u user, or -F to run as root anyway"
                .into(),
        ),
        ControlSpec::Unix(_) | ControlSpec::Cunix(_) => {
            eprintln!(
                "rtpproxy: WARNING: running as root is not recommended: give -u user, or -F to silence this warning"
            );
            Ok(())
        }
    }
}

/// Gives the unix control socket its mode and, with `-u`, its owner, so
/// the SIP proxy can connect and the unprivileged daemon still owns it.
pub fn secure_control_socket(control: &Control, run_as: Option<&RunAs>) -> Result<(), String> {
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
pub fn finish_start_up(
    cfg: &Config,
    run_as: Option<&RunAs>,
) -> Result<(Option<PidFile>, Shutdown), String> {
    let shutdown = Shutdown::install()?;
    let pidfile = cfg.pid_file.as_deref().map(PidFile::create).transpose()?;
    drop_to(run_as)?;
    Ok((pidfile, shutdown))
}

/// The switch to `-u`; nothing to do when already that account (a new
/// process of a hand-over).
pub fn drop_to(run_as: Option<&RunAs>) -> Result<(), String> {
    if let Some(run_as) = run_as {
        drop_privileges(run_as)
            .map_err(|e| format!("can't switch to user {}: {e}", run_as.user))?;
    }
    Ok(())
}

/// Opens the log as [`detach`] would, without going to the background: a
/// new process of a hand-over stays where the old one put it (see
/// doc/PROTOCOL.md, "Hand-over").
pub fn open_log(cfg: &Config) {
    let level = cfg.log_level.unwrap_or(if cfg.foreground {
        Level::Dbug
    } else {
        Level::Warn
    });
    if cfg.foreground {
        rtpp_log::open_stderr(level);
        return;
    }
    let facility = cfg
        .log_facility
        .as_deref()
        .and_then(rtpp_log::parse_facility)
        .unwrap_or(syslog::Facility::LOG_DAEMON);
    rtpp_log::open_syslog(level, facility);
}

/// Stays in the foreground logging to stderr, or goes to the background
/// (closing what was `inherited`) and logs to syslog. In the background the
/// report is for the shell still waiting on the start-up.
pub fn detach(
    cfg: &Config,
    inherited: &[std::os::fd::RawFd],
) -> Result<Option<StartUpReport>, String> {
    let level = cfg.log_level.unwrap_or(if cfg.foreground {
        Level::Dbug
    } else {
        Level::Warn
    });
    if cfg.foreground {
        rtpp_log::open_stderr(level);
        return Ok(None);
    }
    if !rtpp_log::syslog_listening(Path::new(rtpp_log::SYSLOG_PATH)) {
        // Said while standard error still reaches whoever started us: in
        // the background it is the only place the log goes.
        eprintln!(
            "rtpproxy: WARNING: no syslog daemon listens on {}: log lines are dropped until one does",
            rtpp_log::SYSLOG_PATH
        );
    }
    let report = daemonize()?;
    close_fds(inherited);
    let facility = cfg
        .log_facility
        .as_deref()
        .and_then(rtpp_log::parse_facility)
        .unwrap_or(syslog::Facility::LOG_DAEMON);
    rtpp_log::open_syslog(level, facility);
    Ok(Some(report))
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
pub struct StartUpReport {
    pipe: std::os::fd::OwnedFd,
}

impl StartUpReport {
    pub fn ok(self) {
        self.send("ok");
    }

    pub fn failed(self, why: &str) {
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
/// of start-up fails. A pidfile naming another live process is never
/// replaced: an init script reads it to find what to signal, so a second
/// instance taking it over would have the script stop the wrong process.
pub struct PidFile {
    path: PathBuf,
    /// The file written (device, inode): only that one is removed.
    written: (u64, u64),
}

impl PidFile {
    fn create(path: &Path) -> Result<PidFile, String> {
        check_pidfile(path)?;
        // Gone or stale by now; create_new makes a rival starting at the
        // same moment lose instead of both writing.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "can't replace stale pidfile {}: {e}",
                    path.display()
                ));
            }
            _ => {}
        }
        let written = std::fs::File::create_new(path).and_then(|mut f| {
            writeln!(f, "{}", std::process::id())?;
            f.metadata()
        });
        match written {
            Ok(meta) => Ok(PidFile {
                path: path.to_path_buf(),
                written: (meta.dev(), meta.ino()),
            }),
            Err(e) => Err(format!("can't write pidfile {}: {e}", path.display())),
        }
    }
}

impl PidFile {
    /// Writes this process's pid into the pidfile a daemon handing over
    /// to it (`old`) wrote: refused when it names another live process.
    /// Written aside and renamed over, so a reader never finds the file
    /// missing or half written.
    pub fn take_over(path: &Path, old: u32) -> Result<PidFile, String> {
        if let Some(pid) = pidfile_owner(path).filter(|&p| u32::try_from(p).ok() != Some(old)) {
            return Err(format!(
                "pidfile {} names running process {pid}, not the one handing over",
                path.display()
            ));
        }
        let mut aside = path.as_os_str().to_owned();
        aside.push(".new");
        let aside = PathBuf::from(aside);
        let _ = std::fs::remove_file(&aside);
        let written = std::fs::File::create_new(&aside)
            .and_then(|mut f| {
                writeln!(f, "{}", std::process::id())?;
                f.metadata()
            })
            .and_then(|meta| std::fs::rename(&aside, path).map(|()| meta));
        match written {
            Ok(meta) => Ok(PidFile {
                path: path.to_path_buf(),
                written: (meta.dev(), meta.ino()),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&aside);
                Err(format!("can't write pidfile {}: {e}", path.display()))
            }
        }
    }

    /// Writes this process's pid again, after a hand-over failed late
    /// (the new process may have written its own before it died).
    pub fn restore(&mut self) {
        let pid = std::process::id().to_string();
        let current = std::fs::read_to_string(&self.path).unwrap_or_default();
        if current.trim() == pid {
            return;
        }
        if let Ok(taken) = PidFile::take_over(&self.path, 0) {
            self.written = taken.written;
            std::mem::forget(taken);
        }
    }
}

/// Fails, naming the process, when the pidfile at `path` names a live
/// process other than this one. A missing, unreadable-as-a-pid or stale
/// pidfile is fine: it is taken over.
pub fn check_pidfile(path: &Path) -> Result<(), String> {
    match pidfile_owner(path) {
        Some(pid) => Err(format!(
            "pidfile {} names running process {pid}; not overwritten \
             (stop that one first, or give this one its own -p)",
            path.display()
        )),
        None => Ok(()),
    }
}

/// The live process other than this one that the pidfile names, if any.
fn pidfile_owner(path: &Path) -> Option<i32> {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let text = std::fs::read_to_string(path).ok()?;
    let pid = text.trim().parse::<i32>().ok().filter(|&p| p > 0)?;
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        return None;
    }
    match kill(Pid::from_raw(pid), None) {
        // EPERM: it runs, as another account.
        Ok(()) | Err(Errno::EPERM) => Some(pid),
        Err(_) => None,
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a file someone else wrote since is theirs. Told by
        // its inode, since after -u the daemon may not read the file it
        // wrote as root. Removal fails unless the user may write to the
        // pidfile's directory (the packaged /run/rtpproxy is the user's);
        // init scripts and systemd remove what is left.
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.written);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The signals that end the daemon (TERM, INT, HUP): each sets the flag
/// the loop checks and records which one it was.
pub struct Shutdown {
    stop: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
    /// SIGUSR1: stop taking new sessions, exit when the last one ends.
    drain: Arc<AtomicBool>,
    /// SIGUSR2: hand everything over to a new process of the binary.
    handover: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn install() -> Result<Shutdown, String> {
        use nix::sys::signal::{signal, SigHandler, Signal};
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let shutdown = Shutdown {
            stop: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
            drain: Arc::new(AtomicBool::new(false)),
            handover: Arc::new(AtomicBool::new(false)),
        };
        signal_hook::flag::register(signal_hook::consts::SIGUSR2, Arc::clone(&shutdown.handover))
            .map_err(|e| format!("can't install signal handler: {e}"))?;
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

    /// Whether TERM, INT or HUP arrived.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether USR1 arrived.
    pub fn drain_requested(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
    }

    /// Whether USR2 arrived since the last call.
    pub fn take_handover_request(&self) -> bool {
        self.handover.swap(false, Ordering::Relaxed)
    }

    /// The signal that ended the loop (0 if none did).
    pub fn signal(&self) -> usize {
        self.signal.load(Ordering::Relaxed)
    }
}
