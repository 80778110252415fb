//! The wire protocol: line framing and the message constants. No I/O.
//!
//! Owns the incremental [`LineDecoder`] (bytes in, complete lines out, with a length limit),
//! the `encode_*` functions that append outgoing lines to a buffer, and [`classify`], which
//! tells the server a heartbeat answer from data. It touches no socket and reads no clock:
//! the loops in `server` and `client` read bytes, feed them here and write what comes back;
//! `liveness` decides when to send a heartbeat.
//!
//! Text lines over TCP, each ending in `\n`; a `\r\n` ending is accepted and the `\r`
//! dropped, a lone `\r` anywhere else is data, and an empty line is a line. Lines are bytes;
//! they need not be UTF-8.
//!
//! | direction       | line                                   | meaning                                 |
//! |-----------------|----------------------------------------|-----------------------------------------|
//! | client → server | any data `X`                           | data; the server answers `Echoing...X`  |
//! | server → client | `heartbeat` ([`HEARTBEAT`])            | "are you there?"                        |
//! | client → server | `Echoing...heartbeat` ([`HEARTBEAT_REPLY`]) | the answer; the server does not echo it |
//! | server → client | `End Connection` ([`END_CONNECTION`])  | the server is closing this connection   |
//! | server → client | `Error: server full` ([`SERVER_FULL`]) | refused at accept, then closed          |
//! | server → client | `Error: line too long (limit N bytes)` | one overlong line was dropped; stays open |
//!
//! A line longer than the limit ([`DEFAULT_MAX_LINE`] unless configured) is never buffered:
//! the decoder reports [`Frame::TooLong`] once, drops its bytes up to and including the next
//! `\n`, and carries on with the line after it.

mod handover;
mod line_ends;

use std::io::Write as _;
use std::mem;

use memchr::{memchr, memchr_iter};

use line_ends::LineEnds;

/// Server → client: "are you there?".
pub const HEARTBEAT: &[u8] = b"heartbeat";
/// [`HEARTBEAT`] as it goes on the wire, newline included: what [`encode_line`] makes of it,
/// as a constant the server can write without copying it anywhere first.
pub const HEARTBEAT_LINE: &[u8] = b"heartbeat\n";
/// Client → server: the answer to [`HEARTBEAT`]; the server does not echo it.
pub const HEARTBEAT_REPLY: &[u8] = b"Echoing...heartbeat";
/// Server → client: the last line before the server closes the connection.
pub const END_CONNECTION: &[u8] = b"End Connection";
/// What the server puts in front of each data line it echoes.
pub const ECHO_PREFIX: &[u8] = b"Echoing...";
/// Server → client: sent to a connection refused because the server is at its limit.
pub const SERVER_FULL: &[u8] = b"Error: server full";
/// The default limit on a line's length in bytes (see [`LineDecoder::feed`] for what counts).
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// The first allocation for a split line, so a short line arriving in small pieces does not
/// reallocate on every piece. Growth then doubles, capped at the line limit.
const MIN_PARTIAL: usize = 64;

/// What the decoder found in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One complete line, without its `\n` or `\r\n`.
    Line(&'a [u8]),
    /// A line went over the limit: reported once per overlong line, at the moment it crosses
    /// the limit; its bytes up to and including the next `\n` are dropped.
    TooLong,
}

/// Per-connection framing state. Holds no heap memory while no partial line is pending
/// (an idle connection owns no buffer): after a split line completes, the partial buffer is
/// released, so `Vec::new()` is the resting state.
///
/// Invariants: `partial` is empty exactly when it has no capacity; `partial` and `discarding`
/// are never both set; `partial.capacity() <= max_line`, so a 10 MB line without a newline
/// costs at most `max_line` bytes.
#[derive(Debug, Default)]
pub struct LineDecoder {
    /// The start of a line that began in an earlier read and has no `\n` yet.
    partial: Vec<u8>,
    /// True while dropping the rest of an overlong line, up to its `\n`.
    discarding: bool,
}

impl LineDecoder {
    /// A decoder at the start of a line, holding nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes just read; calls `on_frame` for each complete line or `TooLong`, in order.
    ///
    /// Lines wholly inside `input` are passed as slices of `input` (zero-copy, no
    /// allocation); only a line split across reads is copied into the partial buffer, which
    /// is released when that line completes.
    ///
    /// `max_line` limits the bytes before the `\n`, a trailing `\r` included: a line of
    /// exactly `max_line` bytes and `\n` is accepted, one more byte is [`Frame::TooLong`] (so
    /// with `\r\n` endings the content may be `max_line - 1` bytes). The buffer never grows
    /// past `max_line`. Pass the same `max_line` on every call for one connection.
    pub fn feed(&mut self, max_line: usize, input: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        let Some(mut input) = self.finish_pending(max_line, input, &mut on_frame) else {
            return;
        };
        // At the start of a line, nothing held: every complete line is a slice of `input`.
        let mut start = 0;
        for end in memchr_iter(b'\n', input) {
            on_frame(frame(max_line, &input[start..end]));
            start = end + 1;
        }
        input = &input[start..];
        if input.len() > max_line {
            on_frame(Frame::TooLong);
            self.discarding = true;
        } else if !input.is_empty() {
            self.hold(max_line, input);
        }
    }

