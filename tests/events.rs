//! The event log (`--events`) through the real server binary: the manual's four cases are
//! played by four peers at once, and every line of the file parses as JSON and tells each
//! peer's story in order.

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::{Peer, ServerProcess};
use serde_json::Value;

/// Heartbeat after 2 s of silence, one more a second later, then `End Connection`.
const TIMING: [&str; 6] = ["--interval", "1s", "--count", "2", "--idle", "2s"];

fn events_of(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("the event log");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A peer's address as the server sees it (its local address here).
fn addr_of(peer: &Peer) -> String {
    peer.writer.local_addr().expect("local address").to_string()
}

/// The events of the peer at `addr`, as `event` names, in order.
fn story(events: &[Value], addr: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["peer"] == addr)
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn the_manual_cases_tell_their_story_in_the_event_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.jsonl");
    let path_arg = path.to_str().expect("utf-8 path");
    let mut args = TIMING.to_vec();
    args.extend(["--log-level", "warn", "--events", path_arg]);
    let mut server = ServerProcess::start(&args);
    // Case 1: data, echoed; case 2: answers its heartbeats; case 3: silent; case 4: closes.
    let mut talker = Peer::connect(server.addr());
    let talker_at = addr_of(&talker);
    let mut answerer = Peer::connect(server.addr());
    let mut silent = Peer::connect(server.addr());
    let mut closer = Peer::connect(server.addr());
    let [answerer_at, silent_at, closer_at] = [&answerer, &silent, &closer].map(addr_of);
    talker.send(b"Hello, there\n");
    assert_eq!(talker.line().as_deref(), Some("Echoing...Hello, there"));
    drop(talker);
    closer.send(b"bye\n");
    assert_eq!(closer.line().as_deref(), Some("Echoing...bye"));
    closer.writer.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(closer.line(), None, "closed by the server in turn");
    for _ in 0..2 {
        answerer
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        assert_eq!(answerer.line().as_deref(), Some("heartbeat"));
        answerer.send(b"Echoing...heartbeat\n");
    }
    silent
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    for expected in ["heartbeat", "heartbeat", "End Connection"] {
        assert_eq!(silent.line().as_deref(), Some(expected));
    }
    assert_eq!(silent.line(), None);
    // The closes must reach the log before the stop: wait for their lines.
    assert!(common::eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.matches("\"close\"").count() >= 3)
    }));
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(30)).success());

    let events = events_of(&path);
    assert!(events
        .iter()
        .all(|e| e["ts"].as_f64().is_some_and(|ts| ts > 1.6e9)));
    // Sorted by time as written.
    let times: Vec<f64> = events.iter().filter_map(|e| e["ts"].as_f64()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(story(&events, &talker_at), ["connect", "close"]);
    let close_of = |addr: &str| {
        events
            .iter()
            .find(|e| e["event"] == "close" && e["peer"] == addr)
            .unwrap_or_else(|| panic!("no close line for {addr}"))
            .clone()
    };
    assert_eq!(close_of(&talker_at)["reason"], "peer_closed");
    assert_eq!(close_of(&closer_at)["reason"], "peer_closed");
    assert_eq!(close_of(&closer_at)["bytes_in"], 4, "\"bye\\n\"");
    assert_eq!(
        close_of(&closer_at)["bytes_out"],
        14,
        "\"Echoing...bye\\n\""
    );
    assert_eq!(story(&events, &closer_at), ["connect", "close"]);
    assert_eq!(
        story(&events, &silent_at),
        [
            "connect",
            "heartbeat_sent",
            "heartbeat_sent",
            "end_connection",
            "close"
        ]
    );
    assert_eq!(close_of(&silent_at)["reason"], "dead");
    let dead = events
        .iter()
        .find(|e| e["event"] == "end_connection")
        .expect("an end_connection line");
    assert!(
        dead["silent_ms"].as_f64().is_some_and(|ms| ms >= 4000.0),
        "idle 2 s + 2 intervals of 1 s: {dead}"
    );
    let answers = story(&events, &answerer_at);
    assert_eq!(
        answers[..5],
        [
            "connect",
            "heartbeat_sent",
            "heartbeat_answered",
            "heartbeat_sent",
            "heartbeat_answered"
        ]
    );
    assert_eq!(close_of(&answerer_at)["reason"], "shutdown");
}
