//! The server parent's view of its workers' counts, as pure code: the last report of each
//! running worker, and the totals of the workers that have ended, so that what the parent
//! shows is one [`ServerStats`] merged from exact counts (histograms whole), and its
//! counters never go down. A worker that dies has its last reported totals folded into the
//! parent's; the worker started in its place counts from zero on top of them. Counts a
//! killed worker made after its last report (at most one ask interval) are lost.
//!
//! With `--tls-cert`, an old worker that handed over after a live upgrade serves on the TLS
//! peers it kept, beside the new worker of its slot, which carries every count up to the
//! handover. Such a worker reports only what happened since the handover (its kept peers
//! still open, their lines, bytes and closes, handshakes completed): kept apart by process
//! and added, so that each peer's accept and close is counted exactly once.
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
    /// Old workers keeping TLS peers after a handover, by (slot, generation): their last
    /// report of what happened since the handover.
    kept: Vec<(usize, u32, Report)>,
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

    /// Old worker `generation` of `slot`, which handed over and keeps TLS peers, reports
    /// what happened since the handover: it replaces that process's earlier such report.
    pub fn report_kept(&mut self, slot: usize, generation: u32, report: Report) {
        match self
            .kept
            .iter_mut()
            .find(|(s, g, _)| (*s, *g) == (slot, generation))
        {
            Some((_, _, last)) => *last = report,
            None => self.kept.push((slot, generation, report)),
        }
    }

    /// Process `generation` of `slot` has ended: what it reported since a handover becomes
    /// the parent's (nothing when it made no such report). Its peers are gone with it.
    pub fn retire_kept(&mut self, slot: usize, generation: u32) {
        let Some(at) = self
            .kept
            .iter()
            .position(|(s, g, _)| (*s, *g) == (slot, generation))
        else {
            return;
        };
        let (_, _, Report { mut stats, gauges }) = self.kept.swap_remove(at);
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
        let kept = self.kept.iter().map(|(_, _, report)| report);
        for report in self.live.iter().flatten().chain(kept) {
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

    /// A live upgrade with TLS peers kept: the new worker carries the counts at the handover
    /// (5 accepted, 3 of them kept TLS peers, none moved), the old one reports only what
    /// happened since (2 of its kept peers closed, 1 still open, 4 lines). While both run,
    /// and once the old one has ended, each accept and close is counted once and what is open
    /// is the sum; the old one's earlier report (from before the handover) is gone with its
    /// slot's.
    #[test]
    fn an_old_worker_keeping_tls_peers_adds_what_happened_since_the_handover_once() {
        let mut tally = Tally::default();
        tally.report(0, report(5, 3, 0));
        let mut carried = report(5, 0, 0);
        carried.stats.closed_by_peer = 2;
        carried.stats.tls_kept = 3;
        tally.report(0, carried);
        let mut since = report(0, 3, 1);
        tally.report_kept(0, 1, since.clone());
        since.stats.open = 1;
        since.stats.closed_by_peer = 2;
        since.stats.lines_echoed = 4;
        tally.report_kept(0, 1, since);
        let both = tally.merged();
        assert_eq!(both.stats.accepted, 5);
        assert_eq!(both.stats.open, 1);
        assert_eq!(both.stats.closed_by_peer, 4);
        assert_eq!(both.stats.lines_echoed, 4);
        assert_eq!(both.stats.tls_kept, 3);
        assert_eq!(both.gauges.log_lines_dropped, 1);
        tally.retire_kept(0, 2);
        assert_eq!(tally.merged().stats, both.stats, "another process: nothing");
        tally.retire_kept(0, 1);
        let after = tally.merged();
        assert_eq!(after.stats.accepted, 5);
        assert_eq!(after.stats.open, 0);
        assert_eq!(after.stats.closed_by_peer, 4);
        assert_eq!(after.stats.lines_echoed, 4);
        tally.retire_kept(0, 1);
        assert_eq!(tally.merged().stats, after.stats, "retired once");
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
