//! An operator's bad days, through the built binaries on 127.0.0.1: a log nobody reads, a log
//! file that cannot be written, SIGHUP from a closing terminal, and settings that must be
//! refused. Every wait is bounded by a generous deadline, never by a tight wall-clock bound.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, Peer, MS};

const SERVER: &str = env!("CARGO_BIN_EXE_heartbeat-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");

/// Hang guard for anything the tests wait for.
const DEADLINE: Duration = Duration::from_secs(20);

/// The built server with both output pipes held by the test, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    stdout: BufReader<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(SERVER)
            .args(["--port", "0", "--no-prompt"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stderr = child.stderr.take();
        let mut first = String::new();
        stdout.read_line(&mut first).expect("a first line");
        let port = first
            .strip_prefix("Listening on 127.0.0.1:")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Server {
            child,
            port,
            stdout,
            stderr,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn signal(&self, signal: &str) {
        signal_process(self.child.id(), signal);
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        wait_for_exit(&mut self.child)
    }

    fn rest_of_stdout(&mut self) -> String {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("stdout");
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal_process(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal}");
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "still running after {DEADLINE:?}"
        );
        std::thread::sleep(5 * MS);
    }
}

/// Connects and closes `n` times, one connection at a time.
fn churn(addr: std::net::SocketAddr, n: usize) {
    for _ in 0..n {
        let stream = TcpStream::connect_timeout(&addr, DEADLINE).expect("connects");
        drop(stream);
    }
}

/// A peer that sends `lines` one-byte lines in one write; the returned thread reads every
/// echo back, so that neither side waits on the other's buffers.
fn flood(addr: std::net::SocketAddr, lines: usize) -> std::thread::JoinHandle<()> {
    let Peer { reader, mut writer } = Peer::connect(addr);
    let mut peer = Peer {
        reader,
        writer: writer.try_clone().expect("clone"),
    };
    let echoes = std::thread::spawn(move || {
        for _ in 0..lines {
            assert_eq!(peer.line().as_deref(), Some("Echoing...x"));
        }
    });
    writer.write_all(&b"x\n".repeat(lines)).expect("flood sent");
    echoes
}

/// One round trip for `peer`, and how long it took.
fn echo_time(peer: &mut Peer, text: &str) -> Duration {
    let start = Instant::now();
    peer.send(format!("{text}\n").as_bytes());
    let line = peer.line_within(DEADLINE);
    let took = start.elapsed();
    assert_eq!(
        line,
        Some(format!("Echoing...{text}")),
        "echo within {DEADLINE:?}"
    );
    took
}

/// True when process `pid`'s stderr log writer thread is asleep in a pipe write: the pipe is
/// full and nobody reads it.
fn stderr_writer_waits_on_the_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        read("comm").trim() == "log stderr" && read("wchan").contains("pipe_write")
    })
}

