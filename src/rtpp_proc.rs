//! The packet path: drain a ready media socket, latch, forward.
//!
//! Nothing here allocates: the receive buffer is the caller's and every
//! decision is a few field updates on the session.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

use crate::rtp_resizer::{Enqueued, Resizer};
use crate::rtp_server::Next;
use crate::rtpp_defines::LBR_THRS;
use crate::rtpp_log;
use crate::rtpp_network::RecvBatch;
use crate::rtpp_session::{Owner, Session, Sessions, Verdict, RTCP, RTP};

/// Reads the packets queued on the socket in `slot` and relays each to the
/// other party.
pub fn drain_slot(
    sessions: &mut Sessions,
    set: usize,
    slot: usize,
    double_small: bool,
    now: Instant,
    batch: &mut RecvBatch,
) {
    let Some(Owner::Media {
        session,
        party,
        kind,
    }) = sessions.poll_set(set).owner(slot)
    else {
        return;
    };
    let (party, kind) = (usize::from(party), usize::from(kind));
    let busy = sessions.poll_set(set).read_again(slot);
    let Some(s) = sessions.get_mut(session) else {
        return;
    };
    let Some(leg) = &s.legs[party] else {
        return;
    };
    // A call's stream brings one packet per pass: one plain read, no
    // batch set-up and no second look that would only find EAGAIN. A
    // socket ready in consecutive passes holds more, and one batched read
    // takes up to RECV_BATCH; the rest waits for the next pass, so one
    // busy stream cannot starve the others. An error (WouldBlock, or a
    // queued ICMP error now consumed) just means nothing to relay now.
    let fd = leg.sockets[kind].as_raw_fd();
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
        relay_packet(s, party, kind, src, packet, double_small, now);
    }
    // A re-packetizer holding audio must be served on the clock.
    if s.resizers[party]
        .as_ref()
        .is_some_and(|r| r.next_due().is_some())
    {
        sessions.mark_timed(session);
    }
}

/// Latches and forwards one packet that arrived from `party`.
pub fn relay_packet(
    s: &mut Session,
    party: usize,
    kind: usize,
    src: SocketAddr,
    packet: &[u8],
    double_small: bool,
    now: Instant,
) {
    let stream = &mut s.streams[kind];
    stream.received += 1;
    match stream.parties[party].accept(src, now) {
        Verdict::Reject => {
            stream.dropped += 1;
            return;
        }
        Verdict::Latched => {
            rtpp_log!(
                Info,
                "{}'s address filled in: {} ({})",
                if party == 0 { "caller" } else { "callee" },
                src,
                if kind == RTP { "RTP" } else { "RTCP" }
            );
            if kind == RTP {
                if let Some(port) = src.port().checked_add(1) {
                    s.streams[RTCP].parties[party].guess(SocketAddr::new(src.ip(), port));
                }
            }
        }
        Verdict::Accept => {}
    }
    let stream = &mut s.streams[kind];
    let from = &mut stream.parties[party];
    from.packets += 1;
    from.bytes += packet.len() as u64;
    if kind == RTP && packet.len() >= 12 && packet[0] >> 6 == 2 {
        from.seq.observe(u16::from_be_bytes([packet[2], packet[3]]));
    }
    if kind == RTP {
        s.last_rx[party] = now;
    }
    record(s, party, kind, src, packet);
    if kind == RTP && s.resizers[party].is_some() {
        resize(s, party, packet, double_small, now);
        return;
    }
    forward(s, party, kind, packet, double_small);
}

/// Sends a packet from `party` on to the other party, or counts it dropped
/// (no destination yet, a prompt is playing to the other party, send error).
pub fn forward(s: &mut Session, party: usize, kind: usize, packet: &[u8], double_small: bool) {
    let other = 1 - party;
    let stream = &mut s.streams[kind];
    if kind == RTP && s.players[other].is_some() {
        // A prompt is playing to the other party: its media waits.
        stream.dropped += 1;
        return;
    }
    let (Some(dst), Some(leg)) = (stream.parties[other].addr, &s.legs[other]) else {
        stream.dropped += 1;
        return;
    };
    let sock = &leg.sockets[kind];
    // A failed send (no route, ICMP-refused peer) loses this packet only.
    if sock.send_to(packet, dst).is_ok() {
        stream.relayed += 1;
        if double_small && packet.len() < LBR_THRS {
            let _ = sock.send_to(packet, dst);
        }
    } else {
        stream.dropped += 1;
    }
}

