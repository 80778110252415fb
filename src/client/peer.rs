//! One load connection's state without its socket: connecting or open, its data-line
//! schedule, the one heartbeat answer it may owe, and the fault it is due to suffer.
//!
//! Sans-IO in the style of `liveness`: it takes `now` and events (opened, heartbeat read,
//! timer due) and says what to do ([`Work`]); the loop does it. Its one timer is
//! [`Peer::next_deadline`]. It owns no heap memory: an idle connection is this struct, a
//! socket and an empty `Buffers`.

use std::time::{Duration, Instant};

use super::faults::FaultKind;
use super::schedule::Sends;
use crate::cores::timer::later;

#[derive(Debug, Clone)]
pub struct Peer {
    /// Which of the `--connections` this is (0-based), kept across reconnects.
    pub slot: u32,
    /// Failed attempts in a row before this one, for the reconnect back-off.
    pub attempt: u32,
    /// Came back with `--reconnect`: it is given no fault of its own.
    pub revived: bool,
    connecting_since: Option<Instant>,
    sends: Option<Sends>,
    sending: bool,
    /// When the owed heartbeat answer is due (`--heartbeat-block`); at most one is owed.
    answer_due: Option<Instant>,
    fault: Option<Fault>,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    kind: FaultKind,
    at: Instant,
    struck: bool,
}

/// What a due timer asks of the loop, in this order: the fault, the answer, the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Work {
    /// Connecting took longer than the connect timeout.
    pub connect_timed_out: bool,
    /// The connection turns bad now.
    pub fault: Option<FaultKind>,
    /// Send the owed heartbeat answer, which was due at this instant.
    pub answer_due: Option<Instant>,
    /// Send this many data lines (see [`Peer::on_sent`] for each one's scheduled instant).
    pub lines: u32,
}

/// What to do about a `heartbeat` just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Now,
    /// Owed (now or already): the timer sends it.
    Later,
    /// This connection no longer answers (a fault struck).
    Never,
}

impl Peer {
    /// A connection whose `connect()` was called at `since`.
    pub fn connecting(slot: u32, attempt: u32, revived: bool, since: Instant) -> Peer {
        Peer {
            slot,
            attempt,
            revived,
            connecting_since: Some(since),
            sends: None,
            sending: true,
            answer_due: None,
            fault: None,
        }
    }

    pub fn connecting_since(&self) -> Option<Instant> {
        self.connecting_since
    }

    /// The connection is established: data lines from `first_send` (none if `None`), and
    /// `fault` strikes that long after `now`.
    pub fn on_open(
        &mut self,
        now: Instant,
        first_send: Option<Instant>,
        fault: Option<(FaultKind, Duration)>,
    ) {
        self.connecting_since = None;
        self.attempt = 0;
        self.sends = first_send.map(Sends::new);
        self.fault = fault.map(|(kind, after)| Fault {
            kind,
            at: later(now, after),
            struck: false,
        });
    }

    /// The run is ending: no more data lines (echoes of those sent are still awaited).
    pub fn stop_sending(&mut self) {
        self.sending = false;
    }

    /// The fault that struck this connection, and when.
    pub fn struck(&self) -> Option<(FaultKind, Instant)> {
        self.fault.filter(|f| f.struck).map(|f| (f.kind, f.at))
    }

    fn struck_kind(&self) -> Option<FaultKind> {
        self.struck().map(|(kind, _)| kind)
    }

    /// Reads what arrives (all but a `noread` connection do).
    pub fn reads(&self) -> bool {
        self.struck_kind() != Some(FaultKind::NoRead)
    }

    fn answers(&self) -> bool {
        self.struck_kind().is_none()
    }

    fn sends_data(&self) -> bool {
        self.sending && matches!(self.struck_kind(), None | Some(FaultKind::NoRead))
    }

