//! The tokio baseline written for memory, the way a tokio developer who counts bytes per
//! connection would: a current-thread runtime (one thread, like heartbeat), one task per
//! connection, and no buffer that lives with the connection while it is idle. The task waits
//! with `ready()` and reads with `try_read` into one 64 KiB scratch buffer shared by every
//! task of the thread; echoes are written with `try_write` from a shared output buffer too.
//! A connection keeps a `Vec` of its own only while it holds bytes: the start of a line that
//! has not ended yet, or output the kernel would not take (then it waits for `WRITABLE`, and
//! stops reading past 1 MiB of it, as heartbeat does). One `Sleep` per task, reset when the
//! peer speaks, drives the heartbeat schedule.
//!
//! Started by [`crate::baseline`] when the bench re-executes itself in the tuned role.

use std::cell::RefCell;
use std::io;

use heartbeat::cores::liveness::Timing;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

/// One read's worth, shared by every connection of the thread.
const SCRATCH: usize = 64 * 1024;
/// Output held for a peer that does not read, past which its input is left unread.
const OUT_CAP: usize = 1024 * 1024;
/// Reads per wake-up at most, so that one flooding peer does not starve the others.
const READS_PER_TURN: usize = 16;
const ECHO_PREFIX: &[u8] = b"Echoing...";
const ANSWER: &[u8] = b"Echoing...heartbeat";

thread_local! {
    static SCRATCH_IN: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
    static SCRATCH_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One peer, with the same schedule as the typical baseline and the real server.
pub async fn connection(stream: TcpStream, timing: Timing) {
    let _ = stream.set_nodelay(true);
    // Bytes of a line not ended yet, and output not yet taken: empty (no heap) when idle.
    let mut partial: Vec<u8> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut last_seen = Instant::now();
    let mut heartbeats = 0u32;
    let sleep = sleep_until(last_seen + timing.idle);
    tokio::pin!(sleep);
    loop {
        let interest = match (pending.is_empty(), pending.len() >= OUT_CAP) {
            (true, _) => Interest::READABLE,
            (false, false) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
        };
        tokio::select! {
            ready = stream.ready(interest) => {
                let Ok(ready) = ready else { return };
                if ready.is_writable() && !pending.is_empty() && flush(&stream, &mut pending).is_err() {
                    return;
                }
                if ready.is_readable() && pending.len() < OUT_CAP {
                    match read_and_echo(&stream, &mut partial, &mut pending) {
                        Ok(Read::Data) => {
                            last_seen = Instant::now();
                            heartbeats = 0;
                            sleep.as_mut().reset(last_seen + timing.idle);
                        }
                        Ok(Read::Nothing) => {}
                        Ok(Read::End) | Err(_) => return,
                    }
                }
            }
            () = &mut sleep => {
                let last = heartbeats == timing.count;
                let message: &[u8] = if last { b"End Connection\n" } else { b"heartbeat\n" };
                pending.extend_from_slice(message);
                if flush(&stream, &mut pending).is_err() || last {
                    return;
                }
                heartbeats += 1;
                sleep.as_mut().reset(last_seen + timing.idle + timing.interval * heartbeats);
            }
        }
    }
}

enum Read {
    Data,
    Nothing,
    End,
}

/// Reads what is there into the shared scratch buffer, echoes every complete line, and keeps
/// only an unfinished line's start (in `partial`) and unsent output (in `pending`).
fn read_and_echo(
    stream: &TcpStream,
    partial: &mut Vec<u8>,
    pending: &mut Vec<u8>,
) -> io::Result<Read> {
    SCRATCH_IN.with_borrow_mut(|input| {
        SCRATCH_OUT.with_borrow_mut(|out| {
            let mut got = Read::Nothing;
            for _ in 0..READS_PER_TURN {
                let n = match stream.try_read(input) {
                    Ok(0) => return Ok(Read::End),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                got = Read::Data;
                echo_lines(&input[..n], partial, out);
                if n < input.len() {
                    break;
                }
            }
            if !out.is_empty() {
                if pending.is_empty() {
                    // Usually the kernel takes it all and nothing stays with the connection.
                    let sent = write_some(stream, out)?;
                    pending.extend_from_slice(&out[sent..]);
                } else {
                    pending.extend_from_slice(out);
                    flush(stream, pending)?;
                }
                out.clear();
            }
            Ok(got)
        })
    })
}

/// Appends the echo of every line `bytes` completes to `out`; an unfinished line's start goes
/// to `partial` (allocated only then, freed once the line ends).
fn echo_lines(mut bytes: &[u8], partial: &mut Vec<u8>, out: &mut Vec<u8>) {
    while let Some(end) = memchr::memchr(b'\n', bytes) {
        let line = if partial.is_empty() {
            &bytes[..end]
        } else {
            partial.extend_from_slice(&bytes[..end]);
            partial.as_slice()
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line != ANSWER {
            out.extend_from_slice(ECHO_PREFIX);
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        if !partial.is_empty() {
            *partial = Vec::new();
        }
        bytes = &bytes[end + 1..];
    }
    partial.extend_from_slice(bytes);
}

/// Writes as much of `bytes` as the kernel takes now.
fn write_some(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.try_write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Writes what `pending` holds; frees it once all is sent.
fn flush(stream: &TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
    let sent = write_some(stream, pending)?;
    if sent == pending.len() {
        *pending = Vec::new();
    } else {
        pending.drain(..sent);
    }
    Ok(())
}
