//! When the load client does things: connection starts paced by rate and bounded per loop
//! turn, each connection's data lines on a fixed schedule, and the back-off before a
//! reconnect.
//!
//! Owns only arithmetic on instants; it reads no clock and touches no socket. Data lines are
//! scheduled by time and their round trips measured from the *scheduled* instant (wrk2's
//! rule against coordinated omission): a client that falls behind shows up in its figures
//! instead of quietly sending less.

use std::time::{Duration, Instant};

use crate::cores::rng::SplitMix64;
use crate::cores::timer::later;

/// Most `connect()` calls a loop turn makes before it polls again: about a millisecond of
/// them. A connect costs 10–350 µs (more as a source address's ports fill), and everything
/// else the loop owes (heartbeat answers, sends) waits while it connects.
pub const CONNECT_BUDGET: Duration = Duration::from_millis(1);

/// Connection starts paced at `rate` per second from `start`, `target` in all.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    rate: u32,
    target: usize,
    started: usize,
}

impl Pacer {
    pub fn new(start: Instant, rate: u32, target: usize) -> Pacer {
        Pacer {
            start,
            rate: rate.max(1),
            target,
            started: 0,
        }
    }

    /// When the next connection is due, if any are left.
    pub fn next_at(&self) -> Option<Instant> {
        (self.started < self.target).then(|| {
            let secs = self.started as f64 / f64::from(self.rate);
            later(self.start, Duration::from_secs_f64(secs))
        })
    }

    /// The index of the next connection if it is due at `now`; counts it as started.
    pub fn take(&mut self, now: Instant) -> Option<usize> {
        let due = self.next_at()? <= now;
        due.then(|| {
            self.started += 1;
            self.started - 1
        })
    }

    /// Every connection has been started.
    pub fn done(&self) -> bool {
        self.started >= self.target
    }
}

/// True while a turn that began at `began` may make another `connect()` at `now`.
pub fn within_budget(began: Instant, now: Instant) -> bool {
    now.saturating_duration_since(began) < CONNECT_BUDGET
}

/// One connection's data lines: line `k` (from 0) is due at `first + k·interval`. Lines are
/// echoed in order, so the scheduled instant of the oldest unechoed line is known from two
/// counts: no per-line memory at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sends {
    first: Instant,
    sent: u32,
    echoed: u32,
}

/// Most lines one connection sends in one go when it is behind: the rest go out on the next
/// loop turns, so one connection cannot hold the loop.
pub const MAX_CATCH_UP: u32 = 64;

impl Sends {
    pub fn new(first: Instant) -> Sends {
        Sends {
            first,
            sent: 0,
            echoed: 0,
        }
    }

    /// When line `k` is due.
    pub fn scheduled(&self, interval: Duration, k: u32) -> Instant {
        let offset = interval
            .checked_mul(k)
            .unwrap_or(crate::cores::timer::FAR_FUTURE);
        later(self.first, offset)
    }

    /// When the next unsent line is due.
    pub fn next_at(&self, interval: Duration) -> Instant {
        self.scheduled(interval, self.sent)
    }

    /// How many lines are due at `now` and not yet sent (at most [`MAX_CATCH_UP`]).
    pub fn due(&self, interval: Duration, now: Instant) -> u32 {
        let mut n = 0;
        while n < MAX_CATCH_UP && self.scheduled(interval, self.sent + n) <= now {
            n += 1;
        }
        n
    }

    /// Counts the next line as sent; returns its scheduled instant.
    pub fn on_sent(&mut self, interval: Duration) -> Instant {
        let at = self.next_at(interval);
        self.sent = self.sent.saturating_add(1);
        at
    }

    /// An echo arrived: the scheduled instant of the line it answers, oldest first, or `None`
    /// if no line was waiting for one (an unsolicited echo).
    pub fn on_echo(&mut self, interval: Duration) -> Option<Instant> {
        (self.echoed < self.sent).then(|| {
            self.echoed += 1;
            self.scheduled(interval, self.echoed - 1)
        })
    }

