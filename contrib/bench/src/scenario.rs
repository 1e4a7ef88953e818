//! What `compare` runs: the relays, the scenarios, the rounds, and where
//! the relays and the generator run.

use crate::ctrl::CtrlSpec;
use crate::options::{opt_num, parse_num, MAX_CALLS};
use getopts::{Matches, Options};
use std::path::PathBuf;

/// How a relay under comparison is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayKind {
    /// This repository's daemon (or another build of it), started by the
    /// bench for every run.
    Rtpproxy(PathBuf),
    /// rtpengine in userspace-only mode, started by the bench for every run.
    Rtpengine(PathBuf),
    /// A relay someone else started; never restarted nor pinned by the
    /// bench.
    Addressed {
        /// Its control socket.
        ctrl: CtrlSpec,
        /// Its pid, for its CPU.
        pid: Option<i32>,
    },
}

/// One relay under comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    /// The name in the output.
    pub label: String,
    /// How it is reached.
    pub kind: RelayKind,
}

/// What a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    /// `calls` with this traffic.
    Calls {
        /// Active calls.
        calls: usize,
        /// Sessions that never send.
        idle: usize,
        /// Packet time, ms.
        ptime_ms: u64,
        /// Silences followed by bursts.
        burst: bool,
    },
    /// `flood` (and `baseline` once per round).
    Flood,
    /// `control --cycle ud --outstanding 16`.
    Control,
}

/// A named scenario of `--scenarios`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Its name as given.
    pub name: String,
    /// What it runs.
    pub kind: ScenarioKind,
}

/// Calls of the scenarios that vary something other than the call count.
const SCENARIO_CALLS: usize = 500;

impl Scenario {
    /// Parses one name: `callsN`, `ptimeMS` (500 calls), `burst` (500 calls
    /// with silences), `idleN` (1 call among N idle), `flood`, `control`.
    pub fn parse(name: &str) -> Result<Scenario, String> {
        let calls = |calls, idle, ptime_ms, burst| ScenarioKind::Calls {
            calls,
            idle,
            ptime_ms,
            burst,
        };
        let kind = if let Some(n) = name.strip_prefix("calls") {
            calls(parse_num("scenarios", n, 1, MAX_CALLS)?, 0, 20, false)
        } else if let Some(ms) = name.strip_prefix("ptime") {
            let ms = parse_num(
                "scenarios",
                ms,
                crate::packet::MIN_PTIME_MS,
                crate::packet::MAX_PTIME_MS,
            )?;
            calls(SCENARIO_CALLS, 0, ms, false)
        } else if let Some(n) = name.strip_prefix("idle") {
            calls(1, parse_num("scenarios", n, 1, MAX_CALLS)?, 20, false)
        } else {
            match name {
                "burst" => calls(SCENARIO_CALLS, 0, 20, true),
                "flood" => ScenarioKind::Flood,
                "control" => ScenarioKind::Control,
                _ => {
                    return Err(format!(
                        "--scenarios: unknown scenario {name:?} (callsN, ptimeMS, burst, idleN, \
                         flood, control)"
                    ))
                }
            }
        };
        Ok(Scenario {
            name: name.to_string(),
            kind,
        })
    }
}

/// Measured and warm-up seconds of one kind of scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Measured seconds.
    pub duration_s: u64,
    /// Seconds of load before measuring.
    pub warmup_s: u64,
}

