//! The server parent's view of its workers' counts, as pure code: the last report of each
//! running worker, and the totals of the workers that have ended, so that what the parent
//! shows is one [`ServerStats`] merged from exact counts (histograms whole), and its
//! counters never go down. A worker that dies has its last reported totals folded into the
//! parent's; the worker started in its place counts from zero on top of them. Counts a
//! killed worker made after its last report (at most one ask interval) are lost.
//!
//! Owns the merge rules for workers that come and go. Does not own the messages' format
//! ([`super::server::Message`]), the processes or the endpoint.

use crate::ops::metrics::Gauges;
use crate::ops::stats::ServerStats;

/// One worker's last report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub stats: ServerStats,
    pub gauges: Gauges,
}

#[derive(Debug, Default)]
pub struct Tally {
    /// By worker slot: the last report of the worker running there now.
    live: Vec<Option<Report>>,
    /// Everything the workers that have ended counted.
    retired: ServerStats,
    retired_log_lines_dropped: u64,
    /// Live upgrades of a worker the parent gave up itself (the new binary could not be
    /// started, say), which no worker counted.
    upgrades_failed_in_parent: u64,
}

impl Tally {
    /// Worker `slot` reports `report`: it replaces that worker's earlier one.
    pub fn report(&mut self, slot: usize, report: Report) {
        if self.live.len() <= slot {
            self.live.resize(slot + 1, None);
        }
        self.live[slot] = Some(report);
    }

    /// The worker in `slot` has ended: its last totals become the parent's. Its connections
    /// are gone with it, so it adds nothing to what is open or buffered now.
    pub fn retire(&mut self, slot: usize) {
        let Some(Report { mut stats, gauges }) = self.live.get_mut(slot).and_then(Option::take)
        else {
            return;
        };
        stats.open = 0;
        self.retired.merge(&stats);
        self.retired_log_lines_dropped += gauges.log_lines_dropped;
    }

    /// A worker's live upgrade given up by the parent itself, before any worker knew of it.
    pub fn upgrade_failed_in_parent(&mut self) {
        self.upgrades_failed_in_parent += 1;
    }

    /// Everything counted so far: the retired totals and every running worker's last report.
    pub fn merged(&self) -> Report {
        let mut stats = self.retired.clone();
        stats.upgrades_failed += self.upgrades_failed_in_parent;
        let mut gauges = Gauges {
            buffered_bytes: 0,
            log_lines_dropped: self.retired_log_lines_dropped,
        };
        for report in self.live.iter().flatten() {
            stats.merge(&report.stats);
            gauges.buffered_bytes += report.gauges.buffered_bytes;
            gauges.log_lines_dropped += report.gauges.log_lines_dropped;
        }
        Report { stats, gauges }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(accepted: u64, open: u64, dropped: u64) -> Report {
        Report {
            stats: ServerStats {
                accepted,
                open,
                ..ServerStats::default()
            },
            gauges: Gauges {
                buffered_bytes: open,
                log_lines_dropped: dropped,
            },
        }
    }

    /// Two workers report; one dies and its replacement counts from zero: the merged
    /// `accepted` never goes down (400 → 400 → 401, not 400 → 202), while what is open drops
    /// by the dead worker's peers.
    #[test]
    fn counters_never_go_down_when_a_worker_dies_and_is_replaced() {
        let mut tally = Tally::default();
        tally.report(0, report(198, 10, 1));
        tally.report(1, report(202, 20, 2));
        let before = tally.merged();
        assert_eq!(before.stats.accepted, 400);
        assert_eq!(before.stats.open, 30);
        tally.retire(0);
        let after_death = tally.merged();
        assert_eq!(after_death.stats.accepted, 400);
        assert_eq!(after_death.stats.open, 20);
        assert_eq!(after_death.gauges.buffered_bytes, 20);
        assert_eq!(after_death.gauges.log_lines_dropped, 3);
        tally.report(0, report(1, 1, 0));
        let replaced = tally.merged();
        assert_eq!(replaced.stats.accepted, 401);
        assert_eq!(replaced.stats.open, 21);
        assert_eq!(replaced.gauges.log_lines_dropped, 3);
    }

    /// The merge is of exact counts: histograms whole, so the parent's percentiles are those
    /// of every worker's samples together.
    #[test]
    fn histograms_are_merged_whole() {
        let mut tally = Tally::default();
        let mut a = report(1, 0, 0);
        a.stats.detection_time.record(Duration::from_millis(10));
        let mut b = report(1, 0, 0);
        b.stats.detection_time.record(Duration::from_millis(30));
        tally.report(0, a.clone());
        tally.retire(0);
        tally.report(1, b.clone());
        let mut both = a.stats.clone();
        both.merge(&b.stats);
        assert_eq!(tally.merged().stats, both);
    }

    /// An upgrade the parent gave up itself is counted once, beside the workers' own counts,
    /// and stays counted when workers come and go.
    #[test]
    fn upgrades_given_up_by_the_parent_add_to_the_workers_own() {
        let mut tally = Tally::default();
        let mut a = report(1, 0, 0);
        a.stats.upgrades_failed = 2;
        tally.report(0, a);
        tally.upgrade_failed_in_parent();
        assert_eq!(tally.merged().stats.upgrades_failed, 3);
        tally.retire(0);
        tally.report(0, report(0, 0, 0));
        assert_eq!(tally.merged().stats.upgrades_failed, 3);
    }

    #[test]
    fn retiring_an_unknown_or_silent_worker_changes_nothing() {
        let mut tally = Tally::default();
        tally.retire(3);
        tally.report(1, report(5, 1, 0));
        tally.retire(0);
        assert_eq!(tally.merged().stats.accepted, 5);
    }
}
