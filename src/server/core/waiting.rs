//! Waiting for first bytes: sockets the loop holds before anything is served to them, each
//! with a deadline and, per stage, a cap. A `--proxy-protocol` peer waits for its PROXY
//! header, a metrics scraper for its request, a scraper turned away with `503` for a moment
//! to read it and close, a `--tls-cert` peer for the end of its TLS handshake. Part of
//! [`ServerCore`]: sans-IO like the rest of it; the sockets, their bytes and TLS sessions
//! stay in the loop (`server::proxied`, `server::scrape`, `server::tls`), which tells the core
//! what happened to them and carries out [`Action::EndWait`].
//!
//! Per stage, a [`Policy`]: how long a socket has from its arrival to send its first bytes,
//! how long it may stay once it has (or none: it leaves the stage), the cap, and what
//! happens at the cap. A flood of silent sockets must not keep anyone out, so at the cap
//! either the **oldest** socket still waiting is closed to make room for the newcomer
//! ([`Policy::evict_oldest`]: the newcomer is as likely to be legitimate, and the oldest has
//! had the longest to speak), or, where a polite refusal exists (`503` for a scraper), the
//! newcomer is told so ([`Arrival::Full`]). Never a silent refusal of a newcomer.
//!
//! Deadlines are in a timer wheel per stage (one timer per socket, as for connections), and
//! the stages' next deadlines are rows of the core's timer table (`Timer::FirstBytes`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use slab::Slab;

use super::{Action, ServerCore, Settings};
use crate::cores::timer::{later, Timers};
use crate::cores::tls::Refusal as TlsRefusal;
use crate::ops::metrics::SCRAPE_DEADLINE;

/// How long an accepted `--proxy-protocol` peer has to send its whole header.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(5);
/// How long a scraper has to send a complete request: Prometheus sends it at once, so a
/// connection still silent after this is a scan or a health check, and gives up its slot.
pub const SCRAPE_FIRST_REQUEST: Duration = Duration::from_secs(1);
/// Scrapers served at once. Prometheus scrapes a target with one connection at a time; a few
/// slots leave room for a human with curl.
pub const SCRAPE_SLOTS: usize = 12;
/// Scrapers past the slots, each told `503` and given [`BUSY_LINGER`] to read it and close
/// (closing at once, with its request unread, would reset the connection and could destroy
/// the answer). Past these too, the oldest is closed: it has had its answer.
pub const BUSY_SLOTS: usize = 16;
/// How long a scraper told `503` has to close its side.
pub const BUSY_LINGER: Duration = Duration::from_secs(1);
/// How long an accepted `--tls-cert` peer (after its PROXY header, if any) has to finish its
/// TLS handshake, as long as a PROXY header has.
pub const HANDSHAKE_DEADLINE: Duration = HEADER_DEADLINE;
/// Handshakes in flight at most; one more closes the oldest. A handshake holds a few KB
/// (rustls' state, the flight of certificates) for up to the deadline: 1,024 of them are a
/// few MB, and at ~400 µs of CPU a handshake, more than one core finishes in the 5 s of a
/// flood anyway.
pub const HANDSHAKE_CAP: usize = 1024;
/// The fewest peers allowed to wait for a PROXY header at once, whatever the budget.
pub const MIN_HEADER_WAITS: usize = 16;

/// A default cap on peers waiting for their PROXY header: a quarter of what may be open
/// (the smaller of `--max-connections` and the descriptors this process may open), so that
/// silent sockets can never hold most of the descriptors the served peers need.
pub fn default_header_waits(max_connections: usize, open_files: Option<u64>) -> usize {
    let files = open_files.map_or(usize::MAX, |f| usize::try_from(f).unwrap_or(usize::MAX));
    (max_connections.min(files) / 4).max(MIN_HEADER_WAITS)
}

/// What a socket is waiting in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A `--proxy-protocol` peer, before its header.
    ProxyHeader,
    /// A metrics scraper: before its request, then while it is answered.
    Scrape,
    /// A scraper told `503 Service Unavailable`, until it closes its side.
    Busy,
    /// A `--tls-cert` peer, before its TLS handshake is done.
    TlsHandshake,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::ProxyHeader,
        Stage::Scrape,
        Stage::Busy,
        Stage::TlsHandshake,
    ];

    fn index(self) -> usize {
        match self {
            Stage::ProxyHeader => 0,
            Stage::Scrape => 1,
            Stage::Busy => 2,
            Stage::TlsHandshake => 3,
        }
    }
}

/// A waiting socket: its slot in its stage (below the stage's cap, so the loop can index
/// its sockets by it) and the generation of that use of the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitKey {
    pub key: usize,
    pub generation: u32,
}

/// Why the core ends a wait ([`Action::EndWait`]): the loop closes the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// Its time ran out.
    TimedOut,
    /// The stage was at its cap and this was the oldest socket still waiting.
    Evicted { waiting: usize },
}

