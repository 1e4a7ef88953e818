//! The packet path: for each ready media socket, read, latch, observe,
//! forward.
//!
//! `main`'s loop polls ([`crate::rtpp_poll`]) and hands the ready entries
//! to [`relay_ready`]; everything from there to `sendto(2)` is in this
//! file, except the latching decision, which is `Peer::accept` in
//! `rtpp_session`, and the observers of an accepted RTP packet: the
//! sequence analysis (`rtpp_analyzer`) and DTMF catching (`rtpp_dtmf`).
//! Nothing here allocates: the receive buffers are the caller's and every
//! decision is a few field updates on the session.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

use crate::rtp;
use crate::rtp_resizer::{Enqueued, Resizer};
use crate::rtp_server::{Next, MAX_PACKET_LEN};
use crate::rtpp_defines::{Party, SessionId, Stream, LBR_THRS};
use crate::rtpp_log;
use crate::rtpp_network::RecvBatch;
use crate::rtpp_notify::Notifier;
use crate::rtpp_poll::{Event, Owner};
use crate::rtpp_session::{Session, Sessions, Verdict};

/// Relays from every ready media socket of one poll; returns whether any
/// media socket was ready. Caught DTMF digits go to `notifier`.
pub fn relay_ready(
    sessions: &mut Sessions,
    events: &[Event],
    double_small: bool,
    now: Instant,
    batch: &mut RecvBatch,
    notifier: &mut Option<Notifier>,
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
            };
            drain_socket(sessions, from, event.busy, batch, pass);
        }
    }
    media
}

/// Where packets read from one socket come from.
#[derive(Debug, Clone, Copy)]
struct Source {
    session: SessionId,
    party: Party,
    stream: Stream,
}

/// What relaying a packet needs besides the session: the `-2` option, the
/// time of this pass, and where caught DTMF digits are reported.
pub struct Pass<'a> {
    pub double_small: bool,
    pub now: Instant,
    pub notifier: &'a mut Option<Notifier>,
}

/// Reads the packets queued on one media socket and relays each to the
/// other party.
fn drain_socket(
    sessions: &mut Sessions,
    from: Source,
    busy: bool,
    batch: &mut RecvBatch,
    mut pass: Pass<'_>,
) {
    let Some(s) = sessions.get_mut(from.session) else {
        return;
    };
    let Some(leg) = &s.legs[from.party] else {
        return;
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
    let hidden = stream == Stream::Rtp && observe_rtp(s, party, packet, pass);
    record(s, party, stream, src, packet);
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

/// What an accepted RTP packet from `party` tells: its sequence number for
/// the loss estimate of the accounting record and for the analyzer, and
/// any DTMF digit it completes. True when DTMF catching hides it.
fn observe_rtp(s: &mut Session, party: Party, packet: &[u8], pass: &mut Pass<'_>) -> bool {
    s.last_rx[party] = pass.now;
    let Ok(header) = rtp::parse(packet) else {
        s.analyzers[party].parse_error();
        return false;
    };
    // Both observe the numbers: the accounting record's loss estimate keeps
    // its RFC 3550 meaning (duplicates offset losses, no epochs), the
    // analyzer gives the rtpa_* values.
    s.streams[Stream::Rtp].peers[party].seq.observe(header.seq);
    s.analyzers[party].observe(&header);
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
        Enqueued::Dropped => s.streams[Stream::Rtp].dropped += 1,
        Enqueued::Queued => {}
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
                    break;
                }
            }
        }
    }
}
