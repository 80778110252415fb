//! The scale bench of issue 4: this server ("heartbeat", the real binary) against a tokio
//! task-per-connection baseline of the same protocol, run side by side, printed as one table
//! with a ratio per figure.
//!
//! Figures: connections held, RSS per idle connection, accept rate, server CPU per echoed
//! line, close lateness of silent peers, idle wake-ups. Each server runs in its own process
//! and is measured from outside through `/proc`, the same way for both. The baseline is this
//! very binary, re-executed with `HEARTBEAT_SCALE_ROLE=tokio-server` (see [`baseline`]).
//!
//! The load comes from this process: the crate's own load client for the idle connections
//! (it answers heartbeats), and small tokio drivers for pipelining and silent peers. Their
//! cost is not measured. Sizes come from the environment (see [`Sizes::from_env`]);
//! `SCALE_QUICK=1` is a run of well under a minute. Run: `cargo bench --bench scale`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use heartbeat::client::{Client, ClientConfig, Outcome};
use heartbeat::liveness::Timing;
use heartbeat::stop::Stopper;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;

/// The environment variable that turns this binary into the tokio baseline server.
const ROLE_VAR: &str = "HEARTBEAT_SCALE_ROLE";
const TOKIO_ROLE: &str = "tokio-server";
/// `interval_ms,count,idle_ms` for the baseline.
const TIMING_VAR: &str = "HEARTBEAT_SCALE_TIMING";

const LINE: &[u8] = b"Hello, there\n";
const ECHO: &[u8] = b"Echoing...Hello, there\n";
/// Client connections are spread over 127.0.0.1 ..= 127.0.0.16: about 28,000 ephemeral
/// ports each, and the ports of closed connections stay in TIME_WAIT for a minute.
const SOURCE_ADDRESSES: u8 = 16;
/// The server's default `--tick`, which the close-lateness target is relative to.
const TICK: Duration = Duration::from_millis(1);
const START_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines per write of the pipelining driver (65,000 bytes).
const BATCH_LINES: usize = 5000;

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

