//! The server core driven by a fake clock and fake peers: no sockets, no sleeps. Time jumps
//! to the core's next deadline (or a peer's next move), and each test asserts the trace of
//! what every peer received, in microseconds of test time, at T−1 µs and at T.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat::cores::allow::AllowList;
use heartbeat::cores::liveness::Timing;
use heartbeat::cores::tls::Refusal as TlsRefusal;
use heartbeat::ops::metrics::SCRAPE_DEADLINE;
use heartbeat::server::core::waiting::{
    BUSY_LINGER, HANDSHAKE_CAP, HANDSHAKE_DEADLINE, HEADER_DEADLINE, SCRAPE_FIRST_REQUEST,
    SCRAPE_SLOTS,
};
use heartbeat::server::core::{
    Action, Admission, Arrival, Event, Reason, Refusal, ServerCore, Settings, Stage, Timer,
    WaitEnd, WaitKey, ACCEPT_BACKOFF, DEAD_LINGER, STOP_LINGER, TIMERS_PER_BATCH,
};

const US: Duration = Duration::from_micros(1);
const MS: Duration = Duration::from_millis(1);

/// The manual's settings scaled down: heartbeat every 100 ms, 3 times, after 400 ms idle.
const FAST: Timing = Timing {
    idle: Duration::from_millis(400),
    interval: Duration::from_millis(100),
    count: 3,
};

/// The stall case of issue 9: heartbeat every 500 ms, 3 times, after 2 s idle.
const STALL: Timing = Timing {
    idle: Duration::from_secs(2),
    interval: Duration::from_millis(500),
    count: 3,
};

fn settings(timing: Timing) -> Settings {
    Settings {
        timing,
        tick: US,
        max_line: 64 * 1024,
        max_write_buffer: 1 << 20,
        max_buffered: 256 << 20,
        max_connections: 100_000,
        allow: AllowList::default(),
        drain: Duration::ZERO,
        jitter_percent: 0,
        jitter_seed: 1,
        sessions: true,
        heartbeat_reports: true,
        max_header_waits: 4,
    }
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], 40_000))
}

/// What a fake peer does and has seen.
#[derive(Default)]
struct FakePeer {
    /// Bytes the server wrote that reached this peer, and the lines among them with times.
    received: Vec<u8>,
    lines: Vec<(Duration, String)>,
    /// Bytes the kernel will still take for this peer: `usize::MAX` while it reads.
    room: usize,
    /// Bytes the peer sent that the server has not read yet (they wait in the kernel).
    unread: Vec<u8>,
    /// Answer each `heartbeat` this long after it arrives; `None`: stay silent.
    answer_after: Option<Duration>,
    /// The server shut its sending side (we saw its FIN), and when.
    fin_at: Option<Duration>,
    closed_at: Option<Duration>,
}

/// One server core, its fake clock, and its fake peers by key.
struct Harness {
    core: ServerCore,
    t0: Instant,
    now: Instant,
    peers: BTreeMap<usize, FakePeer>,
    /// Bytes peers will send later: (when, key, bytes).
    scheduled: Vec<(Instant, usize, Vec<u8>)>,
    events: Vec<(Duration, usize, Event)>,
    /// Peers the core asked to read again.
    to_read: Vec<usize>,
    /// Times the core asked for freed memory to go back to the OS.
    trims: usize,
    /// Waits the core ended: when, which, why.
    ended: Vec<(Duration, Stage, WaitKey, WaitEnd)>,
}

impl Harness {
    fn new(settings: Settings) -> Harness {
        let t0 = Instant::now();
        Harness {
            core: ServerCore::new(t0, settings),
            t0,
            now: t0,
            peers: BTreeMap::new(),
            scheduled: Vec::new(),
            events: Vec::new(),
            to_read: Vec::new(),
            trims: 0,
            ended: Vec::new(),
        }
    }

