//! makeann: encodes 8 kHz mono speech into the per-codec prompt files that
//! the relay plays with the `P` command (`PROMPT.<payload type>`).
//!
//! Each output is raw codec frames back to back, exactly what the player
//! cuts into packets: G.711 one byte per sample, GSM 33 bytes per 160
//! samples, G.729 10 bytes per 80 samples. See makeann(1).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use rtpproxy::g711::{linear_to_alaw, linear_to_ulaw};
use rtpproxy::wav::{looks_like_wav, parse_wav};

#[cfg(feature = "g729")]
use rtpproxy::codec_g729::{G729Encoder, G729_FRAME_SAMPLES};
#[cfg(feature = "gsm")]
use rtpproxy::codec_gsm::GsmEncoder;

const USAGE: &str = "usage: makeann [-l limit [-L]] infile [outfile_template]";

/// Samples handed to the encoders at a time: one GSM frame, two G.729
/// frames, so only the very last block is ever short.
const BLOCK_SAMPLES: usize = 160;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    /// Samples to encode at most (`-l`); with `loop_input`, exactly.
    limit: Option<usize>,
    /// Repeat the input until `limit` samples are encoded (`-L`).
    loop_input: bool,
    infile: String,
    template: String,
}

/// Why the program ends before (or instead of) writing every prompt file.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// `-h`: print the usage and succeed.
    Help,
    /// A command-line mistake: the message, then the usage line.
    Usage(String),
    /// Anything else: one line.
    Fatal(String),
}

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(Stop::Usage(message)) => {
            eprintln!("makeann: {message}");
            eprintln!("{USAGE}");
            ExitCode::FAILURE
        }
        Err(Stop::Fatal(message)) => {
            eprintln!("makeann: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<OsString>) -> Result<(), Stop> {
    let options = parse_args(&args)?;
    let input = std::fs::read(&options.infile)
        .map_err(|e| Stop::Fatal(format!("can't read {}: {e}", options.infile)))?;
    let samples = decode_input(&options.infile, &input)?;

    let count = match options.limit {
        Some(limit) if options.loop_input => limit,
        Some(limit) => limit.min(samples.len()),
        None => samples.len(),
    };
    let source = samples.iter().copied().cycle().take(count);

    let mut writer = PromptWriter::create(&options.template)?;
    writer.encode_all(source).map_err(|(path, e)| {
        writer.discard();
        Stop::Fatal(format!("can't write {path}: {e}"))
    })
}

fn parse_args(args: &[OsString]) -> Result<Options, Stop> {
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            a.to_str().ok_or_else(|| {
                Stop::Usage(format!(
                    "argument is not valid UTF-8: {}",
                    a.to_string_lossy()
                ))
            })
        })
        .collect::<Result<_, _>>()?;

    let mut opts = getopts::Options::new();
    opts.optopt("l", "", "encode at most this many samples", "LIMIT");
    opts.optflag("L", "", "loop the input to fill the limit");
    opts.optflag("h", "", "print usage");
    opts.optflag("?", "", "print usage");
    let matches = opts.parse(&args).map_err(|fail| {
        Stop::Usage(match fail {
            getopts::Fail::UnrecognizedOption(o) => format!("unknown option {}", dashed(&o)),
            getopts::Fail::ArgumentMissing(o) => format!("option {} needs a value", dashed(&o)),
            getopts::Fail::OptionDuplicated(o) => format!("option {} given twice", dashed(&o)),
            other => other.to_string(),
        })
    })?;
    if matches.opt_present("h") || matches.opt_present("?") {
        return Err(Stop::Help);
    }

    let limit = match matches.opt_str("l") {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if limit > 0 => Some(limit),
            _ => {
                return Err(Stop::Usage(format!(
                    "-l: limit must be a positive number of samples, got '{text}'"
                )))
            }
        },
    };
    let loop_input = matches.opt_present("L");
    if loop_input && limit.is_none() {
        return Err(Stop::Usage("-L needs a limit (-l)".to_string()));
    }

    let (infile, template) = match matches.free.as_slice() {
        [infile] => (infile.clone(), infile.clone()),
        [infile, template] => (infile.clone(), template.clone()),
        [] => return Err(Stop::Usage("no input file".to_string())),
        [_, _, extra, ..] => return Err(Stop::Usage(format!("unexpected argument '{extra}'"))),
    };
    Ok(Options {
        limit,
        loop_input,
        infile,
        template,
    })
}

