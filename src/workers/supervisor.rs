//! The worker processes of a `--workers` parent: starting them (this executable again, with
//! the same arguments and [`WORKER_ENV`] set), passing stop signals on, starting again one
//! that dies when it should not (with a back-off), asking them for their counts, and handing
//! every line they print and every end to the parent's [`Watch`].
//!
//! Each worker's stdin is one end of a Unix socket pair (the link): a byte on it asks for
//! the counts, and a byte with a descriptor beside it (SCM_RIGHTS) carries a live upgrade's
//! channel (see [`upgrade`]: SIGUSR2 replaces the workers one at a time).
//!
//! Owns the processes, their links, the reader threads and the signal thread. Knows nothing
//! of what the lines mean (the parents' `server` and `client` modules, through [`Watch`]).

mod upgrade;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use signal_hook::consts::SIGUSR2;

use super::{
    Ended, WorkersError, FIRST_BACKOFF, HEALTHY_RUN, MAX_BACKOFF, START_LIMIT, WORKER_ENV,
};
use crate::edge::stop::{signal_name, STOP_SIGNALS};
use crate::server::parent::ASK;
use crate::server::upgrade::StartedAs;

/// What a parent does with its workers' messages.
pub trait Watch {
    /// Worker `slot`'s running process (its `generation`) printed `line` (one JSON message).
    fn line(&mut self, slot: usize, generation: u32, line: &str);
    /// A process of `slot` that has handed its peers over to a new one (its `generation`)
    /// printed `line`: with `--tls-cert` it serves the TLS peers it kept, and says what
    /// happened since the handover.
    fn old_line(&mut self, _slot: usize, _generation: u32, _line: &str) {}
    /// The process `generation` of `slot` has ended, whichever it was, after its last line.
    fn process_ended(&mut self, _slot: usize, _generation: u32) {}
    /// Worker `slot` has ended with `status`, after its last line.
    fn ended(&mut self, slot: usize, status: ExitStatus);
    /// The reason in `line` if it says that a live upgrade asked of the worker was given up.
    fn given_up(&self, _line: &str) -> Option<String> {
        None
    }
    /// A worker's live upgrade was given up by the parent, before the worker knew of it (so
    /// that no worker counts it).
    fn upgrade_failed_here(&mut self) {}
}

/// What the workers did, once all have ended.
#[derive(Debug, Default)]
pub struct Finished {
    /// Workers asked for, and started at first (fewer when a stop signal came meanwhile).
    pub asked: usize,
    pub started: usize,
    /// Workers that ended otherwise than with status 0 (killed, crashed).
    pub failed: u64,
    /// Times a worker was started again.
    pub restarts: u64,
}

enum Message {
    Line {
        slot: usize,
        generation: u32,
        line: String,
    },
    Eof {
        slot: usize,
        generation: u32,
    },
    Signal(i32),
}

struct Slot {
    env: Vec<(OsString, OsString)>,
    child: Option<Child>,
    /// The link, the worker's stdin: a byte written asks for the worker's counts; its closing
    /// tells the worker that the parent is gone.
    stdin: Option<UnixStream>,
    /// The running worker's, in its lines; each process started in the slot has its own.
    generation: u32,
    /// The last generation given out.
    spawned: u32,
    /// While a live upgrade replaces this slot's worker: the new one.
    incoming: Option<upgrade::Incoming>,
    started: Instant,
    ready: bool,
    /// Asked for its counts and not answered yet: not asked again, so that a worker that
    /// does not read (stopped) never fills the link and blocks the parent.
    asked: bool,
    backoff: Duration,
    restart_at: Option<Instant>,
}

