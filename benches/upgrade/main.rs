//! The live upgrade's bench (issue 17): what a live upgrade (SIGUSR2) costs against the
//! number of peers, printed beside what a restart with `--drain` costs the same peers.
//!
//! Each row drives the real release binaries as an operator would: a server started from a
//! copy of the binary in a temporary directory, a load client holding the row's peers (from
//! source addresses 127.0.0.1–127.0.0.k, at most 5,000 each; `--workers` for the client too
//! above 19,500 peers, the files one process may open here), until the server holds them
//! all; then a new copy is renamed over the file and the server gets SIGUSR2 (see
//! [`upgrade`]). Then the same number of peers on a fresh server with `--drain`, SIGTERM, a
//! new server on the same port, and the client reconnecting (see [`restart`]). Everything is
//! measured from outside, through `/proc` and the processes' own lines.
//!
//! The peers are idle-ish: each sends one line every `UPGRADE_CLIENT_INTERVAL` (10 s; the
//! server's defaults, 10 s × 3 after 30 s idle, so no heartbeat is ever due), so that echoes
//! cost little in the windows measured while every peer still speaks to the new process
//! during the hold that follows an upgrade (longer than that interval).
//!
//! Run: `cargo bench --bench upgrade` (a few minutes: 1,000, 10,000 and 19,000 peers in one
//! process, 100,000 with `--workers 6`). `UPGRADE_QUICK=1`: 200 peers, in seconds, for CI.
//! Settings, each by environment variable: `UPGRADE_PEERS=1000,10000` (single-process
//! rows), `UPGRADE_WORKERS_ROW=0` (no workers row), `UPGRADE_WORKERS_PEERS` (100000),
//! `UPGRADE_WORKERS` (6), `UPGRADE_DRAIN` (10s), `UPGRADE_CLIENT_INTERVAL` (10s),
//! `UPGRADE_CONNECT_RATE` (10000 a second).
//!
//! | module    | owns                                                                    |
//! |-----------|-------------------------------------------------------------------------|
//! | `upgrade` | one row's live upgrade: rename, SIGUSR2, takeover lines, figures        |
//! | `restart` | one row's restart with `--drain`: SIGTERM, new server, reconnects       |
//! | `start`   | starting a server and a client, waiting until every peer is connected   |
//! | `child`   | a child process in its own group: its lines, signals, stopping, cleanup |
//! | `tree`    | a process group from `/proc`: members, descriptors, CPU in nanoseconds  |
//! | `lines`   | (scale's) a child's stdout read by a thread: first line, then all       |
//! | `report`  | the header, the table, the notes, the verdict                           |
#![forbid(unsafe_code)]

mod child;
#[path = "../scale/lines.rs"]
mod lines;
#[path = "../scale/proc.rs"]
#[allow(dead_code)]
mod proc;
mod report;
mod restart;
mod start;
mod tree;
mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use heartbeat::settings::config::{format_duration, parse_duration};

/// One row: its peers, and the server's processes (1: no `--workers`).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub peers: usize,
    pub workers: usize,
}

/// What a run does; every field comes from an `UPGRADE_*` variable.
pub struct Settings {
    pub quick: bool,
    pub rows: Vec<Row>,
    /// The release binary a copy is made of, and the copy the server runs from.
    pub source_exe: PathBuf,
    pub exe: PathBuf,
    pub client_exe: PathBuf,
    /// The temporary directory: the server's binary and working directory.
    pub dir: PathBuf,
    pub connect_rate: u32,
    pub client_interval: Duration,
    pub drain: Duration,
    /// After every peer is connected, before the upgrade or the restart.
    pub settle: Duration,
    /// After the upgrade, before the client is stopped: every peer sends at least once.
    pub hold: Duration,
    /// Nanoseconds in a clock tick of `/proc/PID/stat`.
    pub tick_ns: u64,
}

