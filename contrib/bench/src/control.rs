//! `control`: how many sessions a second the relay sets up and tears down.
//!
//! Each of `--outstanding` workers runs cycles back to back (`Us`, `Ls`,
//! `D`, or `Us`, `D`) on its own control client, so that many requests are
//! in flight at any time. Only commands started inside the measured window
//! count.

use crate::calls::label_suffix;
use crate::clock::{now_ns, sleep_until_or_stop, NS_PER_SEC};
use crate::ctrl::update_command;
use crate::ctrl::{
    delete_command, lookup_command, parse_ok_reply, parse_port_reply, ControlClient, CtrlError,
    CtrlSpec, CtrlTiming,
};
use crate::options::{Config, Cycle};
use crate::procfs;
use crate::report::{flag_saturation, GeneratorLoad, Report};
use crate::runctl::{bind_loopback_udp, stop_requested, Watchdog};
use crate::stats::LatencyHistogram;
use crate::usage;
use std::net::{IpAddr, Ipv4Addr};

/// A worker whose requests go unanswered this many times in a row stops:
/// the relay is gone or wedged, and waiting out the run proves nothing.
const GIVE_UP_AFTER_UNANSWERED: u32 = 5;
/// Most unanswered deletes remembered for a second try.
const MAX_LEFTOVERS: usize = 4096;

/// The three kinds of command a cycle sends.
#[derive(Clone, Copy)]
enum Kind {
    Update = 0,
    Lookup = 1,
    Delete = 2,
}

#[derive(Default, Clone)]
struct KindStats {
    ok: u64,
    relay_errors: u64,
    timeouts: u64,
    other_errors: u64,
    latency: LatencyHistogram,
}

impl KindStats {
    fn merge(&mut self, other: &KindStats) {
        self.ok += other.ok;
        self.relay_errors += other.relay_errors;
        self.timeouts += other.timeouts;
        self.other_errors += other.other_errors;
        self.latency.merge(&other.latency);
    }
}

#[derive(Default, Clone)]
struct WorkerStats {
    kinds: [KindStats; 3],
    cycles_ok: u64,
    cycles_failed: u64,
    /// Cycles completed over the whole run, warm-up included.
    cycles_all: u64,
    /// When the relay last answered, ns since the run began.
    last_answer_ns: u64,
    leftovers: Vec<String>,
    first_error: Option<String>,
    gave_up: bool,
}

struct Worker {
    client: ControlClient,
    worker: usize,
    run: u32,
    media_port: u16,
    cycle: Cycle,
    run_start: u64,
    window: (u64, u64),
    stats: WorkerStats,
    unanswered_in_a_row: u32,
}

impl Worker {
    /// Sends one command, classifies the outcome, and records it when the
    /// command started inside the measured window.
    fn send(&mut self, kind: Kind, command: &str) -> Result<String, CtrlError> {
        let started = now_ns();
        let reply = self.client.request(command);
        let finished = now_ns();
        let checked = reply.and_then(|body| match kind {
            Kind::Update | Kind::Lookup => parse_port_reply(&body).map(|_| body),
            Kind::Delete => parse_ok_reply(&body).map(|_| body),
        });
        if checked.as_ref().is_err_and(CtrlError::is_unanswered) {
            self.unanswered_in_a_row += 1;
        } else {
            self.unanswered_in_a_row = 0;
            self.stats.last_answer_ns = finished.saturating_sub(self.run_start);
        }
        if let Err(e) = &checked {
            self.stats
                .first_error
                .get_or_insert_with(|| format!("{command}: {e}"));
        }
        if started >= self.window.0 && started < self.window.1 {
            let s = &mut self.stats.kinds[kind as usize];
            match &checked {
                Ok(_) => {
                    s.ok += 1;
                    s.latency.record(finished.saturating_sub(started));
                }
                Err(CtrlError::Relay(_)) => s.relay_errors += 1,
                Err(CtrlError::Timeout) => s.timeouts += 1,
                Err(_) => s.other_errors += 1,
            }
        }
        checked
    }

    /// One call's life on the control plane; always ends with `D` so no
    /// session is left behind, even when an earlier step failed.
    fn run_cycle(&mut self, n: u64) {
        let started = now_ns();
        let call_id = format!("rtppc-{:08x}-{}-{n}", self.run, self.worker);
        let (from_tag, to_tag) = ("fc", "tc");
        let local: IpAddr = Ipv4Addr::LOCALHOST.into();
        let mut ok = self
            .send(
                Kind::Update,
                &update_command(&call_id, local, self.media_port, from_tag),
            )
            .is_ok();
        if self.cycle == Cycle::UpdateLookupDelete {
            let lookup = lookup_command(&call_id, local, self.media_port, from_tag, to_tag);
            ok &= self.send(Kind::Lookup, &lookup).is_ok();
        }
        let delete = delete_command(&call_id, from_tag, to_tag);
        match self.send(Kind::Delete, &delete) {
            Ok(_) => {}
            Err(CtrlError::Relay(_)) => ok = false,
            Err(_) => {
                ok = false;
                if self.stats.leftovers.len() < MAX_LEFTOVERS {
                    self.stats.leftovers.push(delete);
                }
            }
        }
        if ok {
            self.stats.cycles_all += 1;
        }
        if started >= self.window.0 && started < self.window.1 {
            if ok {
                self.stats.cycles_ok += 1;
            } else {
                self.stats.cycles_failed += 1;
            }
        }
    }

