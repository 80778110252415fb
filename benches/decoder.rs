//! Line decoder cost per line: whole lines in a 64 KiB read (the common case, zero-copy)
//! and lines split across reads (copied into the partial buffer); and the server's echo of
//! them, line by line (`feed` calling `answer` per frame) beside per read (`feed_echo`: one
//! pass over the read's line ends, straight into the output).
//!
//! Line sizes are on the wire, `\n` included: a "16 B" line is 15 bytes and `\n`.
//! `cargo bench --bench decoder` prints time per line (`per_line`), bytes/s (`bytes`), and
//! time per echoed line (`echo/line_by_line/...` beside `echo/per_read/...`).

use std::hint::black_box;
use std::ops::Range;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use heartbeat::cores::protocol::{self, Echoed, Frame, LineDecoder, DEFAULT_MAX_LINE};

/// One read buffer's worth, as the loops use.
const READ_BUF: usize = 64 * 1024;

/// As many whole `size`-byte lines as fit in one read buffer, and how many that is.
fn read_of_lines(size: usize) -> (Vec<u8>, u64) {
    let count = READ_BUF / size;
    let mut buf = Vec::with_capacity(count * size);
    for i in 0..count {
        buf.extend((0..size - 1).map(|j| b'a' + ((i + j) % 26) as u8));
        buf.push(b'\n');
    }
    (buf, count as u64)
}

/// How one buffer of lines arrives.
#[derive(Clone, Copy)]
enum Reads {
    /// All in one read: every line is whole, nothing is copied.
    Whole,
    /// Seven bytes per read: most lines are split, some several times.
    ChunksOf7,
    /// Every line cut in two at its middle.
    Halves,
}

impl Reads {
    fn name(self) -> &'static str {
        match self {
            Reads::Whole => "whole_read",
            Reads::ChunksOf7 => "chunks_of_7",
            Reads::Halves => "halves",
        }
    }

    /// The byte ranges of `buf` (lines of `size` bytes) handed to each `feed`.
    fn cut(self, buf: &[u8], size: usize) -> Vec<Range<usize>> {
        match self {
            Reads::Whole => std::iter::once(0..buf.len()).collect(),
            Reads::ChunksOf7 => (0..buf.len())
                .step_by(7)
                .map(|s| s..(s + 7).min(buf.len()))
                .collect(),
            Reads::Halves => (0..buf.len())
                .step_by(size)
                .flat_map(|s| [s..s + size / 2, s + size / 2..s + size])
                .collect(),
        }
    }
}

/// Feeds every read to `decoder`; returns the sum of line lengths so nothing is optimised out.
fn decode(decoder: &mut LineDecoder, buf: &[u8], reads: &[Range<usize>]) -> usize {
    let mut total = 0;
    for read in reads {
        decoder.feed(DEFAULT_MAX_LINE, &buf[read.clone()], |frame| {
            if let Frame::Line(line) = frame {
                total += line.len() + 1;
            }
        });
    }
    total
}

fn bench(c: &mut Criterion, group_name: &str, per_line: bool) {
    let mut group = c.benchmark_group(group_name);
    for size in [16, 1024] {
        let (buf, lines) = read_of_lines(size);
        group.throughput(if per_line {
            Throughput::Elements(lines)
        } else {
            Throughput::Bytes(buf.len() as u64)
        });
        for how in [Reads::Whole, Reads::ChunksOf7, Reads::Halves] {
            let reads = how.cut(&buf, size);
            let mut decoder = LineDecoder::new();
            assert_eq!(decode(&mut decoder, &buf, &reads), buf.len());
            group.bench_function(BenchmarkId::new(how.name(), format!("{size}B")), |b| {
                b.iter(|| black_box(decode(&mut decoder, black_box(&buf), &reads)))
            });
        }
    }
    group.finish();
}

fn per_line(c: &mut Criterion) {
    bench(c, "per_line", true);
}

fn bytes(c: &mut Criterion) {
    bench(c, "bytes", false);
}

/// Echoes every read into `out` (cleared first), line by line or per read; returns the
/// bytes of output so nothing is optimised out.
fn echo(
    decoder: &mut LineDecoder,
    buf: &[u8],
    reads: &[Range<usize>],
    per_read: bool,
    out: &mut Vec<u8>,
) -> usize {
    out.clear();
    let mut tally = Echoed::default();
    for read in reads {
        let read = &buf[read.clone()];
        if per_read {
            tally.add(decoder.feed_echo(DEFAULT_MAX_LINE, read, out));
        } else {
            decoder.feed(DEFAULT_MAX_LINE, read, |frame| {
                protocol::answer(DEFAULT_MAX_LINE, frame, out, &mut tally)
            });
        }
    }
    out.len() + tally.lines
}

/// The server's echo path per line: the same reads answered line by line and per read.
fn echo_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    for size in [16, 1024] {
        let (buf, lines) = read_of_lines(size);
        group.throughput(Throughput::Elements(lines));
        for how in [Reads::Whole, Reads::Halves] {
            let reads = how.cut(&buf, size);
            let mut out = Vec::with_capacity(2 * buf.len());
            let want = echo(&mut LineDecoder::new(), &buf, &reads, false, &mut out);
            for (path, per_read) in [("line_by_line", false), ("per_read", true)] {
                let mut decoder = LineDecoder::new();
                assert_eq!(echo(&mut decoder, &buf, &reads, per_read, &mut out), want);
                let id = BenchmarkId::new(format!("{path}/{}", how.name()), format!("{size}B"));
                group.bench_function(id, |b| {
                    b.iter(|| {
                        black_box(echo(
                            &mut decoder,
                            black_box(&buf),
                            &reads,
                            per_read,
                            &mut out,
                        ))
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, per_line, bytes, echo_paths);
criterion_main!(benches);
