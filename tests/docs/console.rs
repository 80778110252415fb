//! The README's ```` ```console ```` blocks, run as written: a small interpreter for the
//! few shell forms they use (a command, `CMD &`, `kill %1`), comparing what the binaries
//! print with the lines the README shows, digits aside.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{listening_port, wait, Guard, CLIENT, HANG_GUARD, README, SERVER};

/// Digits are what changes from run to run (ports, times, counts): they are compared as one
/// `#` per run of digits.
pub(crate) fn masked(text: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Whether `line` is what the README shows as `shown`: equal once digits are masked, with
/// `...` in `shown` standing for anything.
fn matches(shown: &str, line: &str) -> bool {
    let parts: Vec<String> = masked(shown).split("...").map(str::to_string).collect();
    let line = masked(line);
    let mut rest = line.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(after) = rest.strip_prefix(part.as_str()) else {
                return false;
            };
            rest = after;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part.as_str());
        } else {
            let Some(at) = rest.find(part.as_str()) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    rest.is_empty()
}

/// The README's ```` ```console ```` blocks, each as `(command, lines shown after it)`.
fn console_blocks() -> Vec<Vec<(String, Vec<String>)>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<(String, Vec<String>)>> = None;
    for line in README.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```console") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(steps), text) => match text.strip_prefix("$ ") {
                Some(command) => steps.push((command.to_string(), Vec::new())),
                None => {
                    let (_, shown) = steps.last_mut().expect("a console block starts with $");
                    shown.push(text.to_string());
                }
            },
            (None, _) => {}
        }
    }
    blocks
}

/// The complete lines in `path` once the lines `shown` have appeared in them in order, or
/// once the process has exited (`shown` empty: once it has exited).
fn output_lines(path: &Path, shown: &[String], child: &mut Child) -> Vec<String> {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let exited = child.try_wait().expect("polls the child").is_some();
        let mut text = String::new();
        File::open(path)
            .and_then(|mut file| file.read_to_string(&mut text))
            .expect("reads the output");
        let end = text.rfind('\n').map_or(0, |at| at + 1);
        let complete: Vec<String> = text[..end].lines().map(str::to_string).collect();
        if exited || !shown.is_empty() && all_shown(shown, &complete) {
            return complete;
        }
        assert!(
            Instant::now() < deadline,
            "not all of {shown:?} after {HANG_GUARD:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn all_shown(shown: &[String], output: &[String]) -> bool {
    let mut rest = output.iter();
    shown
        .iter()
        .filter(|line| line.trim() != "...")
        .all(|line| rest.any(|real| matches(line, real)))
}

/// The shown lines appear in `output` in order (other lines may come between them).
fn assert_shown(command: &str, shown: &[String], output: &[String]) {
    let mut rest = output.iter();
    for line in shown.iter().filter(|line| line.trim() != "...") {
        assert!(
            rest.any(|real| matches(line, real)),
            "`{command}`: the README shows {line:?}, the output was:\n{}",
            output.join("\n")
        );
    }
}

/// A program the README names, as the test runs it: the built binary.
fn program(name: &str) -> &'static str {
    match name {
        "heartbeat-server" => SERVER,
        "heartbeat-client" => CLIENT,
        other => panic!("a console block runs {other}; only the two binaries can run here"),
    }
}

/// Every ```` ```console ```` block in the README runs as written and prints what it shows
/// (digits aside). `CMD &` starts a background job and waits for the lines shown after it;
/// `kill %1` sends it SIGTERM and checks what it prints as it stops; any other command runs
/// to its end, exit status 0. A port the README shows in a job's `Listening on` line stands
/// for whatever port the job really got, in the commands that follow.
#[test]
fn the_readme_console_blocks_run_as_written() {
    let blocks = console_blocks();
    assert!(!blocks.is_empty(), "README.md has console blocks");
    let dir = tempfile::tempdir().expect("temp dir");
    for (b, steps) in blocks.iter().enumerate() {
        let mut job: Option<(Guard, std::path::PathBuf, usize)> = None;
        let mut ports: Vec<(String, String)> = Vec::new();
        for (s, (command, shown)) in steps.iter().enumerate() {
            if command == "kill %1" {
                let (mut child, path, seen) = job.take().expect("a job to kill");
                let pid = child.0.id().to_string();
                let killed = Command::new("kill").args(["-TERM", &pid]).status();
                assert!(killed.is_ok_and(|status| status.success()), "kill %1");
                let status = wait(&mut child.0);
                assert!(status.success(), "`kill %1`: the job exited {status}");
                let all = output_lines(&path, &[], &mut child.0);
                assert_shown(command, shown, &all[seen.min(all.len())..]);
                continue;
            }
            assert!(
                !command.contains(['"', '\'', '|', '>', '<', ';']),
                "{command}"
            );
            let background = command.ends_with(" &");
            let mut words = command
                .trim_end_matches(" &")
                .split_whitespace()
                .map(|word| {
                    ports
                        .iter()
                        .find(|(shown, _)| shown == word)
                        .map_or(word.to_string(), |(_, real)| real.clone())
                });
            let name = words.next().expect("a command");
            let path = dir.path().join(format!("block{b}-step{s}.out"));
            let out = File::create(&path).expect("creates the output file");
            let mut child = Guard(
                Command::new(program(&name))
                    .args(words)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().expect("clones the file"))
                    .stderr(out)
                    .spawn()
                    .unwrap_or_else(|e| panic!("`{command}`: {e}")),
            );
            if background {
                let lines = output_lines(&path, shown, &mut child.0);
                assert_shown(command, shown, &lines);
                let real = lines.iter().find_map(|line| listening_port(line));
                let doc = shown.iter().find_map(|line| listening_port(line));
                if let (Some(doc), Some(real)) = (doc, real) {
                    ports.push((doc, real));
                }
                job = Some((child, path, lines.len()));
            } else {
                let status = wait(&mut child.0);
                assert!(status.success(), "`{command}` exited {status}");
                let lines = output_lines(&path, &[], &mut child.0);
                assert_shown(command, shown, &lines);
            }
        }
        assert!(job.is_none(), "a console block leaves a job running");
    }
}
