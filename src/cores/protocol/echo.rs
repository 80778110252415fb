//! The per-read echo path's inner loop: finds the line ends of a whole read and writes each
//! echo straight into the output. Owns how that is done fast (the newline scan, the output
//! writer); the answers themselves are the protocol's ([`super::answer`] is the reference a
//! property test holds this to). No I/O, and no `unsafe`.
//!
//! Two things cost most per short line, and neither is needed:
//! - a `memchr` call per line: its set-up (vector loads, alignment) is paid again for every
//!   13 bytes. Instead the read is scanned 8 bytes at a time for `\n` (SWAR: one word, a few
//!   integer operations, every newline in it as one bit), and a line that runs on past
//!   [`LONG_LINE`] bytes hands the search for its end to `memchr`, which is faster there.
//! - a `memcpy` call, a capacity check and a length update of the output per piece copied.
//!   Instead a line shorter than [`BLOCK`] bytes is copied as one fixed-size block from the
//!   read (a few vector moves) into a 4 KiB stage, which goes to the output in one piece
//!   when full.

use std::cell::RefCell;

use memchr::memchr;

use super::{encode_too_long, Echoed, ECHO_PREFIX, HEARTBEAT_REPLY};

/// A line (without its `\r`) shorter than this is copied as one block of this size (two
/// vector moves).
const BLOCK: usize = 32;
/// Past this many bytes without a newline, `memchr` looks for the line's end.
const LONG_LINE: usize = 64;
/// Every byte `\n`.
const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
/// The low 7 bits of every byte.
const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);

/// The high bit of each byte of `word` (read little-endian) that is `\n`, and no other bit.
/// Exact: no carry crosses a byte (`x & LOW7` + `LOW7` stays below 256 in each byte).
#[inline]
fn newlines(word: u64) -> u64 {
    let x = word ^ NEWLINES;
    !(((x & LOW7) + LOW7) | x) & !LOW7
}

/// Appends the echoes of `input`'s complete lines to `out`; see [`super::echo_lines`].
pub(super) fn echo_lines(max_line: usize, input: &[u8], out: &mut Vec<u8>) -> Echoed {
    STAGE.with_borrow_mut(|stage| {
        let mut writer = Writer {
            stage,
            at: 0,
            out,
            max_line,
            echoed: Echoed::default(),
        };
        let consumed = scan(input, &mut writer);
        writer.flush();
        Echoed {
            consumed,
            ..writer.echoed
        }
    })
}

/// Finds every `\n` in `input`, in order, and has `writer` answer the line it ends; returns
/// the bytes up to and including the last one.
#[inline(always)]
fn scan(input: &[u8], writer: &mut Writer<'_>) -> usize {
    // `start`: where the current line starts; `i`: the next word to scan.
    let mut start = 0;
    let mut i = 0;
    while let Some(bytes) = input.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(bytes) else {
            break;
        };
        let mut found = newlines(u64::from_le_bytes(word));
        if found == 0 {
            i += 8;
            if i - start > LONG_LINE {
                // A long line: `memchr` finds its end; scanning goes on from there.
                match memchr(b'\n', &input[i..]) {
                    Some(offset) => i += offset,
                    None => return start,
                }
            }
            continue;
        }
        while found != 0 {
            let end = i + (found.trailing_zeros() / 8) as usize;
            found &= found - 1;
            writer.line(input, start, end);
            start = end + 1;
        }
        i += 8;
    }
    // The last few bytes, one at a time.
    let tail = input.get(i..).unwrap_or_default();
    for (offset, &byte) in tail.iter().enumerate() {
        if byte == b'\n' {
            writer.line(input, start, i + offset);
            start = i + offset + 1;
        }
    }
    start
}

/// Short echoes are put together here and appended to the output 4 KiB at a time, so a line
/// costs no capacity check and no length update of the output: one per thread (4 KiB, not
/// per connection), written before it is read.
const STAGE_BYTES: usize = 4096;
thread_local! {
    static STAGE: RefCell<[u8; STAGE_BYTES]> = const { RefCell::new([0; STAGE_BYTES]) };
}

