//! extractaudio: decodes the audio of an rtpproxy call recording (a pair of
//! `.o.rtp`/`.a.rtp` files, ad-hoc or PCAP) into an 8 kHz 16-bit WAV or AU
//! file, both directions mixed or one per stereo channel. See
//! `man/extractaudio.1`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use rtpproxy::g711::{alaw_to_linear, ulaw_to_linear};
use rtpproxy::rtpp_record_reader::{read_recording, RecordedPacket};

const USAGE: &str = "usage: extractaudio [-s] [-F file_fmt] infile_base outfile\n       \
                     extractaudio [-s] [-F file_fmt] o_file [a_file] outfile";

/// Output sample rate; every codec decoded here runs its RTP clock at it.
const RATE: i64 = 8000;
/// A stream whose RTP timestamps disagree with the arrival times by more
/// than this (in samples) is re-anchored on arrival time: the sender reset
/// its timestamps, or they are garbage.
const MAX_TIMESTAMP_DRIFT: i64 = 2 * RATE;
/// Arrival times outside 0..this (seconds since the epoch) are garbage.
const MAX_ARRIVAL: f64 = 1e11;
/// Frames rendered per output block.
const BLOCK_FRAMES: usize = 8000;
/// Size of a WAV header, the larger of the two: it bounds the data size so
/// that the u32 size fields of either format hold it.
const WAV_HEADER_LEN: u64 = 44;
/// Size of the AU header: the 24 fixed bytes and an empty, NUL-filled
/// annotation. The format requires an annotation of at least 4 bytes (sox
/// warns "header size 24 is too small" without one); 8 keeps the samples
/// 8-byte aligned, as Python's `sunau` writer does.
const AU_HEADER_LEN: u32 = 32;

/// Output container.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Wav,
    Au,
}

/// What the command line asked for.
struct Options {
    stereo: bool,
    format: FileFormat,
    /// `.o` input first, then `.a`; either may be missing.
    inputs: [Option<String>; 2],
    output: String,
}

/// A command-line or input problem: the message is printed, the exit status is 1.
struct Failure(String);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some(opts) = parse_args(args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let mut loaded: [Option<Vec<RecordedPacket>>; 2] = [None, None];
    for (slot, input) in loaded.iter_mut().zip(opts.inputs.iter()) {
        if let Some(path) = input {
            let bytes = std::fs::read(path).map_err(|e| format!("extractaudio: {path}: {e}"))?;
            let packets =
                read_recording(&bytes).map_err(|e| format!("extractaudio: {path}: {e}"))?;
            *slot = Some(packets);
        }
    }
    let mut warnings = Warnings::default();
    let mut tracks: Vec<Track> = Vec::new();
    for (direction, packets) in loaded.iter().enumerate() {
        if let Some(packets) = packets {
            let name = opts.inputs[direction].as_deref().unwrap_or("");
            tracks.push(build_track(packets, name, &mut warnings));
        }
    }
    warnings.print();
    if tracks.iter().all(|t| t.pieces.is_empty()) {
        return Err(Failure("extractaudio: no decodable audio found".into()));
    }
    let channels = if opts.stereo { 2 } else { 1 };
    // With one input in stereo it goes to the channel its slot names.
    let directions: Vec<usize> = (0..2).filter(|&d| opts.inputs[d].is_some()).collect();
    let timeline = Timeline::new(&tracks)?;
    let data_len = timeline
        .frames
        .checked_mul(channels as u64 * 2)
        .filter(|&n| n <= u64::from(u32::MAX) - WAV_HEADER_LEN)
        .ok_or_else(|| {
            format!(
                "extractaudio: the recordings span {} s, more than one output file can hold",
                timeline.frames / RATE as u64
            )
        })?;
    let out_path = &opts.output;
    let result = File::create(out_path).and_then(|f| {
        let mut out = BufWriter::with_capacity(64 * 1024, f);
        write_header(&mut out, opts.format, channels, data_len as u32)?;
        render(
            &mut out,
            &timeline,
            &tracks,
            &directions,
            opts.stereo,
            opts.format,
        )?;
        out.flush()
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(out_path);
        return Err(Failure(format!("extractaudio: {out_path}: {e}")));
    }
    Ok(())
}

/// Parses the command line; `Ok(None)` means `-h`.
fn parse_args(args: &[String]) -> Result<Option<Options>, Failure> {
    let usage = || Failure(USAGE.to_string());
    let mut stereo = false;
    let mut format = FileFormat::Wav;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        for (k, c) in flags.char_indices() {
            match c {
                's' => stereo = true,
                'h' => return Ok(None),
                'F' => {
                    let inline = &flags[k + 1..];
                    let value = if inline.is_empty() {
                        i += 1;
                        args.get(i).ok_or_else(usage)?.as_str()
                    } else {
                        inline
                    };
                    format = match value.to_ascii_lowercase().as_str() {
                        "wav" => FileFormat::Wav,
                        "au" => FileFormat::Au,
                        _ => {
                            return Err(Failure(format!(
                                "extractaudio: unknown output file format {value:?} (wav or au)"
                            )))
                        }
                    };
                    break;
                }
                _ => {
                    return Err(Failure(format!(
                        "extractaudio: unknown option -{c}\n{USAGE}"
                    )))
                }
            }
        }
        i += 1;
    }
    let rest = &args[i..];
    let (inputs, output) = match rest {
        [base, out] => (resolve_base(base)?, out.clone()),
        [o, a, out] => ([Some(o.clone()), Some(a.clone())], out.clone()),
        _ => return Err(usage()),
    };
    Ok(Some(Options {
        stereo,
        format,
        inputs,
        output,
    }))
}