fn main() -> ExitCode {
    if std::env::var(ROLE_VAR).as_deref() == Ok(TOKIO_ROLE) {
        // The baseline ignores argv: cargo's `--bench` is not meant for it.
        return baseline::main();
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale bench: skipped (it runs for minutes); use `cargo bench --bench scale`");
        return ExitCode::SUCCESS;
    }
    progress("starting");
    let sizes = Sizes::from_env();
    let machine = Machine::read();
    let limit = heartbeat::net::raise_open_file_limit().unwrap_or(1024);
    let needed = sizes.connections.max(sizes.silent) as u64 + 500;
    assert!(
        needed <= limit,
        "this process holds one descriptor per client connection: {needed} needed, the \
         open-file limit is {limit}; lower SCALE_CONNECTIONS / SCALE_SILENT"
    );
    println!("{}", header(&sizes, &machine));
    println!("{}", background_load());
    let others_at_start = OthersCpu::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the drivers");
    let mut results = Vec::new();
    for kind in Kind::ALL {
        results.push(Figures::new(
            kind,
            sizes.only.is_some_and(|only| only != kind),
        ));
    }
    let run = Run {
        sizes: &sizes,
        machine: &machine,
        rt: &rt,
    };
    // Phase by phase, the two servers one after the other, so that they see the same machine.
    type Phase = fn(&Run, &mut Figures) -> Result<(), String>;
    let phases: [(&str, Phase); 4] = [
        ("hold", hold_phase),
        ("pipelining", pipeline_phase),
        ("silent peers", silent_phase),
        ("idle", idle_phase),
    ];
    let chosen = std::env::var("SCALE_PHASES").unwrap_or_default();
    let wants =
        |name: &str| chosen.is_empty() || chosen.split(',').any(|p| name.starts_with(p.trim()));
    if wants("hold") || wants("idle") {
        // The first thousands of sockets of a run are slower (kernel caches grow, pages are
        // first touched in this process): pay for that before either server is measured.
        match warm_up(&run) {
            Ok(line) => progress(&line),
            Err(why) => progress(&format!("warm-up failed: {why}")),
        }
    }
    for (name, phase) in phases {
        if !wants(name) {
            for figures in results.iter_mut() {
                figures.fail_unset(name, SKIPPED);
            }
            continue;
        }
        for figures in results.iter_mut().filter(|f| !f.skipped) {
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
    let (hb, tk) = (&results[0], &results[1]);
    println!("{}", table(&sizes, hb, tk));
    if !hb.skipped {
        println!("{}", targets(&sizes, hb, machine.clk_tck));
    }
    if let (Some(start), Some(end)) = (others_at_start, OthersCpu::now()) {
        println!("{}", start.report(&end, machine.clk_tck));
    }
    println!("notes:");
    for figures in &results {
        for note in &figures.notes {
            println!("  {}: {note}", figures.kind.name());
        }
    }
    let missing: Vec<String> = results.iter().flat_map(Figures::missing).collect();
    if missing.is_empty() {
        return ExitCode::SUCCESS;
    }
    println!("not measured:");
    for why in &missing {
        println!("  {why}");
    }
    ExitCode::FAILURE
}

// ---------------------------------------------------------------------------------------------
// Sizes, machine, report

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
    pipeline_ticks: u64,
    pipeline_max: Duration,
    idle_secs: u64,
    only: Option<Kind>,
}

impl Sizes {
    /// `SCALE_QUICK=1` gives small defaults; each size can still be set on its own.
    fn from_env() -> Sizes {
        let quick = env_or("SCALE_QUICK", 0u8) != 0;
        let pick = |full: u64, small: u64| if quick { small } else { full };
        let only = match std::env::var("SCALE_ONLY").as_deref() {
            Err(_) | Ok("") => None,
            Ok("heartbeat") => Some(Kind::Heartbeat),
            Ok("tokio") => Some(Kind::Tokio),
            Ok(other) => panic!("SCALE_ONLY={other}: expected heartbeat or tokio"),
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
            pipeline_ticks: env_or("SCALE_PIPELINE_TICKS", pick(300, 20)),
            pipeline_max: Duration::from_secs(pick(60, 10)),
            idle_secs: env_or("SCALE_IDLE_SECS", pick(10, 2)),
            only,
        }
    }

    fn reproduce(&self) -> String {
        let mut command = if self.quick {
            "SCALE_QUICK=1 ".to_string()
        } else {
            String::new()
        };
        command += &format!(
            "SCALE_CONNECTIONS={} SCALE_CONNECT_RATE={} SCALE_SILENT={} SCALE_SILENT_RATE={} \
             SCALE_PIPELINE_CONNS={} SCALE_PIPELINE_LINES={} SCALE_PIPELINE_ROUNDS={} \
             SCALE_PIPELINE_TICKS={} SCALE_IDLE_SECS={} ",
            self.connections,
            self.connect_rate,
            self.silent,
            self.silent_rate,
            self.pipeline_conns,
            self.pipeline_lines,
            self.pipeline_rounds,
            self.pipeline_ticks,
            self.idle_secs
        );
        if let Ok(phases) = std::env::var("SCALE_PHASES") {
            command += &format!("SCALE_PHASES={phases} ");
        }
        if let Some(only) = self.only {
            command += &format!("SCALE_ONLY={} ", only.name());
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

struct Machine {
    cpus: usize,
    model: String,
    kernel: String,
    memory: String,
    clk_tck: u64,
    clk_note: Option<String>,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".to_string(), |k| k.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = field_kb(&meminfo, "MemTotal:").map_or("?".to_string(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
        let getconf = Command::new("getconf").arg("CLK_TCK").output();
        let parsed = getconf
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&t| t > 0);
        Machine {
            cpus: thread::available_parallelism().map_or(1, |n| n.get()),
            model,
            kernel,
            memory,
            clk_tck: parsed.unwrap_or(100),
            clk_note: parsed
                .is_none()
                .then(|| "`getconf CLK_TCK` failed; assuming 100".to_string()),
        }
    }
}

fn header(sizes: &Sizes, machine: &Machine) -> String {
    let mut lines = vec![
        "Scale bench (issue 4): heartbeat (mio, one thread) vs a tokio task-per-connection \
         baseline (2 worker threads)"
            .to_string(),
        format!(
            "machine: {} × {}, {} RAM, kernel {}, {} clock ticks/s",
            machine.cpus, machine.model, machine.memory, machine.kernel, machine.clk_tck
        ),
        format!(
            "sizes: {} idle connections (opened at ≤ {}/s), {} silent peers (at {}/s), \
             pipelining {} connections × {} lines × ≥ {} rounds (until ≥ {} server clock ticks), \
             idle window {} s",
            sizes.connections,
            sizes.connect_rate,
            sizes.silent,
            sizes.silent_rate,
            sizes.pipeline_conns,
            sizes.pipeline_lines,
            sizes.pipeline_rounds,
            sizes.pipeline_ticks,
            sizes.idle_secs
        ),
        format!("reproduce: {}", sizes.reproduce()),
    ];
    if let Some(note) = &machine.clk_note {
        lines.push(format!("warning: {note}"));
    }
    lines.join("\n")
}

/// How busy the machine is before the bench starts: other processes skew every figure.
fn background_load() -> String {
    let busy_and_total = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4)?;
        Some((total - idle, total))
    };
    let before = busy_and_total();
    thread::sleep(Duration::from_secs(1));
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    match (before, busy_and_total()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let busy = (b1 - b0) as f64 / (t1 - t0) as f64 * cpus;
            let warning = if busy > 0.2 {
                "  WARNING: the machine is busy; the figures will be noisy"
            } else {
                ""
            };
            format!(
                "background load before start: {busy:.2} of {cpus:.0} CPUs busy over 1 s, load \
                 average {}{warning}",
                loadavg.join(" ")
            )
        }
        _ => "background load before start: unknown".to_string(),
    }
}

/// CPU used by the whole machine and by this bench with its children (the servers, once
/// reaped): the difference is what other processes took while the bench ran.
struct OthersCpu {
    at: Instant,
    machine_ticks: u64,
    own_ticks: u64,
}

impl OthersCpu {
    fn now() -> Option<OthersCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // user + nice + system: not interrupt time, which is not charged to processes.
        let machine_ticks = v.first()? + v.get(1)? + v.get(2)?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<u64> = own
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|f| f.parse().ok())
            .collect();
        Some(OthersCpu {
            at: Instant::now(),
            machine_ticks,
            own_ticks: fields.iter().sum(),
        })
    }

    fn report(&self, end: &OthersCpu, clk_tck: u64) -> String {
        let secs = (end.at - self.at).as_secs_f64();
        let machine = end.machine_ticks.saturating_sub(self.machine_ticks);
        let own = end.own_ticks.saturating_sub(self.own_ticks);
        let others = machine.saturating_sub(own) as f64 / clk_tck as f64;
        format!(
            "\nwhile the bench ran ({secs:.0} s): other processes used about {others:.1} CPU-s \
             ({:.2} CPUs on average){}",
            others / secs,
            if others / secs > 0.2 {
                "  WARNING: figures are skewed by other load"
            } else {
                ""
            }
        )
    }
}

/// Progress on stderr, so that a long run can be followed.
fn progress(message: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    eprintln!("[scale {:6.1}s] {message}", start.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// Figures and the table

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Heartbeat,
    Tokio,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Heartbeat, Kind::Tokio];

    fn name(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Tokio => "tokio",
        }
    }
}

