//! The phases behind figures 1–4 and 6 (figure 5 is in `silent`): the warm-up, N idle
//! connections held through a heartbeat round, N idle connections with far deadlines, and
//! pipelining. Each starts one server, loads it, reads it through `/proc`, and stops it.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::drivers;
use crate::figures::{
    Figures, ACCEPT, CPU_0, CPU_LINE, CPU_N, HELD, KERNEL, RSS, RSS_QUIET, WAKE_0, WAKE_N,
};
use crate::load::{client_line, wait_for_fds, Load};
use crate::proc::{
    context_switches, cpu_ticks, fd_count, rss_bytes, slab_bytes, slab_caches, socket_caches_grown,
};
use crate::server::ServerProc;
use crate::{progress, Kind, Run, FAR_TIMING, HOLD_TIMING};

/// The load client's N connections, all held by the server.
struct Opened {
    load: Load,
    /// The server's descriptors and RSS, and the machine's slab memory, before the first
    /// connection.
    fds0: u64,
    rss0: u64,
    slab0: u64,
    caches0: Option<BTreeMap<String, u64>>,
    /// From starting the client until the server held all N.
    secs: f64,
}

/// Opens the run's N idle connections to `server` with the load client and waits until the
/// server holds them all.
fn open_idle(run: &Run, server: &ServerProc, kind: Kind) -> Result<Opened, String> {
    let (pid, n) = (server.pid(), run.sizes.connections);
    let fds0 = fd_count(pid)?;
    let rss0 = rss_bytes(pid)?;
    let slab0 = slab_bytes()?;
    let caches0 = slab_caches();
    let load = Load::start(server.addr, n, run.sizes.connect_rate)?;
    let reached = match wait_for_fds(pid, fds0 + n as u64, load.started, Some(&load), kind) {
        Ok(at) => at,
        Err(why) => return Err(load.explain(why)),
    };
    let secs = (reached - load.started).as_secs_f64();
    Ok(Opened {
        load,
        fds0,
        rss0,
        slab0,
        caches0,
        secs,
    })
}

/// Opens and closes N connections to a heartbeat server that is not measured.
pub fn warm_up(run: &Run) -> Result<String, String> {
    let server = ServerProc::start(Kind::Heartbeat, FAR_TIMING, run.sizes.tick)?;
    let opened = open_idle(run, &server, Kind::Heartbeat)?;
    opened.load.finish()?;
    server.stop()?;
    Ok(format!(
        "warm-up: {} connections opened in {:.2} s and closed (not measured)",
        run.sizes.connections, opened.secs
    ))
}

/// Figures 1–3: N idle connections from the load client, held past the time when a peer
/// that did not answer its heartbeats would have been closed.
pub fn hold_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    let n = run.sizes.connections;
    let timing = HOLD_TIMING;
    let server = ServerProc::start(fig.kind, timing, run.sizes.tick)?;
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let Opened {
        load,
        fds0,
        rss0,
        slab0,
        caches0,
        secs,
    } = open_idle(run, &server, fig.kind)?;
    fig.set(ACCEPT, n as f64 / secs);
    if n as f64 / secs > 0.9 * f64::from(run.sizes.connect_rate) {
        fig.notes.push(format!(
            "hold: the accept rate is within 10% of the client's cap of {}/s: it measures the \
             cap more than the server (raise SCALE_CONNECT_RATE; the single-threaded load \
             client itself then becomes the limit, near 16,000-19,000/s on a 2-core machine)",
            run.sizes.connect_rate
        ));
    }
    progress(&format!(
        "{}: {n} connections in {secs:.2} s; settling through a heartbeat round",
        fig.kind.name()
    ));
    // Past L + idle + count·interval for every connection: one that did not answer is closed.
    let round = timing.idle + timing.interval * timing.count;
    thread::sleep(round + Duration::from_millis(500));
    let held = fd_count(pid)?.saturating_sub(fds0);
    let rss1 = rss_bytes(pid)?;
    let slab1 = slab_bytes()?;
    let sockets = caches0
        .zip(slab_caches())
        .and_then(|(before, after)| socket_caches_grown(&before, &after));
    fig.set(RSS, (rss1 as f64 - rss0 as f64) / n as f64);
    fig.set(KERNEL, (slab1 as f64 - slab0 as f64) / n as f64);
    fig.set(HELD, held as f64);
    let outcome = load.finish()?;
    let s = &outcome.summary;
    let dropped = s.failed + s.closed_by_server + s.errors;
    fig.held_ok = Some(
        held == n as u64
            && s.opened == n as u64
            && dropped == 0
            && s.heartbeats_answered >= n as u64,
    );
    fig.notes.push(format!(
        "hold: server held {held} of {n} after {:.1} s settling; client: {}",
        round.as_secs_f64() + 0.5,
        client_line(&outcome)
    ));
    fig.notes.push(format!(
        "hold: server RSS {:.1} MiB with none, {:.1} MiB with {n}; the machine's Slab {:.1} MiB \
         before, {:.1} MiB with {n} (both ends of each connection are on this host, and other \
         processes' kernel memory moves it too)",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        slab0 as f64 / 1048576.0,
        slab1 as f64 / 1048576.0
    ));
    if let Some(bytes) = sockets {
        fig.notes.push(format!(
            "hold: of the Slab growth, the sockets' own caches (TCP, sock_inode_cache, filp, \
             eventpoll_epi; one of each per end) {:.0} B per connection, both ends",
            bytes as f64 / n as f64
        ));
    }
    server.stop()?;
    Ok(())
}

