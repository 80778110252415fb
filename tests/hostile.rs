//! Peers that misbehave: a peer that never reads, a line with no end, a half-close, resets,
//! a full server and peers from addresses not allowed in. (Garbage bytes and pipelined bursts
//! are in `pipelining.rs`.) Each test would fail without the
//! behaviour it names; all run on 127.0.0.1 and are bounded in time.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start_server, Peer, ServerProcess, MS};
use heartbeat::cores::allow::AllowList;
use heartbeat::server::ServerConfig;

const LINE: &[u8] = b"0123456789012345678901234567890123456789012345678901234567890123456789\n";

/// Round trip of one line on a fresh peer.
fn round_trip(peer: &mut Peer) -> Duration {
    let start = Instant::now();
    peer.send(b"ping\n");
    assert_eq!(peer.line().as_deref(), Some("Echoing...ping"));
    start.elapsed()
}

/// A peer that sends without reading: the server holds at most --max-write-buffer of output
/// for it and stops reading from it, so its memory stays bounded while the peer pushes 50 MB;
/// another peer's echoes keep flowing meanwhile; once the peer reads, every echo arrives.
#[test]
fn slow_consumer_is_held_back_and_loses_nothing() {
    let server = ServerProcess::start(&["--max-write-buffer", "1MiB", "--log-level", "off"]);
    let mut other = Peer::connect(server.addr());
    round_trip(&mut other);
    let rss_before = server.rss_bytes();

    const TOTAL: usize = 50 * 1024 * 1024;
    let lines = TOTAL / LINE.len();
    let stream = TcpStream::connect(server.addr()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&written);
    let pusher = std::thread::spawn(move || {
        // Batches of lines, so the 50 MB are pushed in few system calls.
        let batch: Vec<u8> = LINE.repeat(1024);
        let mut sent = 0;
        while sent < lines {
            let n = (lines - sent).min(1024);
            writer.write_all(&batch[..n * LINE.len()]).expect("push");
            sent += n;
            progress.fetch_add((n * LINE.len()) as u64, Ordering::Relaxed);
        }
    });

    // Wait until the push stalls: the server stopped reading. A whole second without
    // progress, so that a busy machine merely slowing the pusher does not count.
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = written.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
        assert!(
            now < TOTAL as u64,
            "the whole 50 MB went in without anyone reading echoes"
        );
    }
    let rss_stalled = server.rss_bytes();
    let growth = rss_stalled.saturating_sub(rss_before);
    assert!(
        growth < 6 * 1024 * 1024,
        "server grew by {growth} bytes holding a slow consumer (pushed {last} bytes)"
    );
    // Another peer is still served (its reads have a 5 s deadline: a hang guard, not a
    // speed test).
    for _ in 0..20 {
        round_trip(&mut other);
    }

    // Now read everything: every line comes back exactly once.
    let mut reader = stream;
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let expected = lines * (LINE.len() + "Echoing...".len());
    let mut received = 0;
    let mut buf = vec![0u8; 1 << 16];
    while received < expected {
        let n = reader.read(&mut buf).expect("echoes keep coming");
        assert!(n > 0, "closed after {received} of {expected} bytes");
        received += n;
    }
    pusher.join().expect("pusher");
    assert_eq!(received, expected);
    let rss_after = server.rss_bytes();
    assert!(
        rss_after.saturating_sub(rss_before) < 6 * 1024 * 1024,
        "memory not given back: {rss_before} -> {rss_after}"
    );
}

/// 10 MB with no newline: the server keeps at most --max-line of it, answers one
/// `Error: line too long`, and echoes the next normal line.
#[test]
fn overlong_line_is_dropped_with_one_error_and_the_connection_lives_on() {
    let server = ServerProcess::start(&["--max-line", "64KiB", "--log-level", "off"]);
    let mut peer = Peer::connect(server.addr());
    round_trip(&mut peer);
    let rss_before = server.rss_bytes();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..10 {
        peer.send(&chunk);
    }
    assert_eq!(
        peer.line().as_deref(),
        Some("Error: line too long (limit 65536 bytes)")
    );
    let growth = server.rss_bytes().saturating_sub(rss_before);
    assert!(growth < 2 * 1024 * 1024, "grew by {growth} bytes");
    peer.send(b"the rest of the long line\nnext\n");
    assert_eq!(peer.line().as_deref(), Some("Echoing...next"));
    assert_eq!(peer.line_within(100 * MS), None, "only one error line");
}

/// A peer that sends lines and shuts down its write side gets every echo, then end of stream.
#[test]
fn half_close_flushes_every_echo_before_closing() {
    let server = start_server(ServerConfig::default());
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    const LINES: usize = 100_000;
    let mut writer = stream.try_clone().unwrap();
    let pusher = std::thread::spawn(move || {
        let mut all = Vec::with_capacity(LINES * 8);
        for i in 0..LINES {
            all.extend_from_slice(format!("{i:06}\n").as_bytes());
        }
        writer.write_all(&all).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoes = Vec::new();
    (&stream).read_to_end(&mut echoes).expect("read to end");
    pusher.join().unwrap();
    let text = String::from_utf8(echoes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), LINES);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("Echoing...{i:06}"));
    }
    let stats = server.stop();
    assert_eq!(stats.closed_by_peer, 1);
    assert_eq!(stats.lines_echoed, LINES as u64);
}

