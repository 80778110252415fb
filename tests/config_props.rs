//! Property tests for the configuration loader and the line decoder, with the same checks as
//! the fuzz targets in `fuzz/` (whose `src/lib.rs` is included below), so `cargo test` on the
//! stable toolchain runs them: any text into `config::parse` never panics and what it accepts
//! is what the text says; generated valid files load to the expected values; an unknown key
//! is an error naming the file and the key; arbitrary raw bytes in arbitrary reads are framed
//! exactly as the protocol says.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)] // check_proxy is run by tests/proxy_props.rs
mod fuzz_checks;

use std::path::Path;
use std::time::Duration;

use fuzz_checks::{check_config, check_decoder, check_values, expected_frames, Got};
use heartbeat::settings::config::{self, ClientSection, FileConfig, ServerSection};
use proptest::prelude::*;

const SERVER_KEYS: [&str; 5] = ["host", "port", "interval", "count", "idle"];
const CLIENT_KEYS: [&str; 2] = ["host", "port"];

/// A port as the file may spell it: a number, a string, a string with spaces.
fn port() -> impl Strategy<Value = (String, u16)> {
    (any::<u16>(), 0..3u8).prop_map(|(n, form)| {
        let json = match form {
            0 => n.to_string(),
            1 => format!("\"{n}\""),
            _ => format!("\" {n} \""),
        };
        (json, n)
    })
}

/// A duration as the file may spell it: `"Nms"`, `"Ns"`, `"Nm"`, `"N"`, or a bare number.
fn duration() -> impl Strategy<Value = (String, Duration)> {
    prop_oneof![
        (0u64..=10_000_000).prop_map(|n| (format!("\"{n}ms\""), Duration::from_millis(n))),
        (0u64..=1_000_000).prop_map(|n| (format!("\"{n}s\""), Duration::from_secs(n))),
        (0u64..=100_000).prop_map(|n| (format!("\"{n}m\""), Duration::from_secs(60 * n))),
        (0u64..=1_000_000).prop_map(|n| (format!("\"{n}\""), Duration::from_secs(n))),
        (0u64..=1_000_000).prop_map(|n| (n.to_string(), Duration::from_secs(n))),
    ]
}

/// A heartbeat count as a number or a string.
fn count() -> impl Strategy<Value = (String, u32)> {
    (any::<u32>(), any::<bool>()).prop_map(|(n, quoted)| {
        let json = if quoted {
            format!("\"{n}\"")
        } else {
            n.to_string()
        };
        (json, n)
    })
}

/// Any host text (quotes, backslashes, control characters, any Unicode), JSON-escaped.
fn host() -> impl Strategy<Value = (String, String)> {
    any::<String>().prop_map(|h| (serde_json::to_string(&h).expect("a string"), h))
}

/// An object's members, in a random order; `None` members are left out.
fn object(members: Vec<(&str, Option<String>)>) -> impl Strategy<Value = String> {
    let present: Vec<String> = members
        .into_iter()
        .filter_map(|(key, json)| json.map(|json| format!("\"{key}\": {json}")))
        .collect();
    (Just(present).prop_shuffle(), any::<bool>()).prop_map(|(members, pretty)| {
        let sep = if pretty { ",\n    " } else { "," };
        format!("{{{}}}", members.join(sep))
    })
}

/// A valid configuration file and what it must load to. Every key and section is optional.
fn valid_config() -> impl Strategy<Value = (String, FileConfig)> {
    let server = (
        proptest::option::of(host()),
        proptest::option::of(port()),
        proptest::option::of(duration()),
        proptest::option::of(count()),
        proptest::option::of(duration()),
    );
    let client = (proptest::option::of(host()), proptest::option::of(port()));
    (server, client, any::<(bool, bool)>()).prop_flat_map(
        |((host, port, interval, count, idle), (chost, cport), sections)| {
            let want = FileConfig {
                server: ServerSection {
                    host: host.as_ref().map(|h| h.1.clone()),
                    port: port.as_ref().map(|p| p.1),
                    interval: interval.as_ref().map(|d| d.1),
                    count: count.as_ref().map(|c| c.1),
                    idle: idle.as_ref().map(|d| d.1),
                },
                client: ClientSection {
                    host: chost.as_ref().map(|h| h.1.clone()),
                    port: cport.as_ref().map(|p| p.1),
                },
            };
            let server = object(vec![
                ("host", host.map(|h| h.0)),
                ("port", port.map(|p| p.0)),
                ("interval", interval.map(|d| d.0)),
                ("count", count.map(|c| c.0)),
                ("idle", idle.map(|d| d.0)),
            ]);
            let client = object(vec![
                ("host", chost.map(|h| h.0)),
                ("port", cport.map(|p| p.0)),
            ]);
            // A section with no keys may also be left out altogether.
            let (keep_server, keep_client) = sections;
            let keep_server = keep_server || want.server != ServerSection::default();
            let keep_client = keep_client || want.client != ClientSection::default();
            (server, client).prop_flat_map(move |(server, client)| {
                let mut sections = Vec::new();
                if keep_server {
                    sections.push(format!("\"server\": {server}"));
                }
                if keep_client {
                    sections.push(format!("\"client\": {client}"));
                }
                let want = want.clone();
                Just(sections)
                    .prop_shuffle()
                    .prop_map(move |s| (format!("{{ {} }}\n", s.join(",\n")), want.clone()))
            })
        },
    )
}

