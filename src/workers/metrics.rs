//! The parent's `--metrics` endpoint with `server --workers N`: one scrape address for the
//! whole server. Each worker serves its own metrics on a loopback port of its own (named in
//! its first line); on a scrape the parent fetches every running worker's text and answers
//! with their sum (`metrics::merge`).
//!
//! Owns the parent's listener and one thread that serves scrapers one at a time, each with
//! the same deadline as a worker's scrapers. The parent is a supervisor, not a poll loop, so
//! blocking reads with timeouts are its way; the workers' loops are not touched.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use log::warn;

use super::FirstLines;
use crate::edge::net::SetupError;
use crate::ops::metrics::{self, merge, Request, Status, MAX_REQUEST, SCRAPE_DEADLINE};

/// How long fetching one worker's text may take before it is left out of a scrape.
const FETCH_LIMIT: Duration = Duration::from_secs(2);

/// Listens on `addr` and serves the workers' summed metrics from a thread; returns the
/// address bound (with its port when `addr` said 0).
pub fn serve(addr: SocketAddr, workers: FirstLines) -> Result<SocketAddr, SetupError> {
    let listener = TcpListener::bind(addr).map_err(|source| SetupError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SetupError::Listen { addr, source })?;
    let spawned = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                answer(stream, &workers);
            }
        });
    spawned.map_err(|source| SetupError::EventLoop {
        what: "metrics thread",
        source,
    })?;
    Ok(bound)
}

/// The metrics address named in a server's first line (`…; metrics at http://ADDR/metrics)`):
/// a worker's, for the parent, or the server's own, for a script.
pub fn metrics_addr_in(first_line: &str) -> Option<SocketAddr> {
    first_line
        .split("metrics at http://")
        .nth(1)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Reads one scraper's request (within the deadline) and answers it.
fn answer(mut stream: TcpStream, workers: &FirstLines) {
    let deadline = Instant::now() + SCRAPE_DEADLINE;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let request = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
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
    let mut out = Vec::new();
    match request {
        Request::Get(metrics::PATH) => {
            let texts: Vec<String> = workers
                .snapshot()
                .iter()
                .filter_map(|line| metrics_addr_in(line))
                .filter_map(fetch)
                .collect();
            metrics::write_response(&mut out, Status::Ok, merge::merge(&texts).as_bytes());
        }
        Request::Get(_) => metrics::write_response(&mut out, Status::NotFound, b"Not Found\n"),
        Request::Bad(status) => {
            let body = format!("{}\n", status.reason());
            metrics::write_response(&mut out, status, body.as_bytes());
        }
        Request::NeedMore => return,
    }
    let _ = stream.set_write_timeout(Some(SCRAPE_DEADLINE));
    let _ = stream.write_all(&out);
}

/// One worker's metrics text, or `None` (logged) if it cannot be had in time.
fn fetch(addr: SocketAddr) -> Option<String> {
    let got = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, FETCH_LIMIT)?;
        stream.set_read_timeout(Some(FETCH_LIMIT))?;
        stream.set_write_timeout(Some(FETCH_LIMIT))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: worker\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })();
    match got {
        Ok(response) => match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Some(body.to_string()),
            _ => None,
        },
        Err(e) => {
            warn!("metrics: worker at {addr} did not answer: {e}; left out of this scrape");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_metrics_address_is_read_from_its_first_line() {
        let line = "Listening on 127.0.0.1:8000 (heartbeat every 10s, 3 times, after 30s idle; \
                    metrics at http://127.0.0.1:41000/metrics)";
        assert_eq!(
            metrics_addr_in(line),
            Some("127.0.0.1:41000".parse().unwrap())
        );
        assert_eq!(metrics_addr_in("Listening on 127.0.0.1:8000 (…)"), None);
    }
}