    fn run(mut self) -> WorkerStats {
        // Bounded by the window's end; each cycle is bounded by the
        // control timeouts.
        for n in 0u64.. {
            if now_ns() >= self.window.1 || stop_requested() {
                break;
            }
            if self.unanswered_in_a_row >= GIVE_UP_AFTER_UNANSWERED {
                self.stats.gave_up = true;
                break;
            }
            self.run_cycle(n);
        }
        self.stats
    }
}

/// Runs the control-plane benchmark and returns its report.
pub fn run_control(cfg: &Config, relay_pid: Option<i32>, run: u32) -> Result<Report, String> {
    let spec = cfg
        .ctrl
        .as_ref()
        .ok_or_else(|| "--ctrl is required".to_string())?;
    let per_command = cfg.timing.timeout.as_secs() + 1;
    let bound =
        cfg.warmup_s + cfg.duration_s + 4 * per_command * (u64::from(cfg.timing.retries) + 1) + 60;
    let _watchdog = Watchdog::arm(bound * NS_PER_SEC, "control run".into());
    // The address signalled in Us/Ls: a socket of ours, so the relay has
    // a real party on record even though no media flows.
    let media = bind_loopback_udp()?;
    let media_port = media
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let background = usage::background_load();
    let t0 = now_ns() + 50 * crate::clock::NS_PER_MS;
    let window = (
        t0 + cfg.warmup_s * NS_PER_SEC,
        t0 + (cfg.warmup_s + cfg.duration_s) * NS_PER_SEC,
    );
    let mut workers = Vec::with_capacity(cfg.outstanding);
    for w in 0..cfg.outstanding {
        workers.push(Worker {
            client: ControlClient::new(spec, &format!("{run:x}c{w}"), cfg.timing)?,
            worker: w,
            run,
            media_port,
            cycle: cfg.cycle,
            run_start: t0,
            window,
            stats: WorkerStats::default(),
            unanswered_in_a_row: 0,
        });
    }
    let (all, cpu, interrupted) = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| scope.spawn(move || w.run()))
            .collect();
        let stop = || stop_requested();
        let mut interrupted = !sleep_until_or_stop(window.0, &stop);
        let start = usage::sample(relay_pid);
        interrupted |= !sleep_until_or_stop(window.1, &stop);
        let end = usage::sample(relay_pid);
        let mut all = WorkerStats::default();
        for h in handles {
            match h.join() {
                Ok(s) => merge_worker(&mut all, s),
                Err(_) => all.first_error = Some("a control worker panicked".into()),
            }
        }
        (all, usage::between(&start, &end), interrupted)
    });
    let relay_gone = relay_pid.is_some_and(|pid| !procfs::is_alive(pid));
    let cleaned = if relay_gone {
        0
    } else {
        clean_leftovers(spec, run, cfg.timing, &all.leftovers)
    };
    let mut report = control_report(cfg, spec, &all, &cpu, relay_pid, interrupted, cleaned);
    usage::add_background_row(&mut report, background);
    usage::add_disturbance_rows(&mut report, &cpu);
    Ok(report)
}

fn merge_worker(all: &mut WorkerStats, s: WorkerStats) {
    for (mine, theirs) in all.kinds.iter_mut().zip(&s.kinds) {
        mine.merge(theirs);
    }
    all.cycles_ok += s.cycles_ok;
    all.cycles_failed += s.cycles_failed;
    all.cycles_all += s.cycles_all;
    all.last_answer_ns = all.last_answer_ns.max(s.last_answer_ns);
    all.leftovers.extend(s.leftovers);
    if all.first_error.is_none() {
        all.first_error = s.first_error;
    }
    all.gave_up |= s.gave_up;
}

/// Retries the deletes that got no answer; returns how many still failed.
fn clean_leftovers(spec: &CtrlSpec, run: u32, timing: CtrlTiming, leftovers: &[String]) -> u64 {
    if leftovers.is_empty() {
        return 0;
    }
    let replies = crate::ctrl::run_pipelined(spec, &format!("{run:x}L"), leftovers, 4, timing);
    match replies {
        Ok(r) => r
            .into_iter()
            .filter(|reply| match reply {
                Ok(_) | Err(CtrlError::Relay(_)) => false,
                Err(_) => true,
            })
            .count() as u64,
        Err(_) => leftovers.len() as u64,
    }
}

