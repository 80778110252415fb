//! The client: one connection that talks like the original client, or a load of them for
//! testing a server, on one poll loop.
//!
//! | module     | owns                                                                  | I/O     |
//! |------------|-----------------------------------------------------------------------|---------|
//! | `load`     | the poll loop: sockets, the slab of connections, their timers; its    | sockets |
//! |            | `traffic` part moves bytes on open connections and ends them          |         |
//! | `peer`     | one connection's state: schedule, owed answer, fault (takes `now`)    | none    |
//! | `schedule` | connect pacing and its per-turn budget, data-line schedule, back-off  | none    |
//! | `faults`   | `--faults`: which connections turn bad, how, and when (seeded)        | none    |
//! | `sources`  | which local addresses to connect from                                 | `/proc` |
//! | `warnings` | one warning per reason per second, with a count of those held back    | none    |
//! | `memory`   | the client's own resident memory                                      | `/proc` |
//!
//! Counting is `stats::client`'s. Every line sent is matched with its echo (they come back
//! in order) or, when its connection ends first, counted as unanswered: nothing is lost
//! silently.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

pub mod faults;
mod load;
mod memory;
pub mod outputs;
mod peer;
pub mod schedule;
pub mod sources;
mod warnings;

pub use load::Client;

use crate::cores::protocol;
use crate::ops::stats::client::{RunFacts, RunSettings};
use crate::ops::stats::{ClientStats, ClientSummary};
use faults::FaultSpec;

/// How the client runs. `Default` is the original's single client of 127.0.0.1:8000.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    /// Local addresses to connect from, used in turn; empty lets the kernel choose.
    pub bind: Vec<SocketAddr>,
    pub connections: usize,
    /// New connections started per second at most.
    pub connect_rate: u32,
    /// Time between data lines on each connection; zero sends none.
    pub interval: Duration,
    /// Delay before answering a heartbeat (the original's testing aid).
    pub heartbeat_block: Duration,
    pub message: Vec<u8>,
    /// Stop after this long; `None` runs until the server closes or Ctrl-C.
    pub duration: Option<Duration>,
    pub max_line: usize,
    pub tick: Duration,
    /// Print what is sent and received (single connection) instead of a status line.
    pub verbose: bool,
    /// Redraw a status line on stderr once a second.
    pub status_line: bool,
    /// Shares of connections that turn bad during the run (`--faults`).
    pub faults: FaultSpec,
    /// A fault strikes at a moment uniform over this long after its connection opens;
    /// `None`: half the `duration`, or a minute without one.
    pub fault_window: Option<Duration>,
    /// Seeds the fault schedule and the reconnect jitter.
    pub seed: u64,
    /// A closed connection comes back after a back-off.
    pub reconnect: bool,
    /// The server's heartbeat interval, to judge whether the client's own lag matters.
    pub server_interval: Duration,
    /// Output held for one connection the server is not reading, past which it is closed.
    pub output_cap: usize,
    /// `--tls`: speak TLS to the server, checking its certificate for this name.
    pub tls: Option<ClientTls>,
}

/// The client's TLS: its configuration and the name the server's certificate must have.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Resume sessions with the run's tickets (`--no-tls-resume` turns it off).
    pub resume: bool,
}

pub const DEFAULT_MESSAGE: &str = "Hello, there";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_RATE: u32 = 1000;
pub const DEFAULT_SEED: u64 = 1;
/// Enough for hundreds of lines while the kernel's own buffers (megabytes) are full too.
pub const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            server: SocketAddr::from(([127, 0, 0, 1], crate::cores::vocab::DEFAULT_PORT)),
            bind: Vec::new(),
            connections: 1,
            connect_rate: DEFAULT_CONNECT_RATE,
            interval: DEFAULT_INTERVAL,
            heartbeat_block: Duration::ZERO,
            message: DEFAULT_MESSAGE.as_bytes().to_vec(),
            duration: None,
            max_line: protocol::DEFAULT_MAX_LINE,
            tick: crate::cores::vocab::DEFAULT_TICK,
            verbose: true,
            status_line: false,
            faults: FaultSpec::default(),
            fault_window: None,
            seed: DEFAULT_SEED,
            reconnect: false,
            server_interval: crate::cores::liveness::Timing::DEFAULT.interval,
            output_cap: DEFAULT_OUTPUT_CAP,
            tls: None,
        }
    }
}

impl ClientConfig {
    /// The span over which faults strike after each connection opens.
    pub fn fault_window(&self) -> Duration {
        self.fault_window.unwrap_or_else(|| match self.duration {
            Some(d) => d / 2,
            None => Duration::from_secs(60),
        })
    }
}

impl ClientConfig {
    /// The settings as the summary records them (and `client merge` checks).
    pub fn settings(&self) -> RunSettings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let faults: Vec<String> = faults::FaultKind::ALL
            .iter()
            .filter(|kind| self.faults.share(**kind) > 0.0)
            .map(|kind| format!("{}={}%", kind.as_str(), self.faults.share(*kind) * 100.0))
            .collect();
        RunSettings {
            server: self.server.to_string(),
            connections: self.connections as u64,
            connect_rate: u64::from(self.connect_rate),
            interval_ms: ms(self.interval),
            message_bytes: self.message.len() as u64,
            heartbeat_block_ms: ms(self.heartbeat_block),
            duration_ms: self.duration.map(ms),
            faults: faults.join(","),
            fault_window_ms: if self.faults.is_empty() {
                0
            } else {
                ms(self.fault_window())
            },
            seed: self.seed,
            reconnect: self.reconnect,
            server_interval_ms: ms(self.server_interval),
        }
    }
}

/// Why the client stopped, for the exit status and the last line printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Every connection was closed by the server (`End Connection` or end of stream).
    ClosedByServer,
    /// `--duration` passed.
    DurationReached,
    /// Ctrl-C, SIGTERM, or [`Stopper::stop`](crate::edge::stop::Stopper::stop).
    Stopped,
    /// No connection could be opened.
    NothingConnected,
}

/// The result of a run: how it ended and what was counted.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub finish: Finish,
    pub summary: ClientSummary,
    /// The first connect error, for the single-connection client to report.
    pub first_error: Option<String>,
    /// What `summary` was made of, for merging runs (`--workers`).
    pub stats: ClientStats,
    pub facts: RunFacts,
}

/// Whether stderr is a terminal that can show a status line redrawn in place.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
