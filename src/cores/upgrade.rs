//! The live upgrade's protocol, as two sans-IO state machines: [`Outgoing`], the running server
//! that hands over, and [`Incoming`], the binary that takes over. Each takes `now` and what
//! happened, and says what to do; neither touches a socket, a process or a clock. The frames
//! themselves are [`wire`]'s; the socket pair and the descriptors are `edge::handover`'s.
//!
//! The exchange, and who serves the peers at each step (exactly one process at any time):
//!
//! | step | old process                                  | new process                     | serving |
//! |------|----------------------------------------------|---------------------------------|---------|
//! | 1    | SIGUSR2: spawn the binary at the start path  |                                 | old     |
//! | 2    | `Offer` (format version, fixed settings)     | reads its configuration afresh  | old     |
//! | 3    |                                              | `Ready`, or `Refuse` and exits  | old     |
//! | 4    | stops its loop; `Listeners`, `Peers`…, `Done` | takes the sockets in           | nobody (the pause) |
//! | 5    |                                              | `TakenOver`                     | nobody  |
//! | 6    | `Release`, exits with its summary            | MAINPID=, READY=1, serves       | new     |
//!
//! Rollback: at steps 1–5 a missing binary, one that exits or closes the channel, a
//! `Refuse`, anything out of order, or [`ANSWER_WAIT`] of silence sends the old process back
//! to serving (after `Abort`, so a new process that answers late exits without touching a
//! socket); the old process never let go of its sockets, so nothing has to be taken back.
//! A later SIGUSR2 may try again. The new process serves only after `Release`, or after the
//! channel closed once it said `TakenOver` (the old process is gone: someone must serve).

pub mod wire;

use std::time::{Duration, Instant};

use self::wire::{Message, WireError, VERSION};
use crate::cores::timer::later;

/// How long the old process waits for each answer of the new one before it rolls back.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// What the old process must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutAction {
    /// Start the binary at the path the server was started from, with its arguments and
    /// the channel; then [`Outgoing::spawned`] or [`Outgoing::spawn_failed`].
    Spawn,
    /// Send this message over the channel.
    Send(Message),
    /// Stop serving (the loop turns no more), send the listeners, every peer and `Done`;
    /// then [`Outgoing::sent_all`].
    HandOver,
    /// The new process has every peer: exit with the summary (peers handed over).
    Exit { peers: u64 },
    /// Give up: end the new process if it still runs, close the channel, serve on (the loop
    /// turns again if it had stopped). Log `reason` in one line.
    RollBack { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutPhase {
    Serving,
    /// Spawn asked for; waiting for the loop to say how it went.
    Spawning,
    /// The offer is out; waiting for `Ready` by the deadline; still serving.
    Offered {
        deadline: Instant,
    },
    /// Sending everything; not serving.
    Sending,
    /// Everything sent; waiting for `TakenOver` by the deadline; not serving.
    Sent {
        deadline: Instant,
    },
    Released,
}

/// The old process's side. Inputs: [`begin`](Self::begin) (SIGUSR2), [`spawned`](Self::spawned),
/// [`spawn_failed`](Self::spawn_failed), [`received`](Self::received),
/// [`undecodable`](Self::undecodable), [`closed`](Self::closed), [`sent_all`](Self::sent_all),
/// [`handle_timeout`](Self::handle_timeout). After each, [`poll_action`](Self::poll_action)
/// until `None`; wake at [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct Outgoing {
    phase: OutPhase,
    fixed: Vec<(String, String)>,
    actions: Vec<OutAction>,
    pub done: u64,
    pub failed: u64,
}

impl Outgoing {
    /// `fixed`: the settings that cannot change under live peers, as the offer names them.
    pub fn new(fixed: Vec<(String, String)>) -> Outgoing {
        Outgoing {
            phase: OutPhase::Serving,
            fixed,
            actions: Vec::new(),
            done: 0,
            failed: 0,
        }
    }

    /// SIGUSR2. False (and nothing to do) while an upgrade is already under way.
    pub fn begin(&mut self) -> bool {
        if self.phase != OutPhase::Serving {
            return false;
        }
        self.phase = OutPhase::Spawning;
        self.actions.push(OutAction::Spawn);
        true
    }

    /// The binary started at `now`: offer it the state.
    pub fn spawned(&mut self, now: Instant) {
        if self.phase != OutPhase::Spawning {
            return;
        }
        self.phase = OutPhase::Offered {
            deadline: later(now, ANSWER_WAIT),
        };
        self.actions.push(OutAction::Send(Message::Offer {
            version: VERSION,
            fixed: self.fixed.clone(),
        }));
    }

