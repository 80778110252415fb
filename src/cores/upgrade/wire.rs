//! The live upgrade's wire format: the messages the old and the new server process exchange
//! over their private socket pair, as length-prefixed frames, and the state of each peer
//! they carry. Bytes in, bytes out: no socket, no clock, no file descriptor (those travel
//! beside the frames, see `edge::handover`).
//!
//! Every frame is `u32` length (little-endian, of what follows), one kind byte, the body.
//! That outer layout never changes. The first frame the old process sends, [`Message::Offer`],
//! opens with [`MAGIC`] and the format [`VERSION`]: a process that does not know the version
//! refuses it with one line ([`WireError::Version`]), before anything else is read. A frame
//! that is short, too long, of an unknown kind or with trailing bytes is
//! [`WireError::Malformed`], never a panic.
//!
//! Times are carried as durations relative to the moment of sending ("time remaining",
//! "silent for"), never as instants: the two processes' clocks need not agree, and the pause
//! between export and import is added by the importer, so it counts against the server.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Opens the [`Message::Offer`] frame: "heartbeat upgrade".
pub const MAGIC: [u8; 4] = *b"HBUP";
/// The state format this binary speaks. Raise it whenever a body's layout changes.
pub const VERSION: u16 = 1;
/// The largest frame accepted: a batch of peers with their unsent output can be large,
/// but a length past this is a broken or hostile sender, not a batch.
pub const MAX_FRAME: usize = 256 << 20;
/// Bytes before a frame's body: the length and the kind.
pub const HEADER: usize = 5;

/// One message of the upgrade protocol; the order is in `cores::upgrade`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// old → new, first: the format spoken and the settings that cannot change under live
    /// peers, as `(name, value)` pairs for the new process to compare with its own.
    Offer {
        version: u16,
        fixed: Vec<(String, String)>,
    },
    /// new → old: the settings agree; stop serving and send everything.
    Ready,
    /// new → old: it will not take over, and why (one line for the old process's log).
    Refuse(String),
    /// old → new: the listening sockets, attached in this order, with the address each has.
    Listeners(Vec<SocketAddr>),
    /// old → new: peers, one record per attached socket, in the same order.
    Peers(Vec<PeerState>),
    /// old → new: everything is sent: this many peers, the counters the summary and the
    /// metrics carry on (`ServerStats::to_exact_json`), and how long the old loop has been
    /// stopped (the new one adds its own share of the pause).
    Done {
        peers: u64,
        stats: String,
        paused: Duration,
    },
    /// new → old: every socket is taken in; the new process waits for [`Message::Release`].
    TakenOver { peers: u64 },
    /// old → new: the peers are yours; the old process serves no one any more.
    Release,
    /// old → new: too late (or failed); the old process serves on. The new one must exit
    /// without touching the sockets.
    Abort(String),
}

/// Where a peer was in its life when it was handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    /// Reading and echoing.
    #[default]
    Open,
    /// Reading, and not a byte from it yet (one that leaves now is a probe).
    Unheard,
    /// Its input stays in the kernel until its output drains (`--max-write-buffer`).
    ReadPaused,
    /// Its input stays in the kernel until all peers' buffers are back under the budget.
    BudgetPaused,
    /// Ending for `reason` (the core's `Reason`, as its index), with what had happened.
    Ending {
        reason: u8,
        peer_done: bool,
        our_side_shut: bool,
    },
}

/// One peer's state, as the old core exported it; its socket travels beside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerState {
    /// How long ago the liveness instant was (the peer's last byte, or the last heartbeat
    /// once one is out): the importer sets it to its own `now` minus this, plus nothing.
    pub since_ago: Duration,
    pub heartbeats_sent: u32,
    /// The liveness record's silence before `since` (ms), for detection-time figures.
    pub silent_before_ms: u32,
    /// Time left on the peer's timer when it was exported (zero if already due): no timer
    /// fires earlier than this after the import.
    pub timer_remaining: Duration,
    pub stage: Stage,
    /// The address from a PROXY header, when the peer came through a balancer.
    pub real_addr: Option<SocketAddr>,
    /// A line begun and not yet ended.
    pub partial: Vec<u8>,
    /// The rest of an overlong line is being dropped, up to its newline.
    pub discarding: bool,
    /// Output the kernel had not taken yet.
    pub unsent: Vec<u8>,
}

