//! What the capacity bench prints on stdout: the machine and its limits, the table of steps,
//! the summaries of every child merged (false deaths above all), the kernel's slab caches
//! that grew, and why the run stopped.

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::fleet::Printed;
use crate::host::{grown_caches, machine_busy_ticks, socket_caches_grown, Host};
use crate::step::{Row, Stop};
use crate::{Run, Settings};

const GIB: f64 = 1_073_741_824.0;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).map_or("?".to_string(), |s| s.trim().to_string())
}

pub fn header(settings: &Settings, host: &Host) -> String {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = read("/proc/meminfo");
    let total = crate::proc::field_kb(&meminfo, "MemTotal:").unwrap_or(0) as f64 * 1024.0;
    let nofile = rlimit::Resource::NOFILE
        .get()
        .map_or("?".to_string(), |(soft, hard)| {
            format!("{soft} soft, {hard} hard")
        });
    let steps: Vec<String> = settings.steps.iter().map(usize::to_string).collect();
    [
        "Idle capacity: real server and load-client processes on one host, \
         connections over 127.0.0.0/8, every one answering heartbeats"
            .to_string(),
        format!(
            "machine: {cpus} × {model}, {:.1} GiB RAM, kernel {}",
            total / GIB,
            read("/proc/sys/kernel/osrelease")
        ),
        format!(
            "limits: fs.file-max {} ({} open now), open files per process {nofile}, ephemeral \
             ports {}, MemAvailable {:.1} GiB, Slab {:.2} GiB",
            host.file_max,
            host.files,
            read("/proc/sys/net/ipv4/ip_local_port_range").replace('\t', "-"),
            host.available_kib as f64 * 1024.0 / GIB,
            host.slab_kib as f64 * 1024.0 / GIB,
        ),
        format!(
            "steps: {} connections; {} per server process and per client process, each client \
             from {} source addresses of its own; heartbeat every {:?}, {} times, after {:?} \
             idle; each step holds {} s (≥ {} heartbeat rounds); {} clients connecting at a time, \
             together at most {}/s; memory floor {} MiB available; {} open files left to others",
            steps.join(", "),
            settings.per_process,
            settings.sources_each,
            settings.interval,
            settings.count,
            settings.idle,
            settings.hold().as_secs(),
            settings.rounds,
            settings.ramp_parallel,
            settings.connect_rate,
            settings.min_available_kib / 1024,
            settings.file_reserve
        ),
        format!("reproduce: {}", settings.reproduce()),
        background_load(cpus),
    ]
    .join("\n")
}

