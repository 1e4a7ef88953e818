//! CPU and memory of the relay and of the harness over the measured window.

use crate::clock::now_ns;
use crate::procfs;
use crate::report::Report;

/// A snapshot taken at one edge of the measured window.
#[derive(Debug, Clone)]
pub struct CpuSample {
    wall_ns: u64,
    self_cpu_ns: u64,
    relay_ticks: Option<u64>,
    per_cpu: Vec<procfs::CpuTicks>,
    generator_cpus: Vec<usize>,
    relay_cpus: Vec<usize>,
}

/// Takes a snapshot; the relay part is absent when no pid is known or the
/// relay is gone.
pub fn sample(relay_pid: Option<i32>) -> CpuSample {
    CpuSample {
        wall_ns: now_ns(),
        self_cpu_ns: procfs::self_cpu_ns(),
        relay_ticks: relay_pid.and_then(|pid| procfs::read_cpu_ticks(pid).ok()),
        per_cpu: procfs::read_cpu_times(),
        generator_cpus: procfs::affinity_of(0),
        relay_cpus: relay_pid.map(procfs::affinity_of).unwrap_or_default(),
    }
}

/// Tick deltas of the CPUs in `set` between two snapshots: (busy, tasks,
/// total).
fn tick_deltas(start: &CpuSample, end: &CpuSample, set: &[usize]) -> Option<(u64, u64, u64)> {
    let (mut busy, mut tasks, mut total) = (0u64, 0u64, 0u64);
    for &cpu in set {
        let (a, b) = (start.per_cpu.get(cpu)?, end.per_cpu.get(cpu)?);
        busy += b.busy.saturating_sub(a.busy);
        tasks += b.tasks.saturating_sub(a.tasks);
        total += b.total.saturating_sub(a.total);
    }
    (total > 0).then_some((busy, tasks, total))
}

/// How busy the CPUs in `set` were between two snapshots (0.0 to 1.0,
/// averaged over the set).
fn busy_share(start: &CpuSample, end: &CpuSample, set: &[usize]) -> Option<f64> {
    tick_deltas(start, end, set).map(|(busy, _, total)| busy as f64 / total as f64)
}

/// The share of the CPUs in `set` that went to processes other than
/// `own_ticks` worth of ours (and to the hypervisor's other guests).
fn foreign_share(start: &CpuSample, end: &CpuSample, set: &[usize], own_ticks: f64) -> Option<f64> {
    tick_deltas(start, end, set)
        .map(|(_, tasks, total)| ((tasks as f64 - own_ticks) / total as f64).max(0.0))
}

/// CPU used between two snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// Length of the window, seconds.
    pub wall_s: f64,
    /// The harness's CPU, in cores (1.0 = one core busy all the time).
    pub generator_cores: f64,
    /// The relay's CPU, in cores.
    pub relay_cores: Option<f64>,
    /// The relay's CPU, in microseconds.
    pub relay_cpu_us: Option<f64>,
    /// How busy the generator's CPUs were, by anyone (softirq included).
    pub generator_cpus_busy: Option<f64>,
    /// How busy the relay's CPUs were, by anyone (softirq included).
    pub relay_cpus_busy: Option<f64>,
    /// The relay is pinned to one CPU the generator may not use, so that
    /// CPU's whole load is work done for the relay.
    pub relay_core_exclusive: bool,
    /// Share of the relay's CPU taken by other processes (pinned relay).
    pub relay_cpu_foreign: Option<f64>,
    /// Share of the generator's CPUs taken by other processes.
    pub generator_cpus_foreign: Option<f64>,
}

/// What was used between `start` and `end`.
pub fn between(start: &CpuSample, end: &CpuSample) -> CpuUse {
    let wall_s = end.wall_ns.saturating_sub(start.wall_ns) as f64 / 1e9;
    // Shorter than a few clock ticks, /proc figures are noise.
    if wall_s < 0.05 {
        return CpuUse {
            wall_s,
            ..CpuUse::default()
        };
    }
    let generator_cores = end.self_cpu_ns.saturating_sub(start.self_cpu_ns) as f64 / 1e9 / wall_s;
    let relay_cpu_us = match (start.relay_ticks, end.relay_ticks) {
        (Some(a), Some(b)) => {
            Some(b.saturating_sub(a) as f64 * 1e6 / procfs::ticks_per_second() as f64)
        }
        _ => None,
    };
    let ticks_per_s = procfs::ticks_per_second() as f64;
    let relay_core_exclusive =
        start.relay_cpus.len() == 1 && !start.generator_cpus.contains(&start.relay_cpus[0]);
    let relay_ticks = relay_cpu_us.map(|us| us / 1e6 * ticks_per_s);
    let generator_ticks = generator_cores * wall_s * ticks_per_s;
    CpuUse {
        wall_s,
        generator_cores,
        relay_cores: relay_cpu_us.map(|us| us / 1e6 / wall_s),
        relay_cpu_us,
        generator_cpus_busy: busy_share(start, end, &start.generator_cpus),
        relay_cpus_busy: busy_share(start, end, &start.relay_cpus),
        relay_core_exclusive,
        relay_cpu_foreign: relay_ticks
            .filter(|_| relay_core_exclusive)
            .and_then(|own| foreign_share(start, end, &start.relay_cpus, own)),
        generator_cpus_foreign: foreign_share(start, end, &start.generator_cpus, generator_ticks),
    }
}

