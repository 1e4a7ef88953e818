//! Call quality per direction: what one party sends, judged on every
//! accepted RTP packet and on its RTCP, summed up when the stream ends as
//! a [`DirectionQuality`] with an E-model MOS (`rtpp_mos`).
//!
//! On each RTP packet ([`QualityMeter::observe_rtp`], given the header
//! parsed once by the packet path and the sequence analyzer's duplicate
//! verdict):
//!
//! - RFC 3550 A.1 sequence numbers: extended across the wrap; a new
//!   source (first packet, new SSRC) counted from its first packet and
//!   kept if the next one follows it (A.1's probation, which would drop
//!   that first packet from the counts); a jump of 3000 or more forward
//!   (or over 100 back) believed as a restart only when the next packet
//!   follows it. Expected and received add up over every source and
//!   restart of the direction; what lies across a break is neither
//!   expected nor lost.
//! - duplicates (the analyzer's seen window says so) and reordered
//!   packets (behind the highest number, not duplicates);
//! - RFC 3550 A.8 interarrival jitter in the clock of the stream's codec
//!   (see [`ClockSource`]), and the longest gap between packets.
//!
//! Arrival times are the poll pass's `now`: packets read in one batch
//! share it, which costs the jitter at most the 1 ms the loop lets packets
//! gather under load.
//!
//! On each RTCP compound ([`observe_rtcp`]): the SRs a party sends are
//! remembered (NTP middle word, SSRC, arrival) a few at a time; the report
//! blocks the other party sends about this direction give the loss and
//! jitter seen at the far end; and a block whose LSR names a remembered SR
//! gives the round trip between the relay and the reporting party (see
//! [`RtcpMeter`]). Malformed compounds are counted and otherwise ignored.

use std::time::{Duration, Instant};

use crate::rtp::RtpHeader;
use crate::rtpp_defines::{ByParty, Party};
use crate::rtpp_mos::{self, Inputs};
use crate::rtpp_rtcp::{self, Packet, ReportBlock, SenderInfo};

/// RFC 3550 A.1: the largest forward step that is loss, not a restart.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: the largest step back that is reordering.
const MAX_MISORDER: u16 = 100;
/// RFC 3550 A.1: numbers in a row that make a new source believed.
const MIN_SEQUENTIAL: u8 = 2;
/// No `bad_seq` pending (A.1's RTP_SEQ_MOD + 1).
const NO_BAD_SEQ: u32 = 0x1_0001;

/// Packets of another payload type in a row that make it the stream's
/// codec: a re-INVITE changed it. RFC 4733 events and comfort noise come
/// in shorter runs and stay out of the jitter.
const CODEC_SWITCH_RUN: u16 = 50;
/// How long a dynamic payload type's timestamps are watched before its
/// clock rate is inferred.
const LEARN_CLOCK: Duration = Duration::from_secs(2);
/// Clock rates an inferred rate snaps to, and how close it must be.
const CLOCK_RATES: [u32; 8] = [8000, 12000, 16000, 24000, 32000, 44100, 48000, 90000];
const CLOCK_TOLERANCE_PCT: u64 = 4;
/// The rate a dynamic payload type is assumed to have when inference
/// fails (its jitter is then marked assumed).
const ASSUMED_RATE: u32 = 8000;

/// Fraction bits of the jitter estimate.
const JITTER_SCALE_BITS: u32 = 8;

/// SRs remembered per party for the round trip: RTCP comes every few
/// seconds, a receiver answers the latest, four cover a lost one or two.
const SR_KEPT: usize = 4;
/// Round trips above this are a stale or forged LSR, not a network.
const RTT_MAX: Duration = Duration::from_secs(10);

/// The clock rate of RTP static payload type `pt` (RFC 3551); `None` for
/// dynamic and unassigned types. G.722 (9) uses 8000 on the wire although
/// it samples at 16000 (RFC 3551 section 4.5.2).
pub fn static_clock_rate(pt: u8) -> Option<u32> {
    Some(match pt {
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => 8000,
        6 => 16000,
        10 | 11 => 44100,
        16 => 11025,
        17 => 22050,
        14 | 25 | 26 | 28 | 31..=34 => 90000,
        _ => return None,
    })
}

/// Where the clock rate of a direction's jitter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockSource {
    /// No codec packet yet, or a dynamic type still being watched.
    #[default]
    None,
    /// RFC 3551's rate of a static payload type.
    Static,
    /// A dynamic payload type (96-127, or an unassigned one): the rate its
    /// timestamps advanced at against arrival over the first two seconds,
    /// snapped to a usual rate within 4 %. The signalled codec list gives
    /// numbers only, no rtpmap, so the stream itself is the one witness;
    /// Opus (48000) would show ten times its jitter under an 8000 guess.
    Inferred,
    /// Inference failed (no usual rate fits): 8000 assumed; the jitter
    /// may be off by the ratio of the true rate.
    Assumed,
}

impl ClockSource {
    /// The name in the accounting record.
    pub fn name(self) -> &'static str {
        match self {
            ClockSource::None => "none",
            ClockSource::Static => "static",
            ClockSource::Inferred => "inferred",
            ClockSource::Assumed => "assumed",
        }
    }
}

/// RFC 3550 A.1 state of the current source, plus the sums of the earlier
/// ones.
#[derive(Debug, Clone, Copy)]
struct SeqState {
    ssrc: u32,
    max_seq: u16,
    /// Wraps seen, shifted by 16.
    cycles: u32,
    /// Extended number of the source's first counted packet; below 0 when
    /// it was the last before a wrap.
    base: i64,
    bad_seq: u32,
    probation: u8,
    /// Packets counted since the source (re)started, duplicates included.
    received: u64,
}

