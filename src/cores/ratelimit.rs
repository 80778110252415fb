//! Rate limits for log lines that peers or a flood could otherwise repeat thousands of times a
//! second (accept failures, refused peers, per-peer lines such as "connected"): at most
//! `burst` lines per reason per period, and a count of the lines held back, given with the
//! next line let through ("… (41 similar lines suppressed)").
//!
//! Owns only the bookkeeping; it reads no clock (callers pass `now`) and logs nothing itself.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use heartbeat::cores::ratelimit::LogLimiter;
//! let mut limiter = LogLimiter::with_burst(Duration::from_secs(1), 10);
//! let now = Instant::now();
//! if let Some(suppressed) = limiter.admit("connected", now) {
//!     log::info!("127.0.0.1:5000 connected{suppressed}");
//! }
//! ```

use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogLimiter {
    period: Duration,
    burst: u32,
    /// A handful of fixed reasons, so a short list beats a map.
    reasons: Vec<Reason>,
    /// Lines held back over the limiter's life, every reason, reported or not.
    held_back: u64,
}

#[derive(Debug)]
struct Reason {
    name: &'static str,
    /// When the current period began: the first line let through after the last one ended.
    since: Instant,
    /// Lines let through in the current period.
    used: u32,
    /// Lines held back since the last one let through.
    suppressed: u64,
}

/// How many lines of a reason were held back before the one being logged. Displays as
/// nothing when none were, else as ` (N similar lines suppressed)`, so it can end any line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            1 => write!(f, " (1 similar line suppressed)"),
            n => write!(f, " ({n} similar lines suppressed)"),
        }
    }
}

impl LogLimiter {
    /// One line per reason per `period`.
    pub fn new(period: Duration) -> LogLimiter {
        LogLimiter::with_burst(period, 1)
    }

    /// `burst` lines per reason per `period` (at least one).
    pub fn with_burst(period: Duration, burst: u32) -> LogLimiter {
        LogLimiter {
            period,
            burst: burst.max(1),
            reasons: Vec::new(),
            held_back: 0,
        }
    }

    /// `Some` if a line for `reason` may be logged at `now`, with how many were held back
    /// since the last one let through (end the line with it); `None` if it is held back, in
    /// which case it is counted.
    pub fn admit(&mut self, reason: &'static str, now: Instant) -> Option<Suppressed> {
        let index = match self.reasons.iter().position(|r| r.name == reason) {
            Some(index) => index,
            None => {
                self.reasons.push(Reason {
                    name: reason,
                    since: now,
                    used: 0,
                    suppressed: 0,
                });
                self.reasons.len() - 1
            }
        };
        let entry = &mut self.reasons[index];
        if now.saturating_duration_since(entry.since) >= self.period {
            entry.since = now;
            entry.used = 0;
        }
        if entry.used >= self.burst {
            entry.suppressed += 1;
            self.held_back += 1;
            return None;
        }
        entry.used += 1;
        Some(Suppressed(std::mem::take(&mut entry.suppressed)))
    }

    /// True if a line for `reason` may be logged at `now`; records it if so, and counts it
    /// as held back if not (the count goes with the next [`admit`](Self::admit)).
    pub fn allow(&mut self, reason: &'static str, now: Instant) -> bool {
        self.admit(reason, now).is_some()
    }

    /// Lines held back over the limiter's whole life, every reason, whether or not a later
    /// line has reported them: for a run's summary.
    pub fn held_back(&self) -> u64 {
        self.held_back
    }

    /// Lines held back and not yet reported, per reason, clearing them: for a last line when
    /// the loop stops (a reason that went quiet never gets its next line).
    pub fn take_suppressed(&mut self) -> Vec<(&'static str, u64)> {
        self.reasons
            .iter_mut()
            .filter(|r| r.suppressed > 0)
            .map(|r| (r.name, std::mem::take(&mut r.suppressed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const NS: Duration = Duration::from_nanos(1);

    #[test]
    fn once_per_period_per_reason() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(SECOND);
        assert!(limiter.allow("accept", t0));
        assert!(!limiter.allow("accept", t0 + SECOND / 2));
        assert!(
            limiter.allow("full", t0 + SECOND / 2),
            "reasons are limited separately"
        );
        assert!(!limiter.allow("accept", t0 + SECOND - NS));
        assert!(limiter.allow("accept", t0 + SECOND));
    }

    #[test]
    fn a_burst_per_period_then_held_back_lines_are_counted_on_the_next_one() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::with_burst(SECOND, 3);
        for n in 0..3 {
            let at = t0 + n * Duration::from_millis(10);
            assert_eq!(limiter.admit("connected", at), Some(Suppressed(0)));
        }
        for n in 0..41 {
            let at = t0 + Duration::from_millis(100) + n * Duration::from_millis(10);
            assert_eq!(limiter.admit("connected", at), None);
        }
        assert_eq!(
            limiter.admit("closed", t0 + SECOND / 2),
            Some(Suppressed(0))
        );
        assert_eq!(limiter.admit("connected", t0 + SECOND - NS), None);
        assert_eq!(
            limiter.admit("connected", t0 + SECOND),
            Some(Suppressed(42)),
            "the first line of the next period says how many were held back"
        );
        assert_eq!(limiter.admit("connected", t0 + SECOND), Some(Suppressed(0)));
    }

    #[test]
    fn a_period_starts_at_the_first_line_after_a_quiet_spell() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::with_burst(SECOND, 2);
        assert!(limiter.allow("r", t0));
        let later = t0 + 10 * SECOND;
        assert!(limiter.allow("r", later));
        assert!(limiter.allow("r", later + SECOND / 2));
        assert!(!limiter.allow("r", later + SECOND - NS));
        assert!(limiter.allow("r", later + SECOND));
    }

    #[test]
    fn counts_never_reported_are_taken_at_the_end() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(SECOND);
        assert!(limiter.allow("a", t0));
        assert!(!limiter.allow("a", t0));
        assert!(!limiter.allow("a", t0));
        assert!(limiter.allow("b", t0));
        assert_eq!(limiter.take_suppressed(), vec![("a", 2)]);
        assert!(limiter.take_suppressed().is_empty(), "taken once");
        assert_eq!(limiter.held_back(), 2, "the run's total stays");
        assert_eq!(limiter.admit("a", t0 + SECOND), Some(Suppressed(0)));
    }

    #[test]
    fn the_count_reads_as_the_end_of_a_line() {
        assert_eq!(format!("x{}", Suppressed(0)), "x");
        assert_eq!(
            format!("x{}", Suppressed(1)),
            "x (1 similar line suppressed)"
        );
        assert_eq!(
            format!("x{}", Suppressed(7)),
            "x (7 similar lines suppressed)"
        );
        assert_eq!(LogLimiter::with_burst(SECOND, 0).burst, 1);
    }
}
