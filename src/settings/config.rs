//! `configuration.json`: reading it, checking every key, and the value syntaxes shared with
//! the command line (durations, ports, sizes).
//!
//! Owns the file format and its errors. It does not know about flags or prompts (`cli` merges
//! those over what this returns) and it opens no socket.
//!
//! The format is the original program's, ports as strings or numbers:
//!
//! ```json
//! { "server": { "host": "127.0.0.1", "port": "8000",
//!               "interval": "10s", "count": 3, "idle": "30s" },
//!   "client": { "host": "127.0.0.1", "port": "0" } }
//! ```
//!
//! Every key is optional; an unknown key is an error, so a typo is never silently ignored, and
//! so is a key given twice (plain JSON parsing would keep the last one silently). The file is
//! read up to [`MAX_FILE_BYTES`]: an endless one (`/dev/zero`) is an error, not a hang.

use std::cell::RefCell;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The file looked for in the current directory when `--config` is not given.
pub const DEFAULT_FILE: &str = "configuration.json";

/// The largest configuration file read. The real one is a few hundred bytes; this only stops
/// an endless file (`/dev/zero`, a device) from being read whole.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// What `configuration.json` said. `None` means "not in the file".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub server: ServerSection,
    pub client: ClientSection,
}

/// The `server` object: where the server listens (and the client connects), and the
/// heartbeat schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<Duration>,
    pub count: Option<u32>,
    pub idle: Option<Duration>,
}

/// The `client` object: the client's own local address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSection {
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// A configuration file that could not be used. Each message names the file, and the key
/// where there is one, so the person reading it knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A FIFO, a device, a directory: reading it could wait forever or never end.
    #[error("{}: {kind}, not a configuration file", .path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    /// The file is not valid JSON, or not a JSON object.
    #[error("{}: {message}", .path.display())]
    Syntax { path: PathBuf, message: String },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{}: larger than {} KiB: not a configuration file", .path.display(), MAX_FILE_BYTES / 1024)]
    TooLarge { path: PathBuf },
    /// A setting, from a flag or the file, has a value the program cannot run with.
    #[error("{setting}: {message}")]
    Invalid { setting: String, message: String },
    /// A key is unknown or its value is unusable.
    #[error("{}: key \"{}\": {message}", .path.display(), one_line(.key))]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Keys come from the file: control characters escaped, so that an error stays on one line.
fn one_line(key: &str) -> String {
    let mut shown = String::with_capacity(key.len());
    for c in key.chars() {
        match c.is_control() {
            true => shown.extend(c.escape_default()),
            false => shown.push(c),
        }
    }
    shown
}

/// Finds and reads the configuration: the file named with `--config` (which must exist),
/// else `configuration.json` in the current directory if there is one, else the built-in
/// defaults. Returns the configuration and the file it came from.
pub fn load(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_FILE);
            if !default.exists() {
                return Ok((FileConfig::default(), None));
            }
            default
        }
    };
    let text = read_capped(&path)?;
    let config = parse(&path, &text)?;
    Ok((config, Some(path)))
}

/// Reads at most [`MAX_FILE_BYTES`] (and one more byte, to tell a file of exactly that size
/// from a larger one).
fn read_capped(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Opened without waiting (a FIFO's open waits for a writer), then refused unless it is a
    // regular file: a FIFO or a terminal would make both binaries wait forever, silently.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let kind = file.metadata().map_err(read_error)?.file_type();
    if !kind.is_file() {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
            kind: file_kind(kind),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: format!(
            "not UTF-8 text (a bad byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// What a file that is not a regular file is, for the error.
fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if kind.is_dir() => "a directory",
        _ if kind.is_fifo() => "a FIFO",
        _ if kind.is_socket() => "a socket",
        _ if kind.is_char_device() => "a character device",
        _ if kind.is_block_device() => "a block device",
        _ => "not a regular file",
    }
}

/// Parses the text of a configuration file; `path` is used only in error messages.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let root = parse_json(text).map_err(|e| match e {
        JsonError::Syntax(e) => ConfigError::Syntax {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        },
        JsonError::Duplicate(key) => ConfigError::Key {
            path: path.to_path_buf(),
            key,
            message: "given more than once (which one was meant?)".into(),
        },
    })?;
    let Value::Object(root) = root else {
        return Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            message: "expected a JSON object with \"server\" and \"client\" keys".into(),
        });
    };
    let key_error = |key: &str, message: String| ConfigError::Key {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let mut config = FileConfig::default();
    for (name, value) in &root {
        let section = as_object(value).map_err(|m| key_error(name, m))?;
        match name.as_str() {
            "server" => {
                config.server = server_section(section).map_err(|(k, m)| key_error(&k, m))?
            }
            "client" => {
                config.client = client_section(section).map_err(|(k, m)| key_error(&k, m))?
            }
            _ => {
                return Err(key_error(
                    name,
                    "unknown key (expected \"server\" or \"client\")".into(),
                ))
            }
        }
    }
    Ok(config)
}