    fn at(&self, since_t0: Duration) -> Instant {
        self.t0 + since_t0
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn connect(&mut self) -> usize {
        self.try_connect(addr(1)).expect("admitted")
    }

    fn try_connect(&mut self, from: SocketAddr) -> Result<usize, Refusal> {
        match self.core.handle_accept(self.now, from) {
            Admission::Admitted(key) => {
                self.peers.insert(
                    key,
                    FakePeer {
                        room: usize::MAX,
                        ..FakePeer::default()
                    },
                );
                self.drain();
                Ok(key)
            }
            Admission::Refused(refusal) => Err(refusal),
        }
    }

    /// A peer that answers every heartbeat `after` it arrives.
    fn connect_answering(&mut self, after: Duration) -> usize {
        let key = self.connect();
        self.peer(key).answer_after = Some(after);
        key
    }

    fn peer(&mut self, key: usize) -> &mut FakePeer {
        self.peers.get_mut(&key).expect("a peer of this harness")
    }

    /// The peer sends `bytes` now; the server reads them as far as it will.
    fn send(&mut self, key: usize, bytes: &[u8]) {
        self.peer(key).unread.extend_from_slice(bytes);
        self.deliver(key);
    }

    /// The server reads what `key` sent, in pieces of at most its read budget, as the loop
    /// does, until the budget is 0 (reading paused) or nothing is left.
    fn deliver(&mut self, key: usize) {
        loop {
            let budget = self.core.read_budget(key);
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            if budget == 0 || peer.unread.is_empty() {
                return;
            }
            let n = budget.min(peer.unread.len());
            let chunk: Vec<u8> = peer.unread.drain(..n).collect();
            self.core.handle_read(self.now, key, &chunk);
            self.drain();
        }
    }

    /// The peer closes its sending side (after what it sent is read).
    fn close_side(&mut self, key: usize) {
        self.deliver(key);
        self.core.handle_eof(self.now, key);
        self.drain();
    }

    /// A read from the peer fails with a reset.
    fn reset(&mut self, key: usize) {
        self.core
            .handle_error(self.now, key, ErrorKind::ConnectionReset);
        self.drain();
    }

    /// Carries out every action, as the loop does, playing the kernel and the peers.
    fn drain(&mut self) {
        while let Some(action) = self.core.poll_action() {
            let since = self.elapsed();
            match action {
                Action::Write(key) => {
                    let bytes = self.core.output(key).to_vec();
                    let peer = self.peers.get_mut(&key).expect("writes go to known peers");
                    let n = bytes.len().min(peer.room);
                    peer.room -= n;
                    let start = peer.received.len();
                    peer.received.extend_from_slice(&bytes[..n]);
                    let new_lines = complete_lines(&peer.received, start);
                    let answer = peer.answer_after;
                    for line in new_lines {
                        if line == "heartbeat" {
                            if let Some(after) = answer {
                                let when = self.now + after;
                                self.scheduled
                                    .push((when, key, b"Echoing...heartbeat\n".to_vec()));
                            }
                        }
                        peer.lines.push((since, line));
                    }
                    self.core.handle_written(self.now, key, Ok(n));
                }
                Action::Read(key) => self.to_read.push(key),
                Action::ShutdownWrite(key) => self.peer(key).fin_at = Some(since),
                Action::Close(key) => self.peer(key).closed_at = Some(since),
                Action::Report(key, event) => self.events.push((since, key, event)),
                Action::ReleaseMemory => self.trims += 1,
                Action::EndWait(stage, wk, end) => self.ended.push((since, stage, wk, end)),
            }
        }
        for key in std::mem::take(&mut self.to_read) {
            self.deliver(key);
        }
    }

    /// Moves the clock to `until`, waking at each of the core's deadlines and each
    /// scheduled send on the way, as a loop that is never late would.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_send = self.scheduled.iter().map(|(at, ..)| *at).min();
            let next_timer = self.core.poll_timeout();
            let next = match (next_send, next_timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(next) if next <= until => self.wake(next.max(self.now)),
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    fn run_for(&mut self, span: Duration) {
        self.run_until(self.now + span);
    }

    /// The loop stops (a stall) and wakes at `at`: first the bytes that arrived meanwhile
    /// are read, then the timers fire, as the real loop orders a turn.
    fn stall_until(&mut self, at: Instant) {
        self.wake(at);
    }

    fn wake(&mut self, at: Instant) {
        self.now = at;
        self.core.handle_wakeup(at, None);
        let due: Vec<(usize, Vec<u8>)> = {
            let (due, later): (Vec<_>, Vec<_>) =
                self.scheduled.drain(..).partition(|(when, ..)| *when <= at);
            self.scheduled = later;
            due.into_iter()
                .map(|(_, key, bytes)| (key, bytes))
                .collect()
        };
        for (key, bytes) in due {
            if self.peers[&key].closed_at.is_none() {
                self.send(key, &bytes);
            }
        }
        while self.core.poll_timeout().is_some_and(|t| t <= at) {
            self.core.handle_timeout(at);
            self.drain();
        }
    }

    fn stop(&mut self) {
        self.core.handle_stop(self.now);
        self.drain();
    }

    /// The lines `key` received, with their times in µs since t0.
    /// How many of the reports the core queued are `which`.
    fn reported(&self, which: impl Fn(&Event) -> bool) -> usize {
        self.events
            .iter()
            .filter(|(_, _, event)| which(event))
            .count()
    }

    fn lines(&self, key: usize) -> Vec<(u128, &str)> {
        self.peers[&key]
            .lines
            .iter()
            .map(|(t, line)| (t.as_micros(), line.as_str()))
            .collect()
    }

    fn closed_at(&self, key: usize) -> Option<u128> {
        self.peers[&key].closed_at.map(|t| t.as_micros())
    }
}

/// The complete lines in `received` that end after `from`.
fn complete_lines(received: &[u8], from: usize) -> Vec<String> {
    let line_start = received[..from]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let mut lines: Vec<String> = received[line_start..]
        .split(|b| *b == b'\n')
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    lines.pop(); // what follows the last newline is not a line yet
    lines
}

fn ms(n: u64) -> u128 {
    u128::from(n) * 1000
}

/// Manual case 1: a peer that sends more often than the idle time has every line echoed and
/// never gets a heartbeat.
#[test]
fn case_1_data_more_often_than_idle_is_echoed_without_heartbeats() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect();
    for _ in 0..20 {
        h.send(key, b"Hello, there\n");
        h.run_for(399 * MS);
    }
    let lines = h.lines(key);
    assert_eq!(lines.len(), 20);
    assert!(lines.iter().all(|(_, l)| *l == "Echoing...Hello, there"));
    assert_eq!(h.core.stats().heartbeats_sent, 0);
    assert_eq!(h.core.stats().lines_echoed, 20);
}

/// Manual case 2: a quiet peer that answers each heartbeat 1 ms later is kept for good; each
/// answer restarts the idle wait.
#[test]
fn case_2_quiet_peer_that_answers_is_kept() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect_answering(MS);
    h.run_for(Duration::from_secs(10));
    let lines = h.lines(key);
    // Heartbeat at 400 ms, answered at 401, next at 801, 1202, ...
    assert_eq!(lines[0], (ms(400), "heartbeat"));
    assert_eq!(lines[1], (ms(801), "heartbeat"));
    assert_eq!(lines[2], (ms(1202), "heartbeat"));
    assert!(lines.iter().all(|(_, l)| *l == "heartbeat"), "{lines:?}");
    assert_eq!(lines.len(), 24, "one every 401 ms for 10 s");
    assert_eq!(h.closed_at(key), None);
    let stats = h.core.stats();
    assert_eq!(stats.heartbeats_answered, 24);
    assert_eq!(stats.closed_dead, 0);
    assert_eq!(stats.lines_echoed, 0, "answers are not echoed");
}

/// Manual case 3: a silent peer: nothing at 400 ms − 1 µs, heartbeats at 400, 500, 600 ms,
/// End Connection at 700 ms and our side shut then; closed when it closes its side.
#[test]
fn case_3_silent_peer_gets_three_heartbeats_then_end_connection() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect();
    h.run_until(h.at(400 * MS - US));
    assert!(h.lines(key).is_empty(), "nothing before 400 ms");
    h.run_until(h.at(700 * MS - US));
    assert_eq!(
        h.lines(key),
        [
            (ms(400), "heartbeat"),
            (ms(500), "heartbeat"),
            (ms(600), "heartbeat")
        ]
    );
    h.run_until(h.at(700 * MS));
    assert_eq!(h.lines(key)[3], (ms(700), "End Connection"));
    assert_eq!(h.peers[&key].fin_at, Some(700 * MS));
    assert_eq!(
        h.closed_at(key),
        None,
        "waits for the peer to close its side"
    );
    h.run_for(MS);
    h.close_side(key);
    assert_eq!(h.closed_at(key), Some(ms(701)));
    let stats = h.core.stats();
    assert_eq!((stats.heartbeats_sent, stats.closed_dead), (3, 1));
    assert_eq!(stats.close_lateness.percentiles().count, 1);
    // Found dead 700 ms after its last byte (its connect): idle + 3 intervals.
    let found = stats.detection_time.percentiles();
    assert_eq!((found.count, found.max_us / 1000), (1, 700));
}

/// Manual case 4: the peer closes: its last line (no newline) is echoed, our side is shut at
/// once, the connection closed, and no heartbeat is ever sent.
#[test]
fn case_4_peer_that_closes_is_closed_at_once_without_heartbeat() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect();
    h.send(key, b"Hello, there\nbye");
    h.close_side(key);
    assert_eq!(
        h.lines(key),
        [(0, "Echoing...Hello, there"), (0, "Echoing...bye")]
    );
    assert_eq!(h.peers[&key].fin_at, Some(Duration::ZERO));
    assert_eq!(h.closed_at(key), Some(0));
    h.run_for(Duration::from_secs(5));
    assert_eq!(h.lines(key).len(), 2);
    let stats = h.core.stats();
    assert_eq!((stats.closed_by_peer, stats.heartbeats_sent), (1, 0));
    assert_eq!(h.core.open(), 0);
}

/// Issue 9's stall: the loop is stopped for 5 s while 50 peers that answer every heartbeat
/// are quiet. At the stall's end each gets heartbeat 1, answers 1 ms later, and none is
/// closed then or later.
#[test]
fn a_five_second_stall_closes_no_peer_that_answers() {
    let mut h = Harness::new(settings(STALL));
    let keys: Vec<usize> = (0..50).map(|_| h.connect_answering(MS)).collect();
    let stall_end = h.at(Duration::from_secs(5));
    h.stall_until(stall_end);
    for key in &keys {
        assert_eq!(h.lines(*key), [(ms(5000), "heartbeat")], "key {key}");
    }
    h.run_for(Duration::from_secs(30));
    for key in &keys {
        assert_eq!(h.closed_at(*key), None);
        assert!(h.lines(*key).iter().all(|(_, l)| *l == "heartbeat"));
    }
    let stats = h.core.stats();
    assert_eq!(stats.closed_dead, 0);
    assert_eq!(stats.heartbeats_answered, stats.heartbeats_sent);
    assert!(stats.heartbeats_answered >= 50 * 2, "{stats:?}");
}

