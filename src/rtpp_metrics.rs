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
mod tests;
