//! The server's decisions, with no sockets and no clock: a sans-IO state machine in the shape
//! of quinn-proto's `Connection`. The poll loop (`server.rs`) feeds it what happened and
//! carries out what it says; a test drives it with a fake clock and fake peers.
//!
//! Owns the connection records (lifecycle, liveness, the line decoder and unsent output),
//! their timers, the accept back-off, stopping, and the counters. Does not own sockets, the
//! clock, logging or the order of events in a loop turn: those are the loop's.
//!
//! Inputs, each with the time the loop read from its clock:
//!
//! | call                          | when                                                    |
//! |-------------------------------|---------------------------------------------------------|
//! | [`handle_accept`]             | a peer was accepted; says whether to keep it            |
//! | [`handle_screen`]             | the same judgement, for a peer before its TLS handshake |
//! | [`handle_accept_failed`]      | `accept` failed (out of descriptors): back off           |
//! | [`handle_read`]               | bytes were read; read at most [`read_budget`] at a time |
//! | [`handle_eof`]                | the peer closed its sending side                        |
//! | [`handle_error`]              | a read failed (reset, ...)                              |
//! | [`handle_writable`]           | the socket can take output again                        |
//! | [`handle_written`]            | the result of writing [`output`] after `Action::Write`  |
//! | [`handle_wakeup`]             | once a turn, right after `poll` returned                |
//! | [`handle_timeout`]            | [`poll_timeout`] has passed (after the turn's reads)    |
//! | [`handle_stop`]               | SIGTERM or a `Stopper`                                  |
//! | [`handle_arrival`] and kin    | a socket that must send its first bytes (PROXY header,  |
//! |                               | metrics request) or finish its TLS handshake before it  |
//! |                               | is served (`waiting`)                                   |
//!
//! Every input does its work when it is called: [`handle_timeout`] fires what is due, and
//! queues what the loop must do. Outputs only drain: [`poll_action`] until `None` after
//! **every** input (the calling contract: the loop carries out each [`Action`] before the
//! next input), and [`poll_timeout`], the one time the loop must wake even if no peer does
//! anything: every deadline the server keeps is in the core's timer table (`timers`).
//!
//! The core keeps no clock of its own, not even the last time it was told: every input that
//! needs the time takes it.
//!
//! ## The send-time rule
//!
//! A heartbeat's recorded send time (from which the peer's next full interval is counted)
//! must never be earlier than the moment it really left by more than one bounded batch of
//! work. So the loop reads its clock once when it wakes ([`handle_wakeup`]: what is *due* is
//! judged against that moment, after that turn's reads), and then gives each call of
//! [`handle_timeout`] a fresh stamp: one call fires at most [`TIMERS_PER_BATCH`] timers,
//! all sent at its `now`, and returns whether more were due at the wake-up; the loop reads
//! the clock again for the next batch.
//!
//! [`handle_accept`]: ServerCore::handle_accept
//! [`handle_screen`]: ServerCore::handle_screen
//! [`handle_accept_failed`]: ServerCore::handle_accept_failed
//! [`handle_read`]: ServerCore::handle_read
//! [`read_budget`]: ServerCore::read_budget
//! [`handle_eof`]: ServerCore::handle_eof
//! [`handle_error`]: ServerCore::handle_error
//! [`handle_writable`]: ServerCore::handle_writable
//! [`handle_written`]: ServerCore::handle_written
//! [`output`]: ServerCore::output
//! [`handle_wakeup`]: ServerCore::handle_wakeup
//! [`handle_timeout`]: ServerCore::handle_timeout
//! [`poll_timeout`]: ServerCore::poll_timeout
//! [`handle_stop`]: ServerCore::handle_stop
//! [`poll_action`]: ServerCore::poll_action
//! [`handle_arrival`]: ServerCore::handle_arrival

mod accounting;
mod ending;
mod handover;
mod output;
mod sessions;
mod timers;
mod types;
pub mod waiting;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slab::Slab;

use super::budget::Budget;
use crate::cores::buffers::Buffers;
use crate::cores::liveness::{Peer, Timing};
use crate::cores::protocol;
use crate::cores::rng::SplitMix64;
use crate::cores::timer::{later, Timers};
use crate::edge::turn::READ_BUFFER;
use crate::ops::stats::ServerStats;

