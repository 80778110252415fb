//! The `--metrics` endpoint through the real binaries: a scrape while the load client holds
//! its connections counts what the summary counts at exit, other paths are refused, and a
//! scraper that says nothing is closed by its deadline, not held forever.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ServerProcess;
use heartbeat::workers::metrics::metrics_addr_in;

const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");
const PEERS: usize = 1000;

/// The metrics address from the server's first line (`...; metrics at http://ADDR/metrics)`).
fn metrics_addr(server: &ServerProcess) -> SocketAddr {
    metrics_addr_in(&server.listening)
        .unwrap_or_else(|| panic!("no metrics address in {:?}", server.listening))
}

/// One whole HTTP exchange: the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connects to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the whole response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

/// The value of `name` (a sample line without labels, or with exactly these) in the text.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

/// A scrape while 1,000 load-client connections are held reports them open, and its counts
/// agree with the summary the server prints when it stops.
#[test]
fn a_scrape_under_load_counts_what_the_summary_counts() {
    let mut server = ServerProcess::start(&["--log-level", "warn", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut client = Command::new(CLIENT)
        .args(["--port", &server.port.to_string(), "--no-prompt"])
        .args(["--connections", &PEERS.to_string(), "--interval", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("client starts");
    assert!(server.wait_for_peers(PEERS, Duration::from_secs(60)));
    let (status, body) = get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(sample(&body, "heartbeat_connections_open"), PEERS as u64);
    let accepted = sample(&body, "heartbeat_connections_accepted_total");
    assert_eq!(accepted, PEERS as u64);
    let (status, _) = get(metrics, "/other");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let _ = client.kill();
    let _ = client.wait();
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let summary = server.rest_of_stdout();
    assert!(
        summary.contains(&format!("Summary: {accepted} connections accepted")),
        "{summary}"
    );
}

/// A scraper that connects and sends nothing holds its slot only until its deadline (1 s
/// after it connected, for a whole request): then the server closes it. Meanwhile others
/// are answered.
#[test]
fn a_silent_scraper_is_closed_by_its_deadline() {
    let server = ServerProcess::start(&["--log-level", "warn", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let connected = Instant::now();
    let mut silent = TcpStream::connect(metrics).expect("connects");
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let (status, _) = get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let mut byte = [0u8; 1];
    let ended = silent.read(&mut byte);
    let held = connected.elapsed();
    assert!(matches!(ended, Ok(0)), "closed without a word: {ended:?}");
    // Not before its deadline (a busy machine only makes it later); the 60 s read timeout
    // above is only a hang guard, and would have been an error, not end of stream.
    assert!(held >= Duration::from_millis(900), "closed after {held:?}");
    drop(server);
}

/// Every slot held by a silent connection: a scraper is answered `503` with `Retry-After: 1`
/// at once (never a silent close or a reset), and a scrape retried after that second is
/// answered, because the silent ones gave their slots up.
#[test]
fn past_the_slots_a_scraper_is_told_to_retry_and_then_served() {
    let server = ServerProcess::start(&["--log-level", "warn", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let silent: Vec<TcpStream> = (0..heartbeat::server::core::waiting::SCRAPE_SLOTS)
        .map(|_| TcpStream::connect(metrics).expect("connects"))
        .collect();
    let mut stream = TcpStream::connect(metrics).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    let mut response = String::new();
    let read = stream.read_to_string(&mut response);
    assert!(read.is_ok(), "{read:?}, after {response:?}");
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{response}"
    );
    assert!(response.contains("\r\nRetry-After: 1\r\n"), "{response}");
    std::thread::sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(metrics, "/metrics");
        if status == "HTTP/1.1 200 OK" {
            assert!(sample(&body, "heartbeat_metrics_busy_total") >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "still {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(silent);
}