/// Everything `compare` needs beyond the options of a single run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareConfig {
    /// Builds of this daemon, by label (`--rtpproxy`); empty: the one
    /// beside this program.
    pub rtpproxies: Vec<RelaySpec>,
    /// Leave rtpengine out.
    pub no_rtpengine: bool,
    /// rtpengine's program; `None`: looked up in PATH.
    pub rtpengine: Option<PathBuf>,
    /// Extra arguments for rtpengine.
    pub rtpengine_opts: Vec<String>,
    /// Relays given by address.
    pub addressed: Vec<RelaySpec>,
    /// CPU the started relays (and the minimal relay) are pinned to.
    pub relay_cpu: usize,
    /// CPU the generator is pinned to.
    pub gen_cpu: usize,
    /// Media port range of the started relays.
    pub ports: (u16, u16),
    /// The scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Rounds.
    pub rounds: usize,
    /// Timing of the calls scenarios.
    pub calls_timing: Timing,
    /// Timing of the flood (and baseline).
    pub flood_timing: Timing,
    /// Timing of the control scenario.
    pub control_timing: Timing,
    /// Seconds of rest after a relay starts and after it stops.
    pub settle_s: u64,
    /// The command line, for the summary.
    pub command_line: String,
    /// Where to write the summary too.
    pub summary: Option<PathBuf>,
}

/// Registers the options of `compare`.
pub fn add_options(o: &mut Options) {
    let opts: [(&str, &str, &str); 17] = [
        ("rtpproxy", "compare: [LABEL=]PATH of an rtpproxy to start for each run; repeatable for before/after builds (default: rtpproxy beside this program)", "[LABEL=]PATH"),
        ("relay", "compare: a relay started by hand, LABEL=udp:HOST:PORT[@PID] (PID for its CPU); repeatable; not pinned nor restarted by the bench", "SPEC"),
        ("rtpengine", "compare: rtpengine program (default: rtpengine in PATH, if any)", "PATH"),
        ("rtpengine-opt", "compare: extra argument for rtpengine, e.g. --num-threads=1; repeatable", "ARG"),
        ("relay-cpu", "compare: CPU the started relays and the minimal relay are pinned to (default 1)", "CPU"),
        ("gen-cpu", "compare: CPU the generator is pinned to (default 0)", "CPU"),
        ("relay-ports", "compare: media port range of the started relays (default 16384-32767, below the kernel's ephemeral ports)", "MIN-MAX"),
        ("scenarios", "compare: comma-separated list of calls100, calls500, calls1000, calls2000 (any callsN), ptime10 (500 calls at 10 ms), burst (500 calls, --silence or 2000:200), idle2000 (1 call among 2000 idle), flood, control (default calls500,calls1000,flood)", "LIST"),
        ("rounds", "compare: rounds; each runs every scenario on every relay (default 5)", "N"),
        ("calls-duration", "compare: measured seconds of calls scenarios (default 15)", "S"),
        ("calls-warmup", "compare: warm-up seconds of calls scenarios (default 3)", "S"),
        ("flood-duration", "compare: measured seconds of flood and baseline (default 10)", "S"),
        ("flood-warmup", "compare: warm-up seconds of flood and baseline (default 2)", "S"),
        ("control-duration", "compare: measured seconds of control (default 10)", "S"),
        ("control-warmup", "compare: warm-up seconds of control (default 2)", "S"),
        ("settle", "compare: seconds of rest after a relay starts and after it stops (default 1)", "S"),
        ("summary", "compare: also write the header and the table of medians to this file", "PATH"),
    ];
    for (name, help, hint) in opts {
        match name {
            "rtpproxy" | "relay" | "rtpengine-opt" => o.optmulti("", name, help, hint),
            _ => o.optopt("", name, help, hint),
        };
    }
    o.optflag("", "no-rtpengine", "compare: leave rtpengine out");
}

