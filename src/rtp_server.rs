//! Prompt players: the RTP streams the `P` command plays to a party (see
//! doc/PROTOCOL.md, "Recording and playback").
//!
//! # Prompt files
//!
//! `makeann` writes one file per codec, `PROMPT.<payload type>`, holding raw
//! codec frames back to back. [`Player::open`] tries the payload types of the
//! command's codec list in order and takes the first whose file is a regular
//! file holding at least one whole frame. The file is read into memory once,
//! there, so producing packets afterwards neither allocates nor touches the
//! disk. A partial frame at the end is dropped: only whole frames are sent.
//! Files larger than [`MAX_PROMPT_LEN`] are refused ([`PlayerError::TooLarge`]
//! when no other codec of the list has a usable prompt).
//!
//! # Packets
//!
//! One codec unit per packet, as `rtp::frame_size` defines it: 80 bytes
//! (10 ms) of G.711, one 33-byte (20 ms) GSM frame, one 10-byte (10 ms) G.729
//! frame, one 24-byte (30 ms) G.723 frame. The header is RTP version 2 with
//! no CSRCs; the caller supplies a random SSRC, initial sequence number and
//! timestamp; the marker bit is set on the very first packet only; the
//! sequence number grows by one and the timestamp by the samples carried per
//! packet, both continuing across repetitions of the prompt.
//!
//! # Pacing
//!
//! Packet N of the schedule is due at `anchor + (N - anchor_packet) × ptime`,
//! computed from N each time rather than by adding up intervals, so rounding
//! never accumulates into drift. At start the anchor is the `now` given to
//! `open` and packet 0 is due at once.
//!
//! When the loop comes back late, the schedule stands: the packets that fell
//! due meanwhile go out back to back (one per call) and the stream is on its
//! grid again. A receiver plays packets by their RTP timestamps, which keep
//! advancing by one ptime per packet; moving the schedule instead would turn
//! every late wake-up (a busy or virtual machine delays a process by 10 ms
//! now and then) into a permanent shift between the timestamps and the wall
//! clock, a drift that grows with each one. The C rtpproxy also sent every
//! packet that was due.
//!
//! Only a backlog of more than [`CATCH_UP_LIMIT`] (the loop stalled for
//! long) is not sent as a burst: a receiver's jitter buffer would discard
//! most of it. The schedule is then re-anchored so the next packet goes out
//! now and the following ones follow at ptime from there. Nothing is
//! skipped: the audio resumes where it stopped, one ptime per packet.

use std::ffi::OsString;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::rtp::{frame_size, RTP_HEADER_LEN};
use crate::rtpp_log;

/// Largest prompt file loaded; prompts are seconds of speech, so anything
/// bigger is a mistake that would otherwise pin that much memory per player.
pub const MAX_PROMPT_LEN: u64 = 16 << 20;

/// The most a player lags behind its schedule and still catches up by
/// sending the overdue packets back to back (20 packets of G.711); beyond it
/// the schedule is re-anchored instead. See "Pacing" above.
pub const CATCH_UP_LIMIT: Duration = Duration::from_millis(200);

/// Largest payload a player sends: 10 ms of G.711.
const MAX_PAYLOAD_LEN: usize = 80;

/// Room [`Player::next_packet`] needs in its output buffer.
pub const MAX_PACKET_LEN: usize = RTP_HEADER_LEN + MAX_PAYLOAD_LEN;

/// Why a player could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayerError {
    /// No codec of the list has a prompt file with at least one whole frame.
    NoPrompt,
    /// The prompt name is empty, ends in `/`, or contains a NUL byte.
    BadName,
    /// The only prompt files found are larger than [`MAX_PROMPT_LEN`].
    TooLarge(PathBuf),
}

impl fmt::Display for PlayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlayerError::NoPrompt => f.write_str("no readable prompt file for any of the codecs"),
            PlayerError::BadName => f.write_str("invalid prompt name"),
            PlayerError::TooLarge(path) => write!(
                f,
                "prompt file {} is larger than {} bytes",
                path.display(),
                MAX_PROMPT_LEN
            ),
        }
    }
}

impl std::error::Error for PlayerError {}

