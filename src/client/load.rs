//! The client's poll loop: one connection that talks like the original client, or a load of
//! them. It owns the sockets, the slab of connections and their timers, and only moves
//! bytes: what each connection owes and when is `peer`'s, pacing is `schedule`'s, faults are
//! `faults`', counting is `stats::client`'s.
//!
//! Each turn: start the connections that are due (for about a millisecond at most, then
//! poll again without sleeping), poll, handle socket events, fire due timers. Every clock
//! read that a figure depends on is made at the moment it measures (a connection's own
//! `connect()` call, each send and answer), not once per turn. The loop's lag (how late it
//! answered a heartbeat or sent a line) is measured and reported, so that a client too busy
//! to keep up says so instead of blaming the server.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::time::{Duration, Instant};

use log::debug;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

use super::peer::Peer;
use super::schedule::{within_budget, Backoff, Pacer};
use super::warnings::Warnings;
use super::{memory, ClientConfig, Finish, Outcome};
use crate::cores::buffers::Buffers;
use crate::cores::rng::SplitMix64;
use crate::cores::timer::{later, Timers};
use crate::edge::conn;
use crate::edge::net::{self, ConnectError, SetupError};
use crate::edge::stop::{StopSignal, Stoppable, SIGNALS, WAKER};
use crate::edge::turn::{earliest, split, token, wait, CutOff, Generations, Waited, READ_BUFFER};
use crate::ops::stats::client::{Memory, RunFacts};
use crate::ops::stats::{ClientStats, ConnectFailure};

/// Prints one line on stdout, ignoring errors: a closed pipe (`client | head`) must not
/// panic the client; it carries on and exits normally.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod tls;
mod traffic;

/// A connect that has not completed by then is counted as timed out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At the end, how long to wait for echoes of lines already sent.
const DRAIN: Duration = Duration::from_secs(1);
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// A poll that returned sooner than this did not sleep: what it reported may have been
/// waiting since the previous turn began.
const DID_NOT_SLEEP: Duration = Duration::from_micros(50);

struct Conn {
    stream: TcpStream,
    generation: u32,
    buffers: Buffers,
    peer: Peer,
    /// `--tls`: its session, from TCP established on.
    tls: Option<Box<rustls::ClientConnection>>,
    /// `--tls`: when its handshake began, until it is done.
    handshake_since: Option<Instant>,
    /// `--tls`: counted in `Client::handshakes_in_flight` (from `connect()` until its
    /// handshake is done or it is gone).
    shaking: bool,
    /// `--tls`: its session took a ticket; counted in `Client::resumed_in_flight` while
    /// `shaking`.
    resuming: bool,
    /// `--tls` with resumption: its handshake is done and the server's tickets for it have
    /// not come yet; counted in `Client::awaiting_tickets`.
    awaiting: bool,
}

/// A reconnect waiting out its back-off: when, which slot, failed attempts so far, and
/// whether the slot has been served before (so that it is counted as opened only once).
type Retry = Reverse<(Instant, u32, u32, bool)>;

pub struct Client {
    poll: Poll,
    config: ClientConfig,
    conns: Slab<Conn>,
    timers: Timers,
    stats: ClientStats,
    pacer: Pacer,
    retries: BinaryHeap<Retry>,
    jitter: SplitMix64,
    generations: Generations,
    start: Instant,
    read_buf: Vec<u8>,
    line_buf: Vec<u8>,
    /// Set when the run is ending: no new data lines or connections, only waiting (until
    /// this time at most) for the echoes of lines already sent.
    drain_until: Option<Instant>,
    /// Lines sent and neither echoed nor counted unanswered: what the drain waits for.
    echoes_owed: u64,
    ever_connected: bool,
    /// The earliest instant an event handled in this turn may have been waiting since.
    ready_since: Instant,
    /// Connections that had more to read when their turn's reads ran out: read first next
    /// turn.
    cut_off: CutOff,
    warnings: Warnings,
    baseline_rss: u64,
    stop: StopSignal,
    first_error: Option<String>,
    /// `--tls`: connections between `connect()` and the end of their handshake; no new
    /// connection starts at [`tls::MAX_HANDSHAKES_IN_FLIGHT`].
    handshakes_in_flight: usize,
    /// `--tls`: of those, the ones whose session took a ticket.
    resumed_in_flight: usize,
    /// `--tls`: of those, the ones not yet at their handshake (TCP connecting).
    pending: usize,
    /// `--tls` with resumption: connections whose tickets are on their way.
    awaiting_tickets: usize,
    /// `--tls`: when the first handshake was done.
    first_done: Option<Instant>,
    /// `--tls` with resumption: the run's tickets (`tls::TicketStore`).
    tickets: Option<std::sync::Arc<tls::TicketStore>>,
}

