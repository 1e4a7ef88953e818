//! Prometheus metrics (`--metrics ADDR:PORT`): the text exposition format
//! 0.0.4 ([`render`]) of the `G` counters and of what the daemon counts
//! for the metrics alone (`rtpp_state::Metrics`: commands by verb and
//! result, histograms of ended streams' quality). The format is a few
//! lines per metric, so it is written here by hand rather than with a
//! crate; the HTTP side is in `http` (serving) and `request` (parsing,
//! fuzzed).
//!
//! The `G` counters are rendered from [`Counters::named`], the very list
//! `G` prints, so the two views always agree; a `G` counter without a
//! name here still appears, as `rtpproxy_g_<name>`.

pub mod http;
pub mod request;

use std::fmt::Write as _;

use crate::rtpp_state::{CommandResult, CounterValue, Counters, Histogram, Metrics};

/// Everything one scrape shows.
pub struct Snapshot<'a> {
    /// The `G` counters, live sessions' packets included (as `G` sums them).
    pub counters: &'a Counters,
    /// Live sessions.
    pub active: usize,
    /// SIGUSR1 was received.
    pub draining: bool,
    pub metrics: &'a Metrics,
}

/// How a `G` counter is shown: its metric name, type and help text.
struct FromG {
    g: &'static str,
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn counter(g: &'static str, name: &'static str, help: &'static str) -> FromG {
    FromG {
        g,
        name,
        kind: "counter",
        help,
    }
}

/// The `G` counters by their metric names. Left out on purpose:
/// `ncmds_rcvd`, `ncmds_succd` and `ncmds_errs` (the sums of
/// `rtpproxy_commands_total` over all, `ok` and the error results) and
/// `pps_in` (a rate Prometheus computes itself with `rate()`).
const FROM_G: &[FromG] = &[
    counter(
        "nsess_created",
        "rtpproxy_sessions_created_total",
        "Sessions created.",
    ),
    counter(
        "nsess_destroyed",
        "rtpproxy_sessions_destroyed_total",
        "Sessions ended, for any reason.",
    ),
    counter(
        "nsess_timeout",
        "rtpproxy_sessions_timeout_total",
        "Sessions ended by the idle timeout.",
    ),
    FromG {
        g: "nsess_active",
        name: "rtpproxy_sessions_active",
        kind: "gauge",
        help: "Sessions now active.",
    },
    counter(
        "nsess_complete",
        "rtpproxy_sessions_complete_total",
        "Sessions whose second leg got its port.",
    ),
    counter(
        "nsess_nortp",
        "rtpproxy_sessions_no_rtp_total",
        "Complete sessions that ended with no RTP.",
    ),
    counter(
        "nsess_owrtp",
        "rtpproxy_sessions_oneway_rtp_total",
        "Complete sessions that ended with RTP one way only.",
    ),
    counter(
        "nsess_nortcp",
        "rtpproxy_sessions_no_rtcp_total",
        "Complete sessions that ended with no RTCP.",
    ),
    counter(
        "nsess_owrtcp",
        "rtpproxy_sessions_oneway_rtcp_total",
        "Complete sessions that ended with RTCP one way only.",
    ),
    counter(
        "nplrs_created",
        "rtpproxy_players_created_total",
        "Prompts started.",
    ),
    counter(
        "nplrs_destroyed",
        "rtpproxy_players_destroyed_total",
        "Prompts stopped or finished.",
    ),
    counter(
        "npkts_rcvd",
        "rtpproxy_packets_received_total",
        "Packets received from the parties, live sessions included.",
    ),
    counter(
        "npkts_played",
        "rtpproxy_packets_played_total",
        "Packets of prompts sent.",
    ),
    counter(
        "npkts_relayed",
        "rtpproxy_packets_relayed_total",
        "Packets relayed to the other party.",
    ),
    counter(
        "npkts_resizer_in",
        "rtpproxy_resizer_packets_in_total",
        "Packets into re-packetizers.",
    ),
    counter(
        "npkts_resizer_out",
        "rtpproxy_resizer_packets_out_total",
        "Packets out of re-packetizers.",
    ),
    counter(
        "npkts_resizer_discard",
        "rtpproxy_resizer_packets_discarded_total",
        "Packets re-packetizers discarded.",
    ),
    counter(
        "npkts_discard",
        "rtpproxy_packets_dropped_total",
        "Packets received and not relayed.",
    ),
    counter(
        "total_duration",
        "rtpproxy_sessions_duration_seconds_total",
        "Seconds ended sessions lived, summed.",
    ),
    counter(
        "ncmds_rcvd_ndups",
        "rtpproxy_commands_repeated_total",
        "UDP commands answered from the reply cache, not run again.",
    ),
    counter(
        "ncmds_repld",
        "rtpproxy_replies_sent_total",
        "Replies sent to control commands.",
    ),
    counter(
        "nhep_sent",
        "rtpproxy_hep_packets_sent_total",
        "HEP packets sent to the --hep collector.",
    ),
    counter(
        "nhep_dropped",
        "rtpproxy_hep_packets_dropped_total",
        "HEP packets not sent: the send failed, or the RTCP was not an SR or RR.",
    ),
    counter(
        "nlog_dropped",
        "rtpproxy_log_lines_dropped_total",
        "Log lines dropped because syslog could not take them at once.",
    ),
    counter(
        "rtpa_nsent",
        "rtpproxy_rtpa_packets_sent_total",
        "RTP packets ended streams' parties sent, by sequence numbers.",
    ),
    counter(
        "rtpa_nrcvd",
        "rtpproxy_rtpa_packets_received_total",
        "RTP packets of ended streams received.",
    ),
    counter(
        "rtpa_ndups",
        "rtpproxy_rtpa_packets_duplicate_total",
        "Duplicate RTP packets of ended streams.",
    ),
    counter(
        "rtpa_nlost",
        "rtpproxy_rtpa_packets_lost_total",
        "RTP packets of ended streams lost before the relay.",
    ),
    counter(
        "rtpa_perrs",
        "rtpproxy_rtpa_parse_errors_total",
        "Packets of ended RTP streams that did not parse as RTP.",
    ),
    counter(
        "nstreams_mos_good",
        "rtpproxy_streams_mos_good_total",
        "Directions of ended streams with an E-model R of 80 or more.",
    ),
    counter(
        "nstreams_mos_fair",
        "rtpproxy_streams_mos_fair_total",
        "Directions of ended streams with an E-model R from 70 to 80.",
    ),
    counter(
        "nstreams_mos_poor",
        "rtpproxy_streams_mos_poor_total",
        "Directions of ended streams with an E-model R from 60 to 70.",
    ),
    counter(
        "nstreams_mos_bad",
        "rtpproxy_streams_mos_bad_total",
        "Directions of ended streams with an E-model R below 60.",
    ),
    counter(
        "nrtcp_perrs",
        "rtpproxy_rtcp_parse_errors_total",
        "RTCP packets of ended streams that failed the check.",
    ),
];

/// `G` counters with no metric, by design (see [`FROM_G`]).
const NOT_FROM_G: [&str; 4] = ["ncmds_rcvd", "ncmds_succd", "ncmds_errs", "pps_in"];

/// Writes the exposition text (format 0.0.4) of `s` into `out`.
pub fn render(out: &mut String, s: &Snapshot<'_>) {
    out.clear();
    for (g, value) in s.counters.named(s.active) {
        if NOT_FROM_G.contains(&g) {
            continue;
        }
        match FROM_G.iter().find(|m| m.g == g) {
            Some(m) => {
                header(out, m.name, m.kind, m.help);
                let _ = writeln!(out, "{} {}", m.name, value_text(value));
            }
            None => {
                let name = format!("rtpproxy_g_{}", sanitize(g));
                let help = format!("The G counter {name}.");
                header(out, &name, "untyped", &help);
                let _ = writeln!(out, "{name} {}", value_text(value));
            }
        }
    }
    render_daemon(out, s);
    render_commands(out, s.metrics);
    let m = s.metrics;
    histogram(
        out,
        m.mos(),
        "rtpproxy_stream_mos",
        "MOS (E-model) of ended RTP streams, per direction.",
    );
    histogram(
        out,
        m.loss(),
        "rtpproxy_stream_loss_ratio",
        "Share of packets lost of ended RTP streams, per direction.",
    );
    histogram(
        out,
        m.jitter(),
        "rtpproxy_stream_jitter_seconds",
        "Interarrival jitter of ended RTP streams, per direction.",
    );
}

/// The daemon's own gauges: version, start time, drain.
fn render_daemon(out: &mut String, s: &Snapshot<'_>) {
    header(
        out,
        "rtpproxy_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "rtpproxy_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        out,
        "rtpproxy_start_time_seconds",
        "gauge",
        "When the daemon started, in seconds since the epoch.",
    );
    let _ = writeln!(
        out,
        "rtpproxy_start_time_seconds {}",
        number(s.metrics.started())
    );
    header(
        out,
        "rtpproxy_draining",
        "gauge",
        "1 while draining (SIGUSR1): no new sessions.",
    );
    let _ = writeln!(out, "rtpproxy_draining {}", u8::from(s.draining));
}

/// `rtpproxy_commands_total`: every verb's `ok`, and the error results
/// that happened.
fn render_commands(out: &mut String, m: &Metrics) {
    let name = "rtpproxy_commands_total";
    header(
        out,
        name,
        "counter",
        "Control commands run, by verb and result (ok or the error code).",
    );
    for (verb, result, n) in m.command_counts() {
        if result == CommandResult::Ok || n > 0 {
            let _ = writeln!(out, "{name}{{verb=\"{verb}\",result=\"{result}\"}} {n}");
        }
    }
}

/// A histogram's buckets (cumulative, `+Inf` last), sum and count.
fn histogram<const N: usize>(out: &mut String, h: &Histogram<N>, name: &str, help: &str) {
    header(out, name, "histogram", help);
    for (le, n) in h.cumulative() {
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", number(le));
    }
    let _ = writeln!(out, "{name}_sum {}", number(h.sum()));
    let _ = writeln!(out, "{name}_count {}", h.count());
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn value_text(v: CounterValue) -> String {
    match v {
        CounterValue::Int(n) => n.to_string(),
        CounterValue::Float(f) => number(f),
    }
}

/// A float as the exposition format spells it (`+Inf`, `NaN`; Rust's
/// `inf` would not parse).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

/// A metric name's characters: letters, digits and `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtpp_command::ErrorCode;
    use crate::rtpp_state::{LOSS_BOUNDS, VERBS};
    use std::collections::BTreeMap;

    fn snapshot_text(counters: &Counters, active: usize, metrics: &Metrics) -> String {
        let mut out = String::new();
        render(
            &mut out,
            &Snapshot {
                counters,
                active,
                draining: false,
                metrics,
            },
        );
        out
    }

    /// Checks the text against the exposition format 0.0.4 (HELP and TYPE
    /// once per family and before its samples, names and labels well formed,
    /// every value a float, no series twice, lines ending in `\n`) and
    /// returns every series with its value.
    fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
        assert!(text.ends_with('\n'));
        let valid_name = |n: &str| {
            !n.is_empty()
                && !n.starts_with(|c: char| c.is_ascii_digit())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = Vec::new();
        let mut series = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP text");
                assert!(!helped.contains(&name.to_string()), "HELP twice: {name}");
                helped.push(name.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE kind");
                assert!(valid_name(name), "{name}");
                assert!(["counter", "gauge", "histogram", "untyped"].contains(&kind));
                assert!(
                    typed.insert(name.into(), kind.into()).is_none(),
                    "TYPE twice: {name}"
                );
                continue;
            }
            let (key, value) = line.rsplit_once(' ').expect("sample value");
            let name = key.split('{').next().unwrap_or(key);
            assert!(valid_name(name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "sample before its TYPE: {line}");
            assert!(helped.contains(&family.to_string()), "no HELP: {line}");
            if let Some(labels) = key.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                    for pair in labels[1..labels.len() - 1].split(',') {
                        let (l, v) = pair.split_once('=').expect("label=value");
                        assert!(
                            valid_name(l) && v.starts_with('"') && v.ends_with('"'),
                            "{line}"
                        );
                    }
                }
            }
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("not a float: {line}")),
            };
            assert!(series.insert(key.to_string(), v).is_none(), "twice: {key}");
        }
        series
    }

    #[test]
    fn histogram_buckets_count_at_and_between_bounds() {
        let mut h = Histogram::new(LOSS_BOUNDS);
        for v in [
            0.0,
            0.0,
            0.001,
            0.003,
            0.2,
            0.5,
            f64::NAN,
            f64::INFINITY,
            -0.01,
        ] {
            h.observe(v);
        }
        // NaN and infinity are left out; a negative ratio (duplicates) is in
        // the first bucket.
        assert_eq!(h.count(), 7);
        assert!((h.sum() - 0.694).abs() < 1e-12);
        let got: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(
            got,
            [
                (0.0, 3),
                (0.001, 4),
                (0.005, 5),
                (0.01, 5),
                (0.02, 5),
                (0.05, 5),
                (0.1, 5),
                (0.2, 6),
                (f64::INFINITY, 7)
            ]
        );
    }

    #[test]
    fn ended_streams_render_as_histograms() {
        let mut m = Metrics::new();
        m.observe_ended_stream(Some(4.3), 0.0, 0.004);
        m.observe_ended_stream(Some(2.2), 0.04, 0.025);
        m.observe_ended_stream(None, 1.0, 0.5);
        let text = snapshot_text(&Counters::default(), 0, &m);
        let s = parse_exposition(&text);
        let mos = |le: &str| s[&format!("rtpproxy_stream_mos_bucket{{le=\"{le}\"}}")];
        assert_eq!(
            (mos("1"), mos("2"), mos("2.5"), mos("4.2")),
            (0.0, 0.0, 1.0, 1.0)
        );
        assert_eq!((mos("4.4"), mos("+Inf")), (2.0, 2.0));
        assert_eq!(s["rtpproxy_stream_mos_count"], 2.0);
        assert!((s["rtpproxy_stream_mos_sum"] - 6.5).abs() < 1e-9);
        let loss = |le: &str| s[&format!("rtpproxy_stream_loss_ratio_bucket{{le=\"{le}\"}}")];
        assert_eq!(
            (loss("0"), loss("0.02"), loss("0.05"), loss("0.2")),
            (1.0, 1.0, 2.0, 2.0)
        );
        assert_eq!(loss("+Inf"), 3.0);
        let jitter = |le: &str| s[&format!("rtpproxy_stream_jitter_seconds_bucket{{le=\"{le}\"}}")];
        assert_eq!(
            (jitter("0.001"), jitter("0.005"), jitter("0.03")),
            (0.0, 1.0, 2.0)
        );
        assert_eq!((jitter("0.1"), jitter("+Inf")), (2.0, 3.0));
        assert_eq!(s["rtpproxy_stream_jitter_seconds_count"], 3.0);
        // The lines come in the order Prometheus expects: buckets rising,
        // then sum and count.
        let at = |needle: &str| text.find(needle).unwrap_or(usize::MAX);
        assert!(at("mos_bucket{le=\"1\"}") < at("mos_bucket{le=\"+Inf\"}"));
        assert!(at("mos_bucket{le=\"+Inf\"}") < at("mos_sum") && at("mos_sum") < at("mos_count"));
    }

    #[test]
    fn counters_show_what_g_shows() {
        let c = Counters {
            sessions_created: 7,
            sessions_destroyed: 5,
            sessions_timeout: 1,
            packets_received: 1000,
            packets_relayed: 990,
            packets_dropped: 10,
            packets_played: 3,
            total_duration: 12.5,
            ..Counters::default()
        };
        let s = parse_exposition(&snapshot_text(&c, 2, &Metrics::new()));
        for (name, value) in [
            ("rtpproxy_sessions_created_total", 7.0),
            ("rtpproxy_sessions_destroyed_total", 5.0),
            ("rtpproxy_sessions_timeout_total", 1.0),
            ("rtpproxy_sessions_active", 2.0),
            ("rtpproxy_packets_received_total", 1000.0),
            ("rtpproxy_packets_relayed_total", 990.0),
            ("rtpproxy_packets_dropped_total", 10.0),
            ("rtpproxy_packets_played_total", 3.0),
            ("rtpproxy_sessions_duration_seconds_total", 12.5),
            ("rtpproxy_draining", 0.0),
        ] {
            assert_eq!(s.get(name), Some(&value), "{name}");
        }
        assert!(s.contains_key(&format!(
            "rtpproxy_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(s.contains_key("rtpproxy_log_lines_dropped_total"));
        // Every G counter is either shown under its name or left out on
        // purpose; none falls back to the generic name today.
        for (g, _) in c.named(0) {
            let known = FROM_G.iter().any(|m| m.g == g) || NOT_FROM_G.contains(&g);
            assert!(known, "G counter {g} has no metric name");
        }
        assert!(!s.keys().any(|k| k.starts_with("rtpproxy_g_")));
        // Every metric of the table is in the text, with G's value.
        for (g, v) in c.named(2) {
            if let Some(m) = FROM_G.iter().find(|m| m.g == g) {
                let want: f64 = value_text(v).parse().unwrap();
                assert_eq!(s[m.name], want, "{g}");
            }
        }
    }

    #[test]
    fn commands_are_counted_by_verb_and_result() {
        let mut m = Metrics::new();
        m.count_command(b"U c1 127.0.0.1 4000 f", None);
        m.count_command(b"  Uc0,8 c1 127.0.0.1 4000 f", None);
        m.count_command(b"L c1 127.0.0.1 4000 f t", Some(ErrorCode::NOT_FOUND.0));
        m.count_command(b"vf 20040107", None);
        m.count_command(b"V", None);
        m.count_command(b"Z what", Some(ErrorCode::UNKNOWN.0));
        m.count_command(b"", Some(ErrorCode::EMPTY.0));
        m.count_command(b"D c f", Some(200));
        assert_eq!(m.commands("U", CommandResult::Ok), 2);
        assert_eq!(m.commands("L", CommandResult::Error(8)), 1);
        assert_eq!(
            (
                m.commands("VF", CommandResult::Ok),
                m.commands("V", CommandResult::Ok)
            ),
            (1, 1)
        );
        assert_eq!(
            (
                m.commands("other", CommandResult::Error(3)),
                m.commands("other", CommandResult::Error(0))
            ),
            (1, 1)
        );
        assert_eq!(m.commands("D", CommandResult::OtherError), 1);
        let s = parse_exposition(&snapshot_text(&Counters::default(), 0, &m));
        let key =
            |v: &str, r: &str| format!("rtpproxy_commands_total{{verb=\"{v}\",result=\"{r}\"}}");
        assert_eq!(s[&key("U", "ok")], 2.0);
        assert_eq!(s[&key("L", "E8")], 1.0);
        assert_eq!(s[&key("D", "error")], 1.0);
        // Every verb has its ok series from the start; an error only once seen.
        for v in VERBS {
            assert!(s.contains_key(&key(v, "ok")), "{v}");
        }
        assert!(!s.contains_key(&key("U", "E8")));
        let series = s
            .keys()
            .filter(|k| k.starts_with("rtpproxy_commands_total"))
            .count();
        assert_eq!(series, VERBS.len() + 4);
    }

    #[test]
    fn floats_are_spelled_as_prometheus_reads_them() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.005), "0.005");
        assert_eq!(number(4.0), "4");
        assert_eq!(sanitize("npkts-x.y"), "npkts_x_y");
    }
}
