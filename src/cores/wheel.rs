//! A hierarchical timer wheel keyed by slab key, in integer ticks.
//!
//! Owns: at most one entry (a deadline) per key, and the tick up to which it has been polled
//! (`elapsed`). Does not own: a clock or sockets. The caller converts `Instant`s to ticks and
//! must round deadlines **up** (and `now` down) so that nothing fires early; `timer.rs` does.
//!
//! Order of calls: `insert`/`remove` at any time; sleep until `next_deadline()`; then call
//! `poll(now)` until it returns `None`. Inserting and removing are O(1). A poll costs the
//! entries that are due plus cascading (each entry moves down at most once per level), never
//! the number scheduled, and the next occupied slot is found with `trailing_zeros`, not a scan.
//!
//! Levels of 64 slots, as in tokio's `runtime/time/wheel`. An entry sits at the lowest level
//! whose slot holds its deadline together with `elapsed`'s position in that level's window;
//! when `elapsed` reaches a slot of level `l > 0`, its entries are cascaded to lower levels.
//!
//! | level | one slot covers       | the level covers       | at 1 ms ticks |
//! |-------|-----------------------|------------------------|---------------|
//! | 0     | 1 tick                | 64 ticks               | 64 ms         |
//! | 1     | 64 ticks              | 64^2 = 4,096           | 4.1 s         |
//! | 2     | 64^2 = 4,096          | 64^3 = 262,144         | 4.4 min       |
//! | 3     | 64^3 = 262,144        | 64^4 = 16,777,216      | 4.7 h         |
//! | 4     | 64^4 = 16,777,216     | 64^5 = 1,073,741,824   | 12.4 days     |
//! | 5     | 64^5 = 1,073,741,824  | 64^6 = 2^36 (`SPAN`)   | 2.2 years     |
//!
//! Deadlines past the current `SPAN`-aligned window wait in a `far` list and are re-placed
//! with their true deadline when `elapsed` leaves the window (so none wraps, and the far list
//! costs one pass per window crossed, not per tick). Deadlines at or before `elapsed` wait in
//! a `pending` list and come out of the next `poll`.
//!
//! An entry's deadline is given as a *value* in units of `unit` (1 unless made
//! [`with_unit`](Wheel::with_unit)): its tick is `value / unit`, and [`poll`](Wheel::poll)
//! gives the value back. `timer.rs` files a timer by its exact nanoseconds with one tick's
//! nanoseconds as the unit, so what comes due at a tick says whether its exact time has come
//! too, without asking the caller (and with no more memory per key).
//!
//! A key may instead sit in a *lane*: one of [`LANES`] FIFO lists, outside the slots (never
//! polled, never cascaded), that keeps its entries in the order of their values and takes a
//! new one only at its back, only if that keeps the order
//! ([`push_lane`](Wheel::push_lane)). Timers armed as "now plus a fixed delay" arrive in
//! that order already, so `timer.rs` files them there: O(1) in and out, with no cascading
//! and no tick of rounding, and the caller reads each lane's front. A lane uses the node
//! that the key already has, so it costs no memory per key either.
//!
//! A key may instead be *parked*: out of the wheel (never polled, not in `len`), holding one
//! caller's value in its node (`timer.rs` parks a timer whose tick has come but whose exact
//! deadline, the value, is still ahead, and keeps the order itself). Parking uses the node
//! that the key already has, so it costs no memory.

use std::fmt;
use std::num::NonZeroU64;

/// Slots per level, as a power of two: a level's occupancy is one `u64` bitmap, so the next
/// occupied slot is one `trailing_zeros`, and a slot index is 6 bits of the tick.
const SLOT_BITS: u32 = 6;
const SLOTS: u32 = 1 << SLOT_BITS;
/// Six levels span 2^36 ticks (2.2 years at 1 ms), far beyond any heartbeat timeout, so the
/// `far` list is all but always empty.
const LEVELS: u32 = 6;
/// Ticks covered by one window of the top level.
const SPAN: u64 = 1 << (SLOT_BITS * LEVELS);
/// List ids: `level * SLOTS + slot` for the slots, then `PENDING` (due) and `FAR`, then the
/// lanes.
const PENDING: u32 = LEVELS * SLOTS;
const FAR: u32 = PENDING + 1;
const LANE0: u32 = FAR + 1;
/// How many FIFO lanes a wheel has: one per fixed delay in use (a heartbeat's interval, the
/// idle time), with room to spare.
pub const LANES: usize = 4;
/// Number of lists. A link below `LISTS` names a list head; `LISTS + key` names a key's node.
const LISTS: u32 = LANE0 + LANES as u32;
/// `prev` of a key that has no entry.
const VACANT: u32 = u32::MAX;
/// `prev` of a key that is parked (no entry; its node's `deadline` holds the parked value).
/// Key links stay below it.
const PARKED: u32 = u32::MAX - 1;

