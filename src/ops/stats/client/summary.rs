//! The load client's end-of-run report: its shape, and its one line of JSON. The counting
//! is the parent module's; the text for a person is `text`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::series::Series;
use super::Memory;
use crate::ops::stats::Percentiles;

/// What the JSON is, so that `client merge` refuses anything else by name.
pub const FORMAT: &str = "heartbeat-client summary 1";

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
    /// Failed attempts per [`ConnectFailure::as_str`](super::ConnectFailure::as_str); only reasons that occurred.
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
    /// `--tls`: from the TCP connection established to the TLS handshake done.
    #[serde(default)]
    pub handshake_time: Percentiles,
    /// `--tls`: the same, of the handshakes that resumed a session (a ticket); the others
    /// (`handshake_time.count` less these) were full.
    #[serde(default)]
    pub resumed_handshake_time: Percentiles,
    /// `--tls`: connections that failed in TLS, per [`TlsFailure::as_str`]; only reasons
    /// that occurred.
    ///
    /// [`TlsFailure::as_str`]: super::TlsFailure::as_str
    #[serde(default)]
    pub tls_failed_by_reason: BTreeMap<String, u64>,
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
    /// [`FORMAT`]: what this JSON is.
    pub format: String,
    /// The client's version: `client merge` combines only files of one version.
    pub version: String,
    /// Client processes whose counts these are: 1, or more once merged.
    pub runs: u64,
    /// Connections still open at the end.
    pub open: u64,
    pub settings: RunSettings,
    /// Every latency histogram whole, to merge exactly and to plot.
    pub histograms: Histograms,
    /// The counts per wall-clock second.
    pub series: Series,
}

/// Every latency histogram of a run in HdrHistogram's V2 compressed encoding, base64 (see
/// `stats::hdr`): other HDR tools read them, and merged they give the percentiles of all the
/// durations together.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Histograms {
    pub rtt: String,
    pub connect_time: String,
    pub lag: String,
    /// `--tls`: the handshake times (absent from summaries of runs without TLS support).
    #[serde(default)]
    pub handshake_time: String,
    /// `--tls`: the resumed handshakes' times.
    #[serde(default)]
    pub resumed_handshake_time: String,
    /// Per fault kind injected: from the fault to the server's close.
    pub detection: BTreeMap<String, String>,
}

/// The settings a run was made with, in the report and checked by `client merge`: runs with
/// a different line interval, message, heartbeat delay or server interval measured different
/// things and are refused; the rest combine (see [`RunSettings::merge`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunSettings {
    /// The server's address; merged runs against several: each once, comma-separated.
    pub server: String,
    /// Connections asked for (merged: summed).
    pub connections: u64,
    /// New connections per second at most (merged: summed).
    pub connect_rate: u64,
    /// Between data lines on each connection; 0: none.
    pub interval_ms: u64,
    pub message_bytes: u64,
    pub heartbeat_block_ms: u64,
    /// `--duration`, if given (merged: the longest).
    pub duration_ms: Option<u64>,
    /// `--faults` as `kind=P%` pairs; merged runs: each distinct one, `; `-separated.
    pub faults: String,
    pub fault_window_ms: u64,
    pub seed: u64,
    pub reconnect: bool,
    /// The server's heartbeat interval the client judged its own lag against.
    pub server_interval_ms: u64,
}

impl RunSettings {
    /// Why runs made with `self` and `other` cannot be one result, if they cannot.
    pub fn incompatible(&self, other: &RunSettings) -> Option<String> {
        let checks = [
            ("--interval", self.interval_ms, other.interval_ms, "ms"),
            (
                "--message length",
                self.message_bytes,
                other.message_bytes,
                "bytes",
            ),
            (
                "--heartbeat-block",
                self.heartbeat_block_ms,
                other.heartbeat_block_ms,
                "ms",
            ),
            (
                "--server-interval",
                self.server_interval_ms,
                other.server_interval_ms,
                "ms",
            ),
        ];
        checks.into_iter().find(|(_, a, b, _)| a != b).map(|(flag, a, b, unit)| {
            format!("{flag} {b} {unit}, not {a} {unit} as in the others: they measured different things")
        })
    }

    /// Adds another run's settings: counts summed, the longest duration and window, each
    /// distinct server and fault mix once; the rest are `self`'s (checked equal first by
    /// [`incompatible`](Self::incompatible) where it matters).
    pub fn merge(&mut self, other: &RunSettings) {
        if self == &RunSettings::default() {
            *self = other.clone();
            return;
        }
        self.connections += other.connections;
        self.connect_rate += other.connect_rate;
        self.duration_ms = self.duration_ms.max(other.duration_ms);
        self.fault_window_ms = self.fault_window_ms.max(other.fault_window_ms);
        self.reconnect |= other.reconnect;
        join_distinct(&mut self.server, &other.server, ",");
        join_distinct(&mut self.faults, &other.faults, "; ");
    }
}

/// Appends `add` to the `sep`-separated `list` unless it is there (or empty).
fn join_distinct(list: &mut String, add: &str, sep: &str) {
    if add.is_empty() || list.split(sep).any(|item| item == add) {
        return;
    }
    if !list.is_empty() {
        list.push_str(sep);
    }
    list.push_str(add);
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
        crate::ops::stats::one_line_json(self)
    }
}
