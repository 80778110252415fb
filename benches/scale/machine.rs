//! The machine the bench runs on: CPU model and count, memory, kernel, clock ticks per
//! second; how busy it is before the bench starts, and how much CPU other processes took
//! while it ran (both skew every figure); how late it wakes a thread whose timer is due
//! (the floor under every timer figure).

use std::thread;
use std::time::{Duration, Instant};

use heartbeat::edge::alarm::{Alarm, ALARM};
use heartbeat::ops::stats::{Latencies, Percentiles};
use mio::{Events, Poll};

use crate::proc;

pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
    pub memory: String,
    pub clk_tck: u64,
    pub clk_note: Option<String>,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".to_string(), |k| k.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = proc::field_kb(&meminfo, "MemTotal:").map_or("?".to_string(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
        let parsed = proc::clk_tck();
        Machine {
            cpus: thread::available_parallelism().map_or(1, |n| n.get()),
            model,
            kernel,
            memory,
            clk_tck: parsed.unwrap_or(100),
            clk_note: parsed
                .is_none()
                .then(|| "`getconf CLK_TCK` failed; assuming 100".to_string()),
        }
    }

    /// How busy the machine is before the bench starts, sampled over one second.
    pub fn background_load(&self) -> String {
        let busy_and_total = || -> Option<(u64, u64)> {
            let v = proc::machine_cpu_ticks()?;
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3)? + v.get(4)?;
            Some((total - idle, total))
        };
        let before = busy_and_total();
        thread::sleep(Duration::from_secs(1));
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
        match (before, busy_and_total()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                let cpus = self.cpus as f64;
                let busy = (b1 - b0) as f64 / (t1 - t0) as f64 * cpus;
                let warning = if busy > 0.2 {
                    "  WARNING: the machine is busy; the figures will be noisy"
                } else {
                    ""
                };
                format!(
                    "background load before start: {busy:.2} of {cpus:.0} CPUs busy over 1 s, \
                     load average {}{warning}",
                    loadavg.join(" ")
                )
            }
            _ => "background load before start: unknown".to_string(),
        }
    }
}

/// CPU used by the whole machine and by this bench with its children (the servers, once
/// reaped): the difference is what other processes took while the bench ran.
pub struct OthersCpu {
    at: Instant,
    machine_ticks: u64,
    own_ticks: u64,
}

impl OthersCpu {
    pub fn now() -> Option<OthersCpu> {
        let v = proc::machine_cpu_ticks()?;
        // user + nice + system: not interrupt time, which is not charged to processes.
        let machine_ticks = v.first()? + v.get(1)? + v.get(2)?;
        Some(OthersCpu {
            at: Instant::now(),
            machine_ticks,
            own_ticks: proc::own_cpu_ticks()?,
        })
    }

    pub fn report(&self, end: &OthersCpu, clk_tck: u64) -> String {
        let secs = (end.at - self.at).as_secs_f64();
        let machine = end.machine_ticks.saturating_sub(self.machine_ticks);
        let own = end.own_ticks.saturating_sub(self.own_ticks);
        let others = machine.saturating_sub(own) as f64 / clk_tck as f64;
        format!(
            "\nwhile the bench ran ({secs:.0} s): other processes used about {others:.1} CPU-s \
             ({:.2} CPUs on average){}",
            others / secs,
            if others / secs > 0.2 {
                "  WARNING: figures are skewed by other load"
            } else {
                ""
            }
        )
    }
}

/// How late this machine wakes a thread whose timer is due: a bare loop that sleeps one
/// `tick` at a time for `span`, the way heartbeat's loop sleeps (`poll` with the crate's
/// timerfd alarm), doing nothing else. No server's timers can be more punctual than this.
pub fn wake_up_floor(tick: Duration, span: Duration) -> Result<Percentiles, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut alarm = Alarm::new(poll.registry()).map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(4);
    let mut late = Latencies::default();
    let end = Instant::now() + span;
    let mut due = Instant::now() + tick;
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(late.percentiles());
        }
        if now >= due {
            late.record(now - due);
            due = now + tick;
        }
        alarm.arm(Some(due), now);
        poll.poll(&mut events, Some(due - now))
            .map_err(|e| format!("poll: {e}"))?;
        if events.iter().any(|event| event.token() == ALARM) {
            alarm.on_event();
        }
    }
}
