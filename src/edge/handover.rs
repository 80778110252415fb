//! The live upgrade's channel: a Unix socket pair private to the old and the new server
//! process, carrying `cores::upgrade::wire` frames and, beside them, file descriptors
//! (SCM_RIGHTS).
//!
//! Owns the pair, handing the new process its end, sending a frame with its descriptors and
//! receiving one. Does not own what the frames say or when they are sent
//! (`cores::upgrade`), nor which sockets travel (the server loop's).
//!
//! The new process gets its end as its standard input, and [`ENV`] says so (`=0`): never a
//! path in the file system, which another user could reach. Standard input, because taking
//! over any other inherited descriptor number means `OwnedFd::from_raw_fd`, which is
//! `unsafe` and the project has none; the standard library hands out descriptor 0 safely.
//! Received descriptors come as `OwnedFd` from rustix for the same reason (nix gives raw
//! numbers).
//!
//! A frame's descriptors ride on its five header bytes, sent in one `sendmsg`; the body
//! follows as plain bytes. The receiver reads the header with `recvmsg` and room for
//! [`FDS_PER_FRAME`] descriptors, then exactly the body: reads never straddle two frames,
//! so descriptors never arrive with the wrong frame. Reads and writes wait at most
//! [`IO_WAIT`]: a peer process that stops reading or writing mid-frame is an error, not a
//! hang.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use crate::cores::upgrade::wire::{Message, WireError, HEADER};

/// Set in the new process's environment: the descriptor of its end of the channel (always
/// `0`, its standard input; see the module notes).
pub const ENV: &str = "HEARTBEAT_UPGRADE_FD";

/// Descriptors sent with one frame at most: near the kernel's limit of 253 per message, so
/// that 10,000 peers cost 40 frames.
pub const FDS_PER_FRAME: usize = 250;

/// The longest one read or write on the channel waits for the other process.
pub const IO_WAIT: Duration = Duration::from_secs(5);

/// Why the channel could not carry a frame.
#[derive(Debug)]
pub enum HandoverError {
    /// The other process closed its end (it exited) between frames.
    Closed,
    /// The bytes were not a frame, or the format is not this binary's.
    Wire(WireError),
    /// More descriptors came than there was room for: they are lost, so is the frame.
    Truncated,
    /// `HEARTBEAT_UPGRADE_FD` is set but names no usable channel.
    NotAChannel(String),
    Io(io::Error),
}

impl std::fmt::Display for HandoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandoverError::Closed => f.write_str("the other process closed the channel"),
            HandoverError::Wire(error) => error.fmt(f),
            HandoverError::Truncated => f.write_str("descriptors lost in transit"),
            HandoverError::NotAChannel(why) => write!(f, "{ENV}: {why}"),
            HandoverError::Io(error) => write!(f, "upgrade channel: {error}"),
        }
    }
}

impl std::error::Error for HandoverError {}

impl From<io::Error> for HandoverError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::UnexpectedEof => HandoverError::Closed,
            _ => HandoverError::Io(error),
        }
    }
}

/// A frame received: the message and the descriptors that came with it, in order.
#[derive(Debug)]
pub struct Received {
    pub message: Message,
    pub fds: Vec<OwnedFd>,
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
}

impl std::os::fd::AsFd for Channel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Channel {
    /// A new pair: this process's end, and the end for [`spawn`].
    pub fn pair() -> io::Result<(Channel, OwnedFd)> {
        let (ours, theirs) = UnixStream::pair()?;
        Ok((Channel::from_stream(ours)?, OwnedFd::from(theirs)))
    }

    /// A channel over a connected stream (a test's, or one end of [`pair`](Self::pair)).
    pub fn from_stream(stream: UnixStream) -> io::Result<Channel> {
        stream.set_read_timeout(Some(IO_WAIT))?;
        stream.set_write_timeout(Some(IO_WAIT))?;
        Ok(Channel { stream })
    }

    /// This process's end if it was started to take over ([`ENV`] set); `None` otherwise.
    pub fn inherited() -> Result<Option<Channel>, HandoverError> {
        let Some(value) = std::env::var_os(ENV) else {
            return Ok(None);
        };
        if value != "0" {
            let why = format!("{value:?} is not 0: the channel is passed as standard input only");
            return Err(HandoverError::NotAChannel(why));
        }
        let fd = io::stdin().as_fd().try_clone_to_owned()?;
        let stream = UnixStream::from(fd);
        // A terminal or /dev/null on descriptor 0 (someone set the variable by hand) is no
        // channel: refuse it rather than wait on it.
        if let Err(e) = stream.peer_addr() {
            let why = format!("standard input is not the upgrade channel ({e})");
            return Err(HandoverError::NotAChannel(why));
        }
        Channel::from_stream(stream)
            .map(Some)
            .map_err(HandoverError::Io)
    }

    /// How long the next reads may wait (a deadline's time left); [`IO_WAIT`] otherwise.
    pub fn set_wait(&mut self, wait: Duration) {
        // Zero would mean "forever" to the kernel.
        let wait = wait.max(Duration::from_millis(1));
        let _ = self.stream.set_read_timeout(Some(wait));
    }