/// The running workers. Start them with [`Supervisor::start`], wait for their first lines
/// with [`Supervisor::wait_ready`], then [`Supervisor::run`] until all have ended.
pub struct Supervisor {
    /// What each worker runs: the path this process was started from (kept from the start,
    /// so that after an operator's `mv` a worker started again, or by a live upgrade, runs
    /// the new file), with this process's arguments.
    exe: PathBuf,
    args: Vec<OsString>,
    slots: Vec<Slot>,
    sender: Sender<Message>,
    messages: Receiver<Message>,
    /// Start a worker again when it ends while the parent is not stopping (the server);
    /// otherwise a worker that ends is done (the load client, whose run is a measurement).
    restart: bool,
    stopping: bool,
    /// Set by the signal thread at once, so that starting stops between two workers.
    signalled: Arc<AtomicBool>,
    ask_every: Option<Duration>,
    finished: Finished,
    /// The stop signal passed on, for a worker that takes over meanwhile.
    stopped_by: Option<i32>,
    /// SIGUSR2 replaces the workers (the server's parent); `None` when it does not.
    upgrades: Option<upgrade::Upgrades>,
}

impl Supervisor {
    /// Starts one worker per entry of `envs` (the variables that worker gets besides
    /// [`WORKER_ENV`]), each running this executable with this process's arguments. A stop
    /// signal stops the starting at once: the workers started so far are then stopped by
    /// [`wait_ready`](Self::wait_ready) or [`run`](Self::run), which still report.
    pub fn start(
        envs: Vec<Vec<(String, String)>>,
        restart: bool,
    ) -> Result<Supervisor, WorkersError> {
        Supervisor::start_as(None, envs, restart, false)
    }

    /// [`start`](Self::start), the workers running `started_as` (the path and arguments
    /// this process was started with; this executable's when `None`), and with `upgrades`
    /// SIGUSR2 replacing them live, one at a time (see [`upgrade`]).
    pub fn start_as(
        started_as: Option<StartedAs>,
        envs: Vec<Vec<(String, String)>>,
        restart: bool,
        upgrades: bool,
    ) -> Result<Supervisor, WorkersError> {
        let known = started_as.is_some();
        let StartedAs { exe, args } = match started_as {
            Some(started_as) => started_as,
            None => StartedAs {
                exe: std::env::current_exe().map_err(|source| WorkersError::Spawn {
                    what: "worker processes (where is this executable?)".into(),
                    source,
                })?,
                args: std::env::args_os().skip(1).collect(),
            },
        };
        let (sender, messages) = channel();
        let signalled = Arc::new(AtomicBool::new(false));
        forward_signals(sender.clone(), signalled.clone(), upgrades)?;
        let slots: Vec<Slot> = envs
            .into_iter()
            .enumerate()
            .map(|(index, env)| {
                let mut env: Vec<(OsString, OsString)> =
                    env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
                env.push((WORKER_ENV.into(), index.to_string().into()));
                Slot {
                    env,
                    child: None,
                    stdin: None,
                    generation: 0,
                    spawned: 0,
                    incoming: None,
                    started: Instant::now(),
                    ready: false,
                    asked: false,
                    backoff: FIRST_BACKOFF,
                    restart_at: None,
                }
            })
            .collect();
        let mut supervisor = Supervisor {
            exe,
            args,
            finished: Finished {
                asked: slots.len(),
                ..Finished::default()
            },
            slots,
            sender,
            messages,
            restart,
            stopping: false,
            signalled,
            ask_every: None,
            stopped_by: None,
            upgrades: upgrades.then(|| upgrade::Upgrades::new(known)),
        };
        for slot in 0..supervisor.slots.len() {
            if supervisor.signalled.load(Ordering::SeqCst) {
                info!(
                    "a stop signal came while starting workers: {} of {} started",
                    supervisor.finished.started, supervisor.finished.asked
                );
                break;
            }
            if let Err(e) = supervisor.spawn(slot) {
                supervisor.abandon();
                return Err(e);
            }
            supervisor.finished.started += 1;
        }
        Ok(supervisor)
    }

