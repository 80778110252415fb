//! The upgrade's promise about timing, on a fake clock: a core exported mid-timeline and
//! imported into a fresh core after a pause has the same future, every action shifted by
//! exactly the pause (nothing earlier, nothing lost, nothing twice).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::{Action, Admission, ServerCore, Settings};
use crate::cores::allow::AllowList;
use crate::cores::liveness::Timing;

const MS: Duration = Duration::from_millis(1);

fn settings() -> Settings {
    settings_with(
        Timing {
            idle: Duration::from_millis(400),
            interval: Duration::from_millis(100),
            count: 3,
        },
        Duration::ZERO,
    )
}

/// The settings of every handover test (here and in `kept`): a 1 µs tick and limits no test
/// reaches; only the liveness timing and `--drain` differ between them.
pub(super) fn settings_with(timing: Timing, drain: Duration) -> Settings {
    Settings {
        timing,
        tick: Duration::from_micros(1),
        max_line: 64 * 1024,
        max_write_buffer: 1 << 20,
        max_buffered: 256 << 20,
        max_connections: 100,
        allow: AllowList::default(),
        drain,
        jitter_percent: 0,
        jitter_seed: 1,
        sessions: false,
        heartbeat_reports: true,
        max_header_waits: 4,
    }
}

/// Peer `n`'s address.
pub(super) fn addr(n: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + n as u16))
}

/// One line a peer received: (time since the trace began, key, the bytes).
type Trace = Vec<(Duration, usize, String)>;

/// Carries out every action at `now`; every write is taken whole by the "kernel", except
/// for `stuck` keys, which take nothing (a slow reader).
fn carry_out(core: &mut ServerCore, now: Instant, t0: Instant, stuck: &[usize], trace: &mut Trace) {
    while let Some(action) = core.poll_action() {
        match action {
            Action::Write(key) if stuck.contains(&key) => core.handle_written(now, key, Ok(0)),
            Action::Write(key) => {
                let bytes = core.output(key).to_vec();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                trace.push((now - t0, key, text));
                core.handle_written(now, key, Ok(bytes.len()));
            }
            Action::Close(key) => trace.push((now - t0, key, "<closed>".into())),
            _ => {}
        }
    }
}

/// The timeline up to the export: four peers, each in another state at `t0 + 450 ms`.
/// 0: silent (heartbeat 1 went out at 400 ms); 1: a partial line; 2: spoke at 300 ms; 3: a
/// slow reader holding unsent output.
fn before_export(t0: Instant) -> ServerCore {
    let mut core = ServerCore::new(t0, settings());
    let mut trace = Trace::new();
    for n in 0..4 {
        assert!(matches!(core.handle_accept(t0, addr(n)), Admission::Admitted(k) if k == n));
    }
    core.handle_read(t0 + 10 * MS, 1, b"half a li");
    core.handle_read(t0 + 20 * MS, 3, b"never read\n");
    carry_out(&mut core, t0 + 20 * MS, t0, &[3], &mut trace);
    core.handle_read(t0 + 300 * MS, 2, b"hello\n");
    carry_out(&mut core, t0 + 300 * MS, t0, &[3], &mut trace);
    run_until(&mut core, t0, t0 + 450 * MS, &[3], &mut trace);
    assert!(trace
        .iter()
        .any(|(at, key, line)| *at == 400 * MS && *key == 0 && line == "heartbeat\n"));
    core
}

/// Fires every timer due up to `end`, jumping from deadline to deadline.
fn run_until(core: &mut ServerCore, t0: Instant, end: Instant, stuck: &[usize], trace: &mut Trace) {
    while let Some(at) = core.poll_timeout().filter(|at| *at <= end) {
        core.handle_wakeup(at, None);
        while core.handle_timeout(at) {
            carry_out(core, at, t0, stuck, trace);
        }
        carry_out(core, at, t0, stuck, trace);
    }
}

/// What follows `from` for every peer, until all are closed: the slow reader now reads,
/// peer 1 ends its line at `from + 5 ms`.
fn future(core: &mut ServerCore, from: Instant) -> Trace {
    let mut trace = Trace::new();
    for key in 0..4 {
        core.handle_writable(from, key);
    }
    carry_out(core, from, from, &[], &mut trace);
    core.handle_read(from + 5 * MS, 1, b"ne\n");
    carry_out(core, from + 5 * MS, from, &[], &mut trace);
    run_until(core, from, from + Duration::from_secs(10), &[], &mut trace);
    assert_eq!(core.open(), 0, "everyone ends, silent as they are");
    trace
}

