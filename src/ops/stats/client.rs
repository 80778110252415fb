//! The load client's counters and its end-of-run report (text, and one line of JSON).
//!
//! Counters change only through the `on_*` methods, which the client's loop calls as it
//! handles events, passing the durations it measured. Nothing reads a counter to decide
//! anything: the loop keeps its own state for that. The report also says, in words, whether
//! the client itself was too slow for its figures to be the server's, and whether the server
//! closed healthy connections (false deaths). How an end is named ([`ServerEnd`]) is decided
//! by the client's `peer`, which knows what the connection heard; this only counts it.
//!
//! Attempts and connections are counted apart: `connect_attempts` is every `connect()`,
//! `opened` every connection established (a slot reconnected counts again), and
//! `connections_opened` the slots (of `target`) that opened and were not refused, which the
//! summary line reports with the time by which they had opened (not the run's length).

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ms, Latencies, Percentiles};
use crate::client::faults::FaultKind;

/// Why a connection attempt failed, counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectFailure {
    /// Nothing listening (`ECONNREFUSED`).
    Refused,
    /// The handshake did not finish in time.
    TimedOut,
    /// No local address or port left (`EADDRNOTAVAIL`): ephemeral ports exhausted, or a
    /// `--bind` address this host does not have.
    AddrNotAvailable,
    /// The process or the system ran out of file descriptors (`EMFILE`, `ENFILE`).
    TooManyOpenFiles,
    /// Anything else.
    Other,
}

impl ConnectFailure {
    /// Every reason, in the order of the counters.
    pub const ALL: [ConnectFailure; 5] = [
        ConnectFailure::Refused,
        ConnectFailure::TimedOut,
        ConnectFailure::AddrNotAvailable,
        ConnectFailure::TooManyOpenFiles,
        ConnectFailure::Other,
    ];

    /// Classifies the error a connect (or its completion check) returned.
    pub fn from_io(e: &io::Error) -> ConnectFailure {
        const ENFILE: i32 = 23;
        const EMFILE: i32 = 24;
        if cfg!(unix) && matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
            return ConnectFailure::TooManyOpenFiles;
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            io::ErrorKind::AddrNotAvailable => ConnectFailure::AddrNotAvailable,
            _ => ConnectFailure::Other,
        }
    }

    /// Words for a person, also the key in [`ClientSummary::failed_by_reason`].
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::TimedOut => "timed out",
            ConnectFailure::AddrNotAvailable => "address not available",
            ConnectFailure::TooManyOpenFiles => "too many open files",
            ConnectFailure::Other => "other",
        }
    }
}

/// How the server ended a healthy connection (one with no fault injected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEnd {
    /// `End Connection` that cannot be a dead-peer close (no heartbeat outstanding): the
    /// server stopping or draining.
    Goodbye,
    /// `End Connection` after a heartbeat: a healthy connection closed as dead, as far as the
    /// client can tell. Must be 0.
    FalseDeath,
    /// `Error: server full`, or closed before any exchange: turned away, never served.
    Refused,
    /// The stream ended without `End Connection` (a server killed, or one that does not say).
    Lost,
    /// Reset by the server, without `End Connection`.
    LostReset,
}

/// One fault kind's counts: turned bad, then noticed by the server (it closed), and how long
/// that took.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct FaultCounts {
    injected: u64,
    detected: u64,
    #[serde(with = "super::exact")]
    detection: Latencies,
}

/// What the load client counts; turned into a [`ClientSummary`] at exit. Serialised (with
/// whole histograms) only for a worker's report to its parent (`--workers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientStats {
    target: u64,
    connect_attempts: u64,
    /// Slots that opened (and were not refused) at least once.
    connections_opened: u64,
    /// From the start of the run to the first opening of the last slot to open.
    opened_in: Duration,
    opened: u64,
    open: u64,
    failed: [u64; 5],
    closed_by_server: u64,
    false_deaths: u64,
    goodbyes: u64,
    refused_by_server: u64,
    lost_closed: u64,
    lost_reset: u64,
    errors: u64,
    closed_output_cap: u64,
    reconnects: u64,
    lines_sent: u64,
    echoes_received: u64,
    unanswered: u64,
    heartbeats_answered: u64,
    lines_too_long: u64,
    #[serde(with = "super::exact")]
    rtt: Latencies,
    #[serde(with = "super::exact")]
    connect_time: Latencies,
    #[serde(with = "super::exact")]
    lag: Latencies,
    faults: [FaultCounts; 4],
}

