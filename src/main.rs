//! rtpproxy: the start-up order and the poll loop. The command line is read
//! in `rtpp_options`, the daemon's life (background, pidfile, signals) is in
//! `rtpp_daemon`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rtpproxy::rtpp_account::AccountFile;
use rtpproxy::rtpp_log;

use rtpproxy::rtpp_command::exec::{end_session, execute, show, Context, EndReason};
use rtpproxy::rtpp_command::{parse, unknown_modifiers, Reply};
use rtpproxy::rtpp_control::Control;
use rtpproxy::rtpp_daemon::{
    check_identity, detach, finish_start_up, secure_control_socket, show_control, Shutdown,
};
use rtpproxy::rtpp_defines::{
    Config, BATCH_MIN_SOCKETS, BATCH_WINDOW, CPROTOVER, MAX_PACKET, NOTIFY_CAP, PROTO_CAPS,
    RTCP_POLL_INTERVAL, TIMETICK,
};
use rtpproxy::rtpp_log::Level;

use rtpproxy::rtpp_network::{PortTable, RecvBatch};
use rtpproxy::rtpp_notify::Notifier;
use rtpproxy::rtpp_options::{parse_args, usage, Action};
use rtpproxy::rtpp_proc::{drain_slot, next_timer, run_timers};
use rtpproxy::rtpp_session::{Owner, Sessions, CALLEE, CALLER, RTCP, RTP};
use rtpproxy::rtpp_util::{
    check_writable_dir, inherited_fds, raise_nofile, resolve_run_as, Random,
};

/// How long shutdown goes on relaying packets already queued.
const FINAL_DRAIN: Duration = Duration::from_millis(100);

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
    let accounting = open_accounting(cfg)?;
    raise_open_files_limit(cfg)?;
    let mut control = Control::open(&cfg.control)
        .map_err(|e| format!("can't open control socket {}: {e}", show_control(cfg)))?;
    secure_control_socket(&control, run_as.as_ref())?;

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
    let mut sessions = Sessions::new(ports);
    sessions.accounting = accounting;
    control.register(&mut sessions.polls);
    rtpp_log!(Info, "rtpproxy started, pid {}", std::process::id());
    if let Some(report) = report {
        report.ok();
    }

    run_loop(cfg, &mut control, &mut sessions, &shutdown);

    match shutdown.signal() {
        0 => rtpp_log!(Info, "drained: the last session ended, exiting"),
        sig => rtpp_log!(Info, "got signal {sig}, exiting"),
    }
    relay_queued_media(cfg, &mut sessions);
    for id in sessions.ids() {
        end_session(&mut sessions, id, EndReason::Shutdown);
    }
    drop(control);
    drop(pidfile);
    rtpp_log!(Info, "rtpproxy ended");
    Ok(())
}

