//! The load client at a size a test can afford: 2,000 connections on one loop against the
//! server in-process. It keeps its books (every line echoed or counted unanswered), answers
//! every heartbeat, and its JSON summary says what happened. The built `client` binary is
//! run too. The tests take a lock so that one load runs at a time: each holds 4,000
//! descriptors.
//!
//! The server's timings are generous so that a busy machine cannot make a live connection
//! look dead: where a test needs no heartbeat, the idle time is longer than the run; where
//! it does, a connection has three seconds to answer. Nothing asserts how fast the run went.
//!
//! The client binds each connection to 127.0.0.1 port 0 before connecting, as it does with
//! the repository's `configuration.json` (whose `client` section says so).

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{start_server, RunningServer, MS};
use heartbeat::client::{Client, ClientConfig, Finish, Outcome};
use heartbeat::cores::liveness::Timing;
use heartbeat::server::ServerConfig;
use serde_json::Value;

const CONNECTIONS: usize = 2000;

/// One load at a time.
static LOAD: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock leaves nothing behind that the next needs.
    LOAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Heartbeats only after `idle` of silence, then every second, 3 times: a peer has 3 s to
/// answer.
fn server(idle: Duration) -> RunningServer {
    start_server(ServerConfig {
        timing: Timing {
            idle,
            interval: Duration::from_secs(1),
            count: 3,
        },
        ..ServerConfig::default()
    })
}

/// No heartbeat within any of these runs.
const NO_HEARTBEATS: Duration = Duration::from_secs(30);

/// 2,000 connections from 127.0.0.1 at up to 5,000 a second, for `duration`, sending a line
/// every `interval` (zero: none).
fn load(server: SocketAddr, interval: Duration, duration: Duration) -> Outcome {
    let client = Client::new(ClientConfig {
        server,
        connections: CONNECTIONS,
        connect_rate: 5000,
        interval,
        duration: Some(duration),
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        verbose: false,
        status_line: false,
        server_interval: Duration::from_secs(1),
        ..ClientConfig::default()
    })
    .expect("client sets up");
    client.run().expect("client runs")
}

/// Data every 200 ms on each of 2,000 connections: all open, none fails or is closed, and
/// every line sent is echoed (or, at the very end, counted unanswered); the server echoed
/// at least as many lines as came back and closed nobody as dead.
#[test]
fn two_thousand_connections_sending_data_keep_their_books() {
    let _one = one_at_a_time();
    let server = server(NO_HEARTBEATS);
    let outcome = load(server.addr, 200 * MS, Duration::from_secs(2));
    let s = &outcome.summary;
    assert_eq!(outcome.finish, Finish::DurationReached, "{s:?}");
    assert_eq!(s.target, CONNECTIONS as u64);
    assert_eq!(s.opened, CONNECTIONS as u64, "{s:?}");
    assert_eq!(s.failed, 0, "{:?}", s.failed_by_reason);
    assert_eq!((s.closed_by_server, s.false_deaths), (0, 0), "{s:?}");
    assert_eq!(s.errors, 0, "{s:?}");
    // Lines are sent by schedule, however late the loop: at least one per connection.
    assert!(s.lines_sent >= CONNECTIONS as u64, "{s:?}");
    assert_eq!(
        s.lag.count, s.lines_sent,
        "each send's lateness is measured"
    );
    assert_eq!(s.echoes_received + s.unanswered, s.lines_sent, "{s:?}");
    assert_eq!(s.lost(), 0);
    // The client waits up to 1 s for echoes owed; on loopback they all come.
    assert_eq!(s.unanswered, 0, "{s:?}");
    assert_eq!(s.rtt.count, s.echoes_received, "one round trip per echo");
    assert_eq!(s.connect_time.count, CONNECTIONS as u64);
    assert!(s.rtt.p50_us <= s.rtt.p99_us && s.rtt.p99_us <= s.rtt.max_us);

    let stats = server.stop();
    assert_eq!(stats.accepted, CONNECTIONS as u64);
    assert!(stats.lines_echoed >= s.echoes_received, "{stats:?}");
    assert_eq!(stats.closed_dead, 0, "{stats:?}");
    assert_eq!(stats.lines_too_long, 0);
    assert_eq!(stats.open, 0);
}