fn control_report(
    cfg: &Config,
    spec: &CtrlSpec,
    all: &WorkerStats,
    cpu: &usage::CpuUse,
    relay_pid: Option<i32>,
    interrupted: bool,
    not_cleaned: u64,
) -> Report {
    let cycle_name = match cfg.cycle {
        Cycle::UpdateLookupDelete => "U+L+D",
        Cycle::UpdateDelete => "U+D",
    };
    let mut report = Report::new(
        "control",
        format!(
            "control: {cycle_name} cycles via {spec}, {} outstanding, {} s measured after {} s warm-up{}",
            cfg.outstanding,
            cfg.duration_s,
            cfg.warmup_s,
            label_suffix(&cfg.label)
        ),
    );
    report.text("label", "relay under test", &cfg.label);
    report.text("ctrl", "control socket", &spec.to_string());
    report.text("cycle", "cycle", cycle_name);
    report.int(
        "outstanding",
        "requests in flight",
        cfg.outstanding as u64,
        "",
    );
    report.int("duration_s", "measured seconds", cfg.duration_s, "s");
    add_rate_rows(&mut report, all, cfg.duration_s);
    usage::add_rows(&mut report, cpu, None, relay_pid);
    let load = GeneratorLoad {
        cpu_cores: cpu.generator_cores,
        cpus_busy: cpu.generator_cpus_busy,
        allowed_cpus: procfs::allowed_cpus(),
        ..Default::default()
    };
    // A cut-short window says nothing about saturation.
    if !interrupted {
        flag_saturation(&mut report, &load);
    }
    usage::check_relay_alive(&mut report, relay_pid);
    if let Some(e) = &all.first_error {
        report.text("first_error", "first error", e);
    }
    add_survival_rows(&mut report, all, relay_pid);
    if all.gave_up {
        report.warn(format!(
            "workers stopped after {GIVE_UP_AFTER_UNANSWERED} unanswered requests in a row: the relay stopped answering"
        ));
    }
    if not_cleaned > 0 {
        report.warn(format!("{not_cleaned} sessions could not be deleted"));
    }
    if interrupted {
        report.warn(
            "INTERRUPTED: the run was stopped early; the figures cover a partial window".into(),
        );
    }
    report
}

/// How many cycles and commands went through, how fast, and what failed.
fn add_rate_rows(report: &mut Report, all: &WorkerStats, duration_s: u64) {
    let secs = duration_s.max(1) as f64;
    report.int("cycles_ok", "cycles completed", all.cycles_ok, "");
    report.int(
        "cycles_failed",
        "cycles with an error",
        all.cycles_failed,
        "",
    );
    report.float(
        "cycles_per_s",
        "cycles per second",
        Some(all.cycles_ok as f64 / secs),
        1,
        "/s",
    );
    let commands: u64 = all.kinds.iter().map(|k| k.ok).sum();
    report.float(
        "commands_per_s",
        "commands answered per second",
        Some(commands as f64 / secs),
        1,
        "/s",
    );
    add_kind_rows(report, &all.kinds);
    let errors: u64 = all
        .kinds
        .iter()
        .map(|k| k.relay_errors + k.other_errors)
        .sum();
    let timeouts: u64 = all.kinds.iter().map(|k| k.timeouts).sum();
    report.int("errors", "error replies", errors, "");
    report.int("timeouts", "timeouts", timeouts, "");
}

/// When the relay stopped answering or died: how far it got.
fn add_survival_rows(report: &mut Report, all: &WorkerStats, relay_pid: Option<i32>) {
    let relay_gone = relay_pid.is_some_and(|pid| !procfs::is_alive(pid));
    if all.gave_up || relay_gone {
        report.int(
            "cycles_whole_run",
            "cycles completed, warm-up included",
            all.cycles_all,
            "",
        );
        let answering_s = all.last_answer_ns as f64 / 1e9;
        report.float(
            "last_answer_s",
            "relay last answered (s into the run)",
            Some(answering_s),
            3,
            "s",
        );
        report.float(
            "cycles_per_s_while_answering",
            "cycles per second while it answered",
            (answering_s > 0.0).then(|| all.cycles_all as f64 / answering_s),
            1,
            "/s",
        );
    }
}

fn add_kind_rows(report: &mut Report, kinds: &[KindStats; 3]) {
    let ms = |ns: Option<u64>| ns.map(|v| v as f64 / 1e6);
    let [u, l, d] = kinds;
    // Keys and labels are spelled out: the JSON keys are a stable interface.
    let rows = [
        (
            u,
            [
                "u_ok",
                "Us answered",
                "u_p50_ms",
                "Us latency p50",
                "u_p99_ms",
                "Us latency p99",
            ],
        ),
        (
            l,
            [
                "l_ok",
                "Ls answered",
                "l_p50_ms",
                "Ls latency p50",
                "l_p99_ms",
                "Ls latency p99",
            ],
        ),
        (
            d,
            [
                "d_ok",
                "D answered",
                "d_p50_ms",
                "D latency p50",
                "d_p99_ms",
                "D latency p99",
            ],
        ),
    ];
    for (k, [ok, ok_label, p50, p50_label, p99, p99_label]) in rows {
        report.int(ok, ok_label, k.ok, "");
        report.float(p50, p50_label, ms(k.latency.percentile(50.0)), 3, "ms");
        report.float(p99, p99_label, ms(k.latency.percentile(99.0)), 3, "ms");
    }
    let max = [u, l, d].iter().filter_map(|k| k.latency.max()).max();
    report.float("max_ms", "slowest command", ms(max), 3, "ms");
}
