//! One timer per key, in real time: converts `Instant`s to the wheel's integer ticks and
//! back, so the poll loops speak `Instant` and the wheel speaks ticks. Reads no clock: every
//! method takes `now`. Does not own what a timer means or how its deadline is kept: callers do.
//!
//! Two kinds of timer, neither ever early (a tick only counts once it has fully passed):
//!
//! | armed with        | filed at the tick       | fires                                      |
//! |-------------------|-------------------------|--------------------------------------------|
//! | [`arm`]           | at or *after* (rounded  | once that tick has passed: up to a tick    |
//! |                   | up)                     | late (lingers, first-byte waits, the load  |
//! |                   |                         | client's sends)                            |
//! | [`arm_exact`]     | at or *before*          | at its exact deadline, which the caller    |
//! |                   |                         | recomputes from its own state (`exact` in  |
//! |                   |                         | [`poll_due`])                              |
//!
//! An exact timer: the wheel only finds what is near. It is filed by its exact nanoseconds
//! (the wheel's unit is a tick's nanoseconds), so what the wheel yields says by itself whether
//! its time has come. What it yields whose exact deadline is still ahead (less than a tick)
//! waits in `near` (the caller is not asked: a deadline only ever moves later unless
//! re-armed), ordered by exact deadline, and the key is
//! *parked* in the wheel with that deadline, in the node it already has: a re-arm or a
//! cancel ends the parking, which makes the near entry stale (skipped), so nothing is added
//! per key. [`next_wakeup`] is then the exact deadline, which the loop's alarm honours to the
//! microsecond. What the wheel (or `near`) yields whose exact deadline has moved on (a peer
//! that spoke) is filed again, nothing fired. The wheel is polled one tick ahead of `now`, so
//! the next tick's timers are near by the time the loop sleeps: with timers in every tick (a
//! busy server) the loop wakes only at exact deadlines. After a gap, an exact timer whose
//! deadline is not on a tick costs one more wake-up than a rounded one (its tick, then its
//! time); a wake-up still fires everything whose exact deadline has passed, and nothing
//! polled ahead fires before its time (rounded timers are filed at their tick's start, and
//! wait near for it like exact ones). Times are u64 nanoseconds since the origin
//! (584 years), `now` converted once per batch, not per timer.
//!
//! An exact timer armed as `now` plus a fixed delay ([`arm_exact_after`]: a heartbeat's
//! interval, the idle time after an answer) skips the wheel's slots: `now` only grows, so
//! such timers arrive in the order of their deadlines, and each delay gets a FIFO lane of the
//! wheel (a key's node linked at the back; see `wheel.rs`). A lane's front is its earliest
//! timer, read exactly by [`next_wakeup`] and [`poll_due`]: O(1) in and out, no cascading
//! from level to level, no `near`. A timer that would break its lane's order (jitter gives
//! each key its own idle time; more delays than lanes) is filed in the wheel as above.
//!
//! [`arm`]: Timers::arm
//! [`arm_exact_after`]: Timers::arm_exact_after
//! [`arm_exact`]: Timers::arm_exact
//! [`poll_due`]: Timers::poll_due
//! [`next_wakeup`]: Timers::next_wakeup

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use crate::cores::wheel::{Wheel, LANES};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A timer wheel keyed by slab key, with its tick length and its origin in real time.
#[derive(Debug)]
pub struct Timers {
    wheel: Wheel,
    origin: Instant,
    tick_nanos: u64,
    /// Exact timers whose tick has come, by exact deadline (ns since `origin`). An entry is
    /// live while its key is parked in the wheel with that same deadline; the first is always
    /// live (stale ones are dropped after every change), so `next_wakeup` never wakes for
    /// nothing.
    near: Near,
    /// The last two `now`s converted to the wheel's terms, the newer first: a turn passes
    /// its wake-up to the reads' re-arms and to each timer poll, and a batch's clock reading
    /// to its heartbeats' re-arms; polls and re-arms alternate within a batch, and each
    /// conversion subtracts two timespecs and divides.
    last_now: [Option<(Instant, Due)>; 2],
    /// The last wake-up converted back to an `Instant` (`next_wakeup`): the loop asks for
    /// the same earliest deadline several times a turn, and each conversion divides.
    last_wakeup: Cell<Option<(u64, Instant)>>,
    /// `next_wakeup`'s whole answer, until the next change (every `&mut self` method clears
    /// it): a turn asks 2–3 times with nothing changed in between, and finding the earliest
    /// of the wheel, `near` and the lanes costs more than reading this.
    wakeup: Cell<Option<Option<Instant>>>,
    /// The delay (ns) whose timers each of the wheel's lanes holds; `None` while unclaimed.
    /// An empty lane may be claimed again for another delay.
    lane_delays: [Option<u64>; LANES],
}

