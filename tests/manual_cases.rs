//! The four test cases of the original program's manual, end to end over real sockets on
//! 127.0.0.1, with millisecond timings: heartbeat every 100 ms, 3 times, after 400 ms idle.

mod common;

use std::net::Shutdown;
use std::time::{Duration, Instant};

use common::{start_fast_server, Peer, MS};

/// Case 1: a peer that sends data more often than the idle timeout has every line echoed
/// and never sees a heartbeat.
#[test]
fn case_1_normal_data_exchange_is_echoed_without_heartbeats() {
    let server = start_fast_server();
    let mut peer = Peer::connect(server.addr);
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(2) {
        peer.send(b"Hello, there\n");
        sent += 1;
        assert_eq!(peer.line().as_deref(), Some("Echoing...Hello, there"));
        std::thread::sleep(100 * MS);
    }
    assert!(sent >= 15, "sent {sent} lines in 2 s");
    assert_eq!(peer.line_within(50 * MS), None, "nothing but echoes");
    drop(peer);
    let stats = server.stop();
    assert_eq!(stats.lines_echoed, sent);
    assert_eq!(stats.heartbeats_sent, 0);
}

/// Case 2: a quiet peer that answers every heartbeat is kept: heartbeats keep coming, the
/// connection stays open for 3 s, and it still echoes at the end.
#[test]
fn case_2_quiet_peer_that_answers_stays_connected() {
    let server = start_fast_server();
    let mut peer = Peer::connect(server.addr);
    let start = Instant::now();
    let mut heartbeats = 0;
    while start.elapsed() < Duration::from_secs(3) {
        match peer.line_within(Duration::from_secs(1)).as_deref() {
            Some("heartbeat") => {
                heartbeats += 1;
                peer.send(b"Echoing...heartbeat\n");
            }
            None => {}
            Some(other) => panic!("unexpected line {other:?} after {:?}", start.elapsed()),
        }
    }
    // Each answer restarts the 400 ms idle wait: about one heartbeat every 400 ms.
    assert!(
        (4..=8).contains(&heartbeats),
        "{heartbeats} heartbeats in 3 s"
    );
    peer.send(b"still here\n");
    assert_eq!(peer.line().as_deref(), Some("Echoing...still here"));
    drop(peer);
    let stats = server.stop();
    assert_eq!(stats.closed_dead, 0);
    assert_eq!(stats.heartbeats_answered, heartbeats);
    assert_eq!(
        stats.lines_echoed, 1,
        "the heartbeat answers are not echoed"
    );
}

/// Case 3: a quiet peer that never answers gets exactly 3 heartbeats, then
/// `End Connection`, then end of stream, at idle + 3 × interval after its last data.
#[test]
fn case_3_quiet_peer_that_does_not_answer_is_closed_on_time() {
    let server = start_fast_server();
    let mut peer = Peer::connect(server.addr);
    peer.send(b"last words\n");
    let last_data = Instant::now();
    assert_eq!(peer.line().as_deref(), Some("Echoing...last words"));
    let mut times = Vec::new();
    for expected in ["heartbeat", "heartbeat", "heartbeat", "End Connection"] {
        assert_eq!(peer.line().as_deref(), Some(expected));
        times.push(last_data.elapsed());
    }
    assert_eq!(
        peer.line(),
        None,
        "end of stream right after End Connection"
    );
    // Due at 400, 500, 600 and 700 ms; never early, and late by less than the tolerance.
    let tolerance = 150 * MS;
    for (due_ms, got) in [400u64, 500, 600, 700].into_iter().zip(&times) {
        let due = Duration::from_millis(due_ms);
        assert!(*got + 5 * MS >= due, "at {got:?}, due {due:?}: early");
        assert!(*got <= due + tolerance, "at {got:?}, due {due:?}: late");
    }
    drop(peer);
    let stats = server.stop();
    assert_eq!(stats.heartbeats_sent, 3);
    assert_eq!(stats.closed_dead, 1);
    assert_eq!(stats.close_lateness.percentiles().count, 1);
    // The loop slept until each of its four timers (three heartbeats, End Connection).
    assert!(stats.wake_delay.percentiles().count >= 4, "{stats:?}");
}

/// Case 4: when the peer closes, the server closes its side without any heartbeat.
#[test]
fn case_4_peer_that_closes_is_closed_without_heartbeat() {
    let server = start_fast_server();
    let mut peer = Peer::connect(server.addr);
    peer.send(b"Hello, there\n");
    assert_eq!(peer.line().as_deref(), Some("Echoing...Hello, there"));
    peer.writer.shutdown(Shutdown::Write).unwrap();
    let start = Instant::now();
    assert_eq!(peer.read_to_end(), b"", "no heartbeat, no End Connection");
    assert!(start.elapsed() < 300 * MS, "closed at once, not after idle");
    let stats = server.stop();
    assert_eq!(stats.closed_by_peer, 1);
    assert_eq!(stats.heartbeats_sent, 0);
    assert_eq!(stats.open, 0);
}