/// The reason given for figures of phases left out with `SCALE_PHASES`.
const SKIPPED: &str = "skipped";

/// One figure: a value, or why there is none (`None`: its phase has not run).
type Fig = Option<Result<f64, String>>;

#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

/// One row of the table: `{n}`, `{s}`, `{rate}` and `{idle}` in the label are sizes.
struct Row {
    label: &'static str,
    phase: &'static str,
    better: Better,
    /// Decimals shown, then the unit.
    decimals: usize,
    unit: &'static str,
}

const fn row(
    label: &'static str,
    phase: &'static str,
    better: Better,
    decimals: usize,
    unit: &'static str,
) -> Row {
    Row {
        label,
        phase,
        better,
        decimals,
        unit,
    }
}

// Indices into `ROWS` and `Figures::values`.
const HELD: usize = 0;
const RSS: usize = 1;
const RSS_QUIET: usize = 2;
const ACCEPT: usize = 3;
const CPU_LINE: usize = 4;
const LATE_P50: usize = 5;
const LATE_P99: usize = 6;
const LATE_MAX: usize = 7;
const WAKE_N: usize = 8;
const CPU_N: usize = 9;
const WAKE_0: usize = 10;
const CPU_0: usize = 11;

const ROWS: [Row; 12] = {
    use Better::{Higher, Lower};
    [
        row("1. connections held (of {n})", "hold", Higher, 0, ""),
        row(
            "2. RSS per idle connection (after a heartbeat round)",
            "hold",
            Lower,
            0,
            " B",
        ),
        row(
            "2b. RSS per idle connection (never heartbeated)",
            "idle",
            Lower,
            0,
            " B",
        ),
        row(
            "3. accept rate (opening {n}, client capped at {rate}/s)",
            "hold",
            Higher,
            0,
            "/s",
        ),
        row(
            "4. server CPU per echoed line",
            "pipelining",
            Lower,
            0,
            " ns",
        ),
        row(
            "5. close lateness p50 ({s} silent peers)",
            "silent peers",
            Lower,
            2,
            " ms",
        ),
        row("5. close lateness p99", "silent peers", Lower, 2, " ms"),
        row("5. close lateness max", "silent peers", Lower, 2, " ms"),
        row("6. idle wake-ups, {n} connections", "idle", Lower, 1, "/s"),
        row(
            "6. idle CPU over {idle} s, {n} connections",
            "idle",
            Lower,
            0,
            " ms",
        ),
        row("6. idle wake-ups, 0 connections", "idle", Lower, 1, "/s"),
        row(
            "6. idle CPU over {idle} s, 0 connections",
            "idle",
            Lower,
            0,
            " ms",
        ),
    ]
};

struct Figures {
    kind: Kind,
    skipped: bool,
    values: [Fig; 12],
    /// All connections held, none dropped, heartbeats answered (figure 1's check).
    held_ok: Option<bool>,
    /// Every silent peer got exactly `count` heartbeats, End Connection, then EOF.
    silent_ok: Option<bool>,
    notes: Vec<String>,
}

impl Figures {
    fn new(kind: Kind, skipped: bool) -> Figures {
        Figures {
            kind,
            skipped,
            values: Default::default(),
            held_ok: None,
            silent_ok: None,
            notes: Vec::new(),
        }
    }

    fn set(&mut self, figure: usize, value: f64) {
        self.values[figure] = Some(Ok(value));
    }

    fn get(&self, figure: usize) -> Option<f64> {
        self.values[figure].as_ref()?.as_ref().ok().copied()
    }

    /// Every figure of the phase that has no value yet gets `why` instead.
    fn fail_unset(&mut self, phase: &str, why: &str) {
        for (value, row) in self.values.iter_mut().zip(&ROWS) {
            if value.is_none() && row.phase == phase {
                *value = Some(Err(why.to_string()));
            }
        }
    }

    /// Why each figure that should have been measured was not, one line per reason.
    fn missing(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for (value, row) in self.values.iter().zip(&ROWS) {
            let why = match value {
                _ if self.skipped => continue,
                Some(Ok(_)) => continue,
                Some(Err(e)) if e == SKIPPED => continue,
                Some(Err(e)) => e.as_str(),
                None => "not run",
            };
            let label = row.label.split(" (").next().unwrap_or(row.label);
            let line = format!("{}: {label}: {why}", self.kind.name());
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        lines
    }
}

fn table(sizes: &Sizes, hb: &Figures, tk: &Figures) -> String {
    let cell = |figures: &Figures, i: usize| match &figures.values[i] {
        _ if figures.skipped => SKIPPED.to_string(),
        Some(Ok(v)) => format!("{v:.*}{}", ROWS[i].decimals, ROWS[i].unit),
        Some(Err(e)) if e == SKIPPED => SKIPPED.to_string(),
        _ => "n/a".to_string(),
    };
    let mut cells = vec![["figure", "heartbeat", "tokio baseline", "ratio"].map(String::from)];
    for (i, row) in ROWS.iter().enumerate() {
        let label = row
            .label
            .replace("{n}", &sizes.connections.to_string())
            .replace("{s}", &sizes.silent.to_string())
            .replace("{rate}", &sizes.connect_rate.to_string())
            .replace("{idle}", &sizes.idle_secs.to_string());
        cells.push([
            label,
            cell(hb, i),
            cell(tk, i),
            ratio(row.better, hb.get(i), tk.get(i)),
        ]);
    }
    let width = |c: usize| {
        cells
            .iter()
            .map(|r| r[c].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2), width(3)];
    let mut out = vec![
        String::new(),
        "ratio = heartbeat's advantage, > 1 means heartbeat is better: tokio ÷ heartbeat for \
         costs (bytes, ns, ms, wake-ups), heartbeat ÷ tokio for connections held and accept rate"
            .to_string(),
        String::new(),
    ];
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = (0..4)
            .map(|c| match c {
                0 => format!("{:<w$}", row[c], w = widths[c]),
                _ => format!("{:>w$}", row[c], w = widths[c]),
            })
            .collect();
        out.push(line.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push(rule.join("-|-"));
        }
    }
    out.join("\n")
}

