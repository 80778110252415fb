//! `--workers N`: N processes of the same binary, each one single-threaded loop, and a small
//! parent that supervises them. The parent starts each worker by running its own executable
//! again with the same arguments and [`WORKER_ENV`] set (plus what the worker needs to know,
//! in more variables: hidden from `--help`), passes SIGINT, SIGTERM and SIGHUP on to them,
//! starts again a worker that dies when it should not (with a back-off, so a worker that
//! dies at once does not spin), and when all have ended hands back the last line each
//! printed: its report, one line of JSON that the caller parses and merges.
//!
//! Owns the worker processes and their pipes; knows nothing of servers or clients. Each
//! worker's stdout is read by a small thread that passes lines to the parent, and a thread
//! waits for signals, so the parent sleeps until something happens. Each worker's stdin is a
//! pipe from the parent that carries nothing: when the parent goes away, however it ends,
//! the worker reads end of file and stops gracefully ([`stop_when_parent_goes`]).

pub mod metrics;

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::edge::stop::{signal_name, Stopper, STOP_SIGNALS};

/// Set in a worker's environment to its number (0, 1, ...): the process is a worker.
pub const WORKER_ENV: &str = "HEARTBEAT_WORKER";
/// A server worker's port (the one the parent chose when `--port 0`).
pub const PORT_ENV: &str = "HEARTBEAT_WORKER_PORT";
/// A client worker's share: `CONNECTIONS,RATE`.
pub const SHARE_ENV: &str = "HEARTBEAT_WORKER_SHARE";
/// A client worker's source addresses, comma-separated (may be empty: any).
pub const BIND_ENV: &str = "HEARTBEAT_WORKER_BIND";

/// A worker that dies is started again after this, doubling each time it dies young.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that ran at least this long before dying was not crash-looping: its back-off
/// starts again from [`FIRST_BACKOFF`].
pub const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// How long the workers have to print their first line at start.
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// This process's worker number when a parent started it as one.
pub fn worker_index() -> Option<usize> {
    std::env::var(WORKER_ENV).ok()?.parse().ok()
}

/// In a worker: stops the loop (as SIGTERM would) once the parent is gone, seen as end of
/// file on stdin. Without it a worker would outlive a parent killed with `kill -9`.
pub fn stop_when_parent_goes(stopper: Stopper) {
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        stopper.stop();
    });
}

/// Why the workers could not be started or run.
#[derive(Debug)]
pub enum WorkersError {
    /// This executable could not be found or started again.
    Spawn {
        what: String,
        source: std::io::Error,
    },
    /// A worker ended before it was ready; it said why on stderr itself.
    Failed { index: usize, status: ExitStatus },
    /// A worker printed nothing within [`START_LIMIT`].
    Silent { index: usize },
}

impl fmt::Display for WorkersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkersError::Spawn { what, source } => {
                write!(
                    f,
                    "cannot start {what}: {}",
                    crate::edge::net::describe(source)
                )
            }
            WorkersError::Failed { index, status } => {
                write!(f, "worker {index} {} before it was ready", Ended(*status))
            }
            WorkersError::Silent { index } => write!(
                f,
                "worker {index} was not ready within {} s",
                START_LIMIT.as_secs()
            ),
        }
    }
}

impl WorkersError {
    /// A worker's own exit code when it failed at start (its one line says why), else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkersError::Failed { status, .. } => status.code().filter(|c| *c != 0).unwrap_or(1),
            WorkersError::Spawn { .. } | WorkersError::Silent { .. } => 1,
        }
    }
}

/// How a process ended, as words: `exited with status 1`, `was killed by signal 9`.
pub struct Ended(pub ExitStatus);

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.code(), self.0.signal()) {
            (Some(code), _) => write!(f, "exited with status {code}"),
            (None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (None, None) => f.write_str("ended"),
        }
    }
}

/// What the workers did, once all have ended.
#[derive(Debug, Default)]
pub struct Finished {
    /// The last line of each worker that exited with status 0, in the order they ended.
    pub reports: Vec<String>,
    /// Workers that ended otherwise (killed, crashed): their counts are lost.
    pub lost: u64,
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
    /// Held, never written: its closing tells the worker that the parent is gone.
    _stdin: Option<ChildStdin>,
    generation: u32,
    started: Instant,
    ready: bool,
    last_line: Option<String>,
    backoff: Duration,
    restart_at: Option<Instant>,
}

