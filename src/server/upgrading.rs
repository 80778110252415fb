//! The server loop's part in a live upgrade. In the running server: SIGUSR2 starts the new
//! binary ([`upgrade::Upgrader`]), the loop serves on while it starts and watches the
//! channel, then stops, exports every peer from the core and hands the sockets over; on
//! success the loop ends without a word to any peer, on failure it serves on. In the new
//! server: [`Server::take_over`] builds the loop around the sockets and state handed over,
//! batch by batch as they come.
//!
//! With `--tls-cert`, TLS peers stay with the old process: rustls can hand a session's
//! secrets out (for kernel TLS) but cannot build a session from them in another process,
//! record crypto by hand is ruled out, and the socket alone would be read there as plain
//! lines. So the new process takes
//! the listening sockets and every plain peer (there are some only after an upgrade that
//! turned TLS on); the old one, listening no more, serves its TLS peers, and those still in
//! their PROXY header or TLS handshake, as before until they leave or `--tls-upgrade-keep`
//! has passed, then ends the rest as a drain does (`core::handover`), logs how they ended,
//! and exits with its summary. Each peer is served by exactly one process.
//!
//! Owns the upgrade's place in the loop (its token, its deadline beside the core's, the
//! pause's measure, the peers kept). Does not own the protocol (`cores::upgrade`), the
//! channel (`edge::handover`) nor a peer's state (`core::handover`).

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::core::{Stage, KEPT_SPREAD_PER_PEER};
use super::takeover::{self, GiveUp, Taken};
use super::upgrade::{StartedAs, Step, Upgrader};
use super::{Server, ServerConfig, Socket};
use crate::cores::vocab::format_duration;
use crate::edge::handover::Channel;
use crate::edge::net::{self, describe, SetupError};
use crate::edge::turn::token;
use crate::ops::stats::ServerStats;

/// The upgrade channel's token: its key part (`0xffff_efff`) is above every connection key
/// and every waiting peer's (below `0xffff_0000`), and below the fixed tokens and the
/// scrapers' slots at the very top.
pub(super) const UPGRADE: Token = Token(usize::MAX - 0x1000);

/// The loop's upgrade state; empty (and costing nothing) until upgrades are enabled.
#[derive(Default)]
pub(super) struct Upgrading {
    pub(super) upgrader: Option<Upgrader>,
    /// The channel had an event this turn.
    readable: bool,
    /// Every peer is the new process's: the loop ends without a word to them.
    pub(super) handed_over: bool,
    /// In the new process until its first turn: when the pause began and how many peers came.
    pause_began: Option<(Instant, u64)>,
    /// In a `--workers` worker: its parent asked for the upgrade (see `parent`).
    pub(super) asked_by_parent: bool,
    /// With `--tls-cert`: how long TLS peers are kept after the listener went
    /// (`--tls-upgrade-keep`).
    keep: Duration,
    /// `--drain`, for the log line that says how the kept peers will be ended.
    drain: Duration,
    /// After a live upgrade that kept TLS peers here: the counters then, to tell at exit how
    /// the kept peers ended.
    kept: Option<Box<ServerStats>>,
}

impl Upgrading {
    /// When the loop must wake for the upgrade (the new process's deadline to answer).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.upgrader.as_ref().and_then(Upgrader::poll_timeout)
    }

    pub(super) fn on_event(&mut self) {
        self.readable = true;
    }
}

impl Server {
    /// From now on SIGUSR2 starts a live upgrade: `started_as` (the path and arguments this
    /// server was started with) is run to take over. Not for a `--workers` worker.
    pub fn enable_upgrade(&mut self, started_as: StartedAs, config: &ServerConfig) {
        self.stop.take_upgrades();
        self.upgrade.upgrader = Some(Upgrader::new(started_as, config.fixed_for_upgrade()));
        self.upgrade.keep = config.tls_upgrade_keep;
        self.upgrade.drain = config.drain;
    }

    /// Whether this process handed its listener over and serves only the TLS peers it kept.
    pub(super) fn is_keeping(&self) -> bool {
        self.upgrade.kept.is_some()
    }

    /// In a `--workers` worker: its parent asks for live upgrades (a channel to the new
    /// worker it started comes with each ask); SIGUSR2 to the worker itself stays ignored.
    pub fn enable_upgrade_by_parent(&mut self, config: &ServerConfig) {
        self.upgrade.upgrader = Some(Upgrader::for_worker(config.fixed_for_upgrade()));
        self.upgrade.keep = config.tls_upgrade_keep;
        self.upgrade.drain = config.drain;
    }

