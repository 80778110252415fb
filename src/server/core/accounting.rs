//! Counting peers' buffer memory against `--max-buffered` after every change, and doing what
//! the budget says: pause the peer that grew, resume the paused, close the largest holders,
//! ask for freed memory to go back to the OS. Part of [`ServerCore`]; the rules are
//! `super::budget`'s.

use std::time::Instant;

use super::{Action, Event, Lifecycle, Reason, ServerCore};
use crate::server::budget::Verdict;

impl ServerCore {
    /// Counts `key`'s buffers in the budget again, after they may have changed, and does
    /// what the budget says.
    pub(super) fn account(&mut self, now: Instant, key: usize) {
        let Some(record) = self.conns.get_mut(key) else {
            return;
        };
        let before = record.accounted;
        let after = u32::try_from(record.buffers.heap_bytes()).unwrap_or(u32::MAX);
        if before == after {
            return;
        }
        record.accounted = after;
        self.budget_changed(now, key, before as usize, after as usize);
    }

    pub(super) fn budget_changed(&mut self, now: Instant, key: usize, before: usize, after: usize) {
        match self.budget.change(now, before, after) {
            Verdict::Fine => {}
            Verdict::Pause => {
                if let Some(record) = self.conns.get_mut(key) {
                    if matches!(record.lifecycle, Lifecycle::Open { .. }) {
                        record.lifecycle = Lifecycle::BudgetPaused;
                        self.budget_paused.push(key);
                    }
                }
            }
            Verdict::Resume => {
                for key in std::mem::take(&mut self.budget_paused) {
                    let limit = self.settings.max_write_buffer;
                    let Some(record) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if record.lifecycle != Lifecycle::BudgetPaused {
                        continue;
                    }
                    if record.buffers.unsent() >= limit {
                        record.lifecycle = Lifecycle::ReadPaused;
                    } else {
                        record.lifecycle = Lifecycle::Open { spoke: true };
                        self.actions.push_back(Action::Read(key));
                    }
                }
            }
        }
        if after < before && self.budget.take_trim() {
            self.actions.push_back(Action::ReleaseMemory);
        }
    }

    /// The budget stayed exceeded past its grace: closes the peers holding the most until
    /// `excess` bytes are freed. (Rare, so it may scan and sort.)
    pub(super) fn close_largest(&mut self, now: Instant, excess: usize) {
        let mut holders: Vec<(u32, usize)> = self
            .conns
            .iter()
            .filter(|(_, record)| record.accounted > 0)
            .map(|(key, record)| (record.accounted, key))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let mut freed = 0;
        for (held, key) in holders {
            if freed >= excess {
                break;
            }
            freed += held as usize;
            let held = held as usize;
            self.report(key, Event::OverBudget { held });
            self.close(now, key, Reason::OverBudget);
        }
    }
}
