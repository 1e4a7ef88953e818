//! Splitting what a stream control client sends (`tcp:`, `tcp6:`,
//! `cunix:`) into commands: each ends in `\n`, a `\r` before it is not
//! part of it, and at end of file what is left is the last command. A line
//! over `MAX_COMMAND_LEN` is one error, found as soon as it is known to be
//! too long; the rest of it is dropped as it arrives. Pure, so that it is
//! fuzzed on its own (fuzz/fuzz_targets/framing.rs).

use std::ops::Range;

use crate::rtpp_defines::MAX_COMMAND_LEN;

/// The next thing the framer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A command: its bytes are [`LineFramer::command`] of this range,
    /// valid until the next [`LineFramer::push`] or [`LineFramer::compact`].
    Command(Range<usize>),
    /// A line over `MAX_COMMAND_LEN`, answered with one error.
    TooLong,
}

/// What a client sent and the daemon has not run yet.
#[derive(Debug, Default)]
pub struct LineFramer {
    input: Vec<u8>,
    /// Where the next line starts; what is before it was taken.
    start: usize,
    /// The rest of an over-long line is dropped as it arrives.
    skipping: bool,
    /// `input[start..scanned]` holds no `\n`.
    scanned: usize,
}

/// What the front of a client's input holds.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A command of `len` bytes (line end excluded) in the first `used`.
    Command { len: usize, used: usize },
    /// A line over `MAX_COMMAND_LEN`: `used` bytes of it are in the buffer;
    /// `rest` when its end has not arrived yet and must be dropped on arrival.
    TooLong { used: usize, rest: bool },
    /// Not a whole line yet.
    Wait,
}

/// Splits the next command off `buf`. A line ends in `\n`, a `\r` before
/// it is not part of the command; at end of file what is left is the last
/// command, newline or not. The first `clean` bytes are known to hold no
/// `\n`: a client that trickles a long line byte by byte costs one look
/// at each byte, not one at the whole line per byte.
fn next_line(buf: &[u8], clean: usize, eof: bool) -> Next {
    let clean = clean.min(buf.len());
    let newline = buf[clean..].iter().position(|&b| b == b'\n');
    let (line, used) = match newline.map(|at| clean + at) {
        Some(end) => (&buf[..end], end + 1),
        // Room for the `\r` of a longest command, its `\n` to come.
        None if buf.len() > MAX_COMMAND_LEN + 1 => {
            return Next::TooLong {
                used: buf.len(),
                rest: !eof,
            }
        }
        None if eof && !buf.is_empty() => (buf, buf.len()),
        None => return Next::Wait,
    };
    let len = line.strip_suffix(b"\r").unwrap_or(line).len();
    if len > MAX_COMMAND_LEN {
        Next::TooLong { used, rest: false }
    } else {
        Next::Command { len, used }
    }
}

impl LineFramer {
    /// Bytes held and not yet taken as commands.
    pub fn held(&self) -> usize {
        self.input.len() - self.start
    }

    /// Keeps what was read, less the rest of an over-long line.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.skipping {
            self.input.extend_from_slice(bytes);
            return;
        }
        if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.skipping = false;
            self.input.extend_from_slice(&bytes[end + 1..]);
        }
    }

    /// Takes the next command (or over-long line) off the front; `eof`:
    /// the client will send nothing more.
    pub fn next(&mut self, eof: bool) -> Option<Line> {
        let clean = self.scanned.saturating_sub(self.start);
        match next_line(&self.input[self.start..], clean, eof) {
            Next::Wait => {
                self.scanned = self.input.len();
                None
            }
            Next::Command { len, used } => {
                let at = self.start..self.start + len;
                self.start += used;
                Some(Line::Command(at))
            }
            Next::TooLong { used, rest } => {
                self.start += used;
                self.skipping = rest;
                Some(Line::TooLong)
            }
        }
    }

    /// The bytes of a command [`LineFramer::next`] found.
    pub fn command(&self, at: Range<usize>) -> &[u8] {
        self.input.get(at).unwrap_or(&[])
    }

    /// True when [`LineFramer::next`] would find something.
    pub fn has_line(&self, eof: bool) -> bool {
        let clean = self.scanned.saturating_sub(self.start);
        next_line(&self.input[self.start..], clean, eof) != Next::Wait
    }

    /// Forgets what was taken, so the buffer holds only what is left.
    pub fn compact(&mut self) {
        self.input.drain(..self.start);
        self.scanned = self.scanned.saturating_sub(self.start);
        self.start = 0;
    }

    /// Forgets everything (the client is being closed).
    pub fn clear(&mut self) {
        self.input.clear();
        self.start = 0;
        self.scanned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next_line_at(buf: &[u8], eof: bool) -> Next {
        next_line(buf, 0, eof)
    }

    /// Every command and error a stream gives when fed in `chunks`.
    fn frames(chunks: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
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

    #[test]
    fn chunking_does_not_change_the_commands() {
        let whole = frames(&[b"V\r\nVF 1\nI"]);
        assert_eq!(
            whole,
            [
                Some(b"V".to_vec()),
                Some(b"VF 1".to_vec()),
                Some(b"I".to_vec())
            ]
        );
        assert_eq!(frames(&[b"V\r", b"\nVF", b" 1\n", b"I"]), whole);
        let long = vec![b'x'; MAX_COMMAND_LEN + 10];
        let got = frames(&[&long, b"yy\nV\n", b""]);
        assert_eq!(got, [None, Some(b"V".to_vec())]);
    }

    #[test]
    fn lines_split_on_newline_without_carriage_return() {
        assert_eq!(
            next_line_at(b"V\nVF 1\n", false),
            Next::Command { len: 1, used: 2 }
        );
        assert_eq!(
            next_line_at(b"V\r\n", false),
            Next::Command { len: 1, used: 3 }
        );
        assert_eq!(
            next_line_at(b"\n", false),
            Next::Command { len: 0, used: 1 }
        );
        assert_eq!(next_line_at(b"VF 2004", false), Next::Wait);
        assert_eq!(next_line_at(b"", true), Next::Wait);
        // At end of file the last line needs no newline.
        assert_eq!(next_line_at(b"V", true), Next::Command { len: 1, used: 1 });
    }

    #[test]
    fn over_long_lines_are_found_as_soon_as_they_are() {
        let mut longest = vec![b'x'; MAX_COMMAND_LEN];
        assert_eq!(next_line_at(&longest, false), Next::Wait);
        longest.push(b'\r');
        assert_eq!(next_line_at(&longest, false), Next::Wait);
        longest.push(b'\n');
        let used = longest.len();
        assert_eq!(
            next_line_at(&longest, false),
            Next::Command {
                len: MAX_COMMAND_LEN,
                used
            }
        );
        let mut over = vec![b'x'; MAX_COMMAND_LEN + 1];
        over.push(b'\n');
        assert_eq!(
            next_line_at(&over, false),
            Next::TooLong {
                used: MAX_COMMAND_LEN + 2,
                rest: false
            }
        );
        let endless = vec![b'x'; MAX_COMMAND_LEN + 2];
        let used = endless.len();
        assert_eq!(
            next_line_at(&endless, false),
            Next::TooLong { used, rest: true }
        );
        assert_eq!(
            next_line_at(&endless, true),
            Next::TooLong { used, rest: false }
        );
    }
}
