//! rtpproxy: the start-up order and the poll loop. The command line is read
//! in `rtpp_options`, the daemon's life (background, pidfile, signals) is in
//! `rtpp_daemon`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rtpproxy::rtpp_account::AccountFile;
use rtpproxy::rtpp_log;

use rtpproxy::rtpp_account::EndReason;
use rtpproxy::rtpp_command::exec::{execute, Context};
use rtpproxy::rtpp_command::{parse, Reply};
use rtpproxy::rtpp_control::{Control, Origin};
use rtpproxy::rtpp_daemon::{
    check_identity, check_pidfile, detach, drop_to, finish_start_up, open_log,
    secure_control_socket, show_control, start_line, PidFile, Shutdown,
};
use rtpproxy::rtpp_defines::{
    Config, NotifyTarget, BATCH_MIN_SOCKETS, BATCH_WINDOW, CPROTOVER, IDLE_POLL_INTERVAL,
    NOTIFY_CAP, PROTO_CAPS, RTCP_POLL_INTERVAL, TIMETICK,
};
use rtpproxy::rtpp_handover::wire::Writer;
use rtpproxy::rtpp_handover::{
    cpu_used, log_failure, state, Hello, Pending, Relaunch, Successor, STATE_VERSION,
};
use rtpproxy::rtpp_log::Level;
use rtpproxy::rtpp_log::{escape, show};
use rtpproxy::rtpp_metrics::http::MetricsServer;
use rtpproxy::rtpp_poll::Owner;

use rtpproxy::rtpp_hep::HepSender;
use rtpproxy::rtpp_network::{PortTable, RecvBatch};
use rtpproxy::rtpp_notify::{Destination, Notifier};
use rtpproxy::rtpp_options::{parse_args, usage, Action};
use rtpproxy::rtpp_poll::{Cadence, Poller};
use rtpproxy::rtpp_proc::{relay_ready, run_timers, PollChanges};
use rtpproxy::rtpp_session::Sessions;
use rtpproxy::rtpp_state::Daemon;
use rtpproxy::rtpp_util::{
    check_writable_dir, inherited_fds, raise_nofile, resolve_run_as, Random,
};

/// How much of a failed command its log line shows: enough for any
/// classic command, not a 64 KiB datagram per line.
const LOGGED_COMMAND_MAX: usize = 200;
/// How long shutdown goes on relaying packets already queued.
const FINAL_DRAIN: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    // Before anything can change the working directory: what a hand-over
    // starts again.
    let relaunch = Relaunch::of_this_process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(Action::Run(cfg)) => cfg,
        Ok(Action::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Ok(Action::SoftwareVersion) => {
            println!("rtpproxy {}", env!("CARGO_PKG_VERSION"));
            print_protocol_versions();
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            print_protocol_versions();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rtpproxy: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cfg.handover_fd {
        Some(fd) => run_successor(&cfg, &relaunch, fd),
        None => run(&cfg, &relaunch),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtpproxy: {e}");
            ExitCode::from(1)
        }
    }
}

/// What `-v` prints: the basic protocol version and every extension.
fn print_protocol_versions() {
    println!("Basic version: {CPROTOVER}");
    for (stamp, what) in PROTO_CAPS {
        let note = if *stamp == NOTIFY_CAP {
            " (with -n)"
        } else {
            ""
        };
        println!("Extension {stamp}: {what}{note}");
    }
}

