//! README.md tells the truth about the binaries: every long flag either binary's `--help`
//! lists is in the README's flag tables with the default `--help` prints; the README's
//! `console` blocks run as written and print what they show; the `--json` summary's keys,
//! the metric names and their label values, and the log line's shape are the ones the
//! README shows; its links and the paths it names lead somewhere. Only the built binaries
//! are run, on 127.0.0.1 with free ports. The console blocks' runner is `docs/console.rs`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../README.md");
const SERVER: &str = env!("CARGO_BIN_EXE_heartbeat-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");
/// Only guards against a hang: every wait below ends as soon as what it waits for happens.
const HANG_GUARD: Duration = Duration::from_secs(60);

#[path = "docs/console.rs"]
mod console;

use console::masked;

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn help(binary: &str) -> String {
    let out = Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("runs --help");
    assert!(out.status.success(), "{binary} --help failed");
    String::from_utf8(out.stdout).expect("--help is UTF-8")
}

/// Every long flag `--help` lists (but `--help` and `--version`), with the text of its
/// `[default: …]` if it has one.
fn flags(help: &str) -> Vec<(String, Option<String>)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let flag = trimmed
            .strip_prefix("-h, ")
            .or_else(|| trimmed.strip_prefix("-V, "))
            .unwrap_or(trimmed);
        let indented = line.len() - trimmed.len();
        if flag.starts_with("--") && indented < 10 {
            let name = flag.split([' ', '=']).next().unwrap_or(flag).to_string();
            found.push((name, String::new()));
        } else if let Some((_, text)) = found.last_mut() {
            text.push(' ');
            text.push_str(trimmed);
        }
        if let Some((name, text)) = found.last_mut() {
            if flag.starts_with("--") && flag.starts_with(name.as_str()) {
                text.push_str(flag);
            }
        }
    }
    found
        .into_iter()
        .filter(|(name, _)| name != "--help" && name != "--version")
        .map(|(name, text)| {
            let default = text.find("[default: ").map(|start| {
                let rest = &text[start + "[default: ".len()..];
                rest[..rest.find(']').unwrap_or(rest.len())].to_string()
            });
            (name, default)
        })
        .collect()
}

/// The rows of the README table whose header row starts with `| {first_column} |`.
fn table(first_column: &str) -> Vec<&'static str> {
    let header = format!("| {first_column} |");
    let start = README
        .find(&header)
        .unwrap_or_else(|| panic!("README.md has no table headed {header}"));
    README[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect()
}

