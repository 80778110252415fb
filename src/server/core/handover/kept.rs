//! The peers an old process keeps after a live upgrade (TLS sessions), on a fake clock: served
//! as before until the deadline, nothing at T−1, then `End Connection` spread (over
//! `--drain`, or 1 ms per peer without it), done once they have gone; a stop is a stop as
//! ever; a peer handed over is forgotten without a word.

use std::time::{Duration, Instant};

use super::super::{Action, Admission, Arrival, Event, ServerCore, Settings, Stage};
use super::tests::{addr, settings_with};
use super::KEPT_SPREAD_PER_PEER;
use crate::cores::liveness::Timing;

const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);
const KEEP: Duration = Duration::from_secs(60);

/// Peers that answer nothing get their first heartbeat only after an hour: what happens
/// within the test is the upgrade's doing alone.
fn settings(drain: Duration) -> Settings {
    settings_with(
        Timing {
            idle: Duration::from_secs(3600),
            interval: Duration::from_secs(1),
            count: 3,
        },
        drain,
    )
}

/// What the loop was asked to do: (time since t0, key, line written or `<closed>`, ...).
type Trace = Vec<(Duration, usize, String)>;

fn carry_out(core: &mut ServerCore, now: Instant, t0: Instant, trace: &mut Trace) {
    while let Some(action) = core.poll_action() {
        match action {
            Action::Write(key) => {
                let bytes = core.output(key).to_vec();
                trace.push((now - t0, key, String::from_utf8_lossy(&bytes).into()));
                core.handle_written(now, key, Ok(bytes.len()));
            }
            Action::Close(key) => trace.push((now - t0, key, "<closed>".into())),
            Action::Report(key, Event::Closed(reason)) => {
                trace.push((now - t0, key, format!("<report: closed {reason:?}>")))
            }
            _ => {}
        }
    }
}

/// Fires every timer due up to `end`, jumping from deadline to deadline.
fn run_until(core: &mut ServerCore, t0: Instant, end: Instant, trace: &mut Trace) {
    while let Some(at) = core.poll_timeout().filter(|at| *at <= end) {
        core.handle_wakeup(at, None);
        while core.handle_timeout(at) {
            carry_out(core, at, t0, trace);
        }
        carry_out(core, at, t0, trace);
    }
}

/// A core with `n` peers accepted at `t0`, upgraded at `t0` (the listener went) keeping them.
fn kept(t0: Instant, n: usize, drain: Duration) -> ServerCore {
    let mut core = ServerCore::new(t0, settings(drain));
    for key in 0..n {
        assert!(matches!(core.handle_accept(t0, addr(key)), Admission::Admitted(k) if k == key));
    }
    carry_out(&mut core, t0, t0, &mut Trace::new());
    core.handle_upgraded(t0, KEEP);
    core
}

fn told_end(trace: &Trace) -> Vec<(Duration, usize)> {
    trace
        .iter()
        .filter(|(_, _, line)| line == "End Connection\n")
        .map(|(at, key, _)| (*at, *key))
        .collect()
}

#[test]
fn kept_peers_are_served_until_the_deadline_then_told_end_connection_1_ms_apart() {
    let t0 = Instant::now();
    let mut core = kept(t0, 4, Duration::ZERO);
    assert!(!core.is_accepting(), "the listener is the new process's");
    assert!(!core.is_stopping() && !core.is_done());
    assert_eq!(core.poll_timeout(), Some(t0 + KEEP));
    let mut trace = Trace::new();
    // Served as before meanwhile.
    core.handle_read(t0 + 10 * MS, 2, b"still here\n");
    carry_out(&mut core, t0 + 10 * MS, t0, &mut trace);
    assert_eq!(trace, [(10 * MS, 2, "Echoing...still here\n".to_string())]);
    trace.clear();
    run_until(&mut core, t0, t0 + KEEP - US, &mut trace);
    assert!(trace.is_empty(), "nothing before the deadline: {trace:?}");
    run_until(&mut core, t0, t0 + KEEP + 10 * MS, &mut trace);
    assert_eq!(
        told_end(&trace),
        [
            (KEEP, 0),
            (KEEP + MS, 1),
            (KEEP + 2 * MS, 2),
            (KEEP + 3 * MS, 3)
        ],
        "spread over {KEPT_SPREAD_PER_PEER:?} per peer"
    );
    assert!(core.is_stopping() && !core.is_stop_asked());
    // Each has the stop's second to take it (its peer closes nothing here), then is closed.
    run_until(
        &mut core,
        t0,
        t0 + KEEP + Duration::from_secs(2),
        &mut trace,
    );
    assert_eq!(core.open(), 0);
    assert!(core.is_done());
    assert_eq!(core.stats().closed_at_shutdown, 4);
}

#[test]
fn with_drain_the_kept_peers_are_told_over_it() {
    let t0 = Instant::now();
    let mut core = kept(t0, 2, Duration::from_secs(10));
    let mut trace = Trace::new();
    run_until(
        &mut core,
        t0,
        t0 + KEEP + Duration::from_secs(5) - US,
        &mut trace,
    );
    assert_eq!(told_end(&trace), [(KEEP, 0)]);
    run_until(
        &mut core,
        t0,
        t0 + KEEP + Duration::from_secs(5),
        &mut trace,
    );
    assert_eq!(
        told_end(&trace),
        [(KEEP, 0), (KEEP + Duration::from_secs(5), 1)]
    );
}

