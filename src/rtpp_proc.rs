//! The packet path: for each ready media socket, read, latch, observe,
//! forward.
//!
//! `main`'s loop polls ([`crate::rtpp_poll`]) and hands the ready entries
//! to [`relay_ready`]; everything from there to `sendto(2)` is in this
//! file, except the latching decision, which is `Peer::accept` in
//! `rtpp_session`, and the observers of an accepted packet: the sequence
//! analysis (`rtpp_analyzer`), the quality meter (`rtpp_quality`, RTP and
//! RTCP) and DTMF catching (`rtpp_dtmf`).
//! Nothing here allocates: the receive buffers are the caller's and every
//! decision is a few field updates on the session.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

use crate::rtp;
use crate::rtp_resizer::{Enqueued, Resizer};
use crate::rtp_server::{Next, MAX_PACKET_LEN};
use crate::rtpp_defines::{Party, SessionId, Stream, LBR_THRS};
use crate::rtpp_hep::HepSender;
use crate::rtpp_log;
use crate::rtpp_network::RecvBatch;
use crate::rtpp_notify::Notifier;
use crate::rtpp_poll::{Event, Owner, Poller, Token};
use crate::rtpp_quality;
use crate::rtpp_session::{home, Session, Sessions, Verdict};

/// What a pass of relaying changes in the poll sets, applied once the
/// pass's events are no longer borrowed: sockets whose stream keeps a
/// steady rhythm rest until their next packet is near (`rtpp_pacing`),
/// and sockets moved to a slower cadence for their silence that received
/// again go back to their own.
#[derive(Debug, Default)]
pub struct PollChanges {
    rests: Vec<(Token, Instant)>,
    warm: Vec<(SessionId, Party, Stream)>,
}

impl PollChanges {
    /// Room for a busy pass up front, so that the packet path does not
    /// allocate.
    pub fn with_capacity(n: usize) -> PollChanges {
        PollChanges {
            rests: Vec::with_capacity(n),
            warm: Vec::with_capacity(n),
        }
    }

    /// Drops what was collected (at shutdown, where nothing may rest).
    pub fn clear(&mut self) {
        self.rests.clear();
        self.warm.clear();
    }

    pub fn apply(&mut self, sessions: &mut Sessions, poller: &mut Poller) {
        for (token, until) in self.rests.drain(..) {
            poller.rest(token, until);
        }
        for (id, party, stream) in self.warm.drain(..) {
            sessions.warm(id, party, stream, poller);
        }
    }
}

/// Relays from every ready media socket of one poll; returns whether any
/// media socket was ready. Caught DTMF digits go to `notifier`, RTCP to
/// `hep` when it mirrors RTCP (`--hep-rtcp`); what the poll sets should
/// change goes to `changes`.
#[allow(clippy::too_many_arguments)]
pub fn relay_ready(
    sessions: &mut Sessions,
    events: &[Event],
    double_small: bool,
    now: Instant,
    batch: &mut RecvBatch,
    notifier: &mut Option<Notifier>,
    hep: &mut Option<HepSender>,
    changes: &mut PollChanges,
) -> bool {
    let mut media = false;
    for event in events {
        if let Owner::Media {
            session,
            party,
            stream,
        } = event.owner
        {
            media = true;
            let from = Source {
                session,
                party,
                stream,
            };
            let pass = Pass {
                double_small,
                now,
                notifier: &mut *notifier,
                hep: hep.as_mut().filter(|h| h.mirrors_rtcp()),
            };
            // What a socket holds the moment its rest ends came early:
            // that is not the rhythm, and more may be queued behind it.
            let lone = drain_socket(sessions, from, event.busy, batch, pass) && !event.early;
            let silent = event.token.cadence() != home(stream);
            if silent {
                changes.warm.push((session, party, stream));
            }
            match stream {
                // The first packet after a silence: no rhythm yet.
                Stream::Rtp if silent => {
                    pace(sessions, from, false, now);
                }
                Stream::Rtp => {
                    if let Some(until) = pace(sessions, from, lone, now) {
                        changes.rests.push((event.token, until));
                    }
                }
                Stream::Rtcp => {
                    if let Some(leg) = sessions
                        .get_mut(session)
                        .and_then(|s| s.legs[party].as_mut())
                    {
                        leg.rtcp_read = Some(now);
                    }
                }
            }
        }
    }
    media
}

