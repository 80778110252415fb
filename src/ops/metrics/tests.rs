//! The metrics text pinned byte for byte, its shape checked line by line, and the scraper's
//! requests: whole, partial, pipelined, oversized, wrong.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn small_stats() -> ServerStats {
    let us = Duration::from_micros;
    let mut s = ServerStats {
        accepted: 3,
        open: 1,
        peak_open: 2,
        lines_echoed: 5,
        heartbeats_sent: 4,
        heartbeats_answered: 1,
        closed_dead: 1,
        closed_by_peer: 1,
        rejected_full: 2,
        ..ServerStats::default()
    };
    s.close_lateness.record(us(400));
    s.close_lateness.record(us(1200));
    s.close_lateness_loop.record(us(300));
    s.wake_delay.record(us(700));
    s.wake_delay.record(Duration::from_secs(3));
    s.detection_time.record(Duration::from_millis(700));
    s.bytes_in = 11;
    s.bytes_out = 12;
    s
}

const GAUGES: Gauges = Gauges {
    buffered_bytes: 10,
    log_lines_dropped: 7,
};

fn histogram(name: &str, counts: [u64; 13], count: u64, sum: &str) -> String {
    let les = [
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0",
        "2.5", "5.0",
    ];
    // OpenMetrics as prometheus-client writes it: sum and count first, then the buckets.
    let mut text = format!("{name}_sum {sum}\n{name}_count {count}\n");
    for (le, n) in les.iter().zip(counts) {
        text.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {n}\n"));
    }
    text.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
    text
}

