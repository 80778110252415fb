//! The load client's end-of-run report as text for a person: warnings first, then one fact
//! per line, then the latency rows. Shape and JSON are `summary`'s.

use super::ClientSummary;
use crate::ops::stats::ms;

impl ClientSummary {
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
        if self.handshake_time.count > 0 {
            lines.push(self.handshake_time.row("TLS handshake"));
            if self.resumed_handshake_time.count > 0 {
                lines.push(self.resumed_handshake_time.row("TLS resumed"));
            }
        }
        for (why, n) in &self.tls_failed_by_reason {
            lines.push(format!("  failed in TLS, {why}: {n}"));
        }
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
