//! The invariants the fuzz targets check, as plain functions that panic when one breaks.
//!
//! Shared by both ways of running them: the cargo-fuzz targets in `fuzz_targets/` call them
//! with libFuzzer's inputs, and `tests/config_props.rs` includes this file (`#[path]`) and
//! calls them with proptest's, so `cargo test` on the stable toolchain runs the same checks.
//! Only `heartbeat` and `serde_json` are used, both of which the main crate's tests have.

use std::path::Path;

use heartbeat::cores::protocol::{Frame, LineDecoder};
use heartbeat::cores::proxy::{self, Parsed};
use heartbeat::settings::config::{self, FileConfig};
use serde_json::{Map, Value};

/// An owned [`Frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Line(Vec<u8>),
    TooLong,
}

/// What a decoder must have yielded after reading `input` from the start of a connection,
/// written the slow way from the protocol's rules: every `\n`-terminated piece is a line
/// (one `\r` before the `\n` dropped) unless it is over `max_line` bytes (its `\r`
/// counted), which is one `TooLong`; an unterminated tail over the limit is one `TooLong`
/// already, one within it is held. Returns the frames, the bytes held, and whether the
/// decoder is back at the start of a line.
pub fn expected_frames(max_line: usize, input: &[u8]) -> (Vec<Got>, usize, bool) {
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = pieces.pop().unwrap_or_default();
    let mut frames: Vec<Got> = pieces
        .into_iter()
        .map(|raw| {
            if raw.len() > max_line {
                Got::TooLong
            } else {
                Got::Line(raw.strip_suffix(b"\r").unwrap_or(raw).to_vec())
            }
        })
        .collect();
    let held = if tail.len() > max_line {
        frames.push(Got::TooLong);
        0
    } else {
        tail.len()
    };
    (frames, held, tail.is_empty())
}

/// Feeds `input` to a fresh decoder in reads whose sizes are taken from `cuts` in turn (a
/// zero is an empty read), the rest in one last read. After every read: nothing yielded
/// has a `\n` or is over the limit, no more than `max_line` bytes are held, and everything
/// yielded so far is exactly what [`expected_frames`] says for the bytes read so far (so
/// a line is yielded once, in order, as soon as its `\n` arrives, and `TooLong` as soon as
/// the limit is crossed).
pub fn check_decoder(max_line: usize, cuts: &[usize], input: &[u8]) {
    let mut decoder = LineDecoder::new();
    let mut got = Vec::new();
    let mut rest = input;
    let mut sizes = cuts.iter().copied();
    loop {
        let size = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        decoder.feed(max_line, chunk, |frame| {
            got.push(match frame {
                Frame::Line(line) => {
                    assert!(!line.contains(&b'\n'), "a line holds a newline: {line:?}");
                    assert!(line.len() <= max_line, "{} > {max_line}", line.len());
                    Got::Line(line.to_vec())
                }
                Frame::TooLong => Got::TooLong,
            })
        });
        assert!(decoder.pending() <= max_line, "held {}", decoder.pending());
        assert_eq!(
            decoder.is_unallocated(),
            decoder.pending() == 0,
            "a buffer exactly while bytes are held"
        );
        let read = input.len() - rest.len();
        let (want, held, at_rest) = expected_frames(max_line, &input[..read]);
        assert_eq!(got, want, "after {read} of {} bytes", input.len());
        assert_eq!(decoder.pending(), held, "held after {read} bytes");
        assert_eq!(decoder.is_at_rest(), at_rest, "at rest after {read} bytes");
        if rest.is_empty() {
            break;
        }
    }
    if !got.contains(&Got::TooLong) {
        // Nothing dropped: the lines, each with the `\n` it was cut at, are the input up to
        // its last `\n`, less one `\r` per line where a `\r\n` ended it.
        let complete = input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let crlf = input[..complete]
            .windows(2)
            .filter(|pair| pair == b"\r\n")
            .count();
        let total: usize = got
            .iter()
            .map(|g| match g {
                Got::Line(line) => line.len() + 1,
                Got::TooLong => unreachable!(),
            })
            .sum();
        assert_eq!(total + crlf, complete, "bytes in lines");
    }
}

/// `config::parse` on any text: never panics, gives the same answer twice, names the file
/// in every error, and what it accepts is what the text says, key by key.
pub fn check_config(text: &str) {
    let path = Path::new("fuzz.json");
    match (config::parse(path, text), config::parse(path, text)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "same text, same configuration");
            check_accepted(text, &a);
        }
        (Err(a), Err(b)) => {
            let message = a.to_string();
            assert_eq!(message, b.to_string(), "same text, same error");
            assert!(message.starts_with("fuzz.json: "), "{message}");
        }
        (a, b) => panic!("same text, different answers: {a:?} then {b:?}"),
    }
}

