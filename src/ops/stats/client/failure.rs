//! Why a load client's connection attempt failed: the reasons it counts, from the error a
//! connect returned. Counting is the parent module's.

use std::io;

/// Why a connection attempt failed, counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectFailure {
    /// Nothing listening (`ECONNREFUSED`).
    Refused,
    /// The handshake did not finish in time.
    TimedOut,
    /// No local address or port left (`EADDRNOTAVAIL`): ephemeral ports exhausted, or a
    /// `--bind` address this host does not have.
    AddrNotAvailable,
    /// The process or the system ran out of file descriptors (`EMFILE`, `ENFILE`).
    TooManyOpenFiles,
    /// Anything else.
    Other,
}

impl ConnectFailure {
    /// Every reason, in the order of the counters.
    pub const ALL: [ConnectFailure; 5] = [
        ConnectFailure::Refused,
        ConnectFailure::TimedOut,
        ConnectFailure::AddrNotAvailable,
        ConnectFailure::TooManyOpenFiles,
        ConnectFailure::Other,
    ];

    /// Classifies the error a connect (or its completion check) returned.
    pub fn from_io(e: &io::Error) -> ConnectFailure {
        const ENFILE: i32 = 23;
        const EMFILE: i32 = 24;
        if cfg!(unix) && matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
            return ConnectFailure::TooManyOpenFiles;
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            io::ErrorKind::AddrNotAvailable => ConnectFailure::AddrNotAvailable,
            _ => ConnectFailure::Other,
        }
    }

    /// Words for a person, also the key in [`ClientSummary::failed_by_reason`](super::ClientSummary::failed_by_reason).
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::TimedOut => "timed out",
            ConnectFailure::AddrNotAvailable => "address not available",
            ConnectFailure::TooManyOpenFiles => "too many open files",
            ConnectFailure::Other => "other",
        }
    }
}
