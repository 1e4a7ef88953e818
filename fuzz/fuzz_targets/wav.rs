//! makeann's WAV reader: any bytes give a WAV view or an error, and a view
//! points inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::wav::{looks_like_wav, parse_wav};

fuzz_target!(|data: &[u8]| {
    let Ok(wav) = parse_wav(data) else { return };
    assert!(looks_like_wav(data));
    let inside = data.as_ptr_range();
    let body = wav.data.as_ptr_range();
    assert!(inside.start <= body.start && body.end <= inside.end);
    let _ = wav.format.to_string();
    let _ = wav.format.is_telephony_pcm();
});
