//! The server's poll loop: accepts peers, echoes their lines, and carries out what `liveness`
//! decides when their timers come due.
//!
//! Owns the sockets, the slab of connection records and the timers. It makes no timing
//! decision itself (`liveness` does), frames no bytes itself (`protocol` does) and keeps
//! no buffer itself (`conn` does): it only moves bytes between sockets and those cores.
//!
//! One turn of the loop: sleep in `poll` until an event or the next timer; handle each
//! event (accept, read, write); fire every timer that is due; finish reading peers that
//! were cut off for fairness. An idle server sleeps until its earliest timer.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

use crate::alarm::{Alarm, ALARM};
use crate::allow::AllowList;
use crate::conn::{read_once, split, token, Buffers, ReadResult};
use crate::liveness::{Action, Peer, Timing};
use crate::net::{self, describe, interrupted, out_of_files, would_block, SetupError};
use crate::protocol::{self, classify, Frame, Message};
use crate::ratelimit::LogLimiter;
use crate::stats::ServerStats;
use crate::stop::{StopSignal, Stopper, SIGNALS, WAKER};
use crate::timer::{later, timeout_until, Timers};

/// How the server runs. `Default` gives the documented defaults on 127.0.0.1:8000.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub timing: Timing,
    /// Resolution of the timer wheel: timers fire at most this late (plus loop latency).
    pub tick: Duration,
    /// Longest line accepted, in bytes.
    pub max_line: usize,
    /// Output held for one peer before the server stops reading from it.
    pub max_write_buffer: usize,
    /// Peers served at once; one more is told `Error: server full` and closed.
    pub max_connections: usize,
    /// Peers allowed in by source address; empty allows everyone.
    pub allow: AllowList,
    pub backlog: i32,
}

pub const DEFAULT_PORT: u16 = 8000;
/// Chosen by measurement (10,000 silent peers closed as dead while 10,000 more connected,
/// 2-core machine; README, Performance): End Connection lateness p99 0.7 ms, max 1.2 ms at
/// 500 µs, against p99 1.2 ms, max 3.7–4.3 ms at 1 ms; 250 µs and 100 µs cost 5–35% more
/// CPU in that run for tails no better than the machine's scheduling noise.
pub const DEFAULT_TICK: Duration = Duration::from_micros(500);
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 1 << 20;
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Large enough for a burst of a thousand connects between two loop turns; the kernel caps
/// it at `net.core.somaxconn`.
pub const DEFAULT_BACKLOG: i32 = 4096;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            timing: Timing::DEFAULT,
            tick: DEFAULT_TICK,
            max_line: protocol::DEFAULT_MAX_LINE,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allow: AllowList::default(),
            backlog: DEFAULT_BACKLOG,
        }
    }
}

/// Below the stop tokens (`stop::WAKER`, `stop::SIGNALS`) and above `alarm::ALARM`.
const LISTENER: Token = Token(usize::MAX - 2);

/// Reads served to one peer per event before others get their turn (64 KiB each).
const READS_PER_TURN: usize = 16;
const READ_BUFFER: usize = 64 * 1024;
/// After accept fails for lack of file descriptors, wait this long before trying again:
/// long enough not to spin, short enough that peers barely notice.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long stopping waits for peers to take their `End Connection`.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// How long a peer declared dead has to take its `End Connection` and close its side.
const DEAD_LINGER: Duration = Duration::from_secs(2);
/// An echo is at most this many times the bytes read: an empty line, 1 byte, comes back as
/// `Echoing...` and a newline. Reads are sized by it so output stays within its limit.
const ECHO_GROWTH: usize = protocol::ECHO_PREFIX.len() + 1;

/// Why a connection ended; each is counted and logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The peer closed its side (after its output was flushed).
    PeerClosed,
    /// Every heartbeat went unanswered; the peer was told `End Connection`.
    Dead,
    /// A reset, broken pipe or other I/O error.
    Failed,
    /// The server is stopping.
    Shutdown,
}

