//! `compare`: several relays, several scenarios, several rounds, with the
//! relays' order rotating from round to round so that none always runs
//! first (on a warm or a cold machine), and a table of medians at the end.

use crate::options::{Config, Cycle, Mode, Silence};
use crate::relayproc::{self, StartedRelay};
use crate::report::Report;
use crate::runctl::{new_run_id, stop_requested};
use crate::scenario::{CompareConfig, RelayKind, RelaySpec, Scenario, ScenarioKind};
use crate::summary;
use crate::{calls, control, flood};

/// The silence of the `burst` scenario when `--silence` gives none: every
/// 2 s, 200 ms without packets, then a burst of 11.
const DEFAULT_BURST: Silence = Silence {
    every_ms: 2000,
    length_ms: 200,
};

/// Who runs a scenario: a relay, or the harness's minimal relay (the bar
/// of the flood).
#[derive(Clone, Copy)]
enum Participant<'a> {
    Relay(&'a RelaySpec),
    Baseline,
}

impl Participant<'_> {
    fn label(&self) -> &str {
        match self {
            Participant::Relay(r) => &r.label,
            Participant::Baseline => "baseline",
        }
    }
}

/// One run's outcome, kept for the medians.
pub struct RunOutcome {
    /// Index into the scenarios.
    pub scenario: usize,
    /// The relay's label ("baseline" for the minimal relay).
    pub relay: String,
    /// Round, from 0.
    pub round: usize,
    /// The report, or why there is none.
    pub result: Result<Report, String>,
}

/// The relays to compare, and notes on the ones left out.
fn resolve_relays(cmp: &CompareConfig) -> (Vec<RelaySpec>, Vec<String>) {
    let mut relays = Vec::new();
    let mut notes = Vec::new();
    if cmp.rtpproxies.is_empty() {
        match relayproc::rtpproxy_beside_me() {
            Some(path) => relays.push(RelaySpec {
                label: "rtpproxy".into(),
                kind: RelayKind::Rtpproxy(path),
            }),
            None => notes.push(
                "no rtpproxy beside this program (cargo build --release --workspace builds it); \
                 give --rtpproxy PATH"
                    .to_string(),
            ),
        }
    }
    relays.extend(cmp.rtpproxies.iter().cloned());
    if !cmp.no_rtpengine {
        let program = cmp
            .rtpengine
            .clone()
            .or_else(|| relayproc::find_in_path("rtpengine"));
        match program {
            Some(path) => relays.push(RelaySpec {
                label: "rtpengine".into(),
                kind: RelayKind::Rtpengine(path),
            }),
            None => notes.push("rtpengine is not in PATH: left out".into()),
        }
    }
    for relay in &cmp.addressed {
        if let RelayKind::Addressed {
            ctrl,
            pid: Some(pid),
        } = &relay.kind
        {
            // A shell's or wrapper's pid would report the relay as idle.
            if crate::ctrl::pid_holds_control_socket(*pid, ctrl) == Some(false) {
                notes.push(format!(
                    "{}: process {pid} does not hold {ctrl}; its CPU figures are not the relay's",
                    relay.label
                ));
            }
        }
    }
    relays.extend(cmp.addressed.iter().cloned());
    (relays, notes)
}

/// The configuration of one run of `scenario` by `label`.
fn scenario_config(cfg: &Config, scenario: &Scenario, label: &str) -> Config {
    let cmp = &cfg.compare;
    let mut c = cfg.clone();
    c.label = label.to_string();
    // compare writes each line itself, with its own fields added.
    c.json = None;
    let timing = match scenario.kind {
        ScenarioKind::Calls {
            calls,
            idle,
            ptime_ms,
            burst,
        } => {
            c.mode = Mode::Calls;
            c.calls = calls;
            c.idle_calls = idle;
            c.ptime_ms = ptime_ms;
            c.silence = burst.then(|| cfg.silence.unwrap_or(DEFAULT_BURST));
            cmp.calls_timing
        }
        ScenarioKind::Flood => {
            c.mode = Mode::Flood;
            c.with_baseline = false;
            cmp.flood_timing
        }
        ScenarioKind::Control => {
            c.mode = Mode::Control;
            c.cycle = Cycle::UpdateDelete;
            cmp.control_timing
        }
    };
    c.duration_s = timing.duration_s;
    c.warmup_s = timing.warmup_s;
    c
}

