//! What an event log says of each connection (address, when it connected, when it last
//! spoke, bytes in and out), kept per key only when `--events` asks for it, so that without
//! it an idle connection costs nothing more.

use std::net::SocketAddr;
use std::time::Instant;

pub use crate::cores::vocab::Session;

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