fn ratio(better: Better, hb: Option<f64>, tk: Option<f64>) -> String {
    let (Some(h), Some(t)) = (hb, tk) else {
        return "n/a".to_string();
    };
    let (num, den) = match better {
        Better::Higher => (h, t),
        Better::Lower => (t, h),
    };
    match (num == 0.0, den == 0.0) {
        (true, true) => "= (both 0)".to_string(),
        (false, true) => "inf".to_string(),
        _ => format!("{:.2}", num / den),
    }
}

fn targets(sizes: &Sizes, hb: &Figures, clk_tck: u64) -> String {
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "[PASS]",
        Some(false) => "[FAIL]",
        None => "[n/a] ",
    };
    let (held, rss, cpu, late) = (
        hb.get(HELD),
        hb.get(RSS),
        hb.get(CPU_LINE),
        hb.get(LATE_MAX),
    );
    let (idle_cpu, idle_wake) = (hb.get(CPU_N), hb.get(WAKE_N));
    let limit_ms = (TICK + Duration::from_millis(2)).as_secs_f64() * 1000.0;
    let one_tick_ms = 1000.0 / clk_tck as f64;
    let show = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("n/a".to_string(), f);
    [
        "\ntargets for heartbeat (issue 4):".to_string(),
        format!(
            "  {} all {} connections held through a heartbeat round, none dropped: {}",
            verdict(hb.held_ok),
            sizes.connections,
            show(held, &|v| format!("{v:.0} held")),
        ),
        format!(
            "  {} RSS ≤ 128 B per idle connection: {}",
            verdict(rss.map(|v| v <= 128.0)),
            show(rss, &|v| format!("{v:.0} B")),
        ),
        format!(
            "  {} server CPU ≤ 150 ns per echoed line: {}",
            verdict(cpu.map(|v| v <= 150.0)),
            show(cpu, &|v| format!("{v:.0} ns")),
        ),
        format!(
            "  {} every End Connection within tick + 2 ms = {limit_ms:.0} ms: max {}",
            verdict(late.map(|v| v <= limit_ms)),
            show(late, &|v| format!("{v:.2} ms")),
        ),
        format!(
            "  {} every silent peer got exactly {} heartbeats, End Connection, then EOF",
            verdict(hb.silent_ok),
            SILENT_TIMING.count,
        ),
        format!(
            "  {} idle CPU ~0 (≤ one {one_tick_ms:.0} ms clock tick over {} s with {} connections): \
             {}, {}",
            verdict(idle_cpu.map(|v| v <= one_tick_ms)),
            sizes.idle_secs,
            sizes.connections,
            show(idle_cpu, &|v| format!("{v:.0} ms")),
            show(idle_wake, &|v| format!("{v:.1} wake-ups/s")),
        ),
    ]
    .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The phases

/// Opens and closes N connections to a heartbeat server that is not measured.
fn warm_up(run: &Run) -> Result<String, String> {
    let n = run.sizes.connections;
    let server = ServerProc::start(Kind::Heartbeat, FAR_TIMING)?;
    let fds0 = fd_count(server.pid())?;
    let load = Load::start(server.addr, n, run.sizes.connect_rate)?;
    let reached = match wait_for_fds(server.pid(), fds0 + n as u64, &load, Kind::Heartbeat) {
        Ok(at) => at,
        Err(why) => return Err(with_client_summary(why, load)),
    };
    let secs = (reached - load.started).as_secs_f64();
    load.finish()?;
    server.stop()?;
    Ok(format!(
        "warm-up: {n} connections opened in {secs:.2} s and closed (not measured)"
    ))
}

struct Run<'a> {
    sizes: &'a Sizes,
    machine: &'a Machine,
    rt: &'a Runtime,
}

/// Figures 1–3: N idle connections from the load client, held past the time when a peer
/// that did not answer its heartbeats would have been closed.
fn hold_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    let n = run.sizes.connections;
    let timing = HOLD_TIMING;
    let server = ServerProc::start(fig.kind, timing)?;
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let fds0 = fd_count(pid)?;
    let rss0 = rss_bytes(pid)?;
    let load = Load::start(server.addr, n, run.sizes.connect_rate)?;
    let reached = match wait_for_fds(pid, fds0 + n as u64, &load, fig.kind) {
        Ok(at) => at,
        Err(why) => return Err(with_client_summary(why, load)),
    };
    let secs = (reached - load.started).as_secs_f64();
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
    thread::sleep(timing.idle + timing.interval * timing.count + Duration::from_millis(500));
    let held = fd_count(pid)?.saturating_sub(fds0);
    let rss1 = rss_bytes(pid)?;
    fig.set(RSS, (rss1 as f64 - rss0 as f64) / n as f64);
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
        (timing.idle + timing.interval * timing.count).as_secs_f64() + 0.5,
        client_line(&outcome)
    ));
    fig.notes.push(format!(
        "hold: server RSS {:.1} MiB with none, {:.1} MiB with {n}",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0
    ));
    server.stop()?;
    Ok(())
}

/// A failed wait, with what the load client counted (connect failures by reason).
fn with_client_summary(why: String, load: Load) -> String {
    match load.finish() {
        Ok(outcome) => format!("{why}; client: {}", client_line(&outcome)),
        Err(e) => format!("{why}; {e}"),
    }
}