/// Any JSON value, with object keys mostly from the configuration's own vocabulary, so that
/// many values get past the syntax check and into the key-by-key checks.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let key = prop_oneof![
        3 => proptest::sample::select(vec![
            "server", "client", "host", "port", "interval", "count", "idle",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ];
    let text = prop_oneof![
        "[0-9]{0,6}(\\.[0-9]{0,3})?(ms|s|m|h| s|)",
        " ?[0-9]{1,6} ?",
        any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u32..100_000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A byte weighted towards the ones framing cares about: `\n`, `\r`, NUL, 0xFF.
fn framing_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(b'\n'),
        3 => Just(b'\r'),
        1 => Just(0u8),
        1 => Just(0xFFu8),
        1 => Just(0xFEu8),
        6 => any::<u8>(),
    ]
}

/// Up to `max_len` such bytes.
fn raw_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(framing_byte(), 0..max_len)
}

/// Runs of one byte, up to `max_run` long each: long lines without a newline, cheaply.
fn byte_runs(max_run: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((framing_byte(), 1..=max_run), 0..24).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(byte, n)| std::iter::repeat_n(byte, n))
            .collect()
    })
}

/// The error `text` gives as a file named `path`, as a person sees it.
fn error_of(path: &Path, text: &str) -> String {
    match config::parse(path, text) {
        Ok(loaded) => panic!("loaded {loaded:?} from {text}"),
        Err(e) => e.to_string(),
    }
}

