//! A live upgrade's part in the core: exporting every connection's state for another
//! process, and importing it there. Part of [`ServerCore`]; the format is
//! `cores::upgrade::wire`'s, the sockets the loop's.
//!
//! What a connection carries: its liveness as durations before the export (`Peer::carry`),
//! its timer's time left, where it is in its life (an ending keeps its reason and how far
//! it got), its partial line and unsent output. Imported at the new process's `now`, every
//! instant moves later by the pause: no heartbeat is sent earlier than it would have been,
//! nothing times out because of the pause, and a changed setting (interval, idle, count)
//! applies from the import on, except that the timer then running keeps its time left if
//! that is later (so does a smaller share of the jitter, which depends on the new key). Nothing is stored per peer for the upgrade's sake.
//!
//! Peers that cannot move stay (a TLS session: rustls cannot take it into another process):
//! the old process forgets the peers it handed over ([`ServerCore::forget_peer`]) and, told
//! [`ServerCore::handle_upgraded`], serves the rest as before, accepting no one, until a
//! deadline (row [`Timer::Kept`](super::Timer::Kept)); then it tells those still there
//! `End Connection` in a drain spread over `--drain`, or without one over
//! [`KEPT_SPREAD_PER_PEER`] each, and is done once they have gone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ending::Drain;
use super::{timing_for, Action, Lifecycle, Reason, Record, ServerCore};
use crate::cores::buffers::Buffers;
use crate::cores::liveness::{Carried, Peer};
use crate::cores::protocol;
use crate::cores::timer::later;
use crate::cores::upgrade::wire::{PeerState, Stage};
use crate::ops::stats::ServerStats;

/// Without `--drain`, the `End Connection`s to the peers kept after a live upgrade are
/// spread over this much per peer: 1,000 reconnects a second, well under the TLS handshakes
/// one core of the new process completes (about 2,500 a second at 0.4 ms of CPU each), so
/// that they do not all reconnect at once.
pub const KEPT_SPREAD_PER_PEER: Duration = Duration::from_millis(1);

impl ServerCore {
    /// The state of the connection under `key` at `now`, for another process (without the
    /// real address from a PROXY header: the loop keeps that). Call between turns, once the
    /// loop has carried out every action.
    pub fn export_peer(&self, now: Instant, key: usize) -> Option<PeerState> {
        let record = self.conns.get(key)?;
        let Carried {
            since_ago,
            heartbeats_sent,
            silent_before_ms,
        } = record.liveness.carry(now);
        let due = match record.lifecycle {
            Lifecycle::Ending { .. } => self.timers.deadline(key),
            _ => Some(record.liveness.deadline(&timing_for(&self.settings, key))),
        };
        let (partial, discarding, outbox) = record.buffers.parts();
        let mut unsent = outbox.to_vec();
        if record.heartbeat_queued {
            unsent.extend_from_slice(protocol::HEARTBEAT_LINE);
        }
        if let Some((_, range)) = self.segment(key) {
            unsent.extend_from_slice(&self.output[range]);
        }
        Some(PeerState {
            since_ago,
            heartbeats_sent,
            silent_before_ms,
            timer_remaining: due.map_or(Duration::ZERO, |due| due.saturating_duration_since(now)),
            stage: stage_of(record.lifecycle),
            real_addr: None,
            partial: partial.to_vec(),
            discarding,
            unsent,
        })
    }