/// Start-up in the classic order, then the loop until a signal ends it.
/// Everything that can fail is done before the daemon reports to the
/// shell that started it, so a zero exit status means it is serving.
fn run(cfg: &Config, relaunch: &Relaunch) -> Result<(), String> {
    // Taken before anything is opened: whatever is open now was inherited.
    let inherited = if cfg.foreground {
        Vec::new()
    } else {
        inherited_fds()
    };
    let run_as = run_as(cfg)?;
    check_identity(cfg, run_as.as_ref())?;
    // Checked again when the file is written; checked now so that a
    // second instance fails before it touches any socket.
    if let Some(path) = &cfg.pid_file {
        check_pidfile(path)?;
    }
    for (flag, dir) in [("r", &cfg.record_dir), ("S", &cfg.spool_dir)] {
        if let Some(dir) = dir {
            check_writable_dir(dir, run_as.as_ref())
                .map_err(|e| format!("invalid value for -{flag}: {e}"))?;
        }
    }
    // Opened before the switch to -u, like the control socket: the file
    // may live where only the starting user can create it.
    let accounting = open_accounting(cfg)?;
    let hep = open_hep(cfg)?;
    raise_open_files_limit(cfg)?;
    let mut poller = Poller::new();
    let mut control = Control::open(&cfg.control)
        .map_err(|e| format!("can't open control socket {}: {e}", show_control(cfg)))?;
    if !control.register(&mut poller) {
        return Err("invalid value for -L: too few open files for the control socket".into());
    }
    secure_control_socket(&control, run_as.as_ref())?;
    let servers = Servers {
        control,
        metrics: open_metrics(cfg, &mut poller)?,
    };

    let report = detach(cfg, &inherited)?;
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
    daemon.notifier = notifier(cfg);
    daemon.hep = hep;
    let sessions = Sessions::new();
    rtpp_log!(Info, "{}", start_line(cfg, run_as.as_ref()));
    if let Some(report) = report {
        report.ok();
    }
    let mut life = Life {
        relaunch,
        shutdown,
        pidfile,
        handover: None,
        token: None,
    };
    serve_until_the_end(cfg, servers, sessions, daemon, &mut life);
    Ok(())
}

/// The new process of a hand-over (doc/PROTOCOL.md, "Hand-over"): what
/// `run` opens arrives from the old process instead; the pidfile is
/// written before the old one is told to go. Until then a failure exits
/// without touching anything: it all still belongs to the old process.
fn run_successor(cfg: &Config, relaunch: &Relaunch, fd: i32) -> Result<(), String> {
    let run_as = run_as(cfg)?;
    check_identity(cfg, run_as.as_ref())?;
    let shutdown = Shutdown::install()?;
    open_log(cfg);
    raise_open_files_limit(cfg)?;
    let link = Successor::connect(fd)?;
    let (bytes, fds) = link.receive()?;
    let started = Instant::now();
    let mut taken = match state::decode(&bytes, fds, cfg, started) {
        Ok(t) => t,
        Err(e) => {
            link.refuse(&e.0);
            rtpp_log!(Err, "hand-over refused: {e}");
            // Without unwinding: nothing decoded may act on what the old
            // process still owns.
            std::process::exit(1);
        }
    };
    let pidfile = match take_over_pidfile(cfg, taken.old_pid, run_as.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            link.refuse(&e);
            rtpp_log!(Err, "hand-over refused: {e}");
            std::process::exit(1);
        }
    };
    taken.adopt();
    if let Err(e) = link.ready() {
        // The old process is gone or about to be: this one serves.
        rtpp_log!(
            Warn,
            "hand-over: the old process did not hear we are ready: {e}"
        );
    }
    drop(link);
    rtpp_log!(
        Info,
        "rtpproxy {} took over {} sessions from pid {} (pid {}, {:.1} ms, cpu {:.1} ms since exec)",
        env!("CARGO_PKG_VERSION"),
        taken.sessions.active(),
        taken.old_pid,
        std::process::id(),
        started.elapsed().as_secs_f64() * 1000.0,
        cpu_used().as_secs_f64() * 1000.0
    );
    let servers = Servers {
        control: taken.control,
        metrics: taken.metrics,
    };
    let mut life = Life {
        relaunch,
        shutdown,
        pidfile,
        handover: None,
        token: None,
    };
    serve_until_the_end(cfg, servers, taken.sessions, taken.daemon, &mut life);
    Ok(())
}

/// `-u`: the account to run as, looked up.
fn run_as(cfg: &Config) -> Result<Option<rtpproxy::rtpp_util::RunAs>, String> {
    cfg.run_user
        .as_ref()
        .map(|u| {
            resolve_run_as(u, cfg.run_group.as_deref())
                .map_err(|e| format!("invalid value for -u: {e}"))
        })
        .transpose()
}