fn client_line(outcome: &Outcome) -> String {
    let s = &outcome.summary;
    let reasons: Vec<String> = s
        .failed_by_reason
        .iter()
        .map(|(why, k)| format!("{why} {k}"))
        .collect();
    format!(
        "opened {}, failed {}{}, closed by server {}, errors {}, heartbeats answered {}, \
         connect time p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        s.opened,
        s.failed,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        s.closed_by_server,
        s.errors,
        s.heartbeats_answered,
        s.connect_time.p50_us as f64 / 1000.0,
        s.connect_time.p99_us as f64 / 1000.0,
        s.connect_time.max_us as f64 / 1000.0,
    )
}

/// Figure 6 (and 2b): wake-ups and CPU with no connection, then with N whose deadlines are
/// an hour away.
fn idle_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    let n = run.sizes.connections;
    let window = Duration::from_secs(run.sizes.idle_secs);
    let server = ServerProc::start(fig.kind, FAR_TIMING)?;
    let pid = server.pid();
    thread::sleep(Duration::from_millis(500));
    let (wakeups, cpu_ms) = idle_window(pid, window, run.machine.clk_tck)?;
    fig.set(WAKE_0, wakeups);
    fig.set(CPU_0, cpu_ms);
    let fds0 = fd_count(pid)?;
    let rss0 = rss_bytes(pid)?;
    let load = Load::start(server.addr, n, run.sizes.connect_rate)?;
    let reached = match wait_for_fds(pid, fds0 + n as u64, &load, fig.kind) {
        Ok(at) => at,
        Err(why) => return Err(with_client_summary(why, load)),
    };
    let secs = (reached - load.started).as_secs_f64();
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

/// Figure 4: connections pipelining short lines in large writes; server CPU per echo.
fn pipeline_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    let sizes = run.sizes;
    let (conns, lines) = (sizes.pipeline_conns, sizes.pipeline_lines);
    let server = ServerProc::start(fig.kind, FAR_TIMING)?;
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let fds0 = fd_count(pid)?;
    let addr = server.addr;
    let mut streams = run.rt.block_on(async {
        let connects = (0..conns).map(|_| tokio::spawn(TcpStream::connect(addr)));
        let mut streams = Vec::with_capacity(conns);
        for handle in connects.collect::<Vec<_>>() {
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, handle)
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| format!("connect task failed: {e}"))?
                .map_err(|e| format!("connect failed: {e}"))?;
            let _ = stream.set_nodelay(true);
            streams.push(stream);
        }
        Ok::<_, String>(streams)
    })?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while fd_count(pid)? < fds0 + conns as u64 {
        if Instant::now() > deadline {
            return Err(format!("the server did not accept {conns} connections"));
        }
        thread::sleep(Duration::from_millis(2));
    }
    let per_round = (conns * lines) as u64;
    let ticks0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    let mut rounds = 0;
    loop {
        let (back, echoed) = run.rt.block_on(pipeline_round(streams, lines))?;
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
    fig.set(CPU_LINE, ns);
    let resolution = if ticks < 100 {
        format!(" (only {ticks} ticks: ±{:.0}%)", 100.0 / ticks as f64)
    } else {
        String::new()
    };
    fig.notes.push(format!(
        "pipelining: {total} echoes `Echoing...Hello, there` read and verified ({rounds} rounds \
         × {conns} connections × {lines} lines); server CPU {ticks} ticks{resolution} in \
         {wall:.2} s wall ({:.2} M lines/s)",
        total as f64 / wall / 1e6
    ));
    server.stop()?;
    Ok(())
}

/// One round: every connection writes `lines` lines in large batches while reading and
/// checking every echo. Returns the streams for the next round and the echoes counted.
async fn pipeline_round(
    streams: Vec<TcpStream>,
    lines: usize,
) -> Result<(Vec<TcpStream>, u64), String> {
    let handles: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(pipeline_one(stream, lines)))
        .collect();
    let mut back = Vec::with_capacity(handles.len());
    let mut echoed = 0;
    for handle in handles {
        let (stream, n) = tokio::time::timeout(Duration::from_secs(120), handle)
            .await
            .map_err(|_| "a pipelining connection took over 120 s".to_string())?
            .map_err(|e| format!("pipelining task failed: {e}"))??;
        back.push(stream);
        echoed += n;
    }
    Ok((back, echoed))
}

async fn pipeline_one(mut stream: TcpStream, lines: usize) -> Result<(TcpStream, u64), String> {
    let batch = LINE.repeat(BATCH_LINES.min(lines));
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let mut left = lines;
        while left > 0 {
            let k = left.min(BATCH_LINES);
            writer
                .write_all(&batch[..k * LINE.len()])
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            left -= k;
        }
        Ok::<_, String>(())
    };
    let read = async {
        let expected = (lines * ECHO.len()) as u64;
        let mut buf = vec![0u8; 64 * 1024];
        let (mut got, mut at) = (0u64, 0usize);
        while got < expected {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "the server closed after {} of {lines} echoes",
                    got / ECHO.len() as u64
                ));
            }
            if !matches_echoes(&buf[..n], &mut at) {
                let shown = String::from_utf8_lossy(&buf[..n.min(60)]).into_owned();
                return Err(format!("unexpected bytes from the server: {shown:?}"));
            }
            got += n as u64;
        }
        Ok(got / ECHO.len() as u64)
    };
    let ((), echoed) = tokio::try_join!(write, read)?;
    Ok((stream, echoed))
}