#[test]
fn an_imported_core_has_the_same_future_shifted_by_the_pause() {
    let t0 = Instant::now();
    let exported_at = t0 + 450 * MS;
    let reference = future(&mut before_export(t0), exported_at);

    let old = before_export(t0);
    let states: Vec<_> = old
        .keys()
        .map(|key| old.export_peer(exported_at, key).expect("an open peer"))
        .collect();
    assert_eq!(states[1].partial, b"half a li");
    assert_eq!(states[3].unsent, b"Echoing...never read\nheartbeat\n");
    assert_eq!(states[0].heartbeats_sent, 1);
    let pause = Duration::from_millis(70);
    let imported_at = exported_at + pause;
    let mut new = ServerCore::new(imported_at, settings());
    new.carry_on(old.stats());
    for (n, state) in states.iter().enumerate() {
        assert_eq!(new.import_peer(imported_at, state, addr(n)), n);
    }
    assert_eq!(new.stats().open, 4, "the counters carry on");
    // The import asks to write the unsent output; the slow reader still takes nothing.
    let mut none = Trace::new();
    carry_out(&mut new, imported_at, imported_at, &[3], &mut none);
    assert!(none.is_empty());
    let upgraded = future(&mut new, imported_at);

    // Relative to their own start the two futures are the same: every deadline moved by the
    // pause, the partial line came out whole once, the unsent output was sent once.
    assert_eq!(upgraded, reference);
    assert!(upgraded
        .iter()
        .any(|(_, key, line)| *key == 1 && line == "Echoing...half a line\n"));
    let unsent = "Echoing...never read\nheartbeat\n";
    assert!(upgraded
        .iter()
        .any(|(_, key, line)| *key == 3 && line == unsent));
    // Peer 0 had heartbeat 1 at 400 ms; heartbeat 2 is due at 500 ms, 50 ms after the
    // export: after the pause it comes 50 ms after the import, not at once.
    let second = upgraded
        .iter()
        .find(|(_, key, line)| *key == 0 && line == "heartbeat\n");
    assert_eq!(second.map(|(at, ..)| *at), Some(50 * MS));
}

/// When `state`, imported at `at` into a core with `idle`, gets its first heartbeat.
fn first_heartbeat(
    state: &crate::cores::upgrade::wire::PeerState,
    at: Instant,
    idle: Duration,
) -> Duration {
    let mut settings = settings();
    settings.timing.idle = idle;
    let mut new = ServerCore::new(at, settings);
    new.import_peer(at, state, addr(0));
    let mut trace = Trace::new();
    run_until(&mut new, at, at + Duration::from_secs(10), &[], &mut trace);
    let sent = trace.iter().find(|(_, _, line)| line == "heartbeat\n");
    sent.map(|(when, ..)| *when).expect("a heartbeat")
}

#[test]
fn a_longer_idle_after_the_upgrade_applies_and_a_shorter_one_waits_for_the_running_timer() {
    let t0 = Instant::now();
    let mut old = ServerCore::new(t0, settings());
    old.handle_accept(t0, addr(0));
    let state = old.export_peer(t0 + 100 * MS, 0).unwrap();
    assert_eq!(state.timer_remaining, 300 * MS);
    let at = t0 + 200 * MS;
    assert_eq!(
        first_heartbeat(&state, at, 300 * MS),
        300 * MS,
        "never earlier than it would have been"
    );
    assert_eq!(
        first_heartbeat(&state, at, Duration::from_secs(1)),
        900 * MS,
        "the new idle time, from the last byte"
    );
}

#[test]
fn a_peer_in_the_middle_of_its_ending_finishes_it_in_the_new_process_once() {
    let t0 = Instant::now();
    let mut old = ServerCore::new(t0, settings());
    old.handle_accept(t0, addr(0));
    old.handle_accept(t0, addr(1));
    let mut trace = Trace::new();
    // Silent: heartbeats at 400, 500, 600 ms, End Connection at 700 ms, then the linger.
    let exported_at = t0 + Duration::from_secs(1);
    run_until(&mut old, t0, exported_at, &[], &mut trace);
    let ends = |trace: &Trace, key| {
        let said = |line: &String| line == "End Connection\n";
        trace
            .iter()
            .filter(|(_, k, line)| *k == key && said(line))
            .count()
    };
    assert_eq!(ends(&trace, 0), 1);
    let states: Vec<_> = (0..2)
        .map(|key| old.export_peer(exported_at, key).unwrap())
        .collect();
    assert!(matches!(
        states[0].stage,
        crate::cores::upgrade::wire::Stage::Ending { .. }
    ));
    let imported_at = exported_at + Duration::from_millis(70);
    let mut new = ServerCore::new(imported_at, settings());
    for (n, state) in states.iter().enumerate() {
        new.import_peer(imported_at, state, addr(n));
    }
    let mut after = Trace::new();
    carry_out(&mut new, imported_at, imported_at, &[], &mut after);
    // Peer 1 closes its side now: its ending completes at once; peer 0 stays silent and is
    // closed when its linger (2 s from 700 ms) runs out, shifted by the pause.
    new.handle_eof(imported_at, 1);
    carry_out(&mut new, imported_at, imported_at, &[], &mut after);
    run_until(
        &mut new,
        imported_at,
        imported_at + Duration::from_secs(10),
        &[],
        &mut after,
    );
    assert_eq!(
        ends(&after, 0) + ends(&after, 1),
        0,
        "End Connection is not said twice"
    );
    let closed = |key| {
        after
            .iter()
            .find(|(_, k, line)| *k == key && line == "<closed>")
    };
    assert_eq!(closed(1).map(|(at, ..)| *at), Some(Duration::ZERO));
    assert_eq!(
        closed(0).map(|(at, ..)| *at),
        Some(Duration::from_millis(1_700))
    );
    assert_eq!(new.open(), 0);
}