/// The longest echo built in the stage: the prefix, a block, the newline.
const STAGED_MAX: usize = ECHO_PREFIX.len() + BLOCK + 1;

/// Answers lines into `out`, short echoes by way of the stage (`stage[..at]`, not yet in
/// `out`).
struct Writer<'a> {
    stage: &'a mut [u8; STAGE_BYTES],
    at: usize,
    out: &'a mut Vec<u8>,
    max_line: usize,
    echoed: Echoed,
}

impl Writer<'_> {
    /// Answers the line `input[start..end]` (`end` is its `\n`). Always inlined: a call per
    /// line is what this module is for avoiding.
    #[inline(always)]
    fn line(&mut self, input: &[u8], start: usize, end: usize) {
        let raw = &input[start..end];
        if raw.len() > self.max_line {
            self.flush();
            encode_too_long(self.out, self.max_line);
            self.echoed.too_long += 1;
            return;
        }
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line == HEARTBEAT_REPLY {
            self.echoed.replies += 1;
            return;
        }
        self.echoed.lines += 1;
        match input.get(start..start + BLOCK) {
            Some(block) if line.len() < BLOCK => {
                if self.at > STAGE_BYTES - STAGED_MAX {
                    self.flush();
                }
                // Fixed-size copies (no call); the bytes of the block past the line are
                // overwritten by its newline and the next echo.
                let body = self.at + ECHO_PREFIX.len();
                self.stage[self.at..body].copy_from_slice(ECHO_PREFIX);
                self.stage[body..body + BLOCK].copy_from_slice(block);
                self.stage[body + line.len()] = b'\n';
                self.at = body + line.len() + 1;
            }
            _ => {
                self.flush();
                self.out.reserve(ECHO_PREFIX.len() + line.len() + 1);
                self.out.extend_from_slice(ECHO_PREFIX);
                self.out.extend_from_slice(line);
                self.out.push(b'\n');
            }
        }
    }

    /// Appends what the stage holds to the output.
    fn flush(&mut self) {
        self.out.extend_from_slice(&self.stage[..self.at]);
        self.at = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newline bits of every byte value at every position of a word, against a plain
    /// byte comparison (no carry or borrow between bytes).
    #[test]
    fn newline_bits_are_exact_for_every_byte_in_every_position() {
        for value in 0..=255u8 {
            for position in 0..8 {
                for fill in [0u8, b'\n', 0x0b, 0x8a, 0xff, value] {
                    let mut word = [fill; 8];
                    word[position] = value;
                    let want = word
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b'\n')
                        .fold(0u64, |bits, (k, _)| bits | 0x80 << (8 * k));
                    assert_eq!(newlines(u64::from_le_bytes(word)), want, "{word:?}");
                }
            }
        }
    }

    /// Lines of every length around the block size and the long-line switch, ending in `\n`
    /// or `\r\n`, echoed whole; the output keeps what it held before and gains no scratch.
    #[test]
    fn lines_of_every_length_are_echoed_whole() {
        for len in (0..2 * LONG_LINE + 20).chain([4085, 4096, 12_293]) {
            for crlf in [false, true] {
                let line: Vec<u8> = (0..len).map(|k| b'a' + (k % 26) as u8).collect();
                let ending: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                let input = [&line[..], ending, &line[..], ending, b"tail"].concat();
                let mut out = b"before".to_vec();
                let echoed = echo_lines(usize::MAX, &input, &mut out);
                let echo = [ECHO_PREFIX, &line[..], b"\n"].concat();
                assert_eq!(out, [&b"before"[..], &echo, &echo].concat(), "len {len}");
                assert_eq!(echoed.lines, 2);
                assert_eq!(echoed.consumed, input.len() - 4);
            }
        }
    }
}
