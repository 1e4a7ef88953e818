//! The end of `compare`: a header naming the machine and the command, and
//! a Markdown table of medians per scenario and relay.

use crate::compare::RunOutcome;
use crate::options::Config;
use crate::procfs;
use crate::relayproc;
use crate::report::{Report, Value};
use crate::scenario::{CompareConfig, RelaySpec, ScenarioKind};
use std::fmt::Write as _;

/// The lines above the table: the machine, the command, the relays.
pub fn header(cfg: &Config, relays: &[RelaySpec], notes: &[String]) -> String {
    let cmp = &cfg.compare;
    let nice = if relayproc::may_renice() {
        ", nice -10"
    } else {
        ""
    };
    let mut out = format!(
        "Machine: {}; command: `{}`\n",
        procfs::machine_description(),
        cmp.command_line
    );
    let _ = writeln!(
        out,
        "Generator pinned to CPU {}{nice}; {} round(s), relays' order rotating between rounds.",
        cmp.gen_cpu, cmp.rounds
    );
    for r in relays {
        let _ = writeln!(out, "- {}", relayproc::describe(r, cmp));
    }
    for n in notes {
        let _ = writeln!(out, "- note: {n}");
    }
    out
}

/// The median of `values`; the mean of the middle two for an even count.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// One column of figures: the report key, the scale from the report's
/// unit to the table's, and the decimals shown.
struct Column {
    title: &'static str,
    key: &'static str,
    scale: f64,
    decimals: usize,
}

const LATENCY_COLUMNS: [Column; 4] = [
    Column {
        title: "CPU per relayed packet (us)",
        key: "relay_us_per_pkt",
        scale: 1.0,
        decimals: 2,
    },
    Column {
        title: "latency p50 (ms)",
        key: "latency_p50_us",
        scale: 1e-3,
        decimals: 2,
    },
    Column {
        title: "latency p99 (ms)",
        key: "latency_p99_us",
        scale: 1e-3,
        decimals: 2,
    },
    Column {
        title: "loss (%)",
        key: "loss_pct",
        scale: 1.0,
        decimals: 3,
    },
];
const FLOOD_COLUMN: Column = Column {
    title: "relayed pps",
    key: "relayed_pps",
    scale: 1.0,
    decimals: 0,
};
const CONTROL_COLUMN: Column = Column {
    title: "U+D cycles/s",
    key: "cycles_per_s",
    scale: 1.0,
    decimals: 0,
};
const BURST_COLUMNS: [Column; 2] = [
    Column {
        title: "first after silence p99 (ms)",
        key: "burst_first_p99_us",
        scale: 1e-3,
        decimals: 2,
    },
    Column {
        title: "burst packets p99 (ms)",
        key: "burst_p99_us",
        scale: 1e-3,
        decimals: 2,
    },
];

/// What the runs of one row had in common that makes its figures doubtful.
#[derive(Default)]
struct Flags {
    runs: usize,
    failed: usize,
    disturbed: usize,
    saturated: usize,
    died: usize,
    first_error: Option<String>,
    /// What the flood's verdict named as the limit, with counts.
    limits: Vec<(String, usize)>,
}

impl Flags {
    fn of(outcomes: &[&RunOutcome]) -> Flags {
        let mut f = Flags::default();
        for o in outcomes {
            match &o.result {
                Ok(r) => {
                    f.runs += 1;
                    f.disturbed += usize::from(is(r, "disturbed", true));
                    f.saturated += usize::from(is(r, "generator_saturated", true));
                    f.died += usize::from(is(r, "relay_alive", false));
                    if let Some(Value::Text(limit)) = r.value("limited_by") {
                        match f.limits.iter_mut().find(|(l, _)| l == limit) {
                            Some((_, n)) => *n += 1,
                            None => f.limits.push((limit.clone(), 1)),
                        }
                    }
                }
                Err(e) => {
                    f.failed += 1;
                    f.first_error.get_or_insert_with(|| e.clone());
                }
            }
        }
        f
    }

    /// The marks every figure of the row carries.
    fn marks(&self) -> &'static str {
        match (self.disturbed > 0, self.saturated > 0) {
            (true, true) => " *!",
            (true, false) => " *",
            (false, true) => " !",
            (false, false) => "",
        }
    }

    fn notes(&self) -> String {
        let all = self.runs + self.failed;
        let mut notes = Vec::new();
        for (count, what) in [
            (self.disturbed, "disturbed"),
            (self.saturated, "generator saturated"),
            (self.died, "relay died"),
        ] {
            if count > 0 {
                notes.push(format!("{what} {count}/{all}"));
            }
        }
        for (limit, count) in &self.limits {
            notes.push(format!("limited by {limit} {count}/{all}"));
        }
        if let Some(e) = &self.first_error {
            let short: String = e.chars().take(80).collect();
            notes.push(format!(
                "failed {}/{all}: {}",
                self.failed,
                short.replace('|', "/")
            ));
        }
        notes.join("; ")
    }
}

fn is(report: &Report, key: &str, want: bool) -> bool {
    report.value(key) == Some(&Value::Bool(want))
}

/// The median of `column` over the successful runs, marked.
fn cell(runs: &[&Report], column: &Column, marks: &str) -> String {
    let mut values: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.number(column.key))
        .map(|v| v * column.scale)
        .collect();
    format_median(&mut values, column.decimals, marks)
}

fn format_median(values: &mut [f64], decimals: usize, marks: &str) -> String {
    match median(values) {
        Some(m) => format!("{m:.decimals$}{marks}"),
        None => "-".into(),
    }
}