impl Client {
    /// Prepares the loop; checks the open-file limit before any connection is made.
    pub fn new(mut config: ClientConfig) -> Result<Client, SetupError> {
        let baseline_rss = memory::rss_bytes();
        // Hook (tls): resumption on or off, and the run's ticket store.
        let connections = config.connections;
        let tickets = config
            .tls
            .as_mut()
            .and_then(|tls| tls::resumption(tls, connections));
        let event_loop = |what| move |source| SetupError::EventLoop { what, source };
        let poll = Poll::new().map_err(event_loop("poll instance"))?;
        let stop = StopSignal::new(poll.registry())?;
        net::size_descriptor_table(poll.registry(), config.connections);
        let now = Instant::now();
        let mut stats = ClientStats::new(config.connections as u64);
        // The one wall-clock read: rows per second line up across hosts (`stats::client::series`).
        stats.start_series(now, std::time::SystemTime::now());
        Ok(Client {
            poll,
            conns: Slab::with_capacity(config.connections.min(1 << 16)),
            timers: Timers::new(now, config.tick, config.connections),
            stats,
            pacer: Pacer::new(now, config.connect_rate, config.connections),
            retries: BinaryHeap::new(),
            jitter: SplitMix64::new(config.seed ^ 0x6a09_e667_f3bc_c908),
            generations: Generations::default(),
            start: now,
            read_buf: vec![0; READ_BUFFER],
            line_buf: Vec::with_capacity(256),
            drain_until: None,
            echoes_owed: 0,
            ever_connected: false,
            ready_since: now,
            cut_off: CutOff::default(),
            warnings: Warnings::default(),
            baseline_rss,
            stop,
            first_error: None,
            handshakes_in_flight: 0,
            resumed_in_flight: 0,
            pending: 0,
            awaiting_tickets: 0,
            first_done: None,
            tickets,
            config,
        })
    }

