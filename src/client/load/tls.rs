//! `--tls`: the client's connections speak TLS (rustls' buffered `ClientConnection`; the
//! client's memory per connection is not the one the project's goals are about). The
//! handshake starts once TCP is established and is timed on its own; a connection that fails
//! in TLS is counted by [`TlsFailure`]. At most [`MAX_HANDSHAKES_IN_FLIGHT`] connections are
//! between `connect()` and the end of their handshake: new ones wait (the connect rate's
//! schedule with them), so a fast `--connect-rate` never outruns the server's handshakes.
//!
//! Resumption (unless `--no-tls-resume`): tickets are kept in a [`TicketStore`] for the run,
//! and a warm-up decides how a burst gets them: a new connection starts when a ticket waits
//! in the store for it; else only while fewer than [`WARM_UP_FULL`] connections that will
//! bring tickets are unresolved (full handshakes in flight, connections not yet at their
//! handshake beyond the store's tickets, handshakes done whose tickets have not come): a slow
//! start, the tickets double each round trip. Tickets that are only promised are not counted
//! on: a busy server reads our last flight (and sends tickets) late, and connections started
//! on the promise found none and were full. A server that has given no ticket
//! [`NO_TICKETS_WAIT`] after the first handshake was done is not waited for. A handshake is
//! counted full or resumed as rustls saw it (`handshake_kind`).
//!
//! Part of the loop in `load` (an `impl` block of the same `Client`), called at marked
//! hooks: `opened`, `on_readable`, `on_writable`, `send`, and the half-close fault.

mod tickets;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;
use mio::net::TcpStream;
use rustls::client::Resumption;
use rustls::{ClientConnection, HandshakeKind};

use super::Client;
use crate::client::peer::ServerClose;
use crate::client::ClientTls;
use crate::edge::net::{interrupted, would_block};
use crate::edge::turn::READS_PER_TURN;
use crate::ops::stats::client::TlsFailure;

/// Connections in their TCP connect or TLS handshake at most. A server finishes handshakes at
/// the rate its CPU allows; connecting faster only queues them, and past its own cap (this
/// server's `HANDSHAKE_CAP`, 1,024) it closes the oldest: a burst of 10,000 connects then
/// loses most of them and the rate measured is that of failures. Half that cap keeps this
/// server busy (on loopback a few dozen would) and leaves room for other clients; at 50 ms
/// of round trip it still allows ~10,000 handshakes a second.
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 512;

/// With resumption and no ticket in the store or on its way, full handshakes in flight at
/// most: enough to keep a loopback server busy while the first tickets come (each handshake
/// brings two), few enough that a burst is not mostly full handshakes.
pub const WARM_UP_FULL: usize = 16;

/// With resumption, how long after the first handshake done a server that has sent no
/// ticket is waited for: a busy one sends its first within milliseconds.
pub const NO_TICKETS_WAIT: Duration = Duration::from_secs(1);

pub use tickets::TicketStore;

/// `--tls`'s configuration for a run of `connections`: with a [`TicketStore`] of its own
/// when `tls.resume` (returned, for the warm-up to see), else with resumption off.
pub(super) fn resumption(tls: &mut ClientTls, connections: usize) -> Option<Arc<TicketStore>> {
    let mut config = (*tls.config).clone();
    let store = tls
        .resume
        .then(|| Arc::new(TicketStore::for_connections(connections)));
    config.resumption = match &store {
        Some(store) => Resumption::store(store.clone()),
        None => Resumption::disabled(),
    };
    tls.config = Arc::new(config);
    store
}

/// Writes what `tls` has for the server until the kernel takes no more.
pub(super) fn flush(stream: &mut TcpStream, tls: &mut ClientConnection) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if interrupted(&e) => {}
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a read of ciphertext leaves the connection open (bytes came, or none yet).
fn read_more(read: &io::Result<usize>) -> bool {
    match read {
        Ok(n) => *n > 0,
        Err(e) => would_block(e),
    }
}

impl Client {
    /// Whether new connections must wait for handshakes in flight to end.
    pub(super) fn at_handshake_cap(&self) -> bool {
        self.handshakes_in_flight >= MAX_HANDSHAKES_IN_FLIGHT || self.warming_up()
    }

