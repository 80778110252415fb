//! The loop toolkit: the pieces of a poll-loop turn that the server's and the client's loops
//! share, each small enough to test alone.
//!
//! | piece               | what it keeps                                                        |
//! |---------------------|----------------------------------------------------------------------|
//! | [`token`], [`split`], [`Generations`] | a slab key and a generation in one `mio::Token`, so an event for a closed, reused slot is ignored |
//! | [`READ_BUFFER`], [`READS_PER_TURN`] | how much one read takes and how many reads a peer gets a turn |
//! | [`CutOff`]          | the fairness list: peers cut off after their reads, read first next turn, queued once |
//! | [`earliest`]        | the earliest of several deadlines, for the poll timeout            |
//! | [`wait`]            | the sleep: arm the alarm, the poll timeout, `poll`, a signal's interruption |
//!
//! Owns none of the sockets and no decision about a peer: the loops own their sockets and
//! records, the cores decide. It reads no clock (callers pass `now`); `wait` is its one
//! system call.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::cores::timer::{earlier, timeout_until};
use crate::edge::alarm::Alarm;
use crate::edge::net::{interrupted, SetupError};

/// The most bytes one read takes: the loop's single scratch buffer is this big, so no
/// connection needs a read buffer of its own.
pub const READ_BUFFER: usize = 64 * 1024;

/// Reads one peer gets per turn (of up to [`READ_BUFFER`] bytes each) before the others get
/// theirs; a peer with more to read is then cut off and read first next turn ([`CutOff`]).
pub const READS_PER_TURN: usize = 16;

/// Tokens carry the slab key in the low 32 bits and a generation above it, so an event for a
/// closed connection whose slot was reused is recognised and ignored. Keys stay far below
/// 2^32 − 16 (they are bounded by the open-file limit), so a connection token never equals
/// the loops' fixed tokens at the top of the range.
pub fn token(key: usize, generation: u32) -> Token {
    Token((key & 0xffff_ffff) | (generation as usize) << 32)
}

/// The slab key and generation inside a connection token.
pub fn split(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

/// Hands each new socket of a loop the next generation for its [`token`]. Wrapping is fine:
/// a slot would have to be reused 2^32 times while one stale event waits.
#[derive(Debug, Default)]
pub struct Generations(u32);

impl Generations {
    /// The generation for the next socket registered.
    pub fn issue(&mut self) -> u32 {
        let generation = self.0;
        self.0 = generation.wrapping_add(1);
        generation
    }

    /// The generation the next socket will get, without handing it out.
    pub fn peek(&self) -> u32 {
        self.0
    }
}

/// The fairness list. A peer that still had bytes after its [`READS_PER_TURN`] reads is
/// [`defer`](Self::defer)red: it is read first next turn, before that turn's events, and an
/// event for it in the meantime is skipped (it has had its share). Each peer is queued once
/// however often it is deferred.
///
/// Keyed by slot, not by token: if a deferred peer's slot closes and is reused, the new
/// socket in it is read first next turn; a read with nothing to take costs one system call
/// and loses nothing, while a readiness edge skipped for good would stall the peer.
///
/// Use: each turn, [`start_turn`](Self::start_turn), then read every key
/// [`pop`](Self::pop) gives, then the turn's events (skipping keys
/// [`is_queued`](Self::is_queued)). While [`is_empty`](Self::is_empty) is false the loop
/// must not sleep. No allocation per turn: the lists keep their capacity.
#[derive(Debug, Default)]
pub struct CutOff {
    /// Deferred this turn, in order: read first next turn.
    next: Vec<usize>,
    /// Deferred last turn: read at the start of this one, from `cursor` on.
    now: Vec<usize>,
    cursor: usize,
    /// One bit per key: set while the key is in `next`. Keys are slab keys, dense from 0,
    /// so this grows to the largest key deferred (1,250 bytes for 10,000 peers), once.
    queued: Vec<u64>,
}

impl CutOff {
    /// Reads `key` first next turn; false if it was queued already.
    pub fn defer(&mut self, key: usize) -> bool {
        let (word, bit) = (key / 64, 1u64 << (key % 64));
        if word >= self.queued.len() {
            self.queued.resize(word + 1, 0);
        }
        if self.queued[word] & bit != 0 {
            return false;
        }
        self.queued[word] |= bit;
        self.next.push(key);
        true
    }

    /// Whether `key` waits to be read next turn (then it has had its reads for this one).
    pub fn is_queued(&self, key: usize) -> bool {
        self.queued
            .get(key / 64)
            .is_some_and(|word| word & (1 << (key % 64)) != 0)
    }

    /// True when no peer waits for the next turn: the loop may sleep.
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// How many peers wait to be read first next turn.
    pub fn len(&self) -> usize {
        self.next.len()
    }

    /// Begins a turn: the peers deferred last turn become this turn's to [`pop`](Self::pop),
    /// and are no longer queued (reading one may defer it again, for the next turn).
    pub fn start_turn(&mut self) {
        std::mem::swap(&mut self.now, &mut self.next);
        self.next.clear();
        self.cursor = 0;
        for &key in &self.now {
            if let Some(word) = self.queued.get_mut(key / 64) {
                *word &= !(1 << (key % 64));
            }
        }
    }

    /// The next peer to read before this turn's events, in the order they were deferred.
    pub fn pop(&mut self) -> Option<usize> {
        let key = *self.now.get(self.cursor)?;
        self.cursor += 1;
        Some(key)
    }
}

/// The earliest of several deadlines, `None` when there is none: what the loop sleeps until.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().fold(None, earlier)
}

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Events came, or the deadline. `alarm_ahead` is the deadline the loop slept towards
    /// when it was still ahead as the wait began: waking after it means the OS overslept.
    /// A deadline already due, or a wait that did not sleep, measures only the loop's lag.
    Woke { alarm_ahead: Option<Instant> },
    /// A signal interrupted the wait: begin the turn again (the signal may ask for a stop).
    Interrupted,
}

