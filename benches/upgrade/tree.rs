//! A server or load client as a tree of processes, read from `/proc`: every process in its
//! process group (the bench starts each in a group of its own, and a live upgrade's new
//! process, or a `--workers` worker, inherits it), whether each still runs, the descriptors
//! they hold and the CPU they used.
//!
//! CPU is read in nanoseconds (`/proc/PID/task/*/schedstat`, the scheduler's time on the CPU:
//! user + system, where `stat`'s `utime`/`stime` come in 10 ms ticks, too coarse for a pause
//! of milliseconds), plus the children a member has reaped (`cutime` + `cstime`, in ticks). A
//! process that has exited is read as a zombie before it is reaped: its loop thread's time is
//! there; its log-writing thread's, a few lines' worth, is not. Without schedstat (a kernel
//! built without it), `utime` + `stime` in ticks.

use std::collections::BTreeSet;

use crate::proc::fd_count;

/// One process of a group.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub pid: u32,
    pub ppid: u32,
    /// Exited, not yet reaped.
    pub zombie: bool,
}

/// Fields of a `/proc/PID/stat` line after the command name: 0 state, 1 ppid, 2 pgrp,
/// 13 cutime, 14 cstime (clock ticks).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    Some(after_name.split_whitespace().map(str::to_string).collect())
}

/// Every process whose process group is `pgid`, zombies included.
pub fn members(pgid: u32) -> Vec<Member> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(f) = stat_fields(pid) else { continue };
        if f.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        found.push(Member {
            pid,
            ppid: f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0),
            zombie: f.first().is_some_and(|s| s == "Z" || s == "X"),
        });
    }
    found
}

/// The members still running.
pub fn live(pgid: u32) -> Vec<Member> {
    members(pgid).into_iter().filter(|m| !m.zombie).collect()
}

/// Whether `pid` still runs (not exited, or exited and not yet reaped).
pub fn running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z" && s != "X"))
}

/// The member at the top of the group: a live one whose parent is not a live member (after
/// a live upgrade, the new process; with `--workers`, the parent).
pub fn top(pgid: u32) -> Option<u32> {
    let live = live(pgid);
    let pids: BTreeSet<u32> = live.iter().map(|m| m.pid).collect();
    live.iter()
        .filter(|m| !pids.contains(&m.ppid))
        .map(|m| m.pid)
        .min()
}

/// Descriptors held by the live members together.
pub fn files(pgid: u32) -> u64 {
    live(pgid).iter().filter_map(|m| fd_count(m.pid).ok()).sum()
}

/// CPU time used so far by the group's members, zombies included, in nanoseconds.
pub fn cpu_ns(pgid: u32, tick_ns: u64) -> u64 {
    members(pgid)
        .iter()
        .map(|m| process_cpu_ns(m.pid, tick_ns))
        .sum()
}

fn process_cpu_ns(pid: u32, tick_ns: u64) -> u64 {
    let Some(f) = stat_fields(pid) else { return 0 };
    let ticks = |range: std::ops::Range<usize>| -> u64 {
        f.get(range)
            .unwrap_or(&[])
            .iter()
            .filter_map(|t| t.parse::<u64>().ok())
            .sum()
    };
    // Without schedstat (a kernel built without CONFIG_SCHED_INFO): utime + stime, in ticks.
    let own = schedstat_ns(pid).unwrap_or_else(|| ticks(11..13) * tick_ns);
    own + ticks(13..15) * tick_ns
}

/// The time on the CPU of the process's threads, if the kernel keeps it.
fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut ns = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread may end between the listing and the reading: it is skipped.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let task_ns = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok());
        if let Some(task_ns) = task_ns {
            ns = Some(ns.unwrap_or(0) + task_ns);
        }
    }
    ns
}
