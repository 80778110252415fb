//! One load connection's state without its socket: connecting or open, its data-line
//! schedule, the one heartbeat answer it may owe, the fault it is due to suffer, and what it
//! has heard from the server, so that its end can be named truthfully ([`Peer::ending`]).
//!
//! Sans-IO in the style of `liveness`: it takes `now` and events (opened, line read, timer
//! due) and says what to do ([`Work`]); the loop does it. Its one timer is
//! [`Peer::next_deadline`]. It owns no heap memory: an idle connection is this struct, a
//! socket and an empty `Buffers`. Counting is `stats::client`'s.
//!
//! ## How the server's end of a connection is named
//!
//! The server says `End Connection` both when it closes a peer as dead and when it stops
//! (SIGTERM, `--drain`), so the words alone do not tell them apart; what came before does.
//! The server closes a peer as dead only after it has sent `heartbeat` and heard nothing
//! since, and it echoes a line only when it has read it. So an `End Connection` with no
//! `heartbeat` read since the connection opened or since the last echo cannot be a dead-peer
//! close: it is a **goodbye**. One that follows a heartbeat (and no echo since) is counted a
//! **false death**, even when a stop happened to come then: the client cannot tell, and it
//! never hides a real one. (This holds for servers that ask before they close, `--count` 1
//! or more.)
//!
//! Without `End Connection`: `Error: server full`, or a close (or reset) before the server
//! sent a byte and within [`REFUSED_WITHIN`] of opening, is a **refusal**; any other end of
//! the stream or reset by the server is a connection **lost** (a server killed, or one that
//! closes without saying): never a false death, since the server's liveness always says
//! `End Connection` first. A connection with a fault injected that the server closes in any
//! of these ways is counted as that fault found.

use std::time::{Duration, Instant};

use super::faults::FaultKind;
use super::schedule::{next_attempt, Sends};
use crate::cores::timer::later;
use crate::ops::stats::client::ServerEnd;

/// A connection the server closes (or resets) sooner than this after it opened, without
/// having sent a byte, was refused rather than lost: a full server, an `--allow` list, a
/// proxy with no backend. The server's own refusals take well under a millisecond; a second
/// leaves room for a loaded client to notice, and is far below any heartbeat timing.
pub const REFUSED_WITHIN: Duration = Duration::from_secs(1);

/// How the server ended a connection, as the loop saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerClose {
    /// It sent `End Connection`.
    EndConnection,
    /// It sent `Error: server full`.
    Full,
    /// The stream ended with no `End Connection`.
    EndOfStream,
    /// It reset the connection (or a write found it gone).
    Reset,
}

/// What that end was ([`Peer::ending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A healthy connection's end, named.
    Healthy(ServerEnd),
    /// The fault injected into this connection at that instant was found.
    FaultFound(FaultKind, Instant),
}

/// A line the server sent, as far as naming the end goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    Heartbeat,
    /// An echo of a line: the server has read everything sent before that line.
    Echo,
    Other,
}

#[derive(Debug, Clone)]
pub struct Peer {
    /// Which of the `--connections` this is (0-based), kept across reconnects.
    pub slot: u32,
    /// Failed attempts in a row before this one, for the reconnect back-off.
    pub attempt: u32,
    /// Came back with `--reconnect`: it is given no fault of its own.
    pub revived: bool,
    /// An earlier connection of this slot was served (opened and not refused).
    served_before: bool,
    /// This one was refused by the server.
    refused: bool,
    /// The server has sent at least one line.
    heard: bool,
    /// A `heartbeat` was read since the connection opened or since the last echo.
    asked: bool,
    connecting: bool,
    /// When `connect()` was called, then when the connection opened.
    since: Instant,
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
    /// A connection whose `connect()` was called at `since`; `served_before` if an earlier
    /// connection of this slot was served.
    pub fn connecting(
        slot: u32,
        attempt: u32,
        revived: bool,
        served_before: bool,
        since: Instant,
    ) -> Peer {
        Peer {
            slot,
            attempt,
            revived,
            served_before,
            refused: false,
            heard: false,
            asked: false,
            connecting: true,
            since,
            sends: None,
            sending: true,
            answer_due: None,
            fault: None,
        }
    }

