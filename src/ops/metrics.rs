//! What the `--metrics` endpoint says, as pure code: the server's counters in the Prometheus
//! text exposition format (version 0.0.4), and the little HTTP/1.x it takes to hand them to a
//! scraper: reading its request (with `httparse`) and writing the whole response.
//!
//! Owns the metric names, their help and types, the histogram buckets, the request rules
//! (`GET /metrics` only, at most [`MAX_REQUEST`] bytes) and the response bytes. Does not own
//! sockets, the clock, the scraper's deadline or the order of work: the poll loop reads a
//! scraper's bytes, asks [`parse_request`] and [`respond`] what to send, sends it and closes.
//! Nor does it count anything: the counts are [`ServerStats`]' and the loop's ([`Gauges`]).
//!
//! How the loop serves a scraper on the `--metrics` listener (it is a peer like any other,
//! with a deadline):
//!
//! 1. accept it; keep its received bytes in a buffer of its own (at most [`MAX_REQUEST`]
//!    are ever needed); close it if it has not been answered by [`SCRAPE_DEADLINE`];
//! 2. after each read, call [`respond`]`(`[`parse_request`]`(&received), stats, &gauges,
//!    &mut out)`: `None` means read more; `Some(status)` means `out` holds the whole response;
//! 3. write `out` (buffering what the kernel will not take yet), shut down the sending side,
//!    and close once the scraper closes or the deadline passes; closing with its unread
//!    bytes at once could reset the connection and destroy the response.
//!
//! The format is written by hand rather than with `prometheus-client`: that crate keeps its
//! own registry of live metric objects, so every counter would be counted twice (or wrapped
//! in a custom collector that rebuilds the same text), and it writes the OpenMetrics format,
//! not 0.0.4. The format is a few `# HELP` / `# TYPE` lines and `name{labels} value` lines;
//! the tests pin it exactly.

pub mod merge;

use std::fmt::Write as _;
use std::time::Duration;

use crate::ops::stats::{Latencies, ServerStats};

/// What the loop knows that [`ServerStats`] does not count, passed in at each scrape.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    /// Bytes held in peers' buffers now (partial lines, unsent output): `--max-buffered`'s.
    pub buffered_bytes: u64,
    /// Log lines dropped since the server started; never decreases.
    pub log_lines_dropped: u64,
}

/// The version in `heartbeat_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Histogram bucket bounds: as written in the `le` label (seconds), and in microseconds.
/// From half the default tick to 5 s, about three to a decade, so that both a quiet loop's
/// sub-millisecond lateness and a stalled host's seconds fall in a bucket of their own.
const BUCKETS: [(&str, u64); 13] = [
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
];

/// The metrics text for `stats` and `gauges`.
pub fn render(stats: &ServerStats, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    render_into(&mut out, stats, gauges);
    out
}

