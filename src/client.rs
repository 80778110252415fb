//! The client's poll loop: one connection that talks like the original client, or a load of
//! them for testing a server.
//!
//! Owns the client's sockets, its slab of connections and their timers (the next data line,
//! a delayed heartbeat answer, a connect timeout). Framing comes from `protocol`, buffering
//! from `conn`, counting from `stats`. With one connection it prints what it sends and
//! receives, as the original did; with more it prints only a status line and a summary.
//!
//! Every line sent is matched with its echo (they come back in order) or, when its
//! connection ends first, counted as unanswered: nothing is lost silently.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::conn::{read_once, split, token, Buffers, ReadResult};
use crate::net::{self, describe, interrupted, SetupError};
use crate::protocol::{self, Frame};
use crate::stats::{ClientStats, ClientSummary, ConnectFailure};
use crate::stop::{StopSignal, Stopper, SIGNALS, WAKER};
use crate::timer::{later, timeout_until, Timers};

/// Prints one line on stdout, ignoring errors: a closed pipe (`client | head`) must not
/// panic the client; it carries on and exits normally.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How the client runs. `Default` is the original's single client of 127.0.0.1:8000.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    /// Local addresses to connect from, used in turn; empty lets the kernel choose.
    pub bind: Vec<SocketAddr>,
    pub connections: usize,
    /// New connections started per second at most.
    pub connect_rate: u32,
    /// Time between data lines on each connection; zero sends none.
    pub interval: Duration,
    /// Delay before answering a heartbeat (the original's testing aid).
    pub heartbeat_block: Duration,
    pub message: Vec<u8>,
    /// Stop after this long; `None` runs until the server closes or Ctrl-C.
    pub duration: Option<Duration>,
    pub max_line: usize,
    pub tick: Duration,
    /// Print what is sent and received (single connection) instead of a status line.
    pub verbose: bool,
    /// Redraw a status line on stderr once a second.
    pub status_line: bool,
}

pub const DEFAULT_MESSAGE: &str = "Hello, there";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_RATE: u32 = 1000;
/// A connect that has not completed by then is counted as timed out.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At the end, how long to wait for echoes of lines already sent.
const DRAIN: Duration = Duration::from_secs(1);
const READ_BUFFER: usize = 64 * 1024;
const STATUS_PERIOD: Duration = Duration::from_secs(1);

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            server: SocketAddr::from(([127, 0, 0, 1], crate::server::DEFAULT_PORT)),
            bind: Vec::new(),
            connections: 1,
            connect_rate: DEFAULT_CONNECT_RATE,
            interval: DEFAULT_INTERVAL,
            heartbeat_block: Duration::ZERO,
            message: DEFAULT_MESSAGE.as_bytes().to_vec(),
            duration: None,
            max_line: protocol::DEFAULT_MAX_LINE,
            tick: crate::server::DEFAULT_TICK,
            verbose: true,
            status_line: false,
        }
    }
}

/// Why the client stopped, for the exit status and the last line printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Every connection was closed by the server (`End Connection` or end of stream).
    ClosedByServer,
    /// `--duration` passed.
    DurationReached,
    /// Ctrl-C, SIGTERM, or [`Stopper::stop`].
    Stopped,
    /// No connection could be opened.
    NothingConnected,
}

/// The result of a run: how it ended and what was counted.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub finish: Finish,
    pub summary: ClientSummary,
    /// The first connect error, for the single-connection client to report.
    pub first_error: Option<String>,
}

struct Conn {
    stream: TcpStream,
    generation: u32,
    /// When connecting started; `None` once connected.
    connecting_since: Option<Instant>,
    buffers: Buffers,
    next_send: Option<Instant>,
    /// Send times of lines not yet echoed, oldest first.
    awaiting_echo: VecDeque<Instant>,
    /// When each pending heartbeat answer is due (only with --heartbeat-block).
    answers_due: VecDeque<Instant>,
}