enum JsonError {
    Syntax(serde_json::Error),
    /// An object names this key twice; the path from the root, dotted (`server.port`).
    Duplicate(String),
}

/// JSON text to a [`Value`], refusing an object that names a key twice.
fn parse_json(text: &str) -> Result<Value, JsonError> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = UniqueKeys {
        path: String::new(),
        duplicate: &duplicate,
    };
    let result = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match (result, duplicate.into_inner()) {
        (_, Some(key)) => Err(JsonError::Duplicate(key)),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(JsonError::Syntax(e)),
    }
}

/// Builds a [`Value`] like serde_json's own, but stops at the first key an object names
/// twice, recording its path in `duplicate` (serde_json's maps keep the last silently).
struct UniqueKeys<'a> {
    path: String,
    duplicate: &'a RefCell<Option<String>>,
}

impl UniqueKeys<'_> {
    fn child(&self, name: &str) -> Self {
        let path = match self.path.is_empty() {
            true => name.to_string(),
            false => format!("{}.{name}", self.path),
        };
        UniqueKeys {
            path,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element_seed(self.child(&format!("[{}]", values.len())))? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = self.child(&key);
            if object.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(child.path);
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(child)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

type KeyResult<T> = Result<T, (String, String)>;

fn server_section(object: &Map<String, Value>) -> KeyResult<ServerSection> {
    let mut section = ServerSection::default();
    for (key, value) in object {
        let full = format!("server.{key}");
        let at = |message: String| (full.clone(), message);
        match key.as_str() {
            "host" => section.host = Some(as_string(value).map_err(at)?),
            "port" => section.port = Some(parse_port(&scalar(value).map_err(at)?).map_err(at)?),
            "interval" => {
                section.interval = Some(parse_duration(&scalar(value).map_err(at)?).map_err(at)?)
            }
            "idle" => section.idle = Some(parse_duration(&scalar(value).map_err(at)?).map_err(at)?),
            "count" => section.count = Some(parse_count(&scalar(value).map_err(at)?).map_err(at)?),
            _ => {
                return Err(at(
                    "unknown key (expected host, port, interval, count or idle)".into(),
                ))
            }
        }
    }
    Ok(section)
}

fn client_section(object: &Map<String, Value>) -> KeyResult<ClientSection> {
    let mut section = ClientSection::default();
    for (key, value) in object {
        let full = format!("client.{key}");
        let at = |message: String| (full.clone(), message);
        match key.as_str() {
            "host" => section.host = Some(as_string(value).map_err(at)?),
            "port" => section.port = Some(parse_port(&scalar(value).map_err(at)?).map_err(at)?),
            _ => return Err(at("unknown key (expected host or port)".into())),
        }
    }
    Ok(section)
}

fn as_object(value: &Value) -> Result<&Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("expected an object, got {value}"))
}

fn as_string(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a string, got {value}"))
}

/// A string or a number, as text: the original wrote ports as strings, people write numbers.
fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("expected a string or a number, got {other}")),
    }
}

/// A TCP port, 0 to 65535 (0: any free port).
pub fn parse_port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a port number (0 to 65535)"))
}

