//! The bench's child processes: a server (from the copy of the binary in the run's temporary
//! directory) or a load client, each started in a process group of its own, so that the
//! group is the whole tree: a live upgrade's new process, `--workers` workers. What it prints
//! is read by threads: stdout kept whole (the client's `--json` summary is its last line),
//! stderr passed on line by line (the log lines the bench waits for) with the last lines
//! kept, to say why something failed.
//!
//! [`Group`]'s `Drop` kills every process still in the group (SIGKILL), on every exit path:
//! an error, a panic, an interrupted run. The processes a live upgrade starts are not the
//! bench's children, so this is the only way to reach them.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::lines::read_stdout;
use crate::{interrupted, tree};

/// Lines of stderr kept, to say why a child failed.
const STDERR_KEPT: usize = 12;
const POLL: Duration = Duration::from_millis(10);

pub struct Group {
    pub name: String,
    /// The process the bench started, until it is reaped.
    child: Option<Child>,
    pub pgid: u32,
    stdout_first: Receiver<String>,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr_lines: Receiver<String>,
    kept: Arc<Mutex<VecDeque<String>>>,
}

impl Group {
    pub fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> Result<Group, String> {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        let pgid = child.id();
        let (stdout_first, stdout) = read_stdout(child.stdout.take());
        let (tx, stderr_lines) = mpsc::channel();
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        let keep = Arc::clone(&kept);
        let err = child.stderr.take();
        thread::spawn(move || {
            let Some(err) = err else { return };
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut kept) = keep.lock() {
                    if kept.len() == STDERR_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        Ok(Group {
            name: name.to_string(),
            child: Some(child),
            pgid,
            stdout_first,
            stdout: Some(stdout),
            stderr_lines,
            kept,
        })
    }

    /// The first line on stdout, waited for at most `within`.
    pub fn first_line(&self, within: Duration) -> Result<String, String> {
        self.stdout_first.recv_timeout(within).map_err(|_| {
            format!(
                "{} printed nothing on stdout within {} s{}",
                self.name,
                within.as_secs(),
                self.said()
            )
        })
    }

    /// The next line on stderr, if one comes before `deadline`.
    pub fn next_line(&self, deadline: Instant) -> Result<Option<String>, String> {
        if interrupted() {
            return Err("interrupted".to_string());
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(POLL * 10);
        match self.stderr_lines.recv_timeout(wait) {
            Ok(line) => Ok(Some(line)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            // Every writer has exited: nothing more will come.
            Err(RecvTimeoutError::Disconnected) => {
                thread::sleep(wait);
                Ok(None)
            }
        }
    }

    /// `: ` and the last lines it printed on stderr, for an error message.
    pub fn said(&self) -> String {
        let kept = self.kept.lock().map(|k| k.clone()).unwrap_or_default();
        if kept.is_empty() {
            return String::new();
        }
        let lines: Vec<String> = kept.into_iter().collect();
        format!("; its last lines on stderr:\n    {}", lines.join("\n    "))
    }

    /// The process to signal: after a live upgrade, the new one.
    pub fn top(&self) -> Option<u32> {
        tree::top(self.pgid)
    }

    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        let pid = self
            .top()
            .ok_or_else(|| format!("{} is no longer running{}", self.name, self.said()))?;
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| format!("cannot send {signal} to {} ({pid}): {e}", self.name))
    }

    /// Whether any process of the group still runs.
    pub fn alive(&self) -> bool {
        !tree::live(self.pgid).is_empty()
    }

    /// Reaps the process the bench started once it has exited (after its CPU was read).
    pub fn reap(&mut self) {
        if let Some(child) = &mut self.child {
            if !tree::running(child.id()) {
                let _ = child.wait();
                self.child = None;
            }
        }
    }

    /// SIGTERM to the top process, then waits until the whole group has exited (SIGKILL after
    /// `within`); returns what it printed on stdout.
    pub fn stop(mut self, within: Duration) -> Result<Vec<String>, String> {
        let _ = self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + within;
        let mut result = Ok(());
        while self.alive() {
            self.reap();
            if Instant::now() > deadline {
                result = Err(format!(
                    "{} did not stop within {} s of SIGTERM; killed{}",
                    self.name,
                    within.as_secs(),
                    self.said()
                ));
                self.kill_all();
                break;
            }
            thread::sleep(POLL);
        }
        self.reap();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        let lines = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        result.map(|()| lines)
    }

    fn kill_all(&mut self) {
        if !tree::members(self.pgid).is_empty() {
            let _ = killpg(Pid::from_raw(self.pgid as i32), Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.alive() || self.child.is_some() {
            self.kill_all();
        }
    }
}
