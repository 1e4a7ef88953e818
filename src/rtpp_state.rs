//! The daemon-wide state `main` owns and the rest borrows: the poll sets,
//! the media port table, the counters of the `G` command, the drain flag,
//! and where ended sessions are reported (accounting file, notification
//! socket). The session table itself is `rtpp_session::Sessions`.

use crate::rtpp_account::AccountFile;
use crate::rtpp_analyzer::RtpaStats;
use crate::rtpp_hep::HepSender;
use crate::rtpp_network::PortTable;
use crate::rtpp_notify::Notifier;
use crate::rtpp_poll::Poller;
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
    /// HEP packets sent to the `--hep` collector, and those not sent;
    /// the sender keeps them, `G` copies them here (see
    /// [`Daemon::counters_with_hep`]).
    pub hep_sent: u64,
    pub hep_dropped: u64,
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
    /// The `rtpa_*` sums come last.
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
            received_before: None,
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