/// Sleeps in `poll` until an event or `wakeup`, or does not sleep at all while `busy` (peers
/// cut off, say, wait to be read). Arms the loop's `alarm`, if it has one, for `wakeup`
/// first: `epoll`'s timeout is whole milliseconds, the alarm is finer. `now` is the clock as
/// the loop read it just before.
pub fn wait(
    poll: &mut Poll,
    events: &mut Events,
    alarm: Option<&mut Alarm>,
    wakeup: Option<Instant>,
    busy: bool,
    now: Instant,
) -> Result<Waited, SetupError> {
    let until = timeout_until(wakeup, now);
    if let Some(alarm) = alarm {
        alarm.arm_in(wakeup.zip(until));
    }
    let timeout = match busy {
        true => Some(Duration::ZERO),
        false => until,
    };
    let alarm_ahead = wakeup.filter(|at| !busy && *at > now);
    woke(poll.poll(events, timeout), alarm_ahead)
}

/// What `poll`'s result means for the turn.
fn woke(polled: io::Result<()>, alarm_ahead: Option<Instant>) -> Result<Waited, SetupError> {
    match polled {
        Ok(()) => Ok(Waited::Woke { alarm_ahead }),
        Err(e) if interrupted(&e) => Ok(Waited::Interrupted),
        Err(source) => Err(SetupError::EventLoop {
            what: "poll wait",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_differ_by_generation() {
        assert_eq!(split(token(7, 3)), (7, 3));
        assert_eq!(split(token(0, u32::MAX)), (0, u32::MAX));
        assert_ne!(token(7, 3), token(7, 4));
        // The loops' fixed tokens are the top few values; a key would have to reach
        // 2^32 - 16 (a billion times the open-file limit) to collide with them.
        assert!(token(0xffff_ffef, u32::MAX).0 < usize::MAX - 15);
    }

    #[test]
    fn generations_count_up_and_wrap() {
        let mut generations = Generations::default();
        assert_eq!(generations.peek(), 0);
        assert_eq!(generations.issue(), 0);
        assert_eq!(generations.peek(), 1, "peeking hands nothing out");
        assert_eq!(generations.issue(), 1);
        let mut generations = Generations(u32::MAX);
        assert_eq!(generations.issue(), u32::MAX);
        assert_eq!(generations.issue(), 0, "wraps instead of overflowing");
    }

    #[test]
    fn read_budget_fits_the_scratch_buffer() {
        // Sixteen full reads a turn: one peer can take at most 1 MiB before others are read.
        assert_eq!(READ_BUFFER * READS_PER_TURN, 1 << 20);
    }

    fn drain(list: &mut CutOff) -> Vec<usize> {
        list.start_turn();
        std::iter::from_fn(|| list.pop()).collect()
    }

    #[test]
    fn a_cut_off_peer_is_queued_once_and_read_first_next_turn_in_order() {
        let mut list = CutOff::default();
        assert!(list.is_empty());
        assert!(list.defer(9));
        assert!(list.defer(200));
        assert!(!list.defer(9), "queued once");
        assert!(list.is_queued(9) && list.is_queued(200));
        assert!(!list.is_queued(8) && !list.is_queued(100_000));
        assert!(!list.is_empty(), "the loop must not sleep");
        assert_eq!(drain(&mut list), vec![9, 200]);
        assert!(list.is_empty());
        assert!(!list.is_queued(9), "being read this turn, no longer queued");
        assert_eq!(drain(&mut list), Vec::<usize>::new(), "read once");
    }

    #[test]
    fn a_peer_cut_off_again_while_read_waits_for_the_turn_after() {
        let mut list = CutOff::default();
        list.defer(3);
        list.defer(4);
        list.start_turn();
        assert_eq!(list.pop(), Some(3));
        assert!(list.defer(3), "still had more: deferred again");
        assert!(list.is_queued(3), "its event this turn is skipped");
        assert_eq!(list.pop(), Some(4), "not read twice in one turn");
        assert_eq!(list.pop(), None);
        assert_eq!(drain(&mut list), vec![3]);
    }

    #[test]
    fn turns_allocate_nothing_once_the_lists_have_grown() {
        let mut list = CutOff::default();
        // Two turns to warm up: the two lists swap places each turn.
        for _ in 0..2 {
            for key in 0..100 {
                list.defer(key);
            }
            drain(&mut list);
        }
        let capacity = (
            list.next.capacity(),
            list.now.capacity(),
            list.queued.capacity(),
        );
        for _ in 0..10 {
            for key in 0..100 {
                list.defer(key);
            }
            assert_eq!(drain(&mut list).len(), 100);
        }
        let after = (
            list.next.capacity(),
            list.now.capacity(),
            list.queued.capacity(),
        );
        assert_eq!(after, capacity);
    }

    #[test]
    fn the_earliest_deadline_wins_and_none_is_no_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(earliest([None, None]), None);
        assert_eq!(earliest([None, Some(t0 + ms(5))]), Some(t0 + ms(5)));
        assert_eq!(
            earliest([Some(t0 + ms(5)), None, Some(t0 + ms(2)), Some(t0 + ms(9))]),
            Some(t0 + ms(2))
        );
    }

    /// A wait that must return well before `wakeup` (ten seconds off: only a hang guard).
    fn quick_wait(busy: bool, wakeup: Instant) -> (Waited, Duration) {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(4);
        let now = Instant::now();
        let waited = wait(&mut poll, &mut events, None, Some(wakeup), busy, now).unwrap();
        (waited, now.elapsed())
    }

    #[test]
    fn a_busy_loop_does_not_sleep_and_measures_no_oversleep() {
        let far = Instant::now() + Duration::from_secs(10);
        let (waited, took) = quick_wait(true, far);
        assert!(
            took < Duration::from_secs(5),
            "it slept towards the deadline"
        );
        assert_eq!(waited, Waited::Woke { alarm_ahead: None });
    }

    #[test]
    fn a_deadline_already_due_is_not_slept_for_and_is_the_loops_lag() {
        let past = Instant::now() - Duration::from_millis(5);
        let (waited, took) = quick_wait(false, past);
        assert!(took < Duration::from_secs(5));
        assert_eq!(waited, Waited::Woke { alarm_ahead: None });
    }

    #[test]
    fn a_sleep_towards_a_deadline_ahead_reports_it_and_ends_by_it() {
        let soon = Instant::now() + Duration::from_millis(2);
        let (waited, _) = quick_wait(false, soon);
        assert_eq!(
            waited,
            Waited::Woke {
                alarm_ahead: Some(soon)
            }
        );
        assert!(
            Instant::now() >= soon,
            "the poll timeout is rounded up, never early"
        );
    }

    #[test]
    fn an_interrupted_poll_begins_the_turn_again_and_other_errors_end_the_loop() {
        let eintr = io::Error::from(io::ErrorKind::Interrupted);
        assert_eq!(woke(Err(eintr), None).unwrap(), Waited::Interrupted);
        let broken = io::Error::from(io::ErrorKind::InvalidInput);
        assert!(matches!(
            woke(Err(broken), None),
            Err(SetupError::EventLoop {
                what: "poll wait",
                ..
            })
        ));
    }
}