    /// Lines sent and not yet echoed.
    pub fn outstanding(&self) -> u32 {
        self.sent - self.echoed
    }
}

/// Exponential back-off with jitter before a reconnect: attempt `n` (from 0) waits between
/// half and all of `min(max, base·2ⁿ)` ("equal jitter"), so a crowd of connections closed at
/// once comes back spread out, never in one burst, and never sooner than half the base.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const DEFAULT: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };

    pub fn delay(&self, attempt: u32, rng: &mut SplitMix64) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = self
            .base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max);
        ceiling / 2 + (ceiling / 2).mul_f64(rng.next_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_pacer_starts_connections_at_the_rate_and_no_earlier() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 1000, 3);
        assert_eq!(pacer.take(t0), Some(0));
        assert_eq!(pacer.take(t0), None, "the second is due at 1 ms");
        assert_eq!(pacer.next_at(), Some(t0 + MS));
        assert_eq!(pacer.take(t0 + MS - Duration::from_nanos(1)), None);
        assert_eq!(pacer.take(t0 + MS), Some(1));
        assert_eq!(pacer.take(t0 + 10 * MS), Some(2), "late: started at once");
        assert!(pacer.done());
        assert_eq!((pacer.take(t0 + 20 * MS), pacer.next_at()), (None, None));
    }

    #[test]
    fn a_turn_connects_for_about_a_millisecond_then_polls() {
        let t0 = Instant::now();
        assert!(within_budget(t0, t0));
        assert!(within_budget(
            t0,
            t0 + CONNECT_BUDGET - Duration::from_nanos(1)
        ));
        assert!(!within_budget(t0, t0 + CONNECT_BUDGET));
    }

    #[test]
    fn lines_are_due_on_schedule_and_echoes_measure_from_it() {
        let t0 = Instant::now();
        let every = 100 * MS;
        let mut sends = Sends::new(t0 + 50 * MS);
        assert_eq!(sends.due(every, t0 + 49 * MS), 0, "nothing at T−1");
        assert_eq!(sends.due(every, t0 + 50 * MS), 1, "line 0 at T");
        // The loop was 230 ms late: three lines are owed, each with its own instant.
        assert_eq!(sends.due(every, t0 + 280 * MS), 3);
        assert_eq!(sends.on_sent(every), t0 + 50 * MS);
        assert_eq!(sends.on_sent(every), t0 + 150 * MS);
        assert_eq!(sends.outstanding(), 2);
        assert_eq!(sends.next_at(every), t0 + 250 * MS);
        // The echo of line 0 is measured from its scheduled instant, not from the late send.
        assert_eq!(sends.on_echo(every), Some(t0 + 50 * MS));
        assert_eq!(sends.on_echo(every), Some(t0 + 150 * MS));
        assert_eq!(sends.on_echo(every), None, "an echo nobody asked for");
        assert_eq!(sends.outstanding(), 0);
    }

    #[test]
    fn catching_up_is_bounded_per_turn() {
        let t0 = Instant::now();
        let sends = Sends::new(t0);
        assert_eq!(sends.due(MS, t0 + 10_000 * MS), MAX_CATCH_UP);
        // A schedule past what an Instant can hold is "never", not a panic.
        assert!(sends.scheduled(Duration::MAX, 2) > t0 + 1_000_000 * MS);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let backoff = Backoff {
            base: 100 * MS,
            max: 1000 * MS,
        };
        let mut rng = SplitMix64::new(1);
        for (attempt, ceiling) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (40, 1000),
        ] {
            let delays: Vec<Duration> =
                (0..200).map(|_| backoff.delay(attempt, &mut rng)).collect();
            let (low, high) = (ceiling * MS / 2, ceiling * MS);
            assert!(
                delays.iter().all(|d| (low..=high).contains(d)),
                "{attempt}: {delays:?}"
            );
            assert!(
                delays.iter().any(|d| *d < low + (high - low) / 4),
                "jitter spreads"
            );
            assert!(
                delays.iter().any(|d| *d > high - (high - low) / 4),
                "jitter spreads"
            );
        }
    }
}
