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
///
/// `n` counts the attempts in a row that did not give a connection that lived (see
/// [`lived`]): a failed connect, and equally a connect the server accepted and then closed at
/// once (full, or broken), both add one. Only a connection that lived starts the count again.
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

    /// How long attempt `attempt` (from 0) waits.
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

/// How long a connection must have stayed open to count as having lived, so that the next
/// reconnect of its slot starts the back-off again: the back-off's cap.
///
/// Why a time and not "answered its first heartbeat": a quiet load is first asked after the
/// server's idle time (30 s by default), so healthy connections closed before that (a server
/// restart) would back off ever longer; and an answer or an echo proves little, since a
/// broken server can echo and then close. Why the cap: a slot whose connections live shorter
/// than this keeps backing off, so it never tries more often than the cap allows; one whose
/// connections live longer makes at most one attempt per life. A server that accepts and
/// closes (full, broken) costs each slot a handful of attempts, then one per cap.
pub const LIVED: Duration = Backoff::DEFAULT.max;

/// Whether a connection open from `opened` to `closed` lived (see [`LIVED`]).
pub fn lived(opened: Instant, closed: Instant) -> bool {
    closed.saturating_duration_since(opened) >= LIVED
}

/// The failed-attempt count for a slot's next reconnect: back to 0 after a connection that
/// lived, one more after one that did not.
pub fn next_attempt(attempt: u32, opened: Instant, closed: Instant) -> u32 {
    match lived(opened, closed) {
        true => 0,
        false => attempt.saturating_add(1),
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

    #[test]
    fn only_a_connection_that_lived_starts_the_back_off_again() {
        let t0 = Instant::now();
        let nano = Duration::from_nanos(1);
        assert!(!lived(t0, t0 + LIVED - nano), "nothing at T−1");
        assert!(lived(t0, t0 + LIVED), "lived at T");
        assert_eq!(next_attempt(3, t0, t0 + LIVED - nano), 4);
        assert_eq!(next_attempt(3, t0, t0 + LIVED), 0);
        assert_eq!(next_attempt(u32::MAX, t0, t0), u32::MAX, "saturates");
    }

    /// A fake server that accepts every connection and closes it at once, driven with a fake
    /// clock: the slot backs off exponentially, its attempts stay few, and the waits reach
    /// the cap and stay there. (Before, each accepted connection reset the back-off: a
    /// 50–100 ms wait, 13 attempts a second.)
    #[test]
    fn a_server_that_accepts_and_closes_at_once_gets_few_attempts() {
        let t0 = Instant::now();
        let mut rng = SplitMix64::new(7);
        let (mut now, mut attempt, mut attempts) = (t0, 0u32, 0u32);
        let mut waits = Vec::new();
        while now < t0 + Duration::from_secs(60) {
            attempts += 1;
            // Connected, then closed by the server 1 ms later.
            let opened = now + MS;
            let closed = opened + MS;
            attempt = next_attempt(attempt, opened, closed);
            let wait = Backoff::DEFAULT.delay(attempt, &mut rng);
            waits.push(wait);
            now = closed + wait;
        }
        // Waits from 100 ms doubling to the 10 s cap: 7 attempts reach it, then one per
        // 5–10 s; at most 20 in a minute (the old rule made ~800).
        let first = &waits[..waits.len().min(12)];
        assert!(
            (8..=20).contains(&attempts),
            "{attempts} attempts: {first:?}"
        );
        let capped = &waits[7..];
        assert!(
            capped.iter().all(|w| *w >= Backoff::DEFAULT.max / 2),
            "{waits:?}"
        );
        // The first six seconds, as the issue measured them: under 2 attempts a second.
        let mut at = t0;
        let early = waits
            .iter()
            .take_while(|w| {
                at += **w;
                at < t0 + Duration::from_secs(6)
            })
            .count()
            + 1;
        assert!(early <= 8, "{early} attempts in 6 s");
    }
}