use self::ending::Drain;
pub use self::handover::KEPT_SPREAD_PER_PEER;
pub use self::sessions::Session;
use self::sessions::Sessions;
pub use self::types::{Action, Admission, Event, Reason, Refusal, Settings, Timer};
use self::waiting::Waiting;
pub use self::waiting::{Arrival, Stage, WaitEnd, WaitKey};

/// After accept fails for lack of file descriptors, wait this long before trying again:
/// long enough not to spin, short enough that peers barely notice.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long stopping waits for peers to take their `End Connection`.
pub const STOP_LINGER: Duration = Duration::from_secs(1);
/// How long a peer declared dead has to take its `End Connection` and close its side.
pub const DEAD_LINGER: Duration = Duration::from_secs(2);
/// An echo is at most this many times the bytes read: an empty line, 1 byte, comes back as
/// `Echoing...` and a newline. Reads are sized by it so output stays within its limit.
pub(crate) const ECHO_GROWTH: usize = protocol::ECHO_PREFIX.len() + 1;
/// Timers fired per [`ServerCore::handle_timeout`]: the loop reads its clock again between
/// batches, so a heartbeat's send time is never more than a batch's work behind the truth.
pub const TIMERS_PER_BATCH: usize = 64;

/// Where a connection is in its life. Each state has one meaning for its timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Reading, echoing; its timer is [`Timer::Liveness`]. `spoke`: a byte has come from
    /// it; one that leaves without any is a probe (a TCP health check), not a failure.
    Open { spoke: bool },
    /// The peer is not taking its output: its input stays in the kernel until it does, and
    /// it counts as silent meanwhile. Timer: [`Timer::Liveness`].
    ReadPaused,
    /// All peers' buffers are over `--max-buffered` and this one grew: its input stays in the
    /// kernel until the total is back under the resume mark; silent meanwhile, as above.
    BudgetPaused,
    /// Ending for `reason`: input is read and dropped, output flushed, then our side shut
    /// down; closed once the peer has closed its side too. Closing with input unread would
    /// send a reset, which can destroy output not yet delivered, `End Connection` included.
    /// Timer: [`Timer::Linger`].
    Ending {
        reason: Reason,
        peer_done: bool,
        our_side_shut: bool,
    },
}

/// One peer: 40 bytes plus the wheel's node; buffers only while they hold bytes.
#[derive(Debug)]
struct Record {
    liveness: Peer,
    buffers: Buffers,
    lifecycle: Lifecycle,
    /// Heap bytes of `buffers` as last counted in the budget (saturating: a single peer
    /// holding over 4 GiB counts as 4 GiB, consistently).
    accounted: u32,
    /// A heartbeat waits to be written, by reference to [`protocol::HEARTBEAT_LINE`]: set
    /// only while nothing else waits for this peer (see `output::queue_heartbeat`).
    heartbeat_queued: bool,
}

impl Record {
    /// Why it ends if its connection fails now: an ending keeps its own reason.
    fn failure_reason(&self) -> Reason {
        match self.lifecycle {
            Lifecycle::Ending { reason, .. } => reason,
            Lifecycle::Open { spoke: false } => Reason::Probe,
            Lifecycle::Open { .. } | Lifecycle::ReadPaused | Lifecycle::BudgetPaused => {
                Reason::Failed
            }
        }
    }

    /// What its one timer means now: this drives what firing it does.
    fn timer(&self) -> Timer {
        match self.lifecycle {
            Lifecycle::Open { .. } | Lifecycle::ReadPaused | Lifecycle::BudgetPaused => {
                Timer::Liveness
            }
            Lifecycle::Ending { .. } => Timer::Linger,
        }
    }
}

/// A part of the shared output buffer written for one peer: from `start` to the next
/// segment's start (or the end of the buffer). `key` is [`DONE`] once written or moved.
#[derive(Debug, Clone, Copy)]
struct Segment {
    key: usize,
    start: usize,
}

/// The key of a segment already written (or moved to its peer's outbox).
const DONE: usize = usize::MAX;

/// The loop's wake-up this turn, for splitting a close's lateness between the OS and us.
#[derive(Debug, Clone, Copy)]
struct Wakeup {
    woke: Instant,
    overslept: Option<Instant>,
}