/// Adds the relay's and the generator's CPU and memory rows to `report`;
/// `relayed` is the number of packets the relay forwarded in the window
/// (`None` when the run carries no media).
pub fn add_rows(report: &mut Report, cpu: &CpuUse, relayed: Option<u64>, relay_pid: Option<i32>) {
    report.float(
        "window_s",
        "measured window (wall clock)",
        Some(cpu.wall_s),
        3,
        "s",
    );
    report.float(
        "relay_cpu_pct",
        "relay CPU (% of one core)",
        cpu.relay_cores.map(|c| c * 100.0),
        1,
        "%",
    );
    if let Some(relayed) = relayed {
        let per_packet = match cpu.relay_cpu_us {
            Some(us) if relayed > 0 => Some(us / relayed as f64),
            _ => None,
        };
        report.float(
            "relay_us_per_pkt",
            "relay CPU per relayed packet",
            per_packet,
            3,
            "us",
        );
    }
    report.float(
        "relay_cpus_busy_pct",
        "relay's CPU(s) busy, softirq included",
        cpu.relay_cpus_busy.map(|b| b * 100.0),
        1,
        "%",
    );
    let memory = relay_pid.and_then(|pid| procfs::read_rss_kib(pid).ok());
    report.float(
        "relay_rss_kib",
        "relay RSS (VmRSS)",
        memory.map(|(rss, _)| rss as f64),
        0,
        "KiB",
    );
    report.float(
        "relay_peak_rss_kib",
        "relay peak RSS (VmHWM)",
        memory.map(|(_, hwm)| hwm as f64),
        0,
        "KiB",
    );
    report.float(
        "generator_cpu_pct",
        "generator CPU (% of one core)",
        Some(cpu.generator_cores * 100.0),
        1,
        "%",
    );
    report.float(
        "generator_cpus_busy_pct",
        "generator's CPU(s) busy, softirq included",
        cpu.generator_cpus_busy.map(|b| b * 100.0),
        1,
        "%",
    );
    report.int(
        "generator_cpus",
        "CPUs the generator may use",
        procfs::allowed_cpus() as u64,
        "",
    );
    if relay_pid.is_none() {
        report.warn("relay CPU and memory not measured: give --pid or --pidfile".into());
    }
}

/// Above this share of a CPU taken by other processes during the run, the
/// figures are flagged as disturbed.
const FOREIGN_WARN: f64 = 0.05;

/// Adds the rows saying how much other processes took from the relay's
/// and the generator's CPUs during the window, warning when it mattered.
pub fn add_disturbance_rows(report: &mut Report, cpu: &CpuUse) {
    report.float(
        "relay_cpu_foreign_pct",
        "other processes on the relay's CPU",
        cpu.relay_cpu_foreign.map(|f| f * 100.0),
        1,
        "%",
    );
    report.float(
        "generator_cpus_foreign_pct",
        "other processes on the generator's CPU(s)",
        cpu.generator_cpus_foreign.map(|f| f * 100.0),
        1,
        "%",
    );
    let worst = cpu
        .relay_cpu_foreign
        .unwrap_or(0.0)
        .max(cpu.generator_cpus_foreign.unwrap_or(0.0));
    report.flag("disturbed", "disturbed by other work", worst > FOREIGN_WARN);
    if worst > FOREIGN_WARN {
        report.warn(format!(
            "DISTURBED: other processes took up to {:.0}% of a CPU the relay or the generator ran on; \
             repeat the run on a quieter machine",
            worst * 100.0
        ));
    }
}

/// Share of the whole machine busy before a run: other work on a shared
/// machine takes CPU from the relay or the generator and skews every figure.
pub fn background_load() -> Option<f64> {
    let before = procfs::read_cpu_times();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = procfs::read_cpu_times();
    let (mut busy, mut total) = (0u64, 0u64);
    for (a, b) in before.iter().zip(&after) {
        busy += b.busy.saturating_sub(a.busy);
        total += b.total.saturating_sub(a.total);
    }
    (total > 0).then(|| busy as f64 / total as f64)
}

/// Above this share of the machine busy before the run, the figures are
/// flagged as possibly disturbed.
const BACKGROUND_WARN: f64 = 0.15;

/// Adds the background-load row, and a warning when it was high.
pub fn add_background_row(report: &mut Report, busy: Option<f64>) {
    report.float(
        "machine_busy_before_pct",
        "machine busy before the run (all CPUs)",
        busy.map(|b| b * 100.0),
        1,
        "%",
    );
    if let Some(b) = busy.filter(|&b| b > BACKGROUND_WARN) {
        report.warn(format!(
            "the machine was {:.0}% busy before the run started: other work may have disturbed these figures",
            b * 100.0
        ));
    }
}

/// Warns when the relay died during the run.
pub fn check_relay_alive(report: &mut Report, relay_pid: Option<i32>) {
    if let Some(pid) = relay_pid {
        let alive = procfs::is_alive(pid);
        report.flag("relay_alive", "relay still running", alive);
        if !alive {
            report.warn(format!(
                "RELAY PROCESS {pid} IS GONE: it died during the run"
            ));
        }
    }
}