/// A new process's pidfile, and then the switch to `-u` (a no-op when the
/// old process had made it already).
fn take_over_pidfile(
    cfg: &Config,
    old: u32,
    run_as: Option<&rtpproxy::rtpp_util::RunAs>,
) -> Result<Option<PidFile>, String> {
    let pidfile = cfg
        .pid_file
        .as_deref()
        .map(|p| PidFile::take_over(p, old))
        .transpose()?;
    drop_to(run_as)?;
    Ok(pidfile)
}

/// The loop, then the orderly end: queued media relayed, every session
/// ended with its records, sockets and pidfile removed.
fn serve_until_the_end(
    cfg: &Config,
    mut servers: Servers,
    mut sessions: Sessions,
    mut daemon: Daemon,
    life: &mut Life<'_>,
) {
    run_loop(cfg, &mut servers, &mut sessions, &mut daemon, life);
    match life.shutdown.signal() {
        0 => rtpp_log!(Info, "drained: the last session ended, exiting"),
        sig => rtpp_log!(Info, "got signal {sig}, exiting"),
    }
    if let Some(p) = life.handover.take() {
        p.abandon();
    }
    relay_queued_media(cfg, &mut sessions, &mut daemon);
    sessions.end_all(EndReason::Shutdown, &mut daemon);
    drop(servers);
    drop(life.pidfile.take());
    rtpp_log!(Info, "rtpproxy ended");
}

/// What the loop needs of the daemon's life besides the state it serves:
/// the signals, the pidfile, and a hand-over under way.
struct Life<'a> {
    relaunch: &'a Relaunch,
    shutdown: Shutdown,
    pidfile: Option<PidFile>,
    handover: Option<Pending>,
    /// The hand-over socket's place in the poll set.
    token: Option<rtpproxy::rtpp_poll::Token>,
}

/// The sockets the loop serves besides media: the control socket, and the
/// metrics listener with `--metrics`.
struct Servers {
    control: Control,
    metrics: Option<MetricsServer>,
}