/// Runs `scenario` once on `relay`, starting and stopping it when the
/// bench owns it.
fn run_on_relay(cfg: &Config, relay: &RelaySpec, scenario: &Scenario) -> Result<Report, String> {
    let cmp = &cfg.compare;
    let mut c = scenario_config(cfg, scenario, &relay.label);
    let started = match &relay.kind {
        RelayKind::Addressed { ctrl, pid } => {
            c.ctrl = Some(ctrl.clone());
            c.pid = *pid;
            None
        }
        _ => {
            let r = StartedRelay::start(relay, cmp, cfg.timing)?;
            c.ctrl = Some(r.ctrl().clone());
            c.pid = Some(r.pid());
            Some(r)
        }
    };
    relayproc::settle(cmp.settle_s);
    let run = new_run_id();
    let report = match scenario.kind {
        ScenarioKind::Calls { calls, .. } => calls::run_calls(&c, calls, c.pid, run),
        ScenarioKind::Flood => flood::run_flood(&c, c.pid, run),
        ScenarioKind::Control => control::run_control(&c, c.pid, run),
    };
    // Stopped before the pause, so the next run starts on a quiet CPU.
    drop(started);
    relayproc::settle(cmp.settle_s);
    report
}

fn run_one(
    cfg: &Config,
    who: Participant,
    scenario_index: usize,
    round: usize,
) -> Result<Report, String> {
    let scenario = &cfg.compare.scenarios[scenario_index];
    let mut report = match who {
        Participant::Relay(relay) => run_on_relay(cfg, relay, scenario)?,
        Participant::Baseline => {
            let c = scenario_config(cfg, scenario, "baseline");
            let report = flood::run_baseline(&c, new_run_id());
            relayproc::settle(cfg.compare.settle_s);
            report?
        }
    };
    report.text("relay", "relay", who.label());
    report.text("scenario", "scenario", &scenario.name);
    report.int("round", "round (from 1)", round as u64 + 1, "");
    let pinned = !matches!(
        who,
        Participant::Relay(RelaySpec {
            kind: RelayKind::Addressed { .. },
            ..
        })
    );
    report.flag("relay_pinned", "relay pinned by the bench", pinned);
    report.emit(cfg.json.as_deref())?;
    Ok(report)
}

/// Everyone who runs `scenario` in `round`, rotated by the round so each
/// takes every place in turn.
fn line_up<'a>(relays: &'a [RelaySpec], scenario: &Scenario, round: usize) -> Vec<Participant<'a>> {
    let mut who: Vec<Participant> = relays.iter().map(Participant::Relay).collect();
    if scenario.kind == ScenarioKind::Flood {
        who.push(Participant::Baseline);
    }
    if !who.is_empty() {
        let shift = round % who.len();
        who.rotate_left(shift);
    }
    who
}

