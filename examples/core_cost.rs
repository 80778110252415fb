//! What the server core costs in instructions, with no sockets: `echo` feeds one peer a
//! million lines and carries out the writes as the loop does; `beats` accepts 10,000 peers
//! and fires their first heartbeats in batches. Count instructions, which a busy machine
//! does not disturb (timings would):
//!
//! ```text
//! cargo build --release --example core_cost
//! valgrind --tool=callgrind target/release/examples/core_cost echo
//! valgrind --tool=callgrind target/release/examples/core_cost beats
//! ```
use heartbeat::cores::allow::AllowList;
use heartbeat::cores::liveness::Timing;
use heartbeat::server::core::{Action, Admission, ServerCore, Settings};
use std::time::{Duration, Instant};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let t0 = Instant::now();
    let settings = Settings {
        timing: Timing {
            idle: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            count: 3,
        },
        tick: Duration::from_micros(500),
        max_line: 64 * 1024,
        max_write_buffer: 1 << 20,
        max_buffered: 256 << 20,
        max_connections: 100_000,
        allow: AllowList::default(),
        drain: Duration::ZERO,
        jitter_percent: 0,
        jitter_seed: 1,
        sessions: false,

        max_header_waits: 16,
    };
    let mut core = ServerCore::new(t0, settings);
    let peers = if mode == "beats" { 10_000 } else { 1 };
    let mut keys = Vec::new();
    for i in 0..peers {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + (i % 60000) as u16));
        if let Admission::Admitted(k) = core.handle_accept(t0, addr) {
            keys.push(k);
        }
        while core.poll_action().is_some() {}
    }
    let mut out = 0usize;
    let mut carry = |core: &mut ServerCore, now: Instant| {
        while let Some(a) = core.poll_action() {
            if let Action::Write(k) = a {
                let n = core.output(k).len();
                out += n;
                written(core, now, k, n);
            }
        }
    };
    if mode == "beats" {
        let at = t0 + Duration::from_secs(1);
        core.handle_wakeup(at, None);
        fire(&mut core, at, &mut carry);
    } else {
        let line = b"Hello, there\n";
        for i in 0..1_000_000u32 {
            let now = t0 + Duration::from_nanos(u64::from(i));
            core.handle_read(now, keys[0], line);
            carry(&mut core, now);
        }
    }
    println!("{out}");
}
fn written(core: &mut ServerCore, now: Instant, k: usize, n: usize) {
    core.handle_written(now, k, Ok(n));
}
fn fire(core: &mut ServerCore, at: Instant, carry: &mut impl FnMut(&mut ServerCore, Instant)) {
    while core.handle_timeout(at) {
        carry(core, at);
    }
    carry(core, at);
}
