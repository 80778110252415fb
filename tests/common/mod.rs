//! Shared helpers for the end-to-end tests: a server started in-process on 127.0.0.1:0 with
//! millisecond timings, a blocking line-based peer with timeouts, so no test can hang, the
//! built server as a child process, and a binary run to its one-line failure. `procs`: server
//! processes seen from outside (started with their output collected, signalled, read from
//! `/proc`), for the tests that upgrade or supervise them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heartbeat::cores::liveness::Timing;
use heartbeat::edge::stop::{Stoppable, Stopper};
use heartbeat::ops::stats::ServerStats;
use heartbeat::server::{Server, ServerConfig};

pub mod procs;

pub const MS: Duration = Duration::from_millis(1);

/// The timings of the tests: heartbeat every 100 ms, 3 times, after 400 ms of silence.
pub const FAST: Timing = Timing {
    idle: Duration::from_millis(400),
    interval: Duration::from_millis(100),
    count: 3,
};

pub struct RunningServer {
    pub addr: SocketAddr,
    stopper: Stopper,
    thread: Option<JoinHandle<ServerStats>>,
}

impl RunningServer {
    /// Stops the server as SIGTERM would and returns its counters.
    pub fn stop(mut self) -> ServerStats {
        self.stopper.stop();
        self.thread
            .take()
            .expect("not yet stopped")
            .join()
            .expect("server thread panicked")
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stopper.stop();
    }
}

pub fn start_server(config: ServerConfig) -> RunningServer {
    let server = Server::bind(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..config
    })
    .expect("server binds");
    let addr = server.local_addr();
    let stopper = server.stopper();
    let thread = std::thread::spawn(move || server.run().expect("server runs"));
    RunningServer {
        addr,
        stopper,
        thread: Some(thread),
    }
}

pub fn start_fast_server() -> RunningServer {
    start_server(ServerConfig {
        timing: FAST,
        ..ServerConfig::default()
    })
}

/// A peer that reads whole lines, each read bounded by a timeout.
pub struct Peer {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Peer {
    pub fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        Peer {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// The next line without its newline; `None` at end of stream.
    pub fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(
                    line.pop(),
                    Some(b'\n'),
                    "a line ends in a newline: {line:?}"
                );
                Some(String::from_utf8_lossy(&line).into_owned())
            }
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// The next line, or `None` if nothing arrives within `wait`.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut line = Vec::new();
        let got = match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => Some(String::from_utf8_lossy(&line).trim_end().to_string()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(line.is_empty(), "a partial line arrived: {line:?}");
                None
            }
            Err(e) => panic!("reading a line: {e}"),
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        got
    }

    /// Reads until the server closes the connection; returns everything read.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to end");
        rest
    }
}

/// Waits up to `limit` for `done` to hold, polling every few milliseconds.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(5 * MS);
    }
    done()
}

/// The built `server` binary, started on a free port of 127.0.0.1 and killed when dropped, so
/// a failing test leaves no process behind.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub port: u16,
    /// The first line it printed: `Listening on 127.0.0.1:PORT (...)`.
    pub listening: String,
    pub stdout: BufReader<std::process::ChildStdout>,
    /// Every line it logged so far, when started with [`ServerProcess::start_logged`].
    pub log: Option<Lines>,
    /// Sockets open once it was listening, before any peer.
    base_sockets: usize,
}

/// What becomes of a started server's stderr.
enum Stderr {
    Discard,
    /// Read by a thread into [`ServerProcess::log`].
    Collect,
    /// Left in `child.stderr`.
    Keep,
}

/// Lines a child printed, collected by a thread as they come.
#[derive(Clone, Default)]
pub struct Lines {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Set once the stream ended: every line is in `lines`.
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Lines {
    /// Starts a thread that collects the lines of `stream` until it ends.
    pub fn collect(stream: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().expect("lines").push(line);
            }
            sink.ended.store(true, std::sync::atomic::Ordering::Release);
        });
        lines
    }

    /// The stream ended (every process holding it exited) and all its lines are collected: a
    /// process's last lines may still be on their way until then.
    pub fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// How many lines so far start with `start`.
    pub fn starting(&self, start: &str) -> usize {
        self.snapshot()
            .iter()
            .filter(|l| l.starts_with(start))
            .count()
    }

    /// How many lines so far contain `text`.
    pub fn containing(&self, text: &str) -> usize {
        self.snapshot().iter().filter(|l| l.contains(text)).count()
    }

    /// Waits up to `limit` for a line containing `text`.
    pub fn wait_for(&self, text: &str, limit: Duration) -> bool {
        eventually(limit, || self.snapshot().iter().any(|l| l.contains(text)))
    }
}