/// Parses the options of `compare`; `args` is the command line after the
/// program name, `online` the machine's CPUs.
pub fn parse_compare(m: &Matches, args: &[String], online: i64) -> Result<CompareConfig, String> {
    let max_cpu = usize::try_from(online.max(1) - 1).unwrap_or(0);
    let rtpproxies = m
        .opt_strs("rtpproxy")
        .iter()
        .map(|s| parse_rtpproxy(s))
        .collect::<Result<Vec<_>, _>>()?;
    let addressed = m
        .opt_strs("relay")
        .iter()
        .map(|s| parse_addressed(s))
        .collect::<Result<Vec<_>, _>>()?;
    let scenarios = match m.opt_str("scenarios") {
        Some(list) => list
            .split(',')
            .map(|s| Scenario::parse(s.trim()))
            .collect::<Result<Vec<_>, _>>()?,
        None => ["calls500", "calls1000", "flood"]
            .iter()
            .map(|s| Scenario::parse(s))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if scenarios.is_empty() || scenarios.len() > 32 {
        return Err("--scenarios: give 1 to 32 scenarios".into());
    }
    let timing = |what: &str, duration, warmup| -> Result<Timing, String> {
        Ok(Timing {
            duration_s: opt_num(m, &format!("{what}-duration"), duration, 1, 3600)?,
            warmup_s: opt_num(m, &format!("{what}-warmup"), warmup, 0, 600)?,
        })
    };
    let config = CompareConfig {
        rtpproxies,
        no_rtpengine: m.opt_present("no-rtpengine"),
        rtpengine: m.opt_str("rtpengine").map(PathBuf::from),
        rtpengine_opts: m.opt_strs("rtpengine-opt"),
        addressed,
        relay_cpu: opt_num(m, "relay-cpu", 1.min(max_cpu), 0, max_cpu)?,
        gen_cpu: opt_num(m, "gen-cpu", 0, 0, max_cpu)?,
        ports: parse_ports(m.opt_str("relay-ports").as_deref())?,
        scenarios,
        rounds: opt_num(m, "rounds", 5, 1, 100)?,
        calls_timing: timing("calls", 15, 3)?,
        flood_timing: timing("flood", 10, 2)?,
        control_timing: timing("control", 10, 2)?,
        settle_s: opt_num(m, "settle", 1, 0, 60)?,
        command_line: command_line(args),
        summary: m.opt_str("summary").map(PathBuf::from),
    };
    check_labels(&config)?;
    Ok(config)
}

/// Labels name rows of the summary, so they must differ.
fn check_labels(config: &CompareConfig) -> Result<(), String> {
    let mut seen: Vec<&str> = vec!["baseline"];
    if !config.no_rtpengine {
        seen.push("rtpengine");
    }
    for r in config.rtpproxies.iter().chain(&config.addressed) {
        if seen.contains(&r.label.as_str()) {
            return Err(format!(
                "relay label {:?} is used twice (or is reserved); give each relay its own LABEL=",
                r.label
            ));
        }
        seen.push(&r.label);
    }
    Ok(())
}

/// `[LABEL=]PATH`; without a label the file name is the label.
fn parse_rtpproxy(text: &str) -> Result<RelaySpec, String> {
    let (label, path) = match text.split_once('=') {
        Some((label, path)) if !label.contains('/') => (label.to_string(), path),
        _ => {
            let name = std::path::Path::new(text)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, text)
        }
    };
    check_label(&label, text)?;
    if path.is_empty() {
        return Err(format!("--rtpproxy {text}: no path"));
    }
    Ok(RelaySpec {
        label,
        kind: RelayKind::Rtpproxy(PathBuf::from(path)),
    })
}

/// `LABEL=udp:HOST:PORT[@PID]` (or `LABEL=unix:PATH[@PID]`).
fn parse_addressed(text: &str) -> Result<RelaySpec, String> {
    let (label, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("--relay {text}: expected LABEL=udp:HOST:PORT[@PID]"))?;
    check_label(label, text)?;
    let (ctrl, pid) = match rest.rsplit_once('@') {
        Some((ctrl, pid)) if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
            (ctrl, Some(parse_num::<i32>("relay", pid, 1, i32::MAX)?))
        }
        _ => (rest, None),
    };
    Ok(RelaySpec {
        label: label.to_string(),
        kind: RelayKind::Addressed {
            ctrl: CtrlSpec::parse(ctrl)?,
            pid,
        },
    })
}

fn check_label(label: &str, text: &str) -> Result<(), String> {
    let fits = !label.is_empty()
        && label.len() <= 32
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{text}: a label is 1 to 32 letters, digits or -_.+"
        ))
    }
}