/// Runs the whole comparison and prints its summary.
pub fn run_compare(cfg: &Config) -> Result<(), String> {
    let cmp = &cfg.compare;
    let (relays, mut notes) = resolve_relays(cmp);
    if relays.is_empty() {
        return Err(format!("nothing to compare: {}", notes.join("; ")));
    }
    relayproc::place_self(cmp.gen_cpu)?;
    if cmp.gen_cpu == cmp.relay_cpu {
        notes.push(format!(
            "the generator and the relays share CPU {}: each steals the other's time",
            cmp.gen_cpu
        ));
    }
    let header = summary::header(cfg, &relays, &notes);
    eprintln!("{header}");
    let mut outcomes = Vec::new();
    'rounds: for round in 0..cmp.rounds {
        for (index, scenario) in cmp.scenarios.iter().enumerate() {
            for who in line_up(&relays, scenario, round) {
                if stop_requested() {
                    break 'rounds;
                }
                let result = run_logged(cfg, who, index, round);
                // A window cut short is printed, but not a figure to take
                // a median of.
                if stop_requested() {
                    break 'rounds;
                }
                outcomes.push(RunOutcome {
                    scenario: index,
                    relay: who.label().to_string(),
                    round,
                    result,
                });
            }
        }
    }
    let labels: Vec<String> = relays.iter().map(|r| r.label.clone()).collect();
    let mut text = format!("{header}{}", summary::table(cmp, &labels, &outcomes));
    if stop_requested() {
        text.push_str(
            "\nINTERRUPTED: the comparison was stopped early; the medians cover the runs done.\n",
        );
    }
    println!("\n{text}");
    if let Some(path) = &cmp.summary {
        std::fs::write(path, &text).map_err(|e| format!("--summary {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs one scenario for one participant, saying so on stderr; a failure
/// is also a JSON line, so that `--json` holds every run of the comparison.
fn run_logged(
    cfg: &Config,
    who: Participant,
    index: usize,
    round: usize,
) -> Result<Report, String> {
    let scenario = &cfg.compare.scenarios[index];
    eprintln!(
        "rtpp_bench compare: round {}/{}, {}, {}",
        round + 1,
        cfg.compare.rounds,
        scenario.name,
        who.label()
    );
    let result = run_one(cfg, who, index, round);
    if let Err(e) = &result {
        eprintln!("rtpp_bench compare: {} failed: {e}", who.label());
        let mut failure = Report::new("failed", format!("{} failed", who.label()));
        failure.text("relay", "relay", who.label());
        failure.text("scenario", "scenario", &scenario.name);
        failure.int("round", "round (from 1)", round as u64 + 1, "");
        failure.text("error", "error", e);
        if let Some(path) = cfg.json.as_deref() {
            // The failure is already on stderr; a JSON file that cannot
            // be written fails the next successful run loudly anyway.
            let _ = failure.append_json(path);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(label: &str) -> RelaySpec {
        RelaySpec {
            label: label.into(),
            kind: RelayKind::Rtpproxy("/x".into()),
        }
    }

    #[test]
    fn order_rotates_between_rounds() {
        let relays = [spec("a"), spec("b")];
        let flood = Scenario::parse("flood").unwrap();
        let calls = Scenario::parse("calls500").unwrap();
        let names = |round, s: &Scenario| -> Vec<String> {
            line_up(&relays, s, round)
                .iter()
                .map(|p| p.label().to_string())
                .collect()
        };
        assert_eq!(names(0, &calls), ["a", "b"]);
        assert_eq!(names(1, &calls), ["b", "a"]);
        assert_eq!(names(0, &flood), ["a", "b", "baseline"]);
        assert_eq!(names(1, &flood), ["b", "baseline", "a"]);
        assert_eq!(names(2, &flood), ["baseline", "a", "b"]);
    }

    #[test]
    fn scenarios_set_the_run() {
        let cfg = match crate::options::parse(&["compare".to_string()]) {
            Ok(crate::options::Parsed::Run(c)) => *c,
            _ => panic!("compare did not parse"),
        };
        let burst = scenario_config(&cfg, &Scenario::parse("burst").unwrap(), "x");
        assert_eq!(burst.mode, Mode::Calls);
        assert_eq!((burst.calls, burst.silence), (500, Some(DEFAULT_BURST)));
        assert_eq!((burst.duration_s, burst.warmup_s), (15, 3));
        let idle = scenario_config(&cfg, &Scenario::parse("idle2000").unwrap(), "x");
        assert_eq!((idle.calls, idle.idle_calls, idle.silence), (1, 2000, None));
        let control = scenario_config(&cfg, &Scenario::parse("control").unwrap(), "x");
        assert_eq!(control.cycle, Cycle::UpdateDelete);
        assert_eq!(control.outstanding, 16);
        let flood = scenario_config(&cfg, &Scenario::parse("flood").unwrap(), "x");
        assert_eq!(
            (flood.mode, flood.duration_s, flood.warmup_s),
            (Mode::Flood, 10, 2)
        );
        assert!(flood.json.is_none());
    }
}
