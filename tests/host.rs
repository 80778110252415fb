//! Bad days for the host: running out of file descriptors, addresses that cannot be bound,
//! and being told to stop with thousands of peers open. Each runs the built binaries, on
//! 127.0.0.1, bounded in time.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{one_line_failure, Peer, ServerProcess, MS};

const SERVER: &str = env!("CARGO_BIN_EXE_heartbeat-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");

/// Out of file descriptors: accept fails with EMFILE; the server backs off instead of
/// spinning on the waiting peers, and lets them in once descriptors free up.
#[test]
fn out_of_descriptors_backs_off_without_spinning_and_recovers() {
    // 32 descriptors: stdio, poll, waker, signals, listener... leave room for ~20 peers.
    let server = ServerProcess::start(&["--max-open-files", "32", "--log-level", "off"]);
    // The kernel completes the handshake from the backlog even when accept cannot.
    let mut pending: Vec<Peer> = (0..40).map(|_| Peer::connect(server.addr())).collect();
    for peer in &mut pending {
        peer.send(b"ping\n");
    }
    // Sort them into admitted (echoed) and waiting, until a whole second passes with no
    // new echo: a busy machine slows the echoes down but does not make them stop.
    let mut admitted = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        let mut still = Vec::new();
        for mut peer in pending.drain(..) {
            match peer.line_within(10 * MS).as_deref() {
                Some("Echoing...ping") => {
                    admitted.push(peer);
                    quiet_since = Instant::now();
                }
                None => still.push(peer),
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
        pending = still;
    }
    let mut waiting = pending;
    assert!(!waiting.is_empty(), "the limit was reached");
    assert!(admitted.len() >= 15, "{} admitted", admitted.len());

    let cpu_before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let busy = server.cpu_ticks() - cpu_before;
    assert!(
        busy <= 10,
        "{busy} ticks of CPU in 1 s while out of descriptors: spinning"
    );

    // Free some descriptors: the waiting peers get in, and their line is answered.
    let freed = waiting.len().min(admitted.len());
    admitted.truncate(admitted.len() - freed);
    for peer in &mut waiting {
        assert_eq!(
            peer.line_within(Duration::from_secs(3)).as_deref(),
            Some("Echoing...ping"),
            "a waiting peer got in once descriptors were free"
        );
    }
}

/// A port already in use is one line naming the address, and exit status 1.
#[test]
fn address_in_use_is_one_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (err, _) = one_line_failure(SERVER, &["--port", &port, "--no-prompt"], 1);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: address already in use"
        )),
        "{err}"
    );
}

/// An address this host does not have, and a host that is not an address: one line naming
/// it, exit status 1. (Permission denied cannot be shown here: tests run as root.)
#[test]
fn unusable_addresses_are_one_line_and_exit_1() {
    for (host, says) in [
        ("2001:db8::1", "cannot listen on [2001:db8::1]:0"),
        (
            "300.1.2.3",
            "\"300.1.2.3\" is not an address this host can use",
        ),
        (
            "bad host!",
            "\"bad host!\" is not an address this host can use",
        ),
    ] {
        let args = ["--host", host, "--port", "0", "--no-prompt"];
        let (err, _) = one_line_failure(SERVER, &args, 1);
        assert!(err.contains(says), "{host}: {err}");
    }
}