/// Whether `bytes` continue the stream `Echoing...Hello, there\n` repeated, from offset `at`.
fn matches_echoes(mut bytes: &[u8], at: &mut usize) -> bool {
    while !bytes.is_empty() {
        let take = (ECHO.len() - *at).min(bytes.len());
        if bytes[..take] != ECHO[*at..*at + take] {
            return false;
        }
        *at = (*at + take) % ECHO.len();
        bytes = &bytes[take..];
    }
    true
}

/// Figure 5: silent peers send one line and never answer; when does End Connection arrive?
fn silent_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    let sizes = run.sizes;
    let timing = SILENT_TIMING;
    let server = ServerProc::start(fig.kind, timing)?;
    let addr = server.addr;
    let spread = Duration::from_secs_f64(sizes.silent as f64 / f64::from(sizes.silent_rate.max(1)));
    let budget = spread + timing.idle + timing.interval * timing.count + Duration::from_secs(30);
    let results = run.rt.block_on(async {
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let step = Duration::from_secs_f64(1.0 / f64::from(sizes.silent_rate.max(1)));
        let handles: Vec<_> = (0..sizes.silent)
            .map(|i| tokio::spawn(silent_peer(addr, i, start + step * i as u32, timing)))
            .collect();
        let mut results = Vec::with_capacity(handles.len());
        for handle in handles {
            results.push(
                match tokio::time::timeout_at(start + budget, handle).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(e)) => Err(format!("peer task failed: {e}")),
                    Err(_) => Err("no End Connection within the phase's time budget".to_string()),
                },
            );
        }
        results
    });
    server.stop()?;
    let mut close = micros_histogram()?;
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
                close.saturating_record((times.close_late_us as u64).max(1));
                echo.saturating_record(times.echo_us.max(1));
                first_heartbeat.saturating_record((times.first_heartbeat_late_us as u64).max(1));
            }
            Err(why) => *anomalies.entry(why).or_default() += 1,
        }
    }
    let bad: usize = anomalies.values().sum();
    fig.silent_ok = Some(bad == 0);
    fig.notes.push(format!(
        "silent peers: {} of {} got exactly {} heartbeats, End Connection, then EOF{}",
        close.len(),
        sizes.silent,
        timing.count,
        if bad == 0 { "" } else { "; the others:" }
    ));
    for (why, k) in anomalies.iter().take(5) {
        fig.notes.push(format!("  {k} × {why}"));
    }
    if close.is_empty() {
        return Err("no silent peer saw its End Connection".to_string());
    }
    let ms = |us: u64| us as f64 / 1000.0;
    fig.set(LATE_P50, ms(close.value_at_quantile(0.5)));
    fig.set(LATE_P99, ms(close.value_at_quantile(0.99)));
    fig.set(LATE_MAX, ms(close.max()));
    let row = |h: &Histogram<u64>| {
        format!(
            "p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        )
    };
    fig.notes.push(format!(
        "silent peers: close lateness = End Connection arrival − (line sent + idle {} ms + {} × \
         {} ms), timed in this process: {}",
        timing.idle.as_millis(),
        timing.count,
        timing.interval.as_millis(),
        row(&close)
    ));
    fig.notes.push(format!(
        "silent peers: for comparison, heartbeat 1 lateness {}; echo round trip of the line {}",
        row(&first_heartbeat),
        row(&echo)
    ));
    Ok(())
}

fn micros_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

/// What one silent peer saw, in microseconds.
struct PeerTimes {
    /// End Connection's arrival after its due time (negative: early).
    close_late_us: i64,
    /// Heartbeat 1's arrival after its due time (negative: early).
    first_heartbeat_late_us: i64,
    /// From sending the line to reading its echo.
    echo_us: u64,
}

/// One silent peer: connects, sends one line, reads its echo, then answers nothing.
async fn silent_peer(
    server: SocketAddr,
    index: usize,
    at: tokio::time::Instant,
    timing: Timing,
) -> Result<PeerTimes, String> {
    tokio::time::sleep_until(at).await;
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(source_address(index))
        .map_err(|e| format!("bind: {e}"))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut stream = tokio::io::BufReader::new(stream);
    // Taken before writing: the server's clock starts later, so lateness is never understated.
    let sent = Instant::now();
    stream
        .get_mut()
        .write_all(LINE)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let due = sent + timing.idle + timing.interval * timing.count;
    let give_up = tokio::time::Instant::from_std(due + Duration::from_secs(10));
    let mut line = Vec::new();
    let mut heartbeats = 0;
    let (mut echo_us, mut first_heartbeat_late_us) = (None, 0);
    let arrival = loop {
        line.clear();
        let n = tokio::time::timeout_at(give_up, stream.read_until(b'\n', &mut line))
            .await
            .map_err(|_| format!("nothing 10 s after due, {heartbeats} heartbeats seen"))?
            .map_err(|e| format!("read: {e}"))?;
        let now = Instant::now();
        if n == 0 {
            return Err(format!(
                "EOF without End Connection after {heartbeats} heartbeats"
            ));
        }
        match (echo_us.is_some(), line.as_slice()) {
            (false, ECHO) => echo_us = Some((now - sent).as_micros() as u64),
            (true, b"heartbeat\n") => {
                heartbeats += 1;
                if heartbeats == 1 {
                    first_heartbeat_late_us = signed_micros(now, sent + timing.idle);
                }
            }
            (true, b"End Connection\n") => break now,
            (_, other) => {
                return Err(format!(
                    "unexpected line {:?}",
                    String::from_utf8_lossy(other)
                ))
            }
        }
    };
    if heartbeats != timing.count {
        return Err(format!(
            "{heartbeats} heartbeats before End Connection, expected {}",
            timing.count
        ));
    }
    let mut rest = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut rest)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(_)) => return Err("bytes after End Connection".to_string()),
        Ok(Err(e)) => return Err(format!("{} after End Connection", e.kind())),
        Err(_) => return Err("no EOF within 2 s of End Connection".to_string()),
    }
    Ok(PeerTimes {
        close_late_us: signed_micros(arrival, due),
        first_heartbeat_late_us,
        echo_us: echo_us.unwrap_or(0),
    })
}