impl Conn {
    /// The connection's one timer: its connect timeout, or its next send or answer.
    fn next_deadline(&self) -> Option<Instant> {
        if let Some(since) = self.connecting_since {
            return Some(later(since, CONNECT_TIMEOUT));
        }
        match (self.next_send, self.answers_due.front()) {
            (Some(a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b.copied()),
        }
    }
}

pub struct Client {
    poll: Poll,
    config: ClientConfig,
    conns: Slab<Conn>,
    timers: Timers,
    stats: ClientStats,
    started: usize,
    next_generation: u32,
    start: Instant,
    read_buf: Vec<u8>,
    line_buf: Vec<u8>,
    /// Set when the run is ending: no new data lines or connections, only waiting (until
    /// this time at most) for the echoes of lines already sent.
    drain_until: Option<Instant>,
    stop: StopSignal,
    first_error: Option<String>,
}

impl Client {
    /// Prepares the loop; checks the open-file limit before any connection is made.
    pub fn new(config: ClientConfig) -> Result<Client, SetupError> {
        let event_loop = |what| move |source| SetupError::EventLoop { what, source };
        let poll = Poll::new().map_err(event_loop("poll instance"))?;
        let stop = StopSignal::new(poll.registry())?;
        let now = Instant::now();
        Ok(Client {
            poll,
            conns: Slab::with_capacity(config.connections.min(1 << 16)),
            timers: Timers::new(now, config.tick, config.connections),
            stats: ClientStats::new(config.connections as u64),
            started: 0,
            next_generation: 0,
            start: now,
            read_buf: vec![0; READ_BUFFER],
            line_buf: Vec::with_capacity(256),
            drain_until: None,
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
        let end = self.config.duration.map(|d| later(self.start, d));
        let mut next_status = self.start + STATUS_PERIOD;
        let mut last_opened = 0u64;
        let finish = loop {
            let now = Instant::now();
            let time_is_up = end.is_some_and(|end| now >= end);
            if !self.draining() && (self.stop.is_requested() || time_is_up) {
                self.drain_until = Some(later(now, DRAIN));
            }
            if let Some(until) = self.drain_until {
                let stats = &self.stats;
                let answered = stats.echoes_received + stats.unanswered;
                let echoes_owed = stats.lines_sent.saturating_sub(answered);
                if now >= until || echoes_owed == 0 {
                    break if self.stop.is_requested() {
                        Finish::Stopped
                    } else {
                        Finish::DurationReached
                    };
                }
            } else {
                self.start_connections(now);
                if self.started == self.config.connections && self.conns.is_empty() {
                    break if self.stats.opened == 0 {
                        Finish::NothingConnected
                    } else {
                        Finish::ClosedByServer
                    };
                }
            }
            let status = self.config.status_line.then_some(next_status);
            let wakeup = [
                self.timers.next_wakeup(),
                end,
                self.drain_until,
                self.next_connect_at(),
                status,
            ]
            .into_iter()
            .flatten()
            .min();
            if let Err(e) = self.poll.poll(&mut events, timeout_until(wakeup, now)) {
                if interrupted(&e) {
                    continue;
                }
                return Err(SetupError::EventLoop {
                    what: "poll wait",
                    source: e,
                });
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    SIGNALS => {
                        self.stop.on_signal_event();
                    }
                    token => {
                        if event.is_writable() || event.is_error() {
                            self.on_writable(token, now);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(token, now);
                        }
                    }
                }
            }
            self.fire_timers(now);
            if self.config.status_line && now >= next_status {
                let rate = (self.stats.opened - last_opened) as f64;
                last_opened = self.stats.opened;
                next_status = now + STATUS_PERIOD;
                let mut stderr = std::io::stderr();
                let _ = write!(stderr, "\r{}\x1b[K", self.stats.status_line(rate));
                let _ = stderr.flush();
            }
        };
        if self.config.status_line {
            eprintln!();
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key);
        }
        Ok(Outcome {
            finish,
            summary: self.stats.summary(self.start.elapsed()),
            first_error: self.first_error,
        })
    }

    fn draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// When the connect rate allows the next new connection, if any are left to start.
    fn next_connect_at(&self) -> Option<Instant> {
        if self.started >= self.config.connections || self.draining() {
            return None;
        }
        let rate = f64::from(self.config.connect_rate.max(1));
        Some(self.start + Duration::from_secs_f64(self.started as f64 / rate))
    }

