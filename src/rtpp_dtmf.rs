//! DTMF catching (extension 20230205): RFC 4733 telephone-events in what
//! one party sends on a stream's RTP, reported one line per digit to the
//! session's notify target (doc/PROTOCOL.md, "DTMF catching").
//!
//! A sender repeats an event's packets (the same RTP timestamp, growing
//! duration) and its end packet, usually three times. The catcher keeps the
//! last [`HISTORY`] timestamps in a fixed array and reports a digit once,
//! on the first end packet of a timestamp it already knew. Nothing here
//! allocates after the catcher is made.

use std::io::Write;

use crate::rtp::RtpHeader;

/// Timestamps remembered per direction.
pub const HISTORY: usize = 4;

/// Longest line suffix: ` D VV DDDDD S` (volume is 6 bits, duration 16).
pub const SUFFIX_MAX: usize = 16;

/// A digit to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// `0`-`9`, `*`, `#`, `A`-`D`, or a space (event 16, flash).
    pub digit: u8,
    /// From the end packet: 0-63, in -dBm0.
    pub volume: u8,
    /// The longest duration seen for the event, in timestamp units.
    pub duration: u16,
}

impl DtmfEvent {
    /// Writes ` DIGIT VOLUME DURATION SIDE` (what follows the tag on the
    /// notification line) into `out`; returns its length.
    pub fn write_suffix(&self, side: u8, out: &mut [u8; SUFFIX_MAX]) -> usize {
        let mut cursor = &mut out[..];
        let room = cursor.len();
        // Cannot fail: the longest suffix fits SUFFIX_MAX.
        let _ = write!(
            cursor,
            " {} {} {} {}",
            char::from(self.digit),
            self.volume,
            self.duration,
            side
        );
        room - cursor.len()
    }
}

/// The character of an RFC 4733 event code; `None` for codes that are not
/// DTMF.
pub fn digit_of(event: u8) -> Option<u8> {
    const DIGITS: &[u8; 17] = b"0123456789*#ABCD ";
    DIGITS.get(usize::from(event)).copied()
}

/// One remembered event timestamp.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    used: bool,
    timestamp: u32,
    digit: u8,
    duration: u16,
    reported: bool,
}

/// Watches one direction of one stream for telephone-events.
#[derive(Debug, Clone)]
pub struct DtmfCatcher {
    tag: Box<[u8]>,
    payload_type: u8,
    hide: bool,
    slots: [Slot; HISTORY],
    /// The slot the next new timestamp takes (the oldest).
    next: usize,
}

impl DtmfCatcher {
    /// A catcher reporting with `tag`, watching `payload_type`, dropping
    /// the event packets when `hide`.
    pub fn new(tag: Vec<u8>, payload_type: u8, hide: bool) -> DtmfCatcher {
        DtmfCatcher {
            tag: tag.into_boxed_slice(),
            payload_type,
            hide,
            slots: [Slot::default(); HISTORY],
            next: 0,
        }
    }

    /// Changes what is watched and whether it is hidden; the tag and the
    /// events remembered stay (a repeated command changes only these).
    pub fn set_mode(&mut self, payload_type: u8, hide: bool) {
        self.payload_type = payload_type;
        self.hide = hide;
    }

    /// The tag that starts each line.
    pub fn tag(&self) -> &[u8] {
        &self.tag
    }

    /// The payload type of the event packets.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// True when event packets are dropped rather than relayed.
    pub fn hides(&self) -> bool {
        self.hide
    }

    /// Looks at one RTP packet of the watched direction; returns the digit
    /// this packet completes, if any. Packets of another payload type, too
    /// short for an event, or with an event that is not DTMF change nothing.
    pub fn observe(&mut self, h: &RtpHeader, packet: &[u8]) -> Option<DtmfEvent> {
        if h.payload_type != self.payload_type {
            return None;
        }
        let end = h.payload_offset.checked_add(h.payload_len)?;
        let payload = packet.get(h.payload_offset..end)?;
        let &[event, flags, d0, d1, ..] = payload else {
            return None;
        };
        let digit = digit_of(event)?;
        let duration = u16::from_be_bytes([d0, d1]);
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.used && s.timestamp == h.timestamp)
        else {
            // A new timestamp is remembered, not reported, even when it is
            // an end packet: one end packet alone may be a stray.
            self.remember(h.timestamp, digit, duration);
            return None;
        };
        if slot.reported || slot.digit != digit {
            return None;
        }
        slot.duration = slot.duration.max(duration);
        if flags & 0x80 == 0 {
            return None;
        }
        slot.reported = true;
        Some(DtmfEvent {
            digit,
            volume: flags & 0x3f,
            duration: slot.duration,
        })
    }

    fn remember(&mut self, timestamp: u32, digit: u8, duration: u16) {
        if let Some(s) = self.slots.get_mut(self.next) {
            *s = Slot {
                used: true,
                timestamp,
                digit,
                duration,
                reported: false,
            };
        }
        self.next = (self.next + 1) % HISTORY;
    }
}