/// What [`ServerCore::handle_arrival`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Keep the socket under this key.
    Waiting(WaitKey),
    /// The stage is full and refuses newcomers: answer it so, if the stage has a way.
    Full,
}

/// How one stage treats its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// From its arrival, how long a socket has to send its first bytes.
    pub first_bytes: Duration,
    /// From its arrival, how long it may stay once they came; `None`: it leaves the stage.
    pub then: Option<Duration>,
    pub cap: usize,
    /// At the cap, close the oldest socket still waiting (else refuse the newcomer).
    pub evict_oldest: bool,
}

impl Policy {
    /// The policies of the stages, in [`Stage::ALL`]'s order.
    fn all(settings: &Settings) -> [Policy; 4] {
        [
            Policy {
                first_bytes: HEADER_DEADLINE,
                then: None,
                cap: settings.max_header_waits.max(1),
                evict_oldest: true,
            },
            Policy {
                first_bytes: SCRAPE_FIRST_REQUEST,
                then: Some(SCRAPE_DEADLINE),
                cap: SCRAPE_SLOTS,
                evict_oldest: false,
            },
            Policy {
                first_bytes: BUSY_LINGER,
                then: None,
                cap: BUSY_SLOTS,
                evict_oldest: true,
            },
            Policy {
                first_bytes: HANDSHAKE_DEADLINE,
                then: None,
                cap: HANDSHAKE_CAP,
                evict_oldest: true,
            },
        ]
    }
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    arrived: Instant,
    /// Its first bytes came (it is served now; it is not evicted).
    ready: bool,
}

/// One stage's sockets.
#[derive(Debug)]
struct Table {
    policy: Policy,
    entries: Slab<Entry>,
    timers: Timers,
    /// In arrival order, oldest first; entries gone or ready are skipped (and dropped when
    /// they reach the front, or when they outnumber the live ones).
    order: VecDeque<WaitKey>,
    next_generation: u32,
}

impl Table {
    fn new(now: Instant, tick: Duration, policy: Policy) -> Table {
        Table {
            policy,
            entries: Slab::new(),
            timers: Timers::new(now, tick, 0),
            order: VecDeque::new(),
            next_generation: 0,
        }
    }

    fn get(&self, wk: WaitKey) -> Option<&Entry> {
        self.entries
            .get(wk.key)
            .filter(|e| e.generation == wk.generation)
    }

    fn is_waiting(&self, wk: WaitKey) -> bool {
        self.get(wk).is_some_and(|e| !e.ready)
    }

    fn insert(&mut self, now: Instant) -> WaitKey {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let key = self.entries.insert(Entry {
            generation,
            arrived: now,
            ready: false,
        });
        self.timers.arm(key, later(now, self.policy.first_bytes));
        let wk = WaitKey { key, generation };
        self.order.push_back(wk);
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order.retain(|wk| {
                entries
                    .get(wk.key)
                    .is_some_and(|e| e.generation == wk.generation && !e.ready)
            });
        }
        wk
    }

    fn remove(&mut self, wk: WaitKey) -> bool {
        if self.get(wk).is_none() {
            return false;
        }
        self.entries.remove(wk.key);
        self.timers.cancel(wk.key);
        true
    }

    /// The socket waiting longest for its first bytes.
    fn oldest_waiting(&mut self) -> Option<WaitKey> {
        while let Some(&wk) = self.order.front() {
            if self.is_waiting(wk) {
                return Some(wk);
            }
            self.order.pop_front();
        }
        None
    }
}

/// Every stage's table.
#[derive(Debug)]
pub(super) struct Waiting {
    tables: [Table; 4],
    /// Sockets in all stages together. The loop asks for the next deadline of any stage at
    /// least twice a turn, and most turns have none waiting: then no table is read (each
    /// lies in cache lines of its own, which a busy turn's kernel work has evicted).
    sockets: usize,
}

impl Waiting {
    pub(super) fn new(now: Instant, settings: &Settings) -> Waiting {
        let policies = Policy::all(settings);
        Waiting {
            tables: policies.map(|policy| Table::new(now, settings.tick, policy)),
            sockets: 0,
        }
    }

    /// `stage`'s table, for what leaves its number of sockets as it is.
    fn table(&mut self, stage: Stage) -> &mut Table {
        &mut self.tables[stage.index()]
    }

    fn insert(&mut self, stage: Stage, now: Instant) -> WaitKey {
        self.sockets += 1;
        self.table(stage).insert(now)
    }

    /// Whether `wk` was in `stage` (and is no more).
    fn remove(&mut self, stage: Stage, wk: WaitKey) -> bool {
        let removed = self.table(stage).remove(wk);
        self.sockets -= usize::from(removed);
        removed
    }

    /// Takes out one socket of `stage` whose time was up by `due_by`.
    fn take_expired(&mut self, stage: Stage, due_by: Instant) -> Option<WaitKey> {
        let table = self.table(stage);
        loop {
            let key = table.timers.poll_expired(due_by)?;
            if let Some(entry) = table.entries.try_remove(key) {
                self.sockets -= 1;
                let generation = entry.generation;
                return Some(WaitKey { key, generation });
            }
        }
    }

