//! The child processes of a capacity run: server processes, each on its own port of
//! 127.0.0.1, and load-client processes, each with its own source addresses in 127.1.0.0/16.
//!
//! Every child is in its own process group (a Ctrl-C at the terminal reaches the bench,
//! which stops them in order), and, when `setpriv` is installed, is started with a parent-
//! death signal of SIGKILL, so that no child outlives the bench even if it is killed with
//! SIGKILL. [`Fleet`]'s `Drop` stops every child still running on every other exit path
//! (an error, a panic, an interrupted run): SIGTERM, then SIGKILL after a deadline.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::lines::read_stdout;
use crate::proc::{fd_count, rss_bytes};

const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Stopping 19,000 connections in a process takes a moment; on a loaded host, more.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a child's stderr kept, to say why it failed.
const STDERR_KEPT: usize = 20;

/// One child process and what it printed.
pub struct Proc {
    pub name: String,
    child: Child,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<Vec<String>>>,
    first_line: mpsc::Receiver<String>,
    pub pid: u32,
}

/// What a child printed once it stopped: its last stdout line (a `--json` summary) and
/// the last lines of its stderr.
pub struct Printed {
    pub name: String,
    pub last_line: Option<String>,
    pub stderr: Vec<String>,
    /// It had to be killed, or already exited with an error.
    pub trouble: Option<String>,
}

impl Proc {
    fn spawn(name: String, program: &str, args: &[String]) -> Result<Proc, String> {
        let mut command = if has_setpriv() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--", program]);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let pid = child.id();
        let (first_line, stdout) = read_stdout(child.stdout.take());
        let err = child.stderr.take();
        let stderr = thread::spawn(move || {
            let mut kept = Vec::new();
            let Some(mut err) = err else { return kept };
            let mut text = Vec::new();
            let _ = err.read_to_end(&mut text);
            for line in String::from_utf8_lossy(&text).lines() {
                if kept.len() == STDERR_KEPT {
                    kept.remove(0);
                }
                kept.push(line.to_string());
            }
            kept
        });
        Ok(Proc {
            name,
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            first_line,
            pid,
        })
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&mut self, signal: &str) {
        if self.running() {
            let _ = Command::new("kill")
                .args([signal, &self.pid.to_string()])
                .status();
        }
    }

    /// Waits until it exits, at most until `deadline`, then kills it; returns what it printed.
    fn collect(mut self, deadline: Instant) -> Printed {
        let mut trouble = None;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    trouble = Some(format!("exited with {status}"));
                    break;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    trouble = Some("did not stop after SIGTERM; killed".to_string());
                    break;
                }
            }
        }
        let stdout = self.stdout.take().and_then(|h| h.join().ok());
        let stderr = self.stderr.take().and_then(|h| h.join().ok());
        Printed {
            name: self.name.clone(),
            last_line: stdout.and_then(|lines| lines.last().cloned()),
            stderr: stderr.unwrap_or_default(),
            trouble,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn has_setpriv() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        Command::new("setpriv")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A server process and its state before any connection.
pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub rss0: u64,
    pub fds0: u64,
    /// The connections its client opens.
    pub target: usize,
}

/// A load-client process.
pub struct Client {
    pub proc: Proc,
}

/// Every child of the run.
#[derive(Default)]
pub struct Fleet {
    pub servers: Vec<Server>,
    pub clients: Vec<Client>,
}

/// The source addresses of client `k`: 127.1.k.1 ..= 127.1.k.`n`.
pub fn sources(k: usize, n: usize) -> Vec<Ipv4Addr> {
    let k = u8::try_from(k).expect("at most 256 clients");
    (1..=n as u8).map(|h| Ipv4Addr::new(127, 1, k, h)).collect()
}

impl Fleet {
    /// Connections the servers are meant to hold.
    pub fn target(&self) -> usize {
        self.servers.iter().map(|s| s.target).sum()
    }

    /// Starts a server with `args` (timing, tick) and waits for its `Listening on` line.
    pub fn start_server(&mut self, args: &[String], target: usize) -> Result<(), String> {
        let k = self.servers.len();
        let mut all = vec![
            "--host".to_string(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--no-prompt".into(),
            "--json".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        all.extend_from_slice(args);
        let proc = Proc::spawn(
            format!("server {k}"),
            env!("CARGO_BIN_EXE_heartbeat-server"),
            &all,
        )?;
        let first = proc.first_line.recv_timeout(START_TIMEOUT).map_err(|_| {
            format!(
                "server {k} printed no `Listening on` line within {} s",
                START_TIMEOUT.as_secs()
            )
        })?;
        let addr = first
            .strip_prefix("Listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("server {k}: unexpected first line {first:?}"))?;
        let (rss0, fds0) = (rss_bytes(proc.pid)?, fd_count(proc.pid)?);
        self.servers.push(Server {
            proc,
            addr,
            rss0,
            fds0,
            target,
        });
        Ok(())
    }

    /// Starts the load client of server `k` with `args` (rate, duration, timing).
    pub fn start_client(
        &mut self,
        k: usize,
        sources_each: usize,
        args: &[String],
    ) -> Result<(), String> {
        let server = &self.servers[k];
        let bind: Vec<String> = sources(k, sources_each)
            .iter()
            .map(|a| a.to_string())
            .collect();
        let mut all = vec![
            "--host".to_string(),
            server.addr.ip().to_string(),
            "--port".into(),
            server.addr.port().to_string(),
            "--no-prompt".into(),
            "--json".into(),
            "--connections".into(),
            server.target.to_string(),
            "--interval".into(),
            "0".into(),
            "--bind".into(),
            bind.join(","),
        ];
        all.extend_from_slice(args);
        let proc = Proc::spawn(
            format!("client {k}"),
            env!("CARGO_BIN_EXE_heartbeat-client"),
            &all,
        )?;
        self.clients.push(Client { proc });
        Ok(())
    }

    /// The first child that is no longer running, with what it printed.
    pub fn exited(&mut self) -> Option<String> {
        let procs = self.servers.iter_mut().map(|s| &mut s.proc);
        let mut all = procs.chain(self.clients.iter_mut().map(|c| &mut c.proc));
        all.find_map(|p| (!p.running()).then(|| p.name.clone()))
    }

    /// Stops the clients (SIGTERM: they close their connections and print their summary),
    /// then the servers (they print theirs), and returns what each printed.
    pub fn stop(&mut self) -> (Vec<Printed>, Vec<Printed>) {
        let clients = stop_all(self.clients.drain(..).map(|c| c.proc).collect());
        let servers = stop_all(self.servers.drain(..).map(|s| s.proc).collect());
        (clients, servers)
    }
}

fn stop_all(mut procs: Vec<Proc>) -> Vec<Printed> {
    for proc in procs.iter_mut() {
        proc.signal("-TERM");
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    procs.into_iter().map(|p| p.collect(deadline)).collect()
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.servers.is_empty() || !self.clients.is_empty() {
            let _ = self.stop();
        }
    }
}
