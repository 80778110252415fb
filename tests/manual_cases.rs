//! The four test cases of the original program's manual, each once through the real `server`
//! and `client` binaries on 127.0.0.1. Their exact timing (T−1 µs, T) is proven with a fake
//! clock in `server_core.rs`; here the settings leave a busy machine seconds of slack, and the
//! tests assert what happened and in which order, never how fast.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{summary_value, ServerProcess};

const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");
/// Idle long enough that a client sending every 100 ms never sees a heartbeat, however
/// loaded the machine.
const CHATTY: [&str; 6] = ["--interval", "1s", "--count", "3", "--idle", "10s"];
const DEAD: &str = "closed as dead (each heartbeat unanswered a full interval)";

fn client(server: &ServerProcess, args: &[&str]) -> Child {
    Command::new(CLIENT)
        .args(["--port", &server.port.to_string(), "--no-prompt"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts")
}

/// Waits for the client to exit (a hang guard of a minute) and returns what it printed.
fn finish(child: Child) -> Output {
    let mut child = Reaped(Some(child));
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let running = child.0.as_mut().expect("a child");
        if running.try_wait().expect("try_wait").is_some() {
            return child
                .0
                .take()
                .expect("a child")
                .wait_with_output()
                .expect("output");
        }
        assert!(std::time::Instant::now() < limit, "client still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills the child if the test fails first, so that no process outlives it.
struct Reaped(Option<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops the server as SIGTERM does and returns its summary.
fn stop(mut server: ServerProcess) -> String {
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    server.rest_of_stdout()
}

fn count(summary: &str, label: &str) -> u64 {
    summary_value(summary, label).unwrap_or_else(|| panic!("no {label:?} in {summary}"))
}

/// Case 1: a client that sends more often than the idle time has every line echoed, in
/// order, and never sees a heartbeat.
#[test]
fn case_1_normal_data_exchange_is_echoed_without_heartbeats() {
    let server = ServerProcess::start(&CHATTY);
    let out = finish(client(
        &server,
        &["--interval", "100ms", "--duration", "1s"],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let sent = text.matches("Sent: Hello, there").count();
    let echoed = text.matches("Received: Echoing...Hello, there").count();
    assert!(sent >= 2, "{text}");
    assert_eq!(sent, echoed, "{text}");
    assert!(!text.contains("heartbeat"), "{text}");
    let summary = stop(server);
    assert_eq!(count(&summary, "lines echoed"), sent as u64, "{summary}");
    assert_eq!(count(&summary, "heartbeats sent"), 0, "{summary}");
}

/// Case 2: a quiet client that answers every heartbeat keeps its connection: heartbeats keep
/// coming, each is answered and counted, and it is never told `End Connection`.
#[test]
fn case_2_quiet_client_that_answers_stays_connected() {
    // Heartbeat after 1 s of silence; a second unanswered one would end it a second later.
    let server = ServerProcess::start(&["--interval", "1s", "--count", "1", "--idle", "1s"]);
    let out = finish(client(&server, &["--interval", "0", "--duration", "5s"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let heartbeats = text.matches("Received: heartbeat").count();
    assert!(heartbeats >= 2, "{text}");
    assert!(!text.contains("End Connection"), "{text}");
    let summary = stop(server);
    assert_eq!(count(&summary, DEAD), 0, "{summary}");
    assert!(count(&summary, "heartbeat rounds answered") >= heartbeats as u64 - 1);
    assert_eq!(count(&summary, "lines echoed"), 0, "answers are not echoed");
}

/// Case 3: a client that never answers gets exactly three heartbeats, then `End Connection`,
/// then the end of the connection; the server counts it as dead.
#[test]
fn case_3_quiet_client_that_does_not_answer_is_closed() {
    let server = ServerProcess::start(&["--interval", "100ms", "--count", "3", "--idle", "400ms"]);
    let port = server.port;
    assert_eq!(
        server.listening.trim_end(),
        format!("Listening on 127.0.0.1:{port} (heartbeat every 100ms, 3 times, after 400ms idle)")
    );
    let out = finish(client(
        &server,
        &["--interval", "0", "--heartbeat-block", "1h"],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let received: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("Received: "))
        .collect();
    assert_eq!(
        received,
        ["heartbeat", "heartbeat", "heartbeat", "End Connection"],
        "{text}"
    );
    assert!(
        text.starts_with(&format!("Connected with 127.0.0.1:{port}\n")),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("Connection closed by server"),
        "{text}"
    );
    let summary = stop(server);
    assert!(
        summary.contains("Summary: 1 connection accepted, peak 1 open"),
        "{summary}"
    );
    assert_eq!(count(&summary, DEAD), 1, "{summary}");
    assert_eq!(count(&summary, "heartbeats sent"), 3, "{summary}");
}

/// Case 4: when the client closes, the server closes its side at once, without a heartbeat,
/// and counts it as closed by the peer.
#[test]
fn case_4_client_that_closes_is_closed_without_heartbeat() {
    let server = ServerProcess::start_logged(&CHATTY);
    let out = finish(client(
        &server,
        &["--interval", "100ms", "--duration", "300ms"],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("heartbeat"), "{text}");
    assert!(!text.contains("Connection closed by server"), "{text}");
    let log = server.log.clone().expect("logged");
    assert!(
        log.wait_for("peer closed the connection", Duration::from_secs(30)),
        "{:?}",
        log.snapshot()
    );
    let summary = stop(server);
    assert_eq!(count(&summary, "closed by the peer"), 1, "{summary}");
    assert_eq!(count(&summary, "heartbeats sent"), 0, "{summary}");
    assert_eq!(count(&summary, "closed at shutdown"), 0, "{summary}");
}