/// Puts back the dash getopts strips from an option name.
fn dashed(name: &str) -> String {
    if name.chars().count() == 1 {
        format!("-{name}")
    } else {
        format!("--{name}")
    }
}

/// Turns the input file's bytes into samples: a WAV file must hold 8 kHz
/// mono 16-bit PCM; anything else is taken as raw 16-bit little-endian PCM.
fn decode_input(path: &str, input: &[u8]) -> Result<Vec<i16>, Stop> {
    let pcm = if looks_like_wav(input) {
        let wav = parse_wav(input).map_err(|e| Stop::Fatal(format!("{path}: {e}")))?;
        if !wav.format.is_telephony_pcm() {
            return Err(Stop::Fatal(format!(
                "{path}: {}, need 8000 Hz mono 16-bit PCM",
                wav.format
            )));
        }
        wav.data
    } else {
        input
    };
    let pairs = pcm.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        eprintln!("makeann: {path}: ignoring the odd byte at the end");
    }
    let samples: Vec<i16> = pairs
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    if samples.is_empty() {
        return Err(Stop::Fatal(format!("{path}: no audio samples")));
    }
    Ok(samples)
}

/// One codec's encoder, with whatever history it keeps between blocks.
enum Encoder {
    Pcmu,
    Pcma,
    #[cfg(feature = "gsm")]
    Gsm(GsmEncoder),
    #[cfg(feature = "g729")]
    G729(G729Encoder),
}

impl Encoder {
    /// Every codec this build can write, each with a fresh encoder.
    fn all() -> Result<Vec<Encoder>, Stop> {
        Ok(vec![
            Encoder::Pcmu,
            Encoder::Pcma,
            #[cfg(feature = "gsm")]
            Encoder::Gsm(
                GsmEncoder::new().ok_or_else(|| Stop::Fatal("can't create GSM encoder".into()))?,
            ),
            #[cfg(feature = "g729")]
            Encoder::G729(
                G729Encoder::new()
                    .ok_or_else(|| Stop::Fatal("can't create G.729 encoder".into()))?,
            ),
        ])
    }

    /// The RTP payload type, which is also the output file's suffix.
    fn payload_type(&self) -> u8 {
        match self {
            Encoder::Pcmu => 0,
            Encoder::Pcma => 8,
            #[cfg(feature = "gsm")]
            Encoder::Gsm(_) => 3,
            #[cfg(feature = "g729")]
            Encoder::G729(_) => 18,
        }
    }

    /// Encodes up to `BLOCK_SAMPLES` samples into `out`, returning the bytes
    /// written. The frame codecs pad a short (final) block with silence: the
    /// player only sends whole frames.
    fn encode(&mut self, block: &[i16], out: &mut [u8; BLOCK_SAMPLES]) -> io::Result<usize> {
        match self {
            Encoder::Pcmu => Ok(companded(block, out, linear_to_ulaw)),
            Encoder::Pcma => Ok(companded(block, out, linear_to_alaw)),
            #[cfg(feature = "gsm")]
            Encoder::Gsm(encoder) => {
                let frame = encoder.encode(&padded(block));
                out[..frame.len()].copy_from_slice(&frame);
                Ok(frame.len())
            }
            #[cfg(feature = "g729")]
            Encoder::G729(encoder) => {
                let samples = padded(block);
                let frames = block.len().div_ceil(G729_FRAME_SAMPLES);
                let mut written = 0;
                for frame in samples.chunks_exact(G729_FRAME_SAMPLES).take(frames) {
                    let mut input = [0i16; G729_FRAME_SAMPLES];
                    input.copy_from_slice(frame);
                    let bits = encoder
                        .encode(&input)
                        .ok_or_else(|| io::Error::other("G.729 encoder returned a short frame"))?;
                    out[written..written + bits.len()].copy_from_slice(&bits);
                    written += bits.len();
                }
                Ok(written)
            }
        }
    }
}

fn companded(block: &[i16], out: &mut [u8; BLOCK_SAMPLES], law: fn(i16) -> u8) -> usize {
    for (code, &sample) in out.iter_mut().zip(block) {
        *code = law(sample);
    }
    block.len().min(BLOCK_SAMPLES)
}

