//! Counting and reporting: the server's counters, the load client's counters and latency
//! histograms, and the summaries printed at exit (human text, and JSON for scripts).
//!
//! Owns no socket and reads no clock: callers count events as they handle them and pass in
//! the times and durations they measured. Nothing here decides anything about timing or
//! liveness.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::server::core::{Reason, Refusal};

/// What the server counts over its lifetime; printed by [`ServerStats::summary`] at exit.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
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
    pub lines_too_long: u64,
    /// Refused because `--max-connections` were already open.
    pub rejected_full: u64,
    /// Refused because the peer's address is not in `--allow`.
    pub rejected_not_allowed: u64,
    /// `accept` itself failed (e.g. `EMFILE`).
    pub accept_errors: u64,
    /// How long after its due time each `End Connection` was sent.
    pub close_lateness: Latencies,
    /// The same, less how long the OS kept the loop asleep past that deadline: the loop's
    /// own share (tick rounding and work).
    pub close_lateness_loop: Latencies,
    /// How long after its wake-up alarm was due the loop was running again, each time it
    /// slept until one: the operating system's share of timer lateness.
    pub wake_delay: Latencies,
}

/// A histogram of durations in microseconds (1 µs to an hour, 3 significant figures; longer
/// ones count as an hour): how late timers fired, round trips, connect times.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Latencies {
    pub fn record(&mut self, late: Duration) {
        self.0.saturating_record(micros(late));
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.0)
    }

    /// The counts of a Prometheus-style histogram: for each of `bounds` (ascending), how many
    /// durations were at most it, plus the count and the sum of all of them. Exact below
    /// 2 ms; above that a bound is as exact as the histogram (3 significant figures): a value
    /// counts under the lowest duration its histogram bucket shares. Durations that
    /// saturated at an hour count under no bound below an hour.
    pub fn buckets(&self, bounds: &[Duration]) -> Buckets {
        let bounds_us: Vec<u64> = bounds.iter().map(|b| micros(*b)).collect();
        let mut cumulative = vec![0; bounds.len()];
        for value in self.0.iter_recorded() {
            let at = self.0.lowest_equivalent(value.value_iterated_to());
            if let Some(first) = bounds_us.iter().position(|bound| at <= *bound) {
                cumulative[first] += value.count_at_value();
            }
        }
        let mut running = 0;
        for count in &mut cumulative {
            running += *count;
            *count = running;
        }
        let count = self.0.len();
        // The histogram keeps no exact sum; its mean is over each bucket's middle value.
        let sum_us = self.0.mean() * count as f64;
        Buckets {
            cumulative,
            count,
            sum_secs: sum_us / 1e6,
        }
    }
}

/// What [`Latencies::buckets`] counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// For each bound, how many durations were at most it (so never decreasing).
    pub cumulative: Vec<u64>,
    /// How many durations were recorded (the `+Inf` bucket).
    pub count: u64,
    /// Their sum in seconds, to the histogram's precision.
    pub sum_secs: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies(new_histogram())
    }
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.percentiles().fmt(f)
    }
}

impl PartialEq for Latencies {
    fn eq(&self, other: &Self) -> bool {
        self.percentiles() == other.percentiles()
    }
}

impl Eq for Latencies {}

impl Serialize for Latencies {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.percentiles().serialize(serializer)
    }
}

impl ServerStats {
    /// An `End Connection` due at `due` went out at `sent`, in a loop turn that began at
    /// `woke`; `slept_past` is the alarm that turn's wake-up came late for, if it did.
    pub fn on_end_connection_sent(
        &mut self,
        due: Instant,
        sent: Instant,
        woke: Instant,
        slept_past: Option<Instant>,
    ) {
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

    /// The loop woke `late` after the alarm it slept until.
    pub fn on_wakeup(&mut self, late: Duration) {
        self.wake_delay.record(late);
    }

    /// The summary as one line of JSON (`server --json`): every counter by its field name,
    /// and each latency histogram as its [`Percentiles`] in microseconds.
    pub fn to_json(&self) -> String {
        one_line_json(self)
    }

    /// Multi-line human summary printed at exit: one fact per line.
    pub fn summary(&self) -> String {
        let rows: [(&str, u64); 11] = [
            ("lines echoed", self.lines_echoed),
            ("heartbeats sent", self.heartbeats_sent),
            ("heartbeat rounds answered", self.heartbeats_answered),
            (
                "closed as dead (each heartbeat unanswered a full interval)",
                self.closed_dead,
            ),
            ("closed by the peer", self.closed_by_peer),
            ("closed on error", self.closed_on_error),
            ("closed at shutdown", self.closed_at_shutdown),
            ("lines too long", self.lines_too_long),
            ("refused, --max-connections reached", self.rejected_full),
            ("refused, not in --allow", self.rejected_not_allowed),
            ("accept errors", self.accept_errors),
        ];
        let mut out = format!(
            "Summary: {} connections accepted, peak {} open",
            self.accepted, self.peak_open
        );
        for (label, value) in rows {
            out.push_str(&format!("\n  {label}: {value}"));
        }
        if self.closed_dead > 0 {
            // Split, so that a reader can tell a busy loop from a host that is slow to wake it.
            let rows = [
                ("End Connection lateness", &self.close_lateness),
                ("  the loop's share", &self.close_lateness_loop),
                ("loop wake-up delay (OS)", &self.wake_delay),
            ];
            for (label, latencies) in rows {
                out.push('\n');
                out.push_str(&latencies.percentiles().row(&format!("{label:<23}")));
            }
        }
        out
    }
}

/// Why a connection attempt failed, counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectFailure {
    /// Nothing listening (`ECONNREFUSED`).
    Refused,
    /// The handshake did not finish in time.
    TimedOut,
    /// No local address or port left (`EADDRNOTAVAIL`): ephemeral ports exhausted.
    AddrNotAvailable,
    /// The process or the system ran out of file descriptors (`EMFILE`, `ENFILE`).
    TooManyOpenFiles,
    /// Anything else.
    Other,
}

