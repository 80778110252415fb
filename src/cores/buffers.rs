//! A connection's own memory, sans-IO: the partial line read so far and the output the
//! kernel has not taken yet, allocated only while either holds bytes, so an idle connection
//! owns no heap buffer (`Buffers` is one pointer).
//!
//! Owns the bytes and when memory is given back. It touches no socket and knows no
//! `io::Write`: a core `hold`s output and is told what was `sent`; moving the bytes to and
//! from a stream is `edge::conn`'s. What the lines mean is the caller's.

mod handover;

use crate::cores::protocol::{Frame, LineDecoder};

/// A connection's line decoder and unsent output, boxed and allocated only while either
/// holds something: `None` costs one pointer.
#[derive(Debug, Default)]
pub struct Buffers(Option<Box<Held>>);

#[derive(Debug, Default)]
struct Held {
    decoder: LineDecoder,
    outbox: Vec<u8>,
}

impl Buffers {
    /// Frames `input` (bytes just read), calling `on_frame` for each line. Whole lines are
    /// passed straight from `input`; only a split line is copied and kept.
    pub fn feed(&mut self, max_line: usize, input: &[u8], on_frame: impl FnMut(Frame<'_>)) {
        match self.0.as_deref_mut() {
            Some(held) => held.decoder.feed(max_line, input, on_frame),
            None => {
                let mut decoder = LineDecoder::new();
                decoder.feed(max_line, input, on_frame);
                if !decoder.is_at_rest() {
                    self.0 = Some(Box::new(Held {
                        decoder,
                        outbox: Vec::new(),
                    }));
                }
            }
        }
        self.release_if_empty();
    }

    /// The input ended: passes on a last line that had no `\n` (see [`LineDecoder::finish`]).
    pub fn finish(&mut self, on_frame: impl FnMut(Frame<'_>)) {
        if let Some(held) = self.0.as_deref_mut() {
            held.decoder.finish(on_frame);
        }
        self.release_if_empty();
    }

    /// Output the kernel has not taken yet, oldest first (empty when nothing waits).
    pub fn outbox(&self) -> &[u8] {
        self.0.as_ref().map_or(&[][..], |held| &held.outbox[..])
    }

    /// Keeps `bytes` after any output already waiting, for a later write. Nothing is
    /// allocated for an empty `bytes`.
    pub fn hold(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let held = self.0.get_or_insert_with(Box::default);
        held.outbox.extend_from_slice(bytes);
    }

    /// The kernel took the first `n` bytes of [`outbox`](Self::outbox); memory is given back
    /// once nothing waits.
    pub fn sent(&mut self, n: usize) {
        let Some(held) = self.0.as_deref_mut() else {
            return;
        };
        held.outbox.drain(..n.min(held.outbox.len()));
        if held.outbox.is_empty() {
            // A connection that spoke once in a burst should not keep a burst-sized buffer
            // for the rest of its idle life.
            held.outbox = Vec::new();
        }
        self.release_if_empty();
    }

    /// Bytes of output the kernel has not taken yet.
    pub fn unsent(&self) -> usize {
        self.0.as_ref().map_or(0, |held| held.outbox.len())
    }

    /// Heap bytes this connection's buffers hold: 0 while idle.
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |held| {
            std::mem::size_of::<Held>() + held.decoder.heap_bytes() + held.outbox.capacity()
        })
    }

    /// True when this connection holds no heap memory for buffers.
    pub fn is_unallocated(&self) -> bool {
        self.0.is_none()
    }

    fn release_if_empty(&mut self) {
        if let Some(held) = &self.0 {
            if held.outbox.is_empty() && held.decoder.is_at_rest() {
                self.0 = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buffers: &mut Buffers, input: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        buffers.feed(1024, input, |frame| {
            if let Frame::Line(line) = frame {
                out.push(line.to_vec());
            }
        });
        out
    }

    #[test]
    fn an_idle_connection_costs_one_pointer() {
        assert_eq!(std::mem::size_of::<Buffers>(), std::mem::size_of::<usize>());
        assert_eq!(Buffers::default().heap_bytes(), 0);
    }

    #[test]
    fn whole_lines_leave_nothing_allocated() {
        let mut buffers = Buffers::default();
        assert_eq!(
            lines(&mut buffers, b"a\nbb\n"),
            vec![b"a".to_vec(), b"bb".to_vec()]
        );
        assert!(buffers.is_unallocated());
    }

    #[test]
    fn a_split_line_is_held_then_released() {
        let mut buffers = Buffers::default();
        assert!(lines(&mut buffers, b"hel").is_empty());
        assert!(!buffers.is_unallocated());
        assert_eq!(lines(&mut buffers, b"lo\n"), vec![b"hello".to_vec()]);
        assert!(buffers.is_unallocated());
    }

    #[test]
    fn held_output_keeps_its_order_and_is_released_once_all_is_sent() {
        let mut buffers = Buffers::default();
        buffers.hold(b"");
        assert!(
            buffers.is_unallocated(),
            "nothing to hold allocates nothing"
        );
        buffers.hold(b"first\n");
        buffers.hold(b"second\n");
        assert_eq!(buffers.outbox(), b"first\nsecond\n");
        buffers.sent(4);
        assert_eq!(buffers.outbox(), b"t\nsecond\n");
        assert_eq!(buffers.unsent(), 9);
        buffers.sent(100);
        assert_eq!(buffers.unsent(), 0);
        assert!(buffers.is_unallocated());
    }

    #[test]
    fn output_held_behind_a_split_line_keeps_the_line() {
        let mut buffers = Buffers::default();
        assert!(lines(&mut buffers, b"par").is_empty());
        buffers.hold(b"out\n");
        buffers.sent(4);
        assert!(!buffers.is_unallocated(), "the split line is still held");
        assert_eq!(lines(&mut buffers, b"t\n"), vec![b"part".to_vec()]);
        assert!(buffers.is_unallocated());
    }
}
