//! Runs the built `makeann` on generated audio and checks the prompt files it
//! writes.

mod common;

use common::TempDir;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rtpproxy::g711::{alaw_to_linear, ulaw_to_linear};

const MAKEANN: &str = env!("CARGO_BIN_EXE_makeann");

/// `count` samples of a 1 kHz sine at 8 kHz, about -6 dBFS.
fn tone(count: usize) -> Vec<i16> {
    (0..count)
        .map(|i| {
            let phase = i as f64 * std::f64::consts::TAU * 1000.0 / 8000.0;
            (phase.sin() * 16000.0).round() as i16
        })
        .collect()
}

fn raw_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// A canonical WAV file, with a LIST chunk of odd size before `data` so the
/// reader has to skip something.
fn wav_bytes(samples: &[i16], rate: u32, channels: u16) -> Vec<u8> {
    let data = raw_bytes(samples);
    let list = b"INFOISFT\x05\0\0\0test\0";
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&1u16.to_le_bytes());
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&rate.to_le_bytes());
    fmt.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
    fmt.extend_from_slice(&(2 * channels).to_le_bytes());
    fmt.extend_from_slice(&16u16.to_le_bytes());

    let mut body = b"WAVE".to_vec();
    for (id, chunk) in [
        (b"fmt ", &fmt[..]),
        (b"LIST", &list[..]),
        (b"data", &data[..]),
    ] {
        body.extend_from_slice(id);
        body.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        body.extend_from_slice(chunk);
        if chunk.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend_from_slice(&body);
    file
}

fn makeann(args: &[&Path]) -> Output {
    Command::new(MAKEANN).args(args).output().unwrap()
}

