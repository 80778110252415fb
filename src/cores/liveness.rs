//! The per-peer heartbeat state machine: given when a peer last spoke and when its last
//! heartbeat was really sent, decide what to do when its timer comes due.
//!
//! Owns the timing rules of DESIGN.md and nothing else. It reads no clock and no socket:
//! every input carries `now`, and every output is an [`Action`] for the caller to carry out.
//! The caller (the server core) keeps one timer per peer and calls, in this order:
//!
//! 1. [`Peer::new`] when the peer connects, then arms its timer at [`Peer::deadline`];
//! 2. [`Peer::on_data`] whenever any bytes arrive (it does *not* touch the timer: re-arming is
//!    lazy, which keeps the hot path free of timer work; only when it returns non-zero, an
//!    answer, at most once per heartbeat, may the caller re-arm at once for the new
//!    [`Peer::deadline`], which is cheaper than letting the old one come due);
//! 3. [`Peer::on_timer`] when the timer comes due, and does what the returned action says at
//!    that same `now`: a heartbeat is taken to leave at the `now` it was decided at.
//!
//! With `L` the last time the peer spoke (or connected), `I` the idle timeout, `H` the
//! heartbeat interval, `N` the heartbeat count and `s_k` the time heartbeat k really left:
//!
//! | when                              | nothing heard since `L`     |
//! |-----------------------------------|-----------------------------|
//! | `L + I`                           | heartbeat 1                 |
//! | `max(L + I + k·H, s_k + H)`       | heartbeat k+1, for k < N    |
//! | `max(L + I + N·H, s_N + H)`       | `End Connection`, close     |
//!
//! A heartbeat is a question, and the peer always gets a full `H` after it left to answer:
//! a loop that wakes late (a stopped process, a host that took the CPU) sends heartbeat 1
//! late and waits from *then*, so its own lateness never becomes a peer's death. Since no
//! heartbeat leaves early, `s_k ≥ L + I + (k−1)·H`, so the second term of each `max` is
//! never the smaller one: the next deadline is simply `s_k + H`. The state is therefore one
//! instant (`L` while no heartbeat is outstanding, `s_k` after heartbeat k) and a count.
//!
//! Anything from the peer moves `L` and clears the heartbeat count.

mod handover;

use std::fmt;
use std::time::{Duration, Instant};

use crate::cores::timer::later;

pub use self::handover::Carried;
use crate::cores::vocab::format_duration;

/// The heartbeat schedule, shared by every peer of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a peer may be silent before the first heartbeat.
    pub idle: Duration,
    /// Time between heartbeats, and from the last heartbeat to closing.
    pub interval: Duration,
    /// Heartbeats sent before the peer is declared dead.
    pub count: u32,
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        idle: Duration::from_secs(30),
        interval: Duration::from_secs(10),
        count: 3,
    };

    /// Applies the original program's idle rule: the idle timeout may not be shorter than
    /// the whole heartbeat protocol (`interval × count`). Returns the timing to use and, when
    /// the rule changed it, the warning to print.
    pub fn with_idle_rule(self) -> (Timing, Option<IdleRaised>) {
        let protocol = self.interval.saturating_mul(self.count);
        if self.idle >= protocol {
            return (self, None);
        }
        let warning = IdleRaised {
            requested: self.idle,
            interval: self.interval,
            count: self.count,
            used: protocol,
        };
        (
            Timing {
                idle: protocol,
                ..self
            },
            Some(warning),
        )
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing::DEFAULT
    }
}

/// The warning the idle rule produces when it raises the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleRaised {
    pub requested: Duration,
    pub interval: Duration,
    pub count: u32,
    pub used: Duration,
}

impl fmt::Display for IdleRaised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "idle timeout {} is shorter than interval {} × count {}; using {}",
            format_duration(self.requested),
            format_duration(self.interval),
            self.count,
            format_duration(self.used)
        )
    }
}

/// What the caller must do after a timer comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The peer spoke since the timer was armed: nothing to send; re-arm at this time.
    Rearm(Instant),
    /// Send `heartbeat` (this is heartbeat number `number`, from 1) and re-arm at `next`.
    SendHeartbeat { number: u32, next: Instant },
    /// Every heartbeat went unanswered: send `End Connection` and close.
    Close,
}

/// Liveness of one peer: 24 bytes, no heap (`a_peer_is_24_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// `L` (the peer last spoke) while no heartbeat is outstanding; `s_k` (heartbeat k left)
    /// once k > 0. Only one of the two ever decides the next deadline.
    since: Instant,
    heartbeats_sent: u32,
    /// Milliseconds from `L` to `since` (0 while they are the same), so that how long the
    /// peer has been silent is known after `since` moved on; it fits in the padding.
    silent_before_ms: u32,
}