/// The same stall with a peer that never answers: heartbeats at the stall's end, +interval,
/// +2·interval, End Connection at +3·interval: a full interval after each one really left.
#[test]
fn after_a_stall_a_silent_peer_gets_every_interval_in_full() {
    let mut h = Harness::new(settings(STALL));
    let key = h.connect();
    h.stall_until(h.at(Duration::from_secs(5)));
    h.run_until(h.at(Duration::from_millis(6500) - US));
    assert_eq!(
        h.lines(key),
        [
            (ms(5000), "heartbeat"),
            (ms(5500), "heartbeat"),
            (ms(6000), "heartbeat")
        ]
    );
    h.run_until(h.at(Duration::from_millis(6500)));
    assert_eq!(h.lines(key)[3], (ms(6500), "End Connection"));
}

/// A stall during which the peer spoke: its bytes are read before the timers of that turn,
/// so it gets its echo and no heartbeat.
#[test]
fn bytes_that_arrived_during_a_stall_count_before_any_timer() {
    let mut h = Harness::new(settings(STALL));
    let key = h.connect();
    h.scheduled
        .push((h.at(Duration::from_secs(1)), key, b"still here\n".to_vec()));
    h.stall_until(h.at(Duration::from_secs(5)));
    assert_eq!(h.lines(key), [(ms(5000), "Echoing...still here")]);
    h.run_until(h.at(Duration::from_secs(7) - US));
    assert_eq!(h.lines(key).len(), 1, "no heartbeat before 5 s + idle");
    h.run_until(h.at(Duration::from_secs(7)));
    assert_eq!(h.lines(key)[1], (ms(7000), "heartbeat"));
}

/// A heartbeat answered late (just before End Connection was due) still counts: the count
/// is cleared, the idle wait starts again, and the answer is counted once per round.
#[test]
fn an_answer_at_the_last_moment_clears_the_count_once() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect();
    h.run_until(h.at(700 * MS - US));
    h.send(key, b"Echoing...heartbeat\nEchoing...heartbeat\n");
    h.run_until(h.at(Duration::from_millis(1099)));
    assert_eq!(h.lines(key).len(), 3, "three heartbeats, no End Connection");
    h.run_until(h.at(Duration::from_millis(1100)));
    assert_eq!(h.lines(key)[3], (ms(1100) - 1, "heartbeat"));
    assert_eq!(h.core.stats().heartbeats_answered, 1, "one round answered");
}

/// Heartbeats are reported to the loop (for `--events` and info lines) only when asked:
/// without, a round is the same, with no report queued for it.
#[test]
fn heartbeats_are_reported_only_when_asked() {
    for wanted in [true, false] {
        let mut h = Harness::new(Settings {
            heartbeat_reports: wanted,
            ..settings(FAST)
        });
        h.connect_answering(MS);
        h.run_until(h.at(Duration::from_secs(3)));
        let stats = h.core.stats();
        assert!(stats.heartbeats_answered >= 2, "{stats:?}");
        assert_eq!(stats.heartbeats_answered, stats.heartbeats_sent);
        let sent = h.reported(|e| matches!(e, Event::HeartbeatSent { .. }));
        let answered = h.reported(|e| matches!(e, Event::HeartbeatAnswered { .. }));
        if wanted {
            assert_eq!(sent as u64, stats.heartbeats_sent);
            assert_eq!(answered as u64, stats.heartbeats_answered);
        } else {
            assert_eq!((sent, answered), (0, 0));
        }
        assert_eq!(h.reported(|e| matches!(e, Event::Connected { .. })), 1);
    }
}

/// A peer that stops reading: its output fills, reading it pauses, and bytes it keeps
/// sending stay unread, so it counts as silent and is closed as dead in the usual time, then
/// after the 2 s linger (it never takes End Connection nor closes).
#[test]
fn a_peer_that_stops_reading_is_paused_then_treated_as_silent() {
    let mut h = Harness::new(Settings {
        max_write_buffer: 4096,
        ..settings(FAST)
    });
    let key = h.connect();
    h.peer(key).room = 0;
    let flood = b"0123456789012345678901234567890123456789\n".repeat(500);
    h.send(key, &flood);
    assert_eq!(h.core.read_budget(key), 0, "reading paused");
    assert!(
        !h.peers[&key].unread.is_empty(),
        "its bytes wait in the kernel"
    );
    assert!(h.core.output(key).len() >= 4096);
    // It keeps sending: still unread, not a sign of life.
    h.run_for(300 * MS);
    h.send(key, b"more\n");
    h.run_until(h.at(700 * MS - US));
    assert_eq!(
        h.core.stats().heartbeats_sent,
        3,
        "heartbeats go out while paused"
    );
    assert_eq!(h.core.stats().closed_dead, 0);
    h.run_until(h.at(700 * MS));
    assert_eq!(h.core.timer_of(key), Some(Timer::Linger));
    h.run_until(h.at(700 * MS + DEAD_LINGER - US));
    assert_eq!(h.closed_at(key), None);
    h.run_until(h.at(700 * MS + DEAD_LINGER));
    assert_eq!(h.closed_at(key), Some(ms(2700)));
    assert_eq!(h.core.stats().closed_dead, 1);
}

/// A slow reader that drains its output is read again (the core asks for it) and echoed.
#[test]
fn a_paused_peer_is_read_again_once_its_output_drains() {
    let mut h = Harness::new(Settings {
        max_write_buffer: 4096,
        ..settings(FAST)
    });
    let key = h.connect();
    h.peer(key).room = 0;
    h.send(key, &b"x\n".repeat(3000));
    assert_eq!(h.core.read_budget(key), 0);
    let echoed_while_paused = h.core.stats().lines_echoed;
    h.peer(key).room = usize::MAX;
    h.core.handle_writable(h.now, key);
    h.drain();
    assert_eq!(h.core.stats().lines_echoed, 3000);
    assert!(echoed_while_paused < 3000);
    assert!(h.peers[&key].unread.is_empty());
    assert!(!h.core.holds_memory(key), "buffers given back once drained");
}

/// A dead peer that never closes its side is closed exactly 2 s after End Connection.
#[test]
fn a_dead_peer_lingers_two_seconds_then_is_closed() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect();
    h.run_until(h.at(700 * MS + DEAD_LINGER - US));
    assert_eq!(h.closed_at(key), None);
    // Whatever it sends while ending is read and dropped, not echoed.
    h.send(key, b"too late\n");
    h.run_until(h.at(700 * MS + DEAD_LINGER));
    assert_eq!(h.closed_at(key), Some(ms(2700)));
    assert_eq!(h.lines(key).last(), Some(&(ms(700), "End Connection")));
}

