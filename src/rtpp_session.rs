//! Sessions: one per media stream of a call (Call-ID + from-tag with its
//! `;N` media number), each with an RTP stream and its RTCP twin, two legs
//! (the relay's socket pair facing each party), latching state per party,
//! idle timers and counters. The table also owns the poll set, because every
//! media socket's poll slot is bookkept here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::rtp_resizer::Resizer;
use crate::rtp_server::Player;
use crate::rtpp_account::AccountFile;
use crate::rtpp_command::{match_tag, StreamIds, TagMatch};
use crate::rtpp_copy::RemoteCopy;
use crate::rtpp_defines::UPDATE_WINDOW;
use crate::rtpp_network::{PollSet, PortTable};
use crate::rtpp_record::RecordFile;
use crate::rtpp_util::Random;

/// Index of the RTP stream / socket of a leg.
pub const RTP: usize = 0;
/// Index of the RTCP twin.
pub const RTCP: usize = 1;
/// The offerer (the from-tag party of the creating `U`).
pub const CALLER: usize = 0;
/// The answerer.
pub const CALLEE: usize = 1;

/// Who a poll slot belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The control socket (listening unix socket or UDP socket).
    Control,
    /// A connected unix control client, by its index.
    Client(usize),
    /// A media socket: packets on it come from `party`.
    Media { session: u32, party: u8, kind: u8 },
}

/// The relay's RTP/RTCP socket pair facing one party.
#[derive(Debug)]
pub struct Leg {
    pub port: u16,
    pub ip: IpAddr,
    pub sockets: [UdpSocket; 2],
    pub slots: [usize; 2],
}

/// What latching decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the party's known address.
    Accept,
    /// Accepted, and the party's address was set from this packet's source.
    Latched,
    /// From a stranger: dropped.
    Reject,
}

/// One party of one stream: where to send to it and how it was learned.
#[derive(Debug, Clone, Default)]
pub struct Party {
    /// Where media for this party goes (pre-filled, guessed or latched).
    pub addr: Option<SocketAddr>,
    /// Locked to the source of a packet it sent.
    pub latched: bool,
    /// A packet proved the signalled address wrong (NAT): later signalled
    /// addresses are not trusted to replace the latched one.
    pub untrusted: bool,
    /// `a`: accept any source port from the known host, send to the
    /// signalled address.
    pub asymmetric: bool,
    /// After a re-signalling U/L, a new source may take over until then.
    pub update_until: Option<Instant>,
    /// The address a U/L last signalled for this party (its SDP).
    pub signalled: Option<SocketAddr>,
    /// The party was taken by a source other than `signalled`: until then
    /// a packet from the signalled address itself takes it back.
    pub reclaim_until: Option<Instant>,
    /// Packets accepted from this party.
    pub packets: u64,
    /// Bytes accepted from this party.
    pub bytes: u64,
    /// RTP sequence numbers seen, for a loss estimate.
    pub seq: SeqTracker,
}

/// Tracks RTP sequence numbers (RFC 3550 A.1, simplified) to estimate loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqTracker {
    started: bool,
    base: u32,
    /// Highest extended sequence number seen.
    max: u32,
    received: u64,
}

impl SeqTracker {
    /// Notes one packet's sequence number.
    pub fn observe(&mut self, seq: u16) {
        let seq = u32::from(seq);
        if !self.started {
            self.started = true;
            self.base = seq;
            self.max = seq;
            self.received = 1;
            return;
        }
        self.received += 1;
        let cycles = self.max & !0xffff;
        let low = self.max & 0xffff;
        // A small step forward (also across a wrap) advances; anything else
        // is reordering or a duplicate and does not move the maximum.
        let ext = if seq < low && low - seq > 0x8000 {
            cycles.wrapping_add(0x1_0000) | seq
        } else if seq > low && seq - low > 0x8000 {
            return;
        } else {
            cycles | seq
        };
        if ext > self.max {
            self.max = ext;
        }
    }

    /// Packets expected from the sequence numbers minus packets received.
    pub fn lost(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let expected = u64::from(self.max.wrapping_sub(self.base)) + 1;
        expected.saturating_sub(self.received)
    }
}