/// The whole text for a small run, byte for byte (OpenMetrics: a counter's family is named
/// without `_total`, its sample with it; the text ends with `# EOF`).
#[test]
fn the_text_for_a_small_run_is_exact() {
    let expected = format!(
        "\
# HELP heartbeat_build Always 1; the version of the running server in its label.
# TYPE heartbeat_build info
heartbeat_build_info{{version=\"{VERSION}\"}} 1
# HELP heartbeat_connections_open Connections open now.
# TYPE heartbeat_connections_open gauge
heartbeat_connections_open 1
# HELP heartbeat_connections_peak The most connections open at once since the server started.
# TYPE heartbeat_connections_peak gauge
heartbeat_connections_peak 2
# HELP heartbeat_connections_accepted Connections accepted and served (refused ones are counted apart).
# TYPE heartbeat_connections_accepted counter
heartbeat_connections_accepted_total 3
# HELP heartbeat_connections_closed Connections closed, by reason: the peer closed, dead (every heartbeat unanswered a full interval), an I/O error, the server stopping, over --max-buffered, a probe that left without a byte.
# TYPE heartbeat_connections_closed counter
heartbeat_connections_closed_total{{reason=\"peer_closed\"}} 1
heartbeat_connections_closed_total{{reason=\"dead\"}} 1
heartbeat_connections_closed_total{{reason=\"error\"}} 0
heartbeat_connections_closed_total{{reason=\"shutdown\"}} 0
heartbeat_connections_closed_total{{reason=\"over_budget\"}} 0
heartbeat_connections_closed_total{{reason=\"probe\"}} 0
# HELP heartbeat_connections_refused Connections refused at accept, by reason: --max-connections reached, the address not in --allow, no valid PROXY header (--proxy-protocol).
# TYPE heartbeat_connections_refused counter
heartbeat_connections_refused_total{{reason=\"full\"}} 2
heartbeat_connections_refused_total{{reason=\"not_allowed\"}} 0
heartbeat_connections_refused_total{{reason=\"no_proxy_header\"}} 0
# HELP heartbeat_tls_handshakes TLS handshakes begun (--tls-cert); a peer refused at accept (--allow, --max-connections) begins none.
# TYPE heartbeat_tls_handshakes counter
heartbeat_tls_handshakes_total 0
# HELP heartbeat_tls_resumed TLS handshakes that resumed a session with a ticket the server gave (--tls-cert).
# TYPE heartbeat_tls_resumed counter
heartbeat_tls_resumed_total 0
# HELP heartbeat_tls_handshakes_refused TLS handshakes refused (--tls-cert), by reason: not TLS, no client certificate, unknown CA, expired, other certificate, the peer's alert, protocol, deadline, evicted (too many in flight), closed.
# TYPE heartbeat_tls_handshakes_refused counter
heartbeat_tls_handshakes_refused_total{{reason=\"not_tls\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"no_client_certificate\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"unknown_ca\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"expired\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"bad_certificate\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"peer_alert\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"protocol\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"deadline\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"evicted\"}} 0
heartbeat_tls_handshakes_refused_total{{reason=\"closed\"}} 0
# HELP heartbeat_proxy_header_waits_evicted Peers waiting for their PROXY header closed to make room for a newer one (at the cap).
# TYPE heartbeat_proxy_header_waits_evicted counter
heartbeat_proxy_header_waits_evicted_total 0
# HELP heartbeat_metrics_busy Scrapes answered 503 Service Unavailable because every slot was taken.
# TYPE heartbeat_metrics_busy counter
heartbeat_metrics_busy_total 0
# HELP heartbeat_upgrades Live upgrades (SIGUSR2), by result: done, or given up with the old process serving on.
# TYPE heartbeat_upgrades counter
heartbeat_upgrades_total{{result=\"done\"}} 0
heartbeat_upgrades_total{{result=\"failed\"}} 0
# HELP heartbeat_upgrade_peers_handed_over Peers handed from one process to the next in live upgrades.
# TYPE heartbeat_upgrade_peers_handed_over counter
heartbeat_upgrade_peers_handed_over_total 0
# HELP heartbeat_upgrade_tls_peers_kept TLS peers kept by the old process in live upgrades (a TLS session cannot move).
# TYPE heartbeat_upgrade_tls_peers_kept counter
heartbeat_upgrade_tls_peers_kept_total 0
# HELP heartbeat_upgrade_pause_microseconds The last live upgrade's pause, from the old loop's last turn to the new one's first.
# TYPE heartbeat_upgrade_pause_microseconds gauge
heartbeat_upgrade_pause_microseconds 0
# HELP heartbeat_accept_errors Times accept itself failed (e.g. out of file descriptors).
# TYPE heartbeat_accept_errors counter
heartbeat_accept_errors_total 0
# HELP heartbeat_heartbeats_sent Heartbeats sent to quiet peers.
# TYPE heartbeat_heartbeats_sent counter
heartbeat_heartbeats_sent_total 4
# HELP heartbeat_heartbeats_answered Rounds of heartbeats answered: a peer that speaks after heartbeat k counts once.
# TYPE heartbeat_heartbeats_answered counter
heartbeat_heartbeats_answered_total 1
# HELP heartbeat_lines_echoed Lines echoed back to peers.
# TYPE heartbeat_lines_echoed counter
heartbeat_lines_echoed_total 5
# HELP heartbeat_lines_too_long Lines over --max-line, dropped and answered with an error line.
# TYPE heartbeat_lines_too_long counter
heartbeat_lines_too_long_total 0
# HELP heartbeat_buffered_bytes Bytes held in peers' buffers now (partial lines, output not taken yet), counted against --max-buffered.
# TYPE heartbeat_buffered_bytes gauge
heartbeat_buffered_bytes 10
# HELP heartbeat_bytes_received Bytes read from peers.
# TYPE heartbeat_bytes_received counter
heartbeat_bytes_received_total 11
# HELP heartbeat_bytes_sent Bytes the kernel took for peers.
# TYPE heartbeat_bytes_sent counter
heartbeat_bytes_sent_total 12
# HELP heartbeat_log_lines_dropped Log lines dropped because the log could not keep up.
# TYPE heartbeat_log_lines_dropped counter
heartbeat_log_lines_dropped_total 7
# HELP heartbeat_end_connection_lateness_seconds How long after its due time each End Connection was sent.
# TYPE heartbeat_end_connection_lateness_seconds histogram
{}\
# HELP heartbeat_end_connection_lateness_loop_seconds End Connection lateness less the time the OS kept the loop asleep past its alarm: the loop's own share.
# TYPE heartbeat_end_connection_lateness_loop_seconds histogram
{}\
# HELP heartbeat_wakeup_delay_seconds How late the OS woke the loop after the alarm it slept until.
# TYPE heartbeat_wakeup_delay_seconds histogram
{}\
# HELP heartbeat_detection_seconds For each peer closed as dead, how long it had been silent when told End Connection.
# TYPE heartbeat_detection_seconds histogram
{}\
# EOF
",
        histogram(
            "heartbeat_end_connection_lateness_seconds",
            [1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
            2,
            "0.0016"
        ),
        histogram(
            "heartbeat_end_connection_lateness_loop_seconds",
            [1; 13],
            1,
            "0.0003"
        ),
        histogram(
            "heartbeat_wakeup_delay_seconds",
            [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2],
            2,
            // 3 s is kept to the histogram's precision: its bucket's middle, 2.999296 s.
            "2.999996"
        ),
        histogram(
            "heartbeat_detection_seconds",
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
            1,
            // 700 ms kept to the histogram's precision (3 significant figures).
            "0.70016"
        ),
    );
    let text = render(&small_stats(), &GAUGES);
    for (got, want) in text.lines().zip(expected.lines()) {
        assert_eq!(got, want);
    }
    assert_eq!(text, expected);
}

/// Every sample belongs to a family announced just before it with one HELP and one TYPE;
/// names follow Prometheus' rules; every value is a number; the text ends with `# EOF`.
#[test]
fn every_metric_has_help_and_type() {
    let text = render(&small_stats(), &GAUGES);
    let text = text.strip_suffix("# EOF\n").expect("OpenMetrics' end");
    assert!(text.ends_with('\n'));
    let mut kinds: HashMap<String, String> = HashMap::new();
    let mut helped = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("a help text");
            assert!(!help.is_empty(), "{line}");
            assert!(!helped.contains(&name.to_string()), "HELP twice: {name}");
            helped.push(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a type");
            assert_eq!(
                helped.last().map(String::as_str),
                Some(name),
                "HELP then TYPE"
            );
            assert!(
                ["counter", "gauge", "histogram", "info"].contains(&kind),
                "{line}"
            );
            assert!(
                kinds.insert(name.into(), kind.into()).is_none(),
                "TYPE twice"
            );
            current = Some(name.to_string());
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a name");
        let name = &line[..name_end];
        let value = line.rsplit(' ').next().expect("a value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let family = current.as_deref().expect("a sample after its TYPE");
        let kind = &kinds[family];
        match kind.as_str() {
            "histogram" => {
                let suffix = name.strip_prefix(family).expect(line);
                assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line}");
                assert!(family.ends_with("_seconds"), "base unit: {family}");
            }
            "info" => {
                // OpenMetrics: the family `x`, its one sample `x_info`, valued 1.
                assert_eq!(name, format!("{family}_info"), "{line}");
                assert_eq!(value, "1", "{line}");
            }
            "counter" => {
                // OpenMetrics: the family `x`, its sample `x_total`.
                assert_eq!(name, format!("{family}_total"), "{line}");
                assert!(!family.ends_with("_total"), "{line}");
            }
            _ => {
                assert_eq!(name, family, "{line}");
                assert!(!name.ends_with("_total"), "{line}");
            }
        }
        assert!(name.starts_with("heartbeat_"), "{line}");
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
        assert!(name.chars().all(valid), "{line}");
    }
    assert_eq!(kinds.len(), 28, "{kinds:?}");
    assert_eq!(helped.len(), kinds.len());
}

#[test]
fn histograms_are_cumulative_and_end_in_their_count() {
    let mut stats = ServerStats::default();
    for ms in [0, 1, 3, 7, 20, 60, 200, 600, 2000, 9000] {
        stats.close_lateness.record(Duration::from_millis(ms));
    }
    let text = render(&stats, &Gauges::default());
    let name = "heartbeat_end_connection_lateness_seconds";
    let counts: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 2, 3, 4, 5, 5, 6, 7, 7, 8, 9, 9, 10]);
    assert!(text.contains(&format!("{name}_count 10\n")), "{text}");
}

#[test]
fn render_into_appends_to_a_reused_buffer() {
    let mut buf = String::from("kept\n");
    render_into(&mut buf, &small_stats(), &GAUGES);
    assert!(buf.starts_with("kept\n# HELP heartbeat_build "));
    assert_eq!(&buf[5..], render(&small_stats(), &GAUGES));
}

const SCRAPE: &[u8] =
    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nUser-Agent: Prometheus/2.53\r\nAccept: text/plain\r\n\r\n";

#[test]
fn a_whole_scrape_is_a_get() {
    assert_eq!(parse_request(SCRAPE), Request::Get("/metrics"));
    let old = b"GET /metrics HTTP/1.0\r\n\r\n";
    assert_eq!(parse_request(old), Request::Get("/metrics"));
    let query = b"GET /metrics?module=x HTTP/1.1\r\n\r\n";
    assert_eq!(parse_request(query), Request::Get("/metrics"));
    assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::Get("/"));
}

/// A request that arrives a byte at a time is waited for, whatever byte it stops at.
#[test]
fn every_prefix_of_a_request_needs_more() {
    for end in 0..SCRAPE.len() {
        assert_eq!(
            parse_request(&SCRAPE[..end]),
            Request::NeedMore,
            "{:?}",
            String::from_utf8_lossy(&SCRAPE[..end])
        );
    }
}

/// Whatever follows a whole request is not read: one answer per connection.
#[test]
fn pipelined_bytes_after_a_request_are_ignored() {
    let mut bytes = SCRAPE.to_vec();
    bytes.extend_from_slice(b"GET /other HTTP/1.1\r\n\r\n\x00\xff junk");
    assert_eq!(parse_request(&bytes), Request::Get("/metrics"));
    bytes.extend(std::iter::repeat_n(b'x', 2 * MAX_REQUEST));
    assert_eq!(parse_request(&bytes), Request::Get("/metrics"));
}

#[test]
fn junk_and_other_protocols_are_bad_requests() {
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..], // a TLS hello
        b"hello there\r\n\r\n",
        b"GET /metrics HTTP/2.0\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"G\x00T /",
    ] {
        assert_eq!(
            parse_request(junk),
            Request::Bad(Status::BadRequest),
            "{junk:?}"
        );
    }
}

#[test]
fn oversized_requests_are_431() {
    let mut endless = b"GET /metrics HTTP/1.1\r\nX-Long: ".to_vec();
    endless.extend(std::iter::repeat_n(b'a', MAX_REQUEST - endless.len() - 1));
    assert_eq!(parse_request(&endless), Request::NeedMore, "just under");
    endless.push(b'a');
    assert_eq!(
        parse_request(&endless),
        Request::Bad(Status::HeadersTooLarge)
    );
    let mut whole = endless.clone();
    whole.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_request(&whole), Request::Bad(Status::HeadersTooLarge));
    let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse_request(&many), Request::Bad(Status::HeadersTooLarge));
}

#[test]
fn other_methods_are_405_as_soon_as_the_method_is_known() {
    let post = b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    assert_eq!(parse_request(post), Request::Bad(Status::MethodNotAllowed));
    assert_eq!(
        parse_request(b"DELETE /metrics HTT"),
        Request::Bad(Status::MethodNotAllowed)
    );
    assert_eq!(
        parse_request(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
        Request::Bad(Status::MethodNotAllowed)
    );
    assert_eq!(parse_request(b"GE"), Request::NeedMore);
}

/// The response as a client reads it: status, headers, and exactly Content-Length bytes.
fn read_response(bytes: &[u8]) -> (u16, HashMap<String, String>, &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = response.parse(bytes).expect("a response") else {
        panic!("incomplete response")
    };
    let headers: HashMap<String, String> = response
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).into_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    let body = &bytes[len..];
    assert_eq!(headers["content-length"], body.len().to_string());
    assert_eq!(headers["connection"], "close");
    (response.code.expect("a code"), headers, body)
}

#[test]
fn get_metrics_is_answered_with_the_text() {
    let mut out = b"earlier".to_vec();
    let status = respond(parse_request(SCRAPE), &small_stats(), &GAUGES, &mut out);
    assert_eq!(status, Some(Status::Ok));
    let (code, headers, body) = read_response(&out[b"earlier".len()..]);
    assert_eq!(code, 200);
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(body, render(&small_stats(), &GAUGES).as_bytes());
}

#[test]
fn errors_are_answered_with_their_status() {
    let stats = ServerStats::default();
    let cases: [(&[u8], u16); 4] = [
        (b"GET /other HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
        (b"nonsense\r\n\r\n", 400),
        (&[b'A'; MAX_REQUEST], 431),
    ];
    for (request, want) in cases {
        let mut out = Vec::new();
        let status = respond(parse_request(request), &stats, &GAUGES, &mut out);
        assert_eq!(status.map(Status::code), Some(want));
        let (code, headers, body) = read_response(&out);
        assert_eq!(code, want);
        assert_eq!(headers.contains_key("allow"), want == 405);
        assert!(!body.is_empty() && !body.starts_with(b"# HELP"));
    }
    let mut out = Vec::new();
    assert_eq!(respond(Request::NeedMore, &stats, &GAUGES, &mut out), None);
    assert!(out.is_empty());
    let bytes = response(Status::HeadersTooLarge, b"x");
    let (code, _, body) = read_response(&bytes);
    assert_eq!((code, body), (431, &b"x"[..]));
}

/// A scraper past capacity is told to come back, not dropped.
#[test]
fn busy_is_503_with_retry_after() {
    let (code, headers, body) = read_response(busy());
    assert_eq!(code, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body, b"Service Unavailable\n");
}