/// `now` in the wheel's terms.
#[derive(Debug, Clone, Copy)]
struct Due {
    nanos: u64,
    tick: u64,
}

impl Timers {
    /// Timers whose tick 0 is `origin`. `tick` is the wheel's resolution: a rounded timer
    /// fires at most one tick (plus the loop's own latency) after its deadline.
    pub fn new(origin: Instant, tick: Duration, keys: usize) -> Timers {
        let tick_nanos = NonZeroU64::new(u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(NonZeroU64::MIN);
        Timers {
            // Entries are filed by their nanoseconds: the wheel finds their tick.
            wheel: Wheel::with_unit(keys, tick_nanos),
            origin,
            tick_nanos: tick_nanos.get(),
            near: Near::default(),
            last_now: [None; 2],
            last_wakeup: Cell::new(None),
            wakeup: Cell::new(None),
            lane_delays: [None; LANES],
        }
    }

    /// Arms (or re-arms) the timer of `key` for `deadline`, rounded up to a tick.
    pub fn arm(&mut self, key: usize, deadline: Instant) {
        self.wakeup.set(None);
        let tick = self.nanos_since_origin(deadline).div_ceil(self.tick_nanos);
        let was_parked = self.wheel.parked(key).is_some();
        // Filed at the start of the tick it rounds up to: due once that tick has come.
        let start = tick.saturating_mul(self.tick_nanos);
        self.wheel.insert(key, start);
        if was_parked {
            self.drop_stale();
        }
    }

    /// Arms (or re-arms) the timer of `key` for exactly `deadline`. The `exact` function of
    /// every [`poll_due`](Self::poll_due) must return this deadline for `key` (or a later
    /// one, once the caller's state has moved it) until the timer fires or is re-armed.
    pub fn arm_exact(&mut self, key: usize, deadline: Instant) {
        self.wakeup.set(None);
        let nanos = self.nanos_since_origin(deadline);
        self.file_exact(key, nanos, None);
    }

    /// [`arm_exact`](Self::arm_exact) for `later(now, delay)`, in the lane of `delay` when
    /// it keeps that lane's order (see the module notes), converting `now` once for all the
    /// timers a batch arms at the same `now` (a heartbeat's next step).
    pub fn arm_exact_after(&mut self, key: usize, now: Instant, delay: Duration) {
        self.wakeup.set(None);
        let now = self.due(now).nanos;
        let delay = duration_nanos(delay);
        self.file_exact(key, now.saturating_add(delay), Some(delay));
    }

    /// The lane holding timers of `delay`: its own, or an empty one claimed for it.
    fn lane_for(&mut self, delay: u64) -> Option<usize> {
        if let Some(lane) = self.lane_delays.iter().position(|&d| d == Some(delay)) {
            return Some(lane);
        }
        let free = (0..LANES).find(|&lane| self.wheel.lane_front(lane).is_none())?;
        self.lane_delays[free] = Some(delay);
        Some(free)
    }

    /// The earliest lane front, as (key, exact deadline).
    fn lanes_first(&self) -> Option<(usize, u64)> {
        let mut first: Option<(usize, u64)> = None;
        for lane in 0..LANES {
            if let Some((key, at)) = self.wheel.lane_front(lane) {
                if first.is_none_or(|(_, earliest)| at < earliest) {
                    first = Some((key, at));
                }
            }
        }
        first
    }

    /// Files an exact timer: near once its tick has come; else in the lane of `delay`, the
    /// fixed delay it was armed after if any, when that keeps the lane's order; else in the
    /// wheel.
    fn file_exact(&mut self, key: usize, nanos: u64, delay: Option<u64>) {
        let was_parked = self.wheel.parked(key).is_some();
        let tick = nanos / self.tick_nanos;
        if tick <= self.wheel.elapsed() {
            self.park(key, nanos);
        } else {
            let laned = delay
                .and_then(|delay| self.lane_for(delay))
                .is_some_and(|lane| self.wheel.push_lane(key, lane, nanos));
            if !laned {
                self.wheel.insert(key, nanos);
            }
        }
        if was_parked {
            self.drop_stale();
        }
    }

    pub fn cancel(&mut self, key: usize) {
        self.wakeup.set(None);
        if self.wheel.parked(key).is_some() {
            self.wheel.remove(key);
            self.drop_stale();
        } else {
            self.wheel.remove(key);
        }
    }

    pub fn is_armed(&self, key: usize) -> bool {
        self.wheel.deadline(key).is_some() || self.wheel.parked(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.wheel.len() + self.wheel.parked_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns one key whose deadline has passed at `now`, every timer taken as
    /// rounded (a table with exact timers uses [`poll_due`](Self::poll_due)). Call until
    /// `None`.
    pub fn poll_expired(&mut self, now: Instant) -> Option<usize> {
        let mut left = usize::MAX;
        self.poll_due(now, &mut left, |_| None)
    }

    /// Removes and returns one key whose deadline has passed at `now`. Call until `None`.
    /// `exact(key)` is the exact deadline of `key`'s timer when it was armed with
    /// [`arm_exact`](Self::arm_exact) (recomputed from the caller's state, which may have
    /// moved it later: the timer then waits for the new one), `None` when it was armed
    /// rounded. Each key yielded or filed again takes one of `left`; `None` once `left` is 0,
    /// even if more is due.
    pub fn poll_due(
        &mut self,
        now: Instant,
        left: &mut usize,
        mut exact: impl FnMut(usize) -> Option<Instant>,
    ) -> Option<usize> {
        let due = self.due(now);
        self.wakeup.set(None);
        while *left > 0 {
            let key = match self.near.peek() {
                Some((at, key)) if at <= due.nanos => {
                    self.near.pop();
                    if self.wheel.parked(key) != Some(at) {
                        continue; // stale: re-armed or cancelled since
                    }
                    self.wheel.remove(key);
                    self.drop_stale();
                    key
                }
                _ => match self.lanes_first() {
                    Some((key, at)) if at <= due.nanos => {
                        self.wheel.remove(key);
                        key
                    }
                    _ => {
                        // One tick ahead: the next tick's timers wait in `near` by their exact
                        // deadlines, so the loop wakes at the first of them, not first at the
                        // tick's start only to move them there (nothing fires early: see below).
                        let (key, nanos) = self.wheel.poll(due.tick.saturating_add(1))?;
                        if nanos > due.nanos {
                            // An exact timer whose tick has come, not its time (a rounded one is
                            // filed at its tick's start): near, without asking `exact`, as its
                            // deadline can only have moved later.
                            *left -= 1;
                            self.park(key, nanos);
                            continue;
                        }
                        key
                    }
                },
            };
            *left -= 1;
            // The caller's state may have moved the deadline on since it was armed (a peer
            // that spoke): asked again whenever a timer is about to fire.
            match exact(key) {
                Some(at) if at > now => {
                    // Its tick has come, not its time: near; or its time moved on: back in
                    // the wheel. Nothing fires.
                    let nanos = self.nanos_since_origin(at);
                    if nanos / self.tick_nanos <= due.tick {
                        self.park(key, nanos);
                    } else {
                        self.wheel.insert(key, nanos);
                    }
                }
                _ => return Some(key),
            }
        }
        None
    }

    /// When the loop next needs to wake for a timer, or `None` when no timer is armed: the
    /// exact deadline of the earliest near timer or lane front, or the wheel's next tick.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if let Some(known) = self.wakeup.get() {
            return known;
        }
        let wakeup = self.find_wakeup();
        self.wakeup.set(Some(wakeup));
        wakeup
    }

    fn find_wakeup(&self) -> Option<Instant> {
        // Compared in nanoseconds, converted once: the loop asks this every turn.
        let wheel = self
            .wheel
            .next_deadline()
            .map(|tick| tick.saturating_mul(self.tick_nanos));
        let near = self.near.peek().map(|(at, _)| at);
        let lanes = self.lanes_first().map(|(_, at)| at);
        let nanos = earlier(earlier(wheel, near), lanes)?;
        match self.last_wakeup.get() {
            Some((converted, at)) if converted == nanos => Some(at),
            _ => {
                let at = self.instant_of(nanos);
                self.last_wakeup.set(Some((nanos, at)));
                Some(at)
            }
        }
    }

    /// When the timer of `key` is next looked at, if it is armed, or earlier: a rounded
    /// timer's deadline rounded up to a tick; an exact timer's filed tick (the start of its
    /// deadline's tick, in the wheel or in a lane), or its exact deadline once near.
    pub fn deadline(&self, key: usize) -> Option<Instant> {
        match self.wheel.parked(key) {
            Some(nanos) => Some(self.instant_of(nanos)),
            None => self
                .wheel
                .deadline(key)
                .map(|nanos| self.instant_of_tick(nanos / self.tick_nanos)),
        }
    }

    fn park(&mut self, key: usize, nanos: u64) {
        self.wheel.park(key, nanos);
        self.near.push((nanos, key));
    }

    /// Drops first entries whose key was re-armed or cancelled since it was parked. Only a
    /// key that was parked can make an entry stale, so only its re-arm or cancel calls this.
    fn drop_stale(&mut self) {
        while let Some((at, key)) = self.near.peek() {
            if self.wheel.parked(key) == Some(at) {
                break;
            }
            self.near.pop();
        }
    }

    /// `now` in the wheel's terms, converted once however many calls pass the same one.
    fn due(&mut self, now: Instant) -> Due {
        if let Some((_, due)) = self.last_now.iter().flatten().find(|(at, _)| *at == now) {
            return *due;
        }
        let nanos = self.nanos_since_origin(now);
        let due = Due {
            nanos,
            tick: nanos / self.tick_nanos,
        };
        self.last_now = [Some((now, due)), self.last_now[0]];
        due
    }

    /// The instant tick `tick` starts.
    fn instant_of_tick(&self, tick: u64) -> Instant {
        self.instant_of(tick.saturating_mul(self.tick_nanos))
    }

    fn instant_of(&self, nanos: u64) -> Instant {
        later(self.origin, Duration::from_nanos(nanos))
    }

    /// Nanoseconds from the origin to `at` (0 before it; saturating centuries ahead).
    fn nanos_since_origin(&self, at: Instant) -> u64 {
        duration_nanos(at.saturating_duration_since(self.origin))
    }
}

/// `duration` in nanoseconds, saturating (584 years).
fn duration_nanos(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(NANOS_PER_SEC)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

/// Entries `(exact deadline, key)`, the earliest first. Most arrive in order (a tick's
/// timers often share a deadline, or come with later ones: peers that spoke at the same
/// moment), and those cost O(1) in a sorted run; the rest go to a heap. Both grow to the most
/// timers near at once and keep that capacity (no allocation per timer after that).
#[derive(Debug, Default)]
struct Near {
    run: VecDeque<(u64, usize)>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Near {
    fn push(&mut self, entry: (u64, usize)) {
        if self.run.back().is_none_or(|&last| last <= entry) {
            self.run.push_back(entry);
        } else if self.run.front().is_some_and(|&first| entry <= first) {
            self.run.push_front(entry);
        } else {
            self.heap.push(Reverse(entry));
        }
    }

    fn peek(&self) -> Option<(u64, usize)> {
        earlier(
            self.run.front().copied(),
            self.heap.peek().map(|first| first.0),
        )
    }

    /// Removes the earliest entry.
    fn pop(&mut self) {
        match (self.run.front(), self.heap.peek()) {
            (Some(&run), Some(&Reverse(heap))) if heap < run => {
                self.heap.pop();
            }
            (Some(_), _) => {
                self.run.pop_front();
            }
            (None, _) => {
                self.heap.pop();
            }
        }
    }
}

/// The earlier of two times (deadlines, entries ordered by deadline), either of which may be
/// unset.
#[inline]
pub fn earlier<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `now + delay`, or a time centuries away if that cannot be represented: a timeout too
/// long to matter is "never", not a panic.
#[inline]
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
    const US: Duration = Duration::from_micros(1);

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
    fn next_wakeup_follows_the_earliest_timer_as_it_changes() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        timers.arm(0, t0 + 50 * MS);
        // Asked twice each time: the second answer is the remembered conversion.
        for _ in 0..2 {
            assert_eq!(timers.next_wakeup(), Some(t0 + 50 * MS));
        }
        timers.arm(1, t0 + 5 * MS);
        for _ in 0..2 {
            assert_eq!(timers.next_wakeup(), Some(t0 + 5 * MS));
        }
        timers.cancel(1);
        assert_eq!(timers.next_wakeup(), Some(t0 + 50 * MS));
        timers.cancel(0);
        assert_eq!(timers.next_wakeup(), None);
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

    /// Polls `timers` at `now` with exact deadlines from `deadlines`, until `None`.
    fn poll_all(timers: &mut Timers, now: Instant, deadlines: &[Option<Instant>]) -> Vec<usize> {
        let mut left = usize::MAX;
        std::iter::from_fn(|| timers.poll_due(now, &mut left, |key| deadlines[key])).collect()
    }

    #[test]
    fn an_exact_timer_fires_at_its_deadline_not_at_the_next_tick() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        let due = t0 + Duration::from_micros(2_300);
        let exact = [None, Some(due)];
        timers.arm_exact(1, due);
        assert_eq!(
            timers.next_wakeup(),
            Some(t0 + 2 * MS),
            "its tick, at or before"
        );
        assert_eq!(poll_all(&mut timers, t0 + 2 * MS, &exact), [] as [usize; 0]);
        assert!(timers.is_armed(1) && timers.len() == 1, "near, still armed");
        assert_eq!(timers.next_wakeup(), Some(due), "then its exact deadline");
        assert_eq!(timers.deadline(1), Some(due));
        assert_eq!(poll_all(&mut timers, due - US, &exact), [] as [usize; 0]);
        assert_eq!(poll_all(&mut timers, due, &exact), [1]);
        assert!(timers.is_empty());
        assert_eq!(timers.next_wakeup(), None, "nothing armed, no wake-up");
    }

    #[test]
    fn no_exact_timer_fires_early_for_any_deadline_between_ticks() {
        let t0 = Instant::now();
        let tick = 500 * US;
        for offset_ns in (0..3_000_000u64)
            .step_by(12_347)
            .chain([499_999, 500_000, 500_001])
        {
            let due = t0 + Duration::from_nanos(offset_ns);
            let exact = [Some(due)];
            let mut timers = Timers::new(t0, tick, 1);
            timers.arm_exact(0, due);
            if offset_ns > 0 {
                let just_before = due - Duration::from_nanos(1);
                let none = poll_all(&mut timers, just_before, &exact);
                assert!(none.is_empty(), "1 ns early: {offset_ns} ns");
            }
            // Wake as the loop does, at every wake-up asked for, until it fires.
            let mut now = t0;
            let mut wakeups = 0;
            let fired_at = loop {
                if poll_all(&mut timers, now, &exact) == [0] {
                    break now;
                }
                now = timers.next_wakeup().expect("armed until it fires");
                wakeups += 1;
                assert!(wakeups <= 3, "a tick then the exact time: {offset_ns} ns");
            };
            assert_eq!(fired_at, due.max(t0), "{offset_ns} ns");
        }
    }

    #[test]
    fn a_timer_in_the_tick_after_a_wake_up_is_woken_for_at_its_time_not_its_ticks_start() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        let (first, second) = (t0 + 2 * MS + 300 * US, t0 + 3 * MS + 600 * US);
        let exact = [None, Some(first), Some(second)];
        timers.arm_exact(1, first);
        timers.arm_exact(2, second);
        assert_eq!(
            timers.next_wakeup(),
            Some(t0 + 2 * MS),
            "first tick's start"
        );
        assert_eq!(poll_all(&mut timers, t0 + 2 * MS, &exact), [] as [usize; 0]);
        assert_eq!(timers.next_wakeup(), Some(first));
        assert_eq!(poll_all(&mut timers, first, &exact), [1]);
        // Key 2's tick (3) follows the wake-up's (2): no wake-up at 3 ms only to find it.
        assert_eq!(timers.next_wakeup(), Some(second));
        assert_eq!(poll_all(&mut timers, second - US, &exact), [] as [usize; 0]);
        assert_eq!(poll_all(&mut timers, second, &exact), [2]);
        assert_eq!(timers.next_wakeup(), None);
    }