/// No data at all (interval 0) on 2,000 connections for 5 s: each one goes quiet for 1 s
/// and is sent heartbeats, the client answers every one, and the server closes none of
/// them as dead. Also: the JSON summary parses and says the same as the counters.
#[test]
fn two_thousand_quiet_connections_answer_every_heartbeat() {
    let _one = one_at_a_time();
    let server = server(Duration::from_secs(1));
    let outcome = load(server.addr, Duration::ZERO, Duration::from_secs(5));
    let s = &outcome.summary;
    assert_eq!(outcome.finish, Finish::DurationReached, "{s:?}");
    assert_eq!(s.opened, CONNECTIONS as u64, "{s:?}");
    assert_eq!(s.failed, 0, "{:?}", s.failed_by_reason);
    assert_eq!((s.closed_by_server, s.errors), (0, 0), "{s:?}");
    assert_eq!(s.false_deaths, 0, "{s:?}");
    assert_eq!((s.lines_sent, s.echoes_received, s.unanswered), (0, 0, 0));
    // Each connection is heartbeated 1 s after it opened, so at least once in 5 s.
    assert!(s.heartbeats_answered >= CONNECTIONS as u64, "{s:?}");
    assert_eq!(
        s.lag.count, s.heartbeats_answered,
        "each answer's lateness is measured"
    );
    assert!(s.memory.baseline_bytes > 0, "{:?}", s.memory);

    let json: Value = serde_json::from_str(&s.to_json()).expect("the summary is JSON");
    let object = json.as_object().expect("a JSON object");
    for key in [
        "elapsed_secs",
        "target",
        "opened",
        "failed",
        "failed_by_reason",
        "closed_by_server",
        "errors",
        "lines_sent",
        "echoes_received",
        "unanswered",
        "heartbeats_answered",
        "rtt",
        "connect_time",
        "false_deaths",
        "reconnects",
        "lag",
        "client_bottleneck",
        "server_interval_ms",
        "faults",
        "memory",
    ] {
        assert!(object.contains_key(key), "{key} missing from {json}");
    }
    assert_eq!(json["target"], CONNECTIONS as u64);
    assert_eq!(json["opened"], CONNECTIONS as u64);
    assert_eq!(json["failed"], 0);
    assert_eq!(json["failed_by_reason"], serde_json::json!({}));
    assert_eq!(json["closed_by_server"], 0);
    assert_eq!(json["heartbeats_answered"], s.heartbeats_answered);
    assert_eq!(json["rtt"]["count"], 0, "no data, no round trips");
    assert_eq!(json["connect_time"]["count"], CONNECTIONS as u64);
    let elapsed = json["elapsed_secs"].as_f64().expect("a number");
    assert!(elapsed >= 5.0, "elapsed {elapsed}");
    assert_eq!(json["server_interval_ms"], 1000);

    let stats = server.stop();
    assert_eq!(stats.accepted, CONNECTIONS as u64);
    assert!(stats.heartbeats_answered >= CONNECTIONS as u64, "{stats:?}");
    assert!(stats.heartbeats_sent >= stats.heartbeats_answered);
    assert_eq!(stats.closed_dead, 0, "{stats:?}");
    assert_eq!(stats.lines_echoed, 0, "heartbeat answers are not echoed");
}

/// The built `client` binary in load mode with `--json`: 200 connections for 1 s; its
/// stdout is exactly one line, a JSON object saying all 200 opened and nothing was lost.
#[test]
fn the_client_binary_prints_one_json_summary_line() {
    let _one = one_at_a_time();
    let server = server(NO_HEARTBEATS);
    // Run from an empty directory, so no configuration.json is read.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = server.addr.port().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_heartbeat-client"))
        .args(["--connections", "200", "--interval", "100ms"])
        .args(["--duration", "1s", "--json", "--no-prompt"])
        .args(["--host", "127.0.0.1", "--port", &port])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client still running after 60 s (a 1 s run)");
        }
        std::thread::sleep(10 * MS);
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout:?}");
    assert!(stdout.ends_with('\n'));
    let json: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    assert!(json.is_object(), "{json}");
    assert_eq!(json["target"], 200);
    assert_eq!(json["opened"], 200, "{json}");
    assert_eq!(json["failed"], 0, "{json}");
    assert_eq!(json["closed_by_server"], 0, "{json}");
    let sent = json["lines_sent"].as_u64().expect("lines_sent");
    let echoed = json["echoes_received"].as_u64().expect("echoes_received");
    let unanswered = json["unanswered"].as_u64().expect("unanswered");
    assert!(sent >= 200, "{json}");
    assert_eq!(echoed + unanswered, sent, "{json}");

    let stats = server.stop();
    assert_eq!(stats.accepted, 200);
    assert!(stats.lines_echoed >= echoed);
}
