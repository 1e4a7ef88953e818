//! Constants of the classic daemon and the run-time configuration built from
//! the command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::rtpp_log::Level;

/// `--hep`: where HEP packets go, and as which capture agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HepTarget {
    pub addr: SocketAddr,
    pub capture_id: u32,
}

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
/// A stream control client (`tcp:`, `tcp6:`, `cunix:`) that neither sends
/// a byte nor takes one of its replies for this long is closed. Much longer
/// than the unix deadline: OpenSIPS and the Sippy B2BUA keep the
/// connection and write the next command whenever a call needs one.
pub const CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Timers (TTLs, timeouts) run once per tick.
pub const TIMETICK: Duration = Duration::from_secs(1);
/// Under load the loop lets packets gather this long between polls: a
/// poll(2) over thousands of sockets costs as much for one ready socket as
/// for fifty, so waking per packet would spend most of the CPU polling.
pub const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// Below this many polled sockets polling is cheap; no batching window.
pub const BATCH_MIN_SOCKETS: usize = 64;
/// RTCP sockets are polled this often (RTCP is a packet every few seconds),
/// and so are RTP sockets silent for [`RTP_QUIET_AFTER`].
pub const RTCP_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// A poll(2) over thousands of sockets that have nothing, on every pass,
/// would cost more than relaying the calls that do send (calls ringing or
/// on hold, the silent side of a one-way stream, endpoints that send no
/// RTCP on its own port). So a socket that has read nothing for a while,
/// and that no command has touched meanwhile, is polled less often until
/// its next packet (or a `U`/`L` for its session) puts it back: an RTP
/// socket silent for this long moves to the RTCP clock, so the first
/// packet after the silence waits up to [`RTCP_POLL_INTERVAL`]. Talk
/// spurts are closer together than this.
pub const RTP_QUIET_AFTER: Duration = Duration::from_secs(2);
/// An RTP socket silent this long moves to the idle clock
/// ([`IDLE_POLL_INTERVAL`]): a call ringing or on hold, whose media starts
/// again after a command (which puts the socket back at once).
pub const RTP_IDLE_AFTER: Duration = Duration::from_secs(30);
/// An RTCP socket silent this long moves to the idle clock: RTCP comes
/// every few seconds when it comes at all.
pub const RTCP_IDLE_AFTER: Duration = Duration::from_secs(10);
/// How often the sockets that have long had nothing are polled.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Commands read from the UDP control socket per loop pass.
pub const COMMAND_BATCH: usize = 64;

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
    (
        "20090810",
        "Support for automatic bridging (l and r modifiers)",
    ),
    ("20140323", "Support for reporting load (I with b and l)"),
    ("20140617", "Support for anchoring session connect time"),
    ("20141004", "Support for extendable performance counters"),
    ("20150330", "Support for allocating a new port (n modifier)"),
    (
        "20150420",
        "Support for sequence analysis (rtpa_ counters, extended Q)",
    ),
    (
        "20150617",
        "Support for the %%CC_SELF%% timeout notification target",
    ),
    ("20191015", "Support for the && sub-command specifier"),
    ("20200226", "Support for the N command to stop recording"),
    (
        "20230205",
        "Support for rtpa_nlost and DTMF catching (M3:1)",
    ),
    ("20230314", "Support for fusing Q and D (Q ... && D)"),
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
    /// A listening TCP socket (`tcp:`, `tcp6:`): many commands per
    /// connection, one per line, no cookie.
    Tcp(SocketAddr),
    /// A listening unix stream socket (`cunix:`) framed like `Tcp`.
    Cunix(PathBuf),
}

impl ControlSpec {
    /// The IPv4 address the control socket is bound to, unless it is the
    /// wildcard: `%%CC_SELF%%` notifications leave from it.
    pub fn bound_ipv4(&self) -> Option<std::net::Ipv4Addr> {
        match self {
            ControlSpec::Udp(SocketAddr::V4(a)) | ControlSpec::Tcp(SocketAddr::V4(a))
                if !a.ip().is_unspecified() =>
            {
                Some(*a.ip())
            }
            _ => None,
        }
    }
}

/// One `-n` value: where timeout notifications may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// `unix:PATH` or a bare path, made absolute.
    Unix(PathBuf),
    /// `tcp:HOST:PORT`, resolved to IPv4 at start-up; `name` is the value
    /// as given, which a `U` must repeat to select it.
    Tcp {
        name: String,
        addr: std::net::SocketAddrV4,
    },
    /// `tcp:%%CC_SELF%%:PORT` as given: TCP to PORT on the IPv4 address
    /// the arming command came from.
    TcpSelf { name: String, port: u16 },
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
    /// `-p`; none in the foreground without `-p`, so a debugging
    /// instance never touches the service's pidfile.
    pub pid_file: Option<PathBuf>,
    pub max_ttl: u32,
    pub nofile: Option<u64>,
    pub port_min: u16,
    pub port_max: u16,
    pub run_user: Option<String>,
    pub run_group: Option<String>,
    /// `-n`, every value in the order given.
    pub notify_targets: Vec<NotifyTarget>,
    /// `-A`: one JSON line per ended session is appended there.
    pub accounting_file: Option<PathBuf>,
    pub log_level: Option<Level>,
    pub log_facility: Option<String>,
    /// `--hep`: the Homer collector quality reports go to.
    pub hep: Option<HepTarget>,
    /// `--hep-rtcp`: RTCP is mirrored to the collector too.
    pub hep_rtcp: bool,
    /// `--metrics`: where `GET /metrics` is served.
    pub metrics: Option<std::net::SocketAddr>,
    /// Internal: started by a daemon handing over, its end of the pair.
    pub handover_fd: Option<i32>,
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
            pid_file: None,
            max_ttl: SESSION_TIMEOUT,
            nofile: None,
            port_min: PORT_MIN,
            port_max: PORT_MAX,
            run_user: None,
            run_group: None,
            notify_targets: Vec::new(),
            accounting_file: None,
            log_level: None,
            log_facility: None,
            hep: None,
            hep_rtcp: false,
            metrics: None,
            handover_fd: None,
        }
    }
}

