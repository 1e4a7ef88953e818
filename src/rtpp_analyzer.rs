//! RTP sequence analysis (extension 20150420): for one direction of one
//! RTP stream, how many packets the sender sent (judged by their sequence
//! numbers), how many distinct ones arrived, how many arrived again, and
//! how many were not RTP at all. These are the `rtpa_*` values of the
//! extended `Q` and of `G` (doc/PROTOCOL.md, "RTP analysis").
//!
//! The stream is cut into epochs: a new SSRC, a marker-bit restart, or a
//! jump of more than [`MAX_JUMP`] starts a new one, because sequence
//! numbers on either side of such a break say nothing about packets lost
//! in between. Within an epoch sequence numbers are extended across the
//! 16-bit wrap; what was sent is the span of the epoch (max - min + 1).
//!
//! Duplicates are found with a window of seen flags that slides with the
//! epoch's highest sequence number ([`SEEN_BITS`] explains its size). It is
//! part of the analyzer itself: nothing is allocated, ever, and the usual
//! in-order packet costs a handful of compares and two bit operations.

use crate::rtp::RtpHeader;

/// A step of the sequence number larger than this, either way, is a break
/// in the stream rather than loss or reordering.
const MAX_JUMP: i64 = 536;

/// Sequence numbers above this are near the 16-bit wrap.
const NEAR_WRAP: i64 = 65000;

/// One 16-bit cycle of sequence numbers.
const CYCLE: i64 = 0x1_0000;

/// Flags in the seen window. A packet reaches the duplicate test only when
/// it is at most 1070 below the epoch's highest sequence number (a late
/// pre-wrap packet: the highest is up to 535 past the wrap, the packet
/// down to 65001 before it; every other path is bounded by `MAX_JUMP`),
/// and the highest number moves up by at most `MAX_JUMP` per packet. 2048
/// covers that with room, and as a power of two the slot of a sequence
/// number is a mask of it.
pub const SEEN_BITS: usize = 2048;

const SEEN_WORDS: usize = SEEN_BITS / 64;

/// The `rtpa_*` values of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpaStats {
    /// Packets the sender sent, by the span of their sequence numbers.
    pub nsent: u64,
    /// Distinct packets received.
    pub nrcvd: u64,
    /// Packets received again (same sequence number within an epoch).
    pub ndups: u64,
    /// `nsent - nrcvd`.
    pub nlost: u64,
    /// Packets from the party that did not parse as RTP.
    pub perrs: u64,
}

impl RtpaStats {
    /// Adds another direction's or stream's values.
    pub fn add(&mut self, other: &RtpaStats) {
        self.nsent += other.nsent;
        self.nrcvd += other.nrcvd;
        self.ndups += other.ndups;
        self.nlost += other.nlost;
        self.perrs += other.perrs;
    }
}

/// The run of packets since the last break.
#[derive(Debug, Clone)]
struct Epoch {
    ssrc: u32,
    /// Lowest and highest extended sequence numbers. `min` may go below
    /// zero: a late packet from before the wrap when the epoch began just
    /// after it.
    min: i64,
    max: i64,
    /// Added to a packet's 16-bit number: one [`CYCLE`] per wrap seen.
    offset: i64,
    unique: u64,
    dups: u64,
    /// Seen flags of the numbers `max - SEEN_BITS + 1 ..= max`, at slot
    /// `seq mod SEEN_BITS`.
    seen: [u64; SEEN_WORDS],
}

impl Epoch {
    fn start(ssrc: u32, seq: u16) -> Epoch {
        let first = i64::from(seq);
        let mut e = Epoch {
            ssrc,
            min: first,
            max: first,
            offset: 0,
            unique: 1,
            dups: 0,
            seen: [0; SEEN_WORDS],
        };
        e.set_seen(first);
        e
    }

    /// The epoch's share of the totals.
    fn stats(&self) -> RtpaStats {
        let nsent = u64::try_from(self.max - self.min + 1).unwrap_or(0);
        RtpaStats {
            nsent,
            nrcvd: self.unique,
            ndups: self.dups,
            nlost: nsent.saturating_sub(self.unique),
            perrs: 0,
        }
    }

    /// Counts a packet whose extended number is known to belong here;
    /// true when it is a duplicate.
    fn note(&mut self, seq: i64) -> bool {
        if seq > self.max {
            self.forget(self.max + 1, seq - self.max);
            self.max = seq;
            self.set_seen(seq);
            self.unique += 1;
            return false;
        }
        if self.max - seq >= SEEN_BITS as i64 {
            // Beyond the window; the checks before `note` keep every
            // packet within it, so this is never taken.
            return false;
        }
        if self.is_seen(seq) {
            self.dups += 1;
            return true;
        }
        self.set_seen(seq);
        if seq >= self.min {
            self.unique += 1;
        } else if self.offset == 0 {
            self.min = seq;
            self.unique += 1;
        }
        // Below the start of an epoch that has wrapped: the classic
        // analyzer leaves such a packet out of the counts (it cannot tell
        // it from a stray of an earlier stream).
        false
    }

