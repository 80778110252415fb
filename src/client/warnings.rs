//! Warnings a hostile server could otherwise provoke thousands of times a second (over-long
//! lines, peers not reading): at most one line per reason per second, and the next line
//! that is let through says how many like it were held back.
//!
//! Owns only the wording and the period; the counting and when a line may go are
//! `ratelimit`'s ([`LogLimiter`]). It reads no clock and writes no log: the caller passes
//! `now` and logs the line it gets back.

use std::time::{Duration, Instant};

use crate::cores::ratelimit::LogLimiter;

#[derive(Debug)]
pub struct Warnings {
    limiter: LogLimiter,
}

impl Default for Warnings {
    fn default() -> Self {
        Warnings {
            limiter: LogLimiter::new(Duration::from_secs(1)),
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
        let held = self.limiter.admit(reason, now)?;
        Some(format!("{}{held}", message()))
    }

    /// Warnings held back over the whole run.
    pub fn held_back(&self) -> u64 {
        self.limiter.held_back()
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
            Some("long! (1000 similar lines suppressed)")
        );
        assert_eq!(w.held_back(), 1000);
        assert_eq!(say(&mut w, "long", t0 + ms(2000)).as_deref(), Some("long!"));
        assert_eq!(w.held_back(), 1000, "a run's total, not reset by a report");
    }

    #[test]
    fn a_message_is_only_made_for_a_line_let_through() {
        let t0 = Instant::now();
        let mut w = Warnings::default();
        let mut made = 0;
        for _ in 0..5 {
            let _ = w.line("cap", t0, || {
                made += 1;
                String::new()
            });
        }
        assert_eq!(made, 1);
    }
}
