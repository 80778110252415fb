//! The running server's side of a live upgrade (SIGUSR2): starting the binary now at the
//! path the server was started from, offering it the state, handing over the listening
//! sockets and every peer, and rolling back when anything goes wrong. The shell around
//! `cores::upgrade::Outgoing`: that decides, this spawns, sends, receives and waits.
//!
//! Owns the child process and the channel until the upgrade ends. Does not own what a peer's
//! state is (the core exports it) nor the loop's turns: the loop calls [`Upgrader::begin`] on
//! SIGUSR2, watches [`Upgrader::channel_fd`] while the new process starts (serving on
//! meanwhile), and on [`Step::HandOver`] stops serving and calls [`Upgrader::hand_over`],
//! which sends everything and waits for the answer. In a `--workers` worker
//! ([`Upgrader::for_worker`]) the parent starts the new process and gives this one the
//! channel to it; the rest is the same.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::cores::upgrade::wire::{Message, PeerState};
use crate::cores::upgrade::{OutAction, Outgoing};
use crate::edge::handover::{self, Channel, HandoverError, FDS_PER_FRAME};
use crate::edge::net::describe;

use super::ServerConfig;

/// How long a rollback waits for a new process that closed the channel to be reaped, so
/// that its exit status can be named in the log line.
const REAP_WAIT: Duration = Duration::from_millis(200);

/// The program and arguments the server was started with, kept from the start: after an
/// operator's `mv new-build server`, `/proc/self/exe` names the old, deleted file, while
/// this path names the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedAs {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl StartedAs {
    /// This process's: `argv[0]` made absolute against the directory it started in (a
    /// symlink stays a symlink, so an upgrade by re-pointing it works too), or the
    /// executable's path when `argv[0]` was found on `PATH`.
    pub fn capture() -> io::Result<StartedAs> {
        let mut argv = std::env::args_os();
        let zeroth = argv.next().map(PathBuf::from);
        let exe = match zeroth {
            Some(path) if path.components().count() > 1 => std::path::absolute(path)?,
            _ => std::env::current_exe()?,
        };
        Ok(StartedAs {
            exe,
            args: argv.collect(),
        })
    }
}

impl ServerConfig {
    /// The settings a new process may not change under live peers, as the offer names them.
    pub fn fixed_for_upgrade(&self) -> Vec<(String, String)> {
        let metrics = self.metrics.map_or("off".to_string(), |at| at.to_string());
        let on = |flag: bool| if flag { "on" } else { "off" }.to_string();
        vec![
            ("the listening address".into(), self.addr.to_string()),
            ("--proxy-protocol".into(), on(self.proxy_protocol)),
            ("--metrics".into(), metrics),
            ("SO_REUSEPORT (--workers)".into(), on(self.reuse_port)),
        ]
    }
}

/// What the loop must do after a call.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Serve on; nothing more to do now.
    Continue,
    /// Stop serving now and call [`Upgrader::hand_over`] in this same turn.
    HandOver,
    /// The new process has every peer: end the loop without a word to them.
    Exit { peers: u64 },
    /// The upgrade failed: log `reason` (one line) and serve on.
    RolledBack { reason: String },
}

/// One upgrade at a time; a new one may begin once the last rolled back.
pub struct Upgrader {
    /// The binary to start; `None` in a `--workers` worker, whose parent starts the new
    /// process and hands this one the channel to it ([`give_channel`](Self::give_channel)).
    started_as: Option<StartedAs>,
    /// In a worker: the channel the parent gave for the upgrade asked of it.
    given: Option<Channel>,
    protocol: Outgoing,
    child: Option<Child>,
    channel: Option<Channel>,
}

impl Upgrader {
    pub fn new(started_as: StartedAs, fixed: Vec<(String, String)>) -> Upgrader {
        Upgrader::starting(Some(started_as), fixed)
    }

