//! Counting and reporting: the server's counters, the latency histogram both binaries use,
//! and the summaries printed at exit (human text, and JSON for scripts). The load client's
//! counters and report are in [`client`].
//!
//! Owns no socket and reads no clock: callers count events as they handle them and pass in
//! the times and durations they measured. Nothing here decides anything about timing or
//! liveness.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cores::tls::Refusal as TlsRefusal;
use crate::cores::vocab::{Reason, Refusal};

pub mod client;
pub mod hdr;
mod latency;
pub use client::{ClientStats, ClientSummary, ConnectFailure};
pub use latency::{exact, Buckets, Latencies, Percentiles, Recorded};

/// What the server counts over its lifetime; printed by [`ServerStats::summary`] at exit.
///
/// `Deserialize` reads the counters back (missing ones as 0) but not the histograms, which
/// the JSON gives as percentiles: [`ServerStats::to_exact_json`] carries those whole.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ServerStats {
    pub accepted: u64,
    /// Connections open now (kept by [`on_open`](Self::on_open) / [`on_close`](Self::on_close)).
    pub open: u64,
    pub peak_open: u64,
    pub lines_echoed: u64,
    pub heartbeats_sent: u64,
    /// Rounds of heartbeats answered: a peer that speaks after heartbeat k counts once.
    pub heartbeats_answered: u64,
    /// Told `End Connection` and closed: silent for a full interval after each heartbeat.
    pub closed_dead: u64,
    /// The peer closed its side.
    pub closed_by_peer: u64,
    /// Resets, broken pipes.
    pub closed_on_error: u64,
    pub closed_at_shutdown: u64,
    /// Closed for holding the most while all buffers stayed over `--max-buffered`.
    pub closed_over_budget: u64,
    /// Left without sending a byte (TCP health checks, scans): not errors.
    pub closed_probe: u64,
    /// Log lines lost because the log's destination was not keeping up (`logging`).
    pub log_lines_dropped: u64,
    pub lines_too_long: u64,
    /// Refused because `--max-connections` were already open.
    pub rejected_full: u64,
    /// Refused because the peer's address is not in `--allow`.
    pub rejected_not_allowed: u64,
    /// `accept` itself failed (e.g. `EMFILE`).
    pub accept_errors: u64,
    /// Closed without a valid PROXY protocol v2 header (`--proxy-protocol`).
    pub rejected_proxy_header: u64,
    /// TLS handshakes begun (`--tls-cert`): each costs the server CPU, so a peer refused at
    /// accept (`--allow`, `--max-connections`) begins none.
    pub tls_handshakes: u64,
    /// Of the TLS handshakes done, those that resumed a session with a ticket we gave
    /// (TLS 1.3 PSK): no certificate sent, no signature made.
    pub tls_resumed: u64,
    /// TLS handshakes refused, by reason (`--tls-cert`; `cores::tls::Refusal`).
    pub rejected_tls: TlsRefusals,
    /// Of those, closed to make room while the most peers allowed were waiting for one.
    pub proxy_header_evicted: u64,
    /// Metrics scrapers answered `503` because every slot was taken.
    pub metrics_busy: u64,
    /// How long after its due time each `End Connection` was sent.
    #[serde(skip_deserializing)]
    pub close_lateness: Latencies,
    /// The same, less how long the OS kept the loop asleep past that deadline: the loop's
    /// own share (tick rounding and work).
    #[serde(skip_deserializing)]
    pub close_lateness_loop: Latencies,
    /// How long after its wake-up alarm was due the loop was running again, each time it
    /// slept until one: the operating system's share of timer lateness.
    #[serde(skip_deserializing)]
    pub wake_delay: Latencies,
    /// For each peer closed as dead, how long it had been silent when told `End Connection`
    /// (its last byte to the decision): how fast dead peers are found.
    #[serde(skip_deserializing)]
    pub detection_time: Latencies,
    /// Bytes read from peers, and bytes the kernel took for them.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Live upgrades (SIGUSR2) done and given up (the old process served on), counted on
    /// across the processes of one server's life, as every counter here is.
    pub upgrades: u64,
    pub upgrades_failed: u64,
    /// Peers handed from one process to the next in those upgrades.
    pub handed_over: u64,
    /// TLS peers kept by the old process in those upgrades (a TLS session cannot move): it
    /// serves them until they leave or `--tls-upgrade-keep` has passed.
    pub tls_kept: u64,
    /// The last upgrade's pause, from the old loop's last turn to the new one's first (µs).
    pub upgrade_pause_us: u64,
}