/// Per round, the relay's flood rate as a share of the minimal relay's
/// in the same round; the median of those.
fn share_of_baseline(outcomes: &[RunOutcome], scenario: usize, relay: &str, marks: &str) -> String {
    let pps = |o: &RunOutcome| o.result.as_ref().ok()?.number("relayed_pps");
    let mut shares: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.scenario == scenario && o.relay == relay)
        .filter_map(|o| {
            let base = outcomes
                .iter()
                .find(|b| b.scenario == scenario && b.round == o.round && b.relay == "baseline")
                .and_then(pps)?;
            let mine = pps(o)?;
            (base > 0.0).then(|| 100.0 * mine / base)
        })
        .collect();
    format_median(&mut shares, 1, marks)
}

/// The Markdown table of medians.
pub fn table(cmp: &CompareConfig, labels: &[String], outcomes: &[RunOutcome]) -> String {
    let has = |f: fn(&ScenarioKind) -> bool| cmp.scenarios.iter().any(|s| f(&s.kind));
    let flood = has(|k| *k == ScenarioKind::Flood);
    let control = has(|k| *k == ScenarioKind::Control);
    let burst = has(|k| matches!(k, ScenarioKind::Calls { burst: true, .. }));
    let mut titles = vec!["scenario", "relay", "runs"];
    titles.extend(LATENCY_COLUMNS.iter().map(|c| c.title));
    if flood {
        titles.extend([FLOOD_COLUMN.title, "flood, % of the minimal relay"]);
    }
    if control {
        titles.push(CONTROL_COLUMN.title);
    }
    if burst {
        titles.extend(BURST_COLUMNS.iter().map(|c| c.title));
    }
    titles.push("notes");
    let mut out = format!("\n| {} |\n", titles.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(titles.len()));
    for (index, scenario) in cmp.scenarios.iter().enumerate() {
        let mut rows: Vec<&str> = labels.iter().map(String::as_str).collect();
        if scenario.kind == ScenarioKind::Flood {
            rows.push("baseline");
        }
        for relay in rows {
            let mine: Vec<&RunOutcome> = outcomes
                .iter()
                .filter(|o| o.scenario == index && o.relay == relay)
                .collect();
            let flags = Flags::of(&mine);
            let marks = flags.marks();
            let ok: Vec<&Report> = mine.iter().filter_map(|o| o.result.as_ref().ok()).collect();
            let mut cells = vec![
                scenario.name.clone(),
                relay.to_string(),
                flags.runs.to_string(),
            ];
            cells.extend(LATENCY_COLUMNS.iter().map(|c| cell(&ok, c, marks)));
            if flood {
                let is_flood = scenario.kind == ScenarioKind::Flood;
                cells.push(cell(&ok, &FLOOD_COLUMN, marks));
                cells.push(match (is_flood, relay) {
                    (false, _) => "-".into(),
                    (true, "baseline") => "100".into(),
                    (true, _) => share_of_baseline(outcomes, index, relay, marks),
                });
            }
            if control {
                cells.push(cell(&ok, &CONTROL_COLUMN, marks));
            }
            if burst {
                cells.extend(BURST_COLUMNS.iter().map(|c| cell(&ok, c, marks)));
            }
            cells.push(flags.notes());
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }
    out.push_str(
        "\nMedians over the rounds' successful runs. * = at least one run was DISTURBED (other \
         work took over 5 % of the relay's or the generator's CPU); ! = the generator was \
         SATURATED in at least one run (the figure shows its limit, not the relay's). The \
         per-run reports are above (and in --json).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    fn report(pps: f64, disturbed: bool) -> Report {
        let mut r = Report::new("flood", "t".into());
        r.float("relayed_pps", "r", Some(pps), 0, "pps");
        r.float("relay_us_per_pkt", "c", Some(5.0), 3, "us");
        r.flag("disturbed", "d", disturbed);
        r
    }

    #[test]
    fn table_shows_medians_shares_and_flags() {
        let cfg = match crate::options::parse(&[
            "compare".to_string(),
            "--scenarios".to_string(),
            "flood".to_string(),
        ]) {
            Ok(crate::options::Parsed::Run(c)) => *c,
            _ => panic!("compare did not parse"),
        };
        assert_eq!(
            cfg.compare.scenarios,
            vec![Scenario::parse("flood").unwrap()]
        );
        let outcome = |relay: &str, round, result| RunOutcome {
            scenario: 0,
            relay: relay.into(),
            round,
            result,
        };
        let outcomes = vec![
            outcome("a", 0, Ok(report(90.0, false))),
            outcome("baseline", 0, Ok(report(100.0, false))),
            outcome("a", 1, Ok(report(80.0, true))),
            outcome("baseline", 1, Ok(report(200.0, false))),
            outcome("a", 2, Err("the relay did not answer".into())),
        ];
        let t = table(&cfg.compare, &["a".to_string()], &outcomes);
        let row = t.lines().find(|l| l.starts_with("| flood | a |")).unwrap();
        assert!(row.contains("| 2 |"), "{row}");
        assert!(row.contains("| 85 *"), "{row}");
        // Shares 90 % and 40 %: median 65 %.
        assert!(row.contains("| 65.0 *"), "{row}");
        assert!(row.contains("disturbed 1/3"), "{row}");
        assert!(
            row.contains("failed 1/3: the relay did not answer"),
            "{row}"
        );
        let base = t
            .lines()
            .find(|l| l.starts_with("| flood | baseline |"))
            .unwrap();
        assert!(base.contains("| 150 |"), "{base}");
    }
}
