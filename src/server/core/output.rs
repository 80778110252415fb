//! Output: framing what a peer sent and queueing the echoes, protocol lines, and the one
//! shared output buffer that lets a peer's output cost no allocation unless the kernel
//! refuses it (then it moves to the peer's own outbox, in order). Part of [`ServerCore`].
//!
//! The shared buffer is cut into segments, one per peer with output not yet written, in
//! the order it was decided: a batch of timers queues heartbeats for many peers before the
//! loop writes any. A segment is done once written (or moved to its peer's outbox); the
//! buffer is emptied, keeping its capacity, once every segment is done.
//!
//! A heartbeat to a peer with nothing else waiting (most rounds) takes no segment at all:
//! the record notes it, and the loop writes [`protocol::HEARTBEAT_LINE`] itself. Output
//! decided for that peer before the write starts a segment with the heartbeat copied in.
//!
//! A read is echoed per read, not per line ([`protocol::echo_lines`]); the line-by-line path
//! ([`protocol::answer`] per frame) remains for debug logging (it logs each line), for the
//! end of the input, and as the reference a property test holds the per-read path to.

use std::ops::Range;
use std::time::Instant;

use log::debug;
use memchr::memchr;

use super::{Action, Segment, ServerCore, DONE};
use crate::cores::escape::Escaped;
use crate::cores::protocol::{self, Echoed, Frame};