/// Closing with SO_LINGER 0 sends a reset instead of a FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Peers that reset mid-stream, or vanish with output pending, are counted and closed; the
/// server and its other peers carry on.
#[test]
fn resets_and_broken_pipes_close_only_that_peer() {
    let server = start_server(ServerConfig {
        max_write_buffer: 64 * 1024,
        ..ServerConfig::default()
    });
    let mut bystander = Peer::connect(server.addr);
    round_trip(&mut bystander);
    for round in 0..20 {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        // Enough that the server has output pending for a peer that never reads.
        let burst = LINE.repeat(if round % 2 == 0 { 10 } else { 20_000 });
        let _ = stream.write_all(&burst);
        std::thread::sleep(2 * MS);
        reset(stream);
    }
    for _ in 0..5 {
        round_trip(&mut bystander);
    }
    drop(bystander);
    let stats = server.stop();
    assert_eq!(stats.accepted, 21);
    assert!(stats.closed_on_error >= 1, "{stats:?}");
    assert_eq!(
        stats.closed_on_error + stats.closed_by_peer + stats.closed_at_shutdown,
        21,
        "every peer closed exactly once: {stats:?}"
    );
}

/// Peers that connect and leave without a byte (HAProxy's TCP health checks: connect, then
/// close or reset) are probes: counted as such, not as errors nor as peers that closed; a
/// peer that said something and then reset is still an error.
#[test]
fn health_check_probes_are_counted_as_probes_not_errors() {
    let server = start_server(ServerConfig::default());
    let mut bystander = Peer::connect(server.addr);
    round_trip(&mut bystander);
    for _ in 0..3 {
        drop(TcpStream::connect(server.addr).unwrap());
        reset(TcpStream::connect(server.addr).unwrap());
    }
    let mut talker = Peer::connect(server.addr);
    round_trip(&mut talker);
    let talker_stream = talker.writer.try_clone().unwrap();
    drop(talker);
    reset(talker_stream);
    // Everything sent before these round trips has been read by the server.
    for _ in 0..3 {
        round_trip(&mut bystander);
    }
    drop(bystander);
    let stats = server.stop();
    assert_eq!(stats.closed_probe, 6, "{stats:?}");
    assert_eq!(stats.closed_on_error, 1, "{stats:?}");
    assert_eq!(stats.accepted, 8, "{stats:?}");
}

/// Beyond --max-connections, a new peer gets `Error: server full` and is closed; the peers
/// already in are unaffected.
#[test]
fn server_full_refuses_the_next_peer_with_one_line() {
    let server = start_server(ServerConfig {
        max_connections: 3,
        ..ServerConfig::default()
    });
    let mut peers: Vec<Peer> = (0..3).map(|_| Peer::connect(server.addr)).collect();
    for peer in &mut peers {
        round_trip(peer);
    }
    let mut extra = Peer::connect(server.addr);
    assert_eq!(extra.line().as_deref(), Some("Error: server full"));
    assert_eq!(extra.line(), None, "then closed");
    for peer in &mut peers {
        round_trip(peer);
    }
    drop(peers.pop());
    // The server may not have seen the departure yet: each try is a new peer, and one that
    // is refused is simply let go.
    let mut refused_meanwhile = 0;
    let next = loop {
        let mut next = Peer::connect(server.addr);
        next.send(b"ping\n");
        match next.line().as_deref() {
            Some("Echoing...ping") => break next,
            Some("Error: server full") => refused_meanwhile += 1,
            other => panic!("unexpected {other:?}"),
        }
        assert!(refused_meanwhile < 1000, "a place never freed up");
        std::thread::sleep(10 * MS);
    };
    drop((peers, next, extra));
    let stats = server.stop();
    assert_eq!(stats.rejected_full, 1 + refused_meanwhile);
}

/// With --allow, a peer from another address is closed at accept without a word; a peer
/// from an allowed address is served.
#[test]
fn allow_list_closes_peers_from_other_addresses() {
    let server = start_server(ServerConfig {
        allow: "127.0.0.2/32".parse::<AllowList>().unwrap(),
        ..ServerConfig::default()
    });
    let mut refused = Peer::connect(server.addr);
    assert_eq!(refused.line(), None, "closed at accept");

    let source: SocketAddr = "127.0.0.2:0".parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut allowed = Peer {
        reader: std::io::BufReader::new(stream.try_clone().unwrap()),
        writer: stream,
    };
    round_trip(&mut allowed);
    drop((refused, allowed));
    let stats = server.stop();
    assert_eq!(stats.rejected_not_allowed, 1);
    assert_eq!(stats.accepted, 1);
}