    /// Its descriptor, to watch for readability in a poll loop.
    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Sends `message` with `fds` (at most [`FDS_PER_FRAME`]) attached.
    pub fn send(&mut self, message: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > FDS_PER_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many descriptors for one frame",
            ));
        }
        let frame = message.encode();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_FRAME))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("no room for the descriptors"));
        }
        // The descriptors ride on the first byte; what this call did not send follows.
        let header = [IoSlice::new(&frame[..HEADER])];
        let sent = loop {
            match sendmsg(&self.stream, &header, &mut control, SendFlags::NOSIGNAL) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if sent == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.stream.write_all(&frame[sent..])
    }

    /// Waits for the next frame (at most [`IO_WAIT`] between its bytes).
    pub fn recv(&mut self) -> Result<Received, HandoverError> {
        let mut header = [0u8; HEADER];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_FRAME))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            let mut iov = [IoSliceMut::new(&mut header)];
            match recvmsg(
                &self.stream,
                &mut iov,
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(got) => break got,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(HandoverError::Io(e.into())),
            }
        };
        if got.bytes == 0 {
            return Err(HandoverError::Closed);
        }
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if got.flags.contains(ReturnFlags::CTRUNC) {
            return Err(HandoverError::Truncated);
        }
        self.stream.read_exact(&mut header[got.bytes..])?;
        let prefix = [header[0], header[1], header[2], header[3]];
        let length = Message::frame_length(prefix).map_err(HandoverError::Wire)?;
        let mut frame = vec![0; length];
        frame[0] = header[4];
        self.stream.read_exact(&mut frame[1..])?;
        let message = Message::decode(&frame).map_err(HandoverError::Wire)?;
        Ok(Received { message, fds })
    }
}

/// Starts `exe` with `args` to take over, its end of the channel as its standard input and
/// [`ENV`] saying so. Its output and error go where this process's go.
pub fn spawn(exe: &Path, args: &[OsString], theirs: OwnedFd) -> io::Result<Child> {
    Command::new(exe)
        .args(args)
        .env(ENV, "0")
        .stdin(Stdio::from(theirs))
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cores::upgrade::wire::{PeerState, VERSION};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (Channel, Channel) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            Channel::from_stream(a).unwrap(),
            Channel::from_stream(b).unwrap(),
        )
    }

    #[test]
    fn sockets_and_their_records_cross_between_threads_and_still_work() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..FDS_PER_FRAME + 3 {
            clients.push(TcpStream::connect(addr).unwrap());
            accepted.push(listener.accept().unwrap().0);
        }
        let (mut old, mut new) = pair();
        let taker = std::thread::spawn(move || {
            let mut frames = Vec::new();
            for _ in 0..3 {
                frames.push(new.recv().unwrap());
            }
            frames
        });
        let fds: Vec<_> = accepted.iter().map(|s| s.as_fd()).collect();
        old.send(&Message::Listeners(vec![addr]), &[listener.as_fd()])
            .unwrap();
        for (n, batch) in fds.chunks(FDS_PER_FRAME).enumerate() {
            let records = batch
                .iter()
                .map(|_| PeerState {
                    heartbeats_sent: n as u32,
                    partial: b"part".to_vec(),
                    ..PeerState::default()
                })
                .collect();
            old.send(&Message::Peers(records), batch).unwrap();
        }
        let frames = taker.join().unwrap();
        assert_eq!(frames[0].fds.len(), 1);
        assert_eq!(frames[1].fds.len(), FDS_PER_FRAME);
        assert_eq!(frames[2].fds.len(), 3);
        let Message::Peers(records) = &frames[2].message else {
            panic!("{:?}", frames[2].message);
        };
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].heartbeats_sent, 1);
        // The received descriptors are the same connections: writing on the last one
        // reaches the last client, after the old process's copies are closed.
        drop(accepted);
        let last = frames[2].fds.last().unwrap().try_clone().unwrap();
        let mut last = TcpStream::from(last);
        last.write_all(b"heartbeat\n").unwrap();
        let mut client = clients.pop().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 10];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"heartbeat\n");
        // And the listener still listens.
        let listener = TcpListener::from(frames[0].fds[0].try_clone().unwrap());
        let _late = TcpStream::connect(addr).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn a_wrong_version_is_refused_and_a_closed_channel_is_said() {
        let (mut old, mut new) = pair();
        let mut frame = Message::Offer {
            version: VERSION,
            fixed: vec![],
        }
        .encode();
        frame[9..11].copy_from_slice(&(VERSION + 1).to_le_bytes());
        old.stream.write_all(&frame).unwrap();
        match new.recv() {
            Err(HandoverError::Wire(WireError::Version { got })) => assert_eq!(got, VERSION + 1),
            other => panic!("{other:?}"),
        }
        drop(old);
        assert!(matches!(new.recv(), Err(HandoverError::Closed)));
    }

    #[test]
    fn a_frame_cut_short_or_too_long_is_an_error() {
        let (mut old, mut new) = pair();
        old.stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
        old.stream.write_all(&[2]).unwrap();
        assert!(matches!(new.recv(), Err(HandoverError::Wire(_))));
        let (mut old, mut new) = pair();
        let frame = Message::Refuse("why".into()).encode();
        old.stream.write_all(&frame[..frame.len() - 1]).unwrap();
        drop(old);
        assert!(matches!(new.recv(), Err(HandoverError::Closed)));
    }

    #[test]
    fn a_process_started_to_take_over_finds_its_channel_on_standard_input() {
        // `sh` stands in for the new binary: it says what ENV holds on its channel.
        let (mut ours, theirs) = Channel::pair().unwrap();
        let args = ["-c".into(), format!("printf \"${ENV}\" >&0").into()];
        let mut child = spawn(Path::new("/bin/sh"), &args, theirs).unwrap();
        let mut said = [0u8; 1];
        ours.stream.read_exact(&mut said).unwrap();
        assert_eq!(&said, b"0");
        assert!(child.wait().unwrap().success());
        let missing = spawn(
            Path::new("/nonexistent/heartbeat-server"),
            &[],
            Channel::pair().unwrap().1,
        );
        assert_eq!(missing.unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
