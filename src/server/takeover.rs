//! The new server process's side of a live upgrade: when it was started with the upgrade
//! channel ([`Channel::inherited`]), it checks the offer against its own configuration,
//! takes in the listening sockets and every peer with its state, says so, and waits for the
//! running server to let go. The shell around `cores::upgrade::Incoming`.
//!
//! Owns nothing once it returns: [`Inherited`] holds the sockets and records for the
//! server to import (`Server::adopt`). Touches no socket it receives: until `Release` the old
//! process serves them, and on any failure it serves on.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::cores::upgrade::wire::PeerState;
use crate::cores::upgrade::{InAction, Incoming, ANSWER_WAIT};
use crate::edge::handover::{Channel, HandoverError};

/// Everything the running server handed over.
#[derive(Debug)]
pub struct Inherited {
    pub listeners: Vec<(SocketAddr, OwnedFd)>,
    pub peers: Vec<(PeerState, OwnedFd)>,
    /// The old process's counters (`ServerStats::to_exact_json`), to carry on.
    pub stats: String,
    /// When the pause began (the old loop's last turn), on this process's clock: the time
    /// the last frame came, less how long the old loop had been stopped when it sent it.
    pub pause_began: Instant,
}

/// Why the new process gives up: one line, and its exit status (2: a setting or the state
/// format that it refuses; 1: the exchange failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveUp {
    pub why: String,
    pub status: u8,
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not taking over: {}", self.why)
    }
}

/// Runs the new side of the exchange on `channel`, `fixed` being this process's own
/// settings that cannot change. Returns once the peers are this process's to serve.
pub fn take_over(mut channel: Channel, fixed: Vec<(String, String)>) -> Result<Inherited, GiveUp> {
    let mut protocol = Incoming::new(fixed);
    let mut inherited = Inherited {
        listeners: Vec::new(),
        peers: Vec::new(),
        stats: String::new(),
        pause_began: Instant::now(),
    };
    // The old process answers within its own wait; a little more here, so that it is the one
    // to decide (an Abort, read here) rather than both timing out at once.
    channel.set_wait(ANSWER_WAIT + Duration::from_secs(1));
    loop {
        let mut fds = Vec::new();
        match channel.recv() {
            Ok(received) => {
                fds = received.fds;
                protocol.received(received.message);
            }
            Err(HandoverError::Wire(error)) => protocol.undecodable(&error),
            Err(HandoverError::Closed) => protocol.closed(),
            Err(error) => {
                return Err(GiveUp {
                    why: error.to_string(),
                    status: 1,
                })
            }
        }
        while let Some(action) = protocol.poll_action() {
            match action {
                InAction::Send(message) => {
                    // A failed send: the old process is gone or gave up; the next receive
                    // says which.
                    let _ = channel.send(&message, &[]);
                }
                InAction::TakeListeners(addrs) => {
                    let fds = std::mem::take(&mut fds);
                    if fds.len() != addrs.len() {
                        return Err(missing(addrs.len(), fds.len(), "listening"));
                    }
                    inherited.listeners.extend(addrs.into_iter().zip(fds));
                }
                InAction::TakePeers(records) => {
                    let fds = std::mem::take(&mut fds);
                    if fds.len() != records.len() {
                        return Err(missing(records.len(), fds.len(), "peer"));
                    }
                    inherited.peers.extend(records.into_iter().zip(fds));
                }
                InAction::TakeStats(stats, paused) => {
                    let now = Instant::now();
                    inherited.stats = stats;
                    inherited.pause_began = now.checked_sub(paused).unwrap_or(now);
                }
                InAction::Serve => return Ok(inherited),
                InAction::GiveUp { why, status } => return Err(GiveUp { why, status }),
            }
        }
    }
}

fn missing(want: usize, got: usize, what: &str) -> GiveUp {
    GiveUp {
        why: format!("{want} {what} sockets announced, {got} came"),
        status: 1,
    }
}