impl Peer {
    /// A peer that connected at `now`.
    pub fn new(now: Instant) -> Peer {
        Peer {
            since: now,
            heartbeats_sent: 0,
            silent_before_ms: 0,
        }
    }

    /// Records that bytes arrived at `now`. Returns how many heartbeats were outstanding
    /// (0 if none): a non-zero value means the peer has just answered.
    #[inline]
    pub fn on_data(&mut self, now: Instant) -> u32 {
        // `max` so that a clock read earlier in the same loop turn never moves L backwards.
        self.since = self.since.max(now);
        self.silent_before_ms = 0;
        std::mem::take(&mut self.heartbeats_sent)
    }

    /// When the next action falls due: `L + idle` with no heartbeat outstanding, else a full
    /// interval after heartbeat k left, `s_k + interval`.
    #[inline]
    pub fn deadline(&self, timing: &Timing) -> Instant {
        match self.heartbeats_sent {
            0 => later(self.since, timing.idle),
            _ => later(self.since, timing.interval),
        }
    }

    /// The peer's timer came due at `now`. A heartbeat it returns leaves at `now`.
    #[inline]
    pub fn on_timer(&mut self, now: Instant, timing: &Timing) -> Action {
        let due = self.deadline(timing);
        if now < due {
            return Action::Rearm(due);
        }
        if self.heartbeats_sent < timing.count {
            self.heartbeats_sent += 1;
            let waited = now.saturating_duration_since(self.since).as_millis();
            let waited = u32::try_from(waited).unwrap_or(u32::MAX);
            self.silent_before_ms = self.silent_before_ms.saturating_add(waited);
            self.since = now;
            return Action::SendHeartbeat {
                number: self.heartbeats_sent,
                next: later(now, timing.interval),
            };
        }
        Action::Close
    }

    /// When the peer last spoke (or connected), while no heartbeat is outstanding.
    pub fn last_seen(&self) -> Option<Instant> {
        (self.heartbeats_sent == 0).then_some(self.since)
    }

    /// How long the peer has been silent at `now` (to the millisecond once heartbeats went
    /// out): the time from its last byte, for detection-time figures.
    pub fn silent_for(&self, now: Instant) -> Duration {
        let before = Duration::from_millis(u64::from(self.silent_before_ms));
        now.saturating_duration_since(self.since) + before
    }

    /// When the last heartbeat left, while any is unanswered.
    pub fn asked_at(&self) -> Option<Instant> {
        (self.heartbeats_sent > 0).then_some(self.since)
    }