/// `at − due` in microseconds, negative when `at` came first.
fn signed_micros(at: Instant, due: Instant) -> i64 {
    if at >= due {
        (at - due).as_micros() as i64
    } else {
        -((due - at).as_micros() as i64)
    }
}

fn source_address(index: usize) -> SocketAddr {
    let host = 1 + (index % SOURCE_ADDRESSES as usize) as u8;
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0))
}

// ---------------------------------------------------------------------------------------------
// The load client in a thread

/// The crate's load client running in its own thread; stopped on drop.
struct Load {
    stopper: Stopper,
    handle: Option<JoinHandle<Result<Outcome, String>>>,
    started: Instant,
}

impl Load {
    fn start(server: SocketAddr, connections: usize, rate: u32) -> Result<Load, String> {
        let config = ClientConfig {
            server,
            bind: (0..SOURCE_ADDRESSES as usize).map(source_address).collect(),
            connections,
            connect_rate: rate,
            interval: Duration::ZERO,
            // A backstop only: the phase stops the client long before.
            duration: Some(Duration::from_secs(900)),
            verbose: false,
            status_line: false,
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("load-client".into())
            .spawn(move || {
                let client = Client::new(config).map_err(|e| e.to_string())?;
                let _ = tx.send(client.stopper());
                client.run().map_err(|e| e.to_string())
            })
            .map_err(|e| format!("cannot start the load client thread: {e}"))?;
        let stopper = match rx.recv_timeout(START_TIMEOUT) {
            Ok(stopper) => stopper,
            Err(_) => {
                let why = match handle.join() {
                    Ok(Err(e)) => e,
                    _ => "it did not start".to_string(),
                };
                return Err(format!("load client: {why}"));
            }
        };
        Ok(Load {
            stopper,
            handle: Some(handle),
            started: Instant::now(),
        })
    }

    fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops the client (it closes its connections) and returns what it counted.
    fn finish(mut self) -> Result<Outcome, String> {
        self.stopper.stop();
        let handle = self.handle.take().ok_or("load client already finished")?;
        let deadline = Instant::now() + STOP_TIMEOUT * 6;
        while !handle.is_finished() {
            if Instant::now() > deadline {
                return Err("the load client did not stop within 60 s".to_string());
            }
            thread::sleep(Duration::from_millis(10));
        }
        handle
            .join()
            .map_err(|_| "the load client panicked".to_string())?
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stopper.stop();
    }
}

/// Waits until the server holds `target` descriptors; returns when it did.
fn wait_for_fds(pid: u32, target: u64, load: &Load, kind: Kind) -> Result<Instant, String> {
    loop {
        let now = Instant::now();
        let fds = fd_count(pid)?;
        if fds >= target {
            return Ok(now);
        }
        if !load.is_running() {
            return Err(format!(
                "the load client stopped while {} had {fds} of {target} descriptors open",
                kind.name()
            ));
        }
        if now - load.started > CONNECT_TIMEOUT {
            // Not a panic: the other server's figures are still worth printing, and the run
            // ends with a failure status listing this.
            return Err(format!(
                "{} did not reach {target} open descriptors within {} s (it has {fds})",
                kind.name(),
                CONNECT_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Server processes and /proc

/// A server child process. Dropping it (also while unwinding from a panic) stops it: SIGTERM,
/// then SIGKILL if it lingers, then wait.
struct ServerProc {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    /// The baseline exits when its stdin closes: a safety net if this process dies.
    stdin: Option<ChildStdin>,
    output: Option<JoinHandle<Vec<String>>>,
    stopped: bool,
}

impl ServerProc {
    fn start(kind: Kind, timing: Timing) -> Result<ServerProc, String> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let mut command = match kind {
            Kind::Heartbeat => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
                command
                    .args(["--port", "0", "--no-prompt", "--log-level", "warn"])
                    .args(["--host", "127.0.0.1", "--interval", &ms(timing.interval)])
                    .args([
                        "--count",
                        &timing.count.to_string(),
                        "--idle",
                        &ms(timing.idle),
                    ])
                    .stdin(Stdio::null());
                command
            }
            Kind::Tokio => {
                let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                let mut command = Command::new(exe);
                let spec = format!(
                    "{},{},{}",
                    timing.interval.as_millis(),
                    timing.count,
                    timing.idle.as_millis()
                );
                command
                    .env(ROLE_VAR, TOKIO_ROLE)
                    .env(TIMING_VAR, spec)
                    .stdin(Stdio::piped());
                command
            }
        };
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the {} server: {e}", kind.name()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        let output = thread::spawn(move || {
            let mut lines = Vec::new();
            let Some(stdout) = stdout else { return lines };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.is_empty() {
                    let _ = tx.send(line.clone());
                }
                lines.push(line);
            }
            lines
        });
        let mut server = ServerProc {
            kind,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdin,
            output: Some(output),
            stopped: false,
        };
        let first = rx.recv_timeout(START_TIMEOUT).map_err(|_| {
            format!(
                "the {} server printed no `Listening on` line within {} s",
                kind.name(),
                START_TIMEOUT.as_secs()
            )
        })?;
        server.addr = first
            .strip_prefix("Listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| format!("unexpected first line from the server: {first:?}"))?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> Result<Vec<String>, String> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<Vec<String>, String> {
        if self.stopped {
            return Ok(Vec::new());
        }
        self.stopped = true;
        // Not yet reaped, so the pid is still this child's.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut result = Ok(());
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    result = Err(format!(
                        "the {} server did not stop within {} s of SIGTERM; killed",
                        self.kind.name(),
                        STOP_TIMEOUT.as_secs()
                    ));
                    break;
                }
            }
        }
        let output = self.output.take().and_then(|h| h.join().ok());
        result.map(|()| output.unwrap_or_default())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

fn read_proc(pid: u32, file: &str) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .map_err(|e| format!("reading /proc/{pid}/{file}: {e}"))
}