impl ServerCore {
    /// Frames what was read (`Some(bytes)`; `None`: the end of the input, which completes a
    /// last line without a newline) and queues the echoes of its data lines.
    ///
    /// Per read, not per line: a line pending from an earlier read (or being dropped) is
    /// finished line by line up to the read's first newline; every complete line after it
    /// goes through [`protocol::echo_lines`] in one pass, straight into the shared output;
    /// the unterminated rest is held. The counters and the budget are told once per read.
    /// With debug logging on, every line goes through the line-by-line path (it logs each).
    pub(super) fn echo(&mut self, now: Instant, key: usize, input: Option<&[u8]>) {
        let max_line = self.settings.max_line;
        if input.is_some_and(|read| protocol::is_lone_reply(max_line, read))
            && per_read_path()
            && self
                .conns
                .get(key)
                .is_some_and(|record| record.buffers.is_unallocated())
        {
            // An idle peer's answer to a heartbeat, with nothing pending: nothing to answer,
            // nothing held, no counter but the one `handle_read` keeps.
            return;
        }
        self.claim_output(now, key);
        let ServerCore {
            conns,
            output,
            stats,
            settings,
            ..
        } = self;
        let Some(record) = conns.get_mut(key) else {
            return;
        };
        let before = output.len();
        let max_line = settings.max_line;
        let mut tally = Echoed::default();
        let mut line_by_line = |frame: Frame<'_>| {
            if let Frame::Line(data) = frame {
                debug!("data: {:.200}", Escaped(data));
            }
            protocol::answer(max_line, frame, output, &mut tally);
        };
        match input {
            None => record.buffers.finish(&mut line_by_line),
            Some(bytes) if !per_read_path() => record.buffers.feed(max_line, bytes, line_by_line),
            Some(bytes) => {
                let mut rest = bytes;
                // Buffers that hold nothing hold no pending line: a line starts at byte 0.
                if !record.buffers.is_unallocated() {
                    // After the first newline a line starts, whatever was pending.
                    let head = memchr(b'\n', bytes).map_or(bytes.len(), |end| end + 1);
                    record
                        .buffers
                        .feed(max_line, &bytes[..head], &mut line_by_line);
                    rest = &bytes[head..];
                }
                let whole = protocol::echo_lines(max_line, rest, output);
                tally.add(whole);
                let tail = &rest[whole.consumed..];
                if !tail.is_empty() {
                    record.buffers.feed(max_line, tail, |frame| {
                        protocol::answer(max_line, frame, output, &mut tally)
                    });
                }
            }
        }
        // Counted once per read (the loops fold into one addition).
        for _ in 0..tally.lines {
            stats.on_line_echoed();
        }
        for _ in 0..tally.too_long {
            stats.on_line_too_long();
        }
        // `output_ready` counts the peer's buffers in the budget; otherwise only the line
        // decoder may have changed them.
        if output.len() > before {
            self.output_ready(now, key);
        } else {
            self.account(now, key);
        }
    }

    /// Queues one protocol line for `key`.
    pub(super) fn queue_line(&mut self, now: Instant, key: usize, line: &[u8]) {
        self.claim_output(now, key);
        protocol::encode_line(&mut self.output, line);
        self.output_ready(now, key);
    }

    /// Queues a heartbeat for `key`. When nothing else waits for the peer (most rounds), by
    /// reference to [`protocol::HEARTBEAT_LINE`]: no copy, no segment, nothing to account;
    /// output decided for it before the write joins behind it ([`claim_output`]). Otherwise
    /// behind what waits, as any line.
    ///
    /// [`claim_output`]: Self::claim_output
    pub(super) fn queue_heartbeat(&mut self, now: Instant, key: usize) {
        let nothing_waits = self.segments.find(key).is_none();
        match self.conns.get_mut(key) {
            Some(record)
                if nothing_waits
                    && !record.heartbeat_queued
                    && record.buffers.outbox().is_empty() =>
            {
                record.heartbeat_queued = true;
                self.actions.push_back(Action::Write(key));
            }
            _ => self.queue_line(now, key, protocol::HEARTBEAT),
        }
    }

    /// Makes the end of the shared output buffer `key`'s, so what is encoded next is its. If
    /// an earlier segment of it is still there (not written yet), that output moves to its
    /// outbox first, in order; a heartbeat queued by reference is copied in first.
    pub(super) fn claim_output(&mut self, now: Instant, key: usize) {
        // Queued by reference only while nothing else waits: it starts the segment below.
        let heartbeat_queued = self
            .conns
            .get_mut(key)
            .is_some_and(|record| std::mem::take(&mut record.heartbeat_queued));
        let output_len = self.output.len();
        if let Some(last) = self.segments.list.last() {
            if last.key == key {
                debug_assert!(
                    !heartbeat_queued,
                    "a heartbeat by reference behind a segment"
                );
                return;
            }
            if last.start == output_len {
                // An empty segment holds nothing: give its place to this one.
                self.segments.list.pop();
            }
        }
        if let Some(i) = self.segments.find(key) {
            let range = self.segments.range(i, output_len);
            if let Some(record) = self.conns.get_mut(key) {
                record.buffers.hold(&self.output[range]);
            }
            self.segments.done(i, &mut self.output);
            self.account(now, key);
        }
        self.segments.push(key, self.output.len());
        if heartbeat_queued {
            self.output.extend_from_slice(protocol::HEARTBEAT_LINE);
        }
    }

    /// New output for `key` is at the end of the shared buffer: behind unsent output it
    /// joins the outbox (order is kept); either way the loop is asked to write.
    pub(super) fn output_ready(&mut self, now: Instant, key: usize) {
        let behind = self
            .conns
            .get(key)
            .is_some_and(|record| !record.buffers.outbox().is_empty());
        if let Some((i, range)) = behind.then(|| self.segment(key)).flatten() {
            if let Some(record) = self.conns.get_mut(key) {
                record.buffers.hold(&self.output[range]);
            }
            self.segments.done(i, &mut self.output);
        }
        self.actions.push_back(Action::Write(key));
        self.account(now, key);
    }

    /// Bytes decided for `key` and not yet taken by the kernel.
    pub(super) fn pending_output(&self, key: usize) -> usize {
        let shared = self.segment(key).map_or(0, |(_, range)| range.len());
        let own = self.conns.get(key).map_or(0, |r| {
            r.buffers.unsent() + usize::from(r.heartbeat_queued) * protocol::HEARTBEAT_LINE.len()
        });
        shared + own
    }

    /// `key`'s segment, if it has output in the shared buffer: its index and its bytes.
    pub(super) fn segment(&self, key: usize) -> Option<(usize, Range<usize>)> {
        let i = self.segments.find(key)?;
        Some((i, self.segments.range(i, self.output.len())))
    }
}

/// The segments of the shared output buffer, in the order their output was decided.
#[derive(Debug, Default)]
pub(super) struct Segments {
    list: Vec<Segment>,
    /// Every segment before this one is done: the loop writes in the order the core asked,
    /// so the one written next is found at once.
    first_live: usize,
    /// Bit `key % 64` is set for every key given a segment since the buffer was last empty:
    /// a key whose bit is clear has none, found without a search (a batch of timers claims
    /// the buffer for up to 64 peers, often with consecutive keys).
    keys: u64,
}

impl Segments {
    pub(super) fn with_capacity(n: usize) -> Segments {
        Segments {
            list: Vec::with_capacity(n),
            ..Segments::default()
        }
    }

    fn bit(key: usize) -> u64 {
        1 << (key % 64)
    }