    /// Runs until the duration passes, the server closes every connection, or a stop.
    pub fn run(mut self) -> Result<Outcome, SetupError> {
        let mut events = Events::with_capacity(1024);
        self.start = Instant::now();
        self.pacer = Pacer::new(
            self.start,
            self.config.connect_rate,
            self.config.connections,
        );
        let end = self.config.duration.map(|d| later(self.start, d));
        let mut next_status = self.start + STATUS_PERIOD;
        let mut last_opened = 0u64;
        let mut turn_began = self.start;
        let finish = loop {
            let now = Instant::now();
            let time_is_up = end.is_some_and(|end| now >= end);
            if self.drain_until.is_none() && (self.stop.is_requested() || time_is_up) {
                self.begin_drain(now);
            }
            if let Some(until) = self.drain_until {
                if now >= until || self.echoes_owed == 0 {
                    break match self.stop.is_requested() {
                        true => Finish::Stopped,
                        false => Finish::DurationReached,
                    };
                }
            } else {
                self.start_connections();
                if self.pacer.done() && self.conns.is_empty() && self.retries.is_empty() {
                    break match self.ever_connected {
                        true => Finish::ClosedByServer,
                        false => Finish::NothingConnected,
                    };
                }
            }
            let status = self.config.status_line.then_some(next_status);
            let wakeup = earliest([
                self.timers.next_wakeup(),
                end,
                self.drain_until,
                self.next_connect_at(),
                status,
            ]);
            let entered = Instant::now();
            let busy = !self.cut_off.is_empty();
            let waited = wait(&mut self.poll, &mut events, None, wakeup, busy, entered)?;
            if waited == Waited::Interrupted {
                continue;
            }
            let now = Instant::now();
            self.stats.at(now);
            let slept = now.saturating_duration_since(entered) >= DID_NOT_SLEEP;
            self.ready_since = if slept { now } else { turn_began };
            turn_began = now;
            self.cut_off.start_turn();
            while let Some(key) = self.cut_off.pop() {
                self.on_readable(key, false);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    SIGNALS => {
                        self.stop.on_signal_event();
                    }
                    token => self.on_event(token, event),
                }
            }
            self.fire_timers(Instant::now());
            if self.config.status_line && now >= next_status {
                let rate = (self.stats.opened() - last_opened) as f64;
                last_opened = self.stats.opened();
                next_status = now + STATUS_PERIOD;
                let mut stderr = std::io::stderr();
                let _ = write!(stderr, "\r{}\x1b[K", self.stats.status_line(rate));
                let _ = stderr.flush();
            }
        };
        if self.config.status_line {
            eprintln!();
        }
        Ok(self.finish(finish))
    }

    /// Reads what only the end knows (memory, faults not noticed), closes what is open.
    fn finish(mut self, finish: Finish) -> Outcome {
        let end_rss = memory::rss_bytes();
        let mut open = 0;
        let mut undetected = [0; 4];
        for (_, conn) in &self.conns {
            open += u64::from(conn.peer.connecting_since().is_none());
            if let Some((kind, _)) = conn.peer.struck() {
                undetected[kind as usize] += 1;
            }
        }
        let now = Instant::now();
        self.stats.at(now);
        self.drain_until.get_or_insert(now);
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, now);
        }
        let facts = RunFacts {
            elapsed: self.start.elapsed(),
            server_interval: self.config.server_interval,
            undetected,
            warnings_suppressed: self.warnings.held_back(),
            memory: Memory::new(self.baseline_rss, end_rss, open),
            settings: self.config.settings(),
            runs: 1,
        };
        Outcome {
            finish,
            summary: self.stats.summary(&facts),
            first_error: self.first_error,
            stats: self.stats,
            facts,
        }
    }

    fn draining(&self) -> bool {
        self.drain_until.is_some()
    }

    fn begin_drain(&mut self, now: Instant) {
        self.drain_until = Some(later(now, DRAIN));
        self.retries.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.conns[key].peer.stop_sending();
            self.rearm(key);
        }
    }

    /// When the next new connection or reconnect is due, if any.
    fn next_connect_at(&self) -> Option<Instant> {
        // Hook (tls): at the cap, a handshake's end (an event) lets the next one start.
        if self.draining() {
            return None;
        }
        if self.at_handshake_cap() {
            return self.warm_up_deadline();
        }
        let retry = self.retries.peek().map(|Reverse((at, _, _, _))| *at);
        earliest([self.pacer.next_at(), retry])
    }

    /// Starts the connections due now, for about a millisecond at most: the rest wait for
    /// the next turn, so that answers and sends are served during a ramp.
    fn start_connections(&mut self) {
        let began = Instant::now();
        let mut now = began;
        while within_budget(began, now) {
            // Hook (tls): no more handshakes in flight than the cap.
            if self.at_handshake_cap() {
                return;
            }
            if let Some(slot) = self.pacer.take(now) {
                self.start_one(slot as u32, 0, false, false);
            } else if let Some(&Reverse((at, slot, attempt, served))) = self.retries.peek() {
                if at > now {
                    return;
                }
                self.retries.pop();
                self.stats.on_reconnect();
                self.start_one(slot, attempt, true, served);
            } else {
                return;
            }
            now = Instant::now();
        }
    }

    fn start_one(&mut self, slot: u32, attempt: u32, revived: bool, served: bool) {
        let source = match self.config.bind.len() {
            0 => None,
            n => Some(self.config.bind[slot as usize % n]),
        };
        let called = Instant::now();
        self.stats.on_attempt();
        let peer = Peer::connecting(slot, attempt, revived, served, called);
        let stream = match net::connect_from(source, self.config.server) {
            Ok(stream) => stream,
            Err(e) => {
                self.connect_failed(&e);
                self.retry(&peer, called);
                return;
            }
        };
        self.track(stream, peer);
    }

    fn track(&mut self, mut stream: TcpStream, peer: Peer) {
        let generation = self.generations.issue();
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        if let Err(e) = registry.register(&mut stream, token(key, generation), interest) {
            self.connect_failed(&e.into());
            self.retry(&peer, Instant::now());
            return;
        }
        entry.insert(Conn {
            stream,
            generation,
            buffers: Buffers::default(),
            peer,
            tls: None,
            handshake_since: None,
            shaking: false,
            resuming: false,
            awaiting: false,
        });
        // Hook (tls): counted until its handshake is done.
        self.handshake_begun(key);
        self.rearm(key);
    }

    fn connect_failed(&mut self, error: &ConnectError) {
        self.stats
            .on_connect_failed(ConnectFailure::from_io(&error.source));
        let text = error.describe(self.config.server);
        debug!("{text}");
        self.first_error.get_or_insert(text);
    }

    /// With `--reconnect`, `peer`'s slot tries again after a back-off, which grows unless
    /// the connection lived ([`Peer::next_attempt`]).
    fn retry(&mut self, peer: &Peer, now: Instant) {
        if self.config.reconnect && !self.draining() {
            let attempt = peer.next_attempt(now);
            let delay = Backoff::DEFAULT.delay(attempt, &mut self.jitter);
            let served = peer.served();
            self.retries
                .push(Reverse((later(now, delay), peer.slot, attempt, served)));
        }
    }

    fn conn_key(&self, token: Token) -> Option<usize> {
        let (key, generation) = split(token);
        let conn = self.conns.get(key)?;
        (conn.generation == generation).then_some(key)
    }

    fn on_event(&mut self, token: Token, event: &Event) {
        if event.is_writable() || event.is_error() {
            if let Some(key) = self.conn_key(token) {
                self.on_writable(key);
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // A connection waiting to be read first next turn has had its reads for this one.
            let key = self
                .conn_key(token)
                .filter(|key| !self.cut_off.is_queued(*key));
            if let Some(key) = key {
                self.on_readable(key, event.is_read_closed() || event.is_error());
            }
        }
    }

    fn on_writable(&mut self, key: usize) {
        let now = Instant::now();
        let conn = &mut self.conns[key];
        let Some(since) = conn.peer.connecting_since() else {
            // Hook (tls): its own output.
            if conn.tls.is_some() {
                self.tls_flush(key, now);
                return;
            }
            if let Err(e) = conn::flush(&mut conn.stream, &mut conn.buffers) {
                self.failed(key, &e, now);
            }
            return;
        };
        match net::connect_result(&conn.stream) {
            Ok(false) => {}
            Ok(true) => self.opened(key, since, now),
            Err(e) => {
                let peer = conn.peer.clone();
                self.connect_failed(&e.into());
                self.forget(key);
                self.retry(&peer, now);
            }
        }
    }

    fn opened(&mut self, key: usize, since: Instant, now: Instant) {
        self.stats
            .on_connected(now.saturating_duration_since(since));
        self.ever_connected = true;
        if self.config.verbose {
            say!("Connected with {}", self.config.server);
        }
        // Hook (tls): the handshake begins.
        if !self.tls_start(key, now) {
            return;
        }
        let config = &self.config;
        let peer = &mut self.conns[key].peer;
        // The first data line goes out one interval after connecting; in load mode the
        // connections' first lines are spread over that interval so they do not all send
        // at once.
        let first = (!config.interval.is_zero()).then(|| {
            let n = config.connections.max(1) as u32;
            let slot = peer.slot % n + 1;
            later(now, config.interval / n * slot)
        });
        let fault = match peer.revived {
            true => None,
            false => config
                .faults
                .plan(config.seed, u64::from(peer.slot), config.fault_window()),
        };
        peer.on_open(now, first, fault);
        self.rearm(key);
    }

    /// Closes a connection; its unechoed lines are counted as unanswered. With
    /// `--reconnect` its slot comes back after a back-off.
    fn close(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let owed = conn.peer.outstanding();
        self.echoes_owed = self.echoes_owed.saturating_sub(u64::from(owed));
        if conn.peer.connecting_since().is_none() {
            self.stats.on_closed(u64::from(owed));
        }
        if let Some(at) = conn.peer.first_served_at() {
            self.stats
                .on_slot_opened(at.saturating_duration_since(self.start));
        }
        let peer = conn.peer.clone();
        self.forget(key);
        self.retry(&peer, now);
    }

    fn rearm(&mut self, key: usize) {
        let deadline = self.conns[key]
            .peer
            .next_deadline(self.config.interval, CONNECT_TIMEOUT);
        match deadline {
            Some(deadline) => self.timers.arm(key, deadline),
            None => self.timers.cancel(key),
        }
    }

    fn forget(&mut self, key: usize) {
        self.timers.cancel(key);
        // Hook (tls): a connection gone in its handshake frees its place.
        self.handshake_over(key);
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

impl Stoppable for Client {
    fn stop_parts(&self) -> (&StopSignal, &Registry) {
        (&self.stop, self.poll.registry())
    }
}