/// What the loop knows only at the end, passed to [`ClientStats::summary`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunFacts {
    /// The run's wall time.
    pub elapsed: Duration,
    /// The server's heartbeat interval, as the client was told (`--server-interval`).
    pub server_interval: Duration,
    /// Faulty connections still open at the end, per [`FaultKind::ALL`].
    pub undetected: [u64; 4],
    /// Warnings not logged because one like it was logged less than a second before.
    pub warnings_suppressed: u64,
    pub memory: Memory,
}

/// The client's resident memory: before its first connection, and at the end with its
/// connections still open.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Memory {
    pub baseline_bytes: u64,
    pub end_bytes: u64,
    /// Connections open when `end_bytes` was read.
    pub open_connections: u64,
    /// `(end − baseline) / open`, 0 when nothing was open.
    pub per_connection_bytes: u64,
}

impl Memory {
    pub fn new(baseline_bytes: u64, end_bytes: u64, open_connections: u64) -> Memory {
        let grown = end_bytes.saturating_sub(baseline_bytes);
        Memory {
            baseline_bytes,
            end_bytes,
            open_connections,
            per_connection_bytes: grown.checked_div(open_connections).unwrap_or(0),
        }
    }
}

impl ClientStats {
    /// Empty counters for a run that asks for `target` connections.
    pub fn new(target: u64) -> Self {
        ClientStats {
            target,
            connect_attempts: 0,
            connections_opened: 0,
            opened_in: Duration::ZERO,
            opened: 0,
            open: 0,
            failed: [0; 5],
            closed_by_server: 0,
            false_deaths: 0,
            goodbyes: 0,
            refused_by_server: 0,
            lost_closed: 0,
            lost_reset: 0,
            errors: 0,
            closed_output_cap: 0,
            reconnects: 0,
            lines_sent: 0,
            echoes_received: 0,
            unanswered: 0,
            heartbeats_answered: 0,
            lines_too_long: 0,
            rtt: Latencies::default(),
            connect_time: Latencies::default(),
            lag: Latencies::default(),
            faults: Default::default(),
        }
    }

    /// Adds `other`'s counts to these: counters summed, histograms merged (see
    /// [`Latencies::merge`]).
    pub fn merge(&mut self, other: &ClientStats) {
        // Every field by name, so that a counter added later cannot be forgotten here.
        let ClientStats {
            target,
            connect_attempts,
            connections_opened,
            opened_in,
            opened,
            open,
            failed,
            closed_by_server,
            false_deaths,
            goodbyes,
            refused_by_server,
            lost_closed,
            lost_reset,
            errors,
            closed_output_cap,
            reconnects,
            lines_sent,
            echoes_received,
            unanswered,
            heartbeats_answered,
            lines_too_long,
            rtt,
            connect_time,
            lag,
            faults,
        } = other;
        for (sum, add) in [
            (&mut self.target, target),
            (&mut self.connect_attempts, connect_attempts),
            (&mut self.connections_opened, connections_opened),
            (&mut self.opened, opened),
            (&mut self.open, open),
            (&mut self.closed_by_server, closed_by_server),
            (&mut self.false_deaths, false_deaths),
            (&mut self.goodbyes, goodbyes),
            (&mut self.refused_by_server, refused_by_server),
            (&mut self.lost_closed, lost_closed),
            (&mut self.lost_reset, lost_reset),
            (&mut self.errors, errors),
            (&mut self.closed_output_cap, closed_output_cap),
            (&mut self.reconnects, reconnects),
            (&mut self.lines_sent, lines_sent),
            (&mut self.echoes_received, echoes_received),
            (&mut self.unanswered, unanswered),
            (&mut self.heartbeats_answered, heartbeats_answered),
            (&mut self.lines_too_long, lines_too_long),
        ] {
            *sum += *add;
        }
        // The processes ran side by side: theirs opened by the time the slowest had.
        self.opened_in = self.opened_in.max(*opened_in);
        for (sum, add) in self.failed.iter_mut().zip(failed) {
            *sum += *add;
        }
        self.rtt.merge(rtt);
        self.connect_time.merge(connect_time);
        self.lag.merge(lag);
        for (sum, add) in self.faults.iter_mut().zip(faults) {
            sum.injected += add.injected;
            sum.detected += add.detected;
            sum.detection.merge(&add.detection);
        }
    }

    /// A `connect()` was called (a first one or a reconnect).
    pub fn on_attempt(&mut self) {
        self.connect_attempts += 1;
    }

