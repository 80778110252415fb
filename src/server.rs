//! The server's poll loop: the shell around [`core::ServerCore`]. It owns the sockets, the
//! clock and the order of work in a loop turn; every decision (what to echo, when to send a
//! heartbeat, when a peer is dead, how a connection ends) is the core's.
//!
//! One turn: sleep in `poll` until an event or the core's one timeout
//! ([`ServerCore::poll_timeout`]: the loop keeps no deadline of its own and merges none);
//! read the clock once, and hand that time to every input of the turn; read the peers cut
//! off for fairness last turn, then this turn's events (each peer at most
//! [`READS_PER_TURN`] reads a turn); then fire the timers that were due when the turn woke,
//! a batch per `handle_timeout`, each batch stamped with the clock read anew (the core's
//! send-time rule: a heartbeat is never recorded as sent earlier than it left by more than a
//! batch); last, accept waiting peers (stamped with the latest of those reads). Bytes that
//! arrived while the loop was away, even stopped in the middle of its timers, are therefore
//! always counted before any peer is judged silent. After every input to the core, the loop
//! carries out all the actions it returns. The only other clock read measures the sleep
//! before `poll`, so that a long turn does not make the loop oversleep; no input sees it.

mod accept;
pub mod budget;
pub mod core;
pub mod parent;
mod proxied;
mod report;
mod scrape;
mod settings;
mod stopping;
pub mod takeover;
#[cfg(test)]
mod tests;
mod tls;
pub mod upgrade;
mod upgrading;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::info;
use mio::event::Event as PollEvent;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};

pub use self::parent::{channel_from_parent, Snapshot, ToParent};
pub use self::settings::{
    ServerConfig, DEFAULT_BACKLOG, DEFAULT_MAX_BUFFERED, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_WRITE_BUFFER, DEFAULT_PORT, DEFAULT_TICK,
};
pub use self::tls::{HANDSHAKE_CAP, HANDSHAKE_DEADLINE};

use self::core::{Action, ServerCore, Stage};
use self::scrape::Scrapers;
use crate::cores::ratelimit::LogLimiter;
use crate::edge::alarm::{Alarm, ALARM};
use crate::edge::conn::{read_once, write_until_blocked, Direct, ReadResult};
use crate::edge::net::{self, SetupError};
use crate::edge::stop::{StopSignal, Stoppable, SIGNALS, WAKER};
use crate::edge::turn::{
    earliest, split, wait, CutOff, Generations, Waited, READS_PER_TURN, READ_BUFFER,
};
use crate::ops::events::EventLog;
use crate::ops::stats::ServerStats;

/// Below the stop tokens (`stop::WAKER`, `stop::SIGNALS`) and above `alarm::ALARM`.
const LISTENER: Token = Token(usize::MAX - 2);

/// A peer's socket, kept under the core's key for it.
struct Socket {
    stream: TcpStream,
    /// Part of the peer's token, so an event for an earlier socket in the same slot is
    /// recognised and ignored.
    generation: u32,
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    core: ServerCore,
    /// Indexed by the core's keys.
    sockets: Vec<Option<Socket>>,
    generations: Generations,
    read_buf: Vec<u8>,
    /// Peers whose reads were cut short for fairness: read first next turn.
    cut_off: CutOff,
    /// Accepting stopped for a back-off while peers may still wait in the backlog.
    accept_deferred: bool,
    /// At `--max-connections` with peers accepted since the last reads: read them (their end
    /// of stream may free places) before refusing anyone (see `accept_all`).
    waiting_for_room: bool,
    stop: StopSignal,
    alarm: Alarm,
    log_limiter: LogLimiter,
    /// For per-peer info lines, which peers' numbers decide (see `report`).
    peer_lines: LogLimiter,
    /// The `--metrics` endpoint, when asked for.
    scrapers: Option<Scrapers>,
    /// The `--events` log, when asked for.
    events: Option<EventLog>,
    /// `--proxy-protocol`: peers waiting for their header, and their real addresses.
    handshakes: proxied::Handshakes,
    /// `--tls-cert`: handshakes in flight and the sessions of TLS peers.
    tls: Option<tls::Tls>,
    /// SIGUSR2's live upgrade, once enabled.
    upgrade: upgrading::Upgrading,
    /// With `--workers`, the pipe from the parent (see `parent`).
    parent: Option<parent::Parent>,
}