    /// The binary could not be started (missing, not executable…): `why`.
    pub fn spawn_failed(&mut self, why: &str) {
        if self.phase == OutPhase::Spawning {
            self.roll_back(format!("cannot start the new binary: {why}"));
        }
    }

    /// Everything is sent, at `now`: wait for `TakenOver`.
    pub fn sent_all(&mut self, now: Instant) {
        if self.phase == OutPhase::Sending {
            self.phase = OutPhase::Sent {
                deadline: later(now, ANSWER_WAIT),
            };
        }
    }

    /// A message from the new process.
    pub fn received(&mut self, message: Message) {
        match (self.phase, message) {
            (OutPhase::Offered { .. }, Message::Ready) => {
                self.phase = OutPhase::Sending;
                self.actions.push(OutAction::HandOver);
            }
            (OutPhase::Offered { .. } | OutPhase::Sent { .. }, Message::Refuse(why)) => {
                self.roll_back(format!("the new binary refused: {why}"));
            }
            (OutPhase::Sent { .. }, Message::TakenOver { peers }) => {
                self.phase = OutPhase::Released;
                self.done += 1;
                self.actions.push(OutAction::Send(Message::Release));
                self.actions.push(OutAction::Exit { peers });
            }
            (OutPhase::Offered { .. } | OutPhase::Sending | OutPhase::Sent { .. }, other) => {
                let what = format!("{other:?}");
                let name = what.split([' ', '(', '{']).next().unwrap_or("?");
                self.roll_back(format!("the new binary said {name} out of turn"));
            }
            // Nothing is under way: a late word from a process already given up on.
            (OutPhase::Serving | OutPhase::Spawning | OutPhase::Released, _) => {}
        }
    }

    /// Bytes from the new process that are not a message.
    pub fn undecodable(&mut self, error: &WireError) {
        if self.is_under_way() {
            self.roll_back(format!("the new binary sent {error}"));
        }
    }

    /// The channel closed (the new process exited): `status` says how, if known.
    pub fn closed(&mut self, status: &str) {
        if self.is_under_way() {
            self.roll_back(format!(
                "the new binary exited ({status}) before taking over"
            ));
        }
    }

    /// The running server gives the upgrade up itself (it began to stop, say): `reason`.
    pub fn abandon(&mut self, reason: &str) {
        if self.is_under_way() {
            self.roll_back(reason.to_string());
        }
    }

