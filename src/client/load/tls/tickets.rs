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

    /// Tickets the server has given since the start (kept or not; a TLS 1.2 session counts).
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
        // A TLS 1.2 session is reused, not taken: it counts as the server's ticket.
        let mut inner = self.lock();
        inner.received += 1;
        inner.tls12.insert(server_name, value);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::Resumption;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConnection};

    use super::TicketStore;

    /// Our server's configuration (two stateless tickets per handshake) and a client that
    /// keeps its tickets in `store`.
    fn configs(store: Arc<TicketStore>) -> (Arc<rustls::ServerConfig>, Arc<ClientConfig>) {
        crate::edge::tls::localhost::pair(Resumption::store(store))
    }

    /// One handshake in memory, until both ends are quiet (the tickets read): its kind.
    fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) -> HandshakeKind {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = ClientConnection::new(client.clone(), name).unwrap();
        let mut s = ServerConnection::new(server.clone()).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            s.read_tls(&mut &wire[..]).unwrap();
            s.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).unwrap();
            }
            let mut reader = &wire[..];
            while !reader.is_empty() {
                c.read_tls(&mut reader).unwrap();
            }
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        c.handshake_kind().unwrap()
    }

    /// A full handshake fills the store with the server's two tickets; the next handshakes
    /// resume, each taking one ticket (given out once) and getting two; the store keeps no
    /// more than its capacity (the oldest dropped), while counting every ticket received.
    #[test]
    fn tickets_are_kept_for_later_connections_within_the_bound() {
        let store = Arc::new(TicketStore::with_capacity(3));
        let (server, client) = configs(store.clone());
        assert_eq!(handshake(&server, &client), HandshakeKind::Full);
        assert_eq!((store.waiting(), store.received()), (2, 2));
        assert_eq!(handshake(&server, &client), HandshakeKind::Resumed);
        assert_eq!((store.waiting(), store.received()), (3, 4));
        assert_eq!(handshake(&server, &client), HandshakeKind::Resumed);
        assert_eq!((store.waiting(), store.received()), (3, 6));
    }

    /// rustls' default (8 tickets per server name) would keep 8: the store is sized per
    /// connection of the run, two each.
    #[test]
    fn a_run_keeps_two_tickets_per_connection() {
        assert_eq!(TicketStore::for_connections(10_000).capacity, 20_000);
        assert_eq!(TicketStore::for_connections(1).capacity, 16);
    }
}