/// Why bytes from the other process are not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The other process speaks a state format this binary does not know.
    Version { got: u16 },
    /// Not a frame of this protocol: `what` says where it broke.
    Malformed(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Version { got } => write!(
                f,
                "the running server hands over state format {got}, this binary knows only \
                 format {VERSION}: upgrade through a version that knows both, or restart"
            ),
            WireError::Malformed(what) => write!(f, "malformed upgrade frame: {what}"),
        }
    }
}

impl std::error::Error for WireError {}

const OFFER: u8 = 1;
const READY: u8 = 2;
const REFUSE: u8 = 3;
const LISTENERS: u8 = 4;
const PEERS: u8 = 5;
const DONE: u8 = 6;
const TAKEN_OVER: u8 = 7;
const RELEASE: u8 = 8;
const ABORT: u8 = 9;

impl Message {
    /// The whole frame, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(vec![0; HEADER]);
        let kind = match self {
            Message::Offer { version, fixed } => {
                w.bytes(&MAGIC);
                w.u16(*version);
                w.u32(fixed.len() as u32);
                for (name, value) in fixed {
                    w.blob(name.as_bytes());
                    w.blob(value.as_bytes());
                }
                OFFER
            }
            Message::Ready => READY,
            Message::Refuse(why) => {
                w.blob(why.as_bytes());
                REFUSE
            }
            Message::Listeners(addrs) => {
                w.u32(addrs.len() as u32);
                addrs.iter().for_each(|addr| w.addr(addr));
                LISTENERS
            }
            Message::Peers(peers) => {
                w.u32(peers.len() as u32);
                peers.iter().for_each(|peer| w.peer(peer));
                PEERS
            }
            Message::Done {
                peers,
                stats,
                paused,
            } => {
                w.u64(*peers);
                w.blob(stats.as_bytes());
                w.duration(*paused);
                DONE
            }
            Message::TakenOver { peers } => {
                w.u64(*peers);
                TAKEN_OVER
            }
            Message::Release => RELEASE,
            Message::Abort(why) => {
                w.blob(why.as_bytes());
                ABORT
            }
        };
        let mut frame = w.0;
        let length = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&length.to_le_bytes());
        frame[4] = kind;
        frame
    }

    /// The length of the frame's kind and body from its first four bytes, checked against
    /// [`MAX_FRAME`].
    pub fn frame_length(prefix: [u8; 4]) -> Result<usize, WireError> {
        let length = u32::from_le_bytes(prefix) as usize;
        match length {
            0 => Err(WireError::Malformed("empty frame")),
            n if n > MAX_FRAME => Err(WireError::Malformed("frame longer than the limit")),
            n => Ok(n),
        }
    }

    /// Decodes a frame's kind and body (what follows the length).
    pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
        let (&kind, body) = frame
            .split_first()
            .ok_or(WireError::Malformed("empty frame"))?;
        let mut r = Reader(body);
        let message = match kind {
            OFFER => {
                if r.take(4)? != MAGIC {
                    return Err(WireError::Malformed("not a heartbeat upgrade offer"));
                }
                let version = r.u16()?;
                if version != VERSION {
                    return Err(WireError::Version { got: version });
                }
                let n = r.count(8)?;
                let mut fixed = Vec::with_capacity(n);
                for _ in 0..n {
                    fixed.push((r.text()?, r.text()?));
                }
                Message::Offer { version, fixed }
            }
            READY => Message::Ready,
            REFUSE => Message::Refuse(r.text()?),
            LISTENERS => {
                let n = r.count(7)?;
                Message::Listeners((0..n).map(|_| r.addr()).collect::<Result<_, _>>()?)
            }
            PEERS => {
                // The smallest record: no stage data, no address, empty buffers.
                let n = r.count(35)?;
                Message::Peers((0..n).map(|_| r.peer()).collect::<Result<_, _>>()?)
            }
            DONE => Message::Done {
                peers: r.u64()?,
                stats: r.text()?,
                paused: r.duration()?,
            },
            TAKEN_OVER => Message::TakenOver { peers: r.u64()? },
            RELEASE => Message::Release,
            ABORT => Message::Abort(r.text()?),
            _ => return Err(WireError::Malformed("unknown message kind")),
        };
        match r.0.is_empty() {
            true => Ok(message),
            false => Err(WireError::Malformed("bytes after the message")),
        }
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn blob(&mut self, bytes: &[u8]) {
        self.u32(bytes.len() as u32);
        self.bytes(bytes);
    }
    fn duration(&mut self, d: Duration) {
        self.u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    fn addr(&mut self, addr: &SocketAddr) {
        match addr.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.bytes(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.bytes(&ip.octets());
            }
        }
        self.u16(addr.port());
    }
    fn peer(&mut self, peer: &PeerState) {
        self.duration(peer.since_ago);
        self.u32(peer.heartbeats_sent);
        self.u32(peer.silent_before_ms);
        self.duration(peer.timer_remaining);
        match peer.stage {
            Stage::Open => self.u8(0),
            Stage::Unheard => self.u8(4),
            Stage::ReadPaused => self.u8(1),
            Stage::BudgetPaused => self.u8(2),
            Stage::Ending {
                reason,
                peer_done,
                our_side_shut,
            } => {
                self.u8(3);
                self.u8(reason);
                self.u8(u8::from(peer_done) | u8::from(our_side_shut) << 1);
            }
        }
        match &peer.real_addr {
            None => self.u8(0),
            Some(addr) => {
                self.u8(1);
                self.addr(addr);
            }
        }
        self.u8(u8::from(peer.discarding));
        self.blob(&peer.partial);
        self.blob(&peer.unsent);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed("frame ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A count of items each at least `min_size` bytes long: a count the frame cannot hold
    /// is refused before anything is allocated for it.
    fn count(&mut self, min_size: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        match n.saturating_mul(min_size) <= self.0.len() {
            true => Ok(n),
            false => Err(WireError::Malformed("a count larger than the frame")),
        }
    }
    fn blob(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn text(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.blob()?.to_vec()).map_err(|_| WireError::Malformed("text not UTF-8"))
    }
    fn duration(&mut self) -> Result<Duration, WireError> {
        Ok(Duration::from_nanos(self.u64()?))
    }
    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(WireError::Malformed("unknown address family")),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    fn peer(&mut self) -> Result<PeerState, WireError> {
        let since_ago = self.duration()?;
        let heartbeats_sent = self.u32()?;
        let silent_before_ms = self.u32()?;
        let timer_remaining = self.duration()?;
        let stage = match self.u8()? {
            0 => Stage::Open,
            1 => Stage::ReadPaused,
            2 => Stage::BudgetPaused,
            4 => Stage::Unheard,
            3 => {
                let reason = self.u8()?;
                let flags = self.u8()?;
                if flags > 3 {
                    return Err(WireError::Malformed("unknown ending flags"));
                }
                Stage::Ending {
                    reason,
                    peer_done: flags & 1 != 0,
                    our_side_shut: flags & 2 != 0,
                }
            }
            _ => return Err(WireError::Malformed("unknown peer stage")),
        };
        let real_addr = match self.u8()? {
            0 => None,
            1 => Some(self.addr()?),
            _ => return Err(WireError::Malformed("bad real-address flag")),
        };
        let discarding = match self.u8()? {
            0 => false,
            1 => true,
            _ => return Err(WireError::Malformed("bad discarding flag")),
        };
        Ok(PeerState {
            discarding,
            since_ago,
            heartbeats_sent,
            silent_before_ms,
            timer_remaining,
            stage,
            real_addr,
            partial: self.blob()?.to_vec(),
            unsent: self.blob()?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: Message) {
        let frame = message.encode();
        let length = Message::frame_length([frame[0], frame[1], frame[2], frame[3]]).unwrap();
        assert_eq!(length, frame.len() - 4);
        assert_eq!(Message::decode(&frame[4..]).unwrap(), message);
    }

    fn a_peer() -> PeerState {
        PeerState {
            since_ago: Duration::from_millis(1_234),
            heartbeats_sent: 2,
            silent_before_ms: 30_000,
            timer_remaining: Duration::from_nanos(8_765_432_100),
            stage: Stage::Ending {
                reason: 1,
                peer_done: false,
                our_side_shut: true,
            },
            real_addr: Some("[2001:db8::7]:4242".parse().unwrap()),
            partial: b"half a li".to_vec(),
            discarding: true,
            unsent: b"Echoing...x\nheartbeat\n".to_vec(),
        }
    }

    #[test]
    fn every_message_survives_the_round_trip() {
        round_trip(Message::Offer {
            version: VERSION,
            fixed: vec![("listen".into(), "127.0.0.1:8000".into())],
        });
        round_trip(Message::Ready);
        round_trip(Message::Refuse("--port changed".into()));
        round_trip(Message::Listeners(vec![
            "127.0.0.1:8000".parse().unwrap(),
            "[::1]:8000".parse().unwrap(),
        ]));
        round_trip(Message::Peers(vec![a_peer(), PeerState::default()]));
        // The smallest record is what `decode` counts a batch by: 35 bytes.
        let one = Message::Peers(vec![PeerState::default()]).encode();
        assert_eq!(one.len(), HEADER + 4 + 35);
        round_trip(Message::Done {
            peers: 2,
            stats: "{}".into(),
            paused: Duration::from_micros(1_500),
        });
        round_trip(Message::TakenOver { peers: 2 });
        round_trip(Message::Release);
        round_trip(Message::Abort("no answer in 5 s".into()));
    }

    #[test]
    fn an_unknown_version_is_refused_with_one_line() {
        let mut frame = Message::Offer {
            version: VERSION,
            fixed: vec![],
        }
        .encode();
        // The version follows the length, the kind and the magic.
        frame[9..11].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let error = Message::decode(&frame[4..]).unwrap_err();
        assert_eq!(error, WireError::Version { got: VERSION + 1 });
        let line = error.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(&format!("format {}", VERSION + 1)), "{line}");
    }

    #[test]
    fn malformed_frames_are_errors_never_panics() {
        assert!(Message::frame_length(0u32.to_le_bytes()).is_err());
        assert!(Message::frame_length(u32::MAX.to_le_bytes()).is_err());
        assert!(Message::decode(&[]).is_err());
        assert!(Message::decode(&[99]).is_err(), "unknown kind");
        assert!(Message::decode(&[READY, 0]).is_err(), "trailing bytes");
        let mut bad_magic = Message::Offer {
            version: VERSION,
            fixed: vec![],
        }
        .encode();
        bad_magic[5] = b'X';
        assert!(Message::decode(&bad_magic[4..]).is_err());
        // A count that promises more items than the frame holds allocates nothing.
        let mut huge = vec![PEERS];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Message::decode(&huge).is_err());
        // Every truncation of a valid frame is an error.
        let frame = Message::Peers(vec![a_peer()]).encode();
        for end in 5..frame.len() {
            assert!(Message::decode(&frame[4..end]).is_err(), "cut at {end}");
        }
    }
}