fn makeann_ok(args: &[&Path]) {
    let out = makeann(args);
    assert!(
        out.status.success(),
        "makeann {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn snr_db(reference: &[i16], decoded: &[i16]) -> f64 {
    assert_eq!(reference.len(), decoded.len());
    let (signal, noise) = reference
        .iter()
        .zip(decoded)
        .fold((0.0, 0.0), |(s, n), (&r, &d)| {
            let (r, d) = (f64::from(r), f64::from(d));
            (s + r * r, n + (r - d) * (r - d))
        });
    10.0 * (signal / noise).log10()
}

fn assert_g711_faithful(template: &Path, input: &[i16]) {
    let pcmu = fs::read(prompt_file(template, 0)).unwrap();
    let pcma = fs::read(prompt_file(template, 8)).unwrap();
    let from_pcmu: Vec<i16> = pcmu.iter().map(|&c| ulaw_to_linear(c)).collect();
    let from_pcma: Vec<i16> = pcma.iter().map(|&c| alaw_to_linear(c)).collect();
    let (u, a) = (snr_db(input, &from_pcmu), snr_db(input, &from_pcma));
    assert!(u > 35.0, "PCMU SNR {u:.1} dB");
    assert!(a > 35.0, "PCMA SNR {a:.1} dB");
}

/// `TEMPLATE.<pt>`, the file makeann writes for one payload type.
fn prompt_file(template: &Path, payload_type: u8) -> PathBuf {
    let mut name = template.as_os_str().to_owned();
    name.push(format!(".{payload_type}"));
    PathBuf::from(name)
}

fn file_len(path: PathBuf) -> u64 {
    fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

#[test]
fn raw_tone_encodes_to_faithful_g711() {
    let dir = TempDir::new("raw");
    let input = tone(8000);
    let infile = dir.join("tone.raw");
    fs::write(&infile, raw_bytes(&input)).unwrap();

    makeann_ok(&[&infile]);
    assert_g711_faithful(&infile, &input);
}

#[test]
fn wav_tone_gives_the_same_files_as_raw() {
    let dir = TempDir::new("wav");
    let input = tone(8000);
    let raw = dir.join("tone.raw");
    let wav = dir.join("tone.wav");
    fs::write(&raw, raw_bytes(&input)).unwrap();
    fs::write(&wav, wav_bytes(&input, 8000, 1)).unwrap();

    let from_wav = dir.join("fromwav.raw");
    makeann_ok(&[&raw]);
    makeann_ok(&[&wav, &from_wav]);
    assert_g711_faithful(&from_wav, &input);
    for pt in [0, 8, 3, 18] {
        let a = fs::read(prompt_file(&raw, pt));
        let b = fs::read(prompt_file(&from_wav, pt));
        match (a, b) {
            (Ok(a), Ok(b)) => assert!(a == b, "payload type {pt} differs"),
            (Err(_), Err(_)) => {}
            _ => panic!("payload type {pt} written for only one input"),
        }
    }
}

#[test]
fn limit_truncates_and_loop_repeats() {
    let dir = TempDir::new("limit");
    let infile = dir.join("in.raw");
    fs::write(&infile, raw_bytes(&tone(1000))).unwrap();
    let short = dir.join("short");
    let long = dir.join("long");
    let capped = dir.join("capped");
    let limit = Path::new("-l");
    let looped = Path::new("-L");

    makeann_ok(&[limit, Path::new("500"), &infile, &short]);
    assert_eq!(file_len(dir.join("short.0")), 500);
    assert_eq!(file_len(dir.join("short.8")), 500);

    makeann_ok(&[limit, Path::new("2500"), looped, &infile, &long]);
    let pcmu = fs::read(dir.join("long.0")).unwrap();
    assert_eq!(pcmu.len(), 2500);
    assert_eq!(pcmu[1000..2000], pcmu[..1000]);
    assert_eq!(pcmu[2000..], pcmu[..500]);
    assert_eq!(file_len(dir.join("long.8")), 2500);

    // Without -L the input simply runs out.
    makeann_ok(&[limit, Path::new("2500"), &infile, &capped]);
    assert_eq!(file_len(dir.join("capped.0")), 1000);

    // 2500 samples: 16 GSM frames of 160, 32 G.729 frames of 80.
    #[cfg(feature = "gsm")]
    {
        assert_eq!(file_len(dir.join("long.3")), 16 * 33);
        assert_eq!(file_len(dir.join("short.3")), 4 * 33);
    }
    #[cfg(feature = "g729")]
    {
        assert_eq!(file_len(dir.join("long.18")), 32 * 10);
        assert_eq!(file_len(dir.join("short.18")), 7 * 10);
    }
    #[cfg(not(feature = "gsm"))]
    assert!(!dir.join("long.3").exists());
    #[cfg(not(feature = "g729"))]
    assert!(!dir.join("long.18").exists());
}

#[cfg(any(feature = "gsm", feature = "g729"))]
#[test]
fn frame_codecs_write_whole_frames() {
    let dir = TempDir::new("frames");
    let infile = dir.join("in.raw");
    // One second and a bit: the tail must be padded to a whole frame.
    fs::write(&infile, raw_bytes(&tone(8000 + 10))).unwrap();
    makeann_ok(&[&infile]);
    #[cfg(feature = "gsm")]
    {
        let gsm = fs::read(dir.join("in.raw.3")).unwrap();
        assert_eq!(gsm.len(), 51 * 33);
        // Every packed GSM frame starts with the magic nibble 0xD.
        assert!(gsm.chunks(33).all(|frame| frame[0] >> 4 == 0xD));
    }
    #[cfg(feature = "g729")]
    assert_eq!(file_len(dir.join("in.raw.18")), 101 * 10);
}

#[test]
fn refuses_16khz_wav() {
    let dir = TempDir::new("wide");
    let infile = dir.join("wide.wav");
    fs::write(&infile, wav_bytes(&tone(1600), 16000, 1)).unwrap();

    let out = makeann(&[&infile]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "makeann: {}: 16000 Hz mono 16-bit PCM, need 8000 Hz mono 16-bit PCM",
            infile.display()
        )
    );
    assert!(!dir.join("wide.wav.0").exists());
}

#[test]
fn refuses_stereo_and_truncated_wav() {
    let dir = TempDir::new("badwav");
    let stereo = dir.join("stereo.wav");
    fs::write(&stereo, wav_bytes(&tone(1600), 44100, 2)).unwrap();
    let out = makeann(&[&stereo]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("44100 Hz stereo"));

    let cut = dir.join("cut.wav");
    let mut bytes = wav_bytes(&tone(1600), 8000, 1);
    bytes.truncate(bytes.len() - 100);
    fs::write(&cut, bytes).unwrap();
    let out = makeann(&[&cut]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("truncated WAV"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn bad_options_exit_1_with_usage() {
    let dir = TempDir::new("opts");
    let infile = dir.join("in.raw");
    fs::write(&infile, raw_bytes(&tone(160))).unwrap();
    for (args, expected) in [
        (vec![Path::new("-x"), &infile], "makeann: unknown option -x"),
        (
            vec![Path::new("-L"), &infile],
            "makeann: -L needs a limit (-l)",
        ),
        (
            vec![Path::new("-l"), Path::new("many"), &infile],
            "makeann: -l: limit must be a positive number of samples, got 'many'",
        ),
    ] {
        let out = makeann(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines,
            [
                expected,
                "usage: makeann [-l limit [-L]] infile [outfile_template]"
            ]
        );
    }
    assert!(!dir.join("in.raw.0").exists());
}
