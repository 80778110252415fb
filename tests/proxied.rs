//! `server --proxy-protocol` end to end, with a hand-made PROXY v2 header (the HAProxy test
//! is `tests/haproxy.rs`): the header's client address is the one `--allow`, the log and the
//! summary use; bytes after the header are the peer's data; a peer without a valid header is
//! closed and counted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{summary_value, Peer, ServerProcess};
use heartbeat::cores::proxy::{encode, Header};

const HANG_GUARD: Duration = Duration::from_secs(30);

fn header_from(source: &str) -> Vec<u8> {
    encode(&Header::Proxied {
        source: source.parse().unwrap(),
        destination: "203.0.113.1:8000".parse().unwrap(),
    })
}

/// Reads until the server closes; true if it closed without sending anything.
fn closed_silently(addr: SocketAddr, first: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let _ = stream.write_all(first);
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got.is_empty(),
        // A reset: the server closed with our bytes unread.
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset && got.is_empty(),
    }
}

/// The real client address from the header decides `--allow` (127.0.0.1, the socket's own,
/// is not allowed) and names the peer in the log; data in the same write as the header is
/// echoed, and a header cut into single bytes works as well.
#[test]
fn the_headers_address_is_the_peers_for_allow_logs_and_summary() {
    let mut server = ServerProcess::start_logged(&[
        "--proxy-protocol",
        "--allow",
        "192.0.2.0/24",
        "--log-level",
        "info",
    ]);
    let mut peer = Peer::connect(server.addr());
    let mut first = header_from("192.0.2.7:51000");
    first.extend(b"Hello\n");
    peer.send(&first);
    assert_eq!(peer.line().as_deref(), Some("Echoing...Hello"));
    let mut slow = Peer::connect(server.addr());
    for byte in header_from("192.0.2.8:4242") {
        slow.send(&[byte]);
        std::thread::sleep(Duration::from_millis(2));
    }
    slow.send(b"one byte at a time\n");
    assert_eq!(slow.line().as_deref(), Some("Echoing...one byte at a time"));
    // A client outside the allowed block, though its proxy (127.0.0.1) is the same.
    assert!(closed_silently(
        server.addr(),
        &header_from("198.51.100.9:1")
    ));
    let log = server.log.clone().expect("collected");
    assert!(
        log.wait_for("192.0.2.7:51000 connected", HANG_GUARD),
        "{:?}",
        log.snapshot()
    );
    assert!(log.wait_for(
        "198.51.100.9:1 refused: not in the --allow list",
        HANG_GUARD
    ));
    server.signal("-TERM");
    assert!(server.wait(HANG_GUARD).success());
    let summary = server.rest_of_stdout();
    assert_eq!(
        summary_value(&summary, "refused, not in --allow"),
        Some(1),
        "{summary}"
    );
    assert_eq!(
        summary_value(&summary, "refused, no valid PROXY header").unwrap_or(0),
        0
    );
    assert!(
        summary.starts_with("Summary: 2 connections accepted"),
        "{summary}"
    );
}

/// A peer that sends data, a v1 text header, or closes first, is closed at once and
/// counted; one that sends nothing is closed when its 5 s are up; the server goes on.
#[test]
fn a_peer_without_a_valid_header_is_closed_and_counted() {
    let mut server = ServerProcess::start_logged(&["--proxy-protocol", "--log-level", "info"]);
    let silent = TcpStream::connect(server.addr()).expect("connects");
    silent.set_read_timeout(Some(HANG_GUARD)).unwrap();
    assert!(closed_silently(server.addr(), b"Hello, there\n"));
    assert!(closed_silently(
        server.addr(),
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"
    ));
    let half = TcpStream::connect(server.addr()).expect("connects");
    (&half)
        .write_all(&header_from("192.0.2.1:1")[..10])
        .unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let log = server.log.clone().expect("collected");
    // The silent one is closed by its deadline.
    let mut got = Vec::new();
    let _ = (&silent).read_to_end(&mut got);
    assert!(got.is_empty());
    assert!(log.wait_for("no PROXY header within 5 s", HANG_GUARD));
    // A good peer still gets in.
    let mut peer = Peer::connect(server.addr());
    let mut first = header_from("192.0.2.1:2");
    first.extend(b"still here\n");
    peer.send(&first);
    assert_eq!(peer.line().as_deref(), Some("Echoing...still here"));
    server.signal("-TERM");
    assert!(server.wait(HANG_GUARD).success());
    let summary = server.rest_of_stdout();
    assert_eq!(
        summary_value(&summary, "refused, no valid PROXY header"),
        Some(4),
        "{summary}"
    );
    assert!(
        summary.starts_with("Summary: 1 connection accepted"),
        "{summary}"
    );
}

/// A flood of connections that never send their header (kept topped up as the server closes
/// them) does not keep a legitimate proxied peer out: with 64 descriptors the server lets at
/// most 16 wait, closes the oldest to make room for each newcomer, counts those, and says at
/// start what its open-file limit makes of `--max-connections`.
#[test]
fn silent_header_floods_do_not_keep_a_proxied_peer_out() {
    let mut server = ServerProcess::start_logged(&[
        "--proxy-protocol",
        "--max-open-files",
        "64",
        "--log-level",
        "info",
    ]);
    let log = server.log.clone().expect("collected");
    assert!(
        log.wait_for("but this process may open 64 files", HANG_GUARD),
        "{:?}",
        log.snapshot()
    );
    let flood: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(server.addr()).expect("the backlog takes it"))
        .collect();
    // The server took them in and closed the oldest to make room: waiting for that state.
    assert!(
        log.wait_for("closed to make room", HANG_GUARD),
        "{:?}",
        log.snapshot()
    );
    let mut peer = Peer::connect(server.addr());
    let mut first = header_from("192.0.2.1:3");
    first.extend(b"let me in\n");
    peer.send(&first);
    assert_eq!(peer.line().as_deref(), Some("Echoing...let me in"));
    // The oldest of the flood were closed for it, without a word.
    let mut got = Vec::new();
    flood[0].set_read_timeout(Some(HANG_GUARD)).unwrap();
    let ended = (&flood[0]).read_to_end(&mut got);
    assert!(ended.is_ok() && got.is_empty(), "{ended:?} {got:?}");
    drop(peer);
    server.signal("-TERM");
    assert!(server.wait(HANG_GUARD).success());
    let summary = server.rest_of_stdout();
    let evicted = summary_value(&summary, "of which closed to make room for newer ones");
    assert!(evicted.is_some_and(|n| n >= 80 - 16), "{summary}");
    drop(flood);
}
