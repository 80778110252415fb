//! The client against servers that misbehave, each a few lines of script on 127.0.0.1: a
//! flood of heartbeats is answered a handful of times, not once each; a server that reads
//! nothing gets a capped amount of output before the client gives up on it; a flood of
//! over-long lines makes a warning a second, not one each; escape sequences are shown, not
//! obeyed. Also: a `--bind` address this host lacks is the one named in the error.
//!
//! Each script server ends the exchange itself (closing, or reading to the end), so the
//! tests wait for states, not for times.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::one_line_failure;
use heartbeat::client::{Client, ClientConfig, Finish};
use heartbeat::ops::stats::ClientSummary;

const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");

/// A one-shot server on 127.0.0.1: runs `script` on each of `peers` connections in turn.
fn script_server<T: Send + 'static>(
    peers: usize,
    script: impl Fn(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<Vec<T>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("address");
    let handle = thread::spawn(move || {
        (0..peers)
            .map(|_| script(listener.accept().expect("accepts").0))
            .collect()
    });
    (addr, handle)
}

/// The load client (quiet, no data lines unless `interval`), run until its connections end.
fn client(
    addr: SocketAddr,
    connections: usize,
    adjust: impl FnOnce(&mut ClientConfig),
) -> ClientSummary {
    let mut config = ClientConfig {
        server: addr,
        connections,
        interval: Duration::ZERO,
        verbose: false,
        duration: Some(Duration::from_secs(120)), // a hang guard only
        ..ClientConfig::default()
    };
    adjust(&mut config);
    let outcome = Client::new(config).expect("sets up").run().expect("runs");
    assert_eq!(
        outcome.finish,
        Finish::ClosedByServer,
        "{:?}",
        outcome.summary
    );
    outcome.summary
}

/// 20,000 heartbeats in one burst, then the end of the stream: the client answers once per
/// read at most, and never while an answer is still waiting to go out. The server then reads
/// everything the client sent. The healthy connection it closed without `End Connection` is
/// counted as lost, not as a false death (the server's dead-peer close always says it).
#[test]
fn a_flood_of_heartbeats_is_answered_a_handful_of_times() {
    let (addr, server) = script_server(1, |mut peer| {
        peer.write_all(&b"heartbeat\n".repeat(20_000))
            .expect("flood");
        peer.shutdown(std::net::Shutdown::Write)
            .expect("end of stream");
        let mut answers = String::new();
        peer.read_to_string(&mut answers).expect("reads to the end");
        answers.matches("Echoing...heartbeat\n").count()
    });
    let s = client(addr, 1, |_| {});
    let answers = server.join().expect("script")[0] as u64;
    assert!(
        (1..=1000).contains(&answers),
        "{answers} answers to 20,000 heartbeats"
    );
    assert_eq!(s.heartbeats_answered, answers, "{s:?}");
    assert_eq!(
        (s.lost_closed, s.false_deaths, s.closed_by_server),
        (1, 0, 1),
        "the server closed a healthy connection without End Connection: {s:?}"
    );
}

/// A server that never reads: the client's output for it grows to the cap, then the client
/// closes that connection and says why; every line sent is counted unanswered.
#[test]
fn a_server_that_never_reads_gets_capped_output_then_is_left() {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let (addr, server) = script_server(1, move |peer| {
        // Hold the connection, reading nothing, until the client has given up on it.
        let _ = wait
            .lock()
            .map(|rx| rx.recv_timeout(Duration::from_secs(120)));
        drop(peer);
    });
    let s = client(addr, 1, |c| {
        c.interval = Duration::from_millis(1);
        c.message = vec![b'x'; 16 * 1024];
    });
    let _ = done.send(());
    server.join().expect("script");
    assert_eq!(s.closed_output_cap, 1, "{s:?}");
    assert!(s.lines_sent > 10, "{s:?}");
    assert_eq!(
        (s.echoes_received, s.unanswered),
        (0, s.lines_sent),
        "{s:?}"
    );
    assert_eq!(s.lost(), 0);
}

