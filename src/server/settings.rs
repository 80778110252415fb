//! How a server runs: [`ServerConfig`] and its defaults, and the part of it the core needs.
//! Filled in by `cli` from the flags, the file and these defaults; read once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::core::Settings;
use crate::cores::allow::AllowList;
use crate::cores::liveness::Timing;
use crate::cores::protocol;

/// How the server runs. `Default` gives the documented defaults on 127.0.0.1:8000.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub timing: Timing,
    /// Resolution of the timer wheel: timers fire at most this late (plus loop latency).
    pub tick: Duration,
    /// Longest line accepted, in bytes.
    pub max_line: usize,
    /// Output held for one peer before the server stops reading from it.
    pub max_write_buffer: usize,
    /// All peers' buffers together, before the largest are paused, then closed.
    pub max_buffered: usize,
    /// Peers served at once; one more is told `Error: server full` and closed.
    pub max_connections: usize,
    /// Peers allowed in by source address; empty allows everyone.
    pub allow: AllowList,
    pub backlog: i32,
    /// On SIGTERM, spread the `End Connection`s over this long; zero: all at once.
    pub drain: Duration,
    /// After a live upgrade, how long the old process keeps serving its TLS peers (which
    /// cannot move) before it ends them (`--tls-upgrade-keep`).
    pub tls_upgrade_keep: Duration,
    /// Delay each peer's first heartbeat after silence by up to this percent of `interval`.
    pub jitter_percent: u8,
    pub jitter_seed: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Where to write the event log (JSON lines), if anywhere.
    pub events: Option<PathBuf>,
    /// Listen with `SO_REUSEPORT`, beside the other workers of `--workers`.
    pub reuse_port: bool,
    /// Every peer starts with a PROXY protocol v2 header naming the real client.
    pub proxy_protocol: bool,
    /// Every peer speaks TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`), after its PROXY
    /// header if there is one.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

// Shared with the client, which connects where the server listens by default.
pub use crate::cores::vocab::{DEFAULT_PORT, DEFAULT_TICK};
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 1 << 20;
/// 256 MiB: thousands of peers may each hold a long partial line or a burst of output, but a
/// flood of them cannot take the host's memory.
pub const DEFAULT_MAX_BUFFERED: usize = 256 << 20;
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Large enough for a burst of a thousand connects between two loop turns; the kernel caps
/// it at `net.core.somaxconn`.
pub const DEFAULT_BACKLOG: i32 = 4096;
/// A minute: long enough for peers that come and go on their own (a device that reconnects,
/// a short session) to leave and come back to the new process without being told to;
/// short enough that the old binary, and the certificate an upgrade may have replaced,
/// do not serve on for long.
pub const DEFAULT_TLS_UPGRADE_KEEP: Duration = Duration::from_secs(60);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            timing: Timing::DEFAULT,
            tick: DEFAULT_TICK,
            max_line: protocol::DEFAULT_MAX_LINE,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            max_buffered: DEFAULT_MAX_BUFFERED,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allow: AllowList::default(),
            backlog: DEFAULT_BACKLOG,
            drain: Duration::ZERO,
            tls_upgrade_keep: DEFAULT_TLS_UPGRADE_KEEP,
            jitter_percent: 0,
            jitter_seed: 0,
            metrics: None,
            events: None,
            reuse_port: false,
            proxy_protocol: false,
            tls: None,
        }
    }
}

impl ServerConfig {
    /// What the core needs of it.
    pub fn settings(&self) -> Settings {
        Settings {
            timing: self.timing,
            tick: self.tick,
            max_line: self.max_line,
            max_write_buffer: self.max_write_buffer,
            max_buffered: self.max_buffered,
            max_connections: self.max_connections,
            allow: self.allow.clone(),
            drain: self.drain,
            jitter_percent: self.jitter_percent,
            jitter_seed: self.jitter_seed,
            sessions: self.events.is_some(),
            // Logging is set up before the server: its level is known by now.
            heartbeat_reports: self.events.is_some() || log::log_enabled!(log::Level::Info),
            max_header_waits: super::core::waiting::default_header_waits(
                self.max_connections,
                None,
            ),
        }
    }
}