    pub fn connecting_since(&self) -> Option<Instant> {
        self.connecting.then_some(self.since)
    }

    /// When this connection opened, if it is the first of its slot to be served (opened and
    /// not refused): asked as it closes, when that is known.
    pub fn first_served_at(&self) -> Option<Instant> {
        (!self.served_before && self.served()).then_some(self.since)
    }

    /// This slot has been served, by this connection or an earlier one: carried to the next.
    pub fn served(&self) -> bool {
        self.served_before || (!self.connecting && !self.refused)
    }

    /// The failed-attempt count for this slot's next reconnect, if it closes at `now`: the
    /// count goes on unless this connection lived (see [`crate::client::schedule::LIVED`]).
    pub fn next_attempt(&self, now: Instant) -> u32 {
        match self.connecting {
            true => self.attempt.saturating_add(1),
            false => next_attempt(self.attempt, self.since, now),
        }
    }

    /// The connection is established: data lines from `first_send` (none if `None`), and
    /// `fault` strikes that long after `now`. The failed-attempt count is kept: a connection
    /// the server closes at once was no success (see [`Peer::next_attempt`]).
    pub fn on_open(
        &mut self,
        now: Instant,
        first_send: Option<Instant>,
        fault: Option<(FaultKind, Duration)>,
    ) {
        self.connecting = false;
        self.since = now;
        self.sends = first_send.map(Sends::new);
        self.fault = fault.map(|(kind, after)| Fault {
            kind,
            at: later(now, after),
            struck: false,
        });
    }

    /// A line from the server was read (in the order they came).
    pub fn on_line(&mut self, line: Heard) {
        self.heard = true;
        match line {
            Heard::Heartbeat => self.asked = true,
            Heard::Echo => self.asked = false,
            Heard::Other => {}
        }
    }

