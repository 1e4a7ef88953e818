//! Re-packetization of RTP audio for the `zNN` modifier (doc/PROTOCOL.md,
//! "Modifiers of `U` and `L`").
//!
//! Audio from one party is cut or joined on codec frame boundaries into
//! packets of the requested duration, with timestamps, sequence numbers and
//! marker bits rewritten so the output is a consistent RTP stream (the
//! classic daemon got these wrong, see "Classic defects"). Inputs wait in a
//! small queue ordered by RTP timestamp, which undoes mild re-ordering; each
//! output is paced off the arrival times of the audio it carries and is
//! never held longer than one target packet plus one input packet.
//!
//! All storage is sized in [`Resizer::new`]; the packet path only copies
//! bytes.

use std::time::{Duration, Instant};

use crate::rtp::{self, RTP_HEADER_LEN};

/// Largest target packet duration; bounds what a remote `zNN` can make the
/// relay allocate.
pub const MAX_TARGET_MS: u32 = 1000;
/// Smallest target: the protocol counts `z` in whole 10 ms units.
const MIN_TARGET_MS: u32 = 10;
/// Every codec handled here runs an 8 kHz RTP clock.
const SAMPLES_PER_MS: u32 = 8;
/// Queue room beyond four target packets, so a large input packet plus
/// some re-ordering fits even behind a 10 ms target.
const QUEUE_SLACK_MS: u32 = 200;
/// The densest codec handled (G.711) sizes the audio store.
const MAX_BYTES_PER_MS: u32 = 8;
/// One queue slot per 5 ms of queue: smaller input packets are not seen in
/// practice, and if they are, the queue overflows into counted drops.
const MS_PER_SLOT: u32 = 5;
/// A timestamp further than this (1 s) behind the audio already sent is a
/// sender that restarted its timeline, not a late packet: dropping it as
/// late would drop the rest of the stream.
const LATE_WINDOW: i32 = 8000;
/// A forward jump beyond this also starts a new timeline, which keeps the
/// wrapping comparisons between queued timestamps consistent.
const MAX_FORWARD: i32 = 1 << 30;

/// What [`Resizer::enqueue`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Not resizable (not RTP, another codec, no payload): forward it as is.
    PassThrough,
    /// Taken into the queue; it leaves through `dequeue` or `flush`.
    Queued,
    /// Discarded: late, duplicate, or no room for it.
    Dropped,
}

/// One queued input packet, or what is left of it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Timeline it belongs to; slots of older timelines are flushed.
    timeline: u32,
    ssrc: u32,
    payload_type: u8,
    /// Input sequence number: seeds the output numbering of a new SSRC.
    seq: u16,
    /// Timestamp of the input's first sample.
    ts: u32,
    /// Timestamp just past the input's last whole frame.
    end: u32,
    /// Timestamp of the first sample not yet sent.
    next: u32,
    /// Unsent payload, as an offset into the audio store and a length.
    off: usize,
    rem: usize,
    /// The input had the marker bit and its first sample is not sent yet.
    marker: bool,
    /// Whole frames of a splittable codec; otherwise (say a G.729 packet
    /// ending in a 2-byte SID frame) it is sent alone, unchanged.
    joinable: bool,
    arrival: Instant,
}

impl Slot {
    /// Duration of the whole input packet, in samples.
    fn duration(&self) -> u32 {
        self.end.wrapping_sub(self.ts)
    }
}

/// What was last sent on the current timeline.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Timestamp just past the last sample sent: anything before is late.
    upto: u32,
    /// Arrival and duration (samples) of the input that sample came in.
    arrival: Instant,
    duration: u32,
}

/// The next output packet as the queue stands.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Slots contributing, from the head; all but the last entirely.
    touched: usize,
    /// Bytes and samples taken from the last of them.
    last_bytes: usize,
    last_samples: u32,
    /// Payload length of the output.
    bytes: usize,
    /// Timestamp just past the output's last sample.
    end: u32,
    due: Instant,
}

impl Plan {
    /// All that is left of `slot` as one packet: how an input that cannot
    /// be split or joined goes out.
    fn rest_of(slot: &Slot, due: Instant) -> Plan {
        Plan {
            touched: 1,
            last_bytes: slot.rem,
            last_samples: slot.end.wrapping_sub(slot.next),
            bytes: slot.rem,
            end: slot.end,
            due,
        }
    }
}

/// An input packet the resizer can take: RTP of a codec it can split, with
/// a payload.
#[derive(Debug, Clone, Copy)]
struct Input<'a> {
    header: rtp::RtpHeader,
    payload: &'a [u8],
    /// Duration of the payload, in samples.
    samples: u32,
    /// Size of the codec's splitting unit (see [`unit()`]).
    frame_bytes: usize,
}

impl<'a> Input<'a> {
    /// `None` for what passes through unchanged: not RTP, a codec that
    /// cannot be split, or no payload.
    fn parse(packet: &'a [u8]) -> Option<Input<'a>> {
        let header = rtp::parse(packet).ok()?;
        let (frame_bytes, _) = unit(header.payload_type)?;
        let payload = packet
            .get(header.payload_offset..header.payload_offset + header.payload_len)
            .unwrap_or_default();
        // Nothing to re-packetize, and a keepalive must not disturb timing.
        if payload.is_empty() {
            return None;
        }
        let samples = rtp::samples_in(header.payload_type, payload.len())?;
        Some(Input {
            header,
            payload,
            samples,
            frame_bytes,
        })
    }

    /// Timestamp just past the input's last sample.
    fn end(&self) -> u32 {
        self.header.timestamp.wrapping_add(self.samples)
    }

    /// The queue slot of this input on `timeline`, its payload stored at
    /// `off`.
    fn slot(&self, timeline: u32, off: usize, arrival: Instant) -> Slot {
        let h = &self.header;
        Slot {
            timeline,
            ssrc: h.ssrc,
            payload_type: h.payload_type,
            seq: h.seq,
            ts: h.timestamp,
            end: self.end(),
            next: h.timestamp,
            off,
            rem: self.payload.len(),
            marker: h.marker,
            joinable: self.payload.len().is_multiple_of(self.frame_bytes),
            arrival,
        }
    }
}

/// Re-packetizes the audio one party sends into packets of a fixed duration.
#[derive(Debug)]
pub struct Resizer {
    target_ms: u32,
    /// Queued inputs: slots of flushed timelines first, in arrival order,
    /// then the current timeline's by timestamp. Never grows past
    /// `slot_cap`, so inserting never allocates.
    slots: Vec<Slot>,
    slot_cap: usize,
    /// Payload bytes of the queued inputs, appended at `tail`; `spare` is
    /// the compaction target, swapped in when the tail runs out.
    audio: Vec<u8>,
    spare: Vec<u8>,
    tail: usize,
    /// Current timeline: bumped on a change of SSRC, payload type or a
    /// timestamp discontinuity.
    timeline: u32,
    stream: Option<(u32, u8)>,
    sent: Option<Sent>,
    /// SSRC of the last output and the sequence number its next one gets.
    out_seq: Option<(u32, u16)>,
    late: u64,
    dropped: u64,
}

impl Resizer {
    /// Creates a resizer for `target_ms` packets (rounded down to 10 ms,
    /// clamped to 10..=[`MAX_TARGET_MS`]) with all its storage.
    pub fn new(target_ms: u32) -> Resizer {
        let target_ms = (target_ms / 10 * 10).clamp(MIN_TARGET_MS, MAX_TARGET_MS);
        let queue_ms = 4 * target_ms + QUEUE_SLACK_MS;
        let bytes = (queue_ms * MAX_BYTES_PER_MS) as usize;
        let slot_cap = (queue_ms / MS_PER_SLOT) as usize;
        Resizer {
            target_ms,
            slots: Vec::with_capacity(slot_cap),
            slot_cap,
            audio: vec![0; bytes],
            spare: vec![0; bytes],
            tail: 0,
            timeline: 0,
            stream: None,
            sent: None,
            out_seq: None,
            late: 0,
            dropped: 0,
        }
    }

