//! The scale bench of issues 4 and 12: this server ("heartbeat", the real binary) against two
//! tokio task-per-connection baselines of the same protocol ("tokio, typical": 2 worker
//! threads, 8 KiB `BufReader` + `BufWriter` per connection; "tokio, tuned": one thread, no
//! per-connection buffer while idle), run side by side, printed as one table with ratios.
//!
//! Figures: connections held, memory per idle connection (user space: the server's RSS;
//! kernel: `Slab` growth, both ends), accept rate, server CPU per echoed line (pipelined, and
//! request–response one line at a time), close lateness of silent peers, idle wake-ups; and in
//! a table of their own (`SCALE_PHASES=tls`), the same for TLS peers, heartbeat against
//! HAProxy + OpenSSL terminating TLS in front of it (see [`tls`]). Each
//! server runs in its own process and is measured from outside through `/proc`, the same way
//! for all; close lateness is also measured inside heartbeat, which reports it when it stops.
//! The baselines are this very binary, re-executed with `HEARTBEAT_SCALE_ROLE` set (see
//! [`baseline`]).
//!
//! The load comes from this process: the crate's own load client for the idle connections
//! (it answers heartbeats), and small tokio drivers for pipelining, request–response and
//! silent peers. Their cost is not measured. Sizes come from the environment (see [`Sizes::from_env`]);
//! `SCALE_QUICK=1` is a run of well under a minute. Run: `cargo bench --bench scale`.
//!
//! This file owns the sizes, the timings, the order of the phases and the run as a whole.
//!
//! | module     | owns                                                                   |
//! |------------|------------------------------------------------------------------------|
//! | `phases`   | figures 1–4 and 6: warm-up, hold, idle and pipelining phases           |
//! | `silent`   | figure 5: silent peers; lateness from heartbeat's summary and at peers |
//! | `tls`      | the TLS table: heartbeat with TLS, plain, and HAProxy terminating TLS  |
//! | `request`  | figure 4b: request–response, one line at a time per connection         |
//! | `drivers`  | tokio drivers: pipelining connections, silent peers                    |
//! | `load`     | the crate's load client in a thread; waiting for a server's sockets    |
//! | `server`   | a server child process: start, address, stop, what it printed          |
//! | `baseline` | the tokio baseline server roles, and the typical one's connections     |
//! | `tuned`    | the tuned tokio baseline's connections                                 |
//! | `proc`     | reading `/proc`: RSS, CPU, descriptors, context switches               |
//! | `lines`    | a child's stdout read by a thread: the first line at once, all at end  |
//! | `machine`  | the machine, its background load, other processes' CPU during the run  |
//! | `figures`  | the table's rows and each server's figures, checks and notes           |
//! | `report`   | the header, the table with ratios, the targets, the notes              |
#![forbid(unsafe_code)]

mod baseline;
mod drivers;
mod figures;
mod lines;
mod load;
mod machine;
mod phases;
mod proc;
mod report;
mod request;
mod server;
mod silent;
mod stamped;
mod tls;
mod tuned;

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use heartbeat::cores::liveness::Timing;
use heartbeat::server::DEFAULT_TICK;
use heartbeat::settings::config::parse_duration;
use tokio::runtime::Runtime;

use figures::{Figures, SKIPPED};
use machine::{Machine, OthersCpu};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Heartbeats come quickly: a peer that does not answer is closed 3 s after connecting.
const HOLD_TIMING: Timing = timing(500, 2, 2_000);
/// Deadlines far away: nothing is due while the idle figures are sampled.
const FAR_TIMING: Timing = timing(600_000, 3, 3_600_000);
/// Silent peers are closed 1.3 s after their one line.
const SILENT_TIMING: Timing = timing(100, 3, 1_000);

const fn timing(interval_ms: u64, count: u32, idle_ms: u64) -> Timing {
    Timing {
        idle: Duration::from_millis(idle_ms),
        interval: Duration::from_millis(interval_ms),
        count,
    }
}

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Heartbeat,
    /// The tokio baseline as most tokio servers are written (see [`baseline`]).
    Tokio,
    /// The tokio baseline written for memory per connection (see [`tuned`]).
    TokioTuned,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Heartbeat, Kind::Tokio, Kind::TokioTuned];

    /// As `SCALE_ONLY` names it, and in progress lines and notes.
    fn name(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Tokio => "tokio",
            Kind::TokioTuned => "tokio-tuned",
        }
    }

    /// As the table's header names it.
    fn title(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Tokio => "tokio, typical",
            Kind::TokioTuned => "tokio, tuned",
        }
    }
}

/// What every phase needs.
struct Run<'a> {
    sizes: &'a Sizes,
    machine: &'a Machine,
    /// A current-thread runtime for the tokio drivers.
    rt: &'a Runtime,
}

/// A phase measures one server and fills in its figures.
type Phase = fn(&Run, &mut Figures) -> Result<(), String>;