impl SeqState {
    /// A new source whose first packet is `seq`: counted at once, kept
    /// only if the next one follows it (A.1's probation).
    fn new(ssrc: u32, seq: u16) -> SeqState {
        SeqState {
            ssrc,
            max_seq: seq,
            cycles: 0,
            base: i64::from(seq),
            bad_seq: NO_BAD_SEQ,
            probation: MIN_SEQUENTIAL - 1,
            received: 1,
        }
    }

    /// Starts counting again at `seq`, the second of two numbers in a row
    /// after a jump: the one before it counts too.
    fn begin(&mut self, seq: u16) {
        self.max_seq = seq;
        self.cycles = 0;
        self.base = i64::from(seq) - 1;
        self.bad_seq = NO_BAD_SEQ;
        self.probation = 0;
        self.received = 2;
    }

    fn expected(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        let max = i64::from(self.cycles) + i64::from(self.max_seq);
        u64::try_from(max - self.base + 1).unwrap_or(0)
    }
}

/// What A.1 made of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Not counted: a jump not yet believed.
    Uncounted,
    /// The source (re)started with this packet.
    Restarted,
    /// At or past the highest number.
    InOrder,
    /// Behind the highest number.
    Late,
}

/// The RTP side of one direction.
#[derive(Debug, Clone, Default)]
pub struct RtpQuality {
    seq: Option<SeqState>,
    expected_done: u64,
    received_done: u64,
    dups: u64,
    reordered: u64,
    ssrc_changes: u64,
    jitter: JitterState,
    /// The first packet's arrival: the origin of `last_ns`.
    origin: Option<Instant>,
    last_ns: u64,
    max_gap_ns: u64,
}

/// Interarrival jitter of the codec's packets (RFC 3550 A.8 in fixed
/// point: timestamp units scaled by 256, so the estimate's rounding costs
/// less than a sixteenth of a unit, where A.8's integer form, scaled by
/// 16, settles half a unit low).
#[derive(Debug, Clone, Copy, Default)]
struct JitterState {
    pt: Option<u8>,
    other_run: u16,
    rate: u32,
    source: ClockSource,
    /// A dynamic type's first packet (arrival ns, timestamp) while its rate
    /// is learned.
    learn: Option<(u64, u32)>,
    transit: Option<u32>,
    j: i64,
    sum: u64,
    max: i64,
    samples: u64,
    /// Sums of earlier codecs, already in ms.
    done_sum_ms: f64,
    done_max_ms: f64,
    done_samples: u64,
}

impl RtpQuality {
    /// Counts one RTP packet that arrived at `now`; `dup` is the sequence
    /// analyzer's verdict that its number was seen before.
    pub fn observe(&mut self, h: &RtpHeader, now: Instant, dup: bool) {
        let ns = self.arrival_ns(now);
        match self.step(h) {
            Step::Uncounted => return,
            Step::Restarted => self.jitter.restart(),
            Step::InOrder if dup => self.dups += 1,
            Step::InOrder => {}
            Step::Late if dup => self.dups += 1,
            Step::Late => self.reordered += 1,
        }
        if !dup {
            self.jitter.observe(h, ns);
        }
    }

    /// Nanoseconds since the direction's first packet, and the gap since
    /// the last one.
    fn arrival_ns(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let since = now.saturating_duration_since(origin);
        let ns = since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()));
        let gap = ns.saturating_sub(self.last_ns);
        if gap > self.max_gap_ns {
            self.max_gap_ns = gap;
        }
        self.last_ns = ns;
        ns
    }

    /// RFC 3550 A.1 `update_seq`, with the SSRC check of A.3 and the
    /// probation packet counted.
    fn step(&mut self, h: &RtpHeader) -> Step {
        let seq = h.seq;
        match self.seq.map(|s| s.ssrc) {
            Some(ssrc) if ssrc == h.ssrc => {}
            known => {
                if known.is_some() {
                    self.ssrc_changes += 1;
                    self.fold();
                }
                self.seq = Some(SeqState::new(h.ssrc, seq));
                return Step::Restarted;
            }
        }
        let Some(s) = &mut self.seq else {
            return Step::Uncounted;
        };
        let delta = seq.wrapping_sub(s.max_seq);
        if s.probation > 0 {
            if delta != 1 {
                // Not the next number: probation starts over from here.
                *s = SeqState::new(h.ssrc, seq);
                return Step::Restarted;
            }
            s.probation = 0;
        }
        let step = if delta < MAX_DROPOUT {
            if seq < s.max_seq {
                s.cycles = s.cycles.wrapping_add(0x1_0000);
            }
            s.max_seq = seq;
            Step::InOrder
        } else if delta <= u16::MAX - MAX_MISORDER + 1 {
            if u32::from(seq) != s.bad_seq {
                s.bad_seq = u32::from(seq.wrapping_add(1));
                return Step::Uncounted;
            }
            // Two in a row after a jump: the sender restarted.
            self.fold();
            if let Some(s) = &mut self.seq {
                s.begin(seq);
            }
            return Step::Restarted;
        } else {
            Step::Late
        };
        s.received += 1;
        step
    }

    /// Adds the current source's counts to the earlier ones, before it is
    /// replaced or restarted.
    fn fold(&mut self) {
        if let Some(s) = &mut self.seq {
            self.expected_done += s.expected();
            self.received_done += s.received;
            s.received = 0;
        }
    }

    /// Packets expected from the sequence numbers, over every source.
    pub fn expected(&self) -> u64 {
        self.expected_done + self.seq.map_or(0, |s| s.expected())
    }

    /// Packets counted, duplicates included (RFC 3550's "received").
    pub fn received(&self) -> u64 {
        self.received_done + self.seq.map_or(0, |s| s.received)
    }

    /// RFC 3550's cumulative loss, expected - received, duplicates
    /// offsetting losses, never below 0: the accounting record's
    /// `lost_caller`/`lost_callee`.
    pub fn lost_rfc3550(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }

    /// Packets that never arrived: expected minus distinct ones received.
    pub fn lost(&self) -> u64 {
        (self.expected() + self.dups).saturating_sub(self.received())
    }

    /// The SSRC of the current source.
    pub fn ssrc(&self) -> Option<u32> {
        self.seq.map(|s| s.ssrc)
    }

    /// The rate the codec's timestamps run at, when known.
    pub fn clock_rate(&self) -> Option<u32> {
        (self.jitter.rate != 0).then_some(self.jitter.rate)
    }
}