/// Largest packet a re-packetizer emits: 1000 ms of G.711 plus a header.
const RESIZED_MAX: usize = 8192 + 12;

/// Queues an RTP packet in the party's re-packetizer and sends what is due.
fn resize(s: &mut Session, party: usize, packet: &[u8], double_small: bool, now: Instant) {
    // Taken out for the call so forwarding may borrow the session.
    let Some(mut r) = s.resizers[party].take() else {
        return;
    };
    match r.enqueue(packet, now) {
        Enqueued::PassThrough => forward(s, party, RTP, packet, double_small),
        Enqueued::Dropped => s.streams[RTP].dropped += 1,
        Enqueued::Queued => {}
    }
    send_resized(s, party, &mut r, double_small, now);
    s.resizers[party] = Some(r);
}

fn send_resized(s: &mut Session, party: usize, r: &mut Resizer, double_small: bool, now: Instant) {
    let mut out = [0u8; RESIZED_MAX];
    // Bounded: each call emits one queued packet and the queue is finite.
    for _ in 0..64 {
        let Some(len) = r.dequeue(now, &mut out) else {
            break;
        };
        if let Some(p) = out.get(..len) {
            forward(s, party, RTP, p, double_small);
        }
    }
}

/// Sends whatever a re-packetizer still holds (z turned off, session end).
pub fn flush_resizer(s: &mut Session, party: usize, double_small: bool) {
    let Some(mut r) = s.resizers[party].take() else {
        return;
    };
    let mut out = [0u8; RESIZED_MAX];
    for _ in 0..1024 {
        let Some(len) = r.flush(&mut out) else {
            break;
        };
        if let Some(p) = out.get(..len) {
            forward(s, party, RTP, p, double_small);
        }
    }
}

/// Hands an accepted packet to the session's recording and copy channels.
fn record(s: &mut Session, party: usize, kind: usize, src: SocketAddr, packet: &[u8]) {
    if let Some(copy) = &s.copies[party] {
        copy.send(packet, kind == RTCP);
    }
    let (Some(rec), Some(leg)) = (&mut s.recorders[kind][party], &s.legs[party]) else {
        return;
    };
    let local = SocketAddr::new(leg.ip, leg.port + kind as u16);
    if let Err(e) = rec.write_packet(src, local, SystemTime::now(), packet) {
        rtpp_log!(Err, "{e}");
    }
}

/// Serves everything on the clock: prompt packets and re-packetized audio
/// that are due.
pub fn run_timers(sessions: &mut Sessions, now: Instant, buf: &mut [u8], double_small: bool) {
    let mut i = 0;
    while i < sessions.timed.len() {
        let id = sessions.timed[i];
        let keep = match sessions.get_mut(id) {
            Some(s) => {
                play_due(s, now, buf, double_small);
                for party in 0..2 {
                    if let Some(mut r) = s.resizers[party].take() {
                        send_resized(s, party, &mut r, double_small, now);
                        s.resizers[party] = Some(r);
                    }
                }
                s.is_timed()
            }
            None => false,
        };
        if keep {
            i += 1;
        } else {
            sessions.timed.swap_remove(i);
        }
    }
}

/// When the loop must wake next for something on the clock.
pub fn next_timer(sessions: &Sessions) -> Option<Instant> {
    sessions
        .timed
        .iter()
        .filter_map(|&id| sessions.get(id))
        .filter_map(Session::next_due)
        .min()
}

fn play_due(s: &mut Session, now: Instant, buf: &mut [u8], double_small: bool) {
    for party in 0..2 {
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
                        s.streams[RTP].parties[party].addr,
                        &s.legs[party],
                        buf.get(..len),
                    ) else {
                        continue;
                    };
                    let sock = &leg.sockets[RTP];
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
