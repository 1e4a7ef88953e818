//! The daemon-wide state `main` owns and the rest borrows: the poll sets,
//! the media port table, the counters of the `G` command and those of the
//! metrics, the drain flag, and where ended sessions are reported
//! (accounting file, notification socket). The session table itself is `rtpp_session::Sessions`.

use crate::rtpp_account::AccountFile;
use crate::rtpp_analyzer::RtpaStats;
use crate::rtpp_hep::HepSender;
use crate::rtpp_mos::Band;
use crate::rtpp_network::PortTable;
use crate::rtpp_notify::Notifier;
use crate::rtpp_poll::Poller;
use crate::rtpp_quality::QualityReport;
use crate::rtpp_util::Random;

/// Daemon-wide counters (the `G` command): ended sessions' packets and RTP
/// analysis, and commands. Live sessions' packets are added when `G` asks;
/// their analysis is not (the `rtpa_*` sums count a stream once it ended,
/// as in the classic daemon).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub sessions_created: u64,
    pub sessions_destroyed: u64,
    pub sessions_timeout: u64,
    /// Sessions whose second leg got its port.
    pub sessions_complete: u64,
    /// Complete sessions that ended with no RTP, or RTP one way only; the
    /// same for RTCP.
    pub sessions_no_rtp: u64,
    pub sessions_oneway_rtp: u64,
    pub sessions_no_rtcp: u64,
    pub sessions_oneway_rtcp: u64,
    /// Seconds ended sessions lived, summed.
    pub total_duration: f64,
    pub players_created: u64,
    pub players_destroyed: u64,
    pub packets_received: u64,
    pub packets_relayed: u64,
    pub packets_dropped: u64,
    pub packets_played: u64,
    pub resizer_in: u64,
    pub resizer_out: u64,
    pub resizer_discard: u64,
    pub commands_received: u64,
    pub commands_succeeded: u64,
    pub commands_failed: u64,
    /// UDP commands answered from the reply cache, not run again.
    pub commands_repeated: u64,
    pub replies_sent: u64,
    /// `npkts_rcvd` per second over the last second.
    pub packets_in_rate: f64,
    /// Sums of the RTP analysis of ended sessions, both directions.
    pub rtpa: RtpaStats,
    /// Ended directions that carried RTP, by the band of their MOS.
    pub mos_bands: MosBands,
    /// RTCP compounds of ended sessions that failed the check.
    pub rtcp_errors: u64,
    /// HEP packets sent to the `--hep` collector, and those not sent;
    /// the sender keeps them, `G` copies them here (see
    /// [`Daemon::counters_with_hep`]).
    pub hep_sent: u64,
    pub hep_dropped: u64,
}

/// Ended directions by MOS band (`rtpp_mos::Band`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MosBands {
    pub good: u64,
    pub fair: u64,
    pub poor: u64,
    pub bad: u64,
}

impl MosBands {
    /// Counts one direction of rating `r`.
    pub fn add(&mut self, r: f64) {
        match Band::of(r) {
            Band::Good => self.good += 1,
            Band::Fair => self.fair += 1,
            Band::Poor => self.poor += 1,
            Band::Bad => self.bad += 1,
        }
    }
}

/// A counter's value as `G` prints it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CounterValue {
    Int(u64),
    /// Printed with six decimals, as the classic daemons print floats.
    Float(f64),
}

impl std::fmt::Display for CounterValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CounterValue::Int(v) => write!(f, "{v}"),
            CounterValue::Float(v) => write!(f, "{v:.6}"),
        }
    }
}

/// Packets of one session, as counted into [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketCounts {
    pub received: u64,
    pub relayed: u64,
    pub dropped: u64,
    pub played: u64,
    /// Packets into and out of re-packetizers, and those they discarded.
    pub resizer_in: u64,
    pub resizer_out: u64,
    pub resizer_discard: u64,
    /// Prompts started, and stopped or finished.
    pub players_created: u64,
    pub players_destroyed: u64,
}

impl Counters {
    /// Adds a session's packets.
    pub fn add_packets(&mut self, p: PacketCounts) {
        self.packets_received += p.received;
        self.packets_relayed += p.relayed;
        self.packets_dropped += p.dropped;
        self.packets_played += p.played;
        self.resizer_in += p.resizer_in;
        self.resizer_out += p.resizer_out;
        self.resizer_discard += p.resizer_discard;
        self.players_created += p.players_created;
        self.players_destroyed += p.players_destroyed;
    }