/// Appends the metrics text to `out` (a buffer the caller may reuse).
pub fn render_into(out: &mut String, stats: &ServerStats, gauges: &Gauges) {
    let mut m = Writer(out);
    m.family(
        "heartbeat_build_info",
        "gauge",
        "Always 1; the version of the running server in its label.",
    );
    let version = escape(VERSION);
    m.sample("heartbeat_build_info", &format!("version=\"{version}\""), 1);

    m.gauge(
        "heartbeat_connections_open",
        "Connections open now.",
        stats.open,
    );
    m.gauge(
        "heartbeat_connections_peak",
        "The most connections open at once since the server started.",
        stats.peak_open,
    );
    m.counter(
        "heartbeat_connections_accepted_total",
        "Connections accepted and served (refused ones are counted apart).",
        stats.accepted,
    );
    let name = "heartbeat_connections_closed_total";
    m.family(name, "counter", "Connections closed, by reason: the peer closed, dead (every heartbeat unanswered a full interval), an I/O error, the server stopping, over --max-buffered, a probe that left without a byte.");
    m.sample(name, "reason=\"peer_closed\"", stats.closed_by_peer);
    m.sample(name, "reason=\"dead\"", stats.closed_dead);
    m.sample(name, "reason=\"error\"", stats.closed_on_error);
    m.sample(name, "reason=\"shutdown\"", stats.closed_at_shutdown);
    m.sample(name, "reason=\"over_budget\"", stats.closed_over_budget);
    m.sample(name, "reason=\"probe\"", stats.closed_probe);
    let name = "heartbeat_connections_refused_total";
    m.family(name, "counter", "Connections refused at accept, by reason: --max-connections reached, the address not in --allow, no valid PROXY header (--proxy-protocol).");
    m.sample(name, "reason=\"full\"", stats.rejected_full);
    m.sample(name, "reason=\"not_allowed\"", stats.rejected_not_allowed);
    m.sample(
        name,
        "reason=\"no_proxy_header\"",
        stats.rejected_proxy_header,
    );
    m.counter(
        "heartbeat_proxy_header_waits_evicted_total",
        "Peers waiting for their PROXY header closed to make room for a newer one (at the cap).",
        stats.proxy_header_evicted,
    );
    m.counter(
        "heartbeat_metrics_busy_total",
        "Scrapes answered 503 Service Unavailable because every slot was taken.",
        stats.metrics_busy,
    );
    let name = "heartbeat_upgrades_total";
    m.family(
        name,
        "counter",
        "Live upgrades (SIGUSR2), by result: done, or given up with the old process serving on.",
    );
    m.sample(name, "result=\"done\"", stats.upgrades);
    m.sample(name, "result=\"failed\"", stats.upgrades_failed);
    m.counter(
        "heartbeat_upgrade_peers_handed_over_total",
        "Peers handed from one process to the next in live upgrades.",
        stats.handed_over,
    );
    m.gauge(
        "heartbeat_upgrade_pause_microseconds",
        "The last live upgrade's pause, from the old loop's last turn to the new one's first.",
        stats.upgrade_pause_us,
    );
    m.counter(
        "heartbeat_accept_errors_total",
        "Times accept itself failed (e.g. out of file descriptors).",
        stats.accept_errors,
    );
    m.counter(
        "heartbeat_heartbeats_sent_total",
        "Heartbeats sent to quiet peers.",
        stats.heartbeats_sent,
    );
    m.counter(
        "heartbeat_heartbeats_answered_total",
        "Rounds of heartbeats answered: a peer that speaks after heartbeat k counts once.",
        stats.heartbeats_answered,
    );
    m.counter(
        "heartbeat_lines_echoed_total",
        "Lines echoed back to peers.",
        stats.lines_echoed,
    );
    m.counter(
        "heartbeat_lines_too_long_total",
        "Lines over --max-line, dropped and answered with an error line.",
        stats.lines_too_long,
    );
    m.gauge(
        "heartbeat_buffered_bytes",
        "Bytes held in peers' buffers now (partial lines, output not taken yet), counted against --max-buffered.",
        gauges.buffered_bytes,
    );
    m.counter(
        "heartbeat_bytes_received_total",
        "Bytes read from peers.",
        stats.bytes_in,
    );
    m.counter(
        "heartbeat_bytes_sent_total",
        "Bytes the kernel took for peers.",
        stats.bytes_out,
    );
    m.counter(
        "heartbeat_log_lines_dropped_total",
        "Log lines dropped because the log could not keep up.",
        gauges.log_lines_dropped,
    );
    m.histogram(
        "heartbeat_end_connection_lateness_seconds",
        "How long after its due time each End Connection was sent.",
        &stats.close_lateness,
    );
    m.histogram(
        "heartbeat_end_connection_lateness_loop_seconds",
        "End Connection lateness less the time the OS kept the loop asleep past its alarm: the loop's own share.",
        &stats.close_lateness_loop,
    );
    m.histogram(
        "heartbeat_wakeup_delay_seconds",
        "How late the OS woke the loop after the alarm it slept until.",
        &stats.wake_delay,
    );
    m.histogram(
        "heartbeat_detection_seconds",
        "For each peer closed as dead, how long it had been silent when told End Connection.",
        &stats.detection_time,
    );
}

