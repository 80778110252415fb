//! The server behind a real HAProxy (TCP mode, `send-proxy-v2`, `balance leastconn`) in
//! front of two server processes, driven by the load client binary with 2,000 connections
//! from two source addresses, one of which the servers' `--allow` refuses. Needs the
//! `haproxy` binary (Debian package `haproxy`; `.ci/run` installs it): without it the test
//! says so and passes, except in CI (`CI` set), where it fails.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, ServerProcess};

const HANG_GUARD: Duration = Duration::from_secs(60);
const CONNECTIONS: usize = 2000;

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("address").port()
}

/// 2,000 connections through HAProxy: the servers see the clients' real addresses (half
/// refused by `--allow`, from 127.0.0.3, though every connection reaches them from
/// HAProxy's 127.0.0.1), heartbeats are answered through it, and at SIGTERM every admitted
/// connection is told `End Connection` through it.
#[test]
fn two_thousand_connections_through_haproxy_keep_their_real_addresses() {
    let Some(haproxy) = common::tool("haproxy", "haproxy") else {
        return;
    };
    let args = [
        "--proxy-protocol",
        "--allow",
        "127.0.0.2/32",
        "--interval",
        "300ms",
        "--count",
        "2",
        "--idle",
        "1s",
        "--log-level",
        "info",
        "--json",
    ];
    let mut servers = [
        ServerProcess::start_logged(&args),
        ServerProcess::start_logged(&args),
    ];
    let before_haproxy: Vec<usize> = servers.iter().map(ServerProcess::open_sockets).collect();
    let front = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("haproxy.cfg");
    // Timeouts far above idle + count × interval (1.6 s): HAProxy must never be the one to
    // close a quiet connection.
    let text = format!(
        "global\n    maxconn 4500\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend heartbeat\n    bind 127.0.0.1:{front}\n    default_backend servers\n\
         backend servers\n    balance leastconn\n\
         \x20   server one 127.0.0.1:{} send-proxy-v2\n\
         \x20   server two 127.0.0.1:{} send-proxy-v2\n",
        servers[0].port, servers[1].port
    );
    std::fs::write(&config, text).expect("config written");
    let log_path = dir.path().join("haproxy.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut haproxy = Guard(
        Command::new(&haproxy)
            .arg("-f")
            .arg(&config)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy starts"),
    );
    let up = eventually(HANG_GUARD, || {
        let listening = std::net::TcpStream::connect(("127.0.0.1", front)).is_ok();
        listening || haproxy.0.try_wait().ok().flatten().is_some()
    });
    assert!(
        up && haproxy.0.try_wait().ok().flatten().is_none(),
        "haproxy is not listening on {front}: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    // HAProxy sent that probe connection's header itself: from 127.0.0.1, refused by --allow.
    // Wait until the servers have closed it (their sockets are back to what they had before
    // HAProxy started), so that every socket counted from here on is a client's.
    assert!(
        eventually(HANG_GUARD, || servers
            .iter()
            .zip(&before_haproxy)
            .all(|(s, b)| s.open_sockets() == *b)),
        "the readiness probe was closed"
    );
    let base = before_haproxy;
    let client = Guard(
        Command::new(env!("CARGO_BIN_EXE_heartbeat-client"))
            .args(["--no-prompt", "--port", &front.to_string()])
            .args([
                "--connections",
                &CONNECTIONS.to_string(),
                "--connect-rate",
                "2000",
            ])
            .args(["--interval", "0", "--duration", "50s", "--json"])
            .args([
                "--bind",
                "127.0.0.2,127.0.0.3",
                "--server-interval",
                "300ms",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("client starts"),
    );
    let admitted = || -> usize {
        servers
            .iter()
            .zip(&base)
            .map(|(s, b)| s.open_sockets().saturating_sub(*b))
            .sum()
    };
    assert!(
        eventually(HANG_GUARD, || admitted() >= CONNECTIONS / 2),
        "the servers hold {} of {} allowed connections",
        admitted(),
        CONNECTIONS / 2
    );
    for server in &servers {
        let log = server.log.as_ref().expect("collected");
        assert!(
            log.wait_for("heartbeat answered", HANG_GUARD),
            "a heartbeat answered through HAProxy: {:?}",
            log.snapshot().last()
        );
        assert!(log
            .snapshot()
            .iter()
            .any(|l| l.contains("127.0.0.2:") && l.contains("connected")));
    }
    for server in &servers {
        server.signal("-TERM");
    }
    let mut summaries = Vec::new();
    for server in &mut servers {
        assert!(server.wait(HANG_GUARD).success());
        let json: serde_json::Value =
            serde_json::from_str(&server.rest_of_stdout()).expect("server JSON");
        summaries.push(json);
    }
    let total = |key: &str| -> u64 { summaries.iter().filter_map(|s| s[key].as_u64()).sum() };
    assert_eq!(total("accepted"), CONNECTIONS as u64 / 2, "{summaries:?}");
    // The half from 127.0.0.3, and the readiness probe from 127.0.0.1.
    assert_eq!(
        total("rejected_not_allowed"),
        CONNECTIONS as u64 / 2 + 1,
        "{summaries:?}"
    );
    assert_eq!(
        total("closed_at_shutdown"),
        CONNECTIONS as u64 / 2,
        "{summaries:?}"
    );
    assert_eq!(total("rejected_proxy_header"), 0, "{summaries:?}");
    // Heartbeats went out through HAProxy and their answers came back through it; no
    // connection was taken for dead.
    assert_eq!(total("closed_dead"), 0, "{summaries:?}");
    let answered = total("heartbeats_answered");
    let both = |s: &serde_json::Value| {
        s["accepted"].as_u64() > Some(0) && s["heartbeats_answered"].as_u64() > Some(0)
    };
    assert!(
        summaries.iter().all(both),
        "leastconn used both servers, and both heard answers: {summaries:?}"
    );
    // Every connection ended by the servers reached the client: the client stops by itself.
    let mut client = client;
    assert!(
        eventually(HANG_GUARD, || client.0.try_wait().ok().flatten().is_some()),
        "the client is still running"
    );
    let mut out = String::new();
    client
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("client output");
    let json: serde_json::Value = serde_json::from_str(&out).expect("client JSON");
    assert_eq!(json["opened"], CONNECTIONS, "{json}");
    assert_eq!(json["closed_by_server"], CONNECTIONS, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    // The client may count a heartbeat a server sent as it began to stop, never fewer.
    assert!(
        json["heartbeats_answered"].as_u64() >= Some(answered),
        "{json}"
    );
}