/// Stopping: every open peer is told End Connection at once; one that closes its side is
/// closed then, one that does not after 1 s; an ending peer's long linger is cut to 1 s.
#[test]
fn stopping_tells_everyone_and_closes_what_is_left_after_one_second() {
    let mut h = Harness::new(settings(Timing {
        idle: Duration::from_secs(30),
        ..FAST
    }));
    let prompt = h.connect();
    let slow = h.connect();
    let half_closed = h.connect();
    h.peer(half_closed).room = 0;
    h.send(half_closed, b"echo me\n");
    h.close_side(half_closed); // ending, waiting up to idle (30 s) to deliver its echo
    h.run_for(Duration::from_secs(1));
    h.stop();
    assert!(!h.core.is_accepting());
    for key in [prompt, slow] {
        assert_eq!(h.lines(key), [(ms(1000), "End Connection")]);
    }
    h.close_side(prompt);
    assert_eq!(h.closed_at(prompt), Some(ms(1000)));
    h.run_until(h.at(Duration::from_secs(2) - US));
    assert_eq!((h.closed_at(slow), h.closed_at(half_closed)), (None, None));
    assert!(!h.core.is_done());
    h.run_until(h.at(Duration::from_secs(1) + STOP_LINGER));
    assert_eq!(h.closed_at(slow), Some(ms(2000)));
    assert_eq!(h.closed_at(half_closed), Some(ms(2000)));
    assert!(h.core.is_done());
    let stats = h.core.stats();
    assert_eq!((stats.closed_at_shutdown, stats.closed_by_peer), (2, 1));
}

/// Out of descriptors: accepting stops for exactly the back-off, then resumes.
#[test]
fn a_failed_accept_backs_off_for_a_hundred_milliseconds() {
    let mut h = Harness::new(settings(FAST));
    h.core.handle_accept_failed(h.now);
    assert!(!h.core.is_accepting());
    assert_eq!(h.core.poll_timeout(), Some(h.at(ACCEPT_BACKOFF)));
    h.run_until(h.at(ACCEPT_BACKOFF - US));
    assert!(!h.core.is_accepting());
    h.run_until(h.at(ACCEPT_BACKOFF));
    assert!(h.core.is_accepting());
    assert_eq!(h.core.poll_timeout(), None, "an idle server sleeps");
    assert_eq!(h.core.stats().accept_errors, 1);
}

/// At `--max-connections` a new peer is refused, but a peer whose end of stream was read no
/// longer holds a place even before its connection is closed.
#[test]
fn a_full_server_refuses_but_counts_only_peers_still_there() {
    let mut h = Harness::new(Settings {
        max_connections: 2,
        ..settings(FAST)
    });
    let first = h.connect();
    let second = h.connect();
    assert_eq!(h.try_connect(addr(1)), Err(Refusal::Full { open: 2 }));
    h.peer(second).room = 0;
    h.send(second, b"unsent echo\n");
    h.close_side(second);
    assert_eq!(h.closed_at(second), None, "still delivering its echo");
    assert!(h.try_connect(addr(1)).is_ok(), "its place is free");
    assert_eq!(h.try_connect(addr(1)), Err(Refusal::Full { open: 2 }));
    assert_eq!(h.core.stats().rejected_full, 2);
    assert_eq!(h.closed_at(first), None);
}

/// A peer outside `--allow` is refused and never gets a key.
#[test]
fn a_peer_outside_the_allow_list_is_refused() {
    let allow: AllowList = "127.0.0.2/32".parse().expect("an allow list");
    let mut h = Harness::new(Settings {
        allow,
        ..settings(FAST)
    });
    assert_eq!(h.try_connect(addr(1)), Err(Refusal::NotAllowed));
    assert!(h.try_connect(addr(2)).is_ok());
    assert_eq!(h.core.stats().rejected_not_allowed, 1);
    assert_eq!(h.core.open(), 1);
}

/// A reset closes the peer at once, counted as an error, and its timer is gone. (The peer
/// said something first: one that leaves without a byte is a probe, tested apart.)
#[test]
fn a_reset_closes_at_once() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect();
    h.send(key, b"hello\n");
    h.reset(key);
    assert_eq!(h.closed_at(key), Some(0));
    assert_eq!(h.core.stats().closed_on_error, 1);
    assert_eq!((h.core.timers_armed(), h.core.poll_timeout()), (0, None));
    assert!(h
        .events
        .iter()
        .any(|(_, k, e)| *k == key && *e == Event::Closed(Reason::Failed)));
}

/// A write that fails while a dead peer is ending closes it with the ending's reason.
#[test]
fn a_write_error_while_ending_keeps_the_reason() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect();
    h.peer(key).room = 0;
    h.run_until(h.at(700 * MS));
    assert_eq!(h.core.timer_of(key), Some(Timer::Linger));
    h.core
        .handle_written(h.now, key, Err(std::io::Error::from(ErrorKind::BrokenPipe)));
    h.drain();
    assert_eq!(h.closed_at(key), Some(ms(700)));
    assert_eq!(h.core.stats().closed_dead, 1);
}

/// An overlong line gets one error line; the connection stays open and idle peers hold no
/// memory once their bytes are gone.
#[test]
fn an_overlong_line_is_refused_once_and_memory_is_given_back() {
    let mut h = Harness::new(Settings {
        max_line: 16,
        ..settings(FAST)
    });
    let key = h.connect();
    h.send(key, b"this line is far too long for the limit\nok\n");
    assert_eq!(
        h.lines(key),
        [
            (0, "Error: line too long (limit 16 bytes)"),
            (0, "Echoing...ok")
        ]
    );
    h.send(key, b"half a li");
    assert!(h.core.holds_memory(key));
    h.send(key, b"ne\n");
    assert!(!h.core.holds_memory(key));
    assert_eq!(h.core.stats().lines_too_long, 1);
}

/// Reads are sized so that echoes cannot overrun the output limit.
#[test]
fn the_read_budget_keeps_echoes_within_the_output_limit() {
    let mut h = Harness::new(Settings {
        max_write_buffer: 1100,
        ..settings(FAST)
    });
    let key = h.connect();
    assert_eq!(h.core.read_budget(key), 100, "an empty line grows 11-fold");
    h.peer(key).room = 0;
    h.send(key, &b"\n".repeat(100));
    assert_eq!(h.core.output(key).len(), 1100);
    assert_eq!(h.core.read_budget(key), 0);
}

/// Past `--max-buffered` the peer whose partial line pushed the total over stops being read
/// (its bytes wait in the kernel); if the total stays over for the grace second, the peers
/// holding the most are closed, and the paused ones are read again once there is room.
#[test]
fn over_the_memory_budget_the_growing_peer_pauses_then_the_largest_are_closed() {
    let mut h = Harness::new(Settings {
        max_buffered: 300 * 1024,
        ..settings(FAST)
    });
    let half_line = vec![b'x'; 60_000];
    // Six 60,000-byte partial lines: over the 300 KiB limit, under its 375 KiB ceiling.
    let keys: Vec<usize> = (0..6).map(|_| h.connect()).collect();
    for key in &keys {
        h.send(*key, &half_line);
    }
    let total = h.core.buffered();
    let paused: Vec<usize> = keys
        .iter()
        .copied()
        .filter(|k| h.core.read_budget(*k) == 0)
        .collect();
    assert!(!paused.is_empty(), "someone was paused");
    for key in &paused {
        h.send(*key, b"more of the same line");
        assert!(!h.peers[key].unread.is_empty(), "not read while paused");
    }
    // Each paused peer was stopped at its first read past the limit: at most a read each
    // went over it.
    assert!(total < 300 * 1024 + paused.len() * 70 * 1024, "{total}");
    h.run_until(h.at(budget_grace() - US));
    assert_eq!(h.core.stats().closed_over_budget, 0);
    h.run_until(h.at(budget_grace()));
    let closed = h.core.stats().closed_over_budget;
    assert!(closed >= 1, "the largest holders were closed");
    assert!(h.core.buffered() <= 300 * 1024, "{}", h.core.buffered());
    let over_budget_events = h
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::OverBudget { held } if *held >= 60_000))
        .count();
    assert_eq!(over_budget_events as u64, closed);
    assert!(h
        .events
        .iter()
        .any(|(_, _, e)| *e == Event::Closed(Reason::OverBudget)));
}