    /// The target packet duration in effect, in milliseconds.
    pub fn target_ms(&self) -> u32 {
        self.target_ms
    }

    /// Input packets dropped because their audio had already been sent.
    pub fn late_dropped(&self) -> u64 {
        self.late
    }

    /// Other discards: duplicates, queue overflow, output not fitting `out`.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes one packet (complete RTP bytes) that arrived at `now`.
    pub fn enqueue(&mut self, packet: &[u8], now: Instant) -> Enqueued {
        let Some(input) = Input::parse(packet) else {
            return Enqueued::PassThrough;
        };
        self.follow_stream(input.header.ssrc, input.header.payload_type);
        match self.offset_on_timeline(input.header.timestamp) {
            Some(d) if !(-LATE_WINDOW..=MAX_FORWARD).contains(&d) => self.new_timeline(),
            Some(d) if d < 0 && self.sent.is_some() => {
                self.late += 1;
                return Enqueued::Dropped;
            }
            _ => {}
        }
        let first = self.current_start();
        if self.is_duplicate(&input, first) || !self.store(&input, first, now) {
            self.dropped += 1;
            return Enqueued::Dropped;
        }
        Enqueued::Queued
    }

    /// Writes the next packet due at `now` into `out`, returns its length;
    /// None when nothing is due yet.
    pub fn dequeue(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        loop {
            let plan = self.plan()?;
            if plan.due > now {
                return None;
            }
            // A packet too large for `out` is consumed and counted, so it
            // cannot stay due forever and spin the caller's poll loop.
            if let Some(len) = self.commit(&plan, out) {
                return Some(len);
            }
        }
    }

    /// When the next queued packet becomes due (for the poll timeout); None
    /// when nothing is queued.
    pub fn next_due(&self) -> Option<Instant> {
        self.plan().map(|p| p.due)
    }

    /// Emits everything still queued regardless of time (session end, z
    /// turned off); call repeatedly until None.
    pub fn flush(&mut self, out: &mut [u8]) -> Option<usize> {
        loop {
            let plan = self.plan()?;
            if let Some(len) = self.commit(&plan, out) {
                return Some(len);
            }
        }
    }

    /// A change of SSRC or payload type starts a new timeline, so the old
    /// stream's audio is flushed instead of being joined with the new one.
    fn follow_stream(&mut self, ssrc: u32, payload_type: u8) {
        let stream = (ssrc, payload_type);
        if self.stream != Some(stream) {
            if self.stream.is_some() {
                self.new_timeline();
            }
            self.stream = Some(stream);
        }
    }

    /// How far `ts` lies after the audio the current timeline last sent,
    /// or, before anything was sent, after its first queued input; `None`
    /// when the timeline has neither, so any timestamp fits.
    fn offset_on_timeline(&self, ts: u32) -> Option<i32> {
        let reference = match self.sent {
            Some(s) => s.upto,
            None => self.slots.get(self.current_start())?.ts,
        };
        Some(ts.wrapping_sub(reference) as i32)
    }

    /// Whether the current timeline (from slot `first`) already holds this
    /// audio: the same packet again, or one overlapping a queued input.
    fn is_duplicate(&self, input: &Input, first: usize) -> bool {
        let (ts, end, seq) = (input.header.timestamp, input.end(), input.header.seq);
        self.slots[first..].iter().any(|s| {
            (s.ts == ts && s.seq == seq)
                || (input.samples > 0 && s.duration() > 0 && before(ts, s.end) && before(s.ts, end))
        })
    }

    /// Copies the payload into the audio store and inserts its slot in
    /// timestamp order among the current timeline's (from slot `first`);
    /// false when there is no room for it.
    fn store(&mut self, input: &Input, first: usize, now: Instant) -> bool {
        let ts = input.header.timestamp;
        let mut pos = self.slots[first..]
            .iter()
            .position(|s| before(ts, s.ts))
            .map_or(self.slots.len(), |i| first + i);
        let len = input.payload.len();
        if !self.make_room(len, &mut pos) {
            return false;
        }
        let off = self.tail;
        let Some(store) = self.audio.get_mut(off..off + len) else {
            return false;
        };
        store.copy_from_slice(input.payload);
        self.tail += len;
        self.slots.insert(pos, input.slot(self.timeline, off, now));
        true
    }

    /// Starts a new timeline: what is queued is flushed (due at once, in
    /// order) and nothing of the new one counts as late yet.
    fn new_timeline(&mut self) {
        self.timeline = self.timeline.wrapping_add(1);
        self.sent = None;
    }

    /// Index of the first slot of the current timeline.
    fn current_start(&self) -> usize {
        self.slots
            .iter()
            .position(|s| s.timeline == self.timeline)
            .unwrap_or(self.slots.len())
    }