/// What [`Player::next_packet`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A packet of this many bytes is at the start of the buffer: send it.
    Packet(usize),
    /// The next packet is not due yet; see [`Player::next_due`].
    NotYet,
    /// The prompt has been played `count` times (or the buffer was too
    /// small): the player has nothing more to send.
    Finished,
}

/// One prompt being played to one party.
pub struct Player {
    /// The file the prompt was read from: a hand-over reads it again.
    source: PathBuf,
    payload_type: u8,
    /// The prompt, whole frames only (never empty).
    prompt: Box<[u8]>,
    /// Payload bytes per packet.
    frame_len: usize,
    /// RTP timestamp units (8 kHz samples) per packet.
    samples_per_packet: u32,
    /// Packet interval in microseconds (exact for every supported codec).
    ptime_us: u64,
    ssrc: u32,
    /// Sequence number of the next packet.
    seq: u16,
    /// Timestamp of the next packet.
    ts: u32,
    /// Offset of the next frame in `prompt`.
    offset: usize,
    /// Plays of the prompt left, counting the current one; `None` = forever.
    plays_left: Option<u32>,
    /// Packet `anchor_packet` is due at `anchor`; see "Pacing" above.
    anchor: Instant,
    anchor_packet: u64,
    sent: u64,
    finished: bool,
}

impl Player {
    /// Opens `PROMPT.<pt>` for the first codec of `codecs` that has a readable prompt.
    ///
    /// `count` is how many times to play it; negative = until stopped; `0`
    /// gives a player that is finished at once. `ssrc`, `seq` and `ts` are
    /// the random SSRC, initial sequence number and initial timestamp.
    /// Payload types without a known frame size are skipped.
    pub fn open(
        prompt: &Path,
        codecs: &[u8],
        count: i32,
        ssrc: u32,
        seq: u16,
        ts: u32,
        now: Instant,
    ) -> Result<Player, PlayerError> {
        let name = prompt.as_os_str().as_bytes();
        // A NUL would silently cut the name short in open(2); a trailing
        // slash would turn `dir/` into the hidden file `dir/.<pt>`.
        if name.is_empty() || name.contains(&0) || name.ends_with(b"/") {
            return Err(PlayerError::BadName);
        }

        let mut too_large = None;
        for &payload_type in codecs {
            let Some((frame_len, samples)) = frame_size(payload_type) else {
                continue;
            };
            let path = prompt_path(prompt, payload_type);
            match load_frames(&path, frame_len) {
                Ok(frames) => {
                    return Ok(Player {
                        source: path,
                        payload_type,
                        prompt: frames,
                        frame_len,
                        samples_per_packet: samples,
                        // 8 kHz: one sample is 125 us.
                        ptime_us: u64::from(samples) * 125,
                        ssrc,
                        seq,
                        ts,
                        offset: 0,
                        plays_left: u32::try_from(count).ok(),
                        anchor: now,
                        anchor_packet: 0,
                        sent: 0,
                        finished: count == 0,
                    });
                }
                Err(Unusable::TooLarge) => {
                    too_large.get_or_insert(path);
                }
                Err(Unusable::Unreadable) => {}
            }
        }
        Err(too_large.map_or(PlayerError::NoPrompt, PlayerError::TooLarge))
    }

    /// The payload type being played.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// Writes the next packet due at `now` into `out` (>= 12 + the largest frame).
    ///
    /// Returns at most one packet per call; a buffer shorter than the packet
    /// finishes the player rather than stalling it with a packet that can
    /// never be sent.
    pub fn next_packet(&mut self, now: Instant, out: &mut [u8]) -> Next {
        if self.finished {
            return Next::Finished;
        }
        let len = RTP_HEADER_LEN + self.frame_len;
        let end = self.offset + self.frame_len;
        let (Some(out), Some(frame)) = (out.get_mut(..len), self.prompt.get(self.offset..end))
        else {
            self.finished = true;
            return Next::Finished;
        };
        let due = self.due(self.sent);
        if now < due {
            return Next::NotYet;
        }
        if now - due > CATCH_UP_LIMIT {
            // A long stall: send this one now and pace the rest from here,
            // rather than bursting a backlog nobody can use (see "Pacing").
            self.anchor = now;
            self.anchor_packet = self.sent;
        }

        let marker = if self.sent == 0 { 0x80 } else { 0 };
        out[0] = 0x80; // version 2, no padding, no extension, no CSRCs
        out[1] = marker | self.payload_type;
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.ts.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[RTP_HEADER_LEN..].copy_from_slice(frame);

        self.sent += 1;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(self.samples_per_packet);
        self.offset = end;
        if self.offset >= self.prompt.len() {
            self.offset = 0;
            if let Some(plays) = &mut self.plays_left {
                *plays = plays.saturating_sub(1);
                self.finished = *plays == 0;
            }
        }
        Next::Packet(len)
    }

