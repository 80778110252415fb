//! The load client's counters, and the end-of-run report made from them.
//!
//! | file         | owns                                                               |
//! |--------------|--------------------------------------------------------------------|
//! | this one     | the counters (`ClientStats`), what the loop knows at the end        |
//! |              | (`RunFacts`), and merging both (`--workers`)                       |
//! | `summary`    | the report's shape (`ClientSummary`) and its one line of JSON      |
//! | `text`       | the report as text for a person                                    |
//! | `failure`    | why a connection attempt failed (`ConnectFailure`)                 |
//! | `series`     | the counts per wall-clock second                                   |
//! | `merge`      | `client merge`: summaries read back into counters, then combined   |
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

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{ms, Latencies};
use crate::cores::vocab::FaultKind;

mod failure;
pub mod merge;
pub mod series;
mod summary;
#[cfg(test)]
mod tests;
mod text;

pub use failure::{ConnectFailure, TlsFailure};
use series::{Column, Series, SeriesError};
pub use summary::{ClientSummary, FaultSummary, Histograms, RunSettings, FORMAT};
pub(crate) use text::plural;

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
    /// `--tls`: from the TCP connection established to the handshake done, every handshake.
    #[serde(with = "super::exact", default)]
    handshake_time: Latencies,
    /// `--tls`: the same for the resumed ones only (the rest were full).
    #[serde(with = "super::exact", default)]
    resumed_handshake_time: Latencies,
    /// `--tls`: connections that failed in TLS, per [`TlsFailure`].
    #[serde(default)]
    tls_failed: [u64; 6],
    /// The counts per wall-clock second.
    series: Series,
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
    /// The settings the run was made with (merged runs: see [`RunSettings::merge`]).
    pub settings: RunSettings,
    /// Client processes whose counts these are: 1 for a run, more when merged.
    pub runs: u64,
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
            handshake_time: Latencies::default(),
            resumed_handshake_time: Latencies::default(),
            tls_failed: [0; 6],
            series: Series::default(),
        }
    }

    /// Starts the per-second rows: `now` on the loop's clock is `wall` on the wall clock.
    pub fn start_series(&mut self, now: Instant, wall: SystemTime) {
        self.series.start(now, wall);
    }

    /// The loop's clock at this turn: counts from here on go to its second. Once per turn.
    pub fn at(&mut self, now: Instant) {
        self.series.at(now);
    }

    /// Whether [`merge`](Self::merge) can take all of `other`: its rows must fall within a
    /// day of these.
    pub fn can_merge(&self, other: &ClientStats) -> Result<(), SeriesError> {
        self.series.clone().merge(&other.series)
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
            handshake_time,
            resumed_handshake_time,
            tls_failed,
            series,
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
        self.handshake_time.merge(handshake_time);
        self.resumed_handshake_time.merge(resumed_handshake_time);
        for (sum, add) in self.tls_failed.iter_mut().zip(tls_failed) {
            *sum += *add;
        }
        for (sum, add) in self.faults.iter_mut().zip(faults) {
            sum.injected += add.injected;
            sum.detected += add.detected;
            sum.detection.merge(&add.detection);
        }
        // Rows more than a day from these are left out (checked first by `can_merge` where
        // runs come from elsewhere; workers of one run always fit).
        let _ = self.series.merge(series);
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
        self.series.row().add(Column::Failed, 1);
    }

    /// A connection was established `connect_time` after its own `connect()` call.
    pub fn on_connected(&mut self, connect_time: Duration) {
        self.opened += 1;
        self.open += 1;
        self.connect_time.record(connect_time);
        let row = self.series.row();
        row.add(Column::Opened, 1);
        row.set(Column::Open, self.open);
    }

    /// A TLS handshake was done `time` after its TCP connection was established; `resumed`
    /// with a ticket (else a full one).
    pub fn on_handshake(&mut self, time: Duration, resumed: bool) {
        self.handshake_time.record(time);
        if resumed {
            self.resumed_handshake_time.record(time);
        }
    }

    /// A TLS connection failed (in its handshake, or refused by the server after it).
    pub fn on_tls_failed(&mut self, why: TlsFailure) {
        self.tls_failed[why as usize] += 1;
    }

    /// An established connection was closed, for whatever reason (counted separately).
    pub fn on_closed(&mut self, unanswered: u64) {
        self.open = self.open.saturating_sub(1);
        self.unanswered += unanswered;
        self.series.row().set(Column::Open, self.open);
    }

    /// The server closed a connection (`End Connection`, `Error: server full` or end of
    /// stream; a reset only when it found a fault): what it was is counted apart.
    pub fn on_closed_by_server(&mut self) {
        self.closed_by_server += 1;
        self.series.row().add(Column::ClosedByServer, 1);
    }

    /// The server ended a healthy connection, in the way `end` names.
    pub fn on_server_end(&mut self, end: ServerEnd) {
        let counter = match end {
            ServerEnd::Goodbye => &mut self.goodbyes,
            ServerEnd::FalseDeath => {
                self.series.row().add(Column::FalseDeaths, 1);
                &mut self.false_deaths
            }
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
        let row = self.series.row();
        row.add(Column::Lines, 1);
        row.max(Column::LagMaxUs, series::micros(lag));
    }

    /// An echo came back `rtt` after its line's *scheduled* instant.
    pub fn on_echo(&mut self, rtt: Duration) {
        self.echoes_received += 1;
        self.rtt.record(rtt);
        let us = series::micros(rtt);
        let row = self.series.row();
        row.add(Column::Echoes, 1);
        row.add(Column::RttSumUs, us);
        row.max(Column::RttMaxUs, us);
    }

    /// A heartbeat was answered `lag` after it was due (or could have been read).
    pub fn on_heartbeat_answered(&mut self, lag: Duration) {
        self.heartbeats_answered += 1;
        self.lag.record(lag);
        let row = self.series.row();
        row.add(Column::HeartbeatsAnswered, 1);
        row.max(Column::LagMaxUs, series::micros(lag));
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
            handshake_time: self.handshake_time.percentiles(),
            resumed_handshake_time: self.resumed_handshake_time.percentiles(),
            tls_failed_by_reason: TlsFailure::ALL
                .iter()
                .filter(|why| self.tls_failed[**why as usize] > 0)
                .map(|why| (why.as_str().to_string(), self.tls_failed[*why as usize]))
                .collect(),
            client_bottleneck: client_was_the_bottleneck(lag.p99_us, server_interval_us),
            lag,
            server_interval_ms: server_interval_us / 1000,
            faults,
            memory: facts.memory.clone(),
            format: FORMAT.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            runs: facts.runs.max(1),
            open: self.open,
            settings: facts.settings.clone(),
            histograms: self.histograms(),
            series: self.series.clone(),
        }
    }

    /// Every histogram, encoded so that it merges exactly (see [`super::hdr`]).
    fn histograms(&self) -> Histograms {
        let detection = FaultKind::ALL
            .iter()
            .filter(|kind| self.faults[**kind as usize].injected > 0)
            .map(|kind| {
                let counts = &self.faults[*kind as usize];
                (
                    kind.as_str().to_string(),
                    super::hdr::encode(&counts.detection),
                )
            })
            .collect();
        Histograms {
            rtt: super::hdr::encode(&self.rtt),
            connect_time: super::hdr::encode(&self.connect_time),
            lag: super::hdr::encode(&self.lag),
            handshake_time: super::hdr::encode(&self.handshake_time),
            resumed_handshake_time: super::hdr::encode(&self.resumed_handshake_time),
            detection,
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
        self.settings.merge(&other.settings);
        self.runs += other.runs.max(1);
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