    /// Target in samples for a codec: whole frames, at least one.
    fn target_samples(&self, payload_type: u8) -> u32 {
        let target = self.target_ms * SAMPLES_PER_MS;
        match unit(payload_type) {
            Some((_, frame)) if frame > 0 => (target / frame).max(1) * frame,
            _ => target,
        }
    }

    /// Frees a slot and `len` bytes at the tail, evicting the oldest queued
    /// audio if it must; false when the newcomer itself is the oldest.
    fn make_room(&mut self, len: usize, pos: &mut usize) -> bool {
        if len > self.audio.len() {
            return false;
        }
        loop {
            let slot_free = self.slots.len() < self.slot_cap;
            if slot_free && self.tail + len <= self.audio.len() {
                return true;
            }
            let live: usize = self.slots.iter().map(|s| s.rem).sum();
            if slot_free && live + len <= self.audio.len() {
                self.compact();
                return true;
            }
            if *pos == 0 {
                return false;
            }
            self.evict_head();
            *pos -= 1;
        }
    }

    /// Drops the head slot unsent (queue overflow); its audio counts as
    /// sent so that a retransmission of it is late.
    fn evict_head(&mut self) {
        if self.slots.is_empty() {
            return;
        }
        let head = self.slots.remove(0);
        self.dropped += 1;
        if head.timeline == self.timeline {
            self.sent = Some(Sent {
                upto: head.end,
                arrival: head.arrival,
                duration: head.duration(),
            });
        }
    }

    /// Moves the unsent bytes of every slot to the start of the store.
    fn compact(&mut self) {
        let mut at = 0;
        for s in &mut self.slots {
            let src = self.audio.get(s.off..s.off + s.rem);
            let dst = self.spare.get_mut(at..at + s.rem);
            if let (Some(src), Some(dst)) = (src, dst) {
                dst.copy_from_slice(src);
            }
            s.off = at;
            at += s.rem;
        }
        std::mem::swap(&mut self.audio, &mut self.spare);
        self.tail = at;
    }

    /// Works out the next output packet and when it is due.
    fn plan(&self) -> Option<Plan> {
        let head = self.slots.first()?;
        let target = self.target_samples(head.payload_type);
        // Pacing: the part of an input that starts `k` samples in is due
        // `k` samples' time after the input arrived.
        let sched = later(head.arrival, head.next.wrapping_sub(head.ts));
        let (mut plan, last, full) = if head.joinable {
            self.join(target, sched)?
        } else {
            (Plan::rest_of(head, sched), head, false)
        };
        if head.timeline != self.timeline {
            // Flushed by a new stream or timeline: out at once, ahead of it.
            plan.due = head.arrival;
            return Some(plan);
        }
        let due = if full {
            sched.max(last.arrival)
        } else if !head.joinable {
            sched
        } else {
            self.short_packet_due(last, &plan, target, sched)
        };
        plan.due = self.bounded_due(head, due, target);
        Some(plan)
    }

    /// Joins whole frames of the head and of the inputs that continue it
    /// without a gap, up to `target` samples. Returns the plan (due at
    /// `due` for now), the last slot it takes audio from, and whether it
    /// reached the target.
    fn join(&self, target: u32, due: Instant) -> Option<(Plan, &Slot, bool)> {
        let head = self.slots.first()?;
        let (frame_bytes, frame_samples) = unit(head.payload_type)?;
        let mut plan = Plan {
            touched: 1,
            last_bytes: head.rem,
            last_samples: head.end.wrapping_sub(head.next),
            bytes: 0,
            end: head.next,
            due,
        };
        let mut last = head;
        let mut samples = 0u32;
        for (i, s) in self.slots.iter().enumerate() {
            if samples >= target {
                break;
            }
            if i > 0 && (s.timeline != head.timeline || !s.joinable || s.ts != plan.end) {
                break;
            }
            let take = s.end.wrapping_sub(s.next).min(target - samples);
            let take_bytes = (take / frame_samples) as usize * frame_bytes;
            samples += take;
            plan.touched = i + 1;
            plan.last_bytes = take_bytes;
            plan.last_samples = take;
            plan.bytes += take_bytes;
            plan.end = s.next.wrapping_add(take);
            last = s;
        }
        Some((plan, last, samples >= target))
    }

    /// When a joined packet of the current timeline that is short of the
    /// target goes out: at its paced time `sched` if nothing can fill it,
    /// else after waiting a bounded time for more.
    fn short_packet_due(&self, last: &Slot, plan: &Plan, target: u32, sched: Instant) -> Instant {
        let blocked = self
            .slots
            .get(plan.touched)
            .is_some_and(|s| s.timeline == self.timeline && s.ts == plan.end);
        if blocked {
            // An unsplittable packet follows: nothing can fill this one.
            return sched;
        }
        // The next input was expected one input's duration after the last;
        // giving it that much again (capped at one target) before sending a
        // short packet means a lost packet never holds audio longer than
        // one target plus one input.
        sched.max(grace_end(last.arrival, last.duration(), target))
    }

    /// `due` after also waiting for audio missing before the head, and
    /// never later than the head may be held.
    fn bounded_due(&self, head: &Slot, due: Instant, target: u32) -> Instant {
        let mut due = due;
        if let Some(s) = self.sent {
            if head.next != s.upto {
                // A gap before the head: wait the same bounded time for
                // the missing audio to come in out of order.
                due = due.max(grace_end(s.arrival, s.duration, target));
            }
        }
        // The waits above follow the previous input's arrival; an input
        // that came in early, or one much longer than the target, must
        // still not hold its first sample past one target plus itself.
        let bound = later(head.arrival, target.saturating_add(head.duration()));
        due.min(bound)
    }