    /// A slot's first connection that was served (opened, not refused) had opened `after`
    /// the start of the run. Counted when it closes (or at the end), once that is known.
    pub fn on_slot_opened(&mut self, after: Duration) {
        self.connections_opened += 1;
        self.opened_in = self.opened_in.max(after);
    }

    pub fn on_connect_failed(&mut self, why: ConnectFailure) {
        self.failed[why as usize] += 1;
    }

    /// A connection was established `connect_time` after its own `connect()` call.
    pub fn on_connected(&mut self, connect_time: Duration) {
        self.opened += 1;
        self.open += 1;
        self.connect_time.record(connect_time);
    }

    /// An established connection was closed, for whatever reason (counted separately).
    pub fn on_closed(&mut self, unanswered: u64) {
        self.open = self.open.saturating_sub(1);
        self.unanswered += unanswered;
    }

    /// The server closed a connection (`End Connection`, `Error: server full` or end of
    /// stream; a reset only when it found a fault): what it was is counted apart.
    pub fn on_closed_by_server(&mut self) {
        self.closed_by_server += 1;
    }

    /// The server ended a healthy connection, in the way `end` names.
    pub fn on_server_end(&mut self, end: ServerEnd) {
        let counter = match end {
            ServerEnd::Goodbye => &mut self.goodbyes,
            ServerEnd::FalseDeath => &mut self.false_deaths,
            ServerEnd::Refused => &mut self.refused_by_server,
            ServerEnd::Lost => &mut self.lost_closed,
            ServerEnd::LostReset => &mut self.lost_reset,
        };
        *counter += 1;
    }

    /// An established connection ended in an I/O error.
    pub fn on_error(&mut self) {
        self.errors += 1;
    }

    /// Closed because the server took none of the output held for it past the cap.
    pub fn on_output_cap(&mut self) {
        self.closed_output_cap += 1;
    }

    pub fn on_reconnect(&mut self) {
        self.reconnects += 1;
    }

    /// A data line went out `lag` after its scheduled instant.
    pub fn on_line_sent(&mut self, lag: Duration) {
        self.lines_sent += 1;
        self.lag.record(lag);
    }

    /// An echo came back `rtt` after its line's *scheduled* instant.
    pub fn on_echo(&mut self, rtt: Duration) {
        self.echoes_received += 1;
        self.rtt.record(rtt);
    }

    /// A heartbeat was answered `lag` after it was due (or could have been read).
    pub fn on_heartbeat_answered(&mut self, lag: Duration) {
        self.heartbeats_answered += 1;
        self.lag.record(lag);
    }

    pub fn on_line_too_long(&mut self) {
        self.lines_too_long += 1;
    }

    pub fn on_fault_injected(&mut self, kind: FaultKind) {
        self.faults[kind as usize].injected += 1;
    }

    /// The server closed a connection `after` it turned bad.
    pub fn on_fault_detected(&mut self, kind: FaultKind, after: Duration) {
        let counts = &mut self.faults[kind as usize];
        counts.detected += 1;
        counts.detection.record(after);
    }

    fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// One status line for the terminal (no newline, no control characters).
    /// `connect_rate` is connections per second over the last second, from the caller.
    pub fn status_line(&self, connect_rate: f64) -> String {
        let rtt = self.rtt.percentiles();
        format!(
            "connected {}/{}  rate {:.0}/s  failed {}  sent {}  echoed {}  heartbeats {}  \
             closed {}  errors {}  rtt p50 {} p99 {}  lag p99 {}",
            self.open,
            self.target,
            connect_rate.max(0.0),
            self.failed_total(),
            self.lines_sent,
            self.echoes_received,
            self.heartbeats_answered,
            self.closed_by_server,
            self.errors,
            ms(rtt.p50_us, 2),
            ms(rtt.p99_us, 2),
            ms(self.lag.percentiles().p99_us, 2),
        )
    }

