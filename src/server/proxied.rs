//! `--proxy-protocol`: an accepted peer waits here, before the core sees it, until it has sent
//! a PROXY protocol v2 header (`crate::cores::proxy`) naming the real client; then the core takes it
//! in under that address, so `--allow`, log lines and the summary all use it. A peer that
//! sends anything else, closes, or says nothing for [`HEADER_DEADLINE`] is closed and counted
//! (`rejected_proxy_header`); so is the oldest waiting peer when a newcomer arrives at the
//! cap (`Settings::max_header_waits`): silent sockets cannot keep a real peer out. Part of
//! the loop: it owns these waiting sockets and their bytes; their deadlines, the cap and
//! what happens at it are the core's (`core::waiting`, stage `ProxyHeader`), the parsing is
//! `proxy`'s, every decision about an admitted peer the core's.
//!
//! Only the header's own bytes are read here (the parser says how many it needs), so the
//! peer's first data stays in the kernel; it is read for the core right after admission.

use std::net::SocketAddr;
use std::time::Instant;

use log::warn;
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::core::waiting::HEADER_DEADLINE;
use super::core::{Arrival, Stage, WaitEnd, WaitKey};
use super::Server;
use crate::cores::proxy::{self, Parsed};
use crate::edge::conn::{read_once, ReadResult};
use crate::edge::turn::{split, token};

/// Marks a waiting peer's key in its token: core keys stay far below it, and the loop's fixed
/// tokens (at the very top) are matched before this is asked.
const WAITING: usize = 1 << 31;

struct Waiting {
    stream: TcpStream,
    addr: SocketAddr,
    header: Vec<u8>,
    wk: WaitKey,
}

/// Peers waiting for their header (by the core's key for their wait), and the real
/// addresses of peers admitted through one.
#[derive(Default)]
pub(super) struct Handshakes {
    enabled: bool,
    waiting: Vec<Option<Waiting>>,
    /// By core key: the real address of the peer admitted under it, with the generation of
    /// its socket (an entry for an earlier socket in the slot is stale and ignored).
    real: Vec<Option<(u32, SocketAddr)>>,
    /// While a peer is being admitted: the generation its socket will get and its real
    /// address (the core reports it connected before its key is known here).
    admitting: Option<(u32, SocketAddr)>,
}

impl Handshakes {
    pub(super) fn new(enabled: bool) -> Handshakes {
        Handshakes {
            enabled,
            ..Handshakes::default()
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The real client of the peer under core key `key` whose socket has `generation`.
    pub(super) fn real_addr(&self, key: usize, generation: u32) -> Option<SocketAddr> {
        match (self.real.get(key), self.admitting) {
            (Some(Some((g, addr))), _) if *g == generation => Some(*addr),
            (_, Some((g, addr))) if g == generation => Some(addr),
            _ => None,
        }
    }

    /// Keeps `real` as the client of the peer under `key` whose socket has `generation` (a
    /// peer taken over in a live upgrade, whose header was read by the old process).
    pub(super) fn remember(&mut self, key: usize, generation: u32, real: SocketAddr) {
        if self.real.len() <= key {
            self.real.resize(key + 1, None);
        }
        self.real[key] = Some((generation, real));
    }

    fn get_mut(&mut self, wk: WaitKey) -> Option<&mut Waiting> {
        self.waiting
            .get_mut(wk.key)
            .and_then(Option::as_mut)
            .filter(|w| w.wk == wk)
    }

    fn take(&mut self, wk: WaitKey) -> Option<Waiting> {
        self.get_mut(wk)?;
        self.waiting.get_mut(wk.key).and_then(Option::take)
    }
}

/// Whether `token` is a waiting peer's (ask after the loop's fixed tokens).
pub(super) fn is_waiting(token: Token) -> bool {
    let (key, _) = split(token);
    key & WAITING != 0 && key < 0xffff_0000
}

impl Server {
    /// Takes in an accepted peer to wait for its header (instead of admitting it at once).
    /// At the cap of waiting peers, the core closes the oldest to make room.
    pub(super) fn await_header(&mut self, mut stream: TcpStream, addr: SocketAddr, now: Instant) {
        let wk = match self.core.handle_arrival(now, Stage::ProxyHeader) {
            Arrival::Waiting(wk) => wk,
            Arrival::Full => return,
        };
        // The oldest waiter, if closed to make room, goes before its key is reused.
        self.carry_out(now);
        let token = token(WAITING | wk.key, wk.generation);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            warn!(
                "{addr}: cannot watch the connection: {}",
                crate::edge::net::describe(&e)
            );
            self.core.handle_wait_over(Stage::ProxyHeader, wk, false);
            return;
        }
        let waiting = &mut self.handshakes.waiting;
        if waiting.len() <= wk.key {
            waiting.resize_with(wk.key + 1, || None);
        }
        waiting[wk.key] = Some(Waiting {
            stream,
            addr,
            header: Vec::new(),
            wk,
        });
        self.read_header(wk, now);
    }

    /// An event for a waiting peer.
    pub(super) fn on_waiting_event(&mut self, token: Token, now: Instant) {
        let (key, generation) = split(token);
        let wk = WaitKey {
            key: key & !WAITING,
            generation,
        };
        if self.handshakes.get_mut(wk).is_some() {
            self.read_header(wk, now);
        }
    }

    /// The core ended `wk`'s wait: its time ran out, or it was the oldest at the cap.
    pub(super) fn end_header_wait(&mut self, wk: WaitKey, end: WaitEnd, now: Instant) {
        let Some(mut waiting) = self.handshakes.take(wk) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut waiting.stream);
        let why = match end {
            WaitEnd::TimedOut => format!("no PROXY header within {} s", HEADER_DEADLINE.as_secs()),
            WaitEnd::Evicted { waiting } => format!(
                "the oldest of {waiting} peers waiting for a PROXY header, closed to make room"
            ),
        };
        self.log_header_refusal(waiting.addr, &why, now);
    }

