//! Sessions: one per media stream of a call (Call-ID + from-tag with its
//! `;N` media number), each with an RTP stream and its RTCP twin, two legs
//! (the relay's socket pair facing each party), latching state per party,
//! idle timers and counters.
//!
//! A session's whole life is here: created and given legs by `U`/`L`,
//! found by its tags, ended for every reason (`D`, `X`, idle timeout,
//! daemon exit) in one place that releases its sockets, finishes its
//! recordings, writes its accounting record, sends its HEP quality reports
//! and its timeout notification. The command executor asks; it never removes a session.

mod latch;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use latch::{Peer, Verdict};

use crate::rtp::RtpHeader;
use crate::rtp_resizer::Resizer;
use crate::rtp_server::Player;
use crate::rtpp_account::{CallRecord, EndReason, Sent};
use crate::rtpp_analyzer::{RtpAnalyzer, RtpaStats};
use crate::rtpp_copy::RemoteCopy;
use crate::rtpp_defines::{
    ByParty, ByStream, Config, Party, SessionId, Stream, RTCP_IDLE_AFTER, RTP_IDLE_AFTER,
    RTP_QUIET_AFTER,
};
use crate::rtpp_dtmf::{DtmfCatcher, SUFFIX_MAX};
use crate::rtpp_hep::{quality_report_json, HepSender, StreamReport};
use crate::rtpp_log;
use crate::rtpp_log::show;
use crate::rtpp_notify::{Notifier, TargetId};
use crate::rtpp_pacing::Pacing;
use crate::rtpp_poll::{Cadence, Owner, Poller, Token};
use crate::rtpp_quality::{QualityMeter, QualityReport};
use crate::rtpp_record::{record_file_name, RecordFile, RecordFormat};
use crate::rtpp_state::{Counters, Daemon, PacketCounts};

/// The Call-ID and tags naming one or more streams of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamIds<'a> {
    pub call_id: &'a [u8],
    pub from_tag: &'a [u8],
    pub to_tag: Option<&'a [u8]>,
}

/// How a tag in a command matches a session's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TagMatch {
    None,
    /// Same tag, one side without a media number (`ftag` vs `ftag;2`).
    Loose,
    /// The same tag, media number included.
    Exact,
}

/// Compares a session's tag with a command's, honouring `;N` media numbers:
/// a tag without a number names every stream of that tag.
pub fn match_tag(session_tag: &[u8], wanted: &[u8]) -> TagMatch {
    if session_tag == wanted {
        return TagMatch::Exact;
    }
    let (sb, sn) = split_media_number(session_tag);
    let (wb, wn) = split_media_number(wanted);
    if sb != wb {
        return TagMatch::None;
    }
    match (sn, wn) {
        (Some(_), None) | (None, Some(_)) => TagMatch::Loose,
        _ => TagMatch::None,
    }
}

/// The unspecified address of `ip`'s family.
fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// Splits `tag;N` into the tag and its media number.
pub fn split_media_number(tag: &[u8]) -> (&[u8], Option<&[u8]>) {
    match tag.iter().rposition(|&c| c == b';') {
        Some(p) => (&tag[..p], Some(&tag[p + 1..])),
        None => (tag, None),
    }
}

/// The relay's RTP/RTCP socket pair facing one party.
#[derive(Debug)]
pub struct Leg {
    pub port: u16,
    pub ip: IpAddr,
    pub sockets: ByStream<UdpSocket>,
    tokens: ByStream<Token>,
    /// The rhythm of the packets on the RTP socket, which decides when it
    /// may rest out of the poll.
    pub pacing: Pacing,
    /// When the RTCP socket last gave a packet.
    pub rtcp_read: Option<Instant>,
    /// When a command last touched the session (or the leg was opened).
    touched: Instant,
}

impl Leg {
    /// The local port of one of the leg's streams.
    pub fn port_of(&self, stream: Stream) -> u16 {
        self.port + stream.port_offset()
    }

    /// Moves a socket that has read nothing for a while, and that no
    /// command touched meanwhile, to a slower cadence (see
    /// [`RTP_QUIET_AFTER`] and what follows it).
    fn cool_if_idle(&mut self, now: Instant, poller: &mut Poller) {
        for stream in Stream::BOTH {
            let read = match stream {
                Stream::Rtp => self.pacing.last_read(),
                Stream::Rtcp => self.rtcp_read,
            };
            let quiet =
                now.saturating_duration_since(read.map_or(self.touched, |r| r.max(self.touched)));
            let cold = match stream {
                Stream::Rtp if quiet >= RTP_IDLE_AFTER => Cadence::Idle,
                Stream::Rtp if quiet >= RTP_QUIET_AFTER => Cadence::Slow,
                Stream::Rtcp if quiet >= RTCP_IDLE_AFTER => Cadence::Idle,
                _ => continue,
            };
            if cold > self.tokens[stream].cadence() {
                if let Some(moved) = poller.move_to(self.tokens[stream], cold) {
                    self.tokens[stream] = moved;
                }
            }
        }
    }

    /// Puts a socket moved to a slower cadence back on its own: its
    /// stream sends again.
    pub fn warm(&mut self, stream: Stream, poller: &mut Poller) {
        if let Some(moved) = poller.move_to(self.tokens[stream], home(stream)) {
            self.tokens[stream] = moved;
        }
    }

    /// A command touched the leg's session: media is likely to start or
    /// change now (an answer, a re-INVITE taking a call off hold), so both
    /// sockets are polled on their own cadence again.
    pub fn touch(&mut self, now: Instant, poller: &mut Poller) {
        self.touched = now;
        for stream in Stream::BOTH {
            self.warm(stream, poller);
        }
    }
}