    /// Starts as many connections as the connect rate allows by `now`.
    fn start_connections(&mut self, now: Instant) {
        while let Some(at) = self.next_connect_at() {
            if at > now {
                return;
            }
            let index = self.started;
            self.started += 1;
            let source = match self.config.bind.len() {
                0 => None,
                n => Some(self.config.bind[index % n]),
            };
            match net::connect_from(source, self.config.server) {
                Ok(stream) => self.track(stream, now),
                Err(e) => self.connect_failed(&e),
            }
        }
    }

    fn track(&mut self, mut stream: TcpStream, now: Instant) {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token(key, generation), interest)
        {
            self.connect_failed(&e);
            return;
        }
        let conn = entry.insert(Conn {
            stream,
            generation,
            connecting_since: Some(now),
            buffers: Buffers::default(),
            next_send: None,
            awaiting_echo: VecDeque::new(),
            answers_due: VecDeque::new(),
        });
        if let Some(deadline) = conn.next_deadline() {
            self.timers.arm(key, deadline);
        }
    }

    fn connect_failed(&mut self, error: &std::io::Error) {
        self.stats.record_failure(ConnectFailure::from_io(error));
        let text = format!(
            "cannot connect to {}: {}",
            self.config.server,
            describe(error)
        );
        debug!("{text}");
        self.first_error.get_or_insert(text);
    }

    fn conn_key(&self, token: Token) -> Option<usize> {
        let (key, generation) = split(token);
        let conn = self.conns.get(key)?;
        (conn.generation == generation).then_some(key)
    }

    fn on_writable(&mut self, token: Token, now: Instant) {
        let Some(key) = self.conn_key(token) else {
            return;
        };
        let conn = &mut self.conns[key];
        if let Some(since) = conn.connecting_since {
            match net::connect_result(&conn.stream) {
                Ok(false) => return,
                Ok(true) => {
                    conn.connecting_since = None;
                    self.stats.opened += 1;
                    self.stats.open += 1;
                    self.stats.record_connect_time(now - since);
                    if self.config.verbose {
                        say!("Connected with {}", self.config.server);
                    }
                    let first = self.first_send_delay(key);
                    let conn = &mut self.conns[key];
                    conn.next_send = first.map(|delay| later(now, delay));
                    self.rearm(key);
                }
                Err(e) => {
                    self.connect_failed(&e);
                    self.forget(key);
                }
            }
            return;
        }
        if let Err(e) = conn.buffers.flush(&mut conn.stream) {
            self.failed(key, &e);
        }
    }

    /// The first data line goes out one interval after connecting; in load mode the
    /// connections' first lines are spread over that interval so they do not all send at once.
    fn first_send_delay(&self, key: usize) -> Option<Duration> {
        let interval = self.config.interval;
        if interval.is_zero() {
            return None;
        }
        let n = self.config.connections.max(1) as u32;
        let slot = (key % n as usize) as u32 + 1;
        Some(interval / n * slot)
    }

    fn on_readable(&mut self, token: Token, now: Instant) {
        let Some(key) = self.conn_key(token) else {
            return;
        };
        loop {
            let conn = &mut self.conns[key];
            if conn.connecting_since.is_some() {
                return;
            }
            match read_once(&mut conn.stream, &mut self.read_buf) {
                ReadResult::Data(n) => {
                    if !self.on_bytes(key, n, now) {
                        return;
                    }
                }
                ReadResult::Eof => {
                    self.closed_by_server(key);
                    return;
                }
                ReadResult::WouldBlock => return,
                ReadResult::Failed(e) => {
                    self.failed(key, &e);
                    return;
                }
            }
        }
    }

