//! What is measured: the rows of the table (label, phase, which way is better, unit) and,
//! per server, each figure's value or the reason it has none, its pass/fail checks and
//! its notes. Filled in by the phases, read by the report.

use crate::Kind;

/// The reason given for figures of phases left out with `SCALE_PHASES`.
pub const SKIPPED: &str = "skipped";
/// The reason given for figures the tokio baselines cannot report (they keep no statistics).
pub const NOT_MEASURED: &str = "not measured by the baseline";

/// One figure: a value, or why there is none (`None`: its phase has not run).
type Fig = Option<Result<f64, String>>;

#[derive(Clone, Copy)]
pub enum Better {
    Higher,
    Lower,
    /// Not a figure of the server: no ratio.
    Neither,
}

/// One row of the table: `{n}`, `{s}`, `{rate}`, `{idle}`, `{pc}` and `{rr}` in the label are
/// sizes.
pub struct Row {
    pub label: &'static str,
    pub phase: &'static str,
    pub better: Better,
    /// Decimals shown, then the unit.
    pub decimals: usize,
    pub unit: &'static str,
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
pub const HELD: usize = 0;
pub const RSS: usize = 1;
/// The kernel's memory per idle connection: `Slab` growth in /proc/meminfo, both ends.
pub const KERNEL: usize = 2;
pub const RSS_QUIET: usize = 3;
pub const ACCEPT: usize = 4;
/// Server CPU per echoed line, lines pipelined in large writes.
pub const CPU_LINE: usize = 5;
/// Request–response: server CPU per echoed line, echoes per second, round trip p50 and p99.
pub const RR_CPU: usize = 6;
pub const RR_RATE: usize = 7;
pub const RR_RTT: [usize; 2] = [8, 9];
/// End Connection lateness as the server measured it (sent − due), p50, p99, max.
pub const SERVER_LATE: [usize; 3] = [10, 11, 12];
/// The max of that lateness less how late the OS woke the loop for its turn, per close.
pub const SERVER_LOOP: usize = 13;
/// How late the OS woke heartbeat's loop after its alarm was due, max, as it measured it.
pub const SERVER_WAKE: usize = 14;
/// End Connection lateness at the peer's socket (arrival − due, from the kernel's receive
/// timestamps of the segments).
pub const PEER_LATE: [usize; 3] = [15, 16, 17];
/// The same, timed by the driver's task when it read each line (this process's scheduling
/// included).
pub const PEER_READ_LATE: [usize; 3] = [18, 19, 20];
/// A bare timer loop's wake-up lateness on this machine just before the phase, p99, max.
pub const FLOOR: [usize; 2] = [21, 22];
pub const WAKE_N: usize = 23;
pub const CPU_N: usize = 24;
pub const WAKE_0: usize = 25;
pub const CPU_0: usize = 26;

pub const ROWS: [Row; 27] = {
    use Better::{Higher, Lower, Neither};
    const SILENT: &str = "silent peers";
    const RR: &str = "request-response";
    [
        row("1. connections held (of {n})", "hold", Higher, 0, ""),
        row(
            "2. user space: server RSS per idle connection (after a heartbeat round)",
            "hold",
            Lower,
            0,
            " B",
        ),
        row(
            "2a. kernel: Slab growth per idle connection, both ends (server's and client's socket)",
            "hold",
            Neither,
            0,
            " B",
        ),
        row(
            "2b. user space: server RSS per idle connection (never heartbeated)",
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
            "4. server CPU per echoed line, pipelined ({pc} connections, 64 KB writes; median of {pr} runs)",
            "pipelining",
            Lower,
            0,
            " ns",
        ),
        row(
            "4b. server CPU per echoed line, request-response ({rr} connections, one line in flight each)",
            RR,
            Lower,
            0,
            " ns",
        ),
        row("4b. echoes per second, request-response", RR, Higher, 0, "/s"),
        row(
            "4b. round trip p50, request-response (driver on the same 2 cores)",
            RR,
            Lower,
            2,
            " ms",
        ),
        row("4b. round trip p99, request-response", RR, Lower, 2, " ms"),
        row(
            "5. close lateness p50, measured in the server ({s} silent peers; median of {sr} runs)",
            SILENT,
            Lower,
            3,
            " ms",
        ),
        row(
            "5. close lateness p99, measured in the server",
            SILENT,
            Lower,
            3,
            " ms",
        ),
        row(
            "5. close lateness max, measured in the server",
            SILENT,
            Lower,
            3,
            " ms",
        ),
        row(
            "5. close lateness max, the loop's share (less the OS's wake-up delay)",
            SILENT,
            Lower,
            3,
            " ms",
        ),
        row(
            "5. the OS's delay waking the loop after its alarm, max",
            SILENT,
            Lower,
            3,
            " ms",
        ),
        row(
            "5b. close lateness p50, at the peer's socket (kernel receive time)",
            SILENT,
            Lower,
            2,
            " ms",
        ),
        row(
            "5b. close lateness p99, at the peer's socket",
            SILENT,
            Lower,
            2,
            " ms",
        ),
        row(
            "5b. close lateness max, at the peer's socket",
            SILENT,
            Lower,
            2,
            " ms",
        ),
        row(
            "5b'. close lateness p50, at the peer, as its task read it",
            SILENT,
            Lower,
            2,
            " ms",
        ),
        row(
            "5b'. close lateness p99, at the peer, as its task read it",
            SILENT,
            Lower,
            2,
            " ms",
        ),
        row(
            "5b'. close lateness max, at the peer, as its task read it",
            SILENT,
            Lower,
            2,
            " ms",
        ),
        row(
            "5c. the machine: bare timer wake-up lateness p99, no server",
            SILENT,
            Neither,
            3,
            " ms",
        ),
        row(
            "5c. the machine: bare timer wake-up lateness max, no server",
            SILENT,
            Neither,
            3,
            " ms",
        ),
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

/// One server's results.
pub struct Figures {
    pub kind: Kind,
    /// Left out with `SCALE_ONLY`.
    pub skipped: bool,
    pub values: [Fig; ROWS.len()],
    /// All connections held, none dropped, heartbeats answered (figure 1's check).
    pub held_ok: Option<bool>,
    /// Every silent peer got exactly `count` heartbeats, End Connection, then EOF (in every
    /// run).
    pub silent_ok: Option<bool>,
    /// Runs of the silent phase begun.
    pub silent_runs: usize,
    pub notes: Vec<String>,
    /// Each figure's value in every run of a phase run more than once, in order: the figure
    /// is their median (`set_run`).
    pub runs: [Vec<f64>; ROWS.len()],
}

impl Figures {
    pub fn new(kind: Kind, skipped: bool) -> Figures {
        Figures {
            kind,
            skipped,
            values: Default::default(),
            held_ok: None,
            silent_ok: None,
            silent_runs: 0,
            notes: Vec::new(),
            runs: Default::default(),
        }
    }

    pub fn set(&mut self, figure: usize, value: f64) {
        self.values[figure] = Some(Ok(value));
    }

    /// One run's value of `figure`, in a phase run several times: the figure is the median
    /// of the runs so far.
    pub fn set_run(&mut self, figure: usize, value: f64) {
        self.runs[figure].push(value);
        self.set(figure, median(&self.runs[figure]));
    }

    /// How many runs of `figure` have been recorded.
    pub fn runs_of(&self, figure: usize) -> usize {
        self.runs[figure].len()
    }

    /// Figure `figure` has no value, because of `why`.
    pub fn fail(&mut self, figure: usize, why: &str) {
        self.values[figure] = Some(Err(why.to_string()));
    }

    pub fn get(&self, figure: usize) -> Option<f64> {
        self.values[figure].as_ref()?.as_ref().ok().copied()
    }

    /// Every figure of the phase that has no value yet gets `why` instead.
    pub fn fail_unset(&mut self, phase: &str, why: &str) {
        for (value, row) in self.values.iter_mut().zip(&ROWS) {
            if value.is_none() && row.phase == phase {
                *value = Some(Err(why.to_string()));
            }
        }
    }

    /// Why each figure that should have been measured was not, one line per reason.
    pub fn missing(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for (value, row) in self.values.iter().zip(&ROWS) {
            let why = match value {
                _ if self.skipped => continue,
                Some(Ok(_)) => continue,
                Some(Err(e)) if e == SKIPPED || e == NOT_MEASURED => continue,
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

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
