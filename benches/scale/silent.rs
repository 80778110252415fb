//! Figure 5, close lateness: silent peers send one line and never answer. How late is their
//! End Connection sent, as heartbeat measures it itself (read from the summary it prints at
//! exit), and how late does it arrive at the peer (timed in this process, for both servers)
//! against the rule's due time: a full interval after the last heartbeat arrived, so that
//! the figure is the server's lateness for that step, not the sum of every step's.
//! And the floor under both: how late the machine wakes a bare timer loop, just before.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use heartbeat::ops::stats::Percentiles;

use crate::drivers;
use crate::figures::{
    Figures, FLOOR, NOT_MEASURED, PEER_LATE, PEER_READ_LATE, SERVER_LATE, SERVER_LOOP, SERVER_WAKE,
};
use crate::machine::wake_up_floor;
use crate::server::ServerProc;
use crate::{Kind, Run, SILENT_TIMING};

/// The labels of the lateness rows in heartbeat's exit summary (`ServerStats::summary`).
const LATENESS_LABEL: &str = "End Connection lateness";
const LOOP_LABEL: &str = "the loop's share";
const WAKE_LABEL: &str = "loop wake-up delay (OS)";

/// Figure 5: N silent peers against one server; heartbeat's own figures from its summary,
/// arrival at the peers for both.
pub fn silent_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    fig.silent_runs += 1;
    let nth = fig.silent_runs;
    let sizes = run.sizes;
    let timing = SILENT_TIMING;
    if fig.kind != Kind::Heartbeat {
        for i in SERVER_LATE.into_iter().chain([SERVER_LOOP, SERVER_WAKE]) {
            fig.fail(i, NOT_MEASURED);
        }
    }
    let spread = Duration::from_secs_f64(sizes.silent as f64 / f64::from(sizes.silent_rate.max(1)));
    // Over as long as the closes will take, at heartbeat's tick.
    match wake_up_floor(sizes.tick, spread) {
        Ok(floor) => {
            fig.set_run(FLOOR[0], ms(floor.p99_us));
            fig.set_run(FLOOR[1], ms(floor.max_us));
            fig.notes.push(format!(
                "run {nth}: the machine just before the silent phase: a bare loop sleeping one tick at a \
                 time, woken by the same timerfd as heartbeat's, nothing else running, woke \
                 late by {} ({} wake-ups)",
                row(&floor, 3),
                floor.count
            ));
        }
        Err(why) => {
            for i in FLOOR {
                fig.fail(i, &format!("wake-up floor: {why}"));
            }
        }
    }
    let server = ServerProc::start(fig.kind, timing, sizes.tick)?;
    let budget = spread + timing.idle + timing.interval * timing.count + Duration::from_secs(30);
    let results = run.rt.block_on(drivers::silent_peers(
        server.addr,
        sizes.silent,
        sizes.silent_rate,
        timing,
        budget,
    ));
    let output = server.stop()?;
    let mut close = micros_histogram()?;
    let mut close_kernel = micros_histogram()?;
    let mut unstamped = 0;
    let mut close_old = micros_histogram()?;
    let mut echo = micros_histogram()?;
    let mut first_heartbeat = micros_histogram()?;
    let mut anomalies: BTreeMap<String, usize> = BTreeMap::new();
    for result in results {
        match result {
            Ok(times) if times.close_late_us < 0 || times.first_heartbeat_late_us < 0 => {
                *anomalies
                    .entry("heartbeat or End Connection arrived early".into())
                    .or_default() += 1
            }
            Ok(times) => {
                close.saturating_record(times.close_step_late_us.max(1) as u64);
                match times.kernel_close_step_late_us {
                    Some(us) => close_kernel.saturating_record(us.max(1) as u64),
                    None => unstamped += 1,
                }
                close_old.saturating_record((times.close_late_us as u64).max(1));
                echo.saturating_record(times.echo_us.max(1));
                first_heartbeat.saturating_record((times.first_heartbeat_late_us as u64).max(1));
            }
            Err(why) => *anomalies.entry(why).or_default() += 1,
        }
    }
    let bad: usize = anomalies.values().sum();
    fig.silent_ok = Some(fig.silent_ok.unwrap_or(true) && bad == 0);
    fig.notes.push(format!(
        "silent peers, run {nth}: {} of {} got exactly {} heartbeats, End Connection, then EOF{}",
        close.len(),
        sizes.silent,
        timing.count,
        if bad == 0 { "" } else { "; the others:" }
    ));
    for (why, k) in anomalies.iter().take(5) {
        fig.notes.push(format!("  {k} × {why}"));
    }
    if fig.kind == Kind::Heartbeat {
        server_side(fig, &output, sizes.silent);
    }
    if close.is_empty() {
        return Err("no silent peer saw its End Connection".to_string());
    }
    let read_at_peer = Percentiles::of(&close);
    for (i, us) in PEER_READ_LATE.into_iter().zip(key_figures(&read_at_peer)) {
        fig.set_run(i, ms(us));
    }
    if close_kernel.is_empty() {
        for i in PEER_LATE {
            fig.fail(i, "the kernel gave no receive timestamps (SO_TIMESTAMPNS)");
        }
    } else {
        let at_peer = Percentiles::of(&close_kernel);
        for (i, us) in PEER_LATE.into_iter().zip(key_figures(&at_peer)) {
            fig.set_run(i, ms(us));
        }
        fig.notes.push(format!(
            "silent peers, run {nth}: close lateness at the peer's socket = End Connection's arrival − \
             (the last heartbeat's arrival + interval {} ms), the rule's due time, both from \
             the kernel's receive timestamps (SO_TIMESTAMPNS; below 1 µs counts as 1 µs): {}{}",
            timing.interval.as_millis(),
            row(&at_peer, 3),
            if unstamped == 0 {
                String::new()
            } else {
                format!("; {unstamped} peers without a stamp of their own left out")
            }
        ));
    }
    fig.notes.push(format!(
        "silent peers, run {nth}: the same, as the driver's task read each line (its one thread serves \
         every peer, so its delays count too): {}",
        row(&read_at_peer, 2)
    ));
    fig.notes.push(format!(
        "silent peers, run {nth}: for comparison, against the fixed schedule line sent + idle {} ms + {} × \
         {} ms (every step's lateness added up): {}",
        timing.idle.as_millis(),
        timing.count,
        timing.interval.as_millis(),
        row(&Percentiles::of(&close_old), 2)
    ));
    fig.notes.push(format!(
        "silent peers, run {nth}: for comparison, heartbeat 1 lateness at the peer {}; echo round trip of \
         the line {}",
        row(&Percentiles::of(&first_heartbeat), 2),
        row(&Percentiles::of(&echo), 2)
    ));
    Ok(())
}