impl ConnectFailure {
    /// Every reason, in the order of [`ClientStats::failed`].
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

/// Histogram range in microseconds: 1 µs up to one hour, 3 significant figures.
const HIST_LOW_US: u64 = 1;
const HIST_HIGH_US: u64 = 3_600_000_000;
const HIST_SIGFIG: u8 = 3;

fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    let mut h = Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_SIGFIG)
        .expect("constant histogram bounds are valid");
    h.auto(false);
    h
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What the load client counts; turned into a [`ClientSummary`] at exit.
pub struct ClientStats {
    /// Connections asked for, established, and established and not yet closed.
    pub target: u64,
    pub opened: u64,
    pub open: u64,
    /// Failed connection attempts, indexed by `ConnectFailure as usize` (see [`ConnectFailure::ALL`]).
    pub failed: [u64; 5],
    pub closed_by_server: u64,
    /// Established connections that ended in an I/O error.
    pub errors: u64,
    pub lines_sent: u64,
    pub echoes_received: u64,
    /// Lines sent but never echoed when their connection ended.
    pub unanswered: u64,
    pub heartbeats_answered: u64,
    rtt: Latencies,
    connect_time: Latencies,
}

impl ClientStats {
    /// Empty counters for a run that asks for `target` connections.
    pub fn new(target: u64) -> Self {
        ClientStats {
            target,
            opened: 0,
            open: 0,
            failed: [0; 5],
            closed_by_server: 0,
            errors: 0,
            lines_sent: 0,
            echoes_received: 0,
            unanswered: 0,
            heartbeats_answered: 0,
            rtt: Latencies::default(),
            connect_time: Latencies::default(),
        }
    }