    /// Sends the planned packet: writes it into `out` (None, counted, when
    /// it does not fit) and removes its audio from the queue.
    fn commit(&mut self, plan: &Plan, out: &mut [u8]) -> Option<usize> {
        let head = *self.slots.first()?;
        let touched = plan.touched.clamp(1, self.slots.len());
        // A slot's marker is cleared once its first sample is out, so any
        // marker still set among the touched slots goes with this packet.
        let marker = self.slots[..touched].iter().any(|s| s.marker);
        let seq = match self.out_seq {
            Some((ssrc, seq)) if ssrc == head.ssrc => seq,
            _ => head.seq,
        };
        self.out_seq = Some((head.ssrc, seq.wrapping_add(1)));

        let len = RTP_HEADER_LEN + plan.bytes;
        let written = match out.get_mut(..len) {
            Some(buf) => {
                rtp::write_header(buf, marker, head.payload_type, seq, head.next, head.ssrc);
                let mut at = RTP_HEADER_LEN;
                for (i, s) in self.slots[..touched].iter().enumerate() {
                    let take = if i + 1 == touched {
                        plan.last_bytes
                    } else {
                        s.rem
                    };
                    let src = self.audio.get(s.off..s.off + take);
                    let dst = buf.get_mut(at..at + take);
                    if let (Some(src), Some(dst)) = (src, dst) {
                        dst.copy_from_slice(src);
                    }
                    at += take;
                }
                Some(len)
            }
            None => {
                self.dropped += 1;
                None
            }
        };

        let last = &mut self.slots[touched - 1];
        let take = plan.last_bytes.min(last.rem);
        last.off += take;
        last.rem -= take;
        last.next = last.next.wrapping_add(plan.last_samples);
        last.marker = false;
        let sent = Sent {
            upto: plan.end,
            arrival: last.arrival,
            duration: last.duration(),
        };
        let gone = touched - 1 + usize::from(last.rem == 0);
        self.slots.drain(..gone);
        if head.timeline == self.timeline {
            self.sent = Some(sent);
        }
        if self.slots.is_empty() {
            self.tail = 0;
        }
        written
    }
}

/// Splitting unit of a codec: bytes and samples. G.711 splits anywhere, so
/// its unit is one byte; `None` for codecs that cannot be split or joined.
fn unit(payload_type: u8) -> Option<(usize, u32)> {
    match payload_type {
        0 | 8 => Some((1, 1)),
        _ => rtp::frame_size(payload_type),
    }
}

/// `a` comes before `b` on the (wrapping) RTP timestamp line.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `t` plus the playing time of `samples` at 8 kHz.
fn later(t: Instant, samples: u32) -> Instant {
    let span = Duration::from_micros(u64::from(samples) * 125);
    t.checked_add(span).unwrap_or(t)
}

/// End of the wait for the input expected after one of `duration` samples
/// that arrived at `arrival`: that duration again, capped at one target.
fn grace_end(arrival: Instant, duration: u32, target: u32) -> Instant {
    later(arrival, duration.saturating_add(duration.min(target)))
}

// Carried across a hand-over (doc/PROTOCOL.md, "Hand-over"): the queued
// inputs with their unsent audio, packed, so nothing queued is lost and
// the output numbering goes on. The stores are made afresh for the
// target, and a slot that would not fit them is refused.
crate::rtpp_handover::wire::carry_fields!(Sent {
    upto,
    arrival,
    duration
});

impl crate::rtpp_handover::wire::Carry for Resizer {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.u32(self.target_ms);
        w.len(self.slots.len());
        for s in &self.slots {
            let audio = self.audio.get(s.off..s.off + s.rem).unwrap_or_default();
            w.put(&(s.timeline, s.ssrc, s.payload_type, s.seq));
            w.put(&(s.ts, s.end, s.next, s.marker, s.joinable));
            w.put(&s.arrival);
            w.bytes(audio);
        }
        w.u32(self.timeline);
        w.put(&self.stream);
        w.put(&self.sent);
        w.put(&self.out_seq);
        w.u64(self.late);
        w.u64(self.dropped);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        use crate::rtpp_handover::wire::refuse;
        let target_ms = r.u32()?;
        let mut z = Resizer::new(target_ms);
        if z.target_ms != target_ms {
            return refuse(format!("re-packetizer target {target_ms} ms"));
        }
        let n = r.len(z.slot_cap, 16)?;
        for _ in 0..n {
            let (timeline, ssrc, payload_type, seq) = r.take()?;
            let (ts, end, next, marker, joinable) = r.take()?;
            let arrival = r.take()?;
            let audio = r.bytes(z.audio.len())?;
            let off = z.tail;
            let Some(store) = z.audio.get_mut(off..off + audio.len()) else {
                return refuse("re-packetizer queue larger than its store");
            };
            store.copy_from_slice(audio);
            z.tail += audio.len();
            z.slots.push(Slot {
                timeline,
                ssrc,
                payload_type,
                seq,
                ts,
                end,
                next,
                off,
                rem: audio.len(),
                marker,
                joinable,
                arrival,
            });
        }
        z.timeline = r.u32()?;
        z.stream = r.take()?;
        z.sent = r.take()?;
        z.out_seq = r.take()?;
        z.late = r.u64()?;
        z.dropped = r.u64()?;
        Ok(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::RtpHeader;

    const SSRC: u32 = 0x1234_5678;
    const SEQ0: u16 = 1000;
    const TS0: u32 = 5000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0; RTP_HEADER_LEN];
        rtp::write_header(&mut p, marker, pt, seq, ts, ssrc).unwrap();
        p.extend_from_slice(payload);
        p
    }

    /// `n` packets of `bytes` payload, `every` ms apart from `t0`, marker on
    /// the first; payload bytes count up so reassembly can be compared.
    fn stream(t0: Instant, pt: u8, n: usize, bytes: usize, every: u64) -> Vec<(Instant, Vec<u8>)> {
        let samples = rtp::samples_in(pt, bytes).unwrap();
        (0..n)
            .map(|i| {
                let payload: Vec<u8> = (0..bytes).map(|j| ((i * bytes + j) % 251) as u8).collect();
                let seq = SEQ0.wrapping_add(i as u16);
                let ts = TS0.wrapping_add(samples * i as u32);
                let at = t0 + ms(every * i as u64);
                (at, packet(pt, seq, ts, SSRC, i == 0, &payload))
            })
            .collect()
    }

    #[derive(Debug)]
    struct Out {
        at: Instant,
        h: RtpHeader,
        payload: Vec<u8>,
    }

    fn record(at: Instant, bytes: &[u8]) -> Out {
        let h = rtp::parse(bytes).expect("output parses as RTP");
        let payload = bytes[h.payload_offset..h.payload_offset + h.payload_len].to_vec();
        Out { at, h, payload }
    }

    /// Drives the resizer as the relay loop does: wake at the next input
    /// arrival or the next due time, enqueue what arrived, send what is due.
    fn run(r: &mut Resizer, inputs: &[(Instant, Vec<u8>)]) -> Vec<Out> {
        let mut buf = [0u8; 2048];
        let mut outs = Vec::new();
        let mut i = 0;
        for _ in 0..100_000 {
            let now = match (inputs.get(i).map(|x| x.0), r.next_due()) {
                (None, None) => return outs,
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap(),
            };
            while let Some((at, p)) = inputs.get(i) {
                if *at > now {
                    break;
                }
                assert_eq!(r.enqueue(p, *at), Enqueued::Queued);
                i += 1;
            }
            while let Some(n) = r.dequeue(now, &mut buf) {
                outs.push(record(now, &buf[..n]));
            }
            if let Some(due) = r.next_due() {
                assert!(due > now, "nothing due may be left behind");
            }
        }
        panic!("resizer never drained");
    }