#[test]
fn when_every_kept_peer_has_left_the_core_is_done_before_the_deadline() {
    let t0 = Instant::now();
    let mut core = kept(t0, 2, Duration::ZERO);
    let mut trace = Trace::new();
    for key in 0..2 {
        // A peer that spoke: one that leaves without a byte is counted as a probe.
        core.handle_read(t0 + 5 * MS, key, b"bye\n");
        core.handle_eof(t0 + 5 * MS, key);
        carry_out(&mut core, t0 + 5 * MS, t0, &mut trace);
        assert_eq!(core.is_done(), key == 1);
    }
    assert_eq!(core.stats().closed_by_peer, 2);
    assert!(told_end(&trace).is_empty());
    assert!(trace
        .iter()
        .any(|(_, key, line)| *key == 1 && line == "<closed>"));
}

#[test]
fn a_handshake_under_way_is_awaited_and_its_peer_kept_too() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(t0, settings(Duration::ZERO));
    let Arrival::Waiting(wk) = core.handle_arrival(t0, Stage::TlsHandshake) else {
        panic!("room for a handshake");
    };
    core.handle_upgraded(t0, KEEP);
    assert!(
        !core.is_done(),
        "its peer was accepted here: it is served here"
    );
    core.handle_wait_over(Stage::TlsHandshake, wk, false);
    assert!(matches!(
        core.handle_accept(t0 + MS, addr(0)),
        Admission::Admitted(0)
    ));
    assert!(!core.is_done());
    let mut trace = Trace::new();
    run_until(
        &mut core,
        t0,
        t0 + KEEP + Duration::from_secs(2),
        &mut trace,
    );
    assert_eq!(told_end(&trace), [(KEEP, 0)]);
    assert!(core.is_done());
}

#[test]
fn a_stop_while_peers_are_kept_is_a_stop_as_ever_and_a_second_ends_its_drain() {
    let t0 = Instant::now();
    let mut core = kept(t0, 3, Duration::from_secs(30));
    let mut trace = Trace::new();
    assert!(!core.is_stop_asked());
    core.handle_stop(t0 + MS);
    carry_out(&mut core, t0 + MS, t0, &mut trace);
    assert!(core.is_stop_asked());
    assert_eq!(
        core.kept_until(),
        None,
        "the deadline gives way to the stop"
    );
    assert_eq!(
        told_end(&trace),
        [(MS, 0)],
        "spread over --drain, as a stop is"
    );
    core.handle_stop(t0 + 2 * MS);
    carry_out(&mut core, t0 + 2 * MS, t0, &mut trace);
    assert_eq!(told_end(&trace), [(MS, 0), (2 * MS, 1), (2 * MS, 2)]);
}

#[test]
fn a_stop_during_the_kept_peers_drain_begins_a_stop_of_its_own() {
    let t0 = Instant::now();
    let mut core = kept(t0, 3, Duration::from_secs(30));
    let mut trace = Trace::new();
    run_until(&mut core, t0, t0 + KEEP, &mut trace);
    assert_eq!(told_end(&trace), [(KEEP, 0)]);
    assert!(core.is_stopping() && !core.is_stop_asked());
    // A first SIGTERM now does not end the drain at once (a second would): it stops as a
    // stop does, spread over --drain from now.
    let at = t0 + KEEP + MS;
    core.handle_stop(at);
    carry_out(&mut core, at, t0, &mut trace);
    assert!(core.is_stop_asked());
    assert_eq!(told_end(&trace), [(KEEP, 0)], "peer 0 is not told twice");
    run_until(&mut core, t0, at + Duration::from_secs(10) - US, &mut trace);
    assert_eq!(told_end(&trace), [(KEEP, 0)]);
    run_until(&mut core, t0, at + Duration::from_secs(10), &mut trace);
    assert_eq!(
        told_end(&trace),
        [(KEEP, 0), (KEEP + MS + Duration::from_secs(10), 1)]
    );
}

#[test]
fn a_peer_handed_over_is_forgotten_without_a_word_or_a_close_counted() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(t0, settings(Duration::ZERO));
    for key in 0..2 {
        core.handle_accept(t0, addr(key));
    }
    carry_out(&mut core, t0, t0, &mut Trace::new());
    core.handle_read(t0 + MS, 0, b"half a li");
    core.forget_peer(t0 + 2 * MS, 0);
    let mut trace = Trace::new();
    carry_out(&mut core, t0 + 2 * MS, t0, &mut trace);
    assert_eq!(trace, [(2 * MS, 0, "<closed>".to_string())]);
    assert_eq!((core.open(), core.stats().open), (1, 1));
    assert_eq!(core.timers_armed(), 1);
    assert_eq!(core.buffered(), 0, "its partial line is no longer counted");
    let stats = core.stats();
    let closes = stats.closed_by_peer + stats.closed_on_error + stats.closed_at_shutdown;
    assert_eq!(closes + stats.closed_probe + stats.closed_dead, 0);
}
