//! WAV (RIFF/WAVE) reading for prompt sources: a pure parser from the file's
//! bytes to its declared format and a view of its sample data.
//!
//! The parser never panics and never allocates, whatever the input, so it
//! can be fed arbitrary bytes (a fuzz target is one call).

use std::fmt;

/// `fmt ` format tag of integer PCM.
pub const WAVE_FORMAT_PCM: u16 = 0x0001;
/// `fmt ` format tag of IEEE floating point samples.
pub const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
/// `fmt ` format tag of G.711 A-law.
pub const WAVE_FORMAT_ALAW: u16 = 0x0006;
/// `fmt ` format tag of G.711 µ-law.
pub const WAVE_FORMAT_MULAW: u16 = 0x0007;
/// `fmt ` format tag whose real format is the first two bytes of a GUID.
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Bytes of the classic `fmt ` body every format carries.
const FMT_MIN_SIZE: u32 = 16;
/// Bytes of an extensible `fmt ` body, up to the end of the sub-format GUID.
const FMT_EXTENSIBLE_SIZE: u32 = 40;
/// Offset of the sub-format tag inside an extensible `fmt ` body.
const FMT_SUBFORMAT_OFFSET: usize = 24;

/// Chunk size that streaming writers leave when they cannot seek back to
/// fill it in; it means "until the end of the file".
const SIZE_UNKNOWN: u32 = 0xFFFF_FFFF;

/// The audio format a WAV file declares in its `fmt ` chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// Format tag (`WAVE_FORMAT_*`); an extensible header's sub-format is
    /// reported here in its place.
    pub format_tag: u16,
    /// Interleaved channels per frame.
    pub channels: u16,
    /// Frames per second.
    pub sample_rate: u32,
    /// Bits per sample of one channel as stored.
    pub bits_per_sample: u16,
}

impl WavFormat {
    /// Whether this is what telephony prompts are made from: 8 kHz mono
    /// 16-bit integer PCM.
    pub fn is_telephony_pcm(&self) -> bool {
        self.format_tag == WAVE_FORMAT_PCM
            && self.channels == 1
            && self.sample_rate == 8000
            && self.bits_per_sample == 16
    }
}

/// Reads like "44100 Hz stereo 16-bit PCM", for error messages.
impl fmt::Display for WavFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz ", self.sample_rate)?;
        match self.channels {
            1 => f.write_str("mono")?,
            2 => f.write_str("stereo")?,
            n => write!(f, "{n} channels")?,
        }
        let bits = self.bits_per_sample;
        match self.format_tag {
            WAVE_FORMAT_PCM => write!(f, " {bits}-bit PCM"),
            WAVE_FORMAT_IEEE_FLOAT => write!(f, " {bits}-bit float"),
            WAVE_FORMAT_ALAW => f.write_str(" A-law"),
            WAVE_FORMAT_MULAW => f.write_str(" mu-law"),
            tag => write!(f, " {bits}-bit format 0x{tag:04x}"),
        }
    }
}

/// A parsed WAV file: its declared format and its `data` chunk's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wav<'a> {
    /// The format from the `fmt ` chunk.
    pub format: WavFormat,
    /// The sample bytes, exactly as stored (interleaved, little-endian).
    pub data: &'a [u8],
}

/// Why bytes could not be read as a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavError {
    /// No `RIFF....WAVE` header.
    NotWav,
    /// A WAVE variant this reader does not handle (`RIFX`, `RF64`).
    UnsupportedContainer([u8; 4]),
    /// The file ends inside a chunk header, before `fmt ` and `data` were found.
    TruncatedHeader {
        /// Byte offset where the incomplete chunk header starts.
        offset: usize,
    },
    /// A chunk declares more bytes than the file has left.
    Truncated {
        /// The chunk's four-byte id.
        chunk: [u8; 4],
        /// Bytes the chunk header declares.
        declared: u32,
        /// Bytes actually left in the file.
        present: usize,
    },
    /// The `fmt ` chunk is too short for the format it declares.
    ShortFmt {
        /// The `fmt ` chunk's size.
        size: u32,
        /// The size its format needs.
        needed: u32,
    },
    /// No `fmt ` chunk anywhere in the file.
    MissingFmt,
    /// No `data` chunk anywhere in the file.
    MissingData,
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WavError::NotWav => f.write_str("not a WAV file (no RIFF/WAVE header)"),
            WavError::UnsupportedContainer(id) => {
                write!(f, "{} WAV files are not supported", ChunkId(id))
            }
            WavError::TruncatedHeader { offset } => {
                write!(f, "truncated WAV: file ends inside a chunk header at byte {offset}")
            }
            WavError::Truncated {
                chunk,
                declared,
                present,
            } => write!(
                f,
                "truncated WAV: '{}' chunk declares {declared} bytes but only {present} are present",
                ChunkId(chunk)
            ),
            WavError::ShortFmt { size, needed } => write!(
                f,
                "malformed WAV: 'fmt ' chunk is {size} bytes, its format needs {needed}"
            ),
            WavError::MissingFmt => f.write_str("malformed WAV: no 'fmt ' chunk"),
            WavError::MissingData => f.write_str("malformed WAV: no 'data' chunk"),
        }
    }
}

