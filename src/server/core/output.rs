//! Output: framing what a peer sent and queueing the echoes, protocol lines, and the one
//! shared output buffer that lets a peer's output cost no allocation unless the kernel
//! refuses it (then it moves to the peer's own outbox, in order). Part of [`ServerCore`].

use log::debug;

use super::{Action, ServerCore};
use crate::cores::escape::Escaped;
use crate::cores::protocol::{self, classify, Frame, Message};

impl ServerCore {
    /// Frames what was read (`Some(bytes)`; `None`: the end of the input, which completes a
    /// last line without a newline) and queues the echoes of its data lines.
    pub(super) fn echo(&mut self, key: usize, input: Option<&[u8]>) {
        self.claim_output(key);
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
            self.output_ready(key);
        } else {
            self.account(key);
        }
    }

    /// Queues one protocol line for `key`.
    pub(super) fn queue_line(&mut self, key: usize, line: &[u8]) {
        self.claim_output(key);
        protocol::encode_line(&mut self.output, line);
        self.output_ready(key);
    }

    /// Makes the shared output buffer `key`'s. If another peer's output is still in it (the
    /// loop did not write it yet), that output moves to its own outbox first, in order.
    pub(super) fn claim_output(&mut self, key: usize) {
        match self.output_key {
            Some(owner) if owner == key => {}
            Some(owner) => {
                if let Some(record) = self.conns.get_mut(owner) {
                    record.buffers.hold(&self.output);
                }
                self.output.clear();
                self.output_key = Some(key);
                self.account(owner);
            }
            None => self.output_key = Some(key),
        }
    }

    /// New output for `key` is in the shared buffer: behind unsent output it joins the
    /// outbox (order is kept); either way the loop is asked to write.
    pub(super) fn output_ready(&mut self, key: usize) {
        if let Some(record) = self.conns.get_mut(key) {
            if !record.buffers.outbox().is_empty() {
                record.buffers.hold(&self.output);
                self.output.clear();
                self.output_key = None;
            }
        }
        self.actions.push_back(Action::Write(key));
        self.account(key);
    }

    /// Bytes decided for `key` and not yet taken by the kernel.
    pub(super) fn pending_output(&self, key: usize) -> usize {
        let shared = match self.output_key == Some(key) {
            true => self.output.len(),
            false => 0,
        };
        shared + self.conns.get(key).map_or(0, |r| r.buffers.unsent())
    }
}