/// Where a stream's socket is polled while its stream sends.
pub fn home(stream: Stream) -> Cadence {
    match stream {
        Stream::Rtp => Cadence::EveryPass,
        Stream::Rtcp => Cadence::Slow,
    }
}

/// The RTP stream or its RTCP twin of a session.
#[derive(Debug, Default)]
pub struct MediaStream {
    pub peers: ByParty<Peer>,
    /// Every packet read from the stream's sockets, strangers' included.
    pub received: u64,
    pub relayed: u64,
    pub dropped: u64,
    /// What each party sends on this stream, recorded.
    pub recorders: ByParty<Option<RecordFile>>,
}

/// What a timed-out session announces to its notification target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyWith {
    /// The two relay ports (the classic message without a tag).
    Ports,
    /// The tag the `U` gave.
    Tag(Box<[u8]>),
}

/// One media stream of a call.
#[derive(Debug)]
pub struct Session {
    pub call_id: Box<[u8]>,
    /// The creating from-tag, media number included.
    pub tag: Box<[u8]>,
    /// The other party's tag, once a command named it.
    pub to_tag: Option<Box<[u8]>>,
    /// `legs[p]` is the socket pair party `p` sends to and receives from.
    pub legs: ByParty<Option<Leg>>,
    /// Where each leg is (or will be) bound.
    pub leg_ips: ByParty<IpAddr>,
    pub streams: ByStream<MediaStream>,
    pub strong: bool,
    pub weak: ByParty<bool>,
    /// Payload types each party offered with `c`.
    pub codecs: ByParty<Option<Box<[u8]>>>,
    /// Last RTP packet (or signalling) from each party, for the idle timeout.
    pub last_rx: ByParty<Instant>,
    pub created: Instant,
    /// `C ... udp:HOST:PORT`: copies of what each party sends.
    pub(crate) copies: ByParty<Option<RemoteCopy>>,
    /// Timeout notification armed by `U ... NOTIFY_SOCKET [NOTIFY_TAG]`:
    /// the target NOTIFY_SOCKET selected, and what to say.
    pub notify: Option<(TargetId, NotifyWith)>,
    /// `players[p]` plays a prompt to party `p`; media to it is held back.
    pub(crate) players: ByParty<Option<Player>>,
    /// `resizers[p]` re-packetizes what party `p` sends (`z`).
    pub resizers: ByParty<Option<Resizer>>,
    /// Prompt packets sent.
    pub played: u64,
    /// Re-packetizer and prompt counts (the rest of [`PacketCounts`]).
    pub tally: PacketCounts,
    /// `analyzers[p]` analyzes the RTP party `p` sends (`rtpa_*`).
    pub(crate) analyzers: ByParty<RtpAnalyzer>,
    /// `dtmf[p]` catches the DTMF digits party `p` sends.
    pub(crate) dtmf: ByParty<Option<DtmfCatcher>>,
    /// `quality[p]` measures what party `p` sends (RTP and RTCP).
    pub(crate) quality: ByParty<QualityMeter>,
}

/// Why DTMF catching was not turned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfRefused {
    /// No session by that id.
    NoSession,
    /// The session has no notify target to report digits to.
    NoNotifyTarget,
    /// Not an RTP payload type (0-127).
    BadPayloadType,
}

impl Session {
    fn new(call_id: &[u8], tag: &[u8], leg_ips: ByParty<IpAddr>, now: Instant) -> Session {
        Session {
            call_id: call_id.into(),
            tag: tag.into(),
            to_tag: None,
            legs: ByParty::default(),
            leg_ips,
            streams: ByStream::default(),
            strong: false,
            weak: ByParty::default(),
            codecs: ByParty::default(),
            last_rx: ByParty::both(now),
            created: now,
            copies: ByParty::default(),
            notify: None,
            players: ByParty::default(),
            resizers: ByParty::default(),
            played: 0,
            tally: PacketCounts::default(),
            analyzers: ByParty::default(),
            dtmf: ByParty::default(),
            quality: ByParty::default(),
        }
    }

    /// The quality of both directions so far (at the end of the stream:
    /// its final report).
    pub fn quality_report(&self) -> QualityReport {
        QualityReport::build(&self.quality)
    }

    /// The RTP analysis of what `party` sends (the `rtpa_*` values).
    pub fn rtpa(&self, party: Party) -> RtpaStats {
        self.analyzers[party].stats()
    }

    /// The RTP analysis of both directions, summed.
    pub fn rtpa_total(&self) -> RtpaStats {
        let mut t = self.rtpa(Party::Caller);
        t.add(&self.rtpa(Party::Callee));
        t
    }

    /// Sends one line, made of `parts`, to the session's notify target;
    /// false when the session has none (or the daemon no `-n` socket).
    /// Like the timeout notification it never blocks.
    pub fn notify_line(&self, notifier: &mut Option<Notifier>, parts: &[&[u8]]) -> bool {
        match (&self.notify, notifier) {
            (Some((target, _)), Some(n)) => {
                n.notify_parts(*target, parts);
                true
            }
            _ => false,
        }
    }