pub struct ServerCore {
    conns: Slab<Record>,
    timers: Timers,
    settings: Settings,
    stats: ServerStats,
    actions: VecDeque<Action>,
    /// Output decided and not yet written: one shared buffer, cut into one segment per peer
    /// (a batch of timers writes to many), so a peer's echoes and heartbeats cost no
    /// allocation unless the kernel refuses them. Empty again once the loop wrote them all.
    output: Vec<u8>,
    segments: output::Segments,
    accept_paused_until: Option<Instant>,
    /// `Some` once stopping.
    drain: Option<Drain>,
    /// After a live upgrade that left peers here (TLS sessions do not move): until when
    /// they are served before a drain ends them (see `handover`).
    kept: Option<Instant>,
    /// Open records whose peer has closed its side: they hold no place (`--max-connections`).
    peers_gone: usize,
    wakeup: Wakeup,
    budget: Budget,
    /// Peers paused for the budget, to read again once it allows (some may have ended since).
    budget_paused: Vec<usize>,
    /// Sockets waiting for their first bytes, by stage.
    waiting: Waiting,
    /// Per key, what an event log needs: kept only when asked (`Settings::sessions`), so
    /// that an idle connection costs nothing more otherwise.
    sessions: Sessions,
}

impl ServerCore {
    pub fn new(now: Instant, settings: Settings) -> ServerCore {
        let settings_sessions = settings.sessions;
        ServerCore {
            conns: Slab::new(),
            timers: Timers::new(now, settings.tick, 0),
            budget: Budget::new(settings.max_buffered),
            waiting: Waiting::new(now, &settings),
            settings,
            stats: ServerStats::default(),
            actions: VecDeque::new(),
            output: Vec::with_capacity(2 * READ_BUFFER),
            segments: output::Segments::with_capacity(TIMERS_PER_BATCH),
            accept_paused_until: None,
            drain: None,
            kept: None,
            peers_gone: 0,
            wakeup: Wakeup {
                woke: now,
                overslept: None,
            },
            budget_paused: Vec::new(),
            sessions: Sessions::new(settings_sessions),
        }
    }

    /// A peer was accepted at `now` from `addr`.
    pub fn handle_accept(&mut self, now: Instant, addr: SocketAddr) -> Admission {
        if let Err(refusal) = self.handle_screen(addr) {
            return Admission::Refused(refusal);
        }
        let liveness = Peer::new(now);
        let key = self.conns.insert(Record {
            liveness,
            buffers: Buffers::default(),
            lifecycle: Lifecycle::Open { spoke: false },
            accounted: 0,
            heartbeat_queued: false,
        });
        self.timers
            .arm_exact(key, liveness.deadline(&timing_for(&self.settings, key)));
        self.stats.on_open();
        self.sessions.open(key, addr, now);
        let open = self.conns.len();
        self.report(key, Event::Connected { open });
        Admission::Admitted(key)
    }

    /// Judges a peer from `addr` as [`handle_accept`](Self::handle_accept) would now
    /// (`--allow`, `--max-connections`), without taking it in; a refusal is counted. For a
    /// peer that must finish a TLS handshake before it is taken in: judged at accept, so a
    /// refused peer costs no handshake. Places are counted as `handle_accept` counts them
    /// (handshakes in flight hold none: silent ones must not keep real peers out), so the
    /// last place can still be taken meanwhile, and `handle_accept` judges again after.
    pub fn handle_screen(&mut self, addr: SocketAddr) -> Result<(), Refusal> {
        let refusal = if !self.settings.allow.allows(addr.ip()) {
            Refusal::NotAllowed
        } else {
            let in_place = self.conns.len() - self.peers_gone;
            if in_place < self.settings.max_connections {
                return Ok(());
            }
            Refusal::Full { open: in_place }
        };
        self.stats.on_refused(refusal);
        Err(refusal)
    }

    /// `accept` failed at `now` with something other than "nothing waiting" (out of
    /// descriptors, most likely): the peer stays in the backlog, so accepting again at once
    /// would spin. No accepting for [`ACCEPT_BACKOFF`].
    pub fn handle_accept_failed(&mut self, now: Instant) {
        self.stats.on_accept_error();
        self.accept_paused_until = Some(later(now, ACCEPT_BACKOFF));
    }