    pub fn heartbeats_sent(&self) -> u32 {
        self.heartbeats_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const TIMING: Timing = Timing {
        idle: Duration::from_secs(30),
        interval: Duration::from_secs(5),
        count: 3,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Drives a peer like the poll loop does: fire the timer only when due, and record
    /// every action with its time, until the peer is closed or `until` is reached.
    fn trace(peer: &mut Peer, t0: Instant, until: Instant) -> Vec<(Duration, Action)> {
        let mut out = Vec::new();
        let mut timer = peer.deadline(&TIMING);
        while timer <= until {
            let action = peer.on_timer(timer, &TIMING);
            out.push((timer - t0, action));
            match action {
                Action::Rearm(next) | Action::SendHeartbeat { next, .. } => timer = next,
                Action::Close => break,
            }
        }
        out
    }

    #[test]
    fn nothing_before_idle_then_heartbeat_at_idle() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        assert_eq!(peer.deadline(&TIMING), t0 + secs(30));
        assert_eq!(
            peer.on_timer(t0 + secs(30) - MS, &TIMING),
            Action::Rearm(t0 + secs(30))
        );
        assert_eq!(
            peer.on_timer(t0 + secs(30), &TIMING),
            Action::SendHeartbeat {
                number: 1,
                next: t0 + secs(35)
            }
        );
    }

    #[test]
    fn silent_peer_gets_count_heartbeats_then_close_at_idle_plus_count_intervals() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        let got = trace(&mut peer, t0, t0 + secs(3600));
        let want = vec![
            (
                secs(30),
                Action::SendHeartbeat {
                    number: 1,
                    next: t0 + secs(35),
                },
            ),
            (
                secs(35),
                Action::SendHeartbeat {
                    number: 2,
                    next: t0 + secs(40),
                },
            ),
            (
                secs(40),
                Action::SendHeartbeat {
                    number: 3,
                    next: t0 + secs(45),
                },
            ),
            (secs(45), Action::Close),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn heartbeat_k_not_a_millisecond_early() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        assert!(matches!(
            peer.on_timer(t0 + secs(30), &TIMING),
            Action::SendHeartbeat { number: 1, .. }
        ));
        assert_eq!(
            peer.on_timer(t0 + secs(35) - MS, &TIMING),
            Action::Rearm(t0 + secs(35))
        );
        assert!(matches!(
            peer.on_timer(t0 + secs(35), &TIMING),
            Action::SendHeartbeat { number: 2, .. }
        ));
        assert!(matches!(
            peer.on_timer(t0 + secs(40), &TIMING),
            Action::SendHeartbeat { number: 3, .. }
        ));
        assert_eq!(
            peer.on_timer(t0 + secs(45) - MS, &TIMING),
            Action::Rearm(t0 + secs(45))
        );
        assert_eq!(peer.on_timer(t0 + secs(45), &TIMING), Action::Close);
    }

    #[test]
    fn data_before_idle_moves_the_first_heartbeat() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        assert_eq!(peer.on_data(t0 + secs(20)), 0);
        // The timer armed at connect fires at 30 s and finds the peer spoke at 20 s.
        assert_eq!(
            peer.on_timer(t0 + secs(30), &TIMING),
            Action::Rearm(t0 + secs(50))
        );
        assert_eq!(
            peer.on_timer(t0 + secs(50) - MS, &TIMING),
            Action::Rearm(t0 + secs(50))
        );
        assert!(matches!(
            peer.on_timer(t0 + secs(50), &TIMING),
            Action::SendHeartbeat { number: 1, .. }
        ));
    }

