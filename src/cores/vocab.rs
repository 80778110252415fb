//! The shared vocabulary: the words the server's core, statistics, the event log and the
//! client all use (why a peer was refused or closed, what happened to it, what the event log
//! keeps of a connection) and the defaults both binaries share. Plain data with no decisions
//! and no I/O, so that `ops` and `client` need not import the server to speak of it:
//! dependencies flow one way, from the server and client down to here.
//!
//! Owns the types and the defaults; does not own what any of them means for a decision
//! (that is `server::core`'s) or how they are printed (`ops::stats`, `ops::events`).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Where the server listens and the client connects unless told otherwise.
pub const DEFAULT_PORT: u16 = 8000;
/// Chosen by measurement (10,000 silent peers closed as dead while 10,000 more connected,
/// 2-core machine; README, Performance): End Connection lateness p99 0.7 ms, max 1.2 ms at
/// 500 µs, against p99 1.2 ms, max 3.7–4.3 ms at 1 ms; 250 µs and 100 µs cost 5–35% more
/// CPU in that run for tails no better than the machine's scheduling noise.
pub const DEFAULT_TICK: Duration = Duration::from_micros(500);

/// Something worth a log line about one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Accepted; `open` peers are open now, this one included.
    Connected { open: usize },
    /// Heartbeat `number` of `count` sent.
    HeartbeatSent { number: u32, count: u32 },
    /// Bytes arrived while heartbeats were outstanding, `rtt` after the last one left.
    HeartbeatAnswered { rtt: Duration },
    /// All `count` heartbeats went unanswered: `End Connection` sent, closing, `late` after
    /// it was due.
    Dead { count: u32, late: Duration },
    /// The peer closed its sending side.
    PeerClosed,
    /// A read or write failed; the connection is closed.
    Failed(io::ErrorKind),
    /// All peers' buffers stayed over `--max-buffered`, and this peer held `held` bytes of
    /// them, among the most: it is closed.
    OverBudget { held: usize },
    /// Gone, for this reason.
    Closed(Reason),
}

/// Why a connection ended; each is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The peer closed its side (after its output was flushed).
    PeerClosed,
    /// Every heartbeat went unanswered; the peer was told `End Connection`.
    Dead,
    /// A reset, broken pipe or other I/O error.
    Failed,
    /// The server is stopping.
    Shutdown,
    /// It held the most buffer memory while all peers' buffers stayed over `--max-buffered`.
    OverBudget,
    /// It left (closed or reset) without sending a single byte: a TCP health check (HAProxy's
    /// `check`), a port scan. Not an error.
    Probe,
}

/// Why a peer was turned away at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address is not in `--allow`: closed without a word.
    NotAllowed,
    /// `--max-connections` peers are open; it is told [`crate::cores::protocol::SERVER_FULL`].
    Full { open: usize },
}

/// One connection as an event log describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub addr: SocketAddr,
    pub connected: Instant,
    /// When it last sent anything (or connected).
    pub last_seen: Instant,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Formats a duration the way a person writes it in a flag: `250ms`, `10s`, `1.5s`, `2m`.
/// Every duration in a message goes through this one function, so that the units of one
/// message (and of the lines printed beside it) agree.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if duration.is_zero() {
        "0s".to_string()
    } else if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{duration:?}")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{}s", duration.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// How a connection turns bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Stops answering heartbeats and sending data, still reads: a hung peer.
    Silent,
    /// Shuts down its sending side (`shutdown(SHUT_WR)`), then only reads.
    HalfClose,
    /// Stops reading (so it cannot see a heartbeat, nor answer one); still sends data lines.
    NoRead,
    /// Closes with a reset (`SO_LINGER` 0): a crashed peer. The client cannot see the
    /// server notice, so no detection time is measured for it.
    Reset,
}

impl FaultKind {
    /// Every kind, in the order of the counters.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Silent,
        FaultKind::HalfClose,
        FaultKind::NoRead,
        FaultKind::Reset,
    ];

    /// The name used on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Silent => "silent",
            FaultKind::HalfClose => "halfclose",
            FaultKind::NoRead => "noread",
            FaultKind::Reset => "reset",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cores::liveness::IdleRaised;

    /// Issue 22: the idle rule's warning wrote `3600s … using 7200s` beside a `Listening`
    /// line that said `60m`: every duration a person reads is now written by one function.
    #[test]
    fn the_idle_warning_writes_durations_as_the_listening_line_does() {
        let hour = Duration::from_secs(3600);
        let warning = IdleRaised {
            requested: hour,
            interval: hour,
            count: 2,
            used: 2 * hour,
        };
        assert_eq!(
            warning.to_string(),
            "idle timeout 60m is shorter than interval 60m × count 2; using 120m"
        );
        assert_eq!(format_duration(2 * hour), "120m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }
}