/// `BASE` names `BASE.o.rtp` and/or `BASE.a.rtp`, or else one file.
fn resolve_base(base: &str) -> Result<[Option<String>; 2], Failure> {
    let o = format!("{base}.o.rtp");
    let a = format!("{base}.a.rtp");
    let has_o = Path::new(&o).exists();
    let has_a = Path::new(&a).exists();
    if has_o || has_a {
        return Ok([has_o.then_some(o), has_a.then_some(a)]);
    }
    if Path::new(base).exists() {
        return Ok([Some(base.to_string()), None]);
    }
    Err(Failure(format!(
        "extractaudio: {base}: no such file, nor {o} or {a}"
    )))
}

/// Non-fatal findings, printed once each.
#[derive(Default)]
struct Warnings {
    /// (file, payload type) -> packets skipped.
    skipped: HashMap<(String, u8), u64>,
    not_rtp: HashMap<String, u64>,
}

impl Warnings {
    fn print(&self) {
        let mut skipped: Vec<_> = self.skipped.iter().collect();
        skipped.sort();
        for ((file, pt), n) in skipped {
            match codec_name(*pt) {
                Some(name) => eprintln!(
                    "extractaudio: {file}: payload type {pt} ({name}) not supported in this build; {n} packets skipped"
                ),
                None => eprintln!(
                    "extractaudio: {file}: payload type {pt} is not audio decoded here; {n} packets skipped"
                ),
            }
        }
        let mut not_rtp: Vec<_> = self.not_rtp.iter().collect();
        not_rtp.sort();
        for (file, n) in not_rtp {
            eprintln!(
                "extractaudio: {file}: {n} packets are not RTP or have unusable arrival times; skipped"
            );
        }
    }
}

/// Names of static audio payload types (RFC 3551) for messages.
fn codec_name(pt: u8) -> Option<&'static str> {
    Some(match pt {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        5 | 6 | 16 | 17 => "DVI4",
        7 => "LPC",
        8 => "PCMA",
        9 => "G722",
        10 | 11 => "L16",
        12 => "QCELP",
        14 => "MPA",
        15 => "G728",
        18 => "G729",
        _ => return None,
    })
}

/// A payload decoder; kept per stream so that codecs with state across
/// frames fit the same shape.
enum Decoder {
    Pcmu,
    Pcma,
}

impl Decoder {
    /// The decoder for `pt`, or `None` when this build cannot decode it.
    fn for_payload_type(pt: u8) -> Option<Decoder> {
        match pt {
            0 => Some(Decoder::Pcmu),
            8 => Some(Decoder::Pcma),
            _ => None,
        }
    }

    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        match self {
            Decoder::Pcmu => out.extend(payload.iter().map(|&b| ulaw_to_linear(b))),
            Decoder::Pcma => out.extend(payload.iter().map(|&b| alaw_to_linear(b))),
        }
    }
}

/// The fields of an RTP packet this tool needs.
struct Rtp<'a> {
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &'a [u8],
}

/// Parses an RTP packet (RFC 3550, 5.1); `None` for anything else.
fn parse_rtp(d: &[u8]) -> Option<Rtp<'_>> {
    let first = *d.first()?;
    if first >> 6 != 2 || d.len() < 12 {
        return None;
    }
    let pt = d[1] & 0x7f;
    // RTCP multiplexed on the same port (RFC 5761) would read as PT 72..76.
    if (72..=76).contains(&pt) {
        return None;
    }
    let mut start = 12 + usize::from(first & 0x0f) * 4;
    if first & 0x10 != 0 {
        let ext_words = u16::from_be_bytes([*d.get(start + 2)?, *d.get(start + 3)?]);
        start += 4 + usize::from(ext_words) * 4;
    }
    let mut end = d.len();
    if first & 0x20 != 0 {
        end = end.checked_sub(usize::from(*d.last()?))?;
    }
    Some(Rtp {
        pt,
        seq: u16::from_be_bytes([d[2], d[3]]),
        ts: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        payload: d.get(start..end)?,
    })
}