/// TLS handshakes refused, counted by [`TlsRefusal`] (indexed by its discriminant); in JSON an
/// object from each reason's name to its count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlsRefusals(pub [u64; TlsRefusal::ALL.len()]);

impl TlsRefusals {
    pub fn by_reason(&self) -> impl Iterator<Item = (TlsRefusal, u64)> + '_ {
        TlsRefusal::ALL.into_iter().map(|r| (r, self.0[r as usize]))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Serialize for TlsRefusals {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(TlsRefusal::ALL.len()))?;
        for (refusal, count) in self.by_reason() {
            map.serialize_entry(refusal.name(), &count)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for TlsRefusals {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let named = std::collections::BTreeMap::<String, u64>::deserialize(deserializer)?;
        let mut counts = TlsRefusals::default();
        for refusal in TlsRefusal::ALL {
            counts.0[refusal as usize] = named.get(refusal.name()).copied().unwrap_or(0);
        }
        Ok(counts)
    }
}

impl ServerStats {
    /// `n` bytes were read from a peer.
    pub fn on_bytes_in(&mut self, n: usize) {
        self.bytes_in += n as u64;
    }

    /// The kernel took `n` bytes for a peer.
    pub fn on_bytes_out(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    /// An `End Connection` due at `due` went out at `sent` to a peer silent for `silent`, in
    /// a loop turn that began at `woke`; `slept_past` is the alarm that turn's wake-up came
    /// late for, if it did.
    pub fn on_end_connection_sent(
        &mut self,
        due: Instant,
        sent: Instant,
        silent: Duration,
        woke: Instant,
        slept_past: Option<Instant>,
    ) {
        self.detection_time.record(silent);
        let late = sent.saturating_duration_since(due);
        // The OS kept the loop asleep from the later of its alarm and this deadline until it
        // woke; the rest (tick rounding, work before this line) is the loop's.
        let os_delay = slept_past.map_or(Duration::ZERO, |alarm| {
            woke.saturating_duration_since(alarm.max(due))
        });
        self.close_lateness.record(late);
        self.close_lateness_loop
            .record(late.saturating_sub(os_delay));
    }

    /// A connection was accepted and is now open.
    pub fn on_open(&mut self) {
        self.accepted += 1;
        self.open += 1;
        self.peak_open = self.peak_open.max(self.open);
    }

    /// An open connection was closed, for `reason`.
    pub fn on_close(&mut self, reason: Reason) {
        self.open = self.open.saturating_sub(1);
        let counter = match reason {
            Reason::PeerClosed => &mut self.closed_by_peer,
            Reason::Dead => &mut self.closed_dead,
            Reason::Failed => &mut self.closed_on_error,
            Reason::Shutdown => &mut self.closed_at_shutdown,
            Reason::OverBudget => &mut self.closed_over_budget,
            Reason::Probe => &mut self.closed_probe,
        };
        *counter += 1;
    }

    /// A peer was turned away at accept.
    pub fn on_refused(&mut self, refusal: Refusal) {
        match refusal {
            Refusal::NotAllowed => self.rejected_not_allowed += 1,
            Refusal::Full { .. } => self.rejected_full += 1,
        }
    }

    /// A peer sent no valid PROXY protocol header (`--proxy-protocol`).
    pub fn on_tls_handshake(&mut self) {
        self.tls_handshakes += 1;
    }

    /// A TLS handshake was done by resuming a session.
    pub fn on_tls_resumed(&mut self) {
        self.tls_resumed += 1;
    }

    pub fn on_refused_tls(&mut self, refusal: TlsRefusal) {
        self.rejected_tls.0[refusal as usize] += 1;
    }

    pub fn on_refused_proxy_header(&mut self) {
        self.rejected_proxy_header += 1;
    }

    /// A peer waiting for its PROXY header was closed to make room for a newcomer.
    pub fn on_proxy_header_evicted(&mut self) {
        self.proxy_header_evicted += 1;
    }

    /// A metrics scraper found every slot taken and was answered `503`.
    pub fn on_metrics_busy(&mut self) {
        self.metrics_busy += 1;
    }

    /// `accept` itself failed.
    pub fn on_accept_error(&mut self) {
        self.accept_errors += 1;
    }

    pub fn on_line_echoed(&mut self) {
        self.lines_echoed += 1;
    }

    pub fn on_line_too_long(&mut self) {
        self.lines_too_long += 1;
    }

    pub fn on_heartbeat_sent(&mut self) {
        self.heartbeats_sent += 1;
    }

    /// A peer spoke while heartbeats were outstanding: once per round of heartbeats.
    pub fn on_heartbeat_answered(&mut self) {
        self.heartbeats_answered += 1;
    }

    /// The logger has dropped `total` lines so far (it counts them; this records the count).
    pub fn on_log_lines_dropped(&mut self, total: u64) {
        self.log_lines_dropped = total;
    }

    /// The loop woke `late` after the alarm it slept until.
    pub fn on_wakeup(&mut self, late: Duration) {
        self.wake_delay.record(late);
    }

    /// The summary as one line of JSON (`server --json`): every counter by its field name,
    /// and each latency histogram as its [`Percentiles`] in microseconds.
    pub fn to_json(&self) -> String {
        one_line_json(self)
    }

    /// The histograms by field name, for carrying them whole (see `to_exact_json`).
    fn histograms_mut(&mut self) -> [(&'static str, &mut Latencies); 4] {
        [
            ("close_lateness", &mut self.close_lateness),
            ("close_lateness_loop", &mut self.close_lateness_loop),
            ("wake_delay", &mut self.wake_delay),
            ("detection_time", &mut self.detection_time),
        ]
    }

    /// One line of JSON like [`to_json`](Self::to_json), but each histogram as its
    /// [`Recorded`] values, so that [`from_exact_json`](Self::from_exact_json) gets back
    /// exactly these counters (a worker process's report to its parent).
    pub fn to_exact_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        let mut copy = self.clone();
        if let Some(object) = value.as_object_mut() {
            for (name, latencies) in copy.histograms_mut() {
                let recorded = serde_json::to_value(latencies.recorded()).unwrap_or_default();
                object.insert(name.to_string(), recorded);
            }
        }
        value.to_string()
    }

    /// Reads what [`to_exact_json`](Self::to_exact_json) wrote.
    pub fn from_exact_json(text: &str) -> Result<ServerStats, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_str(text)?;
        let mut stats: ServerStats = serde_json::from_value(value.clone())?;
        for (name, latencies) in stats.histograms_mut() {
            if let Some(recorded) = value.get_mut(name).map(serde_json::Value::take) {
                *latencies = Latencies::from_recorded(&serde_json::from_value(recorded)?);
            }
        }
        Ok(stats)
    }