/// Phase by phase, the two servers one after the other, so that they see the same machine.
const PHASES: [(&str, Phase); 5] = [
    ("hold", phases::hold_phase),
    ("pipelining", phases::pipeline_phase),
    ("request-response", request::rr_phase),
    ("silent peers", silent::silent_phase),
    ("idle", phases::idle_phase),
];

fn main() -> ExitCode {
    if baseline::is_role() {
        return baseline::main();
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale bench: skipped (it runs for minutes); use `cargo bench --bench scale`");
        return ExitCode::SUCCESS;
    }
    progress("starting");
    let sizes = Sizes::from_env();
    let machine = Machine::read();
    let limit = heartbeat::edge::net::raise_open_file_limit().unwrap_or(1024);
    let tls_sizes = tls::TlsSizes::from_env(sizes.quick);
    let needed = sizes
        .connections
        .max(sizes.silent)
        .max(sizes.rr_conns)
        .max(tls_sizes.peers)
        .max(tls_sizes.echo_conns) as u64
        + 500;
    assert!(
        needed <= limit,
        "this process holds one descriptor per client connection: {needed} needed, the \
         open-file limit is {limit}; lower SCALE_CONNECTIONS / SCALE_SILENT"
    );
    // The drivers open thousands of sockets from this process of several threads: sized now,
    // its descriptor table does not stop them for milliseconds at each doubling (see
    // `reserve_descriptors`), which would send the servers bursts of peers instead of a
    // steady stream.
    if let Err(e) = heartbeat::edge::net::reserve_descriptors(std::io::stdout(), needed as usize) {
        eprintln!("scale bench: could not size the descriptor table: {e}");
    }
    println!("{}", report::header(&sizes, &machine));
    println!("{}", machine.background_load());
    let others_at_start = OthersCpu::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the drivers");
    let mut results = Kind::ALL.map(|kind| {
        let left_out = sizes
            .only
            .as_ref()
            .is_some_and(|only| !only.contains(&kind));
        Figures::new(kind, left_out)
    });
    let run = Run {
        sizes: &sizes,
        machine: &machine,
        rt: &rt,
    };
    let chosen = std::env::var("SCALE_PHASES").unwrap_or_default();
    let wants =
        |name: &str| chosen.is_empty() || chosen.split(',').any(|p| name.starts_with(p.trim()));
    if wants("hold") || wants("idle") {
        // The first thousands of sockets of a run are slower (kernel caches grow, pages are
        // first touched in this process): pay for that before either server is measured.
        match phases::warm_up(&run) {
            Ok(line) => progress(&line),
            Err(why) => progress(&format!("warm-up failed: {why}")),
        }
    }
    for (name, phase) in PHASES {
        if !wants(name) {
            for figures in results.iter_mut() {
                figures.fail_unset(name, SKIPPED);
            }
            continue;
        }
        // Pipelined CPU per line moves by a factor of two from run to run on a shared host
        // (the machine's state drifts over seconds), and a close lateness's tail and max
        // follow the host's pauses: the servers take turns, several times.
        let repeats = match name {
            "pipelining" => sizes.pipeline_repeats,
            "silent peers" => sizes.silent_repeats,
            _ => 1,
        };
        // Each server goes first in turn, so that none always runs straight after the phase
        // before (the hold phase has just closed 19,000 sockets of each server). With
        // heartbeat always first, the first of three pipelined runs was the slowest for
        // heartbeat in five of six full runs on the project's machine, and for tuned tokio
        // in four of five.
        let measured: Vec<usize> = (0..results.len())
            .filter(|&i| !results[i].skipped)
            .collect();
        for repeat in 0..repeats {
            for turn in 0..measured.len() {
                let figures = &mut results[measured[(turn + repeat) % measured.len()]];
                progress(&format!("{}: {name} phase", figures.kind.name()));
                if let Err(why) = phase(&run, figures) {
                    progress(&format!(
                        "{}: {name} phase failed: {why}",
                        figures.kind.name()
                    ));
                    figures.fail_unset(name, &format!("{name} phase: {why}"));
                }
            }
        }
    }
    // Issue 18's figures: heartbeat's alone (the tokio baselines speak no TLS), in a table
    // of their own beside HAProxy terminating TLS.
    let tls = wants("tls").then(|| tls::tls_phase(&run));
    let main_phases = PHASES.iter().any(|(name, _)| wants(name));
    if report::print(
        &sizes,
        &machine,
        &results,
        others_at_start,
        main_phases,
        tls.as_ref(),
    ) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Sizes {
    quick: bool,
    connections: usize,
    connect_rate: u32,
    silent: usize,
    silent_rate: u32,
    pipeline_conns: usize,
    pipeline_lines: usize,
    /// Pipelining rounds at least; more run until the server used `pipeline_ticks`.
    pipeline_rounds: usize,
    /// Times the pipelining phase runs, the servers taking turns; the median is reported.
    pipeline_repeats: usize,
    /// Runs of the silent phase, the servers taking turns; each figure is the median.
    silent_repeats: usize,
    pipeline_ticks: u64,
    pipeline_max: Duration,
    /// Request–response: connections, each with one line in flight, for this long.
    rr_conns: usize,
    rr_secs: u64,
    idle_secs: u64,
    /// Heartbeat's `--tick`; the close-lateness target is relative to it.
    tick: Duration,
    /// `SCALE_ONLY=heartbeat,tokio-tuned`: the servers measured (default: all).
    only: Option<Vec<Kind>>,
}

impl Sizes {
    /// `SCALE_QUICK=1` gives small defaults; each size can still be set on its own.
    fn from_env() -> Sizes {
        let quick = env_or("SCALE_QUICK", 0u8) != 0;
        let pick = |full: u64, small: u64| if quick { small } else { full };
        let only = match std::env::var("SCALE_ONLY") {
            Err(_) => None,
            Ok(list) if list.trim().is_empty() => None,
            Ok(list) => Some(
                list.split(',')
                    .map(|name| {
                        Kind::ALL
                            .into_iter()
                            .find(|k| k.name() == name.trim())
                            .unwrap_or_else(|| {
                                panic!(
                                    "SCALE_ONLY={list}: expected heartbeat, tokio or tokio-tuned, \
                                     comma-separated"
                                )
                            })
                    })
                    .collect(),
            ),
        };
        let tick = match std::env::var("SCALE_TICK").as_deref() {
            Err(_) | Ok("") => DEFAULT_TICK,
            Ok(text) => parse_duration(text).unwrap_or_else(|e| panic!("SCALE_TICK: {e}")),
        };
        Sizes {
            quick,
            connections: env_or("SCALE_CONNECTIONS", pick(19_000, 500) as usize),
            connect_rate: env_or("SCALE_CONNECT_RATE", 20_000),
            silent: env_or("SCALE_SILENT", pick(10_000, 500) as usize),
            silent_rate: env_or("SCALE_SILENT_RATE", 5_000),
            pipeline_conns: env_or("SCALE_PIPELINE_CONNS", pick(100, 10) as usize),
            pipeline_lines: env_or("SCALE_PIPELINE_LINES", pick(20_000, 2_000) as usize),
            pipeline_rounds: env_or("SCALE_PIPELINE_ROUNDS", pick(3, 1) as usize),
            pipeline_repeats: env_or("SCALE_PIPELINE_REPEATS", pick(3, 1) as usize).max(1),
            silent_repeats: env_or("SCALE_SILENT_REPEATS", pick(3, 1) as usize).max(1),
            pipeline_ticks: env_or("SCALE_PIPELINE_TICKS", pick(300, 20)),
            pipeline_max: Duration::from_secs(pick(60, 10)),
            rr_conns: env_or("SCALE_RR_CONNS", pick(10_000, 200) as usize),
            rr_secs: env_or("SCALE_RR_SECS", pick(5, 1)),
            idle_secs: env_or("SCALE_IDLE_SECS", pick(10, 2)),
            tick,
            only,
        }
    }

    /// The command that repeats this run with the same sizes.
    fn reproduce(&self) -> String {
        let mut command = if self.quick {
            "SCALE_QUICK=1 ".to_string()
        } else {
            String::new()
        };
        command += &format!(
            "SCALE_CONNECTIONS={} SCALE_CONNECT_RATE={} SCALE_SILENT={} SCALE_SILENT_RATE={} \
             SCALE_SILENT_REPEATS={} SCALE_PIPELINE_CONNS={} SCALE_PIPELINE_LINES={} SCALE_PIPELINE_ROUNDS={} \
             SCALE_PIPELINE_REPEATS={} SCALE_PIPELINE_TICKS={} SCALE_RR_CONNS={} SCALE_RR_SECS={} SCALE_IDLE_SECS={} \
             SCALE_TICK={} ",
            self.connections,
            self.connect_rate,
            self.silent,
            self.silent_rate,
            self.silent_repeats,
            self.pipeline_conns,
            self.pipeline_lines,
            self.pipeline_rounds,
            self.pipeline_repeats,
            self.pipeline_ticks,
            self.rr_conns,
            self.rr_secs,
            self.idle_secs,
            duration_arg(self.tick)
        );
        if let Ok(phases) = std::env::var("SCALE_PHASES") {
            command += &format!("SCALE_PHASES={phases} ");
        }
        if let Some(only) = &self.only {
            let names: Vec<&str> = only.iter().map(|k| k.name()).collect();
            command += &format!("SCALE_ONLY={} ", names.join(","));
        }
        command + "cargo bench --bench scale"
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) if text.is_empty() => default,
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text}: not a valid number")),
    }
}

/// A duration as the server's command line and `SCALE_TICK` read it: `500us`, `1ms`, `2500ms`.
fn duration_arg(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{}us", nanos as f64 / 1000.0)
    }
}

/// Progress on stderr, so that a long run can be followed.
fn progress(message: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[scale {:6.1}s] {message}", start.elapsed().as_secs_f64());
}
