//! How long a media socket may rest out of the poll set.
//!
//! poll(2) costs about 100 ns per polled socket per pass, ready or not, and
//! under load the loop passes every millisecond: at 500 calls, polling
//! every RTP socket on every pass cost more CPU per relayed packet than
//! reading it. Yet a call's stream is a metronome, one packet every 20 ms
//! (10, 30, 40, 60 with other ptimes), so a socket that has just given up
//! its packet will hold nothing for most of the next interval. Such a
//! socket rests: it leaves the poll set until a guard time before its next
//! packet is due, then is polled every pass as before.
//!
//! A socket only rests while its stream is steady: several gaps in a row
//! agree with the learned interval, and the read that just happened found
//! a single datagram. Anything else (the first packet after silence, a
//! burst, a stream whose gaps wander, strangers' packets on the socket)
//! resets it and the socket stays in every poll. What this can cost a
//! packet is bounded: one that arrives while its socket rests is read when
//! the rest ends, which is at least a guard time before the moment the
//! stream's rhythm said it was due; a packet is never held past its own
//! schedule, only an early one loses its earliness. The rhythm is learned
//! from the times of the passes that read the packets, so it carries the
//! loop's own jitter (the gathering window); the tolerance and the guard
//! are wider than that.

use std::time::{Duration, Instant};

/// Consecutive agreeing gaps before a stream counts as steady.
const STEADY_AFTER: u8 = 3;
/// Shorter intervals are left alone: the rest would be too short to pay.
const MIN_INTERVAL: Duration = Duration::from_millis(8);
/// Longer ones too: no codec packs more than this in one packet, and a
/// long gap is silence, not rhythm.
const MAX_INTERVAL: Duration = Duration::from_millis(120);

/// The arrival rhythm of one socket's packets.
#[derive(Debug, Clone, Default)]
pub struct Pacing {
    /// When the last packet was read.
    last: Option<Instant>,
    /// The learned interval.
    interval: Duration,
    /// Agreeing gaps in a row, up to [`STEADY_AFTER`].
    steady: u8,
}

impl Pacing {
    /// Notes one datagram read at `now` from a socket that held only it
    /// (as far as one read can tell); returns until when the socket may
    /// rest, if its stream is steady.
    pub fn lone_packet(&mut self, now: Instant) -> Option<Instant> {
        let last = self.last.replace(now)?;
        let gap = now.saturating_duration_since(last);
        if gap.abs_diff(self.interval) <= tolerance(self.interval) {
            self.steady = self.steady.saturating_add(1).min(STEADY_AFTER);
            // A slow average: one late pass must not move the rhythm much.
            self.interval = (self.interval * 3 + gap) / 4;
        } else {
            self.steady = 0;
            self.interval = gap;
        }
        if self.steady < STEADY_AFTER || !(MIN_INTERVAL..=MAX_INTERVAL).contains(&self.interval) {
            return None;
        }
        Some(now + self.interval.saturating_sub(guard(self.interval)))
    }

    /// When the socket last gave a packet.
    pub fn last_read(&self) -> Option<Instant> {
        self.last
    }

    /// Notes a read that found several datagrams (or a failed one): the
    /// stream is not keeping its rhythm now.
    pub fn disturbed(&mut self, now: Instant) {
        self.last = Some(now);
        self.steady = 0;
    }
}

/// How far a gap may be from the interval and still agree: the passes
/// that time the packets are up to a gathering window (1 ms) plus a pass's
/// work late, and a sender's own jitter of a few ms must not stop the
/// rest, or a loaded link would cost the most CPU. One millisecond less
/// than the guard, so that a packet early by as much as still agrees is
/// not held either.
fn tolerance(interval: Duration) -> Duration {
    guard(interval) - Duration::from_millis(1)
}

/// How long before the next packet is due a resting socket is polled
/// again: the loop's own lateness in timing the last packet (up to about
/// 1.5 ms), plus room for the sender's jitter.
fn guard(interval: Duration) -> Duration {
    Duration::from_millis(3) + interval / 8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds packets at the given offsets (ms) and returns the last answer.
    fn feed(p: &mut Pacing, start: Instant, at: &[u64]) -> Option<Instant> {
        let mut answer = None;
        for &t in at {
            answer = p.lone_packet(start + ms(t));
        }
        answer
    }

    #[test]
    fn a_steady_20_ms_stream_rests_until_a_guard_before_its_next_packet() {
        let start = Instant::now();
        let mut p = Pacing::default();
        // The first gap is learned, three more must agree: five packets.
        assert_eq!(feed(&mut p, start, &[0, 20, 40, 60]), None);
        let until = feed(&mut p, start, &[80]).unwrap();
        let rest = until - (start + ms(80));
        // 20 ms less a guard of 3 + 2.5 ms.
        assert_eq!(rest, Duration::from_micros(14_500));
    }

    #[test]
    fn the_loops_own_jitter_does_not_break_the_rhythm() {
        let start = Instant::now();
        let mut p = Pacing::default();
        let until = feed(&mut p, start, &[0, 21, 40, 61, 80, 101]).unwrap();
        assert!(until > start + ms(112) && until < start + ms(118));
    }

    #[test]
    fn a_gap_after_silence_or_a_burst_stops_the_rest() {
        let start = Instant::now();
        let mut p = Pacing::default();
        assert!(feed(&mut p, start, &[0, 20, 40, 60, 80]).is_some());
        // Silence, then the talk spurt: no rest for the first packets.
        assert_eq!(feed(&mut p, start, &[2000]), None);
        assert_eq!(feed(&mut p, start, &[2001]), None);
        assert_eq!(feed(&mut p, start, &[2021, 2041, 2061]), None);
        assert!(feed(&mut p, start, &[2081]).is_some());
        p.disturbed(start + ms(2090));
        assert_eq!(feed(&mut p, start, &[2110]), None);
    }

    #[test]
    fn short_and_long_intervals_never_rest() {
        let start = Instant::now();
        let mut fast = Pacing::default();
        let at: Vec<u64> = (0..20).map(|i| i * 5).collect();
        assert_eq!(feed(&mut fast, start, &at), None);
        let mut slow = Pacing::default();
        let at: Vec<u64> = (0..20).map(|i| i * 200).collect();
        assert_eq!(feed(&mut slow, start, &at), None);
    }

    #[test]
    fn a_10_ms_stream_rests_for_a_shorter_time() {
        let start = Instant::now();
        let mut p = Pacing::default();
        let at: Vec<u64> = (0..6).map(|i| i * 10).collect();
        let until = feed(&mut p, start, &at).unwrap();
        // 10 ms less 3 + 1.25 ms.
        assert_eq!(until - (start + ms(50)), Duration::from_micros(5_750));
    }

    #[test]
    fn a_new_ptime_is_learned_again() {
        let start = Instant::now();
        let mut p = Pacing::default();
        assert!(feed(&mut p, start, &[0, 20, 40, 60, 80]).is_some());
        assert_eq!(feed(&mut p, start, &[120]), None);
        assert_eq!(feed(&mut p, start, &[160, 200]), None);
        let until = feed(&mut p, start, &[240]).unwrap();
        assert!(until - (start + ms(240)) > ms(30));
    }
}