    /// The input ended (the peer closed its side): a last line held without its `\n` is
    /// passed on as a line, so `printf hello | nc` is answered too. The decoder is left at rest.
    pub fn finish(&mut self, mut on_frame: impl FnMut(Frame<'_>)) {
        if !self.discarding && !self.partial.is_empty() {
            on_frame(Frame::Line(&self.partial));
        }
        *self = LineDecoder::new();
    }

    /// Bytes held for an incomplete line.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Heap bytes held for an incomplete line (its buffer's capacity).
    pub fn heap_bytes(&self) -> usize {
        self.partial.capacity()
    }

    /// True when the decoder holds no heap allocation (capacity 0).
    pub fn is_unallocated(&self) -> bool {
        self.partial.capacity() == 0
    }

    /// True at the start of a line with nothing held and nothing being dropped: this decoder
    /// could be dropped and replaced by [`LineDecoder::new`] without changing what comes out.
    pub fn is_at_rest(&self) -> bool {
        self.is_unallocated() && !self.discarding
    }

    /// Deals with a line begun in an earlier read (held, or being dropped). Returns the input
    /// after that line's `\n`, or `None` if `input` ends before it.
    fn finish_pending<'i>(
        &mut self,
        max_line: usize,
        input: &'i [u8],
        on_frame: &mut impl FnMut(Frame<'_>),
    ) -> Option<&'i [u8]> {
        if self.discarding {
            let end = memchr(b'\n', input)?;
            self.discarding = false;
            return Some(&input[end + 1..]);
        }
        if self.partial.is_empty() {
            return Some(input);
        }
        let newline = memchr(b'\n', input);
        let head = &input[..newline.unwrap_or(input.len())];
        if self.partial.len() + head.len() > max_line {
            self.partial = Vec::new();
            on_frame(Frame::TooLong);
            self.discarding = newline.is_none();
        } else {
            self.hold(max_line, head);
            if newline.is_some() {
                let line = mem::take(&mut self.partial);
                on_frame(Frame::Line(strip_cr(&line)));
            }
        }
        newline.map(|end| &input[end + 1..])
    }

    /// Appends to the partial line; the caller has checked the total fits in `max_line`.
    /// Capacity doubles (amortised O(1) per byte) but never goes past `max_line`.
    fn hold(&mut self, max_line: usize, bytes: &[u8]) {
        let needed = self.partial.len() + bytes.len();
        if needed > self.partial.capacity() {
            let target = needed
                .max(self.partial.capacity().saturating_mul(2))
                .max(MIN_PARTIAL)
                .min(max_line);
            self.partial.reserve_exact(target - self.partial.len());
        }
        self.partial.extend_from_slice(bytes);
    }
}

/// A line found whole in the input: a `Line`, or `TooLong` if it is over the limit.
fn frame(max_line: usize, line: &[u8]) -> Frame<'_> {
    if line.len() > max_line {
        Frame::TooLong
    } else {
        Frame::Line(strip_cr(line))
    }
}

/// Drops one `\r` at the end of a line (a `\r\n` ending).
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Appends `line` + `\n` to `out`.
pub fn encode_line(out: &mut Vec<u8>, line: &[u8]) {
    out.reserve(line.len() + 1);
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// Appends [`ECHO_PREFIX`] + `line` + `\n` to `out`.
pub fn encode_echo(out: &mut Vec<u8>, line: &[u8]) {
    out.reserve(ECHO_PREFIX.len() + line.len() + 1);
    out.extend_from_slice(ECHO_PREFIX);
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// Appends `Error: line too long (limit N bytes)\n` to `out`, allocating nothing but the
/// growth of `out`.
pub fn encode_too_long(out: &mut Vec<u8>, max_line: usize) {
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "Error: line too long (limit {max_line} bytes)");
}

/// What [`echo_lines`] did with one read's complete lines; the server counts them once per
/// read, not once per line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Echoed {
    /// Data lines echoed.
    pub lines: usize,
    /// Lines over the limit, each answered with one error line.
    pub too_long: usize,
    /// Heartbeat answers ([`HEARTBEAT_REPLY`]): recognised, not echoed.
    pub replies: usize,
    /// Bytes of the input used: up to and including its last `\n` (0 when it has none). The
    /// rest is the start of a line still arriving, for a [`LineDecoder`].
    pub consumed: usize,
}