impl Party {
    /// Decides whether a packet from `src` is this party's, latching it to
    /// the first source it sends from. Once latched, only a U/L that
    /// re-signals the party opens a short window for a new source; a packet
    /// from the current address closes it, so a stranger cannot take over a
    /// party that keeps sending (PROTOCOL.md: "RTP bleed").
    ///
    /// A stranger that sends first (it raced the real party to the relay
    /// port) holds the party only provisionally: for [`UPDATE_WINDOW`] a
    /// packet from exactly the signalled address takes it back, and the
    /// party is then locked to that address. The signalled address is the
    /// SIP proxy's word, and a forger of it could not receive the media
    /// anyway, so this hands nothing to anyone the SDP did not name.
    pub fn accept(&mut self, src: SocketAddr, now: Instant) -> Verdict {
        if self.asymmetric {
            return match self.addr {
                None => {
                    self.addr = Some(src);
                    Verdict::Latched
                }
                Some(a) if a.ip() == src.ip() => Verdict::Accept,
                Some(_) => Verdict::Reject,
            };
        }
        if !self.latched {
            if self.addr.is_some_and(|a| a != src) {
                self.untrusted = true;
            }
            self.latch(src, now);
            return Verdict::Latched;
        }
        if self.addr == Some(src) {
            self.update_until = None;
            return Verdict::Accept;
        }
        if self.update_until.is_some_and(|t| now < t) {
            self.untrusted = true;
            self.latch(src, now);
            return Verdict::Latched;
        }
        if self.signalled == Some(src) && self.reclaim_until.is_some_and(|t| now < t) {
            self.untrusted = false;
            self.latch(src, now);
            return Verdict::Latched;
        }
        Verdict::Reject
    }

    /// Locks the party to `src`; see `accept` for when the signalled
    /// address may still take it back.
    fn latch(&mut self, src: SocketAddr, now: Instant) {
        self.addr = Some(src);
        self.latched = true;
        self.update_until = None;
        self.reclaim_until = match self.signalled {
            Some(s) if s != src => Some(now + UPDATE_WINDOW),
            _ => None,
        };
    }

    /// Applies the address a U/L signalled for this party.
    pub fn signal(&mut self, remote: Option<SocketAddr>, asymmetric: bool, now: Instant) {
        self.asymmetric = asymmetric;
        let Some(remote) = remote else {
            return;
        };
        self.signalled = Some(remote);
        if asymmetric || !self.latched {
            self.addr = Some(remote);
        } else {
            if !self.untrusted {
                self.addr = Some(remote);
            }
            self.update_until = Some(now + UPDATE_WINDOW);
        }
        // The party is where its SDP now says: nothing left to take back.
        // A window left open would let a later re-signalled address take
        // the party after it spoke and closed the update window.
        if self.addr == Some(remote) {
            self.reclaim_until = None;
        }
    }

    /// Pre-fills a guessed address (RTCP = RTP port + 1) unless latched.
    pub fn guess(&mut self, addr: SocketAddr) {
        if !self.latched && !self.asymmetric {
            self.addr = Some(addr);
        }
    }
}

/// The RTP stream or its RTCP twin of a session.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub parties: [Party; 2],
    /// Every packet read from the stream's sockets, strangers' included.
    pub received: u64,
    pub relayed: u64,
    pub dropped: u64,
}

/// Daemon-wide counters (the `G` command).
#[derive(Debug, Clone, Default)]
pub struct Counters {
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
}

impl Counters {
    /// Adds a session's packet counts.
    pub fn add_session(&mut self, s: &Session) {
        for st in &s.streams {
            self.packets_received += st.received;
            self.packets_relayed += st.relayed;
            self.packets_dropped += st.dropped;
        }
        self.packets_played += s.played;
    }
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
    pub legs: [Option<Leg>; 2],
    /// Where each leg is (or will be) bound.
    pub leg_ips: [IpAddr; 2],
    /// `[RTP, RTCP]`.
    pub streams: [Stream; 2],
    pub strong: bool,
    pub weak: [bool; 2],
    /// Payload types each party offered with `c`.
    pub codecs: [Option<Box<[u8]>>; 2],
    /// Last RTP packet (or signalling) from each party, for the idle timeout.
    pub last_rx: [Instant; 2],
    pub created: Instant,
    /// What each party sends, recorded: `recorders[kind][party]`.
    pub recorders: [[Option<RecordFile>; 2]; 2],
    /// `C ... udp:HOST:PORT`: copies of what each party sends.
    pub copies: [Option<RemoteCopy>; 2],
    /// Timeout notification armed by `U ... NOTIFY_SOCKET [NOTIFY_TAG]`:
    /// `Some(None)` sends the ports, `Some(Some(tag))` the tag.
    pub notify: Option<Option<Box<[u8]>>>,
    /// `players[p]` plays a prompt to party `p`; media to it is held back.
    pub players: [Option<Player>; 2],
    /// `resizers[p]` re-packetizes what party `p` sends (`z`).
    pub resizers: [Option<Resizer>; 2],
    /// Prompt packets sent.
    pub played: u64,
}