    /// While [`run`](Self::run)s, asks each ready worker for its counts this often (a byte on
    /// its stdin); its answer is a line like any other.
    pub fn ask_every(&mut self, every: Duration) {
        self.ask_every = Some(every);
    }

    /// Whether a stop signal has come (the workers are being stopped).
    pub fn is_stopping(&self) -> bool {
        self.stopping || self.signalled.load(Ordering::SeqCst)
    }

    /// Process ids of the running workers, in worker order (for tests and logs).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.slots
            .iter()
            .map(|s| s.child.as_ref().map(Child::id))
            .collect()
    }

    /// Waits until every started worker has printed its first line (passed to `watch`). A
    /// worker that ends first fails the start: the others are stopped and waited for. A stop
    /// signal ends the wait at once (then [`run`](Self::run) sees the workers end).
    pub fn wait_ready(&mut self, watch: &mut dyn Watch) -> Result<(), WorkersError> {
        let deadline = Instant::now() + START_LIMIT;
        let waiting = |s: &Slot| s.child.is_some() && !s.ready;
        while !self.stopping && self.slots.iter().any(waiting) {
            let wait = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(wait) {
                Ok(message) => message,
                Err(_) => {
                    let index = self.slots.iter().position(waiting).unwrap_or(0);
                    self.abandon();
                    return Err(WorkersError::Silent { index });
                }
            };
            match message {
                Message::Line {
                    slot,
                    generation,
                    line,
                } => self.take_line(slot, generation, &line, watch),
                Message::Eof { slot, generation } if self.slots[slot].generation == generation => {
                    let status = self.reap(slot);
                    watch.ended(slot, status);
                    self.abandon();
                    return Err(WorkersError::Failed {
                        index: slot,
                        status,
                    });
                }
                Message::Eof { .. } => {}
                Message::Signal(signal) if signal == SIGUSR2 => {
                    info!("received SIGUSR2 while the workers start: no live upgrade");
                }
                Message::Signal(signal) => self.stop(signal),
            }
        }
        Ok(())
    }

    /// Supervises until every worker has ended (after a stop signal, or on their own when
    /// not restarting), passing their lines and ends to `watch`.
    pub fn run(mut self, watch: &mut dyn Watch) -> Finished {
        let mut next_ask = self.ask_every.map(|every| Instant::now() + every);
        while self
            .slots
            .iter()
            .any(|s| s.child.is_some() || s.restart_at.is_some() || s.incoming.is_some())
            || self
                .upgrades
                .as_ref()
                .is_some_and(|u| !u.leaving.is_empty())
        {
            let now = Instant::now();
            self.upgrade_deadlines(now, watch);
            for slot in 0..self.slots.len() {
                if self.slots[slot].restart_at.is_some_and(|at| at <= now) {
                    self.slots[slot].restart_at = None;
                    self.finished.restarts += 1;
                    if let Err(e) = self.spawn(slot) {
                        warn!("{e}; trying again in {:?}", self.slots[slot].backoff);
                        self.schedule_restart(slot);
                    }
                }
            }
            if let (Some(at), Some(every)) = (next_ask, self.ask_every) {
                if at <= now {
                    self.ask_all();
                    next_ask = Some(now + every);
                }
            }
            let next_restart = self.slots.iter().filter_map(|s| s.restart_at).min();
            let next = [next_restart, next_ask, self.next_upgrade_deadline()];
            let message = match next.into_iter().flatten().min() {
                Some(at) => match self
                    .messages
                    .recv_timeout(at.saturating_duration_since(now))
                {
                    Ok(message) => message,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match self.messages.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                },
            };
            match message {
                Message::Signal(signal) if signal == SIGUSR2 => self.begin_round(watch),
                Message::Signal(signal) => self.stop(signal),
                Message::Line {
                    slot,
                    generation,
                    line,
                } => self.take_line(slot, generation, &line, watch),
                Message::Eof { slot, generation } => self.take_eof(slot, generation, watch),
            }
        }
        self.finished
    }

    /// A worker's stdout closed: the running worker, the one taking over from it, or one
    /// that handed its peers over.
    fn take_eof(&mut self, slot: usize, generation: u32, watch: &mut dyn Watch) {
        watch.process_ended(slot, generation);
        let current = &self.slots[slot];
        if current.generation == generation && current.child.is_some() {
            match current.incoming.is_some() {
                true => self.old_ended_mid_upgrade(slot, watch),
                false => self.ended(slot, watch),
            }
        } else {
            self.other_ended(slot, generation, watch);
        }
    }

    fn take_line(&mut self, index: usize, generation: u32, line: &str, watch: &mut dyn Watch) {
        let slot = &mut self.slots[index];
        if slot.generation != generation {
            self.other_line(index, generation, line, watch);
            return;
        }
        if slot.incoming.is_some() {
            if let Some(reason) = watch.given_up(line) {
                self.old_gave_up(index, reason, watch);
                return;
            }
        }
        let slot = &mut self.slots[index];
        if !slot.ready && slot.generation > 1 {
            info!("worker {index} is running again");
        }
        slot.ready = true;
        slot.asked = false;
        watch.line(index, generation, line);
    }

    /// Asks every ready worker that has answered its last ask for its counts.
    fn ask_all(&mut self) {
        for slot in &mut self.slots {
            if !slot.ready || slot.asked {
                continue;
            }
            if let Some(stdin) = &mut slot.stdin {
                // A worker that has just ended (EPIPE) is seen ending on its stdout.
                slot.asked = stdin.write_all(&[ASK]).is_ok();
            }
        }
        // Old workers that kept TLS peers count what those do until they end.
        for old in self.upgrades.iter_mut().flat_map(|u| &mut u.leaving) {
            if let (false, Some(link)) = (old.asked, &mut old.link) {
                old.asked = link.write_all(&[ASK]).is_ok();
            }
        }
    }

    /// A worker's stdout closed: it has ended. Tell `watch`; start it again if it should
    /// not have ended.
    fn ended(&mut self, slot: usize, watch: &mut dyn Watch) {
        let status = self.reap(slot);
        self.after_end(slot, status, watch);
    }

    /// The worker in `slot` has ended with `status` and been reaped: tell `watch`, and start
    /// it again if it should not have ended.
    fn after_end(&mut self, slot: usize, status: ExitStatus, watch: &mut dyn Watch) {
        watch.ended(slot, status);
        if !status.success() {
            self.finished.failed += 1;
        }
        if self.stopping || !self.restart {
            if !status.success() {
                warn!("worker {slot} {}", Ended(status));
            }
            return;
        }
        let lived = self.slots[slot].started.elapsed();
        if lived >= HEALTHY_RUN {
            self.slots[slot].backoff = FIRST_BACKOFF;
        }
        warn!(
            "worker {slot} {} after {:.1} s; starting it again in {} ms",
            Ended(status),
            lived.as_secs_f64(),
            self.slots[slot].backoff.as_millis()
        );
        self.schedule_restart(slot);
    }

    fn schedule_restart(&mut self, slot: usize) {
        let slot = &mut self.slots[slot];
        slot.restart_at = Some(Instant::now() + slot.backoff);
        slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
    }

    /// Waits for the worker in `slot`, whose stdout has closed, and returns how it ended.
    fn reap(&mut self, slot: usize) -> ExitStatus {
        let slot = &mut self.slots[slot];
        slot.stdin = None;
        match slot.child.take().map(|mut child| child.wait()) {
            Some(Ok(status)) => status,
            // Already waited for, or cannot be: report it as a failure.
            _ => failed_status(),
        }
    }

    /// Passes `signal` on to every worker, and starts no more.
    fn stop(&mut self, signal: i32) {
        if !self.stopping {
            info!("received {}: stopping the workers", signal_name(signal));
        }
        self.stopping = true;
        self.stopped_by.get_or_insert(signal);
        // A worker taking over now gets the signal once it serves (see `upgrade`).
        self.end_round();
        for slot in &mut self.slots {
            slot.restart_at = None;
            if let Some(child) = &slot.child {
                send_signal(child, signal);
            }
        }
        // Old workers that handed over and still serve the TLS peers they kept stop as any
        // worker does: End Connection (over `--drain`) and close_notify to each; `run`
        // waits for them too.
        for old in self.upgrades.iter().flat_map(|u| &u.leaving) {
            send_signal(&old.child, signal);
        }
    }

    /// Stops every worker at start-up and waits for them (their reports are not wanted).
    fn abandon(&mut self) {
        self.stop(signal_hook::consts::SIGTERM);
        for slot in 0..self.slots.len() {
            if self.slots[slot].child.is_some() {
                self.reap(slot);
            }
        }
    }

    fn spawn(&mut self, index: usize) -> Result<(), WorkersError> {
        let (child, link, generation) =
            self.launch(index, &[])
                .map_err(|source| WorkersError::Spawn {
                    what: format!("worker {index} ({})", self.exe.display()),
                    source,
                })?;
        let slot = &mut self.slots[index];
        slot.generation = generation;
        slot.started = Instant::now();
        slot.ready = false;
        slot.asked = false;
        slot.stdin = Some(link);
        slot.child = Some(child);
        Ok(())
    }

    /// Starts a process for `index` with `extra` variables, its link as stdin and its stdout
    /// read by a thread under a new generation: the process, the parent's end of the link,
    /// and that generation.
    fn launch(
        &mut self,
        index: usize,
        extra: &[(&str, &str)],
    ) -> std::io::Result<(Child, UnixStream, u32)> {
        let (link, theirs) = UnixStream::pair()?;
        let slot = &mut self.slots[index];
        let mut child = Command::new(&self.exe)
            .args(&self.args)
            .envs(slot.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            // Readiness is the parent's to report, once, for all.
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        slot.spawned = slot.spawned.wrapping_add(1);
        let generation = slot.spawned;
        if let Some(stdout) = child.stdout.take() {
            read_lines(stdout, index, generation, self.sender.clone());
        }
        Ok((child, link, generation))
    }
}