impl std::error::Error for WavError {}

/// Prints a chunk id with anything unprintable shown as `?`, so a corrupt
/// file cannot put control characters on the terminal.
struct ChunkId([u8; 4]);

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Whether the bytes start like a WAV file of any flavour (`RIFF`, `RIFX` or
/// `RF64` form of type `WAVE`); raw PCM practically never does.
pub fn looks_like_wav(bytes: &[u8]) -> bool {
    matches!(
        bytes.get(..12),
        Some([
            b'R',
            b'I',
            b'F',
            b'F' | b'X',
            _,
            _,
            _,
            _,
            b'W',
            b'A',
            b'V',
            b'E'
        ]) | Some([b'R', b'F', b'6', b'4', _, _, _, _, b'W', b'A', b'V', b'E'])
    )
}

/// Parses a whole WAV file: finds its `fmt ` and `data` chunks, skipping
/// any others.
///
/// The RIFF form size is ignored: writers that stream often leave it wrong,
/// and every chunk is bounds-checked against the real file length anyway.
pub fn parse_wav(bytes: &[u8]) -> Result<Wav<'_>, WavError> {
    if !looks_like_wav(bytes) {
        return Err(WavError::NotWav);
    }
    let form = read_id(bytes, 0).ok_or(WavError::NotWav)?;
    if &form != b"RIFF" {
        return Err(WavError::UnsupportedContainer(form));
    }

    let mut format = None;
    let mut data = None;
    let mut offset = 12;
    while format.is_none() || data.is_none() {
        if offset >= bytes.len() {
            break;
        }
        let (id, size) = match (read_id(bytes, offset), read_u32(bytes, offset + 4)) {
            (Some(id), Some(size)) => (id, size),
            _ => return Err(WavError::TruncatedHeader { offset }),
        };
        let body_start = offset + 8;
        let present = bytes.len() - body_start;
        let body = if &id == b"data" && size == SIZE_UNKNOWN {
            &bytes[body_start..]
        } else {
            let end = body_start
                .checked_add(size as usize)
                .filter(|&end| end <= bytes.len())
                .ok_or(WavError::Truncated {
                    chunk: id,
                    declared: size,
                    present,
                })?;
            &bytes[body_start..end]
        };
        match &id {
            b"fmt " if format.is_none() => format = Some(parse_fmt(body)?),
            b"data" if data.is_none() => data = Some(body),
            _ => {}
        }
        // Chunk bodies are padded to even length; the pad byte of the last
        // chunk is often missing, which the loop bound tolerates.
        offset = body_start
            .saturating_add(body.len())
            .saturating_add(body.len() & 1);
    }
    match (format, data) {
        (Some(format), Some(data)) => Ok(Wav { format, data }),
        (None, _) => Err(WavError::MissingFmt),
        (_, None) => Err(WavError::MissingData),
    }
}

/// Reads the format out of a `fmt ` chunk body.
fn parse_fmt(body: &[u8]) -> Result<WavFormat, WavError> {
    let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let short = |needed| WavError::ShortFmt { size, needed };
    let field16 = |at| read_u16(body, at).ok_or(short(FMT_MIN_SIZE));
    let mut format_tag = field16(0)?;
    let channels = field16(2)?;
    let sample_rate = read_u32(body, 4).ok_or(short(FMT_MIN_SIZE))?;
    let bits_per_sample = field16(14)?;
    if format_tag == WAVE_FORMAT_EXTENSIBLE {
        format_tag = read_u16(body, FMT_SUBFORMAT_OFFSET).ok_or(short(FMT_EXTENSIBLE_SIZE))?;
        if body.len() < FMT_EXTENSIBLE_SIZE as usize {
            return Err(short(FMT_EXTENSIBLE_SIZE));
        }
    }
    Ok(WavFormat {
        format_tag,
        channels,
        sample_rate,
        bits_per_sample,
    })
}