/// The value parsers on any text never panic, and what they accept is sane.
pub fn check_values(text: &str) {
    if let Ok(d) = config::parse_duration(text) {
        // A whole number of seconds is read exactly.
        if let Ok(secs) = text.trim().parse::<u32>() {
            assert_eq!(d, std::time::Duration::from_secs(secs.into()), "{text:?}");
        }
    }
    if let Ok(size) = config::parse_size(text) {
        if let Ok(n) = text.trim().parse::<usize>() {
            assert_eq!(size, n, "{text:?}");
        }
    }
    if let Ok(port) = config::parse_port(text) {
        assert_eq!(text.trim().parse::<u16>().ok(), Some(port), "{text:?}");
    }
    let _ = config::parse_count(text);
}

/// `text` was accepted as `config`: it is a JSON object with only `server` and `client`,
/// each an object of known keys, and every field is set exactly when its key is there, to
/// what its value says.
fn check_accepted(text: &str, config: &FileConfig) {
    let root: Value = serde_json::from_str(text).expect("accepted text is JSON");
    let root = root.as_object().expect("accepted text is an object");
    let empty = Map::new();
    let section = |name: &str| match root.get(name) {
        Some(value) => value.as_object().expect("a section is an object"),
        None => &empty,
    };
    for name in root.keys() {
        assert!(
            name == "server" || name == "client",
            "accepted key {name:?}"
        );
    }
    let (server, client) = (section("server"), section("client"));
    let known = ["host", "port", "interval", "count", "idle"];
    assert!(
        server.keys().all(|k| known.contains(&k.as_str())),
        "{server:?}"
    );
    assert!(
        client.keys().all(|k| known[..2].contains(&k.as_str())),
        "{client:?}"
    );

    let s = &config.server;
    assert_eq!(
        s.host.as_deref(),
        server.get("host").and_then(Value::as_str)
    );
    assert_eq!(s.port, scalar(server, "port").map(|t| port(&t)));
    assert_eq!(s.count, scalar(server, "count").map(|t| count(&t)));
    assert_eq!(s.interval, scalar(server, "interval").map(|t| duration(&t)));
    assert_eq!(s.idle, scalar(server, "idle").map(|t| duration(&t)));
    let c = &config.client;
    assert_eq!(
        c.host.as_deref(),
        client.get("host").and_then(Value::as_str)
    );
    assert_eq!(c.port, scalar(client, "port").map(|t| port(&t)));
}

/// A string or number value as text, the way the loader reads it.
fn scalar(section: &Map<String, Value>, key: &str) -> Option<String> {
    section.get(key).map(|value| match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("accepted {key} = {other}"),
    })
}

fn port(text: &str) -> u16 {
    let n: u16 = text.trim().parse().expect("accepted port is a number");
    assert_eq!(config::parse_port(text), Ok(n));
    n
}

fn count(text: &str) -> u32 {
    text.trim().parse().expect("accepted count is a number")
}

fn duration(text: &str) -> std::time::Duration {
    config::parse_duration(text).expect("accepted duration parses")
}

/// `proxy::parse` on any bytes never panics, and its answers agree with each other: a
/// complete header is at most the bytes given and at most `MAX_HEADER`, parses the same
/// from exactly its own bytes and with anything after it, and encodes back to a header that
/// parses to the same client; every shorter prefix is incomplete (asking for more than it
/// has) or, once invalid, fails the same way with more bytes; an error never turns into
/// success by adding bytes.
pub fn check_proxy(bytes: &[u8]) {
    let whole = proxy::parse(bytes);
    match whole {
        Ok(Parsed::Complete { header, len }) => {
            assert!(len <= bytes.len() && len <= proxy::MAX_HEADER, "{len}");
            assert_eq!(proxy::parse(&bytes[..len]), whole, "its own bytes");
            let encoded = proxy::encode(&header);
            match proxy::parse(&encoded) {
                Ok(Parsed::Complete { header: again, len }) => {
                    assert_eq!(again, header);
                    assert_eq!(len, encoded.len());
                }
                other => panic!("{header:?} encoded does not parse: {other:?}"),
            }
            for cut in 0..len {
                match proxy::parse(&bytes[..cut]) {
                    Ok(Parsed::Incomplete { need }) => assert!(need > cut, "{need} <= {cut}"),
                    other => panic!("prefix of {cut} of a header: {other:?}"),
                }
            }
        }
        Ok(Parsed::Incomplete { need }) => {
            assert!(need > bytes.len() && need <= proxy::MAX_HEADER, "{need}");
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            let mut more = bytes.to_vec();
            more.extend_from_slice(&[0u8; 64]);
            assert!(
                proxy::parse(&more).is_err(),
                "{error} then fine with more bytes"
            );
        }
    }
}
