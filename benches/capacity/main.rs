//! Idle capacity on this machine (issue 12): how many connections can server and load
//! client processes on one host hold, every one answering its heartbeats, before a limit of
//! the machine stops them, and what each connection costs.
//!
//! One process may hold about 19,000 connections here (20,000 open files each), so the run
//! grows by processes: pairs of one real `server` process (its own port on 127.0.0.1) and one
//! real load `client` process (its own source addresses 127.1.k.1–4, at most ~5,000
//! connections each, well inside the 28,232 ephemeral ports). It ramps up in cumulative
//! steps (`CAPACITY_STEPS`, default 100k, 200k, 400k, 800k, 1M): each step adds pairs (a few
//! clients connecting at a time, `CAPACITY_RAMP_PARALLEL`), waits until the servers hold every
//! connection, then holds them all through at least two heartbeat rounds. Before a step it checks that the step fits in the machine's open files
//! (`fs.file-max`, less a reserve for the machine's other users) and memory (`MemAvailable`
//! projected from the cost per connection so far must stay above `CAPACITY_MIN_AVAILABLE_MIB`,
//! 4 GiB) and the time budget; during a step it watches memory, the children and the
//! connections held. The first step that does not fit or fails ends the run, saying which
//! limit stopped it. Then the clients are stopped (SIGTERM: they print their `--json`
//! summary), then the servers (theirs): false deaths come from both.
//!
//! Per connection it reports: the servers' user-space bytes (RSS growth), the kernel's bytes
//! (`Slab` growth in /proc/meminfo: both ends of the connection together, on one host they
//! cannot be told apart), all memory (`MemAvailable` drop), the connect rate, and the CPU of
//! one heartbeat round (servers' and clients' CPU time over one idle period, when each
//! connection gets one heartbeat, divided by the connections).
//!
//! Run: `cargo bench --bench capacity` (minutes; see README). `CAPACITY_QUICK=1`: a small run.
//!
//! | module  | owns                                                                      |
//! |---------|---------------------------------------------------------------------------|
//! | `fleet` | the child processes: start, watch, stop, what they printed                |
//! | `host`  | memory, open files, slab caches, machine CPU, from `/proc`                |
//! | `lines` | (scale's) a child's stdout read by a thread: first line, then all         |
//! | `step`  | one step: checks, ramp, hold, the figures                                 |
//! | `report`| the header, the table, the summaries merged from every child's JSON       |
#![forbid(unsafe_code)]

mod fleet;
mod host;
#[path = "../scale/lines.rs"]
mod lines;
#[path = "../scale/proc.rs"]
#[allow(dead_code)]
mod proc;
mod report;
mod step;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use heartbeat::settings::config::{format_duration, parse_duration};

use fleet::Fleet;
use host::Host;
use step::{Row, Stop};