    /// Whether a peer accepted now would get a place (`--max-connections`), counting only
    /// peers still there (not those whose end of stream was read).
    pub fn has_room(&self) -> bool {
        self.conns.len() - self.peers_gone < self.settings.max_connections
    }

    /// Whether the loop should accept peers now.
    pub fn is_accepting(&self) -> bool {
        self.drain.is_none() && self.kept.is_none() && self.accept_paused_until.is_none()
    }

    /// How many bytes to read for `key` at most; 0 while its reading is paused. Sized so
    /// that echoing all of them cannot overrun the peer's output limit.
    pub fn read_budget(&self, key: usize) -> usize {
        let Some(record) = self.conns.get(key) else {
            return 0;
        };
        match record.lifecycle {
            Lifecycle::ReadPaused | Lifecycle::BudgetPaused => 0,
            Lifecycle::Ending { peer_done, .. } => usize::from(!peer_done) * READ_BUFFER,
            Lifecycle::Open { .. } => {
                let room = self
                    .settings
                    .max_write_buffer
                    .saturating_sub(self.pending_output(key));
                (room / ECHO_GROWTH).clamp(1, READ_BUFFER)
            }
        }
    }

    /// `bytes` were read from `key` at `now`: a sign of life; each data line is echoed.
    pub fn handle_read(&mut self, now: Instant, key: usize, bytes: &[u8]) {
        self.stats.on_bytes_in(bytes.len());
        let Some(record) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(record.lifecycle, Lifecycle::Ending { .. }) {
            // Read only so that closing sends no reset; nothing is answered any more.
            return;
        }
        if let Lifecycle::Open { spoke } = &mut record.lifecycle {
            *spoke = true;
        }
        let asked_at = record.liveness.asked_at();
        record.liveness.on_data(now);
        if let Some(session) = self.sessions.get_mut(key) {
            session.last_seen = now;
            session.bytes_in += bytes.len() as u64;
        }
        if let Some(asked_at) = asked_at {
            // The timer waits for `s_k + interval`, which no longer decides anything: file it
            // for `L + idle` now, rather than let it come due only to be filed again (at most
            // once per heartbeat; other data leaves the timer alone).
            let timing = timing_for(&self.settings, key);
            match record.liveness.last_seen() {
                Some(seen) if seen == now => self.timers.arm_exact_after(key, now, timing.idle),
                _ => self
                    .timers
                    .arm_exact(key, record.liveness.deadline(&timing)),
            }
            self.stats.on_heartbeat_answered();
            if self.settings.heartbeat_reports {
                let rtt = now.saturating_duration_since(asked_at);
                self.report(key, Event::HeartbeatAnswered { rtt });
            }
        }
        self.echo(now, key, Some(bytes));
    }

    /// `key` closed its sending side: echo a last line that had no newline, then end.
    pub fn handle_eof(&mut self, now: Instant, key: usize) {
        let Some(record) = self.conns.get_mut(key) else {
            return;
        };
        match &mut record.lifecycle {
            Lifecycle::Ending { peer_done, .. } => {
                if !*peer_done {
                    *peer_done = true;
                    self.peers_gone += 1;
                }
                self.advance_ending(now, key);
            }
            Lifecycle::Open { spoke: false } => {
                // Connected and left without a byte: a health check or a port scan.
                self.begin_ending(key, Reason::Probe, now, Duration::ZERO, true);
            }
            Lifecycle::Open { .. } | Lifecycle::ReadPaused | Lifecycle::BudgetPaused => {
                self.report(key, Event::PeerClosed);
                self.echo(now, key, None);
                // A peer that half-closed may still be reading a backlog of echoes.
                let linger = self.settings.timing.idle;
                self.begin_ending(key, Reason::PeerClosed, now, linger, true);
            }
        }
    }

    /// A read from `key` failed: the connection is broken.
    pub fn handle_error(&mut self, now: Instant, key: usize, error: io::ErrorKind) {
        let Some(record) = self.conns.get(key) else {
            return;
        };
        let reason = record.failure_reason();
        if reason != Reason::Probe {
            self.report(key, Event::Failed(error));
        }
        self.close(now, key, reason);
    }