    /// Shows an RTP packet from `party` to its DTMF catcher, if any, and
    /// reports a completed digit. True when the packet is to be hidden
    /// (dropped instead of relayed).
    pub(crate) fn catch_dtmf_packet(
        &mut self,
        party: Party,
        h: &RtpHeader,
        packet: &[u8],
        notifier: &mut Option<Notifier>,
    ) -> bool {
        let Some(catcher) = &mut self.dtmf[party] else {
            return false;
        };
        // The one compare every packet of a watched direction pays.
        if h.payload_type != catcher.payload_type() {
            return false;
        }
        let hide = catcher.hides();
        let Some(event) = catcher.observe(h, packet) else {
            return hide;
        };
        let side = match party {
            Party::Caller => 0,
            Party::Callee => 1,
        };
        let mut suffix = [0u8; SUFFIX_MAX];
        let len = event.write_suffix(side, &mut suffix);
        if let Some(catcher) = &self.dtmf[party] {
            let line = [catcher.tag(), suffix.get(..len).unwrap_or_default()];
            // A target disarmed since catching began: the digit goes nowhere.
            self.notify_line(notifier, &line);
        }
        hide
    }

    /// True while something in the session runs on the clock: a player,
    /// or a re-packetizer holding audio.
    pub fn is_timed(&self) -> bool {
        self.players.iter().any(Option::is_some)
            || self
                .resizers
                .iter()
                .flatten()
                .any(|r| r.next_due().is_some())
    }

    /// The earliest moment something on the clock is due.
    pub fn next_due(&self) -> Option<Instant> {
        let players = self.players.iter().flatten().filter_map(Player::next_due);
        let resizers = self.resizers.iter().flatten().filter_map(Resizer::next_due);
        players.chain(resizers).min()
    }

    /// Remaining idle time of each party's direction.
    pub fn ttl_left(&self, max_ttl: u32, now: Instant) -> ByParty<u64> {
        // Whole seconds idle, so a fresh session shows the full TTL.
        self.last_rx
            .map(|t| u64::from(max_ttl).saturating_sub(now.saturating_duration_since(*t).as_secs()))
    }

    /// Remaining time before the session expires: when both directions are
    /// idle, or with `-i` when either is.
    pub fn expires_in(&self, max_ttl: u32, independent: bool, now: Instant) -> Duration {
        let ttl = Duration::from_secs(u64::from(max_ttl));
        let left = self
            .last_rx
            .map(|t| ttl.saturating_sub(now.saturating_duration_since(*t)));
        let (caller, callee) = (left[Party::Caller], left[Party::Callee]);
        if independent {
            caller.min(callee)
        } else {
            caller.max(callee)
        }
    }

    /// Local port of a leg, 0 when not allocated yet.
    pub fn port(&self, party: Party) -> u16 {
        self.legs[party].as_ref().map_or(0, |l| l.port)
    }

    /// Legs with sockets open.
    pub fn open_legs(&self) -> usize {
        self.legs.iter().flatten().count()
    }

    /// Packets of both streams, as the daemon's counters count them.
    pub fn packet_counts(&self) -> PacketCounts {
        let mut p = PacketCounts {
            played: self.played,
            ..self.tally
        };
        for st in self.streams.iter() {
            p.received += st.received;
            p.relayed += st.relayed;
            p.dropped += st.dropped;
        }
        p
    }

