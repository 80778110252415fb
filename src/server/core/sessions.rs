//! What an event log says of each connection (address, when it connected, when it last
//! spoke, bytes in and out), kept per key only when `--events` asks for it, so that without
//! it an idle connection costs nothing more.

use std::net::SocketAddr;
use std::time::Instant;

/// One connection as an event log describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub addr: SocketAddr,
    pub connected: Instant,
    /// When it last sent anything (or connected).
    pub last_seen: Instant,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Sessions by key, or nothing at all when they are not kept.
#[derive(Debug)]
pub(super) struct Sessions(Option<Vec<Session>>);

impl Sessions {
    pub(super) fn new(kept: bool) -> Sessions {
        Sessions(kept.then(Vec::new))
    }

    pub(super) fn open(&mut self, key: usize, addr: SocketAddr, now: Instant) {
        let Some(sessions) = &mut self.0 else {
            return;
        };
        let session = Session {
            addr,
            connected: now,
            last_seen: now,
            bytes_in: 0,
            bytes_out: 0,
        };
        match sessions.get_mut(key) {
            Some(slot) => *slot = session,
            None => {
                sessions.resize(key, session);
                sessions.push(session);
            }
        }
    }

    pub(super) fn get(&self, key: usize) -> Option<&Session> {
        self.0.as_ref()?.get(key)
    }

    pub(super) fn get_mut(&mut self, key: usize) -> Option<&mut Session> {
        self.0.as_mut()?.get_mut(key)
    }
}