    /// Handles the lines in `read_buf[..n]`. Returns false if the connection ended.
    fn on_bytes(&mut self, key: usize, n: usize, now: Instant) -> bool {
        let Client {
            conns,
            read_buf,
            stats,
            config,
            ..
        } = self;
        let conn = &mut conns[key];
        let mut end_connection = false;
        let mut answer_now = 0;
        let verbose = config.verbose;
        conn.buffers.feed(config.max_line, &read_buf[..n], |frame| {
            let Frame::Line(line) = frame else {
                warn!(
                    "a line from the server is longer than {} bytes",
                    config.max_line
                );
                return;
            };
            if verbose {
                say!("Received: {}", String::from_utf8_lossy(line));
            }
            if line == protocol::END_CONNECTION {
                end_connection = true;
            } else if line == protocol::HEARTBEAT {
                if config.heartbeat_block.is_zero() {
                    answer_now += 1;
                } else {
                    conn.answers_due
                        .push_back(later(now, config.heartbeat_block));
                }
            } else if line.starts_with(protocol::ECHO_PREFIX) {
                if let Some(sent) = conn.awaiting_echo.pop_front() {
                    stats.echoes_received += 1;
                    stats.record_rtt(now.saturating_duration_since(sent));
                }
            }
        });
        if end_connection {
            self.closed_by_server(key);
            return false;
        }
        for _ in 0..answer_now {
            if !self.answer_heartbeat(key) {
                return false;
            }
        }
        self.rearm(key);
        true
    }

    fn answer_heartbeat(&mut self, key: usize) -> bool {
        self.stats.heartbeats_answered += 1;
        self.send(key, protocol::HEARTBEAT_REPLY)
    }

    /// Sends one line; false (and the connection closed) if the send failed.
    fn send(&mut self, key: usize, line: &[u8]) -> bool {
        let conn = &mut self.conns[key];
        self.line_buf.clear();
        protocol::encode_line(&mut self.line_buf, line);
        if self.config.verbose {
            say!("Sent: {}", String::from_utf8_lossy(line));
        }
        match conn.buffers.send(&mut conn.stream, &self.line_buf) {
            Ok(()) => true,
            Err(e) => {
                self.failed(key, &e);
                false
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let draining = self.draining();
        while let Some(key) = self.timers.poll_expired(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.connecting_since.is_some() {
                self.connect_failed(&std::io::ErrorKind::TimedOut.into());
                self.forget(key);
                continue;
            }
            let mut answers = 0;
            while conn.answers_due.front().is_some_and(|&due| due <= now) {
                conn.answers_due.pop_front();
                answers += 1;
            }
            let send_data = conn.next_send.is_some_and(|at| at <= now);
            if send_data {
                conn.next_send = (!draining).then(|| later(now, self.config.interval));
            }
            for _ in 0..answers {
                if !self.answer_heartbeat(key) {
                    break;
                }
            }
            if send_data && !draining && self.conns.contains(key) {
                let message = std::mem::take(&mut self.config.message);
                let sent = self.send(key, &message);
                self.config.message = message;
                if sent {
                    self.stats.lines_sent += 1;
                    self.conns[key].awaiting_echo.push_back(now);
                }
            }
            if self.conns.contains(key) {
                self.rearm(key);
            }
        }
    }

    fn rearm(&mut self, key: usize) {
        match self.conns[key].next_deadline() {
            Some(deadline) => self.timers.arm(key, deadline),
            None => self.timers.cancel(key),
        }
    }

    fn closed_by_server(&mut self, key: usize) {
        self.stats.closed_by_server += 1;
        if self.config.verbose {
            say!("Connection closed by server");
        }
        self.close(key);
    }

    fn failed(&mut self, key: usize, error: &std::io::Error) {
        self.stats.errors += 1;
        if self.config.verbose {
            say!("Connection failed: {}", describe(error));
        } else {
            debug!("connection failed: {}", describe(error));
        }
        self.close(key);
    }

    /// Closes an established connection; its unechoed lines are counted as unanswered.
    fn close(&mut self, key: usize) {
        if let Some(conn) = self.conns.get(key) {
            if conn.connecting_since.is_none() {
                self.stats.open = self.stats.open.saturating_sub(1);
            }
            self.stats.unanswered += conn.awaiting_echo.len() as u64;
        }
        self.forget(key);
    }

    fn forget(&mut self, key: usize) {
        self.timers.cancel(key);
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

/// Whether stderr is a terminal that can show a status line redrawn in place.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
