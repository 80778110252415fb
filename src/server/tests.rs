//! The loop's own policies, driven turn by turn with a fake clock: real sockets on
//! 127.0.0.1 (the loop's job is sockets), but every time a turn sees is the test's, so the
//! deadlines are checked at T − 1 µs and T without sleeping. Each test waits for the
//! state it needs (a readable event may take a moment on a loaded machine); the long
//! deadlines only guard against a hang.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mio::Events;

use super::core::waiting::{HEADER_DEADLINE, SCRAPE_FIRST_REQUEST, SCRAPE_SLOTS};
use super::core::{Stage, ECHO_GROWTH};
use super::{Server, ServerConfig, READS_PER_TURN};

const US: Duration = Duration::from_micros(1);
const HANG_GUARD: Duration = Duration::from_secs(20);

/// A server on 127.0.0.1:0 with a 1 µs tick, and the turns a test gives it.
struct Loop {
    server: Server,
    events: Events,
    t0: Instant,
}

impl Loop {
    fn new(config: ServerConfig) -> Loop {
        let server = Server::bind(ServerConfig {
            addr: "127.0.0.1:0".parse().expect("an address"),
            tick: US,
            ..config
        })
        .expect("binds");
        Loop {
            server,
            events: Events::with_capacity(64),
            t0: Instant::now(),
        }
    }

    /// One turn at `now` (since t0): whatever is ready, without sleeping if peers were cut
    /// off, else waiting a little for an event.
    fn turn(&mut self, since_t0: Duration) {
        let wait = match self.server.cut_off.is_empty() {
            true => Some(Duration::from_millis(5)),
            false => Some(Duration::ZERO),
        };
        self.server.poll.poll(&mut self.events, wait).expect("poll");
        let now = self.t0 + since_t0;
        self.server.turn(now, None, &self.events);
    }

    /// Turns at `now` until `done` holds.
    fn turn_until(&mut self, since_t0: Duration, mut done: impl FnMut(&Server) -> bool) {
        let guard = Instant::now() + HANG_GUARD;
        while !done(&self.server) {
            assert!(Instant::now() < guard, "the state never came");
            self.turn(since_t0);
        }
    }
}

/// A peer with more to read than a turn allows is read exactly [`READS_PER_TURN`] times in
/// a turn, then first in the next turn, with no new event for it (edge-triggered: without
/// the cut-off list it would never be read again); another peer is served meanwhile.
#[test]
fn a_peer_is_read_at_most_reads_per_turn_times_then_first_next_turn() {
    // Reads of 100 bytes: what fits in the output limit once echoed.
    let per_read = 100;
    let mut l = Loop::new(ServerConfig {
        max_write_buffer: per_read * ECHO_GROWTH,
        ..ServerConfig::default()
    });
    let addr = l.server.local_addr();
    let mut flood = TcpStream::connect(addr).expect("connects");
    let mut other = TcpStream::connect(addr).expect("connects");
    l.turn_until(Duration::ZERO, |s| s.core.open() == 2);
    // No newline: nothing to echo, so every read has the same budget.
    flood.write_all(&[b'x'; 10_000]).expect("sends");
    l.turn_until(Duration::ZERO, |s| s.core.stats().bytes_in > 0);
    let per_turn = (READS_PER_TURN * per_read) as u64;
    assert_eq!(l.server.core.stats().bytes_in, per_turn);
    assert_eq!(
        l.server.cut_off.len(),
        1,
        "the flood waits for the next turn"
    );
    other.write_all(b"hi\n").expect("sends");
    let mut flood_left = 10_000 - per_turn;
    while flood_left > 0 {
        let before = l.server.core.stats().bytes_in;
        l.turn(Duration::ZERO);
        let read = l.server.core.stats().bytes_in - before;
        // The other peer's 3 bytes may come in any turn; the flood's are whole reads.
        let from_flood = read - read % per_read as u64;
        assert_eq!(
            from_flood,
            per_turn.min(flood_left),
            "read {read} in one turn"
        );
        flood_left -= from_flood;
    }
    let mut echo = [0u8; 13];
    other.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    l.turn_until(Duration::ZERO, |s| s.core.stats().lines_echoed == 1);
    other.read_exact(&mut echo).expect("the other peer's echo");
    assert_eq!(&echo, b"Echoing...hi\n");
}

/// A `--proxy-protocol` peer that sends nothing is closed at its header deadline (to the
/// tick), not a microsecond before, and counted.
#[test]
fn a_silent_proxied_peer_is_closed_at_the_header_deadline() {
    let mut l = Loop::new(ServerConfig {
        proxy_protocol: true,
        ..ServerConfig::default()
    });
    let mut silent = TcpStream::connect(l.server.local_addr()).expect("connects");
    l.turn_until(Duration::ZERO, |s| s.core.waiting(Stage::ProxyHeader) == 1);
    l.turn(HEADER_DEADLINE - US);
    assert_eq!(l.server.core.waiting(Stage::ProxyHeader), 1);
    l.turn(HEADER_DEADLINE + US);
    assert_eq!(l.server.core.waiting(Stage::ProxyHeader), 0);
    assert_eq!(l.server.core.stats().rejected_proxy_header, 1);
    silent.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    let mut got = Vec::new();
    assert!(matches!(silent.read_to_end(&mut got), Ok(0)));
}

