//! Log lines for what the core reports about a peer, naming the peer by its address (asked
//! of the socket only when a line is written). Logging is a side output: nothing here
//! decides anything.

use std::time::Instant;

use log::{debug, info, warn};
use mio::net::TcpStream;

use super::core::{Event, Reason};
use super::Server;
use crate::edge::net::FILES_OF_OUR_OWN;

/// Lines of each per-peer kind logged per second at most (connected, heartbeat sent, ...).
pub const PEER_LINES_PER_SECOND: u32 = 20;

impl Server {
    /// A log line for something the core reported about `key`.
    /// Per-peer lines at info level are limited to [`PEER_LINES_PER_SECOND`] per kind, with a
    /// count of those held back: peers decide how often these happen, so they must not
    /// decide how much is logged.
    pub(super) fn report(&mut self, key: usize, event: Event, now: Instant) {
        if let Some(events) = &mut self.events {
            events.record(now, &event, self.core.session(key));
        }
        let socket = self.sockets.get(key).and_then(Option::as_ref);
        let real = socket.and_then(|s| self.handshakes.real_addr(key, s.generation));
        let peer = PeerName(socket.map(|socket| &socket.stream), real);
        let limiter = &mut self.peer_lines;
        let mut admit = |kind| match log::log_enabled!(log::Level::Info) {
            true => limiter.admit(kind, now),
            false => None,
        };
        match event {
            Event::Connected { open } => {
                if let Some(held) = admit("connected") {
                    info!("{peer} connected ({open} open){held}")
                }
            }
            Event::HeartbeatSent { number, count } => {
                if let Some(held) = admit("heartbeat sent") {
                    info!("{peer}: idle, heartbeat {number}/{count} sent{held}")
                }
            }
            Event::HeartbeatAnswered { .. } => {
                if let Some(held) = admit("heartbeat answered") {
                    info!("{peer}: heartbeat answered{held}")
                }
            }
            Event::Dead { count, .. } => {
                if let Some(held) = admit("dead") {
                    info!(
                        "{peer}: no answer to {count} heartbeats: End Connection sent, \
                         closing{held}"
                    )
                }
            }
            Event::PeerClosed => {
                if let Some(held) = admit("peer closed") {
                    info!("{peer}: peer closed the connection{held}")
                }
            }
            Event::Failed(kind) => debug!("{peer}: connection failed: {kind}"),
            Event::OverBudget { held } => {
                if self.log_limiter.allow("over budget", now) {
                    warn!(
                        "{peer}: closed: all peers' buffers stayed over --max-buffered and it \
                         held {held} bytes, among the most (at most one such line a second)"
                    )
                }
            }
            Event::Closed(Reason::Probe) => {
                debug!("{peer}: a probe (left without sending a byte): closed")
            }
            Event::Closed(reason) => debug!("{peer}: closed ({reason:?})"),
        }
    }
}

/// Says at start what `--max-connections` really is when the descriptors this process may
/// open are fewer: each peer needs one, and the loop a few of its own.
pub(super) fn say_max_connections(max_connections: usize, open_files: Option<u64>) {
    let Some(files) = open_files else {
        return;
    };
    let usable = usize::try_from(files.saturating_sub(FILES_OF_OUR_OWN)).unwrap_or(usize::MAX);
    if usable < max_connections {
        warn!(
            "max connections {max_connections}, but this process may open {files} files: \
             about {usable} connections (raise the limit, e.g. LimitNOFILE= or ulimit -n, or \
             lower --max-connections)"
        );
    }
}

/// Formats as the peer's address, asked of the socket only when a log line is written (no
/// `String` per line, nothing at all when the level is off), or a placeholder once the
/// socket can no longer say. A real address from a PROXY header comes first.
struct PeerName<'a>(Option<&'a TcpStream>, Option<std::net::SocketAddr>);

impl std::fmt::Display for PeerName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(real) = self.1 {
            return real.fmt(f);
        }
        match self.0.map(TcpStream::peer_addr) {
            Some(Ok(addr)) => addr.fmt(f),
            _ => f.write_str("a peer"),
        }
    }
}
