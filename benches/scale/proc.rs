//! Reading `/proc`: a server's RSS, CPU time, open descriptors and context switches, the CPU
//! counters of the machine and of this process, the clock tick they are counted in, and the
//! kernel's slab memory. Every figure about a server is read here, from outside the process,
//! the same way for both servers.

use std::collections::BTreeMap;
use std::ops::Range;

/// Fields of a `/proc/.../stat` line, counted after the command name (which may hold spaces
/// and parentheses): 11 is utime, 12 stime, 13 cutime, 14 cstime, all in clock ticks.
const UTIME_STIME: Range<usize> = 11..13;
const UTIME_TO_CSTIME: Range<usize> = 11..15;

/// Clock ticks per second, the unit of every CPU figure read here (`getconf CLK_TCK`);
/// `None` if that cannot be run or says nothing usable (callers assume Linux's usual 100).
pub fn clk_tck() -> Option<u64> {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
}

fn read_proc(pid: u32, file: &str) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .map_err(|e| format!("reading /proc/{pid}/{file}: {e}"))
}

/// The number after `name` on the line that starts with it (`VmRSS:   1234 kB` → 1234).
pub fn field_kb(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The sum of the clock-tick `fields` of a `/proc/.../stat` line; `None` if any is missing.
fn stat_ticks(stat: &str, fields: Range<usize>) -> Option<u64> {
    let after_name = stat.rsplit_once(')')?.1;
    let all: Vec<&str> = after_name.split_whitespace().collect();
    all.get(fields)?.iter().map(|f| f.parse::<u64>().ok()).sum()
}

pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = read_proc(pid, "status")?;
    field_kb(&status, "VmRSS:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Open descriptors: the size of /proc/PID/fd (Linux ≥ 6.2 reports the count there, cheaply),
/// else its entries counted.
pub fn fd_count(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/fd");
    let size = std::fs::metadata(&dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .len();
    if size > 0 {
        return Ok(size);
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    Ok(entries.count() as u64)
}

/// utime + stime of the whole process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    stat_ticks(&read_proc(pid, "stat")?, UTIME_STIME)
        .ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))
}

/// Clock ticks used by this process and by its children once reaped (the servers).
pub fn own_cpu_ticks() -> Option<u64> {
    stat_ticks(
        &std::fs::read_to_string("/proc/self/stat").ok()?,
        UTIME_TO_CSTIME,
    )
}

/// The machine's CPU time in clock ticks, from the first line of `/proc/stat`: user, nice,
/// system, idle, iowait, irq, softirq, steal, then the guest fields.
pub fn machine_cpu_ticks() -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    Some(
        cpu.split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect(),
    )
}

/// Voluntary + involuntary context switches summed over the process's threads (the
/// process-level status file counts only its main thread).
pub fn context_switches(pid: u32) -> Result<u64, String> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let path = entry
            .map_err(|e| format!("{dir}: {e}"))?
            .path()
            .join("status");
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue; // the thread just exited
        };
        total += field_kb(&status, "voluntary_ctxt_switches:").unwrap_or(0);
        total += field_kb(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    }
    Ok(total)
}

/// The kernel's slab memory (`Slab:` in /proc/meminfo: every socket's kernel structures among
/// much else), for the whole machine, in bytes.
pub fn slab_bytes() -> Result<u64, String> {
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    field_kb(&meminfo, "Slab:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no Slab in /proc/meminfo".to_string())
}

/// Bytes in use in each slab cache (`active_objs × objsize` from `/proc/slabinfo`: objects
/// allocated, not the free room in their slabs), if readable (it needs root).
pub fn slab_caches() -> Option<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let mut caches = BTreeMap::new();
    for line in text.lines().skip(2) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(objs), Some(size)) = (f.first(), f.get(1), f.get(3)) else {
            continue;
        };
        let (Ok(objs), Ok(size)) = (objs.parse::<u64>(), size.parse::<u64>()) else {
            continue;
        };
        caches.insert(name.to_string(), objs * size);
    }
    Some(caches)
}

/// The slab caches of a socket itself, one of each per end of a connection: its TCP state, its
/// inode, its file and its epoll entry. Not the dentries: sockets have one each, but a
/// process that lists `/proc/PID/fd` adds one per descriptor too, with a proc inode.
pub const SOCKET_CACHES: [&str; 4] = ["TCP", "sock_inode_cache", "filp", "eventpoll_epi"];

/// Growth of the [`SOCKET_CACHES`] from `before` to `after`, in bytes, if all are there.
pub fn socket_caches_grown(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Option<i64> {
    SOCKET_CACHES
        .iter()
        .map(|name| Some(*after.get(*name)? as i64 - *before.get(*name)? as i64))
        .sum()
}