/// Doubly linked, circular: each list's head is a sentinel in `Wheel::heads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    prev: u32,
    next: u32,
}

impl Link {
    /// The head of an empty list links to itself.
    fn empty(list: u32) -> Link {
        Link {
            prev: list,
            next: list,
        }
    }
}

/// One key's entry. A node need not know its list: unlinking only touches its neighbours,
/// and a list is empty when the unlinked node's neighbours are both its head.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The value the entry was inserted with (its tick is `deadline / unit`), or the parked
    /// value.
    deadline: u64,
    link: Link,
}

/// A timer wheel holding at most one deadline per key.
pub struct Wheel {
    /// Entries, indexed by key; grown on demand, never shrunk.
    nodes: Vec<Node>,
    /// List heads (sentinels): `LEVELS * SLOTS` slots, then `PENDING`, then `FAR`, then the
    /// `LANES` lanes.
    heads: [Link; LISTS as usize],
    /// Bit `s` of `occupied[l]` is set when slot `s` of level `l` holds entries.
    occupied: [u64; LEVELS as usize],
    /// Lower bounds of the deadlines in `PENDING` and in `FAR`, when they hold any: set as
    /// entries are placed, not raised by removals (`next_deadline` may come early, not late).
    list_min: [u64; 2],
    elapsed: u64,
    /// What one tick is in an entry's values (non-zero: no check per division).
    unit: NonZeroU64,
    /// Entries in the slots, `PENDING`, `FAR` and the lanes.
    len: usize,
    /// Keys parked.
    parked: usize,
}

impl Default for Wheel {
    fn default() -> Wheel {
        Wheel::new()
    }
}

impl fmt::Debug for Wheel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wheel")
            .field("elapsed", &self.elapsed)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

impl Wheel {
    pub fn new() -> Wheel {
        Wheel::with_capacity(0)
    }

    /// A wheel with room for keys `0..keys` before its per-key storage grows.
    pub fn with_capacity(keys: usize) -> Wheel {
        Wheel::with_unit(keys, NonZeroU64::MIN)
    }

    /// A wheel whose entries' values are in units of `1 / unit` tick: the value `v` is due
    /// at the tick `v / unit`.
    pub fn with_unit(keys: usize, unit: NonZeroU64) -> Wheel {
        Wheel {
            nodes: Vec::with_capacity(keys),
            heads: std::array::from_fn(|list| Link::empty(list as u32)),
            occupied: [0; LEVELS as usize],
            list_min: [u64::MAX; 2],
            elapsed: 0,
            unit,
            len: 0,
            parked: 0,
        }
    }

    /// The tick up to which the wheel has been polled (starts at 0). It reaches `now` when
    /// `poll(now)` returns `None`.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Schedules `key` with the value `deadline`, due at the tick `deadline / unit`.
    /// Replaces the key's existing entry or parked value if any. A tick at or before
    /// `elapsed()` is due at the next `poll`.
    ///
    /// # Panics
    /// If `key` does not fit in a `u32` link (over four billion keys).
    pub fn insert(&mut self, key: usize, deadline: u64) {
        let link = self.detach_as_entry(key);
        self.nodes[key].deadline = deadline;
        self.place(link);
    }

    /// Takes `key` out of the wheel (if it was in) and parks it with `value`, replacing any
    /// value it was parked with. A parked key is never polled; [`insert`](Self::insert) or
    /// [`remove`](Self::remove) ends the parking.
    ///
    /// # Panics
    /// As [`insert`](Self::insert).
    pub fn park(&mut self, key: usize, value: u64) {
        let link = self.node_for(key);
        match self.nodes[key].link.prev {
            VACANT => self.parked += 1,
            PARKED => {}
            _ => {
                self.unlink(link);
                self.len -= 1;
                self.parked += 1;
            }
        }
        let node = &mut self.nodes[key];
        node.link.prev = PARKED;
        node.deadline = value;
    }