    /// Every counter by its `G` name (rtpproxy 3.x's names, and ours:
    /// `nsess_active`, `nhep_sent`, `nhep_dropped`, `nlog_dropped`); `active` is the live session count.
    /// The `rtpa_*` sums follow the classic counters, and the quality
    /// totals (ours) come last.
    pub fn named(&self, active: usize) -> Vec<(&'static str, CounterValue)> {
        use CounterValue::{Float, Int};
        vec![
            ("nsess_created", Int(self.sessions_created)),
            ("nsess_destroyed", Int(self.sessions_destroyed)),
            ("nsess_timeout", Int(self.sessions_timeout)),
            ("nsess_active", Int(active as u64)),
            ("nsess_complete", Int(self.sessions_complete)),
            ("nsess_nortp", Int(self.sessions_no_rtp)),
            ("nsess_owrtp", Int(self.sessions_oneway_rtp)),
            ("nsess_nortcp", Int(self.sessions_no_rtcp)),
            ("nsess_owrtcp", Int(self.sessions_oneway_rtcp)),
            ("nplrs_created", Int(self.players_created)),
            ("nplrs_destroyed", Int(self.players_destroyed)),
            ("npkts_rcvd", Int(self.packets_received)),
            ("npkts_played", Int(self.packets_played)),
            ("npkts_relayed", Int(self.packets_relayed)),
            ("npkts_resizer_in", Int(self.resizer_in)),
            ("npkts_resizer_out", Int(self.resizer_out)),
            ("npkts_resizer_discard", Int(self.resizer_discard)),
            ("npkts_discard", Int(self.packets_dropped)),
            ("total_duration", Float(self.total_duration)),
            ("ncmds_rcvd", Int(self.commands_received)),
            ("ncmds_rcvd_ndups", Int(self.commands_repeated)),
            ("ncmds_succd", Int(self.commands_succeeded)),
            ("ncmds_errs", Int(self.commands_failed)),
            ("ncmds_repld", Int(self.replies_sent)),
            ("pps_in", Float(self.packets_in_rate)),
            ("nhep_sent", Int(self.hep_sent)),
            ("nhep_dropped", Int(self.hep_dropped)),
            ("nlog_dropped", Int(crate::rtpp_log::dropped_lines())),
            ("rtpa_nsent", Int(self.rtpa.nsent)),
            ("rtpa_nrcvd", Int(self.rtpa.nrcvd)),
            ("rtpa_ndups", Int(self.rtpa.ndups)),
            ("rtpa_nlost", Int(self.rtpa.nlost)),
            ("rtpa_perrs", Int(self.rtpa.perrs)),
            ("nstreams_mos_good", Int(self.mos_bands.good)),
            ("nstreams_mos_fair", Int(self.mos_bands.fair)),
            ("nstreams_mos_poor", Int(self.mos_bands.poor)),
            ("nstreams_mos_bad", Int(self.mos_bands.bad)),
            ("nrtcp_perrs", Int(self.rtcp_errors)),
        ]
    }
}

/// The share of the CPU the daemon used, smoothed over the last seconds
/// (`I l`): sampled once a second from getrusage(2).
#[derive(Debug, Default)]
pub struct LoadMeter {
    last: Option<(std::time::Instant, std::time::Duration)>,
    average: f64,
}

impl LoadMeter {
    /// Takes one sample; call it once a second.
    pub fn sample(&mut self, now: std::time::Instant) {
        use nix::sys::resource::{getrusage, UsageWho};
        let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
            return;
        };
        let cpu = |t: nix::sys::time::TimeVal| {
            std::time::Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().max(0) as u32) * 1000)
        };
        let used = cpu(usage.user_time()) + cpu(usage.system_time());
        if let Some((then, before)) = self.last {
            let wall = now.saturating_duration_since(then).as_secs_f64();
            if wall > 0.0 {
                let share = used.saturating_sub(before).as_secs_f64() / wall;
                // Smoothed like a load average over about ten samples.
                self.average += (share - self.average) / 10.0;
            }
        }
        self.last = Some((now, used));
    }

    pub fn average(&self) -> f64 {
        self.average
    }
}

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

/// A histogram with fixed bounds, as Prometheus has them (the `+Inf`
/// bucket is the count). Observing never allocates, so it may be called
/// at every stream end.
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
}