proptest! {
    /// Any text at all, as a configuration file: no panic, and every check of the fuzz
    /// target holds (deterministic, file named in errors, only what the text says accepted).
    #[test]
    fn any_text_never_panics_the_loader(text in any::<String>()) {
        check_config(&text);
        check_values(&text);
    }

    /// Any JSON document, with keys mostly from the configuration's vocabulary.
    #[test]
    fn any_json_never_panics_the_loader(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).expect("serialises")
        } else {
            value.to_string()
        };
        check_config(&text);
    }

    /// A valid file with one character changed, cut short, or a byte spliced in: whatever
    /// the loader says, it says it without panicking and only accepts what the text says.
    #[test]
    fn damaged_valid_files_never_panic_the_loader(
        (text, _) in valid_config(),
        at in any::<prop::sample::Index>(),
        insert in any::<char>(),
        how in 0..3u8,
    ) {
        let chars: Vec<char> = text.chars().collect();
        let i = at.index(chars.len() + 1);
        let damaged: String = match how {
            0 => chars[..i].iter().collect(),
            1 => chars[..i].iter().chain([insert].iter()).chain(&chars[i..]).collect(),
            _ => chars.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| c).collect(),
        };
        check_config(&damaged);
    }

    /// Durations, sizes, ports and counts: any text, never a panic.
    #[test]
    fn value_parsers_never_panic(
        text in prop_oneof![
            any::<String>(),
            "[ 0-9.+-]{0,24}(ms|s|m|h|us|µs|KiB|MiB|GiB|k|M|G|b|e9|)[ ]?",
        ],
    ) {
        check_values(&text);
    }

    /// Generated valid files, every key optional, ports and counts as strings or numbers,
    /// durations as `Nms`, `Ns`, `Nm` or a bare number, load to exactly the values written.
    #[test]
    fn valid_files_load_to_the_values_written((text, want) in valid_config()) {
        let loaded = config::parse(Path::new("configuration.json"), &text);
        prop_assert!(loaded.is_ok(), "{} rejected: {}", text, loaded.unwrap_err());
        prop_assert_eq!(loaded.unwrap(), want);
        check_config(&text);
    }

    /// An unknown key anywhere in an otherwise valid file is an error that names the file
    /// and the key's full path (`server.<key>`, `client.<key>`, or `<key>` at the top).
    #[test]
    fn an_unknown_key_is_an_error_naming_the_file_and_the_key(
        (text, _) in valid_config(),
        key in any::<String>(),
        place in 0..3u8,
        value in prop_oneof![Just("{}"), Just("\"8000\""), Just("1"), Just("null")],
        name in "[a-z][a-z0-9_-]{0,10}(/[a-z0-9]{1,6}){0,2}\\.json",
    ) {
        let (section, known): (&str, &[&str]) = match place {
            0 => ("server", &SERVER_KEYS),
            1 => ("client", &CLIENT_KEYS),
            _ => ("", &["server", "client"]),
        };
        prop_assume!(!known.contains(&key.as_str()));
        // Control characters are shown escaped (one line per error): config's own tests.
        prop_assume!(!key.chars().any(char::is_control));
        let mut root: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let value: serde_json::Value = serde_json::from_str(value).expect("valid JSON");
        let root_map = root.as_object_mut().expect("an object");
        let path_of_key = if section.is_empty() {
            root_map.insert(key.clone(), value.clone());
            key.clone()
        } else {
            let target = root_map
                .entry(section)
                .or_insert_with(|| serde_json::json!({}));
            target.as_object_mut().expect("a section").insert(key.clone(), value.clone());
            format!("{section}.{key}")
        };
        let path = Path::new(&name);
        let message = error_of(path, &root.to_string());
        prop_assert!(message.starts_with(&format!("{name}: ")), "{}", message);
        prop_assert!(message.contains(&format!("key \"{path_of_key}\"")), "{}", message);
        if !section.is_empty() || value.is_object() {
            prop_assert!(message.contains("unknown key"), "{}", message);
        }
    }

    /// `Nms` is exactly N milliseconds, for every N up to 10^9 (11.5 days).
    #[test]
    fn milliseconds_parse_exactly(n in 0u64..=1_000_000_000) {
        prop_assert_eq!(config::parse_duration(&format!("{n}ms")), Ok(Duration::from_millis(n)));
        prop_assert_eq!(config::parse_duration(&format!(" {n} ms ")), Ok(Duration::from_millis(n)));
    }

    /// Arbitrary raw bytes (weighted to `\n`, `\r`, NUL, 0xFF) in arbitrary reads, empty
    /// reads included, with a small limit: framed exactly as the protocol says after every
    /// read (the decoder fuzz target's checks).
    #[test]
    fn raw_bytes_in_any_reads_are_framed_as_the_protocol_says(
        bytes in raw_bytes(300),
        cuts in prop::collection::vec(0usize..=48, 0..40),
        max_line in 0usize..=40,
    ) {
        check_decoder(max_line, &cuts, &bytes);
    }

    /// Long runs of one byte, so lines run past small and default limits alike.
    #[test]
    fn long_runs_in_any_reads_are_framed_as_the_protocol_says(
        bytes in byte_runs(400),
        cuts in prop::collection::vec(0usize..=700, 0..8),
        max_line in prop_oneof![0usize..=64, 300usize..=500, Just(heartbeat::cores::protocol::DEFAULT_MAX_LINE)],
    ) {
        check_decoder(max_line, &cuts, &bytes);
    }
}

/// The reference the decoder checks compare against says what the protocol says, on a case
/// worked by hand, so the property tests above cannot pass against a wrong model.
#[test]
fn the_reference_framing_is_the_protocols() {
    let line = |b: &[u8]| Got::Line(b.to_vec());
    let (frames, held, at_rest) = expected_frames(4, b"ab\r\n\r\nabcde\n\xff\0\r\r\nabcd\r\nxy");
    assert_eq!(
        frames,
        [
            line(b"ab"),
            line(b""),
            Got::TooLong,
            line(b"\xff\0\r"),
            Got::TooLong,
        ]
    );
    assert_eq!((held, at_rest), (2, false));
    assert_eq!(expected_frames(2, b"abc"), (vec![Got::TooLong], 0, false));
    assert_eq!(expected_frames(2, b"a\n"), (vec![line(b"a")], 0, true));
    assert_eq!(expected_frames(0, b""), (vec![], 0, true));
}

/// Every byte value, cut into two reads at every point and into one-byte reads, with limits
/// just under, at and over the line's length.
#[test]
fn every_byte_value_split_at_every_point() {
    let mut input: Vec<u8> = (0..=255u8).filter(|&b| b != b'\n').collect();
    input.extend_from_slice(b"\n\r\n\r\r\n\0\n\xff\xfe\n");
    for max_line in [0, 1, 254, 255, 256] {
        check_decoder(max_line, &vec![1; input.len()], &input);
        for cut in 0..=input.len() {
            check_decoder(max_line, &[cut], &input);
        }
    }
}
