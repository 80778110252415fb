//! How the load client names the end of a connection the server ended, against real servers
//! on 127.0.0.1: a drained stop is goodbyes (not false deaths), a full server is refusals, a
//! server that accepts and closes at once is met with a back-off that backs off, and the
//! server's summary comes after what it logged while stopping.
//!
//! Each test waits for the state it needs (a deadline only guards against a hang); nothing
//! asserts how fast anything went. The client runs in-process, so its summary is read whole.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{eventually, ServerProcess, MS};
use heartbeat::client::{Client, ClientConfig, Finish, Outcome};

const HANG_GUARD: Duration = Duration::from_secs(60);

/// The in-process load client against `server`, quiet, in a thread.
fn run_client(config: ClientConfig) -> thread::JoinHandle<Outcome> {
    let client = Client::new(ClientConfig {
        verbose: false,
        status_line: false,
        ..config
    })
    .expect("client sets up");
    thread::spawn(move || client.run().expect("client runs"))
}

/// `heartbeat-server --drain 2s`, stopped with SIGTERM while 40 connections are open (half
/// sending a line every 100 ms, half quiet; the server's idle time is longer than the test,
/// so none is asked): the client counts 40 goodbyes, no false death, nothing lost, and its
/// text says so without a warning. Before, each was a "false death" and the summary began
/// "WARNING: the server closed 40 healthy connections".
#[test]
fn a_drained_stop_is_goodbyes_not_false_deaths() {
    let mut server = ServerProcess::start(&["--drain", "2s", "--log-level", "off"]);
    let clients: Vec<_> = [Duration::from_millis(100), Duration::ZERO]
        .into_iter()
        .map(|interval| {
            run_client(ClientConfig {
                server: server.addr(),
                connections: 20,
                interval,
                ..ClientConfig::default()
            })
        })
        .collect();
    assert!(
        server.wait_for_peers(40, HANG_GUARD),
        "the server never held all 40"
    );
    server.signal("-TERM");
    for client in clients {
        let outcome = client.join().expect("client thread");
        let s = &outcome.summary;
        assert_eq!(outcome.finish, Finish::ClosedByServer, "{s:?}");
        assert_eq!((s.goodbyes, s.false_deaths), (20, 0), "{s:?}");
        assert_eq!(s.closed_by_server, 20, "{s:?}");
        let others = (s.refused_by_server, s.lost_closed, s.lost_reset, s.errors);
        assert_eq!(others, (0, 0, 0, 0), "{s:?}");
        assert_eq!(s.connections_opened, 20, "{s:?}");
        let text = s.to_text();
        assert!(!text.contains("WARNING"), "{text}");
        assert!(
            text.contains(
                "goodbyes (End Connection at the server's stop, no heartbeat outstanding): 20"
            ),
            "{text}"
        );
        assert!(
            text.contains("healthy connections closed by the server (false deaths): 0"),
            "{text}"
        );
    }
    assert!(server.wait(HANG_GUARD).success());
    let summary = server.rest_of_stdout();
    assert!(summary.contains("closed at shutdown: 40"), "{summary}");
}

