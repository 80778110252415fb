//! The built `server` and `client` binaries, run as a user would run them: the `Listening on`
//! line, a client closed by the server, a clean stop on SIGTERM, and bad configuration.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{one_line_failure, ServerProcess};

const SERVER: &str = env!("CARGO_BIN_EXE_server");

/// Kills the child if a test fails before it exits, so no process outlives the test.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "process still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The first line a child process printed on the given stream.
fn first_line(stream: impl Read) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("a line");
    line
}

const FAST: [&str; 6] = ["--interval", "100ms", "--count", "3", "--idle", "400ms"];
const CLIENT: &str = env!("CARGO_BIN_EXE_client");

/// The server announces its real address and settings, a client that never answers is
/// told `End Connection`, and SIGTERM stops the server with a summary and exit status 0.
#[test]
fn server_and_client_binaries_end_to_end() {
    let mut server = ServerProcess::start(&FAST);
    let port = server.port;
    assert_eq!(
        server.listening.trim_end(),
        format!("Listening on 127.0.0.1:{port} (heartbeat every 100ms, 3 times, after 400ms idle)")
    );
    let client = Command::new(CLIENT)
        .args(["--port", &port.to_string(), "--no-prompt"])
        .args(["--interval", "0", "--heartbeat-block", "5s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts");
    let mut client = Reaped(client);
    let status = wait_with_timeout(&mut client.0, Duration::from_secs(10));
    let mut out = String::new();
    client
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "client exit {status:?}: {out}");
    assert!(
        out.starts_with(&format!("Connected with 127.0.0.1:{port}\n")),
        "{out}"
    );
    assert_eq!(out.matches("Received: heartbeat").count(), 3, "{out}");
    assert!(out.contains("Received: End Connection\n"), "{out}");
    assert!(
        out.trim_end().ends_with("Connection closed by server"),
        "{out}"
    );

    server.signal("-TERM");
    let status = server.wait(Duration::from_secs(5));
    assert!(status.success(), "server exit {status:?}");
    let summary = server.rest_of_stdout();
    assert!(
        summary.contains("Summary: 1 connections accepted, peak 1 open"),
        "{summary}"
    );
    assert!(
        summary.contains("closed as dead (each heartbeat unanswered a full interval): 1"),
        "{summary}"
    );
}

/// A client that answers keeps its connection; the server echoes its data.
#[test]
fn client_binary_exchanges_data_until_its_duration() {
    let server = ServerProcess::start(&FAST);
    let port = server.port;
    let output = Command::new(CLIENT)
        .args(["--port", &port.to_string(), "--no-prompt"])
        .args(["--interval", "150ms", "--duration", "1s"])
        .stdin(Stdio::null())
        .output()
        .expect("client runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    let sent = out.matches("Sent: Hello, there").count();
    let echoed = out.matches("Received: Echoing...Hello, there").count();
    assert!(sent >= 5, "{out}");
    assert_eq!(sent, echoed, "{out}");
    assert!(!out.contains("heartbeat"), "{out}");
}

/// A refused connection is one clear line on stderr and exit status 1.
#[test]
fn client_refused_connection_is_one_line_and_exit_1() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (err, _) = one_line_failure(CLIENT, &["--port", &port.to_string(), "--no-prompt"], 1);
    assert!(
        err.contains(&format!(
            "cannot connect to 127.0.0.1:{port}: connection refused"
        )),
        "{err}"
    );
}

/// A configuration file with an unknown key, or a bad value, stops the server before it
/// listens: one line naming the file and the key, exit status 2.
#[test]
fn bad_configuration_file_is_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (body, key) in [
        (
            r#"{"server": {"host": "127.0.0.1", "port": "0", "intervall": "5s"}}"#,
            "server.intervall",
        ),
        (
            r#"{"server": {"port": "0", "idle": "forever"}}"#,
            "server.idle",
        ),
        (
            r#"{"server": {"host": "300.1.2.3", "port": "0"}}"#,
            "server.host",
        ),
    ] {
        let path = dir.path().join("configuration.json");
        std::fs::write(&path, body).unwrap();
        let args = ["--config", path.to_str().unwrap(), "--no-prompt"];
        let (err, stdout) = one_line_failure(SERVER, &args, 2);
        assert!(
            err.contains("configuration.json") && err.contains(key),
            "{body}: {err}"
        );
        assert!(stdout.is_empty(), "nothing listened");
    }
    let missing = dir.path().join("missing.json");
    let output = Command::new(SERVER)
        .args(["--config", missing.to_str().unwrap(), "--no-prompt"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// The configuration file in the current directory is read when --config is not given, with
/// the original's string ports.
#[test]
fn configuration_json_in_the_current_directory_is_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("configuration.json"),
        r#"{ "server": { "host": "127.0.0.1", "port": "0", "interval": "1s", "count": "2", "idle": "5s" },
             "client": { "host": "127.0.0.1", "port": "0" } }"#,
    )
    .unwrap();
    let child = Command::new(SERVER)
        .arg("--no-prompt")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let first = first_line(child.0.stdout.take().unwrap());
    assert!(first.starts_with("Listening on 127.0.0.1:"), "{first}");
    assert!(
        first.ends_with("(heartbeat every 1s, 2 times, after 5s idle)\n"),
        "{first}"
    );
}

/// The idle rule: an idle time shorter than interval × count is raised, with a warning
/// naming both values.
#[test]
fn short_idle_is_raised_with_a_warning() {
    let child = Command::new(SERVER)
        .args([
            "--port",
            "0",
            "--no-prompt",
            "--interval",
            "5s",
            "--count",
            "3",
            "--idle",
            "10s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let first = first_line(child.0.stdout.take().unwrap());
    assert!(
        first.ends_with("(heartbeat every 5s, 3 times, after 15s idle)\n"),
        "{first}"
    );
    let warning = first_line(child.0.stderr.take().unwrap());
    assert!(
        warning.contains("10s") && warning.contains("15s") && warning.contains("5s"),
        "{warning}"
    );
}

/// Asking for more connections than the open-file limit allows is refused before any
/// connection is made, with the numbers: how many could be opened, and the limit.
#[test]
fn load_client_refuses_more_connections_than_files_before_connecting() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    listener.set_nonblocking(true).unwrap();
    let args = ["--port", &port, "--no-prompt", "--connections", "5000000"];
    let (err, _) = one_line_failure(CLIENT, &args, 1);
    assert!(
        err.contains("5000000 connections need more files than the open-file limit"),
        "{err}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection was attempted"
    );
}