/// 300 lines of 70,000 bytes on each of 2 connections: the binary logs one warning (a
/// second at most per reason), not 600, and its summary counts all 600 lines.
#[test]
fn over_long_lines_are_warned_about_once_a_second_and_all_counted() {
    let (addr, server) = script_server(2, |mut peer| {
        let mut line = vec![b'y'; 70_000];
        line.push(b'\n');
        for _ in 0..300 {
            if peer.write_all(&line).is_err() {
                return;
            }
        }
        let _ = peer.write_all(b"End Connection\n");
    });
    let output = Command::new(CLIENT)
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args([
            "--no-prompt",
            "--connections",
            "2",
            "--interval",
            "0",
            "--json",
        ])
        .current_dir(tempfile::tempdir().expect("a directory").path())
        .stdin(Stdio::null())
        .output()
        .expect("client runs");
    server.join().expect("script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(json["lines_too_long"], 600, "{json}");
    let warnings = stderr.lines().filter(|l| l.contains("longer than")).count();
    // The run takes well under a second on any machine we know; allow several seconds.
    assert!(
        (1..=10).contains(&warnings),
        "{warnings} warnings:\n{stderr}"
    );
    let held_back = json["warnings_suppressed"].as_u64().expect("a count");
    assert!(held_back >= 590, "{json}");
}

/// A server whose bytes try to clear the screen and fake a `Connected with` line: the single
/// client prints them with every control character escaped.
#[test]
fn the_single_client_shows_escape_sequences_instead_of_obeying_them() {
    let (addr, server) = script_server(1, |mut peer| {
        peer.write_all(b"\x1b[2J\x1b[H\rConnected with evil\0\x07\n")
            .expect("writes");
        peer.write_all(b"End Connection\n").expect("writes");
        let mut rest = Vec::new();
        let _ = peer.read_to_end(&mut rest);
    });
    let output = Command::new(CLIENT)
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--no-prompt", "--interval", "30s"])
        .current_dir(tempfile::tempdir().expect("a directory").path())
        .stdin(Stdio::null())
        .output()
        .expect("client runs");
    server.join().expect("script");
    let stdout = output.stdout;
    assert!(output.status.success());
    assert!(
        !stdout.iter().any(|&b| b < 0x20 && b != b'\n'),
        "a control byte reached the terminal: {stdout:?}"
    );
    let text = String::from_utf8_lossy(&stdout);
    assert!(
        text.contains("Received: \\x1b[2J\\x1b[H\\rConnected with evil\\x00\\x07\n"),
        "{text}"
    );
    let connected = BufReader::new(&stdout[..])
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.starts_with("Connected with"))
        .count();
    assert_eq!(connected, 1, "{text}");
}

/// `--bind 192.0.2.7` (an address this host does not have): the error names that address
/// and says what is wrong with it, not the server's address.
#[test]
fn a_bind_address_this_host_lacks_is_named_in_the_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("address").port().to_string();
    let args = ["--port", &port, "--no-prompt", "--bind", "192.0.2.7"];
    let (err, _) = one_line_failure(CLIENT, &args, 1);
    assert!(
        err.starts_with("client: cannot bind to 192.0.2.7: "),
        "{err}"
    );
    assert!(
        err.contains("no interface of this host has that address"),
        "{err}"
    );
    assert!(!err.contains("127.0.0.1"), "{err}");
}

/// A bad `--faults` value is one line naming the flag and the problem, exit status 2.
#[test]
fn a_bad_fault_spec_is_one_line_and_exit_2() {
    let (err, _) = one_line_failure(CLIENT, &["--faults", "crash=5%", "--no-prompt"], 2);
    assert!(
        err.contains("--faults") && err.contains("unknown fault \"crash\""),
        "{err}"
    );
}