/// Times a read on an RTP socket: `lone` when it found one datagram and
/// no more were expected. Returns until when the socket may rest.
fn pace(sessions: &mut Sessions, from: Source, lone: bool, now: Instant) -> Option<Instant> {
    let leg = sessions.get_mut(from.session)?.legs[from.party].as_mut()?;
    if lone {
        leg.pacing.lone_packet(now)
    } else {
        leg.pacing.disturbed(now);
        None
    }
}

/// Where packets read from one socket come from.
#[derive(Debug, Clone, Copy)]
struct Source {
    session: SessionId,
    party: Party,
    stream: Stream,
}

/// What relaying a packet needs besides the session: the `-2` option, the
/// time of this pass, where caught DTMF digits are reported, and where
/// RTCP is mirrored (`--hep-rtcp`; `None` without it).
pub struct Pass<'a> {
    pub double_small: bool,
    pub now: Instant,
    pub notifier: &'a mut Option<Notifier>,
    pub hep: Option<&'a mut HepSender>,
}

/// Reads the packets queued on one media socket and relays each to the
/// other party; true when one plain read found exactly one datagram.
fn drain_socket(
    sessions: &mut Sessions,
    from: Source,
    busy: bool,
    batch: &mut RecvBatch,
    mut pass: Pass<'_>,
) -> bool {
    let Some(s) = sessions.get_mut(from.session) else {
        return false;
    };
    let Some(leg) = &s.legs[from.party] else {
        return false;
    };
    // A call's stream brings one packet per pass: one plain read, no
    // batch set-up and no second look that would only find EAGAIN. A
    // socket ready in consecutive passes holds more, and one batched read
    // takes up to RECV_BATCH; the rest waits for the next pass, so one
    // busy stream cannot starve the others. An error (WouldBlock, or a
    // queued ICMP error now consumed) just means nothing to relay now.
    let fd = leg.sockets[from.stream].as_raw_fd();
    let n = if busy {
        batch.recv(fd)
    } else {
        batch.recv_one(fd)
    }
    .unwrap_or(0);
    for i in 0..n {
        let Some((packet, src)) = batch.get(i) else {
            break;
        };
        relay_packet(s, from.party, from.stream, src, packet, &mut pass);
    }
    // A re-packetizer holding audio must be served on the clock.
    if s.resizers[from.party]
        .as_ref()
        .is_some_and(|r| r.next_due().is_some())
    {
        sessions.mark_timed(from.session);
    }
    !busy && n == 1
}

/// Latches and forwards one packet that arrived from `party`.
pub fn relay_packet(
    s: &mut Session,
    party: Party,
    stream: Stream,
    src: SocketAddr,
    packet: &[u8],
    pass: &mut Pass<'_>,
) {
    let (double_small, now) = (pass.double_small, pass.now);
    let st = &mut s.streams[stream];
    st.received += 1;
    match st.peers[party].accept(src, now) {
        Verdict::Reject => {
            st.dropped += 1;
            return;
        }
        Verdict::Latched => {
            rtpp_log!(Info, "{party}'s address filled in: {src} ({stream})");
            if stream == Stream::Rtp {
                if let Some(port) = src.port().checked_add(1) {
                    s.streams[Stream::Rtcp].peers[party].guess(SocketAddr::new(src.ip(), port));
                }
            }
        }
        Verdict::Accept => {}
    }
    let from = &mut s.streams[stream].peers[party];
    from.packets += 1;
    from.bytes += packet.len() as u64;
    if stream == Stream::Rtcp {
        rtpp_quality::observe_rtcp(&mut s.quality, party, packet, now);
    }
    let hidden = stream == Stream::Rtp && observe_rtp(s, party, packet, pass);
    record(s, party, stream, src, packet);
    if stream == Stream::Rtcp {
        mirror_rtcp(s, party, src, packet, pass);
    }
    if hidden {
        // Recorded as the party sent it, but not relayed (DTMF `h`).
        s.streams[stream].dropped += 1;
        return;
    }
    if stream == Stream::Rtp && s.resizers[party].is_some() {
        resize(s, party, packet, double_small, now);
        return;
    }
    forward(s, party, stream, packet, double_small);
}