    /// Adds `other`'s counts to these: counters summed, histograms merged. `open` and
    /// `peak_open` are sums too; a sum of peaks is at least the peak of the sum (the
    /// processes' peaks need not have come at the same moment).
    pub fn merge(&mut self, other: &ServerStats) {
        // Every field by name, so that a counter added later cannot be forgotten here.
        let ServerStats {
            accepted,
            open,
            peak_open,
            lines_echoed,
            heartbeats_sent,
            heartbeats_answered,
            closed_dead,
            closed_by_peer,
            closed_on_error,
            closed_at_shutdown,
            closed_over_budget,
            closed_probe,
            log_lines_dropped,
            lines_too_long,
            rejected_full,
            rejected_not_allowed,
            accept_errors,
            rejected_proxy_header,
            tls_handshakes,
            tls_resumed,
            rejected_tls,
            proxy_header_evicted,
            metrics_busy,
            close_lateness,
            close_lateness_loop,
            wake_delay,
            detection_time,
            bytes_in,
            bytes_out,
            upgrades,
            upgrades_failed,
            handed_over,
            tls_kept,
            upgrade_pause_us,
        } = other;
        for (sum, add) in [
            (&mut self.accepted, accepted),
            (&mut self.open, open),
            (&mut self.peak_open, peak_open),
            (&mut self.lines_echoed, lines_echoed),
            (&mut self.heartbeats_sent, heartbeats_sent),
            (&mut self.heartbeats_answered, heartbeats_answered),
            (&mut self.closed_dead, closed_dead),
            (&mut self.closed_by_peer, closed_by_peer),
            (&mut self.closed_on_error, closed_on_error),
            (&mut self.closed_at_shutdown, closed_at_shutdown),
            (&mut self.closed_over_budget, closed_over_budget),
            (&mut self.closed_probe, closed_probe),
            (&mut self.log_lines_dropped, log_lines_dropped),
            (&mut self.lines_too_long, lines_too_long),
            (&mut self.rejected_full, rejected_full),
            (&mut self.rejected_not_allowed, rejected_not_allowed),
            (&mut self.accept_errors, accept_errors),
            (&mut self.rejected_proxy_header, rejected_proxy_header),
            (&mut self.tls_handshakes, tls_handshakes),
            (&mut self.tls_resumed, tls_resumed),
            (&mut self.proxy_header_evicted, proxy_header_evicted),
            (&mut self.metrics_busy, metrics_busy),
            (&mut self.bytes_in, bytes_in),
            (&mut self.bytes_out, bytes_out),
            (&mut self.upgrades, upgrades),
            (&mut self.upgrades_failed, upgrades_failed),
            (&mut self.handed_over, handed_over),
            (&mut self.tls_kept, tls_kept),
        ] {
            *sum += *add;
        }
        for (sum, add) in self.rejected_tls.0.iter_mut().zip(rejected_tls.0) {
            *sum += add;
        }
        // A pause is not a count: the longest of them (workers) or the one carried on.
        self.upgrade_pause_us = self.upgrade_pause_us.max(*upgrade_pause_us);
        self.close_lateness.merge(close_lateness);
        self.close_lateness_loop.merge(close_lateness_loop);
        self.wake_delay.merge(wake_delay);
        self.detection_time.merge(detection_time);
    }

