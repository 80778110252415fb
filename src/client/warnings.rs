//! Warnings a hostile server could otherwise provoke thousands of times a second (over-long
//! lines, peers not reading): at most one line per reason per second, and the next line
//! that is let through says how many like it were held back.
//!
//! Owns the counts; deciding when is `ratelimit`'s. It reads no clock and writes no log: the
//! caller passes `now` and logs the line it gets back.

use std::time::{Duration, Instant};

use crate::cores::ratelimit::LogLimiter;

#[derive(Debug)]
pub struct Warnings {
    limiter: LogLimiter,
    /// Held back since the last line let through, per reason (a handful of fixed reasons).
    held: Vec<(&'static str, u64)>,
    total_held: u64,
}

impl Default for Warnings {
    fn default() -> Self {
        Warnings {
            limiter: LogLimiter::new(Duration::from_secs(1)),
            held: Vec::new(),
            total_held: 0,
        }
    }
}

impl Warnings {
    /// The line to log for a warning about `reason` at `now`, or `None` if one was logged
    /// less than a second ago (then it is counted). `message` is only called when needed.
    pub fn line(
        &mut self,
        reason: &'static str,
        now: Instant,
        message: impl FnOnce() -> String,
    ) -> Option<String> {
        let slot = match self.held.iter().position(|(r, _)| *r == reason) {
            Some(i) => i,
            None => {
                self.held.push((reason, 0));
                self.held.len() - 1
            }
        };
        if !self.limiter.allow(reason, now) {
            self.held[slot].1 += 1;
            self.total_held += 1;
            return None;
        }
        let held = std::mem::take(&mut self.held[slot].1);
        let text = message();
        Some(match held {
            0 => text,
            n => format!("{text} ({n} more like this not logged)"),
        })
    }

    /// Warnings held back over the whole run.
    pub fn held_back(&self) -> u64 {
        self.total_held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_second_then_the_count_held_back() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Warnings::default();
        let say = |w: &mut Warnings, reason, at| w.line(reason, at, || format!("{reason}!"));
        assert_eq!(say(&mut w, "long", t0).as_deref(), Some("long!"));
        for i in 1..=1000 {
            assert_eq!(say(&mut w, "long", t0 + ms(i % 999)), None);
        }
        assert_eq!(
            say(&mut w, "cap", t0 + ms(5)).as_deref(),
            Some("cap!"),
            "own limit"
        );
        assert_eq!(
            say(&mut w, "long", t0 + ms(1000)).as_deref(),
            Some("long! (1000 more like this not logged)")
        );
        assert_eq!(w.held_back(), 1000);
        assert_eq!(say(&mut w, "long", t0 + ms(2000)).as_deref(), Some("long!"));
    }
}
