//! Output: framing what a peer sent and queueing the echoes, protocol lines, and the one
//! shared output buffer that lets a peer's output cost no allocation unless the kernel
//! refuses it (then it moves to the peer's own outbox, in order). Part of [`ServerCore`].
//!
//! The shared buffer is cut into segments, one per peer with output not yet written, in
//! the order it was decided: a batch of timers queues heartbeats for many peers before the
//! loop writes any. A segment is done once written (or moved to its peer's outbox); the
//! buffer is emptied, keeping its capacity, once every segment is done.

use std::ops::Range;
use std::time::Instant;

use log::debug;

use super::{Action, Segment, ServerCore, DONE};
use crate::cores::escape::Escaped;
use crate::cores::protocol::{self, classify, Frame, Message};

impl ServerCore {
    /// Frames what was read (`Some(bytes)`; `None`: the end of the input, which completes a
    /// last line without a newline) and queues the echoes of its data lines.
    pub(super) fn echo(&mut self, now: Instant, key: usize, input: Option<&[u8]>) {
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
        let mut on_frame = |frame: Frame<'_>| match frame {
            Frame::Line(line) => match classify(line) {
                Message::HeartbeatReply => {}
                Message::Data(data) => {
                    debug!("data: {:.200}", Escaped(data));
                    protocol::encode_echo(output, data);
                    stats.on_line_echoed();
                }
            },
            Frame::TooLong => {
                protocol::encode_too_long(output, max_line);
                stats.on_line_too_long();
            }
        };
        match input {
            Some(bytes) => record.buffers.feed(max_line, bytes, &mut on_frame),
            None => record.buffers.finish(&mut on_frame),
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

    /// Makes the end of the shared output buffer `key`'s, so what is encoded next is its. If
    /// an earlier segment of it is still there (not written yet), that output moves to its
    /// outbox first, in order.
    pub(super) fn claim_output(&mut self, now: Instant, key: usize) {
        let output_len = self.output.len();
        if let Some(last) = self.segments.list.last() {
            if last.key == key {
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
        shared + self.conns.get(key).map_or(0, |r| r.buffers.unsent())
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
mod tests {
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