    /// Multi-line human summary printed at exit: one fact per line. The rows every run has
    /// (echoes, heartbeats, how peers ended, bytes) are always there; those that count what
    /// only some settings or troubles make (refusals, `--max-buffered`, errors, dropped log
    /// lines) only when they are not zero. The JSON keeps every field.
    pub fn summary(&self) -> String {
        let always: [(&str, u64); 8] = [
            ("lines echoed", self.lines_echoed),
            ("heartbeats sent", self.heartbeats_sent),
            ("heartbeat rounds answered", self.heartbeats_answered),
            (
                "closed as dead (each heartbeat unanswered a full interval)",
                self.closed_dead,
            ),
            ("closed by the peer", self.closed_by_peer),
            ("closed at shutdown", self.closed_at_shutdown),
            ("bytes received", self.bytes_in),
            ("bytes sent", self.bytes_out),
        ];
        let when_any: [(&str, u64); 18] = [
            ("TLS handshakes begun", self.tls_handshakes),
            ("TLS handshakes resumed", self.tls_resumed),
            ("live upgrades (SIGUSR2)", self.upgrades),
            ("live upgrades given up (served on)", self.upgrades_failed),
            ("peers handed over in live upgrades", self.handed_over),
            (
                "TLS peers kept by the old process in live upgrades",
                self.tls_kept,
            ),
            ("last live upgrade's pause (us)", self.upgrade_pause_us),
            ("closed on error", self.closed_on_error),
            ("closed over --max-buffered", self.closed_over_budget),
            ("lines too long", self.lines_too_long),
            ("refused, --max-connections reached", self.rejected_full),
            ("refused, not in --allow", self.rejected_not_allowed),
            ("refused, no valid PROXY header", self.rejected_proxy_header),
            (
                "  of which closed to make room for newer ones",
                self.proxy_header_evicted,
            ),
            ("probes (left without a byte)", self.closed_probe),
            (
                "metrics scrapes answered 503 (all slots taken)",
                self.metrics_busy,
            ),
            ("accept errors", self.accept_errors),
            ("log lines dropped", self.log_lines_dropped),
        ];
        let mut out = format!(
            "Summary: {} accepted, peak {} open",
            client::plural(self.accepted, "connection"),
            self.peak_open
        );
        let shown = when_any.into_iter().filter(|(_, value)| *value > 0);
        for (label, value) in always.into_iter().chain(shown) {
            out.push_str(&format!("\n  {label}: {value}"));
        }
        if self.rejected_tls.total() > 0 {
            out.push_str("\n  refused, TLS handshake:");
            for (refusal, count) in self.rejected_tls.by_reason() {
                if count > 0 {
                    let name = refusal.name().replace('_', " ");
                    out.push_str(&format!(" {name} {count},"));
                }
            }
            out.pop();
        }
        if self.closed_dead > 0 {
            // Split, so that a reader can tell a busy loop from a host that is slow to wake it.
            let rows = [
                ("End Connection lateness", &self.close_lateness),
                ("  the loop's share", &self.close_lateness_loop),
                ("loop wake-up delay (OS)", &self.wake_delay),
                ("dead peers silent for", &self.detection_time),
            ];
            for (label, latencies) in rows {
                out.push('\n');
                out.push_str(&latencies.percentiles().row(&format!("{label:<23}")));
            }
        }
        out
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A summary as one line of JSON. Cannot fail for these types (string keys, plain numbers);
/// still, a summary printed at exit never panics.
pub(crate) fn one_line_json(summary: &impl Serialize) -> String {
    serde_json::to_string(summary)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// Microseconds as milliseconds with `decimals` places, e.g. `0.120ms`.
pub(crate) fn ms(us: u64, decimals: usize) -> String {
    format!("{:.*}ms", decimals, us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_close_tracks_peak() {
        let mut s = ServerStats::default();
        for open in [true, true, false, true, true, false] {
            if open {
                s.on_open()
            } else {
                s.on_close(Reason::PeerClosed)
            }
        }
        assert_eq!((s.accepted, s.open, s.peak_open), (4, 2, 3));
        for reason in [Reason::Dead, Reason::Failed, Reason::Shutdown] {
            s.on_close(reason); // one too many: saturates
        }
        assert_eq!((s.open, s.peak_open), (0, 3));
        let closed = (s.closed_by_peer, s.closed_dead, s.closed_on_error);
        assert_eq!((closed, s.closed_at_shutdown), ((2, 1, 1), 1));
    }

    #[test]
    fn server_summary_mentions_every_counter() {
        let s = ServerStats {
            accepted: 1001,
            open: 0,
            peak_open: 1002,
            lines_echoed: 1003,
            heartbeats_sent: 1004,
            heartbeats_answered: 1005,
            closed_dead: 1006,
            closed_by_peer: 1007,
            closed_on_error: 1008,
            closed_at_shutdown: 1009,
            lines_too_long: 1010,
            rejected_full: 1011,
            rejected_not_allowed: 1012,
            accept_errors: 1013,
            closed_over_budget: 1014,
            log_lines_dropped: 1015,
            rejected_proxy_header: 1016,
            rejected_tls: TlsRefusals(std::array::from_fn(|i| 1026 + i as u64)),
            close_lateness: Latencies::default(),
            close_lateness_loop: Latencies::default(),
            wake_delay: Latencies::default(),
            detection_time: Latencies::default(),
            bytes_in: 1017,
            bytes_out: 1018,
            closed_probe: 1019,
            proxy_header_evicted: 1020,
            metrics_busy: 1021,
            upgrades: 1022,
            upgrades_failed: 1023,
            handed_over: 1024,
            tls_kept: 1026 + TlsRefusal::ALL.len() as u64,
            upgrade_pause_us: 1025,
            tls_handshakes: 1027 + TlsRefusal::ALL.len() as u64,
            tls_resumed: 1028 + TlsRefusal::ALL.len() as u64,
        };
        let text = s.summary();
        assert!(
            text.starts_with("Summary: 1001 connections accepted, peak 1002 open"),
            "{text}"
        );
        for v in 1001..=1028 + TlsRefusal::ALL.len() as u64 {
            assert!(text.contains(&v.to_string()), "{v} missing from:\n{text}");
        }
        assert!(!text.contains('_'), "field names leaked:\n{text}");
    }

    /// "1 connections accepted" and sixteen rows, most of them zero, before: the rows that
    /// only some settings make are left out when zero, and one is one.
    #[test]
    fn server_summary_leaves_out_zero_rows_that_say_nothing_and_agrees_in_number() {
        let s = ServerStats {
            accepted: 1,
            peak_open: 1,
            closed_by_peer: 1,
            ..ServerStats::default()
        };
        let text = s.summary();
        assert!(
            text.starts_with("Summary: 1 connection accepted, peak 1 open\n"),
            "{text}"
        );
        for kept in ["lines echoed: 0", "closed as dead", "closed at shutdown: 0"] {
            assert!(text.contains(kept), "{kept}:\n{text}");
        }
        for absent in [
            "refused",
            "accept errors",
            "PROXY",
            "--max-buffered",
            "log lines",
        ] {
            assert!(!text.contains(absent), "{absent}:\n{text}");
        }
        let none = ServerStats::default().summary();
        assert!(
            none.starts_with("Summary: 0 connections accepted"),
            "{none}"
        );
        let json: serde_json::Value = serde_json::from_str(&s.to_json()).expect("JSON");
        assert_eq!(
            json["rejected_proxy_header"], 0,
            "the JSON keeps every field"
        );
    }

    #[test]
    fn histograms_merge_as_if_every_duration_had_been_recorded_in_one() {
        let us = Duration::from_micros;
        let (mut a, mut b, mut all) = (
            Latencies::default(),
            Latencies::default(),
            Latencies::default(),
        );
        // Two processes with very different tails: an average of their p99s (~50 ms) would
        // be wrong; the merged p99 is the slow one's, as with all values in one histogram.
        for i in 0..990 {
            a.record(us(100 + i));
            all.record(us(100 + i));
        }
        for i in 0..10 {
            b.record(us(100_000 + i));
            all.record(us(100_000 + i));
        }
        a.merge(&b);
        assert_eq!(a.percentiles(), all.percentiles());
        assert_eq!(
            Latencies::from_recorded(&all.recorded()).percentiles(),
            all.percentiles()
        );
    }

    #[test]
    fn exact_json_carries_counters_and_histograms_and_merging_sums_them() {
        let mut one = ServerStats {
            accepted: 3,
            closed_dead: 2,
            rejected_not_allowed: 1,
            ..ServerStats::default()
        };
        one.close_lateness.record(Duration::from_micros(700));
        one.wake_delay.record(Duration::from_micros(40));
        let back = ServerStats::from_exact_json(&one.to_exact_json()).expect("reads back");
        assert_eq!(back, one);
        assert_eq!(
            back.close_lateness.recorded(),
            one.close_lateness.recorded()
        );
        let mut two = ServerStats {
            accepted: 5,
            closed_dead: 1,
            ..ServerStats::default()
        };
        two.close_lateness.record(Duration::from_micros(9000));
        two.merge(&back);
        assert_eq!(
            (two.accepted, two.closed_dead, two.rejected_not_allowed),
            (8, 3, 1)
        );
        let p = two.close_lateness.percentiles();
        assert_eq!(p.count, 2);
        assert!(p.max_us >= 9000, "{p:?}");
        // The JSON people read keeps percentiles; counters read back from it too.
        let plain: ServerStats = serde_json::from_str(&two.to_json()).expect("reads");
        assert_eq!(plain.accepted, 8);
        assert!(ServerStats::from_exact_json("{not json").is_err());
    }

    #[test]
    fn close_lateness_is_summarised_when_peers_were_closed_as_dead() {
        let mut s = ServerStats::default();
        assert!(!s.summary().contains("lateness"), "nothing to report yet");
        s.closed_dead = 2;
        let us = Duration::from_micros;
        let t0 = Instant::now();
        // Woken on time: all 400 µs are the loop's.
        let silent = Duration::from_millis(700);
        s.on_end_connection_sent(t0, t0 + us(400), silent, t0 + us(100), None);
        // Due at 0, alarm at 300, woken at 1000 (700 late), sent at 1200: 500 µs the loop's.
        s.on_end_connection_sent(t0, t0 + us(1200), silent, t0 + us(1000), Some(t0 + us(300)));
        s.wake_delay.record(us(700));
        let text = s.summary();
        let rows: Vec<&str> = text.lines().rev().take(4).collect();
        let [found, wake, own, late] = rows[..] else {
            panic!("four rows expected:\n{text}")
        };
        assert!(found.contains("dead peers silent for"), "{text}");
        assert!(found.contains("p50 700"), "{found}");
        assert!(late.contains("End Connection lateness"), "{text}");
        assert!(
            late.contains("max 1.200ms") && late.contains("(2 samples)"),
            "{late}"
        );
        // 400 − 0 and 1200 − 700: the loop's share of the worst close was 500 µs.
        assert!(own.contains("the loop's share"), "{text}");
        assert!(own.contains("max 0.500ms"), "{own}");
        assert!(wake.contains("loop wake-up delay (OS)"), "{text}");
        assert!(
            wake.contains("max 0.700ms") && wake.contains("(1 samples)"),
            "{wake}"
        );
    }

    #[test]
    fn the_os_is_charged_only_for_sleep_past_both_the_alarm_and_the_deadline() {
        let us = Duration::from_micros;
        let t0 = Instant::now();
        let maxima = |due, sent, woke, slept_past| {
            let mut s = ServerStats::default();
            s.on_end_connection_sent(due, sent, Duration::ZERO, woke, slept_past);
            (
                s.close_lateness.percentiles().max_us,
                s.close_lateness_loop.percentiles().max_us,
            )
        };
        // Alarm at 100 µs for an earlier timer, this close due at 200, woken at 500, sent at
        // 600: the 300 µs asleep past the deadline are the OS's, the 100 µs of work the loop's.
        let got = maxima(t0 + us(200), t0 + us(600), t0 + us(500), Some(t0 + us(100)));
        assert_eq!(got, (400, 100));
        // Due at 200, rounded up to an alarm at 300: the rounding is the loop's too.
        let got = maxima(t0 + us(200), t0 + us(600), t0 + us(500), Some(t0 + us(300)));
        assert_eq!(got, (400, 200));
        // Not woken late: the OS is charged nothing.
        let got = maxima(t0 + us(200), t0 + us(600), t0 + us(500), None);
        assert_eq!(got, (400, 400));
    }
}