    /// When the earliest socket of `stage` runs out of time.
    pub(super) fn next_deadline(&self, stage: Stage) -> Option<Instant> {
        self.tables[stage.index()].timers.next_wakeup()
    }

    /// When the earliest socket of any stage runs out of time.
    pub(super) fn next_deadline_of_any(&self) -> Option<Instant> {
        debug_assert_eq!(
            self.sockets,
            self.tables.iter().map(|t| t.entries.len()).sum::<usize>()
        );
        if self.sockets == 0 {
            return None;
        }
        self.tables
            .iter()
            .filter(|table| !table.entries.is_empty())
            .filter_map(|table| table.timers.next_wakeup())
            .min()
    }
}

impl ServerCore {
    /// A socket arrived at `now` that must send its first bytes in `stage` before it is
    /// served. At the stage's cap, either the oldest socket still waiting is closed to make
    /// room ([`Action::EndWait`], counted), or the newcomer is refused ([`Arrival::Full`]).
    pub fn handle_arrival(&mut self, now: Instant, stage: Stage) -> Arrival {
        let table = self.waiting.table(stage);
        if table.entries.len() >= table.policy.cap {
            if !table.policy.evict_oldest {
                if stage == Stage::Scrape {
                    self.stats.on_metrics_busy();
                }
                return Arrival::Full;
            }
            let waiting = table.entries.len();
            let Some(oldest) = table.oldest_waiting() else {
                return Arrival::Full;
            };
            self.waiting.remove(stage, oldest);
            match stage {
                Stage::ProxyHeader => {
                    self.stats.on_refused_proxy_header();
                    self.stats.on_proxy_header_evicted();
                }
                Stage::TlsHandshake => self.stats.on_refused_tls(TlsRefusal::Evicted),
                Stage::Scrape | Stage::Busy => {}
            }
            let end = WaitEnd::Evicted { waiting };
            self.actions.push_back(Action::EndWait(stage, oldest, end));
        }
        if stage == Stage::TlsHandshake {
            self.stats.on_tls_handshake();
        }
        Arrival::Waiting(self.waiting.insert(stage, now))
    }

    /// The first bytes of `wk` are complete (a header, a request). It leaves the stage, or,
    /// if the stage keeps it while it is served, has until its arrival plus
    /// [`Policy::then`]; it is no longer evicted.
    pub fn handle_first_bytes(&mut self, stage: Stage, wk: WaitKey) {
        let Some(then) = self.waiting.table(stage).policy.then else {
            self.waiting.remove(stage, wk);
            return;
        };
        let table = self.waiting.table(stage);
        let Some(entry) = table.entries.get_mut(wk.key) else {
            return;
        };
        if entry.generation == wk.generation {
            entry.ready = true;
            let deadline = later(entry.arrived, then);
            table.timers.arm(wk.key, deadline);
        }
    }

    /// The loop closed `wk` (it is done, or left) or took it on: it leaves the stage.
    /// `refused`: it was closed for what it sent or did not send (a bad PROXY header,
    /// closing before one), which is counted.
    pub fn handle_wait_over(&mut self, stage: Stage, wk: WaitKey, refused: bool) {
        let removed = self.waiting.remove(stage, wk);
        if removed && refused && stage == Stage::ProxyHeader {
            self.stats.on_refused_proxy_header();
        }
    }

    /// The loop closed the handshaking `wk` for `refusal` (not TLS, a certificate refused,
    /// closed): it leaves [`Stage::TlsHandshake`], counted by reason.
    pub fn handle_tls_refused(&mut self, wk: WaitKey, refusal: TlsRefusal) {
        if self.waiting.remove(Stage::TlsHandshake, wk) {
            self.stats.on_refused_tls(refusal);
        }
    }

    /// Sockets in `stage` now.
    pub fn waiting(&self, stage: Stage) -> usize {
        self.waiting.tables[stage.index()].entries.len()
    }

    /// Whether `wk` is still in `stage`.
    pub fn is_waiting(&self, stage: Stage, wk: WaitKey) -> bool {
        self.waiting.tables[stage.index()].get(wk).is_some()
    }

    /// Ends the waits in `stage` whose time was up by `due_by`, at most `left` of them.
    pub(super) fn expire_waiting(&mut self, stage: Stage, due_by: Instant, left: &mut usize) {
        while *left > 0 {
            let Some(wk) = self.waiting.take_expired(stage, due_by) else {
                return;
            };
            *left -= 1;
            match stage {
                Stage::ProxyHeader => self.stats.on_refused_proxy_header(),
                Stage::TlsHandshake => self.stats.on_refused_tls(TlsRefusal::Deadline),
                Stage::Scrape | Stage::Busy => {}
            }
            let end = WaitEnd::TimedOut;
            self.actions.push_back(Action::EndWait(stage, wk, end));
        }
    }
}
