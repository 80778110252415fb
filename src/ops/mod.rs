//! Operations: what an operator reads and what a service manager hears. Counters and
//! summaries, the metrics exposition, the event log, log lines, systemd readiness.

pub mod events;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod stats;