impl ServerProcess {
    /// Starts `server --port 0 --no-prompt` with `args` and waits for its `Listening on` line.
    pub fn start(args: &[&str]) -> ServerProcess {
        Self::spawn(args, &[], Stderr::Discard)
    }

    /// The same, collecting what it logs on stderr in [`ServerProcess::log`].
    pub fn start_logged(args: &[&str]) -> ServerProcess {
        Self::spawn(args, &[], Stderr::Collect)
    }

    /// The same with environment variables set; its stderr is left in `child.stderr` for the
    /// test to read.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        Self::spawn(args, env, Stderr::Keep)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], stderr: Stderr) -> ServerProcess {
        let pipe = match stderr {
            Stderr::Discard => std::process::Stdio::null(),
            Stderr::Collect | Stderr::Keep => std::process::Stdio::piped(),
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_heartbeat-server"))
            .args(["--port", "0", "--no-prompt"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(pipe)
            .spawn()
            .expect("server starts");
        let log = match stderr {
            Stderr::Collect => child.stderr.take().map(Lines::collect),
            Stderr::Discard | Stderr::Keep => None,
        };
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut listening = String::new();
        stdout.read_line(&mut listening).expect("a first line");
        let port = listening_port(&listening)
            .unwrap_or_else(|| panic!("unexpected first line {listening:?}"));
        let mut server = ServerProcess {
            child,
            port,
            listening,
            stdout,
            log,
            base_sockets: 0,
        };
        server.base_sockets = server.open_sockets();
        server
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let kb: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// User + system CPU time of the server process, in clock ticks (1/100 s here).
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("/proc stat");
        // Fields after the command name, which is in parentheses and may contain spaces.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let utime: u64 = fields[11].parse().expect("utime");
        let stime: u64 = fields[12].parse().expect("stime");
        utime + stime
    }

    /// Sockets the server process has open (its listener included), from `/proc`.
    pub fn open_sockets(&self) -> usize {
        procs::sockets(self.child.id())
    }

    /// Waits up to `limit` until the server holds `peers` connections, counted as sockets
    /// beyond those it had when it started listening (the listener, the signal pipe).
    pub fn wait_for_peers(&self, peers: usize, limit: Duration) -> bool {
        eventually(limit, || self.open_sockets() >= self.base_sockets + peers)
    }

    /// Waits up to `limit` until the server holds exactly `peers` connections (after some
    /// closed: the server has seen them go).
    pub fn wait_for_exactly(&self, peers: usize, limit: Duration) -> bool {
        eventually(limit, || self.open_sockets() == self.base_sockets + peers)
    }

    /// Sends `signal` (e.g. "-TERM") to the server.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits for the process to exit, at most `limit`; returns its status.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "server still running after {limit:?}"
            );
            std::thread::sleep(5 * MS);
        }
    }

    /// Everything the server printed after its first line.
    pub fn rest_of_stdout(&mut self) -> String {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("stdout");
        rest
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of a server's first line, `Listening on 127.0.0.1:PORT (...)`.
pub fn listening_port(line: &str) -> Option<u16> {
    line.strip_prefix("Listening on 127.0.0.1:")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// Runs `binary` with `args` and no input until it exits, and checks that it failed as the
/// binaries promise: exit status `code` and exactly one line on stderr. Returns that line
/// (with its newline) and what it printed on stdout.
pub fn one_line_failure(binary: &str, args: &[&str], code: i32) -> (String, Vec<u8>) {
    let output = std::process::Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    (err, output.stdout)
}

/// The number on the summary row `label: N`, if the summary has that row.
pub fn summary_value(summary: &str, label: &str) -> Option<u64> {
    summary.lines().find_map(|line| {
        let value = line.trim_start().strip_prefix(label)?.strip_prefix(": ")?;
        value.trim().parse().ok()
    })
}

/// The path of `name` on `PATH`, or `None` (and a skip message) outside CI; in CI a
/// missing tool fails the test.
pub fn tool(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    if found.status.success() && !path.is_empty() {
        return Some(std::path::PathBuf::from(path));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is required in CI (.ci/run installs {package})"
    );
    eprintln!("SKIPPED: {name} is not installed (apt-get install {package}); not in CI");
    None
}
