//! The memory budget for all peers' buffers together (`--max-buffered`), and when to give
//! freed memory back to the operating system.
//!
//! Owns the running total of heap bytes held in peers' buffers (partial lines, unsent
//! output), what happens past the limit, and the trim decision. Does not own the buffers
//! (`conn`), which peers to pause or close (the core picks them), or the trim itself (the
//! loop calls `trim`). Takes `now` as an argument; reads no clock.
//!
//! Per-peer limits (`--max-line`, `--max-write-buffer`) bound one peer; this bounds them
//! all, as redis's `maxmemory-clients` does. Past the limit the peer that just grew stops
//! being read (its bytes wait in the kernel, where TCP flow control holds the sender back);
//! if the total is still past the limit [`GRACE`] later, the largest holders are closed.
//! Pausing comes after a read, so new peers could each still add their first read; past the
//! hard ceiling ([`CEILING_PERCENT`] of the limit) the largest are closed in the same turn.
//! Reading resumes for everyone once the total is back under [`RESUME_PERCENT`] of it.

use std::time::{Duration, Instant};

use crate::cores::timer::later;

/// How long the total may stay over the limit, with readers paused, before the largest
/// holders are closed: long enough for a burst of output to drain, short enough that a
/// flood of partial lines cannot hold the memory for long.
pub const GRACE: Duration = Duration::from_secs(1);
/// Paused peers are read again once the total is below this share of the limit, so that
/// pausing and resuming do not alternate on every read.
pub const RESUME_PERCENT: usize = 75;
/// Past this share of the limit there is no grace: a flood of new peers, each adding a read
/// before it can be paused, cannot take memory far beyond the limit even for a second.
pub const CEILING_PERCENT: usize = 125;
/// Freed buffer memory worth handing back to the operating system: glibc keeps freed heap
/// in its free lists (measured: 2,000 peers' 65,000-byte partial lines left the server at
/// 128 MB after they all left; one `malloc_trim` took it to 4.3 MB), so after this much
/// has been freed since the last trim, the loop trims.
pub const TRIM_STEP: usize = 16 << 20;
/// Once buffers hold less than this, what was freed since the last trim (if at least this
/// much) goes back too: otherwise the last step's worth would stay with the process after a
/// crowd of peers left (measured: 16 MB against a 4 MB baseline after 2,000 partial lines).
pub const TRIM_REST: usize = 1 << 20;

/// What the caller must do after a change to the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Fine,
    /// Over the limit: stop reading the peer that just grew.
    Pause,
    /// Back under the resume mark: read every paused peer again.
    Resume,
}