impl Server {
    /// Binds the listening socket. Nothing is accepted until [`Server::run`].
    pub fn bind(config: ServerConfig) -> Result<Server, SetupError> {
        let listener = net::listen_shared(config.addr, config.backlog, config.reuse_port)?;
        // Before the first peer (a live upgrade's new process does it in `take_over`).
        net::size_descriptor_table(&listener, config.max_connections);
        let metrics = match config.metrics {
            Some(addr) => Some(net::listen(addr, Scrapers::BACKLOG)?),
            None => None,
        };
        Server::assemble(config, listener, metrics)
    }

    /// The server around its listening sockets (bound here, or handed over in a live
    /// upgrade: `Server::take_over`).
    fn assemble(
        config: ServerConfig,
        mut listener: TcpListener,
        metrics: Option<TcpListener>,
    ) -> Result<Server, SetupError> {
        let event_loop = |what| move |source| SetupError::EventLoop { what, source };
        let poll = Poll::new().map_err(event_loop("poll instance"))?;
        let local_addr = listener.local_addr().map_err(|source| SetupError::Listen {
            addr: config.addr,
            source,
        })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(event_loop("listener registration"))?;
        let scrapers = match (metrics, config.metrics) {
            (Some(listener), Some(addr)) => Some(Scrapers::on(listener, addr, poll.registry())?),
            _ => None,
        };
        let events = match &config.events {
            Some(path) => Some(EventLog::open(path)?),
            None => None,
        };
        let stop = StopSignal::new(poll.registry())?;
        let alarm = Alarm::new(poll.registry())?;
        let open_files = net::open_file_limit();
        report::say_max_connections(config.max_connections, open_files);
        let mut settings = config.settings();
        settings.max_header_waits =
            core::waiting::default_header_waits(config.max_connections, open_files);
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            core: ServerCore::new(Instant::now(), settings),
            sockets: Vec::new(),
            generations: Generations::default(),
            read_buf: vec![0; READ_BUFFER],
            cut_off: CutOff::default(),
            accept_deferred: false,
            waiting_for_room: false,
            stop,
            alarm,
            log_limiter: LogLimiter::new(Duration::from_secs(1)),
            peer_lines: LogLimiter::with_burst(
                Duration::from_secs(1),
                report::PEER_LINES_PER_SECOND,
            ),
            scrapers,
            events,
            handshakes: proxied::Handshakes::new(config.proxy_protocol),
            tls: config.tls.map(tls::Tls::new),
            upgrade: upgrading::Upgrading::default(),
            parent: None,
        })
    }

    /// The address actually bound (with the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where metrics are served, when `--metrics` asked for it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.scrapers.as_ref().map(Scrapers::local_addr)
    }

    /// Serves until stopped, then tells every peer `End Connection`, waits up to
    /// [`core::STOP_LINGER`] for them to take it, and returns the counts. After a live
    /// upgrade it returns at once, every peer being the new process's.
    pub fn run(self) -> Result<ServerStats, SetupError> {
        self.run_to_end().map(|(stats, _)| stats)
    }

    /// [`run`](Self::run), and whether the peers were handed over to a new process (TLS
    /// peers kept until they had gone, with `--tls-cert`).
    pub fn run_to_end(mut self) -> Result<(ServerStats, bool), SetupError> {
        let mut events = Events::with_capacity(1024);
        loop {
            if self.core.is_done() || self.upgrade.handed_over {
                break;
            }
            // The one deadline beside the core's: the new binary's time to answer, during a
            // live upgrade only.
            let wakeup = earliest([self.core.poll_timeout(), self.upgrade.deadline()]);
            // Measures the sleep only (see the module notes).
            let before_sleep = Instant::now();
            let busy = !self.cut_off.is_empty() || self.waiting_for_room;
            let alarm = Some(&mut self.alarm);
            // Only an alarm still ahead measures the OS: one already due is the loop's lag.
            let alarm_ahead = match wait(
                &mut self.poll,
                &mut events,
                alarm,
                wakeup,
                busy,
                before_sleep,
            )? {
                Waited::Woke { alarm_ahead } => alarm_ahead,
                Waited::Interrupted => continue,
            };
            let now = Instant::now();
            self.turn(now, alarm_ahead, &events);
            debug_assert_eq!(
                self.core.timers_armed(),
                self.core.open(),
                "every open connection has exactly one timer, and no closed one has any"
            );
        }
        for (kind, held) in self.peer_lines.take_suppressed() {
            info!(
                "{held} more '{kind}' lines were suppressed (at most {} a second)",
                report::PEER_LINES_PER_SECOND
            );
        }
        self.report_kept();
        let handed_over = self.upgrade.handed_over || self.is_keeping();
        Ok((self.core.into_stats(), handed_over))
    }

    /// One turn of the loop, woken at `now` (`alarm_ahead`: the alarm it slept until).
    fn turn(&mut self, now: Instant, alarm_ahead: Option<Instant>, events: &Events) {
        let overslept = alarm_ahead.filter(|due| now > *due);
        self.end_pause(now);
        self.core.handle_wakeup(now, overslept);
        // Nothing done since the wake-up but the alarm's own event: see `fire_timers`.
        let mut only_woken = self.cut_off.is_empty();
        self.read_cut_off(now);
        let mut listener_ready = false;
        for event in events.iter() {
            only_woken &= event.token() == ALARM;
            match event.token() {
                LISTENER => listener_ready = true,
                WAKER => {}
                ALARM => self.alarm.on_event(),
                SIGNALS => self.take_signals(now),
                upgrading::UPGRADE => self.upgrade.on_event(),
                parent::PARENT => self.on_parent_event(),
                token if Scrapers::owns(token) => self.on_scrape_event(token, now),
                token if proxied::is_waiting(token) => self.on_waiting_event(token, now),
                // Hook (tls): a handshaking peer's event.
                token if tls::is_handshaking(token) => self.on_handshake_event(token, now),
                _ => self.on_socket_event(event, now),
            }
        }
        if self.stop.is_requested() && !self.core.is_stop_asked() {
            self.begin_stop(now);
        }
        let stamp = self.fire_timers(now, only_woken);
        // After the reads, so that peers that hung up free their places first, and after
        // the timers, one of which may have ended an accept back-off.
        if listener_ready || self.accept_deferred {
            self.accept_all(stamp.unwrap_or(now));
        }
        // Last, with every action of the turn carried out: a handover exports the state
        // between turns.
        self.upgrade_turn(stamp.unwrap_or(now));
    }

    /// Fires what was due when the turn woke (everything that had arrived by then has been
    /// read), a batch at a time, each stamped with the clock read anew, so that a
    /// heartbeat's recorded send time stays within a batch of the real one. Returns the last
    /// stamp, if any timer was due.
    ///
    /// `only_woken`: the turn has done nothing since it read the clock at `woke` (the alarm
    /// woke it, with no peer to read), so the first batch is stamped `woke`, as fresh as a
    /// new reading.
    fn fire_timers(&mut self, woke: Instant, only_woken: bool) -> Option<Instant> {
        if self.core.poll_timeout().is_none_or(|at| at > woke) {
            return None;
        }
        let mut fresh = only_woken.then_some(woke);
        loop {
            let now = fresh.take().unwrap_or_else(|| Instant::now().max(woke));
            let more = self.core.handle_timeout(now);
            self.carry_out(now);
            if !more {
                return Some(now);
            }
        }
    }

    fn socket(&self, key: usize) -> Option<&Socket> {
        self.sockets.get(key).and_then(Option::as_ref)
    }

    fn on_socket_event(&mut self, event: &PollEvent, now: Instant) {
        let (key, generation) = split(event.token());
        if self.socket(key).is_none_or(|s| s.generation != generation) {
            return;
        }
        let queued = self.cut_off.is_queued(key);
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            // Hook (tls): ciphertext the kernel refused goes first.
            if self.is_tls(key) {
                self.tls_flush(key, now);
            }
            self.core.handle_writable(now, key);
            self.carry_out(now);
        }
        // A peer already waiting to be read next turn has had its reads for this one.
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        if readable && !queued {
            // Only this event can say that nothing lies past the data: an end of stream or
            // an error it carries shows only to a read after the data.
            let nothing_past_data = !event.is_read_closed() && !event.is_error();
            self.read_peer_until(key, now, nothing_past_data);
        }
    }

    /// Reads `key` until the kernel has nothing more, the core wants no more for now, or the
    /// peer has had its turn; then it waits in the cut-off list for the next turn.
    fn read_peer(&mut self, key: usize, now: Instant) {
        self.read_peer_until(key, now, false);
    }

    /// [`read_peer`](Self::read_peer); with `stop_at_short_read`, a plain peer's read that
    /// came back shorter than asked for is its last this turn. The kernel had no more then,
    /// and readiness is edge-triggered: whatever arrives later, its end of stream included,
    /// wakes the loop again. That saves the empty read (`EAGAIN`) that would only say so,
    /// one of the four system calls of a heartbeat round.
    fn read_peer_until(&mut self, key: usize, now: Instant, stop_at_short_read: bool) {
        for _ in 0..READS_PER_TURN {
            let budget = self.core.read_budget(key);
            let Some(socket) = self.sockets.get_mut(key).and_then(Option::as_mut) else {
                return;
            };
            if budget == 0 {
                return;
            }
            let mut drained = false;
            match read_once(&mut Direct(&socket.stream), &mut self.read_buf[..budget]) {
                // Hook (tls): ciphertext goes through the peer's session.
                ReadResult::Data(n) if self.is_tls(key) => self.tls_read(key, n, now),
                ReadResult::Data(n) => {
                    drained = stop_at_short_read && n < budget;
                    self.core.handle_read(now, key, &self.read_buf[..n]);
                }
                ReadResult::Eof => self.core.handle_eof(now, key),
                ReadResult::WouldBlock => return,
                ReadResult::Failed(e) => self.core.handle_error(now, key, e.kind()),
            }
            self.carry_out(now);
            if drained {
                return;
            }
        }
        self.defer_read(key);
    }

    /// Reads `key` again next turn (once, however often this is asked).
    fn defer_read(&mut self, key: usize) {
        if self.socket(key).is_some() {
            self.cut_off.defer(key);
        }
    }

    fn read_cut_off(&mut self, now: Instant) {
        self.cut_off.start_turn();
        while let Some(key) = self.cut_off.pop() {
            self.read_peer(key, now);
        }
    }

    /// Does what the core decided, until it has nothing more.
    fn carry_out(&mut self, now: Instant) {
        while let Some(action) = self.core.poll_action() {
            match action {
                // Hook (tls): output sealed.
                Action::Write(key) if self.is_tls(key) => {
                    let result = self.tls_write(key);
                    self.core.handle_written(now, key, result);
                }
                Action::Write(key) => {
                    let result = match self.sockets.get_mut(key).and_then(Option::as_mut) {
                        Some(socket) => {
                            write_until_blocked(&mut Direct(&socket.stream), self.core.output(key))
                        }
                        None => Ok(0),
                    };
                    self.core.handle_written(now, key, result);
                }
                Action::Read(key) => self.defer_read(key),
                // Hook (tls): close_notify before the FIN.
                Action::ShutdownWrite(key) if self.is_tls(key) => self.tls_shutdown(key, now),
                Action::ShutdownWrite(key) => {
                    if let Some(socket) = self.socket(key) {
                        // The FIN follows the last queued byte, End Connection included.
                        let _ = socket.stream.shutdown(std::net::Shutdown::Write);
                    }
                }
                Action::Close(key) => {
                    self.tls_close(key);
                    if let Some(socket) = self.sockets.get_mut(key).and_then(Option::take) {
                        deregister(self.poll.registry(), socket.stream);
                    }
                }
                Action::Report(key, event) => self.report(key, event, now),
                Action::ReleaseMemory => crate::edge::memory::release_free_memory(),
                Action::EndWait(Stage::ProxyHeader, wk, end) => self.end_header_wait(wk, end, now),
                // Hook (tls): a handshake out of time, or the oldest at the cap.
                Action::EndWait(Stage::TlsHandshake, wk, end) => self.end_handshake(wk, end, now),
                Action::EndWait(stage, wk, _) => {
                    if let Some(scrapers) = &mut self.scrapers {
                        scrapers.end_wait(stage, wk, self.poll.registry());
                    }
                }
            }
        }
    }
}

impl Stoppable for Server {
    fn stop_parts(&self) -> (&StopSignal, &Registry) {
        (&self.stop, self.poll.registry())
    }
}

fn deregister(registry: &Registry, mut stream: TcpStream) {
    // Closing the socket removes it from epoll anyway; deregistering first keeps mio's
    // bookkeeping exact on every platform.
    let _ = registry.deregister(&mut stream);
}