/// What a run does; every field comes from a `CAPACITY_*` variable.
pub struct Settings {
    pub quick: bool,
    pub steps: Vec<usize>,
    pub per_process: usize,
    pub sources_each: usize,
    /// New connections per second at most, over all the clients ramping at once.
    pub connect_rate: u32,
    /// Clients ramping at once; the next starts when one's server holds all its connections.
    pub ramp_parallel: usize,
    pub interval: Duration,
    pub count: u32,
    pub idle: Duration,
    /// Heartbeat rounds each step holds its connections through.
    pub rounds: u32,
    pub min_available_kib: u64,
    /// Open files left to the machine's other users.
    pub file_reserve: u64,
    /// The run stops before a step that would not finish within this.
    pub budget: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = env_or("CAPACITY_QUICK", 0u8) != 0;
        let steps = std::env::var("CAPACITY_STEPS")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .expect("CAPACITY_STEPS: numbers, e.g. 1000,2000")
                    })
                    .collect()
            })
            .unwrap_or_else(|| {
                if quick {
                    vec![4_000, 8_000]
                } else {
                    vec![100_000, 200_000, 400_000, 800_000, 1_000_000]
                }
            });
        let duration = |name, full, small| {
            std::env::var(name)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_duration(&s).unwrap_or_else(|e| panic!("{name}: {e}")))
                .unwrap_or(if quick { small } else { full })
        };
        let s = Duration::from_secs;
        Settings {
            quick,
            steps,
            per_process: env_or("CAPACITY_PER_PROCESS", if quick { 3_000 } else { 19_000 }),
            sources_each: env_or("CAPACITY_SOURCES", 4),
            connect_rate: env_or("CAPACITY_CONNECT_RATE", 40_000),
            ramp_parallel: env_or("CAPACITY_RAMP_PARALLEL", 4),
            interval: duration("CAPACITY_INTERVAL", s(10), s(1)),
            count: env_or("CAPACITY_COUNT", if quick { 2 } else { 3 }),
            idle: duration("CAPACITY_IDLE", s(30), s(2)),
            rounds: env_or("CAPACITY_ROUNDS", 2u32).max(2),
            min_available_kib: env_or("CAPACITY_MIN_AVAILABLE_MIB", 4096u64) * 1024,
            file_reserve: env_or("CAPACITY_FILE_RESERVE", 50_000),
            budget: s(env_or(
                "CAPACITY_BUDGET_SECS",
                if quick { 120 } else { 600 },
            )),
        }
    }

    /// The command that repeats this run.
    pub fn reproduce(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(usize::to_string).collect();
        format!(
            "{}CAPACITY_STEPS={} CAPACITY_PER_PROCESS={} CAPACITY_SOURCES={} \
             CAPACITY_CONNECT_RATE={} CAPACITY_RAMP_PARALLEL={} CAPACITY_INTERVAL={} \
             CAPACITY_COUNT={} CAPACITY_IDLE={} \
             CAPACITY_ROUNDS={} CAPACITY_MIN_AVAILABLE_MIB={} CAPACITY_FILE_RESERVE={} \
             CAPACITY_BUDGET_SECS={} cargo bench --bench capacity",
            if self.quick { "CAPACITY_QUICK=1 " } else { "" },
            steps.join(","),
            self.per_process,
            self.sources_each,
            self.connect_rate,
            self.ramp_parallel,
            format_duration(self.interval),
            self.count,
            format_duration(self.idle),
            self.rounds,
            self.min_available_kib / 1024,
            self.file_reserve,
            self.budget.as_secs()
        )
    }

    /// The server's timing flags.
    pub fn timing_args(&self) -> Vec<String> {
        vec![
            "--interval".into(),
            format_duration(self.interval),
            "--count".into(),
            self.count.to_string(),
            "--idle".into(),
            format_duration(self.idle),
        ]
    }

    /// How long a step holds its connections once all are open: through `rounds` heartbeat
    /// rounds, and past the moment a peer that missed the first would have been closed.
    pub fn hold(&self) -> Duration {
        let rounds = self.idle * self.rounds;
        let death = self.idle + self.interval * self.count;
        rounds.max(death) + Duration::from_secs(2)
    }
}

/// What every step needs.
pub struct Run {
    pub settings: Settings,
    pub start: Instant,
    pub at_start: Host,
    pub caches_at_start: Option<BTreeMap<String, u64>>,
    pub clk_tck: u64,
    pub interrupted: Arc<AtomicBool>,
}

impl Run {
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "capacity bench: skipped (it runs for minutes); use `cargo bench --bench capacity`"
        );
        return ExitCode::SUCCESS;
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in heartbeat::edge::stop::STOP_SIGNALS {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("capacity: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let settings = Settings::from_env();
    let _ = heartbeat::edge::net::raise_open_file_limit();
    let at_start = match Host::read() {
        Ok(host) => host,
        Err(e) => {
            eprintln!("capacity: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report::header(&settings, &at_start));
    let run = Run {
        settings,
        start: Instant::now(),
        at_start,
        caches_at_start: host::slab_caches(),
        clk_tck: proc::clk_tck().unwrap_or(100),
        interrupted,
    };
    progress("starting");
    let mut fleet = Fleet::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut stop = None;
    for &target in &run.settings.steps {
        if target <= fleet.target() {
            continue;
        }
        progress(&format!("step: {target} connections"));
        match step::run(&run, &mut fleet, target, rows.last()) {
            Ok(row) => {
                progress(&report::row_line(&run, &row));
                rows.push(row);
            }
            Err(why) => {
                progress(&format!("stopping: {why}"));
                stop = Some(why);
                break;
            }
        }
    }
    progress("stopping the clients, then the servers");
    let (clients, servers) = fleet.stop();
    let ok = report::print(&run, &rows, stop.as_ref(), &clients, &servers);
    match stop {
        Some(Stop::Interrupted) => ExitCode::FAILURE,
        _ if ok => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) if text.trim().is_empty() => default,
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text}: not a valid number")),
    }
}

/// Progress on stderr, so that a long run can be followed.
pub fn progress(message: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!(
        "[capacity {:6.1}s] {message}",
        start.elapsed().as_secs_f64()
    );
}