    /// At the start of the new process's first turn, woken at `now`: the pause is over.
    pub(super) fn end_pause(&mut self, now: Instant) {
        if let Some((began, peers)) = self.upgrade.pause_began.take() {
            let pause = now.saturating_duration_since(began);
            let us = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
            self.core.stats_mut().upgrade_pause_us = us;
            info!("live upgrade: took over {peers} peers; the pause was {us} us");
            if let Some(events) = &mut self.events {
                events.record_upgrade(now, peers, Some(pause));
            }
        }
    }

    /// Once a turn, after its work: SIGUSR2, the channel, the deadline.
    pub(super) fn upgrade_turn(&mut self, now: Instant) {
        let stopping = self.core.is_stopping();
        if let Some(upgrader) = self.upgrade.upgrader.as_mut().filter(|_| stopping) {
            if upgrader.is_under_way() {
                // Peers being told End Connection are not handed over.
                let step = upgrader.abandon(now, "the server began to stop");
                self.upgrade_step(step, now);
            }
        }
        if self.stop.upgrade_asked() || std::mem::take(&mut self.upgrade.asked_by_parent) {
            self.begin_upgrade(now);
            // A channel from a worker's parent that no upgrade took: the new worker gives up.
            if let Some(upgrader) = &mut self.upgrade.upgrader {
                upgrader.forget_given();
            }
        }
        if std::mem::take(&mut self.upgrade.readable) {
            if let Some(upgrader) = &mut self.upgrade.upgrader {
                let step = upgrader.on_readable(now);
                self.upgrade_step(step, now);
            }
        }
        if self.upgrade.deadline().is_some_and(|at| at <= now) {
            if let Some(upgrader) = &mut self.upgrade.upgrader {
                let step = upgrader.handle_timeout(now);
                self.upgrade_step(step, now);
            }
        }
    }