    /// The accounting record of the session ending now (`now` is the wall
    /// clock).
    pub fn call_record(&self, reason: EndReason, now: SystemTime) -> CallRecord<'_> {
        let duration = self.created.elapsed();
        // The session's monotonic age, taken back from the wall clock, so
        // that start + duration is the moment it ended.
        let start = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(duration);
        let sent = |stream: Stream| {
            self.streams[stream].peers.map(|p| Sent {
                packets: p.packets,
                bytes: p.bytes,
            })
        };
        let counts = self.packet_counts();
        CallRecord {
            call_id: &self.call_id,
            from_tag: &self.tag,
            to_tag: self.to_tag.as_deref(),
            reason,
            start,
            duration,
            ports: ByParty::from_fn(|p| self.port(p)),
            rtp: sent(Stream::Rtp),
            rtcp: sent(Stream::Rtcp),
            relayed: counts.relayed,
            dropped: counts.dropped,
            lost: self.quality.map(|q| q.rtp.lost_rfc3550()),
            quality: self.quality_report(),
        }
    }

    /// `--hep`: one end-of-stream report per direction whose leg was
    /// opened, what the party sent from its address (unspecified, port 0,
    /// when it never sent) to the relay's address of its leg.
    fn send_quality_reports(&self, record: &CallRecord<'_>, hep: &mut HepSender, now: SystemTime) {
        for party in Party::BOTH {
            let Some(leg) = &self.legs[party] else {
                continue;
            };
            let dst = SocketAddr::new(leg.ip, leg.port_of(Stream::Rtp));
            let src = self.streams[Stream::Rtp].peers[party]
                .addr
                .unwrap_or_else(|| SocketAddr::new(unspecified_like(leg.ip), 0));
            let json = quality_report_json(&StreamReport::of(record, party, src, dst));
            hep.send_quality_report(&self.call_id, src, dst, json.as_bytes(), now);
        }
    }

    /// Records both directions of the session's RTP (and RTCP unless `-R`)
    /// into `CALLID=TAG.{o,a}.{rtp,rtcp}`; channels already open are kept.
    pub fn start_recording(&mut self, cfg: &Config) {
        let Some(dir) = &cfg.record_dir else {
            rtpp_log!(
                Err,
                "can't record {}/{}: no recording directory (-r) given",
                show(&self.call_id),
                show(&self.tag)
            );
            return;
        };
        for stream in recorded_streams(cfg) {
            for party in Party::BOTH {
                if self.streams[stream].recorders[party].is_some() {
                    continue;
                }
                let side = if party == Party::Caller { "o" } else { "a" };
                let suffix = format!("{side}.{}", stream_suffix(stream));
                let name = record_file_name(&self.call_id, &self.tag, &suffix);
                self.streams[stream].recorders[party] = open_recording(cfg, dir, &name, stream);
            }
        }
    }

    /// `C` to a file: records what `party` sends into `BASE.rtp` (and
    /// `BASE.rtcp` unless `-R`).
    pub fn copy_to_files(&mut self, cfg: &Config, party: Party, base: &str) {
        let Some(dir) = &cfg.record_dir else {
            rtpp_log!(
                Err,
                "can't copy to {base}: no recording directory (-r) given"
            );
            return;
        };
        for stream in recorded_streams(cfg) {
            let name = format!("{base}.{}", stream_suffix(stream));
            // As in the classic daemon, a direction already recorded (by R,
            // -a or an earlier C) keeps its file: replacing it would cut
            // that recording short in the middle of the call.
            if let Some(current) = &self.streams[stream].recorders[party] {
                rtpp_log!(
                    Info,
                    "{}/{}: already recording to {}, {name} not opened",
                    show(&self.call_id),
                    show(&self.tag),
                    current.path().display()
                );
                continue;
            }
            self.streams[stream].recorders[party] = open_recording(cfg, dir, &name, stream);
        }
    }

    /// Writes what the recordings buffered to disk.
    pub fn flush_recordings(&mut self) {
        for rec in self.recorders_mut() {
            if let Err(e) = rec.flush() {
                rtpp_log!(Err, "{e}");
            }
        }
    }

    /// Flushes, closes and moves out of the spool every recording.
    fn finish_recordings(&mut self) {
        for stream in self.streams.iter_mut() {
            for rec in stream.recorders.iter_mut() {
                if let Some(f) = rec.take() {
                    finish_recording(f);
                }
            }
        }
    }

    /// A complete session that ended: which of its streams carried
    /// nothing, or went one way only.
    fn count_silence(&self, c: &mut crate::rtpp_state::Counters) {
        let flow = |stream: Stream| self.streams[stream].peers.map(|p| p.packets > 0);
        match (
            flow(Stream::Rtp)[Party::Caller],
            flow(Stream::Rtp)[Party::Callee],
        ) {
            (false, false) => c.sessions_no_rtp += 1,
            (true, true) => {}
            _ => c.sessions_oneway_rtp += 1,
        }
        match (
            flow(Stream::Rtcp)[Party::Caller],
            flow(Stream::Rtcp)[Party::Callee],
        ) {
            (false, false) => c.sessions_no_rtcp += 1,
            (true, true) => {}
            _ => c.sessions_oneway_rtcp += 1,
        }
    }

    /// `N`: stops recording (R, C to a file) and copying (C udp:) what
    /// `party` sends; the files are finished as at the end of the call.
    /// True when something was being recorded or copied.
    pub fn stop_recording(&mut self, party: Party) -> bool {
        let mut stopped = self.copies[party].take().is_some();
        for stream in self.streams.iter_mut() {
            if let Some(f) = stream.recorders[party].take() {
                finish_recording(f);
                stopped = true;
            }
        }
        stopped
    }

    fn recorders_mut(&mut self) -> impl Iterator<Item = &mut RecordFile> {
        self.streams
            .iter_mut()
            .flat_map(|s| s.recorders.iter_mut().flatten())
    }

    /// Where a timed-out session is announced and the line it sends there,
    /// if armed.
    fn timeout_message(&self) -> Option<(TargetId, Vec<u8>)> {
        let (target, with) = self.notify.as_ref()?;
        Some((
            *target,
            match with {
                NotifyWith::Tag(tag) => tag.to_vec(),
                // Without a tag the classic message is the two relay ports,
                // the one U answered first.
                NotifyWith::Ports => {
                    format!("{} {}", self.port(Party::Callee), self.port(Party::Caller))
                        .into_bytes()
                }
            },
        ))
    }
}

/// The streams `-R` leaves recorded.
fn recorded_streams(cfg: &Config) -> impl Iterator<Item = Stream> {
    let rtcp = cfg.record_rtcp;
    Stream::BOTH
        .into_iter()
        .filter(move |&s| s == Stream::Rtp || rtcp)
}

fn stream_suffix(stream: Stream) -> &'static str {
    match stream {
        Stream::Rtp => "rtp",
        Stream::Rtcp => "rtcp",
    }
}

fn open_recording(cfg: &Config, dir: &Path, name: &str, stream: Stream) -> Option<RecordFile> {
    let format = if cfg.record_pcap {
        RecordFormat::Pcap
    } else {
        RecordFormat::Adhoc
    };
    // A second of G.711 fits the RTP buffer, and the 1-second timer
    // flushes it; RTCP needs little.
    let capacity = match stream {
        Stream::Rtp => 16 * 1024,
        Stream::Rtcp => 4 * 1024,
    };
    match RecordFile::create_sized(dir, cfg.spool_dir.as_deref(), name, format, capacity) {
        Ok(f) => {
            rtpp_log!(Info, "recording to {}", f.path().display());
            Some(f)
        }
        Err(e) => {
            rtpp_log!(
                Err,
                "can't create recording {name} in {}: {e}",
                dir.display()
            );
            None
        }
    }
}

/// The session table: sessions by id and by Call-ID, and the list of those
/// with something on the clock.
#[derive(Default)]
pub struct Sessions {
    slab: Vec<Option<Session>>,
    free_ids: Vec<u32>,
    by_call: HashMap<Box<[u8]>, Vec<SessionId>>,
    active: usize,
    /// Sessions with something on the clock (players, re-packetizers
    /// holding audio), served every pass.
    timed: Vec<SessionId>,
}

impl Sessions {
    /// An empty table.
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// Live sessions.
    pub fn active(&self) -> usize {
        self.active
    }

