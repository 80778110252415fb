//! The built `server` and `client` binaries, run as a user would run them, with settings
//! that are wrong or unusual: refusals, bad configuration, the idle rule. (The manual's four
//! cases through the binaries are in `manual_cases.rs`.)

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use common::one_line_failure;

const SERVER: &str = env!("CARGO_BIN_EXE_heartbeat-server");

/// Kills the child if a test fails before it exits, so no process outlives the test.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line a child process printed on the given stream.
fn first_line(stream: impl Read) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("a line");
    line
}

const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");

/// `--tick` longer than `--interval` would let heartbeats bunch up: refused before
/// listening, one line, exit status 2.
#[test]
fn a_tick_longer_than_the_interval_is_exit_2() {
    let args = [
        "--port",
        "0",
        "--no-prompt",
        "--tick",
        "10s",
        "--interval",
        "200ms",
    ];
    let (err, out) = one_line_failure(SERVER, &args, 2);
    assert_eq!(
        err,
        "server: tick: 10s is longer than the heartbeat interval 200ms; use at most the interval\n"
    );
    assert!(out.is_empty(), "it never listened");
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
