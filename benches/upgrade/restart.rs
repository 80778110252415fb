//! One row's restart, what operators do today: the same number of peers on a server started
//! with `--drain D`, SIGTERM (its peers are told `End Connection`, spread over D), a new
//! server started on the same port as soon as the old one has dropped its listener (the
//! `stopping:` log line), and the load client, run with `--reconnect`, reconnecting each
//! peer after its back-off. Measured: the client's reconnects, the time from SIGTERM until
//! the new server holds every peer, and the CPU over the window from SIGTERM until both
//! every peer is back and the old server has exited: the old and new servers' processes
//! (the new one's from its start), and the client's.

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::start::{self, count};
use crate::{progress, tree, Row, Settings};

/// Beyond the drain itself: the last peers' back-off and the old server's 1 s for its
/// last `End Connection` to be taken.
const SLACK: Duration = Duration::from_secs(60);
/// Tries to start the new server while the port is still taken (the old one's workers drop
/// their listeners one by one).
const BIND_TRIES: u32 = 50;

/// What a restart of a row measured.
pub struct Restarted {
    pub reconnects: u64,
    pub closed_by_server: u64,
    pub errors: u64,
    /// From SIGTERM until the new server held every peer.
    pub back_after: Duration,
    pub server_cpu_ns: u64,
    pub client_cpu_ns: u64,
}

pub fn run(s: &Settings, row: &Row) -> Result<Restarted, String> {
    s.fresh_binary()?;
    let mut old = start::server(s, row, "the old server", 0, None)?;
    let client = start::client(s, row, old.addr, true)?;
    start::connected(&old, &client, row.peers)?;
    crate::wait(s.settle)?;
    let (old0, client0) = (
        tree::cpu_ns(old.group.pgid, s.tick_ns),
        tree::cpu_ns(client.pgid, s.tick_ns),
    );
    let t0 = Instant::now();
    old.group.signal(Signal::SIGTERM)?;
    let deadline = t0 + s.drain + SLACK;
    // Each process that listened says `stopping:` once its listener is gone.
    let mut stopping = 0;
    while stopping < row.workers {
        match old.group.next_line(deadline)? {
            Some(line) if line.contains("stopping: telling") => stopping += 1,
            Some(_) => {}
            None if Instant::now() > deadline => {
                return Err(format!(
                    "the old server did not begin to stop{}",
                    old.group.said()
                ))
            }
            None => {}
        }
    }
    let new = start_on(s, row, old.addr.port(), old.files0)?;
    let mut back_after = None;
    let mut old_cpu = None;
    while back_after.is_none() || old_cpu.is_none() {
        if back_after.is_none() && new.held() >= row.peers as u64 {
            back_after = Some(t0.elapsed());
        }
        if old_cpu.is_none() && !old.group.alive() {
            // Read as zombies, before reaping.
            old_cpu = Some(tree::cpu_ns(old.group.pgid, s.tick_ns).saturating_sub(old0));
            old.group.reap();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} s after SIGTERM the new server holds {} of {} peers{}",
                (s.drain + SLACK).as_secs(),
                new.held(),
                row.peers,
                client.said()
            ));
        }
        if crate::interrupted() {
            return Err("interrupted".into());
        }
        thread::sleep(Duration::from_millis(5));
    }
    let server_cpu_ns = old_cpu.unwrap_or(0) + tree::cpu_ns(new.group.pgid, s.tick_ns);
    let client_cpu_ns = tree::cpu_ns(client.pgid, s.tick_ns).saturating_sub(client0);
    let back_after = back_after.unwrap_or_default();
    progress(&format!(
        "restarted: every peer back after {:.2} s",
        back_after.as_secs_f64()
    ));
    let summary = start::client_summary(client)?;
    let _ = new.group.stop(Duration::from_secs(30));
    let _ = old.group.stop(Duration::from_secs(5));
    Ok(Restarted {
        reconnects: count(&summary, "reconnects")?,
        closed_by_server: count(&summary, "closed_by_server")?,
        errors: count(&summary, "errors")?,
        back_after,
        server_cpu_ns,
        client_cpu_ns,
    })
}

/// Starts the new server on `port`, again while the old one still holds it.
fn start_on(s: &Settings, row: &Row, port: u16, files0: u64) -> Result<start::Server, String> {
    let mut last = String::new();
    for _ in 0..BIND_TRIES {
        match start::server(s, row, "the new server", port, Some(files0)) {
            Ok(server) => return Ok(server),
            Err(why) => last = why,
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "the new server could not start on port {port}: {last}"
    ))
}