    /// Established connections opened so far, for the status line's rate.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// The end-of-run report.
    pub fn summary(&self, facts: &RunFacts) -> ClientSummary {
        let failed_by_reason = ConnectFailure::ALL
            .iter()
            .filter(|why| self.failed[**why as usize] > 0)
            .map(|why| (why.as_str().to_string(), self.failed[*why as usize]))
            .collect();
        let faults = FaultKind::ALL
            .iter()
            .filter(|kind| self.faults[**kind as usize].injected > 0)
            .map(|kind| {
                let counts = &self.faults[*kind as usize];
                let summary = FaultSummary {
                    injected: counts.injected,
                    detected: counts.detected,
                    undetected: facts.undetected[*kind as usize],
                    detection: counts.detection.percentiles(),
                };
                (kind.as_str().to_string(), summary)
            })
            .collect();
        let lag = self.lag.percentiles();
        let server_interval_us = super::micros(facts.server_interval);
        ClientSummary {
            elapsed_secs: facts.elapsed.as_secs_f64(),
            target: self.target,
            connect_attempts: self.connect_attempts,
            connections_opened: self.connections_opened,
            opened_in_secs: self.opened_in.as_secs_f64(),
            opened: self.opened,
            failed: self.failed_total(),
            failed_by_reason,
            closed_by_server: self.closed_by_server,
            false_deaths: self.false_deaths,
            goodbyes: self.goodbyes,
            refused_by_server: self.refused_by_server,
            lost_closed: self.lost_closed,
            lost_reset: self.lost_reset,
            errors: self.errors,
            closed_output_cap: self.closed_output_cap,
            reconnects: self.reconnects,
            lines_sent: self.lines_sent,
            echoes_received: self.echoes_received,
            unanswered: self.unanswered,
            heartbeats_answered: self.heartbeats_answered,
            lines_too_long: self.lines_too_long,
            warnings_suppressed: facts.warnings_suppressed,
            rtt: self.rtt.percentiles(),
            connect_time: self.connect_time.percentiles(),
            client_bottleneck: client_was_the_bottleneck(lag.p99_us, server_interval_us),
            lag,
            server_interval_ms: server_interval_us / 1000,
            faults,
            memory: facts.memory.clone(),
        }
    }
}

impl RunFacts {
    /// Adds another process's facts to these: the longest run, sums of the rest; memory per
    /// connection is recomputed over all processes' growth and open connections.
    pub fn merge(&mut self, other: &RunFacts) {
        self.elapsed = self.elapsed.max(other.elapsed);
        if self.server_interval.is_zero() {
            self.server_interval = other.server_interval;
        }
        for (sum, add) in self.undetected.iter_mut().zip(other.undetected) {
            *sum += add;
        }
        self.warnings_suppressed += other.warnings_suppressed;
        let (a, b) = (&self.memory, &other.memory);
        self.memory = Memory::new(
            a.baseline_bytes + b.baseline_bytes,
            a.end_bytes + b.end_bytes,
            a.open_connections + b.open_connections,
        );
    }
}

/// What a load client worker (`--workers`) hands its parent: one line of JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientReport {
    pub stats: ClientStats,
    pub facts: RunFacts,
    /// At least one connection was established.
    pub connected: bool,
    pub first_error: Option<String>,
}

/// The client's own lateness is too large for the figures to be the server's once its p99
/// exceeds a tenth of the server's heartbeat interval: a heartbeat answered that late eats a
/// tenth of the time the server gives a peer, and round trips are then the client's.
pub fn client_was_the_bottleneck(lag_p99_us: u64, server_interval_us: u64) -> bool {
    server_interval_us > 0 && lag_p99_us > server_interval_us / 10
}

/// One fault kind in the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultSummary {
    /// Connections that turned bad this way.
    pub injected: u64,
    /// Of those, closed by the server before the end of the run.
    pub detected: u64,
    /// Still open at the end: the server had not noticed (yet).
    pub undetected: u64,
    /// From the fault to the server's `End Connection` or close, as seen by the client.
    pub detection: Percentiles,
}