/// A heartbeat count: a whole number, at least 1 (with none, a silent peer would be closed
/// without ever being asked).
pub fn parse_count(text: &str) -> Result<u32, String> {
    match text.trim().parse() {
        Ok(0) => Err("must be at least 1: a silent peer is asked at least once".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// A duration: `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds (`30`, `0.5`);
/// `us`/`µs` too, so that whatever [`format_duration`] prints reads back.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (examples: 500ms, 5s, 2m, or 30 for seconds)");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let nanos_per_unit: u64 = match unit.trim() {
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(bad()),
    };
    if number.is_empty() {
        return Err(bad());
    }
    // Whole numbers are computed exactly; only fractions go through floating point.
    if let Ok(whole) = number.parse::<u64>() {
        let nanos = u128::from(whole) * u128::from(nanos_per_unit);
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
        return Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32));
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * nanos_per_unit as f64 / 1e9).map_err(|_| bad())
}

/// A size in bytes: `65536`, `64KiB`, `1MiB` (also `k`/`KB`/`M`/`MB`, meaning powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let bad = || format!("{text:?} is not a size in bytes (examples: 65536, 64KiB, 1MiB)");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let value: usize = number.parse().map_err(|_| bad())?;
    value.checked_mul(scale).ok_or_else(bad)
}