    /// A `--workers` worker's: it starts nothing; its parent starts the new worker and gives
    /// this one the channel to it, then asks for the upgrade.
    pub fn for_worker(fixed: Vec<(String, String)>) -> Upgrader {
        Upgrader::starting(None, fixed)
    }

    fn starting(started_as: Option<StartedAs>, fixed: Vec<(String, String)>) -> Upgrader {
        Upgrader {
            started_as,
            given: None,
            protocol: Outgoing::new(fixed),
            child: None,
            channel: None,
        }
    }

    /// In a worker: the channel to the new process its parent started, for the next
    /// [`begin`](Self::begin). Dropped (the new process then gives up at once) while an
    /// upgrade is under way.
    pub fn give_channel(&mut self, channel: Channel) {
        if !self.protocol.is_under_way() {
            self.given = Some(channel);
        }
    }

    /// Closes a given channel that no upgrade took (the new process then gives up at once).
    pub fn forget_given(&mut self) {
        self.given = None;
    }

    /// SIGUSR2 at `now`: starts the new binary and offers it the state. `None` when an
    /// upgrade is already under way (the signal changes nothing).
    pub fn begin(&mut self, now: Instant) -> Option<Step> {
        self.protocol.begin().then(|| self.carry_out(now))
    }

    /// The channel while the new process starts: the loop watches it for readability.
    pub fn channel_fd(&self) -> Option<RawFd> {
        self.channel.as_ref().map(Channel::raw_fd)
    }

