//! Peers waiting for something before they are served (a TLS handshake to finish), each
//! with a deadline, at most `cap` at once: a newcomer past the cap makes room by evicting
//! the oldest waiter, so a flood of silent or slow sockets cannot hold the server and
//! cannot keep new peers out either. Sans-IO: it takes `now`, touches no socket, and tells
//! the caller when to wake ([`Waiters::next_deadline`]).
//!
//! Owns the waiting values, their keys (with a generation, for tokens) and their order.
//! Does not own what they wait for: the caller gets each value back when it is done,
//! evicted or out of time. Small and generic so that it can become the one shared
//! "waiting for first bytes" stage (PROXY header, handshake, metrics request).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use slab::Slab;

/// Waiting values of type `T`.
pub struct Waiters<T> {
    deadline: Duration,
    cap: usize,
    entries: Slab<(T, u32)>,
    /// Deadlines in arrival order, which is their order too (one `deadline` for all): the
    /// front is the earliest and the oldest. Entries of values already taken out are stale
    /// and skipped (their generation no longer matches).
    order: VecDeque<(Instant, usize, u32)>,
    next_generation: u32,
}

impl<T> Waiters<T> {
    /// Each waits at most `deadline`; at most `cap` (at least one) wait at once.
    pub fn new(deadline: Duration, cap: usize) -> Waiters<T> {
        Waiters {
            deadline,
            cap: cap.max(1),
            entries: Slab::new(),
            order: VecDeque::new(),
            next_generation: 0,
        }
    }

    /// Starts `value` waiting at `now`: returns its key and generation, and the oldest
    /// waiter if it had to make room.
    pub fn insert(&mut self, now: Instant, value: T) -> ((usize, u32), Option<T>) {
        let evicted = match self.entries.len() >= self.cap {
            true => self.pop_oldest(),
            false => None,
        };
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let key = self.entries.insert((value, generation));
        self.order.push_back((now + self.deadline, key, generation));
        ((key, generation), evicted)
    }

    /// The waiter under `key` if its generation is still `generation`.
    pub fn get_mut(&mut self, key: usize, generation: u32) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some((value, g)) if *g == generation => Some(value),
            _ => None,
        }
    }

    /// Takes the waiter under `key` out (it is done waiting).
    pub fn remove(&mut self, key: usize, generation: u32) -> Option<T> {
        self.get_mut(key, generation)?;
        let (value, _) = self.entries.remove(key);
        self.trim();
        Some(value)
    }

    /// The next waiter whose deadline has passed at `now`, taken out; `None` when none.
    pub fn expire(&mut self, now: Instant) -> Option<T> {
        self.trim();
        match self.order.front() {
            Some(&(at, _, _)) if at <= now => self.pop_oldest(),
            _ => None,
        }
    }

    /// When the earliest waiter runs out of time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.order
            .iter()
            .find(|(_, key, g)| self.is_current(*key, *g))
            .map(|(at, _, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes every waiter out (stopping).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.order.clear();
        self.entries.drain().map(|(value, _)| value)
    }

    fn is_current(&self, key: usize, generation: u32) -> bool {
        self.entries.get(key).is_some_and(|(_, g)| *g == generation)
    }

    fn pop_oldest(&mut self) -> Option<T> {
        while let Some((_, key, generation)) = self.order.pop_front() {
            if self.is_current(key, generation) {
                return Some(self.entries.remove(key).0);
            }
        }
        None
    }

    /// Drops stale entries at the front, so that the front is a live waiter and the queue
    /// holds no more than the live waiters plus those taken out since the front's arrival.
    fn trim(&mut self) {
        while let Some(&(_, key, generation)) = self.order.front() {
            if self.is_current(key, generation) {
                return;
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    #[test]
    fn a_waiter_expires_at_its_deadline_not_a_moment_before() {
        let t0 = Instant::now();
        let mut waiters = Waiters::new(DEADLINE, 10);
        waiters.insert(t0, "a");
        assert_eq!(waiters.next_deadline(), Some(t0 + DEADLINE));
        assert_eq!(
            waiters.expire(t0 + DEADLINE - Duration::from_millis(1)),
            None
        );
        assert_eq!(waiters.expire(t0 + DEADLINE), Some("a"));
        assert!(waiters.is_empty());
        assert_eq!(waiters.next_deadline(), None);
    }

    #[test]
    fn past_the_cap_the_oldest_makes_room() {
        let t0 = Instant::now();
        let mut waiters = Waiters::new(DEADLINE, 2);
        let (a, none) = waiters.insert(t0, "a");
        assert!(none.is_none());
        waiters.insert(t0 + Duration::from_secs(1), "b");
        let (_, evicted) = waiters.insert(t0 + Duration::from_secs(2), "c");
        assert_eq!(evicted, Some("a"));
        assert_eq!(waiters.len(), 2);
        assert_eq!(waiters.get_mut(a.0, a.1), None, "a's key is no longer a's");
        assert_eq!(
            waiters.next_deadline(),
            Some(t0 + Duration::from_secs(1) + DEADLINE)
        );
    }

    #[test]
    fn a_waiter_done_early_neither_expires_nor_is_evicted() {
        let t0 = Instant::now();
        let mut waiters = Waiters::new(DEADLINE, 2);
        let (a, _) = waiters.insert(t0, "a");
        let (b, _) = waiters.insert(t0, "b");
        assert_eq!(waiters.remove(a.0, a.1), Some("a"));
        assert_eq!(waiters.remove(a.0, a.1), None, "only once");
        // The slot is reused by c under a new generation: a's stale entry is not c.
        let (c, evicted) = waiters.insert(t0 + Duration::from_secs(1), "c");
        assert_eq!(evicted, None);
        assert_eq!(c.0, a.0);
        assert_ne!(c.1, a.1);
        assert_eq!(waiters.expire(t0 + DEADLINE), Some("b"));
        assert_eq!(waiters.expire(t0 + DEADLINE), None, "c is not due yet");
        assert_eq!(waiters.get_mut(b.0, b.1), None);
        assert_eq!(
            waiters.expire(t0 + Duration::from_secs(1) + DEADLINE),
            Some("c")
        );
    }
}