fn field_kb(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = read_proc(pid, "status")?;
    field_kb(&status, "VmRSS:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Open descriptors: the size of /proc/PID/fd (Linux ≥ 6.2 reports the count there, cheaply),
/// else its entries counted.
fn fd_count(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/fd");
    let size = std::fs::metadata(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .len();
    if size > 0 {
        return Ok(size);
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    Ok(entries.count() as u64)
}

/// utime + stime of the whole process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = read_proc(pid, "stat")?;
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(utime), Some(stime)) => Ok(utime + stime),
        _ => Err(format!("cannot parse /proc/{pid}/stat")),
    }
}

/// Voluntary + involuntary context switches summed over the process's threads (the
/// process-level status file counts only its main thread).
fn context_switches(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let path = entry
            .map_err(|e| format!("{dir}: {e}"))?
            .path()
            .join("status");
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue; // the thread just exited
        };
        total += field_kb(&status, "voluntary_ctxt_switches:").unwrap_or(0);
        total += field_kb(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// The tokio baseline

/// A tokio server of the same protocol, written the way a competent tokio developer would:
/// a multi-thread runtime with one worker per core, one task per connection, a `BufReader`
/// and a `BufWriter` (default capacities) around the two halves of the socket, `read_until`
/// under `timeout_at` for the heartbeat schedule, and a flush whenever the reader has no
/// more buffered input (so pipelined echoes go out in batches).
mod baseline {
    use std::io::Read;
    use std::net::SocketAddr;
    use std::process::ExitCode;
    use std::time::Duration;

    use heartbeat::config::format_duration;
    use heartbeat::liveness::Timing;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio::time::{timeout_at, Instant};

    use super::TIMING_VAR;

    /// The same accept backlog as heartbeat's, so the accept rates compare like for like.
    const BACKLOG: u32 = 4096;
    const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

    pub fn main() -> ExitCode {
        let Some(timing) = std::env::var(TIMING_VAR)
            .ok()
            .and_then(|s| parse_timing(&s))
        else {
            eprintln!("tokio baseline: {TIMING_VAR} must be interval_ms,count,idle_ms");
            return ExitCode::from(2);
        };
        // Exit when the bench closes our stdin (or dies): nothing outlives the bench.
        std::thread::spawn(|| {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            std::process::exit(0);
        });
        let _ = heartbeat::net::raise_open_file_limit();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build();
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("tokio baseline: runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(serve(timing)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tokio baseline: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn parse_timing(spec: &str) -> Option<Timing> {
        let mut parts = spec.split(',').map(|p| p.trim().parse::<u64>().ok());
        let interval = Duration::from_millis(parts.next()??);
        let count = u32::try_from(parts.next()??).ok()?;
        let idle = Duration::from_millis(parts.next()??);
        // The idle rule, as the real server applies it.
        Some(Timing {
            idle: idle.max(interval * count),
            interval,
            count,
        })
    }

    async fn serve(timing: Timing) -> std::io::Result<()> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(BACKLOG)?;
        println!(
            "Listening on {} (heartbeat every {}, {} times, after {} idle) [tokio baseline]",
            listener.local_addr()?,
            format_duration(timing.interval),
            timing.count,
            format_duration(timing.idle)
        );
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, timing));
                }
                Err(e) => {
                    // Out of descriptors, typically: do not spin.
                    eprintln!("tokio baseline: accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    /// One peer: echo its lines; after `idle` of silence, `count` heartbeats `interval`
    /// apart, then `End Connection` and close. Any bytes from the peer restart the schedule.
    async fn connection(mut stream: TcpStream, timing: Timing) {
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.split();
        let mut reader = BufReader::new(reader);
        let mut writer = BufWriter::new(writer);
        let mut line = Vec::new();
        let mut last_seen = Instant::now();
        let mut heartbeats = 0u32;
        // Bytes of an unfinished line seen when a timer fired: they count as a sign of life.
        let mut partial = 0;
        loop {
            let due = last_seen + timing.idle + timing.interval * heartbeats;
            match timeout_at(due, reader.read_until(b'\n', &mut line)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {
                    last_seen = Instant::now();
                    heartbeats = 0;
                    partial = 0;
                    let Some(data) = line.strip_suffix(b"\n") else {
                        return; // the stream ended in the middle of a line
                    };
                    let data = data.strip_suffix(b"\r").unwrap_or(data);
                    if data != b"Echoing...heartbeat" {
                        let echoed = async {
                            writer.write_all(b"Echoing...").await?;
                            writer.write_all(data).await?;
                            writer.write_all(b"\n").await
                        };
                        if echoed.await.is_err() {
                            return;
                        }
                    }
                    line.clear();
                    if reader.buffer().is_empty() && writer.flush().await.is_err() {
                        return;
                    }
                }
                Err(_elapsed) => {
                    if line.len() > partial {
                        partial = line.len();
                        last_seen = Instant::now();
                        heartbeats = 0;
                        continue;
                    }
                    let last = heartbeats == timing.count;
                    let message: &[u8] = if last {
                        b"End Connection\n"
                    } else {
                        b"heartbeat\n"
                    };
                    heartbeats += 1;
                    if writer.write_all(message).await.is_err()
                        || writer.flush().await.is_err()
                        || last
                    {
                        return;
                    }
                }
            }
        }
    }
}