/// `--max-connections 10` and 30 connections: the 20 the server turns away (its
/// `Error: server full` line, or a close before any exchange) are counted as refused, not as
/// false deaths or lost connections, and the summary says 10 of 30 connections opened.
#[test]
fn a_full_server_is_counted_as_refusals() {
    let mut server = ServerProcess::start(&["--max-connections", "10", "--log-level", "off"]);
    let client = run_client(ClientConfig {
        server: server.addr(),
        connections: 30,
        interval: Duration::from_millis(100),
        duration: Some(Duration::from_secs(2)),
        ..ClientConfig::default()
    });
    let outcome = client.join().expect("client thread");
    let s = &outcome.summary;
    assert_eq!(outcome.finish, Finish::DurationReached, "{s:?}");
    assert_eq!(s.refused_by_server, 20, "{s:?}");
    assert_eq!(s.false_deaths, 0, "{s:?}");
    assert_eq!(
        (s.lost_closed, s.lost_reset, s.goodbyes),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(
        (s.connections_opened, s.connect_attempts),
        (10, 30),
        "{s:?}"
    );
    let text = s.to_text();
    assert!(
        text.starts_with("Summary: 10 of 30 connections opened in "),
        "{text}"
    );
    assert!(!text.contains("WARNING"), "{text}");
    assert!(
        text.contains("refused by the server (server full, or closed before any exchange): 20"),
        "{text}"
    );
    server.signal("-TERM");
    assert!(server.wait(HANG_GUARD).success());
    let summary = server.rest_of_stdout();
    assert!(
        summary.contains("refused, --max-connections reached: 20"),
        "{summary}"
    );
}

/// A listener on 127.0.0.1 that accepts every connection and closes it at once (a broken
/// server, or a full one that says nothing), counting them, until dropped.
struct SlamServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SlamServer {
    fn start() -> SlamServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, done) = (accepted.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                    }
                    Err(_) => thread::sleep(MS),
                }
            }
        });
        SlamServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SlamServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `--reconnect` against a server that accepts and closes at once: 20 connections for 3 s
/// make at most 6 attempts each (the back-off doubles from 100 ms: 1 + 4 fit in 3.1 s) and
/// at least 2; every close is a refusal, none a false death or lost. Before, each accepted
/// connect reset the back-off: about 13 attempts per connection per second, ~39 each here.
#[test]
fn reconnecting_to_a_server_that_accepts_and_closes_backs_off() {
    const CONNECTIONS: u64 = 20;
    let server = SlamServer::start();
    let client = run_client(ClientConfig {
        server: server.addr,
        connections: CONNECTIONS as usize,
        interval: Duration::ZERO,
        duration: Some(Duration::from_secs(3)),
        reconnect: true,
        ..ClientConfig::default()
    });
    let outcome = client.join().expect("client thread");
    let accepted = server.accepted.load(Ordering::Relaxed) as u64;
    drop(server);
    let s = &outcome.summary;
    assert!(
        s.connect_attempts <= 6 * CONNECTIONS,
        "{} attempts from {CONNECTIONS} connections in 3 s: {s:?}",
        s.connect_attempts
    );
    assert!(s.connect_attempts >= 2 * CONNECTIONS, "it did retry: {s:?}");
    assert!(accepted <= s.connect_attempts, "{accepted}: {s:?}");
    assert_eq!(s.connect_attempts, CONNECTIONS + s.reconnects, "{s:?}");
    // Each close the client saw (all but those still connecting at the end) was a refusal.
    assert!(s.refused_by_server + CONNECTIONS >= s.opened, "{s:?}");
    assert!(s.refused_by_server >= CONNECTIONS, "{s:?}");
    assert_eq!(
        (s.false_deaths, s.lost_closed, s.lost_reset),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.connections_opened, 0, "never served: {s:?}");
    let text = s.to_text();
    assert!(
        text.starts_with("Summary: 0 of 20 connections opened in 0.0 s (run "),
        "{text}"
    );
    assert!(text.contains("\n  connect attempts: "), "{text}");
}

/// The server's `received SIGINT: stopping` log line comes before its summary (both on one
/// stream, as a terminal shows them); before, the log was flushed only after the summary.
#[test]
fn the_server_logs_the_signal_before_its_summary() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("output");
    let file = std::fs::File::create(&path).expect("an output file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_heartbeat-server"))
        .args(["--port", "0", "--no-prompt", "--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("the file again"))
        .stderr(file)
        .spawn()
        .expect("server starts");
    let output = || std::fs::read_to_string(&path).unwrap_or_default();
    let listening = eventually(HANG_GUARD, || output().contains("Listening on"));
    if !listening {
        let _ = child.kill();
    }
    assert!(listening, "{}", output());
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert!(child.wait().expect("exits").success(), "{}", output());
    let all = output();
    let signal = all.find("received SIGINT").unwrap_or(usize::MAX);
    let summary = all.find("Summary: ").unwrap_or(0);
    assert!(signal < summary, "{all}");
}