impl Session {
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
}

impl Session {
    /// Remaining idle time of each party's direction.
    pub fn ttl_left(&self, max_ttl: u32, now: Instant) -> [u64; 2] {
        // Whole seconds idle, so a fresh session shows the full TTL.
        self.last_rx
            .map(|t| u64::from(max_ttl).saturating_sub(now.saturating_duration_since(t).as_secs()))
    }

    /// Remaining time before the session expires: when both directions are
    /// idle, or with `-i` when either is.
    pub fn expires_in(&self, max_ttl: u32, independent: bool, now: Instant) -> Duration {
        let ttl = Duration::from_secs(u64::from(max_ttl));
        let left = self
            .last_rx
            .map(|t| ttl.saturating_sub(now.saturating_duration_since(t)));
        if independent {
            left[0].min(left[1])
        } else {
            left[0].max(left[1])
        }
    }

    /// Local port of a leg, 0 when not allocated yet.
    pub fn port(&self, party: usize) -> u16 {
        self.legs[party].as_ref().map_or(0, |l| l.port)
    }
}

/// The session table: sessions by id, by Call-ID, the port table and the
/// poll set of every socket.
pub struct Sessions {
    /// Control socket(s) and every RTP socket: polled every pass.
    pub polls: PollSet<Owner>,
    /// Every RTCP socket: a few packets per call every few seconds, so
    /// polled on a slower cadence, which halves the cost of the hot poll.
    pub rtcp_polls: PollSet<Owner>,
    pub ports: PortTable,
    slab: Vec<Option<Session>>,
    free_ids: Vec<u32>,
    by_call: HashMap<Box<[u8]>, Vec<u32>>,
    /// Sessions created since start.
    pub created_total: u64,
    active: usize,
    /// Counters of ended sessions and of commands.
    pub totals: Counters,
    /// Sessions with something on the clock (players), served every pass.
    pub timed: Vec<u32>,
    /// SSRCs, sequence numbers and timestamps of generated streams.
    pub rng: Random,
    /// Graceful drain (SIGUSR1): no new sessions; see `Reply::Silent`.
    pub draining: bool,
    /// Most entries a poll set may have: poll(2) fails with EINVAL when
    /// asked for more than the open-files limit, and the unix control's 32
    /// client slots count whether open or not. With a low `-L` the RTP
    /// set could pass the limit while descriptors were still free, and
    /// every poll after that failed: the daemon went deaf and spun.
    pub max_polled: usize,
    /// `-A`: where each ended session's JSON record is appended.
    pub accounting: Option<AccountFile>,
}

impl Sessions {
    /// An empty table over a port range.
    pub fn new(ports: PortTable) -> Sessions {
        Sessions {
            polls: PollSet::new(),
            rtcp_polls: PollSet::new(),
            ports,
            slab: Vec::new(),
            free_ids: Vec::new(),
            by_call: HashMap::new(),
            created_total: 0,
            active: 0,
            totals: Counters::default(),
            timed: Vec::new(),
            rng: Random::new(),
            draining: false,
            max_polled: usize::try_from(crate::rtpp_util::nofile_limit()).unwrap_or(usize::MAX),
            accounting: None,
        }
    }

    /// Puts a session on the list served on the clock.
    pub fn mark_timed(&mut self, id: u32) {
        if !self.timed.contains(&id) {
            self.timed.push(id);
        }
    }

    /// Live sessions.
    pub fn active(&self) -> usize {
        self.active
    }

    /// A session by id.
    pub fn get(&self, id: u32) -> Option<&Session> {
        self.slab.get(id as usize).and_then(Option::as_ref)
    }

    /// A session by id, mutable.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Session> {
        self.slab.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Counters of the whole daemon: ended sessions plus live ones.
    pub fn counters(&self) -> Counters {
        let mut c = self.totals.clone();
        for s in self.slab.iter().flatten() {
            c.add_session(s);
        }
        c
    }

