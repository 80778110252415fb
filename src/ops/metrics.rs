//! What the `--metrics` endpoint says, as pure code: the server's counters in the OpenMetrics
//! text format (Prometheus reads it), and the little HTTP/1.x it takes to hand them to a
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
//! The text is encoded by `prometheus-client` in the OpenMetrics text format (1.0.0), which
//! Prometheus reads: a collector hands it the counts of one moment ([`ServerStats`] and
//! [`Gauges`]) as constant counters, gauges and histograms, so nothing is counted twice and no
//! live metric object is kept. Counters are named without `_total` for the crate, which
//! appends it: the samples keep their names (`heartbeat_connections_accepted_total`).

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

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

/// Histogram bucket bounds in microseconds. From half the default tick to 5 s, about three
/// to a decade, so that both a quiet loop's sub-millisecond lateness and a stalled host's
/// seconds fall in a bucket of their own.
const BUCKETS_US: [u64; 13] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics text for `stats` and `gauges`.
pub fn render(stats: &ServerStats, gauges: &Gauges) -> String {
    let mut out = String::with_capacity(8192);
    render_into(&mut out, stats, gauges);
    out
}

/// Appends the metrics text to `out` (a buffer the caller may reuse).
pub fn render_into(out: &mut String, stats: &ServerStats, gauges: &Gauges) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Moment {
        stats: stats.clone(),
        gauges: *gauges,
    }));
    // Writing to a String fails only if a collector does, and ours only passes on the
    // encoder's results.
    let _ = prometheus_client::encoding::text::encode(out, &registry);
}

/// The counts of one moment, as the registry's one collector.
#[derive(Debug)]
struct Moment {
    stats: ServerStats,
    gauges: Gauges,
}

