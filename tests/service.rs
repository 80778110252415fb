//! The server binary as a service manager and a script see it: readiness through a fake
//! `NOTIFY_SOCKET` (a socket file and an abstract socket), a broken one that must not stop
//! it, and `--json`'s summary.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{Peer, ServerProcess};

/// Hang guard for every wait: generous, since the machine may be busy.
const WAIT: Duration = Duration::from_secs(30);

/// Starts the server binary with `NOTIFY_SOCKET` set to `notify`; its stderr is left in
/// `child.stderr` for the test to read.
fn start_notified(notify: &str, args: &[&str]) -> ServerProcess {
    ServerProcess::start_with_env(args, &[("NOTIFY_SOCKET", notify)])
}

fn next_datagram(socket: &UnixDatagram) -> String {
    let mut buf = [0; 1024];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A peer is served: its line comes back.
fn echoed(server: &ServerProcess) {
    let mut peer = Peer::connect(server.addr());
    peer.send(b"still there?\n");
    assert_eq!(peer.line().as_deref(), Some("Echoing...still there?"));
}

/// The whole life as systemd sees it on `socket`: READY=1 with the listening line as status
/// once it serves, STOPPING=1 after SIGTERM, then a clean exit.
fn ready_then_stopping(socket: &UnixDatagram, mut server: ServerProcess) {
    let ready = next_datagram(socket);
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS={}\n", server.listening.trim_end()),
    );
    echoed(&server);
    server.signal("-TERM");
    assert_eq!(next_datagram(socket), "STOPPING=1\nSTATUS=Stopping\n");
    assert!(server.wait(WAIT).success());
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0; 64];
    assert!(socket.recv(&mut buf).is_err(), "nothing more was sent");
}

/// `NOTIFY_SOCKET` naming a socket file gets READY=1 once listening and STOPPING=1 on SIGTERM.
#[test]
fn readiness_and_stopping_reach_a_notify_socket_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("binds");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let notify = path.to_str().expect("a UTF-8 temp path");
    let server = start_notified(notify, &["--log-level", "off"]);
    ready_then_stopping(&socket, server);
}

/// `NOTIFY_SOCKET=@name` (an abstract socket, as systemd may use) works the same. Abstract
/// sockets exist only on Linux.
#[cfg(target_os = "linux")]
#[test]
fn readiness_reaches_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("heartbeat-service-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).expect("binds");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let server = start_notified(&format!("@{name}"), &["--log-level", "off"]);
    ready_then_stopping(&socket, server);
}

/// A `NOTIFY_SOCKET` nobody listens on costs one warning, and the server serves and stops
/// as it would without it.
#[test]
fn a_dead_notify_socket_is_one_warning_and_no_harm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nowhere = dir.path().join("nobody-here");
    let mut server = start_notified(nowhere.to_str().unwrap(), &["--log-level", "warn"]);
    echoed(&server);
    server.signal("-TERM");
    assert!(server.wait(WAIT).success());
    let summary = server.rest_of_stdout();
    assert!(
        summary.starts_with("Summary: 1 connection accepted"),
        "{summary}"
    );
    let mut log = String::new();
    let mut stderr = server.child.stderr.take().expect("stderr");
    // The process has exited: this reads what it wrote, to the end.
    std::io::Read::read_to_string(&mut stderr, &mut log).expect("stderr");
    // READY and STOPPING both failed; only the first failure is logged.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("notify")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("could not notify"), "{log}");
    assert!(
        warnings[0].contains("nobody-here"),
        "names the socket: {log}"
    );
}

/// `--json`: the last line on stdout is one JSON object whose counters tell the run.
#[test]
fn json_summary_counts_the_run() {
    let mut server = ServerProcess::start(&["--json", "--log-level", "off"]);
    let mut gone = Peer::connect(server.addr());
    gone.send(b"one\ntwo\n");
    assert_eq!(gone.line().as_deref(), Some("Echoing...one"));
    assert_eq!(gone.line().as_deref(), Some("Echoing...two"));
    drop(gone);
    let mut stays = Peer::connect(server.addr());
    stays.send(b"three\n");
    assert_eq!(stays.line().as_deref(), Some("Echoing...three"));
    // The first peer's close must be the server's before the stop, or it ends at shutdown.
    assert!(
        server.wait_for_exactly(1, WAIT),
        "the first peer's close was seen"
    );
    server.signal("-TERM");
    assert_eq!(stays.line().as_deref(), Some("End Connection"));
    assert!(server.wait(WAIT).success());
    let out = server.rest_of_stdout();
    assert!(
        !out.contains("Summary"),
        "no text summary with --json: {out}"
    );
    let last = out.lines().last().expect("a summary line");
    let json: serde_json::Value = serde_json::from_str(last).expect("one JSON object");
    assert_eq!(json["accepted"], 2, "{last}");
    assert_eq!(json["lines_echoed"], 3, "{last}");
    assert_eq!(json["closed_by_peer"], 1, "{last}");
    assert_eq!(json["closed_at_shutdown"], 1, "{last}");
    assert_eq!(json["open"], 0, "{last}");
    assert_eq!(json["heartbeats_sent"], 0, "{last}");
    assert_eq!(json["close_lateness"]["count"], 0, "{last}");
}
