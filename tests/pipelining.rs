//! Framing end to end: thousands of lines in one write, lines in random-size pieces, a line
//! split at every byte, and bytes that are not text. Every line sent is echoed exactly once,
//! in order, byte for byte. The server runs in-process on 127.0.0.1:0 with the default
//! timing (30 s idle), so no heartbeat comes between the echoes; every read has a deadline.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::{start_server, Peer, RunningServer, MS};
use heartbeat::cores::protocol::ECHO_PREFIX;
use heartbeat::server::ServerConfig;
use proptest::prelude::*;

/// How long a test waits for all the echoes it is owed.
const ECHO_DEADLINE: Duration = Duration::from_secs(10);

fn server() -> RunningServer {
    start_server(ServerConfig::default())
}

fn connect(server: &RunningServer) -> Peer {
    let peer = Peer::connect(server.addr);
    peer.writer.set_nodelay(true).expect("nodelay");
    peer
}

/// What the server must send back for `lines` (each without its ending): `Echoing...` +
/// the line + `\n`, in order.
fn echoes<L: AsRef<[u8]>>(lines: &[L]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(ECHO_PREFIX);
        out.extend_from_slice(line.as_ref());
        out.push(b'\n');
    }
    out
}

/// Reads exactly `n` bytes, failing if they have not all arrived by [`ECHO_DEADLINE`].
fn read_n(peer: &mut Peer, n: usize) -> Vec<u8> {
    let start = Instant::now();
    let mut got = vec![0; n];
    let mut filled = 0;
    while filled < n {
        let left = ECHO_DEADLINE.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "only {filled} of {n} bytes within {ECHO_DEADLINE:?}"
        );
        peer.reader.get_ref().set_read_timeout(Some(left)).unwrap();
        match peer.reader.read(&mut got[filled..]) {
            Ok(0) => panic!("end of stream after {filled} of {n} bytes"),
            Ok(k) => filled += k,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading after {filled} of {n} bytes: {e}"),
        }
    }
    got
}

/// Nothing more arrives within `wait`, and the connection is still open.
fn assert_nothing_more(peer: &mut Peer, wait: Duration) {
    peer.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 256];
    match peer.reader.read(&mut byte) {
        Ok(0) => panic!("the server closed the connection"),
        Ok(k) => panic!("{k} unexpected bytes: {:?}", lossy(&byte[..k])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => panic!("reading: {e}"),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `got == want`, and if not, where they part, shown without dumping kilobytes.
fn assert_same_bytes(got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |b: &[u8]| {
        let from = at.saturating_sub(60);
        format!("{:?}", lossy(&b[from..(at + 60).min(b.len())]))
    };
    panic!(
        "echo differs at byte {at} (got {} bytes, want {})\n got: {}\nwant: {}",
        got.len(),
        want.len(),
        around(got),
        around(want),
    );
}

/// 5,000 distinct numbered lines in one write are echoed exactly once each, in order, and
/// the server counts 5,000 lines echoed.
#[test]
fn five_thousand_lines_in_one_write_are_echoed_once_each_in_order() {
    let server = server();
    let mut peer = connect(&server);
    let lines: Vec<String> = (1..=5000)
        .map(|i| format!("line {i:05} of 5000: {}", "x".repeat(i % 37)))
        .collect();
    let mut wire = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        wire.extend_from_slice(line.as_bytes());
        // Both endings, mixed.
        wire.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    let want = echoes(&lines);
    // Written from another thread, so a full socket buffer cannot stall the test's reads.
    let mut writer = peer.writer.try_clone().expect("clone");
    let sender = std::thread::spawn(move || writer.write_all(&wire).expect("one write"));
    let got = read_n(&mut peer, want.len());
    sender.join().expect("writer");
    assert_same_bytes(&got, &want);
    assert_nothing_more(&mut peer, 100 * MS);
    drop(peer);
    let stats = server.stop();
    assert_eq!(stats.lines_echoed, 5000);
    assert_eq!(stats.lines_too_long, 0);
    assert_eq!(stats.heartbeats_sent, 0);
}

/// One line of about 40 bytes (with NUL, 0xFF, a lone `\r` and a `\r\n` ending) written in
/// two pieces, for every split point from 0 to its length, with 2 ms between the pieces so
/// the server reads them apart: each time the echo is exact.
#[test]
fn a_line_split_at_every_byte_is_echoed_exactly() {
    let server = server();
    let mut peer = connect(&server);
    let wire: &[u8] = b"split \xff\x00 me\ranywhere: 0123456789 end\r\n";
    let want = echoes(&[&wire[..wire.len() - 2]]);
    for k in 0..=wire.len() {
        let (first, rest) = wire.split_at(k);
        peer.send(first);
        std::thread::sleep(2 * MS);
        peer.send(rest);
        let got = read_n(&mut peer, want.len());
        assert!(got == want, "split at {k}: got {:?}", lossy(&got));
    }
    assert_nothing_more(&mut peer, 50 * MS);
    drop(peer);
    let stats = server.stop();
    assert_eq!(stats.lines_echoed, wire.len() as u64 + 1);
}

/// Bytes that are not text: invalid UTF-8, NUL, a lone `\r` in the middle or at the start,
/// two `\r` before the `\n`, every byte value but `\n`. Each line is echoed byte for byte;
/// only the one `\r` of a `\r\n` ending is dropped.
#[test]
fn non_utf8_nul_and_lone_cr_are_echoed_byte_for_byte() {
    let server = server();
    let mut peer = connect(&server);
    let every_byte: Vec<u8> = (0..=255u8).rev().filter(|&b| b != b'\n').collect();
    // (what is written, what comes back after `Echoing...`)
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"\xff\xfe\n".to_vec(), b"\xff\xfe".to_vec()),
        (
            b"\xff\xfe\xff\xfe\r\n".to_vec(),
            b"\xff\xfe\xff\xfe".to_vec(),
        ),
        (
            b"nul\0in\0the middle\0\n".to_vec(),
            b"nul\0in\0the middle\0".to_vec(),
        ),
        (b"\0\n".to_vec(), b"\0".to_vec()),
        (b"lone\rcr\n".to_vec(), b"lone\rcr".to_vec()),
        (b"\rat the start\n".to_vec(), b"\rat the start".to_vec()),
        (b"two\r\r\n".to_vec(), b"two\r".to_vec()),
        (b"\r\r\r\n".to_vec(), b"\r\r".to_vec()),
        (
            b"\xc3\x28 bad \xe2\x82 utf-8 \x80\n".to_vec(),
            b"\xc3\x28 bad \xe2\x82 utf-8 \x80".to_vec(),
        ),
        ([every_byte.as_slice(), b"\n"].concat(), every_byte.clone()),
    ];
    let wire: Vec<u8> = cases.iter().flat_map(|(sent, _)| sent.clone()).collect();
    let back: Vec<&Vec<u8>> = cases.iter().map(|(_, back)| back).collect();
    let want = echoes(&back);
    // All at once, then each on its own.
    peer.send(&wire);
    assert_same_bytes(&read_n(&mut peer, want.len()), &want);
    for (sent, back) in &cases {
        peer.send(sent);
        let want = echoes(&[back]);
        assert_same_bytes(&read_n(&mut peer, want.len()), &want);
    }
    assert_nothing_more(&mut peer, 50 * MS);
    drop(peer);
    let stats = server.stop();
    assert_eq!(stats.lines_echoed, 2 * cases.len() as u64);
}