    pub(super) fn find(&self, key: usize) -> Option<usize> {
        if self.keys & Self::bit(key) == 0 {
            return None;
        }
        // The echo path: the peer just served has the last (usually the only) segment.
        let last = self.list.len().checked_sub(1)?;
        if self.list[last].key == key {
            return Some(last);
        }
        let live = self.list.get(self.first_live..)?;
        let i = live.iter().position(|s| s.key == key)?;
        Some(i + self.first_live)
    }

    fn range(&self, i: usize, output_len: usize) -> Range<usize> {
        let end = self.list.get(i + 1).map_or(output_len, |next| next.start);
        self.list[i].start..end
    }

    fn push(&mut self, key: usize, start: usize) {
        self.keys |= Self::bit(key);
        self.list.push(Segment { key, start });
    }

    /// Segment `i` was written or moved. Done segments at the end give their bytes back;
    /// once none is left the buffer is empty (its capacity kept: no allocation next time).
    pub(super) fn done(&mut self, i: usize, output: &mut Vec<u8>) {
        if i == 0 && self.list.len() == 1 {
            // The echo path: the only segment.
            output.truncate(self.list[0].start);
            self.list.clear();
            self.first_live = 0;
            self.keys = 0;
            return;
        }
        self.list[i].key = DONE;
        while self
            .list
            .get(self.first_live)
            .is_some_and(|s| s.key == DONE)
        {
            self.first_live += 1;
        }
        while let Some(last) = self.list.last() {
            if last.key != DONE {
                return;
            }
            output.truncate(last.start);
            self.list.pop();
        }
        self.first_live = 0;
        self.keys = 0;
    }
}

#[cfg(test)]
mod segment_tests {
    use super::*;

    /// Three peers' output in one buffer, written out of order: each finds its own bytes,
    /// done segments in the middle keep the others' bounds, and the buffer empties (keeping
    /// its capacity) once all are done.
    #[test]
    fn segments_keep_each_peers_bytes_whatever_the_order_they_are_written_in() {
        let mut output = Vec::with_capacity(64);
        let mut segments = Segments::with_capacity(4);
        for (key, bytes) in [
            (7, &b"seven\n"[..]),
            (3, b"three\n"),
            (71, b"seventy-one\n"),
        ] {
            segments.push(key, output.len());
            output.extend_from_slice(bytes);
        }
        let bytes = |s: &Segments, output: &Vec<u8>, key| {
            let i = s.find(key).expect("a segment");
            output[s.range(i, output.len())].to_vec()
        };
        assert_eq!(bytes(&segments, &output, 3), b"three\n");
        assert_eq!(segments.find(8), None, "bit clear: no search");
        assert_eq!(segments.find(135), None, "bit shared with 71, no segment");
        let three = segments.find(3).expect("a segment");
        segments.done(three, &mut output);
        assert_eq!(bytes(&segments, &output, 7), b"seven\n");
        assert_eq!(bytes(&segments, &output, 71), b"seventy-one\n");
        let last = segments.find(71).expect("a segment");
        segments.done(last, &mut output);
        assert_eq!(
            output, b"seven\n",
            "done segments at the end give their bytes back"
        );
        let seven = segments.find(7).expect("a segment");
        segments.done(seven, &mut output);
        assert!(output.is_empty() && segments.list.is_empty());
        assert_eq!((segments.first_live, segments.keys), (0, 0));
        assert!(output.capacity() >= 64);
    }
}