/// The poll loop: relay what is ready, run the once-a-second timers, then
/// serve control commands. Relaying comes first so media never waits
/// behind a burst of commands, and commands are bounded per pass so they
/// cannot starve media either.
fn run_loop(cfg: &Config, control: &mut Control, sessions: &mut Sessions, shutdown: &Shutdown) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut batch = RecvBatch::new();
    let mut notifier = cfg.notify_socket.clone().map(Notifier::new);
    let mut nofile = rtpproxy::rtpp_util::NofileWatch::new();
    let mut next_tick = Instant::now() + TIMETICK;
    let mut next_rtcp = Instant::now();
    let mut last_poll = Instant::now();
    let mut busy = false;
    while !shutdown.stop_requested() {
        if shutdown.drain_requested() && !sessions.draining {
            sessions.draining = true;
            rtpp_log!(
                Warn,
                "draining: no new sessions from now on, exiting when the last of {} ends",
                sessions.active()
            );
        }
        if sessions.draining && sessions.active() == 0 {
            break;
        }
        // RTCP is polled on its own clock, and only while there is any, so
        // an idle daemon sleeps in poll's 1 s timeout.
        let rtcp_due = (!sessions.rtcp_polls.is_empty()).then_some(next_rtcp);
        let wake = [control.next_deadline(), next_timer(sessions), rtcp_due]
            .into_iter()
            .flatten()
            .fold(next_tick, Instant::min);
        if busy && sessions.polls.len() >= BATCH_MIN_SOCKETS {
            // Let packets gather (see BATCH_WINDOW), but never past a timer.
            let until = (last_poll + BATCH_WINDOW).min(wake);
            if let Some(pause) = until.checked_duration_since(Instant::now()) {
                std::thread::sleep(pause);
            }
        }
        let now = Instant::now();
        let timeout = wake.saturating_duration_since(now);
        // Round up so a wake-up is never early and spinning.
        let timeout_ms = timeout.as_micros().div_ceil(1000).min(1000) as i32;
        last_poll = now;
        let ready = match sessions.polls.poll(timeout_ms) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EINVAL: more entries than the open-files limit (lowered
                // under a running daemon). Retrying at once would spin.
                rtpp_log!(Err, "poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let now = Instant::now();
        busy = ready > 0 && relay_ready(cfg, sessions, RTP, now, &mut batch, ready);
        if rtcp_due.is_some_and(|due| now >= due) {
            if let Ok(n) = sessions.rtcp_polls.poll(0) {
                if n > 0 {
                    relay_ready(cfg, sessions, RTCP, now, &mut batch, n);
                }
            }
            next_rtcp = now + RTCP_POLL_INTERVAL;
        }
        run_timers(sessions, now, &mut buf, cfg.double_small);
        if now >= next_tick {
            expire_sessions(cfg, sessions, &mut notifier, now);
            nofile.check(sessions.active());
            next_tick += TIMETICK;
            if next_tick <= now {
                next_tick = now + TIMETICK;
            }
        }
        control.serve(sessions, now, |sessions, raw| {
            run_command(cfg, sessions, raw, now)
        });
    }
}

/// Relays from every ready socket of one poll set (RTP or RTCP); returns
/// whether any media socket was ready.
fn relay_ready(
    cfg: &Config,
    sessions: &mut Sessions,
    set: usize,
    now: Instant,
    batch: &mut RecvBatch,
    ready: usize,
) -> bool {
    let mut seen = 0;
    let mut media = false;
    let mut slot = 0;
    while slot < sessions.poll_set(set).len() && seen < ready {
        if sessions.poll_set(set).ready(slot) {
            seen += 1;
            if let Some(Owner::Media { .. }) = sessions.poll_set(set).owner(slot) {
                media = true;
                drain_slot(sessions, set, slot, cfg.double_small, now, batch);
            }
        }
        slot += 1;
    }
    media
}

/// At shutdown: relays, and so records, what the media sockets still hold,
/// so that a packet that arrived before the signal is in the recordings
/// (PROTOCOL.md, "Classic defects"). Bounded, since parties keep sending.
fn relay_queued_media(cfg: &Config, sessions: &mut Sessions) {
    let mut batch = RecvBatch::new();
    let deadline = Instant::now() + FINAL_DRAIN;
    while Instant::now() < deadline {
        let mut media = false;
        for set in [RTP, RTCP] {
            if let Ok(n) = sessions.poll_set(set).poll(0) {
                if n > 0 {
                    media |= relay_ready(cfg, sessions, set, Instant::now(), &mut batch, n);
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

/// The 1-second timer: idle sessions end, recordings reach the disk.
fn expire_sessions(
    cfg: &Config,
    sessions: &mut Sessions,
    notifier: &mut Option<Notifier>,
    now: Instant,
) {
    for id in sessions.ids() {
        if let Some(s) = sessions.get_mut(id) {
            for rec in s.recorders.iter_mut().flatten().flatten() {
                if let Err(e) = rec.flush() {
                    rtpp_log!(Err, "{e}");
                }
            }
        }
        let expired = sessions.get(id).is_some_and(|s| {
            s.expires_in(cfg.max_ttl, cfg.independent_ttl, now)
                .is_zero()
        });
        if !expired {
            continue;
        }
        let Some(s) = end_session(sessions, id, EndReason::Timeout) else {
            continue;
        };
        if let (Some(armed), Some(n)) = (&s.notify, notifier.as_mut()) {
            // Without a tag the classic message is the two relay ports,
            // the one U answered first.
            let ports;
            let message = match armed {
                Some(tag) => &tag[..],
                None => {
                    ports = format!("{} {}", s.port(CALLEE), s.port(CALLER));
                    ports.as_bytes()
                }
            };
            n.notify(message);
        }
    }
    if let Some(n) = notifier.as_mut() {
        n.flush();
    }
}

fn run_command(cfg: &Config, sessions: &mut Sessions, raw: &[u8], now: Instant) -> Reply {
    rtpp_log!(Dbug, "received command \"{}\"", show(raw).trim());
    sessions.totals.commands_received += 1;
    let reply = match parse(raw) {
        Ok(cmd) => {
            if let Some(verb) = raw.iter().find(|c| !c.is_ascii_whitespace()) {
                if matches!(verb.to_ascii_uppercase(), b'U' | b'L') {
                    let mods = raw
                        .split(|c| c.is_ascii_whitespace())
                        .find(|t| !t.is_empty())
                        .map_or(&[][..], |t| &t[1..]);
                    for c in unknown_modifiers(mods) {
                        rtpp_log!(Warn, "unknown command modifier `{c}'");
                    }
                }
            }
            let mut ctx = Context { cfg, sessions, now };
            execute(&cmd, &mut ctx)
        }
        Err(e) => {
            rtpp_log!(Err, "command syntax error (E{})", e.0);
            Reply::Error(e)
        }
    };
    if matches!(reply, Reply::Error(_)) {
        sessions.totals.commands_failed += 1;
    } else {
        sessions.totals.commands_succeeded += 1;
    }
    if rtpp_log::enabled(Level::Dbug) {
        let mut out = Vec::new();
        reply.format(None, &mut out);
        rtpp_log!(Dbug, "sending reply \"{}\"", show(&out).trim_end());
    }
    reply
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