    /// The server ended this connection at `now`, `how`: what to count it as (see the module
    /// documentation for the rules).
    pub fn ending(&mut self, how: ServerClose, now: Instant) -> Ending {
        if let Some((kind, at)) = self.struck().filter(|_| how != ServerClose::Full) {
            return Ending::FaultFound(kind, at);
        }
        let healthy = match how {
            ServerClose::Full => ServerEnd::Refused,
            ServerClose::EndConnection if self.asked => ServerEnd::FalseDeath,
            ServerClose::EndConnection => ServerEnd::Goodbye,
            ServerClose::EndOfStream | ServerClose::Reset
                if !self.heard && now.saturating_duration_since(self.since) < REFUSED_WITHIN =>
            {
                ServerEnd::Refused
            }
            ServerClose::EndOfStream => ServerEnd::Lost,
            ServerClose::Reset => ServerEnd::LostReset,
        };
        self.refused = healthy == ServerEnd::Refused;
        Ending::Healthy(healthy)
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
        if let Some(since) = self.connecting_since() {
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
        if let Some(since) = self.connecting_since() {
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
        let mut peer = Peer::connecting(0, 0, false, false, t0);
        peer.on_open(t0, first_send, fault);
        peer
    }

    #[test]
    fn connecting_times_out_at_the_timeout_and_not_before() {
        let t0 = Instant::now();
        let mut peer = Peer::connecting(3, 2, false, false, t0);
        assert_eq!(peer.next_deadline(MS, TIMEOUT), Some(t0 + TIMEOUT));
        assert!(
            !peer
                .on_timer(t0 + TIMEOUT - MS, MS, TIMEOUT)
                .connect_timed_out
        );
        assert!(peer.on_timer(t0 + TIMEOUT, MS, TIMEOUT).connect_timed_out);
        peer.on_open(t0 + MS, None, None);
        assert_eq!(peer.next_deadline(MS, TIMEOUT), None, "idle: no timer");
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

    /// The naming rules, as traces of what the connection heard before the server ended it.
    #[test]
    fn end_connection_with_no_heartbeat_outstanding_is_a_goodbye() {
        let t0 = Instant::now();
        let end = |heard: &[Heard]| {
            let mut peer = open(t0, None, None);
            for line in heard {
                peer.on_line(*line);
            }
            peer.ending(ServerClose::EndConnection, t0 + 60 * TIMEOUT)
        };
        let goodbye = Ending::Healthy(ServerEnd::Goodbye);
        let false_death = Ending::Healthy(ServerEnd::FalseDeath);
        // Nothing heard, or only echoes: the server was reading; it did not close a peer it
        // was waiting for.
        assert_eq!(end(&[]), goodbye);
        assert_eq!(end(&[Heard::Echo, Heard::Other, Heard::Echo]), goodbye);
        // A heartbeat answered, then an echo: the server read past the heartbeat.
        assert_eq!(end(&[Heard::Heartbeat, Heard::Echo]), goodbye);
        // The dead-peer close always comes right after heartbeats, with no echo between:
        // never called a goodbye, even when it was a stop that came then.
        assert_eq!(end(&[Heard::Heartbeat]), false_death);
        assert_eq!(
            end(&[Heard::Echo, Heard::Heartbeat, Heard::Heartbeat]),
            false_death
        );
        assert_eq!(end(&[Heard::Heartbeat, Heard::Other]), false_death);
    }

    #[test]
    fn a_refusal_a_loss_and_a_found_fault_are_told_apart() {
        let t0 = Instant::now();
        let ending = |how, after: Duration, heard: bool| {
            let mut peer = open(t0, None, None);
            if heard {
                peer.on_line(Heard::Echo);
            }
            peer.ending(how, t0 + after)
        };
        let named = Ending::Healthy;
        let soon = REFUSED_WITHIN - MS;
        assert_eq!(
            ending(ServerClose::Full, 5 * TIMEOUT, true),
            named(ServerEnd::Refused),
            "the server's own words, whenever they come"
        );
        // Closed before a byte and at once: refused; at T (or after a byte): lost.
        for (how, lost) in [
            (ServerClose::EndOfStream, ServerEnd::Lost),
            (ServerClose::Reset, ServerEnd::LostReset),
        ] {
            assert_eq!(ending(how, soon, false), named(ServerEnd::Refused));
            assert_eq!(ending(how, REFUSED_WITHIN, false), named(lost));
            assert_eq!(ending(how, MS, true), named(lost));
        }
        let mut peer = open(t0, None, None);
        peer.ending(ServerClose::Full, t0);
        assert!(!peer.served(), "refused: its slot has not been served");
        assert_eq!(peer.first_served_at(), None);
        let mut peer = open(t0, None, Some((FaultKind::Silent, MS)));
        peer.on_timer(t0 + MS, MS, TIMEOUT);
        assert_eq!(
            peer.ending(ServerClose::EndConnection, t0 + TIMEOUT),
            Ending::FaultFound(FaultKind::Silent, t0 + MS)
        );
        assert!(peer.served());
        assert_eq!(peer.first_served_at(), Some(t0));
        let again = Peer::connecting(0, 0, true, true, t0);
        assert!(again.served() && again.first_served_at().is_none());
    }

    /// The back-off count goes on through connections the server ends before they lived, and
    /// starts again after one that lived; a failed connect adds one.
    #[test]
    fn the_attempt_count_survives_a_short_life() {
        use crate::client::schedule::LIVED;
        let t0 = Instant::now();
        let mut peer = Peer::connecting(0, 4, true, true, t0);
        assert_eq!(peer.next_attempt(t0 + TIMEOUT), 5, "the connect failed");
        peer.on_open(t0 + MS, None, None);
        assert_eq!(peer.attempt, 4, "opening is no success yet");
        assert_eq!(peer.next_attempt(t0 + MS + LIVED - MS), 5, "closed at T−1");
        assert_eq!(peer.next_attempt(t0 + MS + LIVED), 0, "lived at T");
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