    /// A session by id.
    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.slab.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// A session by id, mutable.
    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.slab.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// Ids of every live session, in table order.
    pub fn ids(&self) -> Vec<SessionId> {
        self.iter().map(|(id, _)| id).collect()
    }

    /// Every live session with its id, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.slab
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((SessionId(i as u32), s.as_ref()?)))
    }

    /// The daemon's counters with the live sessions' packets added.
    pub fn counters(&self, ended: &Counters) -> Counters {
        let mut c = ended.clone();
        for (_, s) in self.iter() {
            c.add_packets(s.packet_counts());
        }
        c
    }

    /// Ids of the sessions of a call.
    fn of_call(&self, call_id: &[u8]) -> &[SessionId] {
        self.by_call.get(call_id).map_or(&[], Vec::as_slice)
    }

    /// Finds the stream a command names: by from-tag, else by to-tag, exact
    /// media numbers preferred. Returns the id and the party the from-tag
    /// names (the caller when it is the session's own tag).
    pub fn find(&self, ids: &StreamIds<'_>) -> Option<(SessionId, Party)> {
        let mut best: Option<(TagMatch, bool, SessionId)> = None;
        for &id in self.of_call(ids.call_id) {
            let Some(s) = self.get(id) else { continue };
            let by_from = match_tag(&s.tag, ids.from_tag);
            let (m, from) = if by_from != TagMatch::None {
                (by_from, true)
            } else if let Some(t) = ids.to_tag {
                (match_tag(&s.tag, t), false)
            } else {
                (TagMatch::None, false)
            };
            if m == TagMatch::None {
                continue;
            }
            if best.is_none_or(|(bm, bf, _)| (m, from) > (bm, bf)) {
                best = Some((m, from, id));
            }
        }
        best.map(|(_, from, id)| (id, named_party(from)))
    }

    /// Every stream a command names (D, R): all media numbers of the tag
    /// when it has none.
    pub fn find_all(&self, ids: &StreamIds<'_>) -> Vec<SessionId> {
        self.of_call(ids.call_id)
            .iter()
            .copied()
            .filter(|&id| {
                self.get(id).is_some_and(|s| {
                    match_tag(&s.tag, ids.from_tag) != TagMatch::None
                        || ids
                            .to_tag
                            .is_some_and(|t| match_tag(&s.tag, t) != TagMatch::None)
                })
            })
            .collect()
    }

    /// Adds a session with no legs yet; returns its id.
    pub fn create(
        &mut self,
        ids: &StreamIds<'_>,
        leg_ips: ByParty<IpAddr>,
        now: Instant,
        daemon: &mut Daemon,
    ) -> SessionId {
        let session = Session::new(ids.call_id, ids.from_tag, leg_ips, now);
        let id = match self.free_ids.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(session);
                SessionId(i)
            }
            None => {
                self.slab.push(Some(session));
                SessionId((self.slab.len() - 1) as u32)
            }
        };
        self.by_call.entry(ids.call_id.into()).or_default().push(id);
        daemon.counters.sessions_created += 1;
        self.active += 1;
        id
    }

    /// Opens the socket pair of a party's leg if it has none; returns its
    /// port, or `None` when the port range is exhausted (or the poll sets
    /// are as large as the open-files limit lets poll(2) take).
    pub fn open_leg(
        &mut self,
        id: SessionId,
        party: Party,
        tos: Option<u8>,
        daemon: &mut Daemon,
    ) -> Option<u16> {
        let s = self.get(id)?;
        if let Some(leg) = &s.legs[party] {
            return Some(leg.port);
        }
        let leg = bind_leg(id, party, s.leg_ips[party], tos, daemon)?;
        let port = leg.port;
        let s = self.get_mut(id)?;
        s.legs[party] = Some(leg);
        if s.open_legs() == 2 {
            daemon.counters.sessions_complete += 1;
        }
        Some(port)
    }

    /// `n`: gives `party`'s open leg a fresh port pair and closes the old
    /// one at once, so media for the old pair stops; the old leg is kept
    /// when no pair is free. False when the leg was not open (nothing to
    /// renew: it opens as usual).
    pub fn reopen_leg(
        &mut self,
        id: SessionId,
        party: Party,
        tos: Option<u8>,
        daemon: &mut Daemon,
    ) -> Result<bool, &'static str> {
        let Some(s) = self.get(id) else {
            return Ok(false);
        };
        if s.legs[party].is_none() {
            return Ok(false);
        }
        let fresh =
            bind_leg(id, party, s.leg_ips[party], tos, daemon).ok_or("no free port pair")?;
        let Some(s) = self.get_mut(id) else {
            return Ok(false);
        };
        if let Some(old) = s.legs[party].replace(fresh) {
            release_leg(&old, daemon);
        }
        Ok(true)
    }

    /// `l`/`r` on an existing session: where `party`'s leg opens. A leg
    /// already open keeps its address unless it is about to be renewed.
    pub fn set_leg_ip(&mut self, id: SessionId, party: Party, ip: IpAddr, renewing: bool) {
        if let Some(s) = self.get_mut(id) {
            if s.legs[party].is_none() || renewing {
                s.leg_ips[party] = ip;
            }
        }
    }

    /// Ends a session for `why`: its sockets leave the poll sets and its
    /// ports return to the table, its recordings are finished, its record
    /// is logged (and appended to `-A`), each direction's quality report
    /// goes to the `--hep` collector, and a timeout is announced on the
    /// target the arming `U` chose. False when there is no such session.
    pub fn end(&mut self, id: SessionId, why: EndReason, daemon: &mut Daemon) -> bool {
        let Some(mut s) = self.remove(id, daemon) else {
            return false;
        };
        s.finish_recordings();
        let now = SystemTime::now();
        let record = s.call_record(why, now);
        rtpp_log!(Info, "{}", record.log_line());
        if let Some(file) = daemon.accounting.as_mut() {
            file.append(&record.json_line());
        }
        daemon.on_stream_end(&s.call_id, &s.tag, &record.quality);
        if let Some(hep) = daemon.hep.as_mut() {
            s.send_quality_reports(&record, hep, now);
        }
        if why == EndReason::Timeout {
            daemon.counters.sessions_timeout += 1;
            if let (Some((to, message)), Some(n)) = (s.timeout_message(), daemon.notifier.as_mut())
            {
                n.notify(to, &message);
            }
        }
        true
    }

    /// Ends every session (`X`, daemon exit).
    pub fn end_all(&mut self, why: EndReason, daemon: &mut Daemon) {
        for id in self.ids() {
            self.end(id, why, daemon);
        }
    }

    /// The once-a-second timer: recordings reach the disk, and sessions
    /// idle for `-T` end (and are announced).
    /// Moves the sockets that have long read nothing to a slower cadence
    /// (run once a tick).
    pub fn cool_idle(&mut self, now: Instant, poller: &mut Poller) {
        for s in self.slab.iter_mut().flatten() {
            for leg in s.legs.iter_mut().flatten() {
                leg.cool_if_idle(now, poller);
            }
        }
    }

    /// Puts a socket of a session moved to a slower cadence back on its
    /// own.
    pub fn warm(&mut self, id: SessionId, party: Party, stream: Stream, poller: &mut Poller) {
        if let Some(leg) = self.get_mut(id).and_then(|s| s.legs[party].as_mut()) {
            leg.warm(stream, poller);
        }
    }

    /// A command named the session: its sockets go back to their own
    /// cadences (see [`Leg::touch`]).
    pub fn touch(&mut self, id: SessionId, now: Instant, poller: &mut Poller) {
        if let Some(s) = self.get_mut(id) {
            for leg in s.legs.iter_mut().flatten() {
                leg.touch(now, poller);
            }
        }
    }

    pub fn expire(&mut self, cfg: &Config, now: Instant, daemon: &mut Daemon) {
        for id in self.ids() {
            let Some(s) = self.get_mut(id) else { continue };
            s.flush_recordings();
            if s.expires_in(cfg.max_ttl, cfg.independent_ttl, now)
                .is_zero()
            {
                self.end(id, EndReason::Timeout, daemon);
            }
        }
        if let Some(n) = daemon.notifier.as_mut() {
            n.flush();
        }
    }

    /// Takes back a session a `U` created but could give no leg: it never
    /// existed for the SIP proxy (the `U` answered `E10`), so it leaves no
    /// accounting record.
    pub fn discard(&mut self, id: SessionId, daemon: &mut Daemon) {
        self.remove(id, daemon);
    }

    /// Takes a session out of the table, its sockets out of the poll sets
    /// and its ports back to the port table.
    fn remove(&mut self, id: SessionId, daemon: &mut Daemon) -> Option<Session> {
        let session = self.slab.get_mut(id.0 as usize)?.take()?;
        for leg in session.legs.iter().flatten() {
            release_leg(leg, daemon);
        }
        if let Some(list) = self.by_call.get_mut(&session.call_id) {
            list.retain(|&x| x != id);
            if list.is_empty() {
                self.by_call.remove(&session.call_id);
            }
        }
        self.timed.retain(|&x| x != id);
        let c = &mut daemon.counters;
        c.sessions_destroyed += 1;
        c.total_duration += session.created.elapsed().as_secs_f64();
        c.add_packets(session.packet_counts());
        c.rtpa.add(&session.rtpa_total());
        c.players_destroyed += session.players.iter().flatten().count() as u64;
        if session.open_legs() == 2 {
            session.count_silence(c);
        }
        self.free_ids.push(id.0);
        self.active -= 1;
        Some(session)
    }

    /// Starts playing a prompt to `party`, replacing any prompt playing.
    pub(crate) fn start_player(&mut self, id: SessionId, party: Party, player: Player) {
        if let Some(s) = self.get_mut(id) {
            s.tally.players_created += 1;
            if s.players[party].replace(player).is_some() {
                s.tally.players_destroyed += 1;
            }
            self.mark_timed(id);
        }
    }

    /// Starts re-packetizing what `party` sends.
    pub fn start_resizer(&mut self, id: SessionId, party: Party, resizer: Resizer) {
        if let Some(s) = self.get_mut(id) {
            s.resizers[party] = Some(resizer);
            self.mark_timed(id);
        }
    }

    /// The RTP analysis of what `party` sends in a session.
    pub fn rtpa(&self, id: SessionId, party: Party) -> Option<RtpaStats> {
        Some(self.get(id)?.rtpa(party))
    }

    /// Starts catching the DTMF digits `party` sends in a session, reported
    /// as `TAG DIGIT VOLUME DURATION SIDE` lines to its notify target;
    /// with `hide` the event packets (payload type `payload_type`) are
    /// dropped instead of relayed. Asked again for the same party, only the
    /// payload type and `hide` change.
    pub fn catch_dtmf(
        &mut self,
        id: SessionId,
        party: Party,
        tag: Vec<u8>,
        payload_type: u8,
        hide: bool,
    ) -> Result<(), DtmfRefused> {
        let s = self.get_mut(id).ok_or(DtmfRefused::NoSession)?;
        if s.notify.is_none() {
            return Err(DtmfRefused::NoNotifyTarget);
        }
        if payload_type > 127 {
            return Err(DtmfRefused::BadPayloadType);
        }
        match &mut s.dtmf[party] {
            Some(c) => c.set_mode(payload_type, hide),
            None => s.dtmf[party] = Some(DtmfCatcher::new(tag, payload_type, hide)),
        }
        Ok(())
    }

    /// Puts a session on the list served on the clock (a re-packetizer
    /// started holding audio).
    pub fn mark_timed(&mut self, id: SessionId) {
        if !self.timed.contains(&id) {
            self.timed.push(id);
        }
    }

    /// Runs `serve` on every session with something on the clock; those
    /// left with nothing on it leave the list.
    pub fn serve_timed(&mut self, mut serve: impl FnMut(&mut Session)) {
        let mut i = 0;
        while let Some(&id) = self.timed.get(i) {
            let keep = match self.slab.get_mut(id.0 as usize).and_then(Option::as_mut) {
                Some(s) => {
                    serve(s);
                    s.is_timed()
                }
                None => false,
            };
            if keep {
                i += 1;
            } else {
                self.timed.swap_remove(i);
            }
        }
    }

    /// When the loop must wake next for something on the clock.
    pub fn next_due(&self) -> Option<Instant> {
        self.timed
            .iter()
            .filter_map(|&id| self.get(id))
            .filter_map(Session::next_due)
            .min()
    }
}

