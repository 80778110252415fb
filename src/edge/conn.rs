//! Moving bytes on one non-blocking connection: reading until the kernel has no more,
//! writing until it takes no more, and keeping what it refused.
//!
//! The I/O half of a connection's memory: [`send`] and [`flush`] move the output a
//! [`Buffers`] (the sans-IO half, in `cores::buffers`) holds to a stream, and [`read_once`]
//! reads into the loop's scratch buffer, whose bytes the caller feeds to its `Buffers`. Used
//! by both loops. It decides nothing about what the bytes mean, nor how much to read a turn
//! (`edge::turn`'s).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use rustix::net::{RecvFlags, SendFlags};

use crate::cores::buffers::Buffers;
use crate::edge::net::{interrupted, would_block};

/// A connected socket read and written with `recv`/`send` made directly by rustix: the same
/// system calls as std's, without the C library's wrappers around them (on Linux, each of
/// those marks the thread cancellable and back, and goes through `errno`). The server reads
/// and writes each plain peer's bytes through it: with many quiet peers, a heartbeat round is
/// one `send` and one `recv` and little else in user space.
pub struct Direct<'a, S: AsFd>(pub &'a S);

impl<S: AsFd> Read for Direct<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // (bytes placed in `buf`, bytes the datagram had): the same for a stream.
        let (read, _) = rustix::net::recv(self.0, buf, RecvFlags::empty())?;
        Ok(read)
    }
}

impl<S: AsFd> Write for Direct<'_, S> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // As std's `TcpStream`: a peer gone must be an error, not a SIGPIPE.
        Ok(rustix::net::send(self.0, bytes, SendFlags::NOSIGNAL)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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

/// Sends `bytes` after any output already waiting in `buffers`; what the kernel refuses is
/// kept there. Output that fits is written straight from `bytes` and never copied.
pub fn send(stream: &mut impl Write, buffers: &mut Buffers, bytes: &[u8]) -> io::Result<()> {
    if buffers.unsent() > 0 {
        buffers.hold(bytes);
        return flush(stream, buffers).map(|_| ());
    }
    let written = write_until_blocked(stream, bytes)?;
    buffers.hold(&bytes[written..]);
    Ok(())
}

/// Writes the output waiting in `buffers` until none is left or the kernel would block.
/// `Ok(true)`: nothing waits any more (and the memory is given back).
pub fn flush(stream: &mut impl Write, buffers: &mut Buffers) -> io::Result<bool> {
    if buffers.unsent() == 0 {
        return Ok(true);
    }
    let written = write_until_blocked(stream, buffers.outbox())?;
    buffers.sent(written);
    Ok(buffers.unsent() == 0)
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

    #[test]
    fn direct_moves_bytes_and_tells_no_data_from_a_peer_gone() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let read = read_once(&mut Direct(&ours), &mut buf);
        assert!(matches!(read, ReadResult::WouldBlock), "{read:?}");
        assert_eq!(
            write_until_blocked(&mut Direct(&theirs), b"Heartbeat\n").unwrap(),
            10
        );
        match read_once(&mut Direct(&ours), &mut buf) {
            ReadResult::Data(n) => assert_eq!(&buf[..n], b"Heartbeat\n"),
            other => panic!("expected the line, got {other:?}"),
        }
        drop(theirs);
        let read = read_once(&mut Direct(&ours), &mut buf);
        assert!(matches!(read, ReadResult::Eof), "{read:?}");
        // An error the caller can act on (the process ignores SIGPIPE as well).
        let error = write_until_blocked(&mut Direct(&ours), b"x").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn refused_output_is_kept_in_order_and_released_when_flushed() {
        let mut buffers = Buffers::default();
        let mut kernel = Kernel {
            taken: Vec::new(),
            room: 4,
        };
        send(&mut kernel, &mut buffers, b"first\n").unwrap();
        assert_eq!(buffers.unsent(), 2);
        send(&mut kernel, &mut buffers, b"second\n").unwrap();
        assert_eq!(buffers.unsent(), 9);
        assert!(!flush(&mut kernel, &mut buffers).unwrap(), "still no room");
        kernel.room = 100;
        assert!(flush(&mut kernel, &mut buffers).unwrap());
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
        send(&mut kernel, &mut buffers, b"heartbeat\n").unwrap();
        assert!(buffers.is_unallocated());
        assert_eq!(kernel.taken, b"heartbeat\n");
    }

    #[test]
    fn flushing_nothing_writes_nothing_and_a_broken_stream_is_an_error() {
        let mut buffers = Buffers::default();
        let mut full = Kernel {
            taken: Vec::new(),
            room: 0,
        };
        assert!(flush(&mut full, &mut buffers).unwrap(), "nothing waits");
        send(&mut full, &mut buffers, b"kept\n").unwrap();
        assert_eq!(buffers.outbox(), b"kept\n", "a full kernel is not an error");
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(flush(&mut Broken, &mut buffers).is_err());
        assert!(send(&mut Broken, &mut Buffers::default(), b"x\n").is_err());
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
