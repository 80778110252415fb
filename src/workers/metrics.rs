//! The parent's `--metrics` endpoint with `heartbeat-server --workers N`: one scrape address
//! for the whole server, rendered once from the counts the workers sent ([`Tally`]); no
//! worker is asked anything at scrape time, so a stopped or dead worker delays nothing.
//!
//! Owns the parent's listener and its scrapers. Scrapers are served concurrently, each on a
//! thread of its own with the same deadline as a worker loop's scrapers
//! ([`SCRAPE_DEADLINE`]), at most [`SLOTS`] at once: a silent connection (a port scan, a TCP
//! health check) holds only its own slot, never another scrape, and gives it up if it has
//! sent no whole request after [`SCRAPE_FIRST_REQUEST`]; a scraper that finds
//! every slot taken is told `503` with `Retry-After: 1` (by a short-lived thread, at most
//! [`TURNED_AWAY`] at once, so that a flood costs a bounded number of threads). The parent
//! is a supervisor with threads already, not a poll loop: a thread per scraper, bounded, is
//! the simplest way it serves several at once. What to answer is `ops::metrics`' (the same
//! request rules and text as a single server's).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::debug;

use super::tally::Tally;
use crate::edge::net::SetupError;
use crate::ops::metrics::{self, Request, MAX_REQUEST, SCRAPE_DEADLINE};
use crate::server::core::waiting::{SCRAPE_FIRST_REQUEST, SCRAPE_SLOTS};

/// Scrapers served at once, as a single server's loop does.
pub const SLOTS: usize = SCRAPE_SLOTS;

/// Scrapers past [`SLOTS`] told `503` at once, each on a short-lived thread; past these
/// too (a flood), a connection is closed unanswered.
pub const TURNED_AWAY: usize = 4;

/// How long a scraper past capacity has to send its request, take its `503` and close:
/// reading its request first, and its end after, keeps the close from resetting the answer.
const BUSY_LIMIT: Duration = Duration::from_secs(1);

/// Listens on `addr` and serves the merged metrics from threads; returns the address bound
/// (with its port when `addr` said 0).
pub fn serve(addr: SocketAddr, tally: Arc<Mutex<Tally>>) -> Result<SocketAddr, SetupError> {
    let listener = TcpListener::bind(addr).map_err(|source| SetupError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SetupError::Listen { addr, source })?;
    let taken = Taken::default();
    let spawned = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                take(stream, &tally, &taken);
            }
        });
    spawned.map_err(|source| SetupError::EventLoop {
        what: "metrics thread",
        source,
    })?;
    Ok(bound)
}

/// Threads serving scrapers now, and threads telling scrapers `503`.
#[derive(Default)]
struct Taken {
    serving: Arc<AtomicUsize>,
    turning_away: Arc<AtomicUsize>,
}

/// Gives `stream` a slot and a thread, or a `503` when every slot is taken.
fn take(stream: TcpStream, tally: &Arc<Mutex<Tally>>, taken: &Taken) {
    if let Some(slot) = Slot::take(&taken.serving, SLOTS) {
        let tally = tally.clone();
        spawn("scraper", move || {
            let _slot = slot;
            answer(stream, &tally);
        });
    } else if let Some(slot) = Slot::take(&taken.turning_away, TURNED_AWAY) {
        spawn("scraper busy", move || {
            let _slot = slot;
            turn_away(stream);
        });
    } else {
        debug!("metrics: every slot taken, and as many scrapers being told so; closing one");
    }
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(work) {
        debug!("metrics: no thread for a scraper: {e}");
    }
}

/// A taken slot, given back when its thread ends however it ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// One of `count`'s `max` slots, if one is free.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        if count.fetch_add(1, Ordering::SeqCst) >= max {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tells a scraper past capacity `503` with `Retry-After: 1`, within [`BUSY_LIMIT`].
fn turn_away(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    if stream.set_read_timeout(Some(BUSY_LIMIT)).is_err()
        || stream.set_write_timeout(Some(BUSY_LIMIT)).is_err()
        || !matches!(stream.read(&mut buf), Ok(n) if n > 0)
    {
        return;
    }
    if stream.write_all(metrics::busy()).is_ok() {
        finish(&mut stream, &mut buf);
    }
}

/// Our side is done: shut it, then read until the scraper closes its side (within the
/// timeout already set), so that closing with its unread bytes cannot reset the answer away.
fn finish(stream: &mut TcpStream, buf: &mut [u8]) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    while matches!(stream.read(buf), Ok(n) if n > 0) {}
}

/// Reads one scraper's request and answers it. As in a server's own loop, a scraper that has
/// not sent a whole request within [`SCRAPE_FIRST_REQUEST`] gives its slot up (a port scan or
/// a TCP health check must not hold one for the whole [`SCRAPE_DEADLINE`]), and the answer
/// must be taken within the deadline.
fn answer(mut stream: TcpStream, tally: &Mutex<Tally>) {
    let accepted = Instant::now();
    let deadline = accepted + SCRAPE_DEADLINE;
    let request_by = (accepted + SCRAPE_FIRST_REQUEST).min(deadline);
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let request = loop {
        let left = request_by.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            debug!("metrics: a scraper sent no whole request in time; closing it");
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
        finish(&mut stream, &mut buf);
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