    /// The keys of every open connection, in key order.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.conns.iter().map(|(key, _)| key)
    }

    /// Takes in a connection handed over by another process, at `now` (after the pause),
    /// from `addr`. Returns its key; the loop registers its socket under it and carries out
    /// the actions (a write, if output waits). Not subject to `--allow` or
    /// `--max-connections`: the peer is already served, and must not notice the upgrade.
    pub fn import_peer(&mut self, now: Instant, state: &PeerState, addr: SocketAddr) -> usize {
        let carried = Carried {
            since_ago: state.since_ago,
            heartbeats_sent: state.heartbeats_sent,
            silent_before_ms: state.silent_before_ms,
        };
        let mut liveness = Peer::from_carried(now, carried);
        let max_line = self.settings.max_line;
        let buffers =
            Buffers::from_parts(max_line, &state.partial, state.discarding, &state.unsent);
        let unsent = buffers.unsent();
        let lifecycle = match state.stage {
            Stage::Unheard => Lifecycle::Open { spoke: false },
            // The budget is this process's to judge again; a peer whose output is still over
            // the limit stays paused.
            Stage::Open | Stage::BudgetPaused | Stage::ReadPaused
                if unsent >= self.settings.max_write_buffer =>
            {
                Lifecycle::ReadPaused
            }
            Stage::Open | Stage::BudgetPaused | Stage::ReadPaused => {
                Lifecycle::Open { spoke: true }
            }
            Stage::Ending {
                reason,
                peer_done,
                our_side_shut,
            } => Lifecycle::Ending {
                reason: reason_of(reason),
                peer_done,
                our_side_shut,
            },
        };
        // The slot this peer gets decides its share of the jitter; so does a changed idle
        // time. The time left on its timer never shortens: where the new deadline would come
        // sooner, the liveness instant moves on to make them one (the exact timer and the
        // record must agree), so the peer is asked no earlier than it would have been.
        let key = self.conns.vacant_key();
        let left = later(now, state.timer_remaining);
        if !matches!(lifecycle, Lifecycle::Ending { .. }) {
            let due = liveness.deadline(&timing_for(&self.settings, key));
            if due < left {
                let carried = Carried {
                    since_ago: carried.since_ago.saturating_sub(left - due),
                    ..carried
                };
                liveness = Peer::from_carried(now, carried);
            }
        }
        let key = self.conns.insert(Record {
            liveness,
            buffers,
            lifecycle,
            accounted: 0,
            heartbeat_queued: false,
        });
        if let Lifecycle::Ending {
            peer_done: true, ..
        } = lifecycle
        {
            self.peers_gone += 1;
        }
        // The time left never shortens; the deadline under this process's settings may
        // lengthen it.
        match lifecycle {
            Lifecycle::Ending { .. } => self.timers.arm(key, left),
            // Exact, as every liveness deadline is (see `cores::timer`).
            _ => self
                .timers
                .arm_exact(key, liveness.deadline(&timing_for(&self.settings, key))),
        }
        self.sessions.open(key, addr, now);
        self.account(now, key);
        if unsent > 0 {
            self.actions.push_back(Action::Write(key));
        } else if matches!(lifecycle, Lifecycle::Ending { .. }) {
            self.advance_ending(now, key);
        }
        key
    }

    /// `key` was handed over to the new process (at `now`): it is that process's peer now,
    /// so it is forgotten here without a word, a report or a close counted (only `open`
    /// goes down); the loop closes this process's copy of its socket (`Action::Close`).
    pub fn forget_peer(&mut self, now: Instant, key: usize) {
        if !self.remove(now, key) {
            return;
        }
        self.stats.open = self.stats.open.saturating_sub(1);
        self.actions.push_back(Action::Close(key));
    }

    /// A live upgrade took the listening socket at `now`, and every peer that could move
    /// (the others have been [forgotten](Self::forget_peer)). The peers left are served as
    /// before until `now + keep`, then told `End Connection` as a stop's drain does, spread
    /// over `--drain`, or without one over [`KEPT_SPREAD_PER_PEER`] each; no one is
    /// accepted. [`is_done`](Self::is_done) once they have all gone (a PROXY header or TLS
    /// handshake under way is awaited: its peer was accepted here). A stop
    /// ([`handle_stop`](Self::handle_stop)) is a stop as ever, deadline or not.
    pub fn handle_upgraded(&mut self, now: Instant, keep: Duration) {
        if self.drain.is_none() {
            self.kept = Some(later(now, keep));
        }
    }

    /// When the peers kept after a live upgrade are to be ended, until that has begun.
    pub fn kept_until(&self) -> Option<Instant> {
        self.kept
    }

    /// Row [`Timer::Kept`](super::Timer::Kept): the kept peers' time is up (it was due by
    /// `due_by`); those still here are told `End Connection`, spread, beginning at `now`.
    pub(super) fn end_kept(&mut self, now: Instant, due_by: Instant, left: &mut usize) {
        let Some(until) = self.kept.take() else {
            return;
        };
        let total = self.conns.len();
        let span = match self.settings.drain {
            drain if drain.is_zero() => {
                KEPT_SPREAD_PER_PEER.saturating_mul(u32::try_from(total).unwrap_or(u32::MAX))
            }
            drain => drain,
        };
        self.drain = Some(Drain {
            start: until,
            span,
            total,
            told: 0,
            next_key: 0,
            after_upgrade: true,
        });
        self.tell_due(now, due_by, left);
    }

    /// Carries on the counters of the process that handed over (its summary's and metrics'
    /// totals), adding this one's.
    pub fn carry_on(&mut self, earlier: &ServerStats) {
        self.stats.merge(earlier);
    }

    /// The counters, to change what the summary says about an upgrade.
    pub fn stats_mut(&mut self) -> &mut ServerStats {
        &mut self.stats
    }
}

fn stage_of(lifecycle: Lifecycle) -> Stage {
    match lifecycle {
        Lifecycle::Open { spoke: true } => Stage::Open,
        Lifecycle::Open { spoke: false } => Stage::Unheard,
        Lifecycle::ReadPaused => Stage::ReadPaused,
        Lifecycle::BudgetPaused => Stage::BudgetPaused,
        Lifecycle::Ending {
            reason,
            peer_done,
            our_side_shut,
        } => Stage::Ending {
            reason: reason as u8,
            peer_done,
            our_side_shut,
        },
    }
}

/// The reason as [`stage_of`] numbered it; an unknown number (a newer binary's) ends the
/// connection as failed, which is what it is to this process.
fn reason_of(n: u8) -> Reason {
    const ALL: [Reason; 6] = [
        Reason::PeerClosed,
        Reason::Dead,
        Reason::Failed,
        Reason::Shutdown,
        Reason::OverBudget,
        Reason::Probe,
    ];
    ALL.into_iter()
        .find(|reason| *reason as u8 == n)
        .unwrap_or(Reason::Failed)
}

#[cfg(test)]
mod kept;
#[cfg(test)]
mod tests;
