//! How connections end: the ending itself (flush, shut our side, wait for the peer's, or the
//! linger), closing and its counting, and stopping (every peer told `End Connection`, spread
//! over `--drain`). Part of [`ServerCore`]; the states are `Lifecycle::Ending`'s.

use std::time::{Duration, Instant};

use super::{Action, Event, Lifecycle, Reason, ServerCore, STOP_LINGER};
use crate::cores::protocol;
use crate::cores::timer::later;

/// Stopping: every peer is told `End Connection`, peer `told` of `total` at
/// `start + span × told / total` (all at once when `span` is zero), in key order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    pub(super) start: Instant,
    pub(super) span: Duration,
    pub(super) total: usize,
    pub(super) told: usize,
    /// Keys below this have been told (or were closed already).
    pub(super) next_key: usize,
    /// Begun by the deadline of the peers kept after a live upgrade (`handover`), not by a
    /// stop signal: a stop signal then begins a stop drain of its own instead of ending this.
    pub(super) after_upgrade: bool,
}

impl Drain {
    /// When the next peer is due its `End Connection`; `None` once all have been told.
    pub(super) fn next_due(&self) -> Option<Instant> {
        if self.told >= self.total {
            return None;
        }
        let nanos = self.span.as_nanos() * self.told as u128 / self.total as u128;
        let offset = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Some(later(self.start, offset))
    }
}

impl ServerCore {
    /// While stopping: tells the peers whose turn in the drain had come by `due_by`
    /// `End Connection` at `now`, at most `left` of them.
    pub(super) fn tell_due(&mut self, now: Instant, due_by: Instant, left: &mut usize) {
        while *left > 0 {
            let Some(drain) = self.drain else {
                return;
            };
            if drain.next_due().is_none_or(|due| due > due_by) {
                return;
            }
            let next = (drain.next_key..self.conns.capacity()).find(|k| self.conns.contains(*k));
            let Some(key) = next else {
                // The rest closed on their own.
                self.drain = Some(Drain {
                    told: drain.total,
                    ..drain
                });
                return;
            };
            self.drain = Some(Drain {
                told: drain.told + 1,
                next_key: key + 1,
                ..drain
            });
            *left -= 1;
            self.stop_one(now, key);
        }
    }

    /// Part of stopping: one peer is told `End Connection`, or, if it is already ending, has
    /// its linger cut to the stop's.
    pub(super) fn stop_one(&mut self, now: Instant, key: usize) {
        let Some(record) = self.conns.get(key) else {
            return;
        };
        let deadline = later(now, STOP_LINGER);
        match record.lifecycle {
            Lifecycle::Ending { .. } => {
                if self.timers.deadline(key).is_none_or(|at| at > deadline) {
                    self.timers.arm(key, deadline);
                }
            }
            Lifecycle::Open { .. } | Lifecycle::ReadPaused | Lifecycle::BudgetPaused => {
                self.queue_line(now, key, protocol::END_CONNECTION);
                self.begin_ending(key, Reason::Shutdown, now, STOP_LINGER, false);
            }
        }
    }

    /// Starts ending a connection: from now on its input is dropped and its output flushed,
    /// then its sending side shut down; it is closed once the peer has closed its side too,
    /// or when `linger` runs out.
    pub(super) fn begin_ending(
        &mut self,
        key: usize,
        reason: Reason,
        now: Instant,
        linger: Duration,
        peer_done: bool,
    ) {
        let Some(record) = self.conns.get_mut(key) else {
            return;
        };
        let paused = matches!(
            record.lifecycle,
            Lifecycle::ReadPaused | Lifecycle::BudgetPaused
        );
        if paused && !peer_done {
            // Its input waits in the kernel: read and drop it now, so that closing later
            // does not turn into a reset.
            self.actions.push_back(Action::Read(key));
        }
        record.lifecycle = Lifecycle::Ending {
            reason,
            peer_done,
            our_side_shut: false,
        };
        if peer_done {
            self.peers_gone += 1;
        }
        self.timers.arm(key, later(now, linger));
        self.advance_ending(now, key);
    }

    /// Moves an ending connection on as far as it can go now: once its output is all
    /// written, shut down our side; once the peer is done too, close.
    pub(super) fn advance_ending(&mut self, now: Instant, key: usize) {
        let pending = self.pending_output(key);
        let Some(record) = self.conns.get_mut(key) else {
            return;
        };
        let Lifecycle::Ending {
            reason,
            peer_done,
            our_side_shut,
        } = &mut record.lifecycle
        else {
            return;
        };
        if pending > 0 {
            return;
        }
        let (reason, peer_done) = (*reason, *peer_done);
        if !*our_side_shut {
            *our_side_shut = true;
            self.actions.push_back(Action::ShutdownWrite(key));
        }
        if peer_done {
            self.close(now, key, reason);
        }
    }

    pub(super) fn close(&mut self, now: Instant, key: usize, reason: Reason) {
        if !self.remove(now, key) {
            return;
        }
        self.stats.on_close(reason);
        self.report(key, Event::Closed(reason));
        self.actions.push_back(Action::Close(key));
    }

    /// Drops `key`'s record and all this core holds for it (its pending output, its share of
    /// the budget, its timer), so that a close and a handover free exactly the same things.
    /// False if `key` was gone already. Counting and telling are the caller's: a close is
    /// counted and reported, a peer handed over is not.
    pub(super) fn remove(&mut self, now: Instant, key: usize) -> bool {
        let Some(record) = self.conns.try_remove(key) else {
            return false;
        };
        if let Lifecycle::Ending {
            peer_done: true, ..
        } = record.lifecycle
        {
            self.peers_gone -= 1;
        }
        if let Some(i) = self.segments.find(key) {
            self.segments.done(i, &mut self.output);
        }
        self.budget_changed(now, key, record.accounted as usize, 0);
        self.timers.cancel(key);
        true
    }
}