/// The per-read echo path: appends the server's answer to every complete line in `input` to
/// `out`, in one pass over the line ends. `input` must start at the start of a line (a
/// [`LineDecoder`] at rest); what follows its last `\n` is left for the decoder.
///
/// The answers are exactly those of [`LineDecoder::feed`] + [`classify`] + [`encode_echo`] /
/// [`encode_too_long`] line by line (property tests hold the two paths to it), but with no
/// call per line: the line ends come 64 bytes at a time ([`LineEnds`]), and a line of up to
/// 64 bytes ending in a plain `\n` is echoed with its `\n` by copies of a fixed size into a
/// stage on the stack, appended to `out` a couple of kilobytes at a time. Any other line (a
/// `\r\n` ending, an answer, a line over the limit, a longer one) takes [`echo_line`].
pub fn echo_lines(max_line: usize, input: &[u8], out: &mut Vec<u8>) -> Echoed {
    let mut echoed = Echoed::default();
    let mut start = 0;
    if input.len() < STAGED_READ {
        // A read of a few lines (request and response): the stage would cost more to clear
        // than it saves, and the masks more to set up than a search call per line.
        for end in memchr_iter(b'\n', input) {
            echo_line(max_line, &input[start..=end], out, &mut echoed);
            start = end + 1;
        }
        echoed.consumed = start;
        return echoed;
    }
    let mut stage = Stage::new();
    for end in LineEnds::new(input) {
        // `wire` is the line with its `\n`.
        let wire = &input[start..=end];
        let line_start = start;
        start = end + 1;
        // The common case, a line of up to 64 bytes ending in a plain `\n` within the limit
        // (and not a heartbeat answer): staged with copies of a fixed size.
        if wire.len() <= MEDIUM && is_plain(max_line, wire) {
            if wire.len() <= SHORT {
                if let Some(block) = input[line_start..].first_chunk::<SHORT>() {
                    stage.echo(block, wire.len(), out);
                    echoed.lines += 1;
                    continue;
                }
            } else if !wire.starts_with(HEARTBEAT_REPLY) {
                if let Some(block) = input[line_start..].first_chunk::<MEDIUM>() {
                    stage.echo(block, wire.len(), out);
                    echoed.lines += 1;
                    continue;
                }
            }
        }
        stage.flush(out);
        echo_line(max_line, wire, out, &mut echoed);
    }
    stage.flush(out);
    echoed.consumed = start;
    echoed
}

/// Whether `wire` (a line with its `\n`) is within `max_line` and does not end in `\r\n`.
#[inline]
fn is_plain(max_line: usize, wire: &[u8]) -> bool {
    wire.len() <= max_line.saturating_add(1) && !(wire.len() >= 2 && wire[wire.len() - 2] == b'\r')
}

/// Lines up to these lengths (with their `\n`) are echoed by copies of these fixed sizes.
const SHORT: usize = 16;
const MEDIUM: usize = 64;
const _: () = assert!(
    HEARTBEAT_REPLY.len() >= SHORT,
    "a short line is never an answer"
);

/// Short echoes built on the stack, where each is two copies of fixed size (no length or
/// capacity bookkeeping, no copy call), then appended to the output a kilobyte or two at a
/// time.
struct Stage {
    bytes: [u8; STAGE],
    len: usize,
}

const STAGE: usize = 2048;
/// Reads shorter than this are answered line by line, without a stage.
const STAGED_READ: usize = 1024;

/// [`ECHO_PREFIX`] padded to a copy of 16 bytes (the line overwrites the padding).
const PREFIX_BLOCK: [u8; 16] = *b"Echoing...\0\0\0\0\0\0";

impl Stage {
    fn new() -> Stage {
        Stage {
            bytes: [0; STAGE],
            len: 0,
        }
    }

    /// Stages `Echoing...` + the first `wire_len` bytes of `block`.
    #[inline]
    fn echo<const N: usize>(&mut self, block: &[u8; N], wire_len: usize, out: &mut Vec<u8>) {
        if self.len + ECHO_PREFIX.len() + N > STAGE {
            self.flush(out);
        }
        let at = self.len;
        self.bytes[at..at + PREFIX_BLOCK.len()].copy_from_slice(&PREFIX_BLOCK);
        let at = at + ECHO_PREFIX.len();
        self.bytes[at..at + N].copy_from_slice(block);
        self.len = at + wire_len;
    }

    #[inline]
    fn flush(&mut self, out: &mut Vec<u8>) {
        if self.len > 0 {
            out.extend_from_slice(&self.bytes[..self.len]);
            self.len = 0;
        }
    }
}