impl Settings {
    fn from_env(dir: PathBuf) -> Result<Settings, String> {
        let quick = env_or("UPGRADE_QUICK", 0u8)? != 0;
        let peers: Vec<usize> = match std::env::var("UPGRADE_PEERS") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .map_err(|_| format!("UPGRADE_PEERS={list}: numbers, e.g. 1000,10000"))
                })
                .collect::<Result<_, _>>()?,
            _ if quick => vec![200],
            _ => vec![1_000, 10_000, 19_000],
        };
        if let Some(&n) = peers.iter().find(|&&n| n == 0 || n > start::PER_PROCESS) {
            return Err(format!(
                "UPGRADE_PEERS: {n} peers in one process; 1 to {} (more: the workers row)",
                start::PER_PROCESS
            ));
        }
        let mut rows: Vec<Row> = peers
            .into_iter()
            .map(|peers| Row { peers, workers: 1 })
            .collect();
        if env_or("UPGRADE_WORKERS_ROW", u8::from(!quick))? != 0 {
            let workers: usize = env_or("UPGRADE_WORKERS", 6)?;
            let peers: usize = env_or("UPGRADE_WORKERS_PEERS", 100_000)?;
            if workers < 2 || peers > workers * start::PER_PROCESS {
                return Err(format!(
                    "UPGRADE_WORKERS={workers}, UPGRADE_WORKERS_PEERS={peers}: at least 2 \
                     workers, at most {} peers each",
                    start::PER_PROCESS
                ));
            }
            rows.push(Row { peers, workers });
        }
        let s = Duration::from_secs;
        let source_exe = PathBuf::from(env!("CARGO_BIN_EXE_heartbeat-server"));
        Ok(Settings {
            quick,
            rows,
            exe: dir.join("heartbeat-server"),
            source_exe,
            client_exe: PathBuf::from(env!("CARGO_BIN_EXE_heartbeat-client")),
            dir,
            connect_rate: env_or("UPGRADE_CONNECT_RATE", 10_000)?,
            client_interval: duration("UPGRADE_CLIENT_INTERVAL", if quick { s(1) } else { s(10) })?,
            drain: duration("UPGRADE_DRAIN", if quick { s(1) } else { s(10) })?,
            settle: if quick {
                Duration::from_millis(300)
            } else {
                s(1)
            },
            hold: Duration::ZERO,
            tick_ns: 1_000_000_000 / proc::clk_tck().unwrap_or(100),
        }
        .with_hold())
    }

    /// The hold after an upgrade: one client interval and a second.
    fn with_hold(mut self) -> Settings {
        self.hold = self.client_interval + Duration::from_secs(1);
        self
    }

    /// Puts a fresh copy of the built binary where the servers are started from: each half
    /// of a row starts from it (an upgrade renames another copy over it).
    pub fn fresh_binary(&self) -> Result<(), String> {
        std::fs::copy(&self.source_exe, &self.exe)
            .map(drop)
            .map_err(|e| format!("copying {}: {e}", self.source_exe.display()))
    }

    /// The command that repeats this run.
    pub fn reproduce(&self) -> String {
        let single: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.workers == 1)
            .map(|r| r.peers.to_string())
            .collect();
        let workers = match self.rows.iter().find(|r| r.workers > 1) {
            Some(r) => format!(
                "UPGRADE_WORKERS_PEERS={} UPGRADE_WORKERS={} ",
                r.peers, r.workers
            ),
            None => "UPGRADE_WORKERS_ROW=0 ".to_string(),
        };
        format!(
            "{}UPGRADE_PEERS={} {workers}UPGRADE_DRAIN={} UPGRADE_CLIENT_INTERVAL={} \
             UPGRADE_CONNECT_RATE={} cargo bench --bench upgrade",
            if self.quick { "UPGRADE_QUICK=1 " } else { "" },
            single.join(","),
            format_duration(self.drain),
            format_duration(self.client_interval),
            self.connect_rate,
        )
    }
}

/// What one row measured: each half, or why it failed.
pub struct Measured {
    pub row: Row,
    /// CPUs other processes used in the second before the row (none of the bench's children
    /// ran then): how busy the machine was.
    pub others_cpus: Option<f64>,
    pub upgrade: Result<upgrade::Outcome, String>,
    pub restart: Result<restart::Restarted, String>,
}

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// SIGINT, SIGTERM or SIGHUP came: every wait gives up, and the children are stopped.
pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("upgrade bench: skipped (it runs for minutes); use `cargo bench --bench upgrade`");
        return ExitCode::SUCCESS;
    }
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in heartbeat::edge::stop::STOP_SIGNALS {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(flag)) {
            eprintln!("upgrade bench: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = heartbeat::edge::net::raise_open_file_limit();
    let dir = match tempfile::Builder::new()
        .prefix("heartbeat-upgrade-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("upgrade bench: cannot make a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = match Settings::from_env(dir.path().to_path_buf()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("upgrade bench: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", report::header(&settings));
    progress("starting");
    let mut measured = Vec::new();
    for row in &settings.rows {
        let name = report::row_name(row);
        let others_cpus = others_cpus(Duration::from_secs(1), settings.tick_ns);
        progress(&format!("{name}: live upgrade"));
        let upgrade = upgrade::run(&settings, row);
        if let Err(why) = &upgrade {
            progress(&format!("{name}: live upgrade failed: {why}"));
        }
        let restart = if interrupted() {
            Err("interrupted".to_string())
        } else {
            progress(&format!(
                "{name}: restart with --drain {}",
                format_duration(settings.drain)
            ));
            restart::run(&settings, row)
        };
        if let Err(why) = &restart {
            progress(&format!("{name}: restart failed: {why}"));
        }
        measured.push(Measured {
            row: *row,
            others_cpus,
            upgrade,
            restart,
        });
        if interrupted() {
            break;
        }
    }
    if report::print(&settings, &measured) && !interrupted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text}: not a valid number")),
        _ => Ok(default),
    }
}

fn duration(name: &str, default: Duration) -> Result<Duration, String> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => {
            parse_duration(&text).map_err(|e| format!("{name}: {e}"))
        }
        _ => Ok(default),
    }
}

/// Waits `for_`, giving up if the run is interrupted.
pub fn wait(for_: Duration) -> Result<(), String> {
    let until = Instant::now() + for_;
    while Instant::now() < until {
        if interrupted() {
            return Err("interrupted".to_string());
        }
        let left = until.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    Ok(())
}

/// CPUs the machine's other processes used over `over` (user + nice + system, less this
/// process's own), waited for here.
fn others_cpus(over: Duration, tick_ns: u64) -> Option<f64> {
    let read = || -> Option<(u64, u64)> {
        let machine = proc::machine_cpu_ticks()?;
        let busy = machine.first()? + machine.get(1)? + machine.get(2)?;
        Some((busy, proc::own_cpu_ticks()?))
    };
    let (busy0, own0) = read()?;
    std::thread::sleep(over);
    let (busy1, own1) = read()?;
    let ticks = busy1
        .saturating_sub(busy0)
        .saturating_sub(own1.saturating_sub(own0));
    Some(ticks as f64 * tick_ns as f64 / over.as_nanos() as f64)
}

/// Progress on stderr, so that a long run can be followed.
pub fn progress(message: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[upgrade {:6.1}s] {message}", start.elapsed().as_secs_f64());
}
