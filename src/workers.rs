//! `--workers N`: N processes of the same binary, each one single-threaded loop, and a small
//! parent that supervises them. The parent starts each worker by running the executable at
//! the path it was started from again (the server's: the binary of a live upgrade after an
//! operator's `mv`), with the same arguments and [`WORKER_ENV`] set (plus what the worker needs to know,
//! in more variables: hidden from `--help`), passes SIGINT, SIGTERM and SIGHUP on to them,
//! starts again a worker that dies when it should not (with a back-off, so a worker that
//! dies at once does not spin), and hands each line a worker prints to a [`Watch`]: workers
//! speak JSON, one message a line (`server::Message`, the client's report), never text
//! meant for people.
//!
//! This module holds what the two parents ([`server`], [`client`]) share: the variables a
//! worker is started with, the bound on workers, the errors, the splitting of shares. The
//! processes are the [`Supervisor`]'s: each worker's stdout is read by a small thread that
//! passes lines to the parent, and a thread waits for signals, so the parent sleeps until
//! something happens. Each worker's stdin is a link from the parent (a Unix socket pair): a
//! byte on it asks for the worker's counts ([`Supervisor::ask_every`]), a byte with a
//! descriptor carries a live upgrade's channel (the server's), and when the parent goes
//! away, however it ends, the worker reads end of file and stops gracefully.

pub mod client;
pub mod metrics;
pub mod server;
mod supervisor;
pub mod tally;

pub use supervisor::{Finished, Supervisor, Watch};

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use crate::edge::net::SetupError;
use crate::edge::stop::Stopper;

/// Set in a worker's environment to its number (0, 1, ...): the process is a worker.
pub const WORKER_ENV: &str = "HEARTBEAT_WORKER";
/// A server worker's port (the one the parent chose when `--port 0`) and its share of
/// `--max-connections`: `PORT,MAX`.
pub const PORT_ENV: &str = "HEARTBEAT_WORKER_PORT";
/// Set in a server worker started by a live upgrade: its upgrade channel comes first on its
/// stdin, and it takes over from the worker it replaces instead of binding.
pub const TAKEOVER_ENV: &str = "HEARTBEAT_WORKER_TAKEOVER";
/// A client worker's share: `CONNECTIONS,RATE`.
pub const SHARE_ENV: &str = "HEARTBEAT_WORKER_SHARE";
/// A client worker's source addresses, comma-separated (may be empty: any).
pub const BIND_ENV: &str = "HEARTBEAT_WORKER_BIND";

/// The most workers a parent starts. Each is a whole process with its own loop, and one loop
/// per core is what pays; past a few hundred the processes only cost memory and
/// descriptors, and `--workers 100000` would fork until the host cannot. A fixed number
/// rather than a multiple of this host's cores, so that a configuration that starts on one
/// host starts on another; more workers than cores is only warned about.
pub const MAX_WORKERS: usize = 256;

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

/// In a worker, names it in each of its log lines (`worker 1: `), as the parent's own lines
/// about it do. Call before `logging::init`.
pub fn name_in_logs(worker: Option<usize>) {
    if let Some(index) = worker {
        crate::ops::logging::set_prefix(format!("worker {index}: "));
    }
}

/// Refuses more than [`MAX_WORKERS`]; warns (on stderr, whatever the log level: it decides
/// how the host is used) when there are more workers than cores.
pub fn check_count(asked: usize, who: &str) -> Result<(), WorkersError> {
    if asked > MAX_WORKERS {
        return Err(WorkersError::TooMany { asked });
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if asked > cores {
        eprintln!(
            "{who}: warning: --workers {asked} is more than this host's {cores} cores: \
             workers will take turns on them"
        );
    }
    Ok(())
}

/// In a worker whose loop cannot watch its stdin itself (the client's): stops the loop (as
/// SIGTERM would) once the parent is gone, seen as end of file on stdin. Without it a worker
/// would outlive a parent killed with `kill -9`.
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
    /// More than [`MAX_WORKERS`] asked for: a bad setting, exit status 2.
    TooMany { asked: usize },
    /// This executable could not be found or started again.
    Spawn {
        what: String,
        source: std::io::Error,
    },
    /// A worker ended before it was ready; it said why on stderr itself.
    Failed { index: usize, status: ExitStatus },
    /// A worker printed nothing within [`START_LIMIT`].
    Silent { index: usize },
    /// The parent's own sockets (the port it holds, its metrics listener).
    Setup(SetupError),
}

impl fmt::Display for WorkersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkersError::TooMany { asked } => write!(
                f,
                "--workers {asked} is more than the {MAX_WORKERS} workers a parent starts \
                 (one a core is what pays)"
            ),
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
            WorkersError::Setup(e) => e.fmt(f),
        }
    }
}

impl From<SetupError> for WorkersError {
    fn from(e: SetupError) -> Self {
        WorkersError::Setup(e)
    }
}

impl WorkersError {
    /// 2 for a bad setting; a worker's own exit code when it failed at start (its one line
    /// says why); else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkersError::TooMany { .. } => 2,
            WorkersError::Failed { status, .. } => status.code().filter(|c| *c != 0).unwrap_or(1),
            WorkersError::Spawn { .. } | WorkersError::Silent { .. } | WorkersError::Setup(_) => 1,
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

/// One line on stdout, flushed at once: a message for the parent, or a summary for a person.
pub fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
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

    #[test]
    fn too_many_workers_is_a_bad_setting() {
        let error = check_count(MAX_WORKERS + 1, "test").expect_err("refused");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("--workers 257"), "{error}");
        assert!(check_count(MAX_WORKERS, "test").is_ok());
    }
}
