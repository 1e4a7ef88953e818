//! Constants of the classic daemon and the run-time configuration built from
//! the command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::rtpp_log::Level;

/// Base protocol version answered to `V`.
pub const CPROTOVER: &str = "20040107";
/// Lowest media port by default (`-m`).
pub const PORT_MIN: u16 = 35000;
/// Highest media port by default (`-M`).
pub const PORT_MAX: u16 = 65000;
/// Session idle timeout in seconds by default (`-T`).
pub const SESSION_TIMEOUT: u32 = 60;
/// IP TOS / traffic class for media by default (`-t`): DSCP EF.
pub const TOS: u8 = 0xb8;
/// Packets shorter than this are sent twice with `-2`.
pub const LBR_THRS: usize = 128;
/// Control port of `udp:`/`udp6:` sockets when none is given.
pub const CPORT: u16 = 22222;
/// After a U/L re-signals a latched party, a new source may take over for this long.
pub const UPDATE_WINDOW: Duration = Duration::from_secs(10);
/// Default control socket.
pub const CMD_SOCK: &str = "/var/run/rtpproxy.sock";
/// Default pidfile.
pub const PID_FILE: &str = "/var/run/rtpproxy.pid";
/// Longest Call-ID, tag or name accepted in a command; longer ones are `E1`.
pub const MAX_ID_LEN: usize = 1024;
/// Largest command read from a control socket.
pub const MAX_COMMAND_LEN: usize = 8192;
/// How long a unix control client may take to send its command.
pub const CONTROL_CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timers (TTLs, timeouts) run once per tick.
pub const TIMETICK: Duration = Duration::from_secs(1);
/// Under load the loop lets packets gather this long between polls: a
/// poll(2) over thousands of sockets costs as much for one ready socket as
/// for fifty, so waking per packet would spend most of the CPU polling.
pub const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// Below this many polled sockets polling is cheap; no batching window.
pub const BATCH_MIN_SOCKETS: usize = 64;
/// RTCP sockets are polled this often (RTCP is a packet every few seconds).
pub const RTCP_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Commands read from the UDP control socket per loop pass.
pub const COMMAND_BATCH: usize = 64;
/// Largest UDP payload we accept on a media socket.
pub const MAX_PACKET: usize = 65536;

/// Extensions answered `1` by `VF`, with the line `-v` prints for each.
pub const PROTO_CAPS: &[(&str, &str)] = &[
    ("20040107", "Basic RTP proxy functionality"),
    ("20050322", "Support for multiple RTP streams and MOH"),
    ("20060704", "Support for extra parameter in the V command"),
    ("20071116", "Support for RTP re-packetization"),
    ("20071218", "Support for forking (copying) RTP stream"),
    ("20080403", "Support for RTP statistics querying"),
    (
        "20081102",
        "Support for setting codecs in the update/lookup command",
    ),
    ("20081224", "Support for session timeout notifications"),
    ("20141004", "Support for extendable performance counters"),
];

/// The extension that is only supported when `-n` was given.
pub const NOTIFY_CAP: &str = "20081224";

/// Where commands come from (`-s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlSpec {
    /// A listening unix stream socket: one command per connection, no cookie.
    Unix(PathBuf),
    /// A UDP socket: one command per datagram, first token is a cookie.
    Udp(SocketAddr),
}

/// The local addresses media sockets are bound to (`-l`, `-6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindMode {
    /// One interface per address family; a leg uses the family of its party.
    Single {
        v4: Option<IpAddr>,
        v6: Option<IpAddr>,
    },
    /// Two interfaces, chosen per leg with the `i`/`e` modifiers.
    Bridge([IpAddr; 2]),
}

/// Everything the command line decides.
#[derive(Debug, Clone)]
pub struct Config {
    pub foreground: bool,
    pub double_small: bool,
    pub allow_root_udp: bool,
    pub independent_ttl: bool,
    pub record_pcap: bool,
    pub record_all: bool,
    pub record_rtcp: bool,
    pub bind: BindMode,
    pub control: ControlSpec,
    pub tos: Option<u8>,
    pub record_dir: Option<PathBuf>,
    pub spool_dir: Option<PathBuf>,
    pub pid_file: PathBuf,
    pub max_ttl: u32,
    pub nofile: Option<u64>,
    pub port_min: u16,
    pub port_max: u16,
    pub run_user: Option<String>,
    pub run_group: Option<String>,
    pub notify_socket: Option<PathBuf>,
    /// `-A`: one JSON line per ended session is appended there.
    pub accounting_file: Option<PathBuf>,
    pub log_level: Option<Level>,
    pub log_facility: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            foreground: false,
            double_small: false,
            allow_root_udp: false,
            independent_ttl: false,
            record_pcap: false,
            record_all: false,
            record_rtcp: true,
            bind: BindMode::Single {
                v4: Some(IpAddr::from([0, 0, 0, 0])),
                v6: None,
            },
            control: ControlSpec::Unix(PathBuf::from(CMD_SOCK)),
            tos: Some(TOS),
            record_dir: None,
            spool_dir: None,
            pid_file: PathBuf::from(PID_FILE),
            max_ttl: SESSION_TIMEOUT,
            nofile: None,
            port_min: PORT_MIN,
            port_max: PORT_MAX,
            run_user: None,
            run_group: None,
            notify_socket: None,
            accounting_file: None,
            log_level: None,
            log_facility: None,
        }
    }
}

impl Config {
    /// True when the two `-l`/`-6` interfaces are bridged.
    pub fn bridged(&self) -> bool {
        matches!(self.bind, BindMode::Bridge(_))
    }
}