    /// Whether a new connection waits for tickets (the module's `//!`).
    fn warming_up(&self) -> bool {
        let Some(store) = &self.tickets else {
            return false;
        };
        // Connections not at their handshake yet each take a ticket there if one is waiting.
        let waiting = store.waiting();
        if self.pending < waiting {
            return false;
        }
        let full = self.handshakes_in_flight - self.pending - self.resumed_in_flight;
        let unresolved = full + (self.pending - waiting) + self.awaiting_tickets;
        unresolved >= WARM_UP_FULL && !self.no_tickets_from_server(store)
    }

    /// The server has sent no ticket [`NO_TICKETS_WAIT`] after our first handshake was done.
    fn no_tickets_from_server(&self, store: &TicketStore) -> bool {
        store.received() == 0
            && self
                .first_done
                .is_some_and(|t| t.elapsed() >= NO_TICKETS_WAIT)
    }

    /// Hook (`next_connect_at`): when a connection held by the warm-up may start without the
    /// events it waits for (a server that sends no tickets), if ever.
    pub(super) fn warm_up_deadline(&self) -> Option<Instant> {
        let store = self.tickets.as_ref()?;
        if store.received() > 0 || !self.warming_up() {
            return None;
        }
        self.first_done.map(|t| t + NO_TICKETS_WAIT)
    }

