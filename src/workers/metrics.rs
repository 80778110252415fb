//! The parent's `--metrics` endpoint with `heartbeat-server --workers N`: one scrape address
//! for the whole server, rendered once from the counts the workers sent ([`Tally`]); no
//! worker is asked anything at scrape time, so a stopped or dead worker delays nothing.
//!
//! Owns the parent's listener and its scrapers. Scrapers are served concurrently, each on a
//! thread of its own with the same deadline as a worker loop's scrapers
//! ([`SCRAPE_DEADLINE`]), at most [`SLOTS`] at once: a silent connection (a port scan, a TCP
//! health check) holds only its own slot, never another scrape, and a scraper that finds
//! every slot taken is told `503` with `Retry-After: 1`. The parent is a supervisor with
//! threads already, not a poll loop: a thread per scraper, bounded, is the simplest way it
//! serves several at once. What to answer is `ops::metrics`' (the same request rules and
//! text as a single server's).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::debug;

use super::tally::Tally;
use crate::edge::net::SetupError;
use crate::ops::metrics::{self, Request, MAX_REQUEST, SCRAPE_DEADLINE};

/// Scrapers served at once, as a single server's loop does.
pub const SLOTS: usize = 12;

/// How long a `503` may take to write to a scraper past capacity before it is dropped.
const BUSY_WRITE: Duration = Duration::from_millis(200);

/// Listens on `addr` and serves the merged metrics from threads; returns the address bound
/// (with its port when `addr` said 0).
pub fn serve(addr: SocketAddr, tally: Arc<Mutex<Tally>>) -> Result<SocketAddr, SetupError> {
    let listener = TcpListener::bind(addr).map_err(|source| SetupError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SetupError::Listen { addr, source })?;
    let busy = Arc::new(AtomicUsize::new(0));
    let spawned = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                take(stream, &tally, &busy);
            }
        });
    spawned.map_err(|source| SetupError::EventLoop {
        what: "metrics thread",
        source,
    })?;
    Ok(bound)
}

/// Gives `stream` a slot and a thread, or a `503` when every slot is taken.
fn take(mut stream: TcpStream, tally: &Arc<Mutex<Tally>>, busy: &Arc<AtomicUsize>) {
    if busy.fetch_add(1, Ordering::SeqCst) >= SLOTS {
        busy.fetch_sub(1, Ordering::SeqCst);
        let mut out = Vec::new();
        metrics::busy(&mut out);
        let _ = stream.set_write_timeout(Some(BUSY_WRITE));
        let _ = stream.write_all(&out);
        return;
    }
    let slot = Slot(busy.clone());
    let tally = tally.clone();
    let spawned = std::thread::Builder::new()
        .name("scraper".into())
        .spawn(move || {
            let _slot = slot;
            answer(stream, &tally);
        });
    if let Err(e) = spawned {
        debug!("metrics: no thread for a scraper: {e}");
    }
}

/// A taken slot, given back when its thread ends however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads one scraper's request (within the deadline) and answers it.
fn answer(mut stream: TcpStream, tally: &Mutex<Tally>) {
    let deadline = Instant::now() + SCRAPE_DEADLINE;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let request = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            debug!("metrics: a scraper ran out of time; closing it");
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) if received.len() <= MAX_REQUEST => received.extend_from_slice(&buf[..n]),
            Ok(_) => {}
        }
        match metrics::parse_request(&received) {
            Request::NeedMore => continue,
            request => break request,
        }
    };
    let merged = super::server::lock(tally).merged();
    let mut out = Vec::new();
    metrics::respond(request, &merged.stats, &merged.gauges, &mut out);
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
        return;
    }
    if stream.write_all(&out).is_ok() {
        // Our side done; wait (within the deadline) for the scraper to close its side, so
        // that closing with its unread bytes cannot reset the response away.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// The metrics address named in a server's first line (`…; metrics at http://ADDR/metrics)`):
/// for a script, or a test, that started a server with `--metrics ADDR:0`.
pub fn metrics_addr_in(first_line: &str) -> Option<SocketAddr> {
    first_line
        .split("metrics at http://")
        .nth(1)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_address_is_read_from_a_first_line() {
        let line = "Listening on 127.0.0.1:8000 (heartbeat every 10s, 3 times, after 30s idle; \
                    metrics at http://127.0.0.1:41000/metrics)";
        assert_eq!(
            metrics_addr_in(line),
            Some("127.0.0.1:41000".parse().unwrap())
        );
        assert_eq!(metrics_addr_in("Listening on 127.0.0.1:8000 (…)"), None);
    }
}
