//! Churn: thousands of connect / send / close cycles leave nothing behind. In a test binary of
//! its own, so that counting this process's descriptors sees no other test's sockets.

mod common;

use std::time::Duration;

use common::{eventually, start_server, Peer};
use heartbeat::server::ServerConfig;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// After 3,000 cycles the process's descriptors are back to their baseline, and when the
/// server stops only the one peer still connected is left to close: the slab holds no
/// closed connection. (Every loop turn also asserts, in debug builds, that the wheel holds
/// exactly one timer per open connection.)
#[test]
fn connect_send_close_cycles_leave_nothing_behind() {
    let server = start_server(ServerConfig::default());
    let mut keeper = Peer::connect(server.addr);
    keeper.send(b"hello\n");
    assert_eq!(keeper.line().as_deref(), Some("Echoing...hello"));
    let baseline = open_descriptors();

    const CYCLES: usize = 3000;
    for i in 0..CYCLES {
        let mut peer = Peer::connect(server.addr);
        match i % 3 {
            // Send, read the echo, close.
            0 => {
                peer.send(b"cycle\n");
                assert_eq!(peer.line().as_deref(), Some("Echoing...cycle"));
            }
            // Send and close without reading.
            1 => peer.send(b"cycle\n"),
            // Connect and close at once.
            _ => {}
        }
    }
    let settled = eventually(Duration::from_secs(30), || open_descriptors() == baseline);
    assert!(
        settled,
        "descriptors: {} now, {baseline} before the churn",
        open_descriptors()
    );
    keeper.send(b"still here\n");
    assert_eq!(keeper.line().as_deref(), Some("Echoing...still here"));

    let stats = server.stop();
    assert_eq!(stats.accepted, CYCLES as u64 + 1);
    assert_eq!(
        stats.closed_at_shutdown, 1,
        "only the keeper was still open"
    );
    assert_eq!(
        stats.closed_by_peer + stats.closed_on_error + stats.closed_probe,
        CYCLES as u64,
        "every cycle's peer closed exactly once: {stats:?}"
    );
    // Those that connected and closed at once sent no byte: probes, not errors.
    assert_eq!(stats.closed_probe, CYCLES as u64 / 3, "{stats:?}");
    assert_eq!(stats.open, 0);
}
