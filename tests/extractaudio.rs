//! extractaudio turns synthetic recordings of a known tone back into audio
//! with the call's timing.

mod common;

use common::TempDir;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rtpproxy::g711::linear_to_ulaw;
use rtpproxy::rtpp_record::{RecordFile, RecordFormat};

const RATE: usize = 8000;
const PACKET: usize = 160;
/// The call starts here (seconds since the epoch).
const T0_MS: u64 = 1_700_000_000_000;
/// The answerer starts this many packets after the offerer.
const A_DELAY_PACKETS: usize = 25;
const PACKETS: usize = 100;
/// Packets of the answerer lost in transit.
const LOST: std::ops::Range<usize> = 40..45;
/// Frames in the whole call: the answerer ends last.
const CALL_FRAMES: usize = (A_DELAY_PACKETS + PACKETS) * PACKET;

fn tone(n: usize) -> i16 {
    let t = n as f64 / RATE as f64;
    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()).round() as i16
}

fn rtp_packet(seq: u16, ts: u32, ssrc: u32, first_sample: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((first_sample..first_sample + PACKET).map(|n| linear_to_ulaw(tone(n))));
    p
}

fn arrival(packet_slot: usize, jitter_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(T0_MS + packet_slot as u64 * 20 + jitter_ms)
}

/// Records one direction: `PACKETS` packets of the tone starting at packet
/// slot `delay`, without the `lost` ones, two of them delivered out of
/// order and one twice, with some arrival jitter.
fn record_direction(
    dir: &Path,
    name: &str,
    format: RecordFormat,
    (src, dst): (SocketAddr, SocketAddr),
    delay: usize,
    lost: std::ops::Range<usize>,
    ssrc: u32,
) -> PathBuf {
    let seq0: u16 = 65500; // wraps during the call
    let ts0: u32 = u32::MAX - 3000; // wraps too
    let mut order: Vec<usize> = (0..PACKETS).filter(|k| !lost.contains(k)).collect();
    order.swap(10, 11);
    order.insert(30, 29);
    let mut f = RecordFile::create(dir, None, name, format).unwrap();
    for k in order {
        let jitter = if k > 0 { (k as u64 * 7) % 5 } else { 0 };
        let p = rtp_packet(
            seq0.wrapping_add(k as u16),
            ts0.wrapping_add((k * PACKET) as u32),
            ssrc,
            k * PACKET,
        );
        f.write_packet(src, dst, arrival(delay + k, jitter), &p)
            .unwrap();
    }
    f.finish().unwrap()
}

fn addrs(v6: bool) -> (SocketAddr, SocketAddr) {
    if v6 {
        (
            "[2001:db8::10]:4000".parse().unwrap(),
            "[2001:db8::1]:35000".parse().unwrap(),
        )
    } else {
        (
            "192.0.2.10:4000".parse().unwrap(),
            "192.0.2.1:35000".parse().unwrap(),
        )
    }
}

fn record_call(dir: &Path, o_format: RecordFormat, a_format: RecordFormat) -> String {
    let base = "call%40host=tag1";
    record_direction(
        dir,
        &format!("{base}.o.rtp"),
        o_format,
        addrs(false),
        0,
        0..0,
        0x1111,
    );
    record_direction(
        dir,
        &format!("{base}.a.rtp"),
        a_format,
        addrs(true),
        A_DELAY_PACKETS,
        LOST,
        0x2222,
    );
    dir.join(base).to_str().unwrap().to_string()
}

fn extractaudio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_extractaudio"))
        .args(args)
        .output()
        .unwrap()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "extractaudio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks the WAV header and returns the interleaved samples.
fn read_wav(path: &Path, channels: u16) -> Vec<i16> {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() >= 44, "short WAV file");
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    assert_eq!(&b[0..4], b"RIFF");
    assert_eq!(u32_at(4) as usize, b.len() - 8);
    assert_eq!(&b[8..16], b"WAVEfmt ");
    assert_eq!(u32_at(16), 16);
    assert_eq!(u16_at(20), 1, "PCM");
    assert_eq!(u16_at(22), channels);
    assert_eq!(u32_at(24), 8000);
    assert_eq!(u32_at(28), 8000 * 2 * u32::from(channels));
    assert_eq!(u16_at(32), 2 * channels);
    assert_eq!(u16_at(34), 16);
    assert_eq!(&b[36..40], b"data");
    assert_eq!(u32_at(40) as usize, b.len() - 44);
    b[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// The offerer's source sample at output frame `f`, 0 where silent.
fn expected_o(f: usize) -> i16 {
    if f < PACKETS * PACKET {
        tone(f)
    } else {
        0
    }
}

/// The answerer's source sample at output frame `f`, 0 where silent or lost.
fn expected_a(f: usize) -> i16 {
    let start = A_DELAY_PACKETS * PACKET;
    if f < start || LOST.contains(&((f - start) / PACKET)) {
        return 0;
    }
    tone(f - start)
}

/// G.711 keeps about 1/16 of a sample's magnitude, plus a small step near 0.
fn assert_close(got: i16, want: i32, what: &str, frame: usize) {
    let tol = want.abs() / 16 + 40;
    assert!(
        (i32::from(got) - want).abs() <= tol,
        "{what} frame {frame}: got {got}, want {want} +- {tol}"
    );
}

fn sox(args: &[&std::ffi::OsStr]) -> Output {
    match Command::new("sox").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!("sox is needed for this test (apt-get install -y sox): {e}"),
    }
}

