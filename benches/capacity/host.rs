//! The host's side of a capacity run, read from `/proc`: memory (`MemAvailable`, the
//! kernel's `Slab`), open files against `fs.file-max`, the slab caches that grew, and the CPU
//! the whole machine used (to tell other processes' load from ours).

use std::collections::BTreeMap;

use crate::proc::{field_kb, machine_cpu_ticks};
pub use crate::proc::{slab_caches, socket_caches_grown};

/// One reading of `/proc/meminfo` and `/proc/sys/fs/file-nr`.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub available_kib: u64,
    pub slab_kib: u64,
    pub unreclaimable_kib: u64,
    /// Open files in the whole system, and the most there may be (`fs.file-max`).
    pub files: u64,
    pub file_max: u64,
}

impl Host {
    pub fn read() -> Result<Host, String> {
        let meminfo =
            std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
        let kib =
            |name| field_kb(&meminfo, name).ok_or_else(|| format!("no {name} in /proc/meminfo"));
        let file_nr = std::fs::read_to_string("/proc/sys/fs/file-nr")
            .map_err(|e| format!("/proc/sys/fs/file-nr: {e}"))?;
        let nr: Vec<u64> = file_nr
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [files, _, file_max] = nr[..] else {
            return Err(format!("unexpected /proc/sys/fs/file-nr: {file_nr:?}"));
        };
        Ok(Host {
            available_kib: kib("MemAvailable:")?,
            slab_kib: kib("Slab:")?,
            unreclaimable_kib: kib("SUnreclaim:")?,
            files,
            file_max,
        })
    }
}

/// The caches that grew most from `before` to `after`, as `name size` per connection.
pub fn grown_caches(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    connections: usize,
    top: usize,
) -> Vec<(String, f64)> {
    let mut grown: Vec<(String, f64)> = after
        .iter()
        .map(|(name, &bytes)| {
            let was = before.get(name).copied().unwrap_or(0);
            let per = (bytes as f64 - was as f64) / connections as f64;
            (name.clone(), per)
        })
        .filter(|(_, per)| *per >= 1.0)
        .collect();
    grown.sort_by(|a, b| b.1.total_cmp(&a.1));
    grown.truncate(top);
    grown
}

/// The machine's CPU time charged to processes so far (user + nice + system; not interrupt
/// time, which no process is charged for), in clock ticks.
pub fn machine_busy_ticks() -> Option<u64> {
    let v = machine_cpu_ticks()?;
    Some(v.first()? + v.get(1)? + v.get(2)?)
}