impl Collector for Moment {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let (s, g) = (&self.stats, &self.gauges);
        let e = &mut encoder;
        // OpenMetrics' info type: the family `heartbeat_build`, its one sample
        // `heartbeat_build_info{version="…"} 1` (Prometheus stores it as a gauge).
        e.encode_descriptor(
            "heartbeat_build",
            "Always 1; the version of the running server in its label.",
            None,
            MetricType::Info,
        )?
        .encode_info(&[("version", VERSION)])?;
        gauge(
            e,
            "heartbeat_connections_open",
            "Connections open now.",
            s.open,
        )?;
        gauge(
            e,
            "heartbeat_connections_peak",
            "The most connections open at once since the server started.",
            s.peak_open,
        )?;
        counter(
            e,
            "heartbeat_connections_accepted",
            "Connections accepted and served (refused ones are counted apart).",
            s.accepted,
        )?;
        labelled(
            e,
            "heartbeat_connections_closed",
            "Connections closed, by reason: the peer closed, dead (every heartbeat unanswered a full interval), an I/O error, the server stopping, over --max-buffered, a probe that left without a byte.",
            &[
                ("peer_closed", s.closed_by_peer),
                ("dead", s.closed_dead),
                ("error", s.closed_on_error),
                ("shutdown", s.closed_at_shutdown),
                ("over_budget", s.closed_over_budget),
                ("probe", s.closed_probe),
            ],
        )?;
        labelled(
            e,
            "heartbeat_connections_refused",
            "Connections refused at accept, by reason: --max-connections reached, the address not in --allow, no valid PROXY header (--proxy-protocol).",
            &[
                ("full", s.rejected_full),
                ("not_allowed", s.rejected_not_allowed),
                ("no_proxy_header", s.rejected_proxy_header),
            ],
        )?;
        counter(
            e,
            "heartbeat_tls_handshakes",
            "TLS handshakes begun (--tls-cert); a peer refused at accept (--allow, --max-connections) begins none.",
            s.tls_handshakes,
        )?;
        counter(
            e,
            "heartbeat_tls_resumed",
            "TLS handshakes that resumed a session with a ticket the server gave (--tls-cert).",
            s.tls_resumed,
        )?;
        let tls: Vec<(&str, u64)> = s
            .rejected_tls
            .by_reason()
            .map(|(refusal, count)| (refusal.name(), count))
            .collect();
        labelled(
            e,
            "heartbeat_tls_handshakes_refused",
            "TLS handshakes refused (--tls-cert), by reason: not TLS, no client certificate, unknown CA, expired, other certificate, the peer's alert, protocol, deadline, evicted (too many in flight), closed.",
            &tls,
        )?;
        counter(
            e,
            "heartbeat_proxy_header_waits_evicted",
            "Peers waiting for their PROXY header closed to make room for a newer one (at the cap).",
            s.proxy_header_evicted,
        )?;
        counter(
            e,
            "heartbeat_metrics_busy",
            "Scrapes answered 503 Service Unavailable because every slot was taken.",
            s.metrics_busy,
        )?;
        {
            let help = "Live upgrades (SIGUSR2), by result: done, or given up with the old process serving on.";
            let mut family =
                e.encode_descriptor("heartbeat_upgrades", help, None, MetricType::Counter)?;
            for (result, value) in [("done", s.upgrades), ("failed", s.upgrades_failed)] {
                ConstCounter::new(value).encode(family.encode_family(&[("result", result)])?)?;
            }
        }
        counter(
            e,
            "heartbeat_upgrade_peers_handed_over",
            "Peers handed from one process to the next in live upgrades.",
            s.handed_over,
        )?;
        counter(
            e,
            "heartbeat_upgrade_tls_peers_kept",
            "TLS peers kept by the old process in live upgrades (a TLS session cannot move).",
            s.tls_kept,
        )?;
        gauge(
            e,
            "heartbeat_upgrade_pause_microseconds",
            "The last live upgrade's pause, from the old loop's last turn to the new one's first.",
            s.upgrade_pause_us,
        )?;
        counter(
            e,
            "heartbeat_accept_errors",
            "Times accept itself failed (e.g. out of file descriptors).",
            s.accept_errors,
        )?;
        counter(
            e,
            "heartbeat_heartbeats_sent",
            "Heartbeats sent to quiet peers.",
            s.heartbeats_sent,
        )?;
        counter(
            e,
            "heartbeat_heartbeats_answered",
            "Rounds of heartbeats answered: a peer that speaks after heartbeat k counts once.",
            s.heartbeats_answered,
        )?;
        counter(
            e,
            "heartbeat_lines_echoed",
            "Lines echoed back to peers.",
            s.lines_echoed,
        )?;
        counter(
            e,
            "heartbeat_lines_too_long",
            "Lines over --max-line, dropped and answered with an error line.",
            s.lines_too_long,
        )?;
        gauge(
            e,
            "heartbeat_buffered_bytes",
            "Bytes held in peers' buffers now (partial lines, output not taken yet), counted against --max-buffered.",
            g.buffered_bytes,
        )?;
        counter(
            e,
            "heartbeat_bytes_received",
            "Bytes read from peers.",
            s.bytes_in,
        )?;
        counter(
            e,
            "heartbeat_bytes_sent",
            "Bytes the kernel took for peers.",
            s.bytes_out,
        )?;
        counter(
            e,
            "heartbeat_log_lines_dropped",
            "Log lines dropped because the log could not keep up.",
            g.log_lines_dropped,
        )?;
        histogram(
            e,
            "heartbeat_end_connection_lateness_seconds",
            "How long after its due time each End Connection was sent.",
            &s.close_lateness,
        )?;
        histogram(
            e,
            "heartbeat_end_connection_lateness_loop_seconds",
            "End Connection lateness less the time the OS kept the loop asleep past its alarm: the loop's own share.",
            &s.close_lateness_loop,
        )?;
        histogram(
            e,
            "heartbeat_wakeup_delay_seconds",
            "How late the OS woke the loop after the alarm it slept until.",
            &s.wake_delay,
        )?;
        histogram(
            e,
            "heartbeat_detection_seconds",
            "For each peer closed as dead, how long it had been silent when told End Connection.",
            &s.detection_time,
        )
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstGauge::new(value).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter; `name` without `_total`, which the encoder appends.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A counter with one sample per `reason` label.
fn labelled(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    reasons: &[(&str, u64)],
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (reason, value) in reasons {
        let labels = [("reason", *reason)];
        ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    latencies: &Latencies,
) -> fmt::Result {
    let bounds = BUCKETS_US.map(Duration::from_micros);
    let buckets = latencies.buckets(&bounds);
    // The encoder adds the buckets up itself: hand it each bucket's own count.
    let mut below = 0;
    let mut own: Vec<(f64, u64)> = BUCKETS_US
        .iter()
        .zip(&buckets.cumulative)
        .map(|(us, cumulative)| {
            let count = cumulative - below;
            below = *cumulative;
            (*us as f64 / 1e6, count)
        })
        .collect();
    own.push((f64::INFINITY, buckets.count - below));
    let mut metric = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(buckets.sum_secs, buckets.count, &own, None)
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

/// Appends the whole response to `out`. The metrics are OpenMetrics text ([`CONTENT_TYPE`]),
/// errors plain text; every response says how long it is and that the connection closes
/// after it.
pub fn write_response(out: &mut Vec<u8>, status: Status, body: &[u8]) {
    let content_type = match status {
        Status::Ok => CONTENT_TYPE,
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
