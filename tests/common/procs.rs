//! The server processes a test runs, seen from outside as an operator sees them: started
//! from a given binary with their output collected, signalled with `kill`, and read from
//! `/proc` (alive or not, whose children, how many sockets), their metrics scraped. Linux only, like the tests that
//! use it. What a test then asserts about them is the test's own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Lines;

/// Only a hang guard: every wait ends on the state it waits for.
pub const GUARD: Duration = Duration::from_secs(60);

/// Waits for `done`, at most [`GUARD`], and fails the test naming `what` if it never holds.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < GUARD, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server binary running, its stdout and stderr collected line by line.
pub struct Logged {
    pub child: Child,
    /// Its port on 127.0.0.1, from its first line.
    pub port: u16,
    pub stdout: Lines,
    pub stderr: Lines,
}

/// Starts `exe --port 0 --no-prompt --log-level info ARGS` with `env` set and waits for its
/// `Listening on 127.0.0.1:PORT` line.
pub fn start_logged(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Logged {
    let mut child = Command::new(exe)
        .args(["--port", "0", "--no-prompt", "--log-level", "info"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::collect(child.stdout.take().unwrap());
    let stderr = Lines::collect(child.stderr.take().unwrap());
    eventually("its Listening on line", || {
        stdout.starting("Listening on") == 1
    });
    let line = stdout.snapshot()[0].clone();
    let port = super::listening_port(&line).unwrap_or_else(|| panic!("{line}"));
    Logged {
        child,
        port,
        stdout,
        stderr,
    }
}

/// `kill SIGNAL PID`, which must succeed.
pub fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Fields of `/proc/PID/stat` after the command name: (state, parent pid).
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut after = stat.rsplit(')').next()?.split_whitespace();
    let state = after.next()?.chars().next()?;
    Some((state, after.next()?.parse().ok()?))
}

/// `pid` runs (it exists and is not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// The running processes whose parent is `pid` (a `--workers` parent's workers), sorted. A
/// worker that died and is not yet reaped is not one of them.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|child| stat(*child).is_some_and(|(state, parent)| parent == pid && state != 'Z'))
        .collect();
    found.sort_unstable();
    found
}

/// Sockets process `pid` holds (its peers, its listener, its signal pipe); 0 once it is gone.
pub fn sockets(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// One whole scrape of the `--metrics` endpoint at `metrics`: the response, head and body.
pub fn scrape(metrics: SocketAddr) -> String {
    let mut scraper = TcpStream::connect(metrics).unwrap();
    scraper.set_read_timeout(Some(GUARD)).unwrap();
    scraper
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    scraper.read_to_string(&mut response).unwrap();
    response
}
