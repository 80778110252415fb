//! One timer per connection, in real time: converts `Instant`s to the wheel's integer ticks
//! and back, so the poll loops speak `Instant` and the wheel speaks ticks.
//!
//! Owns the rounding rules, which are what keep timers honest: a deadline is rounded *up* to
//! the next tick (a timer never fires early), and `now` is rounded *down* (a tick only counts
//! once it has fully passed). It reads no clock: every method takes `now`.

use std::time::{Duration, Instant};

use crate::cores::wheel::Wheel;

/// A timer wheel keyed by slab key, with its tick length and its origin in real time.
#[derive(Debug)]
pub struct Timers {
    wheel: Wheel,
    origin: Instant,
    tick_nanos: u128,
}

impl Timers {
    /// Timers whose tick 0 is `origin`. `tick` is the wheel's resolution: a timer fires at
    /// most one tick (plus the loop's own latency) after its deadline.
    pub fn new(origin: Instant, tick: Duration, keys: usize) -> Timers {
        Timers {
            wheel: Wheel::with_capacity(keys),
            origin,
            tick_nanos: tick.as_nanos().max(1),
        }
    }

    /// Arms (or re-arms) the timer of `key` for `deadline`.
    pub fn arm(&mut self, key: usize, deadline: Instant) {
        self.wheel.insert(key, self.tick_at_or_after(deadline));
    }

    pub fn cancel(&mut self, key: usize) {
        self.wheel.remove(key);
    }

    pub fn is_armed(&self, key: usize) -> bool {
        self.wheel.deadline(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.wheel.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wheel.is_empty()
    }

    /// Removes and returns one key whose deadline has passed at `now`. Call until `None`.
    pub fn poll_expired(&mut self, now: Instant) -> Option<usize> {
        let now_tick = self.ticks_elapsed(now);
        self.wheel.poll(now_tick).map(|(key, _)| key)
    }

    /// When the loop next needs to wake for a timer, or `None` when no timer is armed.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.wheel.next_deadline().map(|tick| self.instant_of(tick))
    }

    /// When the timer of `key` fires (its deadline rounded up to a tick), if it is armed.
    pub fn deadline(&self, key: usize) -> Option<Instant> {
        self.wheel.deadline(key).map(|tick| self.instant_of(tick))
    }

    /// The instant tick `tick` starts.
    fn instant_of(&self, tick: u64) -> Instant {
        let nanos =
            u64::try_from(self.tick_nanos.saturating_mul(u128::from(tick))).unwrap_or(u64::MAX);
        later(self.origin, Duration::from_nanos(nanos))
    }

    /// Whole ticks since the origin (rounded down).
    fn ticks_elapsed(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos / self.tick_nanos).unwrap_or(u64::MAX)
    }

    /// The first tick that starts at or after `deadline` (rounded up).
    fn tick_at_or_after(&self, deadline: Instant) -> u64 {
        let nanos = deadline.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos.div_ceil(self.tick_nanos)).unwrap_or(u64::MAX)
    }
}

/// `now + delay`, or a time centuries away if that cannot be represented: a timeout too
/// long to matter is "never", not a panic.
pub fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// About a hundred years: beyond every real timeout, yet always representable as an
/// `Instant` (whose seconds count from boot).
pub const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long to sleep in `poll` before `wakeup`; `None` (sleep until an event) if there is none.
pub fn timeout_until(wakeup: Option<Instant>, now: Instant) -> Option<Duration> {
    wakeup.map(|at| at.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn never_fires_early_with_a_deadline_between_ticks() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, 10 * MS, 4);
        timers.arm(1, t0 + 15 * MS);
        assert_eq!(
            timers.poll_expired(t0 + 15 * MS),
            None,
            "tick 1 ends at 20 ms"
        );
        assert_eq!(timers.poll_expired(t0 + 19 * MS), None);
        assert_eq!(timers.poll_expired(t0 + 20 * MS), Some(1));
        assert!(timers.is_empty());
    }

    #[test]
    fn fires_on_the_tick_of_an_exact_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        timers.arm(3, t0 + 250 * MS);
        assert_eq!(timers.poll_expired(t0 + 249 * MS), None);
        assert_eq!(timers.poll_expired(t0 + 250 * MS), Some(3));
    }

    #[test]
    fn next_wakeup_is_never_after_the_deadline_rounded_up() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        assert_eq!(timers.next_wakeup(), None);
        timers.arm(0, t0 + Duration::from_micros(2500));
        let wakeup = timers.next_wakeup().expect("armed");
        assert!(wakeup <= t0 + 3 * MS, "{:?}", wakeup - t0);
        let mut now = t0;
        let mut wakeups = 0;
        while timers.poll_expired(now).is_none() {
            now = timers.next_wakeup().expect("still armed");
            wakeups += 1;
            assert!(wakeups < 10, "a near deadline needs few wake-ups");
        }
        assert!(now >= t0 + Duration::from_micros(2500));
    }

    #[test]
    fn rearming_replaces_and_cancel_removes() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        timers.arm(2, t0 + 5 * MS);
        timers.arm(2, t0 + 50 * MS);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.poll_expired(t0 + 10 * MS), None);
        assert!(timers.is_armed(2));
        timers.cancel(2);
        assert!(!timers.is_armed(2));
        assert_eq!(timers.poll_expired(t0 + 100 * MS), None);
    }

    #[test]
    fn a_deadline_before_the_origin_is_due_at_once() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut timers = Timers::new(t0, MS, 4);
        timers.arm(1, t0 - 5 * MS);
        assert_eq!(timers.poll_expired(t0), Some(1));
    }

    #[test]
    fn later_never_overflows() {
        let t0 = Instant::now();
        assert_eq!(later(t0, 5 * MS), t0 + 5 * MS);
        assert_eq!(later(t0, Duration::MAX), t0 + FAR_FUTURE);
    }

    #[test]
    fn timeout_until_saturates_at_zero() {
        let t0 = Instant::now();
        assert_eq!(timeout_until(None, t0), None);
        assert_eq!(timeout_until(Some(t0), t0 + MS), Some(Duration::ZERO));
        assert_eq!(timeout_until(Some(t0 + 5 * MS), t0), Some(5 * MS));
    }
}