    /// The channel is readable: the new process said something, or exited.
    pub fn on_readable(&mut self, now: Instant) -> Step {
        self.receive_one();
        self.carry_out(now)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.protocol.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Step {
        self.protocol.handle_timeout(now);
        self.carry_out(now)
    }

    /// Gives the upgrade under way up, at `now`, for `reason` (the new process is told, and
    /// ended).
    pub fn abandon(&mut self, now: Instant, reason: &str) -> Step {
        self.protocol.abandon(reason);
        self.carry_out(now)
    }

    /// Whether an upgrade is under way.
    pub fn is_under_way(&self) -> bool {
        self.protocol.is_under_way()
    }

    /// Upgrades done and failed, for the summary and the metrics.
    pub fn counts(&self) -> (u64, u64) {
        (self.protocol.done, self.protocol.failed)
    }

    /// After [`Step::HandOver`], with the loop stopped: sends the listening sockets, every
    /// peer in batches with its socket, and the counters, then waits (at most
    /// `cores::upgrade::ANSWER_WAIT`) for the new process to say it has them. `stopped`: when
    /// the loop last served, the start of the pause.
    pub fn hand_over<'a>(
        &mut self,
        listeners: &[(SocketAddr, BorrowedFd<'a>)],
        peers: impl Iterator<Item = (PeerState, BorrowedFd<'a>)>,
        stats: String,
        stopped: Instant,
    ) -> Step {
        if let Err(e) = self.send_all(listeners, peers, stats, stopped) {
            self.channel_broke(&e);
            return self.carry_out(Instant::now());
        }
        self.protocol.sent_all(Instant::now());
        loop {
            let now = Instant::now();
            let step = match self.protocol.poll_timeout() {
                Some(deadline) if deadline > now => {
                    if let Some(channel) = &mut self.channel {
                        channel.set_wait(deadline - now);
                    }
                    self.receive_one();
                    self.carry_out(Instant::now())
                }
                _ => self.handle_timeout(now),
            };
            if step != Step::Continue || !self.protocol.is_under_way() {
                return step;
            }
        }
    }

    fn send_all<'a>(
        &mut self,
        listeners: &[(SocketAddr, BorrowedFd<'a>)],
        mut peers: impl Iterator<Item = (PeerState, BorrowedFd<'a>)>,
        stats: String,
        stopped: Instant,
    ) -> io::Result<()> {
        let channel = self.channel.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        let addrs = listeners.iter().map(|(addr, _)| *addr).collect();
        let fds: Vec<_> = listeners.iter().map(|(_, fd)| *fd).collect();
        channel.send(&Message::Listeners(addrs), &fds)?;
        let mut total = 0u64;
        let mut records = Vec::with_capacity(FDS_PER_FRAME);
        let mut fds = Vec::with_capacity(FDS_PER_FRAME);
        loop {
            let next = peers.next();
            let last = next.is_none();
            if let Some((record, fd)) = next {
                records.push(record);
                fds.push(fd);
            }
            if records.len() == FDS_PER_FRAME || (last && !records.is_empty()) {
                total += records.len() as u64;
                channel.send(&Message::Peers(std::mem::take(&mut records)), &fds)?;
                fds.clear();
            }
            if last {
                break;
            }
        }
        let done = Message::Done {
            peers: total,
            stats,
            paused: stopped.elapsed(),
        };
        channel.send(&done, &[])
    }

    /// Reads one frame (or learns that none will come) and tells the protocol.
    fn receive_one(&mut self) {
        let Some(channel) = &mut self.channel else {
            return;
        };
        match channel.recv() {
            Ok(received) => self.protocol.received(received.message),
            Err(HandoverError::Wire(error)) => self.protocol.undecodable(&error),
            Err(HandoverError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => self.channel_broke(&e),
        }
    }

    /// The channel failed: the new process exited, most likely; say how it ended.
    fn channel_broke(&mut self, error: &dyn std::fmt::Display) {
        let status = match &mut self.child {
            Some(child) => reap(child).map_or_else(
                || format!("still running, but {error}"),
                |status| status.to_string(),
            ),
            None => error.to_string(),
        };
        self.protocol.closed(&status);
    }

    fn carry_out(&mut self, now: Instant) -> Step {
        let mut step = Step::Continue;
        while let Some(action) = self.protocol.poll_action() {
            match action {
                OutAction::Spawn => self.spawn(now),
                OutAction::Send(message) => {
                    let sent = match &mut self.channel {
                        Some(channel) => channel.send(&message, &[]),
                        None => Err(io::ErrorKind::NotConnected.into()),
                    };
                    // An Abort that finds no one listening has done its job.
                    if let (Err(e), false) = (sent, matches!(message, Message::Abort(_))) {
                        self.channel_broke(&describe(&e));
                    }
                }
                OutAction::HandOver => step = Step::HandOver,
                OutAction::Exit { peers } => step = Step::Exit { peers },
                OutAction::RollBack { reason } => {
                    self.end_child();
                    step = Step::RolledBack { reason };
                }
            }
        }
        step
    }

    fn spawn(&mut self, now: Instant) {
        let Some(started_as) = &self.started_as else {
            // A worker: its parent started the new process.
            match self.given.take() {
                Some(channel) => {
                    self.channel = Some(channel);
                    self.protocol.spawned(now);
                }
                None => self.protocol.spawn_failed(
                    "a --workers worker is upgraded by SIGUSR2 to its parent, not to itself",
                ),
            }
            return;
        };
        let spawned = Channel::pair().and_then(|(ours, theirs)| {
            let StartedAs { exe, args } = started_as;
            let child = handover::spawn(exe, args, theirs)?;
            Ok((ours, child))
        });
        match spawned {
            Ok((channel, child)) => {
                self.channel = Some(channel);
                self.child = Some(child);
                self.protocol.spawned(now);
            }
            Err(e) => {
                let exe = started_as.exe.display();
                self.protocol
                    .spawn_failed(&format!("{exe}: {}", describe(&e)));
            }
        }
    }

    /// After a rollback: the new process, if it still runs, has taken nothing over (it
    /// serves only after Release), so it is ended and reaped; the channel is closed.
    fn end_child(&mut self) {
        self.channel = None;
        if let Some(mut child) = self.child.take() {
            if reap(&mut child).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The child's exit status if it ends within [`REAP_WAIT`].
fn reap(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + REAP_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}