    /// Ids of every live session, in table order.
    pub fn ids(&self) -> Vec<u32> {
        self.slab
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Ids of the sessions of a call.
    pub fn of_call(&self, call_id: &[u8]) -> &[u32] {
        self.by_call.get(call_id).map_or(&[], Vec::as_slice)
    }

    /// Finds the stream a command names: by from-tag, else by to-tag, exact
    /// media numbers preferred. Returns the id and whether the from-tag
    /// matched (the from-tag party is then the caller).
    pub fn find(&self, ids: &StreamIds<'_>) -> Option<(u32, bool)> {
        let mut best: Option<(TagMatch, bool, u32)> = None;
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
        best.map(|(_, from, id)| (id, from))
    }

    /// Every stream a command names (D, R): all media numbers of the tag
    /// when it has none. Each with whether the from-tag matched.
    pub fn find_all(&self, ids: &StreamIds<'_>) -> Vec<(u32, bool)> {
        self.of_call(ids.call_id)
            .iter()
            .filter_map(|&id| {
                let s = self.get(id)?;
                if match_tag(&s.tag, ids.from_tag) != TagMatch::None {
                    Some((id, true))
                } else if ids
                    .to_tag
                    .is_some_and(|t| match_tag(&s.tag, t) != TagMatch::None)
                {
                    Some((id, false))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Adds a session with no legs yet; returns its id.
    pub fn create(
        &mut self,
        call_id: &[u8],
        tag: &[u8],
        leg_ips: [IpAddr; 2],
        now: Instant,
    ) -> u32 {
        let session = Session {
            call_id: call_id.into(),
            tag: tag.into(),
            to_tag: None,
            legs: [None, None],
            leg_ips,
            streams: Default::default(),
            strong: false,
            weak: [false; 2],
            codecs: [None, None],
            last_rx: [now; 2],
            created: now,
            recorders: Default::default(),
            copies: [None, None],
            notify: None,
            players: [None, None],
            resizers: [None, None],
            played: 0,
        };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.slab[id as usize] = Some(session);
                id
            }
            None => {
                self.slab.push(Some(session));
                (self.slab.len() - 1) as u32
            }
        };
        self.by_call.entry(call_id.into()).or_default().push(id);
        self.created_total += 1;
        self.active += 1;
        id
    }

    /// Opens the socket pair of a party's leg if it has none; returns its
    /// port, or `None` when the port range is exhausted (or the poll sets
    /// are as large as the open-files limit lets poll(2) take).
    pub fn ensure_leg(&mut self, id: u32, party: usize, tos: Option<u8>) -> Option<u16> {
        let ip = {
            let s = self.get(id)?;
            if let Some(leg) = &s.legs[party] {
                return Some(leg.port);
            }
            s.leg_ips[party]
        };
        if self.polls.len().max(self.rtcp_polls.len()) >= self.max_polled {
            return None;
        }
        let (port, rtp, rtcp) = self.ports.allocate_pair(ip, tos)?;
        let slots = [RTP, RTCP].map(|kind| {
            let fd = if kind == RTP {
                rtp.as_raw_fd()
            } else {
                rtcp.as_raw_fd()
            };
            self.poll_set(kind).add(
                fd,
                Owner::Media {
                    session: id,
                    party: party as u8,
                    kind: kind as u8,
                },
            )
        });
        let leg = Leg {
            port,
            ip,
            sockets: [rtp, rtcp],
            slots,
        };
        self.get_mut(id)?.legs[party] = Some(leg);
        Some(port)
    }

    /// Removes a session: its sockets leave the poll set, its ports return
    /// to the table. Returns it so the caller can finish what it owned.
    pub fn remove(&mut self, id: u32) -> Option<Session> {
        // Remove this session's poll slots highest first: the entry moved
        // into a freed slot is then never one of ours, so every fix-up
        // below targets another session.
        for kind in [RTP, RTCP] {
            let mut slots: Vec<usize> = self
                .get(id)?
                .legs
                .iter()
                .flatten()
                .map(|l| l.slots[kind])
                .collect();
            slots.sort_unstable_by(|a, b| b.cmp(a));
            for slot in slots {
                self.unwatch(kind, slot);
            }
        }
        let session = self.slab.get_mut(id as usize)?.take()?;
        for leg in session.legs.iter().flatten() {
            self.ports.release(leg.port);
        }
        if let Some(list) = self.by_call.get_mut(&session.call_id) {
            list.retain(|&x| x != id);
            if list.is_empty() {
                self.by_call.remove(&session.call_id);
            }
        }
        self.timed.retain(|&x| x != id);
        self.totals.sessions_destroyed += 1;
        self.totals.add_session(&session);
        self.free_ids.push(id);
        self.active -= 1;
        Some(session)
    }

    /// The poll set holding sockets of a kind (RTP or RTCP).
    pub fn poll_set(&mut self, kind: usize) -> &mut PollSet<Owner> {
        if kind == RTP {
            &mut self.polls
        } else {
            &mut self.rtcp_polls
        }
    }

    fn unwatch(&mut self, set: usize, slot: usize) {
        if let Some(Owner::Media {
            session,
            party,
            kind,
        }) = self.poll_set(set).remove(slot)
        {
            if let Some(leg) = self
                .get_mut(session)
                .and_then(|s| s.legs[party as usize].as_mut())
            {
                leg.slots[kind as usize] = slot;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_packet_latches_even_from_prefilled_address() {
        let now = Instant::now();
        let mut p = Party::default();
        p.signal(Some(addr("10.0.0.1:4000")), false, now);
        assert!(!p.latched);
        assert_eq!(p.accept(addr("10.0.0.1:4000"), now), Verdict::Latched);
        assert!(p.latched);
        // The classic daemon left this party open: a stranger took over.
        assert_eq!(p.accept(addr("10.6.6.6:6666"), now), Verdict::Reject);
        assert_eq!(p.addr, Some(addr("10.0.0.1:4000")));
    }

    #[test]
    fn signalled_address_takes_back_a_party_a_stranger_raced_to() {
        let now = Instant::now();
        let mut p = Party::default();
        p.signal(Some(addr("10.0.0.1:4000")), false, now);
        // The stranger's packet arrives first and latches.
        assert_eq!(p.accept(addr("10.6.6.6:6666"), now), Verdict::Latched);
        // The real party speaks from the address its SDP named: it wins,
        // and from then on the stranger is a stranger.
        let later = now + Duration::from_millis(300);
        assert_eq!(p.accept(addr("10.0.0.1:4000"), later), Verdict::Latched);
        assert_eq!(p.addr, Some(addr("10.0.0.1:4000")));
        assert!(!p.untrusted);
        assert_eq!(p.accept(addr("10.6.6.6:6666"), later), Verdict::Reject);
        assert_eq!(p.accept(addr("10.0.0.1:4000"), later), Verdict::Accept);
        // Only the signalled address may take it back, and only for a while.
        let mut q = Party::default();
        q.signal(Some(addr("192.168.1.2:4000")), false, now);
        assert_eq!(q.accept(addr("1.2.3.4:5000"), now), Verdict::Latched);
        assert_eq!(q.accept(addr("10.6.6.6:6666"), now), Verdict::Reject);
        let late = now + UPDATE_WINDOW + Duration::from_millis(1);
        assert_eq!(q.accept(addr("192.168.1.2:4000"), late), Verdict::Reject);
        assert_eq!(q.addr, Some(addr("1.2.3.4:5000")));
    }

    /// Found by the `latch` fuzz target: a re-INVITE naming the address the
    /// party was latched to left the take-back window of the first latch
    /// open, so the next re-signalled address could take the party even
    /// after the party spoke and closed the update window.
    #[test]
    fn resignal_to_the_latched_address_closes_the_take_back_window() {
        let now = Instant::now();
        let (a, s, b) = (
            addr("10.0.0.1:4000"),
            addr("1.2.3.4:5000"),
            addr("10.0.0.9:4000"),
        );
        let mut p = Party::default();
        p.signal(Some(a), false, now);
        assert_eq!(p.accept(s, now), Verdict::Latched);
        p.signal(Some(s), false, now);
        assert_eq!(p.reclaim_until, None);
        assert_eq!(p.accept(s, now), Verdict::Accept);
        p.signal(Some(b), false, now);
        // The party speaks from where it is: the update window closes.
        assert_eq!(p.accept(s, now), Verdict::Accept);
        assert_eq!(p.accept(b, now), Verdict::Reject);
        assert_eq!(p.addr, Some(s));
    }

    #[test]
    fn first_packet_corrects_prefill_once() {
        let now = Instant::now();
        let mut p = Party::default();
        p.signal(Some(addr("192.168.1.2:4000")), false, now);
        assert_eq!(p.accept(addr("1.2.3.4:5000"), now), Verdict::Latched);
        assert!(p.untrusted);
        assert_eq!(p.accept(addr("1.2.3.4:5001"), now), Verdict::Reject);
        assert_eq!(p.accept(addr("1.2.3.4:5000"), now), Verdict::Accept);
    }

    #[test]
    fn resignal_opens_window_until_party_speaks() {
        let now = Instant::now();
        let mut p = Party::default();
        assert_eq!(p.accept(addr("1.2.3.4:5000"), now), Verdict::Latched);
        p.signal(Some(addr("192.168.1.2:4000")), false, now);
        // untrusted after the NAT correction? no: nothing was pre-filled
        assert_eq!(p.addr, Some(addr("192.168.1.2:4000")));
        assert_eq!(p.accept(addr("1.2.3.4:5000"), now), Verdict::Latched);
        assert_eq!(p.accept(addr("9.9.9.9:9"), now), Verdict::Reject);

        let mut q = Party::default();
        q.accept(addr("1.2.3.4:5000"), now);
        q.signal(Some(addr("1.2.3.4:5000")), false, now);
        assert_eq!(q.accept(addr("1.2.3.4:5000"), now), Verdict::Accept);
        // The party spoke from its address: the window is closed.
        assert_eq!(q.accept(addr("9.9.9.9:9"), now), Verdict::Reject);

        let mut r = Party::default();
        r.accept(addr("1.2.3.4:5000"), now);
        r.signal(None, false, now);
        r.signal(Some(addr("1.2.3.4:5000")), false, now);
        let later = now + UPDATE_WINDOW + Duration::from_millis(1);
        assert_eq!(r.accept(addr("5.5.5.5:5"), later), Verdict::Reject);
    }

    #[test]
    fn untrusted_party_keeps_latched_address_on_resignal() {
        let now = Instant::now();
        let mut p = Party::default();
        p.signal(Some(addr("192.168.1.2:4000")), false, now);
        p.accept(addr("1.2.3.4:5000"), now);
        p.signal(Some(addr("192.168.1.2:4000")), false, now);
        assert_eq!(p.addr, Some(addr("1.2.3.4:5000")));
    }

    #[test]
    fn asymmetric_accepts_host_any_port() {
        let now = Instant::now();
        let mut p = Party::default();
        p.signal(Some(addr("10.0.0.1:4000")), true, now);
        assert_eq!(p.accept(addr("10.0.0.1:4999"), now), Verdict::Accept);
        assert_eq!(p.addr, Some(addr("10.0.0.1:4000")));
        assert_eq!(p.accept(addr("10.0.0.2:4000"), now), Verdict::Reject);
    }

    #[test]
    fn loss_estimate_follows_sequence_numbers() {
        let mut t = SeqTracker::default();
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 3, 2, 2] {
            t.observe(seq);
        }
        // 65530..=3 is 10 packets; 65532, 65534 missing; one duplicate.
        assert_eq!(t.lost(), 1);
        let mut u = SeqTracker::default();
        for seq in 100..200u16 {
            if seq % 10 != 0 {
                u.observe(seq);
            }
        }
        assert_eq!(u.lost(), 9);
    }

    #[test]
    fn poll_sets_never_pass_the_open_files_limit() {
        let now = Instant::now();
        let mut rng = crate::rtpp_util::Random::with_seed(2);
        let mut t = Sessions::new(PortTable::new(40100, 40199, &mut rng));
        // The unix control's 32 client slots and its listener.
        for _ in 0..33 {
            t.polls.add(-1, Owner::Control);
        }
        t.max_polled = 40;
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut legs = 0;
        for i in 0..20u8 {
            let id = t.create(&[i], b"f", [ip, ip], now);
            if t.ensure_leg(id, CALLER, None).is_none() {
                break;
            }
            legs += 1;
        }
        assert_eq!(legs, 7);
        assert_eq!(t.polls.len(), 40);
    }

    #[test]
    fn ttl_modes() {
        let now = Instant::now();
        let mut rng = crate::rtpp_util::Random::with_seed(1);
        let mut t = Sessions::new(PortTable::new(40000, 40010, &mut rng));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let id = t.create(b"c", b"f", [ip, ip], now);
        let s = t.get_mut(id).unwrap();
        s.last_rx[0] = now - Duration::from_secs(50);
        assert_eq!(s.expires_in(60, false, now), Duration::from_secs(60));
        assert_eq!(s.expires_in(60, true, now), Duration::from_secs(10));
        assert_eq!(s.ttl_left(60, now), [10, 60]);
    }
}