impl JitterState {
    /// The source restarted: its timestamps start anew.
    fn restart(&mut self) {
        self.transit = None;
        self.learn = None;
    }

    /// One packet that is not a duplicate, arrived `ns` after the first.
    fn observe(&mut self, h: &RtpHeader, ns: u64) {
        if self.pt != Some(h.payload_type) {
            self.other_run += 1;
            if self.pt.is_some() && self.other_run < CODEC_SWITCH_RUN {
                return;
            }
            self.switch_codec(h.payload_type);
        }
        self.other_run = 0;
        if self.rate == 0 && !self.learn_rate(h, ns) {
            return;
        }
        let rate = u64::from(self.rate);
        let secs = ns / 1_000_000_000;
        let ticks = secs * rate + (ns % 1_000_000_000) * rate / 1_000_000_000;
        let transit = (ticks as u32).wrapping_sub(h.timestamp);
        let Some(last) = self.transit.replace(transit) else {
            return;
        };
        let d = transit.wrapping_sub(last) as i32;
        let d = d.unsigned_abs();
        // A second or more against the arrival clock is a discontinuity
        // (hold, a timestamp reset), not jitter.
        if d >= self.rate {
            return;
        }
        // J += (|D| - J) / 16; `d` is below the rate, so nothing overflows.
        self.j += ((i64::from(d) << JITTER_SCALE_BITS) - self.j) >> 4;
        self.sum = self.sum.saturating_add(self.j.unsigned_abs());
        self.max = self.max.max(self.j);
        self.samples += 1;
    }

    /// Makes `pt` the codec followed, keeping what the previous one gave.
    fn switch_codec(&mut self, pt: u8) {
        if let (Some(mean), Some(max)) = (self.mean_ms_own(), self.max_ms_own()) {
            self.done_sum_ms += mean * self.samples as f64;
            self.done_samples += self.samples;
            self.done_max_ms = self.done_max_ms.max(max);
        }
        *self = JitterState {
            pt: Some(pt),
            done_sum_ms: self.done_sum_ms,
            done_max_ms: self.done_max_ms,
            done_samples: self.done_samples,
            ..JitterState::default()
        };
        if let Some(rate) = static_clock_rate(pt) {
            self.rate = rate;
            self.source = ClockSource::Static;
        }
    }

    /// Watches a dynamic type's timestamps; true once its rate is set.
    fn learn_rate(&mut self, h: &RtpHeader, ns: u64) -> bool {
        let Some((first_ns, first_ts)) = self.learn else {
            self.learn = Some((ns, h.timestamp));
            return false;
        };
        let elapsed = ns.saturating_sub(first_ns);
        if elapsed < LEARN_CLOCK.as_nanos() as u64 {
            return false;
        }
        let ticks = u64::from(h.timestamp.wrapping_sub(first_ts));
        let measured = ticks.saturating_mul(1_000_000_000) / elapsed.max(1);
        let fit = CLOCK_RATES
            .iter()
            .copied()
            .find(|&r| measured.abs_diff(u64::from(r)) * 100 <= u64::from(r) * CLOCK_TOLERANCE_PCT);
        (self.rate, self.source) = match fit {
            Some(r) => (r, ClockSource::Inferred),
            None => (ASSUMED_RATE, ClockSource::Assumed),
        };
        self.learn = None;
        true
    }

    /// Jitter in ms of the scaled estimate `j` at the current rate.
    fn ms(&self, j: f64) -> f64 {
        j / f64::from(1u32 << JITTER_SCALE_BITS) * 1000.0 / f64::from(self.rate.max(1))
    }

    fn mean_ms_own(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.ms(self.sum as f64) / self.samples as f64)
    }

    fn max_ms_own(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.ms(self.max as f64))
    }

    /// The mean of the A.8 estimate over every packet it was updated on,
    /// and its highest value, in ms.
    fn figures(&self) -> Option<(f64, f64)> {
        let samples = self.samples + self.done_samples;
        if samples == 0 {
            return None;
        }
        let own = self.mean_ms_own().unwrap_or(0.0) * self.samples as f64;
        let mean = (own + self.done_sum_ms) / samples as f64;
        let max = self.max_ms_own().unwrap_or(0.0).max(self.done_max_ms);
        Some((mean, max))
    }
}