impl Config {
    /// True when the two `-l`/`-6` interfaces are bridged.
    pub fn bridged(&self) -> bool {
        matches!(self.bind, BindMode::Bridge(_))
    }
}

/// The two parties of a session. The caller is the from-tag party of the
/// `U` that created it; the callee is the other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    Caller,
    Callee,
}

impl Party {
    /// Both parties, caller first.
    pub const BOTH: [Party; 2] = [Party::Caller, Party::Callee];

    /// The party on the other end of the session.
    pub fn other(self) -> Party {
        match self {
            Party::Caller => Party::Callee,
            Party::Callee => Party::Caller,
        }
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Party::Caller => "caller",
            Party::Callee => "callee",
        })
    }
}

/// The two streams of a session: RTP on the even port, its RTCP twin on
/// the port above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Rtp,
    Rtcp,
}

impl Stream {
    /// Both streams, RTP first.
    pub const BOTH: [Stream; 2] = [Stream::Rtp, Stream::Rtcp];

    /// How far above the leg's (RTP) port this stream's port is.
    pub fn port_offset(self) -> u16 {
        match self {
            Stream::Rtp => 0,
            Stream::Rtcp => 1,
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Rtp => "RTP",
            Stream::Rtcp => "RTCP",
        })
    }
}

/// A key with two values, [`Party`] or [`Stream`]: what [`Pair`] is
/// indexed by.
pub trait PairKey: Copy {
    /// Both keys, in storage order.
    const BOTH: [Self; 2];
    /// The key's position, 0 or 1.
    fn position(self) -> usize;
}

impl PairKey for Party {
    const BOTH: [Party; 2] = Party::BOTH;
    fn position(self) -> usize {
        self as usize
    }
}

impl PairKey for Stream {
    const BOTH: [Stream; 2] = Stream::BOTH;
    fn position(self) -> usize {
        self as usize
    }
}

/// Two values, one per party or per stream, indexed by the key type only:
/// a swapped index or a bare 0/1 does not compile.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pair<K, T> {
    items: [T; 2],
    key: std::marker::PhantomData<K>,
}

/// One value per party.
pub type ByParty<T> = Pair<Party, T>;
/// One value per stream.
pub type ByStream<T> = Pair<Stream, T>;

impl<K: PairKey, T> Pair<K, T> {
    /// The pair of two values in key order: caller then callee, RTP then
    /// RTCP.
    pub fn new(first: T, second: T) -> Pair<K, T> {
        Pair {
            items: [first, second],
            key: std::marker::PhantomData,
        }
    }

    /// The pair made by `f` of each key.
    pub fn from_fn(mut f: impl FnMut(K) -> T) -> Pair<K, T> {
        let [a, b] = K::BOTH;
        Pair {
            items: [f(a), f(b)],
            key: std::marker::PhantomData,
        }
    }

    /// The same value for both keys.
    pub fn both(value: T) -> Pair<K, T>
    where
        T: Clone,
    {
        Pair::from_fn(|_| value.clone())
    }

    /// The two values, in key order, owned.
    pub fn into_array(self) -> [T; 2] {
        self.items
    }

    /// The values, in key order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// The values, mutable, in key order.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.items.iter_mut()
    }

    /// A pair of what `f` makes of each value.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Pair<K, U> {
        let [a, b] = &self.items;
        Pair {
            items: [f(a), f(b)],
            key: std::marker::PhantomData,
        }
    }
}

impl<K: PairKey, T> std::ops::Index<K> for Pair<K, T> {
    type Output = T;
    fn index(&self, key: K) -> &T {
        &self.items[key.position()]
    }
}

impl<K: PairKey, T> std::ops::IndexMut<K> for Pair<K, T> {
    fn index_mut(&mut self, key: K) -> &mut T {
        &mut self.items[key.position()]
    }
}

impl<K, T: Default> Default for Pair<K, T> {
    fn default() -> Self {
        Pair {
            items: Default::default(),
            key: std::marker::PhantomData,
        }
    }
}

impl<K, T: std::fmt::Debug> std::fmt::Debug for Pair<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.items.fmt(f)
    }
}

/// A session's place in the session table; stable for the session's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u32);
