//! A peer's liveness carried to another process in a live upgrade: as durations before
//! "now", since the two processes' clocks need not agree, and rebuilt at the importer's
//! "now", so every instant moves later by the pause: no heartbeat falls due earlier than it
//! would have, and the pause counts against the server, never against the peer.

use std::time::{Duration, Instant};

use super::Peer;

/// A [`Peer`] as durations: what `cores::upgrade::wire::PeerState` carries of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub since_ago: Duration,
    pub heartbeats_sent: u32,
    pub silent_before_ms: u32,
}

impl Peer {
    /// This record at `now`, for another process.
    pub fn carry(&self, now: Instant) -> Carried {
        Carried {
            since_ago: now.saturating_duration_since(self.since),
            heartbeats_sent: self.heartbeats_sent,
            silent_before_ms: self.silent_before_ms,
        }
    }

    /// The record carried, at the importer's `now`. A `since_ago` further back than this
    /// clock can say (it would be before boot) starts at `now`: later, never earlier.
    pub fn from_carried(now: Instant, carried: Carried) -> Peer {
        Peer {
            since: now.checked_sub(carried.since_ago).unwrap_or(now),
            heartbeats_sent: carried.heartbeats_sent,
            silent_before_ms: carried.silent_before_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Timing};
    use super::*;

    #[test]
    fn a_carried_peer_keeps_its_future_shifted_by_the_pause() {
        let timing = Timing {
            idle: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            count: 3,
        };
        let t0 = Instant::now();
        let mut peer = Peer::new(t0);
        let first = t0 + timing.idle;
        assert!(matches!(
            peer.on_timer(first, &timing),
            Action::SendHeartbeat { number: 1, .. }
        ));
        let exported_at = first + Duration::from_secs(4);
        let carried = peer.carry(exported_at);
        assert_eq!(carried.since_ago, Duration::from_secs(4));
        let pause = Duration::from_millis(70);
        let imported = Peer::from_carried(exported_at + pause, carried);
        assert_eq!(imported.deadline(&timing), peer.deadline(&timing) + pause);
        assert_eq!(imported.heartbeats_sent(), 1);
        assert_eq!(
            imported.silent_for(exported_at + pause),
            peer.silent_for(exported_at),
            "the pause is not counted as the peer's silence"
        );
    }
}