    /// When the next packet is due (poll timeout); None when finished.
    pub fn next_due(&self) -> Option<Instant> {
        (!self.finished).then(|| self.due(self.sent))
    }

    /// Packets produced so far.
    #[cfg(test)]
    pub fn packets_sent(&self) -> u64 {
        self.sent
    }

    /// When packet `n` of the schedule is due.
    fn due(&self, n: u64) -> Instant {
        let after = n.saturating_sub(self.anchor_packet);
        let offset = Duration::from_micros(self.ptime_us.saturating_mul(after));
        // Overflow would take centuries of playing; treating it as "due now"
        // merely re-anchors the schedule instead of panicking.
        self.anchor.checked_add(offset).unwrap_or(self.anchor)
    }
}

// By hand: the derived form would print the whole prompt.
impl fmt::Debug for Player {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Player")
            .field("payload_type", &self.payload_type)
            .field("prompt_len", &self.prompt.len())
            .field("ssrc", &self.ssrc)
            .field("sent", &self.sent)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The files [`Player::open`] looks for, in the order it tries them, each
/// once: `PROMPT.<pt>` for every payload type of `codecs` that prompts are
/// played in.
pub fn prompt_files(prompt: &Path, codecs: &[u8]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for &payload_type in codecs {
        if frame_size(payload_type).is_none() {
            continue;
        }
        let path = prompt_path(prompt, payload_type);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files
}

/// `PROMPT.<pt>`: the suffix is appended, never replacing an extension
/// (`hold.wav` gives `hold.wav.0`), as makeann names its outputs.
fn prompt_path(prompt: &Path, payload_type: u8) -> PathBuf {
    let mut name = OsString::from(prompt.as_os_str());
    name.push(format!(".{payload_type}"));
    PathBuf::from(name)
}

/// Why a candidate prompt file is passed over.
enum Unusable {
    /// Missing, unreadable, not a regular file, or shorter than one frame.
    Unreadable,
    /// Larger than [`MAX_PROMPT_LEN`].
    TooLarge,
}

/// Reads the whole frames of the prompt file at `path`.
fn load_frames(path: &Path, frame_len: usize) -> Result<Box<[u8]>, Unusable> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise block the whole
    // relay until some writer showed up. It changes nothing for regular files.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|_| Unusable::Unreadable)?;
    let meta = file.metadata().map_err(|_| Unusable::Unreadable)?;
    if !meta.is_file() {
        return Err(Unusable::Unreadable);
    }
    if meta.len() > MAX_PROMPT_LEN {
        return Err(Unusable::TooLarge);
    }
    // Bounded by the cap again while reading: the file may grow after fstat.
    let mut data = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_PROMPT_LEN + 1)
        .read_to_end(&mut data)
        .map_err(|_| Unusable::Unreadable)?;
    if data.len() as u64 > MAX_PROMPT_LEN {
        return Err(Unusable::TooLarge);
    }
    data.truncate(data.len() / frame_len * frame_len);
    if data.is_empty() {
        return Err(Unusable::Unreadable);
    }
    Ok(data.into_boxed_slice())
}