/// The status of a worker whose end could not be learnt: a failure.
fn failed_status() -> ExitStatus {
    ExitStatus::from_raw(1 << 8)
}

/// A thread that passes each line of a worker's stdout to the parent, then its end.
fn read_lines(
    stdout: impl Read + Send + 'static,
    slot: usize,
    generation: u32,
    to: Sender<Message>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let message = Message::Line {
                slot,
                generation,
                line,
            };
            if to.send(message).is_err() {
                return;
            }
        }
        let _ = to.send(Message::Eof { slot, generation });
    });
}

/// A thread that passes each stop signal this process receives (and SIGUSR2, with
/// `upgrades`) to the parent's loop, and raises `signalled` at once for a start still under
/// way (a stop signal only).
fn forward_signals(
    to: Sender<Message>,
    signalled: Arc<AtomicBool>,
    upgrades: bool,
) -> Result<(), WorkersError> {
    let upgrade = upgrades.then_some(SIGUSR2);
    let caught = STOP_SIGNALS.into_iter().chain(upgrade);
    let mut signals =
        signal_hook::iterator::Signals::new(caught).map_err(|source| WorkersError::Spawn {
            what: "the signal handler".into(),
            source,
        })?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal != SIGUSR2 {
                signalled.store(true, Ordering::SeqCst);
            }
            if to.send(Message::Signal(signal)).is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn send_signal(child: &Child, signal: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (Ok(pid), Ok(signal)) = (i32::try_from(child.id()), Signal::try_from(signal)) else {
        return;
    };
    // The worker may have just ended (ESRCH): its end of file is on its way.
    let _ = kill(Pid::from_raw(pid), signal);
}