/// Text as compared: without backticks, whitespace runs as one space.
fn plain(text: &str) -> String {
    text.replace('`', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every flag of `binary --help` has a row in the README table `first_column`, and the
/// row's default column says the default `--help` prints.
fn check_flags_documented(binary: &str, first_column: &str) {
    let rows = table(first_column);
    let listed = flags(&help(binary));
    assert!(listed.len() > 10, "--help parsed: {listed:?}");
    let mut wrong = Vec::new();
    for (flag, default) in &listed {
        let quoted = format!("`{flag}`");
        let Some(row) = rows.iter().find(|row| {
            row.split('|')
                .nth(1)
                .is_some_and(|names| names.split(", ").any(|name| name.trim() == quoted))
        }) else {
            wrong.push(format!(
                "{flag}: no row in the table headed `{first_column}`"
            ));
            continue;
        };
        let shown = plain(row.split('|').nth(2).unwrap_or(""));
        if let Some(default) = default {
            if !shown.contains(&plain(default)) {
                wrong.push(format!(
                    "{flag}: --help's default is {default:?}, the README says {shown:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "README.md:\n{}", wrong.join("\n"));
}

/// Every flag of `heartbeat-server --help` is in the README's server table with its default.
#[test]
fn every_server_flag_is_documented_with_its_default() {
    check_flags_documented(SERVER, "server flag");
}

/// Every flag of `heartbeat-client --help` is in the README's client table with its default.
#[test]
fn every_client_flag_is_documented_with_its_default() {
    check_flags_documented(CLIENT, "client flag");
}

/// The flag parser finds what a person sees: a flag with its default on the next line, one
/// with none, and one whose default is on its own line after the description (so the two
/// tests above cannot pass by parsing nothing).
#[test]
fn the_help_parser_reads_flags_and_defaults() {
    let listed = flags(&help(SERVER));
    let get = |name: &str| {
        listed
            .iter()
            .find(|(flag, _)| flag == name)
            .unwrap_or_else(|| panic!("{name} in {listed:?}"))
            .1
            .clone()
    };
    assert_eq!(get("--interval").as_deref(), Some("10s"));
    assert_eq!(get("--tick").as_deref(), Some("500us"));
    assert_eq!(get("--log-level").as_deref(), Some("info"));
    assert_eq!(get("--log-file"), None);
    assert!(listed.iter().all(|(flag, _)| flag != "--help"));
}

/// The port in a `Listening on ADDR:PORT (...` line.
fn listening_port(line: &str) -> Option<String> {
    let address = line.strip_prefix("Listening on ")?.split(' ').next()?;
    Some(address.rsplit(':').next()?.to_string())
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().expect("polls the child") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server started with `args` on a free port; its first stdout line and the rest.
struct Server {
    child: Guard,
    stdout: BufReader<std::process::ChildStdout>,
    first: String,
}

impl Server {
    fn start(args: &[&str], stderr: Stdio) -> Server {
        let mut child = Guard(
            Command::new(SERVER)
                .args(["--no-prompt", "--port", "0"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .expect("starts the server"),
        );
        let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("a first line");
        assert!(first.starts_with("Listening on 127.0.0.1:"), "{first}");
        Server {
            child,
            stdout,
            first,
        }
    }

    fn port(&self) -> u16 {
        let port = listening_port(&self.first).expect("a port");
        port.parse().expect("a port number")
    }

    /// SIGTERM, then everything it printed after its first line.
    fn stop(mut self) -> String {
        let pid = self.child.0.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(killed.is_ok_and(|status| status.success()), "kill");
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("reads stdout");
        assert!(wait(&mut self.child.0).success());
        rest
    }
}

/// Every key of the server's `--json` summary, and of its latency rows, is named in the
/// README (as `key`).
#[test]
fn the_json_summary_keys_are_documented() {
    let server = Server::start(&["--json"], Stdio::null());
    let rest = server.stop();
    let last = rest.lines().last().expect("a JSON line");
    let summary: serde_json::Value = serde_json::from_str(last).expect("the summary is JSON");
    let object = summary.as_object().expect("an object");
    assert!(object.len() > 10, "{last}");
    let mut missing = Vec::new();
    for (key, value) in object {
        if !README.contains(&format!("`{key}`")) {
            missing.push(key.clone());
        }
        for inner in value.as_object().into_iter().flat_map(|row| row.keys()) {
            if !README.contains(&format!("`{inner}`")) {
                missing.push(format!("{key}.{inner}"));
            }
        }
    }
    assert!(missing.is_empty(), "not in README.md: {missing:?}\n{last}");
}

/// Every metric family a scrape returns, and every label value, is named in the README.
#[test]
fn every_metric_and_label_value_is_documented() {
    let server = Server::start(&["--metrics", "127.0.0.1:0"], Stdio::null());
    let address = server
        .first
        .split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {:?}", server.first))
        .to_string();
    let mut scrape = TcpStream::connect(&address).expect("connects to the metrics endpoint");
    scrape
        .set_read_timeout(Some(HANG_GUARD))
        .expect("sets a timeout");
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("sends the request");
    let mut text = String::new();
    scrape.read_to_string(&mut text).expect("reads the answer");
    let mut missing = Vec::new();
    let mut families = 0;
    for line in text.lines().filter(|line| line.starts_with("heartbeat_")) {
        let name = line.split(['{', ' ']).next().unwrap_or(line);
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|_| {
                text.contains(&format!(
                    "# TYPE {} histogram",
                    &name[..name.rfind('_').unwrap_or(0)]
                ))
            })
            .unwrap_or(name);
        families += 1;
        if !README.contains(&format!("`{family}")) {
            missing.push(family.to_string());
        }
        if let Some(labels) = line
            .split('{')
            .nth(1)
            .and_then(|rest| rest.split('}').next())
        {
            for pair in labels.split(',') {
                let (label, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value = value.trim_matches('"');
                if label != "le" && label != "version" && !README.contains(&format!("`{value}`")) {
                    missing.push(format!("{family}{{{label}=\"{value}\"}}"));
                }
            }
        }
    }
    assert!(families > 10, "{text}");
    missing.dedup();
    assert!(missing.is_empty(), "not in README.md: {missing:?}");
    let _ = server.stop();
}

/// The log lines the README shows have the shape the server really logs (time stamp
/// format, level, message), digits aside: a peer's connect line is compared.
#[test]
fn the_log_lines_shown_are_the_real_shape() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    let server = Server::start(
        &["--log-level", "info"],
        Stdio::from(File::create(&log).expect("creates the log")),
    );
    let peer = TcpStream::connect(("127.0.0.1", server.port())).expect("connects");
    let deadline = Instant::now() + HANG_GUARD;
    let real = loop {
        let text = std::fs::read_to_string(&log).expect("reads the log");
        if let Some(line) = text.lines().find(|line| line.contains(" connected (")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no connect line in {text}");
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(peer);
    let _ = server.stop();
    let shown = README
        .lines()
        .find(|line| line.contains(" connected (") && line.starts_with("20"))
        .expect("README.md shows a connect line");
    assert_eq!(
        masked(shown),
        masked(&real),
        "README: {shown}\nreal:   {real}"
    );
    // Masking hides how many digits the seconds' fraction has: the server prints up to 9
    // (nanoseconds, trailing zeros dropped), and the README must not show fewer.
    let fraction = |line: &str| {
        let after = line.split('.').nth(1).unwrap_or("");
        after.chars().take_while(char::is_ascii_digit).count()
    };
    assert!(
        fraction(shown) >= fraction(&real) && fraction(&real) <= 9,
        "README: {shown}\nreal:   {real}"
    );
}

/// A heading's anchor as GitHub makes it: lower case, spaces to `-`, punctuation other than
/// `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// Every link in README.md and BENCHMARKS.md to a file of the repository names one that
/// exists, and every `#anchor` names a heading of that page.
#[test]
fn the_readme_links_lead_somewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    let mut links = 0;
    for page in ["README.md", "BENCHMARKS.md"] {
        let text = std::fs::read_to_string(root.join(page)).expect("reads the page");
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            if target.starts_with("http") {
                continue;
            }
            links += 1;
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() { page } else { file };
            let Ok(linked) = std::fs::read_to_string(root.join(file)) else {
                broken.push(format!("{page}: {target} (no such file)"));
                continue;
            };
            if !fragment.is_empty() && !anchors(&linked).iter().any(|a| a == fragment) {
                broken.push(format!("{page}: {target} (no such heading)"));
            }
        }
    }
    assert!(links > 10, "links found: {links}");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Every repository path the pages name in backticks (`src/…`, `tests/…`, `benches/…`,
/// `contrib/…`, `fuzz/…`) exists: files move, and the README must follow them.
#[test]
fn the_paths_the_readme_names_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    let mut named = 0;
    for page in ["README.md", "BENCHMARKS.md"] {
        let text = std::fs::read_to_string(root.join(page)).expect("reads the page");
        // Fences (three backticks) removed first, so that inline quotes pair up.
        let text = text.replace("```", "");
        for quoted in text.split('`').skip(1).step_by(2) {
            let is_path = ["src/", "tests/", "benches/", "contrib/", "fuzz/"]
                .iter()
                .any(|folder| quoted.starts_with(folder));
            if is_path && !quoted.contains(char::is_whitespace) {
                named += 1;
                if !root.join(quoted).exists() {
                    missing.push(format!("{page}: {quoted}"));
                }
            }
        }
    }
    assert!(named > 10, "paths found: {named}");
    assert!(missing.is_empty(), "no such file:\n{}", missing.join("\n"));
}