/// Once much buffer memory has been freed, the core asks the loop to give it back to the
/// operating system, once.
#[test]
fn a_large_release_of_buffers_asks_for_memory_to_go_back() {
    let mut h = Harness::new(settings(FAST));
    let half_line = vec![b'x'; 60_000];
    let keys: Vec<usize> = (0..300).map(|_| h.connect()).collect();
    for key in &keys {
        h.send(*key, &half_line);
    }
    assert!(h.core.buffered() >= 300 * 60_000);
    assert_eq!(h.trims, 0, "nothing freed yet");
    for key in &keys {
        h.reset(*key);
    }
    assert_eq!(h.core.buffered(), 0);
    assert_eq!(
        h.trims, 2,
        "19 MiB freed: one trim at the 16 MiB step, one once nearly nothing is held"
    );
}

/// A flood of new peers, each adding a partial line before it can be paused, takes the
/// total past the ceiling (125% of the limit): the largest are closed at once, not a second
/// later.
#[test]
fn past_the_memory_ceiling_the_largest_are_closed_at_once() {
    let mut h = Harness::new(Settings {
        max_buffered: 300 * 1024,
        ..settings(FAST)
    });
    let half_line = vec![b'x'; 60_000];
    for _ in 0..8 {
        let key = h.connect();
        h.send(key, &half_line);
    }
    assert!(h.core.buffered() > 375 * 1024);
    assert_eq!(h.core.poll_timeout(), Some(h.now), "due now");
    h.run_until(h.now);
    assert!(h.core.stats().closed_over_budget >= 3);
    assert!(h.core.buffered() <= 300 * 1024);
}

fn budget_grace() -> Duration {
    heartbeat::server::budget::GRACE
}

/// `--drain`: stopping spreads End Connection evenly over the drain, one peer at a time in
/// turn, while those not yet told are served as usual; a second stop tells the rest at once.
#[test]
fn a_drain_spreads_end_connections_and_a_second_stop_ends_it() {
    let mut h = Harness::new(Settings {
        drain: Duration::from_secs(1),
        ..settings(Timing {
            idle: Duration::from_secs(30),
            ..FAST
        })
    });
    let keys: Vec<usize> = (0..10).map(|_| h.connect()).collect();
    h.stop();
    let told = |h: &Harness| {
        keys.iter()
            .filter(|k| h.lines(**k).iter().any(|(_, l)| *l == "End Connection"))
            .count()
    };
    assert_eq!(told(&h), 1, "the first at once");
    h.run_until(h.at(100 * MS - US));
    assert_eq!(told(&h), 1, "not a microsecond early");
    h.run_until(h.at(100 * MS));
    assert_eq!(told(&h), 2);
    h.send(keys[9], b"still served\n");
    assert_eq!(h.lines(keys[9]), [(ms(100), "Echoing...still served")]);
    h.run_until(h.at(450 * MS));
    assert_eq!(told(&h), 5, "at 0, 100, 200, 300 and 400 ms");
    h.stop();
    assert_eq!(told(&h), 10, "a second stop tells the rest at once");
    for key in &keys[5..] {
        assert_eq!(h.lines(*key).last(), Some(&(ms(450), "End Connection")));
    }
    h.run_for(STOP_LINGER);
    assert!(h.core.is_done());
}

/// `--jitter 50`: each peer's first heartbeat after a silence comes at a point of its own in
/// [idle, idle + interval / 2), never earlier; the same seed gives the same points.
#[test]
fn jitter_spreads_first_heartbeats_never_earlier_and_reproducibly() {
    let first_heartbeats = |seed: u64| {
        let mut h = Harness::new(Settings {
            jitter_percent: 50,
            jitter_seed: seed,
            ..settings(FAST)
        });
        let keys: Vec<usize> = (0..20).map(|_| h.connect()).collect();
        h.run_until(h.at(500 * MS));
        keys.iter()
            .map(|k| h.lines(*k).first().map(|(t, _)| *t))
            .collect::<Vec<_>>()
    };
    let times = first_heartbeats(7);
    for t in &times {
        let t = t.expect("a heartbeat by idle + interval / 2");
        assert!((ms(400)..ms(450)).contains(&t), "{t} µs");
    }
    let mut distinct = times.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 15, "spread: {times:?}");
    assert_eq!(first_heartbeats(7), times, "same seed, same spread");
    assert_ne!(first_heartbeats(8), times, "another seed, another spread");
}

/// The loop is stopped in the middle of a turn's timers (after it woke at 650 ms, until
/// 2 s), and the peer's answer arrives meanwhile (680 ms). The End Connection due at 700 ms
/// was not due when the turn woke, so it does not fire in that turn; the next turn reads the
/// answer first, and the peer is kept.
#[test]
fn a_stall_in_the_middle_of_the_timers_closes_no_peer_that_answered_meanwhile() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect();
    h.run_until(h.at(650 * MS));
    assert_eq!(
        h.lines(key).len(),
        3,
        "three heartbeats, End Connection due at 700 ms"
    );
    let woke = h.at(650 * MS);
    h.core.handle_wakeup(woke, None);
    h.scheduled
        .push((h.at(680 * MS), key, b"Echoing...heartbeat\n".to_vec()));
    // Stopped until 2 s, then the turn goes on with its timers, the clock read anew.
    h.now = h.at(Duration::from_secs(2));
    h.core.handle_timeout(h.now);
    h.drain();
    assert_eq!(
        h.lines(key).len(),
        3,
        "no End Connection in the stalled turn"
    );
    h.wake(h.at(Duration::from_secs(2)));
    assert_eq!(h.lines(key).len(), 3);
    assert_eq!(h.closed_at(key), None);
    let stats = h.core.stats();
    assert_eq!((stats.heartbeats_answered, stats.closed_dead), (1, 0));
}

fn arrive(h: &mut Harness, stage: Stage) -> WaitKey {
    match h.core.handle_arrival(h.now, stage) {
        Arrival::Waiting(wk) => {
            h.drain();
            wk
        }
        Arrival::Full => panic!("{stage:?} is full"),
    }
}

/// A peer waiting for its PROXY header is closed at the deadline, not a microsecond before,
/// and counted as refused; one whose header came in time leaves the stage and is not.
#[test]
fn a_proxy_header_wait_ends_at_its_deadline_exactly() {
    let mut h = Harness::new(settings(FAST));
    let silent = arrive(&mut h, Stage::ProxyHeader);
    let prompt = arrive(&mut h, Stage::ProxyHeader);
    assert!(h
        .core
        .poll_timeout()
        .is_some_and(|at| at <= h.at(HEADER_DEADLINE)));
    h.run_until(h.at(10 * MS));
    h.core.handle_first_bytes(Stage::ProxyHeader, prompt);
    assert_eq!(h.core.waiting(Stage::ProxyHeader), 1);
    h.run_until(h.at(HEADER_DEADLINE - US));
    assert!(h.ended.is_empty(), "{:?}", h.ended);
    h.run_until(h.at(HEADER_DEADLINE));
    assert_eq!(
        h.ended,
        [(
            HEADER_DEADLINE,
            Stage::ProxyHeader,
            silent,
            WaitEnd::TimedOut
        )]
    );
    assert_eq!(h.core.waiting(Stage::ProxyHeader), 0);
    assert_eq!(h.core.stats().rejected_proxy_header, 1);
    assert_eq!(h.core.poll_timeout(), None, "an idle server sleeps");
}

