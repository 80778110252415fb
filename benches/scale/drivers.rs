//! The tokio load drivers, run on this process's current-thread runtime: connections that
//! pipeline short lines in large writes and check every echo (figure 4), and silent peers
//! that send one line, answer nothing, and time what arrives (figure 5). Their own cost is
//! not measured.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat::cores::liveness::Timing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::load::source_address;
use crate::stamped::StampedReader;
use crate::CONNECT_TIMEOUT;

const LINE: &[u8] = b"Hello, there\n";
const ECHO: &[u8] = b"Echoing...Hello, there\n";
/// Lines per write of the pipelining driver (65,000 bytes).
const BATCH_LINES: usize = 5000;
/// The longest a pipelining round may take on one connection.
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// Opens `conns` connections to `server` at once, with Nagle off.
pub async fn connect(server: SocketAddr, conns: usize) -> Result<Vec<TcpStream>, String> {
    let connects = (0..conns).map(|_| tokio::spawn(TcpStream::connect(server)));
    let mut streams = Vec::with_capacity(conns);
    for handle in connects.collect::<Vec<_>>() {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, handle)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect task failed: {e}"))?
            .map_err(|e| format!("connect failed: {e}"))?;
        let _ = stream.set_nodelay(true);
        streams.push(stream);
    }
    Ok(streams)
}

/// One round: every connection writes `lines` lines in large batches while reading and
/// checking every echo. Returns the streams for the next round and the echoes counted.
pub async fn pipeline_round(
    streams: Vec<TcpStream>,
    lines: usize,
) -> Result<(Vec<TcpStream>, u64), String> {
    let handles: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(pipeline_one(stream, lines)))
        .collect();
    let mut back = Vec::with_capacity(handles.len());
    let mut echoed = 0;
    for handle in handles {
        let (stream, n) = tokio::time::timeout(ROUND_TIMEOUT, handle)
            .await
            .map_err(|_| "a pipelining connection took over 120 s".to_string())?
            .map_err(|e| format!("pipelining task failed: {e}"))??;
        back.push(stream);
        echoed += n;
    }
    Ok((back, echoed))
}

async fn pipeline_one(mut stream: TcpStream, lines: usize) -> Result<(TcpStream, u64), String> {
    let batch = LINE.repeat(BATCH_LINES.min(lines));
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let mut left = lines;
        while left > 0 {
            let k = left.min(BATCH_LINES);
            writer
                .write_all(&batch[..k * LINE.len()])
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            left -= k;
        }
        Ok::<_, String>(())
    };
    let read = async {
        let expected = (lines * ECHO.len()) as u64;
        let mut buf = vec![0u8; 64 * 1024];
        let (mut got, mut at) = (0u64, 0usize);
        while got < expected {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "the server closed after {} of {lines} echoes",
                    got / ECHO.len() as u64
                ));
            }
            if !matches_echoes(&buf[..n], &mut at) {
                let shown = String::from_utf8_lossy(&buf[..n.min(60)]).into_owned();
                return Err(format!("unexpected bytes from the server: {shown:?}"));
            }
            got += n as u64;
        }
        Ok(got / ECHO.len() as u64)
    };
    let ((), echoed) = tokio::try_join!(write, read)?;
    Ok((stream, echoed))
}

/// Whether `bytes` continue the stream `Echoing...Hello, there\n` repeated, from offset `at`.
fn matches_echoes(mut bytes: &[u8], at: &mut usize) -> bool {
    while !bytes.is_empty() {
        let take = (ECHO.len() - *at).min(bytes.len());
        if bytes[..take] != ECHO[*at..*at + take] {
            return false;
        }
        *at = (*at + take) % ECHO.len();
        bytes = &bytes[take..];
    }
    true
}

/// What one silent peer saw, in microseconds.
pub struct PeerTimes {
    /// End Connection's arrival after the old fixed schedule, line sent + idle + count ×
    /// interval (negative: early, which the rule never allows: each step waits at least an
    /// interval after the one before).
    pub close_late_us: i64,
    /// End Connection's arrival after the rule's due time as the peer sees it: a full
    /// interval after the last heartbeat arrived (line sent + idle with no heartbeat). Each
    /// step's lateness is the server's own, not the sum of the steps before. May be a little
    /// negative: the two arrivals are timed by a busy task.
    pub close_step_late_us: i64,
    /// The same from the kernel's receive timestamps of the two segments (`SO_TIMESTAMPNS`),
    /// so this process's scheduling plays no part; `None` when either stamp is missing or
    /// shared with another line's.
    pub kernel_close_step_late_us: Option<i64>,
    /// Heartbeat 1's arrival after its due time (negative: early).
    pub first_heartbeat_late_us: i64,
    /// From sending the line to reading its echo.
    pub echo_us: u64,
}

