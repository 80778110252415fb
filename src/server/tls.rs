//! TLS in the server's loop (`--tls-cert`): the handshake stage between accept (or a PROXY
//! header) and the core, and the byte path of admitted TLS peers: socket → [`TlsSession`]
//! → the core's `handle_read`; the core's output → [`TlsSession`] → socket; close_notify
//! before our side is shut (`End Connection`, stop).
//!
//! Owns the handshaking sockets and their sessions (by the core's key for their wait), each
//! admitted peer's session (boxed, by core key), and two scratch buffers for the whole loop
//! (plaintext, ciphertext), so that an idle TLS peer owns no buffer. A handshake's deadline
//! ([`HANDSHAKE_DEADLINE`]), the cap on handshakes in flight ([`HANDSHAKE_CAP`]) and which
//! one is closed at it (the oldest) are the core's (`core::waiting`, stage `TlsHandshake`:
//! a row of its one timer table); so is counting refusals. They are logged here,
//! rate-limited.
//! The session's logic is `cores::tls`'s, the configuration `edge::tls`'s; the loop calls
//! in at a few marked hooks (`accept_all`, `admit_proxied`, `read_peer`, `carry_out`,
//! `on_socket_event`, the turn's deadlines and events).

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::core::{Arrival, Refusal as AcceptRefusal, Stage, WaitEnd, WaitKey};
use super::Server;
use crate::cores::escape::Escaped;
use crate::cores::protocol;
use crate::cores::subject;
use crate::cores::tls::{sealed_len, Refusal, TlsSession, MAX_FRAGMENT};
use crate::edge::conn::{read_once, write_until_blocked, ReadResult};
use crate::edge::net::describe;
use crate::edge::turn::{split, token, READ_BUFFER};

pub use super::core::waiting::{HANDSHAKE_CAP, HANDSHAKE_DEADLINE};

/// Marks a handshaking peer's key in its token: below `proxied`'s mark (bit 31), above any
/// core key; the loop's fixed tokens (at the very top) are matched before this is asked.
const HANDSHAKING: usize = 1 << 30;

/// What a TLS peer turned away at accept for `--max-connections` is told instead of the
/// plain peer's `Error: server full` line (which it could not read, and which no session
/// exists to seal): a fatal `internal_error` alert (RFC 8446 §6.2: a condition of the server,
/// not of the peer), in the plaintext record every alert before a handshake travels in
/// (content type 21, version 0x0303, 2 bytes). No crypto: nothing has been negotiated yet.
/// A peer outside `--allow` is told nothing, as a plain one.
const FULL_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 80];

/// A peer in its handshake.
struct Shaking {
    /// Its wait in the core (`Stage::TlsHandshake`).
    wk: WaitKey,
    stream: TcpStream,
    /// Its real address (the PROXY header's, if any).
    addr: SocketAddr,
    session: Box<TlsSession>,
    /// Plaintext that came with the handshake's last flight, for the core once admitted.
    early: Vec<u8>,
}

/// An admitted peer's TLS state.
struct Peer {
    session: Box<TlsSession>,
    /// Our side is to be shut once the ciphertext waiting (close_notify last) is out.
    shut_pending: bool,
}

pub(super) struct Tls {
    config: Arc<rustls::ServerConfig>,
    /// By the key of their wait in the core.
    shaking: Vec<Option<Shaking>>,
    /// By core key.
    peers: Vec<Option<Peer>>,
    /// The plaintext of one read, gathered for one `handle_read`.
    plain: Vec<u8>,
    /// The ciphertext of one record being written.
    sealed: Vec<u8>,
}

impl Tls {
    pub(super) fn new(config: Arc<rustls::ServerConfig>) -> Tls {
        Tls {
            config,
            shaking: Vec::new(),
            peers: Vec::new(),
            plain: Vec::with_capacity(READ_BUFFER),
            sealed: vec![0; sealed_len(MAX_FRAGMENT)],
        }
    }

    fn shaking(&mut self, wk: WaitKey) -> Option<&mut Shaking> {
        self.shaking
            .get_mut(wk.key)
            .and_then(Option::as_mut)
            .filter(|s| s.wk == wk)
    }

    fn take_shaking(&mut self, wk: WaitKey) -> Option<Shaking> {
        self.shaking(wk)?;
        self.shaking.get_mut(wk.key).and_then(Option::take)
    }

    fn peer(&mut self, key: usize) -> Option<&mut Peer> {
        self.peers.get_mut(key).and_then(Option::as_mut)
    }

