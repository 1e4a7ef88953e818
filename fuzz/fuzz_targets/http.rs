//! The metrics request reader (`--metrics`): any bytes, fed whole and fed
//! in chunks of sizes the input picks, must get the same answer; the
//! reader never holds more than its limit, takes nothing once it decided,
//! parses a bounded number of times however the bytes are cut, and every
//! answer it can give makes a well-formed response head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtpp_metrics::http::response;
use rtpproxy::rtpp_metrics::request::{Decision, RequestReader, MAX_PARSES, REQUEST_LIMIT};

/// The answer to `chunks`, the last one followed by end of file, and the
/// bytes the reader took.
fn read<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Decision, usize) {
    let mut r = RequestReader::default();
    let mut taken = 0;
    for chunk in chunks {
        let decided = r.decision().is_some();
        let n = r.push(chunk);
        assert!(n <= chunk.len());
        assert!(!decided || n == 0, "took bytes after deciding");
        assert!(r.held() <= REQUEST_LIMIT && r.held() == taken + n);
        taken += n;
    }
    r.end_of_file();
    assert!(r.parses() <= MAX_PARSES, "parsed {} times", r.parses());
    match r.decision() {
        Some(d) => (d, taken),
        None => panic!("no answer after end of file"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, request)) = data.split_first() else {
        return;
    };
    let (whole, _) = read(std::iter::once(request));
    let step = usize::from(seed % 64) + 1;
    let (chunked, taken) = read(request.chunks(step));
    assert_eq!(whole, chunked, "chunks of {step} bytes decided otherwise");
    // A request cut short of the limit and not complete is a bad one.
    if taken == request.len() && request.len() < REQUEST_LIMIT {
        assert_ne!(whole, Decision::TooLarge);
    }
    let mut out = Vec::new();
    response(whole, "x 1\n", &mut out);
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n");
    assert!(out.starts_with(b"HTTP/1.1 ") && head_end.is_some());
});