    /// Files `key` with `value` at the back of lane `lane` (below [`LANES`]), replacing its
    /// entry or parked value, if the lane's last value is at most `value`; otherwise changes
    /// nothing and returns `false` (file it in the wheel instead). A lane is never polled:
    /// the caller takes its entries from the front ([`lane_front`](Self::lane_front), then
    /// [`remove`](Self::remove)).
    ///
    /// # Panics
    /// As [`insert`](Self::insert); or if `lane` is not below [`LANES`].
    pub fn push_lane(&mut self, key: usize, lane: usize, value: u64) -> bool {
        assert!(lane < LANES, "lane {lane} of {LANES}");
        let head = LANE0 + lane as u32;
        let back = self.heads[head as usize].prev;
        if back != head && self.nodes[(back - LISTS) as usize].deadline > value {
            return false;
        }
        let link = self.detach_as_entry(key);
        // Read again: the key may have been the back itself.
        let back = self.heads[head as usize].prev;
        self.nodes[key] = Node {
            deadline: value,
            link: Link {
                prev: back,
                next: head,
            },
        };
        self.link_mut(back).next = link;
        self.heads[head as usize].prev = link;
        true
    }

    /// The first entry of lane `lane`, the one with the least value, as (key, value); `None`
    /// when the lane is empty or `lane` is not below [`LANES`].
    pub fn lane_front(&self, lane: usize) -> Option<(usize, u64)> {
        let head = LANE0
            + u32::try_from(lane)
                .ok()
                .filter(|&lane| lane < LANES as u32)?;
        let first = self.heads[head as usize].next;
        (first != head).then(|| {
            let key = (first - LISTS) as usize;
            (key, self.nodes[key].deadline)
        })
    }

    /// The value `key` is parked with, if it is parked.
    pub fn parked(&self, key: usize) -> Option<u64> {
        let node = self.nodes.get(key)?;
        (node.link.prev == PARKED).then_some(node.deadline)
    }

    /// How many keys are parked.
    pub fn parked_len(&self) -> usize {
        self.parked
    }

    /// Takes `key`'s node out of its list or ends its parking, counted as an entry from now
    /// on (it is about to be linked again); returns its link.
    #[inline]
    fn detach_as_entry(&mut self, key: usize) -> u32 {
        let link = self.node_for(key);
        match self.nodes[key].link.prev {
            VACANT => self.len += 1,
            PARKED => {
                self.parked -= 1;
                self.len += 1;
            }
            _ => self.unlink(link),
        }
        link
    }

    /// The link of `key`'s node, which exists (vacant if new) once this returns.
    fn node_for(&mut self, key: usize) -> u32 {
        let link = match u32::try_from(key) {
            Ok(key) if key < PARKED - LISTS => key + LISTS,
            _ => panic!("wheel key {key} is too large"),
        };
        if key >= self.nodes.len() {
            let vacant = Link {
                prev: VACANT,
                next: VACANT,
            };
            self.nodes.resize(
                key + 1,
                Node {
                    deadline: 0,
                    link: vacant,
                },
            );
        }
        link
    }

    /// Removes the key's entry, or ends its parking; returns the entry's deadline if it had
    /// one in the wheel.
    pub fn remove(&mut self, key: usize) -> Option<u64> {
        if self.parked(key).is_some() {
            self.nodes[key].link.prev = VACANT;
            self.parked -= 1;
            return None;
        }
        let deadline = self.deadline(key)?;
        // `deadline` found the node, so the key fits (see `insert`).
        self.unlink(key as u32 + LISTS);
        self.len -= 1;
        Some(deadline)
    }