    /// Time passed: a silent new process is given up on at its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| deadline <= now) {
            let waited = ANSWER_WAIT.as_secs();
            self.roll_back(format!("no answer from the new binary within {waited} s"));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            OutPhase::Offered { deadline } | OutPhase::Sent { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// Whether the loop must not serve peers now (their state is on its way).
    pub fn is_paused(&self) -> bool {
        matches!(
            self.phase,
            OutPhase::Sending | OutPhase::Sent { .. } | OutPhase::Released
        )
    }

    /// Whether an upgrade is under way (SIGUSR2 would be ignored).
    pub fn is_under_way(&self) -> bool {
        !matches!(self.phase, OutPhase::Serving | OutPhase::Released)
    }

    pub fn poll_action(&mut self) -> Option<OutAction> {
        (!self.actions.is_empty()).then(|| self.actions.remove(0))
    }

    fn roll_back(&mut self, reason: String) {
        self.phase = OutPhase::Serving;
        self.failed += 1;
        let abort = Message::Abort(reason.clone());
        self.actions.push(OutAction::Send(abort));
        self.actions.push(OutAction::RollBack { reason });
    }
}

/// What the new process must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InAction {
    Send(Message),
    /// Register these listeners (their sockets came with the message, in this order).
    TakeListeners(Vec<std::net::SocketAddr>),
    /// Take these peers in, in order (their sockets came with the message).
    TakePeers(Vec<wire::PeerState>),
    /// Carry on these counters (exact JSON of the old summary); the old loop had been
    /// stopped this long when it sent them.
    TakeStats(String, Duration),
    /// Serve: report MAINPID= and READY=1 under systemd.
    Serve,
    /// Exit without touching any socket taken: `why`, one line; `status` for the process.
    GiveUp {
        why: String,
        status: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InPhase {
    AwaitOffer,
    Receiving,
    TakenOver,
    Finished,
}

/// The new process's side: [`received`](Self::received), [`undecodable`](Self::undecodable),
/// [`closed`](Self::closed), then [`poll_action`](Self::poll_action) until `None`.
#[derive(Debug)]
pub struct Incoming {
    phase: InPhase,
    fixed: Vec<(String, String)>,
    actions: Vec<InAction>,
    peers: u64,
}

impl Incoming {
    /// `fixed`: this process's own settings that cannot change, as the old one names them.
    pub fn new(fixed: Vec<(String, String)>) -> Incoming {
        Incoming {
            phase: InPhase::AwaitOffer,
            fixed,
            actions: Vec::new(),
            peers: 0,
        }
    }

    pub fn received(&mut self, message: Message) {
        match (self.phase, message) {
            (InPhase::AwaitOffer, Message::Offer { fixed, .. }) => {
                match changed(&fixed, &self.fixed) {
                    Some(why) => self.give_up(why, 2),
                    None => {
                        self.phase = InPhase::Receiving;
                        self.actions.push(InAction::Send(Message::Ready));
                    }
                }
            }
            (InPhase::Receiving, Message::Listeners(addrs)) => {
                self.actions.push(InAction::TakeListeners(addrs))
            }
            (InPhase::Receiving, Message::Peers(peers)) => {
                self.actions.push(InAction::TakePeers(peers))
            }
            (
                InPhase::Receiving,
                Message::Done {
                    peers,
                    stats,
                    paused,
                },
            ) => {
                self.peers = peers;
                self.actions.push(InAction::TakeStats(stats, paused));
                self.phase = InPhase::TakenOver;
                self.actions
                    .push(InAction::Send(Message::TakenOver { peers }));
            }
            (InPhase::TakenOver, Message::Release) => {
                self.phase = InPhase::Finished;
                self.actions.push(InAction::Serve);
            }
            (_, Message::Abort(why)) => {
                self.phase = InPhase::Finished;
                let why = format!("the running server gave the upgrade up: {why}");
                self.actions.push(InAction::GiveUp { why, status: 1 });
            }
            (InPhase::Finished, _) => {}
            (_, other) => {
                let what = format!("{other:?}");
                let name = what
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or("?")
                    .to_string();
                self.give_up(format!("the running server sent {name} out of turn"), 1);
            }
        }
    }

    /// Bytes that are not a message: an unknown format version is refused with its line.
    pub fn undecodable(&mut self, error: &WireError) {
        if self.phase != InPhase::Finished {
            self.give_up(error.to_string(), 2);
        }
    }

    /// The channel closed. After `TakenOver`, the old process is gone and nobody else serves
    /// the peers: serve them. Before, nothing was handed over: exit.
    pub fn closed(&mut self) {
        match self.phase {
            InPhase::TakenOver => {
                self.phase = InPhase::Finished;
                self.actions.push(InAction::Serve);
            }
            InPhase::Finished => {}
            InPhase::AwaitOffer | InPhase::Receiving => {
                self.phase = InPhase::Finished;
                let why = "the running server went away before handing over".to_string();
                self.actions.push(InAction::GiveUp { why, status: 1 });
            }
        }
    }

    /// Peers handed over, as the old process counted them (after `Done`).
    pub fn peers(&self) -> u64 {
        self.peers
    }

    pub fn poll_action(&mut self) -> Option<InAction> {
        (!self.actions.is_empty()).then(|| self.actions.remove(0))
    }

    fn give_up(&mut self, why: String, status: u8) {
        let refusal = match self.phase {
            // The old process waits for an answer to its offer: say why, it rolls back.
            InPhase::AwaitOffer | InPhase::Receiving => Some(Message::Refuse(why.clone())),
            InPhase::TakenOver | InPhase::Finished => None,
        };
        self.phase = InPhase::Finished;
        self.actions.extend(refusal.map(InAction::Send));
        self.actions.push(InAction::GiveUp { why, status });
    }
}

/// The first setting that differs between the old process's `theirs` and this one's `ours`,
/// as one line; `None` when they agree.
fn changed(theirs: &[(String, String)], ours: &[(String, String)]) -> Option<String> {
    for (name, value) in ours {
        let old = theirs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        match old {
            Some(old) if old == value => {}
            Some(old) => {
                return Some(format!(
                    "{name} changed from {old} to {value}: it cannot change under live \
                     peers (restart the server to change it)"
                ))
            }
            None => return Some(format!("the running server does not say its {name}")),
        }
    }
    None
}

#[cfg(test)]
mod tests;