/// Reads the whole file with `sox FILE -n stat`, which checks the header
/// against the data (`sox --i` alone stays quiet about a bad header): any
/// `WARN` or `FAIL` line, or a non-zero exit, means a player may choke.
fn check_sox_reads_it_cleanly(path: &Path) {
    let out = sox(&[path.as_os_str(), "-n".as_ref(), "stat".as_ref()]);
    // stat writes its figures to stderr too: only sox's own messages count.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("sox WARN") && !err.contains("sox FAIL"),
        "sox {} -n stat: {}\n{err}",
        path.display(),
        out.status
    );
    assert!(err.contains("Samples read:"), "{err}");
}

fn check_sox(path: &Path, channels: u16) {
    check_sox_reads_it_cleanly(path);
    let out = sox(&["--i".as_ref(), path.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sox --i rejected the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("Channels       : {channels}")),
        "{text}"
    );
    assert!(text.contains("Sample Rate    : 8000"), "{text}");
    assert!(text.contains(&format!("= {CALL_FRAMES} samples")), "{text}");
}

#[test]
fn stereo_keeps_each_direction_on_its_channel_with_timing() {
    let dir = TempDir::new("stereo");
    let base = record_call(dir.path(), RecordFormat::Adhoc, RecordFormat::Adhoc);
    let wav = dir.path().join("out.wav");
    assert_ok(&extractaudio(&["-s", &base, wav.to_str().unwrap()]));
    let samples = read_wav(&wav, 2);
    assert_eq!(samples.len(), CALL_FRAMES * 2);
    for (f, frame) in samples.chunks_exact(2).enumerate() {
        assert_close(frame[0], expected_o(f).into(), "o", f);
        assert_close(frame[1], expected_a(f).into(), "a", f);
    }
    // The lost packets are silence, not a shift of what follows.
    let gap = (A_DELAY_PACKETS + LOST.start) * PACKET;
    assert!(samples[gap * 2..(gap + LOST.len() * PACKET) * 2]
        .chunks_exact(2)
        .all(|f| f[1] == 0));
    check_sox(&wav, 2);
}

#[test]
fn mono_averages_both_directions() {
    let dir = TempDir::new("mono");
    let base = record_call(dir.path(), RecordFormat::Adhoc, RecordFormat::Adhoc);
    let wav = dir.path().join("out.wav");
    assert_ok(&extractaudio(&[&base, wav.to_str().unwrap()]));
    let samples = read_wav(&wav, 1);
    assert_eq!(samples.len(), CALL_FRAMES);
    for (f, &s) in samples.iter().enumerate() {
        let want = (i32::from(expected_o(f)) + i32::from(expected_a(f))) / 2;
        assert_close(s, want, "mix", f);
    }
    check_sox(&wav, 1);
}

#[test]
fn mono_of_a_one_way_call_keeps_the_full_level() {
    let dir = TempDir::new("oneway");
    let base = "oneway=tag1";
    record_direction(
        dir.path(),
        &format!("{base}.o.rtp"),
        RecordFormat::Adhoc,
        addrs(false),
        0,
        0..0,
        0x1111,
    );
    // The answerer never sent: its file exists and is empty.
    let empty = format!("{base}.a.rtp");
    RecordFile::create(dir.path(), None, &empty, RecordFormat::Adhoc)
        .unwrap()
        .finish()
        .unwrap();
    let wav = dir.path().join("out.wav");
    let base = dir.path().join(base);
    assert_ok(&extractaudio(&[
        base.to_str().unwrap(),
        wav.to_str().unwrap(),
    ]));
    let samples = read_wav(&wav, 1);
    assert_eq!(samples.len(), PACKETS * PACKET);
    for (f, &s) in samples.iter().enumerate() {
        assert_close(s, expected_o(f).into(), "o", f);
    }
}

#[test]
fn pcap_recordings_given_as_explicit_pair() {
    let dir = TempDir::new("pcap");
    let base = record_call(dir.path(), RecordFormat::Pcap, RecordFormat::Pcap);
    let (o, a) = (format!("{base}.o.rtp"), format!("{base}.a.rtp"));
    let wav = dir.path().join("out.wav");
    assert_ok(&extractaudio(&["-s", &o, &a, wav.to_str().unwrap()]));
    let samples = read_wav(&wav, 2);
    assert_eq!(samples.len(), CALL_FRAMES * 2);
    for (f, frame) in samples.chunks_exact(2).enumerate() {
        assert_close(frame[0], expected_o(f).into(), "o", f);
        assert_close(frame[1], expected_a(f).into(), "a", f);
    }
    check_sox(&wav, 2);
}

