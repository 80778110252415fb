//! Fault injection end to end: a share of the load client's connections turns bad (silent,
//! half-closed, not reading, reset) against the real server in-process, and the client
//! reports per kind how many it injected and how many the server noticed, and that the
//! server closed no healthy connection (no false death).
//!
//! Timings are generous for a busy machine: a healthy connection has 2 s to answer a
//! heartbeat; faults strike within 0.5 s of connecting and the server needs at most
//! `idle + count·interval` = 3 s to close a silent peer, in a run of 8 s. Nothing asserts
//! that anything was fast, only that the server was never early and never wrong.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{start_server, ServerProcess};
use heartbeat::client::faults::FaultSpec;
use heartbeat::client::{Client, ClientConfig, Finish};
use heartbeat::cores::liveness::Timing;
use heartbeat::ops::stats::{ClientSummary, ServerStats};
use heartbeat::server::ServerConfig;
use serde_json::Value;

const CONNECTIONS: usize = 40;
const TIMING: Timing = Timing {
    idle: Duration::from_secs(1),
    interval: Duration::from_secs(1),
    count: 2,
};

/// Runs 40 connections for 8 s with `faults`, faults striking within 0.5 s of connecting;
/// returns the client's summary and the server's counters.
fn run(faults: &str, interval: Duration) -> (ClientSummary, ServerStats) {
    let server = start_server(ServerConfig {
        timing: TIMING,
        ..ServerConfig::default()
    });
    let client = Client::new(ClientConfig {
        server: server.addr,
        connections: CONNECTIONS,
        connect_rate: 1000,
        interval,
        duration: Some(Duration::from_secs(8)),
        faults: faults.parse::<FaultSpec>().expect("a valid spec"),
        fault_window: Some(Duration::from_millis(500)),
        seed: 11,
        verbose: false,
        server_interval: TIMING.interval,
        ..ClientConfig::default()
    })
    .expect("client sets up");
    let outcome = client.run().expect("client runs");
    assert_eq!(
        outcome.finish,
        Finish::DurationReached,
        "{:?}",
        outcome.summary
    );
    (outcome.summary, server.stop())
}

/// The one kind of fault in `s`: injected into at least one connection and noticed on every
/// one of them; no healthy connection closed.
fn all_found(s: &ClientSummary, kind: &str) -> u64 {
    assert_eq!(s.opened, CONNECTIONS as u64, "{s:?}");
    assert_eq!(s.false_deaths, 0, "healthy connections closed: {s:?}");
    assert_eq!(s.faults.len(), 1, "{:?}", s.faults);
    let f = &s.faults[kind];
    assert!(f.injected >= 1, "{s:?}");
    assert_eq!((f.detected, f.undetected), (f.injected, 0), "{f:?}");
    assert_eq!(f.detection.count, f.injected);
    assert_eq!(
        s.closed_by_server, f.detected,
        "only faulty ones were closed: {s:?}"
    );
    f.injected
}

/// Silent connections (no answers, no data) are closed by the server with `End Connection`,
/// never sooner than the heartbeat rule allows: their last sign of life was when they
/// connected, at most 0.5 s before the fault, so every close comes at least 2.5 s after it.
#[test]
fn silent_connections_are_found_and_no_healthy_one_is_closed() {
    let (s, stats) = run("silent=50%", Duration::ZERO);
    let injected = all_found(&s, "silent");
    assert!(
        s.faults["silent"].detection.p50_us >= 2_490_000,
        "{:?}",
        s.faults
    );
    assert_eq!(stats.closed_dead, injected, "{stats:?}");
    assert!(
        s.heartbeats_answered >= (CONNECTIONS as u64 - injected),
        "{s:?}"
    );
}

/// A connection that stops reading cannot see a heartbeat, so it answers none; the server
/// closes it as dead, which the client sees as its read side closing, without reading.
#[test]
fn connections_that_stop_reading_are_found() {
    let (s, stats) = run("noread=50%", Duration::ZERO);
    let injected = all_found(&s, "noread");
    assert_eq!(stats.closed_dead, injected, "{stats:?}");
}

/// A half-closed connection (its sending side shut down) is closed by the server once its
/// last echo is out; the data lines of the healthy ones are all echoed.
#[test]
fn half_closed_connections_are_found() {
    let (s, stats) = run("halfclose=50%", Duration::from_millis(200));
    let injected = all_found(&s, "halfclose");
    assert!(stats.closed_by_peer >= injected, "{stats:?}");
    assert_eq!(stats.closed_dead, 0, "{stats:?}");
    assert_eq!(s.lost(), 0, "{s:?}");
}

/// A reset connection is gone at once; the client cannot watch the server notice, so it
/// reports the count, and the server saw each one end.
#[test]
fn reset_connections_are_counted_and_the_server_sees_them_end() {
    let (s, stats) = run("reset=50%", Duration::ZERO);
    assert_eq!(s.false_deaths, 0, "{s:?}");
    let f = &s.faults["reset"];
    assert!(f.injected >= 1, "{f:?}");
    assert_eq!((f.detected, f.undetected), (0, 0), "{f:?}");
    assert_eq!(s.closed_by_server, 0, "{s:?}");
    // A peer reset before it sent a byte is a probe to the server (issue 22): still seen.
    assert!(
        stats.closed_on_error + stats.closed_by_peer + stats.closed_probe >= f.injected,
        "{stats:?}"
    );
    assert_eq!(stats.closed_dead, 0, "{stats:?}");
}

/// The binary with every kind at once: its JSON has a row per kind and no false death, and
/// the same seed gives the same faults.
#[test]
fn the_binary_reports_every_fault_kind_in_json_and_repeats_with_a_seed() {
    let server = ServerProcess::start(&["--interval", "1s", "--count", "2", "--idle", "1s"]);
    let port = server.port.to_string();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = || -> Value {
        let output = Command::new(env!("CARGO_BIN_EXE_heartbeat-client"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--no-prompt",
                "--json",
            ])
            .args(["--connections", "40", "--interval", "0", "--duration", "6s"])
            .args(["--faults", "silent=20%,halfclose=20%,noread=20%,reset=20%"])
            .args([
                "--fault-window",
                "300ms",
                "--seed",
                "5",
                "--server-interval",
                "1s",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("client runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        serde_json::from_str(stdout.trim()).expect("one JSON line")
    };
    let (first, second) = (run(), run());
    assert_eq!(first["false_deaths"], 0, "{first}");
    for kind in ["silent", "halfclose", "noread", "reset"] {
        let injected = &first["faults"][kind]["injected"];
        assert!(injected.as_u64().is_some_and(|n| n >= 1), "{kind}: {first}");
        assert_eq!(
            injected, &second["faults"][kind]["injected"],
            "{kind}: seeded"
        );
        if kind != "reset" {
            assert_eq!(
                first["faults"][kind]["detected"], *injected,
                "{kind}: {first}"
            );
        }
    }
}