/// [`echo_lines`] for any one line: `wire` is the line with its `\n`.
fn echo_line(max_line: usize, wire: &[u8], out: &mut Vec<u8>, echoed: &mut Echoed) {
    let raw = &wire[..wire.len() - 1];
    if raw.len() > max_line {
        encode_too_long(out, max_line);
        echoed.too_long += 1;
        return;
    }
    let (line, crlf) = match raw.strip_suffix(b"\r") {
        Some(line) => (line, true),
        None => (raw, false),
    };
    if line == HEARTBEAT_REPLY {
        echoed.replies += 1;
        return;
    }
    out.extend_from_slice(ECHO_PREFIX);
    if crlf {
        out.extend_from_slice(line);
        out.push(b'\n');
    } else {
        // The line and its `\n` as they arrived: one copy.
        out.extend_from_slice(wire);
    }
    echoed.lines += 1;
}

/// The server's answer to one frame, line by line: an echo for data, nothing for a heartbeat
/// answer, the error line for a line over `max_line`; counted in `tally`. The reference that
/// [`echo_lines`] must match.
pub fn answer(max_line: usize, frame: Frame<'_>, out: &mut Vec<u8>, tally: &mut Echoed) {
    match frame {
        Frame::Line(line) => match classify(line) {
            Message::HeartbeatReply => tally.replies += 1,
            Message::Data(data) => {
                encode_echo(out, data);
                tally.lines += 1;
            }
        },
        Frame::TooLong => {
            encode_too_long(out, max_line);
            tally.too_long += 1;
        }
    }
}

impl Echoed {
    /// Adds `other`'s counts (not `consumed`) to these.
    pub fn add(&mut self, other: Echoed) {
        self.lines += other.lines;
        self.too_long += other.too_long;
        self.replies += other.replies;
    }
}

impl LineDecoder {
    /// Feeds bytes just read and appends the server's answers to `out` (see [`answer`]): the
    /// line pending from an earlier read, if any, line by line; then every complete line in
    /// one pass ([`echo_lines`]); the unterminated rest is held. Same output as [`feed`]
    /// with [`answer`] for each frame. `consumed` is 0.
    ///
    /// [`feed`]: LineDecoder::feed
    pub fn feed_echo(&mut self, max_line: usize, input: &[u8], out: &mut Vec<u8>) -> Echoed {
        let mut tally = Echoed::default();
        // The held (or dropped) line ends at the first newline; after it, a line starts.
        let mut on_frame = |f: Frame<'_>| answer(max_line, f, out, &mut tally);
        let Some(rest) = self.finish_pending(max_line, input, &mut on_frame) else {
            return tally;
        };
        let whole = echo_lines(max_line, rest, out);
        tally.add(whole);
        // No newline in the tail: it is held, or dropped if already over the limit.
        let tail = &rest[whole.consumed..];
        if tail.len() > max_line {
            answer(max_line, Frame::TooLong, out, &mut tally);
            self.discarding = true;
        } else if !tail.is_empty() {
            self.hold(max_line, tail);
        }
        tally
    }
}

/// Whether `read` is exactly one heartbeat answer, [`HEARTBEAT_REPLY`] and its `\n` or
/// `\r\n`, within `max_line`: the usual read from an idle peer, which the server can pass
/// over without framing (when no line is pending), as there is nothing to answer.
pub fn is_lone_reply(max_line: usize, read: &[u8]) -> bool {
    let Some(raw) = read.strip_suffix(b"\n") else {
        return false;
    };
    raw.len() <= max_line && raw.strip_suffix(b"\r").unwrap_or(raw) == HEARTBEAT_REPLY
}

/// What a received line is, for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// [`HEARTBEAT_REPLY`]: the peer answered a heartbeat; not echoed.
    HeartbeatReply,
    /// Anything else: data, to be echoed.
    Data(&'a [u8]),
}

