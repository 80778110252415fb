//! The Grafana dashboard (`contrib/grafana/heartbeat.json`) queries only metrics a real
//! `heartbeat-server --metrics` exposes, and the Prometheus example scrapes that endpoint.
//!
//! Names are matched, not the text format: the exposition may change (another crate, the
//! OpenMetrics format) as long as the names stay.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::ServerProcess;
use heartbeat::workers::metrics::metrics_addr_in;
use serde_json::Value;

const DASHBOARD: &str = include_str!("../contrib/grafana/heartbeat.json");
const PROMETHEUS: &str = include_str!("../contrib/prometheus.yml");

/// Every PromQL expression in the dashboard: panel targets and template queries.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", Value::String(e)) => out.push(e.clone()),
                    ("query", Value::String(e)) if e.contains('(') => out.push(e.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The metric names an expression reads (`heartbeat_…` identifiers).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("heartbeat_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The sample names in a scrape (the name before `{` or the value).
fn scraped_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every metric the dashboard queries is a sample name in a real scrape of a real server
/// (one peer connected and closed as dead first, so that every series has moved).
#[test]
fn every_metric_the_dashboard_queries_is_in_a_real_scrape() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "a dashboard of the main series");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    let queried: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(queried.len() >= 15, "{queried:?}");

    let server = ServerProcess::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--interval",
        "50ms",
        "--count",
        "1",
        "--idle",
        "50ms",
    ]);
    let addr = metrics_addr_in(&server.listening)
        .unwrap_or_else(|| panic!("no metrics address in {:?}", server.listening));
    let mut peer = common::Peer::connect(([127, 0, 0, 1], server.port).into());
    peer.send(b"hello\n");
    let mut closed = false;
    for _ in 0..50 {
        match peer.line_within(Duration::from_secs(2)) {
            Some(line) if line == "End Connection" => {
                closed = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(closed, "the silent peer was closed as dead");
    let mut stream = TcpStream::connect(addr).expect("connects to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (_, body) = response.split_once("\r\n\r\n").expect("head and body");
    let scraped = scraped_names(body);
    let missing: Vec<&String> = queried.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried by the dashboard, absent from the scrape: {missing:?}\nscraped: {scraped:?}"
    );
}

/// The matcher itself: it finds every name in an expression and would see a renamed one.
#[test]
fn names_are_found_in_promql() {
    let expr = "histogram_quantile(0.99, sum by (le) (rate(heartbeat_detection_seconds_bucket{instance=~\"$i\"}[5m]))) / heartbeat_connections_open";
    assert_eq!(
        metric_names(expr),
        [
            "heartbeat_detection_seconds_bucket",
            "heartbeat_connections_open"
        ]
    );
    let scraped =
        scraped_names("# TYPE heartbeat_x counter\nheartbeat_x_total 3\nheartbeat_y{a=\"b\"} 1\n");
    assert_eq!(
        scraped.into_iter().collect::<Vec<_>>(),
        ["heartbeat_x_total", "heartbeat_y"]
    );
}

/// The Prometheus example scrapes `/metrics` within the endpoint's 5 s idle limit.
#[test]
fn the_prometheus_example_scrapes_the_metrics_path() {
    assert!(PROMETHEUS.contains("metrics_path: /metrics"));
    assert!(PROMETHEUS.contains("job_name: heartbeat"));
    assert!(PROMETHEUS.contains("scrape_timeout: 4s"));
}