/// How many sockets process `pid` has open.
fn sockets_of(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Everything the process wrote on stderr, once it has exited.
fn read_all(stderr: ChildStderr) -> String {
    let mut text = String::new();
    BufReader::new(stderr)
        .read_to_string(&mut text)
        .expect("stderr");
    text
}

/// Stderr is a pipe nobody reads. 1,500 connect/close cycles and a debug-level flood fill it
/// (the test checks that the pipe really filled); an established peer still gets every echo,
/// and SIGTERM still stops the server with its summary and exit 0.
#[test]
fn a_stderr_pipe_nobody_reads_never_stops_the_loop() {
    let mut server = Server::start(&["--log-level", "debug"]);
    let addr = server.addr();
    let mut established = Peer::connect(addr);
    echo_time(&mut established, "before");
    churn(addr, 1_500);
    // At debug level every data line is logged: far more than the pipe and the queue hold.
    flood(addr, 20_000)
        .join()
        .expect("every flooded line echoed");
    let pid = server.child.id();
    assert!(
        eventually(DEADLINE, || stderr_writer_waits_on_the_pipe(pid)),
        "the log writer thread is blocked writing to the full pipe"
    );
    let mut times: Vec<Duration> = (0..50)
        .map(|n| {
            std::thread::sleep(2 * MS);
            echo_time(&mut established, &format!("ping {n}"))
        })
        .collect();
    times.sort();
    eprintln!(
        "echo round trip with stderr blocked: median {:?}, max {:?} (50 samples)",
        times[25], times[49]
    );

    server.signal("-TERM");
    assert_eq!(
        established.line_within(DEADLINE).as_deref(),
        Some("End Connection")
    );
    let status = server.wait();
    assert!(status.success(), "exit {status:?}");
    let summary = server.rest_of_stdout();
    assert!(summary.contains("Summary: "), "{summary}");
    let logged = read_all(server.stderr.take().expect("stderr"));
    assert!(logged.contains(" connected (1 open)"), "{logged}");
}

/// A log that was blocked and then read: the lines that did not fit are dropped, one line
/// says how many, the summary counts them, and the last lines before exit (`received
/// SIGTERM`) are written, not lost.
#[test]
fn a_log_that_drains_says_how_many_lines_were_dropped_and_keeps_the_last_ones() {
    let mut server = Server::start(&["--log-level", "debug"]);
    let addr = server.addr();
    flood(addr, 30_000)
        .join()
        .expect("every flooded line echoed");
    let pid = server.child.id();
    assert!(eventually(DEADLINE, || stderr_writer_waits_on_the_pipe(
        pid
    )));
    let stderr = server.stderr.take().expect("stderr");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let dropped = loop {
        let line = lines_rx
            .recv_timeout(DEADLINE.saturating_sub(start.elapsed()))
            .expect("a line saying how many were dropped");
        if line.contains("log lines dropped") {
            break line;
        }
    };
    let count: u64 = dropped
        .split("[WARN] ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{dropped}"));
    assert!(count > 0 && count < 30_000, "{dropped}");
    server.signal("-TERM");
    assert!(server.wait().success());
    let summary = server.rest_of_stdout();
    let total = summary
        .lines()
        .find_map(|line| line.strip_prefix("  log lines dropped: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the summary counts the dropped lines: {summary}"));
    assert!(
        total >= count,
        "{total} in the summary, {count} reported in the log"
    );
    reader.join().expect("reader");
    let rest: Vec<String> = lines_rx.try_iter().collect();
    assert!(
        rest.iter()
            .any(|line| line.ends_with("[INFO] received SIGTERM: stopping")),
        "{rest:?}"
    );
}

/// A log file that cannot be written (`/dev/full`): one warning on stderr, not one per line
/// and not silence; the server goes on serving and stops cleanly.
#[test]
fn a_log_file_that_cannot_be_written_warns_once() {
    let mut server = Server::start(&["--log-file", "/dev/full"]);
    let addr = server.addr();
    for n in 0..20 {
        let mut peer = Peer::connect(addr);
        echo_time(&mut peer, &format!("line {n}"));
    }
    server.signal("-TERM");
    assert!(server.wait().success());
    let logged = read_all(server.stderr.take().expect("stderr"));
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("log file /dev/full"))
        .collect();
    assert_eq!(warnings.len(), 1, "{logged}");
    assert!(
        warnings[0].contains("[WARN] log file /dev/full: cannot write: no space left on device"),
        "{logged}"
    );
    assert!(logged.contains("received SIGTERM: stopping"), "{logged}");
}

/// SIGHUP (a closing terminal or SSH session) stops the server as SIGTERM does: a connected
/// peer is told `End Connection`, the summary is printed, exit status 0.
#[test]
fn sighup_stops_the_server_gracefully() {
    let mut server = Server::start(&["--log-level", "off"]);
    let mut peer = Peer::connect(server.addr());
    echo_time(&mut peer, "hello");
    server.signal("-HUP");
    assert_eq!(
        peer.line_within(DEADLINE).as_deref(),
        Some("End Connection")
    );
    let status = server.wait();
    assert!(status.success(), "exit {status:?}");
    let summary = server.rest_of_stdout();
    assert!(
        summary.starts_with("Summary: 1 connection accepted"),
        "{summary}"
    );
}

