//! The new server process's side of a live upgrade: when it was started with the upgrade
//! channel ([`Channel::inherited`]), it checks the offer against its own configuration,
//! takes in the listening sockets and every peer with its state as they come, says so, and
//! waits for the running server to let go. The shell around `cores::upgrade::Incoming`.
//!
//! Hands each part to the caller as it arrives ([`Taken`]), so that the new server takes a
//! batch in (registers its sockets, imports its state) while the old one still sends the
//! next: the pause is then about the longer of the two, not their sum. The caller must not
//! serve anything before this returns: until `Release` the old process serves the peers,
//! and on any failure it serves on.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::cores::upgrade::wire::PeerState;
use crate::cores::upgrade::{InAction, Incoming, ANSWER_WAIT};
use crate::edge::handover::{Channel, HandoverError};

/// A part of what the running server hands over, in this order: the listeners, batches of
/// peers, the counters.
#[derive(Debug)]
pub enum Taken {
    /// The listening sockets, the peers' first.
    Listeners(Vec<(SocketAddr, OwnedFd)>),
    /// A batch of peers with their sockets.
    Peers(Vec<(PeerState, OwnedFd)>),
    /// The old process's counters (`ServerStats::to_exact_json`), to carry on; `peers`
    /// handed over in all; and when the pause began (the old loop's last turn) on this
    /// process's clock: the time the last frame came, less how long the old loop had been
    /// stopped when it sent it.
    Done {
        stats: String,
        peers: u64,
        pause_began: Instant,
    },
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
/// settings that cannot change, handing each part to `take` as it comes (an `Err` from it
/// gives the upgrade up: the old process is told why and serves on). Returns once the peers
/// are this process's to serve.
pub fn take_over(
    mut channel: Channel,
    fixed: Vec<(String, String)>,
    mut take: impl FnMut(Taken) -> Result<(), String>,
) -> Result<(), GiveUp> {
    let mut protocol = Incoming::new(fixed);
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
            Err(error) => return Err(failed(error.to_string())),
        }
        while let Some(action) = protocol.poll_action() {
            let taken = match action {
                InAction::Send(message) => {
                    // A failed send: the old process is gone or gave up; the next receive
                    // says which.
                    let _ = channel.send(&message, &[]);
                    continue;
                }
                InAction::TakeListeners(addrs) => {
                    let fds = std::mem::take(&mut fds);
                    if fds.len() != addrs.len() {
                        return Err(missing(addrs.len(), fds.len(), "listening"));
                    }
                    Taken::Listeners(addrs.into_iter().zip(fds).collect())
                }
                InAction::TakePeers(records) => {
                    let fds = std::mem::take(&mut fds);
                    if fds.len() != records.len() {
                        return Err(missing(records.len(), fds.len(), "peer"));
                    }
                    Taken::Peers(records.into_iter().zip(fds).collect())
                }
                InAction::TakeStats(stats, paused) => {
                    let now = Instant::now();
                    Taken::Done {
                        stats,
                        peers: protocol.peers(),
                        pause_began: now.checked_sub(paused).unwrap_or(now),
                    }
                }
                InAction::Serve => return Ok(()),
                InAction::GiveUp { why, status } => return Err(GiveUp { why, status }),
            };
            if let Err(why) = take(taken) {
                // Told to the old process, which rolls back; nothing here was served.
                let _ = channel.send(
                    &crate::cores::upgrade::wire::Message::Refuse(why.clone()),
                    &[],
                );
                return Err(failed(why));
            }
        }
    }
}

fn failed(why: String) -> GiveUp {
    GiveUp { why, status: 1 }
}

fn missing(want: usize, got: usize, what: &str) -> GiveUp {
    failed(format!("{want} {what} sockets announced, {got} came"))
}