    /// Hook (`track`): `key`'s `connect()` was made; with `--tls` it counts as in flight.
    pub(super) fn handshake_begun(&mut self, key: usize) {
        if self.config.tls.is_some() {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.shaking = true;
                self.handshakes_in_flight += 1;
                self.pending += 1;
            }
        }
    }

    /// Hook (the handshake done, `forget`): `key` no longer counts as in flight, nor as
    /// awaiting tickets.
    pub(super) fn handshake_over(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if std::mem::take(&mut conn.shaking) {
                self.handshakes_in_flight -= 1;
                if conn.tls.is_none() {
                    self.pending -= 1;
                }
            }
            if std::mem::take(&mut conn.awaiting) {
                self.awaiting_tickets -= 1;
            }
            if std::mem::take(&mut conn.resuming) {
                self.resumed_in_flight -= 1;
            }
        }
    }

    /// Hook (`opened`): TCP is up; the handshake begins (its first flight goes out now).
    pub(super) fn tls_start(&mut self, key: usize, now: Instant) -> bool {
        let Some(tls) = &self.config.tls else {
            return true;
        };
        let conn = &mut self.conns[key];
        let tickets_before = self.tickets.as_ref().map_or(0, |store| store.waiting());
        let session = match ClientConnection::new(tls.config.clone(), tls.server_name.clone()) {
            Ok(session) => Box::new(session),
            Err(e) => {
                self.tls_failed(key, &e, now);
                return false;
            }
        };
        if conn.shaking {
            self.pending -= 1;
            // It took a ticket (one loop thread: nothing else touched the store meanwhile).
            if self.tickets.as_ref().map_or(0, |store| store.waiting()) < tickets_before {
                conn.resuming = true;
                self.resumed_in_flight += 1;
            }
        }
        conn.tls = Some(session);
        conn.handshake_since = Some(now);
        self.tls_flush(key, now)
    }

    /// Writes what the connection's TLS has waiting. False if that ended the connection.
    pub(super) fn tls_flush(&mut self, key: usize, now: Instant) -> bool {
        let conn = &mut self.conns[key];
        let Some(tls) = conn.tls.as_mut() else {
            return true;
        };
        if let Err(e) = flush(&mut conn.stream, tls) {
            match conn.handshake_since {
                Some(_) => self.tls_failed_as(key, TlsFailure::Closed, now),
                None => self.failed(key, &e, now),
            }
            return false;
        }
        true
    }

    /// Hook (`send`): one encoded line into the connection's TLS, then out.
    pub(super) fn tls_send(&mut self, key: usize, bytes: &[u8], now: Instant) -> bool {
        let conn = &mut self.conns[key];
        if let Some(tls) = conn.tls.as_mut() {
            if let Err(e) = tls.writer().write_all(bytes) {
                self.failed(key, &e, now);
                return false;
            }
        }
        self.tls_flush(key, now)
    }

    /// Hook (`on_readable` for a TLS connection): reads ciphertext until the kernel has no
    /// more (or the turn's share is used), handing the plaintext to `on_bytes`.
    pub(super) fn tls_readable(&mut self, key: usize, closed: bool) {
        let now = Instant::now();
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if !conn.peer.reads() {
                if closed {
                    self.closed_by_server(key, now, ServerClose::EndOfStream);
                }
                return;
            }
            let Some(tls) = conn.tls.as_mut() else {
                return;
            };
            let read = loop {
                match tls.read_tls(&mut conn.stream) {
                    Err(e) if interrupted(&e) => continue,
                    other => break other,
                }
            };
            match read {
                Ok(_) | Err(_) if conn.handshake_since.is_some() && !read_more(&read) => {
                    // Closed or reset before the handshake was done: the server refused us
                    // without an alert (not TLS to it, its deadline, too many in flight).
                    return self.tls_failed_as(key, TlsFailure::Closed, now);
                }
                Ok(0) => return self.closed_by_server(key, now, ServerClose::EndOfStream),
                Ok(_) => {}
                Err(e) if would_block(&e) => return,
                Err(e) => return self.failed(key, &e, now),
            }
            let received = self.tickets.as_ref().map(|store| store.received());
            if let Err(e) = tls.process_new_packets() {
                // The alert that tells the server why, best effort.
                let _ = flush(&mut conn.stream, tls);
                return self.tls_failed(key, &e, now);
            }
            let tickets_came = self.tickets.as_ref().map(|store| store.received()) > received;
            if !tls.is_handshaking() {
                if let Some(since) = conn.handshake_since.take() {
                    let resumed = tls.handshake_kind() == Some(HandshakeKind::Resumed);
                    self.stats
                        .on_handshake(now.saturating_duration_since(since), resumed);
                    self.first_done.get_or_insert(now);
                    self.handshake_over(key);
                    // The server sends its tickets after our last flight: on their way.
                    if self.tickets.is_some() && !tickets_came {
                        self.conns[key].awaiting = true;
                        self.awaiting_tickets += 1;
                    }
                }
            }
            if tickets_came {
                self.tickets_arrived(key);
            }
            if !self.tls_plaintext(key, now) || !self.tls_flush(key, now) {
                return;
            }
        }
        self.cut_off.defer(key);
    }

    /// Hands the plaintext waiting in `key`'s TLS to `on_bytes`. False if the connection
    /// ended (close_notify is the server's end of stream).
    fn tls_plaintext(&mut self, key: usize, now: Instant) -> bool {
        loop {
            let Some(tls) = self.conns.get_mut(key).and_then(|c| c.tls.as_mut()) else {
                return false;
            };
            match tls.reader().read(&mut self.read_buf) {
                Ok(0) => {
                    self.closed_by_server(key, now, ServerClose::EndOfStream);
                    return false;
                }
                Ok(n) => {
                    // Data first: this server sent no tickets to this connection.
                    self.tickets_arrived(key);
                    if !self.on_bytes(key, n, now) {
                        return false;
                    }
                }
                Err(e) if would_block(&e) => return true,
                // The server's FIN came without close_notify: an end of stream all the same.
                Err(_) => {
                    self.closed_by_server(key, now, ServerClose::EndOfStream);
                    return false;
                }
            }
        }
    }

    /// `key`'s tickets came (or will not): a ticket is no longer counted on from it.
    fn tickets_arrived(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if std::mem::take(&mut conn.awaiting) {
                self.awaiting_tickets -= 1;
            }
        }
    }

    fn tls_failed(&mut self, key: usize, error: &rustls::Error, now: Instant) {
        let why = TlsFailure::of(error);
        if let Some(text) = self.warnings.line(why.as_str(), now, || error.to_string()) {
            warn!("{}: {text}", why.as_str());
        }
        self.tls_failed_as(key, why, now);
    }

    fn tls_failed_as(&mut self, key: usize, why: TlsFailure, now: Instant) {
        self.stats.on_tls_failed(why);
        if self.config.verbose {
            say!("Connection failed: {}", why.as_str());
        }
        self.close(key, now);
    }
}
