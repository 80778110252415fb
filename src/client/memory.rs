//! The client's own resident memory, for the summary's bytes per connection.

/// Resident set size of this process in bytes (`VmRSS` in `/proc/self/status`), or 0 where
/// there is no `/proc`.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_some_memory() {
        if cfg!(target_os = "linux") {
            assert!(super::rss_bytes() > 100_000);
        }
    }
}