fn parse_ports(text: Option<&str>) -> Result<(u16, u16), String> {
    let Some(text) = text else {
        return Ok((16384, 32767));
    };
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("--relay-ports {text}: expected MIN-MAX"))?;
    let low = parse_num::<u16>("relay-ports", low, 1024, 65535)?;
    let high = parse_num::<u16>("relay-ports", high, 1024, 65535)?;
    // Four ports a call: a few hundred calls at the very least.
    if high < low || high - low < 1024 {
        return Err(format!(
            "--relay-ports {text}: give at least 1024 ports, low to high"
        ));
    }
    Ok((low, high))
}

/// The command line as a shell would need it, for the summary.
fn command_line(args: &[String]) -> String {
    let quote = |a: &String| {
        let plain = !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    let program = std::env::args()
        .next()
        .unwrap_or_else(|| "rtpp_bench".into());
    std::iter::once(quote(&program))
        .chain(args.iter().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_parse() {
        let kinds: Vec<ScenarioKind> = ["calls100", "ptime10", "burst", "idle2000"]
            .iter()
            .map(|n| Scenario::parse(n).unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            vec![
                ScenarioKind::Calls {
                    calls: 100,
                    idle: 0,
                    ptime_ms: 20,
                    burst: false
                },
                ScenarioKind::Calls {
                    calls: 500,
                    idle: 0,
                    ptime_ms: 10,
                    burst: false
                },
                ScenarioKind::Calls {
                    calls: 500,
                    idle: 0,
                    ptime_ms: 20,
                    burst: true
                },
                ScenarioKind::Calls {
                    calls: 1,
                    idle: 2000,
                    ptime_ms: 20,
                    burst: false
                },
            ]
        );
        assert_eq!(Scenario::parse("flood").unwrap().kind, ScenarioKind::Flood);
        assert_eq!(
            Scenario::parse("control").unwrap().kind,
            ScenarioKind::Control
        );
        for bad in ["calls0", "calls", "ptime1", "dance", "idlex"] {
            assert!(Scenario::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relays_parse_with_labels() {
        let r = parse_rtpproxy("before=/tmp/a/rtpproxy").unwrap();
        assert_eq!(r.label, "before");
        assert_eq!(r.kind, RelayKind::Rtpproxy("/tmp/a/rtpproxy".into()));
        let r = parse_rtpproxy("/opt/x=y/rtpproxy").unwrap();
        assert_eq!(r.label, "rtpproxy");
        let r = parse_addressed("c12=udp:127.0.0.1:22222@4242").unwrap();
        assert_eq!(r.label, "c12");
        assert_eq!(
            r.kind,
            RelayKind::Addressed {
                ctrl: CtrlSpec::parse("udp:127.0.0.1:22222").unwrap(),
                pid: Some(4242)
            }
        );
        let r = parse_addressed("c=udp:127.0.0.1:22222").unwrap();
        assert!(matches!(r.kind, RelayKind::Addressed { pid: None, .. }));
        assert!(parse_addressed("udp:127.0.0.1:22222").is_err());
        assert!(parse_addressed("c=udp:10.0.0.1:22222").is_err());
        assert!(parse_addressed("a b=udp:127.0.0.1:1").is_err());
    }

    #[test]
    fn port_ranges_are_checked() {
        assert_eq!(parse_ports(None), Ok((16384, 32767)));
        assert_eq!(parse_ports(Some("30000-39999")), Ok((30000, 39999)));
        assert!(parse_ports(Some("30000-30010")).is_err());
        assert!(parse_ports(Some("40000-30000")).is_err());
        assert!(parse_ports(Some("80-9000")).is_err());
    }

    #[test]
    fn command_lines_are_quoted_for_a_shell() {
        let line = command_line(&["compare".into(), "--relay".into(), "a b".into()]);
        assert!(line.ends_with("compare --relay 'a b'"), "{line}");
    }
}