/// A player as a hand-over carries it: where it is in its prompt and its
/// schedule, not the audio, which the new process reads from the same
/// file again (doc/PROTOCOL.md, "Hand-over").
impl crate::rtpp_handover::wire::Carry for Player {
    fn put(&self, w: &mut crate::rtpp_handover::wire::Writer) {
        w.put(&self.source);
        w.u8(self.payload_type);
        w.u32(self.ssrc);
        w.u16(self.seq);
        w.u32(self.ts);
        w.put(&self.offset);
        w.put(&self.plays_left);
        w.put(&self.anchor);
        w.u64(self.anchor_packet);
        w.u64(self.sent);
        w.bool(self.finished);
    }
    fn take(
        r: &mut crate::rtpp_handover::wire::Reader<'_>,
    ) -> crate::rtpp_handover::wire::WireResult<Self> {
        use crate::rtpp_handover::wire::refuse;
        let source: PathBuf = r.take()?;
        let payload_type = r.u8()?;
        let Some((frame_len, samples)) = frame_size(payload_type) else {
            return refuse(format!("prompt of payload type {payload_type}"));
        };
        let mut p = Player {
            source,
            payload_type,
            prompt: vec![0; frame_len].into(),
            frame_len,
            samples_per_packet: samples,
            ptime_us: u64::from(samples) * 125,
            ssrc: r.u32()?,
            seq: r.u16()?,
            ts: r.u32()?,
            offset: r.take()?,
            plays_left: r.take()?,
            anchor: r.take()?,
            anchor_packet: r.u64()?,
            sent: r.u64()?,
            finished: r.bool()?,
        };
        if p.anchor_packet > p.sent || !p.offset.is_multiple_of(frame_len) {
            return refuse("inconsistent player");
        }
        match load_frames(&p.source, frame_len) {
            Ok(frames) if p.offset < frames.len() => p.prompt = frames,
            _ => {
                // Changed or gone since: the prompt ends here rather than
                // playing something else from the middle.
                rtpp_log!(
                    Warn,
                    "prompt {} changed during the hand-over; stopped",
                    p.source.display()
                );
                p.offset = 0;
                p.finished = true;
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp;
    use std::ffi::OsStr;

    use crate::test_support::TempDir;

    /// Writes `PROMPT.<pt>` into `dir` and returns the prompt name (no
    /// suffix).
    fn write_prompt(dir: &TempDir, name: &str, payload_type: u8, data: &[u8]) -> PathBuf {
        let prompt = dir.join(name);
        std::fs::write(prompt_path(&prompt, payload_type), data).unwrap();
        prompt
    }

    /// Recognisable bytes: no two frames alike.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn open(prompt: &Path, codecs: &[u8], count: i32, now: Instant) -> Player {
        Player::open(prompt, codecs, count, 0xdead_beef, 65530, 0xffff_ff00, now).unwrap()
    }

    /// Plays to the end, each packet exactly when due; returns the packets.
    fn play_all(player: &mut Player, limit: usize) -> Vec<Vec<u8>> {
        let mut packets = Vec::new();
        let mut buf = [0u8; MAX_PACKET_LEN];
        while packets.len() < limit {
            let Some(due) = player.next_due() else {
                break;
            };
            match player.next_packet(due, &mut buf) {
                Next::Packet(len) => packets.push(buf[..len].to_vec()),
                other => panic!("due packet not produced: {other:?}"),
            }
        }
        packets
    }

    #[test]
    fn pcmu_prompt_played_twice() {
        let dir = TempDir::new("twice");
        let data = pattern(25 * 80);
        let prompt = write_prompt(&dir, "hello", 0, &data);
        let mut player = open(&prompt, &[0], 2, Instant::now());
        assert_eq!(player.payload_type(), 0);

        let packets = play_all(&mut player, 1000);
        assert_eq!(packets.len(), 50);
        assert_eq!(player.packets_sent(), 50);
        assert_eq!(player.next_due(), None);
        let mut buf = [0u8; MAX_PACKET_LEN];
        assert_eq!(player.next_packet(Instant::now(), &mut buf), Next::Finished);

        let mut payloads = Vec::new();
        for (i, packet) in packets.iter().enumerate() {
            let h = rtp::parse(packet).unwrap();
            assert_eq!(packet.len(), 12 + 80);
            assert_eq!(h.payload_type, 0);
            assert_eq!(h.marker, i == 0, "marker on packet {i}");
            assert_eq!(h.ssrc, 0xdead_beef);
            assert_eq!(h.seq, 65530u16.wrapping_add(i as u16));
            assert_eq!(h.timestamp, 0xffff_ff00u32.wrapping_add(80 * i as u32));
            payloads.extend_from_slice(&packet[h.payload_offset..]);
        }
        assert_eq!(payloads, [data.clone(), data].concat());
    }

    #[test]
    fn first_listed_codec_with_a_file_wins() {
        let dir = TempDir::new("choice");
        let only_0 = write_prompt(&dir, "a", 0, &[0xff; 160]);
        assert_eq!(open(&only_0, &[8, 0], 1, Instant::now()).payload_type(), 0);
        write_prompt(&dir, "a", 8, &[0xd5; 160]);
        assert_eq!(open(&only_0, &[8, 0], 1, Instant::now()).payload_type(), 8);
        assert_eq!(open(&only_0, &[0, 8], 1, Instant::now()).payload_type(), 0);
        // unknown payload types are passed over
        assert_eq!(open(&only_0, &[96, 8], 1, Instant::now()).payload_type(), 8);
    }

    #[test]
    fn suffix_is_appended_not_replacing_an_extension() {
        assert_eq!(
            prompt_path(Path::new("/p/hold.wav"), 18),
            Path::new("/p/hold.wav.18")
        );
        let dir = TempDir::new("ext");
        let prompt = write_prompt(&dir, "hold.wav", 8, &[1; 80]);
        assert_eq!(open(&prompt, &[8], 1, Instant::now()).payload_type(), 8);
    }

    #[test]
    fn prompt_files_are_the_candidates_in_order_once_each() {
        let files = prompt_files(Path::new("/p/hold.wav"), &[8, 96, 0, 8, 18, 101]);
        let want: Vec<PathBuf> = ["/p/hold.wav.8", "/p/hold.wav.0", "/p/hold.wav.18"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(files, want);
        assert!(prompt_files(Path::new("/p/hold"), &[96, 101]).is_empty());
    }

    #[test]
    fn missing_prompt_is_no_prompt() {
        let dir = TempDir::new("missing");
        let now = Instant::now();
        let err = Player::open(&dir.join("nothing"), &[0, 8, 3], 1, 1, 2, 3, now).unwrap_err();
        assert_eq!(err, PlayerError::NoPrompt);
        assert!(!err.to_string().is_empty());
        // an empty codec list, and a directory where a file should be
        assert_eq!(
            Player::open(&dir.join("nothing"), &[], 1, 1, 2, 3, now).unwrap_err(),
            PlayerError::NoPrompt
        );
        std::fs::create_dir(dir.join("d.path()")).unwrap();
        assert_eq!(
            Player::open(&dir.join("d"), &[0], 1, 1, 2, 3, now).unwrap_err(),
            PlayerError::NoPrompt
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let now = Instant::now();
        let nul = Path::new(OsStr::from_bytes(b"/tmp/a\0b"));
        for name in [nul, Path::new(""), Path::new("/tmp/")] {
            assert_eq!(
                Player::open(name, &[0], 1, 1, 2, 3, now).unwrap_err(),
                PlayerError::BadName
            );
        }
        // a name far beyond PATH_MAX is just a missing file
        let long = "x".repeat(8192);
        assert_eq!(
            Player::open(Path::new(&long), &[0], 1, 1, 2, 3, now).unwrap_err(),
            PlayerError::NoPrompt
        );
    }

    #[test]
    fn empty_and_short_files_count_as_missing() {
        let dir = TempDir::new("short");
        let now = Instant::now();
        let empty = write_prompt(&dir, "e", 0, &[]);
        assert_eq!(
            Player::open(&empty, &[0], 1, 1, 2, 3, now).unwrap_err(),
            PlayerError::NoPrompt
        );
        let one_byte = write_prompt(&dir, "one", 3, &[7]);
        assert_eq!(
            Player::open(&one_byte, &[3], 1, 1, 2, 3, now).unwrap_err(),
            PlayerError::NoPrompt
        );
        // ... and the next codec is tried
        write_prompt(&dir, "one", 0, &[7; 80]);
        assert_eq!(open(&one_byte, &[3, 0], 1, now).payload_type(), 0);
    }

    #[test]
    fn partial_last_frame_is_dropped() {
        let dir = TempDir::new("partial");
        let data = pattern(2 * 33 + 20);
        let prompt = write_prompt(&dir, "p", 3, &data);
        let mut player = open(&prompt, &[3], 1, Instant::now());
        let packets = play_all(&mut player, 100);
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[1][12..], data[33..66]);
    }

    #[test]
    fn too_large_prompt_is_refused() {
        let dir = TempDir::new("large");
        let prompt = dir.join("big");
        let file = std::fs::File::create(prompt_path(&prompt, 0)).unwrap();
        file.set_len(MAX_PROMPT_LEN + 1).unwrap();
        let now = Instant::now();
        assert_eq!(
            Player::open(&prompt, &[0], 1, 1, 2, 3, now).unwrap_err(),
            PlayerError::TooLarge(prompt_path(&prompt, 0))
        );
        // a usable codec later in the list still plays
        write_prompt(&dir, "big", 8, &[1; 80]);
        assert_eq!(open(&prompt, &[0, 8], 1, now).payload_type(), 8);
    }

    #[test]
    fn fifo_does_not_block() {
        let dir = TempDir::new("fifo");
        let prompt = dir.join("f");
        nix::unistd::mkfifo(&prompt_path(&prompt, 0), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(
            Player::open(&prompt, &[0], 1, 1, 2, 3, Instant::now()).unwrap_err(),
            PlayerError::NoPrompt
        );
    }

    #[test]
    fn frame_codecs_send_one_frame_per_packet() {
        let dir = TempDir::new("frames");
        for (pt, frame, samples, ptime) in [(3u8, 33, 160, 20), (18, 10, 80, 10), (4, 24, 240, 30)]
        {
            let data = pattern(3 * frame);
            let prompt = write_prompt(&dir, "f", pt, &data);
            let start = Instant::now();
            let mut player = open(&prompt, &[pt], 1, start);
            let mut due = Vec::new();
            let mut packets = Vec::new();
            while let Some(at) = player.next_due() {
                due.push(at - start);
                let mut buf = [0u8; MAX_PACKET_LEN];
                let Next::Packet(len) = player.next_packet(at, &mut buf) else {
                    panic!("no packet")
                };
                packets.push(buf[..len].to_vec());
            }
            assert_eq!(due, [ms(0), ms(ptime), ms(2 * ptime)], "pt {pt}");
            assert_eq!(packets.len(), 3);
            for (i, packet) in packets.iter().enumerate() {
                let h = rtp::parse(packet).unwrap();
                assert_eq!(h.payload_type, pt);
                assert_eq!(h.payload_len, frame);
                assert_eq!(packet[12..], data[i * frame..(i + 1) * frame]);
                assert_eq!(h.timestamp, 0xffff_ff00u32.wrapping_add(samples * i as u32));
            }
        }
    }

    #[test]
    fn every_codec_fits_the_packet_buffer() {
        for pt in 0..128 {
            if let Some((frame, _)) = frame_size(pt) {
                assert!(RTP_HEADER_LEN + frame <= MAX_PACKET_LEN, "pt {pt}");
            }
        }
    }

    #[test]
    fn packets_are_due_on_a_fixed_grid() {
        let dir = TempDir::new("grid");
        let prompt = write_prompt(&dir, "g", 0, &pattern(100 * 80));
        let start = Instant::now();
        let mut player = open(&prompt, &[0], 1, start);
        let mut buf = [0u8; MAX_PACKET_LEN];
        for n in 0..100u64 {
            let due = start + ms(10) * n as u32;
            assert_eq!(player.next_due(), Some(due));
            if n > 0 {
                let before = due - Duration::from_nanos(1);
                assert_eq!(player.next_packet(before, &mut buf), Next::NotYet);
            }
            // a little late (within one ptime) keeps the grid
            let late = due + Duration::from_micros(n * 97 % 9_000);
            assert_eq!(player.next_packet(late, &mut buf), Next::Packet(92));
            let again = if n < 99 { Next::NotYet } else { Next::Finished };
            assert_eq!(player.next_packet(late, &mut buf), again);
        }
        assert_eq!(player.next_due(), None);
    }

    #[test]
    fn short_stall_is_caught_up_on_the_same_grid() {
        let dir = TempDir::new("catchup");
        let data = pattern(50 * 80);
        let prompt = write_prompt(&dir, "c", 0, &data);
        let start = Instant::now();
        let mut player = open(&prompt, &[0], 1, start);
        let mut buf = [0u8; MAX_PACKET_LEN];
        for n in 0..5u32 {
            assert!(matches!(
                player.next_packet(start + ms(10) * n, &mut buf),
                Next::Packet(_)
            ));
        }
        // due at 50 ms, the loop comes back at 125 ms: packets 5..=12 are due
        let back = start + ms(125);
        for n in 5..13 {
            assert_eq!(player.next_packet(back, &mut buf), Next::Packet(92));
            assert_eq!(buf[12..], data[n * 80..(n + 1) * 80], "packet {n}");
        }
        assert_eq!(player.next_packet(back, &mut buf), Next::NotYet);
        // back on the original grid: packet 13 at 130 ms
        assert_eq!(player.next_due(), Some(start + ms(130)));
        assert_eq!(player.packets_sent(), 13);
    }

    #[test]
    fn long_stall_is_not_burst() {
        let dir = TempDir::new("stall");
        let data = pattern(50 * 80);
        let prompt = write_prompt(&dir, "s", 0, &data);
        let start = Instant::now();
        let mut player = open(&prompt, &[0], 1, start);
        let mut buf = [0u8; MAX_PACKET_LEN];
        for n in 0..5u32 {
            assert!(matches!(
                player.next_packet(start + ms(10) * n, &mut buf),
                Next::Packet(_)
            ));
        }
        // due at 50 ms, the loop comes back more than CATCH_UP_LIMIT later
        let back = start + ms(50) + CATCH_UP_LIMIT + ms(1);
        assert_eq!(player.next_packet(back, &mut buf), Next::Packet(92));
        assert_eq!(buf[12..], data[5 * 80..6 * 80]);
        assert_eq!(player.next_packet(back, &mut buf), Next::NotYet);
        assert_eq!(player.next_due(), Some(back + ms(10)));
        assert_eq!(
            player.next_packet(back + ms(10) - Duration::from_nanos(1), &mut buf),
            Next::NotYet
        );
        assert_eq!(
            player.next_packet(back + ms(10), &mut buf),
            Next::Packet(92)
        );
        // the audio continued where it was: nothing skipped
        assert_eq!(buf[12..], data[6 * 80..7 * 80]);
        assert_eq!(player.next_due(), Some(back + ms(20)));
        assert_eq!(player.packets_sent(), 7);
    }

    #[test]
    fn negative_count_loops_until_stopped() {
        let dir = TempDir::new("forever");
        let data = pattern(3 * 80);
        let prompt = write_prompt(&dir, "l", 8, &data);
        let mut player = open(&prompt, &[8], -1, Instant::now());
        let packets = play_all(&mut player, 1000);
        assert_eq!(packets.len(), 1000);
        assert!(player.next_due().is_some());
        for (i, packet) in packets.iter().enumerate() {
            let h = rtp::parse(packet).unwrap();
            assert_eq!(h.marker, i == 0);
            assert_eq!(packet[12..], data[i % 3 * 80..(i % 3 + 1) * 80]);
        }
    }

    #[test]
    fn zero_count_plays_nothing() {
        let dir = TempDir::new("zero");
        let prompt = write_prompt(&dir, "z", 0, &[1; 80]);
        let mut player = open(&prompt, &[0], 0, Instant::now());
        assert_eq!(player.next_due(), None);
        let mut buf = [0u8; MAX_PACKET_LEN];
        assert_eq!(player.next_packet(Instant::now(), &mut buf), Next::Finished);
        assert_eq!(player.packets_sent(), 0);
    }

    #[test]
    fn short_buffer_finishes_instead_of_panicking() {
        let dir = TempDir::new("buf");
        let prompt = write_prompt(&dir, "b", 0, &[1; 160]);
        let mut player = open(&prompt, &[0], 1, Instant::now());
        let mut small = [0u8; 40];
        assert_eq!(
            player.next_packet(Instant::now(), &mut small),
            Next::Finished
        );
        assert_eq!(player.next_due(), None);
    }
}