#[cfg(any(feature = "gsm", feature = "g729"))]
fn padded(block: &[i16]) -> [i16; BLOCK_SAMPLES] {
    let mut samples = [0i16; BLOCK_SAMPLES];
    for (slot, &sample) in samples.iter_mut().zip(block) {
        *slot = sample;
    }
    samples
}

/// One prompt file being written, with the encoder that feeds it.
struct Output {
    encoder: Encoder,
    path: String,
    file: BufWriter<File>,
}

/// A write failure: the file and what went wrong.
type WriteError = (String, io::Error);

/// Every output of one run, fed the same sample blocks.
struct PromptWriter {
    outputs: Vec<Output>,
}

impl PromptWriter {
    /// Creates the encoders, then `TEMPLATE.<pt>` for each; if any of that
    /// fails, the files already created are removed again.
    fn create(template: &str) -> Result<Self, Stop> {
        let mut writer = PromptWriter {
            outputs: Vec::new(),
        };
        for encoder in Encoder::all()? {
            let path = format!("{template}.{}", encoder.payload_type());
            match File::create(&path) {
                Ok(file) => writer.outputs.push(Output {
                    encoder,
                    path,
                    file: BufWriter::new(file),
                }),
                Err(e) => {
                    writer.discard();
                    return Err(Stop::Fatal(format!("can't open {path} for writing: {e}")));
                }
            }
        }
        Ok(writer)
    }

    /// Encodes every sample of `source` into every output and flushes them.
    fn encode_all(&mut self, mut source: impl Iterator<Item = i16>) -> Result<(), WriteError> {
        let mut block = [0i16; BLOCK_SAMPLES];
        let mut encoded = [0u8; BLOCK_SAMPLES];
        loop {
            let filled = block
                .iter_mut()
                .zip(&mut source)
                .map(|(slot, sample)| *slot = sample)
                .count();
            if filled == 0 {
                break;
            }
            for output in &mut self.outputs {
                let failed = |e| (output.path.clone(), e);
                let len = output
                    .encoder
                    .encode(&block[..filled], &mut encoded)
                    .map_err(failed)?;
                output.file.write_all(&encoded[..len]).map_err(failed)?;
            }
        }
        for output in &mut self.outputs {
            output.file.flush().map_err(|e| (output.path.clone(), e))?;
        }
        Ok(())
    }

    /// Removes every output, so no half-written prompt is ever played.
    fn discard(&mut self) {
        for output in self.outputs.drain(..) {
            drop(output.file);
            let _ = std::fs::remove_file(&output.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn template_defaults_to_infile() {
        let options = parse_args(&args(&["hold.raw"])).unwrap();
        assert_eq!(options.template, "hold.raw");
        assert_eq!(options.limit, None);
        assert!(!options.loop_input);
    }

    #[test]
    fn limit_and_loop() {
        let options = parse_args(&args(&["-l", "8000", "-L", "in", "out"])).unwrap();
        assert_eq!(options.limit, Some(8000));
        assert!(options.loop_input);
        assert_eq!(options.template, "out");
    }

    #[test]
    fn bad_options_name_the_option() {
        let usage = |list: &[&str]| match parse_args(&args(list)) {
            Err(Stop::Usage(message)) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(usage(&["-x", "in"]), "unknown option -x");
        assert_eq!(usage(&["in", "-l"]), "option -l needs a value");
        assert!(usage(&["-l", "ten", "in"]).starts_with("-l: "));
        assert!(usage(&["-l", "0", "in"]).starts_with("-l: "));
        assert_eq!(usage(&["-L", "in"]), "-L needs a limit (-l)");
        assert_eq!(usage(&[]), "no input file");
        assert_eq!(usage(&["a", "b", "c"]), "unexpected argument 'c'");
    }

    #[test]
    fn help_is_not_an_error() {
        assert_eq!(parse_args(&args(&["-h"])), Err(Stop::Help));
    }

    #[test]
    fn raw_input_is_little_endian() {
        let samples = decode_input("x", &[0x34, 0x12, 0xff, 0xff]).unwrap();
        assert_eq!(samples, [0x1234, -1]);
    }
}