/// About 50 distinct lines of random bytes (no `\n`; `\r`, NUL and 0xFF allowed), each
/// ending in `\n` or `\r\n`.
fn random_lines() -> impl Strategy<Value = Vec<(Vec<u8>, bool)>> {
    let byte = prop_oneof![
        4 => any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
        1 => Just(b'\r'),
    ];
    let line = (prop::collection::vec(byte, 0..40), any::<bool>());
    prop::collection::vec(line, 40..=60).prop_map(|lines| {
        lines
            .into_iter()
            .enumerate()
            // A distinct number in front makes every line distinct (and none a heartbeat reply).
            .map(|(i, (body, crlf))| ([format!("{i:02}:").into_bytes(), body].concat(), crlf))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The lines written in random pieces of 1 to 64 bytes, with `TCP_NODELAY` and a short
    /// sleep after some pieces so they really arrive apart, come back echoed exactly once
    /// each, in order.
    #[test]
    fn lines_in_random_pieces_are_echoed_once_each_in_order(
        lines in random_lines(),
        pieces in prop::collection::vec((1usize..=64, 0..4u8), 1..32),
    ) {
        let server = server();
        let mut peer = connect(&server);
        let mut wire = Vec::new();
        let mut back = Vec::new();
        for (line, crlf) in &lines {
            wire.extend_from_slice(line);
            wire.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            // A line's own last `\r` is dropped too when `\n` follows it directly.
            let end = if *crlf { line.as_slice() } else { line.strip_suffix(b"\r").unwrap_or(line) };
            back.push(end.to_vec());
        }
        let want = echoes(&back);
        let mut rest = wire.as_slice();
        for (size, pause) in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            peer.send(piece);
            rest = tail;
            if *pause == 0 {
                std::thread::sleep(MS);
            }
        }
        let got = read_n(&mut peer, want.len());
        assert_same_bytes(&got, &want);
        assert_nothing_more(&mut peer, 20 * MS);
        drop(peer);
        let stats = server.stop();
        prop_assert_eq!(stats.lines_echoed, lines.len() as u64);
    }
}