/// SIGTERM with 5,000 peers open: every peer receives `End Connection` then end of stream
/// (a peer that is not reading is closed anyway after the stop linger), the summary is
/// printed, and the process exits 0.
#[test]
fn sigterm_with_5000_peers_tells_everyone_and_exits() {
    let mut server = ServerProcess::start(&["--log-level", "off", "--max-write-buffer", "64KiB"]);
    let mut peers: Vec<TcpStream> = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        peers.push(stream);
    }
    // One peer that floods and never reads: its output buffer is full at shutdown.
    let mut flooder = TcpStream::connect(server.addr()).unwrap();
    flooder.set_nonblocking(true).unwrap();
    let burst = b"flood flood flood flood flood flood flood flood\n".repeat(20_000);
    let mut pushed = 0;
    let push_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < push_until {
        match flooder.write(&burst) {
            Ok(n) => pushed += n,
            Err(_) => std::thread::sleep(20 * MS),
        }
    }
    assert!(pushed > 0);
    // Every peer is in: the last one connected answers.
    let mut last = Peer::connect(server.addr());
    last.send(b"ping\n");
    assert_eq!(last.line().as_deref(), Some("Echoing...ping"));

    server.signal("-TERM");
    // The flooder is closed after the 1 s stop linger (proven to the microsecond in
    // `server_core.rs`); here the wait is only a hang guard.
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let summary = server.rest_of_stdout();
    assert!(summary.contains("5002 connections accepted"), "{summary}");
    assert!(summary.contains("closed at shutdown: 5002"), "{summary}");

    for (i, peer) in peers.iter_mut().enumerate() {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("read to end");
        assert_eq!(got, b"End Connection\n", "peer {i}");
    }
    assert_eq!(last.line().as_deref(), Some("End Connection"));
    assert_eq!(last.line(), None);
}

/// The client in load mode on Ctrl-C: closes its connections, prints its summary, exits 0.
#[test]
fn load_client_on_ctrl_c_prints_its_summary_and_exits_0() {
    let server = ServerProcess::start(&["--log-level", "off"]);
    let mut client = Command::new(CLIENT)
        .args(["--port", &server.port.to_string(), "--no-prompt"])
        .args(["--connections", "200", "--interval", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        server.wait_for_peers(200, Duration::from_secs(30)),
        "all 200 connected"
    );
    let sent = Command::new("kill")
        .args(["-INT", &client.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = client.kill();
            panic!("client still running 30 s after SIGINT");
        }
        std::thread::sleep(10 * MS);
    };
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.starts_with("Summary: 200 of 200 connections opened"),
        "{out}"
    );
    assert!(out.contains("lines sent: "), "{out}");
    assert!(out.contains("round trip"), "{out}");
}

/// `--drain`: on SIGTERM the server tells its peers `End Connection` spread over the drain,
/// not all at once; a second SIGTERM tells the rest at once, and it exits 0. (The spacing is
/// proven to the microsecond in `server_core.rs`.)
#[test]
fn sigterm_drains_and_a_second_sigterm_ends_the_drain() {
    let mut server = ServerProcess::start(&["--log-level", "off", "--drain", "20s"]);
    let mut peers: Vec<Peer> = (0..20).map(|_| Peer::connect(server.addr())).collect();
    for peer in &mut peers {
        peer.send(b"ping\n");
        assert_eq!(peer.line().as_deref(), Some("Echoing...ping"));
    }
    server.signal("-TERM");
    // One peer a second: the first at once, the last after 19 s.
    let mut told = vec![false; peers.len()];
    let mut count_told = |peers: &mut Vec<Peer>| {
        for (i, peer) in peers.iter_mut().enumerate() {
            if !told[i] && peer.line_within(MS).as_deref() == Some("End Connection") {
                told[i] = true;
            }
        }
        told.iter().filter(|t| **t).count()
    };
    let mut first = 0;
    assert!(
        common::eventually(Duration::from_secs(30), || {
            first = count_told(&mut peers);
            first > 0
        }),
        "the drain began"
    );
    assert!(first < peers.len(), "spread out, not all at once");
    server.signal("-TERM");
    let mut all = 0;
    assert!(
        common::eventually(Duration::from_secs(30), || {
            all = count_told(&mut peers);
            all == peers.len()
        }),
        "{all} told after the second SIGTERM"
    );
    assert!(server.wait(Duration::from_secs(30)).success());
    let summary = server.rest_of_stdout();
    assert!(summary.contains("closed at shutdown: 20"), "{summary}");
}