impl Servers {
    /// The earliest deadline of a client of either.
    fn next_deadline(&self) -> Option<Instant> {
        let metrics = self.metrics.as_ref().and_then(|m| m.next_deadline());
        [self.control.next_deadline(), metrics]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The poll loop: relay what is ready, run the once-a-second timers, then
/// serve control commands and scrapes. Relaying comes first so media never
/// waits behind a burst of commands, and commands are bounded per pass so
/// they cannot starve media either; a scrape is answered in the pass its
/// request arrives in, from the counters as they are then.
fn run_loop(
    cfg: &Config,
    servers: &mut Servers,
    sessions: &mut Sessions,
    daemon: &mut Daemon,
    life: &mut Life<'_>,
) {
    let mut batch = RecvBatch::new();
    let mut changes = PollChanges::with_capacity(1024);
    let mut nofile = rtpproxy::rtpp_util::NofileWatch::new();
    let mut clock = Clock::new();
    while !life.shutdown.stop_requested() {
        if drained(&life.shutdown, sessions, daemon) {
            break;
        }
        let notify_check = daemon.notifier.as_ref().and_then(Notifier::next_check);
        let handover_check = life.handover.as_ref().map(|p| p.deadline);
        let wake = [
            servers.next_deadline(),
            sessions.next_due(),
            notify_check,
            handover_check,
        ]
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
                &mut daemon.notifier,
                &mut daemon.hep,
                &mut changes,
            );
        changes.apply(sessions, &mut daemon.poller);
        for cadence in [Cadence::Slow, Cadence::Idle] {
            if clock.slow_due(cadence, now, &daemon.poller) {
                relay_slow_set(
                    cfg,
                    cadence,
                    sessions,
                    daemon,
                    now,
                    &mut batch,
                    &mut changes,
                );
            }
        }
        run_timers(sessions, now, cfg.double_small);
        if let Some(n) = daemon.notifier.as_mut() {
            if notify_check.is_some_and(|t| now >= t) {
                n.check_connects(now);
            }
        }
        if clock.tick_due(now) {
            sessions.expire(cfg, now, daemon);
            sessions.cool_idle(now, &mut daemon.poller);
            nofile.check(sessions.active());
            let received = sessions.counters(&daemon.counters).packets_received;
            daemon.sample_second(received, now);
        }
        servers.control.serve(daemon, now, |daemon, raw, from| {
            run_command(cfg, sessions, daemon, raw, from, now)
        });
        if let Some(m) = servers.metrics.as_mut() {
            m.serve(daemon, sessions, now);
        }
        hand_over(servers, sessions, daemon, life, now);
    }
}

/// SIGUSR1 (or a drain carried over by a hand-over): true once the last
/// session ended.
fn drained(shutdown: &Shutdown, sessions: &Sessions, daemon: &mut Daemon) -> bool {
    if shutdown.drain_requested() && !daemon.draining {
        daemon.draining = true;
        rtpp_log!(
            Warn,
            "draining: no new sessions from now on, exiting when the last of {} ends",
            sessions.active()
        );
    }
    daemon.draining && sessions.active() == 0
}

/// SIGUSR2: starts a hand-over, or takes the next step of one under way.
/// On success the process exits here, leaving everything open to the new
/// one; on failure it says why once and goes on serving.
fn hand_over(
    servers: &Servers,
    sessions: &Sessions,
    daemon: &mut Daemon,
    life: &mut Life<'_>,
    now: Instant,
) {
    if life.shutdown.take_handover_request() {
        if let Some(p) = &life.handover {
            rtpp_log!(Warn, "hand-over to pid {} already under way", p.pid());
        } else {
            match Pending::start(life.relaunch, now) {
                Ok(p) => {
                    rtpp_log!(
                        Info,
                        "handing over to a new process (pid {}) of {}",
                        p.pid(),
                        life.relaunch.exe.display()
                    );
                    life.token =
                        daemon
                            .poller
                            .register(p.fd(), Owner::Handover, Cadence::EveryPass);
                    life.handover = Some(p);
                }
                Err(e) => log_failure(None, &e),
            }
        }
    }
    let Some(p) = life.handover.as_mut() else {
        return;
    };
    let ready = life.token.is_some_and(|t| daemon.poller.is_ready(t));
    if !ready && now < p.deadline {
        return;
    }
    let outcome = match p.hello(now) {
        Ok(Hello::Waiting) => return,
        Ok(Hello::Version(STATE_VERSION)) => transfer(servers, sessions, daemon, p),
        Ok(Hello::Version(v)) => Err(format!(
            "it reads state version {v}, this process writes version {STATE_VERSION}"
        )),
        Err(e) => Err(e),
    };
    if let Some(t) = life.token.take() {
        daemon.poller.deregister(t);
    }
    let Some(p) = life.handover.take() else {
        return;
    };
    let pid = p.pid();
    match outcome {
        Ok((wall, cpu)) => {
            rtpp_log!(
                Info,
                "handed over {} sessions to pid {pid} in {:.1} ms (cpu {:.1} ms), exiting",
                sessions.active(),
                wall.as_secs_f64() * 1000.0,
                cpu.as_secs_f64() * 1000.0
            );
            // Without unwinding: every socket, file and the pidfile now
            // belong to the new process.
            std::process::exit(0);
        }
        Err(e) => {
            p.abandon();
            if let Some(pidfile) = life.pidfile.as_mut() {
                pidfile.restore();
            }
            log_failure(Some(pid), &e);
        }
    }
}

/// Encodes and sends the state; how long media waited, and the CPU time
/// this process spent on it.
fn transfer(
    servers: &Servers,
    sessions: &Sessions,
    daemon: &Daemon,
    p: &mut Pending,
) -> Result<(Duration, Duration), String> {
    let frozen = Instant::now();
    let cpu = cpu_used();
    let mut w = Writer::new(frozen);
    let given = state::Given {
        control: &servers.control,
        metrics: servers.metrics.as_ref(),
        daemon,
        sessions,
    };
    state::encode(&given, &mut w);
    p.transfer(&w.bytes, &w.fds)?;
    Ok((frozen.elapsed(), cpu_used().saturating_sub(cpu)))
}

/// Polls a set on a slower clock than every pass (`rtpp_poll`), without
/// waiting, and relays what it holds.
fn relay_slow_set(
    cfg: &Config,
    cadence: Cadence,
    sessions: &mut Sessions,
    daemon: &mut Daemon,
    now: Instant,
    batch: &mut RecvBatch,
    changes: &mut PollChanges,
) {
    if !matches!(daemon.poller.poll(cadence, 0), Ok(n) if n > 0) {
        return;
    }
    relay_ready(
        sessions,
        daemon.poller.events(cadence),
        cfg.double_small,
        now,
        batch,
        &mut daemon.notifier,
        &mut daemon.hep,
        changes,
    );
    changes.apply(sessions, &mut daemon.poller);
}

/// The sets polled on a clock of their own, and how often.
const SLOW_SETS: [(Cadence, Duration); 2] = [
    (Cadence::Slow, RTCP_POLL_INTERVAL),
    (Cadence::Idle, IDLE_POLL_INTERVAL),
];

/// The loop's clock: the once-a-second tick, the cadences of the slower
/// poll sets, and the window in which packets gather between polls under
/// load.
struct Clock {
    next_tick: Instant,
    /// When the Slow and the Idle sets are due.
    next_slow: [Instant; 2],
    last_poll: Instant,
    /// The last pass found media ready.
    busy: bool,
}

impl Clock {
    fn new() -> Clock {
        let now = Instant::now();
        Clock {
            next_tick: now + TIMETICK,
            next_slow: [now; 2],
            last_poll: now,
            busy: false,
        }
    }

