//! The `--metrics` endpoint, served by the same poll loop: a second listener and at most
//! [`SCRAPE_SLOTS`] scrapers at once, each a peer like any other.
//!
//! Owns the metrics listener, the scrapers' sockets and buffers. What to answer is
//! `metrics`' (pure); the counters are the core's, and so are the slots' deadlines and
//! policy (`core::waiting`, stages `Scrape` and `Busy`): a scraper has
//! `SCRAPE_FIRST_REQUEST` to send a whole request (a silent connection, a scan or a TCP
//! health check, gives its slot up then) and until `SCRAPE_DEADLINE` after it connected to be
//! done. A scraper that finds every slot taken is answered `503 Service Unavailable` with
//! `Retry-After: 1` at once, never closed in silence, and kept a moment (stage `Busy`) to
//! read it and close its side, so that closing with its request unread does not reset the
//! connection before the answer arrives.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

pub use super::core::waiting::{BUSY_SLOTS, SCRAPE_SLOTS};
use super::core::{Arrival, ServerCore, Stage, WaitKey};
use crate::edge::conn::{read_once, write_until_blocked, ReadResult};
use crate::edge::net::{self, interrupted, would_block, SetupError};
use crate::ops::metrics::{self, Gauges, MAX_REQUEST};
use crate::ops::stats::ServerStats;

/// Scrapers served at once (see [`SCRAPE_SLOTS`]).
pub const SLOTS: usize = SCRAPE_SLOTS;
/// Below the loop's fixed tokens (`stop`, `alarm`, the peers' listener), which end at
/// `usize::MAX - 3`; scraper slot i is `usize::MAX - 5 - i`, then the busy ones. Peer tokens
/// never reach these (see `turn::token`).
pub const LISTENER: Token = Token(usize::MAX - 4);

fn slot_token(slot: usize) -> Token {
    Token(usize::MAX - 5 - slot)
}

/// Slot `i` of `0..SLOTS + BUSY_SLOTS`: scrapers first, then the busy ones.
fn token_slot(token: Token) -> Option<usize> {
    let slot = (usize::MAX - 5).checked_sub(token.0)?;
    (slot < SLOTS + BUSY_SLOTS).then_some(slot)
}

struct Scraper {
    stream: TcpStream,
    wk: WaitKey,
    received: Vec<u8>,
    /// The response, once the request is whole; `written` of it went out.
    response: Option<Vec<u8>>,
    written: usize,
}

/// A scraper told `503`, until it closes its side.
struct Busy {
    stream: TcpStream,
    wk: WaitKey,
}

pub struct Scrapers {
    listener: TcpListener,
    local_addr: SocketAddr,
    slots: Vec<Option<Scraper>>,
    busy: Vec<Option<Busy>>,
}

impl Scrapers {
    /// The metrics listener's backlog: scrapers are few.
    pub const BACKLOG: i32 = 64;

