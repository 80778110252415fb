//! The event log (`--events PATH`): one JSON object per line for every connect, heartbeat
//! sent, heartbeat answered, `End Connection` and close, for a machine to read.
//!
//! Owns the line format (field names and units, in README's "Events") and the conversion of
//! the loop's monotonic instants to wall-clock time. Does not own what happened (the core's
//! [`Event`]s and [`Session`]s) or how lines reach the file: they go through a `logging`
//! queue, so a slow disk never stops the loop (lines are dropped and counted instead).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::path::Path;

use serde::Serialize;

use crate::cores::vocab::{Event, Reason, Session};
use crate::edge::net::SetupError;
use crate::ops::logging::LineSink;

/// The open event log: its file (through a queue) and its clock.
pub struct EventLog {
    sink: LineSink,
    clock: WallClock,
    /// One line at a time, reused.
    line: Vec<u8>,
}

impl EventLog {
    /// Opens `path` for appending.
    pub fn open(path: &Path) -> Result<EventLog, SetupError> {
        Ok(EventLog {
            sink: LineSink::open(path)?,
            clock: WallClock::now(),
            line: Vec::with_capacity(256),
        })
    }

    /// Queues the line for `event`, if the log records it.
    pub fn record(&mut self, now: Instant, event: &Event, session: Option<&Session>) {
        self.line.clear();
        encode(&mut self.line, &self.clock, now, event, session);
        if !self.line.is_empty() {
            self.sink.push(&self.line);
        }
    }
}

/// The line of a live upgrade: the old process's `handed_over`, the new one's `taken_over`.
#[derive(Serialize)]
struct UpgradeLine {
    ts: f64,
    event: &'static str,
    peers: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pause_ms: Option<f64>,
}

impl EventLog {
    /// Queues the line of a live upgrade at `now`: this process handed `peers` over to a new
    /// one, or (`pause` known) took them over after that pause.
    pub fn record_upgrade(&mut self, now: Instant, peers: u64, pause: Option<Duration>) {
        let line = UpgradeLine {
            ts: rounded(self.clock.unix_secs(now), 1e6),
            event: match pause {
                None => "handed_over",
                Some(_) => "taken_over",
            },
            peers,
            pause_ms: pause.map(|d| rounded(d.as_secs_f64() * 1000.0, 1000.0)),
        };
        self.line.clear();
        if serde_json::to_writer(&mut self.line, &line).is_ok() {
            self.line.push(b'\n');
            self.sink.push(&self.line);
        }
    }

    /// A mutual-TLS peer's certificate subject: a `tls` line right after its `connect`.
    pub fn record_tls_subject(&mut self, now: Instant, peer: SocketAddr, subject: &str) {
        #[derive(Serialize)]
        struct TlsLine<'a> {
            ts: f64,
            event: &'static str,
            peer: SocketAddr,
            subject: &'a str,
        }
        let line = TlsLine {
            ts: rounded(self.clock.unix_secs(now), 1e6),
            event: "tls",
            peer,
            subject,
        };
        self.line.clear();
        if serde_json::to_writer(&mut self.line, &line).is_ok() {
            self.line.push(b'\n');
            self.sink.push(&self.line);
        }
    }
}

/// Instants as seconds since the Unix epoch: the wall clock read once, then the monotonic
/// clock's offsets from that moment, so that a step of the wall clock does not reorder the
/// log and no event costs a system call.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    origin: Instant,
    unix_secs: f64,
}

impl WallClock {
    pub fn new(origin: Instant, wall: SystemTime) -> WallClock {
        let unix_secs = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        WallClock { origin, unix_secs }
    }

    pub fn now() -> WallClock {
        WallClock::new(Instant::now(), SystemTime::now())
    }

    pub fn unix_secs(&self, at: Instant) -> f64 {
        let after = at.saturating_duration_since(self.origin).as_secs_f64();
        let before = self.origin.saturating_duration_since(at).as_secs_f64();
        self.unix_secs + after - before
    }
}

/// One line of the log, as serialised: only the fields the event has.
#[derive(Serialize)]
struct Line {
    ts: f64,
    event: &'static str,
    peer: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    silent_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    late_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_out: Option<u64>,
}