/// An RTP packet carrying one RFC 4733 event, for the tests here and of
/// the packet path.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventPacket {
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
    /// CSRCs before the payload.
    pub csrcs: u8,
    /// An extension header of that many words before the payload.
    pub ext_words: Option<u16>,
}

#[cfg(test)]
impl EventPacket {
    /// An event of payload type 101 (the usual one), volume 10, plain
    /// header.
    pub(crate) fn new(ts: u32, event: u8, end: bool, duration: u16) -> EventPacket {
        EventPacket {
            pt: 101,
            seq: 1,
            ts,
            event,
            end,
            volume: 10,
            duration,
            csrcs: 0,
            ext_words: None,
        }
    }

    /// The packet.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let ext = if self.ext_words.is_some() { 0x10 } else { 0 };
        let mut p = vec![0x80 | self.csrcs | ext, self.pt];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ts.to_be_bytes());
        p.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        for i in 0..self.csrcs {
            p.extend_from_slice(&[0xee, 0xee, 0xee, i]);
        }
        if let Some(words) = self.ext_words {
            p.extend_from_slice(&[0xbe, 0xde]);
            p.extend_from_slice(&words.to_be_bytes());
            // Bytes that would read as an end event of digit 9 if taken
            // for the payload.
            for _ in 0..words {
                p.extend_from_slice(&[9, 0x8a, 0x03, 0x20]);
            }
        }
        p.push(self.event);
        p.push(if self.end { 0x80 } else { 0 } | (self.volume & 0x3f));
        p.extend_from_slice(&self.duration.to_be_bytes());
        p
    }
}

