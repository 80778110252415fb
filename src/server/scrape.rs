//! The `--metrics` endpoint, served by the same poll loop: a second listener and at most
//! [`SLOTS`] scrapers at once, each a peer like any other, with a deadline.
//!
//! Owns the metrics listener, the scrapers' sockets and buffers, and their deadlines. What to
//! answer is `metrics`' (pure); the counters are the core's. A scraper is read until its
//! request is whole, answered in one response, our side shut down, and closed when it closes
//! its side or [`SCRAPE_DEADLINE`] after it connected, whichever comes first: one that
//! connects and says nothing cannot hold a slot for longer.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::cores::timer::later;
use crate::edge::conn::{read_once, write_until_blocked, ReadResult};
use crate::edge::net::{self, interrupted, would_block, SetupError};
use crate::ops::metrics::{self, Gauges, MAX_REQUEST, SCRAPE_DEADLINE};
use crate::ops::stats::ServerStats;

/// Scrapers served at once; one more is closed at accept. Prometheus scrapes a target with
/// one connection at a time; a few slots leave room for a human with curl.
pub const SLOTS: usize = 12;
/// Below the loop's fixed tokens (`stop`, `alarm`, the peers' listener), which end at
/// `usize::MAX - 3`; scraper slot i is `usize::MAX - 5 - i`. Peer tokens never reach these
/// (see `turn::token`).
pub const LISTENER: Token = Token(usize::MAX - 4);

fn slot_token(slot: usize) -> Token {
    Token(usize::MAX - 5 - slot)
}

fn token_slot(token: Token) -> Option<usize> {
    let slot = (usize::MAX - 5).checked_sub(token.0)?;
    (slot < SLOTS).then_some(slot)
}

struct Scraper {
    stream: TcpStream,
    received: Vec<u8>,
    /// The response, once the request is whole; `written` of it went out.
    response: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

pub struct Scrapers {
    listener: TcpListener,
    local_addr: SocketAddr,
    slots: Vec<Option<Scraper>>,
}

impl Scrapers {
    /// Listens on `addr` for scrapers.
    pub fn bind(addr: SocketAddr, registry: &Registry) -> Result<Scrapers, SetupError> {
        let mut listener = net::listen(addr, 64)?;
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
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether `token` is the metrics listener's or a scraper's.
    pub fn owns(token: Token) -> bool {
        token == LISTENER || token_slot(token).is_some()
    }

    /// The earliest scraper deadline, for the loop's sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|s| s.deadline).min()
    }

    /// Handles an event for one of [`owns`](Self::owns)'s tokens.
    pub fn on_event(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        stats: &ServerStats,
        gauges: &Gauges,
    ) {
        if token == LISTENER {
            self.accept_all(registry, now);
            return;
        }
        let Some(slot) = token_slot(token) else {
            return;
        };
        if let Some(scraper) = self.slots[slot].as_mut() {
            if !scraper.serve(stats, gauges) {
                self.close(slot, registry);
            }
        }
    }

    /// Closes the scrapers whose deadline has passed.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        for slot in 0..SLOTS {
            if self.slots[slot].as_ref().is_some_and(|s| s.deadline <= now) {
                debug!("metrics: a scraper ran out of time; closing it");
                self.close(slot, registry);
            }
        }
    }

    fn accept_all(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                Err(e) => {
                    debug!("metrics: accept failed: {}", net::describe(&e));
                    return;
                }
            };
            // No free slot: dropping the stream closes it.
            let Some(slot) = self.slots.iter().position(Option::is_none) else {
                continue;
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if registry
                .register(&mut stream, slot_token(slot), interest)
                .is_err()
            {
                continue;
            }
            self.slots[slot] = Some(Scraper {
                stream,
                received: Vec::new(),
                response: None,
                written: 0,
                deadline: later(now, SCRAPE_DEADLINE),
            });
        }
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut scraper) = self.slots[slot].take() {
            let _ = registry.deregister(&mut scraper.stream);
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
            scrapers.on_event(token, registry, now, self.core.stats(), &gauges);
        }
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
        assert_eq!(token_slot(slot_token(SLOTS)), None);
        assert!(!Scrapers::owns(crate::edge::turn::token(7, 3)));
    }
}