/// What an accepted RTP packet from `party` tells, its header parsed once:
/// the sequence analysis (`rtpa_*`), the quality meter (RFC 3550 counts,
/// jitter, gaps; the accounting record's loss estimate), and any DTMF
/// digit it completes. True when DTMF catching hides it.
fn observe_rtp(s: &mut Session, party: Party, packet: &[u8], pass: &mut Pass<'_>) -> bool {
    s.last_rx[party] = pass.now;
    let Ok(header) = rtp::parse(packet) else {
        s.analyzers[party].parse_error();
        return false;
    };
    // The analyzer's window of seen numbers finds duplicates for both.
    let dup = s.analyzers[party].observe(&header);
    s.quality[party].rtp.observe(&header, pass.now, dup);
    s.catch_dtmf_packet(party, &header, packet, pass.notifier)
}

/// Sends a packet from `party` on to the other party, or counts it dropped
/// (no destination yet, a prompt is playing to the other party, send error).
pub fn forward(s: &mut Session, party: Party, stream: Stream, packet: &[u8], double_small: bool) {
    let other = party.other();
    let st = &mut s.streams[stream];
    if stream == Stream::Rtp && s.players[other].is_some() {
        // A prompt is playing to the other party: its media waits.
        st.dropped += 1;
        return;
    }
    let (Some(dst), Some(leg)) = (st.peers[other].addr, &s.legs[other]) else {
        st.dropped += 1;
        return;
    };
    let sock = &leg.sockets[stream];
    // A failed send (no route, ICMP-refused peer) loses this packet only.
    if sock.send_to(packet, dst).is_ok() {
        st.relayed += 1;
        if double_small && packet.len() < LBR_THRS {
            let _ = sock.send_to(packet, dst);
        }
    } else {
        st.dropped += 1;
    }
}

/// Largest packet a re-packetizer emits: 1000 ms of G.711 plus a header.
const RESIZED_MAX: usize = 8192 + 12;

/// Queues an RTP packet in the party's re-packetizer and sends what is due.
fn resize(s: &mut Session, party: Party, packet: &[u8], double_small: bool, now: Instant) {
    // Taken out for the call so forwarding may borrow the session.
    let Some(mut r) = s.resizers[party].take() else {
        return;
    };
    match r.enqueue(packet, now) {
        Enqueued::PassThrough => forward(s, party, Stream::Rtp, packet, double_small),
        Enqueued::Dropped => {
            s.streams[Stream::Rtp].dropped += 1;
            s.tally.resizer_discard += 1;
        }
        Enqueued::Queued => s.tally.resizer_in += 1,
    }
    send_resized(s, party, &mut r, double_small, now);
    s.resizers[party] = Some(r);
}

fn send_resized(s: &mut Session, party: Party, r: &mut Resizer, double_small: bool, now: Instant) {
    let mut out = [0u8; RESIZED_MAX];
    // Bounded: each call emits one queued packet and the queue is finite.
    for _ in 0..64 {
        let Some(len) = r.dequeue(now, &mut out) else {
            break;
        };
        if let Some(p) = out.get(..len) {
            s.tally.resizer_out += 1;
            forward(s, party, Stream::Rtp, p, double_small);
        }
    }
}

/// Sends whatever a re-packetizer still holds and removes it (z turned
/// off or changed).
pub fn flush_resizer(s: &mut Session, party: Party, double_small: bool) {
    let Some(mut r) = s.resizers[party].take() else {
        return;
    };
    let mut out = [0u8; RESIZED_MAX];
    for _ in 0..1024 {
        let Some(len) = r.flush(&mut out) else {
            break;
        };
        if let Some(p) = out.get(..len) {
            s.tally.resizer_out += 1;
            forward(s, party, Stream::Rtp, p, double_small);
        }
    }
}