/// Writes families into the text; writing to a `String` cannot fail.
struct Writer<'a>(&'a mut String);

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        match labels.is_empty() {
            true => {
                let _ = writeln!(self.0, "{name} {value}");
            }
            false => {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, "", value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, "", value);
    }

    fn histogram(&mut self, name: &str, help: &str, latencies: &Latencies) {
        self.family(name, "histogram", help);
        let bounds = BUCKETS.map(|(_, us)| Duration::from_micros(us));
        let buckets = latencies.buckets(&bounds);
        let bucket = format!("{name}_bucket");
        for ((le, _), count) in BUCKETS.iter().zip(&buckets.cumulative) {
            self.sample(&bucket, &format!("le=\"{le}\""), *count);
        }
        self.sample(&bucket, "le=\"+Inf\"", buckets.count);
        let _ = writeln!(self.0, "{name}_sum {}", buckets.sum_secs);
        self.sample(&format!("{name}_count"), "", buckets.count);
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A help text: backslash and newline escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The longest request taken, request line and headers: a scraper sends a few hundred bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// The most headers taken; more is [`Status::HeadersTooLarge`].
const MAX_HEADERS: usize = 32;
/// The one path served.
pub const PATH: &str = "/metrics";
/// How long a scraper has from connecting to taking its whole answer: a scraper sends its
/// request at once and Prometheus' own scrape timeout is 10 s, so a connection still open
/// after this is idle or stuck, and holds a descriptor for nothing.
pub const SCRAPE_DEADLINE: Duration = Duration::from_secs(5);

/// The statuses the endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the metrics.
    Ok,
    /// 400: not an HTTP/1.x request.
    BadRequest,
    /// 404: a path other than [`PATH`].
    NotFound,
    /// 405: a method other than GET.
    MethodNotAllowed,
    /// 431: more than [`MAX_REQUEST`] bytes, or too many headers.
    HeadersTooLarge,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeadersTooLarge => 431,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
        }
    }
}

/// What the bytes a scraper has sent so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// Not a whole request yet, and nothing wrong so far: read more (within the deadline).
    NeedMore,
    /// A whole GET request for this path (the query string left off).
    Get(&'a str),
    /// Answer with this status and close.
    Bad(Status),
}

/// Reads the bytes received so far from a scraper, from its first byte. Bytes after a whole
/// request (a pipelined second request, junk) are ignored: one request is answered per
/// connection, and then it is closed.
pub fn parse_request(received: &[u8]) -> Request<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(received) {
        Ok(httparse::Status::Complete(len)) if len > MAX_REQUEST => {
            Request::Bad(Status::HeadersTooLarge)
        }
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some("GET"), Some(path)) => Request::Get(path.split('?').next().unwrap_or(path)),
            (Some(_), _) => Request::Bad(Status::MethodNotAllowed),
            _ => Request::Bad(Status::BadRequest),
        },
        Ok(httparse::Status::Partial) => match request.method {
            // No need to wait for the rest of a request that will be refused anyway.
            Some(method) if method != "GET" => Request::Bad(Status::MethodNotAllowed),
            _ if received.len() >= MAX_REQUEST => Request::Bad(Status::HeadersTooLarge),
            _ => Request::NeedMore,
        },
        Err(httparse::Error::TooManyHeaders) => Request::Bad(Status::HeadersTooLarge),
        Err(_) => Request::Bad(Status::BadRequest),
    }
}

/// Appends to `out` the whole response to `request` (the metrics of `stats` and `gauges` for
/// `GET /metrics`, an error otherwise) and returns its status; `None`, with nothing written,
/// for [`Request::NeedMore`].
pub fn respond(
    request: Request<'_>,
    stats: &ServerStats,
    gauges: &Gauges,
    out: &mut Vec<u8>,
) -> Option<Status> {
    let status = match request {
        Request::NeedMore => return None,
        Request::Get(PATH) => {
            let body = render(stats, gauges);
            write_response(out, Status::Ok, body.as_bytes());
            return Some(Status::Ok);
        }
        Request::Get(_) => Status::NotFound,
        Request::Bad(status) => status,
    };
    let body = format!("{}\n", status.reason());
    write_response(out, status, body.as_bytes());
    Some(status)
}

/// The answer to a scraper that found every slot taken: `503 Service Unavailable`, asking it
/// to try again in a second (by then a silent connection has given its slot up).
pub fn busy() -> &'static [u8] {
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
      Content-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
      Service Unavailable\n"
}

/// The whole response: status line, headers, `body`.
pub fn response(status: Status, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 160);
    write_response(&mut out, status, body);
    out
}

/// Appends the whole response to `out`. The metrics are text/plain version 0.0.4, errors plain
/// text; every response says how long it is and that the connection closes after it.
pub fn write_response(out: &mut Vec<u8>, status: Status, body: &[u8]) {
    let content_type = match status {
        Status::Ok => "text/plain; version=0.0.4; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    let allow = match status {
        Status::MethodNotAllowed => "Allow: GET\r\n",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        status.code(),
        status.reason(),
        body.len(),
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests;