/// A run of decoded samples placed on the timeline (absolute sample index).
struct Piece {
    pos: i64,
    start: usize,
    len: usize,
}

/// Everything decoded from one input file.
struct Track {
    samples: Vec<i16>,
    pieces: Vec<Piece>,
}

/// One packet of a stream, in arrival order.
struct StreamPacket<'a> {
    arrival_pos: i64,
    ext_seq: i64,
    rtp: Rtp<'a>,
}

/// Decodes one input file: per SSRC, packets in sequence order, each placed
/// by its RTP timestamp relative to the stream's anchor on arrival time.
fn build_track(packets: &[RecordedPacket], file: &str, warnings: &mut Warnings) -> Track {
    // Per SSRC: its packets and the highest extended sequence number seen.
    let mut streams: Vec<(Vec<StreamPacket<'_>>, i64)> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    for p in packets {
        let Some(rtp) = parse_rtp(&p.data) else {
            *warnings.not_rtp.entry(file.to_string()).or_default() += 1;
            continue;
        };
        if !(p.arrival.is_finite() && (0.0..MAX_ARRIVAL).contains(&p.arrival)) {
            *warnings.not_rtp.entry(file.to_string()).or_default() += 1;
            continue;
        }
        let arrival_pos = (p.arrival * RATE as f64).round() as i64;
        let i = *index.entry(rtp.ssrc).or_insert_with(|| {
            streams.push((Vec::new(), i64::from(rtp.seq)));
            streams.len() - 1
        });
        let (stream, top) = &mut streams[i];
        // Extend the 16-bit sequence number relative to the highest seen.
        let ext_seq = *top + i64::from(rtp.seq.wrapping_sub(*top as u16) as i16);
        *top = (*top).max(ext_seq);
        stream.push(StreamPacket {
            arrival_pos,
            ext_seq,
            rtp,
        });
    }
    let mut track = Track {
        samples: Vec::new(),
        pieces: Vec::new(),
    };
    for (mut stream, _) in streams {
        stream.sort_by_key(|s| s.ext_seq);
        stream.dedup_by_key(|s| s.ext_seq);
        place_stream(&stream, file, warnings, &mut track);
    }
    track
}