    fn payload_of(packets: &[(Instant, Vec<u8>)]) -> Vec<u8> {
        let mut all = Vec::new();
        for (_, p) in packets {
            let h = rtp::parse(p).unwrap();
            all.extend_from_slice(&p[h.payload_offset..h.payload_offset + h.payload_len]);
        }
        all
    }

    /// Byte-for-byte payload, consecutive seq from the first input's,
    /// timestamps of first samples, SSRC and payload type kept.
    fn assert_consistent(outs: &[Out], inputs: &[(Instant, Vec<u8>)], pt: u8) {
        let all: Vec<u8> = outs.iter().flat_map(|o| o.payload.clone()).collect();
        assert_eq!(all, payload_of(inputs));
        let mut ts = TS0;
        for (k, o) in outs.iter().enumerate() {
            assert_eq!(o.h.seq, SEQ0.wrapping_add(k as u16), "seq of output {k}");
            assert_eq!(o.h.timestamp, ts, "timestamp of output {k}");
            assert_eq!((o.h.ssrc, o.h.payload_type), (SSRC, pt));
            ts = ts.wrapping_add(rtp::samples_in(pt, o.payload.len()).unwrap());
        }
    }

    fn sizes(outs: &[Out]) -> Vec<usize> {
        outs.iter().map(|o| o.payload.len()).collect()
    }

    fn times(outs: &[Out], t0: Instant) -> Vec<u64> {
        outs.iter()
            .map(|o| (o.at - t0).as_millis() as u64)
            .collect()
    }

    #[test]
    fn pcmu_20ms_to_40ms_sends_each_pair_when_complete() {
        let t0 = Instant::now();
        let inputs = stream(t0, 0, 10, 160, 20);
        let mut r = Resizer::new(40);
        let outs = run(&mut r, &inputs);
        assert_consistent(&outs, &inputs, 0);
        assert_eq!(sizes(&outs), vec![320; 5]);
        // As soon as the second input of each pair is in.
        assert_eq!(times(&outs, t0), vec![20, 60, 100, 140, 180]);
        let markers: Vec<bool> = outs.iter().map(|o| o.h.marker).collect();
        assert_eq!(markers, vec![true, false, false, false, false]);
    }

    #[test]
    fn pcmu_20ms_to_10ms_sends_first_half_at_once_second_10ms_later() {
        let t0 = Instant::now();
        let inputs = stream(t0, 0, 5, 160, 20);
        let mut r = Resizer::new(10);
        let outs = run(&mut r, &inputs);
        assert_consistent(&outs, &inputs, 0);
        assert_eq!(sizes(&outs), vec![80; 10]);
        assert_eq!(
            times(&outs, t0),
            vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
        );
        assert!(outs[0].h.marker);
        assert!(outs[1..].iter().all(|o| !o.h.marker));
    }

    #[test]
    fn g729_10ms_to_30ms_joins_three_frames() {
        let t0 = Instant::now();
        let inputs = stream(t0, 18, 9, 10, 10);
        let mut r = Resizer::new(30);
        let outs = run(&mut r, &inputs);
        assert_consistent(&outs, &inputs, 18);
        assert_eq!(sizes(&outs), vec![30; 3]);
        assert_eq!(times(&outs, t0), vec![20, 50, 80]);
    }

    #[test]
    fn pcma_60ms_to_20ms_and_pcmu_30ms_to_20ms() {
        let t0 = Instant::now();
        let inputs = stream(t0, 8, 3, 480, 60);
        let outs = run(&mut Resizer::new(20), &inputs);
        assert_consistent(&outs, &inputs, 8);
        assert_eq!(sizes(&outs), vec![160; 9]);
        assert_eq!(
            times(&outs, t0),
            vec![0, 20, 40, 60, 80, 100, 120, 140, 160]
        );

        // 30 ms does not divide into 20: outputs straddle inputs.
        let inputs = stream(t0, 0, 4, 240, 30);
        let outs = run(&mut Resizer::new(20), &inputs);
        assert_consistent(&outs, &inputs, 0);
        assert_eq!(sizes(&outs), vec![160; 6]);
        assert_eq!(times(&outs, t0), vec![0, 30, 40, 60, 90, 100]);
    }

    #[test]
    fn frame_codecs_round_target_down_to_whole_frames() {
        let t0 = Instant::now();
        // GSM: 20 ms frames; z30 -> one frame, z50 -> two.
        let inputs = stream(t0, 3, 4, 66, 40);
        let outs = run(&mut Resizer::new(30), &inputs);
        assert_consistent(&outs, &inputs, 3);
        assert_eq!(sizes(&outs), vec![33; 8]);
        let outs = run(&mut Resizer::new(50), &inputs);
        assert_consistent(&outs, &inputs, 3);
        assert_eq!(sizes(&outs), vec![66; 4]);
        // G.723: 30 ms frames; z20 -> still one frame, z60 -> two.
        let inputs = stream(t0, 4, 4, 24, 30);
        let outs = run(&mut Resizer::new(20), &inputs);
        assert_consistent(&outs, &inputs, 4);
        assert_eq!(sizes(&outs), vec![24; 4]);
        let outs = run(&mut Resizer::new(60), &inputs);
        assert_consistent(&outs, &inputs, 4);
        assert_eq!(sizes(&outs), vec![48; 2]);
    }

    #[test]
    fn marker_goes_with_the_first_sample_of_its_input() {
        let t0 = Instant::now();
        let mut inputs = stream(t0, 0, 6, 160, 20);
        // A new talkspurt at input 3.
        inputs[3].1[1] |= 0x80;
        let outs = run(&mut Resizer::new(10), &inputs);
        let marked: Vec<usize> = (0..outs.len()).filter(|&k| outs[k].h.marker).collect();
        assert_eq!(marked, vec![0, 6]);
        // Joining: the marker rides on the packet that carries input 3's start.
        let outs = run(&mut Resizer::new(60), &inputs);
        let marked: Vec<usize> = (0..outs.len()).filter(|&k| outs[k].h.marker).collect();
        assert_eq!(marked, vec![0, 1]);
        assert_eq!(outs[1].h.timestamp, TS0 + 3 * 160);
    }