/// A peer still talking when the server stops gets every echo owed, `End Connection`, and
/// then a clean end of stream, not a reset: the server drops its input until the peer is
/// done instead of closing on unread bytes (which makes the kernel reset the connection and
/// discard what it had not delivered yet).
#[test]
fn stopping_closes_a_chatty_peer_cleanly_after_end_connection() {
    let server = start_server(ServerConfig::default());
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let chatter = std::thread::spawn(move || {
        let burst = LINE.repeat(64);
        let start = Instant::now();
        // Sends as fast as it can until the server is gone (5 s at most).
        while start.elapsed() < Duration::from_secs(5) {
            if writer.write_all(&burst).is_err() {
                break;
            }
        }
    });
    let reader = std::thread::spawn(move || {
        let mut received = Vec::new();
        let result = (&stream).read_to_end(&mut received);
        (result.map(|_| ()), received)
    });
    std::thread::sleep(200 * MS);
    let stats = server.stop();
    let (result, received) = reader.join().unwrap();
    assert!(
        result.is_ok(),
        "a reset instead of a clean close: {result:?}"
    );
    assert!(
        received.ends_with(b"End Connection\n"),
        "last bytes: {:?}",
        String::from_utf8_lossy(&received[received.len().saturating_sub(40)..])
    );
    chatter.join().unwrap();
    assert_eq!(stats.closed_at_shutdown, 1);
}

/// A last line without a newline, followed by a half-close, is still echoed.
#[test]
fn half_close_echoes_an_unterminated_last_line() {
    let server = start_server(ServerConfig::default());
    let mut peer = Peer::connect(server.addr);
    peer.send(b"one\ntwo");
    peer.writer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(peer.read_to_end(), b"Echoing...one\nEchoing...two\n");
}

/// Timeouts too long to represent mean "never", not a panic at the first connection.
#[test]
fn absurd_timeouts_do_not_panic() {
    let server = start_server(ServerConfig {
        timing: heartbeat::cores::liveness::Timing {
            idle: Duration::MAX,
            interval: Duration::MAX,
            count: 3,
        },
        ..ServerConfig::default()
    });
    let mut peer = Peer::connect(server.addr);
    round_trip(&mut peer);
    drop(peer);
    let stats = server.stop();
    assert_eq!(stats.lines_echoed, 1);
}

/// Two peers flood the server with pipelined lines (reading their echoes as fast as they
/// can) beside a quiet peer: each peer is read at most 16 times a turn, so the turns stay
/// short and the quiet peer's heartbeat still comes. The bound is generous (a second late)
/// so that a loaded machine cannot fail it; a server that let a flood monopolise its turns
/// would miss it by far.
#[test]
fn two_floods_do_not_hold_back_a_quiet_peers_heartbeat() {
    let idle = Duration::from_secs(1);
    let server = start_server(ServerConfig {
        timing: heartbeat::cores::liveness::Timing {
            idle,
            interval: Duration::from_secs(1),
            count: 1,
        },
        ..ServerConfig::default()
    });
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let stream = TcpStream::connect(server.addr).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let stop_writing = done.clone();
            let pusher = std::thread::spawn(move || {
                let batch = LINE.repeat(4096);
                while !stop_writing.load(Ordering::SeqCst) {
                    if writer.write_all(&batch).is_err() {
                        return;
                    }
                }
            });
            let stop_reading = done.clone();
            let drainer = std::thread::spawn(move || {
                let mut reader = stream;
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0u64;
                while !stop_reading.load(Ordering::SeqCst) {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                total
            });
            (pusher, drainer)
        })
        .collect();
    let mut quiet = Peer::connect(server.addr);
    let connected = Instant::now();
    let first = quiet.line_within(Duration::from_secs(10));
    let late = connected.elapsed().saturating_sub(idle);
    done.store(true, Ordering::SeqCst);
    assert_eq!(first.as_deref(), Some("heartbeat"));
    assert!(late < Duration::from_secs(1), "heartbeat {late:?} late");
    let stats = server.stop();
    for (pusher, drainer) in floods {
        let _ = pusher.join();
        let echoed = drainer.join().unwrap();
        assert!(echoed > 0, "each flood was served");
    }
    assert!(stats.lines_echoed > 10_000, "{stats:?}");
}

/// `--max-connections 50` and 6,000 connect/close cycles, at most one peer open at a time:
/// no one is refused. Each loop turn reads before it accepts, so a peer that hung up frees
/// its place before the next one is counted (it used to refuse about a fifth of them).
#[test]
fn a_full_server_counts_only_peers_still_there() {
    let mut server = ServerProcess::start(&["--log-level", "off", "--max-connections", "50"]);
    for _ in 0..6000 {
        let peer = TcpStream::connect(server.addr()).expect("connects");
        drop(peer);
    }
    let mut last = Peer::connect(server.addr());
    last.send(b"am I in?\n");
    assert_eq!(last.line().as_deref(), Some("Echoing...am I in?"));
    drop(last);
    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let summary = server.rest_of_stdout();
    let refused = common::summary_value(&summary, "refused, --max-connections reached");
    assert_eq!(refused.unwrap_or(0), 0, "{summary}");
}