fn background_load(cpus: usize) -> String {
    let before = machine_busy_ticks();
    thread::sleep(Duration::from_secs(1));
    match (before, machine_busy_ticks()) {
        (Some(a), Some(b)) => format!(
            "background load before start: {:.2} of {cpus} CPUs busy over 1 s, load average {}",
            (b - a) as f64 / crate::proc::clk_tck().unwrap_or(100) as f64,
            read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => "background load before start: unknown".to_string(),
    }
}

/// One step on one line, for the progress log.
pub fn row_line(run: &Run, row: &Row) -> String {
    let slab = (row.host.slab_kib as f64 - run.at_start.slab_kib as f64) * 1024.0;
    format!(
        "{} held by {} server/client pairs; server RSS +{:.0} B/conn, Slab +{:.0} B/conn (both \
         ends), MemAvailable {:.1} GiB",
        row.held,
        row.pairs,
        row.per_conn(row.server_rss_grown as f64),
        row.per_conn(slab),
        row.host.available_kib as f64 * 1024.0 / GIB,
    )
}

/// Prints the table and the summaries; returns whether the run is clean (every child stopped
/// by itself with a summary, no false death, no failed step).
pub fn print(
    run: &Run,
    rows: &[Row],
    stop: Option<&Stop>,
    clients: &[Printed],
    servers: &[Printed],
) -> bool {
    let client_json: Vec<Option<Value>> = clients.iter().map(json).collect();
    let server_json: Vec<Option<Value>> = servers.iter().map(json).collect();
    let baselines: Vec<u64> = client_json
        .iter()
        .map(|j| {
            j.as_ref()
                .map_or(0, |j| u(j, &["memory", "baseline_bytes"]))
        })
        .collect();
    println!("\n{}", table(run, rows, &baselines));
    match stop {
        None => println!(
            "\nevery step done: the largest is {} connections",
            run.settings.steps.iter().max().unwrap_or(&0)
        ),
        Some(why) => println!(
            "\nstopped before or during the step after {}: {why}",
            rows.last().map_or(0, |r| r.held)
        ),
    }
    let c = |path: &[&str]| {
        client_json
            .iter()
            .flatten()
            .map(|j| u(j, path))
            .sum::<u64>()
    };
    let cmax = |path: &[&str]| {
        client_json
            .iter()
            .flatten()
            .map(|j| u(j, path))
            .max()
            .unwrap_or(0)
    };
    let s = |path: &[&str]| {
        server_json
            .iter()
            .flatten()
            .map(|j| u(j, path))
            .sum::<u64>()
    };
    let smax = |path: &[&str]| {
        server_json
            .iter()
            .flatten()
            .map(|j| u(j, path))
            .max()
            .unwrap_or(0)
    };
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for j in client_json.iter().flatten() {
        if let Some(map) = j.get("failed_by_reason").and_then(Value::as_object) {
            for (why, n) in map {
                *reasons.entry(why.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
        }
    }
    // The same events counted at both ends: the server closed a peer for not answering, and
    // the client saw a connection it kept answering on closed by the server.
    let false_deaths = c(&["false_deaths"]).max(s(&["closed_dead"]));
    println!(
        "\nclients ({} of {} printed a summary): opened {}, failed {}{}, closed by the server {}, \
         false deaths {}, errors {}, heartbeats answered {}; connect time p99 (worst client) \
         {:.1} ms; client lag p99 (worst client) {:.1} ms, max {:.1} ms; clients that were the \
         bottleneck (lag p99 over a tenth of the interval, so a death may be theirs): {}",
        client_json.iter().flatten().count(),
        clients.len(),
        c(&["opened"]),
        c(&["failed"]),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" {reasons:?}")
        },
        c(&["closed_by_server"]),
        c(&["false_deaths"]),
        c(&["errors"]),
        c(&["heartbeats_answered"]),
        cmax(&["connect_time", "p99_us"]) as f64 / 1000.0,
        cmax(&["lag", "p99_us"]) as f64 / 1000.0,
        cmax(&["lag", "max_us"]) as f64 / 1000.0,
        client_json
            .iter()
            .flatten()
            .filter(|j| j.get("client_bottleneck").and_then(Value::as_bool) == Some(true))
            .count(),
    );
    println!(
        "servers ({} of {} printed a summary): accepted {}, peak open {}, closed for not \
         answering (false deaths: every client answers) {}, closed by the peer {}, on error {}, \
         heartbeats sent {}, answered {}, accept errors {}, refused (full) {}; the OS's delay \
         waking a server's loop p99 (worst server) {:.2} ms, max {:.2} ms",
        server_json.iter().flatten().count(),
        servers.len(),
        s(&["accepted"]),
        s(&["peak_open"]),
        s(&["closed_dead"]),
        s(&["closed_by_peer"]),
        s(&["closed_on_error"]),
        s(&["heartbeats_sent"]),
        s(&["heartbeats_answered"]),
        s(&["accept_errors"]),
        s(&["rejected_full"]),
        smax(&["wake_delay", "p99_us"]) as f64 / 1000.0,
        smax(&["wake_delay", "max_us"]) as f64 / 1000.0,
    );
    println!(
        "false deaths: {false_deaths} (servers: {} closed for not answering; clients: {} healthy \
         connections closed by the server){}",
        s(&["closed_dead"]),
        c(&["false_deaths"]),
        if false_deaths == 0 {
            ""
        } else {
            "  FAIL: must be 0"
        }
    );
    let last = rows
        .last()
        .and_then(|r| Some((run.caches_at_start.as_ref()?, r.caches.as_ref()?, r.held)));
    if let Some((before, after, held)) = last {
        let grown: Vec<String> = grown_caches(before, after, held, 8)
            .iter()
            .map(|(name, per)| format!("{name} {per:.0} B"))
            .collect();
        println!(
            "kernel slab caches that grew, per connection (both ends), at {held}: {} (a socket \
             has a TCP state, an inode, a file, a dentry and an epoll entry at each end; \
             proc_inode_cache grows when a process lists /proc/PID/fd, one inode and dentry per \
             descriptor listed: on this host something does so for every process, and this \
             bench reads only the servers' descriptor counts)",
            grown.join(", ")
        );
    }
    let mut clean = true;
    for p in clients.iter().chain(servers) {
        let no_json = !matches!(p.last_line.as_deref(), Some(l) if l.starts_with('{'));
        if p.trouble.is_some() || no_json {
            clean = false;
            println!(
                "{}: {}{}",
                p.name,
                p.trouble.as_deref().unwrap_or("no JSON summary"),
                if p.stderr.is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {}", p.stderr.join(" | "))
                }
            );
        }
    }
    if let Ok(host) = Host::read() {
        println!(
            "after stopping: MemAvailable {:.1} GiB, Slab {:.2} GiB, {} open files",
            host.available_kib as f64 * 1024.0 / GIB,
            host.slab_kib as f64 * 1024.0 / GIB,
            host.files
        );
    }
    clean && false_deaths == 0 && !matches!(stop, Some(Stop::Failed(_)) | Some(Stop::Interrupted))
}

