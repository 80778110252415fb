//! Taking peers in: accepting until the backlog is empty or the core says stop, backing off
//! when out of descriptors, and turning peers away (`--allow`, `--max-connections`) with the
//! line they are owed. Part of the loop: the decisions are the core's.

use std::io::{IoSlice, Write};
use std::net::SocketAddr;
use std::time::Instant;

use log::{info, warn};
use mio::net::TcpStream;
use mio::Interest;

use super::core::{Admission, Refusal, ACCEPT_BACKOFF};
use super::{Server, Socket};
use crate::cores::protocol;
use crate::edge::net::{describe, interrupted, out_of_files, would_block};
use crate::edge::turn::token;

impl Server {
    /// Accepts until the kernel has no more waiting peers or the core says stop.
    ///
    /// At `--max-connections`, a peer is refused only if every peer holding a place has had
    /// a turn of reads since it was accepted: peers taken from the backlog in a burst may all
    /// have hung up already, and their end of stream frees their place once read. So when
    /// this call has admitted anyone, or the last turn did not already wait, it waits a turn
    /// (the loop then polls without sleeping) instead of refusing.
    ///
    /// So too at the cap of TLS handshakes in flight, before a newcomer closes the oldest:
    /// under load, many handshakes the clients have finished wait only for the server to
    /// read their last flight (the client counts itself done one flight before the server
    /// does), and closing one of those to begin another wastes both. A newcomer waits in the
    /// kernel's backlog for a turn of reads; only if the stage is still full after it (a flood
    /// of silent handshakes) does it close the oldest.
    pub(super) fn accept_all(&mut self, now: Instant) {
        self.accept_deferred = false;
        let waited_for_reads = std::mem::take(&mut self.waiting_for_room);
        let mut admitted = false;
        while let Some(listener) = &self.listener {
            if !self.core.is_accepting() {
                self.accept_deferred = true;
                return;
            }
            let full = !self.core.has_room() || self.handshakes_full();
            if full && (admitted || !waited_for_reads) {
                self.waiting_for_room = true;
                self.accept_deferred = true;
                return;
            }
            match listener.accept() {
                Ok((stream, addr)) if self.handshakes.enabled() => {
                    self.await_header(stream, addr, now)
                }
                // Hook (tls): judged as a plain peer is, then a handshake; the core admits
                // the peer after it.
                Ok((stream, addr)) if self.tls.is_some() => {
                    // Taken in, unless it was refused at once (as `admit` says for a plain peer).
                    let begun = self.core.stats().tls_handshakes;
                    self.begin_handshake(stream, addr, now);
                    admitted |= self.core.stats().tls_handshakes > begun;
                }
                Ok((stream, addr)) => admitted |= self.admit(stream, addr, now).is_some(),
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // Out of descriptors (or worse): the waiting peer stays in the backlog.
                    self.core.handle_accept_failed(now);
                    self.accept_deferred = true;
                    let what = match out_of_files(&e) {
                        true => "out of file descriptors",
                        false => "accept failed",
                    };
                    if self.log_limiter.allow("accept", now) {
                        warn!(
                            "{what} ({}): not accepting for {}ms; {} peers open",
                            describe(&e),
                            ACCEPT_BACKOFF.as_millis(),
                            self.core.open()
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Takes in one accepted peer from `addr` (its real address, with `--proxy-protocol`),
    /// or turns it away. Returns its key when it was taken in and is watched.
    pub(super) fn admit(
        &mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
        now: Instant,
    ) -> Option<usize> {
        let key = match self.core.handle_accept(now, addr) {
            Admission::Admitted(key) => key,
            Admission::Refused(refusal) => {
                self.refuse(stream, addr, refusal, now);
                return None;
            }
        };
        let generation = self.generations.issue();
        let registered = self.poll.registry().register(
            &mut stream,
            token(key, generation),
            Interest::READABLE | Interest::WRITABLE,
        );
        let watched = registered.is_ok();
        if let Err(e) = registered {
            warn!("{addr}: cannot watch the connection: {}", describe(&e));
            self.core.handle_error(now, key, e.kind());
        } else {
            // Echoes are small and interactive: do not hold them back waiting for ACKs.
            let _ = stream.set_nodelay(true);
            if self.sockets.len() <= key {
                self.sockets.resize_with(key + 1, || None);
            }
            self.sockets[key] = Some(Socket { stream, generation });
        }
        self.carry_out(now);
        watched.then_some(key)
    }

    pub(super) fn refuse(
        &mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
        refusal: Refusal,
        now: Instant,
    ) {
        match refusal {
            Refusal::NotAllowed => {
                if self.log_limiter.allow("not allowed", now) {
                    info!("{addr} refused: not in the --allow list");
                }
            }
            Refusal::Full { open } => {
                // Best effort: a fresh socket has room for one short line. A TLS peer is
                // told by the TLS path: an alert at accept, before any handshake, or the
                // line inside its session if its place went while it shook hands (hook: tls).
                if self.tls.is_none() {
                    let line = [IoSlice::new(protocol::SERVER_FULL), IoSlice::new(b"\n")];
                    let _ = stream.write_vectored(&line);
                }
                if self.log_limiter.allow("full", now) {
                    warn!("{addr} refused: server full ({open} peers, --max-connections)");
                }
            }
        }
    }
}
