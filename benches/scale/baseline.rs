//! The tokio baselines: servers of the same protocol, one task per connection, in two
//! versions a tokio developer could write.
//!
//! - **typical** (this file's [`connection`]): the way most tokio servers look: a
//!   multi-thread runtime with one worker per core (2 here), a `BufReader` and a `BufWriter`
//!   (default capacities, 8 KiB each) around the two halves of the socket, `read_until` under
//!   `timeout_at` for the heartbeat schedule, and a flush whenever the reader has no more
//!   buffered input (so pipelined echoes go out in batches).
//! - **tuned** ([`crate::tuned`]): written for memory per connection: a current-thread
//!   runtime, reads into one shared scratch buffer, a per-connection buffer only while it
//!   holds bytes.
//!
//! This file owns the baselines' role: the bench re-executes itself with [`ROLE_VAR`] set
//! (see [`command`]), and `main` hands over to [`main`] here when [`is_role`] says so.
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use heartbeat::cores::liveness::Timing;
use heartbeat::settings::config::format_duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};

/// The environment variable that turns this binary into the tokio baseline server.
const ROLE_VAR: &str = "HEARTBEAT_SCALE_ROLE";
const TOKIO_ROLE: &str = "tokio-server";
const TUNED_ROLE: &str = "tokio-tuned-server";
/// `interval_ms,count,idle_ms` for the baseline.
const TIMING_VAR: &str = "HEARTBEAT_SCALE_TIMING";

/// The same accept backlog as heartbeat's, so the accept rates compare like for like.
const BACKLOG: u32 = 4096;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Whether this process was started as a baseline server (it then ignores argv: cargo's
/// `--bench` is not meant for it).
pub fn is_role() -> bool {
    matches!(
        std::env::var(ROLE_VAR).as_deref(),
        Ok(TOKIO_ROLE | TUNED_ROLE)
    )
}

/// This very binary as the baseline server `tuned` or not, with `timing`; it prints
/// `Listening on ADDR …` first, and exits when its stdin (piped here) closes.
pub fn command(tuned: bool, timing: Timing) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut command = Command::new(exe);
    let spec = format!(
        "{},{},{}",
        timing.interval.as_millis(),
        timing.count,
        timing.idle.as_millis()
    );
    command
        .env(ROLE_VAR, if tuned { TUNED_ROLE } else { TOKIO_ROLE })
        .env(TIMING_VAR, spec)
        .stdin(Stdio::piped());
    Ok(command)
}

pub fn main() -> ExitCode {
    let Some(timing) = std::env::var(TIMING_VAR)
        .ok()
        .and_then(|s| parse_timing(&s))
    else {
        eprintln!("tokio baseline: {TIMING_VAR} must be interval_ms,count,idle_ms");
        return ExitCode::from(2);
    };
    // Exit when the bench closes our stdin (or dies): nothing outlives the bench.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });
    let _ = heartbeat::edge::net::raise_open_file_limit();
    let tuned = std::env::var(ROLE_VAR).as_deref() == Ok(TUNED_ROLE);
    let runtime = if tuned {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tokio baseline: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(timing, tuned)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_timing(spec: &str) -> Option<Timing> {
    let mut parts = spec.split(',').map(|p| p.trim().parse::<u64>().ok());
    let interval = Duration::from_millis(parts.next()??);
    let count = u32::try_from(parts.next()??).ok()?;
    let idle = Duration::from_millis(parts.next()??);
    // The idle rule, as the real server applies it.
    Some(Timing {
        idle: idle.max(interval * count),
        interval,
        count,
    })
}

async fn serve(timing: Timing, tuned: bool) -> std::io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(BACKLOG)?;
    println!(
        "Listening on {} (heartbeat every {}, {} times, after {} idle) [tokio baseline, {}]",
        listener.local_addr()?,
        format_duration(timing.interval),
        timing.count,
        format_duration(timing.idle),
        if tuned { "tuned" } else { "typical" }
    );
    loop {
        match listener.accept().await {
            Ok((stream, _)) if tuned => {
                tokio::spawn(crate::tuned::connection(stream, timing));
            }
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, timing));
            }
            Err(e) => {
                // Out of descriptors, typically: do not spin.
                eprintln!("tokio baseline: accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One peer: echo its lines; after `idle` of silence, `count` heartbeats `interval`
/// apart, then `End Connection` and close. Any bytes from the peer restart the schedule.
async fn connection(mut stream: TcpStream, timing: Timing) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.split();
    let mut reader = BufReader::new(reader);
    let mut writer = BufWriter::new(writer);
    let mut line = Vec::new();
    let mut last_seen = Instant::now();
    let mut heartbeats = 0u32;
    // Bytes of an unfinished line seen when a timer fired: they count as a sign of life.
    let mut partial = 0;
    loop {
        let due = last_seen + timing.idle + timing.interval * heartbeats;
        match timeout_at(due, reader.read_until(b'\n', &mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {
                last_seen = Instant::now();
                heartbeats = 0;
                partial = 0;
                let Some(data) = line.strip_suffix(b"\n") else {
                    return; // the stream ended in the middle of a line
                };
                let data = data.strip_suffix(b"\r").unwrap_or(data);
                if data != b"Echoing...heartbeat" {
                    let echoed = async {
                        writer.write_all(b"Echoing...").await?;
                        writer.write_all(data).await?;
                        writer.write_all(b"\n").await
                    };
                    if echoed.await.is_err() {
                        return;
                    }
                }
                line.clear();
                if reader.buffer().is_empty() && writer.flush().await.is_err() {
                    return;
                }
            }
            Err(_elapsed) => {
                if line.len() > partial {
                    partial = line.len();
                    last_seen = Instant::now();
                    heartbeats = 0;
                    continue;
                }
                let last = heartbeats == timing.count;
                let message: &[u8] = if last {
                    b"End Connection\n"
                } else {
                    b"heartbeat\n"
                };
                heartbeats += 1;
                if writer.write_all(message).await.is_err() || writer.flush().await.is_err() || last
                {
                    return;
                }
            }
        }
    }
}