#[derive(Debug)]
pub struct Budget {
    limit: usize,
    total: usize,
    /// Since when the total has been over the limit.
    over_since: Option<Instant>,
    /// Since when it has been over the ceiling.
    ceiling_since: Option<Instant>,
    /// Some peers are paused for the budget.
    pausing: bool,
    /// The highest total since the last trim.
    peak_since_trim: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            total: 0,
            over_since: None,
            ceiling_since: None,
            pausing: false,
            peak_since_trim: 0,
        }
    }

    /// Bytes held now, all peers together.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Some peers are paused for the budget (until [`Verdict::Resume`]).
    pub fn is_pausing(&self) -> bool {
        self.pausing
    }

    /// One peer's holding went from `before` to `after` bytes at `now`.
    pub fn change(&mut self, now: Instant, before: usize, after: usize) -> Verdict {
        self.total = self.total.saturating_sub(before).saturating_add(after);
        self.peak_since_trim = self.peak_since_trim.max(self.total);
        if self.total > (self.limit / 100).saturating_mul(CEILING_PERCENT) {
            self.ceiling_since.get_or_insert(now);
        } else {
            self.ceiling_since = None;
        }
        if self.total > self.limit {
            self.over_since.get_or_insert(now);
            if after > before {
                self.pausing = true;
                return Verdict::Pause;
            }
            return Verdict::Fine;
        }
        self.over_since = None;
        if self.pausing && self.total <= (self.limit / 100).saturating_mul(RESUME_PERCENT) {
            self.pausing = false;
            return Verdict::Resume;
        }
        Verdict::Fine
    }

    /// When the total, if still over the limit, calls for closing the largest holders.
    pub fn deadline(&self) -> Option<Instant> {
        let grace_over = self.over_since.map(|since| later(since, GRACE));
        match (grace_over, self.ceiling_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// At `now`, how many bytes must be freed by closing peers (0: none).
    pub fn excess_at(&self, now: Instant) -> usize {
        match self.deadline() {
            Some(at) if at <= now => self.total - self.limit,
            _ => 0,
        }
    }

    /// Starts the grace over from `now`, ceiling or not.
    pub fn defer(&mut self, now: Instant) {
        self.over_since = Some(now);
        self.ceiling_since = None;
    }

    /// Whether enough was freed since the last trim to be worth one; if so, it counts as
    /// done.
    pub fn take_trim(&mut self) -> bool {
        let freed = self.peak_since_trim.saturating_sub(self.total);
        let nearly_empty = self.total < TRIM_REST && freed >= TRIM_REST;
        if freed < TRIM_STEP && !nearly_empty {
            return false;
        }
        self.peak_since_trim = self.total;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn under_the_limit_nothing_happens() {
        let t0 = Instant::now();
        let mut budget = Budget::new(100 * KIB);
        assert_eq!(budget.change(t0, 0, 60 * KIB), Verdict::Fine);
        assert_eq!(budget.change(t0, 0, 40 * KIB), Verdict::Fine);
        assert_eq!(budget.total(), 100 * KIB);
        assert_eq!(budget.deadline(), None);
    }

    #[test]
    fn the_peer_that_grows_past_the_limit_is_paused_then_the_largest_closed_after_grace() {
        let t0 = Instant::now();
        let mut budget = Budget::new(100 * KIB);
        budget.change(t0, 0, 90 * KIB);
        assert_eq!(budget.change(t0, 0, 20 * KIB), Verdict::Pause);
        assert_eq!(budget.deadline(), Some(t0 + GRACE));
        assert_eq!(budget.excess_at(t0 + GRACE - Duration::from_micros(1)), 0);
        assert_eq!(budget.excess_at(t0 + GRACE), 10 * KIB);
        // Shrinking while over pauses no one more.
        assert_eq!(budget.change(t0, 20 * KIB, 15 * KIB), Verdict::Fine);
    }

    #[test]
    fn past_the_ceiling_there_is_no_grace() {
        let t0 = Instant::now();
        let mut budget = Budget::new(100 * KIB);
        budget.change(t0, 0, 120 * KIB);
        assert_eq!(
            budget.deadline(),
            Some(t0 + GRACE),
            "over, under the ceiling"
        );
        let t1 = t0 + Duration::from_millis(10);
        budget.change(t1, 0, 10 * KIB);
        assert_eq!(budget.deadline(), Some(t1), "over the ceiling: now");
        assert_eq!(budget.excess_at(t1), 30 * KIB);
        budget.change(t1, 10 * KIB, 0);
        assert_eq!(
            budget.deadline(),
            Some(t0 + GRACE),
            "back under the ceiling"
        );
    }

    #[test]
    fn reading_resumes_only_well_under_the_limit() {
        let t0 = Instant::now();
        let mut budget = Budget::new(100 * KIB);
        budget.change(t0, 0, 101 * KIB);
        assert_eq!(budget.change(t0, 101 * KIB, 80 * KIB), Verdict::Fine);
        assert_eq!(budget.deadline(), None, "no longer over: no closing");
        assert_eq!(budget.change(t0, 80 * KIB, 75 * KIB), Verdict::Resume);
        assert_eq!(budget.change(t0, 75 * KIB, 10 * KIB), Verdict::Fine, "once");
    }

    #[test]
    fn a_trim_follows_a_large_release_once() {
        let t0 = Instant::now();
        let mut budget = Budget::new(usize::MAX);
        budget.change(t0, 0, 40 << 20);
        assert!(!budget.take_trim(), "nothing freed yet");
        budget.change(t0, 40 << 20, 30 << 20);
        assert!(!budget.take_trim(), "10 MiB freed: not worth it");
        budget.change(t0, 30 << 20, 20 << 20);
        assert!(budget.take_trim(), "20 MiB freed");
        assert!(!budget.take_trim(), "counted as done");
        budget.change(t0, 20 << 20, 10 << 20);
        assert!(!budget.take_trim(), "10 MiB more, still 10 MiB held");
        budget.change(t0, 10 << 20, 0);
        assert!(
            budget.take_trim(),
            "everything gone: the rest goes back too"
        );
    }
}