/// Appends the line for `event` at `now` to `out` (with its newline), or nothing if the
/// event is not one the log records. `session` is the connection's, if known.
pub fn encode(
    out: &mut Vec<u8>,
    clock: &WallClock,
    now: Instant,
    event: &Event,
    session: Option<&Session>,
) {
    let Some(name) = name(event) else {
        return;
    };
    // Sensible precision (issue 22: `"silent_ms":4001.5062730000004`): round trips and
    // lateness to the microsecond, silences and lifetimes to a tenth of a millisecond, the
    // time stamp to the microsecond.
    let ms = |d: Duration| rounded(d.as_secs_f64() * 1000.0, 1000.0);
    let ms_tenths = |d: Duration| rounded(d.as_secs_f64() * 1000.0, 10.0);
    let since = |at: Option<Instant>| at.map(|at| ms_tenths(now.saturating_duration_since(at)));
    let mut line = Line {
        ts: rounded(clock.unix_secs(now), 1e6),
        event: name,
        peer: session.map(|s| s.addr),
        open: None,
        number: None,
        count: None,
        rtt_ms: None,
        silent_ms: None,
        late_ms: None,
        reason: None,
        duration_ms: None,
        bytes_in: None,
        bytes_out: None,
    };
    match *event {
        Event::Connected { open } => line.open = Some(open),
        Event::HeartbeatSent { number, count } => {
            line.number = Some(number);
            line.count = Some(count);
        }
        Event::HeartbeatAnswered { rtt } => line.rtt_ms = Some(ms(rtt)),
        Event::Dead { count, late } => {
            line.count = Some(count);
            line.late_ms = Some(ms(late));
            line.silent_ms = since(session.map(|s| s.last_seen));
        }
        Event::Closed(reason) => {
            line.reason = Some(reason_name(reason));
            line.duration_ms = since(session.map(|s| s.connected));
            line.bytes_in = session.map(|s| s.bytes_in);
            line.bytes_out = session.map(|s| s.bytes_out);
        }
        Event::PeerClosed | Event::Failed(_) | Event::OverBudget { .. } => {}
    }
    // Plain numbers, strings and addresses: serialising cannot fail.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// `value` rounded to `1 / per_unit` (10.0: one decimal), so that JSON shows no float noise.
fn rounded(value: f64, per_unit: f64) -> f64 {
    (value * per_unit).round() / per_unit
}

fn name(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::Connected { .. } => "connect",
        Event::HeartbeatSent { .. } => "heartbeat_sent",
        Event::HeartbeatAnswered { .. } => "heartbeat_answered",
        Event::Dead { .. } => "end_connection",
        Event::Closed(_) => "close",
        // Told by `close`'s reason.
        Event::PeerClosed | Event::Failed(_) | Event::OverBudget { .. } => return None,
    })
}

/// The `reason` of a `close` line.
pub fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::PeerClosed => "peer_closed",
        Reason::Dead => "dead",
        Reason::Failed => "error",
        Reason::Shutdown => "shutdown",
        Reason::OverBudget => "over_budget",
        Reason::Probe => "probe",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(t0: Instant) -> Session {
        Session {
            addr: "127.0.0.1:40000".parse().unwrap(),
            connected: t0,
            last_seen: t0 + Duration::from_millis(250),
            bytes_in: 13,
            bytes_out: 23,
        }
    }

    fn line(event: Event, after: Duration) -> serde_json::Value {
        let t0 = Instant::now();
        let clock = WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_000_000));
        let mut out = Vec::new();
        encode(&mut out, &clock, t0 + after, &event, Some(&session(t0)));
        assert_eq!(out.last(), Some(&b'\n'), "one line");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        serde_json::from_slice(&out).expect("JSON")
    }

    #[test]
    fn a_close_says_why_how_long_and_how_much() {
        let v = line(Event::Closed(Reason::Dead), Duration::from_millis(1500));
        assert_eq!(v["event"], "close");
        assert_eq!(v["reason"], "dead");
        assert_eq!(v["peer"], "127.0.0.1:40000");
        assert_eq!(v["duration_ms"], 1500.0);
        assert_eq!(
            (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
            (Some(13), Some(23))
        );
        assert_eq!(v["ts"], 1_000_001.5);
    }

    #[test]
    fn end_connection_says_how_long_the_peer_was_silent_and_how_late() {
        let late = Duration::from_micros(700);
        let v = line(Event::Dead { count: 3, late }, Duration::from_millis(1250));
        assert_eq!(v["event"], "end_connection");
        assert_eq!(v["silent_ms"], 1000.0, "since it last spoke at 250 ms");
        assert_eq!(v["late_ms"], 0.7);
        assert_eq!(v["count"], 3);
    }

    #[test]
    fn heartbeats_and_connects_carry_their_numbers() {
        let v = line(
            Event::HeartbeatSent {
                number: 2,
                count: 3,
            },
            Duration::ZERO,
        );
        assert_eq!(
            (v["event"].as_str(), v["number"].as_u64()),
            (Some("heartbeat_sent"), Some(2))
        );
        let rtt = Duration::from_micros(1234);
        let v = line(Event::HeartbeatAnswered { rtt }, Duration::ZERO);
        assert_eq!(v["rtt_ms"], 1.234);
        let v = line(Event::Connected { open: 5 }, Duration::ZERO);
        assert_eq!(
            (v["event"].as_str(), v["open"].as_u64()),
            (Some("connect"), Some(5))
        );
        assert!(v.get("reason").is_none(), "only the fields the event has");
    }

    /// Issue 22: no float noise in the fields (`4001.5062730000004`): silences and
    /// lifetimes to 0.1 ms, round trips and lateness to 1 µs, as the JSON text shows them.
    #[test]
    fn fields_carry_sensible_precision() {
        let t0 = Instant::now();
        let clock = WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_796_458_727));
        let mut out = Vec::new();
        let dead = Event::Dead {
            count: 3,
            late: Duration::from_nanos(706_273),
        };
        let after = Duration::from_nanos(4_251_506_273);
        encode(&mut out, &clock, t0 + after, &dead, Some(&session(t0)));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"silent_ms\":4001.5,"), "{text}");
        assert!(text.contains("\"late_ms\":0.706}"), "{text}");
        assert!(text.contains("\"ts\":1796458731.251506,"), "{text}");
    }

    #[test]
    fn events_told_by_a_close_are_not_lines_of_their_own() {
        let t0 = Instant::now();
        let clock = WallClock::new(t0, SystemTime::now());
        let mut out = Vec::new();
        for event in [Event::PeerClosed, Event::OverBudget { held: 1 }] {
            encode(&mut out, &clock, t0, &event, None);
        }
        assert!(out.is_empty());
    }
}
