//! Line decoder cost per line: whole lines in a 64 KiB read (the common case, zero-copy)
//! and lines split across reads (copied into the partial buffer).
//!
//! Line sizes are on the wire, `\n` included: a "16 B" line is 15 bytes and `\n`.
//! `cargo bench --bench decoder` prints time per line (`per_line`) and bytes/s (`bytes`).

use std::hint::black_box;
use std::ops::Range;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use heartbeat::cores::protocol::{Frame, LineDecoder, DEFAULT_MAX_LINE};

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

criterion_group!(benches, per_line, bytes);
criterion_main!(benches);
