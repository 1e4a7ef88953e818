//! Counting what arrived: latency percentiles and per-stream sequence
//! bookkeeping (loss and duplicates).

/// Sub-buckets per power of two: every recorded value is kept to within
/// 1/64 (1.6 %) of itself, which is finer than run-to-run noise.
const SUB_BUCKETS: u64 = 64;
const SUB_BITS: u32 = 6;
/// Values from 2^40 ns (about 18 minutes) up share the last bucket.
const MAX_EXPONENT: u32 = 40;
const BUCKETS: usize = (SUB_BUCKETS + (MAX_EXPONENT - SUB_BITS) as u64 * SUB_BUCKETS) as usize;

/// The 1-based rank of the p-th percentile among `count` sorted samples,
/// by the nearest-rank rule: the smallest sample with at least p % of all
/// samples at or below it.
pub fn nearest_rank(p: f64, count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = (p / 100.0 * count as f64).ceil() as u64;
    rank.clamp(1, count)
}

/// A log-linear histogram of nanosecond values with a fixed footprint, so
/// recording millions of samples costs no allocation.
#[derive(Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHistogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, value_ns: u64) {
        let idx = bucket_index(value_ns);
        self.counts[idx] += 1;
        self.total += 1;
        self.sum += u128::from(value_ns);
        self.min = self.min.min(value_ns);
        self.max = self.max.max(value_ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// How many samples were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest sample, exactly.
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The arithmetic mean, exactly.
    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The p-th percentile (nearest rank), reported as the upper edge of
    /// its bucket so it never understates, and never above the true max.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let rank = nearest_rank(p, self.total);
        if rank == 0 {
            return None;
        }
        let mut seen = 0u64;
        for (idx, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_bounds(idx);
                let high = low.saturating_add(width - 1);
                return Some(high.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// Which bucket holds `v`: exact below 64, then 64 equal slices of every
/// power of two.
fn bucket_index(v: u64) -> usize {
    if v < SUB_BUCKETS {
        return v as usize;
    }
    let exponent = 63 - v.leading_zeros();
    if exponent >= MAX_EXPONENT {
        return BUCKETS - 1;
    }
    let shift = exponent - SUB_BITS;
    let sub = (v >> shift) - SUB_BUCKETS;
    (SUB_BUCKETS + u64::from(shift) * SUB_BUCKETS + sub) as usize
}

/// The lowest value of bucket `idx` and how many values it spans.
fn bucket_bounds(idx: usize) -> (u64, u64) {
    let idx = idx as u64;
    if idx < SUB_BUCKETS {
        return (idx, 1);
    }
    let shift = (idx - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = (idx - SUB_BUCKETS) % SUB_BUCKETS;
    ((SUB_BUCKETS + sub) << shift, 1u64 << shift)
}

/// What became of one received sequence number.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum SeqMark {
    /// Seen for the first time.
    New,
    /// Seen before: the relay (or the network) duplicated it.
    Duplicate,
    /// Beyond what this stream can carry: a corrupt or foreign packet.
    OutOfRange,
}

/// One bit per sequence number of a stream, so loss and duplicates are
/// exact however packets are reordered.
pub struct SeqTracker {
    bits: Vec<u64>,
    limit: u64,
}

impl SeqTracker {
    /// A tracker for sequence numbers `0..limit`; storage grows with the
    /// highest number seen, so a generous limit costs nothing up front.
    pub fn new(limit: u64) -> Self {
        SeqTracker {
            bits: Vec::new(),
            limit,
        }
    }

    /// Records `seq` and says whether it is new.
    pub fn mark(&mut self, seq: u64) -> SeqMark {
        if seq >= self.limit {
            return SeqMark::OutOfRange;
        }
        let word = (seq / 64) as usize;
        if word >= self.bits.len() {
            // Grow in steps so a steady stream reallocates rarely.
            let want = (word + 1).max(self.bits.len() * 2).max(16);
            let cap = self.limit.div_ceil(64) as usize;
            self.bits.resize(want.min(cap), 0);
        }
        let mask = 1u64 << (seq % 64);
        if self.bits[word] & mask != 0 {
            SeqMark::Duplicate
        } else {
            self.bits[word] |= mask;
            SeqMark::New
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference the histogram is checked against: the p-th
    /// percentile of sorted samples by nearest rank.
    fn percentile_of_sorted(sorted: &[u64], p: f64) -> Option<u64> {
        let rank = nearest_rank(p, sorted.len() as u64);
        if rank == 0 {
            return None;
        }
        sorted.get((rank - 1) as usize).copied()
    }

    #[test]
    fn nearest_rank_follows_definition() {
        assert_eq!(nearest_rank(50.0, 0), 0);
        assert_eq!(nearest_rank(50.0, 1), 1);
        assert_eq!(nearest_rank(50.0, 10), 5);
        assert_eq!(nearest_rank(99.0, 10), 10);
        assert_eq!(nearest_rank(99.0, 100), 99);
        assert_eq!(nearest_rank(99.0, 1000), 990);
        assert_eq!(nearest_rank(100.0, 7), 7);
        assert_eq!(nearest_rank(0.0, 7), 1);
        assert_eq!(nearest_rank(250.0, 7), 7);
    }

    #[test]
    fn percentile_of_sorted_picks_the_sample() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_of_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_of_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_of_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_of_sorted(&[], 50.0), None);
        assert_eq!(percentile_of_sorted(&[7], 99.0), Some(7));
    }

    #[test]
    fn buckets_cover_values_without_gaps() {
        let mut previous_end = 0u64;
        for idx in 0..BUCKETS - 1 {
            let (low, width) = bucket_bounds(idx);
            assert_eq!(
                low, previous_end,
                "bucket {idx} starts where the last ended"
            );
            previous_end = low + width;
        }
    }

    #[test]
    fn values_land_in_their_bucket() {
        for v in [0, 1, 63, 64, 65, 127, 128, 1000, 20_000, 5_000_000, 1 << 39] {
            let (low, width) = bucket_bounds(bucket_index(v));
            assert!(low <= v && v < low + width, "{v} in [{low}, +{width})");
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = LatencyHistogram::new();
        for v in 1..=50 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(25));
        assert_eq!(h.percentile(99.0), Some(50));
        assert_eq!(h.max(), Some(50));
        assert_eq!(h.total, 50);
        assert_eq!(h.mean(), Some(25.5));
    }

    #[test]
    fn large_values_stay_within_resolution() {
        let mut h = LatencyHistogram::new();
        let mut exact = Vec::new();
        // Latencies from 10 µs to 10 ms, spread unevenly.
        for i in 0..10_000u64 {
            let v = 10_000 + (i * i) % 10_000_000;
            h.record(v);
            exact.push(v);
        }
        exact.sort_unstable();
        for p in [50.0, 90.0, 99.0, 99.9] {
            let want = percentile_of_sorted(&exact, p).unwrap_or(0) as f64;
            let got = h.percentile(p).unwrap_or(0) as f64;
            assert!(got >= want, "p{p}: {got} never below {want}");
            assert!(
                got <= want * (1.0 + 1.0 / 64.0) + 1.0,
                "p{p}: {got} near {want}"
            );
        }
        assert_eq!(h.max(), exact.last().copied());
    }

    #[test]
    fn percentile_never_exceeds_max() {
        let mut h = LatencyHistogram::new();
        h.record(1_000_001);
        assert_eq!(h.percentile(50.0), Some(1_000_001));
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let h = LatencyHistogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.mean(), None);
    }

    #[test]
    fn merge_adds_samples() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(10);
        b.record(30);
        b.record(20);
        a.merge(&b);
        assert_eq!(a.total, 3);
        assert_eq!(a.percentile(50.0), Some(20));
        assert_eq!(a.max(), Some(30));
    }

    #[test]
    fn merging_empty_keeps_minimum() {
        let mut a = LatencyHistogram::new();
        a.record(40);
        a.merge(&LatencyHistogram::new());
        assert_eq!(a.percentile(1.0), Some(40));
    }

    #[test]
    fn seq_tracker_counts_duplicates_and_range() {
        let mut t = SeqTracker::new(1000);
        assert_eq!(t.mark(5), SeqMark::New);
        assert_eq!(t.mark(5), SeqMark::Duplicate);
        assert_eq!(t.mark(999), SeqMark::New);
        assert_eq!(t.mark(1000), SeqMark::OutOfRange);
        assert_eq!(t.mark(0), SeqMark::New);
        assert_eq!(t.mark(999), SeqMark::Duplicate);
    }

    #[test]
    fn seq_tracker_grows_only_to_its_limit() {
        let mut t = SeqTracker::new(70);
        assert_eq!(t.mark(69), SeqMark::New);
        assert!(t.bits.len() <= 2);
    }
}