/// Hands an accepted packet to the session's recording and copy channels.
fn record(s: &mut Session, party: Party, stream: Stream, src: SocketAddr, packet: &[u8]) {
    if let Some(copy) = &s.copies[party] {
        copy.send(packet, stream == Stream::Rtcp);
    }
    let (Some(rec), Some(leg)) = (&mut s.streams[stream].recorders[party], &s.legs[party]) else {
        return;
    };
    let local = SocketAddr::new(leg.ip, leg.port_of(stream));
    if let Err(e) = rec.write_packet(src, local, SystemTime::now(), packet) {
        rtpp_log!(Err, "{e}");
    }
}

/// `--hep-rtcp`: sends an accepted RTCP packet to the HEP collector, as
/// the party (`src`) sent it to the relay's socket of that leg, like the
/// RTCP a capture agent on this host would see.
fn mirror_rtcp(s: &Session, party: Party, src: SocketAddr, packet: &[u8], pass: &mut Pass<'_>) {
    let (Some(hep), Some(leg)) = (pass.hep.as_deref_mut(), &s.legs[party]) else {
        return;
    };
    let local = SocketAddr::new(leg.ip, leg.port_of(Stream::Rtcp));
    hep.send_rtcp(&s.call_id, src, local, packet, SystemTime::now());
}

/// Serves everything on the clock: prompt packets and re-packetized audio
/// that are due.
pub fn run_timers(sessions: &mut Sessions, now: Instant, double_small: bool) {
    let mut buf = [0u8; MAX_PACKET_LEN];
    sessions.serve_timed(|s| {
        play_due(s, now, &mut buf, double_small);
        for party in Party::BOTH {
            if let Some(mut r) = s.resizers[party].take() {
                send_resized(s, party, &mut r, double_small, now);
                s.resizers[party] = Some(r);
            }
        }
    });
}

