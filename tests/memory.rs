//! Total memory through the real `server` binary: thousands of peers each holding a long
//! partial line stay within `--max-buffered`, and the memory goes back to the operating
//! system once they leave. (The budget's rules are proven with a fake clock in
//! `server_core.rs` and `server::budget`.)

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{eventually, summary_value, ServerProcess};

const MB: u64 = 1 << 20;
/// A line just under the default 64 KiB limit, with no newline yet.
const PARTIAL: usize = 65_000;

fn hold_partial_lines(server: &ServerProcess, peers: usize) -> Vec<TcpStream> {
    let line = vec![b'x'; PARTIAL];
    (0..peers)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr()).expect("connects");
            stream.write_all(&line).expect("sends");
            stream
        })
        .collect()
}

/// 2,000 peers × 65,000 bytes (about 130 MB held) stay under the default 256 MiB budget, and
/// when they leave the server gives the memory back: its RSS returns near its baseline.
#[test]
fn memory_held_for_partial_lines_goes_back_when_the_peers_leave() {
    let mut server = ServerProcess::start(&["--log-level", "warn"]);
    let baseline = server.rss_bytes();
    let peers = hold_partial_lines(&server, 2000);
    assert!(
        eventually(Duration::from_secs(60), || server.rss_bytes()
            > baseline + 100 * MB),
        "the server read and held the partial lines: rss {} MB",
        server.rss_bytes() / MB
    );
    drop(peers);
    let back = eventually(Duration::from_secs(60), || {
        server.rss_bytes() < baseline + 8 * MB
    });
    assert!(
        back,
        "rss {} MB after every peer left, baseline {} MB",
        server.rss_bytes() / MB,
        baseline / MB
    );
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let summary = server.rest_of_stdout();
    assert_eq!(
        summary_value(&summary, "closed over --max-buffered").unwrap_or(0),
        0,
        "{summary}"
    );
}

/// With a 16 MiB budget, 1,000 such peers (65 MB of partial lines) cannot take the server's
/// memory with them: the largest holders are closed, counted, and RSS settles near the
/// budget. (Within one loop turn it may overshoot by what that turn read: measured, a peak
/// of 36 MB in a release build.)
#[test]
fn a_flood_of_partial_lines_is_held_to_the_budget() {
    let mut server = ServerProcess::start(&["--log-level", "warn", "--max-buffered", "16MiB"]);
    let baseline = server.rss_bytes();
    let peers = hold_partial_lines(&server, 1000);
    // Closed ones see their connection end; wait until the server has closed enough.
    let closed = || {
        peers
            .iter()
            .filter(|p| {
                p.set_nonblocking(true).expect("nonblocking");
                let mut byte = [0u8; 1];
                matches!(std::io::Read::read(&mut &**p, &mut byte), Ok(0) | Err(_))
                    && !matches!(
                        std::io::Read::read(&mut &**p, &mut byte),
                        Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
                    )
            })
            .count()
    };
    assert!(
        eventually(Duration::from_secs(60), || closed() >= 500),
        "the largest holders were closed"
    );
    // Once the largest holders are closed and their memory handed back, the server holds
    // about the budget (16 MiB), not the 65 MB the peers sent.
    let settled = eventually(Duration::from_secs(60), || {
        server.rss_bytes() < baseline + 32 * MB
    });
    assert!(
        settled,
        "rss {} MB with a 16 MiB budget, baseline {} MB",
        server.rss_bytes() / MB,
        baseline / MB
    );
    drop(peers);
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let summary = server.rest_of_stdout();
    let over = summary_value(&summary, "closed over --max-buffered").expect("a row");
    assert!(over >= 500, "{summary}");
}
