//! A fixed pipelined-echo workload through the server core, for counting instructions (the
//! machine is shared, so timings are noise; `valgrind --tool=callgrind` counts are not).
//!
//! One peer sends `READS` reads of `READ_BYTES` bytes of `Hello, there\n` lines (or lines of
//! `LINE_BYTES`, `\n` included, if given), cut at read
//! boundaries as a socket would cut them (so most reads begin and end inside a line, as in
//! the scale bench's pipelining phase); the fake kernel takes every write whole. Only
//! [`drive`] is measured:
//!
//! ```text
//! cargo build --release --example echo_pipeline
//! valgrind --tool=callgrind --toggle-collect='*echo_pipeline::drive*' \
//!     target/release/examples/echo_pipeline [READS] [READ_BYTES] [LINE_BYTES]
//! ```
//! Instructions per echoed line = the `Collected` count / the lines the program prints.
//! Callgrind counts each step of a `rep movsb`/`rep stosb` (the C library's bulk copy and
//! fill) as one instruction, so compare bulk-copying variants by the time printed instead.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat::cores::allow::AllowList;
use heartbeat::cores::liveness::Timing;
use heartbeat::server::core::{Action, Admission, ServerCore, Settings};

const LINE: &[u8] = b"Hello, there\n";

fn settings() -> Settings {
    Settings {
        timing: Timing {
            idle: Duration::from_secs(3600),
            interval: Duration::from_secs(600),
            count: 3,
        },
        tick: Duration::from_millis(1),
        max_line: 64 * 1024,
        max_write_buffer: 1 << 20,
        max_buffered: 256 << 20,
        max_connections: 10,
        allow: AllowList::default(),
        drain: Duration::ZERO,
        jitter_percent: 0,
        jitter_seed: 1,
        sessions: false,
        heartbeat_reports: false,
        max_header_waits: 16,
    }
}

/// Feeds every read to the core and carries out its actions; returns the bytes written.
#[inline(never)]
fn drive(core: &mut ServerCore, key: usize, now: Instant, reads: &[&[u8]]) -> usize {
    let mut written = 0;
    for read in reads {
        core.handle_read(now, key, read);
        while let Some(action) = core.poll_action() {
            if let Action::Write(k) = action {
                let n = black_box(core.output(k)).len();
                written += n;
                core.handle_written(now, k, Ok(n));
            }
        }
    }
    written
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let reads = args.next().and_then(Result::ok).unwrap_or(200);
    let read_bytes = args.next().and_then(Result::ok).unwrap_or(64 * 1024);
    let line = match args.next().and_then(Result::ok) {
        Some(len) if len > 0 => [&vec![b'x'; len - 1][..], b"\n"].concat(),
        _ => LINE.to_vec(),
    };
    // A few reads' worth of lines, replayed: a server reads into one buffer the kernel has
    // just filled, so the input should be in cache, not streamed from memory. The stream
    // ends at a line's end, so a replay starts a line where the last read ended one.
    let distinct = reads.min(8);
    let total = distinct * read_bytes / line.len() * line.len();
    let stream = line.repeat(total / line.len());
    let cuts: Vec<&[u8]> = stream.chunks(read_bytes).collect();
    let rounds = reads.div_ceil(cuts.len());
    let replayed: Vec<&[u8]> = (0..rounds).flat_map(|_| cuts.iter().copied()).collect();

    let now = Instant::now();
    let mut core = ServerCore::new(now, settings());
    let Admission::Admitted(key) = core.handle_accept(now, SocketAddr::from(([127, 0, 0, 1], 9)))
    else {
        eprintln!("echo_pipeline: the core refused the peer");
        std::process::exit(2);
    };
    while core.poll_action().is_some() {}
    let started = Instant::now();
    let written = drive(&mut core, key, now, &replayed);
    let took = started.elapsed();
    let lines = rounds * stream.len() / line.len();
    println!(
        "{} reads of {read_bytes} B, {lines} lines echoed, {written} bytes written; {:.2} ns \
         a line (wall time: noise unless the machine is quiet)",
        replayed.len(),
        took.as_nanos() as f64 / lines as f64
    );
    let echo_len = line.len() + heartbeat::cores::protocol::ECHO_PREFIX.len();
    assert_eq!(written, lines * echo_len, "every line echoed once");
}
