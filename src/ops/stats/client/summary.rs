//! The load client's end-of-run report: its shape, and its one line of JSON. The counting
//! is the parent module's; the text for a person is `text`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Memory;
use crate::ops::stats::Percentiles;

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
    pub elapsed_secs: f64,
    pub target: u64,
    pub opened: u64,
    pub failed: u64,
    /// Failed attempts per [`ConnectFailure::as_str`]; only reasons that occurred.
    pub failed_by_reason: BTreeMap<String, u64>,
    pub closed_by_server: u64,
    /// Connections with no fault injected that the server closed. Must be 0.
    pub false_deaths: u64,
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
        crate::ops::stats::one_line_json(self)
    }
}
