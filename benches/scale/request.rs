//! Figure 4b, request–response: R connections each send one line and wait for its echo
//! before sending the next (a closed loop, one line in flight per connection), for a fixed
//! time. The server's CPU per echoed line, echoes per second, and each line's round trip
//! (write to last byte of its echo, timed in this process), p50 and p99.
//!
//! Unlike figure 4 (pipelined lines, where one read brings thousands of lines), every line
//! here costs the server a wake-up, a read and a write: the system calls dominate. The driver
//! is one tokio thread in this process on the same two cores, so the echo rate and the round
//! trips are those of server and driver together (with R lines in flight, a round trip is
//! about R ÷ the echo rate); the CPU per line is the server's alone.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use heartbeat::ops::stats::Percentiles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::figures::{Figures, RR_CPU, RR_RATE, RR_RTT};
use crate::load::{source_address, wait_for_fds};
use crate::proc::{cpu_ticks, fd_count};
use crate::server::ServerProc;
use crate::{progress, Run, CONNECT_TIMEOUT, FAR_TIMING};

const LINE: &[u8] = b"Hello, there\n";
const ECHO: &[u8] = b"Echoing...Hello, there\n";

type Rtts = Arc<Mutex<Histogram<u64>>>;

pub fn rr_phase(run: &Run, fig: &mut Figures) -> Result<(), String> {
    let (conns, secs) = (run.sizes.rr_conns, run.sizes.rr_secs);
    let server = ServerProc::start(fig.kind, FAR_TIMING, run.sizes.tick)?;
    let pid = server.pid();
    thread::sleep(Duration::from_millis(300));
    let fds0 = fd_count(pid)?;
    let streams = run.rt.block_on(connect(server.addr, conns))?;
    wait_for_fds(pid, fds0 + conns as u64, Instant::now(), None, fig.kind)?;
    let rtts: Rtts = Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| format!("histogram: {e}"))?,
    ));
    let ticks0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    let echoed = run.rt.block_on(exchange_all(
        streams,
        Duration::from_secs(secs),
        Arc::clone(&rtts),
    ))?;
    let wall = t0.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid)? - ticks0;
    server.stop()?;
    if ticks == 0 || echoed == 0 {
        return Err(format!(
            "{echoed} echoes for {ticks} server clock ticks: too few to measure; raise \
             SCALE_RR_CONNS or SCALE_RR_SECS"
        ));
    }
    let p = Percentiles::of(&*rtts.lock().map_err(|_| "histogram lock poisoned")?);
    fig.set(
        RR_CPU,
        ticks as f64 * 1e9 / run.machine.clk_tck as f64 / echoed as f64,
    );
    fig.set(RR_RATE, echoed as f64 / wall);
    fig.set(RR_RTT[0], p.p50_us as f64 / 1000.0);
    fig.set(RR_RTT[1], p.p99_us as f64 / 1000.0);
    let resolution = if ticks < 100 {
        format!(" (only {ticks} ticks: ±{:.0}%)", 100.0 / ticks as f64)
    } else {
        String::new()
    };
    fig.notes.push(format!(
        "request-response: {conns} connections, each one line in flight, for {wall:.1} s: \
         {echoed} echoes verified ({:.0}/s), server CPU {ticks} ticks{resolution}; round trip \
         p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms",
        echoed as f64 / wall,
        p.p50_us as f64 / 1000.0,
        p.p90_us as f64 / 1000.0,
        p.p99_us as f64 / 1000.0,
        p.max_us as f64 / 1000.0,
    ));
    progress(&format!(
        "{}: {echoed} request-response echoes in {wall:.1} s",
        fig.kind.name()
    ));
    Ok(())
}

/// Opens `conns` connections to `server` from the bench's source addresses, with Nagle off.
async fn connect(server: SocketAddr, conns: usize) -> Result<Vec<TcpStream>, String> {
    let one = |i: usize| async move {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        socket
            .bind(source_address(i))
            .map_err(|e| format!("bind: {e}"))?;
        let stream = socket
            .connect(server)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok::<_, String>(stream)
    };
    let handles: Vec<_> = (0..conns).map(|i| tokio::spawn(one(i))).collect();
    let mut streams = Vec::with_capacity(conns);
    for handle in handles {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, handle)
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect task failed: {e}"))??;
        streams.push(stream);
    }
    Ok(streams)
}

/// Every connection exchanges lines one at a time until `span` has passed; returns the
/// echoes received (each checked byte for byte).
async fn exchange_all(streams: Vec<TcpStream>, span: Duration, rtts: Rtts) -> Result<u64, String> {
    let until = Instant::now() + span;
    let handles: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(exchange(stream, until, Arc::clone(&rtts))))
        .collect();
    let mut echoed = 0;
    for handle in handles {
        echoed += tokio::time::timeout(span + CONNECT_TIMEOUT, handle)
            .await
            .map_err(|_| "a request-response connection got no echo for 60 s".to_string())?
            .map_err(|e| format!("request-response task failed: {e}"))??;
    }
    Ok(echoed)
}

async fn exchange(mut stream: TcpStream, until: Instant, rtts: Rtts) -> Result<u64, String> {
    let mut echo = [0u8; ECHO.len()];
    let mut echoed = 0;
    while Instant::now() < until {
        let sent = Instant::now();
        stream
            .write_all(LINE)
            .await
            .map_err(|e| format!("write: {e}"))?;
        stream
            .read_exact(&mut echo)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if echo != ECHO {
            let shown = String::from_utf8_lossy(&echo).into_owned();
            return Err(format!("unexpected bytes from the server: {shown:?}"));
        }
        let us = sent.elapsed().as_micros() as u64;
        if let Ok(mut h) = rtts.lock() {
            h.saturating_record(us.max(1));
        }
        echoed += 1;
    }
    Ok(echoed)
}