    /// A `heartbeat` was read at `now`. Answers coalesce: one owed answer is enough, since
    /// any bytes are a sign of life.
    pub fn on_heartbeat(&mut self, now: Instant, block: Duration) -> Answer {
        if !self.answers() {
            return Answer::Never;
        }
        if block.is_zero() {
            self.answer_due = None;
            return Answer::Now;
        }
        self.answer_due.get_or_insert_with(|| later(now, block));
        Answer::Later
    }

    /// When this connection's timer must fire.
    pub fn next_deadline(&self, interval: Duration, connect_timeout: Duration) -> Option<Instant> {
        if let Some(since) = self.connecting_since {
            return Some(later(since, connect_timeout));
        }
        let send = self
            .sends
            .filter(|_| self.sends_data())
            .map(|s| s.next_at(interval));
        let fault = self.fault.filter(|f| !f.struck).map(|f| f.at);
        [send, self.answer_due, fault].into_iter().flatten().min()
    }

    /// The timer fired at `now`: what is due.
    pub fn on_timer(
        &mut self,
        now: Instant,
        interval: Duration,
        connect_timeout: Duration,
    ) -> Work {
        let mut work = Work::default();
        if let Some(since) = self.connecting_since {
            work.connect_timed_out = now >= later(since, connect_timeout);
            return work;
        }
        if let Some(fault) = self.fault.as_mut().filter(|f| !f.struck && f.at <= now) {
            fault.struck = true;
            work.fault = Some(fault.kind);
        }
        if !self.answers() {
            self.answer_due = None;
        }
        if self.answer_due.is_some_and(|due| due <= now) {
            work.answer_due = self.answer_due.take();
        }
        if self.sends_data() {
            work.lines = self.sends.map_or(0, |s| s.due(interval, now));
        }
        work
    }

    /// One of the lines [`Work::lines`] asked for went out: its scheduled instant.
    pub fn on_sent(&mut self, interval: Duration) -> Option<Instant> {
        self.sends.as_mut().map(|s| s.on_sent(interval))
    }

    /// An echo arrived: the scheduled instant of the line it answers, if one was waiting.
    pub fn on_echo(&mut self, interval: Duration) -> Option<Instant> {
        self.sends.as_mut()?.on_echo(interval)
    }