    fn begin_upgrade(&mut self, now: Instant) {
        if self.core.is_stopping() {
            info!("received SIGUSR2 while stopping: no live upgrade");
            return;
        }
        if self.is_keeping() {
            info!(
                "received SIGUSR2: this process has handed its listening socket over and \
                 serves only the TLS peers it kept; ignored (signal the new process)"
            );
            return;
        }
        let open = self.core.open();
        let Some(upgrader) = &mut self.upgrade.upgrader else {
            return;
        };
        let Some(step) = upgrader.begin(now) else {
            info!("received SIGUSR2: a live upgrade is already under way");
            return;
        };
        info!("received SIGUSR2: live upgrade of {open} peers begins");
        if let Some(fd) = upgrader.channel_fd() {
            let registered =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), UPGRADE, Interest::READABLE);
            if let Err(e) = registered {
                // Not watched: the deadline still ends the attempt.
                warn!("cannot watch the upgrade channel: {}", describe(&e));
            }
        }
        self.upgrade_step(step, now);
    }

    fn upgrade_step(&mut self, step: Step, now: Instant) {
        match step {
            Step::Continue => {}
            Step::HandOver => {
                let step = self.hand_over(now);
                self.upgrade_step(step, now);
            }
            Step::Exit { peers } => {
                let stats = self.core.stats_mut();
                stats.upgrades += 1;
                stats.handed_over += peers;
                if let Some(events) = &mut self.events {
                    events.record_upgrade(now, peers, None);
                }
                // Hook (tls): TLS peers stay (see the module notes).
                if self.tls.is_some() {
                    self.keep_tls_peers(now, peers);
                } else {
                    self.upgrade.handed_over = true;
                    info!("live upgrade: {peers} peers handed over to the new process; exiting");
                }
            }
            Step::RolledBack { reason } => {
                self.core.stats_mut().upgrades_failed += 1;
                warn!("live upgrade given up: {reason}; serving on");
                self.tell_parent_given_up(&reason);
            }
        }
    }

    /// The new process has the listeners and every plain peer (`handed` of them), at `now`:
    /// this one forgets those, listens no more, and serves the TLS peers it keeps until they
    /// leave or `--tls-upgrade-keep` has passed (the core's `handle_upgraded`); with none to
    /// keep, it exits at once as without TLS.
    fn keep_tls_peers(&mut self, now: Instant, handed: u64) {
        let moved: Vec<usize> = self.core.keys().filter(|key| !self.is_tls(*key)).collect();
        for key in moved {
            self.core.forget_peer(now, key);
        }
        self.carry_out(now);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        // The metrics listener went too; scrapes under way here are closed.
        self.scrapers = None;
        // Which also closes the channel: the upgrade is over for this process, and the new
        // one is the service's main process (it said MAINPID=); none of its notifications
        // (STOPPING=1) may come from here.
        self.upgrade.upgrader = None;
        crate::ops::notify::handed_over();
        let kept = self.core.open();
        let arriving =
            self.core.waiting(Stage::ProxyHeader) + self.core.waiting(Stage::TlsHandshake);
        self.core.stats_mut().tls_kept += kept as u64;
        self.core.handle_upgraded(now, self.upgrade.keep);
        if self.parent.is_some() {
            // A `--workers` worker: the new worker carries every count up to now on, and
            // the parent adds what this one reports from here (`ToParent::SinceHandover`),
            // so the counts start afresh but for the peers still open here.
            let stats = self.core.stats_mut();
            *stats = ServerStats {
                open: stats.open,
                ..ServerStats::default()
            };
        }
        if kept + arriving == 0 {
            self.upgrade.handed_over = true;
            info!("live upgrade: {handed} peers handed over to the new process; no TLS peer to keep; exiting");
            return;
        }
        let keep = format_duration(self.upgrade.keep);
        let spread = match self.upgrade.drain {
            drain if drain.is_zero() => {
                format!("{} per peer", format_duration(KEPT_SPREAD_PER_PEER))
            }
            drain => format!("{} (--drain)", format_duration(drain)),
        };
        info!(
            "live upgrade: {handed} peers handed over to the new process; keeping {kept} TLS \
             peers (and {arriving} in their handshake or PROXY header) here, as a TLS session \
             cannot move: served until they leave, or for {keep} (--tls-upgrade-keep), then \
             told End Connection spread over {spread}; accepting no one"
        );
        self.upgrade.kept = Some(Box::new(self.core.stats().clone()));
    }

    /// At exit, after a live upgrade that kept TLS peers here: how they ended (and, in a
    /// `--workers` worker, the parent learns what they did since the handover).
    pub(super) fn report_kept(&mut self) {
        if self.is_keeping() {
            self.tell_parent_since_handover();
        }
        let (Some(then), now) = (&self.upgrade.kept, self.core.stats()) else {
            return;
        };
        let since = |now: u64, then: u64| now.saturating_sub(then);
        info!(
            "live upgrade: the peers kept here have all gone ({} accepted from handshakes \
             under way): {} left, {} told End Connection (time up, or stopped), {} closed as \
             dead, {} on error, {} in other ways; exiting",
            since(now.accepted, then.accepted),
            since(now.closed_by_peer, then.closed_by_peer),
            since(now.closed_at_shutdown, then.closed_at_shutdown),
            since(now.closed_dead, then.closed_dead),
            since(now.closed_on_error, then.closed_on_error),
            since(
                now.closed_over_budget + now.closed_probe,
                then.closed_over_budget + then.closed_probe
            ),
        );
    }

    /// The loop has stopped at `now` (it turns no more until this returns): every listener
    /// and every plain peer goes to the new process, with the counters so far. TLS peers
    /// stay (see the module notes): they are not counted open in what the new one carries
    /// on.
    fn hand_over(&mut self, now: Instant) -> Step {
        let Server {
            listener,
            local_addr,
            scrapers,
            core,
            sockets,
            handshakes,
            upgrade,
            tls,
            ..
        } = self;
        let tls = tls.as_ref();
        let moves = |key: usize| !tls.is_some_and(|tls| tls.has_session(key));
        let Some(upgrader) = &mut upgrade.upgrader else {
            return Step::Continue;
        };
        let mut listeners = Vec::new();
        if let Some(listener) = listener.as_ref() {
            listeners.push((*local_addr, listener.as_fd()));
        }
        if let Some(scrapers) = scrapers.as_ref() {
            listeners.push((scrapers.local_addr(), scrapers.listener().as_fd()));
        }
        let socket = |key: usize| sockets.get(key).and_then(Option::as_ref);
        let moving = core
            .keys()
            .filter(|key| moves(*key) && socket(*key).is_some());
        let (moving, kept) = (moving.count() as u64, core.open() as u64);
        let peers = core.keys().filter(|key| moves(*key)).filter_map(|key| {
            let socket = socket(key)?;
            let mut state = core.export_peer(now, key)?;
            state.real_addr = handshakes.real_addr(key, socket.generation);
            Some((state, socket.stream.as_fd()))
        });
        let mut stats = core.stats().clone();
        stats.open = moving;
        stats.tls_kept += kept.saturating_sub(moving);
        upgrader.hand_over(&listeners, peers, stats.to_exact_json(), now)
    }

    /// The new process's start: takes over from the running server on `channel` (see
    /// `takeover`), building this server around what it hands over as it comes: its
    /// listening sockets instead of binding, its peers with their state, its counters.
    pub fn take_over(config: &ServerConfig, channel: Channel) -> Result<Server, GiveUp> {
        // Now, while the old process still serves: sized with the listeners, the table
        // would stop this one for milliseconds inside the pause (see `reserve_descriptors`).
        net::size_descriptor_table(&channel, config.max_connections);
        let mut server: Option<Server> = None;
        let fixed = config.fixed_for_upgrade();
        takeover::take_over(channel, fixed, |taken| match (taken, &mut server) {
            (Taken::Listeners(listeners), None) => {
                let adopted = Server::adopt_listeners(config.clone(), listeners);
                server = Some(adopted.map_err(|e| e.to_string())?);
                Ok(())
            }
            (Taken::Peers(peers), Some(server)) => {
                let now = Instant::now();
                for (state, fd) in peers {
                    server.adopt_peer(now, &state, fd);
                }
                server.carry_out(now);
                Ok(())
            }
            (
                Taken::Done {
                    stats,
                    peers,
                    pause_began,
                },
                Some(server),
            ) => {
                server.adopt_counters(&stats, peers, pause_began);
                Ok(())
            }
            _ => Err("the listening sockets did not come first".to_string()),
        })?;
        server.ok_or_else(|| GiveUp {
            why: "nothing was handed over".into(),
            status: 1,
        })
    }

    /// The server around the listening sockets handed over (the peers' first, then the
    /// metrics one if `--metrics` is on).
    fn adopt_listeners(
        config: ServerConfig,
        listeners: Vec<(std::net::SocketAddr, OwnedFd)>,
    ) -> Result<Server, SetupError> {
        let mut listeners = listeners.into_iter().map(|(_, fd)| {
            // Already non-blocking: the flag belongs to the socket, which the old process set.
            mio::net::TcpListener::from_std(std::net::TcpListener::from(fd))
        });
        let missing = |what| SetupError::EventLoop {
            what,
            source: std::io::ErrorKind::NotFound.into(),
        };
        let listener = listeners
            .next()
            .ok_or_else(|| missing("listening socket handed over"))?;
        let metrics = match config.metrics {
            Some(_) => Some(
                listeners
                    .next()
                    .ok_or_else(|| missing("metrics socket handed over"))?,
            ),
            None => None,
        };
        Server::assemble(config, listener, metrics)
    }

    /// The counters handed over, carried on, and this upgrade counted.
    fn adopt_counters(&mut self, stats: &str, peers: u64, pause_began: Instant) {
        match ServerStats::from_exact_json(stats) {
            Ok(earlier) => self.core.carry_on(&earlier),
            Err(e) => warn!(
                "live upgrade: the counters handed over are unreadable ({e}); starting from 0"
            ),
        }
        let stats = self.core.stats_mut();
        stats.upgrades += 1;
        stats.handed_over += peers;
        self.upgrade.pause_began = Some((pause_began, peers));
    }

    fn adopt_peer(
        &mut self,
        now: Instant,
        state: &crate::cores::upgrade::wire::PeerState,
        fd: OwnedFd,
    ) {
        // Already non-blocking: the flag belongs to the socket, which the old process set.
        let stream = std::net::TcpStream::from(fd);
        let unknown = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        // Asked of the kernel only for the event log, which names it; a peer gone meanwhile
        // is taken in all the same, and its next read says so.
        let addr = match (state.real_addr, self.events.is_some()) {
            (Some(real), _) => real,
            (None, true) => stream.peer_addr().unwrap_or(unknown),
            (None, false) => unknown,
        };
        let mut stream = mio::net::TcpStream::from_std(stream);
        let key = self.core.import_peer(now, state, addr);
        let generation = self.generations.issue();
        let registered = self.poll.registry().register(
            &mut stream,
            token(key, generation),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            warn!(
                "{addr}: cannot watch the connection taken over: {}",
                describe(&e)
            );
            self.core.handle_error(now, key, e.kind());
            return;
        }
        if self.sockets.len() <= key {
            self.sockets.resize_with(key + 1, || None);
        }
        self.sockets[key] = Some(Socket { stream, generation });
        if let Some(real) = state.real_addr {
            self.handshakes.remember(key, generation, real);
        }
    }
}
