//! `--reconnect` end to end: a load survives a server restart. The first server takes a free
//! port of 127.0.0.1 and is stopped (it tells every peer `End Connection`); a second server
//! starts on the same port; every connection comes back after its back-off. (A server that
//! accepts and closes at once is `client_server_ends.rs`'s.)
//!
//! Progress is read from the kernel's table of TCP connections (`/proc/net/tcp`): the test
//! waits, with a generous deadline as a hang guard, for the number of established
//! connections to the server's port to reach what it needs.

mod common;

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::eventually;
use heartbeat::client::{Client, ClientConfig, Finish};
use heartbeat::edge::stop::{Stoppable, Stopper};
use heartbeat::ops::stats::ServerStats;
use heartbeat::server::{Server, ServerConfig};

const CONNECTIONS: usize = 50;
const HANG_GUARD: Duration = Duration::from_secs(60);

/// The real server in a thread on `addr`; generous timings (no heartbeat within the test).
fn serve(addr: SocketAddr) -> (SocketAddr, Stopper, thread::JoinHandle<ServerStats>) {
    let server = Server::bind(ServerConfig {
        addr,
        ..ServerConfig::default()
    })
    .expect("server binds");
    let (addr, stopper) = (server.local_addr(), server.stopper());
    (
        addr,
        stopper,
        thread::spawn(move || server.run().expect("server runs")),
    )
}

/// Established client-side connections to `port` on 127.0.0.1, from `/proc/net/tcp`.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2] == remote && fields[3] == "01"
        })
        .count()
}

/// 50 connections with `--reconnect`; the server is stopped and another started on the same
/// port; all 50 come back. The client counts the server's closes and its reconnects.
#[test]
fn a_load_with_reconnect_survives_a_server_restart() {
    let (addr, stop_first, first) = serve("127.0.0.1:0".parse().unwrap());
    let client = Client::new(ClientConfig {
        server: addr,
        connections: CONNECTIONS,
        interval: Duration::from_millis(200),
        reconnect: true,
        verbose: false,
        ..ClientConfig::default()
    })
    .expect("client sets up");
    let stop_client = client.stopper();
    let client = thread::spawn(move || client.run().expect("client runs"));

    let all_up = || established_to(addr.port()) == CONNECTIONS;
    assert!(
        eventually(HANG_GUARD, all_up),
        "the first server never held all 50"
    );
    stop_first.stop();
    let first = first.join().expect("first server");
    assert_eq!(first.accepted, CONNECTIONS as u64, "{first:?}");

    let (again, stop_second, second) = serve(addr);
    assert_eq!(again, addr, "the same port");
    assert!(
        eventually(HANG_GUARD, all_up),
        "the connections did not come back"
    );
    stop_client.stop();
    let outcome = client.join().expect("client thread");
    stop_second.stop();
    let second = second.join().expect("second server");

    let s = &outcome.summary;
    assert_eq!(outcome.finish, Finish::Stopped, "{s:?}");
    assert!(second.accepted >= CONNECTIONS as u64, "{second:?}");
    // Every connection was closed by the stopping server and came back at least once. The
    // server's End Connection at its stop is a goodbye (no heartbeat was outstanding), not a
    // false death.
    assert_eq!(s.closed_by_server, CONNECTIONS as u64, "{s:?}");
    assert_eq!(
        (s.goodbyes, s.false_deaths),
        (CONNECTIONS as u64, 0),
        "{s:?}"
    );
    assert_eq!(
        s.connections_opened, CONNECTIONS as u64,
        "slots, not reconnects: {s:?}"
    );
    assert!(s.reconnects >= CONNECTIONS as u64, "{s:?}");
    assert_eq!(s.opened, 2 * CONNECTIONS as u64, "{s:?}");
    assert_eq!(s.lost(), 0, "{s:?}");
}