/// At the cap of peers waiting for a header (4 here), a newcomer is never refused: the
/// oldest still waiting is closed to make room, and counted. A peer whose header came is
/// not among those closed.
#[test]
fn at_the_proxy_header_cap_the_oldest_waiter_makes_room() {
    let mut h = Harness::new(settings(FAST));
    let first = arrive(&mut h, Stage::ProxyHeader);
    h.run_for(MS);
    let waiters: Vec<WaitKey> = (0..3)
        .map(|_| {
            h.run_for(MS);
            arrive(&mut h, Stage::ProxyHeader)
        })
        .collect();
    assert_eq!(h.core.waiting(Stage::ProxyHeader), 4);
    assert!(h.ended.is_empty());
    h.run_for(MS);
    let newcomer = arrive(&mut h, Stage::ProxyHeader);
    let evicted = WaitEnd::Evicted { waiting: 4 };
    assert_eq!(h.ended, [(5 * MS, Stage::ProxyHeader, first, evicted)]);
    assert!(!h.core.is_waiting(Stage::ProxyHeader, first));
    assert!(h.core.is_waiting(Stage::ProxyHeader, newcomer));
    // The next oldest has its header now: it is done, and the one after it goes next.
    h.core.handle_first_bytes(Stage::ProxyHeader, waiters[0]);
    arrive(&mut h, Stage::ProxyHeader);
    assert_eq!(h.ended.len(), 1, "under the cap again: nobody closed");
    arrive(&mut h, Stage::ProxyHeader);
    assert_eq!(h.ended[1].2, waiters[1]);
    let stats = h.core.stats();
    assert_eq!(
        (stats.proxy_header_evicted, stats.rejected_proxy_header),
        (2, 2)
    );
}

/// A TLS handshake still unfinished is closed at its deadline, not a microsecond before, and
/// counted as `deadline`; one done in time leaves the stage uncounted, and one the loop
/// refused (plain bytes) is counted under its own reason, once. The deadline is a row of
/// the core's one timer table: `poll_timeout` wakes the loop for it.
#[test]
fn a_tls_handshake_ends_at_its_deadline_exactly() {
    let mut h = Harness::new(settings(FAST));
    let silent = arrive(&mut h, Stage::TlsHandshake);
    let done = arrive(&mut h, Stage::TlsHandshake);
    let plain = arrive(&mut h, Stage::TlsHandshake);
    assert!(h
        .core
        .poll_timeout()
        .is_some_and(|at| at <= h.at(HANDSHAKE_DEADLINE)));
    h.run_until(h.at(10 * MS));
    h.core.handle_wait_over(Stage::TlsHandshake, done, false);
    h.core.handle_tls_refused(plain, TlsRefusal::NotTls);
    h.core.handle_tls_refused(plain, TlsRefusal::NotTls);
    assert_eq!(h.core.waiting(Stage::TlsHandshake), 1);
    h.run_until(h.at(HANDSHAKE_DEADLINE - US));
    assert!(h.ended.is_empty(), "{:?}", h.ended);
    h.run_until(h.at(HANDSHAKE_DEADLINE));
    assert_eq!(
        h.ended,
        [(
            HANDSHAKE_DEADLINE,
            Stage::TlsHandshake,
            silent,
            WaitEnd::TimedOut
        )]
    );
    assert_eq!(h.core.waiting(Stage::TlsHandshake), 0);
    let refused = h.core.stats().rejected_tls;
    let counted: Vec<(TlsRefusal, u64)> = refused.by_reason().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        counted,
        [(TlsRefusal::NotTls, 1), (TlsRefusal::Deadline, 1)],
        "the refused once, the silent one at its deadline, the finished one not at all"
    );
    assert_eq!(h.core.stats().rejected_proxy_header, 0);
    assert_eq!(h.core.poll_timeout(), None, "an idle server sleeps");
}

/// At the cap of handshakes in flight a newcomer is never refused: the oldest still
/// shaking is closed to make room and counted `evicted`; a finished handshake is not among
/// those closed, and a slot freed by one lets the next in without closing anyone.
#[test]
fn at_the_handshake_cap_the_oldest_makes_room() {
    let mut h = Harness::new(settings(FAST));
    let first = arrive(&mut h, Stage::TlsHandshake);
    h.run_for(MS);
    let second = arrive(&mut h, Stage::TlsHandshake);
    let rest: Vec<WaitKey> = (2..HANDSHAKE_CAP)
        .map(|_| arrive(&mut h, Stage::TlsHandshake))
        .collect();
    assert_eq!(h.core.waiting(Stage::TlsHandshake), HANDSHAKE_CAP);
    assert!(h.ended.is_empty());
    h.run_for(MS);
    let newcomer = arrive(&mut h, Stage::TlsHandshake);
    let evicted = WaitEnd::Evicted {
        waiting: HANDSHAKE_CAP,
    };
    assert_eq!(h.ended, [(2 * MS, Stage::TlsHandshake, first, evicted)]);
    assert!(!h.core.is_waiting(Stage::TlsHandshake, first));
    assert!(h.core.is_waiting(Stage::TlsHandshake, newcomer));
    // The next oldest finishes: the next newcomer fits, and then the one after it goes.
    h.core.handle_wait_over(Stage::TlsHandshake, second, false);
    arrive(&mut h, Stage::TlsHandshake);
    assert_eq!(h.ended.len(), 1, "under the cap again: nobody closed");
    arrive(&mut h, Stage::TlsHandshake);
    assert_eq!(h.ended[1].2, rest[0]);
    let refused = h.core.stats().rejected_tls;
    let counted: Vec<(TlsRefusal, u64)> = refused.by_reason().filter(|(_, n)| *n > 0).collect();
    assert_eq!(counted, [(TlsRefusal::Evicted, 2)]);
    assert_eq!(
        h.core.stats().proxy_header_evicted,
        0,
        "the PROXY stage's own"
    );
}

/// A scraper that sends no complete request within a second gives its slot up; one that did
/// keeps it until the scrape deadline. Past the slots a newcomer is told it is busy (and
/// counted), never silently dropped, and a slot freed by a silent one is free for the next.
#[test]
fn scraper_slots_free_a_silent_one_after_a_second_and_answer_busy_past_them() {
    let mut h = Harness::new(settings(FAST));
    let answered = arrive(&mut h, Stage::Scrape);
    h.core.handle_first_bytes(Stage::Scrape, answered);
    let silent: Vec<WaitKey> = (1..SCRAPE_SLOTS)
        .map(|_| arrive(&mut h, Stage::Scrape))
        .collect();
    assert_eq!(h.core.handle_arrival(h.now, Stage::Scrape), Arrival::Full);
    assert_eq!(h.core.stats().metrics_busy, 1);
    h.run_until(h.at(SCRAPE_FIRST_REQUEST - US));
    assert!(h.ended.is_empty());
    h.run_until(h.at(SCRAPE_FIRST_REQUEST));
    let timed_out: Vec<WaitKey> = h.ended.iter().map(|e| e.2).collect();
    assert_eq!(timed_out, silent, "every silent one, and only those");
    assert!(h.ended.iter().all(|e| e.0 == SCRAPE_FIRST_REQUEST));
    assert!(h.core.is_waiting(Stage::Scrape, answered));
    arrive(&mut h, Stage::Scrape);
    h.ended.clear();
    h.run_until(h.at(SCRAPE_DEADLINE - US));
    assert_eq!(
        h.ended.len(),
        1,
        "the newcomer's second ran out, not the answered one's"
    );
    h.run_until(h.at(SCRAPE_DEADLINE));
    assert_eq!(h.ended.last().map(|e| e.2), Some(answered));
}