/// The load client's end-of-run report, printed as text or as one line of JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientSummary {
    /// The run's length, from the first connection started to the summary.
    pub elapsed_secs: f64,
    /// Connections asked for (`--connections`).
    pub target: u64,
    /// Every `connect()` called: first attempts and reconnects.
    pub connect_attempts: u64,
    /// Of `target`, how many opened at least once and were not refused by the server.
    pub connections_opened: u64,
    /// By when those had opened, from the start of the run.
    pub opened_in_secs: f64,
    /// Connections established, counting each reconnect again (and those then refused).
    pub opened: u64,
    pub failed: u64,
    /// Failed attempts per [`ConnectFailure::as_str`]; only reasons that occurred.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Closed by the server: every kind below, and faults it found (not resets).
    pub closed_by_server: u64,
    /// Healthy connections the server told `End Connection` after a heartbeat. Must be 0.
    pub false_deaths: u64,
    /// Told `End Connection` with no heartbeat outstanding: the server stopping.
    pub goodbyes: u64,
    /// Told `Error: server full`, or closed by the server before any exchange.
    pub refused_by_server: u64,
    /// Closed by the server without `End Connection`.
    pub lost_closed: u64,
    /// Reset by the server, without `End Connection`.
    pub lost_reset: u64,
    pub errors: u64,
    /// Closed by the client: the server took none of the output held for it past the cap.
    pub closed_output_cap: u64,
    pub reconnects: u64,
    pub lines_sent: u64,
    pub echoes_received: u64,
    pub unanswered: u64,
    pub heartbeats_answered: u64,
    pub lines_too_long: u64,
    pub warnings_suppressed: u64,
    /// From each line's scheduled instant to its echo (so the client's own lateness counts).
    pub rtt: Percentiles,
    /// From each connection's own `connect()` call until it was established.
    pub connect_time: Percentiles,
    /// The client's own lateness: how long after it was due it sent a line or answered a
    /// heartbeat.
    pub lag: Percentiles,
    /// The server's heartbeat interval the client compared its lag with.
    pub server_interval_ms: u64,
    /// True when the client's lag p99 exceeded a tenth of the server's interval.
    pub client_bottleneck: bool,
    /// Per fault kind injected (`--faults`).
    pub faults: BTreeMap<String, FaultSummary>,
    pub memory: Memory,
}

impl ClientSummary {
    /// Lines neither echoed nor counted as unanswered: 0 when the client kept its books.
    pub fn lost(&self) -> u64 {
        self.lines_sent
            .saturating_sub(self.echoes_received)
            .saturating_sub(self.unanswered)
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        super::one_line_json(self)
    }

    /// Multi-line human text. Warnings that make the run's figures suspect come first; then
    /// one fact per line, then the latency rows in milliseconds. A count that is zero and
    /// says nothing about this run (no reconnects, no lines too long) is left out of the text;
    /// the JSON keeps every field.
    pub fn to_text(&self) -> String {
        let mut lines = Vec::new();
        if self.false_deaths > 0 {
            lines.push(format!(
                "WARNING: the server closed {} as dead after a heartbeat (false deaths; a stop \
                 whose End Connection came after a heartbeat looks the same: the server's \
                 summary tells them apart)",
                plural(self.false_deaths, "healthy connection")
            ));
        }
        if self.client_bottleneck {
            lines.push(format!(
                "WARNING: the client was the bottleneck: its lag p99 {} exceeded a tenth of the \
                 server's interval ({} ms); these figures are partly the client's",
                ms(self.lag.p99_us, 3),
                self.server_interval_ms
            ));
        }
        lines.push(format!(
            "Summary: {} of {} opened in {:.1} s (run {:.1} s)",
            self.connections_opened,
            plural(self.target, "connection"),
            self.opened_in_secs,
            self.elapsed_secs
        ));
        // Attempts and reconnections only when there were more than connections to show.
        let more = self.connect_attempts > self.connections_opened;
        let again = self.opened > self.connections_opened;
        for (label, n, show) in [
            ("connect attempts", self.connect_attempts, more),
            ("reconnects", self.reconnects, self.reconnects > 0),
            (
                "connections established, reconnects included",
                self.opened,
                again,
            ),
        ] {
            if show {
                lines.push(format!("  {label}: {n}"));
            }
        }
        if self.failed > 0 {
            let reasons: Vec<String> = self
                .failed_by_reason
                .iter()
                .map(|(why, n)| format!("{why} {n}"))
                .collect();
            let reasons = reasons.join(", ");
            lines.push(format!("  connections failed: {} ({reasons})", self.failed));
        }
        let mut row = |label: &str, n: u64, always: bool| {
            if always || n > 0 {
                lines.push(format!("  {label}: {n}"));
            }
        };
        row("closed by the server", self.closed_by_server, false);
        row(
            "refused by the server (server full, or closed before any exchange)",
            self.refused_by_server,
            false,
        );
        row(
            "goodbyes (End Connection at the server's stop, no heartbeat outstanding)",
            self.goodbyes,
            false,
        );
        row(
            "healthy connections closed by the server (false deaths)",
            self.false_deaths,
            true,
        );
        row(
            "lost (closed by server without End Connection)",
            self.lost_closed,
            false,
        );
        row("lost (reset by server)", self.lost_reset, false);
        row("ended in error", self.errors, false);
        row(
            "closed, server not reading (output cap)",
            self.closed_output_cap,
            false,
        );
        let data = self.lines_sent > 0 || self.echoes_received > 0;
        row("lines sent", self.lines_sent, data);
        row("echoes received", self.echoes_received, data);
        row("unanswered", self.unanswered, data);
        row("heartbeats answered", self.heartbeats_answered, true);
        row("lines too long", self.lines_too_long, false);
        row(
            "warnings not logged (one per reason per second)",
            self.warnings_suppressed,
            false,
        );
        let m = &self.memory;
        lines.push(format!(
            "  client memory: {} B per open connection ({} open; {:.1} MiB at start, {:.1} MiB at end)",
            m.per_connection_bytes,
            m.open_connections,
            m.baseline_bytes as f64 / 1048576.0,
            m.end_bytes as f64 / 1048576.0
        ));
        if self.rtt.count > 0 {
            lines.push(self.rtt.row("round trip"));
        }
        lines.push(self.connect_time.row("connect time"));
        lines.push(self.lag.row("client lag"));
        lines.push(format!(
            "  client lag p99 against the server's interval ({} ms): {}",
            self.server_interval_ms,
            if self.client_bottleneck {
                "the client was the bottleneck"
            } else {
                "under a tenth, the figures are the server's"
            }
        ));
        for (kind, f) in &self.faults {
            lines.push(format!(
                "  fault {kind}: {} injected, {} detected by the server, {} not by the end",
                f.injected, f.detected, f.undetected
            ));
            lines.push(f.detection.row(&format!("  {kind} found in")));
        }
        lines.join("\n")
    }
}