    /// Whether the admitted peer `key` speaks TLS (one handed over plain by a process
    /// without `--tls-cert` does not).
    pub(super) fn has_session(&self, key: usize) -> bool {
        self.peers.get(key).is_some_and(Option::is_some)
    }
}

/// Whether `token` is a handshaking peer's (ask after the loop's fixed tokens and
/// `proxied::is_waiting`).
pub(super) fn is_handshaking(token: Token) -> bool {
    let (key, _) = split(token);
    key & HANDSHAKING != 0 && key < 0xffff_0000
}

/// Writes what `session` has waiting; `Ok(true)` when nothing waits any more.
fn flush(stream: &mut TcpStream, session: &mut TlsSession) -> io::Result<bool> {
    if session.outgoing().is_empty() {
        return Ok(true);
    }
    let written = write_until_blocked(stream, session.outgoing())?;
    session.sent(written);
    Ok(session.outgoing().is_empty())
}

impl Server {
    /// Hook (accept, or a PROXY header read): `stream` from `addr` begins its handshake. At
    /// the cap of handshakes in flight, the core closes the oldest to make room.
    ///
    /// First it is judged as a plain peer is at accept (`--allow`, `--max-connections`):
    /// a refused peer is closed before any TLS work, so it costs no handshake CPU, and is
    /// counted and logged as a refused plain peer (told [`FULL_ALERT`] when full).
    pub(super) fn begin_handshake(
        &mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
        now: Instant,
    ) {
        if let Err(refusal) = self.core.handle_screen(addr) {
            if let AcceptRefusal::Full { .. } = refusal {
                // Best effort, as the plain line: a fresh socket has room for 7 bytes.
                let _ = stream.write(&FULL_ALERT);
            }
            return self.refuse(stream, addr, refusal, now);
        }
        let Some(tls) = &self.tls else {
            return;
        };
        let session = match TlsSession::new(tls.config.clone()) {
            Ok(session) => Box::new(session),
            Err(e) => {
                warn!("{addr}: cannot start a TLS session: {e}");
                return;
            }
        };
        let wk = match self.core.handle_arrival(now, Stage::TlsHandshake) {
            Arrival::Waiting(wk) => wk,
            Arrival::Full => return,
        };
        // The oldest handshake, if closed to make room, goes before its key is reused.
        self.carry_out(now);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token(HANDSHAKING | wk.key, wk.generation),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("{addr}: cannot watch the connection: {}", describe(&e));
            self.core.handle_wait_over(Stage::TlsHandshake, wk, false);
            return;
        }
        let Some(tls) = &mut self.tls else {
            return;
        };
        if tls.shaking.len() <= wk.key {
            tls.shaking.resize_with(wk.key + 1, || None);
        }
        tls.shaking[wk.key] = Some(Shaking {
            wk,
            stream,
            addr,
            session,
            early: Vec::new(),
        });
        self.advance_handshake(wk, now);
    }

    /// Hook (`accept_all`): whether [`HANDSHAKE_CAP`] handshakes are in flight, so that a
    /// newcomer would close the oldest.
    pub(super) fn handshakes_full(&self) -> bool {
        self.tls.is_some() && self.core.waiting(Stage::TlsHandshake) >= HANDSHAKE_CAP
    }

    /// Hook (the turn's events): an event for a handshaking peer.
    pub(super) fn on_handshake_event(&mut self, token: Token, now: Instant) {
        let (key, generation) = split(token);
        let wk = WaitKey {
            key: key & !HANDSHAKING,
            generation,
        };
        self.advance_handshake(wk, now);
    }

    /// Hook (`carry_out`, `Action::EndWait`): the core ended `wk`'s handshake (its time ran
    /// out, or it was the oldest at the cap) and counted it; it is closed.
    pub(super) fn end_handshake(&mut self, wk: WaitKey, end: WaitEnd, now: Instant) {
        let Some(mut shaking) = self.tls.as_mut().and_then(|t| t.take_shaking(wk)) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut shaking.stream);
        let refusal = match end {
            WaitEnd::TimedOut => Refusal::Deadline,
            WaitEnd::Evicted { .. } => Refusal::Evicted,
        };
        self.log_handshake_refusal(shaking.addr, refusal, now);
    }

    /// Reads what the peer sent, answers it, and admits the peer once its handshake is
    /// over (or refuses it).
    fn advance_handshake(&mut self, wk: WaitKey, now: Instant) {
        loop {
            let Some(tls) = &mut self.tls else {
                return;
            };
            let Some(shaking) = tls.shaking(wk) else {
                return;
            };
            if flush(&mut shaking.stream, &mut shaking.session).is_err() {
                if let Some(shaking) = tls.take_shaking(wk) {
                    self.refuse_handshake(shaking, Refusal::Closed, now);
                }
                return;
            }
            if shaking.session.is_established() {
                if let Some(shaking) = tls.take_shaking(wk) {
                    self.core.handle_wait_over(Stage::TlsHandshake, wk, false);
                    self.admit_tls(shaking, now);
                }
                return;
            }
            let read = read_once(&mut shaking.stream, &mut self.read_buf);
            let refusal = match read {
                ReadResult::Data(n) => {
                    let early = &mut shaking.early;
                    match shaking
                        .session
                        .receive(&mut self.read_buf[..n], |p| early.extend_from_slice(p))
                    {
                        Ok(_) => continue,
                        Err(refusal) => refusal,
                    }
                }
                ReadResult::WouldBlock => return,
                ReadResult::Eof | ReadResult::Failed(_) => Refusal::Closed,
            };
            if let Some(mut shaking) = tls.take_shaking(wk) {
                // Best effort: the alert that tells the peer why.
                let _ = flush(&mut shaking.stream, &mut shaking.session);
                self.refuse_handshake(shaking, refusal, now);
            }
            return;
        }
    }

    /// The loop closes `shaking` for `refusal`; the core counts it.
    fn refuse_handshake(&mut self, shaking: Shaking, refusal: Refusal, now: Instant) {
        let Shaking {
            wk,
            mut stream,
            addr,
            ..
        } = shaking;
        let _ = self.poll.registry().deregister(&mut stream);
        self.core.handle_tls_refused(wk, refusal);
        self.log_handshake_refusal(addr, refusal, now);
    }

    fn log_handshake_refusal(&mut self, addr: SocketAddr, refusal: Refusal, now: Instant) {
        if self.log_limiter.allow(refusal.name(), now) {
            warn!(
                "{addr}: TLS handshake refused: {} (at most one such line a second)",
                refusal.describe()
            );
        }
    }

    /// The handshake is over: the core takes the peer in, it is watched under a core token,
    /// and what it sent with its last flight (and since) is read for the core at once.
    fn admit_tls(&mut self, shaking: Shaking, now: Instant) {
        let Shaking {
            mut stream,
            addr,
            mut session,
            early,
            ..
        } = shaking;
        let _ = self.poll.registry().deregister(&mut stream);
        if session.resumed() {
            self.core.stats_mut().on_tls_resumed();
        }
        if self.core.is_stopping() {
            session.close_notify();
            let _ = flush(&mut stream, &mut session);
            return;
        }
        if !self.core.has_room() {
            // The last places went to others while it shook hands (it was judged at accept,
            // but a handshake holds no place): told as a plain peer is, but inside TLS
            // (`refuse` writes nothing to a TLS peer); the core refuses and counts it in
            // `admit_real`.
            let line = [protocol::SERVER_FULL, b"\n"].concat();
            if let Some(tls) = &mut self.tls {
                if let Some(n) = session.seal(&line, &mut tls.sealed) {
                    session.hold(&tls.sealed[..n]);
                }
            }
            session.close_notify();
            let _ = flush(&mut stream, &mut session);
        }
        let subject = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| subject::subject(leaf));
        let Some(key) = self.admit_real(stream, addr, now) else {
            return;
        };
        if let Some(subject) = subject {
            if let Some(held) = self.peer_lines.admit("tls subject", now) {
                info!(
                    "{addr}: TLS client certificate {}{held}",
                    Escaped(subject.as_bytes())
                );
            }
            if let Some(events) = &mut self.events {
                events.record_tls_subject(now, addr, &subject);
            }
        }
        let Some(tls) = &mut self.tls else {
            return;
        };
        if tls.peers.len() <= key {
            tls.peers.resize_with(key + 1, || None);
        }
        tls.peers[key] = Some(Peer {
            session,
            shut_pending: false,
        });
        if !early.is_empty() {
            self.core.handle_read(now, key, &early);
            self.carry_out(now);
        }
        self.read_peer(key, now);
    }

    /// Whether `key` speaks TLS.
    pub(super) fn is_tls(&self, key: usize) -> bool {
        self.tls.as_ref().is_some_and(|t| t.has_session(key))
    }

    /// Hook (`read_peer`): `n` bytes of ciphertext were read into the read buffer for the
    /// TLS peer `key`: their plaintext goes to the core in one `handle_read`; close_notify
    /// is the end of its stream.
    pub(super) fn tls_read(&mut self, key: usize, n: usize, now: Instant) {
        let Some(tls) = &mut self.tls else {
            return;
        };
        let Tls { peers, plain, .. } = tls;
        let Some(peer) = peers.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        plain.clear();
        let result = peer
            .session
            .receive(&mut self.read_buf[..n], |p| plain.extend_from_slice(p));
        if !plain.is_empty() {
            self.core.handle_read(now, key, &tls.plain);
            self.carry_out(now);
        }
        match result {
            Ok(received) if received.peer_closed => self.core.handle_eof(now, key),
            Ok(_) => {}
            Err(_) => {
                // Best effort: the alert, then the core ends the peer as broken.
                if let (Some(peer), Some(socket)) = (
                    self.tls.as_mut().and_then(|t| t.peer(key)),
                    self.sockets.get_mut(key).and_then(Option::as_mut),
                ) {
                    let _ = flush(&mut socket.stream, &mut peer.session);
                }
                self.core.handle_error(now, key, io::ErrorKind::InvalidData);
            }
        }
        // Handshake messages after the handshake (a key update) may want answering.
        self.tls_flush(key, now);
    }

    /// Hook (`carry_out`, `Action::Write`): writes the core's output for `key` sealed;
    /// returns how much plaintext was taken, as `write_until_blocked` does for plain peers.
    /// Ciphertext the kernel refused is kept (one record at most) and written first next
    /// time; until it is out no more plaintext is taken, so the core's own limits hold.
    pub(super) fn tls_write(&mut self, key: usize) -> io::Result<usize> {
        let (Some(tls), Some(socket)) = (
            &mut self.tls,
            self.sockets.get_mut(key).and_then(Option::as_mut),
        ) else {
            return Ok(0);
        };
        let Tls { peers, sealed, .. } = tls;
        let Some(peer) = peers.get_mut(key).and_then(Option::as_mut) else {
            return Ok(0);
        };
        if !flush(&mut socket.stream, &mut peer.session)? {
            return Ok(0);
        }
        let mut taken = 0;
        for chunk in self.core.output(key).chunks(MAX_FRAGMENT) {
            let Some(n) = peer.session.seal(chunk, sealed) else {
                return Err(io::ErrorKind::BrokenPipe.into());
            };
            let written = write_until_blocked(&mut socket.stream, &sealed[..n])?;
            taken += chunk.len();
            if written < n {
                peer.session.hold(&sealed[written..n]);
                break;
            }
        }
        Ok(taken)
    }

    /// Hook (`carry_out`, `Action::ShutdownWrite`): close_notify, then our side is shut
    /// once it (and anything before it) is out.
    pub(super) fn tls_shutdown(&mut self, key: usize, now: Instant) {
        if let Some(peer) = self.tls.as_mut().and_then(|t| t.peer(key)) {
            peer.session.close_notify();
            peer.shut_pending = true;
        }
        self.tls_flush(key, now);
    }

    /// Hook (a writable event, before the core's): writes ciphertext waiting for `key`, and
    /// shuts our side if that was waiting for it.
    pub(super) fn tls_flush(&mut self, key: usize, now: Instant) {
        let (Some(tls), Some(socket)) = (
            &mut self.tls,
            self.sockets.get_mut(key).and_then(Option::as_mut),
        ) else {
            return;
        };
        let Some(peer) = tls.peer(key) else {
            return;
        };
        match flush(&mut socket.stream, &mut peer.session) {
            Ok(true) if peer.shut_pending => {
                peer.shut_pending = false;
                let _ = socket.stream.shutdown(Shutdown::Write);
            }
            Ok(_) => {}
            Err(e) => {
                self.core.handle_error(now, key, e.kind());
                self.carry_out(now);
            }
        }
    }

    /// Hook (`carry_out`, `Action::Close`, before the socket goes): the session goes with
    /// the socket. The core cannot see ciphertext the kernel refused (it counts plaintext
    /// as written once sealed), so what is left of it, close_notify included, gets one last
    /// try first.
    pub(super) fn tls_close(&mut self, key: usize) {
        let Some(slot) = self.tls.as_mut().and_then(|t| t.peers.get_mut(key)) else {
            return;
        };
        if let (Some(mut peer), Some(socket)) = (
            slot.take(),
            self.sockets.get_mut(key).and_then(Option::as_mut),
        ) {
            if flush(&mut socket.stream, &mut peer.session).unwrap_or(false) && peer.shut_pending {
                let _ = socket.stream.shutdown(Shutdown::Write);
            }
        }
    }
}
