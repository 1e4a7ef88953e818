//! The daemon-wide state `main` owns and the rest borrows: the poll sets,
//! the media port table, the counters of the `G` command, the drain flag,
//! and where ended sessions are reported (accounting file, notification
//! socket). The session table itself is `rtpp_session::Sessions`.

use crate::rtpp_account::AccountFile;
use crate::rtpp_analyzer::RtpaStats;
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
    pub packets_received: u64,
    pub packets_relayed: u64,
    pub packets_dropped: u64,
    pub packets_played: u64,
    pub commands_received: u64,
    pub commands_succeeded: u64,
    pub commands_failed: u64,
    pub commands_repeated: u64,
    /// Sums of the RTP analysis of ended sessions, both directions.
    pub rtpa: RtpaStats,
}

/// Packets of one session, as counted into [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketCounts {
    pub received: u64,
    pub relayed: u64,
    pub dropped: u64,
    pub played: u64,
}

impl Counters {
    /// Adds a session's packets.
    pub fn add_packets(&mut self, p: PacketCounts) {
        self.packets_received += p.received;
        self.packets_relayed += p.relayed;
        self.packets_dropped += p.dropped;
        self.packets_played += p.played;
    }

    /// Every counter by its `G` name; `active` is the live session count.
    pub fn named(&self, active: usize) -> [(&'static str, u64); 18] {
        [
            ("nsess_created", self.sessions_created),
            ("nsess_destroyed", self.sessions_destroyed),
            ("nsess_timeout", self.sessions_timeout),
            ("nsess_active", active as u64),
            ("npkts_rcvd", self.packets_received),
            ("npkts_relayed", self.packets_relayed),
            ("npkts_discard", self.packets_dropped),
            ("npkts_played", self.packets_played),
            ("ncmds_rcvd", self.commands_received),
            ("ncmds_succd", self.commands_succeeded),
            ("ncmds_errs", self.commands_failed),
            ("ncmds_repld", self.commands_repeated),
            ("nlog_dropped", crate::rtpp_log::dropped_lines()),
            ("rtpa_nsent", self.rtpa.nsent),
            ("rtpa_nrcvd", self.rtpa.nrcvd),
            ("rtpa_ndups", self.rtpa.ndups),
            ("rtpa_nlost", self.rtpa.nlost),
            ("rtpa_perrs", self.rtpa.perrs),
        ]
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
    /// SSRCs, sequence numbers and timestamps of generated streams.
    pub rng: Random,
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
            rng: Random::new(),
        }
    }
}
