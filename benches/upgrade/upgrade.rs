//! One row's live upgrade: a server with the row's peers connected, a new copy of the binary
//! renamed over the file it was started from, SIGUSR2, and the wait for the takeover line of
//! each process (`live upgrade: took over N peers; the pause was … us`) and for the old
//! process(es) to exit. Measured: the pause (each new process's own figure), the window from
//! the signal until the old processes have exited, the CPU of the server's processes (old
//! and new) and of the client over that window, and, after a hold in which every peer sends
//! to the new process, the client's view: nothing closed, reconnected, failed or unanswered.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::start::{self, count};
use crate::{progress, tree, Row, Settings};

/// How long the takeover may take before the bench gives up on it (the server's own limit
/// for the new process to answer is 5 s).
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a live upgrade of a row measured.
pub struct Upgraded {
    /// Each new process's pause, in µs.
    pub pauses_us: Vec<u64>,
    pub window: Duration,
    pub server_cpu_ns: u64,
    pub client_cpu_ns: u64,
    /// The client's counts that must all be 0, by name.
    pub client_view: Vec<(&'static str, u64)>,
}

/// The upgrade's outcome: measured, or not available in this build (the server's line).
pub enum Outcome {
    Done(Upgraded),
    NotAvailable(String),
}

/// The client's counts that a live upgrade must leave at zero.
pub const MUST_BE_ZERO: [&str; 4] = ["closed_by_server", "reconnects", "errors", "unanswered"];

pub fn run(s: &Settings, row: &Row) -> Result<Outcome, String> {
    s.fresh_binary()?;
    let server = start::server(s, row, "the server", 0, None)?;
    let client = start::client(s, row, server.addr, false)?;
    start::connected(&server, &client, row.peers)?;
    crate::wait(s.settle)?;
    let mut group = server.group;
    // The operator's step: a new build renamed over the file (the running one keeps its
    // inode; the path now names the new file).
    let staged = s.dir.join("heartbeat-server.new");
    std::fs::copy(&s.source_exe, &staged).map_err(|e| format!("copying the binary: {e}"))?;
    std::fs::rename(&staged, &s.exe).map_err(|e| format!("renaming the new binary: {e}"))?;
    let old: Vec<u32> = match tree::top(group.pgid) {
        // With --workers the parent stays; its workers are replaced.
        Some(top) if row.workers > 1 => tree::live(group.pgid)
            .iter()
            .map(|m| m.pid)
            .filter(|&p| p != top)
            .collect(),
        Some(top) => vec![top],
        None => return Err(format!("the server exited{}", group.said())),
    };
    let (server0, client0) = (
        tree::cpu_ns(group.pgid, s.tick_ns),
        tree::cpu_ns(client.pgid, s.tick_ns),
    );
    let t0 = Instant::now();
    group.signal(Signal::SIGUSR2)?;
    let deadline = t0 + TAKEOVER_TIMEOUT;
    let mut pauses_us = Vec::new();
    let mut peers_taken = 0;
    while pauses_us.len() < row.workers {
        let Some(line) = group.next_line(deadline)? else {
            if !group.alive() {
                return Err(format!("the server exited after SIGUSR2{}", group.said()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {} takeover lines within {} s of SIGUSR2{}",
                    pauses_us.len(),
                    row.workers,
                    TAKEOVER_TIMEOUT.as_secs(),
                    group.said()
                ));
            }
            continue;
        };
        if line.contains("not built yet") {
            let said = line.split_once("] ").map_or(line.as_str(), |(_, m)| m);
            return Ok(Outcome::NotAvailable(said.to_string()));
        }
        // The server's `live upgrade given up: …`, or a `--workers` parent's `live upgrade
        // of worker K given up: …`.
        if line.contains("live upgrade") && line.contains(" given up: ") {
            return Err(format!("the upgrade failed: {line}"));
        }
        if let Some((peers, us)) = takeover(&line) {
            peers_taken += peers;
            pauses_us.push(us);
        }
    }
    // The window ends once every old process has exited (read as zombies, before reaping).
    while old.iter().any(|&pid| tree::running(pid)) {
        if Instant::now() > deadline {
            return Err(format!(
                "the old server processes had not exited {} s after SIGUSR2",
                TAKEOVER_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(2));
    }
    let window = t0.elapsed();
    let server_cpu_ns = tree::cpu_ns(group.pgid, s.tick_ns).saturating_sub(server0);
    let client_cpu_ns = tree::cpu_ns(client.pgid, s.tick_ns).saturating_sub(client0);
    group.reap();
    if peers_taken != row.peers as u64 {
        return Err(format!(
            "the new process(es) took over {peers_taken} peers, not {}",
            row.peers
        ));
    }
    progress(&format!(
        "upgraded: pause {} us (max), {:.1} ms from SIGUSR2 until the old process exited; \
         holding {} s so that every peer sends to the new process",
        pauses_us.iter().max().unwrap_or(&0),
        window.as_secs_f64() * 1e3,
        s.hold.as_secs_f64()
    ));
    crate::wait(s.hold)?;
    if !client.alive() {
        return Err(format!(
            "the load client exited during the hold{}",
            client.said()
        ));
    }
    let summary = start::client_summary(client)?;
    let mut client_view = Vec::new();
    for key in MUST_BE_ZERO {
        client_view.push((key, count(&summary, key)?));
    }
    let _ = group.stop(Duration::from_secs(30));
    Ok(Outcome::Done(Upgraded {
        pauses_us,
        window,
        server_cpu_ns,
        client_cpu_ns,
        client_view,
    }))
}

/// `… live upgrade: took over N peers; the pause was P us` → (N, P).
fn takeover(line: &str) -> Option<(u64, u64)> {
    let rest = line.split_once("live upgrade: took over ")?.1;
    let (peers, rest) = rest.split_once(" peers; the pause was ")?;
    let us = rest.strip_suffix(" us")?;
    Some((peers.trim().parse().ok()?, us.trim().parse().ok()?))
}