fn read_id(bytes: &[u8], at: usize) -> Option<[u8; 4]> {
    bytes.get(at..at.checked_add(4)?)?.try_into().ok()
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_le_bytes(b))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(read_id(bytes, at)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = id.to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
        if body.len() % 2 == 1 {
            out.push(0);
        }
        out
    }

    fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut b = Vec::new();
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        b.extend_from_slice(&align.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b
    }

    fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        out.extend_from_slice(&body);
        out
    }

    fn telephony_wav(data: &[u8]) -> Vec<u8> {
        riff(&[
            chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)),
            chunk(b"data", data),
        ])
    }

    #[test]
    fn reads_plain_telephony_wav() {
        let file = telephony_wav(&[1, 0, 2, 0, 0xff, 0xff]);
        let wav = parse_wav(&file).unwrap();
        assert!(wav.format.is_telephony_pcm());
        assert_eq!(wav.data, &[1, 0, 2, 0, 0xff, 0xff]);
        assert_eq!(wav.format.to_string(), "8000 Hz mono 16-bit PCM");
    }

    #[test]
    fn skips_unknown_and_odd_sized_chunks() {
        let file = riff(&[
            chunk(b"LIST", b"INFOISFT\x03\0\0\0ab\0"),
            chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)),
            chunk(b"fact", &[4, 0, 0, 0]),
            chunk(b"junk", &[0; 7]),
            chunk(b"data", &[9, 0, 8, 0]),
            chunk(b"cue ", &[0; 3]),
        ]);
        let wav = parse_wav(&file).unwrap();
        assert_eq!(wav.data, &[9, 0, 8, 0]);
    }

    #[test]
    fn fmt_may_follow_data() {
        let file = riff(&[
            chunk(b"data", &[5, 0]),
            chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)),
        ]);
        assert_eq!(parse_wav(&file).unwrap().data, &[5, 0]);
    }

    #[test]
    fn odd_data_without_trailing_pad_byte_is_accepted() {
        let mut file = telephony_wav(&[1, 2, 3]);
        file.pop();
        assert_eq!(parse_wav(&file).unwrap().data, &[1, 2, 3]);
    }

    #[test]
    fn reports_foreign_formats() {
        let file = riff(&[
            chunk(b"fmt ", &fmt_body(1, 2, 44100, 16)),
            chunk(b"data", &[]),
        ]);
        let wav = parse_wav(&file).unwrap();
        assert!(!wav.format.is_telephony_pcm());
        assert_eq!(wav.format.to_string(), "44100 Hz stereo 16-bit PCM");

        let float = fmt_body(WAVE_FORMAT_IEEE_FLOAT, 6, 48000, 32);
        let file = riff(&[chunk(b"fmt ", &float), chunk(b"data", &[])]);
        assert_eq!(
            parse_wav(&file).unwrap().format.to_string(),
            "48000 Hz 6 channels 32-bit float"
        );
        let alaw = fmt_body(WAVE_FORMAT_ALAW, 1, 8000, 8);
        let file = riff(&[chunk(b"fmt ", &alaw), chunk(b"data", &[])]);
        assert_eq!(
            parse_wav(&file).unwrap().format.to_string(),
            "8000 Hz mono A-law"
        );
    }

    #[test]
    fn extensible_header_reports_its_sub_format() {
        let mut body = fmt_body(WAVE_FORMAT_EXTENSIBLE, 1, 8000, 16);
        body.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        body.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        body.extend_from_slice(&4u32.to_le_bytes()); // channel mask
        body.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0x10, 0]); // PCM GUID head
        body.extend_from_slice(&[0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71]);
        let file = riff(&[chunk(b"fmt ", &body), chunk(b"data", &[0, 0])]);
        assert!(parse_wav(&file).unwrap().format.is_telephony_pcm());

        body.truncate(30);
        let file = riff(&[chunk(b"fmt ", &body), chunk(b"data", &[0, 0])]);
        assert_eq!(
            parse_wav(&file),
            Err(WavError::ShortFmt {
                size: 30,
                needed: 40
            })
        );
    }

    #[test]
    fn truncated_data_is_refused_with_sizes() {
        let mut file = telephony_wav(&[0; 100]);
        file.truncate(file.len() - 40);
        let err = parse_wav(&file).unwrap_err();
        assert_eq!(
            err,
            WavError::Truncated {
                chunk: *b"data",
                declared: 100,
                present: 60
            }
        );
        assert_eq!(
            err.to_string(),
            "truncated WAV: 'data' chunk declares 100 bytes but only 60 are present"
        );
    }

    #[test]
    fn streamed_data_size_means_rest_of_file() {
        let mut file = telephony_wav(&[1, 0, 2, 0]);
        let at = file.len() - 8;
        file[at..at + 4].copy_from_slice(&SIZE_UNKNOWN.to_le_bytes());
        assert_eq!(parse_wav(&file).unwrap().data, &[1, 0, 2, 0]);
    }

    #[test]
    fn missing_chunks_and_headers() {
        assert_eq!(parse_wav(b"RIFF\0\0\0\0WAVE"), Err(WavError::MissingFmt));
        let only_fmt = riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16))]);
        assert_eq!(parse_wav(&only_fmt), Err(WavError::MissingData));
        let mut cut = only_fmt.clone();
        cut.extend_from_slice(b"dat");
        assert_eq!(
            parse_wav(&cut),
            Err(WavError::TruncatedHeader {
                offset: only_fmt.len()
            })
        );
        let short_fmt = riff(&[chunk(b"fmt ", &[1, 0, 1, 0]), chunk(b"data", &[])]);
        assert_eq!(
            parse_wav(&short_fmt),
            Err(WavError::ShortFmt {
                size: 4,
                needed: 16
            })
        );
    }

    #[test]
    fn detects_flavours() {
        assert!(!looks_like_wav(b"RIFF\0\0\0\0AVI "));
        assert!(!looks_like_wav(&[0u8; 64]));
        assert!(!looks_like_wav(b"RIFF"));
        assert_eq!(parse_wav(&[1, 2, 3]), Err(WavError::NotWav));
        let rifx = b"RIFX\0\0\0\x04WAVE";
        assert!(looks_like_wav(rifx));
        let err = parse_wav(rifx).unwrap_err();
        assert_eq!(err, WavError::UnsupportedContainer(*b"RIFX"));
        assert_eq!(err.to_string(), "RIFX WAV files are not supported");
        assert_eq!(
            parse_wav(b"RF64\xff\xff\xff\xffWAVE"),
            Err(WavError::UnsupportedContainer(*b"RF64"))
        );
    }

    #[test]
    fn chunk_ids_are_printed_safely() {
        let mut file = telephony_wav(&[]);
        file.extend_from_slice(b"\x1b[2J\xff\xff\xff\x7f");
        // The file is complete before the junk, so it parses...
        assert!(parse_wav(&file).is_ok());
        // ...but a corrupt chunk before `data` is reported without escapes.
        let bad = riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16))]);
        let mut bad = bad;
        bad.extend_from_slice(b"\x1b[2J\xff\xff\xff\x7f");
        let msg = parse_wav(&bad).unwrap_err().to_string();
        assert!(msg.contains("'?[2J'"), "{msg}");
    }

    #[test]
    fn any_prefix_or_corruption_is_an_error_not_a_panic() {
        let mut extra = fmt_body(WAVE_FORMAT_EXTENSIBLE, 1, 8000, 16);
        extra.extend_from_slice(&[0; 24]);
        let file = riff(&[
            chunk(b"LIST", &[7; 9]),
            chunk(b"fmt ", &extra),
            chunk(b"data", &[3; 33]),
        ]);
        for len in 0..file.len() {
            let _ = parse_wav(&file[..len]);
        }
        // A small deterministic generator; no dependency needed for this.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut copy = file.clone();
            let at = 12 + (state as usize % (copy.len() - 12));
            copy[at] = (state >> 32) as u8;
            let _ = parse_wav(&copy);
        }
    }
}