    /// The socket of `key` can take output again.
    pub fn handle_writable(&mut self, now: Instant, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        if self.pending_output(key) > 0 {
            self.actions.push_back(Action::Write(key));
        } else {
            self.advance_ending(now, key);
        }
    }

    /// The bytes to write for `key` after [`Action::Write`]: empty when nothing waits.
    pub fn output(&self, key: usize) -> &[u8] {
        match self.conns.get(key) {
            Some(record) if record.heartbeat_queued => protocol::HEARTBEAT_LINE,
            Some(record) if !record.buffers.outbox().is_empty() => record.buffers.outbox(),
            Some(_) => self
                .segment(key)
                .map_or(&[][..], |(_, range)| &self.output[range]),
            None => &[],
        }
    }

    /// How writing [`output`](Self::output) for `key` at `now` went: `Ok(n)`, the kernel took
    /// the first `n` bytes (the rest is kept); `Err`, the connection is broken.
    pub fn handle_written(&mut self, now: Instant, key: usize, result: io::Result<usize>) {
        let segment = self.segment(key);
        let Some(record) = self.conns.get_mut(key) else {
            return;
        };
        let written = match result {
            Ok(n) => {
                self.stats.on_bytes_out(n);
                if let Some(session) = self.sessions.get_mut(key) {
                    session.bytes_out += n as u64;
                }
                n
            }
            Err(e) => {
                let reason = record.failure_reason();
                self.report(key, Event::Failed(e.kind()));
                self.close(now, key, reason);
                return;
            }
        };
        if std::mem::take(&mut record.heartbeat_queued) {
            // Nothing else was waiting: only what the kernel refused is copied.
            let rest = protocol::HEARTBEAT_LINE.get(written..).unwrap_or_default();
            if !rest.is_empty() {
                record.buffers.hold(rest);
            }
        } else if !record.buffers.outbox().is_empty() {
            record.buffers.sent(written);
        } else if let Some((i, range)) = segment {
            // Only what the kernel refused is copied, and only then is memory allocated.
            if written < range.len() {
                let rest = self.output.get(range.start + written..range.end);
                record.buffers.hold(rest.unwrap_or_default());
            }
            self.segments.done(i, &mut self.output);
        }
        let unsent = record.buffers.unsent();
        let limit = self.settings.max_write_buffer;
        match record.lifecycle {
            Lifecycle::Open { .. } if unsent >= limit => record.lifecycle = Lifecycle::ReadPaused,
            Lifecycle::ReadPaused if unsent < limit => {
                if self.budget.is_pausing() {
                    record.lifecycle = Lifecycle::BudgetPaused;
                    self.budget_paused.push(key);
                } else {
                    record.lifecycle = Lifecycle::Open { spoke: true };
                    self.actions.push_back(Action::Read(key));
                }
            }
            Lifecycle::Ending { .. } => self.advance_ending(now, key),
            Lifecycle::Open { .. } | Lifecycle::ReadPaused | Lifecycle::BudgetPaused => {}
        }
        self.account(now, key);
    }

    /// Once a turn, as soon as `poll` returned at `now`. `overslept`: the alarm the loop was
    /// sleeping until, if the OS woke it after that time (the OS's share of any lateness).
    /// What [`handle_timeout`](Self::handle_timeout) fires this turn is what was due at `now`.
    pub fn handle_wakeup(&mut self, now: Instant, overslept: Option<Instant>) {
        if let Some(alarm) = overslept {
            self.stats.on_wakeup(now.saturating_duration_since(alarm));
        }
        self.wakeup = Wakeup {
            woke: now,
            overslept,
        };
    }

