//! Moving bytes on one non-blocking connection: reading until the kernel has no more,
//! writing until it takes no more, and keeping what it refused.
//!
//! Owns [`Buffers`], the per-connection memory that exists only while it holds bytes (a
//! partial incoming line, output the kernel would not take), so an idle connection owns no
//! heap buffer. Used by both loops. It decides nothing about what the bytes mean.

use std::io::{self, Read, Write};

use mio::Token;

use crate::cores::protocol::{Frame, LineDecoder};
use crate::edge::net::{interrupted, would_block};

/// Tokens carry the slab key in the low 32 bits and a generation above it, so an event for a
/// closed connection whose slot was reused is recognised and ignored. Keys stay far below
/// 2^32 − 16 (they are bounded by the open-file limit), so a connection token never equals
/// the loops' fixed tokens at the top of the range.
pub fn token(key: usize, generation: u32) -> Token {
    Token((key & 0xffff_ffff) | (generation as usize) << 32)
}

/// The slab key and generation inside a connection token.
pub fn split(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

/// What one read found.
#[derive(Debug)]
pub enum ReadResult {
    /// This many bytes are at the front of the buffer.
    Data(usize),
    /// The peer closed its sending side.
    Eof,
    /// Nothing more until the next readable event.
    WouldBlock,
    /// The connection is broken (reset, ...).
    Failed(io::Error),
}

/// Reads once into `buf`, retrying if a signal interrupted the call.
pub fn read_once(stream: &mut impl Read, buf: &mut [u8]) -> ReadResult {
    loop {
        return match stream.read(buf) {
            Ok(0) => ReadResult::Eof,
            Ok(n) => ReadResult::Data(n),
            Err(e) if interrupted(&e) => continue,
            Err(e) if would_block(&e) => ReadResult::WouldBlock,
            Err(e) => ReadResult::Failed(e),
        };
    }
}

/// Writes from `bytes` until all are written or the kernel would block; returns how many
/// were written. A short write is not an error: the caller keeps the rest.
pub fn write_until_blocked(stream: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if interrupted(&e) => {}
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

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

    /// Sends `bytes` after any output already waiting; what the kernel refuses is kept.
    pub fn send(&mut self, stream: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
        if self.unsent() > 0 {
            if let Some(held) = self.0.as_deref_mut() {
                held.outbox.extend_from_slice(bytes);
            }
            return self.flush(stream).map(|_| ());
        }
        let written = write_until_blocked(stream, bytes)?;
        if written < bytes.len() {
            let held = self.0.get_or_insert_with(Box::default);
            held.outbox.extend_from_slice(&bytes[written..]);
        }
        Ok(())
    }

    /// Writes waiting output until done or the kernel would block. `Ok(true)`: nothing waits.
    pub fn flush(&mut self, stream: &mut impl Write) -> io::Result<bool> {
        let Some(held) = self.0.as_deref_mut() else {
            return Ok(true);
        };
        let written = write_until_blocked(stream, &held.outbox)?;
        held.outbox.drain(..written);
        let drained = held.outbox.is_empty();
        if drained {
            // Give the memory back: a connection that spoke once in a burst should not keep
            // a burst-sized buffer for the rest of its idle life.
            held.outbox = Vec::new();
        }
        self.release_if_empty();
        Ok(drained)
    }

    /// Output the kernel has not taken yet, oldest first (empty when nothing waits).
    pub fn outbox(&self) -> &[u8] {
        self.0.as_ref().map_or(&[][..], |held| &held.outbox[..])
    }

    /// Keeps `bytes` after any output already waiting, for a later write.
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

    /// A socket stand-in that takes at most `room` bytes, then would block.
    struct Kernel {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Kernel {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

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
    fn refused_output_is_kept_in_order_and_released_when_flushed() {
        let mut buffers = Buffers::default();
        let mut kernel = Kernel {
            taken: Vec::new(),
            room: 4,
        };
        buffers.send(&mut kernel, b"first\n").unwrap();
        assert_eq!(buffers.unsent(), 2);
        buffers.send(&mut kernel, b"second\n").unwrap();
        assert_eq!(buffers.unsent(), 9);
        assert!(!buffers.flush(&mut kernel).unwrap(), "still no room");
        kernel.room = 100;
        assert!(buffers.flush(&mut kernel).unwrap());
        assert_eq!(kernel.taken, b"first\nsecond\n");
        assert!(buffers.is_unallocated());
    }

    #[test]
    fn output_that_fits_is_never_buffered() {
        let mut buffers = Buffers::default();
        let mut kernel = Kernel {
            taken: Vec::new(),
            room: 100,
        };
        buffers.send(&mut kernel, b"heartbeat\n").unwrap();
        assert!(buffers.is_unallocated());
        assert_eq!(kernel.taken, b"heartbeat\n");
    }

    #[test]
    fn tokens_round_trip_and_differ_by_generation() {
        assert_eq!(split(token(7, 3)), (7, 3));
        assert_eq!(split(token(0, u32::MAX)), (0, u32::MAX));
        assert_ne!(token(7, 3), token(7, 4));
        // The loops' fixed tokens are the top few values; a key would have to reach
        // 2^32 - 16 (a billion times the open-file limit) to collide with them.
        assert!(token(0xffff_ffef, u32::MAX).0 < usize::MAX - 15);
    }

    #[test]
    fn read_once_maps_results() {
        let mut buf = [0u8; 8];
        assert!(matches!(
            read_once(&mut &b"abc"[..], &mut buf),
            ReadResult::Data(3)
        ));
        assert!(matches!(
            read_once(&mut &b""[..], &mut buf),
            ReadResult::Eof
        ));
    }
}
