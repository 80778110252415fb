//! A worker's link to the process that started it (`heartbeat-server --workers N`): its
//! stdin, a pipe from the parent, read by the loop like any socket (no thread). A byte on it
//! asks for the counts now: the loop hands them to the callback it was given, which writes
//! them for the parent. The pipe's end (the parent gone, however it ended, `kill -9`
//! included) stops the server as SIGTERM would, so that no orphan keeps the port.
//!
//! Owns the pipe's registration and what its events mean. Does not own what the counts are
//! turned into or where they go (the `workers` module's callback), nor the stop itself
//! (`edge::stop`).

use std::io::Read;

use mio::unix::pipe::Receiver;
use mio::{Interest, Token};

use crate::edge::net::{interrupted, would_block, SetupError};
use crate::ops::metrics::Gauges;
use crate::ops::stats::ServerStats;

/// The pipe's token, below the metrics scrapers' slots; peer tokens never reach it (see
/// `conn::token`).
pub const PARENT: Token = Token(usize::MAX - 20);

/// Called with the counts each time the parent asks.
pub type Snapshot = Box<dyn FnMut(&ServerStats, &Gauges) + Send>;

pub(super) struct Parent {
    pipe: Receiver,
    snapshot: Snapshot,
}

impl super::Server {
    /// Reads this process's stdin as the pipe from a parent: each byte asks for `snapshot`
    /// of the counts, its end stops the server.
    pub fn answer_parent(&mut self, snapshot: Snapshot) -> Result<(), SetupError> {
        let setup = |what| move |source| SetupError::EventLoop { what, source };
        let stdin = std::os::fd::AsFd::as_fd(&std::io::stdin())
            .try_clone_to_owned()
            .map_err(setup("parent pipe"))?;
        let mut pipe = Receiver::from(stdin);
        pipe.set_nonblocking(true).map_err(setup("parent pipe"))?;
        self.poll
            .registry()
            .register(&mut pipe, PARENT, Interest::READABLE)
            .map_err(setup("parent pipe registration"))?;
        self.parent = Some(Parent { pipe, snapshot });
        Ok(())
    }

    /// The pipe is readable: answer the asks that came (once however many), or stop.
    pub(super) fn on_parent_event(&mut self) {
        let Some(parent) = &mut self.parent else {
            return;
        };
        let mut buf = [0u8; 64];
        let (mut asked, mut gone) = (false, false);
        loop {
            match parent.pipe.read(&mut buf) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(_) => asked = true,
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
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
            (parent.snapshot)(self.core.stats(), &gauges);
        }
        if gone {
            if let Some(mut parent) = self.parent.take() {
                let _ = self.poll.registry().deregister(&mut parent.pipe);
            }
            self.stop.stopper().stop();
        }
    }
}