    /// Serves scrapers on `listener`, bound for `addr` (by `Server::bind`, or handed over in
    /// a live upgrade).
    pub fn on(
        mut listener: TcpListener,
        addr: SocketAddr,
        registry: &Registry,
    ) -> Result<Scrapers, SetupError> {
        let local_addr = listener
            .local_addr()
            .map_err(|source| SetupError::Listen { addr, source })?;
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|source| SetupError::EventLoop {
                what: "metrics listener registration",
                source,
            })?;
        Ok(Scrapers {
            listener,
            local_addr,
            slots: (0..SLOTS).map(|_| None).collect(),
            busy: (0..BUSY_SLOTS).map(|_| None).collect(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listening socket, to hand over in a live upgrade.
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Whether `token` is the metrics listener's or a scraper's.
    pub fn owns(token: Token) -> bool {
        token == LISTENER || token_slot(token).is_some()
    }

    /// Handles an event for one of [`owns`](Self::owns)'s tokens.
    pub fn on_event(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        core: &mut ServerCore,
        gauges: &Gauges,
    ) {
        if token == LISTENER {
            self.accept_all(registry, now, core);
            return;
        }
        let Some(slot) = token_slot(token) else {
            return;
        };
        if slot >= SLOTS {
            let i = slot - SLOTS;
            let Some(busy) = self.busy.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            if !drain_input(&mut busy.stream) {
                let wk = busy.wk;
                self.close(Stage::Busy, wk, registry);
                core.handle_wait_over(Stage::Busy, wk, false);
            }
            return;
        }
        let Some(scraper) = self.slots[slot].as_mut() else {
            return;
        };
        let had_request = scraper.response.is_some();
        let open = scraper.serve(core.stats(), gauges);
        let wk = scraper.wk;
        if !had_request && scraper.response.is_some() {
            core.handle_first_bytes(Stage::Scrape, wk);
        }
        if !open {
            self.close(Stage::Scrape, wk, registry);
            core.handle_wait_over(Stage::Scrape, wk, false);
        }
    }

    /// The core ended `wk`'s wait in `stage` (its time ran out): close it.
    pub fn end_wait(&mut self, stage: Stage, wk: WaitKey, registry: &Registry) {
        if self.close(stage, wk, registry) {
            debug!("metrics: a scraper ran out of time; closing it");
        }
    }

    fn accept_all(&mut self, registry: &Registry, now: Instant, core: &mut ServerCore) {
        loop {
            let (stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    debug!("metrics: accept failed: {}", net::describe(&e));
                    return;
                }
            };
            match core.handle_arrival(now, Stage::Scrape) {
                Arrival::Waiting(wk) => self.take_scraper(stream, wk, registry, core),
                Arrival::Full => self.turn_away(stream, now, registry, core),
            }
        }
    }

    fn take_scraper(
        &mut self,
        mut stream: TcpStream,
        wk: WaitKey,
        registry: &Registry,
        core: &mut ServerCore,
    ) {
        let interest = Interest::READABLE | Interest::WRITABLE;
        let slot = self.slots.get_mut(wk.key);
        let registered = registry.register(&mut stream, slot_token(wk.key), interest);
        let (Some(slot), Ok(())) = (slot, registered) else {
            core.handle_wait_over(Stage::Scrape, wk, false);
            return;
        };
        if let Some(mut old) = slot.take() {
            let _ = registry.deregister(&mut old.stream);
        }
        *slot = Some(Scraper {
            stream,
            wk,
            received: Vec::new(),
            response: None,
            written: 0,
        });
    }

    /// Every slot is taken: `503` at once (a fresh socket has room for it), our side shut,
    /// and a moment for the scraper to read it and close.
    fn turn_away(
        &mut self,
        mut stream: TcpStream,
        now: Instant,
        registry: &Registry,
        core: &mut ServerCore,
    ) {
        debug!("metrics: every slot taken; answering 503");
        let _ = write_until_blocked(&mut stream, metrics::busy());
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let Arrival::Waiting(wk) = core.handle_arrival(now, Stage::Busy) else {
            return;
        };
        let token = slot_token(SLOTS + wk.key);
        let slot = self.busy.get_mut(wk.key);
        let registered = registry.register(&mut stream, token, Interest::READABLE);
        let (Some(slot), Ok(())) = (slot, registered) else {
            core.handle_wait_over(Stage::Busy, wk, false);
            return;
        };
        // The oldest busy scraper, if closed to make room, may have had this key.
        if let Some(mut old) = slot.take() {
            let _ = registry.deregister(&mut old.stream);
        }
        *slot = Some(Busy { stream, wk });
    }

    /// Closes `wk` if it is still there; returns whether it was.
    fn close(&mut self, stage: Stage, wk: WaitKey, registry: &Registry) -> bool {
        let stream = match stage {
            Stage::Scrape => take_if(&mut self.slots, wk.key, |s| s.wk == wk).map(|s| s.stream),
            Stage::Busy => take_if(&mut self.busy, wk.key, |b| b.wk == wk).map(|b| b.stream),
            Stage::ProxyHeader | Stage::TlsHandshake => None,
        };
        let Some(mut stream) = stream else {
            return false;
        };
        let _ = registry.deregister(&mut stream);
        true
    }
}

fn take_if<T>(slots: &mut [Option<T>], i: usize, ok: impl Fn(&T) -> bool) -> Option<T> {
    let slot = slots.get_mut(i)?;
    slot.as_ref().filter(|t| ok(t))?;
    slot.take()
}

/// Reads and drops what came; false once the peer closed its side or the socket broke.
fn drain_input(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match read_once(stream, &mut buf) {
            ReadResult::Data(_) => {}
            ReadResult::WouldBlock => return true,
            ReadResult::Eof | ReadResult::Failed(_) => return false,
        }
    }
}

impl Scraper {
    /// Reads what came, answers once the request is whole, writes what the kernel takes.
    /// Returns false when the scraper is done (closed its side, or broke).
    fn serve(&mut self, stats: &ServerStats, gauges: &Gauges) -> bool {
        let mut buf = [0u8; 1024];
        let mut peer_done = false;
        loop {
            match read_once(&mut self.stream, &mut buf) {
                ReadResult::Data(n) => {
                    // Once answered, or past the limit (the answer is then 431), what more it
                    // sends is read only so that closing does not reset the connection.
                    if self.response.is_none() && self.received.len() <= MAX_REQUEST {
                        self.received.extend_from_slice(&buf[..n]);
                    }
                }
                ReadResult::WouldBlock => break,
                ReadResult::Eof => {
                    peer_done = true;
                    break;
                }
                ReadResult::Failed(_) => return false,
            }
        }
        if self.response.is_none() {
            let mut out = Vec::new();
            let request = metrics::parse_request(&self.received);
            if metrics::respond(request, stats, gauges, &mut out).is_some() {
                self.response = Some(out);
            }
        }
        let Some(response) = &self.response else {
            // A scraper that closed before its request was whole gets nothing.
            return !peer_done;
        };
        if self.written < response.len() {
            match write_until_blocked(&mut self.stream, &response[self.written..]) {
                Ok(n) => self.written += n,
                Err(_) => return false,
            }
            if self.written == response.len() {
                let _ = self.stream.flush();
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
            }
        }
        !(peer_done && self.written == response.len())
    }
}

impl super::Server {
    pub(super) fn on_scrape_event(&mut self, token: Token, now: Instant) {
        let gauges = Gauges {
            buffered_bytes: self.core.buffered() as u64,
            log_lines_dropped: crate::ops::logging::dropped_lines(),
        };
        if let Some(scrapers) = &mut self.scrapers {
            let registry = self.poll.registry();
            scrapers.on_event(token, registry, now, &mut self.core, &gauges);
        }
        // Slots the core closed to make room, if any.
        self.carry_out(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_tokens_round_trip_and_stay_clear_of_the_fixed_ones() {
        for slot in 0..SLOTS {
            assert_eq!(token_slot(slot_token(slot)), Some(slot));
            assert!(Scrapers::owns(slot_token(slot)));
        }
        assert_eq!(token_slot(LISTENER), None);
        assert_eq!(token_slot(Token(usize::MAX - 3)), None, "the alarm's");
        assert_eq!(token_slot(slot_token(SLOTS + BUSY_SLOTS)), None);
        assert!(!Scrapers::owns(crate::edge::turn::token(7, 3)));
    }
}