/// An SR the relay saw a party send.
#[derive(Debug, Clone, Copy)]
struct SrSeen {
    ssrc: u32,
    ntp_middle: u32,
    at: Instant,
}

/// The RTCP side of one direction: what the party sends over RTCP, what
/// the other party reports about this direction's RTP, and the round trip
/// of the party's own leg.
///
/// The round trip: the other party's SR passed the relay at `t0` on its
/// way to this party; this party's report block echoes it (LSR) with the
/// time it held it (DLSR); the relay receives that report at `t1`.
/// `t1 - t0 - DLSR` is the time from the relay to this party and back,
/// network and socket queues included, the party's processing excluded.
/// It says nothing of the other party's leg (its own report on this
/// party's SRs measures that). RTCP sockets are polled every 10 ms, so
/// each figure may be off by up to 10 ms either way.
#[derive(Debug, Clone, Default)]
pub struct RtcpMeter {
    packets: u64,
    errors: u64,
    srs: [Option<SrSeen>; SR_KEPT],
    next_sr: usize,
    /// Report blocks the other party sent about this direction.
    reports: u64,
    fraction_sum: u64,
    jitter_sum: u64,
    cumulative_lost: i32,
    /// Round trips between the relay and this party, µs.
    rtt_samples: u64,
    rtt_sum_us: u64,
}

impl RtcpMeter {
    fn remember_sr(&mut self, info: &SenderInfo, now: Instant) {
        if let Some(slot) = self.srs.get_mut(self.next_sr) {
            *slot = Some(SrSeen {
                ssrc: info.ssrc,
                ntp_middle: info.ntp_middle(),
                at: now,
            });
        }
        self.next_sr = (self.next_sr + 1) % SR_KEPT;
    }

    /// When the SR a report block echoes passed the relay.
    fn sr_echoed(&self, block: &ReportBlock) -> Option<Instant> {
        if block.lsr == 0 {
            return None;
        }
        self.srs
            .iter()
            .flatten()
            .find(|sr| sr.ntp_middle == block.lsr && sr.ssrc == block.ssrc)
            .map(|sr| sr.at)
    }

    fn note_report(&mut self, block: &ReportBlock) {
        self.reports += 1;
        self.fraction_sum += u64::from(block.fraction_lost);
        self.jitter_sum += u64::from(block.jitter);
        self.cumulative_lost = block.cumulative_lost;
    }

    fn note_rtt(&mut self, rtt: Duration) {
        self.rtt_samples += 1;
        self.rtt_sum_us += rtt.as_micros() as u64;
    }

    /// The mean round trip of this party's leg, ms.
    fn rtt_ms(&self) -> Option<f64> {
        (self.rtt_samples > 0).then(|| self.rtt_sum_us as f64 / self.rtt_samples as f64 / 1000.0)
    }
}

/// Everything measured of one direction.
#[derive(Debug, Clone, Default)]
pub struct QualityMeter {
    pub rtp: RtpQuality,
    pub rtcp: RtcpMeter,
}

/// Takes an RTCP compound `from` sent, arrived at `now`, into both
/// directions' meters: its SRs into `from`'s, its report blocks about the
/// other party's RTP into the other's, round trips into `from`'s.
pub fn observe_rtcp(
    meters: &mut ByParty<QualityMeter>,
    from: Party,
    datagram: &[u8],
    now: Instant,
) {
    let Ok(compound) = rtpp_rtcp::parse(datagram) else {
        meters[from].rtcp.errors += 1;
        return;
    };
    meters[from].rtcp.packets += 1;
    for packet in compound.packets() {
        let blocks = match packet {
            Packet::Sr { info, blocks } => {
                meters[from].rtcp.remember_sr(&info, now);
                blocks
            }
            Packet::Rr { blocks, .. } => blocks,
            Packet::Other { .. } => continue,
        };
        for block in blocks {
            take_block(meters, from, &block, now);
        }
    }
}

/// One report block `from` sent: about the other party's RTP, if its SSRC
/// is the one the relay saw (or none was seen yet).
fn take_block(meters: &mut ByParty<QualityMeter>, from: Party, block: &ReportBlock, now: Instant) {
    let about = &mut meters[from.other()];
    let seen = about.rtp.ssrc();
    if seen.is_some_and(|ssrc| ssrc != block.ssrc) && about.rtcp.sr_echoed(block).is_none() {
        return;
    }
    about.rtcp.note_report(block);
    let Some(sent) = about.rtcp.sr_echoed(block) else {
        return;
    };
    let held = Duration::from_micros(u64::from(block.dlsr) * 1_000_000 / 65536);
    let rtt = now.saturating_duration_since(sent).checked_sub(held);
    if let Some(rtt) = rtt.filter(|&r| r < RTT_MAX) {
        meters[from].rtcp.note_rtt(rtt);
    }
}