/// Scrapers that hold every slot in silence give them up after a second (to the tick);
/// meanwhile a newcomer is answered 503.
#[test]
fn silent_scrapers_give_their_slots_up_after_a_second() {
    let mut l = Loop::new(ServerConfig {
        metrics: Some("127.0.0.1:0".parse().expect("an address")),
        ..ServerConfig::default()
    });
    let metrics = l.server.metrics_addr().expect("metrics");
    let silent: Vec<TcpStream> = (0..SCRAPE_SLOTS)
        .map(|_| TcpStream::connect(metrics).expect("connects"))
        .collect();
    l.turn_until(Duration::ZERO, |s| {
        s.core.waiting(Stage::Scrape) == SCRAPE_SLOTS
    });
    let mut late = TcpStream::connect(metrics).expect("connects");
    l.turn_until(Duration::ZERO, |s| s.core.stats().metrics_busy == 1);
    late.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    let mut answer = String::new();
    late.read_to_string(&mut answer)
        .expect("an answer, not a reset");
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    l.turn(SCRAPE_FIRST_REQUEST - US);
    assert_eq!(l.server.core.waiting(Stage::Scrape), SCRAPE_SLOTS);
    l.turn(SCRAPE_FIRST_REQUEST + US);
    assert_eq!(l.server.core.waiting(Stage::Scrape), 0);
    for mut stream in silent {
        stream.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
        let mut got = Vec::new();
        assert!(matches!(stream.read_to_end(&mut got), Ok(0)));
    }
}

/// At the cap of TLS handshakes in flight, a newcomer waits a turn of reads before it
/// closes the oldest: handshakes whose clients have sent their last flight are finished,
/// not closed. 1,024 clients are one flight from done when 100 newcomers connect (a turn
/// sees them: without the wait, the first closes the oldest handshake at once); then every
/// client sends its last flight, and with 64 events a poll, each turn reads 64 of them and
/// takes in as many newcomers, none closed.
#[test]
fn at_the_handshake_cap_finished_handshakes_are_read_before_the_oldest_is_closed() {
    use crate::cores::tls::Refusal;
    use rustls::client::Resumption;
    use rustls::pki_types::ServerName;

    let _ = crate::edge::net::raise_open_file_limit();
    let (tls, client) = crate::edge::tls::localhost::pair(Resumption::default());
    let name = ServerName::try_from("localhost").expect("a name");
    let mut l = Loop::new(ServerConfig {
        tls: Some(tls),
        ..ServerConfig::default()
    });
    let addr = l.server.local_addr();
    let cap = super::HANDSHAKE_CAP;
    let mut shaking = Vec::with_capacity(cap);
    for _ in 0..cap {
        let mut tcp = TcpStream::connect(addr).expect("connects");
        tcp.set_read_timeout(Some(HANG_GUARD)).expect("a timeout");
        let mut conn = rustls::ClientConnection::new(client.clone(), name.clone()).expect("TLS");
        conn.write_tls(&mut tcp).expect("its first flight");
        shaking.push((conn, tcp));
    }
    l.turn_until(Duration::ZERO, |s| {
        s.core.waiting(Stage::TlsHandshake) == cap
    });
    // Filling the stage ended at the cap: a turn with nothing more to accept clears that.
    l.turn_until(Duration::ZERO, |s| {
        !s.waiting_for_room && !s.accept_deferred
    });
    // The server answered every first flight: each client is done but for its last.
    for (conn, tcp) in &mut shaking {
        while conn.is_handshaking() {
            assert!(conn.read_tls(tcp).expect("the server's flight") > 0);
            conn.process_new_packets().expect("a good flight");
        }
    }
    let newcomers: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).expect("connects"))
        .collect();
    let evicted = |s: &Server| s.core.stats().rejected_tls.0[Refusal::Evicted as usize];
    l.turn_until(Duration::ZERO, |s| s.waiting_for_room || evicted(s) > 0);
    assert_eq!(
        evicted(&l.server),
        0,
        "a newcomer closed the oldest at once"
    );
    for (conn, tcp) in &mut shaking {
        while conn.wants_write() {
            conn.write_tls(tcp).expect("its last flight");
        }
    }
    l.turn_until(Duration::ZERO, |s| s.core.open() == cap);
    assert_eq!(evicted(&l.server), 0);
    assert_eq!(l.server.core.waiting(Stage::TlsHandshake), newcomers.len());
}

/// A line and the peer's end of stream that came together are one readiness event: the
/// read that takes the line is shorter than asked for, yet the loop reads on to the end of
/// stream (the event says it is there, and no later event would), echoes the line and
/// closes. A peer that writes later, after such a short read, wakes the loop again.
#[test]
fn a_line_and_the_end_of_stream_that_came_together_are_both_read() {
    let mut l = Loop::new(ServerConfig::default());
    let addr = l.server.local_addr();
    let mut later = TcpStream::connect(addr).expect("connects");
    let mut leaving = TcpStream::connect(addr).expect("connects");
    l.turn_until(Duration::ZERO, |s| s.core.open() == 2);
    later.write_all(b"one\n").expect("sends");
    l.turn_until(Duration::ZERO, |s| s.core.stats().lines_echoed == 1);
    leaving.write_all(b"hi\n").expect("sends");
    leaving
        .shutdown(std::net::Shutdown::Write)
        .expect("shuts down");
    l.turn_until(Duration::ZERO, |s| s.core.open() == 1);
    assert_eq!(l.server.core.stats().lines_echoed, 2);
    leaving.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    let mut echoed = Vec::new();
    leaving
        .read_to_end(&mut echoed)
        .expect("the echo, then the end");
    assert_eq!(echoed, b"Echoing...hi\n");
    later.write_all(b"two\n").expect("sends");
    l.turn_until(Duration::ZERO, |s| s.core.stats().lines_echoed == 3);
    let mut echoes = [0u8; 28];
    later.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
    later.read_exact(&mut echoes).expect("both echoes");
    assert_eq!(&echoes, b"Echoing...one\nEchoing...two\n");
}