    /// The latest the next poll may sleep until: the tick, or a slower
    /// set's poll while it has sockets, so an idle daemon sleeps in
    /// poll's 1 s timeout.
    fn next_wake(&self, poller: &Poller) -> Instant {
        SLOW_SETS
            .iter()
            .zip(self.next_slow)
            .filter(|((cadence, _), _)| !poller.is_empty(*cadence))
            .fold(self.next_tick, |wake, (_, due)| wake.min(due))
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

    /// True (once per its interval) when a slower set is due for a poll.
    fn slow_due(&mut self, cadence: Cadence, now: Instant, poller: &Poller) -> bool {
        let Some(i) = SLOW_SETS.iter().position(|(c, _)| *c == cadence) else {
            return false;
        };
        if poller.is_empty(cadence) || now < self.next_slow[i] {
            return false;
        }
        self.next_slow[i] = now + SLOW_SETS[i].1;
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
fn relay_queued_media(cfg: &Config, sessions: &mut Sessions, daemon: &mut Daemon) {
    let mut batch = RecvBatch::new();
    let deadline = Instant::now() + FINAL_DRAIN;
    let (poller, notifier, hep) = (&mut daemon.poller, &mut daemon.notifier, &mut daemon.hep);
    // A resting socket may hold a packet that arrived early; nothing
    // rests from here on.
    poller.wake_all();
    let mut changes = PollChanges::default();
    while Instant::now() < deadline {
        let mut media = false;
        for cadence in [Cadence::EveryPass, Cadence::Slow, Cadence::Idle] {
            if let Ok(n) = poller.poll(cadence, 0) {
                if n > 0 {
                    let events = poller.events(cadence);
                    media |= relay_ready(
                        sessions,
                        events,
                        cfg.double_small,
                        Instant::now(),
                        &mut batch,
                        notifier,
                        hep,
                        &mut changes,
                    );
                    changes.clear();
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
    from: &Origin,
    now: Instant,
) -> Reply {
    rtpp_log!(Dbug, "received command \"{}\"", show(raw).trim());
    daemon.counters.commands_received += 1;
    let reply = match parse(raw) {
        Ok(cmd) => {
            for c in cmd.cmd.modifiers().into_iter().flat_map(|m| m.unknown()) {
                rtpp_log!(Warn, "unknown command modifier `{c}'");
            }
            let mut ctx = Context {
                cfg,
                sessions,
                daemon,
                now,
                origin: from,
            };
            let reply = execute(&cmd, &mut ctx);
            if let Reply::Error(e) = reply {
                // The reason, where there is more to say than the code,
                // was logged where it was found; this line says who.
                let shown = escape(raw.trim_ascii(), LOGGED_COMMAND_MAX);
                rtpp_log!(Warn, "command failed (E{}): {shown} from {from}", e.0);
            }
            reply
        }
        Err(e) => {
            let shown = escape(raw.trim_ascii(), LOGGED_COMMAND_MAX);
            rtpp_log!(Err, "command syntax error (E{}): {shown} from {from}", e.0);
            Reply::Error(e)
        }
    };
    let error = match reply {
        Reply::Error(e) => Some(e.0),
        _ => None,
    };
    if error.is_some() {
        daemon.counters.commands_failed += 1;
    } else {
        daemon.counters.commands_succeeded += 1;
    }
    daemon.metrics.count_command(raw, error);
    if reply != Reply::Silent {
        daemon.counters.replies_sent += 1;
    }
    if rtpp_log::enabled(Level::Dbug) {
        let mut out = Vec::new();
        reply.format(None, &mut out);
        rtpp_log!(Dbug, "sending reply \"{}\"", show(&out).trim_end());
    }
    reply
}

/// `-n`: the notifier, with a target for each `-n` but the
/// `%%CC_SELF%%` ones, which are made per controller as `U`s name them.
fn notifier(cfg: &Config) -> Option<Notifier> {
    if cfg.notify_targets.is_empty() {
        return None;
    }
    let fixed = cfg
        .notify_targets
        .iter()
        .filter(|t| !matches!(t, NotifyTarget::TcpSelf { .. }))
        .map(|t| Destination::of(t, None, None))
        .collect();
    Some(Notifier::new(fixed))
}

/// `--metrics`: the listener, opened and polled before the daemon detaches,
/// so a port in use fails the start.
fn open_metrics(cfg: &Config, poller: &mut Poller) -> Result<Option<MetricsServer>, String> {
    let Some(addr) = cfg.metrics else {
        return Ok(None);
    };
    let mut server = MetricsServer::open(addr)
        .map_err(|e| format!("invalid value for --metrics: can't listen on {addr}: {e}"))?;
    if !server.register(poller) {
        return Err("invalid value for -L: too few open files for the metrics listener".into());
    }
    Ok(Some(server))
}

/// `-A`: the file each ended session appends its JSON line to.
fn open_accounting(cfg: &Config) -> Result<Option<AccountFile>, String> {
    cfg.accounting_file
        .as_deref()
        .map(|path| {
            AccountFile::open(path)
                .map_err(|e| format!("invalid value for -A: can't open {}: {e}", path.display()))
        })
        .transpose()
}

/// `--hep`: the collector's socket, opened with the other outputs so that
/// a failure is a start-up error naming the option.
fn open_hep(cfg: &Config) -> Result<Option<HepSender>, String> {
    cfg.hep
        .map(|target| {
            HepSender::new(target, cfg.hep_rtcp)
                .map_err(|e| format!("invalid value for --hep: can't open a socket: {e}"))
        })
        .transpose()
}

/// `-L`. Getting less than asked for is only a warning: the daemon still
/// serves, and `NofileWatch` warns again when sessions come near the limit.
fn raise_open_files_limit(cfg: &Config) -> Result<(), String> {
    if let Some(want) = cfg.nofile {
        let granted = raise_nofile(want)?;
        if granted < want {
            eprintln!("rtpproxy: WARNING: open files limit is {granted}, not {want} (-L)");
        }
    }
    Ok(())
}
