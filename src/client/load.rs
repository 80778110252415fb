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
use std::io::{self, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::escape::Escaped;
use super::faults::FaultKind;
use super::peer::{Answer, Peer};
use super::rng::SplitMix64;
use super::schedule::{within_budget, Backoff, Pacer};
use super::warnings::Warnings;
use super::{memory, ClientConfig, Finish, Outcome};
use crate::conn::{read_once, split, token, Buffers, ReadResult};
use crate::net::{self, describe, interrupted, ConnectError, SetupError};
use crate::protocol::{self, Frame};
use crate::stats::client::{Memory, RunFacts};
use crate::stats::{ClientStats, ConnectFailure};
use crate::stop::{StopSignal, Stopper, SIGNALS, WAKER};
use crate::timer::{later, timeout_until, Timers};

/// Prints one line on stdout, ignoring errors: a closed pipe (`client | head`) must not
/// panic the client; it carries on and exits normally.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// A connect that has not completed by then is counted as timed out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At the end, how long to wait for echoes of lines already sent.
const DRAIN: Duration = Duration::from_secs(1);
const READ_BUFFER: usize = 64 * 1024;
/// Reads of one connection per event before the loop serves the others (and comes back).
const READS_PER_TURN: usize = 16;
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// A poll that returned sooner than this did not sleep: what it reported may have been
/// waiting since the previous turn began.
const DID_NOT_SLEEP: Duration = Duration::from_micros(50);

struct Conn {
    stream: TcpStream,
    generation: u32,
    buffers: Buffers,
    peer: Peer,
}

/// A reconnect waiting out its back-off: when, which slot, failed attempts so far.
type Retry = Reverse<(Instant, u32, u32)>;

pub struct Client {
    poll: Poll,
    config: ClientConfig,
    conns: Slab<Conn>,
    timers: Timers,
    stats: ClientStats,
    pacer: Pacer,
    retries: BinaryHeap<Retry>,
    jitter: SplitMix64,
    next_generation: u32,
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
    /// Connections that had more to read when their turn's reads ran out, and a spare list.
    unfinished: Vec<Token>,
    resume: Vec<Token>,
    warnings: Warnings,
    baseline_rss: u64,
    stop: StopSignal,
    first_error: Option<String>,
}

impl Client {
    /// Prepares the loop; checks the open-file limit before any connection is made.
    pub fn new(config: ClientConfig) -> Result<Client, SetupError> {
        let baseline_rss = memory::rss_bytes();
        let event_loop = |what| move |source| SetupError::EventLoop { what, source };
        let poll = Poll::new().map_err(event_loop("poll instance"))?;
        let stop = StopSignal::new(poll.registry())?;
        let now = Instant::now();
        Ok(Client {
            poll,
            conns: Slab::with_capacity(config.connections.min(1 << 16)),
            timers: Timers::new(now, config.tick, config.connections),
            stats: ClientStats::new(config.connections as u64),
            pacer: Pacer::new(now, config.connect_rate, config.connections),
            retries: BinaryHeap::new(),
            jitter: SplitMix64::new(config.seed ^ 0x6a09_e667_f3bc_c908),
            next_generation: 0,
            start: now,
            read_buf: vec![0; READ_BUFFER],
            line_buf: Vec::with_capacity(256),
            drain_until: None,
            echoes_owed: 0,
            ever_connected: false,
            ready_since: now,
            unfinished: Vec::new(),
            resume: Vec::new(),
            warnings: Warnings::default(),
            baseline_rss,
            stop,
            first_error: None,
            config,
        })
    }

    pub fn stopper(&self) -> Stopper {
        self.stop.stopper()
    }

    /// Stops on SIGINT or SIGTERM (for the binary, not for tests).
    pub fn stop_on_signals(&mut self) -> Result<(), SetupError> {
        self.stop.listen_for_signals(self.poll.registry())
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
            let busy = (!self.unfinished.is_empty()).then_some(now);
            let wakeup = [
                self.timers.next_wakeup(),
                end,
                self.drain_until,
                self.next_connect_at(),
                status,
                busy,
            ]
            .into_iter()
            .flatten()
            .min();
            let entered = Instant::now();
            if let Err(e) = self.poll.poll(&mut events, timeout_until(wakeup, entered)) {
                if interrupted(&e) {
                    continue;
                }
                return Err(SetupError::EventLoop {
                    what: "poll wait",
                    source: e,
                });
            }
            let now = Instant::now();
            let slept = now.saturating_duration_since(entered) >= DID_NOT_SLEEP;
            self.ready_since = if slept { now } else { turn_began };
            turn_began = now;
            std::mem::swap(&mut self.unfinished, &mut self.resume);
            while let Some(token) = self.resume.pop() {
                self.on_readable(token, false);
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
        };
        Outcome {
            finish,
            summary: self.stats.summary(&facts),
            first_error: self.first_error,
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
        if self.draining() {
            return None;
        }
        let retry = self.retries.peek().map(|Reverse((at, _, _))| *at);
        [self.pacer.next_at(), retry].into_iter().flatten().min()
    }

    /// Starts the connections due now, for about a millisecond at most: the rest wait for
    /// the next turn, so that answers and sends are served during a ramp.
    fn start_connections(&mut self) {
        let began = Instant::now();
        let mut now = began;
        while within_budget(began, now) {
            if let Some(slot) = self.pacer.take(now) {
                self.start_one(slot as u32, 0, false);
            } else if let Some(&Reverse((at, slot, attempt))) = self.retries.peek() {
                if at > now {
                    return;
                }
                self.retries.pop();
                self.stats.on_reconnect();
                self.start_one(slot, attempt, true);
            } else {
                return;
            }
            now = Instant::now();
        }
    }

    fn start_one(&mut self, slot: u32, attempt: u32, revived: bool) {
        let source = match self.config.bind.len() {
            0 => None,
            n => Some(self.config.bind[slot as usize % n]),
        };
        let called = Instant::now();
        let stream = match net::connect_from(source, self.config.server) {
            Ok(stream) => stream,
            Err(e) => {
                self.connect_failed(&e);
                self.retry(slot, attempt + 1, called);
                return;
            }
        };
        self.track(stream, Peer::connecting(slot, attempt, revived, called));
    }

    fn track(&mut self, mut stream: TcpStream, peer: Peer) {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        if let Err(e) = registry.register(&mut stream, token(key, generation), interest) {
            self.connect_failed(&e.into());
            self.retry(peer.slot, peer.attempt + 1, Instant::now());
            return;
        }
        entry.insert(Conn {
            stream,
            generation,
            buffers: Buffers::default(),
            peer,
        });
        self.rearm(key);
    }

    fn connect_failed(&mut self, error: &ConnectError) {
        self.stats
            .on_connect_failed(ConnectFailure::from_io(&error.source));
        let text = error.describe(self.config.server);
        debug!("{text}");
        self.first_error.get_or_insert(text);
    }

    /// With `--reconnect`, slot `slot` tries again after a back-off.
    fn retry(&mut self, slot: u32, attempt: u32, now: Instant) {
        if self.config.reconnect && !self.draining() {
            let delay = Backoff::DEFAULT.delay(attempt, &mut self.jitter);
            self.retries
                .push(Reverse((later(now, delay), slot, attempt)));
        }
    }

    fn conn_key(&self, token: Token) -> Option<usize> {
        let (key, generation) = split(token);
        let conn = self.conns.get(key)?;
        (conn.generation == generation).then_some(key)
    }

    fn on_event(&mut self, token: Token, event: &Event) {
        if event.is_writable() || event.is_error() {
            self.on_writable(token);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.on_readable(token, event.is_read_closed() || event.is_error());
        }
    }

    fn on_writable(&mut self, token: Token) {
        let Some(key) = self.conn_key(token) else {
            return;
        };
        let now = Instant::now();
        let conn = &mut self.conns[key];
        let Some(since) = conn.peer.connecting_since() else {
            if let Err(e) = conn.buffers.flush(&mut conn.stream) {
                self.failed(key, &e, now);
            }
            return;
        };
        match net::connect_result(&conn.stream) {
            Ok(false) => {}
            Ok(true) => self.opened(key, since, now),
            Err(e) => {
                let (slot, attempt) = (conn.peer.slot, conn.peer.attempt);
                self.connect_failed(&e.into());
                self.forget(key);
                self.retry(slot, attempt + 1, now);
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

    /// Reads until the kernel has no more (or this turn's share is used up); a `noread`
    /// connection only notices the server closing.
    fn on_readable(&mut self, token: Token, closed: bool) {
        let Some(key) = self.conn_key(token) else {
            return;
        };
        let now = Instant::now();
        for _ in 0..READS_PER_TURN {
            let conn = &mut self.conns[key];
            if conn.peer.connecting_since().is_some() {
                return;
            }
            if !conn.peer.reads() {
                if closed {
                    self.closed_by_server(key, now);
                }
                return;
            }
            match read_once(&mut conn.stream, &mut self.read_buf) {
                ReadResult::Data(n) => {
                    if !self.on_bytes(key, n, now) {
                        return;
                    }
                }
                ReadResult::Eof => return self.closed_by_server(key, now),
                ReadResult::WouldBlock => return,
                ReadResult::Failed(e) => return self.failed(key, &e, now),
            }
        }
        self.unfinished.push(token);
    }

    /// Handles the lines in `read_buf[..n]`. Returns false if the connection ended.
    fn on_bytes(&mut self, key: usize, n: usize, now: Instant) -> bool {
        let Client {
            conns,
            read_buf,
            stats,
            config,
            warnings,
            echoes_owed,
            ..
        } = self;
        let conn = &mut conns[key];
        let (mut end_connection, mut heartbeat) = (false, false);
        conn.buffers.feed(config.max_line, &read_buf[..n], |frame| {
            let Frame::Line(line) = frame else {
                stats.on_line_too_long();
                let max = config.max_line;
                let text = || format!("a line from the server is longer than {max} bytes");
                if let Some(text) = warnings.line("line too long", now, text) {
                    warn!("{text}");
                }
                return;
            };
            if config.verbose {
                say!("Received: {}", Escaped(line));
            }
            if line == protocol::END_CONNECTION {
                end_connection = true;
            } else if line == protocol::HEARTBEAT {
                heartbeat = true;
            } else if line.starts_with(protocol::ECHO_PREFIX) {
                if let Some(scheduled) = conn.peer.on_echo(config.interval) {
                    *echoes_owed = echoes_owed.saturating_sub(1);
                    stats.on_echo(now.saturating_duration_since(scheduled));
                }
            }
        });
        if end_connection {
            self.closed_by_server(key, now);
            return false;
        }
        if heartbeat {
            match conn.peer.on_heartbeat(now, config.heartbeat_block) {
                Answer::Now => {
                    let lag = now.saturating_duration_since(self.ready_since);
                    return self.answer(key, lag, now);
                }
                Answer::Later => self.rearm(key),
                Answer::Never => {}
            }
        }
        true
    }

    /// Answers a heartbeat, unless output is already waiting: those bytes, once the server
    /// takes them, are sign of life enough. False if the connection ended.
    fn answer(&mut self, key: usize, lag: Duration, now: Instant) -> bool {
        if self.conns[key].buffers.unsent() > 0 {
            return true;
        }
        self.stats.on_heartbeat_answered(lag);
        self.send(key, protocol::HEARTBEAT_REPLY, now)
    }

    /// Sends one line; false (and the connection closed) if the send failed or the output
    /// the server has not taken grew past the cap.
    fn send(&mut self, key: usize, line: &[u8], now: Instant) -> bool {
        let conn = &mut self.conns[key];
        self.line_buf.clear();
        protocol::encode_line(&mut self.line_buf, line);
        if self.config.verbose {
            say!("Sent: {}", Escaped(line));
        }
        if let Err(e) = conn.buffers.send(&mut conn.stream, &self.line_buf) {
            self.failed(key, &e, now);
            return false;
        }
        let unsent = conn.buffers.unsent();
        if unsent <= self.config.output_cap {
            return true;
        }
        self.stats.on_output_cap();
        let text = || {
            format!("the server is not reading: closing a connection holding {unsent} bytes for it")
        };
        if let Some(text) = self.warnings.line("output cap", now, text) {
            warn!("{text}");
        }
        self.close(key, now);
        false
    }

    fn fire_timers(&mut self, now: Instant) {
        let interval = self.config.interval;
        while let Some(key) = self.timers.poll_expired(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let at = Instant::now();
            let work = conn.peer.on_timer(at, interval, CONNECT_TIMEOUT);
            if work.connect_timed_out {
                let (slot, attempt) = (conn.peer.slot, conn.peer.attempt);
                self.connect_failed(&io::Error::from(io::ErrorKind::TimedOut).into());
                self.forget(key);
                self.retry(slot, attempt + 1, at);
                continue;
            }
            if let Some(kind) = work.fault {
                if !self.strike(key, kind, at) {
                    continue;
                }
            }
            if let Some(due) = work.answer_due {
                if !self.answer(key, at.saturating_duration_since(due), at) {
                    continue;
                }
            }
            for _ in 0..work.lines {
                let Some(scheduled) = self.conns[key].peer.on_sent(interval) else {
                    break;
                };
                // Counted before it is written: if the write fails, closing counts the line
                // unanswered, so the books still balance.
                self.echoes_owed += 1;
                self.stats
                    .on_line_sent(at.saturating_duration_since(scheduled));
                let message = std::mem::take(&mut self.config.message);
                let sent = self.send(key, &message, at);
                self.config.message = message;
                if !sent {
                    break;
                }
            }
            if self.conns.contains(key) {
                self.rearm(key);
            }
        }
    }

    /// The connection turns bad. False if that closed it.
    fn strike(&mut self, key: usize, kind: FaultKind, now: Instant) -> bool {
        self.stats.on_fault_injected(kind);
        let conn = &mut self.conns[key];
        match kind {
            FaultKind::Silent | FaultKind::NoRead => true,
            FaultKind::HalfClose => match conn.stream.shutdown(Shutdown::Write) {
                Ok(()) => true,
                Err(e) => {
                    self.failed(key, &e, now);
                    false
                }
            },
            FaultKind::Reset => {
                // A zero linger turns the close into a reset, as when a process crashes.
                let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
                self.close(key, now);
                false
            }
        }
    }

    /// The server closed the connection: a fault found, or a false death.
    fn closed_by_server(&mut self, key: usize, now: Instant) {
        let healthy = match self.conns[key].peer.struck() {
            Some((kind, at)) => {
                let after = now.saturating_duration_since(at);
                self.stats.on_fault_detected(kind, after);
                false
            }
            None => true,
        };
        self.stats.on_closed_by_server(healthy);
        if self.config.verbose {
            say!("Connection closed by server");
        }
        self.close(key, now);
    }

    fn failed(&mut self, key: usize, error: &io::Error, now: Instant) {
        if self.conns[key].peer.struck().is_some() {
            // A reset after a fault is how a server closes on input it did not read.
            return self.closed_by_server(key, now);
        }
        self.stats.on_error();
        if self.config.verbose {
            say!("Connection failed: {}", describe(error));
        } else {
            debug!("connection failed: {}", describe(error));
        }
        self.close(key, now);
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
        let slot = conn.peer.slot;
        self.forget(key);
        self.retry(slot, 0, now);
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
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}
