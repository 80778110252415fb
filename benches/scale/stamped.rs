//! Lines read from a tokio `TcpStream` with the kernel's receive time of each: the silent
//! peers' clock (figure 5). `SO_TIMESTAMPNS` makes every `recvmsg` carry the time its last
//! segment reached this socket, taken by the kernel as the segment came in. On loopback that
//! is when the server's send reached the stack, whatever this process's one thread was doing
//! then: a peer busy with other peers' lines does not make a server's close look late.
//!
//! `SO_TIMESTAMPNS` is Linux's: elsewhere every stamp is `None`.
//!
//! Owns only the reading; what a line means is the driver's (`drivers::silent_peer`).

use std::io;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// The lines of this test's protocol are short; a longer one is an error.
const BUFFER: usize = 256;

/// One line as it arrived.
pub struct StampedLine {
    /// Its bytes, the newline included; empty at end of stream.
    pub bytes: Vec<u8>,
    /// When this task got it.
    pub read_at: Instant,
    /// When the kernel received the segment that completed it (`CLOCK_REALTIME`, so only
    /// differences between two stamps mean anything), or `None` when the kernel gave none.
    pub kernel_at: Option<Duration>,
    /// Whether the same read completed another line too: the stamp is then the later
    /// segment's, not this line's.
    pub shared_read: bool,
}

pub struct StampedReader {
    stream: TcpStream,
    buf: [u8; BUFFER],
    start: usize,
    end: usize,
    /// The stamp and task time of the read that filled `buf[..end]`, and how many lines it
    /// completed.
    last_read: (Option<Duration>, Instant, usize),
    control: Vec<u8>,
}

impl StampedReader {
    /// Turns on kernel receive timestamps for `stream`.
    pub fn new(stream: TcpStream) -> io::Result<StampedReader> {
        #[cfg(target_os = "linux")]
        nix::sys::socket::setsockopt(
            &stream,
            nix::sys::socket::sockopt::ReceiveTimestampns,
            &true,
        )?;
        Ok(StampedReader {
            stream,
            buf: [0; BUFFER],
            start: 0,
            end: 0,
            last_read: (None, Instant::now(), 0),
            #[cfg(target_os = "linux")]
            control: nix::cmsg_space!(nix::sys::time::TimeSpec),
            #[cfg(not(target_os = "linux"))]
            control: Vec::new(),
        })
    }

    /// For writing: the reader owns the stream.
    pub fn get_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// The next line, or an empty one at end of stream (a partial line before the end is an
    /// error, as is a line longer than the buffer).
    pub async fn next_line(&mut self) -> io::Result<StampedLine> {
        loop {
            if let Some(at) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let bytes = self.buf[self.start..=self.start + at].to_vec();
                self.start += at + 1;
                let (kernel_at, read_at, lines) = &mut self.last_read;
                *lines += 1;
                let shared_read = *lines > 1 || self.buf[self.start..self.end].contains(&b'\n');
                return Ok(StampedLine {
                    bytes,
                    read_at: *read_at,
                    kernel_at: *kernel_at,
                    shared_read,
                });
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == BUFFER {
                return Err(io::Error::other("a line longer than 256 bytes"));
            }
            let (n, stamp) = self.read().await?;
            if n == 0 {
                if self.end > 0 {
                    return Err(io::Error::other("end of stream inside a line"));
                }
                return Ok(StampedLine {
                    bytes: Vec::new(),
                    read_at: Instant::now(),
                    kernel_at: stamp,
                    shared_read: false,
                });
            }
            self.end += n;
            self.last_read = (stamp, Instant::now(), 0);
        }
    }

    async fn read(&mut self) -> io::Result<(usize, Option<Duration>)> {
        loop {
            self.stream.readable().await?;
            let (stream, buf, control) =
                (&self.stream, &mut self.buf[self.end..], &mut self.control);
            match stream.try_io(tokio::io::Interest::READABLE, || {
                recv_stamped(stream, buf, control)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

/// One `recvmsg`: the bytes read, and the kernel's stamp of the last segment among them.
#[cfg(target_os = "linux")]
fn recv_stamped(
    stream: &TcpStream,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, Option<Duration>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )?;
    let stamp = msg.cmsgs().ok().and_then(|mut all| {
        all.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmTimestampns(ts) => Some(Duration::new(
                u64::try_from(ts.tv_sec()).unwrap_or(0),
                u32::try_from(ts.tv_nsec()).unwrap_or(0),
            )),
            _ => None,
        })
    });
    Ok((msg.bytes, stamp))
}

#[cfg(not(target_os = "linux"))]
fn recv_stamped(
    stream: &TcpStream,
    buf: &mut [u8],
    _control: &mut [u8],
) -> io::Result<(usize, Option<Duration>)> {
    stream.try_read(buf).map(|n| (n, None))
}