/// Scrapers told they are busy get a moment to read it; at their own cap the oldest goes.
#[test]
fn busy_scrapers_linger_a_moment_and_the_oldest_makes_room() {
    let mut h = Harness::new(settings(FAST));
    let first = arrive(&mut h, Stage::Busy);
    let more: Vec<WaitKey> = (1..heartbeat::server::core::waiting::BUSY_SLOTS)
        .map(|_| arrive(&mut h, Stage::Busy))
        .collect();
    assert!(h.ended.is_empty());
    arrive(&mut h, Stage::Busy);
    assert_eq!(h.ended.len(), 1);
    assert_eq!(h.ended[0].2, first);
    h.core.handle_wait_over(Stage::Busy, more[0], false);
    h.run_until(h.at(BUSY_LINGER));
    assert_eq!(h.ended.len(), 1 + more.len(), "all but the one that closed");
}

/// A peer that connects and leaves without a byte (a TCP health check) is a probe: counted
/// as such, not as closed by the peer or on error, with no "peer closed" or failure report;
/// a peer that sent a byte first is not a probe.
#[test]
fn a_peer_that_leaves_without_a_byte_is_a_probe() {
    let mut h = Harness::new(settings(FAST));
    let closes = h.connect();
    let resets = h.connect();
    let talks = h.connect();
    h.close_side(closes);
    h.reset(resets);
    h.send(talks, b"x");
    h.reset(talks);
    assert_eq!(h.closed_at(closes), Some(0));
    assert_eq!(h.closed_at(resets), Some(0));
    let stats = h.core.stats();
    assert_eq!(stats.closed_probe, 2);
    assert_eq!((stats.closed_by_peer, stats.closed_on_error), (0, 1));
    for key in [closes, resets] {
        let reports: Vec<&Event> = h
            .events
            .iter()
            .filter(|(_, k, _)| *k == key)
            .map(|(_, _, e)| e)
            .collect();
        assert_eq!(
            reports,
            [
                &Event::Connected { open: 1 + key },
                &Event::Closed(Reason::Probe)
            ]
        );
    }
}

/// More timers due at once than a batch: one `handle_timeout` fires a batch and says more
/// is due; the next (the loop's fresh stamp) fires the rest, each heartbeat recorded at the
/// stamp of its own batch. No output is lost or mixed between peers in a batch.
#[test]
fn a_batch_of_timers_fires_at_its_own_stamp_and_says_when_more_are_due() {
    let mut h = Harness::new(settings(FAST));
    let keys: Vec<usize> = (0..TIMERS_PER_BATCH + 6).map(|_| h.connect()).collect();
    let due = h.at(400 * MS);
    h.now = due;
    h.core.handle_wakeup(due, None);
    assert!(h.core.handle_timeout(due), "more than a batch was due");
    h.drain();
    let later = due + 3 * MS;
    h.now = later;
    assert!(!h.core.handle_timeout(later), "the rest fit one more batch");
    h.drain();
    let sent_at: Vec<u128> = keys.iter().map(|k| h.lines(*k)[0].0).collect();
    assert_eq!(sent_at[..TIMERS_PER_BATCH], vec![ms(400); TIMERS_PER_BATCH]);
    assert_eq!(sent_at[TIMERS_PER_BATCH..], vec![ms(403); 6]);
    for key in &keys {
        assert_eq!(h.lines(*key)[0].1, "heartbeat");
        assert_eq!(h.peers[key].received, b"heartbeat\n");
    }
    // Each peer's next heartbeat is a full interval after its own batch's stamp.
    h.run_until(h.at(503 * MS - US));
    assert!(keys[TIMERS_PER_BATCH..]
        .iter()
        .all(|k| h.lines(*k).len() == 1));
}

/// Exact deadlines with a coarse wheel (1 ms ticks): a peer that connected 300 µs into a
/// tick gets nothing at 400.3 ms − 1 µs and heartbeat 1 at 400.3 ms, then each later step
/// a full interval after the one before, End Connection at 700.3 ms: not at the next tick
/// (401, 501, 601, 701 ms and more, as when every step was rounded up to a tick).
#[test]
fn with_a_coarse_tick_a_heartbeat_and_a_close_come_at_their_exact_due_time() {
    let mut h = Harness::new(Settings {
        tick: MS,
        ..settings(FAST)
    });
    h.run_until(h.at(300 * US));
    let key = h.connect();
    for (step, line) in [
        (400, "heartbeat"),
        (500, "heartbeat"),
        (600, "heartbeat"),
        (700, "End Connection"),
    ] {
        let due = ms(step) + 300;
        h.run_until(h.at(Duration::from_micros(due as u64) - US));
        assert!(
            h.lines(key).iter().all(|(t, _)| *t < due),
            "nothing before {due} µs: {:?}",
            h.lines(key)
        );
        h.run_until(h.at(Duration::from_micros(due as u64)));
        assert_eq!(h.lines(key).last(), Some(&(due, line)), "at {due} µs");
    }
    assert_eq!(h.peers[&key].fin_at, Some(Duration::from_micros(700_300)));
    let stats = h.core.stats();
    assert_eq!(stats.heartbeats_sent, 3);
    let late = stats.close_lateness.percentiles();
    assert_eq!(
        (late.count, late.max_us),
        (1, 0),
        "closed on time: {late:?}"
    );
}

/// With a coarse tick (1 ms) and peers whose deadlines fall anywhere in a tick (connected
/// every 137 µs, one answering its heartbeats 1,001 µs later): every step comes exactly at
/// the rule's time, never a microsecond early and never a tick late.
#[test]
fn with_a_coarse_tick_nothing_fires_early_or_late_for_deadlines_between_ticks() {
    let mut h = Harness::new(Settings {
        tick: MS,
        ..settings(FAST)
    });
    let mut silent = Vec::new();
    for i in 0..16u64 {
        h.run_until(h.at(Duration::from_micros(137 * i)));
        silent.push((h.connect(), 137 * u128::from(i)));
    }
    let answering = h.connect_answering(Duration::from_micros(1_001));
    let answering_from = h.elapsed().as_micros();
    h.run_for(Duration::from_secs(2));
    for (key, connected) in silent {
        let steps: Vec<u128> = h.lines(key).iter().map(|(t, _)| *t - connected).collect();
        assert_eq!(steps, [ms(400), ms(500), ms(600), ms(700)], "key {key}");
    }
    // Heartbeat at L + 400 ms, answered 1,001 µs later, which is the next L.
    let times: Vec<u128> = h.lines(answering).iter().map(|(t, _)| *t).collect();
    let want: Vec<u128> = (0..4)
        .map(|k| answering_from + ms(400) + k * (ms(400) + 1_001))
        .collect();
    assert_eq!(times, want);
    assert_eq!(h.closed_at(answering), None);
}