    #[test]
    fn out_of_order_input_is_reordered() {
        let t0 = Instant::now();
        let mut inputs = stream(t0, 0, 6, 160, 20);
        let in_order = inputs.clone();
        // Input 2 overtakes input 1 by 3 ms; input 5 overtakes input 4.
        inputs.swap(1, 2);
        inputs[1].0 = t0 + ms(20);
        inputs[2].0 = t0 + ms(23);
        inputs.swap(4, 5);
        inputs[4].0 = t0 + ms(80);
        inputs[5].0 = t0 + ms(85);
        let mut r = Resizer::new(40);
        let outs = run(&mut r, &inputs);
        assert_consistent(&outs, &in_order, 0);
        assert_eq!(sizes(&outs), vec![320; 3]);
        assert_eq!(times(&outs, t0), vec![23, 60, 85]);
        assert_eq!((r.late_dropped(), r.dropped()), (0, 0));

        // Splitting: input 1 arrives 5 ms after input 2, within the wait
        // for the missing audio, and still goes out in order.
        let outs = run(&mut Resizer::new(10), &inputs);
        assert_consistent(&outs, &in_order, 0);
        assert_eq!(sizes(&outs), vec![80; 12]);
    }

    #[test]
    fn late_input_is_dropped_and_counted() {
        let t0 = Instant::now();
        let inputs = stream(t0, 0, 4, 160, 20);
        let mut r = Resizer::new(10);
        let mut buf = [0u8; 1500];
        assert_eq!(r.enqueue(&inputs[0].1, t0), Enqueued::Queued);
        assert!(r.dequeue(t0, &mut buf).is_some());
        assert!(r.dequeue(t0 + ms(10), &mut buf).is_some());
        assert_eq!(r.enqueue(&inputs[2].1, t0 + ms(40)), Enqueued::Queued);
        let n = r.dequeue(t0 + ms(40), &mut buf).unwrap();
        assert_eq!(rtp::parse(&buf[..n]).unwrap().timestamp, TS0 + 320);
        // Input 1's audio slot has been passed: it is late.
        assert_eq!(r.enqueue(&inputs[1].1, t0 + ms(41)), Enqueued::Dropped);
        // So is a copy of input 0.
        assert_eq!(r.enqueue(&inputs[0].1, t0 + ms(42)), Enqueued::Dropped);
        assert_eq!(r.late_dropped(), 2);
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn duplicates_are_dropped() {
        let t0 = Instant::now();
        let inputs = stream(t0, 0, 2, 160, 20);
        let mut r = Resizer::new(40);
        assert_eq!(r.enqueue(&inputs[0].1, t0), Enqueued::Queued);
        assert_eq!(r.enqueue(&inputs[0].1, t0 + ms(1)), Enqueued::Dropped);
        assert_eq!(r.enqueue(&inputs[1].1, t0 + ms(20)), Enqueued::Queued);
        assert_eq!(r.enqueue(&inputs[1].1, t0 + ms(21)), Enqueued::Dropped);
        let mut buf = [0u8; 1500];
        assert_eq!(r.dequeue(t0 + ms(21), &mut buf), Some(12 + 320));
        assert_eq!(r.dequeue(t0 + ms(1000), &mut buf), None);
        assert_eq!(r.next_due(), None);
        assert_eq!(r.dropped(), 2);
        assert_eq!(r.late_dropped(), 0);
    }

    #[test]
    fn lost_packet_sends_short_packet_instead_of_waiting() {
        let t0 = Instant::now();
        let mut inputs = stream(t0, 0, 6, 160, 20);
        inputs.remove(1);
        let mut r = Resizer::new(40);
        let outs = run(&mut r, &inputs);
        // Input 0 goes alone when input 2 shows the gap (at 40 ms), then
        // pairs resume from input 2.
        assert_eq!(sizes(&outs), vec![160, 320, 320]);
        assert_eq!(times(&outs, t0), vec![40, 60, 100]);
        let ts: Vec<u32> = outs.iter().map(|o| o.h.timestamp).collect();
        assert_eq!(ts, vec![TS0, TS0 + 320, TS0 + 640]);
        let seq: Vec<u16> = outs.iter().map(|o| o.h.seq).collect();
        assert_eq!(seq, vec![SEQ0, SEQ0 + 1, SEQ0 + 2]);
        assert_eq!(
            outs.iter()
                .flat_map(|o| o.payload.clone())
                .collect::<Vec<_>>(),
            payload_of(&inputs)
        );
    }

    #[test]
    fn stream_that_stops_is_sent_within_one_target_plus_one_input() {
        let t0 = Instant::now();
        let inputs = stream(t0, 0, 3, 160, 20);
        let mut r = Resizer::new(100);
        for (at, p) in &inputs {
            r.enqueue(p, *at);
        }
        // The oldest sample arrived at 0: it must leave by 100 + 20 ms.
        let due = r.next_due().unwrap();
        assert!(due <= t0 + ms(120), "due {:?}", due - t0);
        let mut buf = [0u8; 1500];
        assert_eq!(r.dequeue(due - ms(1), &mut buf), None);
        assert_eq!(r.dequeue(due, &mut buf), Some(12 + 480));
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn audio_is_never_held_longer_than_one_target_plus_one_input() {
        let mut seed = 7u64;
        for input_ms in [10u64, 20, 30, 60] {
            for target in [10u32, 20, 30, 40, 60, 100, 200] {
                let t0 = Instant::now();
                let mut inputs = stream(t0, 0, 40, input_ms as usize * 8, input_ms);
                // Lose about one in five, including runs.
                inputs.retain(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    !(seed >> 33).is_multiple_of(5)
                });
                let mut r = Resizer::new(target);
                let outs = run(&mut r, &inputs);
                let all: Vec<u8> = outs.iter().flat_map(|o| o.payload.clone()).collect();
                assert_eq!(all, payload_of(&inputs));
                for o in &outs {
                    let first = o.h.timestamp.wrapping_sub(TS0) as u64;
                    let arrived = t0 + ms(first / (input_ms * 8) * input_ms);
                    let held = o.at - arrived;
                    assert!(
                        held <= ms(u64::from(target) + input_ms),
                        "{input_ms} -> {target}: held {held:?} {:?}",
                        outs.iter()
                            .map(|o| (
                                (o.at - t0).as_millis(),
                                o.h.timestamp - TS0,
                                o.payload.len()
                            ))
                            .collect::<Vec<_>>()
                    );
                    assert!(o.payload.len() <= target as usize * 8);
                }
                for w in outs.windows(2) {
                    assert_eq!(w[1].h.seq, w[0].h.seq.wrapping_add(1));
                }
            }
        }
    }

    #[test]
    fn other_payload_types_and_garbage_pass_through() {
        let t0 = Instant::now();
        let mut r = Resizer::new(20);
        let pass = [
            packet(96, 1, 2, SSRC, false, &[1; 160]),
            packet(101, 1, 2, SSRC, true, &[1, 2, 3, 4]),
            packet(0, 1, 2, SSRC, false, &[]),
            vec![0x80, 0, 1],
            vec![],
            vec![0x40; 200],
            // Claims 15 CSRCs that are not there.
            {
                let mut p = packet(0, 1, 2, SSRC, false, &[0; 20]);
                p[0] |= 0x0f;
                p
            },
        ];
        for p in &pass {
            assert_eq!(r.enqueue(p, t0), Enqueued::PassThrough, "{p:?}");
        }
        assert_eq!(r.next_due(), None);
        let mut buf = [0u8; 1500];
        assert_eq!(r.flush(&mut buf), None);
        assert_eq!((r.late_dropped(), r.dropped()), (0, 0));
    }

    #[test]
    fn ssrc_change_flushes_queue_first() {
        let t0 = Instant::now();
        let mut r = Resizer::new(40);
        let mut buf = [0u8; 1500];
        r.enqueue(&packet(0, 10, 100, 1, true, &[1; 160]), t0);
        r.enqueue(&packet(0, 500, 9000, 2, true, &[2; 160]), t0 + ms(20));
        // The old stream's audio goes first, short and at once.
        let n = r.dequeue(t0 + ms(20), &mut buf).unwrap();
        let a = record(t0, &buf[..n]);
        assert_eq!(
            (a.h.ssrc, a.h.seq, a.h.timestamp, a.payload.len()),
            (1, 10, 100, 160)
        );
        assert_eq!(r.dequeue(t0 + ms(20), &mut buf), None);
        r.enqueue(&packet(0, 501, 9160, 2, false, &[3; 160]), t0 + ms(40));
        let n = r.dequeue(t0 + ms(40), &mut buf).unwrap();
        let b = record(t0, &buf[..n]);
        // The new SSRC numbers from its own first packet.
        assert_eq!(
            (b.h.ssrc, b.h.seq, b.h.timestamp, b.payload.len()),
            (2, 500, 9000, 320)
        );
        assert!(b.h.marker);
    }

    #[test]
    fn payload_type_change_flushes_and_keeps_numbering() {
        let t0 = Instant::now();
        let mut r = Resizer::new(40);
        let mut buf = [0u8; 1500];
        r.enqueue(&packet(0, 10, 100, SSRC, false, &[1; 160]), t0);
        r.enqueue(&packet(8, 11, 260, SSRC, false, &[2; 160]), t0 + ms(20));
        let n = r.dequeue(t0 + ms(20), &mut buf).unwrap();
        let a = record(t0, &buf[..n]);
        assert_eq!((a.h.payload_type, a.h.seq, a.payload.len()), (0, 10, 160));
        let n = r.flush(&mut buf).unwrap();
        let b = record(t0, &buf[..n]);
        assert_eq!((b.h.payload_type, b.h.seq, b.h.timestamp), (8, 11, 260));
        assert_eq!(r.flush(&mut buf), None);
    }

    #[test]
    fn g729_packet_with_sid_frame_goes_alone_in_order() {
        let t0 = Instant::now();
        let mut r = Resizer::new(30);
        let mut buf = [0u8; 1500];
        r.enqueue(&packet(18, 1, 0, SSRC, false, &[1; 10]), t0);
        r.enqueue(&packet(18, 2, 80, SSRC, false, &[2; 10]), t0 + ms(10));
        assert_eq!(r.dequeue(t0 + ms(10), &mut buf), None);
        // One voice frame and a 2-byte SID frame: cannot be split or joined.
        r.enqueue(&packet(18, 3, 160, SSRC, false, &[3; 12]), t0 + ms(20));
        let mut outs = Vec::new();
        while let Some(n) = r.dequeue(t0 + ms(20), &mut buf) {
            outs.push(record(t0, &buf[..n]));
        }
        assert_eq!(sizes(&outs), vec![20, 12]);
        assert_eq!(outs[0].h.timestamp, 0);
        assert_eq!(outs[1].h.timestamp, 160);
        assert_eq!(outs[1].payload, vec![3; 12]);
        assert_eq!((outs[0].h.seq, outs[1].h.seq), (1, 2));
    }

    #[test]
    fn timestamps_and_sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut r = Resizer::new(40);
        let mut outs = Vec::new();
        let mut buf = [0u8; 1500];
        for i in 0..8u32 {
            let ts = (u32::MAX - 300).wrapping_add(160 * i);
            let seq = 65534u16.wrapping_add(i as u16);
            let at = t0 + ms(20 * u64::from(i));
            r.enqueue(&packet(0, seq, ts, SSRC, false, &[i as u8; 160]), at);
            while let Some(n) = r.dequeue(at, &mut buf) {
                outs.push(record(at, &buf[..n]));
            }
        }
        assert_eq!(sizes(&outs), vec![320; 4]);
        let seq: Vec<u16> = outs.iter().map(|o| o.h.seq).collect();
        assert_eq!(seq, vec![65534, 65535, 0, 1]);
        let ts: Vec<u32> = outs.iter().map(|o| o.h.timestamp).collect();
        assert_eq!(ts, vec![u32::MAX - 300, 19, 339, 659]);
    }

