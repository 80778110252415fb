//! The core's timer table: every deadline the server keeps, each row named by a [`Timer`]
//! kind, behind one [`ServerCore::poll_timeout`], and firing by kind in
//! [`ServerCore::handle_timeout`] (quinn-proto's `TimerTable` shape). Part of
//! [`ServerCore`].
//!
//! | row                          | deadline                                              |
//! |------------------------------|-------------------------------------------------------|
//! | [`Timer::AcceptBackoff`]     | the end of an accept back-off                         |
//! | [`Timer::MemoryGrace`]       | all buffers over `--max-buffered` for their grace     |
//! | [`Timer::FirstBytes`]        | a socket's time to send its first bytes, per stage    |
//! |                              | (PROXY header, scrape, busy, TLS handshake done)      |
//! | [`Timer::Kept`]              | after a live upgrade, the end of the peers kept here  |
//! | [`Timer::Drain`]             | the next peer told `End Connection` while stopping    |
//! | the wheel                    | each connection's one timer: [`Timer::Liveness`] or   |
//! |                              | [`Timer::Linger`], by its lifecycle                   |
//!
//! The rows are read where the state they time lives (the back-off's end, the budget, the
//! drain, the wheels), so a deadline is never stored twice. A liveness timer is exact: the
//! wheel files it at the tick at or before its deadline (or, armed as now plus the interval
//! or the idle time, in that delay's FIFO lane), and the deadline itself is
//! recomputed from the liveness record whenever the timer is about to fire
//! (`Timers::poll_due`), so a heartbeat or `End Connection` goes out at its due time, not at
//! the next tick, and a peer that spoke meanwhile is filed again without firing. A linger is
//! rounded up to a tick (nothing records its deadline; a tick late is fine for it).

use std::time::Instant;

use super::{timing_for, Reason, ServerCore, Stage, Timer, Wakeup, DEAD_LINGER, TIMERS_PER_BATCH};
use crate::cores::liveness;
use crate::cores::protocol;
use crate::cores::timer::earlier;

/// The rows outside the connections' wheel, in the order they fire in a turn.
const SERVER_TIMERS: [Timer; 8] = [
    Timer::AcceptBackoff,
    Timer::MemoryGrace,
    Timer::FirstBytes(Stage::ProxyHeader),
    Timer::FirstBytes(Stage::Scrape),
    Timer::FirstBytes(Stage::Busy),
    Timer::FirstBytes(Stage::TlsHandshake),
    Timer::Kept,
    Timer::Drain,
];

impl ServerCore {
    /// When the loop must wake even if no peer does anything: the earliest row of the timer
    /// table. `None`: sleep until an event.
    pub fn poll_timeout(&self) -> Option<Instant> {
        earlier(self.next_server_row(), self.timers.next_wakeup())
    }

    /// The earliest of the rows outside the connections' wheel: [`deadline_of`] for each
    /// of [`SERVER_TIMERS`], read field by field rather than kind by kind, as the loop asks
    /// at least twice a turn and most turns have none.
    ///
    /// [`deadline_of`]: Self::deadline_of
    fn next_server_row(&self) -> Option<Instant> {
        // Row by row, not through an iterator: each row is a branch or two when unset
        // (measured: the array and its fold cost a row-read more than this).
        let mut first = self.accept_paused_until;
        for row in [
            self.budget.deadline(),
            self.waiting.next_deadline_of_any(),
            self.kept,
        ] {
            first = earlier(first, row);
        }
        match self.drain {
            Some(drain) => earlier(first, drain.next_due()),
            None => first,
        }
    }

    /// When the row `kind` is due; for a connection's kinds, the earliest connection timer.
    pub fn deadline_of(&self, kind: Timer) -> Option<Instant> {
        match kind {
            Timer::AcceptBackoff => self.accept_paused_until,
            Timer::MemoryGrace => self.budget.deadline(),
            Timer::FirstBytes(stage) => self.waiting.next_deadline(stage),
            Timer::Kept => self.kept,
            Timer::Drain => self.drain.and_then(|drain| drain.next_due()),
            Timer::Liveness | Timer::Linger => self.timers.next_wakeup(),
        }
    }

