//! Operations: what an operator reads and what a service manager hears. Counters and
//! summaries, the metrics exposition, the event log, log lines, systemd readiness, and the
//! HTML report of a load run.

pub mod events;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod stats;