    /// Reads as much of `wk`'s header as has come (never more than the header), then
    /// admits it, refuses it, or leaves it waiting.
    fn read_header(&mut self, wk: WaitKey, now: Instant) {
        loop {
            let Some(waiting) = self.handshakes.get_mut(wk) else {
                return;
            };
            let need = match proxy::parse(&waiting.header) {
                Ok(Parsed::Incomplete { need }) => need,
                Ok(Parsed::Complete { header, .. }) => {
                    let real = header.source().unwrap_or(waiting.addr);
                    return self.admit_proxied(wk, real, now);
                }
                Err(error) => return self.reject(wk, &error.to_string(), now),
            };
            let had = waiting.header.len();
            waiting.header.resize(need, 0);
            let read = read_once(&mut waiting.stream, &mut waiting.header[had..]);
            let got = match read {
                ReadResult::Data(n) => n,
                _ => 0,
            };
            waiting.header.truncate(had + got);
            match read {
                ReadResult::Data(_) => {}
                ReadResult::WouldBlock => return,
                ReadResult::Eof => return self.reject(wk, "closed before its PROXY header", now),
                ReadResult::Failed(e) => {
                    let why = format!("failed before its PROXY header: {}", e.kind());
                    return self.reject(wk, &why, now);
                }
            }
        }
    }

    /// The header is complete: the core takes the peer in as `real` (after its TLS
    /// handshake, with `--tls-cert`), and reads what the peer sent after the header at once
    /// (it is waiting in the kernel).
    fn admit_proxied(&mut self, wk: WaitKey, real: SocketAddr, now: Instant) {
        let Some(mut waiting) = self.handshakes.take(wk) else {
            return;
        };
        self.core.handle_first_bytes(Stage::ProxyHeader, wk);
        let _ = self.poll.registry().deregister(&mut waiting.stream);
        if self.core.is_stopping() {
            return;
        }
        // Hook (tls): TLS comes after the PROXY header.
        if self.tls.is_some() {
            return self.begin_handshake(waiting.stream, real, now);
        }
        if let Some(key) = self.admit_real(waiting.stream, real, now) {
            self.read_peer(key, now);
        }
    }

    /// Takes in `stream` as coming from `real`, remembering that address for logs when it
    /// came from a PROXY header. Returns its key when it was taken in and is watched.
    pub(super) fn admit_real(
        &mut self,
        stream: TcpStream,
        real: SocketAddr,
        now: Instant,
    ) -> Option<usize> {
        if !self.handshakes.enabled() {
            return self.admit(stream, real, now);
        }
        self.handshakes.admitting = Some((self.generations.peek(), real));
        let admitted = self.admit(stream, real, now);
        self.handshakes.admitting = None;
        let key = admitted?;
        let generation = self.socket(key).map(|s| s.generation)?;
        let real_by_key = &mut self.handshakes.real;
        if real_by_key.len() <= key {
            real_by_key.resize(key + 1, None);
        }
        real_by_key[key] = Some((generation, real));
        Some(key)
    }

    fn reject(&mut self, wk: WaitKey, why: &str, now: Instant) {
        let Some(mut waiting) = self.handshakes.take(wk) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut waiting.stream);
        self.core.handle_wait_over(Stage::ProxyHeader, wk, true);
        self.log_header_refusal(waiting.addr, why, now);
    }

    fn log_header_refusal(&mut self, addr: SocketAddr, why: &str, now: Instant) {
        if self.log_limiter.allow("proxy header", now) {
            warn!("{addr}: closed: {why} (--proxy-protocol; at most one such line a second)");
        }
    }
}