/// What one direction (what one party sends) was like, when its stream
/// ended or when asked. Percentages are 0-100, times in ms.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DirectionQuality {
    /// The payload type the jitter and the MOS follow (the first one sent,
    /// or one that replaced it for 50 packets in a row).
    pub payload_type: Option<u8>,
    /// The codec the MOS was scored as (`rtpp_mos::codec`), empty
    /// without a payload type.
    pub codec: &'static str,
    /// RFC 3550 A.1 figures over every source of the direction.
    pub expected: u64,
    /// Packets counted, duplicates included.
    pub received: u64,
    /// Expected minus distinct packets received, never below 0.
    pub lost: u64,
    pub loss_pct: f64,
    pub dups: u64,
    pub reordered: u64,
    pub ssrc_changes: u64,
    /// Mean and highest RFC 3550 A.8 jitter; `None` before two codec
    /// packets with a known clock.
    pub jitter_ms: Option<f64>,
    pub jitter_max_ms: Option<f64>,
    pub clock_rate: Option<u32>,
    pub clock: ClockSource,
    /// The longest time between two packets.
    pub max_gap_ms: f64,
    /// RTCP compounds the party sent that passed the check, and those
    /// that did not.
    pub rtcp_packets: u64,
    pub rtcp_errors: u64,
    /// Report blocks the other party sent about this direction, and what
    /// they said: mean fraction lost, last cumulative loss, mean jitter.
    pub rtcp_reports: u64,
    pub rtcp_loss_pct: Option<f64>,
    pub rtcp_cumulative_lost: Option<i64>,
    pub rtcp_jitter_ms: Option<f64>,
    /// Mean round trip between the relay and this direction's sender.
    pub rtt_ms: Option<f64>,
    /// The E-model rating and MOS; `None` when no RTP was counted.
    pub r_factor: Option<f64>,
    pub mos: Option<f64>,
}

/// Both directions of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QualityReport {
    /// What the caller sent.
    pub caller: DirectionQuality,
    /// What the callee sent.
    pub callee: DirectionQuality,
}

impl QualityReport {
    /// The report of both directions from their meters.
    pub fn build(meters: &ByParty<QualityMeter>) -> QualityReport {
        let mut d = meters.map(measured);
        for party in Party::BOTH {
            let other_leg = d[party.other()].rtt_ms;
            score(&mut d[party], other_leg);
        }
        QualityReport {
            caller: d[Party::Caller],
            callee: d[Party::Callee],
        }
    }

    /// The direction `party` sent.
    pub fn direction(&self, party: Party) -> &DirectionQuality {
        match party {
            Party::Caller => &self.caller,
            Party::Callee => &self.callee,
        }
    }
}

/// The figures of one meter, without the score.
fn measured(m: &QualityMeter) -> DirectionQuality {
    let r = &m.rtp;
    let c = &m.rtcp;
    let expected = r.expected();
    let lost = r.lost();
    let jitter = r.jitter.figures();
    let rate_ms = |ticks: f64| ticks * 1000.0 / f64::from(r.clock_rate().unwrap_or(ASSUMED_RATE));
    let reports = (c.reports > 0).then_some(c.reports as f64);
    DirectionQuality {
        payload_type: r.jitter.pt,
        codec: r.jitter.pt.map_or("", |pt| rtpp_mos::codec(Some(pt)).name),
        expected,
        received: r.received(),
        lost,
        loss_pct: percent(lost, expected),
        dups: r.dups,
        reordered: r.reordered,
        ssrc_changes: r.ssrc_changes,
        jitter_ms: jitter.map(|j| j.0),
        jitter_max_ms: jitter.map(|j| j.1),
        clock_rate: r.clock_rate(),
        clock: r.jitter.source,
        max_gap_ms: r.max_gap_ns as f64 / 1e6,
        rtcp_packets: c.packets,
        rtcp_errors: c.errors,
        rtcp_reports: c.reports,
        rtcp_loss_pct: reports.map(|n| c.fraction_sum as f64 / n / 256.0 * 100.0),
        rtcp_cumulative_lost: (c.reports > 0).then_some(i64::from(c.cumulative_lost)),
        rtcp_jitter_ms: reports.map(|n| rate_ms(c.jitter_sum as f64 / n)),
        rtt_ms: c.rtt_ms(),
        r_factor: None,
        mos: None,
    }
}

/// Scores a direction that carried RTP. Loss and jitter are the worse of
/// the relay's and the far end's figures (the far end's include the leg
/// after the relay). The network delay is half the round trip of the two
/// legs; a leg without a measurement is taken to be like the other one.
fn score(d: &mut DirectionQuality, other_leg_ms: Option<f64>) {
    if d.received == 0 {
        return;
    }
    let legs = match (d.rtt_ms, other_leg_ms) {
        (Some(a), Some(b)) => a + b,
        (Some(a), None) | (None, Some(a)) => 2.0 * a,
        (None, None) => 0.0,
    };
    let inputs = Inputs {
        loss_pct: d.loss_pct.max(d.rtcp_loss_pct.unwrap_or(0.0)),
        network_delay_ms: legs / 2.0,
        jitter_ms: d
            .jitter_ms
            .unwrap_or(0.0)
            .max(d.rtcp_jitter_ms.unwrap_or(0.0)),
        codec: rtpp_mos::codec(d.payload_type),
    };
    let r = rtpp_mos::r_factor(&inputs);
    d.r_factor = Some(r);
    d.mos = Some(rtpp_mos::mos_from_r(r));
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64).min(100.0)
    }
}