// Carried whole across a hand-over (doc/PROTOCOL.md, "Hand-over").
crate::rtpp_handover::wire::carry_fields!(Slot {
    used,
    timestamp,
    digit,
    duration,
    reported,
});
crate::rtpp_handover::wire::carry_fields!(DtmfCatcher {
    tag,
    payload_type,
    hide,
    slots,
    next,
} check |c| c.next < HISTORY && c.payload_type <= 127);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp;

    const PT: u8 = 101;

    fn simple(ts: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
        EventPacket::new(ts, event, end, duration).bytes()
    }

    fn feed(c: &mut DtmfCatcher, p: &[u8]) -> Option<DtmfEvent> {
        let h = rtp::parse(p).unwrap();
        c.observe(&h, p)
    }

    fn catcher() -> DtmfCatcher {
        DtmfCatcher::new(b"tag".to_vec(), PT, false)
    }

    #[test]
    fn one_line_per_digit_despite_three_end_packets() {
        let mut c = catcher();
        assert_eq!(feed(&mut c, &simple(1000, 5, false, 160)), None);
        assert_eq!(feed(&mut c, &simple(1000, 5, false, 320)), None);
        let end = EventPacket {
            volume: 7,
            ..EventPacket::new(1000, 5, true, 480)
        };
        let ev = feed(&mut c, &end.bytes());
        assert_eq!(
            ev,
            Some(DtmfEvent {
                digit: b'5',
                volume: 7,
                duration: 480
            })
        );
        for _ in 0..2 {
            assert_eq!(feed(&mut c, &simple(1000, 5, true, 480)), None);
        }
    }

    #[test]
    fn duration_is_the_longest_seen() {
        let mut c = catcher();
        feed(&mut c, &simple(8, 11, false, 800));
        feed(&mut c, &simple(8, 11, false, 400));
        let ev = feed(&mut c, &simple(8, 11, true, 640)).unwrap();
        assert_eq!((ev.digit, ev.duration), (b'#', 800));
    }

    #[test]
    fn lone_end_packet_reports_nothing() {
        let mut c = catcher();
        // The first packet of a timestamp only introduces it.
        assert_eq!(feed(&mut c, &simple(2000, 1, true, 800)), None);
        // Its retransmission is then the first end packet of a known
        // timestamp, and reports.
        let ev = feed(&mut c, &simple(2000, 1, true, 800)).unwrap();
        assert_eq!((ev.digit, ev.duration), (b'1', 800));
    }

    #[test]
    fn wrong_payload_type_is_ignored() {
        let mut c = catcher();
        let other = |end| {
            EventPacket {
                pt: 100,
                ..EventPacket::new(3000, 2, end, 160)
            }
            .bytes()
        };
        assert_eq!(feed(&mut c, &other(false)), None);
        assert_eq!(feed(&mut c, &other(true)), None);
        assert_eq!(feed(&mut c, &other(true)), None);
        // Nothing of it was remembered either.
        assert_eq!(feed(&mut c, &simple(3000, 2, true, 160)), None);
        // A repeated command may change the payload type.
        c.set_mode(100, true);
        assert_eq!(
            (c.payload_type(), c.hides(), c.tag()),
            (100, true, &b"tag"[..])
        );
        assert_eq!(feed(&mut c, &other(false)), None);
        assert!(feed(&mut c, &other(true)).is_some());
    }

    #[test]
    fn csrcs_and_extension_are_skipped() {
        let mut c = catcher();
        let p = |end| {
            EventPacket {
                volume: 3,
                csrcs: 2,
                ext_words: Some(2),
                ..EventPacket::new(4000, 12, end, 240)
            }
            .bytes()
        };
        assert_eq!(feed(&mut c, &p(false)), None);
        let ev = feed(&mut c, &p(true)).unwrap();
        assert_eq!((ev.digit, ev.volume, ev.duration), (b'A', 3, 240));
    }

    #[test]
    fn events_beyond_16_and_short_payloads_are_ignored() {
        let mut c = catcher();
        for code in [17, 32, 255] {
            assert_eq!(feed(&mut c, &simple(5000, code, false, 160)), None);
            assert_eq!(feed(&mut c, &simple(5000, code, true, 160)), None);
        }
        // Flash (16) is a space.
        feed(&mut c, &simple(6000, 16, false, 160));
        assert_eq!(
            feed(&mut c, &simple(6000, 16, true, 160)).unwrap().digit,
            b' '
        );
        let mut short = simple(7000, 3, false, 160);
        short.truncate(15);
        assert_eq!(feed(&mut c, &short), None);
        assert_eq!(feed(&mut c, &short), None);
        assert_eq!(digit_of(9), Some(b'9'));
        assert_eq!(digit_of(10), Some(b'*'));
        assert_eq!(digit_of(15), Some(b'D'));
        assert_eq!(digit_of(17), None);
    }

    #[test]
    fn another_digit_on_the_same_timestamp_is_ignored() {
        let mut c = catcher();
        feed(&mut c, &simple(9000, 4, false, 160));
        assert_eq!(feed(&mut c, &simple(9000, 6, false, 2000)), None);
        assert_eq!(feed(&mut c, &simple(9000, 6, true, 2000)), None);
        let ev = feed(&mut c, &simple(9000, 4, true, 320)).unwrap();
        assert_eq!((ev.digit, ev.duration), (b'4', 320));
    }

    #[test]
    fn four_timestamps_are_remembered() {
        let mut c = catcher();
        for ts in [100, 200, 300, 400] {
            feed(&mut c, &simple(ts, 1, false, 160));
        }
        // All four still known: each end packet reports.
        for ts in [100, 200, 300, 400] {
            assert!(feed(&mut c, &simple(ts, 1, true, 160)).is_some());
        }
        // A fifth pushes out the oldest, which is new again: its late end
        // packets only introduce it once more.
        feed(&mut c, &simple(500, 2, false, 160));
        assert_eq!(feed(&mut c, &simple(100, 1, true, 160)), None);
        assert!(feed(&mut c, &simple(100, 1, true, 160)).is_some());
        // 200 was pushed out by 100 in turn.
        assert_eq!(feed(&mut c, &simple(200, 1, true, 160)), None);
    }

    #[test]
    fn line_suffix() {
        let mut out = [0u8; SUFFIX_MAX];
        let ev = DtmfEvent {
            digit: b'#',
            volume: 63,
            duration: 65535,
        };
        let n = ev.write_suffix(1, &mut out);
        assert_eq!(&out[..n], b" # 63 65535 1");
        let n = DtmfEvent {
            digit: b' ',
            volume: 0,
            duration: 0,
        }
        .write_suffix(0, &mut out);
        assert_eq!(&out[..n], b"   0 0 0");
    }
}