fn play_due(s: &mut Session, now: Instant, buf: &mut [u8], double_small: bool) {
    for party in Party::BOTH {
        // A player yields one packet per call. After a stall its backlog
        // (at most rtp_server::CATCH_UP_LIMIT) goes out a few packets per
        // pass: while a packet is overdue the poll timeout is zero, so the
        // rest follows at once without one session holding the loop.
        for _ in 0..4 {
            let Some(player) = &mut s.players[party] else {
                break;
            };
            match player.next_packet(now, buf) {
                Next::Packet(len) => {
                    s.played += 1;
                    let (Some(dst), Some(leg), Some(packet)) = (
                        s.streams[Stream::Rtp].peers[party].addr,
                        &s.legs[party],
                        buf.get(..len),
                    ) else {
                        continue;
                    };
                    let sock = &leg.sockets[Stream::Rtp];
                    let _ = sock.send_to(packet, dst);
                    if double_small && len < LBR_THRS {
                        let _ = sock.send_to(packet, dst);
                    }
                }
                Next::NotYet => break,
                Next::Finished => {
                    rtpp_log!(Info, "prompt finished at port {}", s.port(party));
                    s.players[party] = None;
                    s.tally.players_destroyed += 1;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::{IpAddr, UdpSocket};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::Duration;

    use crate::rtpp_account::EndReason;
    use crate::rtpp_analyzer::RtpaStats;
    use crate::rtpp_defines::ByParty;
    use crate::rtpp_dtmf::EventPacket;
    use crate::rtpp_network::PortTable;
    use crate::rtpp_notify::Destination;
    use crate::rtpp_poll::Poller;
    use crate::rtpp_session::{DtmfRefused, MediaStream, NotifyWith, StreamIds};
    use crate::rtpp_state::Daemon;
    use crate::rtpp_util::Random;
    use crate::test_support::TempDir;

    /// A session with both legs open on loopback, and a socket standing
    /// for each party (the callee's is where the caller's media goes).
    struct Call {
        daemon: Daemon,
        sessions: Sessions,
        id: SessionId,
        parties: ByParty<UdpSocket>,
    }

    fn call() -> Call {
        let mut rng = Random::with_seed(3);
        let mut daemon = Daemon::new(
            Poller::with_limit(100),
            PortTable::new(40300, 40319, &mut rng),
        );
        let mut sessions = Sessions::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let ids = StreamIds {
            call_id: b"call",
            from_tag: b"ftag",
            to_tag: None,
        };
        let id = sessions.create(&ids, ByParty::both(ip), Instant::now(), &mut daemon);
        let parties = ByParty::from_fn(|_| {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            sock
        });
        for party in Party::BOTH {
            sessions.open_leg(id, party, None, &mut daemon).unwrap();
        }
        Call {
            daemon,
            sessions,
            id,
            parties,
        }
    }

    impl Call {
        /// Relays `packet` as if it arrived from `party`'s socket.
        fn send_from(&mut self, party: Party, packet: &[u8]) {
            let src = self.parties[party].local_addr().unwrap();
            let s = self.sessions.get_mut(self.id).unwrap();
            let mut pass = Pass {
                double_small: false,
                now: Instant::now(),
                notifier: &mut self.daemon.notifier,
                hep: None,
            };
            relay_packet(s, party, Stream::Rtp, src, packet, &mut pass);
        }

        /// Datagrams waiting at `party`'s socket.
        fn arrived(&self, party: Party) -> usize {
            let mut buf = [0u8; 2048];
            let sock = &self.parties[party];
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            std::iter::from_fn(|| sock.recv(&mut buf).ok()).count()
        }

        fn stream(&self) -> &MediaStream {
            &self.sessions.get(self.id).unwrap().streams[Stream::Rtp]
        }
    }

    fn audio(seq: u16) -> Vec<u8> {
        let mut p = vec![0u8; 12 + 160];
        rtp::write_header(&mut p, false, 0, seq, u32::from(seq) * 160, 0x0102_0304);
        p
    }

    fn event(seq: u16, ts: u32, digit: u8, end: bool, duration: u16) -> Vec<u8> {
        EventPacket {
            seq,
            ..EventPacket::new(ts, digit, end, duration)
        }
        .bytes()
    }

    fn line(peer: &mut BufReader<UnixStream>) -> String {
        let mut l = String::new();
        peer.read_line(&mut l).unwrap();
        l
    }

    #[test]
    fn catching_needs_a_session_a_target_and_a_payload_type() {
        let mut c = call();
        let (id, tag) = (c.id, b"t".to_vec());
        let refused = c
            .sessions
            .catch_dtmf(id, Party::Caller, tag.clone(), 101, false);
        assert_eq!(refused, Err(DtmfRefused::NoNotifyTarget));
        let target = Notifier::new(Vec::new())
            .target(&Destination::Unix("/nonexistent".into()))
            .unwrap();
        c.sessions.get_mut(id).unwrap().notify = Some((target, NotifyWith::Ports));
        let refused = c
            .sessions
            .catch_dtmf(SessionId(99), Party::Caller, tag.clone(), 101, false);
        assert_eq!(refused, Err(DtmfRefused::NoSession));
        let refused = c
            .sessions
            .catch_dtmf(id, Party::Caller, tag.clone(), 128, false);
        assert_eq!(refused, Err(DtmfRefused::BadPayloadType));
        assert_eq!(
            c.sessions.catch_dtmf(id, Party::Caller, tag, 127, true),
            Ok(())
        );
    }

    /// A call whose parties' addresses are known and whose timeout
    /// notification is armed, the daemon notifying to a listener in `dir`;
    /// the caller's digits are caught with tag `Dd1`.
    fn armed_call(dir: &TempDir) -> (Call, UnixListener) {
        let path = dir.join("notify.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut c = call();
        let to = Destination::Unix(path);
        let mut notifier = Notifier::new(vec![to.clone()]);
        let target = notifier.target(&to).unwrap();
        c.daemon.notifier = Some(notifier);
        for party in Party::BOTH {
            let addr = c.parties[party].local_addr().unwrap();
            let s = c.sessions.get_mut(c.id).unwrap();
            s.streams[Stream::Rtp].peers[party].addr = Some(addr);
            s.notify = Some((target, NotifyWith::Tag(b"timeout".as_slice().into())));
        }
        let caught = c
            .sessions
            .catch_dtmf(c.id, Party::Caller, b"Dd1".to_vec(), 101, false);
        assert_eq!(caught, Ok(()));
        (c, listener)
    }

    /// The daemon's connection to the listener (made by its first line).
    fn accept(listener: &UnixListener) -> BufReader<UnixStream> {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        BufReader::new(conn)
    }

    #[test]
    fn digits_are_reported_once_and_relayed_or_hidden() {
        let dir = TempDir::new("proc-dtmf");
        let (mut c, listener) = armed_call(&dir);
        // Audio, then digit 5 with three end packets: relayed, one line.
        for seq in 1..=3 {
            c.send_from(Party::Caller, &audio(seq));
        }
        c.send_from(Party::Caller, &event(4, 480, 5, false, 160));
        for seq in 5..=7 {
            c.send_from(Party::Caller, &event(seq, 480, 5, true, 480));
        }
        let mut peer = accept(&listener);
        assert_eq!(line(&mut peer), "Dd1 5 10 480 0\n");
        assert_eq!(c.arrived(Party::Callee), 7);
        assert_eq!((c.stream().relayed, c.stream().dropped), (7, 0));

        // Asked again: hidden from now on, still under the first tag.
        let again = c
            .sessions
            .catch_dtmf(c.id, Party::Caller, b"x".to_vec(), 101, true);
        assert_eq!(again, Ok(()));
        c.send_from(Party::Caller, &event(8, 1280, 11, false, 160));
        c.send_from(Party::Caller, &event(9, 1280, 11, true, 320));
        c.send_from(Party::Caller, &audio(10));
        assert_eq!(line(&mut peer), "Dd1 # 10 320 0\n");
        assert_eq!(c.arrived(Party::Callee), 1);
        assert_eq!((c.stream().relayed, c.stream().dropped), (8, 2));
        // The analysis saw every packet, hidden ones included.
        let caller = c.sessions.rtpa(c.id, Party::Caller).unwrap();
        assert_eq!((caller.nsent, caller.nrcvd, caller.nlost), (10, 10, 0));
    }

    #[test]
    fn callee_digits_are_side_1_and_both_directions_are_analyzed() {
        let dir = TempDir::new("proc-dtmf");
        let (mut c, listener) = armed_call(&dir);
        let id = c.id;
        let callee = c
            .sessions
            .catch_dtmf(id, Party::Callee, b"C".to_vec(), 96, false);
        assert_eq!(callee, Ok(()));
        for seq in [1, 2, 4] {
            c.send_from(Party::Caller, &audio(seq));
        }
        let mut from_callee = event(100, 8000, 0, false, 160);
        from_callee[1] = 96;
        c.send_from(Party::Callee, &from_callee);
        from_callee[13] |= 0x80;
        c.send_from(Party::Callee, &from_callee);
        // Not RTP: a parse error, nothing else.
        c.send_from(Party::Callee, b"not rtp");
        assert_eq!(line(&mut accept(&listener)), "C 0 10 160 1\n");
        assert_eq!(c.arrived(Party::Caller), 3);

        let caller = RtpaStats {
            nsent: 4,
            nrcvd: 3,
            ndups: 0,
            nlost: 1,
            perrs: 0,
        };
        assert_eq!(c.sessions.rtpa(id, Party::Caller), Some(caller));
        let callee = RtpaStats {
            nsent: 1,
            nrcvd: 1,
            ndups: 1,
            nlost: 0,
            perrs: 1,
        };
        assert_eq!(c.sessions.rtpa(id, Party::Callee), Some(callee));
        // The daemon's sums take both directions when the session ends.
        assert!(c.sessions.end(id, EndReason::Deleted, &mut c.daemon));
        let mut both = caller;
        both.add(&callee);
        assert_eq!(c.daemon.counters.rtpa, both);
        assert_eq!(c.sessions.rtpa(id, Party::Caller), None);
    }
}