// Carried whole across a hand-over (doc/PROTOCOL.md, "Hand-over"), so
// `Q` and the accounting record cover the whole call. A clock rate beyond
// any codec's would overflow the jitter arithmetic: refused.
impl crate::rtpp_handover::wire::Carry for ClockSource {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.u8(*self as u8);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        match r.u8()? {
            0 => Ok(ClockSource::None),
            1 => Ok(ClockSource::Static),
            2 => Ok(ClockSource::Inferred),
            3 => Ok(ClockSource::Assumed),
            v => crate::rtpp_handover::wire::refuse(format!("bad clock source {v}")),
        }
    }
}
crate::rtpp_handover::wire::carry_fields!(SeqState {
    ssrc,
    max_seq,
    cycles,
    base,
    bad_seq,
    probation,
    received,
});
crate::rtpp_handover::wire::carry_fields!(JitterState {
    pt,
    other_run,
    rate,
    source,
    learn,
    transit,
    j,
    sum,
    max,
    samples,
    done_sum_ms,
    done_max_ms,
    done_samples,
} check |j| j.rate <= 1_000_000 && j.pt.is_none_or(|p| p <= 127));
crate::rtpp_handover::wire::carry_fields!(RtpQuality {
    seq,
    expected_done,
    received_done,
    dups,
    reordered,
    ssrc_changes,
    jitter,
    origin,
    last_ns,
    max_gap_ns,
});
crate::rtpp_handover::wire::carry_fields!(SrSeen {
    ssrc,
    ntp_middle,
    at
});
crate::rtpp_handover::wire::carry_fields!(RtcpMeter {
    packets,
    errors,
    srs,
    next_sr,
    reports,
    fraction_sum,
    jitter_sum,
    cumulative_lost,
    rtt_samples,
    rtt_sum_us,
} check |m| m.next_sr < SR_KEPT);
crate::rtpp_handover::wire::carry_fields!(QualityMeter { rtp, rtcp });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtpp_analyzer::RtpAnalyzer;
    use crate::rtpp_rtcp::build;

    /// One direction as the packet path feeds it: the analyzer's verdict
    /// handed to the meter.
    struct Feed {
        analyzer: RtpAnalyzer,
        meter: QualityMeter,
        start: Instant,
    }

    impl Feed {
        fn new() -> Feed {
            Feed {
                analyzer: RtpAnalyzer::new(),
                meter: QualityMeter::default(),
                start: Instant::now(),
            }
        }

        fn at(&self, ms: f64) -> Instant {
            self.start + Duration::from_secs_f64(ms / 1000.0)
        }

        fn packet(&mut self, ssrc: u32, pt: u8, seq: u16, ts: u32, ms: f64) {
            let h = RtpHeader {
                marker: false,
                payload_type: pt,
                seq,
                timestamp: ts,
                ssrc,
                payload_offset: 12,
                payload_len: 160,
            };
            let dup = self.analyzer.observe(&h);
            let now = self.at(ms);
            self.meter.rtp.observe(&h, now, dup);
        }

        /// Sequence numbers only, 20 ms apart, G.711.
        fn seqs(seqs: impl IntoIterator<Item = u16>) -> Feed {
            let mut f = Feed::new();
            for (i, s) in seqs.into_iter().enumerate() {
                f.packet(7, 0, s, u32::from(s) * 160, i as f64 * 20.0);
            }
            f
        }

        fn report(&self) -> DirectionQuality {
            let meters = ByParty::new(self.meter.clone(), QualityMeter::default());
            QualityReport::build(&meters).caller
        }
    }

    fn near(got: f64, want: f64, tolerance: f64) {
        assert!((got - want).abs() <= tolerance, "{got} is not {want}");
    }

    #[test]
    fn accounting_loss_keeps_its_rfc3550_meaning() {
        // The cases of the estimate this meter replaced.
        let f = Feed::seqs([65530, 65531, 65533, 65535, 0, 1, 3, 2, 2]);
        let r = &f.meter.rtp;
        // 65530..=3 is 10 packets; 65532, 65534 missing; one duplicate.
        assert_eq!((r.expected(), r.received(), r.lost_rfc3550()), (10, 9, 1));
        assert_eq!((r.lost(), r.dups, r.reordered), (2, 1, 1));
        let g = Feed::seqs((100..200u16).filter(|s| s % 10 != 0));
        assert_eq!(g.meter.rtp.lost_rfc3550(), 9);
        let q = g.report();
        assert_eq!((q.expected, q.received, q.lost), (99, 90, 9));
        near(q.loss_pct, 9.0909, 1e-3);
    }

    #[test]
    fn many_wraps_keep_counting() {
        let f = Feed::seqs((0..200_000u32).map(|i| ((i + 60_000) % 65536) as u16));
        let r = &f.meter.rtp;
        assert_eq!(
            (r.expected(), r.received(), r.lost()),
            (200_000, 200_000, 0)
        );
    }

    #[test]
    fn restart_after_a_jump_loses_nothing_across_it() {
        // A jump believed: the next packet follows it.
        let f = Feed::seqs((1..=10).chain(20000..=20009));
        let q = f.report();
        assert_eq!((q.expected, q.received, q.lost), (20, 20, 0));
        // A lone stray far away is not counted, and the stream goes on.
        let g = Feed::seqs([1, 2, 3, 40000, 4, 5]);
        let q = g.report();
        assert_eq!((q.expected, q.received, q.lost, q.reordered), (5, 5, 0, 0));
        // Far back (over 100) is a jump too, not reordering.
        let h = Feed::seqs([500, 501, 502, 300, 503]);
        assert_eq!((h.report().expected, h.report().reordered), (4, 0));
    }

    #[test]
    fn probation_and_ssrc_changes() {
        // 5 is not followed by 6: counting starts over at 9 (A.1).
        let f = Feed::seqs([5, 9, 10, 11]);
        assert_eq!((f.report().expected, f.report().received), (3, 3));
        // A lone packet counts.
        assert_eq!(Feed::seqs([42]).report().expected, 1);
        // A new SSRC is a new source; nothing across the change is lost.
        let mut g = Feed::new();
        for s in 0..10u16 {
            g.packet(1, 0, s + 1000, u32::from(s) * 160, f64::from(s) * 20.0);
        }
        for s in 0..10u16 {
            g.packet(2, 0, s + 7, u32::from(s) * 160, 200.0 + f64::from(s) * 20.0);
        }
        let q = g.report();
        assert_eq!(
            (q.expected, q.received, q.lost, q.ssrc_changes),
            (20, 20, 0, 1)
        );
        assert_eq!(g.meter.rtp.ssrc(), Some(2));
    }

    #[test]
    fn reordered_and_duplicated_are_told_apart() {
        let q = Feed::seqs([1, 2, 4, 3, 5, 5, 3, 7, 6, 8]).report();
        assert_eq!((q.expected, q.received, q.lost), (8, 10, 0));
        assert_eq!((q.dups, q.reordered), (2, 2));
        assert_eq!(q.loss_pct, 0.0);
    }

    /// G.711 every 20 ms, odd packets `late_ms` late: every transit
    /// difference is `late_ms`, so the A.8 estimate tends to it.
    fn jittered(pt: u8, rate: u32, late_ms: f64, n: u16) -> Feed {
        let mut f = Feed::new();
        let step = rate / 50;
        for i in 0..n {
            let late = if i % 2 == 1 { late_ms } else { 0.0 };
            f.packet(9, pt, i, u32::from(i) * step, f64::from(i) * 20.0 + late);
        }
        f
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        let steady = jittered(0, 8000, 0.0, 100).report();
        assert_eq!(
            (steady.jitter_ms, steady.clock),
            (Some(0.0), ClockSource::Static)
        );
        let q = jittered(0, 8000, 5.0, 500).report();
        // The estimate starts at 0 and closes in on 5 ms (1/16 a packet).
        near(q.jitter_max_ms.unwrap(), 5.0, 0.01);
        let mean = q.jitter_ms.unwrap();
        assert!((4.7..=5.0).contains(&mean), "{mean}");
        assert_eq!(q.clock_rate, Some(8000));
        near(q.max_gap_ms, 25.0, 1e-6);
        // 90 kHz video clock: the same 5 ms.
        let v = jittered(96 - 70, 90000, 5.0, 500).report();
        near(v.jitter_max_ms.unwrap(), 5.0, 0.01);
    }

    #[test]
    fn dynamic_clock_is_inferred_or_assumed() {
        // Opus at 48 kHz: two seconds to learn, then 5 ms of jitter.
        let opus = jittered(111, 48000, 5.0, 600).report();
        assert_eq!(
            (opus.clock, opus.clock_rate),
            (ClockSource::Inferred, Some(48000))
        );
        near(opus.jitter_max_ms.unwrap(), 5.0, 0.01);
        // A short call leaves no time to learn: no jitter.
        let short = jittered(111, 48000, 5.0, 50).report();
        assert_eq!((short.clock, short.jitter_ms), (ClockSource::None, None));
        // A rate nothing fits: 8000 assumed, and said so.
        let odd = jittered(100, 10000, 0.0, 200).report();
        assert_eq!(
            (odd.clock, odd.clock_rate),
            (ClockSource::Assumed, Some(8000))
        );
    }

    #[test]
    fn events_stay_out_of_the_jitter_and_a_new_codec_takes_over() {
        let mut f = Feed::new();
        let mut seq = 0u16;
        let mut send = |f: &mut Feed, pt: u8, ts: u32, ms: f64| {
            f.packet(3, pt, seq, ts, ms);
            seq += 1;
        };
        for i in 0..100u32 {
            send(&mut f, 0, i * 160, f64::from(i) * 20.0);
        }
        // A digit: ten event packets on one timestamp.
        for i in 100..110u32 {
            send(&mut f, 101, 100 * 160, f64::from(i) * 20.0);
        }
        for i in 110..200u32 {
            send(&mut f, 0, i * 160, f64::from(i) * 20.0);
        }
        let q = f.report();
        assert_eq!((q.payload_type, q.jitter_max_ms), (Some(0), Some(0.0)));
        // G.729 from now on (a re-INVITE): after 50 packets it is the codec.
        for i in 200..260u32 {
            send(&mut f, 18, i * 160, f64::from(i) * 20.0);
        }
        let q = f.report();
        assert_eq!((q.payload_type, q.codec), (Some(18), "G.729"));
        assert_eq!(q.jitter_max_ms, Some(0.0));
    }

    #[test]
    fn longest_gap_is_measured() {
        let mut f = Feed::new();
        for (i, ms) in [0.0, 20.0, 40.0, 340.0, 360.0].iter().enumerate() {
            f.packet(1, 8, i as u16, i as u32 * 160, *ms);
        }
        near(f.report().max_gap_ms, 300.0, 1e-6);
    }

    fn caller_sr(ntp_middle: u32) -> Vec<u8> {
        let info = SenderInfo {
            ssrc: 0xca11,
            ntp: u64::from(ntp_middle) << 16,
            rtp_ts: 0,
            packets: 10,
            octets: 1600,
        };
        build::sr(&info, &[])
    }

    fn callee_rr(about: u32, lsr: u32, dlsr: u32) -> Vec<u8> {
        let block = ReportBlock {
            ssrc: about,
            fraction_lost: 64,
            cumulative_lost: 12,
            highest_seq: 100,
            jitter: 40,
            lsr,
            dlsr,
        };
        build::rr(0xca1e, &[block])
    }

    #[test]
    fn rtt_of_the_reporting_party_leg() {
        let t0 = Instant::now();
        let mut m: ByParty<QualityMeter> = ByParty::default();
        // The caller's RTP (SSRC 0xca11), then its SR passes at t0.
        let mut f = Feed::seqs(0..50);
        f.meter.rtp.seq.as_mut().unwrap().ssrc = 0xca11;
        m[Party::Caller] = f.meter;
        observe_rtcp(&mut m, Party::Caller, &caller_sr(0x1234_5678), t0);
        // The callee held it 100 ms (6554/65536 s) and its report arrives
        // 150 ms after the SR passed: 50 ms from the relay to it and back.
        let rr = callee_rr(0xca11, 0x1234_5678, 6554);
        observe_rtcp(&mut m, Party::Callee, &rr, t0 + Duration::from_millis(150));
        let q = QualityReport::build(&m);
        near(q.callee.rtt_ms.unwrap(), 50.0, 0.01);
        assert_eq!(q.caller.rtt_ms, None);
        // What the callee reported about the caller's RTP.
        assert_eq!(
            (q.caller.rtcp_reports, q.caller.rtcp_cumulative_lost),
            (1, Some(12))
        );
        near(q.caller.rtcp_loss_pct.unwrap(), 25.0, 1e-9);
        near(q.caller.rtcp_jitter_ms.unwrap(), 5.0, 1e-9);
        assert_eq!((q.caller.rtcp_packets, q.callee.rtcp_packets), (1, 1));
        // The caller's MOS: the far end's 25 % loss, 5 ms jitter, and the
        // callee's leg taken for both (100 ms round trip, 50 ms one way):
        //   d = 50 + 2 * 5 + 20 = 80; Ie,eff = 95 * 25 / (25 + 25.1)
        let want = 93.2 - 0.024 * 80.0 - 95.0 * 25.0 / 50.1;
        // (DLSR 6554 is 100.006 ms: the round trip is 6 µs short of 50.)
        near(q.caller.r_factor.unwrap(), want, 1e-3);
        assert_eq!(q.callee.mos, None, "the callee sent no RTP");
    }

    #[test]
    fn stale_foreign_and_malformed_reports_are_not_believed() {
        let t0 = Instant::now();
        let mut m: ByParty<QualityMeter> = ByParty::default();
        m[Party::Caller] = Feed::seqs(0..5).meter;
        m[Party::Caller].rtp.seq.as_mut().unwrap().ssrc = 0xca11;
        observe_rtcp(&mut m, Party::Caller, &caller_sr(0x0101_0101), t0);
        let later = t0 + Duration::from_millis(80);
        // An LSR the relay never saw, and a DLSR longer than the wait.
        observe_rtcp(
            &mut m,
            Party::Callee,
            &callee_rr(0xca11, 0x0202_0202, 0),
            later,
        );
        observe_rtcp(
            &mut m,
            Party::Callee,
            &callee_rr(0xca11, 0x0101_0101, 65536),
            later,
        );
        // A block about some other source is not about this direction.
        observe_rtcp(&mut m, Party::Callee, &callee_rr(0xbeef, 0, 0), later);
        // Malformed: counted against the sender, nothing else.
        let mut bad = callee_rr(0xca11, 0x0101_0101, 0);
        bad[0] |= 0x1f;
        observe_rtcp(&mut m, Party::Callee, &bad, later);
        observe_rtcp(&mut m, Party::Callee, b"\x80", later);
        let q = QualityReport::build(&m);
        assert_eq!((q.callee.rtt_ms, q.caller.rtt_ms), (None, None));
        assert_eq!(q.caller.rtcp_reports, 2);
        assert_eq!((q.callee.rtcp_packets, q.callee.rtcp_errors), (3, 2));
        // Only the last four SRs are remembered.
        for i in 1..=5u32 {
            observe_rtcp(&mut m, Party::Caller, &caller_sr(0x1000 + i), t0);
        }
        observe_rtcp(&mut m, Party::Callee, &callee_rr(0xca11, 0x1001, 0), later);
        assert_eq!(QualityReport::build(&m).callee.rtt_ms, None);
        observe_rtcp(&mut m, Party::Callee, &callee_rr(0xca11, 0x1002, 0), later);
        near(QualityReport::build(&m).callee.rtt_ms.unwrap(), 80.0, 0.01);
    }

    #[test]
    fn a_silent_direction_has_no_score() {
        let q = QualityReport::build(&ByParty::default());
        assert_eq!(q.caller, DirectionQuality::default());
        assert_eq!((q.caller.mos, q.callee.r_factor), (None, None));
        // A clean G.711 direction with nothing else known scores 4.40.
        let f = Feed::seqs(0..100);
        let q = f.report();
        near(q.r_factor.unwrap(), 92.72, 1e-9);
        near(q.mos.unwrap(), 4.40, 0.005);
        assert_eq!(q.codec, "G.711");
    }

    #[test]
    fn static_rates_of_rfc3551() {
        let rates: Vec<Option<u32>> = [0, 6, 9, 10, 16, 17, 18, 26, 34, 19, 96, 127]
            .iter()
            .map(|&pt| static_clock_rate(pt))
            .collect();
        assert_eq!(
            rates,
            [
                Some(8000),
                Some(16000),
                Some(8000),
                Some(44100),
                Some(11025),
                Some(22050),
                Some(8000),
                Some(90000),
                Some(90000),
                None,
                None,
                None
            ]
        );
    }
}