    #[test]
    fn data_between_heartbeats_clears_the_count_and_restarts_idle() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        peer.on_timer(t0 + secs(30), &TIMING);
        peer.on_timer(t0 + secs(35), &TIMING);
        assert_eq!(peer.heartbeats_sent(), 2);
        assert_eq!(peer.on_data(t0 + secs(37)), 2, "two heartbeats answered");
        assert_eq!(peer.heartbeats_sent(), 0);
        // The timer armed for heartbeat 3 at 40 s now finds nothing to do until 37 + 30.
        assert_eq!(
            peer.on_timer(t0 + secs(40), &TIMING),
            Action::Rearm(t0 + secs(67))
        );
        let got = trace(&mut peer, t0, t0 + secs(3600));
        assert_eq!(got.first().map(|(t, _)| *t), Some(secs(67)));
        assert_eq!(got.last(), Some(&(secs(82), Action::Close)));
        assert_eq!(got.len(), 4, "3 heartbeats and a close: {got:?}");
    }

    #[test]
    fn peer_that_answers_every_heartbeat_is_never_closed() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        let mut timer = peer.deadline(&TIMING);
        let mut heartbeats = 0;
        while timer < t0 + secs(3600) {
            match peer.on_timer(timer, &TIMING) {
                Action::SendHeartbeat { number, next } => {
                    assert_eq!(number, 1, "the answer clears the count");
                    heartbeats += 1;
                    // The answer arrives 10 ms after the heartbeat.
                    assert_eq!(peer.on_data(timer + 10 * MS), 1);
                    timer = next;
                }
                Action::Rearm(next) => timer = next,
                Action::Close => panic!("closed a peer that answered, at {:?}", timer - t0),
            }
        }
        assert!(heartbeats > 100, "heartbeats kept coming: {heartbeats}");
    }

    #[test]
    fn a_late_loop_gives_every_heartbeat_a_full_interval_from_when_it_left() {
        // The loop stalled: the timer fires 12 s late, past every scheduled time. Heartbeat 1
        // goes out now, and each later step waits a full interval from the one before.
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        let stall_end = t0 + secs(42);
        assert_eq!(
            peer.on_timer(stall_end, &TIMING),
            Action::SendHeartbeat {
                number: 1,
                next: stall_end + secs(5)
            }
        );
        assert_eq!(
            peer.on_timer(stall_end + secs(5) - MS, &TIMING),
            Action::Rearm(stall_end + secs(5)),
            "not a millisecond before a full interval"
        );
        let got = trace(&mut peer, t0, t0 + secs(3600));
        let want = vec![
            (
                secs(47),
                Action::SendHeartbeat {
                    number: 2,
                    next: stall_end + secs(10),
                },
            ),
            (
                secs(52),
                Action::SendHeartbeat {
                    number: 3,
                    next: stall_end + secs(15),
                },
            ),
            (secs(57), Action::Close),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_heartbeat_sent_late_moves_the_next_one_but_an_answer_still_clears_the_count() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        // Heartbeat 1 due at 30 s leaves at 31 s (a slow turn): heartbeat 2 at 36 s, not 35.
        peer.on_timer(t0 + secs(31), &TIMING);
        assert_eq!(peer.deadline(&TIMING), t0 + secs(36));
        assert_eq!(peer.on_data(t0 + secs(33)), 1);
        assert_eq!(peer.last_seen(), Some(t0 + secs(33)));
        assert_eq!(peer.deadline(&TIMING), t0 + secs(63));
    }

    #[test]
    fn the_next_deadline_equals_the_rules_max_whenever_nothing_was_early() {
        // DESIGN.md states the rule as max(L + I + k·H, s_k + H); the state machine keeps only
        // s_k + H. Check they agree for heartbeats sent on time or late by various amounts.
        for late_ms in [0u64, 1, 499, 5_000, 42_000] {
            let t0 = Instant::now();
            let last_spoke = t0;
            let mut peer = Peer::new(t0);
            let mut at = peer.deadline(&TIMING) + Duration::from_millis(late_ms);
            for k in 1..=TIMING.count {
                assert!(matches!(
                    peer.on_timer(at, &TIMING),
                    Action::SendHeartbeat { number, .. } if number == k
                ));
                let rule =
                    (last_spoke + TIMING.idle + TIMING.interval * k).max(at + TIMING.interval);
                assert_eq!(peer.deadline(&TIMING), rule, "k = {k}, {late_ms} ms late");
                at = rule + Duration::from_millis(late_ms / 2);
            }
        }
    }

    #[test]
    fn how_long_a_peer_has_been_silent_survives_the_heartbeats() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        peer.on_data(t0 + secs(1));
        peer.on_timer(t0 + secs(31), &TIMING);
        peer.on_timer(t0 + secs(36), &TIMING);
        assert_eq!(
            peer.silent_for(t0 + secs(37)),
            secs(36),
            "since its byte at 1 s"
        );
        peer.on_data(t0 + secs(38));
        assert_eq!(peer.silent_for(t0 + secs(40)), secs(2));
    }

    #[test]
    fn on_data_never_moves_last_seen_backwards() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0 + secs(5));
        peer.on_data(t0);
        assert_eq!(peer.last_seen(), Some(t0 + secs(5)));
    }

    #[test]
    fn a_peer_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Peer>(), 24);
    }

    #[test]
    fn absurd_timeouts_mean_never_not_a_panic() {
        let timing = Timing {
            idle: Duration::MAX,
            interval: Duration::MAX,
            count: 3,
        };
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        assert!(peer.deadline(&timing) > t0 + secs(3600 * 24 * 365));
        assert!(matches!(
            peer.on_timer(t0 + secs(3600), &timing),
            Action::Rearm(_)
        ));
        let (raised, _) = Timing {
            idle: secs(1),
            ..timing
        }
        .with_idle_rule();
        assert!(Peer::new(t0).deadline(&raised) > t0);
    }

    #[test]
    fn zero_heartbeats_closes_at_idle() {
        let timing = Timing { count: 0, ..TIMING };
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        assert_eq!(
            peer.on_timer(t0 + secs(30) - MS, &timing),
            Action::Rearm(t0 + secs(30))
        );
        assert_eq!(peer.on_timer(t0 + secs(30), &timing), Action::Close);
    }

    #[test]
    fn idle_rule_keeps_a_long_enough_idle() {
        let (timing, warning) = TIMING.with_idle_rule();
        assert_eq!(timing, TIMING);
        assert_eq!(warning, None);
        let exact = Timing {
            idle: secs(15),
            ..TIMING
        };
        assert_eq!(exact.with_idle_rule(), (exact, None));
    }

    #[test]
    fn idle_rule_raises_a_short_idle_to_interval_times_count() {
        let short = Timing {
            idle: secs(10),
            interval: secs(5),
            count: 3,
        };
        let (timing, warning) = short.with_idle_rule();
        assert_eq!(timing.idle, secs(15));
        let warning = warning.expect("a warning");
        assert_eq!(warning.used, secs(15));
        let text = warning.to_string();
        assert!(
            text.contains("10s") && text.contains("5s") && text.contains('3'),
            "{text}"
        );
    }
}
