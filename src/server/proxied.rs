//! `--proxy-protocol`: an accepted peer waits here, before the core sees it, until it has sent
//! a PROXY protocol v2 header (`crate::cores::proxy`) naming the real client; then the core takes it
//! in under that address, so `--allow`, log lines and the summary all use it. A peer that
//! sends anything else, closes, or says nothing for [`HEADER_DEADLINE`] is closed and counted
//! (`rejected_proxy_header`). Part of the loop: it owns these waiting sockets and their
//! deadlines; the parsing is `proxy`'s, every decision about an admitted peer the core's.
//!
//! Only the header's own bytes are read here (the parser says how many it needs), so the
//! peer's first data stays in the kernel; it is read for the core right after admission.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::warn;
use mio::net::TcpStream;
use mio::{Interest, Token};
use slab::Slab;

use super::Server;
use crate::cores::proxy::{self, Parsed};
use crate::edge::conn::{read_once, ReadResult};
use crate::edge::turn::{split, token};

/// How long an accepted peer has to send its whole header.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);
/// Marks a waiting peer's key in its token: core keys stay far below it, and the loop's fixed
/// tokens (at the very top) are matched before this is asked.
const WAITING: usize = 1 << 31;

struct Waiting {
    stream: TcpStream,
    addr: SocketAddr,
    header: Vec<u8>,
    generation: u32,
}

/// Peers waiting for their header, and the real addresses of peers admitted through one.
#[derive(Default)]
pub(super) struct Handshakes {
    enabled: bool,
    waiting: Slab<Waiting>,
    /// Deadlines in accept order, which is their order too: the front is the earliest.
    deadlines: VecDeque<(Instant, usize, u32)>,
    next_generation: u32,
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

    /// When the earliest waiting peer runs out of time.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _, _)| *at)
    }

    /// The real client of the peer under core key `key` whose socket has `generation`.
    pub(super) fn real_addr(&self, key: usize, generation: u32) -> Option<SocketAddr> {
        match (self.real.get(key), self.admitting) {
            (Some(Some((g, addr))), _) if *g == generation => Some(*addr),
            (_, Some((g, addr))) if g == generation => Some(addr),
            _ => None,
        }
    }
}

/// Whether `token` is a waiting peer's (ask after the loop's fixed tokens).
pub(super) fn is_waiting(token: Token) -> bool {
    let (key, _) = split(token);
    key & WAITING != 0 && key < 0xffff_0000
}

impl Server {
    /// Takes in an accepted peer to wait for its header (instead of admitting it at once).
    pub(super) fn await_header(&mut self, mut stream: TcpStream, addr: SocketAddr, now: Instant) {
        let shakes = &mut self.handshakes;
        let generation = shakes.next_generation;
        shakes.next_generation = generation.wrapping_add(1);
        let entry = shakes.waiting.vacant_entry();
        let key = entry.key();
        let token = token(WAITING | key, generation);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            warn!(
                "{addr}: cannot watch the connection: {}",
                crate::edge::net::describe(&e)
            );
            return;
        }
        entry.insert(Waiting {
            stream,
            addr,
            header: Vec::new(),
            generation,
        });
        shakes
            .deadlines
            .push_back((now + HEADER_DEADLINE, key, generation));
        self.read_header(key, now);
    }

    /// An event for a waiting peer.
    pub(super) fn on_waiting_event(&mut self, token: Token, now: Instant) {
        let (key, generation) = split(token);
        let key = key & !WAITING;
        match self.handshakes.waiting.get(key) {
            Some(waiting) if waiting.generation == generation => self.read_header(key, now),
            _ => {}
        }
    }

    /// Closes the waiting peers whose time is up.
    pub(super) fn expire_headers(&mut self, now: Instant) {
        while let Some(&(at, key, generation)) = self.handshakes.deadlines.front() {
            if at > now {
                return;
            }
            self.handshakes.deadlines.pop_front();
            let current = self.handshakes.waiting.get(key);
            if current.is_some_and(|w| w.generation == generation) {
                let why = format!("no PROXY header within {} s", HEADER_DEADLINE.as_secs());
                self.reject(key, &why, now);
            }
        }
    }

    /// Reads as much of `key`'s header as has come (never more than the header), then
    /// admits it, refuses it, or leaves it waiting.
    fn read_header(&mut self, key: usize, now: Instant) {
        loop {
            let Some(waiting) = self.handshakes.waiting.get_mut(key) else {
                return;
            };
            let need = match proxy::parse(&waiting.header) {
                Ok(Parsed::Incomplete { need }) => need,
                Ok(Parsed::Complete { header, .. }) => {
                    let real = header.source().unwrap_or(waiting.addr);
                    return self.admit_proxied(key, real, now);
                }
                Err(error) => return self.reject(key, &error.to_string(), now),
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
                ReadResult::Eof => return self.reject(key, "closed before its PROXY header", now),
                ReadResult::Failed(e) => {
                    let why = format!("failed before its PROXY header: {}", e.kind());
                    return self.reject(key, &why, now);
                }
            }
        }
    }

    /// The header is complete: the core takes the peer in as `real`, and reads what the peer
    /// sent after the header at once (it is waiting in the kernel).
    fn admit_proxied(&mut self, key: usize, real: SocketAddr, now: Instant) {
        let mut waiting = self.handshakes.waiting.remove(key);
        let _ = self.poll.registry().deregister(&mut waiting.stream);
        if self.core.is_stopping() {
            return;
        }
        self.handshakes.admitting = Some((self.generations.peek(), real));
        let admitted = self.admit(waiting.stream, real, now);
        self.handshakes.admitting = None;
        let Some(key) = admitted else {
            return;
        };
        if let Some(generation) = self.socket(key).map(|s| s.generation) {
            let real_by_key = &mut self.handshakes.real;
            if real_by_key.len() <= key {
                real_by_key.resize(key + 1, None);
            }
            real_by_key[key] = Some((generation, real));
            self.read_peer(key, now);
        }
    }

    fn reject(&mut self, key: usize, why: &str, now: Instant) {
        let waiting = self.handshakes.waiting.remove(key);
        self.core.handle_header_refused();
        if self.log_limiter.allow("proxy header", now) {
            warn!(
                "{}: closed: {why} (--proxy-protocol; at most one such line a second)",
                waiting.addr
            );
        }
    }
}
