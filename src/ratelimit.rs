//! Rate limits for log lines that a flood could otherwise repeat thousands of times a second
//! (accept failures, refused peers): at most one line per reason per period.
//!
//! Owns only the bookkeeping; it reads no clock (callers pass `now`).

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogLimiter {
    period: Duration,
    /// A handful of fixed reasons, so a short list beats a map.
    last: Vec<(&'static str, Instant)>,
}

impl LogLimiter {
    pub fn new(period: Duration) -> LogLimiter {
        LogLimiter {
            period,
            last: Vec::new(),
        }
    }

    /// True if a line for `reason` may be logged at `now`; records it if so.
    pub fn allow(&mut self, reason: &'static str, now: Instant) -> bool {
        match self.last.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, at)) if now.saturating_duration_since(*at) < self.period => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                self.last.push((reason, now));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_period_per_reason() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut limiter = LogLimiter::new(second);
        assert!(limiter.allow("accept", t0));
        assert!(!limiter.allow("accept", t0 + second / 2));
        assert!(
            limiter.allow("full", t0 + second / 2),
            "reasons are limited separately"
        );
        assert!(!limiter.allow("accept", t0 + second - Duration::from_nanos(1)));
        assert!(limiter.allow("accept", t0 + second));
    }
}