fn place_stream(
    stream: &[StreamPacket<'_>],
    file: &str,
    warnings: &mut Warnings,
    track: &mut Track,
) {
    let mut decoder: Option<(u8, Decoder)> = None;
    // (position, timestamp) of the previous decoded packet, and where it ended.
    let mut anchor: Option<(i64, u32)> = None;
    let mut end_of_previous = i64::MIN;
    for p in stream {
        let pt = p.rtp.pt;
        if decoder.as_ref().map(|(t, _)| *t) != Some(pt) {
            match Decoder::for_payload_type(pt) {
                Some(d) => decoder = Some((pt, d)),
                None => {
                    *warnings.skipped.entry((file.to_string(), pt)).or_default() += 1;
                    continue;
                }
            }
        }
        let Some((_, dec)) = decoder.as_mut() else {
            continue;
        };
        let pos = match anchor {
            Some((prev_pos, prev_ts)) => {
                let predicted = prev_pos + i64::from(p.rtp.ts.wrapping_sub(prev_ts) as i32);
                if (predicted - p.arrival_pos).abs() > MAX_TIMESTAMP_DRIFT {
                    p.arrival_pos
                } else {
                    predicted
                }
            }
            None => p.arrival_pos,
        };
        anchor = Some((pos, p.rtp.ts));
        let start = track.samples.len();
        dec.decode(p.rtp.payload, &mut track.samples);
        let mut len = track.samples.len() - start;
        // A packet overlapping the previous one (a resent or re-timed frame)
        // must not double the audio: only its new part is kept.
        let overlap = usize::try_from(end_of_previous.saturating_sub(pos)).unwrap_or(0);
        let skip = overlap.min(len);
        len -= skip;
        if len > 0 {
            track.pieces.push(Piece {
                pos: pos + skip as i64,
                start: start + skip,
                len,
            });
            end_of_previous = pos + (skip + len) as i64;
        }
    }
}

/// Where the output starts and how long it is, common to both directions
/// so that they stay aligned by arrival time.
struct Timeline {
    base: i64,
    frames: u64,
}

impl Timeline {
    fn new(tracks: &[Track]) -> Result<Timeline, Failure> {
        let pieces = tracks.iter().flat_map(|t| t.pieces.iter());
        let base = pieces.clone().map(|p| p.pos).min().unwrap_or(0);
        let end = pieces.map(|p| p.pos + p.len as i64).max().unwrap_or(base);
        let frames = u64::try_from(end - base)
            .map_err(|_| Failure("extractaudio: inconsistent timestamps".into()))?;
        Ok(Timeline { base, frames })
    }
}

fn write_header(
    out: &mut impl Write,
    format: FileFormat,
    channels: u16,
    data_len: u32,
) -> io::Result<()> {
    let block_align = channels * 2;
    match format {
        FileFormat::Wav => {
            out.write_all(b"RIFF")?;
            out.write_all(&(36 + data_len).to_le_bytes())?;
            out.write_all(b"WAVEfmt ")?;
            out.write_all(&16u32.to_le_bytes())?;
            out.write_all(&1u16.to_le_bytes())?; // PCM
            out.write_all(&channels.to_le_bytes())?;
            out.write_all(&(RATE as u32).to_le_bytes())?;
            out.write_all(&(RATE as u32 * u32::from(block_align)).to_le_bytes())?;
            out.write_all(&block_align.to_le_bytes())?;
            out.write_all(&16u16.to_le_bytes())?;
            out.write_all(b"data")?;
            out.write_all(&data_len.to_le_bytes())
        }
        FileFormat::Au => {
            out.write_all(b".snd")?;
            out.write_all(&AU_HEADER_LEN.to_be_bytes())?;
            out.write_all(&data_len.to_be_bytes())?;
            out.write_all(&3u32.to_be_bytes())?; // 16-bit linear PCM
            out.write_all(&(RATE as u32).to_be_bytes())?;
            out.write_all(&u32::from(channels).to_be_bytes())?;
            out.write_all(&[0; AU_HEADER_LEN as usize - 24])
        }
    }
}

/// Mixes the placed pieces block by block into the output: stereo puts the
/// `.o` input on channel 1 and `.a` on channel 2; mono averages the two
/// inputs (as the classic tool did), or copies the only one with audio.
fn render(
    out: &mut impl Write,
    timeline: &Timeline,
    tracks: &[Track],
    directions: &[usize],
    stereo: bool,
    format: FileFormat,
) -> io::Result<()> {
    let channels = if stereo { 2 } else { 1 };
    // An input without any decodable audio (the empty `.a.rtp` of a
    // one-way call) is not a direction to average with: it would halve
    // the other one.
    let divisor = if stereo {
        1
    } else {
        tracks
            .iter()
            .filter(|t| !t.pieces.is_empty())
            .count()
            .max(1) as i32
    };
    let mut acc = vec![0i32; BLOCK_FRAMES * channels];
    let mut bytes = Vec::with_capacity(BLOCK_FRAMES * channels * 2);
    let mut first = vec![0usize; tracks.len()];
    let longest: Vec<i64> = tracks
        .iter()
        .map(|t| t.pieces.iter().map(|p| p.len as i64).max().unwrap_or(0))
        .collect();
    let mut ordered: Vec<Vec<&Piece>> = tracks.iter().map(|t| t.pieces.iter().collect()).collect();
    for o in &mut ordered {
        o.sort_by_key(|p| p.pos);
    }
    let end = timeline.base + timeline.frames as i64;
    let mut block_start = timeline.base;
    while block_start < end {
        let block_end = (block_start + BLOCK_FRAMES as i64).min(end);
        let frames = (block_end - block_start) as usize;
        acc[..frames * channels].fill(0);
        for (t, track) in tracks.iter().enumerate() {
            let channel = if stereo {
                directions.get(t).copied().unwrap_or(0)
            } else {
                0
            };
            let pieces = &ordered[t];
            while first[t] < pieces.len() && pieces[first[t]].pos + longest[t] <= block_start {
                first[t] += 1;
            }
            for p in &pieces[first[t]..] {
                if p.pos >= block_end {
                    break;
                }
                let from = p.pos.max(block_start);
                let to = (p.pos + p.len as i64).min(block_end);
                for at in from..to {
                    let sample = track
                        .samples
                        .get(p.start + (at - p.pos) as usize)
                        .copied()
                        .unwrap_or(0);
                    let frame = (at - block_start) as usize;
                    let slot = &mut acc[frame * channels + channel];
                    *slot = slot.saturating_add(i32::from(sample));
                }
            }
        }
        bytes.clear();
        for &v in &acc[..frames * channels] {
            let s = (v / divisor).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            match format {
                FileFormat::Wav => bytes.extend_from_slice(&s.to_le_bytes()),
                FileFormat::Au => bytes.extend_from_slice(&s.to_be_bytes()),
            }
        }
        out.write_all(&bytes)?;
        block_start = block_end;
    }
    Ok(())
}