    fn slot(seq: i64) -> (usize, u64) {
        // Two's complement: a negative number masks to its slot too.
        let bit = (seq as u64) & (SEEN_BITS as u64 - 1);
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn is_seen(&self, seq: i64) -> bool {
        let (word, mask) = Epoch::slot(seq);
        self.seen.get(word).is_some_and(|w| w & mask != 0)
    }

    fn set_seen(&mut self, seq: i64) {
        let (word, mask) = Epoch::slot(seq);
        if let Some(w) = self.seen.get_mut(word) {
            *w |= mask;
        }
    }

    /// Clears the slots of `count` numbers from `from` on: they held the
    /// numbers `SEEN_BITS` below, which leave the window as `max` moves up.
    fn forget(&mut self, from: i64, count: i64) {
        let mut left = count.clamp(0, SEEN_BITS as i64) as u64;
        let mut bit = (from as u64) & (SEEN_BITS as u64 - 1);
        while left > 0 {
            let in_word = bit % 64;
            let n = (64 - in_word).min(left);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << in_word
            };
            if let Some(w) = self.seen.get_mut((bit / 64) as usize) {
                *w &= !mask;
            }
            bit = (bit + n) & (SEEN_BITS as u64 - 1);
            left -= n;
        }
    }
}

/// The analyzer of one direction of one RTP stream.
#[derive(Debug, Clone, Default)]
pub struct RtpAnalyzer {
    /// Sums of the epochs that ended.
    done: RtpaStats,
    perrs: u64,
    epoch: Option<Epoch>,
}

impl RtpAnalyzer {
    /// An analyzer that has seen nothing.
    pub fn new() -> RtpAnalyzer {
        RtpAnalyzer::default()
    }

    /// Counts a packet from the party that did not parse as RTP.
    pub fn parse_error(&mut self) {
        self.perrs += 1;
    }

    /// Counts one RTP packet (doc/PROTOCOL.md, "RTP analysis"); true
    /// when its number was seen before in the epoch (a duplicate), which
    /// the quality meter (`rtpp_quality`) takes instead of keeping a
    /// window of its own.
    pub fn observe(&mut self, h: &RtpHeader) -> bool {
        let Some(e) = &mut self.epoch else {
            self.epoch = Some(Epoch::start(h.ssrc, h.seq));
            return false;
        };
        if e.ssrc != h.ssrc {
            self.restart(h);
            return false;
        }
        let raw = i64::from(h.seq);
        let mut seq = raw + e.offset;
        // A sender that starts its numbering over marks the first packet;
        // one that merely wrapped (max at 65535) has not restarted.
        if h.marker && seq < e.max && e.max & 0xffff != 0xffff {
            self.restart(h);
            return false;
        }
        if e.max & 0xffff < MAX_JUMP && raw > NEAR_WRAP {
            // Sent before the wrap, arriving after it.
            seq -= CYCLE;
        } else if e.max > NEAR_WRAP && seq < e.max - NEAR_WRAP {
            e.offset += CYCLE;
            seq += CYCLE;
        } else if (seq - e.max).abs() > MAX_JUMP {
            self.restart(h);
            return false;
        }
        e.note(seq)
    }

    /// Ends the current epoch and starts one with this packet.
    fn restart(&mut self, h: &RtpHeader) {
        if let Some(e) = &self.epoch {
            self.done.add(&e.stats());
        }
        self.epoch = Some(Epoch::start(h.ssrc, h.seq));
    }

    /// The values so far, the current epoch included.
    pub fn stats(&self) -> RtpaStats {
        let mut s = self.done;
        if let Some(e) = &self.epoch {
            s.add(&e.stats());
        }
        s.perrs = self.perrs;
        s
    }
}

