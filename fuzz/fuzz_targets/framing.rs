//! Stream control socket framing (`tcp:`, `cunix:`): any bytes, fed whole
//! and fed in chunks of sizes the input picks, must give the same commands
//! and errors; no command holds a line end or exceeds the command limit;
//! parsing each command never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtpp_command::parse;
use rtpproxy::rtpp_control::framing::{Line, LineFramer};
use rtpproxy::rtpp_defines::MAX_COMMAND_LEN;

/// Commands and errors (`None`) the framer finds in `chunks`, the last
/// one followed by end of file.
fn frames<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Option<Vec<u8>>> {
    let chunks: Vec<&[u8]> = chunks.collect();
    let mut f = LineFramer::default();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        f.push(chunk);
        let eof = i + 1 == chunks.len();
        while let Some(line) = f.next(eof) {
            out.push(match line {
                Line::Command(at) => Some(f.command(at).to_vec()),
                Line::TooLong => None,
            });
        }
        f.compact();
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = frames(std::iter::once(stream));
    let step = usize::from(seed % 64) + 1;
    let chunked = frames(stream.chunks(step).chain(std::iter::once(&[][..])));
    assert_eq!(whole, chunked, "chunks of {step} bytes framed differently");
    for cmd in whole.iter().flatten() {
        assert!(!cmd.contains(&b'\n') && cmd.len() <= MAX_COMMAND_LEN);
        let _ = parse(cmd);
    }
});