    #[test]
    fn flush_sends_everything_regardless_of_time() {
        let t0 = Instant::now();
        let inputs = stream(t0, 0, 5, 160, 20);
        let mut r = Resizer::new(60);
        for (at, p) in &inputs {
            r.enqueue(p, *at);
        }
        let mut buf = [0u8; 1500];
        let mut outs = Vec::new();
        while let Some(n) = r.flush(&mut buf) {
            outs.push(record(t0, &buf[..n]));
        }
        assert_consistent(&outs, &inputs, 0);
        assert_eq!(sizes(&outs), vec![480, 320]);
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn output_not_fitting_the_buffer_is_counted_not_repeated() {
        let t0 = Instant::now();
        let mut r = Resizer::new(20);
        r.enqueue(&packet(0, 1, 0, SSRC, false, &[1; 160]), t0);
        r.enqueue(&packet(0, 2, 160, SSRC, false, &[2; 160]), t0 + ms(20));
        let mut small = [0u8; 100];
        assert_eq!(r.dequeue(t0 + ms(20), &mut small), None);
        assert_eq!(r.dropped(), 2);
        assert_eq!(r.next_due(), None);
        // Numbering still counts the lost outputs.
        r.enqueue(&packet(0, 3, 320, SSRC, false, &[3; 160]), t0 + ms(40));
        let mut buf = [0u8; 200];
        let n = r.dequeue(t0 + ms(40), &mut buf).unwrap();
        assert_eq!(record(t0, &buf[..n]).h.seq, 3);
    }

    #[test]
    fn full_queue_drops_oldest_audio_and_counts_it() {
        let t0 = Instant::now();
        let mut r = Resizer::new(10);
        // Nobody dequeues: 240 ms of store fill with 20 ms inputs, then the
        // oldest go to make room.
        let inputs = stream(t0, 0, 40, 160, 20);
        for (at, p) in &inputs {
            assert_eq!(r.enqueue(p, *at), Enqueued::Queued);
        }
        assert!(r.dropped() > 0);
        let mut buf = [0u8; 1500];
        let first = r.flush(&mut buf).unwrap();
        let h = rtp::parse(&buf[..first]).unwrap();
        assert_eq!(h.timestamp, TS0 + 160 * r.dropped() as u32);
        // A copy of evicted audio is late, not re-queued.
        assert_eq!(r.enqueue(&inputs[0].1, t0 + ms(900)), Enqueued::Dropped);
        assert_eq!(r.late_dropped(), 1);
    }

    #[test]
    fn timestamp_restart_starts_a_new_timeline() {
        let t0 = Instant::now();
        let mut r = Resizer::new(20);
        let mut buf = [0u8; 1500];
        r.enqueue(&packet(0, 1, 800_000, SSRC, false, &[1; 160]), t0);
        assert!(r.dequeue(t0, &mut buf).is_some());
        // Same SSRC, timestamps restarted far back: not late.
        assert_eq!(
            r.enqueue(&packet(0, 2, 0, SSRC, false, &[2; 160]), t0 + ms(20)),
            Enqueued::Queued
        );
        let n = r.dequeue(t0 + ms(20), &mut buf).unwrap();
        let o = record(t0, &buf[..n]);
        assert_eq!((o.h.seq, o.h.timestamp), (2, 0));
        assert_eq!(r.late_dropped(), 0);
    }

    #[test]
    fn target_is_rounded_and_bounded() {
        assert_eq!(Resizer::new(15).target_ms(), 10);
        assert_eq!(Resizer::new(0).target_ms(), 10);
        assert_eq!(Resizer::new(u32::MAX).target_ms(), MAX_TARGET_MS);
        assert_eq!(Resizer::new(40).target_ms(), 40);
    }

    /// Fills `pkt` with the `i`th input of the random test: raw random
    /// bytes, or a plausible packet of one of a few streams with a few
    /// bytes mutated, so parsing and queueing both see damaged input.
    fn random_input(pkt: &mut Vec<u8>, i: u32, next: &mut impl FnMut() -> u64) {
        pkt.clear();
        let pts = [0u8, 8, 18, 3, 4, 96, 13];
        match next() % 3 {
            // Raw random bytes.
            0 => (0..next() % 64).for_each(|_| pkt.push(next() as u8)),
            // A plausible packet of one of a few streams, roughly in
            // time, sometimes far off...
            _ => {
                let pt = pts[(next() % pts.len() as u64) as usize];
                let seq = (i / 2) as u16 ^ (next() % 4) as u16;
                let mut ts = (i * 80).wrapping_sub((next() % 8) as u32 * 80);
                if next().is_multiple_of(50) {
                    ts = ts.wrapping_add(next() as u32);
                }
                let ssrc = u32::from(next().is_multiple_of(20));
                let len = (next() % 700) as usize;
                pkt.resize(RTP_HEADER_LEN + len, 0);
                rtp::write_header(pkt, next().is_multiple_of(4), pt, seq, ts, ssrc).unwrap();
                // ...with a few bytes mutated.
                for _ in 0..next() % 3 {
                    let at = (next() % pkt.len() as u64) as usize;
                    pkt[at] = next() as u8;
                }
            }
        }
    }

    #[test]
    fn never_panics_on_any_input() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let t0 = Instant::now();
        let mut now = t0;
        let mut r = Resizer::new(20);
        let mut pkt = Vec::with_capacity(2048);
        let mut out = vec![0u8; 2048];
        let (mut queued, mut sent) = (0u32, 0u32);
        for i in 0..100_000u32 {
            if i % 5000 == 0 {
                let targets = [0, 10, 20, 30, 40, 60, 100, 1000, u32::MAX];
                r = Resizer::new(targets[(next() % targets.len() as u64) as usize]);
            }
            let (slot_cap, store) = (r.slots.capacity(), r.audio.len());
            random_input(&mut pkt, i, &mut next);
            now += Duration::from_micros(next() % 20_000);
            match r.enqueue(&pkt, now) {
                Enqueued::PassThrough => {
                    let h = rtp::parse(&pkt);
                    assert!(h.map_or(true, |h| unit(h.payload_type).is_none()
                        || h.payload_len == 0));
                }
                Enqueued::Queued => queued += 1,
                Enqueued::Dropped => {}
            }
            let size = match next() % 8 {
                0 => (next() % 64) as usize,
                _ => out.len(),
            };
            if next() % 10 == 0 {
                while let Some(n) = r.flush(&mut out[..size]) {
                    assert!(rtp::parse(&out[..n]).is_ok());
                    sent += 1;
                }
                assert_eq!(r.next_due(), None);
            } else {
                while let Some(n) = r.dequeue(now, &mut out[..size]) {
                    assert!(n <= size);
                    assert!(rtp::parse(&out[..n]).is_ok());
                    sent += 1;
                }
                assert!(r.next_due().is_none_or(|d| d > now));
            }
            // Storage never grows on the packet path.
            assert_eq!((r.slots.capacity(), r.audio.len()), (slot_cap, store));
        }
        assert!(
            queued > 20_000 && sent > 20_000,
            "{queued} queued, {sent} sent"
        );
    }
}
