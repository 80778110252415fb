//! The core's vocabulary: what it is told at start ([`Settings`]), what it asks of the loop
//! ([`Action`]), what it reports ([`Event`]), and why peers are refused or closed. Plain data:
//! every decision about them is in `core.rs` and its other children.

use std::time::Duration;

use super::waiting::{Stage, WaitEnd, WaitKey};
use crate::cores::allow::AllowList;
use crate::cores::liveness::Timing;

// The words the server shares with statistics, the event log and the client.
pub use crate::cores::vocab::{Event, Reason, Refusal};

/// What the core needs to know of the server's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timing: Timing,
    /// Resolution of the timer wheel: rounded timers (lingers, first-byte waits) fire at most
    /// this late (plus loop latency); heartbeats and closes come at their exact time.
    pub tick: Duration,
    pub max_line: usize,
    pub max_write_buffer: usize,
    /// All peers' buffers together (`--max-buffered`); see [`crate::server::budget`].
    pub max_buffered: usize,
    pub max_connections: usize,
    pub allow: AllowList,
    /// Spread stopping's `End Connection`s over this long (`--drain`); zero: all at once.
    pub drain: Duration,
    /// Delay each peer's first heartbeat after silence by up to this share of `interval`
    /// (`--jitter`, 0 to 100), so that peers that connected together are not asked together.
    pub jitter_percent: u8,
    /// Seeds each peer's jitter, so a run (and a test) is reproducible.
    pub jitter_seed: u64,
    /// Keep each connection's [`super::Session`] (for `--events`).
    pub sessions: bool,
    /// Report each heartbeat sent and answered ([`Event::HeartbeatSent`],
    /// [`Event::HeartbeatAnswered`]), for `--events` and info lines. Off (a quieter log and
    /// no event log), a heartbeat round queues no report for the loop to pass over.
    pub heartbeat_reports: bool,
    /// Peers waiting for their PROXY header at once (`--proxy-protocol`); at the cap the
    /// oldest is closed to make room (see [`super::waiting`]).
    pub max_header_waits: usize,
}

/// What the loop must do. Carry each out before the next input (see the module notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write [`super::ServerCore::output`] for this peer, then report with
    /// [`super::ServerCore::handle_written`].
    Write(usize),
    /// The peer may be read again (its output drained below the limit); readiness that came
    /// while it was paused was not consumed, so read it without waiting for an event.
    Read(usize),
    /// Everything queued has been handed to the kernel: shut down our sending side, so the
    /// peer's end of stream follows the last byte.
    ShutdownWrite(usize),
    /// Close the socket. The key is free from now on.
    Close(usize),
    /// Tell the operator (log it); the socket is still open, so it can be named.
    Report(usize, Event),
    /// Much buffer memory was freed: hand the allocator's free memory back to the OS.
    ReleaseMemory,
    /// Close this socket waiting for its first bytes in this stage (its key is free from now
    /// on), and say why if the stage's log line calls for it.
    EndWait(Stage, WaitKey, WaitEnd),
}

/// What [`super::ServerCore::handle_accept`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Keep the peer under this key (its events and actions carry it).
    Admitted(usize),
    Refused(Refusal),
}

/// The kinds of timer the core keeps: the rows of its timer table (`timers`), each with one
/// meaning when it fires. The first two are a connection's one timer, by its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Ask [`crate::cores::liveness`] what is due: re-arm, a heartbeat, or `End Connection`.
    Liveness,
    /// The ending peer's time to take its last output and close is up: close regardless.
    Linger,
    /// An accept back-off (out of descriptors) is over: accept again.
    AcceptBackoff,
    /// All buffers stayed over `--max-buffered` past the grace (or the ceiling): close the
    /// largest holders.
    MemoryGrace,
    /// A socket of this stage had its time to send its first bytes: close it.
    FirstBytes(Stage),
    /// Stopping: the next peer's turn in the drain has come: tell it `End Connection`.
    Drain,
    /// After a live upgrade, the peers kept here (TLS sessions) have had their time: begin
    /// a drain that tells them `End Connection`.
    Kept,
}