/// `peers` silent peers started `rate` per second; each result is what one peer saw, or
/// why it did not see heartbeats, End Connection and EOF in order within `budget`.
pub async fn silent_peers(
    server: SocketAddr,
    peers: usize,
    rate: u32,
    timing: Timing,
    budget: Duration,
) -> Vec<Result<PeerTimes, String>> {
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let step = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let handles: Vec<_> = (0..peers)
        .map(|i| tokio::spawn(silent_peer(server, i, start + step * i as u32, timing)))
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(
            match tokio::time::timeout_at(start + budget, handle).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(format!("peer task failed: {e}")),
                Err(_) => Err("no End Connection within the phase's time budget".to_string()),
            },
        );
    }
    results
}

/// One silent peer: connects, sends one line, reads its echo, then answers nothing.
async fn silent_peer(
    server: SocketAddr,
    index: usize,
    at: tokio::time::Instant,
    timing: Timing,
) -> Result<PeerTimes, String> {
    tokio::time::sleep_until(at).await;
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(source_address(index))
        .map_err(|e| format!("bind: {e}"))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut stream = StampedReader::new(stream).map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
    // Taken before writing: the server's clock starts later, so lateness is never understated.
    let sent = Instant::now();
    stream
        .get_mut()
        .write_all(LINE)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let due = sent + timing.idle + timing.interval * timing.count;
    let give_up = tokio::time::Instant::from_std(due + Duration::from_secs(10));
    let mut heartbeats = 0;
    let (mut echo_us, mut first_heartbeat_late_us) = (None, 0);
    // The rule's next due time, from when the previous step arrived: as this task read it,
    // and as the kernel received it (`None` when a stamp is missing or shared with End
    // Connection's).
    let mut step_due = sent + timing.idle;
    let mut kernel_step_due = None;
    let (arrival, kernel_step_late_us) = loop {
        let line = tokio::time::timeout_at(give_up, stream.next_line())
            .await
            .map_err(|_| format!("nothing 10 s after due, {heartbeats} heartbeats seen"))?
            .map_err(|e| format!("read: {e}"))?;
        let (now, kernel_now) = (line.read_at, line.kernel_at.filter(|_| !line.shared_read));
        match (echo_us.is_some(), line.bytes.as_slice()) {
            (_, b"") => {
                return Err(format!(
                    "EOF without End Connection after {heartbeats} heartbeats"
                ))
            }
            (false, ECHO) => echo_us = Some((now - sent).as_micros() as u64),
            (true, b"heartbeat\n") => {
                heartbeats += 1;
                if heartbeats == 1 {
                    first_heartbeat_late_us = signed_micros(now, sent + timing.idle);
                }
                step_due = now + timing.interval;
                kernel_step_due = kernel_now.map(|at| at + timing.interval);
            }
            (true, b"End Connection\n") => {
                let kernel_late = kernel_now
                    .zip(kernel_step_due)
                    .map(|(at, due)| at.as_micros() as i64 - due.as_micros() as i64);
                break (now, kernel_late);
            }
            (_, other) => {
                return Err(format!(
                    "unexpected line {:?}",
                    String::from_utf8_lossy(other)
                ))
            }
        }
    };
    if heartbeats != timing.count {
        return Err(format!(
            "{heartbeats} heartbeats before End Connection, expected {}",
            timing.count
        ));
    }
    match tokio::time::timeout(Duration::from_secs(2), stream.next_line()).await {
        Ok(Ok(line)) if line.bytes.is_empty() => {}
        Ok(Ok(_)) => return Err("bytes after End Connection".to_string()),
        Ok(Err(e)) => return Err(format!("{} after End Connection", e.kind())),
        Err(_) => return Err("no EOF within 2 s of End Connection".to_string()),
    }
    Ok(PeerTimes {
        close_late_us: signed_micros(arrival, due),
        close_step_late_us: signed_micros(arrival, step_due),
        kernel_close_step_late_us: kernel_step_late_us,
        first_heartbeat_late_us,
        echo_us: echo_us.unwrap_or(0),
    })
}

/// `at − due` in microseconds, negative when `at` came first.
fn signed_micros(at: Instant, due: Instant) -> i64 {
    if at >= due {
        (at - due).as_micros() as i64
    } else {
        -((due - at).as_micros() as i64)
    }
}