/// The party a command's from-tag names: the caller when it matched the
/// session's own tag, else the callee.
fn named_party(from_matched: bool) -> Party {
    if from_matched {
        Party::Caller
    } else {
        Party::Callee
    }
}

fn finish_recording(f: RecordFile) {
    match f.finish() {
        Ok(path) => rtpp_log!(Info, "recording {} finished", path.display()),
        Err(e) => rtpp_log!(Err, "finishing recording: {e}"),
    }
}

/// Opens a port pair for a leg on `ip` and puts its sockets in the poll
/// sets; None when no pair is free or the poll set is full.
fn bind_leg(
    id: SessionId,
    party: Party,
    ip: IpAddr,
    tos: Option<u8>,
    daemon: &mut Daemon,
) -> Option<Leg> {
    if !daemon.poller.has_room(1) {
        return None;
    }
    let (port, rtp, rtcp) = daemon.ports.allocate_pair(ip, tos)?;
    let carried = CarriedLeg {
        port,
        ip,
        sockets: ByStream::new(rtp, rtcp),
    };
    // Not refused while has_room held; the port is given back all the same.
    let leg = register_leg(id, party, carried, daemon).ok();
    if leg.is_none() {
        daemon.ports.release(port);
    }
    leg
}

/// Takes a leg's sockets out of the poll sets and gives its ports back.
fn release_leg(leg: &Leg, daemon: &mut Daemon) {
    for token in leg.tokens.iter() {
        daemon.poller.deregister(*token);
    }
    daemon.ports.release(leg.port);
}