    #[test]
    fn a_rounded_timer_in_the_next_tick_still_fires_at_that_ticks_start() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 2);
        timers.arm(0, t0 + MS + 400 * US);
        assert_eq!(timers.poll_expired(t0 + MS + 500 * US), None);
        assert_eq!(timers.next_wakeup(), Some(t0 + 2 * MS));
        assert_eq!(
            timers.poll_expired(t0 + 2 * MS - Duration::from_nanos(1)),
            None
        );
        assert_eq!(timers.poll_expired(t0 + 2 * MS), Some(0));
    }

    #[test]
    fn a_near_timer_re_armed_or_cancelled_is_not_fired_at_its_old_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        let (a, b) = (
            t0 + Duration::from_micros(1_200),
            t0 + Duration::from_micros(1_700),
        );
        timers.arm_exact(1, a);
        timers.arm_exact(2, a);
        assert_eq!(
            poll_all(&mut timers, t0 + MS, &[None, Some(a), Some(a)]),
            [] as [usize; 0]
        );
        // Key 1 moves later in the same tick, key 2 is cancelled: both while near.
        timers.arm_exact(1, b);
        timers.cancel(2);
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers.next_wakeup(),
            Some(b),
            "the stale entries wake nobody"
        );
        let exact = [None, Some(b), None];
        assert_eq!(poll_all(&mut timers, a, &exact), [] as [usize; 0]);
        assert_eq!(poll_all(&mut timers, b, &exact), [1]);
        assert_eq!((timers.len(), timers.next_wakeup()), (0, None));
    }

    #[test]
    fn a_deadline_that_moved_on_is_filed_again_not_fired() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        timers.arm_exact(3, t0 + 5 * MS);
        // The caller's state moved the deadline (the peer spoke): 40.25 ms.
        let moved = t0 + Duration::from_micros(40_250);
        let exact = [None, None, None, Some(moved)];
        assert_eq!(poll_all(&mut timers, t0 + 5 * MS, &exact), [] as [usize; 0]);
        assert_eq!(
            timers.deadline(3),
            Some(t0 + 40 * MS),
            "filed at its tick again"
        );
        assert_eq!(poll_all(&mut timers, moved - US, &exact), [] as [usize; 0]);
        assert_eq!(poll_all(&mut timers, moved, &exact), [3]);
    }

    #[test]
    fn a_tick_of_many_exact_timers_fires_in_one_poll_and_counts_against_the_batch() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 100);
        let exact: Vec<Option<Instant>> = (0..100)
            .map(|key| Some(t0 + 7 * MS + Duration::from_micros(key * 9)))
            .collect();
        for (key, at) in exact.iter().enumerate() {
            timers.arm_exact(key, at.expect("all exact"));
        }
        let last = t0 + 7 * MS + Duration::from_micros(99 * 9);
        let mut left = 60;
        let first: Vec<usize> =
            std::iter::from_fn(|| timers.poll_due(last, &mut left, |k| exact[k])).collect();
        assert_eq!((first.len(), left), (60, 0), "a batch's worth");
        let mut fired = first;
        fired.extend(poll_all(&mut timers, last, &exact));
        fired.sort_unstable();
        assert_eq!(fired, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn an_exact_deadline_already_due_when_armed_fires_at_the_next_poll() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        assert_eq!(poll_all(&mut timers, t0 + 10 * MS, &[]), [] as [usize; 0]);
        let past = t0 + Duration::from_micros(9_500);
        timers.arm_exact(0, past);
        assert_eq!(timers.next_wakeup(), Some(past), "at once");
        assert_eq!(poll_all(&mut timers, t0 + 10 * MS, &[Some(past)]), [0]);
    }

    #[test]
    fn arm_exact_after_files_the_same_deadline_as_arm_exact() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        let sent = t0 + Duration::from_micros(3_456);
        let due = sent + Duration::from_micros(10_100);
        timers.arm_exact_after(0, sent, Duration::from_micros(10_100));
        timers.arm_exact_after(1, sent, Duration::from_micros(10_100));
        timers.arm_exact(2, due);
        let exact = [Some(due); 3];
        assert_eq!(poll_all(&mut timers, due - US, &exact), [] as [usize; 0]);
        let mut fired = poll_all(&mut timers, due, &exact);
        fired.sort_unstable();
        assert_eq!(fired, [0, 1, 2]);
        timers.arm_exact_after(3, sent, Duration::MAX);
        assert!(
            timers
                .deadline(3)
                .is_some_and(|at| at > t0 + FAR_FUTURE / 2),
            "never"
        );
    }

    #[test]
    fn timers_after_a_fixed_delay_wake_the_loop_only_at_their_deadlines() {
        // In the wheel's slots, a 1 s timer at 1 ms ticks would first wake the loop to be
        // cascaded down the levels; in its delay's lane it is looked at once, when due.
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, MS, 4);
        let (interval, idle) = (Duration::from_secs(1), Duration::from_secs(3));
        let (sent_a, sent_b) = (t0 + 300 * US, t0 + 700 * US);
        timers.arm_exact_after(0, sent_a, interval);
        timers.arm_exact_after(1, sent_b, interval);
        timers.arm_exact_after(2, sent_b, idle);
        timers.arm_exact_after(3, sent_b, interval);
        timers.cancel(3);
        let exact = [
            Some(sent_a + interval),
            Some(sent_b + interval),
            Some(sent_b + idle),
        ];
        let mut wakeups = Vec::new();
        while let Some(at) = timers.next_wakeup() {
            wakeups.push((at, poll_all(&mut timers, at, &exact)));
        }
        let want = [
            (exact[0], vec![0]),
            (exact[1], vec![1]),
            (exact[2], vec![2]),
        ];
        assert_eq!(wakeups, want.map(|(at, keys)| (at.unwrap_or(t0), keys)));
        assert!(timers.is_empty());
    }

    proptest::proptest! {
        /// The near set gives its entries back earliest first, however they were pushed.
        #[test]
        fn near_gives_the_earliest_first(ops in proptest::collection::vec(
            proptest::option::of(0..50u64), 1..200,
        )) {
            let mut near = Near::default();
            let mut model = Vec::new();
            for (key, op) in ops.into_iter().enumerate() {
                match op {
                    Some(at) => {
                        near.push((at, key));
                        model.push((at, key));
                    }
                    None => {
                        model.sort_unstable();
                        let first = model.first().copied();
                        proptest::prop_assert_eq!(near.peek(), first);
                        if first.is_some() {
                            model.remove(0);
                            near.pop();
                        }
                    }
                }
            }
            model.sort_unstable();
            for want in model {
                proptest::prop_assert_eq!(near.peek(), Some(want));
                near.pop();
            }
            proptest::prop_assert_eq!(near.peek(), None);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Arm exactly at `now + n` ns (or `now - n` when the flag is set).
        ArmExact(usize, u64, bool),
        /// Arm exactly at a clock reading `m` ns after `now` plus the delay `DELAYS[n]` (in
        /// a lane when it can): a batch's heartbeats are re-armed from a reading taken after
        /// the wake-up its polls use, so the two alternate.
        ArmAfter(usize, usize, u64),
        /// Arm rounded up at `now + n` ns.
        Arm(usize, u64),
        Cancel(usize),
        /// The caller's state moves an exact deadline `n` ns later without a re-arm.
        Move(usize, u64),
        Advance(u64),
        Wake,
    }

    /// More delays than lanes among those of two ticks or more (1,000 ns in the model; a
    /// shorter one is near at once, never in a lane), and some under a tick.
    const DELAYS: [u64; 8] = [0, 700, 2_000, 3_000, 5_000, 9_000, 30_000, 1_000_000];

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let ns = prop_oneof![3 => 0..3_000u64, 2 => 0..200_000u64, 1 => 0..50_000_000u64];
        prop_oneof![
            4 => (0..8usize, ns.clone(), any::<bool>()).prop_map(|(k, n, p)| Op::ArmExact(k, n, p)),
            3 => (0..8usize, 0..DELAYS.len(), prop_oneof![0..1u64, 1..900u64])
                .prop_map(|(k, d, m)| Op::ArmAfter(k, d, m)),
            1 => (0..8usize, ns.clone()).prop_map(|(k, n)| Op::Arm(k, n)),
            1 => (0..8usize).prop_map(Op::Cancel),
            1 => (0..8usize, ns.clone()).prop_map(|(k, n)| Op::Move(k, n)),
            2 => ns.prop_map(Op::Advance),
            3 => Just(Op::Wake),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Against a model: an exact timer fires at its exact deadline (as `exact` says at
        /// the time), a rounded one at its deadline rounded up to a tick; never before, and
        /// never left behind by a poll at or after that time; the wake-up is never later
        /// than the earliest of them.
        #[test]
        fn timers_match_a_model(ops in proptest::collection::vec(op(), 1..120)) {
            use proptest::prop_assert;
            let t0 = Instant::now();
            let tick: u64 = 1_000;
            let mut timers = Timers::new(t0, Duration::from_nanos(tick), 8);
            // key -> (deadline in ns since t0, exact?)
            let mut model: std::collections::BTreeMap<usize, (u64, bool)> = Default::default();
            let mut now: u64 = 0;
            let fires_at = |(at, exact): (u64, bool)| if exact { at } else { at.div_ceil(tick) * tick };
            for op in ops {
                let target = match op {
                    Op::ArmExact(key, n, past) => {
                        let at = if past { now.saturating_sub(n) } else { now + n };
                        timers.arm_exact(key, t0 + Duration::from_nanos(at));
                        model.insert(key, (at, true));
                        continue;
                    }
                    Op::ArmAfter(key, d, reading) => {
                        let delay = Duration::from_nanos(DELAYS[d]);
                        let sent = now + reading;
                        timers.arm_exact_after(key, t0 + Duration::from_nanos(sent), delay);
                        model.insert(key, (sent + DELAYS[d], true));
                        continue;
                    }
                    Op::Arm(key, n) => {
                        timers.arm(key, t0 + Duration::from_nanos(now + n));
                        model.insert(key, (now + n, false));
                        continue;
                    }
                    Op::Cancel(key) => {
                        timers.cancel(key);
                        model.remove(&key);
                        continue;
                    }
                    Op::Move(key, n) => {
                        if let Some((at, true)) = model.get_mut(&key) {
                            *at += n;
                        }
                        continue;
                    }
                    Op::Advance(n) => now + n,
                    Op::Wake => match timers.next_wakeup() {
                        Some(at) => (at.saturating_duration_since(t0).as_nanos() as u64).max(now),
                        None => continue,
                    },
                };
                let earliest = model.values().map(|&entry| fires_at(entry)).min();
                let wakeup = timers.next_wakeup().map(|at| at.saturating_duration_since(t0).as_nanos() as u64);
                prop_assert!(wakeup.is_some() == earliest.is_some());
                prop_assert!(wakeup <= earliest, "wake-up {:?} after {:?}", wakeup, earliest);
                now = target;
                let at = t0 + Duration::from_nanos(now);
                let mut left = usize::MAX;
                let snapshot = model.clone();
                let exact = |key: usize| match snapshot.get(&key) {
                    Some(&(d, true)) => Some(t0 + Duration::from_nanos(d)),
                    _ => None,
                };
                while let Some(key) = timers.poll_due(at, &mut left, exact) {
                    let entry = model.remove(&key);
                    prop_assert!(entry.is_some(), "key {} fired unarmed", key);
                    let due = fires_at(entry.unwrap_or_default());
                    prop_assert!(due <= now, "key {} early: due {} at {}", key, due, now);
                }
                for (key, &entry) in &model {
                    prop_assert!(fires_at(entry) > now, "key {} left behind at {}", key, now);
                    prop_assert!(timers.is_armed(*key));
                }
                prop_assert!(timers.len() == model.len());
                prop_assert!(timers.next_wakeup().is_none_or(|w| w > at), "a wake-up for nothing");
            }
        }
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
