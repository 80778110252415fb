//! The server loop's part in a live upgrade. In the running server: SIGUSR2 starts the new
//! binary ([`upgrade::Upgrader`]), the loop serves on while it starts and watches the
//! channel, then stops, exports every peer from the core and hands the sockets over; on
//! success the loop ends without a word to any peer, on failure it serves on. In the new
//! server: [`Server::take_over`] builds the loop around the sockets and state handed over,
//! batch by batch as they come.
//!
//! Owns the upgrade's place in the loop (its token, its deadline beside the core's, the
//! pause's measure). Does not own the protocol (`cores::upgrade`), the channel
//! (`edge::handover`) nor a peer's state (`core::handover`).

use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use log::{info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::takeover::{self, GiveUp, Taken};
use super::upgrade::{StartedAs, Step, Upgrader};
use super::{Server, ServerConfig, Socket};
use crate::edge::handover::Channel;
use crate::edge::net::{describe, SetupError};
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
    }

    /// In a `--workers` worker: its parent asks for live upgrades (a channel to the new
    /// worker it started comes with each ask); SIGUSR2 to the worker itself stays ignored.
    pub fn enable_upgrade_by_parent(&mut self, config: &ServerConfig) {
        self.upgrade.upgrader = Some(Upgrader::for_worker(config.fixed_for_upgrade()));
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
        // Hook (tls): a TLS session does not move to another process (that would need
        // rustls' secret extraction, not used here), and its socket without it would be read
        // as plain lines there. TLS peers stay: this process serves on.
        if self.tls.is_some() {
            warn!("received SIGUSR2: live upgrade with --tls-cert is not built yet; ignored");
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
                self.upgrade.handed_over = true;
                let stats = self.core.stats_mut();
                stats.upgrades += 1;
                stats.handed_over += peers;
                info!("live upgrade: {peers} peers handed over to the new process; exiting");
                if let Some(events) = &mut self.events {
                    events.record_upgrade(now, peers, None);
                }
            }
            Step::RolledBack { reason } => {
                self.core.stats_mut().upgrades_failed += 1;
                warn!("live upgrade given up: {reason}; serving on");
                self.tell_parent_given_up(&reason);
            }
        }
    }

    /// The loop has stopped at `now` (it turns no more until this returns): every listener
    /// and peer goes to the new process, with the counters so far.
    fn hand_over(&mut self, now: Instant) -> Step {
        let Server {
            listener,
            local_addr,
            scrapers,
            core,
            sockets,
            handshakes,
            upgrade,
            ..
        } = self;
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
        let peers = core.keys().filter_map(|key| {
            let socket = sockets.get(key)?.as_ref()?;
            let mut state = core.export_peer(now, key)?;
            state.real_addr = handshakes.real_addr(key, socket.generation);
            Some((state, socket.stream.as_fd()))
        });
        let stats = core.stats().to_exact_json();
        upgrader.hand_over(&listeners, peers, stats, now)
    }

    /// The new process's start: takes over from the running server on `channel` (see
    /// `takeover`), building this server around what it hands over as it comes: its
    /// listening sockets instead of binding, its peers with their state, its counters.
    pub fn take_over(config: &ServerConfig, channel: Channel) -> Result<Server, GiveUp> {
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
