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
        if let Some(last) = self.segments.last() {
            if last.key == key {
                return;
            }
            if last.start == self.output.len() {
                // An empty segment holds nothing: give its place to this one.
                self.segments.pop();
            }
        }
        if let Some(i) = self.segment_of(key) {
            let range = self.segment_range(i);
            if let Some(record) = self.conns.get_mut(key) {
                record.buffers.hold(&self.output[range]);
            }
            self.segment_done(i);
            self.account(now, key);
        }
        self.segments.push(Segment {
            key,
            start: self.output.len(),
        });
    }

    /// New output for `key` is at the end of the shared buffer: behind unsent output it
    /// joins the outbox (order is kept); either way the loop is asked to write.
    pub(super) fn output_ready(&mut self, now: Instant, key: usize) {
        let segment = self.segment_of(key).map(|i| (i, self.segment_range(i)));
        if let (Some(record), Some((i, range))) = (self.conns.get_mut(key), segment) {
            if !record.buffers.outbox().is_empty() {
                record.buffers.hold(&self.output[range]);
                self.segment_done(i);
            }
        }
        self.actions.push_back(Action::Write(key));
        self.account(now, key);
    }

    /// Bytes decided for `key` and not yet taken by the kernel.
    pub(super) fn pending_output(&self, key: usize) -> usize {
        let shared = self
            .segment_of(key)
            .map_or(0, |i| self.segment_range(i).len());
        shared + self.conns.get(key).map_or(0, |r| r.buffers.unsent())
    }

    /// The index of `key`'s segment, if it has output in the shared buffer. The newest
    /// first: the peer just served is almost always the last.
    pub(super) fn segment_of(&self, key: usize) -> Option<usize> {
        self.segments.iter().rposition(|s| s.key == key)
    }

    pub(super) fn segment_range(&self, i: usize) -> Range<usize> {
        let end = self
            .segments
            .get(i + 1)
            .map_or(self.output.len(), |next| next.start);
        self.segments[i].start..end
    }

    /// Segment `i` was written or moved. Done segments at the end give their bytes back; once
    /// none is left the buffer is empty (its capacity kept: no allocation next time).
    pub(super) fn segment_done(&mut self, i: usize) {
        segment_done(&mut self.segments, &mut self.output, i);
    }
}

/// [`ServerCore::segment_done`], for a caller that holds a peer's record meanwhile.
pub(super) fn segment_done(segments: &mut Vec<Segment>, output: &mut Vec<u8>, i: usize) {
    segments[i].key = DONE;
    while let Some(last) = segments.last() {
        if last.key != DONE {
            return;
        }
        output.truncate(last.start);
        segments.pop();
    }
}
