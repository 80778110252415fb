//! The load client's end-of-run report as text for a person: warnings first, then one fact
//! per line, then the latency rows. Shape and JSON are `summary`'s.

use super::ClientSummary;
use crate::ops::stats::ms;

impl ClientSummary {
    /// Multi-line human text. Warnings that make the run's figures suspect come first; then
    /// one fact per line, then the latency rows in milliseconds.
    pub fn to_text(&self) -> String {
        let mut lines = Vec::new();
        if self.false_deaths > 0 {
            lines.push(format!(
                "WARNING: the server closed {} healthy connections (false deaths)",
                self.false_deaths
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
        let mut failed = self.failed.to_string();
        for (i, (why, n)) in self.failed_by_reason.iter().enumerate() {
            failed.push_str(&format!("{}{why} {n}", if i == 0 { " (" } else { ", " }));
        }
        if !self.failed_by_reason.is_empty() {
            failed.push(')');
        }
        let m = &self.memory;
        lines.extend([
            format!(
                "Summary: {} of {} connections opened in {:.1} s",
                self.opened, self.target, self.elapsed_secs
            ),
            format!("  connections failed: {failed}"),
            format!("  closed by server: {}", self.closed_by_server),
            format!(
                "  healthy connections closed by the server (false deaths): {}",
                self.false_deaths
            ),
            format!("  ended in error: {}", self.errors),
            format!(
                "  closed, server not reading (output cap): {}",
                self.closed_output_cap
            ),
            format!("  reconnects: {}", self.reconnects),
            format!("  lines sent: {}", self.lines_sent),
            format!("  echoes received: {}", self.echoes_received),
            format!("  unanswered: {}", self.unanswered),
            format!("  heartbeats answered: {}", self.heartbeats_answered),
            format!("  lines too long: {}", self.lines_too_long),
            format!("  warnings not logged (one per reason per second): {}", self.warnings_suppressed),
            format!(
                "  client memory: {} B per open connection ({} open; {:.1} MiB at start, {:.1} MiB at end)",
                m.per_connection_bytes,
                m.open_connections,
                m.baseline_bytes as f64 / 1048576.0,
                m.end_bytes as f64 / 1048576.0
            ),
            self.rtt.row("round trip"),
            self.connect_time.row("connect time"),
            self.lag.row("client lag"),
        ]);
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
