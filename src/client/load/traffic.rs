//! What moves on an open connection: reading and framing what the server sent, answering
//! heartbeats, sending scheduled lines, the faults a connection suffers, and how it ends.
//! Part of the loop in `load` (an `impl` block of the same `Client`), split off by job.

use std::io::{self, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::{Client, CONNECT_TIMEOUT};
use crate::client::faults::FaultKind;
use crate::client::peer::{Answer, Ending, Heard, ServerClose};
use crate::cores::escape::Escaped;
use crate::cores::protocol::{self, Frame};
use crate::edge::conn::{self, read_once, ReadResult};
use crate::edge::net::describe;
use crate::edge::turn::READS_PER_TURN;
use crate::ops::stats::client::ServerEnd;
use log::{debug, warn};

impl Client {
    /// Reads until the kernel has no more (or this turn's share is used up: then it is read
    /// first next turn); a `noread` connection only notices the server closing.
    pub(super) fn on_readable(&mut self, key: usize, closed: bool) {
        let now = Instant::now();
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.peer.connecting_since().is_some() {
                return;
            }
            // Hook (tls): ciphertext is read by the session.
            if conn.tls.is_some() {
                return self.tls_readable(key, closed);
            }
            if !conn.peer.reads() {
                if closed {
                    self.closed_by_server(key, now, ServerClose::EndOfStream);
                }
                return;
            }
            match read_once(&mut conn.stream, &mut self.read_buf) {
                ReadResult::Data(n) => {
                    if !self.on_bytes(key, n, now) {
                        return;
                    }
                }
                ReadResult::Eof => {
                    return self.closed_by_server(key, now, ServerClose::EndOfStream)
                }
                ReadResult::WouldBlock => return,
                ReadResult::Failed(e) => return self.failed(key, &e, now),
            }
        }
        self.cut_off.defer(key);
    }

    /// Handles the lines in `read_buf[..n]`. Returns false if the connection ended.
    pub(super) fn on_bytes(&mut self, key: usize, n: usize, now: Instant) -> bool {
        let Client {
            conns,
            read_buf,
            stats,
            config,
            warnings,
            echoes_owed,
            ..
        } = self;
        let conn = &mut conns[key];
        let (mut ended, mut heartbeat) = (None, false);
        conn.buffers.feed(config.max_line, &read_buf[..n], |frame| {
            let Frame::Line(line) = frame else {
                stats.on_line_too_long();
                let max = config.max_line;
                let text = || format!("a line from the server is longer than {max} bytes");
                if let Some(text) = warnings.line("line too long", now, text) {
                    warn!("{text}");
                }
                return;
            };
            if config.verbose {
                say!("Received: {}", Escaped(line));
            }
            if ended.is_some() {
                // Nothing the server says after it has ended the connection counts.
                return;
            }
            if line == protocol::END_CONNECTION {
                ended = Some(ServerClose::EndConnection);
            } else if line == protocol::SERVER_FULL {
                ended = Some(ServerClose::Full);
            } else if line == protocol::HEARTBEAT {
                heartbeat = true;
                conn.peer.on_line(Heard::Heartbeat);
            } else if line.starts_with(protocol::ECHO_PREFIX) {
                conn.peer.on_line(Heard::Echo);
                if let Some(scheduled) = conn.peer.on_echo(config.interval) {
                    *echoes_owed = echoes_owed.saturating_sub(1);
                    stats.on_echo(now.saturating_duration_since(scheduled));
                }
            } else {
                conn.peer.on_line(Heard::Other);
            }
        });
        if let Some(how) = ended {
            self.closed_by_server(key, now, how);
            return false;
        }
        if heartbeat {
            match conn.peer.on_heartbeat(now, config.heartbeat_block) {
                Answer::Now => {
                    let lag = now.saturating_duration_since(self.ready_since);
                    return self.answer(key, lag, now);
                }
                Answer::Later => self.rearm(key),
                Answer::Never => {}
            }
        }
        true
    }

    /// Answers a heartbeat, unless output is already waiting: those bytes, once the server
    /// takes them, are sign of life enough. False if the connection ended.
    pub(super) fn answer(&mut self, key: usize, lag: Duration, now: Instant) -> bool {
        if self.conns[key].buffers.unsent() > 0 {
            return true;
        }
        self.stats.on_heartbeat_answered(lag);
        self.send(key, protocol::HEARTBEAT_REPLY, now)
    }

    /// Sends one line; false (and the connection closed) if the send failed or the output
    /// the server has not taken grew past the cap.
    pub(super) fn send(&mut self, key: usize, line: &[u8], now: Instant) -> bool {
        let conn = &mut self.conns[key];
        self.line_buf.clear();
        protocol::encode_line(&mut self.line_buf, line);
        if self.config.verbose {
            say!("Sent: {}", Escaped(line));
        }
        // Hook (tls): the line goes into the session.
        if conn.tls.is_some() {
            let line = std::mem::take(&mut self.line_buf);
            let sent = self.tls_send(key, &line, now);
            self.line_buf = line;
            return sent;
        }
        if let Err(e) = conn::send(&mut conn.stream, &mut conn.buffers, &self.line_buf) {
            self.failed(key, &e, now);
            return false;
        }
        let unsent = conn.buffers.unsent();
        if unsent <= self.config.output_cap {
            return true;
        }
        self.stats.on_output_cap();
        let text = || {
            format!("the server is not reading: closing a connection holding {unsent} bytes for it")
        };
        if let Some(text) = self.warnings.line("output cap", now, text) {
            warn!("{text}");
        }
        self.close(key, now);
        false
    }

    pub(super) fn fire_timers(&mut self, now: Instant) {
        let interval = self.config.interval;
        while let Some(key) = self.timers.poll_expired(now) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let at = Instant::now();
            let work = conn.peer.on_timer(at, interval, CONNECT_TIMEOUT);
            if work.connect_timed_out {
                let peer = conn.peer.clone();
                self.connect_failed(&io::Error::from(io::ErrorKind::TimedOut).into());
                self.forget(key);
                self.retry(&peer, at);
                continue;
            }
            if let Some(kind) = work.fault {
                if !self.strike(key, kind, at) {
                    continue;
                }
            }
            if let Some(due) = work.answer_due {
                if !self.answer(key, at.saturating_duration_since(due), at) {
                    continue;
                }
            }
            for _ in 0..work.lines {
                let Some(scheduled) = self.conns[key].peer.on_sent(interval) else {
                    break;
                };
                // Counted before it is written: if the write fails, closing counts the line
                // unanswered, so the books still balance.
                self.echoes_owed += 1;
                self.stats
                    .on_line_sent(at.saturating_duration_since(scheduled));
                let message = std::mem::take(&mut self.config.message);
                let sent = self.send(key, &message, at);
                self.config.message = message;
                if !sent {
                    break;
                }
            }
            if self.conns.contains(key) {
                self.rearm(key);
            }
        }
    }

    /// The connection turns bad. False if that closed it.
    pub(super) fn strike(&mut self, key: usize, kind: FaultKind, now: Instant) -> bool {
        self.stats.on_fault_injected(kind);
        let conn = &mut self.conns[key];
        match kind {
            FaultKind::Silent | FaultKind::NoRead => true,
            FaultKind::HalfClose => {
                // Hook (tls): close_notify first, as a TLS peer half-closing would.
                if let Some(tls) = conn.tls.as_mut() {
                    tls.send_close_notify();
                    let _ = super::tls::flush(&mut conn.stream, tls);
                }
                match conn.stream.shutdown(Shutdown::Write) {
                    Ok(()) => true,
                    Err(e) => {
                        self.failed(key, &e, now);
                        false
                    }
                }
            }
            FaultKind::Reset => {
                // A zero linger turns the close into a reset, as when a process crashes.
                let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
                self.close(key, now);
                false
            }
        }
    }

    /// The server ended the connection, `how`: a fault found, or a healthy connection's end
    /// named by `peer` (a goodbye, a refusal, a connection lost, a false death).
    pub(super) fn closed_by_server(&mut self, key: usize, now: Instant, how: ServerClose) {
        let ending = self.conns[key].peer.ending(how, now);
        match ending {
            Ending::FaultFound(kind, at) => {
                let after = now.saturating_duration_since(at);
                self.stats.on_fault_detected(kind, after);
                self.stats.on_closed_by_server();
            }
            Ending::Healthy(end) => {
                if how != ServerClose::Reset {
                    self.stats.on_closed_by_server();
                }
                self.stats.on_server_end(end);
            }
        }
        if self.config.verbose {
            let words = match ending {
                Ending::Healthy(ServerEnd::Refused) => "Connection refused by server",
                Ending::Healthy(ServerEnd::LostReset) => "Connection reset by server",
                _ => "Connection closed by server",
            };
            say!("{words}");
        }
        self.close(key, now);
    }

    pub(super) fn failed(&mut self, key: usize, error: &io::Error, now: Instant) {
        if self.conns[key].peer.struck().is_some() {
            // A reset after a fault is how a server closes on input it did not read.
            return self.closed_by_server(key, now, ServerClose::Reset);
        }
        if gone(error) {
            return self.closed_by_server(key, now, ServerClose::Reset);
        }
        self.stats.on_error();
        if self.config.verbose {
            say!("Connection failed: {}", describe(error));
        } else {
            debug!("connection failed: {}", describe(error));
        }
        self.close(key, now);
    }
}

/// The server reset the connection, or closed it before a write reached it.
fn gone(error: &io::Error) -> bool {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe
    )
}