    pub fn record_failure(&mut self, why: ConnectFailure) {
        self.failed[why as usize] += 1;
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Records one line's round trip; anything over an hour counts as an hour.
    pub fn record_rtt(&mut self, rtt: Duration) {
        self.rtt.record(rtt);
    }

    /// Records how long one connection took to establish; saturates like `record_rtt`.
    pub fn record_connect_time(&mut self, t: Duration) {
        self.connect_time.record(t);
    }

    /// One status line for the terminal (no newline, no control characters).
    /// `connect_rate` is connections per second over the last second, from the caller.
    pub fn status_line(&self, connect_rate: f64) -> String {
        let rtt = self.rtt.percentiles();
        format!(
            "connected {}/{}  rate {:.0}/s  failed {}  sent {}  echoed {}  heartbeats {}  \
             closed {}  errors {}  rtt p50 {} p99 {}",
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
        )
    }

    /// The end-of-run report; `elapsed` is the run's wall time, measured by the caller.
    pub fn summary(&self, elapsed: Duration) -> ClientSummary {
        let failed_by_reason = ConnectFailure::ALL
            .iter()
            .filter(|why| self.failed[**why as usize] > 0)
            .map(|why| (why.as_str().to_string(), self.failed[*why as usize]))
            .collect();
        ClientSummary {
            elapsed_secs: elapsed.as_secs_f64(),
            target: self.target,
            opened: self.opened,
            failed: self.failed_total(),
            failed_by_reason,
            closed_by_server: self.closed_by_server,
            errors: self.errors,
            lines_sent: self.lines_sent,
            echoes_received: self.echoes_received,
            unanswered: self.unanswered,
            heartbeats_answered: self.heartbeats_answered,
            rtt: self.rtt.percentiles(),
            connect_time: self.connect_time.percentiles(),
        }
    }
}

/// A summary as one line of JSON. Cannot fail for these types (string keys, plain numbers);
/// still, a summary printed at exit never panics.
fn one_line_json(summary: &impl Serialize) -> String {
    serde_json::to_string(summary)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

/// Microseconds as milliseconds with `decimals` places, e.g. `0.120ms`.
fn ms(us: u64, decimals: usize) -> String {
    format!("{:.*}ms", decimals, us as f64 / 1000.0)
}

/// Latency percentiles in microseconds; all zero when nothing was recorded.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    fn row(&self, label: &str) -> String {
        let (p50, p90, p99) = (ms(self.p50_us, 3), ms(self.p90_us, 3), ms(self.p99_us, 3));
        let (p999, max, n) = (ms(self.p999_us, 3), ms(self.max_us, 3), self.count);
        format!(
            "  {label:<12} p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  max {max}  ({n} samples)"
        )
    }
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
    pub errors: u64,
    pub lines_sent: u64,
    pub echoes_received: u64,
    pub unanswered: u64,
    pub heartbeats_answered: u64,
    pub rtt: Percentiles,
    pub connect_time: Percentiles,
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
        one_line_json(self)
    }

    /// Multi-line human text: one fact per line, then the two latency rows in milliseconds.
    pub fn to_text(&self) -> String {
        let mut failed = self.failed.to_string();
        for (i, (why, n)) in self.failed_by_reason.iter().enumerate() {
            failed.push_str(&format!("{}{why} {n}", if i == 0 { " (" } else { ", " }));
        }
        if !self.failed_by_reason.is_empty() {
            failed.push(')');
        }
        [
            format!(
                "Summary: {} of {} connections opened in {:.1} s",
                self.opened, self.target, self.elapsed_secs
            ),
            format!("  connections failed: {failed}"),
            format!("  closed by server: {}", self.closed_by_server),
            format!("  ended in error: {}", self.errors),
            format!("  lines sent: {}", self.lines_sent),
            format!("  echoes received: {}", self.echoes_received),
            format!("  unanswered: {}", self.unanswered),
            format!("  heartbeats answered: {}", self.heartbeats_answered),
            self.rtt.row("round trip"),
            self.connect_time.row("connect time"),
        ]
        .join("\n")
    }
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
            close_lateness: Latencies::default(),
            close_lateness_loop: Latencies::default(),
            wake_delay: Latencies::default(),
        };
        let text = s.summary();
        assert!(
            text.starts_with("Summary: 1001 connections accepted, peak 1002 open"),
            "{text}"
        );
        for v in 1001..=1013 {
            assert!(text.contains(&v.to_string()), "{v} missing from:\n{text}");
        }
        assert!(!text.contains('_'), "field names leaked:\n{text}");
    }

    #[test]
    fn close_lateness_is_summarised_when_peers_were_closed_as_dead() {
        let mut s = ServerStats::default();
        assert!(!s.summary().contains("lateness"), "nothing to report yet");
        s.closed_dead = 2;
        let us = Duration::from_micros;
        let t0 = Instant::now();
        // Woken on time: all 400 µs are the loop's.
        s.on_end_connection_sent(t0, t0 + us(400), t0 + us(100), None);
        // Due at 0, alarm at 300, woken at 1000 (700 late), sent at 1200: 500 µs the loop's.
        s.on_end_connection_sent(t0, t0 + us(1200), t0 + us(1000), Some(t0 + us(300)));
        s.wake_delay.record(us(700));
        let text = s.summary();
        let rows: Vec<&str> = text.lines().rev().take(3).collect();
        let [wake, own, late] = rows[..] else {
            panic!("three rows expected:\n{text}")
        };
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
            s.on_end_connection_sent(due, sent, woke, slept_past);
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

    #[test]
    fn buckets_are_cumulative_counts_under_each_bound() {
        let us = Duration::from_micros;
        let mut l = Latencies::default();
        for d in [us(100), us(500), us(501), us(1000), us(3_000_000)] {
            l.record(d);
        }
        l.record(Duration::MAX); // saturates at an hour
        let bounds = [
            us(500),
            us(1000),
            Duration::from_secs(1),
            Duration::from_secs(5),
        ];
        let b = l.buckets(&bounds);
        // 500 µs is inside its own bound; 501 is not.
        assert_eq!(b.cumulative, vec![2, 4, 4, 5]);
        assert_eq!(b.count, 6, "the hour is counted only in +Inf");
        let expected = (100 + 500 + 501 + 1000) as f64 / 1e6 + 3.0 + 3600.0;
        assert!(
            (b.sum_secs - expected).abs() < expected / 1000.0,
            "{} vs {expected}",
            b.sum_secs
        );
        let empty = Latencies::default().buckets(&bounds);
        assert_eq!(
            (empty.cumulative, empty.count, empty.sum_secs),
            (vec![0; 4], 0, 0.0)
        );
    }

    #[test]
    fn server_json_is_one_line_with_every_counter() {
        let mut s = ServerStats::default();
        s.on_open();
        s.on_line_echoed();
        s.on_close(Reason::Shutdown);
        s.wake_delay.record(Duration::from_micros(250));
        let json = s.to_json();
        assert!(!json.contains('\n'), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["accepted"], 1);
        assert_eq!(v["lines_echoed"], 1);
        assert_eq!(v["closed_at_shutdown"], 1);
        assert_eq!(v["open"], 0);
        assert_eq!(v["wake_delay"]["count"], 1);
        assert_eq!(v["wake_delay"]["max_us"], 250);
        assert_eq!(v["close_lateness"]["count"], 0);
        let fields = v.as_object().expect("an object").len();
        assert_eq!(fields, 17, "every field of ServerStats: {json}");
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
        c.record_failure(ConnectFailure::Refused);
        c.record_failure(ConnectFailure::Refused);
        c.record_failure(ConnectFailure::TooManyOpenFiles);
        assert_eq!(c.failed_total(), 3);
        assert_eq!(c.failed[ConnectFailure::Refused as usize], 2);
        let s = c.summary(Duration::from_secs(1));
        assert_eq!(s.failed, 3);
        assert_eq!(s.failed_by_reason.len(), 2, "zero reasons are left out");
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
            c.record_rtt(Duration::from_micros(us));
        }
        let p = c.summary(Duration::ZERO).rtt;
        assert_eq!(p.count, 1000);
        assert!((499..=501).contains(&p.p50_us), "{p:?}");
        assert!((899..=901).contains(&p.p90_us), "{p:?}");
        assert!((989..=991).contains(&p.p99_us), "{p:?}");
        assert_eq!(p.max_us, 1000);
    }

    #[test]
    fn huge_durations_saturate() {
        let mut c = ClientStats::new(1);
        c.record_rtt(Duration::MAX);
        c.record_connect_time(Duration::from_secs(10 * 3600));
        let s = c.summary(Duration::ZERO);
        assert_eq!(s.rtt.count, 1);
        // Clamped to one hour, within the histogram's precision.
        let near_hour = |us: u64| us.abs_diff(HIST_HIGH_US) < HIST_HIGH_US / 1000;
        assert!(
            near_hour(s.rtt.max_us) && near_hour(s.connect_time.max_us),
            "{s:?}"
        );
    }

    #[test]
    fn empty_histograms_are_zero() {
        let s = ClientStats::new(5).summary(Duration::ZERO);
        let zero = Percentiles::default();
        assert_eq!(
            (zero.count, zero.p50_us, zero.p99_us, zero.max_us),
            (0, 0, 0, 0)
        );
        assert_eq!((&s.rtt, &s.connect_time), (&zero, &zero));
        assert!(s.to_text().contains("p50 0.000ms"));
    }

    #[test]
    fn json_round_trips() {
        let mut c = ClientStats::new(100);
        c.opened = 97;
        c.record_failure(ConnectFailure::TimedOut);
        c.closed_by_server = 4;
        c.errors = 2;
        c.lines_sent = 50;
        c.echoes_received = 45;
        c.unanswered = 5;
        c.heartbeats_answered = 7;
        c.record_rtt(Duration::from_micros(250));
        c.record_connect_time(Duration::from_millis(3));
        let s = c.summary(Duration::from_millis(2500));
        let json = s.to_json();
        assert!(!json.contains('\n'), "{json}");
        let back: ClientSummary = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back, s);
        assert_eq!(back.lost(), 0);
    }

    #[test]
    fn status_line_is_one_clean_line() {
        let mut c = ClientStats::new(1000);
        c.open = 950;
        c.lines_sent = 1234;
        c.record_rtt(Duration::from_micros(120));
        let line = c.status_line(1000.0);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.starts_with("connected 950/1000  rate 1000/s"),
            "{line}"
        );
        assert!(
            line.contains("sent 1234") && line.contains("p50 0.12ms"),
            "{line}"
        );
    }

    #[test]
    fn text_summary_has_latency_rows() {
        let mut c = ClientStats::new(1);
        c.record_rtt(Duration::from_micros(1500));
        let text = c.summary(Duration::from_secs(3)).to_text();
        assert!(
            text.contains("round trip   p50 1.500ms  p90 1.500ms"),
            "{text}"
        );
        assert!(text.contains("connect time p50 0.000ms"), "{text}");
    }
}