// Carried whole across a hand-over (doc/PROTOCOL.md, "Hand-over"). An
// epoch's numbers stay far from overflow in any real stream; bytes that
// say otherwise are refused rather than trusted with arithmetic.
crate::rtpp_handover::wire::carry_fields!(RtpaStats {
    nsent,
    nrcvd,
    ndups,
    nlost,
    perrs,
});
crate::rtpp_handover::wire::carry_fields!(Epoch {
    ssrc,
    min,
    max,
    offset,
    unique,
    dups,
    seen,
} check |e| {
    const BOUND: i64 = 1 << 48;
    e.min <= e.max && e.min > -BOUND && e.max < BOUND && e.offset.abs() < BOUND
});
crate::rtpp_handover::wire::carry_fields!(RtpAnalyzer { done, perrs, epoch });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp;

    fn header(seq: u16, ssrc: u32, marker: bool) -> RtpHeader {
        RtpHeader {
            marker,
            payload_type: 0,
            seq,
            timestamp: u32::from(seq) * 160,
            ssrc,
            payload_offset: 12,
            payload_len: 160,
        }
    }

    fn feed(seqs: impl IntoIterator<Item = u16>) -> RtpAnalyzer {
        let mut a = RtpAnalyzer::new();
        for s in seqs {
            a.observe(&header(s, 7, false));
        }
        a
    }

    fn stats(nsent: u64, nrcvd: u64, ndups: u64, perrs: u64) -> RtpaStats {
        RtpaStats {
            nsent,
            nrcvd,
            ndups,
            nlost: nsent - nrcvd,
            perrs,
        }
    }

    #[test]
    fn nothing_seen_is_all_zero() {
        assert_eq!(RtpAnalyzer::new().stats(), RtpaStats::default());
    }

    #[test]
    fn in_order_stream_loses_nothing() {
        assert_eq!(feed(1000..1100).stats(), stats(100, 100, 0, 0));
    }

    #[test]
    fn gaps_are_lost_packets() {
        let a = feed((1000..1100).filter(|s| s % 10 != 3));
        assert_eq!(a.stats(), stats(100, 90, 0, 0));
    }

    #[test]
    fn reordered_packets_are_neither_lost_nor_duplicates() {
        let a = feed([10, 12, 11, 13, 16, 14, 15, 17]);
        assert_eq!(a.stats(), stats(8, 8, 0, 0));
        // A late packet below the first one lowers the start.
        let b = feed([10, 11, 12, 9, 13]);
        assert_eq!(b.stats(), stats(5, 5, 0, 0));
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let a = feed([10, 11, 11, 12, 10, 13, 13, 13]);
        assert_eq!(a.stats(), stats(4, 4, 4, 0));
    }

    #[test]
    fn observe_says_which_packets_are_duplicates() {
        let mut a = RtpAnalyzer::new();
        let verdicts: Vec<bool> = [10, 11, 11, 9, 12, 10, 9]
            .iter()
            .map(|&s| a.observe(&header(s, 7, false)))
            .collect();
        assert_eq!(verdicts, [false, false, true, false, false, true, true]);
        // A new epoch's first packet is never one.
        assert!(!a.observe(&header(10, 8, false)));
    }

    #[test]
    fn wrap_extends_the_sequence() {
        let seqs = (65530..=65535).chain(0..=5);
        assert_eq!(feed(seqs).stats(), stats(12, 12, 0, 0));
        // Loss across the wrap, and a duplicate of a pre-wrap number.
        let a = feed([65530, 65531, 65534, 1, 2, 65531, 3]);
        assert_eq!(a.stats(), stats(10, 6, 1, 0));
    }

    #[test]
    fn late_pre_wrap_packet_fills_its_gap() {
        let a = feed([65533, 65534, 0, 1, 65535, 2]);
        assert_eq!(a.stats(), stats(6, 6, 0, 0));
        // Arriving again is a duplicate, not a new epoch.
        let b = feed([65533, 65534, 65535, 0, 1, 65535, 2]);
        assert_eq!(b.stats(), stats(6, 6, 1, 0));
    }

    #[test]
    fn latest_pre_wrap_packet_is_still_in_the_window() {
        // 1070 behind the highest number, the farthest a packet can be.
        let seqs = (65000..=65535).chain(0..=535).filter(|&s| s != 65001);
        let mut a = feed(seqs);
        assert_eq!(a.stats(), stats(1072, 1071, 0, 0));
        a.observe(&header(65001, 7, false));
        assert_eq!(a.stats(), stats(1072, 1072, 0, 0));
        a.observe(&header(65001, 7, false));
        assert_eq!(a.stats(), stats(1072, 1072, 1, 0));
    }

    #[test]
    fn late_pre_wrap_packet_before_the_first_extends_back() {
        // The stream began just after the wrap; its last pre-wrap packets
        // arrive late and are counted as sent before the first.
        let a = feed([0, 1, 2, 65535, 3, 65533]);
        assert_eq!(a.stats(), stats(7, 6, 0, 0));
    }

    #[test]
    fn ssrc_change_starts_a_new_epoch() {
        let mut a = feed(100..110);
        for s in 5000..5005u16 {
            a.observe(&header(s, 8, false));
        }
        // Nothing between 109 and 5000 counts as lost.
        assert_eq!(a.stats(), stats(15, 15, 0, 0));
        // The same numbers under the new SSRC are not duplicates.
        let mut b = feed(100..103);
        for s in 100..103u16 {
            b.observe(&header(s, 9, false));
        }
        assert_eq!(b.stats(), stats(6, 6, 0, 0));
    }

    #[test]
    fn marker_restart_starts_a_new_epoch() {
        let mut a = feed(300..310);
        a.observe(&header(100, 7, true));
        for s in 101..105u16 {
            a.observe(&header(s, 7, false));
        }
        // 300..=309 then 100..=104: nothing lost, no duplicates.
        assert_eq!(a.stats(), stats(15, 15, 0, 0));
        // A marker above max is just a talk spurt.
        let mut b = feed(300..305);
        b.observe(&header(307, 7, true));
        assert_eq!(b.stats(), stats(8, 6, 0, 0));
        // After 65535 a marker on 0 is the wrap, not a restart.
        let mut c = feed(65533..=65535);
        c.observe(&header(0, 7, true));
        c.observe(&header(65534, 7, false));
        assert_eq!(c.stats(), stats(4, 4, 1, 0));
    }

    #[test]
    fn jump_beyond_536_starts_a_new_epoch() {
        let a = feed([1000, 1001, 1002, 2000, 2001, 2003]);
        // Epochs 1000..=1002 and 2000..=2003 (2002 lost).
        assert_eq!(a.stats(), stats(7, 6, 0, 0));
        // 536 is still the same epoch.
        let b = feed([1000, 1536]);
        assert_eq!(b.stats(), stats(537, 2, 0, 0));
        // So is going back 536 (the start moves down), but not 537.
        let c = feed([1000, 1001, 465]);
        assert_eq!(c.stats(), stats(537, 3, 0, 0));
        let d = feed([1000, 1001, 464]);
        assert_eq!(d.stats(), stats(3, 3, 0, 0));
        // Back to 1001 is a jump from the epoch begun at 464, not a
        // duplicate.
        let e = feed([1000, 1001, 464, 1001]);
        assert_eq!(e.stats(), stats(4, 4, 0, 0));
    }

    #[test]
    fn garbage_counts_only_as_parse_errors() {
        let mut a = RtpAnalyzer::new();
        let packets: [&[u8]; 3] = [b"", b"\x80\x00", &[0x40; 20]];
        for p in packets {
            match rtp::parse(p) {
                Ok(h) => {
                    a.observe(&h);
                }
                Err(_) => a.parse_error(),
            }
        }
        for s in 10..13 {
            a.observe(&header(s, 7, false));
        }
        a.parse_error();
        assert_eq!(a.stats(), stats(3, 3, 0, 4));
    }

    #[test]
    fn window_forgets_only_what_left_it() {
        // Long in-order run: numbers far below max leave the window, but a
        // duplicate within it is still found.
        let mut a = feed((0..5000).map(|i: u32| (i % 65536) as u16));
        a.observe(&header(4990, 7, false));
        assert_eq!(a.stats(), stats(5000, 5000, 1, 0));
        // The number skipped by a gap shares its slot with one a window
        // below, seen long ago: arriving late it is still new.
        a.observe(&header(5001, 7, false));
        a.observe(&header(5000, 7, false));
        assert_eq!(a.stats(), stats(5002, 5002, 1, 0));
        // Jumps clear exactly the slots that leave the window: each step
        // of `step` brings a number and the one below it, so a slot not
        // cleared shows as a false duplicate within a few rounds, and one
        // cleared too early hides the duplicates sent at the end.
        for (step, rounds) in [(512u16, 300u64), (100, 1000), (37, 3000), (2, 5000)] {
            let mut b = RtpAnalyzer::new();
            let mut seq = 0u16;
            for _ in 0..rounds {
                b.observe(&header(seq, 7, false));
                b.observe(&header(seq.wrapping_sub(1), 7, false));
                seq = seq.wrapping_add(step);
            }
            let sent = (rounds - 1) * u64::from(step) + 2;
            assert_eq!(b.stats(), stats(sent, 2 * rounds, 0, 0), "step {step}");
            let last = seq.wrapping_sub(step);
            for back in [1, step, step + 1] {
                b.observe(&header(last.wrapping_sub(back), 7, false));
            }
            assert_eq!(b.stats(), stats(sent, 2 * rounds, 3, 0), "step {step}");
        }
    }

    #[test]
    fn several_wraps_keep_extending() {
        let seqs = (0..200_000u32).map(|i| ((i + 60_000) % 65536) as u16);
        assert_eq!(feed(seqs).stats(), stats(200_000, 200_000, 0, 0));
    }

    #[test]
    fn stats_add_up() {
        let mut t = stats(10, 8, 1, 2);
        t.add(&stats(5, 5, 0, 1));
        assert_eq!(t, stats(15, 13, 1, 3));
    }
}
