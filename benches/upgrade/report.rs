//! What the bench prints: a header (the machine, its load, the settings, the command that
//! repeats the run), one table with the live upgrade and the restart side by side, the notes
//! that say how each figure was taken, the goals, and the verdict: a failed half, or
//! a client that saw anything closed, reconnected, failed or unanswered during a live
//! upgrade, fails the run.

use std::time::Duration;

use heartbeat::settings::config::format_duration;

use crate::upgrade::{Outcome, MUST_BE_ZERO};
use crate::{Measured, Row, Settings};

/// Issue 17's goals: the pause at 10,000 peers in one process, and at 100,000 across workers.
const GOALS: [(usize, bool, Duration); 2] = [
    (10_000, false, Duration::from_millis(50)),
    (100_000, true, Duration::from_millis(250)),
];

pub fn header(s: &Settings) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "# Live upgrade against a restart with --drain\n\n\
         machine: {cores} cores, Linux {}; load average at start: {}\n\
         peers: one line every {} each (server: 10 s × 3 after 30 s idle: no heartbeat due); \
         restart: --drain {}\n\
         repeat: {}\n",
        read("/proc/sys/kernel/osrelease"),
        loadavg(),
        format_duration(s.client_interval),
        format_duration(s.drain),
        s.reproduce()
    )
}

pub fn row_name(row: &Row) -> String {
    match row.workers {
        1 => format!("{} peers", row.peers),
        w => format!("{} peers, --workers {w}", row.peers),
    }
}

/// Prints the table and the notes; whether every row passed.
pub fn print(s: &Settings, measured: &[Measured]) -> bool {
    let drain = format_duration(s.drain);
    let mut lines = vec![
        format!(
            "| peers | server processes | live upgrade: pause | SIGUSR2 → old process gone | \
             CPU: server, old + new | CPU: client | client: closed / reconnects / errors / \
             unanswered | restart, --drain {drain}: reconnects | every peer back after | \
             CPU: server, old + new | CPU: client | other processes, the second before |"
        ),
        "|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|".to_string(),
    ];
    let mut ok = true;
    let mut failures = Vec::new();
    for m in measured {
        let mut cells = vec![thousands(m.row.peers), m.row.workers.to_string()];
        match &m.upgrade {
            Ok(Outcome::Done(u)) => {
                let view: Vec<String> = u.client_view.iter().map(|(_, n)| n.to_string()).collect();
                let clean = u.client_view.iter().all(|(_, n)| *n == 0);
                if !clean {
                    ok = false;
                    failures.push(format!(
                        "{}: the client saw {} during the live upgrade (all must be 0)",
                        row_name(&m.row),
                        u.client_view
                            .iter()
                            .map(|(k, n)| format!("{k} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                cells.extend([
                    pause(&u.pauses_us),
                    ms(u.window.as_nanos() as u64),
                    ms(u.server_cpu_ns),
                    ms(u.client_cpu_ns),
                    format!(
                        "{}{}",
                        if clean { "" } else { "**FAILED** " },
                        view.join(" / ")
                    ),
                ]);
            }
            Ok(Outcome::NotAvailable(line)) => {
                cells.push(format!("not available: {line}"));
                cells.extend(["–"; 4].map(String::from));
            }
            Err(why) => {
                ok = false;
                failures.push(format!("{}: live upgrade: {why}", row_name(&m.row)));
                cells.push("**FAILED** (below)".to_string());
                cells.extend(["–"; 4].map(String::from));
            }
        }
        match &m.restart {
            Ok(r) => cells.extend([
                thousands(r.reconnects as usize),
                format!("{:.2} s", r.back_after.as_secs_f64()),
                ms(r.server_cpu_ns),
                ms(r.client_cpu_ns),
            ]),
            Err(why) => {
                ok = false;
                failures.push(format!("{}: restart: {why}", row_name(&m.row)));
                cells.push("**FAILED** (below)".to_string());
                cells.extend(["–"; 3].map(String::from));
            }
        }
        cells.push(
            m.others_cpus
                .map_or("?".to_string(), |c| format!("{c:.2} CPUs")),
        );
        lines.push(format!("| {} |", cells.join(" | ")));
    }
    println!("{}", lines.join("\n"));
    println!("\n{}", notes(s));
    println!("{}", goals(measured));
    println!("load average at the end: {}", loadavg());
    for failure in &failures {
        println!("\nFAILED: {failure}");
    }
    let zero = MUST_BE_ZERO.join(", ");
    println!(
        "\n{}",
        if ok {
            format!("every live upgrade: {zero} all 0 at the client")
        } else {
            "the run FAILED (see above)".to_string()
        }
    );
    ok
}

fn notes(s: &Settings) -> String {
    format!(
        "pause: the new process's own figure (`live upgrade: took over N peers; the pause was … \
         us`: from the old loop's last turn to the new loop's first); with workers, the \
         largest and the sum over the workers. SIGUSR2 → old process gone: until every old \
         process had exited. CPU: user + system over that window (from \
         /proc/PID/task/*/schedstat, in ns), the new process's from its start; the client's \
         over the same window. After the upgrade the client runs {} more (every peer sends to \
         the new process), then stops and its summary gives its counts. Restart: the same \
         peers on a server with --drain {}, SIGTERM, a new server on the same port once the \
         old one has dropped its listener, the client with --reconnect (back-off from 100 ms); \
         reconnects are the client's, the time runs from SIGTERM until the new server holds \
         every peer, CPU over the window until then and until the old server has exited. \
         Other processes: the CPUs the machine's other processes used in the second before \
         the row (/proc/stat); with more than a few hundredths, times and pauses are noisy.",
        format_duration(s.hold),
        format_duration(s.drain)
    )
}

fn goals(measured: &[Measured]) -> String {
    let mut said = Vec::new();
    for (peers, workers, goal) in GOALS {
        let row = measured
            .iter()
            .find(|m| m.row.peers == peers && (m.row.workers > 1) == workers);
        let Some(Ok(Outcome::Done(u))) = row.map(|m| &m.upgrade) else {
            continue;
        };
        let max = Duration::from_micros(u.pauses_us.iter().copied().max().unwrap_or(0));
        said.push(format!(
            "{} peers{}: pause {} against ≤ {} ms: {}",
            thousands(peers),
            if workers { " across workers" } else { "" },
            ms(max.as_nanos() as u64),
            goal.as_millis(),
            if max <= goal { "met" } else { "missed" }
        ));
    }
    if said.is_empty() {
        return String::new();
    }
    format!("goals (issue 17): {}", said.join("; "))
}

fn pause(us: &[u64]) -> String {
    let max = us.iter().copied().max().unwrap_or(0);
    match us.len() {
        1 => ms(max * 1000),
        _ => format!(
            "{} max, {} summed",
            ms(max * 1000),
            ms(us.iter().sum::<u64>() * 1000)
        ),
    }
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).map_or("?".to_string(), |s| s.trim().to_string())
}
