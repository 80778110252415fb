//! The per-peer heartbeat state machine: given when a peer last spoke and how many heartbeats
//! it has been sent, decide what to do when its timer comes due.
//!
//! Owns the timing rules of DESIGN.md and nothing else. It reads no clock and no socket:
//! every input carries `now`, and every output is an [`Action`] for the caller to carry out.
//! The caller (the poll loop) keeps one timer per peer and calls, in this order:
//!
//! 1. [`Peer::new`] when the peer connects, then arms its timer at [`Peer::deadline`];
//! 2. [`Peer::on_data`] whenever any bytes arrive (it does *not* touch the timer: re-arming is
//!    lazy, which keeps the hot path free of timer work);
//! 3. [`Peer::on_timer`] when the timer comes due, and does what the returned action says.
//!
//! With `L` the last time the peer spoke (or connected), `I` the idle timeout, `H` the
//! heartbeat interval and `N` the heartbeat count:
//!
//! | time              | nothing heard since `L`                |
//! |-------------------|----------------------------------------|
//! | `L + I`           | heartbeat 1                            |
//! | `L + I + (k−1)·H` | heartbeat k, for k ≤ N                 |
//! | `L + I + N·H`     | `End Connection`, close                |
//!
//! Anything from the peer moves `L` and clears the heartbeat count.

use std::fmt;
use std::time::{Duration, Instant};

use crate::timer::later;

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
            "idle timeout {:?} is shorter than interval {:?} × count {}; using {:?}",
            self.requested, self.interval, self.count, self.used
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

/// Liveness of one peer: 24 bytes, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    last_seen: Instant,
    heartbeats_sent: u32,
}

impl Peer {
    /// A peer that connected at `now`.
    pub fn new(now: Instant) -> Peer {
        Peer {
            last_seen: now,
            heartbeats_sent: 0,
        }
    }

    /// Records that bytes arrived at `now`. Returns how many heartbeats were outstanding
    /// (0 if none): a non-zero value means the peer has just answered.
    pub fn on_data(&mut self, now: Instant) -> u32 {
        // `max` so that a clock read earlier in the same loop turn never moves L backwards.
        self.last_seen = self.last_seen.max(now);
        std::mem::take(&mut self.heartbeats_sent)
    }

    /// When the next action falls due: `L + idle + sent·interval`.
    pub fn deadline(&self, timing: &Timing) -> Instant {
        let heartbeats = timing.interval.saturating_mul(self.heartbeats_sent);
        later(self.last_seen, timing.idle.saturating_add(heartbeats))
    }

    /// The peer's timer came due at `now`.
    pub fn on_timer(&mut self, now: Instant, timing: &Timing) -> Action {
        let due = self.deadline(timing);
        if now < due {
            return Action::Rearm(due);
        }
        if self.heartbeats_sent < timing.count {
            self.heartbeats_sent += 1;
            return Action::SendHeartbeat {
                number: self.heartbeats_sent,
                next: self.deadline(timing),
            };
        }
        Action::Close
    }

    pub fn last_seen(&self) -> Instant {
        self.last_seen
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
    fn late_timer_does_not_skip_heartbeats() {
        // The loop stalled: the timer fires 12 s late. Heartbeat 1 is still sent first, and
        // the next one is due at its scheduled time (already past), not 5 s later.
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        assert_eq!(
            peer.on_timer(t0 + secs(42), &TIMING),
            Action::SendHeartbeat {
                number: 1,
                next: t0 + secs(35)
            }
        );
    }

    #[test]
    fn on_data_never_moves_last_seen_backwards() {
        let t0 = Instant::now();
        let mut peer = Peer::new(t0 + secs(5));
        peer.on_data(t0);
        assert_eq!(peer.last_seen(), t0 + secs(5));
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