/// The running workers. Start them with [`Supervisor::start`], wait for their first lines
/// with [`Supervisor::wait_ready`], then [`Supervisor::run`] until all have ended.
pub struct Supervisor {
    exe: PathBuf,
    args: Vec<OsString>,
    slots: Vec<Slot>,
    sender: Sender<Message>,
    messages: Receiver<Message>,
    /// Start a worker again when it ends while the parent is not stopping (the server);
    /// otherwise a worker that ends is done (the load client, whose run is a measurement).
    restart: bool,
    stopping: bool,
    finished: Finished,
    first_lines: FirstLines,
}

/// Each running worker's first line (`Listening on …`), kept up to date across restarts, for
/// the parent's parts that must reach the workers (its `--metrics` endpoint).
#[derive(Clone, Default)]
pub struct FirstLines(std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>);

impl FirstLines {
    /// The first lines of the workers running now.
    pub fn snapshot(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().flatten().cloned().collect()
    }

    fn set(&self, slot: usize, line: Option<String>) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() <= slot {
            lines.resize(slot + 1, None);
        }
        lines[slot] = line;
    }
}

impl Supervisor {
    /// Starts one worker per entry of `envs` (the variables that worker gets besides
    /// [`WORKER_ENV`]), each running this executable with this process's arguments.
    pub fn start(
        envs: Vec<Vec<(String, String)>>,
        restart: bool,
    ) -> Result<Supervisor, WorkersError> {
        let exe = std::env::current_exe().map_err(|source| WorkersError::Spawn {
            what: "worker processes (where is this executable?)".into(),
            source,
        })?;
        let (sender, messages) = channel();
        forward_signals(sender.clone())?;
        let slots = envs
            .into_iter()
            .enumerate()
            .map(|(index, env)| {
                let mut env: Vec<(OsString, OsString)> =
                    env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
                env.push((WORKER_ENV.into(), index.to_string().into()));
                Slot {
                    env,
                    child: None,
                    _stdin: None,
                    generation: 0,
                    started: Instant::now(),
                    ready: false,
                    last_line: None,
                    backoff: FIRST_BACKOFF,
                    restart_at: None,
                }
            })
            .collect();
        let mut supervisor = Supervisor {
            exe,
            args: std::env::args_os().skip(1).collect(),
            slots,
            sender,
            messages,
            restart,
            stopping: false,
            finished: Finished::default(),
            first_lines: FirstLines::default(),
        };
        for slot in 0..supervisor.slots.len() {
            supervisor.spawn(slot)?;
        }
        Ok(supervisor)
    }

    /// Process ids of the running workers, in worker order (for tests and logs).
    /// Each running worker's first line, kept up to date while [`run`](Self::run) goes on.
    pub fn first_lines(&self) -> FirstLines {
        self.first_lines.clone()
    }

    pub fn pids(&self) -> Vec<Option<u32>> {
        self.slots
            .iter()
            .map(|s| s.child.as_ref().map(Child::id))
            .collect()
    }

    /// Waits until every worker has printed its first line, and returns those lines. A
    /// worker that ends first fails the start: the others are stopped and waited for.
    pub fn wait_ready(&mut self) -> Result<Vec<String>, WorkersError> {
        let deadline = Instant::now() + START_LIMIT;
        let mut first = vec![None; self.slots.len()];
        while first.iter().any(Option::is_none) {
            let wait = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(wait) {
                Ok(message) => message,
                Err(_) => {
                    let index = first.iter().position(Option::is_none).unwrap_or(0);
                    self.abandon();
                    return Err(WorkersError::Silent { index });
                }
            };
            match message {
                Message::Line { slot, line, .. } => {
                    if first[slot].is_none() {
                        self.slots[slot].ready = true;
                        self.first_lines.set(slot, Some(line.clone()));
                        first[slot] = Some(line);
                    }
                }
                Message::Eof { slot, .. } => {
                    let status = self.reap(slot);
                    self.abandon();
                    return Err(WorkersError::Failed {
                        index: slot,
                        status,
                    });
                }
                Message::Signal(signal) => self.stop(signal),
            }
        }
        Ok(first.into_iter().flatten().collect())
    }