    /// The value `key`'s entry was filed with, if it is in the wheel or a lane (not parked).
    pub fn deadline(&self, key: usize) -> Option<u64> {
        let node = self.nodes.get(key)?;
        (node.link.prev < PARKED).then_some(node.deadline)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The earliest tick at which `poll` may have work to do: never later than the earliest
    /// deadline (it may be earlier, when a higher-level slot must be cascaded). None when empty
    /// but for the lanes, which are the caller's to watch.
    /// The poll loop sleeps exactly until this tick. With an entry already due it is at or
    /// before `elapsed()`: poll at once.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.len == 0 {
            // Most wheels are empty most of the time (the server's first-byte waits).
            None
        } else if !self.list_is_empty(PENDING) {
            Some(self.list_min[0])
        } else if let Some((_, start)) = self.next_slot() {
            Some(start)
        } else if !self.list_is_empty(FAR) {
            Some(self.list_min[1])
        } else {
            None
        }
    }

    /// Advances to the tick `now` and returns one entry whose tick <= now, removing it, as
    /// (key, value). Call repeatedly until None. Never returns an entry early.
    /// A `now` before `elapsed()` counts as `elapsed()`.
    pub fn poll(&mut self, now: u64) -> Option<(usize, u64)> {
        let now = now.max(self.elapsed);
        loop {
            let first = self.heads[PENDING as usize].next;
            if first != PENDING {
                self.unlink(first);
                self.len -= 1;
                let key = (first - LISTS) as usize;
                return Some((key, self.nodes[key].deadline));
            }
            if let Some((list, start)) = self.next_slot() {
                if start > now {
                    break;
                }
                // Every lower level is empty and `start` is in the window of every higher one.
                self.elapsed = start;
                self.cascade(list);
            } else {
                // Only `far` entries are left, if any: re-place them once `now` leaves the window
                // (which ends no later than their earliest deadline).
                let window_end = (self.elapsed | (SPAN - 1)).checked_add(1);
                if self.list_is_empty(FAR) || window_end.is_none_or(|end| now < end) {
                    break;
                }
                self.elapsed = now;
                self.cascade(FAR);
            }
        }
        self.elapsed = now;
        None
    }

    /// The first occupied slot (at the lowest non-empty level) and the tick it starts at.
    /// Occupied slots always lie after `elapsed`'s slot, so the lowest set bit is the earliest.
    fn next_slot(&self) -> Option<(u32, u64)> {
        let level = self.occupied.iter().position(|&bits| bits != 0)? as u32;
        let slot = self.occupied[level as usize].trailing_zeros();
        let shift = SLOT_BITS * level;
        let window = self.elapsed & !((SLOTS as u64) << shift).wrapping_sub(1);
        Some((level * SLOTS + slot, window + (u64::from(slot) << shift)))
    }

    /// The list for `deadline` given `elapsed`: the level of the highest bit in which they
    /// differ, and the deadline's slot in it.
    fn list_for(&self, deadline: u64) -> u32 {
        if deadline <= self.elapsed {
            return PENDING;
        }
        let level = (63 - (self.elapsed ^ deadline).leading_zeros()) / SLOT_BITS;
        if level >= LEVELS {
            return FAR;
        }
        let slot = (deadline >> (SLOT_BITS * level)) as u32 & (SLOTS - 1);
        level * SLOTS + slot
    }

    /// Links the node `link` (not in any list) at the front of the list for its deadline.
    fn place(&mut self, link: u32) {
        let deadline = self.nodes[(link - LISTS) as usize].deadline / self.unit;
        let list = self.list_for(deadline);
        if list >= PENDING {
            let empty = self.list_is_empty(list);
            let min = &mut self.list_min[(list - PENDING) as usize];
            *min = if empty { deadline } else { deadline.min(*min) };
        } else {
            self.occupied[(list / SLOTS) as usize] |= 1 << (list % SLOTS);
        }
        let next = self.heads[list as usize].next;
        *self.link_mut(link) = Link { prev: list, next };
        self.link_mut(next).prev = link;
        self.heads[list as usize].next = link;
    }

    /// Unlinks the node `link`, marks it vacant, and clears its slot's bit if it was the last.
    fn unlink(&mut self, link: u32) {
        let Link { prev, next } = *self.link_mut(link);
        self.link_mut(prev).next = next;
        self.link_mut(next).prev = prev;
        if prev == next && prev < PENDING {
            self.occupied[(prev / SLOTS) as usize] &= !(1 << (prev % SLOTS));
        }
        self.link_mut(link).prev = VACANT;
    }

    /// Empties `list` and places each of its entries again, relative to the current `elapsed`.
    fn cascade(&mut self, list: u32) {
        if list < SLOTS && self.list_is_empty(PENDING) {
            // A level-0 slot holds one tick, which `elapsed` has reached: every entry in it
            // is due, so the whole list becomes the pending list at once, not entry by entry.
            let Link {
                prev: last,
                next: first,
            } = self.heads[list as usize];
            self.heads[list as usize] = Link::empty(list);
            self.occupied[0] &= !(1 << list);
            self.link_mut(first).prev = PENDING;
            self.link_mut(last).next = PENDING;
            self.heads[PENDING as usize] = Link {
                prev: last,
                next: first,
            };
            self.list_min[0] = self.elapsed;
            return;
        }
        let mut link = self.heads[list as usize].next;
        self.heads[list as usize] = Link::empty(list);
        if list < PENDING {
            self.occupied[(list / SLOTS) as usize] &= !(1 << (list % SLOTS));
        }
        // The detached chain still ends at `list`'s id; read each `next` before re-placing.
        while link != list {
            let next = self.link_mut(link).next;
            self.place(link);
            link = next;
        }
    }

    fn list_is_empty(&self, list: u32) -> bool {
        self.heads[list as usize].next == list
    }

    fn link_mut(&mut self, link: u32) -> &mut Link {
        match link.checked_sub(LISTS) {
            None => &mut self.heads[link as usize],
            Some(key) => &mut self.nodes[key as usize].link,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Ticks per slot of level `k`: 64^k.
    fn pow64(k: u32) -> u64 {
        1 << (SLOT_BITS * k)
    }

    /// Polls at `deadline - 1` (nothing) and at `deadline` (the entry), from `elapsed` = `from`.
    fn fires_exactly_at(from: u64, deadline: u64) {
        let mut wheel = Wheel::new();
        assert_eq!(wheel.poll(from), None);
        wheel.insert(7, deadline);
        assert_eq!(wheel.remove(7), Some(deadline));
        assert_eq!(wheel.next_deadline(), None, "its slot is empty again");
        wheel.insert(7, deadline);
        assert!(wheel.next_deadline().is_some_and(|next| next <= deadline));
        if deadline > from {
            assert_eq!(wheel.poll(deadline - 1), None, "{from} to {deadline}");
            assert_eq!(wheel.elapsed(), deadline - 1);
        }
        assert_eq!(wheel.poll(deadline), Some((7, deadline)), "{from}..");
        assert_eq!(wheel.poll(deadline), None);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn node_is_small() {
        assert_eq!(std::mem::size_of::<Node>(), 16, "a u64 and two u32s");
    }

    #[test]
    #[should_panic(expected = "too large")]
    fn a_key_beyond_u32_links_is_refused() {
        Wheel::new().insert(u32::MAX as usize - 1, 0);
    }

    #[test]
    fn nothing_before_the_deadline_then_the_entry_at_it() {
        let mut wheel = Wheel::new();
        wheel.insert(1, 5);
        for now in 0..5 {
            assert_eq!(wheel.poll(now), None, "at {now}");
        }
        assert_eq!(wheel.poll(5), Some((1, 5)));
        assert_eq!(wheel.poll(5), None);
    }

    #[test]
    fn deadline_zero_equal_to_elapsed_and_in_the_past_are_due_at_once() {
        let mut wheel = Wheel::new();
        wheel.insert(0, 0);
        assert_eq!(wheel.next_deadline(), Some(0));
        assert_eq!(wheel.poll(0), Some((0, 0)));
        assert_eq!(wheel.poll(100), None);
        wheel.insert(1, 100);
        wheel.insert(2, 40);
        assert_eq!(wheel.next_deadline(), Some(40), "in the past: poll at once");
        let mut due = vec![wheel.poll(100), wheel.poll(100)];
        due.sort();
        assert_eq!(due, [Some((1, 100)), Some((2, 40))]);
        assert_eq!(wheel.poll(100), None);
    }

    #[test]
    fn a_poll_before_elapsed_counts_as_elapsed() {
        let mut wheel = Wheel::new();
        assert_eq!(wheel.poll(1000), None);
        wheel.insert(3, 1001);
        assert_eq!(wheel.poll(10), None);
        assert_eq!(wheel.elapsed(), 1000);
        wheel.insert(4, 999);
        assert_eq!(wheel.poll(0), Some((4, 999)));
        assert_eq!(wheel.poll(1001), Some((3, 1001)));
    }

    #[test]
    fn every_small_deadline_step_by_step() {
        for deadline in 0..=200 {
            let mut wheel = Wheel::new();
            wheel.insert(9, deadline);
            for now in 0..deadline {
                assert_eq!(wheel.poll(now), None, "{deadline} at {now}");
            }
            assert_eq!(wheel.poll(deadline), Some((9, deadline)));
        }
    }

    #[test]
    fn slot_and_level_edges_fire_exactly_at_their_deadline() {
        let mut deadlines = vec![0, 1, 62, 63, 64, 65, 127, 128, SPAN + 1, 3 * SPAN + 17];
        for k in 1..=LEVELS {
            deadlines.extend([pow64(k) - 1, pow64(k), pow64(k) + 1, 63 * pow64(k - 1)]);
        }
        deadlines.extend([u64::MAX / 2, u64::MAX - 1, u64::MAX]);
        let starts = [0, 1, 63, 64, SPAN - 1, SPAN, u64::MAX / 2 - SPAN];
        for &from in &starts {
            for &deadline in &deadlines {
                fires_exactly_at(from, deadline);
                fires_exactly_at(from, from.saturating_add(deadline));
            }
        }
    }

    #[test]
    fn a_thousand_entries_in_one_slot_all_come_out() {
        let mut wheel = Wheel::new();
        for key in 0..1000 {
            wheel.insert(key, 5000);
        }
        wheel.insert(1000, 5001);
        assert_eq!(wheel.poll(4999), None);
        let mut keys: Vec<usize> =
            std::iter::from_fn(|| wheel.poll(5000).map(|(k, _)| k)).collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..1000).collect::<Vec<_>>());
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.poll(5001), Some((1000, 5001)));
    }

    #[test]
    fn only_due_entries_come_out_while_others_remain() {
        let mut wheel = Wheel::new();
        for key in 0..100 {
            wheel.insert(key, key as u64 * 100);
        }
        for now in (0..10_000).step_by(50) {
            while let Some((key, deadline)) = wheel.poll(now) {
                assert!(deadline <= now && deadline + 50 > now, "{key} at {now}");
            }
            assert_eq!(wheel.len(), 99 - now as usize / 100);
        }
    }

    #[test]
    fn rearming_moves_the_entry_and_remove_cancels_it() {
        let mut wheel = Wheel::new();
        wheel.insert(2, 10);
        wheel.insert(2, 5000);
        assert_eq!((wheel.len(), wheel.deadline(2)), (1, Some(5000)));
        assert_eq!(wheel.poll(4999), None, "the old deadline never fires");
        wheel.insert(2, 4000);
        assert_eq!(wheel.poll(4999), Some((2, 4000)), "moved earlier, past due");
        wheel.insert(3, 6000);
        assert_eq!(wheel.remove(3), Some(6000));
        assert_eq!((wheel.remove(3), wheel.remove(99)), (None, None));
        assert!(wheel.is_empty());
        wheel.insert(3, 7000);
        assert_eq!(wheel.poll(6999), None);
        assert_eq!(wheel.poll(7000), Some((3, 7000)));
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn an_idle_wheel_wakes_a_few_times_per_level_not_per_tick() {
        let mut far = vec![u64::MAX / 2, u64::MAX, SPAN, SPAN + 1];
        far.extend((1..=LEVELS).map(|k| pow64(k) + pow64(k - 1) * 7 + 3));
        for deadline in far {
            let mut wheel = Wheel::new();
            wheel.insert(1, deadline);
            let mut wakeups = 0;
            let fired = loop {
                let now = wheel.next_deadline().expect("still scheduled");
                assert!(now <= deadline);
                wakeups += 1;
                if let Some(entry) = wheel.poll(now) {
                    break (entry, now);
                }
            };
            assert_eq!(fired, ((1, deadline), deadline));
            assert!(wakeups <= 2 * LEVELS, "{wakeups} wake-ups for {deadline}");
        }
    }

    #[test]
    fn values_in_units_are_due_at_their_tick_and_come_back_whole() {
        let unit = NonZeroU64::new(1000).expect("non-zero");
        let mut wheel = Wheel::with_unit(4, unit);
        // Ticks 4 (4,999), 5 (5,000), 70 (70,001: level 1) and 0 (999).
        for (key, value) in [(0, 4_999), (1, 5_000), (2, 70_001), (3, 999)] {
            wheel.insert(key, value);
        }
        assert_eq!(wheel.deadline(2), Some(70_001));
        assert_eq!(wheel.next_deadline(), Some(0));
        assert_eq!(
            wheel.poll(0),
            Some((3, 999)),
            "due at its tick, value whole"
        );
        assert_eq!(wheel.poll(3), None);
        assert_eq!(wheel.poll(4), Some((0, 4_999)));
        assert_eq!(wheel.poll(4), None);
        assert_eq!(wheel.poll(5), Some((1, 5_000)));
        assert_eq!(wheel.poll(69), None, "cascaded from level 1, not early");
        assert_eq!(wheel.poll(70), Some((2, 70_001)));
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_parked_key_is_out_of_the_wheel_until_inserted_or_removed() {
        let mut wheel = Wheel::new();
        wheel.insert(1, 10);
        wheel.insert(2, 10);
        wheel.park(1, 12_345);
        wheel.park(3, 7);
        assert_eq!((wheel.len(), wheel.parked_len()), (1, 2));
        assert_eq!((wheel.parked(1), wheel.parked(3)), (Some(12_345), Some(7)));
        assert_eq!((wheel.deadline(1), wheel.parked(2)), (None, None));
        assert_eq!(
            wheel.poll(10),
            Some((2, 10)),
            "a parked key is never polled"
        );
        assert_eq!(wheel.poll(1000), None);
        assert_eq!(wheel.next_deadline(), None);
        wheel.park(1, 99);
        assert_eq!(
            (wheel.parked(1), wheel.parked_len()),
            (Some(99), 2),
            "re-parked"
        );
        wheel.insert(1, 1001);
        assert_eq!((wheel.parked(1), wheel.deadline(1)), (None, Some(1001)));
        assert_eq!(wheel.remove(3), None, "parking ended, no wheel deadline");
        assert_eq!(
            (wheel.parked(3), wheel.parked_len(), wheel.len()),
            (None, 0, 1)
        );
        assert_eq!(wheel.poll(1001), Some((1, 1001)));
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_lane_keeps_its_order_and_is_never_polled() {
        let mut wheel = Wheel::new();
        wheel.insert(1, 5);
        wheel.park(2, 99);
        assert!(wheel.push_lane(3, 0, 10));
        assert!(
            wheel.push_lane(1, 0, 10),
            "a tie keeps the order; leaves its slot"
        );
        assert!(wheel.push_lane(2, 0, 20), "ends the parking");
        assert!(!wheel.push_lane(4, 0, 19), "before the back: refused");
        assert_eq!(wheel.deadline(4), None, "a refused key is not filed");
        assert!(wheel.push_lane(4, 1, 19), "another lane has its own order");
        assert_eq!((wheel.len(), wheel.parked_len()), (4, 0));
        assert_eq!(
            wheel.next_deadline(),
            None,
            "lanes are the caller's to watch"
        );
        assert_eq!(wheel.poll(1_000), None, "and never polled");
        assert_eq!(wheel.lane_front(0), Some((3, 10)));
        assert_eq!(wheel.lane_front(1), Some((4, 19)));
        assert_eq!((wheel.lane_front(2), wheel.lane_front(LANES)), (None, None));
        assert_eq!(wheel.remove(3), Some(10));
        assert_eq!(wheel.lane_front(0), Some((1, 10)));
        assert!(wheel.push_lane(2, 0, 20), "the back itself, again");
        assert!(wheel.push_lane(1, 0, 30), "the front moved to the back");
        assert_eq!(wheel.lane_front(0), Some((2, 20)));
        wheel.insert(2, 2_000);
        wheel.park(1, 7);
        assert_eq!(wheel.lane_front(0), None, "moved out of the lane");
        assert_eq!((wheel.len(), wheel.parked_len()), (2, 1));
        assert_eq!(wheel.poll(2_000), Some((2, 2_000)));
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Insert at `elapsed + n`, or at `elapsed - n` when the flag is set.
        Insert(usize, u64, bool),
        /// Push onto a lane at `elapsed + n`.
        Lane(usize, usize, u64),
        Remove(usize),
        /// Park the key with this value.
        Park(usize, u64),
        /// Poll at `elapsed + n` (`n` may be 0 or very large).
        Advance(u64),
        /// Poll at `next_deadline()`.
        Wake,
    }

    fn offset() -> impl Strategy<Value = u64> {
        prop_oneof![3 => 0..70u64, 3 => 0..5000u64, 2 => 0..SPAN * 3, 1 => 0..u64::MAX / 4]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..40usize, prop_oneof![offset(), any::<u64>()], any::<bool>())
                .prop_map(|(key, n, past)| Op::Insert(key, n, past)),
            1 => (0..40usize).prop_map(Op::Remove),
            2 => (0..40usize, 0..LANES, offset()).prop_map(|(key, lane, n)| Op::Lane(key, lane, n)),
            1 => (0..40usize, any::<u64>()).prop_map(|(key, value)| Op::Park(key, value)),
            2 => offset().prop_map(Op::Advance),
            2 => Just(Op::Wake),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Against a `BTreeMap` model: exactly the due entries come out, never early, and
        /// `next_deadline` is never after the earliest deadline and a poll there makes progress.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut wheel = Wheel::new();
            let mut model = BTreeMap::new();
            let mut parked = BTreeMap::new();
            let mut lanes: Vec<Vec<(usize, u64)>> = vec![Vec::new(); LANES];
            fn unlane(key: usize, lanes: &mut [Vec<(usize, u64)>]) -> Option<u64> {
                let mut value = None;
                for lane in lanes.iter_mut() {
                    if let Some(at) = lane.iter().position(|&(k, _)| k == key) {
                        value = Some(lane.remove(at).1);
                    }
                }
                value
            }
            for op in ops {
                // Whatever the last operation was, each lane still gives its first entry.
                for (lane, entries) in lanes.iter().enumerate() {
                    prop_assert_eq!(wheel.lane_front(lane), entries.first().copied());
                }
                let target = match op {
                    Op::Insert(key, n, past) => {
                        let e = wheel.elapsed();
                        let deadline = if past { e.saturating_sub(n) } else { e.saturating_add(n) };
                        wheel.insert(key, deadline);
                        model.insert(key, deadline);
                        parked.remove(&key);
                        unlane(key, &mut lanes);
                        continue;
                    }
                    Op::Lane(key, lane, n) => {
                        let value = wheel.elapsed().saturating_add(n);
                        let in_order = lanes[lane].last().is_none_or(|&(_, back)| back <= value);
                        prop_assert_eq!(wheel.push_lane(key, lane, value), in_order);
                        if in_order {
                            model.remove(&key);
                            parked.remove(&key);
                            unlane(key, &mut lanes);
                            lanes[lane].push((key, value));
                        }
                        continue;
                    }
                    Op::Remove(key) => {
                        let laned = unlane(key, &mut lanes);
                        prop_assert_eq!(wheel.remove(key), model.remove(&key).or(laned));
                        parked.remove(&key);
                        prop_assert_eq!(wheel.parked(key), None);
                        continue;
                    }
                    Op::Park(key, value) => {
                        wheel.park(key, value);
                        model.remove(&key);
                        unlane(key, &mut lanes);
                        parked.insert(key, value);
                        prop_assert_eq!(wheel.deadline(key), None);
                        prop_assert_eq!(wheel.parked_len(), parked.len());
                        continue;
                    }
                    Op::Advance(n) => wheel.elapsed().saturating_add(n),
                    Op::Wake => match wheel.next_deadline() {
                        Some(next) => next,
                        None => continue,
                    },
                };
                let now = target.max(wheel.elapsed());
                let before = wheel.next_deadline();
                let earliest = model.values().min().copied();
                prop_assert_eq!(before.is_some(), earliest.is_some());
                prop_assert!(before <= earliest, "{:?} > {:?}", before, earliest);
                let mut fired = 0;
                while let Some((key, deadline)) = wheel.poll(now) {
                    prop_assert!(deadline <= now, "early: {} at {}", deadline, now);
                    prop_assert_eq!(model.remove(&key), Some(deadline));
                    fired += 1;
                }
                prop_assert_eq!(wheel.elapsed(), now);
                prop_assert!(model.values().all(|&d| d > now), "late at {}", now);
                let laned: usize = lanes.iter().map(Vec::len).sum();
                prop_assert_eq!(wheel.len(), model.len() + laned);
                prop_assert_eq!(wheel.parked_len(), parked.len());
                for (&key, &value) in &parked {
                    prop_assert_eq!(wheel.parked(key), Some(value));
                }
                if before == Some(target) {
                    prop_assert!(fired > 0 || wheel.next_deadline() > before, "no progress");
                }
            }
        }
    }
}