/// Many peers due at the same exact time between ticks (1 ms ticks, all connected 300 µs
/// into one): the loop wakes at their tick and then at their time, not once per peer, and
/// that second wake-up sends every heartbeat (in batches, at once).
#[test]
fn many_timers_due_at_one_exact_time_cost_one_wake_up_not_one_each() {
    let mut h = Harness::new(Settings {
        tick: MS,
        ..settings(FAST)
    });
    h.run_until(h.at(300 * US));
    let keys: Vec<usize> = (0..3 * TIMERS_PER_BATCH).map(|_| h.connect()).collect();
    let mut wakeups = Vec::new();
    while keys.iter().any(|k| h.lines(*k).is_empty()) {
        let next = h.core.poll_timeout().expect("timers armed");
        wakeups.push((next - h.t0).as_micros());
        h.wake(next);
    }
    // Before them, the wheel's own cascades (a level's slot moved down), a few at most.
    assert!(
        wakeups.ends_with(&[400_000, 400_300]) && wakeups.len() <= 4,
        "its tick, then its exact time: {wakeups:?}"
    );
    for key in &keys {
        assert_eq!(h.lines(*key), [(400_300, "heartbeat")]);
    }
    assert!(
        h.core.poll_timeout().is_some_and(|t| t > h.now),
        "nothing more due now"
    );
}

/// A TLS peer is judged before its handshake (`handle_screen`) as `handle_accept` judges a
/// plain one: outside `--allow` or past `--max-connections` it is refused and counted; a
/// peer let through holds no place until it is accepted.
#[test]
fn screening_before_a_handshake_judges_as_accept_and_takes_no_place() {
    let mut h = Harness::new(Settings {
        allow: "127.0.0.0/24".parse().expect("an allow list"),
        max_connections: 1,
        ..settings(FAST)
    });
    let outside = SocketAddr::from(([10, 0, 0, 1], 40_000));
    assert_eq!(h.core.handle_screen(outside), Err(Refusal::NotAllowed));
    assert_eq!(h.core.handle_screen(addr(1)), Ok(()));
    assert_eq!(h.core.handle_screen(addr(2)), Ok(()), "no place taken");
    assert_eq!(h.core.open(), 0);
    assert!(h.try_connect(addr(1)).is_ok());
    assert_eq!(
        h.core.handle_screen(addr(2)),
        Err(Refusal::Full { open: 1 })
    );
    let stats = h.core.stats();
    assert_eq!((stats.rejected_not_allowed, stats.rejected_full), (1, 1));
}

/// An answer to a heartbeat re-arms the peer's timer for `L + idle` at once: after the
/// heartbeat at 400 ms and its answer at 401 ms, the next time the core asks to be woken for
/// the peer is 801 ms (its next heartbeat), not 500 ms, when the timer armed for the
/// heartbeat's full interval would come due only to be filed again.
#[test]
fn an_answered_heartbeat_moves_the_timer_to_the_next_idle_deadline_at_once() {
    let mut h = Harness::new(settings(FAST));
    let key = h.connect_answering(MS);
    h.run_until(h.at(MS * 401));
    assert_eq!(h.lines(key), [(ms(400), "heartbeat")]);
    assert_eq!(h.core.stats().heartbeats_answered, 1);
    // Wake at every deadline the core names until the next heartbeat: none before 801 ms
    // but the wheel's own cascades (a level's slot moved down), and none at 500 ms.
    let mut wakeups = Vec::new();
    while h.lines(key).len() < 2 {
        let next = h.core.poll_timeout().expect("armed");
        wakeups.push((next - h.t0).as_micros());
        h.wake(next);
    }
    assert_eq!(h.lines(key)[1], (ms(801), "heartbeat"));
    assert!(
        !wakeups.contains(&ms(500)) && wakeups.last() == Some(&ms(801)),
        "{wakeups:?}"
    );
}

/// In a batch where a close and a heartbeat fall due at the same time, the close is decided
/// (and so written) first, whichever peer the timers give back first: here one peer is due
/// its End Connection and another its first heartbeat, both at 700.3 ms (between 1 ms
/// ticks, where equal deadlines come back by key), with the keys both ways round.
#[test]
fn a_close_due_with_a_heartbeat_is_fired_first() {
    for dying_has_the_lower_key in [true, false] {
        let mut h = Harness::new(Settings {
            tick: MS,
            ..settings(FAST)
        });
        h.run_until(h.at(300 * US));
        // The silent peer: End Connection at 700.3 ms; the other: heartbeat 1 then.
        let (dying, asked) = if dying_has_the_lower_key {
            let dying = h.connect();
            h.run_until(h.at(MS * 300 + 300 * US));
            (dying, h.connect())
        } else {
            // The later peer gets the lower key: the slot of a third, which leaves at once.
            let spare = h.connect();
            let dying = h.connect();
            h.close_side(spare);
            h.run_until(h.at(MS * 300 + 300 * US));
            (dying, h.connect())
        };
        assert_eq!(dying < asked, dying_has_the_lower_key);
        let due = MS * 700 + 300 * US;
        h.run_until(h.at(due));
        let order: Vec<(usize, &str)> = h
            .events
            .iter()
            .filter(|(t, ..)| *t == due)
            .filter_map(|(_, key, event)| match event {
                Event::Dead { .. } => Some((*key, "dead")),
                Event::HeartbeatSent { .. } => Some((*key, "heartbeat")),
                _ => None,
            })
            .collect();
        assert_eq!(
            order,
            [(dying, "dead"), (asked, "heartbeat")],
            "keys {dying} and {asked}"
        );
        assert_eq!(
            h.lines(dying).last(),
            Some(&(ms(700) + 300, "End Connection"))
        );
        assert_eq!(h.lines(asked), [(ms(700) + 300, "heartbeat")]);
    }
}

/// The one time the loop sleeps until is the earliest row of the timer table, whichever
/// rows are set: checked at every wake-up while rows come and go (an accept back-off, a
/// connection's heartbeats and close, first-byte waits of two stages, a drain).
#[test]
fn the_poll_timeout_is_always_the_earliest_row_of_the_timer_table() {
    let rows = [
        Timer::AcceptBackoff,
        Timer::MemoryGrace,
        Timer::FirstBytes(Stage::ProxyHeader),
        Timer::FirstBytes(Stage::Scrape),
        Timer::FirstBytes(Stage::Busy),
        Timer::FirstBytes(Stage::TlsHandshake),
        Timer::Kept,
        Timer::Drain,
        Timer::Liveness,
    ];
    let earliest_row =
        |core: &ServerCore| rows.iter().filter_map(|&row| core.deadline_of(row)).min();
    let mut h = Harness::new(Settings {
        drain: Duration::from_millis(300),
        ..settings(FAST)
    });
    h.connect();
    h.core.handle_accept_failed(h.now);
    arrive(&mut h, Stage::ProxyHeader);
    h.run_for(MS);
    arrive(&mut h, Stage::TlsHandshake);
    h.connect();
    let mut seen = 0;
    loop {
        let next = h.core.poll_timeout();
        assert_eq!(next, earliest_row(&h.core), "at {:?}", h.elapsed());
        let Some(next) = next else {
            break;
        };
        if seen == 4 {
            // Stopping with peers open sets the drain's row.
            h.stop();
            assert!(h.core.deadline_of(Timer::Drain).is_some());
            assert_eq!(h.core.poll_timeout(), earliest_row(&h.core));
        }
        h.wake(next.max(h.now));
        seen += 1;
        assert!(seen < 10_000, "the loop never went to sleep");
    }
    assert!(seen > 5, "{seen} wake-ups");
}
