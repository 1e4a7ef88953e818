//! Prometheus metrics (`--metrics ADDR:PORT`): what the daemon counts for
//! them beyond the `G` counters ([`Metrics`]: commands by verb and result,
//! histograms of ended streams' quality), and the text exposition format
//! 0.0.4 they are served in ([`render`]). The format is a few lines per
//! metric, so it is written here by hand rather than with a crate; the
//! HTTP side is in `http` (serving) and `request` (parsing, fuzzed).
//!
//! The `G` counters are rendered from [`Counters::named`], the very list
//! `G` prints, so the two views always agree; a `G` counter without a
//! name here still appears, as `rtpproxy_g_<name>`.

pub mod http;
pub mod request;

use std::fmt::Write as _;

use crate::rtpp_command::{tokenize, ErrorCode};
use crate::rtpp_state::{CounterValue, Counters};

/// The verbs `rtpproxy_commands_total` counts apart; anything else is
/// `other` (an unknown verb, an empty command, a line too long to read).
pub const VERBS: [&str; 15] = [
    "V", "VF", "U", "L", "D", "R", "C", "P", "S", "Q", "I", "G", "N", "X", "other",
];
/// Error codes counted apart (`E0` to `E31`); a higher one, which no
/// command answers today, is counted as `error`. With `ok` first, the
/// result label has a fixed, small set of values.
const ERROR_CODES: usize = 32;
const RESULTS: usize = ERROR_CODES + 2;

/// `rtpproxy_stream_mos` bucket bounds (the E-model's MOS, 1 to 4.5).
pub const MOS_BOUNDS: [f64; 9] = [1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4];
/// `rtpproxy_stream_loss_ratio` bucket bounds (lost / expected).
pub const LOSS_BOUNDS: [f64; 8] = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2];
/// `rtpproxy_stream_jitter_seconds` bucket bounds.
pub const JITTER_BOUNDS: [f64; 7] = [0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1];

/// A Prometheus histogram with fixed bounds (the `+Inf` bucket is the
/// count). Observing never allocates, so it may be called at every
/// stream end.
#[derive(Debug, Clone)]
pub struct Histogram<const N: usize> {
    bounds: [f64; N],
    /// Observations per bucket, not cumulative: `buckets[i]` holds those
    /// above `bounds[i - 1]` and at most `bounds[i]`.
    buckets: [u64; N],
    count: u64,
    sum: f64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram; `bounds` must rise.
    pub fn new(bounds: [f64; N]) -> Histogram<N> {
        Histogram {
            bounds,
            buckets: [0; N],
            count: 0,
            sum: 0.0,
        }
    }

    /// Counts one value. A NaN or infinite one is left out: it would make
    /// the sum, and every rate computed from it, meaningless for good.
    pub fn observe(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.count += 1;
        self.sum += v;
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(le, cumulative count)` for each bucket, `+Inf` (as infinity)
    /// last.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut seen = 0;
        self.bounds
            .iter()
            .zip(self.buckets.iter())
            .map(move |(&le, &n)| {
                seen += n;
                (le, seen)
            })
            .chain(std::iter::once((f64::INFINITY, self.count)))
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, "histogram", help);
        for (le, n) in self.cumulative() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", number(le));
        }
        let _ = writeln!(out, "{name}_sum {}", number(self.sum));
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// What the metrics count beyond the `G` counters. Lives in the daemon's
/// state; cheap to update from any path.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Commands by verb (index into [`VERBS`]) and result (0: ok, then
    /// `E0`...`E31`, then any higher code).
    commands: [[u64; RESULTS]; VERBS.len()],
    mos: Histogram<9>,
    loss: Histogram<8>,
    jitter: Histogram<7>,
    /// When the daemon started, in seconds since the epoch.
    started: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Nothing counted yet; the start time is now.
    pub fn new() -> Metrics {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Metrics {
            commands: [[0; RESULTS]; VERBS.len()],
            mos: Histogram::new(MOS_BOUNDS),
            loss: Histogram::new(LOSS_BOUNDS),
            jitter: Histogram::new(JITTER_BOUNDS),
            started,
        }
    }

    /// Counts one command by its verb (from the command's bytes, without
    /// cookie) and its result: `None` for any reply but an error.
    pub fn count_command(&mut self, command: &[u8], error: Option<ErrorCode>) {
        let result = match error {
            None => 0,
            Some(ErrorCode(c)) => 1 + usize::from(c).min(ERROR_CODES),
        };
        self.commands[verb_index(command)][result] += 1;
    }

    /// How many commands of `verb` (one of [`VERBS`]) got `result` (`ok`,
    /// `E<n>` or `error`).
    pub fn commands(&self, verb: &str, result: &str) -> u64 {
        let Some(v) = VERBS.iter().position(|x| *x == verb) else {
            return 0;
        };
        (0..RESULTS)
            .find(|&r| result_label(r) == result)
            .map_or(0, |r| self.commands[v][r])
    }

    /// Counts one ended stream (one direction of RTP) in the quality
    /// histograms: its MOS (`None` when there was nothing to rate, e.g. no
    /// RTP: then it is left out of `rtpproxy_stream_mos` only), the share
    /// of packets lost (lost / expected) and the interarrival jitter in
    /// seconds. Allocation-free.
    pub fn observe_ended_stream(&mut self, mos: Option<f64>, loss_ratio: f64, jitter_seconds: f64) {
        if let Some(m) = mos {
            self.mos.observe(m);
        }
        self.loss.observe(loss_ratio);
        self.jitter.observe(jitter_seconds);
    }

    /// The MOS histogram.
    pub fn mos(&self) -> &Histogram<9> {
        &self.mos
    }

    /// The loss ratio histogram.
    pub fn loss(&self) -> &Histogram<8> {
        &self.loss
    }

    /// The jitter histogram.
    pub fn jitter(&self) -> &Histogram<7> {
        &self.jitter
    }
}

/// The index in [`VERBS`] of a command's verb: its first letter, and for
/// `V` whether `F` follows, as the parser tells them apart.
fn verb_index(command: &[u8]) -> usize {
    let other = VERBS.len() - 1;
    let Some(token) = tokenize(command).next() else {
        return other;
    };
    let verb = token.first().map_or(0, u8::to_ascii_uppercase);
    let name: &[u8] = match verb {
        b'V' if token.get(1).is_some_and(|c| c.eq_ignore_ascii_case(&b'F')) => b"VF",
        _ => std::slice::from_ref(&verb),
    };
    VERBS
        .iter()
        .position(|v| v.as_bytes() == name)
        .unwrap_or(other)
}

/// The `result` label of a result index.
fn result_label(r: usize) -> String {
    match r {
        0 => "ok".into(),
        r if r <= ERROR_CODES => format!("E{}", r - 1),
        _ => "error".into(),
    }
}

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
    m.mos.render(
        out,
        "rtpproxy_stream_mos",
        "MOS (E-model) of ended RTP streams, per direction.",
    );
    m.loss.render(
        out,
        "rtpproxy_stream_loss_ratio",
        "Share of packets lost of ended RTP streams, per direction.",
    );
    m.jitter.render(
        out,
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
        number(s.metrics.started)
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
    for (verb, results) in VERBS.iter().zip(m.commands.iter()) {
        for (r, &n) in results.iter().enumerate() {
            if r == 0 || n > 0 {
                let result = result_label(r);
                let _ = writeln!(out, "{name}{{verb=\"{verb}\",result=\"{result}\"}} {n}");
            }
        }
    }
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