    /// Supervises until every worker has ended (after a stop signal, or on their own when
    /// not restarting), and returns what they reported.
    pub fn run(mut self) -> Finished {
        while self
            .slots
            .iter()
            .any(|s| s.child.is_some() || s.restart_at.is_some())
        {
            let now = Instant::now();
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
            let next_restart = self.slots.iter().filter_map(|s| s.restart_at).min();
            let message = match next_restart {
                Some(at) => {
                    match self
                        .messages
                        .recv_timeout(at.saturating_duration_since(now))
                    {
                        Ok(message) => message,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match self.messages.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                },
            };
            match message {
                Message::Signal(signal) => self.stop(signal),
                Message::Line {
                    slot,
                    generation,
                    line,
                } => {
                    let index = slot;
                    let slot = &mut self.slots[index];
                    if slot.generation == generation {
                        if !slot.ready {
                            self.first_lines.set(index, Some(line.clone()));
                        }
                        if !slot.ready && slot.generation > 1 {
                            info!("worker {index} is running again");
                        }
                        slot.ready = true;
                        slot.last_line = Some(line);
                    }
                }
                Message::Eof { slot, generation } => {
                    if self.slots[slot].generation == generation {
                        self.ended(slot);
                    }
                }
            }
        }
        self.finished
    }

    /// A worker's stdout closed: it has ended. Keep its report; start it again if it should
    /// not have ended.
    fn ended(&mut self, slot: usize) {
        self.first_lines.set(slot, None);
        let status = self.reap(slot);
        let line = self.slots[slot].last_line.take();
        match (status.success(), line) {
            (true, Some(line)) => self.finished.reports.push(line),
            _ => self.finished.lost += 1,
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
        slot._stdin = None;
        match slot.child.take().map(|mut child| child.wait()) {
            Some(Ok(status)) => status,
            // Already waited for, or cannot be: report it as a failure.
            _ => ExitStatus::from_raw(1 << 8),
        }
    }

    /// Passes `signal` on to every worker, and starts no more.
    fn stop(&mut self, signal: i32) {
        if !self.stopping {
            info!("received {}: stopping the workers", signal_name(signal));
        }
        self.stopping = true;
        for slot in &mut self.slots {
            slot.restart_at = None;
            if let Some(child) = &slot.child {
                send_signal(child, signal);
            }
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
        let slot = &mut self.slots[index];
        let mut child = Command::new(&self.exe)
            .args(&self.args)
            .envs(slot.env.iter().map(|(k, v)| (k, v)))
            // Readiness is the parent's to report, once, for all.
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| WorkersError::Spawn {
                what: format!("worker {index} ({})", self.exe.display()),
                source,
            })?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.started = Instant::now();
        slot.ready = false;
        slot.last_line = None;
        slot._stdin = child.stdin.take();
        if let Some(stdout) = child.stdout.take() {
            read_lines(stdout, index, slot.generation, self.sender.clone());
        }
        slot.child = Some(child);
        Ok(())
    }
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

/// A thread that passes each stop signal this process receives to the parent's loop.
fn forward_signals(to: Sender<Message>) -> Result<(), WorkersError> {
    let mut signals = signal_hook::iterator::Signals::new(STOP_SIGNALS).map_err(|source| {
        WorkersError::Spawn {
            what: "the signal handler".into(),
            source,
        }
    })?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
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

/// Splits `total` into `parts` shares as even as whole numbers allow, larger ones first.
pub fn shares(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// Source addresses for a worker whose connections are numbers `first..` of the whole run:
/// `bind` turned so that its connection `s` uses what connection `first + s` would have used
/// in one process (each uses `bind[number % len]`), so the load on each address is the same
/// as without workers.
pub fn sources_from<T: Clone>(bind: &[T], first: usize) -> Vec<T> {
    let n = bind.len();
    (0..n).map(|t| bind[(first + t) % n].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_even_and_add_up() {
        assert_eq!(shares(10, 3), vec![4, 3, 3]);
        assert_eq!(shares(2, 2), vec![1, 1]);
        assert_eq!(shares(19_000, 4).iter().sum::<usize>(), 19_000);
    }

    #[test]
    fn a_worker_uses_the_addresses_its_connections_would_have_used() {
        let bind = ["a", "b", "c"];
        assert_eq!(sources_from(&bind, 0), bind);
        // Connections 4, 5, 6 of the run used b, c, a.
        assert_eq!(sources_from(&bind, 4), ["b", "c", "a"]);
        assert!(sources_from::<&str>(&[], 7).is_empty());
    }
}