/// Tells a heartbeat answer from data. `line` is a decoded line (no `\n` or `\r\n`).
pub fn classify(line: &[u8]) -> Message<'_> {
    if line == HEARTBEAT_REPLY {
        Message::HeartbeatReply
    } else {
        Message::Data(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_heartbeat_line_is_the_heartbeat_encoded() {
        let mut encoded = Vec::new();
        encode_line(&mut encoded, HEARTBEAT);
        assert_eq!(encoded, HEARTBEAT_LINE);
    }

    /// An owned [`Frame`], to collect what the decoder yields.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Got {
        Line(Vec<u8>),
        TooLong,
    }

    fn line(bytes: &[u8]) -> Got {
        Got::Line(bytes.to_vec())
    }

    /// Feeds `chunks` one read at a time, checking the memory bound after every read.
    fn decode_with(decoder: &mut LineDecoder, max_line: usize, chunks: &[&[u8]]) -> Vec<Got> {
        let mut got = Vec::new();
        for chunk in chunks {
            decoder.feed(max_line, chunk, |frame| {
                got.push(match frame {
                    Frame::Line(l) => line(l),
                    Frame::TooLong => Got::TooLong,
                })
            });
            assert!(
                decoder.pending() <= max_line,
                "pending {}",
                decoder.pending()
            );
            assert!(decoder.partial.capacity() <= max_line);
            assert_eq!(decoder.pending() == 0, decoder.is_unallocated());
        }
        got
    }

    fn decode(max_line: usize, chunks: &[&[u8]]) -> Vec<Got> {
        decode_with(&mut LineDecoder::new(), max_line, chunks)
    }

    /// `input` cut into pieces of `size` bytes.
    fn pieces(input: &[u8], size: usize) -> Vec<&[u8]> {
        input.chunks(size).collect()
    }

    /// Every way of cutting `input` in two, and in one-byte reads, yields the same lines.
    fn same_at_every_split(max_line: usize, input: &[u8], want: &[Got]) {
        assert_eq!(decode(max_line, &[input]), want, "whole");
        assert_eq!(
            decode(max_line, &pieces(input, 1)),
            want,
            "one byte at a time"
        );
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(decode(max_line, &[a, b]), want, "cut at {cut}");
        }
    }

    #[test]
    fn finish_passes_on_an_unterminated_last_line_once() {
        let mut decoder = LineDecoder::new();
        let mut got = Vec::new();
        decoder.feed(16, b"one\ntwo", |f| got.push(format!("{f:?}")));
        decoder.finish(|f| got.push(format!("{f:?}")));
        decoder.finish(|f| got.push(format!("{f:?}")));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[1].contains("[116, 119, 111]"), "\"two\": {got:?}");
        assert!(decoder.is_at_rest());
        let mut dropped = LineDecoder::new();
        let mut frames = 0;
        dropped.feed(4, b"far too long", |_| frames += 1);
        dropped.finish(|_| frames += 1);
        assert_eq!(
            frames, 1,
            "only the TooLong: a dropped line is not passed on"
        );
    }

    #[test]
    fn lines_split_at_every_point() {
        let input = b"Hello, there\n\nsecond line\r\nx\n";
        let want = [
            line(b"Hello, there"),
            line(b""),
            line(b"second line"),
            line(b"x"),
        ];
        same_at_every_split(DEFAULT_MAX_LINE, input, &want);
        for size in 2..input.len() {
            assert_eq!(
                decode(DEFAULT_MAX_LINE, &pieces(input, size)),
                want,
                "size {size}"
            );
        }
    }

    #[test]
    fn crlf_is_stripped_even_when_split_between_reads() {
        assert_eq!(
            decode(100, &[b"abc\r", b"\ndef\r\n"]),
            [line(b"abc"), line(b"def")]
        );
        assert_eq!(decode(100, &[b"\r", b"\n"]), [line(b"")]);
        assert_eq!(decode(100, &[b"\r\n\r\n"]), [line(b""), line(b"")]);
    }

    #[test]
    fn only_one_cr_before_the_newline_is_dropped() {
        assert_eq!(decode(100, &[b"a\r\r\n"]), [line(b"a\r")]);
    }

    #[test]
    fn lone_cr_mid_line_is_data() {
        same_at_every_split(
            100,
            b"a\rb\r\rc\n\rd\n",
            &[line(b"a\rb\r\rc"), line(b"\rd")],
        );
    }

    #[test]
    fn empty_lines_are_lines() {
        same_at_every_split(100, b"\n\n\n", &[line(b""), line(b""), line(b"")]);
    }

    #[test]
    fn non_utf8_and_nul_bytes_are_kept_byte_for_byte() {
        let input = b"\xff\xfe\x00\x80a\x00\n\xc3\x28\n";
        same_at_every_split(
            100,
            input,
            &[line(b"\xff\xfe\x00\x80a\x00"), line(b"\xc3\x28")],
        );
    }

    #[test]
    fn unterminated_line_is_held_not_yielded() {
        let mut decoder = LineDecoder::new();
        assert_eq!(
            decode_with(&mut decoder, 100, &[b"one\ntw"]),
            [line(b"one")]
        );
        assert_eq!(decoder.pending(), 2);
        assert!(!decoder.is_at_rest());
        assert_eq!(decode_with(&mut decoder, 100, &[b"o\n"]), [line(b"two")]);
    }

    #[test]
    fn exactly_at_limit_is_accepted() {
        let input = b"12345678\n";
        same_at_every_split(8, input, &[line(b"12345678")]);
        // The `\r` of a `\r\n` ending counts towards the limit.
        same_at_every_split(8, b"1234567\r\n", &[line(b"1234567")]);
    }

    #[test]
    fn one_over_limit_is_too_long_once_then_decoding_resumes() {
        let want = [line(b"ok"), Got::TooLong, line(b"next"), line(b"")];
        same_at_every_split(8, b"ok\n123456789\nnext\n\n", &want);
        same_at_every_split(8, b"ok\n12345678\r\nnext\n\n", &want);
        // Far over the limit, in one read and split.
        let mut long = b"ok\n".to_vec();
        long.extend_from_slice(&[b'z'; 100]);
        long.extend_from_slice(b"\nnext\n\n");
        same_at_every_split(8, &long, &want);
    }

    #[test]
    fn too_long_is_reported_when_the_limit_is_crossed_not_at_the_newline() {
        let mut decoder = LineDecoder::new();
        assert_eq!(decode_with(&mut decoder, 4, &[b"abcd"]), []);
        assert_eq!(decode_with(&mut decoder, 4, &[b"e"]), [Got::TooLong]);
        assert!(decoder.is_unallocated());
        assert!(!decoder.is_at_rest(), "still dropping up to the newline");
        assert_eq!(decode_with(&mut decoder, 4, &[b"fgh", b"ij"]), []);
        assert_eq!(decode_with(&mut decoder, 4, &[b"k\nab\n"]), [line(b"ab")]);
        assert!(decoder.is_at_rest());
    }

    #[test]
    fn ten_megabytes_without_newline_stay_within_the_limit() {
        let max_line = DEFAULT_MAX_LINE;
        let chunk = vec![b'x'; 1024 * 1024];
        let mut decoder = LineDecoder::new();
        let mut got = Vec::new();
        for _ in 0..10 {
            got.extend(decode_with(&mut decoder, max_line, &[&chunk]));
            assert!(decoder.pending() <= max_line);
            assert!(decoder.is_unallocated());
        }
        assert_eq!(got, [Got::TooLong]);
        let tail = decode_with(&mut decoder, max_line, &[b"still long\nafter\n"]);
        assert_eq!(tail, [line(b"after")]);
    }

    #[test]
    fn line_growing_towards_the_limit_never_holds_more_than_the_limit() {
        let max_line = 1000;
        let mut decoder = LineDecoder::new();
        let input = vec![b'y'; max_line];
        assert_eq!(decode_with(&mut decoder, max_line, &pieces(&input, 7)), []);
        assert_eq!(decoder.pending(), max_line);
        assert_eq!(decoder.partial.capacity(), max_line);
        assert_eq!(
            decode_with(&mut decoder, max_line, &[b"\n"]),
            [line(&input)]
        );
    }

    #[test]
    fn partial_buffer_is_released_after_a_split_line_completes() {
        let mut decoder = LineDecoder::new();
        assert!(decoder.is_unallocated());
        decode_with(&mut decoder, 100, &[b"whole\n"]);
        assert!(decoder.is_unallocated(), "whole lines are not copied");
        decode_with(&mut decoder, 100, &[b"spl"]);
        assert!(!decoder.is_unallocated());
        decode_with(&mut decoder, 100, &[b"it\n"]);
        assert!(decoder.is_unallocated());
        assert!(decoder.is_at_rest());
    }

    #[test]
    fn whole_lines_are_slices_of_the_input() {
        let input = b"a\nbb\n";
        let mut decoder = LineDecoder::new();
        let range = input.as_ptr_range();
        decoder.feed(100, input, |frame| match frame {
            Frame::Line(l) => assert!(range.contains(&l.as_ptr())),
            Frame::TooLong => panic!("too long"),
        });
    }

    #[test]
    fn heartbeat_reply_is_told_from_data() {
        assert_eq!(classify(HEARTBEAT_REPLY), Message::HeartbeatReply);
        assert_eq!(classify(b"Hello, there"), Message::Data(b"Hello, there"));
        assert_eq!(classify(HEARTBEAT), Message::Data(HEARTBEAT));
        assert_eq!(
            classify(b"Echoing...heartbeat "),
            Message::Data(b"Echoing...heartbeat ")
        );
        assert_eq!(classify(b""), Message::Data(b""));
        // With a `\r\n` ending the decoder drops the `\r`, so the reply is still recognised.
        let got = decode(100, &[b"Echoing...heartbeat\r\n"]);
        assert_eq!(got, [line(HEARTBEAT_REPLY)]);
    }

    #[test]
    fn encoders_append_lines() {
        let mut out = b"x\n".to_vec();
        encode_line(&mut out, HEARTBEAT);
        encode_echo(&mut out, b"Hello, there");
        encode_too_long(&mut out, DEFAULT_MAX_LINE);
        encode_line(&mut out, b"");
        let want: &[u8] = b"x\nheartbeat\nEchoing...Hello, there\n\
                            Error: line too long (limit 65536 bytes)\n\n";
        assert_eq!(out, want);
    }

    /// Lines of random bytes (no `\n`, `\r` allowed anywhere) and whether each ends in `\r\n`.
    fn wire_lines(max_len: usize) -> impl Strategy<Value = Vec<(Vec<u8>, bool)>> {
        let byte = any::<u8>().prop_filter("no newline", |b| *b != b'\n');
        let one = (prop::collection::vec(byte, 0..max_len), any::<bool>());
        prop::collection::vec(one, 0..20)
    }

    /// The bytes on the wire, and what a decoder with limit `max_line` should yield: the
    /// line limit counts every byte before the `\n`, and one `\r` before it is dropped.
    fn wire_and_expected(lines: &[(Vec<u8>, bool)], max_line: usize) -> (Vec<u8>, Vec<Got>) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for (content, crlf) in lines {
            let start = wire.len();
            wire.extend_from_slice(content);
            if *crlf {
                wire.push(b'\r');
            }
            let raw = &wire[start..];
            want.push(if raw.len() > max_line {
                Got::TooLong
            } else {
                line(raw.strip_suffix(b"\r").unwrap_or(raw))
            });
            wire.push(b'\n');
        }
        (wire, want)
    }

    /// `wire` cut into reads whose sizes cycle through `sizes`.
    fn chunked<'a>(wire: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = wire;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }

    proptest! {
        /// Any chunking yields exactly the lines that were sent, in order, each once.
        #[test]
        fn any_chunking_yields_the_same_lines(
            lines in wire_lines(200),
            sizes in prop::collection::vec(1usize..300, 1..10),
        ) {
            let (wire, want) = wire_and_expected(&lines, DEFAULT_MAX_LINE);
            let mut decoder = LineDecoder::new();
            prop_assert_eq!(decode_with(&mut decoder, DEFAULT_MAX_LINE, &chunked(&wire, &sizes)), want);
            prop_assert!(decoder.is_at_rest());
        }

        /// With a small limit, each line over it yields one `TooLong`, the others a `Line`,
        /// and the decoder never holds more than the limit.
        #[test]
        fn small_limit_yields_one_too_long_per_overlong_line(
            lines in wire_lines(200),
            sizes in prop::collection::vec(1usize..100, 1..10),
            max_line in 0usize..40,
            tail in prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..60),
        ) {
            let (mut wire, mut want) = wire_and_expected(&lines, max_line);
            wire.extend_from_slice(&tail);
            if tail.len() > max_line {
                // Reported when it crosses the limit, before any newline arrives.
                want.push(Got::TooLong);
            }
            let mut decoder = LineDecoder::new();
            prop_assert_eq!(decode_with(&mut decoder, max_line, &chunked(&wire, &sizes)), want);
            if tail.len() <= max_line {
                prop_assert_eq!(decoder.pending(), tail.len());
            } else {
                prop_assert_eq!(decoder.pending(), 0);
            }
        }
    }

    /// Lines for the echo paths: random bytes (`\r` anywhere), empty lines and heartbeat
    /// answers, each ending in `\n` or `\r\n`; then an unterminated tail.
    fn echo_wire(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
        let byte = any::<u8>().prop_filter("no newline", |b| *b != b'\n');
        let content = prop_oneof![
            4 => prop::collection::vec(byte.clone(), 0..max_len),
            1 => (60usize..300).prop_map(|n| vec![b'x'; n]),
            1 => Just(HEARTBEAT_REPLY.to_vec()),
            1 => Just(Vec::new()),
        ];
        let one = (content, any::<bool>());
        (
            prop::collection::vec(one, 0..30),
            prop::collection::vec(byte, 0..max_len),
        )
            .prop_map(|(lines, tail)| {
                let mut wire = Vec::new();
                for (content, crlf) in lines {
                    wire.extend_from_slice(&content);
                    wire.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
                wire.extend_from_slice(&tail);
                wire
            })
    }

    /// `wire` cut at the given points (any order, repeats allowed: empty reads too).
    fn cut_at(wire: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        points
            .windows(2)
            .map(|w| wire[w[0]..w[1]].to_vec())
            .collect()
    }

    /// The line-by-line reference: `feed`, then `answer` for each frame.
    fn echo_line_by_line(
        decoder: &mut LineDecoder,
        max_line: usize,
        read: &[u8],
        out: &mut Vec<u8>,
    ) -> Echoed {
        let mut tally = Echoed::default();
        decoder.feed(max_line, read, |f| answer(max_line, f, out, &mut tally));
        tally
    }

    #[test]
    fn a_lone_reply_is_exactly_one_heartbeat_answer_line() {
        assert!(is_lone_reply(100, b"Echoing...heartbeat\n"));
        assert!(is_lone_reply(100, b"Echoing...heartbeat\r\n"));
        // Over the limit it is a line too long, answered with an error line.
        assert!(is_lone_reply(19, b"Echoing...heartbeat\n"));
        assert!(!is_lone_reply(18, b"Echoing...heartbeat\n"));
        assert!(!is_lone_reply(19, b"Echoing...heartbeat\r\n"));
        for not in [
            &b"Echoing...heartbeat"[..],
            b"Echoing...heartbeat\r",
            b"Echoing...heartbeat\r\r\n",
            b"Echoing...heartbeat\nx",
            b"Echoing...heartbeat\n\n",
            b"xEchoing...heartbeat\n",
            b"\n",
            b"",
        ] {
            assert!(
                !is_lone_reply(100, not),
                "{:?}",
                String::from_utf8_lossy(not)
            );
        }
    }

    #[test]
    fn echo_lines_answers_like_the_reference() {
        let input =
            b"a\r\nEchoing...heartbeat\r\n\n0123456789abcdefghijk\nEchoing...heartbeat\nb\r\r\ntail";
        let mut out = Vec::new();
        let got = echo_lines(20, input, &mut out);
        let want: &[u8] = b"Echoing...a\nEchoing...\n\
                            Error: line too long (limit 20 bytes)\nEchoing...b\r\n";
        assert_eq!(out, want, "{}", String::from_utf8_lossy(&out));
        let counts = Echoed {
            lines: 3,
            too_long: 1,
            replies: 2,
            consumed: input.len() - 4,
        };
        assert_eq!(got, counts);
    }

    /// Every line length around the fixed-size copies (16 and 64 bytes with the `\n`), with
    /// and without `\r`, answers and limits on either side of them, in one read and with the
    /// read ending right after a line (so a fixed-size copy would reach past the input):
    /// byte-identical to the line-by-line path.
    #[test]
    fn echo_lines_matches_the_reference_at_every_copy_size() {
        let mut wire = Vec::new();
        for len in 0..=70 {
            for ending in [&b"\n"[..], b"\r\n"] {
                wire.extend((0..len).map(|i| b'a' + (i % 26) as u8));
                wire.extend_from_slice(ending);
            }
            wire.extend_from_slice(HEARTBEAT_REPLY);
            wire.extend_from_slice(b"\n");
        }
        for max_line in [0, 13, 14, 15, 16, 19, 20, 62, 63, 64, DEFAULT_MAX_LINE] {
            for cut in [wire.len(), wire.len() - 1, 200, 17] {
                let read = &wire[..cut];
                let mut got_out = Vec::new();
                let got = echo_lines(max_line, read, &mut got_out);
                let last = read.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let mut want_out = Vec::new();
                let want = echo_line_by_line(
                    &mut LineDecoder::new(),
                    max_line,
                    &read[..last],
                    &mut want_out,
                );
                assert_eq!(
                    got,
                    Echoed {
                        consumed: last,
                        ..want
                    },
                    "max_line {max_line}, cut {cut}"
                );
                assert_eq!(got_out, want_out, "max_line {max_line}, cut {cut}");
            }
        }
    }

    proptest! {
        /// The per-read path and the line-by-line path give byte-identical output, the same
        /// counts and the same decoder state after every read, for any input cut anywhere
        /// and any line limit.
        #[test]
        fn per_read_echo_matches_line_by_line(
            wire in echo_wire(60),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
            max_line in prop_oneof![0usize..40, Just(DEFAULT_MAX_LINE)],
        ) {
            let (mut fast, mut slow) = (LineDecoder::new(), LineDecoder::new());
            let (mut fast_out, mut slow_out) = (Vec::new(), Vec::new());
            for read in cut_at(&wire, &cuts) {
                let got = fast.feed_echo(max_line, &read, &mut fast_out);
                let want = echo_line_by_line(&mut slow, max_line, &read, &mut slow_out);
                prop_assert_eq!(got, want);
                prop_assert_eq!(&fast_out, &slow_out);
                prop_assert_eq!(fast.pending(), slow.pending());
                prop_assert_eq!(fast.is_at_rest(), slow.is_at_rest());
                prop_assert_eq!(fast.heap_bytes(), slow.heap_bytes());
            }
        }

        /// A whole read through `echo_lines` alone answers exactly its complete lines.
        #[test]
        fn echo_lines_stops_after_the_last_newline(wire in echo_wire(60), max_line in 0usize..80) {
            let mut out = Vec::new();
            let got = echo_lines(max_line, &wire, &mut out);
            let last = wire.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            prop_assert_eq!(got.consumed, last);
            let mut want_out = Vec::new();
            let want = echo_line_by_line(&mut LineDecoder::new(), max_line, &wire[..last], &mut want_out);
            prop_assert_eq!(Echoed { consumed: last, ..want }, got);
            prop_assert_eq!(out, want_out);
        }
    }
}