/// SIGHUP stops the load client as Ctrl-C does: it prints its summary and exits 0.
#[test]
fn sighup_stops_the_load_client_with_its_summary() {
    let server = Server::start(&["--log-level", "off"]);
    let mut client = Command::new(CLIENT)
        .args(["--port", &server.port.to_string(), "--no-prompt"])
        .args(["--connections", "20", "--interval", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("client starts");
    // Wait until the client holds its sockets (two are its signal pipe): it is running.
    let connected = eventually(DEADLINE, || sockets_of(client.id()) >= 20);
    assert!(connected, "the client opened its connections");
    signal_process(client.id(), "-HUP");
    let status = wait_for_exit(&mut client);
    let mut out = String::new();
    let stdout = client.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_to_string(&mut out)
        .expect("out");
    assert!(status.success(), "exit {status:?}: {out}");
    assert!(out.starts_with("Summary: "), "{out}");
    assert!(out.contains(" of 20 connections opened"), "{out}");
}

/// Runs `binary` with `args` and no input, kills it if it is still running after the
/// deadline, and checks its exit status. Returns what it printed on stderr and stdout.
fn exits_with(binary: &str, args: &[&str], code: i32) -> (String, String) {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let status = wait_for_exit(&mut child);
    let mut err = String::new();
    let mut out = String::new();
    let stderr = child.stderr.take().expect("stderr");
    BufReader::new(stderr)
        .read_to_string(&mut err)
        .expect("err");
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout)
        .read_to_string(&mut out)
        .expect("out");
    assert_eq!(status.code(), Some(code), "{args:?}: {err}");
    (err, out)
}

/// An endless configuration file (`/dev/zero`) is read only up to the 1 MiB cap: one line,
/// exit status 2, at once.
#[test]
fn an_endless_configuration_file_is_refused() {
    let (err, out) = exits_with(SERVER, &["--config", "/dev/zero", "--no-prompt"], 2);
    assert_eq!(
        err,
        "server: /dev/zero: a character device, not a configuration file\n"
    );
    assert!(out.is_empty(), "nothing listened: {out}");
}

/// A key given twice in the configuration file, a whole `server` object or one key inside
/// it, is exit status 2 with one line naming the key, not "the last one wins".
#[test]
fn a_key_given_twice_in_the_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (body, key) in [
        (
            r#"{"server":{"port":"0"},"server":{"port":"1"}}"#,
            "\"server\"",
        ),
        (
            r#"{"server":{"port":"0","idle":"5s","port":"1"}}"#,
            "\"server.port\"",
        ),
    ] {
        let path = dir.path().join("twice.json");
        std::fs::write(&path, body).expect("written");
        let path = path.to_str().expect("utf-8 path");
        let (err, out) = exits_with(SERVER, &["--config", path, "--no-prompt"], 2);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("key {key}: given more than once")),
            "{err}"
        );
        assert!(out.is_empty(), "nothing listened: {out}");
        let (err, _) = exits_with(CLIENT, &["--config", path, "--no-prompt"], 2);
        assert!(err.contains(&format!("key {key}")), "{err}");
    }
}

/// Multicast and broadcast addresses cannot accept TCP: the server refuses to listen there
/// and the client to bind there, exit status 2 with one line.
#[test]
fn multicast_and_broadcast_addresses_are_refused() {
    for host in ["224.0.0.1", "255.255.255.255", "ff02::1"] {
        let args = ["--host", host, "--port", "0", "--no-prompt"];
        let (err, out) = exits_with(SERVER, &args, 2);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("server: --host: {host} is ")),
            "{err}"
        );
        assert!(err.contains("TCP cannot listen or connect there"), "{err}");
        assert!(out.is_empty(), "nothing listened: {out}");
    }
    let args = ["--port", "1", "--bind", "224.0.0.1", "--no-prompt"];
    let (err, _) = exits_with(CLIENT, &args, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("client: --bind: 224.0.0.1 is a multicast address"),
        "{err}"
    );
}

/// An empty or blank `--allow` (an unset variable in `--allow "$LIST"`) fails closed: exit
/// status 2, nothing listens, instead of letting everyone in.
#[test]
fn an_empty_allow_list_fails_closed() {
    for list in ["", ",", " ", "127.0.0.1,"] {
        let args = ["--allow", list, "--port", "0", "--no-prompt"];
        let (err, out) = exits_with(SERVER, &args, 2);
        assert!(err.contains("empty"), "{list:?}: {err}");
        assert!(out.is_empty(), "{list:?}: nothing listened: {out}");
    }
}