    /// Stop at `now`: accept no more, and tell every open peer `End Connection`, spread
    /// evenly over `--drain` (at once when it is zero: the first batch now, the rest as
    /// [`handle_timeout`](Self::handle_timeout) batches), giving each [`STOP_LINGER`] to take
    /// it; peers not told yet are served as usual meanwhile. A second call ends the drain:
    /// everyone left is told at once. [`is_done`](Self::is_done) once every peer is closed.
    /// After a live upgrade that kept peers here, the first call stops as above, whether the
    /// kept peers' deadline has come or not (its drain gives way to this one).
    pub fn handle_stop(&mut self, now: Instant) {
        match &mut self.drain {
            Some(drain) if !drain.after_upgrade => drain.span = Duration::ZERO,
            _ => {
                self.kept = None;
                self.drain = Some(Drain {
                    start: now,
                    span: self.settings.drain,
                    total: self.conns.len(),
                    told: 0,
                    next_key: 0,
                    after_upgrade: false,
                })
            }
        }
        let mut left = TIMERS_PER_BATCH;
        self.tell_due(now, now, &mut left);
    }

    /// Telling peers `End Connection` (a stop, or the end of the peers kept after a live
    /// upgrade): no one is admitted any more.
    pub fn is_stopping(&self) -> bool {
        self.drain.is_some()
    }

    /// A stop was asked for ([`handle_stop`](Self::handle_stop)): the next one ends its
    /// drain.
    pub fn is_stop_asked(&self) -> bool {
        self.drain.is_some_and(|drain| !drain.after_upgrade)
    }

    /// Stopped and every peer closed, or after a live upgrade every peer kept here gone and
    /// none still in its PROXY header or TLS handshake: the loop can return.
    pub fn is_done(&self) -> bool {
        let arriving = self.waiting(Stage::ProxyHeader) + self.waiting(Stage::TlsHandshake);
        let kept_all_gone = self.kept.is_some() && arriving == 0;
        self.conns.is_empty() && (self.drain.is_some() || kept_all_gone)
    }

    /// The next thing to do, or `None` when there is nothing until the next input. Only
    /// pops what the inputs decided.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// What is known of `key`'s connection, if sessions are kept: valid from its accept until
    /// the next accept (so also while its `Closed` report is carried out).
    pub fn session(&self, key: usize) -> Option<&Session> {
        self.sessions.get(key)
    }

    /// Heap bytes held in all peers' buffers now.
    pub fn buffered(&self) -> usize {
        self.budget.total()
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    pub fn into_stats(self) -> ServerStats {
        self.stats
    }

    /// Connections open (ending ones included).
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// Timers armed: exactly one per open connection (checked by the loop in debug builds).
    pub fn timers_armed(&self) -> usize {
        self.timers.len()
    }

    /// What `key`'s timer means now, if `key` is open: the kind that firing it dispatches on.
    pub fn timer_of(&self, key: usize) -> Option<Timer> {
        self.conns.get(key).map(Record::timer)
    }

    /// Heap bytes held for `key` (a partial line, unsent output): 0 for an idle peer.
    pub fn holds_memory(&self, key: usize) -> bool {
        self.conns
            .get(key)
            .is_some_and(|record| !record.buffers.is_unallocated())
    }

    fn report(&mut self, key: usize, event: Event) {
        self.actions.push_back(Action::Report(key, event));
    }
}

/// The timing rules for `key`: the server's, with its idle time lengthened by its own share
/// of the jitter (so only the first heartbeat after a silence moves, and only later). The
/// share depends only on the seed and the key: nothing is stored per peer. A free function so
/// that the timer table can recompute a deadline while it holds the wheel.
#[inline]
fn timing_for(settings: &Settings, key: usize) -> Timing {
    let timing = settings.timing;
    let percent = u64::from(settings.jitter_percent.min(100));
    if percent == 0 {
        return timing;
    }
    let span = u64::try_from(timing.interval.as_nanos()).unwrap_or(u64::MAX) / 100 * percent;
    let draw = SplitMix64::for_item(settings.jitter_seed, key as u64).next_u64();
    // The draw scaled into `0..span` by a multiply (the high half), not a division: this
    // runs for every timer that fires.
    let offset = ((u128::from(draw) * u128::from(span)) >> 64) as u64;
    Timing {
        idle: timing.idle.saturating_add(Duration::from_nanos(offset)),
        ..timing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_record_is_small() {
        // The memory target is 128 bytes per idle connection for everything the process
        // holds; the record is the largest part of it (the loop adds 12 for the socket and
        // the wheel 16 for the timer).
        assert!(
            std::mem::size_of::<Record>() <= 40,
            "{}",
            std::mem::size_of::<Record>()
        );
    }
}