fn json(p: &Printed) -> Option<Value> {
    serde_json::from_str(p.last_line.as_deref()?).ok()
}

fn u(j: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(j, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn table(run: &Run, rows: &[Row], baselines: &[u64]) -> String {
    let start = &run.at_start;
    let tck = run.clk_tck as f64;
    let mut lines = vec![
        "| connections held | processes | connect rate | kernel: Slab growth (both ends) | of it, the sockets' own | server user space: RSS growth | client RSS growth | total: Slab + both RSS | server CPU per heartbeat round | client CPU per heartbeat round | other processes' CPU | MemAvailable left | open files |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    for row in rows {
        let kib = |now: u64, then: u64| row.per_conn((now as f64 - then as f64) * 1024.0);
        let client_base: u64 = baselines.iter().take(row.clients).sum();
        let server = row.per_conn(row.server_rss_grown as f64);
        let slab = kib(row.host.slab_kib, start.slab_kib);
        let (client, total) = if baselines.len() >= row.clients && client_base > 0 {
            let client = row.per_conn(row.client_rss.saturating_sub(client_base) as f64);
            (
                format!("{client:.0} B"),
                format!("{:.0} B", slab + server + client),
            )
        } else {
            ("n/a".to_string(), "n/a".to_string())
        };
        let sockets = run
            .caches_at_start
            .as_ref()
            .zip(row.caches.as_ref())
            .and_then(|(before, after)| socket_caches_grown(before, after))
            .map_or("n/a".to_string(), |b| {
                format!("{:.0} B", row.per_conn(b as f64))
            });
        let us = |ticks: u64| ticks as f64 / tck * 1e6 / row.held as f64;
        lines.push(format!(
            "| {} | {} + {} | {:.0}/s | {slab:.0} B | {sockets} | {server:.0} B | {client} | {total} | {:.2} µs | {:.2} µs | {:.2} CPUs | {:.1} GiB | {} |",
            row.held,
            row.pairs,
            row.clients,
            row.added as f64 / row.connect_secs,
            us(row.server_ticks),
            us(row.client_ticks),
            row.other_ticks as f64 / tck / row.window_secs,
            row.host.available_kib as f64 * 1024.0 / GIB,
            row.host.files,
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "connect rate: the step's new connections over the time from starting its first client \
         until its servers held them all (capped at {}/s). Per connection: kernel = growth of Slab in \
         /proc/meminfo since the start, both ends together (server and client are on this host); \
         the sockets' own = growth of the slab caches TCP, sock_inode_cache, filp and \
         eventpoll_epi (/proc/slabinfo); user space = the processes' RSS growth (a client's from \
         the RSS it reported before its first connection). CPU per heartbeat round = CPU time \
         over the step's last idle period ({:?}, one heartbeat and its answer per connection) \
         divided by the connections; other processes' CPU is over the same window.",
        run.settings.connect_rate, run.settings.idle
    ));
    lines.join("\n")
}