/// A leg as a hand-over carries it: its sockets, not yet in the poll set.
pub struct CarriedLeg {
    pub port: u16,
    pub ip: IpAddr,
    pub sockets: ByStream<UdpSocket>,
}

impl Sessions {
    /// Adds a session that came in a hand-over at the end of the table, its
    /// legs into the poll set (their ports are taken out of the free list
    /// by the caller, all at once).
    /// Its recordings become this process's own only with
    /// [`Sessions::adopt_recordings`], once the whole state is in.
    pub fn restore(
        &mut self,
        mut s: Session,
        legs: ByParty<Option<CarriedLeg>>,
        daemon: &mut Daemon,
    ) -> Result<SessionId, String> {
        let id = SessionId(self.slab.len() as u32);
        let [caller, callee] = legs.into_array();
        for (party, leg) in [(Party::Caller, caller), (Party::Callee, callee)] {
            if let Some(l) = leg {
                s.legs[party] = Some(register_leg(id, party, l, daemon)?);
            }
        }
        self.by_call.entry(s.call_id.clone()).or_default().push(id);
        let timed = s.is_timed();
        self.slab.push(Some(s));
        self.active += 1;
        if timed {
            self.mark_timed(id);
        }
        Ok(id)
    }

    /// Makes the recordings of every restored session this process's own.
    pub fn adopt_recordings(&mut self) {
        for s in self.slab.iter_mut().flatten() {
            for rec in s.recorders_mut() {
                rec.adopt();
            }
        }
    }
}