#[test]
fn one_file_alone_is_decoded_in_full() {
    let dir = TempDir::new("single");
    let base = record_call(dir.path(), RecordFormat::Pcap, RecordFormat::Adhoc);
    let wav = dir.path().join("out.wav");
    assert_ok(&extractaudio(&[
        &format!("{base}.a.rtp"),
        wav.to_str().unwrap(),
    ]));
    let samples = read_wav(&wav, 1);
    assert_eq!(samples.len(), PACKETS * PACKET);
    for (f, &s) in samples.iter().enumerate() {
        assert_close(s, expected_a(f + A_DELAY_PACKETS * PACKET).into(), "a", f);
    }
}

#[test]
fn au_output_is_accepted_by_sox() {
    let dir = TempDir::new("au");
    let base = record_call(dir.path(), RecordFormat::Adhoc, RecordFormat::Pcap);
    let au = dir.path().join("out.au");
    assert_ok(&extractaudio(&[
        "-s",
        "-F",
        "au",
        &base,
        au.to_str().unwrap(),
    ]));
    let b = std::fs::read(&au).unwrap();
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    assert_eq!(&b[0..4], b".snd");
    // Header size: at least 28, the 24 fixed bytes and an annotation.
    let header = u32_at(4) as usize;
    assert!(header >= 28, "AU header size {header}");
    assert_eq!(u32_at(8) as usize, CALL_FRAMES * 4, "data size");
    assert_eq!(u32_at(12), 3, "16-bit linear PCM");
    assert_eq!((u32_at(16), u32_at(20)), (8000, 2));
    assert_eq!(b.len(), header + CALL_FRAMES * 4);
    check_sox(&au, 2);
}

fn assert_fails(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_arguments_and_inputs_fail_with_one_line() {
    let dir = TempDir::new("bad");
    let out = dir.path().join("out.wav");
    let out = out.to_str().unwrap();
    assert_fails(&extractaudio(&[]), "usage");
    assert_fails(&extractaudio(&["-x", "a", out]), "unknown option -x");
    assert_fails(
        &extractaudio(&["-F", "mp3", "a", out]),
        "unknown output file format",
    );
    assert_fails(&extractaudio(&["a", "b", "c", "d"]), "usage");
    let missing = dir.path().join("nothing");
    assert_fails(
        &extractaudio(&[missing.to_str().unwrap(), out]),
        "no such file",
    );
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, [0x55u8; 1000]).unwrap();
    assert_fails(
        &extractaudio(&[garbage.to_str().unwrap(), out]),
        "not a recording",
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_fails(
        &extractaudio(&[empty.to_str().unwrap(), out]),
        "no decodable audio",
    );
    assert!(!Path::new(out).exists());
}

#[test]
fn unsupported_payload_type_is_named() {
    let dir = TempDir::new("gsm");
    let mut f = RecordFile::create(dir.path(), None, "gsm.rtp", RecordFormat::Adhoc).unwrap();
    let (src, dst) = addrs(false);
    for k in 0..10u16 {
        let mut p = rtp_packet(k, u32::from(k) * 160, 1, 0);
        p[1] = 3;
        p.truncate(12 + 33);
        f.write_packet(src, dst, arrival(k.into(), 0), &p).unwrap();
    }
    let path = f.finish().unwrap();
    let out = dir.path().join("out.wav");
    let res = extractaudio(&[path.to_str().unwrap(), out.to_str().unwrap()]);
    assert_fails(&res, "payload type 3 (GSM) not supported in this build");
}

#[test]
fn garbage_packets_never_crash_it() {
    let dir = TempDir::new("fuzz");
    let (src, dst) = addrs(false);
    let mut x: u32 = 99;
    let mut next = || {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (x >> 16) as u8
    };
    let mut f = RecordFile::create(dir.path(), None, "junk.rtp", RecordFormat::Adhoc).unwrap();
    for k in 0..300u64 {
        let len = usize::from(next()) % 200;
        let mut p: Vec<u8> = (0..len).map(|_| next()).collect();
        if k % 2 == 0 && p.len() > 12 {
            p[0] = 0x80 | (p[0] & 0x3f);
            p[1] &= 0x80;
        }
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(next() % 50));
        f.write_packet(src, dst, t, &p).unwrap();
    }
    let path = f.finish().unwrap();
    let out = dir.path().join("out.wav");
    let res = extractaudio(&[path.to_str().unwrap(), out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(matches!(res.status.code(), Some(0) | Some(1)), "{err}");
}