/// Lines of a file, empty if it does not exist (yet).
fn lines_of(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

/// logrotate's way (issue 21): the files are renamed, SIGUSR1 makes the server reopen
/// `--log-file` and `--events` by their paths; new lines land in new files there, the old
/// lines stay in the renamed ones, and the server goes on serving.
#[test]
fn sigusr1_reopens_the_log_file_and_the_event_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, events) = (
        dir.path().join("server.log"),
        dir.path().join("events.jsonl"),
    );
    let (log_str, events_str) = (
        log.to_str().expect("utf-8"),
        events.to_str().expect("utf-8"),
    );
    let args = [
        "--log-level",
        "info",
        "--log-file",
        log_str,
        "--events",
        events_str,
    ];
    let mut server = Server::start(&args);
    let mut first = Peer::connect(server.addr());
    echo_time(&mut first, "before");
    assert!(eventually(DEADLINE, || {
        lines_of(&events).iter().any(|l| l.contains("\"connect\"")) && !lines_of(&log).is_empty()
    }));
    let (old_log, old_events) = (dir.path().join("server.log.1"), dir.path().join("events.1"));
    std::fs::rename(&log, &old_log).expect("rename");
    std::fs::rename(&events, &old_events).expect("rename");
    server.signal("-USR1");
    assert!(eventually(DEADLINE, || log.exists() && events.exists()));
    let mut second = Peer::connect(server.addr());
    echo_time(&mut second, "after");
    let second_port = second.writer.local_addr().expect("local address").port();
    assert!(eventually(DEADLINE, || lines_of(&events).iter().any(|l| l
        .contains("\"connect\"")
        && l.contains(&format!(":{second_port}\"")))));
    echo_time(&mut first, "still served");
    server.signal("-TERM");
    assert!(server.wait().success());
    let old = lines_of(&old_events);
    assert_eq!(
        old.iter().filter(|l| l.contains("\"connect\"")).count(),
        1,
        "{old:?}"
    );
    assert!(
        !old.iter().any(|l| l.contains(&format!(":{second_port}\""))),
        "{old:?}"
    );
    assert!(
        lines_of(&log)
            .iter()
            .any(|l| l.contains("received SIGTERM")),
        "the new log file gets the new lines: {:?}",
        lines_of(&log)
    );
    assert!(!lines_of(&old_log).iter().any(|l| l.contains("SIGTERM")));
}

/// SIGALRM used to kill the server without a word to its peers: now it is ignored, and the
/// server serves on. (SIGUSR2, which used to kill it too, now upgrades it live: see
/// `tests/upgrade/binaries.rs`, where the peers are served on and told `End Connection` by
/// the new process at the end.)
#[test]
fn sigalrm_does_not_kill_the_server() {
    let mut server = Server::start(&["--log-level", "info"]);
    let mut peer = Peer::connect(server.addr());
    echo_time(&mut peer, "hello");
    server.signal("-ALRM");
    echo_time(&mut peer, "still here");
    server.signal("-TERM");
    assert_eq!(
        peer.line_within(DEADLINE).as_deref(),
        Some("End Connection")
    );
    assert!(server.wait().success());
}

/// Issue 21: `--config` naming a FIFO blocked both binaries forever with no output; now each
/// says so in one line and exits 2, at once (no writer ever opens the FIFO).
#[test]
fn a_fifo_as_configuration_is_refused_by_both_binaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("configuration.json");
    let made = Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let fifo = fifo.to_str().expect("utf-8");
    for binary in [SERVER, CLIENT] {
        let (err, out) = exits_with(binary, &["--config", fifo, "--no-prompt"], 2);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.ends_with("configuration.json: a FIFO, not a configuration file\n"),
            "{err}"
        );
        assert!(out.is_empty(), "{out}");
    }
}

/// The value of `field` (e.g. `FDSize:`) in `/proc/{pid}/status`.
fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} line"))
}

/// The soft open-file limit of process `pid`, from `/proc/{pid}/limits`.
fn open_file_limit_of(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("its limits");
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("a Max open files line")
}

/// The server sizes its descriptor table for `--max-connections` before the first peer:
/// growing it as peers arrive would stop the loop for milliseconds at each doubling.
#[test]
fn the_descriptor_table_is_sized_for_max_connections_at_start() {
    let mut server = Server::start(&["--log-level", "off", "--max-connections", "3000"]);
    // Serving: the table was sized in setup, before this echo.
    let mut peer = Peer::connect(server.addr());
    echo_time(&mut peer, "hello");
    let pid = server.child.id();
    let wanted = 3000.min(open_file_limit_of(pid));
    let size = status_field(pid, "FDSize:");
    assert!(
        size >= wanted,
        "the table holds {size} descriptors, not the {wanted} --max-connections 3000 needs"
    );
    server.signal("-TERM");
    assert!(server.wait().success());
}
