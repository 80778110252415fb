//! Heartbeat rounds over idle peers through the server core, for counting the user-space
//! instructions one round costs per peer (`valgrind --tool=callgrind`; the machine is
//! shared, so timings would be noise).
//!
//! `PEERS` peers connect and say nothing. Then, `ROUNDS` times: the clock jumps to the
//! core's next deadline, [`ServerCore::handle_timeout`] fires what is due (a heartbeat to
//! every peer, in batches, the loop's way), the fake kernel takes each write whole, and
//! every peer answers `Echoing...heartbeat` a moment later; the timer each answer left
//! armed fires once more and re-arms for the new idle deadline. Only [`rounds`] is counted:
//!
//! ```text
//! cargo build --release --example heartbeat_round
//! valgrind --tool=callgrind --toggle-collect='*heartbeat_round::rounds*' \
//!     target/release/examples/heartbeat_round [PEERS] [ROUNDS]
//! ```
//! Instructions per peer per round = the `Collected` count / the heartbeats it prints.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat::cores::allow::AllowList;
use heartbeat::cores::liveness::Timing;
use heartbeat::cores::protocol::HEARTBEAT_REPLY;
use heartbeat::server::core::{Action, Admission, Event, ServerCore, Settings};

/// How long after its heartbeat a peer's answer arrives.
const RTT: Duration = Duration::from_micros(200);

/// How long after the wake-up the loop reads the clock to stamp a batch.
const BATCH_READING: Duration = Duration::from_micros(3);

fn settings() -> Settings {
    Settings {
        timing: Timing {
            idle: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            count: 3,
        },
        // The server's default tick and jitter.
        tick: Duration::from_micros(500),
        max_line: 64 * 1024,
        max_write_buffer: 1 << 20,
        max_buffered: 256 << 20,
        max_connections: 1 << 20,
        allow: AllowList::default(),
        drain: Duration::ZERO,
        jitter_percent: 0,
        jitter_seed: 1,
        sessions: false,
        // Who was asked is read from the reports.
        heartbeat_reports: true,
        max_header_waits: 16,
    }
}

/// Carries out the core's actions as the loop would; returns the peers sent a heartbeat.
fn carry_out(core: &mut ServerCore, now: Instant, asked: &mut Vec<usize>, written: &mut usize) {
    while let Some(action) = core.poll_action() {
        match action {
            Action::Write(key) => {
                let n = black_box(core.output(key)).len();
                *written += n;
                core.handle_written(now, key, Ok(n));
            }
            Action::Report(key, Event::HeartbeatSent { .. }) => asked.push(key),
            Action::Report(_, event) => {
                black_box(event);
            }
            Action::Read(_) | Action::ShutdownWrite(_) | Action::Close(_) => {}
            Action::ReleaseMemory | Action::EndWait(..) => {}
        }
    }
}

/// Runs the core until `heartbeats` have been sent and answered; returns the bytes written.
#[inline(never)]
fn rounds(core: &mut ServerCore, heartbeats: usize, answer: &[u8]) -> usize {
    let (mut sent, mut written) = (0, 0);
    let mut asked = Vec::with_capacity(heartbeats);
    while sent < heartbeats {
        let Some(now) = core.poll_timeout() else {
            break;
        };
        core.handle_wakeup(now, None);
        loop {
            // The loop stamps a batch with a clock reading taken after the wake-up (see
            // `Server::fire_timers`), unless the alarm alone woke it.
            let sent_at = now + BATCH_READING;
            let more = core.handle_timeout(sent_at);
            carry_out(core, sent_at, &mut asked, &mut written);
            if !more {
                break;
            }
        }
        let answered_at = now + RTT;
        for key in asked.drain(..) {
            sent += 1;
            core.handle_read(answered_at, key, answer);
            carry_out(core, answered_at, &mut Vec::new(), &mut written);
        }
    }
    written
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let peers = args.next().and_then(Result::ok).unwrap_or(10_000);
    let round_count = args.next().and_then(Result::ok).unwrap_or(3);
    let t0 = Instant::now();
    let mut core = ServerCore::new(t0, settings());
    for i in 0..peers {
        let addr = SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 40_000));
        if !matches!(core.handle_accept(t0, addr), Admission::Admitted(_)) {
            eprintln!("heartbeat_round: peer {i} refused");
            std::process::exit(2);
        }
    }
    carry_out(&mut core, t0, &mut Vec::new(), &mut 0);
    let heartbeats = peers * round_count;
    let answer = [HEARTBEAT_REPLY, b"\n"].concat();
    let written = rounds(&mut core, heartbeats, &answer);
    let stats = core.stats();
    println!(
        "{peers} peers, {round_count} rounds: {} heartbeats sent, {} answered, {written} bytes written, {} open",
        stats.heartbeats_sent,
        stats.heartbeats_answered,
        core.open()
    );
}
