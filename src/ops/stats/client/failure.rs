//! Why a load client's connection attempt failed (from the error a connect returned) or its
//! TLS failed (from rustls' error): the reasons it counts. Counting is the parent module's.

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

/// Why a TLS connection of the client failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate does not chain to `--tls-ca`.
    UnknownCa,
    /// It is not for `--tls-server-name`.
    NameMismatch,
    /// It has expired or is not valid yet.
    Expired,
    /// The server sent an alert: it refused us (our certificate, or none, with mutual TLS).
    RefusedByServer,
    /// Anything else rustls refused.
    Protocol,
    /// The server closed the connection before the handshake was done.
    Closed,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 6] = [
        TlsFailure::UnknownCa,
        TlsFailure::NameMismatch,
        TlsFailure::Expired,
        TlsFailure::RefusedByServer,
        TlsFailure::Protocol,
        TlsFailure::Closed,
    ];

    pub fn of(error: &rustls::Error) -> TlsFailure {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(e) => match e {
                C::UnknownIssuer | C::BadSignature => TlsFailure::UnknownCa,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsFailure::Expired,
                _ => TlsFailure::Protocol,
            },
            rustls::Error::AlertReceived(_) => TlsFailure::RefusedByServer,
            _ => TlsFailure::Protocol,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::UnknownCa => "tls: server certificate not from --tls-ca",
            TlsFailure::NameMismatch => "tls: server certificate not for the server name",
            TlsFailure::Expired => "tls: server certificate expired",
            TlsFailure::RefusedByServer => "tls: refused by the server (alert)",
            TlsFailure::Protocol => "tls: protocol error",
            TlsFailure::Closed => "tls: closed during the handshake",
        }
    }
}