/// Figure 6 (and 2b): wake-ups and CPU with no connection, then with N whose deadlines are
/// an hour away.
pub fn idle_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    let n = run.sizes.connections;
    let window = Duration::from_secs(run.sizes.idle_secs);
    let server = ServerProc::start(fig.kind, FAR_TIMING, run.sizes.tick)?;
    let pid = server.pid();
    thread::sleep(Duration::from_millis(500));
    let (wakeups, cpu_ms) = idle_window(pid, window, run.machine.clk_tck)?;
    fig.set(WAKE_0, wakeups);
    fig.set(CPU_0, cpu_ms);
    let Opened {
        load,
        fds0,
        rss0,
        secs,
        ..
    } = open_idle(run, &server, fig.kind)?;
    thread::sleep(Duration::from_secs(1));
    let rss1 = rss_bytes(pid)?;
    fig.set(RSS_QUIET, (rss1 as f64 - rss0 as f64) / n as f64);
    progress(&format!(
        "{}: {n} connections in {secs:.2} s; sampling {} s of idleness",
        fig.kind.name(),
        window.as_secs()
    ));
    let (wakeups, cpu_ms) = idle_window(pid, window, run.machine.clk_tck)?;
    let held = fd_count(pid)?.saturating_sub(fds0);
    let outcome = load.finish()?;
    if held != n as u64 {
        return Err(format!(
            "only {held} of {n} connections were still open after the idle window"
        ));
    }
    fig.set(WAKE_N, wakeups);
    fig.set(CPU_N, cpu_ms);
    fig.notes.push(format!(
        "idle: {n} connections opened in {secs:.2} s ({:.0}/s), all held through the window; \
         client: {}",
        n as f64 / secs,
        client_line(&outcome)
    ));
    server.stop()?;
    Ok(())
}

/// Wake-ups per second (context switches of all the server's threads) and CPU milliseconds
/// over `window`.
fn idle_window(pid: u32, window: Duration, clk_tck: u64) -> Result<(f64, f64), String> {
    let (switches0, ticks0) = (context_switches(pid)?, cpu_ticks(pid)?);
    let t0 = Instant::now();
    thread::sleep(window);
    let (switches1, ticks1) = (context_switches(pid)?, cpu_ticks(pid)?);
    let secs = t0.elapsed().as_secs_f64();
    let cpu_ms = (ticks1 - ticks0) as f64 * 1000.0 / clk_tck as f64;
    Ok(((switches1 - switches0) as f64 / secs, cpu_ms))
}

/// Figure 4: connections pipelining short lines in large writes; server CPU per echo. The
/// cost of a line when many arrive in one read: framing and copying, few system calls.
pub fn pipeline_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    let sizes = run.sizes;
    let (conns, lines) = (sizes.pipeline_conns, sizes.pipeline_lines);
    let server = ServerProc::start(fig.kind, FAR_TIMING, sizes.tick)?;
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let fds0 = fd_count(pid)?;
    let mut streams = run.rt.block_on(drivers::connect(server.addr, conns))?;
    wait_for_fds(pid, fds0 + conns as u64, Instant::now(), None, fig.kind)?;
    let per_round = (conns * lines) as u64;
    let ticks0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    let mut rounds = 0;
    loop {
        let (back, echoed) = run.rt.block_on(drivers::pipeline_round(streams, lines))?;
        streams = back;
        rounds += 1;
        if echoed != per_round {
            return Err(format!(
                "round {rounds}: {echoed} echoes, expected {per_round}"
            ));
        }
        let used = cpu_ticks(pid)? - ticks0;
        let enough = rounds >= sizes.pipeline_rounds && used >= sizes.pipeline_ticks;
        if enough || t0.elapsed() >= sizes.pipeline_max {
            break;
        }
    }
    let ticks = cpu_ticks(pid)? - ticks0;
    let wall = t0.elapsed().as_secs_f64();
    drop(streams);
    let total = per_round * rounds as u64;
    if ticks == 0 {
        return Err(format!(
            "the server used less than one clock tick for {total} lines; raise \
             SCALE_PIPELINE_LINES or SCALE_PIPELINE_TICKS"
        ));
    }
    let ns = ticks as f64 * 1e9 / run.machine.clk_tck as f64 / total as f64;
    fig.set_run(CPU_LINE, ns);
    let resolution = if ticks < 100 {
        format!(" (only {ticks} ticks: ±{:.0}%)", 100.0 / ticks as f64)
    } else {
        String::new()
    };
    fig.notes.push(format!(
        "pipelining, run {}: {ns:.1} ns a line; {total} echoes `Echoing...Hello, there` read and verified ({rounds} rounds \
         × {conns} connections × {lines} lines); server CPU {ticks} ticks{resolution} in \
         {wall:.2} s wall ({:.2} M lines/s)",
        fig.runs_of(CPU_LINE),
        total as f64 / wall / 1e6
    ));
    server.stop()?;
    Ok(())
}
