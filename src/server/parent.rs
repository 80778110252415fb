//! A worker's link to the process that started it (`heartbeat-server --workers N`): its
//! stdin, one end of a Unix socket pair the parent made, read by the loop like any socket (no
//! thread). What the parent writes on it, one byte each ([`ASK`], [`UPGRADE`], [`CHANNEL`]):
//! a byte asks for the counts now (the loop hands them to the callback it was given, which
//! writes them for the parent); a byte with a descriptor beside it (SCM_RIGHTS) gives the
//! worker the channel of a live upgrade, to hand its peers over on ([`UPGRADE`]) or to take
//! them over from ([`CHANNEL`], [`channel_from_parent`]). The link's end (the parent gone,
//! however it ended, `kill -9` included) stops the server as SIGTERM would, so that no orphan
//! keeps the port.
//!
//! Owns the link's registration, its bytes and what its events mean. Does not own what the
//! counts are turned into or where they go (the `workers` module's callback), the stop itself
//! (`edge::stop`), nor the upgrade (`upgrading`).

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use log::warn;
use mio::unix::SourceFd;
use mio::{Interest, Token};
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use crate::edge::handover::{Channel, IO_WAIT};
use crate::edge::net::SetupError;
use crate::ops::metrics::Gauges;
use crate::ops::stats::ServerStats;

/// The link's token, below the metrics scrapers' slots; peer tokens never reach it (see
/// `conn::token`).
pub const PARENT: Token = Token(usize::MAX - 20);

/// Parent to worker: send your counts.
pub const ASK: u8 = b'?';
/// Parent to a running worker, with a descriptor: hand your listener and peers over on this
/// channel (the other end is the new worker's).
pub const UPGRADE: u8 = b'U';
/// Parent to a worker it started to take over, first of all, with a descriptor: your
/// upgrade channel.
pub const CHANNEL: u8 = b'C';

/// What a worker tells its parent, through the callback given to
/// [`answer_parent`](super::Server::answer_parent).
pub enum ToParent<'a> {
    /// The counts, as asked.
    Counts(&'a ServerStats, &'a Gauges),
    /// The counts of a worker that handed over and keeps TLS peers: only what happened since
    /// the handover (the new worker carries the rest on), as asked and once more at its end.
    SinceHandover(&'a ServerStats, &'a Gauges),
    /// The live upgrade asked for was given up, for this reason; this worker serves on.
    UpgradeGivenUp(&'a str),
}

/// Called each time the worker tells its parent something.
pub type Snapshot = Box<dyn FnMut(ToParent<'_>) + Send>;

pub(super) struct Parent {
    link: OwnedFd,
    snapshot: Snapshot,
}

impl super::Server {
    /// Reads this process's stdin as the link from a parent: each [`ASK`] asks for
    /// `snapshot` of the counts, an [`UPGRADE`] begins a live upgrade, its end stops the
    /// server.
    pub fn answer_parent(&mut self, snapshot: Snapshot) -> Result<(), SetupError> {
        let setup = |what| move |source| SetupError::EventLoop { what, source };
        let link = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(setup("parent link"))?;
        rustix::io::ioctl_fionbio(&link, true)
            .map_err(|e| setup("parent link")(io::Error::from(e)))?;
        self.poll
            .registry()
            .register(&mut SourceFd(&link.as_raw_fd()), PARENT, Interest::READABLE)
            .map_err(setup("parent link registration"))?;
        self.parent = Some(Parent { link, snapshot });
        Ok(())
    }

    /// The link is readable: answer the asks that came (once however many), take an
    /// upgrade's channel, or stop.
    pub(super) fn on_parent_event(&mut self) {
        let keeping = self.is_keeping();
        let Some(parent) = &mut self.parent else {
            return;
        };
        let mut buf = [0u8; 64];
        let (mut asked, mut gone) = (false, false);
        loop {
            match receive(&parent.link, &mut buf) {
                Ok((0, _)) => {
                    gone = true;
                    break;
                }
                Ok((n, fds)) => {
                    asked |= buf[..n].contains(&ASK);
                    let channel = fds.into_iter().next().map(UnixStream::from);
                    match (buf[..n].contains(&UPGRADE), channel) {
                        (true, Some(stream)) => match Channel::from_stream(stream) {
                            Ok(channel) => {
                                if let Some(upgrader) = &mut self.upgrade.upgrader {
                                    upgrader.give_channel(channel);
                                    self.upgrade.asked_by_parent = true;
                                }
                            }
                            Err(e) => warn!("live upgrade: unusable channel from the parent: {e}"),
                        },
                        (true, None) => warn!("live upgrade: the parent sent no channel"),
                        _ => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        if asked {
            let gauges = Gauges {
                buffered_bytes: self.core.buffered() as u64,
                log_lines_dropped: crate::ops::logging::dropped_lines(),
            };
            let stats = self.core.stats();
            (parent.snapshot)(match keeping {
                true => ToParent::SinceHandover(stats, &gauges),
                false => ToParent::Counts(stats, &gauges),
            });
        }
        if gone {
            if let Some(parent) = self.parent.take() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&parent.link.as_raw_fd()));
            }
            self.stop.stopper().stop();
        }
    }

    /// This worker's last word, at its end after a handover that kept TLS peers: what they
    /// did since (the counts were started afresh then; see `upgrading`).
    pub(super) fn tell_parent_since_handover(&mut self) {
        if let Some(parent) = &mut self.parent {
            let gauges = Gauges {
                buffered_bytes: 0,
                log_lines_dropped: crate::ops::logging::dropped_lines(),
            };
            (parent.snapshot)(ToParent::SinceHandover(self.core.stats(), &gauges));
        }
    }

    /// A live upgrade was given up: the parent (if any) learns why.
    pub(super) fn tell_parent_given_up(&mut self, reason: &str) {
        if let Some(parent) = &mut self.parent {
            (parent.snapshot)(ToParent::UpgradeGivenUp(reason));
        }
    }
}

/// Reads what the parent wrote, with any descriptors that came beside it. A stdin that is
/// not a socket (a worker started by hand with a pipe) is read as plain bytes.
fn receive(link: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        link,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    );
    match received {
        Ok(got) => {
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            Ok((got.bytes, fds))
        }
        Err(rustix::io::Errno::NOTSOCK) => Ok((rustix::io::read(link, buf)?, Vec::new())),
        Err(e) => Err(e.into()),
    }
}

/// In a worker its parent started to take over from another: the upgrade channel, which
/// the parent sends first of all on the link (stdin), within [`IO_WAIT`].
pub fn channel_from_parent() -> Result<Channel, String> {
    let link = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("parent link: {e}"))?;
    let stream = UnixStream::from(link);
    stream
        .set_read_timeout(Some(IO_WAIT))
        .map_err(|e| format!("parent link: {e}"))?;
    // One byte only: nothing after it (an ask) is taken from the loop.
    let mut byte = [0u8; 1];
    let link = OwnedFd::from(stream);
    let (n, fds) = receive(&link, &mut byte).map_err(|e| format!("parent link: {e}"))?;
    let channel = fds.into_iter().next();
    match (n, byte[0], channel) {
        (1, CHANNEL, Some(fd)) => {
            let stream = UnixStream::from(fd);
            // The timeout above belongs to the link's socket: the loop reads it nonblocking.
            Channel::from_stream(stream).map_err(|e| format!("upgrade channel: {e}"))
        }
        _ => Err("the parent sent no upgrade channel".into()),
    }
}