/// A command's result as `rtpproxy_commands_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandResult {
    /// Any reply but an error.
    Ok,
    /// `E<code>`, for the codes counted apart.
    Error(u8),
    /// A higher error code.
    OtherError,
}

impl CommandResult {
    fn index(self) -> usize {
        match self {
            CommandResult::Ok => 0,
            CommandResult::Error(c) if usize::from(c) < ERROR_CODES => 1 + usize::from(c),
            CommandResult::Error(_) | CommandResult::OtherError => RESULTS - 1,
        }
    }

    fn of_index(i: usize) -> CommandResult {
        match i {
            0 => CommandResult::Ok,
            i if i <= ERROR_CODES => CommandResult::Error((i - 1) as u8),
            _ => CommandResult::OtherError,
        }
    }
}

impl std::fmt::Display for CommandResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandResult::Ok => f.write_str("ok"),
            CommandResult::Error(c) => write!(f, "E{c}"),
            CommandResult::OtherError => f.write_str("error"),
        }
    }
}

/// What the Prometheus metrics (`--metrics`, `rtpp_metrics`) count beyond
/// the [`Counters`]: commands by verb and result, and histograms of the
/// quality of ended streams. Cheap to update from any path.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Commands by verb (index into [`VERBS`]) and result
    /// ([`CommandResult::index`]).
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
    /// cookie) and its result: the error code answered, or `None` for any
    /// other reply.
    pub fn count_command(&mut self, command: &[u8], error: Option<u8>) {
        let result = error.map_or(CommandResult::Ok, CommandResult::Error);
        self.commands[verb_index(command)][result.index()] += 1;
    }

    /// How many commands of `verb` (one of [`VERBS`]) got `result`.
    pub fn commands(&self, verb: &str, result: CommandResult) -> u64 {
        VERBS
            .iter()
            .position(|v| *v == verb)
            .map_or(0, |v| self.commands[v][result.index()])
    }

    /// Every (verb, result, count), verbs in the order of [`VERBS`], `ok`
    /// first.
    pub fn command_counts(&self) -> impl Iterator<Item = (&'static str, CommandResult, u64)> + '_ {
        VERBS
            .iter()
            .zip(self.commands.iter())
            .flat_map(|(&verb, results)| {
                results
                    .iter()
                    .enumerate()
                    .map(move |(i, &n)| (verb, CommandResult::of_index(i), n))
            })
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

    /// When the daemon started, in seconds since the epoch.
    pub fn started(&self) -> f64 {
        self.started
    }
}

/// The index in [`VERBS`] of a command's verb: the first letter of its
/// first word, and for `V` whether `F` follows, as the parser tells them
/// apart.
fn verb_index(command: &[u8]) -> usize {
    let other = VERBS.len() - 1;
    let mut word = command
        .iter()
        .skip_while(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'));
    let Some(verb) = word.next().map(u8::to_ascii_uppercase) else {
        return other;
    };
    let name: &[u8] = match verb {
        b'V' if word.next().is_some_and(|c| c.eq_ignore_ascii_case(&b'F')) => b"VF",
        _ => std::slice::from_ref(&verb),
    };
    VERBS
        .iter()
        .position(|v| v.as_bytes() == name)
        .unwrap_or(other)
}

/// Everything daemon-wide but the session table.
pub struct Daemon {
    /// Every socket the loop polls, control and media.
    pub poller: Poller,
    /// The media ports of `-m`/`-M`.
    pub ports: PortTable,
    pub counters: Counters,
    /// Graceful drain (SIGUSR1): no new sessions; see `Reply::Silent`.
    pub draining: bool,
    /// `-A`: where each ended session's JSON record is appended.
    pub accounting: Option<AccountFile>,
    /// `-n`: where timed-out sessions are announced.
    pub notifier: Option<Notifier>,
    /// `--hep`: where quality reports (and, with `--hep-rtcp`, RTCP) go.
    pub hep: Option<HepSender>,
    /// SSRCs, sequence numbers and timestamps of generated streams.
    pub rng: Random,
    /// `I l`'s average load.
    pub load: LoadMeter,
    /// What `--metrics` shows beyond the counters: commands by verb and
    /// result, histograms of ended streams' quality.
    pub metrics: Metrics,
    /// `npkts_rcvd` at the last once-a-second sample, for `pps_in`.
    received_before: Option<(std::time::Instant, u64)>,
}

impl Daemon {
    /// The state of a daemon that has not relayed anything yet.
    pub fn new(poller: Poller, ports: PortTable) -> Daemon {
        Daemon {
            poller,
            ports,
            counters: Counters::default(),
            draining: false,
            accounting: None,
            notifier: None,
            hep: None,
            rng: Random::new(),
            load: LoadMeter::default(),
            metrics: Metrics::new(),
            received_before: None,
        }
    }

    /// A stream ended (for any reason, with its accounting record): the
    /// quality of both its directions, what the caller and what the callee
    /// sent, under the session's Call-ID and tag (the creating from-tag,
    /// media number included). Called once per ended stream, never for a
    /// session a failed `U` discarded. Counts the `G` totals and the
    /// metrics' histograms (a direction that carried no RTP was not
    /// measured and is left out of them).
    pub fn on_stream_end(&mut self, call_id: &[u8], tag: &[u8], report: &QualityReport) {
        // The stream's names are for consumers that report per call; the
        // totals here have no per-call labels, and the HEP report is built
        // from the accounting record, which carries them.
        let _ = (call_id, tag);
        for d in [&report.caller, &report.callee] {
            self.counters.rtcp_errors += d.rtcp_errors;
            if d.received == 0 {
                continue;
            }
            if let Some(r) = d.r_factor {
                self.counters.mos_bands.add(r);
            }
            // No jitter yet (a dynamic clock still being learned): NaN,
            // which the histogram leaves out.
            let jitter = d.jitter_ms.map_or(f64::NAN, |j| j / 1000.0);
            self.metrics
                .observe_ended_stream(d.mos, d.loss_pct / 100.0, jitter);
        }
    }

    /// `counters` with the HEP sender's counts filled in (`G`).
    pub fn counters_with_hep(&self, mut counters: Counters) -> Counters {
        if let Some(hep) = &self.hep {
            counters.hep_sent = hep.sent();
            counters.hep_dropped = hep.dropped();
        }
        counters
    }

    /// The once-a-second samples: the load and the rate of packets in;
    /// `received` counts every packet received so far, live sessions'
    /// included.
    pub fn sample_second(&mut self, received: u64, now: std::time::Instant) {
        self.load.sample(now);
        if let Some((then, before)) = self.received_before {
            let wall = now.saturating_duration_since(then).as_secs_f64();
            if wall > 0.0 {
                self.counters.packets_in_rate = received.saturating_sub(before) as f64 / wall;
            }
        }
        self.received_before = Some((now, received));
    }
}

// Carried across a hand-over (doc/PROTOCOL.md, "Hand-over"), so `G` and
// the metrics go on counting from where the old process stopped.
crate::rtpp_handover::wire::carry_fields!(MosBands {
    good,
    fair,
    poor,
    bad
});
crate::rtpp_handover::wire::carry_fields!(Counters {
    sessions_created,
    sessions_destroyed,
    sessions_timeout,
    sessions_complete,
    sessions_no_rtp,
    sessions_oneway_rtp,
    sessions_no_rtcp,
    sessions_oneway_rtcp,
    total_duration,
    players_created,
    players_destroyed,
    packets_received,
    packets_relayed,
    packets_dropped,
    packets_played,
    resizer_in,
    resizer_out,
    resizer_discard,
    commands_received,
    commands_succeeded,
    commands_failed,
    commands_repeated,
    replies_sent,
    packets_in_rate,
    rtpa,
    mos_bands,
    rtcp_errors,
    hep_sent,
    hep_dropped,
});

impl<const N: usize> crate::rtpp_handover::wire::Carry for Histogram<N> {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.put(&self.bounds);
        w.put(&self.buckets);
        w.u64(self.count);
        w.f64(self.sum);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        Ok(Histogram {
            bounds: r.take()?,
            buckets: r.take()?,
            count: r.u64()?,
            sum: r.f64()?,
        })
    }
}

crate::rtpp_handover::wire::carry_fields!(Metrics {
    commands,
    mos,
    loss,
    jitter,
    started,
});
crate::rtpp_handover::wire::carry_fields!(PacketCounts {
    received,
    relayed,
    dropped,
    played,
    resizer_in,
    resizer_out,
    resizer_discard,
    players_created,
    players_destroyed,
});