/// `n` and `word`, with an `s` unless `n` is 1: "1 connection", "2 connections".
pub(crate) fn plural(n: u64, word: &str) -> String {
    match n {
        1 => format!("1 {word}"),
        _ => format!("{n} {word}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RunFacts {
        RunFacts {
            elapsed: Duration::from_secs(1),
            server_interval: Duration::from_secs(10),
            ..RunFacts::default()
        }
    }

    #[test]
    fn from_io_maps_reasons() {
        use io::ErrorKind::*;
        let of = |k| ConnectFailure::from_io(&io::Error::from(k));
        assert_eq!(of(ConnectionRefused), ConnectFailure::Refused);
        assert_eq!(of(TimedOut), ConnectFailure::TimedOut);
        assert_eq!(of(AddrNotAvailable), ConnectFailure::AddrNotAvailable);
        assert_eq!(of(PermissionDenied), ConnectFailure::Other);
        #[cfg(unix)]
        assert_eq!(
            ConnectFailure::from_io(&io::Error::from_raw_os_error(24)),
            ConnectFailure::TooManyOpenFiles
        );
    }

    #[test]
    fn failures_counted_by_reason() {
        let mut c = ClientStats::new(10);
        c.on_connect_failed(ConnectFailure::Refused);
        c.on_connect_failed(ConnectFailure::Refused);
        c.on_connect_failed(ConnectFailure::TooManyOpenFiles);
        let s = c.summary(&facts());
        assert_eq!(s.failed, 3);
        assert_eq!(s.failed_by_reason.len(), 2, "zero reasons are left out");
        assert_eq!(s.failed_by_reason["refused"], 2);
        assert_eq!(s.failed_by_reason["too many open files"], 1);
        let text = s.to_text();
        assert!(
            text.contains("refused 2") && text.contains("too many open files 1"),
            "{text}"
        );
    }

    #[test]
    fn rtt_percentiles_from_known_samples() {
        let mut c = ClientStats::new(1);
        for us in 1..=1000 {
            c.on_echo(Duration::from_micros(us));
        }
        let p = c.summary(&facts()).rtt;
        assert_eq!(p.count, 1000);
        assert!((499..=501).contains(&p.p50_us), "{p:?}");
        assert!((989..=991).contains(&p.p99_us), "{p:?}");
        assert_eq!(p.max_us, 1000);
    }

    #[test]
    fn open_connections_follow_connects_and_closes() {
        let mut c = ClientStats::new(3);
        c.on_connected(Duration::from_millis(1));
        c.on_connected(Duration::from_millis(2));
        c.on_closed(4);
        c.on_closed(0);
        c.on_closed(0); // one too many: saturates
        let s = c.summary(&facts());
        assert_eq!((s.opened, s.unanswered, s.connect_time.count), (2, 4, 2));
        assert!(c.status_line(0.0).starts_with("connected 0/3"));
    }

    #[test]
    fn a_healthy_connection_closed_by_the_server_is_a_false_death_shown_first() {
        let mut c = ClientStats::new(2);
        c.on_closed_by_server();
        c.on_fault_detected(FaultKind::Silent, Duration::from_secs(1));
        assert_eq!(c.summary(&facts()).false_deaths, 0);
        assert!(!c.summary(&facts()).to_text().contains("WARNING"));
        c.on_closed_by_server();
        c.on_server_end(ServerEnd::FalseDeath);
        let s = c.summary(&facts());
        assert_eq!((s.closed_by_server, s.false_deaths), (2, 1));
        let text = s.to_text();
        assert!(
            text.starts_with("WARNING: the server closed 1 healthy connection as dead"),
            "{text}"
        );
        c.on_server_end(ServerEnd::FalseDeath);
        let text = c.summary(&facts()).to_text();
        assert!(text.starts_with("WARNING: the server closed 2 healthy connections"));
    }

    /// Goodbyes, refusals and lost connections are counted apart, and none of them is a
    /// false death or sets off the warning.
    #[test]
    fn goodbyes_refusals_and_losses_are_named_not_false_deaths() {
        let mut c = ClientStats::new(10);
        for end in [
            ServerEnd::Goodbye,
            ServerEnd::Goodbye,
            ServerEnd::Refused,
            ServerEnd::Lost,
            ServerEnd::LostReset,
        ] {
            c.on_server_end(end);
        }
        let s = c.summary(&facts());
        let named = (s.goodbyes, s.refused_by_server, s.lost_closed, s.lost_reset);
        assert_eq!((named, s.false_deaths), ((2, 1, 1, 1), 0), "{s:?}");
        let text = s.to_text();
        assert!(!text.contains("WARNING"), "{text}");
        for row in [
            "goodbyes (End Connection at the server's stop, no heartbeat outstanding): 2",
            "refused by the server (server full, or closed before any exchange): 1",
            "lost (closed by server without End Connection): 1",
            "lost (reset by server): 1",
            "healthy connections closed by the server (false deaths): 0",
        ] {
            assert!(text.contains(row), "{row} missing:\n{text}");
        }
    }

    /// The summary line counts connections (slots), never attempts, and gives the time they
    /// took to open apart from the run's; attempts and reconnects get rows of their own.
    /// Before: "14893 of 200 connections opened in 6.0 s", "1 connections".
    #[test]
    fn the_summary_line_counts_connections_not_attempts_with_their_own_time() {
        let mut c = ClientStats::new(200);
        for i in 0..14_893u64 {
            c.on_attempt();
            c.on_connected(Duration::from_micros(100));
            // Ten slots' connections were told the server was full every time.
            if i < 190 {
                c.on_slot_opened(Duration::from_millis(2 * i));
            }
            if i >= 200 {
                c.on_reconnect();
            }
        }
        let run = RunFacts {
            elapsed: Duration::from_secs(6),
            ..facts()
        };
        let s = c.summary(&run);
        assert_eq!(
            (s.connections_opened, s.connect_attempts, s.opened),
            (190, 14_893, 14_893)
        );
        let text = s.to_text();
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "Summary: 190 of 200 connections opened in 0.4 s (run 6.0 s)"
        );
        assert!(text.contains("\n  connect attempts: 14893\n"), "{text}");
        assert!(text.contains("\n  reconnects: 14693\n"), "{text}");

        let mut one = ClientStats::new(1);
        one.on_attempt();
        one.on_connected(Duration::from_millis(1));
        one.on_slot_opened(Duration::from_millis(3));
        let text = one.summary(&facts()).to_text();
        assert!(
            text.starts_with("Summary: 1 of 1 connection opened in 0.0 s (run 1.0 s)\n"),
            "{text}"
        );
        // Nothing happened that these rows would count: they are left out of the text, and
        // still in the JSON.
        for absent in [
            "connect attempts",
            "reconnects",
            "connections failed",
            "refused",
            "goodbyes",
            "lost",
            "ended in error",
            "output cap",
            "lines sent",
            "lines too long",
            "warnings not logged",
            "round trip",
        ] {
            assert!(!text.contains(absent), "{absent}:\n{text}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&one.summary(&facts()).to_json()).expect("JSON");
        for key in [
            "reconnects",
            "lost_reset",
            "goodbyes",
            "lines_too_long",
            "connect_attempts",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }

    #[test]
    fn merged_workers_sum_connections_and_keep_the_slowest_opening() {
        let mut a = ClientStats::new(2);
        a.on_slot_opened(Duration::from_millis(300));
        a.on_server_end(ServerEnd::Goodbye);
        let mut b = ClientStats::new(2);
        b.on_slot_opened(Duration::from_millis(900));
        b.on_attempt();
        a.merge(&b);
        let s = a.summary(&facts());
        assert_eq!(
            (s.connections_opened, s.connect_attempts, s.goodbyes),
            (2, 1, 1)
        );
        assert!((s.opened_in_secs - 0.9).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn the_client_is_the_bottleneck_past_a_tenth_of_the_server_interval() {
        assert!(
            !client_was_the_bottleneck(50_000, 500_000),
            "exactly a tenth"
        );
        assert!(client_was_the_bottleneck(50_001, 500_000));
        assert!(!client_was_the_bottleneck(10, 0), "interval unknown");
        let mut c = ClientStats::new(1);
        for _ in 0..100 {
            c.on_heartbeat_answered(Duration::from_millis(60));
        }
        let quick = RunFacts {
            server_interval: Duration::from_millis(500),
            ..facts()
        };
        let s = c.summary(&quick);
        assert!(s.client_bottleneck && s.server_interval_ms == 500, "{s:?}");
        assert!(
            s.to_text()
                .starts_with("WARNING: the client was the bottleneck"),
            "{}",
            s.to_text()
        );
        assert!(!c.summary(&facts()).client_bottleneck, "60 ms < 1 s");
    }

    #[test]
    fn faults_are_reported_per_kind_with_detection_times() {
        let mut c = ClientStats::new(10);
        c.on_fault_injected(FaultKind::Silent);
        c.on_fault_injected(FaultKind::Silent);
        c.on_fault_detected(FaultKind::Silent, Duration::from_millis(2500));
        let mut f = facts();
        f.undetected[FaultKind::Silent as usize] = 1;
        let s = c.summary(&f);
        assert_eq!(s.faults.len(), 1, "kinds never injected are left out");
        let silent = &s.faults["silent"];
        assert_eq!(
            (silent.injected, silent.detected, silent.undetected),
            (2, 1, 1)
        );
        assert!((2_497_000..=2_503_000).contains(&silent.detection.max_us));
        let text = s.to_text();
        assert!(
            text.contains("fault silent: 2 injected, 1 detected"),
            "{text}"
        );
        assert!(text.contains("silent found in"), "{text}");
    }

    #[test]
    fn memory_per_connection_is_growth_over_open_connections() {
        let m = Memory::new(4_000_000, 5_000_000, 10_000);
        assert_eq!(m.per_connection_bytes, 100);
        assert_eq!(Memory::new(4_000_000, 5_000_000, 0).per_connection_bytes, 0);
        assert_eq!(
            Memory::new(5_000_000, 4_000_000, 10).per_connection_bytes,
            0
        );
    }

    #[test]
    fn json_round_trips_and_is_one_line() {
        let mut c = ClientStats::new(100);
        c.on_connected(Duration::from_millis(3));
        c.on_connect_failed(ConnectFailure::TimedOut);
        c.on_closed_by_server();
        c.on_line_sent(Duration::from_micros(40));
        c.on_echo(Duration::from_micros(250));
        c.on_fault_injected(FaultKind::Reset);
        c.on_reconnect();
        let s = c.summary(&facts());
        let json = s.to_json();
        assert!(!json.contains('\n'), "{json}");
        let back: ClientSummary = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back, s);
        assert_eq!(back.lost(), 0);
        assert_eq!(back.reconnects, 1);
    }

    #[test]
    fn status_line_is_one_clean_line() {
        let mut c = ClientStats::new(1000);
        for _ in 0..950 {
            c.on_connected(Duration::ZERO);
        }
        c.on_echo(Duration::from_micros(120));
        let line = c.status_line(1000.0);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.starts_with("connected 950/1000  rate 1000/s"),
            "{line}"
        );
        assert!(line.contains("p50 0.12ms"), "{line}");
    }

    #[test]
    fn huge_durations_saturate_and_empty_histograms_are_zero() {
        let mut c = ClientStats::new(1);
        c.on_echo(Duration::MAX);
        let s = c.summary(&facts());
        assert_eq!(s.rtt.count, 1);
        assert!(s.rtt.max_us > 3_590_000_000, "{s:?}");
        assert_eq!(s.connect_time, Percentiles::default());
        assert!(s.to_text().contains("connect time p50 0.000ms"));
    }
}