/// Puts a leg's sockets in the poll sets, each on its stream's own cadence
/// (a carried leg too: what this process knows of a socket's rhythm and
/// silence starts now); on failure none stays registered.
fn register_leg(
    id: SessionId,
    party: Party,
    leg: CarriedLeg,
    daemon: &mut Daemon,
) -> Result<Leg, String> {
    let mut register = |stream: Stream| {
        let owner = Owner::Media {
            session: id,
            party,
            stream,
        };
        daemon
            .poller
            .register(leg.sockets[stream].as_raw_fd(), owner, home(stream))
    };
    let (rtp, rtcp) = (register(Stream::Rtp), register(Stream::Rtcp));
    let (Some(rtp), Some(rtcp)) = (rtp, rtcp) else {
        for token in [rtp, rtcp].into_iter().flatten() {
            daemon.poller.deregister(token);
        }
        return Err("too few open files for the carried sessions (-L)".into());
    };
    Ok(Leg {
        port: leg.port,
        ip: leg.ip,
        sockets: leg.sockets,
        tokens: ByStream::new(rtp, rtcp),
        pacing: Pacing::default(),
        rtcp_read: None,
        touched: Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtpp_network::PortTable;
    use crate::rtpp_poll::Poller;
    use crate::rtpp_util::Random;

    fn daemon(min: u16, max: u16, limit: usize) -> Daemon {
        let mut rng = Random::with_seed(2);
        Daemon::new(
            Poller::with_limit(limit),
            PortTable::new(min, max, &mut rng),
        )
    }

    fn ids(call: &[u8]) -> StreamIds<'_> {
        StreamIds {
            call_id: call,
            from_tag: b"f",
            to_tag: None,
        }
    }

    #[test]
    fn legs_stop_at_the_poll_limit() {
        let now = Instant::now();
        let mut d = daemon(40100, 40199, 40);
        // The unix control's 32 client places and its listener.
        for i in 0..33 {
            d.poller
                .register(-1, Owner::Control(i), Cadence::EveryPass)
                .unwrap();
        }
        let mut t = Sessions::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut legs = 0;
        for i in 0..20u8 {
            let id = t.create(&ids(&[i]), ByParty::both(ip), now, &mut d);
            if t.open_leg(id, Party::Caller, None, &mut d).is_none() {
                break;
            }
            legs += 1;
        }
        assert_eq!(legs, 7);
        assert_eq!(d.poller.len(Cadence::EveryPass), 40);
        // Ending sessions gives their places and ports back.
        t.end_all(EndReason::DeletedAll, &mut d);
        assert_eq!(d.poller.len(Cadence::EveryPass), 33);
        assert!(d.poller.is_empty(Cadence::Slow));
        assert_eq!(d.ports.free_pairs(), d.ports.total_pairs());
        assert_eq!(d.counters.sessions_destroyed, 8);
    }

    #[test]
    fn silent_sockets_move_to_slower_cadences_and_back() {
        let start = Instant::now();
        let mut d = daemon(40200, 40210, 100);
        let mut t = Sessions::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let id = t.create(&ids(b"quiet"), ByParty::both(ip), start, &mut d);
        t.open_leg(id, Party::Caller, None, &mut d).unwrap();
        let counts = |d: &Daemon| {
            [Cadence::EveryPass, Cadence::Slow, Cadence::Idle].map(|c| d.poller.len(c))
        };
        assert_eq!(counts(&d), [1, 1, 0]);
        t.cool_idle(start + Duration::from_secs(1), &mut d.poller);
        assert_eq!(counts(&d), [1, 1, 0], "not silent long enough yet");
        t.cool_idle(start + Duration::from_secs(3), &mut d.poller);
        assert_eq!(counts(&d), [0, 2, 0], "RTP on the RTCP clock");
        t.cool_idle(start + Duration::from_secs(11), &mut d.poller);
        assert_eq!(counts(&d), [0, 1, 1], "RTCP on the idle clock");
        t.cool_idle(start + Duration::from_secs(31), &mut d.poller);
        assert_eq!(counts(&d), [0, 0, 2], "RTP on the idle clock too");
        t.warm(id, Party::Caller, Stream::Rtp, &mut d.poller);
        t.warm(id, Party::Caller, Stream::Rtcp, &mut d.poller);
        assert_eq!(counts(&d), [1, 1, 0]);
        // A command touching the session puts its sockets back at once,
        // and they stay there as long as after a packet.
        t.cool_idle(start + Duration::from_secs(41), &mut d.poller);
        assert_eq!(counts(&d), [0, 0, 2]);
        t.touch(id, start + Duration::from_secs(41), &mut d.poller);
        assert_eq!(counts(&d), [1, 1, 0]);
        t.cool_idle(start + Duration::from_secs(42), &mut d.poller);
        assert_eq!(counts(&d), [1, 1, 0]);
        // A packet read just now keeps a socket where it is.
        let leg = t.get_mut(id).unwrap().legs[Party::Caller].as_mut().unwrap();
        let later = start + Duration::from_secs(60);
        leg.pacing.disturbed(later);
        leg.rtcp_read = Some(later);
        t.cool_idle(later + Duration::from_secs(1), &mut d.poller);
        assert_eq!(counts(&d), [1, 1, 0]);
        // Ending the session takes its sockets out of whatever set.
        t.cool_idle(later + Duration::from_secs(30), &mut d.poller);
        t.end_all(EndReason::DeletedAll, &mut d);
        assert_eq!(counts(&d), [0, 0, 0]);
    }

    #[test]
    fn ttl_modes() {
        let now = Instant::now();
        let mut d = daemon(40000, 40010, 100);
        let mut t = Sessions::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let id = t.create(&ids(b"c"), ByParty::both(ip), now, &mut d);
        let s = t.get_mut(id).unwrap();
        s.last_rx[Party::Caller] = now - Duration::from_secs(50);
        assert_eq!(s.expires_in(60, false, now), Duration::from_secs(60));
        assert_eq!(s.expires_in(60, true, now), Duration::from_secs(10));
        let left = s.ttl_left(60, now);
        assert_eq!((left[Party::Caller], left[Party::Callee]), (10, 60));
    }

    #[test]
    fn tags_match_media_numbers() {
        assert_eq!(match_tag(b"abc;1", b"abc;1"), TagMatch::Exact);
        assert_eq!(match_tag(b"abc;1", b"abc"), TagMatch::Loose);
        assert_eq!(match_tag(b"abc", b"abc;2"), TagMatch::Loose);
        assert_eq!(match_tag(b"abc;1", b"abc;2"), TagMatch::None);
        assert_eq!(match_tag(b"abc;1", b"abd;1"), TagMatch::None);
        assert_eq!(match_tag(b"abc", b"abd"), TagMatch::None);
    }
}