    /// Lines sent and not yet echoed.
    pub fn outstanding(&self) -> u32 {
        self.sends.map_or(0, |s| s.outstanding())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn open(
        t0: Instant,
        first_send: Option<Instant>,
        fault: Option<(FaultKind, Duration)>,
    ) -> Peer {
        let mut peer = Peer::connecting(0, 0, false, t0);
        peer.on_open(t0, first_send, fault);
        peer
    }

    #[test]
    fn connecting_times_out_at_the_timeout_and_not_before() {
        let t0 = Instant::now();
        let mut peer = Peer::connecting(3, 2, false, t0);
        assert_eq!(peer.next_deadline(MS, TIMEOUT), Some(t0 + TIMEOUT));
        assert!(
            !peer
                .on_timer(t0 + TIMEOUT - MS, MS, TIMEOUT)
                .connect_timed_out
        );
        assert!(peer.on_timer(t0 + TIMEOUT, MS, TIMEOUT).connect_timed_out);
        peer.on_open(t0 + MS, None, None);
        assert_eq!(
            (peer.attempt, peer.next_deadline(MS, TIMEOUT)),
            (0, None),
            "idle: no timer"
        );
    }

    #[test]
    fn owed_answers_coalesce_into_one() {
        let t0 = Instant::now();
        let mut peer = open(t0, None, None);
        let block = 100 * MS;
        for i in 0..10_000 {
            assert_eq!(
                peer.on_heartbeat(t0 + i * Duration::from_micros(1), block),
                Answer::Later
            );
        }
        assert_eq!(
            peer.next_deadline(MS, TIMEOUT),
            Some(t0 + block),
            "the first one's due time"
        );
        assert_eq!(
            peer.on_timer(t0 + block - MS, MS, TIMEOUT),
            Work::default(),
            "nothing at T−1"
        );
        let work = peer.on_timer(t0 + block, MS, TIMEOUT);
        assert_eq!(work.answer_due, Some(t0 + block), "one answer at T");
        assert_eq!(
            peer.on_timer(t0 + 2 * block, MS, TIMEOUT),
            Work::default(),
            "and only one"
        );
        assert_eq!(peer.on_heartbeat(t0, Duration::ZERO), Answer::Now);
    }

    #[test]
    fn a_silent_fault_strikes_on_time_and_ends_answers_and_lines() {
        let t0 = Instant::now();
        let every = 100 * MS;
        let mut peer = open(t0, Some(t0 + every), Some((FaultKind::Silent, 250 * MS)));
        assert!(peer.on_timer(t0 + every, every, TIMEOUT).lines == 1);
        peer.on_sent(every);
        assert_eq!(peer.on_heartbeat(t0 + 120 * MS, 200 * MS), Answer::Later);
        assert_eq!(peer.next_deadline(every, TIMEOUT), Some(t0 + 200 * MS));
        assert_eq!(peer.on_timer(t0 + 200 * MS, every, TIMEOUT).lines, 1);
        peer.on_sent(every);
        assert_eq!(
            peer.next_deadline(every, TIMEOUT),
            Some(t0 + 250 * MS),
            "the fault"
        );
        assert_eq!(peer.on_timer(t0 + 249 * MS, every, TIMEOUT).fault, None);
        let work = peer.on_timer(t0 + 250 * MS, every, TIMEOUT);
        assert_eq!(work.fault, Some(FaultKind::Silent));
        assert_eq!(
            (work.answer_due, work.lines),
            (None, 0),
            "the owed answer is dropped"
        );
        assert_eq!(peer.struck(), Some((FaultKind::Silent, t0 + 250 * MS)));
        assert_eq!(
            peer.on_heartbeat(t0 + 300 * MS, Duration::ZERO),
            Answer::Never
        );
        assert_eq!(
            peer.next_deadline(every, TIMEOUT),
            None,
            "nothing more to do"
        );
        assert!(peer.reads());
        assert_eq!(peer.outstanding(), 2, "its lines' echoes are still awaited");
    }

    #[test]
    fn a_noread_fault_stops_reading_and_answering_but_keeps_sending() {
        let t0 = Instant::now();
        let every = 100 * MS;
        let mut peer = open(t0, Some(t0 + every), Some((FaultKind::NoRead, 50 * MS)));
        assert_eq!(
            peer.on_timer(t0 + 50 * MS, every, TIMEOUT).fault,
            Some(FaultKind::NoRead)
        );
        assert!(!peer.reads());
        assert_eq!(
            peer.on_heartbeat(t0 + 60 * MS, Duration::ZERO),
            Answer::Never
        );
        assert_eq!(peer.on_timer(t0 + every, every, TIMEOUT).lines, 1);
    }

    #[test]
    fn lines_stop_when_sending_stops_and_echoes_are_still_matched() {
        let t0 = Instant::now();
        let every = 100 * MS;
        let mut peer = open(t0, Some(t0), None);
        assert_eq!(peer.on_timer(t0, every, TIMEOUT).lines, 1);
        assert_eq!(peer.on_sent(every), Some(t0));
        peer.stop_sending();
        assert_eq!(peer.next_deadline(every, TIMEOUT), None);
        assert_eq!(peer.on_timer(t0 + 10 * every, every, TIMEOUT).lines, 0);
        assert_eq!(peer.on_echo(every), Some(t0));
        assert_eq!(peer.outstanding(), 0);
    }

    #[test]
    fn an_idle_record_is_small() {
        assert!(
            std::mem::size_of::<Peer>() <= 104,
            "{}",
            std::mem::size_of::<Peer>()
        );
    }
}