/// Durations a person reads are all written one way (see [`crate::cores::vocab`]).
pub use crate::cores::vocab::format_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<FileConfig, ConfigError> {
        parse(Path::new("configuration.json"), text)
    }

    #[test]
    fn the_originals_file_with_string_ports_loads() {
        let text = r#"{
            "server" : { "host" : "192.0.2.81", "port" : "8000" },
            "client" : { "host" : "192.0.2.82", "port" : "8000" }
        }"#;
        let config = parse_str(text).expect("loads");
        assert_eq!(config.server.host.as_deref(), Some("192.0.2.81"));
        assert_eq!(config.server.port, Some(8000));
        assert_eq!(config.client.host.as_deref(), Some("192.0.2.82"));
        assert_eq!(config.client.port, Some(8000));
        assert_eq!(config.server.interval, None);
    }

    #[test]
    fn numeric_ports_and_timing_keys_load() {
        let text =
            r#"{ "server": { "port": 9000, "interval": "500ms", "count": "4", "idle": 3 } }"#;
        let config = parse_str(text).expect("loads");
        assert_eq!(config.server.port, Some(9000));
        assert_eq!(config.server.interval, Some(Duration::from_millis(500)));
        assert_eq!(config.server.count, Some(4));
        assert_eq!(config.server.idle, Some(Duration::from_secs(3)));
        assert_eq!(config.client, ClientSection::default());
    }

    #[test]
    fn unknown_key_names_the_file_and_the_key() {
        let err = parse_str(r#"{ "server": { "prot": "8000" } }"#).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("configuration.json: key \"server.prot\": unknown key"),
            "{text}"
        );
        let err = parse_str(r#"{ "servers": {} }"#).unwrap_err();
        assert!(err.to_string().contains("key \"servers\""), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key_and_the_value() {
        let err = parse_str(r#"{ "server": { "idle": "soon" } }"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("key \"server.idle\""), "{text}");
        assert!(text.contains("\"soon\" is not a duration"), "{text}");
    }

    #[test]
    fn errors_stay_on_one_line_whatever_the_file_holds() {
        let err = parse_str("{ \"server\": { \"a\\nb\": 1, \"port\": \"8\\n0\" } }").unwrap_err();
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
        let err = parse_str("{ \"server\": { \"port\": \"8\\n0\" } }").unwrap_err();
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }

    #[test]
    fn bad_port_and_bad_json_are_errors() {
        let err = parse_str(r#"{ "server": { "port": "80000" } }"#).unwrap_err();
        assert!(err.to_string().contains("server.port"), "{err}");
        let err = parse_str(r#"{ "server": { "port": true } }"#).unwrap_err();
        assert!(err.to_string().contains("server.port"), "{err}");
        let err = parse_str(r#"{ "server": "#).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = parse_str("[1, 2]").unwrap_err();
        assert!(err.to_string().contains("expected a JSON object"), "{err}");
    }

    #[test]
    fn a_key_given_twice_is_an_error_naming_it() {
        let err = parse_str(r#"{"server":{"port":"0"},"server":{"port":"1"}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration.json: key \"server\": given more than once (which one was meant?)"
        );
        let err = parse_str(r#"{"server":{"port":"0","host":"::1","port":"1"}}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("configuration.json: key \"server.port\": given more than once"),
            "{err}"
        );
        let err = parse_str(r#"{"client":{"x":{"a":1,"a":2}}}"#).unwrap_err();
        assert!(err.to_string().contains("key \"client.x.a\""), "{err}");
        // The same key in different objects is fine.
        let ok = parse_str(r#"{"server":{"port":"1"},"client":{"port":"2"}}"#).unwrap();
        assert_eq!((ok.server.port, ok.client.port), (Some(1), Some(2)));
    }

    #[test]
    fn values_read_as_plain_json_reads_them() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":[]}],"c":18446744073709551615}"#;
        let plain: Value = serde_json::from_str(text).unwrap();
        assert!(matches!(parse_json(text), Ok(v) if v == plain));
        assert!(matches!(parse_json("{} x"), Err(JsonError::Syntax(_))));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            matches!(parse_json(&deep), Err(JsonError::Syntax(_))),
            "depth is limited"
        );
    }

    #[test]
    fn an_endless_or_huge_file_is_refused_after_the_cap() {
        // An endless device is refused before a byte is read (issue 21: not a regular file).
        let err = load(Some(Path::new("/dev/zero"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero: a character device, not a configuration file"
        );
        let dir = tempfile::tempdir().unwrap();
        let exact = dir.path().join("exact.json");
        let mut text = b"{}".to_vec();
        text.resize(MAX_FILE_BYTES as usize, b' ');
        std::fs::write(&exact, &text).unwrap();
        assert!(load(Some(&exact)).is_ok(), "exactly the cap is read");
        text.push(b' ');
        std::fs::write(&exact, &text).unwrap();
        assert!(matches!(
            load(Some(&exact)),
            Err(ConfigError::TooLarge { .. })
        ));
        std::fs::write(&exact, b"{\"server\": \"\xff\"}").unwrap();
        let err = load(Some(&exact)).unwrap_err();
        assert!(err.to_string().contains("not UTF-8 text"), "{err}");
    }

    /// Issue 21: a FIFO used to block the binaries forever with no output; it is refused at
    /// once, without waiting for a writer, and so is a directory.
    #[test]
    fn a_fifo_or_a_directory_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let err = load(Some(&fifo)).unwrap_err().to_string();
        assert!(
            err.ends_with("config.fifo: a FIFO, not a configuration file"),
            "{err}"
        );
        let err = load(Some(dir.path())).unwrap_err().to_string();
        assert!(
            err.ends_with(": a directory, not a configuration file"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn durations_take_hours_microseconds_and_fractions() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(
            parse_count("0").unwrap_err(),
            "must be at least 1: a silent peer is asked at least once"
        );
        assert_eq!(parse_count("3"), Ok(3));
    }

    #[test]
    fn errors_keep_their_cause_as_source() {
        use std::error::Error;
        let err = load(Some(Path::new("/nonexistent/heartbeat.json"))).unwrap_err();
        assert!(err.source().is_some(), "the I/O error underneath: {err:?}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_naming_it() {
        let err = load(Some(Path::new("/nonexistent/heartbeat.json"))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/heartbeat.json: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("5s"), Ok(ms(5000)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("30"), Ok(ms(30_000)));
        assert_eq!(parse_duration("0"), Ok(ms(0)));
        assert_eq!(parse_duration("0.25"), Ok(ms(250)));
        assert_eq!(parse_duration(" 7 s "), Ok(ms(7000)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(
            parse_duration("10000000004ms"),
            Ok(Duration::from_millis(10_000_000_004)),
            "whole numbers are exact"
        );
        assert_eq!(
            parse_duration(&format_duration(Duration::from_micros(500))),
            Ok(Duration::from_micros(500))
        );
        for bad in ["", "s", "-1", "5x", "1..2", "ms5", "1e9999"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durations_format_as_they_are_written() {
        let ms = Duration::from_millis;
        assert_eq!(format_duration(ms(10_000)), "10s");
        assert_eq!(format_duration(ms(120_000)), "2m");
        assert_eq!(format_duration(ms(250)), "250ms");
        assert_eq!(format_duration(ms(1500)), "1.5s");
        assert_eq!(format_duration(ms(0)), "0s");
        assert_eq!(format_duration(Duration::from_micros(500)), "500µs");
    }
}
