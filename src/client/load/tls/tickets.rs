//! `--tls` resumption (on unless `--no-tls-resume`): the load client's [`TicketStore`], a
//! `rustls::client::ClientSessionStore` that keeps TLS 1.3 tickets for the whole run, as many
//! as its connections can use (two each, bounded), so that reconnects and later connections
//! resume (a PSK handshake with (EC)DHE: no certificate sent or checked, no signature).
//! rustls' own `ClientSessionMemoryCache` keeps 8 tickets per server name, and a load client
//! has one server name: under a burst most handshakes stayed full.
//!
//! Owns the tickets and the TLS 1.2 sessions and key-exchange hints rustls asks it to keep.
//! Does not own when a connection may start without a ticket (`load::tls`, the warm-up).
//! Each ticket is given out at most once (RFC 8446 Appendix C.4; the trait's contract).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// Tickets kept per connection of the run: the server's next ones (rustls sends two after
/// each handshake, resumed ones included) replace the one a reconnect takes.
pub const TICKETS_PER_CONNECTION: usize = 2;

/// Tickets kept at least, for a run of a few connections.
const MIN_TICKETS: usize = 16;

/// TLS 1.3 tickets for the run, newest given out first; the oldest dropped when full.
pub struct TicketStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tls13: VecDeque<(ServerName<'static>, Tls13ClientSessionValue)>,
    tls12: HashMap<ServerName<'static>, Tls12ClientSessionValue>,
    kx_hints: HashMap<ServerName<'static>, NamedGroup>,
    /// Tickets the server has given, all told.
    received: u64,
}

impl TicketStore {
    /// A store for a run of `connections`.
    pub fn for_connections(connections: usize) -> TicketStore {
        TicketStore::with_capacity(
            connections
                .saturating_mul(TICKETS_PER_CONNECTION)
                .max(MIN_TICKETS),
        )
    }

    pub fn with_capacity(capacity: usize) -> TicketStore {
        TicketStore {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Tickets waiting to be used.
    pub fn waiting(&self) -> usize {
        self.lock().tls13.len()
    }

    /// Tickets the server has given since the start (kept or not).
    pub fn received(&self) -> u64 {
        self.lock().received
    }

    /// One loop thread uses it; a panic elsewhere while it was held leaves valid data.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketStore")
            .field("capacity", &self.capacity)
            .field("tickets", &self.waiting())
            .finish()
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.lock().kx_hints.insert(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.lock().kx_hints.get(server_name).copied()
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.lock().tls12.insert(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.lock().tls12.get(server_name).cloned()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.lock().tls12.remove(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        let mut inner = self.lock();
        inner.received += 1;
        if inner.tls13.len() >= self.capacity {
            inner.tls13.pop_front();
        }
        inner.tls13.push_back((server_name, value));
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        let mut inner = self.lock();
        // A load client has one server name: the newest ticket is at the back.
        let at = inner
            .tls13
            .iter()
            .rposition(|(name, _)| name == server_name)?;
        inner.tls13.remove(at).map(|(_, value)| value)
    }
}