/// Whether reads take the per-read echo path: not while debug logging wants every line, nor
/// in a test that asked for the line-by-line path (to hold the two to the same output).
fn per_read_path() -> bool {
    #[cfg(test)]
    if let Some(per_read) = tests::PER_READ.with(std::cell::Cell::get) {
        return per_read;
    }
    !log::log_enabled!(log::Level::Debug)
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::Cell;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use proptest::prelude::*;

    use super::super::{Action, Admission, ServerCore, Settings};
    use crate::cores::allow::AllowList;
    use crate::cores::liveness::Timing;
    use crate::cores::protocol::{DEFAULT_MAX_LINE, HEARTBEAT_REPLY};
    use crate::ops::stats::ServerStats;

    thread_local! {
        /// `Some(true)`: this test's reads take the per-read path; `Some(false)`: line by
        /// line; `None`: as the log level says.
        pub(super) static PER_READ: Cell<Option<bool>> = const { Cell::new(None) };
    }

    fn settings(max_line: usize, max_write_buffer: usize) -> Settings {
        Settings {
            timing: Timing {
                idle: Duration::from_secs(30),
                interval: Duration::from_secs(10),
                count: 3,
            },
            tick: Duration::from_millis(1),
            max_line,
            max_write_buffer,
            max_buffered: 256 << 20,
            max_connections: 10,
            allow: AllowList::default(),
            drain: Duration::ZERO,
            jitter_percent: 0,
            jitter_seed: 1,
            sessions: true,
            heartbeat_reports: true,
            max_header_waits: 4,
        }
    }

    /// Everything one peer's reads led to: every action, the bytes the fake kernel took, the
    /// state after each read (read budget, buffer memory held, budget total) and the counters.
    #[derive(Debug, PartialEq)]
    struct Trace {
        actions: Vec<Action>,
        wire: Vec<u8>,
        after_each_read: Vec<(usize, bool, usize)>,
        stats: ServerStats,
    }

    /// One peer sends `reads`, then closes its side; the kernel takes at most the next of
    /// `rooms` bytes per write (cycling), and says "writable" once after each read.
    fn run(
        per_read: bool,
        max_line: usize,
        limit: usize,
        reads: &[&[u8]],
        rooms: &[usize],
    ) -> Trace {
        PER_READ.with(|c| c.set(Some(per_read)));
        let t0 = Instant::now();
        let mut core = ServerCore::new(t0, settings(max_line, limit));
        let Admission::Admitted(key) =
            core.handle_accept(t0, SocketAddr::from(([127, 0, 0, 1], 9)))
        else {
            panic!("refused");
        };
        let mut trace = Trace {
            actions: Vec::new(),
            wire: Vec::new(),
            after_each_read: Vec::new(),
            stats: ServerStats::default(),
        };
        let mut rooms = rooms.iter().copied().cycle();
        let mut drain = |core: &mut ServerCore, trace: &mut Trace, now: Instant| {
            while let Some(action) = core.poll_action() {
                trace.actions.push(action);
                if let Action::Write(k) = action {
                    let out = core.output(k);
                    let n = rooms.next().unwrap_or(usize::MAX).min(out.len());
                    trace.wire.extend_from_slice(&out[..n]);
                    core.handle_written(now, k, Ok(n));
                }
            }
        };
        drain(&mut core, &mut trace, t0);
        for (i, read) in reads.iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64);
            core.handle_read(now, key, read);
            drain(&mut core, &mut trace, now);
            core.handle_writable(now, key);
            drain(&mut core, &mut trace, now);
            let state = (
                core.read_budget(key),
                core.holds_memory(key),
                core.buffered(),
            );
            trace.after_each_read.push(state);
        }
        let end = t0 + Duration::from_secs(1);
        core.handle_eof(end, key);
        drain(&mut core, &mut trace, end);
        trace.stats = core.stats().clone();
        PER_READ.with(|c| c.set(None));
        trace
    }

    /// Lines of random bytes, empty lines and heartbeat answers, ending in `\n` or `\r\n`,
    /// then an unterminated tail.
    fn wire(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
        let byte = any::<u8>().prop_filter("no newline", |b| *b != b'\n');
        let content = prop_oneof![
            4 => prop::collection::vec(byte.clone(), 0..max_len),
            1 => Just(HEARTBEAT_REPLY.to_vec()),
            1 => Just(Vec::new()),
        ];
        (
            prop::collection::vec((content, any::<bool>()), 0..40),
            prop::collection::vec(byte, 0..max_len),
        )
            .prop_map(|(lines, tail)| {
                let mut wire = Vec::new();
                for (content, crlf) in lines {
                    wire.extend_from_slice(&content);
                    wire.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
                wire.extend_from_slice(&tail);
                wire
            })
    }

    /// `wire` cut at the given points (any order, repeats: empty reads too).
    fn cut_at<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.extend([0, wire.len()]);
        points.sort_unstable();
        points.windows(2).map(|w| &wire[w[0]..w[1]]).collect()
    }

    #[test]
    fn per_read_path_answers_pending_whole_and_tail_lines() {
        let reads: [&[u8]; 3] = [
            b"one\ntw",
            b"o\nEchoing...heartbeat\r\nthree\r\nfo",
            b"ur\n",
        ];
        let trace = run(true, DEFAULT_MAX_LINE, 1 << 20, &reads, &[usize::MAX]);
        let want: &[u8] = b"Echoing...one\nEchoing...two\nEchoing...three\nEchoing...four\n";
        assert_eq!(trace.wire, want);
        assert_eq!(trace.stats.lines_echoed, 4);
        assert!(
            !trace.after_each_read[2].1,
            "nothing held once all is written"
        );
    }

    /// A quiet peer and the core at its first heartbeat's due time (30 s idle): the
    /// heartbeat is queued, not yet written.
    fn at_first_heartbeat() -> (ServerCore, usize, Instant) {
        let t0 = Instant::now();
        let mut core = ServerCore::new(t0, settings(DEFAULT_MAX_LINE, 1 << 20));
        let Admission::Admitted(key) =
            core.handle_accept(t0, SocketAddr::from(([127, 0, 0, 1], 9)))
        else {
            panic!("refused");
        };
        while core.poll_action().is_some() {}
        let due = t0 + Duration::from_secs(30);
        core.handle_wakeup(due, None);
        core.handle_timeout(due);
        (core, key, due)
    }

    /// Carries out every action, the kernel taking at most `room` bytes per write; returns
    /// the bytes written.
    fn write_all(core: &mut ServerCore, now: Instant, room: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        while let Some(action) = core.poll_action() {
            if let Action::Write(key) = action {
                let out = core.output(key);
                let n = room.min(out.len());
                wire.extend_from_slice(&out[..n]);
                core.handle_written(now, key, Ok(n));
            }
        }
        wire
    }

    /// A heartbeat to a peer with nothing waiting is written from the protocol's constant:
    /// nothing is copied into the shared buffer, and the peer holds no memory until the
    /// kernel refuses part of it. Whatever the kernel takes, the peer receives the heartbeat
    /// whole, and an echo decided after it (before or after the first write) comes behind it.
    #[test]
    fn a_heartbeat_by_reference_arrives_whole_and_before_what_follows() {
        for room in [usize::MAX, 4, 0] {
            for read_before_write in [false, true] {
                let (mut core, key, now) = at_first_heartbeat();
                assert_eq!(core.stats().heartbeats_sent, 1);
                assert!(core.output.is_empty() && !core.holds_memory(key));
                assert_eq!(core.pending_output(key), b"heartbeat\n".len());
                let exported = core.export_peer(now, key).map(|peer| peer.unsent);
                assert_eq!(exported.as_deref(), Some(&b"heartbeat\n"[..]));
                let mut wire = Vec::new();
                if !read_before_write {
                    wire = write_all(&mut core, now, room);
                    assert_eq!(
                        core.holds_memory(key),
                        wire.len() < 10,
                        "room {room}: only the refused rest is held"
                    );
                }
                core.handle_read(now, key, b"data\n");
                wire.extend(write_all(&mut core, now, usize::MAX));
                core.handle_writable(now, key);
                wire.extend(write_all(&mut core, now, usize::MAX));
                assert_eq!(
                    wire, b"heartbeat\nEchoing...data\n",
                    "room {room}, read before the write: {read_before_write}"
                );
                assert_eq!(core.pending_output(key), 0);
                assert!(core.output.is_empty() && !core.holds_memory(key));
            }
        }
    }

    #[test]
    fn a_lone_heartbeat_answer_is_not_echoed_on_either_path() {
        let reads: [&[u8]; 4] = [
            b"Echoing...heartbeat\n",
            b"Echoing...heartbeat\r\n",
            b"Echo",
            b"ing...heartbeat\nEchoing...heartbeat\n",
        ];
        for per_read in [true, false] {
            let trace = run(per_read, DEFAULT_MAX_LINE, 1 << 20, &reads, &[usize::MAX]);
            assert_eq!(trace.wire, b"", "per_read {per_read}");
            assert!(!trace.actions.iter().any(|a| matches!(a, Action::Write(_))));
            assert_eq!(trace.stats.lines_echoed, 0);
        }
    }

    proptest! {
        /// The per-read echo path and the line-by-line path: byte-identical output, the same
        /// actions and events in the same order, the same buffers and budget after every
        /// read, the same counters, for any input cut at any points, any line limit, and a
        /// kernel that takes all, some or none of each write (so output waits in the outbox
        /// and reading pauses at the output limit).
        #[test]
        fn per_read_and_line_by_line_paths_agree(
            wire in wire(80),
            cuts in prop::collection::vec(any::<usize>(), 0..16),
            max_line in prop_oneof![0usize..50, Just(DEFAULT_MAX_LINE)],
            limit in prop_oneof![Just(1usize << 20), 1usize..200],
            rooms in prop::collection::vec(prop_oneof![Just(usize::MAX), 0usize..64], 1..6),
        ) {
            let reads = cut_at(&wire, &cuts);
            let fast = run(true, max_line, limit, &reads, &rooms);
            let slow = run(false, max_line, limit, &reads, &rooms);
            prop_assert_eq!(fast, slow);
        }
    }
}