/// One peer: 48 bytes plus the wheel's node; buffers only while they hold bytes.
struct Conn {
    stream: TcpStream,
    generation: u32,
    /// `Some` once the connection is ending: input is read and dropped, output flushed, our
    /// side shut down, and the socket closed once the peer has closed its side too (or the
    /// linger time ran out). Closing with input unread would send a reset, which can destroy
    /// output the kernel has not delivered yet, `End Connection` included.
    ending: Option<Ending>,
    /// The peer closed its sending side.
    eof_seen: bool,
    /// Our sending side is shut down: everything queued has been handed to the kernel.
    write_closed: bool,
    /// Reading stopped because the peer is not taking its output.
    read_paused: bool,
    liveness: Peer,
    buffers: Buffers,
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    conns: Slab<Conn>,
    timers: Timers,
    config: ServerConfig,
    stats: ServerStats,
    next_generation: u32,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    /// Peers whose reads were cut short for fairness; served again before sleeping.
    unfinished: Vec<Token>,
    accept_paused_until: Option<Instant>,
    stop: StopSignal,
    alarm: Alarm,
    log_limiter: LogLimiter,
}

impl Server {
    /// Binds the listening socket. Nothing is accepted until [`Server::run`].
    pub fn bind(config: ServerConfig) -> Result<Server, SetupError> {
        let event_loop = |what| move |source| SetupError::EventLoop { what, source };
        let poll = Poll::new().map_err(event_loop("poll instance"))?;
        let mut listener = net::listen(config.addr, config.backlog)?;
        let local_addr = listener.local_addr().map_err(|source| SetupError::Listen {
            addr: config.addr,
            source,
        })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(event_loop("listener registration"))?;
        let stop = StopSignal::new(poll.registry())?;
        let alarm = Alarm::new(poll.registry())?;
        let now = Instant::now();
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            conns: Slab::new(),
            timers: Timers::new(now, config.tick, 0),
            stats: ServerStats::default(),
            next_generation: 0,
            read_buf: vec![0; READ_BUFFER],
            write_buf: Vec::with_capacity(2 * READ_BUFFER),
            unfinished: Vec::new(),
            accept_paused_until: None,
            stop,
            alarm,
            log_limiter: LogLimiter::new(Duration::from_secs(1)),
            config,
        })
    }

    /// The address actually bound (with the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stopper(&self) -> Stopper {
        self.stop.stopper()
    }

    /// Stops the server on SIGINT or SIGTERM (for the binary, not for tests).
    pub fn stop_on_signals(&mut self) -> Result<(), SetupError> {
        self.stop.listen_for_signals(self.poll.registry())
    }

    /// Serves until stopped, then tells every peer `End Connection` and returns the counts.
    pub fn run(mut self) -> Result<ServerStats, SetupError> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.is_requested() {
            let now = Instant::now();
            let wakeup = self.next_wakeup();
            self.alarm.arm(wakeup, now);
            let sleeping = self.unfinished.is_empty();
            // Only an alarm still ahead measures the OS: one already due is the loop's lag.
            let alarm_ahead = wakeup.filter(|at| sleeping && *at > now);
            let timeout = match sleeping {
                true => timeout_until(wakeup, now),
                false => Some(Duration::ZERO),
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if interrupted(&e) {
                    continue;
                }
                return Err(SetupError::EventLoop {
                    what: "poll wait",
                    source: e,
                });
            }
            let now = Instant::now();
            let slept_past = alarm_ahead.filter(|due| now > *due);
            if let Some(due) = slept_past {
                self.stats.wake_delay.record(now - due);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {}
                    ALARM => self.alarm.on_event(),
                    SIGNALS => self.take_signals(),
                    token => {
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            self.on_writable(token, now);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(token, now);
                        }
                    }
                }
            }
            let mut unfinished = std::mem::take(&mut self.unfinished);
            for token in unfinished.drain(..) {
                self.on_readable(token, now);
            }
            if self.unfinished.is_empty() {
                // Keep the capacity: no allocation per turn while peers are cut off.
                self.unfinished = unfinished;
            }
            self.fire_timers(now, slept_past);
            debug_assert_eq!(
                self.timers.len(),
                self.conns.len(),
                "every open connection has exactly one timer, and no closed one has any"
            );
            if self.accept_paused_until.is_some_and(|until| until <= now) {
                self.accept_paused_until = None;
                self.accept_all(now);
            }
        }
        self.shutdown(&mut events);
        Ok(self.stats)
    }

    /// When the loop must wake even if no peer does anything: the next timer, or the end of
    /// an accept back-off.
    fn next_wakeup(&self) -> Option<Instant> {
        match (self.timers.next_wakeup(), self.accept_paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_signals(&mut self) {
        if let Some(signal) = self.stop.on_signal_event() {
            let name = match signal {
                signal_hook::consts::SIGINT => "SIGINT",
                signal_hook::consts::SIGTERM => "SIGTERM",
                _ => "a signal",
            };
            info!("received {name}: stopping");
        }
    }

    /// Accepts until the kernel has no more waiting peers.
    fn accept_all(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        while let Some(listener) = &self.listener {
            match listener.accept() {
                Ok((stream, addr)) => self.admit(stream, addr, now),
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // Out of descriptors (or worse): the waiting peer stays in the backlog
                    // and accept would fail again at once, so back off instead of spinning.
                    self.stats.accept_errors += 1;
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    let what = if out_of_files(&e) {
                        "out of file descriptors"
                    } else {
                        "accept failed"
                    };
                    if self.log_limiter.allow("accept", now) {
                        warn!(
                            "{what} ({}): not accepting for {}ms; {} peers open",
                            describe(&e),
                            ACCEPT_BACKOFF.as_millis(),
                            self.conns.len()
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Takes in one accepted peer, or turns it away.
    fn admit(&mut self, mut stream: TcpStream, addr: SocketAddr, now: Instant) {
        if !self.config.allow.allows(addr.ip()) {
            self.stats.rejected_not_allowed += 1;
            if self.log_limiter.allow("not allowed", now) {
                info!("{addr} refused: not in the --allow list");
            }
            return;
        }
        if self.conns.len() >= self.config.max_connections {
            self.stats.rejected_full += 1;
            self.write_buf.clear();
            protocol::encode_line(&mut self.write_buf, protocol::SERVER_FULL);
            // Best effort: a fresh socket has room for one short line.
            let _ = stream.write(&self.write_buf);
            if self.log_limiter.allow("full", now) {
                warn!(
                    "{addr} refused: server full ({} peers, --max-connections)",
                    self.conns.len()
                );
            }
            return;
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let registered = self.poll.registry().register(
            &mut stream,
            token(key, generation),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            warn!("{addr}: cannot watch the connection: {}", describe(&e));
            return;
        }
        // Echoes are small and interactive: do not hold them back waiting for ACKs.
        let _ = stream.set_nodelay(true);
        let liveness = Peer::new(now);
        self.timers.arm(key, liveness.deadline(&self.config.timing));
        entry.insert(Conn {
            stream,
            generation,
            ending: None,
            eof_seen: false,
            write_closed: false,
            read_paused: false,
            liveness,
            buffers: Buffers::default(),
        });
        self.stats.on_open();
        info!("{addr} connected ({} open)", self.conns.len());
    }

    /// The connection behind `token`, if it is still the one the token was issued for.
    fn conn_key(&self, token: Token) -> Option<usize> {
        let (key, generation) = split(token);
        let conn = self.conns.get(key)?;
        (conn.generation == generation).then_some(key)
    }

    /// Reads and echoes until the kernel has nothing more, the peer's output is full, or the
    /// peer has had its turn.
    fn on_readable(&mut self, token: Token, now: Instant) {
        let Some(key) = self.conn_key(token) else {
            return;
        };
        if self.conns[key].ending.is_some() {
            self.drop_input(key);
            return;
        }
        for _ in 0..READS_PER_TURN {
            let conn = &mut self.conns[key];
            let room = self
                .config
                .max_write_buffer
                .saturating_sub(conn.buffers.unsent());
            if room == 0 {
                // Back-pressure: leave the peer's bytes in the kernel until it reads. That it
                // has sent more is still a sign of life.
                conn.read_paused = true;
                conn.liveness.on_data(now);
                return;
            }
            // Sized so that echoing what is read cannot overrun the limit.
            let want = (room / ECHO_GROWTH).clamp(1, READ_BUFFER);
            match read_once(&mut conn.stream, &mut self.read_buf[..want]) {
                ReadResult::Data(n) => {
                    if let Err(e) = self.echo(key, Some(n)) {
                        self.write_failed(key, &e);
                        return;
                    }
                }
                ReadResult::Eof => {
                    // Logged now: once both sides are shut the socket no longer knows its peer.
                    info!("{}: peer closed the connection", peer_name(conn));
                    if let Err(e) = self.echo(key, None) {
                        self.write_failed(key, &e);
                        return;
                    }
                    self.conns[key].eof_seen = true;
                    self.begin_ending(key, Ending::PeerClosed, now);
                    return;
                }
                ReadResult::WouldBlock => return,
                ReadResult::Failed(e) => {
                    debug!("{}: read failed: {}", peer_name(conn), describe(&e));
                    self.close(key, Ending::Failed);
                    return;
                }
            }
        }
        self.unfinished.push(token);
    }

    /// Frames what was read (`Some(n)`: `read_buf[..n]`; `None`: the end of the input, which
    /// completes a last line without a newline), echoes each data line, and sends the echoes
    /// in one write.
    fn echo(&mut self, key: usize, read: Option<usize>) -> std::io::Result<()> {
        let Server {
            conns,
            read_buf,
            write_buf,
            stats,
            config,
            ..
        } = self;
        let conn = &mut conns[key];
        // Read now, not at the start of the loop turn, so that L is never earlier than the
        // bytes' arrival and no heartbeat comes early.
        if conn.liveness.on_data(Instant::now()) > 0 {
            stats.heartbeats_answered += 1;
            info!("{}: heartbeat answered", peer_name(conn));
        }
        write_buf.clear();
        let max_line = config.max_line;
        let mut on_frame = |frame: Frame<'_>| match frame {
            Frame::Line(line) => match classify(line) {
                Message::HeartbeatReply => {}
                Message::Data(data) => {
                    debug!("data: {}", String::from_utf8_lossy(data));
                    protocol::encode_echo(write_buf, data);
                    stats.lines_echoed += 1;
                }
            },
            Frame::TooLong => {
                protocol::encode_too_long(write_buf, max_line);
                stats.lines_too_long += 1;
            }
        };
        match read {
            Some(n) => conn.buffers.feed(max_line, &read_buf[..n], &mut on_frame),
            None => conn.buffers.finish(&mut on_frame),
        }
        if write_buf.is_empty() {
            return Ok(());
        }
        conn.buffers.send(&mut conn.stream, write_buf)
    }

    /// For an ending connection: reads and drops whatever the peer still sends, until it
    /// closes its side.
    fn drop_input(&mut self, key: usize) {
        loop {
            let conn = &mut self.conns[key];
            if conn.eof_seen {
                return;
            }
            match read_once(&mut conn.stream, &mut self.read_buf) {
                ReadResult::Data(_) => {}
                ReadResult::WouldBlock => return,
                ReadResult::Eof => {
                    conn.eof_seen = true;
                    self.advance_ending(key);
                    return;
                }
                ReadResult::Failed(_) => {
                    if let Some(ending) = conn.ending {
                        self.close(key, ending);
                    }
                    return;
                }
            }
        }
    }

    fn write_failed(&mut self, key: usize, error: &std::io::Error) {
        debug!(
            "{}: write failed: {}",
            peer_name(&self.conns[key]),
            describe(error)
        );
        self.close(key, Ending::Failed);
    }

    fn on_writable(&mut self, token: Token, now: Instant) {
        let Some(key) = self.conn_key(token) else {
            return;
        };
        let conn = &mut self.conns[key];
        if conn.ending.is_some() {
            self.advance_ending(key);
            return;
        }
        match conn.buffers.flush(&mut conn.stream) {
            Err(e) => self.write_failed(key, &e),
            Ok(_) => {
                if conn.read_paused && conn.buffers.unsent() < self.config.max_write_buffer {
                    conn.read_paused = false;
                    self.on_readable(token, now);
                }
            }
        }
    }

    /// Runs every timer due at `now`. `slept_past`: the alarm this turn's wake-up came late
    /// for, if it did.
    fn fire_timers(&mut self, now: Instant, slept_past: Option<Instant>) {
        let timing = self.config.timing;
        while let Some(key) = self.timers.poll_expired(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if let Some(ending) = conn.ending {
                // The peer had its time to take its last output; close regardless.
                self.close(key, ending);
                continue;
            }
            let due = conn.liveness.deadline(&timing);
            match conn.liveness.on_timer(now, &timing) {
                Action::Rearm(at) => self.timers.arm(key, at),
                Action::SendHeartbeat { number, next } => {
                    info!(
                        "{}: idle, heartbeat {number}/{} sent",
                        peer_name(conn),
                        timing.count
                    );
                    self.stats.heartbeats_sent += 1;
                    self.timers.arm(key, next);
                    self.send_line(key, protocol::HEARTBEAT);
                }
                Action::Close => {
                    self.stats
                        .on_end_connection_sent(due, Instant::now(), now, slept_past);
                    info!(
                        "{}: no answer to {} heartbeats: End Connection sent, closing",
                        peer_name(conn),
                        timing.count
                    );
                    self.send_line(key, protocol::END_CONNECTION);
                    self.begin_ending(key, Ending::Dead, now);
                }
            }
        }
    }

    /// Sends one protocol line; a failure closes the connection.
    fn send_line(&mut self, key: usize, line: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.write_buf.clear();
        protocol::encode_line(&mut self.write_buf, line);
        if let Err(e) = conn.buffers.send(&mut conn.stream, &self.write_buf) {
            debug!("{}: write failed: {}", peer_name(conn), describe(&e));
            self.close(key, Ending::Failed);
        }
    }

    /// Starts ending a connection: from now on its input is dropped, its output flushed,
    /// then its sending side shut down; it is closed once the peer has closed its side too,
    /// or when the linger time runs out.
    fn begin_ending(&mut self, key: usize, ending: Ending, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.ending = Some(ending);
        let linger = match ending {
            Ending::Shutdown => SHUTDOWN_FLUSH,
            Ending::Dead => DEAD_LINGER,
            // A peer that half-closed may be reading a large backlog of echoes.
            Ending::PeerClosed | Ending::Failed => self.config.timing.idle,
        };
        self.timers.arm(key, later(now, linger));
        self.advance_ending(key);
        if self.conns.contains(key) {
            self.drop_input(key);
        }
    }

    /// Moves an ending connection on as far as it can go now: flush, shut down our side,
    /// close once both sides are done.
    fn advance_ending(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(ending) = conn.ending else {
            return;
        };
        match conn.buffers.flush(&mut conn.stream) {
            Ok(true) => {
                if !conn.write_closed {
                    conn.write_closed = true;
                    // The FIN follows the last queued byte, End Connection included.
                    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                }
                if conn.eof_seen {
                    self.close(key, ending);
                }
            }
            Ok(false) => {}
            // The peer is gone: nothing more to deliver, and the ending's reason stands.
            Err(_) => self.close(key, ending),
        }
    }

    fn close(&mut self, key: usize, ending: Ending) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        self.timers.cancel(key);
        self.stats.on_close();
        match ending {
            Ending::PeerClosed => self.stats.closed_by_peer += 1,
            Ending::Dead => self.stats.closed_dead += 1,
            Ending::Failed => self.stats.closed_on_error += 1,
            Ending::Shutdown => self.stats.closed_at_shutdown += 1,
        }
        deregister(self.poll.registry(), conn.stream);
    }

    /// Stops accepting, tells every peer `End Connection`, and waits up to one second for
    /// the line to leave before closing whatever is left.
    fn shutdown(&mut self, events: &mut Events) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let now = Instant::now();
        let deadline = now + SHUTDOWN_FLUSH;
        info!(
            "stopping: telling {} peers End Connection",
            self.conns.len()
        );
        let open: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.ending.is_none())
            .map(|(key, _)| key)
            .collect();
        for key in open {
            self.send_line(key, protocol::END_CONNECTION);
            self.begin_ending(key, Ending::Shutdown, now);
        }
        while !self.conns.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Err(e) = self.poll.poll(events, Some(deadline - now)) {
                if !interrupted(&e) {
                    break;
                }
            }
            let now = Instant::now();
            for event in events.iter() {
                let token = event.token();
                if matches!(token, LISTENER | ALARM | WAKER | SIGNALS) {
                    continue;
                }
                if event.is_writable() || event.is_error() {
                    self.on_writable(token, now);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(token, now);
                }
            }
        }
        let left: Vec<(usize, Ending)> = self
            .conns
            .iter()
            .map(|(key, conn)| (key, conn.ending.unwrap_or(Ending::Shutdown)))
            .collect();
        for (key, ending) in left {
            self.close(key, ending);
        }
    }
}

fn deregister(registry: &Registry, mut stream: TcpStream) {
    // Closing the socket removes it from epoll anyway; deregistering first keeps mio's
    // bookkeeping exact on every platform.
    let _ = registry.deregister(&mut stream);
}

/// The peer's address for a log line, or a placeholder once the socket can no longer say.
fn peer_name(conn: &Conn) -> PeerName<'_> {
    PeerName(&conn.stream)
}

/// Formats as the peer's address, asked of the socket only when a log line is written (no
/// `String` per line, nothing at all when the level is off).
struct PeerName<'a>(&'a TcpStream);

impl std::fmt::Display for PeerName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.peer_addr() {
            Ok(addr) => addr.fmt(f),
            Err(_) => f.write_str("a peer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_record_is_small() {
        // The memory target is 128 bytes per idle connection for everything the process
        // holds; the record is the largest part of it.
        assert!(
            std::mem::size_of::<Conn>() <= 56,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