/// Figure 5 as heartbeat measured it: the lateness row of the summary it printed on stdout
/// when it stopped, or why there is none.
fn server_side(fig: &mut Figures, output: &[String], peers: usize) {
    let nth = fig.silent_runs;
    let parsed = |label| output.iter().rev().find_map(|line| parse_row(line, label));
    let rows = [
        (
            SERVER_LOOP,
            LOOP_LABEL,
            "the loop's share: each close's lateness less the time the OS kept the loop asleep \
             past its alarm and that deadline",
        ),
        (
            SERVER_WAKE,
            WAKE_LABEL,
            "the OS woke heartbeat's loop after its alarm was due, late by",
        ),
    ];
    for (i, label, what) in rows {
        match parsed(label) {
            Some(p) => {
                fig.set_run(i, ms(p.max_us));
                fig.notes.push(format!(
                    "silent peers, run {nth}: {what} {} ({} samples, from the summary)",
                    row(&p, 3),
                    p.count
                ));
            }
            None => fig.fail(
                i,
                &format!("the server printed no parsable `{label}` line at exit"),
            ),
        }
    }
    let Some(sent) = parsed(LATENESS_LABEL) else {
        for i in SERVER_LATE {
            fig.fail(
                i,
                "the server printed no parsable `End Connection lateness` line at exit",
            );
        }
        return;
    };
    for (i, us) in SERVER_LATE.into_iter().zip(key_figures(&sent)) {
        fig.set_run(i, ms(us));
    }
    fig.notes.push(format!(
        "silent peers, run {nth}: close lateness measured in the server = End Connection sent − its due \
         time, from the summary it printed at exit: {} ({} samples for {peers} silent peers)",
        row(&sent, 3),
        sent.count
    ));
}

/// Parses one of heartbeat's latency rows, `  End Connection lateness p50 0.362ms  p90
/// 0.544ms  p99 0.692ms  p99.9 0.954ms  max 1.081ms  (10000 samples)`.
fn parse_row(line: &str, label: &str) -> Option<Percentiles> {
    let rest = line.trim_start().strip_prefix(label)?;
    let mut words = rest.split_whitespace();
    let mut us = BTreeMap::new();
    let count = loop {
        let word = words.next()?;
        if let Some(samples) = word.strip_prefix('(') {
            break samples.parse().ok()?;
        }
        let value: f64 = words.next()?.strip_suffix("ms")?.parse().ok()?;
        us.insert(word, (value * 1000.0).round() as u64);
    };
    Some(Percentiles {
        count,
        p50_us: *us.get("p50")?,
        p90_us: *us.get("p90")?,
        p99_us: *us.get("p99")?,
        p999_us: *us.get("p99.9")?,
        max_us: *us.get("max")?,
    })
}

/// The three figures of the table, in microseconds: p50, p99, max.
fn key_figures(p: &Percentiles) -> [u64; 3] {
    [p.p50_us, p.p99_us, p.max_us]
}

fn row(p: &Percentiles, decimals: usize) -> String {
    let f = |us: u64| format!("{:.*}", decimals, ms(us));
    format!(
        "p50 {} p90 {} p99 {} p99.9 {} max {} ms",
        f(p.p50_us),
        f(p.p90_us),
        f(p.p99_us),
        f(p.p999_us),
        f(p.max_us)
    )
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn micros_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| format!("histogram: {e}"))
}