    /// Fires, in one batch of at most [`TIMERS_PER_BATCH`], what was due when the turn woke
    /// ([`handle_wakeup`](Self::handle_wakeup)), sending it at `now`, the batch's closes
    /// ahead of its heartbeats in the actions; returns whether more
    /// was due then (call again, with the clock read anew: see the send-time rule in the
    /// module notes). Call after the turn's reads, so that bytes that arrived while the loop
    /// was away count before any peer is judged silent.
    ///
    /// Only what was due at the wake-up fires, whatever `now` says: what arrived by then has
    /// been read this turn, and what arrived while the loop was stopped in the middle of its
    /// timers will be read first next turn. `now` is when what fires is sent: a heartbeat's
    /// interval is counted from it.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let due_by = self.wakeup.woke.min(now);
        let mut left = TIMERS_PER_BATCH;
        if self.next_server_row().is_some_and(|at| at <= due_by) {
            for kind in SERVER_TIMERS {
                if self.deadline_of(kind).is_some_and(|at| at <= due_by) {
                    self.fire_server_timer(kind, now, due_by, &mut left);
                }
            }
        }
        // The batch's closes' actions go before its heartbeats' (see `fire`).
        let mut closes_end = self.actions.len();
        loop {
            // A connection's liveness deadline is recomputed from its record, exactly; a
            // linger was armed rounded up, and its tick is its time.
            let (conns, settings) = (&self.conns, &self.settings);
            let exact = |key: usize| {
                let record = conns.get(key)?;
                match record.timer() {
                    Timer::Liveness => Some(record.liveness.deadline(&timing_for(settings, key))),
                    _ => None,
                }
            };
            let Some(key) = self.timers.poll_due(due_by, &mut left, exact) else {
                break;
            };
            let before = self.actions.len();
            if self.fire(now, key) == Fired::Close {
                // Closes first: the loop writes in the order of the actions, and a close's
                // lateness is what ends a peer; a heartbeat written a little later only
                // moves that peer's next step later (its full interval counts from `now`).
                // Only a close pays for the move (at most a batch's actions).
                let added = self.actions.len() - before;
                if before > closes_end {
                    self.actions.make_contiguous()[closes_end..].rotate_right(added);
                }
                closes_end += added;
            }
        }
        self.poll_timeout().is_some_and(|at| at <= due_by)
    }

    fn fire_server_timer(&mut self, kind: Timer, now: Instant, due_by: Instant, left: &mut usize) {
        match kind {
            Timer::AcceptBackoff => self.accept_paused_until = None,
            Timer::MemoryGrace => {
                let excess = self.budget.excess_at(due_by);
                if excess > 0 {
                    self.close_largest(now, excess);
                    if self.budget.excess_at(due_by) > 0 {
                        // Nothing left that holds the bytes counted (which would be a bug):
                        // wait another grace rather than ask to be woken at once, forever.
                        self.budget.defer(now);
                    }
                }
            }
            Timer::FirstBytes(stage) => self.expire_waiting(stage, due_by, left),
            Timer::Kept => self.end_kept(now, due_by, left),
            Timer::Drain => self.tell_due(now, due_by, left),
            // Connection timers fire from the wheel, by the connection's own kind.
            Timer::Liveness | Timer::Linger => {}
        }
    }

    /// A connection's timer fired: what it does is its kind's.
    fn fire(&mut self, now: Instant, key: usize) -> Fired {
        let Some(record) = self.conns.get(key) else {
            return Fired::Other;
        };
        match record.timer() {
            Timer::Liveness => self.on_liveness_timer(now, key),
            Timer::Linger => {
                // The peer had its time to take its last output; close regardless.
                let reason = record.failure_reason();
                self.close(now, key, reason);
                Fired::Other
            }
            Timer::AcceptBackoff
            | Timer::MemoryGrace
            | Timer::FirstBytes(_)
            | Timer::Kept
            | Timer::Drain => Fired::Other,
        }
    }

    fn on_liveness_timer(&mut self, now: Instant, key: usize) -> Fired {
        let timing = timing_for(&self.settings, key);
        let Some(record) = self.conns.get_mut(key) else {
            return Fired::Other;
        };
        match record.liveness.on_timer(now, &timing) {
            // Not met when the timer table recomputed the deadline first; kept for safety.
            liveness::Action::Rearm(at) => {
                self.timers.arm_exact(key, at);
                Fired::Other
            }
            liveness::Action::SendHeartbeat { number, .. } => {
                self.stats.on_heartbeat_sent();
                // The liveness record's next deadline, `later(now, interval)`, with `now`
                // converted once per batch.
                self.timers.arm_exact_after(key, now, timing.interval);
                let count = timing.count;
                if self.settings.heartbeat_reports {
                    self.report(key, super::Event::HeartbeatSent { number, count });
                }
                self.queue_heartbeat(now, key);
                Fired::Other
            }
            liveness::Action::Close => {
                // `Close` leaves the record as it was: its deadline is the one just met.
                let due = record.liveness.deadline(&timing);
                let silent = record.liveness.silent_for(now);
                let Wakeup { woke, overslept } = self.wakeup;
                self.stats
                    .on_end_connection_sent(due, now, silent, woke, overslept);
                let count = timing.count;
                let late = now.saturating_duration_since(due);
                self.report(key, super::Event::Dead { count, late });
                self.queue_line(now, key, protocol::END_CONNECTION);
                self.begin_ending(key, Reason::Dead, now, DEAD_LINGER, false);
                Fired::Close
            }
        }
    }
}

/// What firing a connection's timer did, as far as the order of a batch's actions goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    /// `End Connection` to a silent peer.
    Close,
    /// A heartbeat, a linger's end, a re-arm.
    Other,
}
