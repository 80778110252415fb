//! The deployment files in `contrib/` work as the README says: the systemd unit and its
//! example drop-in pass `systemd-analyze verify`, give `--drain` time to finish and give
//! `--log-file` and `--events` a writable directory; the HAProxy example starts on this
//! host (its `maxconn` fits the open-file limit). The README shows the shipped files as they
//! are. `systemd-analyze` and `haproxy` are needed for two of the tests: without them the
//! test says so and passes, except in CI (`CI` set; `.ci/run` installs both), where it fails.

mod common;

use common::tool;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../contrib/heartbeat.service");
const DROP_IN: &str = include_str!("../contrib/heartbeat.service.d/override.conf.example");
const HAPROXY: &str = include_str!("../contrib/haproxy.cfg");
const README: &str = include_str!("../README.md");
const INSTALLED: &str = "/usr/local/bin/heartbeat-server";
const HANG_GUARD: Duration = Duration::from_secs(30);

/// The unit (and, if given, the drop-in) in a temporary directory laid out as systemd reads
/// them, with the installed binary's path pointing at the one cargo built, since `verify`
/// checks that `ExecStart=` names an executable.
fn lay_out(dir: &Path, drop_in: Option<&str>) -> PathBuf {
    let built = env!("CARGO_BIN_EXE_heartbeat-server");
    let unit = dir.join("heartbeat.service");
    fs::write(&unit, UNIT.replace(INSTALLED, built)).expect("writes the unit");
    if let Some(text) = drop_in {
        let folder = dir.join("heartbeat.service.d");
        fs::create_dir_all(&folder).expect("makes the drop-in folder");
        fs::write(folder.join("override.conf"), text.replace(INSTALLED, built))
            .expect("writes the drop-in");
    }
    unit
}

/// `systemd-analyze verify` on the laid-out unit: whether it passed, and what it said about
/// this unit (it may also print lines about the host's own units, which are not ours).
fn verify(analyze: &Path, unit: &Path) -> (bool, String) {
    let out = Command::new(analyze)
        .arg("verify")
        .arg(unit)
        .output()
        .expect("runs systemd-analyze");
    let said: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|line| line.contains("heartbeat"))
        .map(str::to_string)
        .collect();
    (out.status.success(), said.join("\n"))
}

/// The values of `Key=` in a unit file, in order (a blank value included).
fn settings<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .collect()
}

/// Seconds in `45s`, `2min`, `1m`, `500ms` or a bare number (systemd's and ours agree on
/// these forms).
fn seconds(text: &str) -> f64 {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("a number: {text}"));
    number
        * match unit {
            "" | "s" => 1.0,
            "ms" => 0.001,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => panic!("unknown unit {other:?} in {text}"),
        }
}

/// The value after `flag` in a command line, if the flag is there.
fn flag_value<'a>(command: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = command.split_whitespace();
    words.find(|word| *word == flag)?;
    words.next()
}

/// The unit as shipped passes `systemd-analyze verify`.
#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (passed, said) = verify(&analyze, &lay_out(dir.path(), None));
    assert!(passed && said.is_empty(), "verify failed:\n{said}");
}

/// The unit with the example drop-in in its `heartbeat.service.d` passes `verify`: the
/// drop-in clears `ExecStart=` before giving its own.
#[test]
fn the_unit_with_the_example_drop_in_passes_verify() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (passed, said) = verify(&analyze, &lay_out(dir.path(), Some(DROP_IN)));
    assert!(passed && said.is_empty(), "verify failed:\n{said}");
}

/// The check bites: the drop-in the README used to advise (one `ExecStart=` line, no blank
/// one first) fails `verify`, so the two passes above mean something.
#[test]
fn a_drop_in_without_a_blank_exec_start_fails_verify() {
    let Some(analyze) = tool("systemd-analyze", "systemd") else {
        return;
    };
    let wrong: String = DROP_IN
        .lines()
        .filter(|line| line.trim() != "ExecStart=")
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(wrong, DROP_IN, "the example drop-in has a blank ExecStart=");
    let dir = tempfile::tempdir().expect("temp dir");
    let (passed, said) = verify(&analyze, &lay_out(dir.path(), Some(&wrong)));
    assert!(!passed, "verify accepted two ExecStart= lines:\n{said}");
    assert!(said.contains("more than one ExecStart"), "{said}");
}

/// systemd gives the stop `TimeoutStopSec`, then kills: it must exceed the longest
/// `--drain` the unit, the drop-in or the README's examples use, plus the 1 s each peer is
/// given to take its `End Connection`.
#[test]
fn the_stop_timeout_leaves_room_for_the_drain() {
    let unit_timeout = seconds(settings(UNIT, "TimeoutStopSec")[0]);
    let drop_in_timeout = settings(DROP_IN, "TimeoutStopSec")
        .last()
        .map_or(unit_timeout, |value| seconds(value));
    let unit_drain = settings(UNIT, "ExecStart")
        .iter()
        .filter_map(|command| flag_value(command, "--drain"))
        .map(seconds)
        .fold(0.0, f64::max);
    let drop_in_drain = settings(DROP_IN, "ExecStart")
        .iter()
        .filter_map(|command| flag_value(command, "--drain"))
        .map(seconds)
        .fold(0.0, f64::max);
    let readme_drain = README
        .split("--drain ")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == '`').next())
        .filter(|value| value.starts_with(|c: char| c.is_ascii_digit()))
        .map(seconds)
        .fold(0.0, f64::max);
    assert!(drop_in_drain > 0.0, "the drop-in shows --drain");
    assert!(
        unit_timeout > unit_drain.max(readme_drain) + 1.0,
        "TimeoutStopSec={unit_timeout}s, --drain up to {readme_drain}s in the README"
    );
    assert!(
        drop_in_timeout > drop_in_drain.max(readme_drain) + 1.0,
        "the drop-in's TimeoutStopSec={drop_in_timeout}s, its --drain {drop_in_drain}s"
    );
}

/// Under `ProtectSystem=strict` only the directories the unit names are writable: every
/// `--log-file` and `--events` path in the unit or the drop-in lies in one of them.
#[test]
fn the_log_and_event_files_are_in_writable_directories() {
    assert_eq!(settings(UNIT, "ProtectSystem"), ["strict"]);
    let both = format!("{UNIT}\n{DROP_IN}");
    let mut writable: Vec<String> = Vec::new();
    for (key, root) in [
        ("LogsDirectory", "/var/log/"),
        ("StateDirectory", "/var/lib/"),
    ] {
        for value in settings(&both, key) {
            writable.extend(value.split_whitespace().map(|dir| format!("{root}{dir}/")));
        }
    }
    for value in settings(&both, "ReadWritePaths") {
        writable.extend(value.split_whitespace().map(|dir| format!("{dir}/")));
    }
    let mut files = 0;
    for command in settings(&both, "ExecStart") {
        for flag in ["--log-file", "--events"] {
            if let Some(path) = flag_value(command, flag) {
                files += 1;
                assert!(
                    writable.iter().any(|dir| path.starts_with(dir.as_str())),
                    "{flag} {path} is not under a writable directory ({writable:?})"
                );
            }
        }
    }
    assert_eq!(files, 2, "the drop-in shows --log-file and --events");
}

/// The README shows the example drop-in and the HAProxy configuration as they are shipped
/// (from their first setting on), so what a reader copies is what the tests check.
#[test]
fn the_readme_shows_the_shipped_files() {
    for (name, text) in [
        ("contrib/heartbeat.service.d/override.conf.example", DROP_IN),
        ("contrib/haproxy.cfg", HAPROXY),
    ] {
        let body: String = text
            .lines()
            .skip_while(|line| line.starts_with('#') || line.trim().is_empty())
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            README.contains(&body),
            "README.md does not show {name} as shipped:\n{body}"
        );
    }
}

/// A child process killed when the test ends, however it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("address").port()
}

/// The HAProxy example passes `haproxy -c` and really starts under this process's open-file
/// limit (20,000 on the project's machine, where `maxconn 200000` refused to start), with
/// its addresses moved to 127.0.0.1: the front accepts a connection.
#[test]
fn the_haproxy_example_starts_on_this_host() {
    let Some(haproxy) = tool("haproxy", "haproxy") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let shipped = dir.path().join("shipped.cfg");
    fs::write(&shipped, HAPROXY).expect("writes the config");
    let checked = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&shipped)
        .output()
        .expect("runs haproxy -c");
    assert!(
        checked.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // Nothing listens on the back ends' port: the health checks fail, which is fine; no
    // traffic leaves 127.0.0.1.
    let front = free_port();
    let back = free_port();
    let local = HAPROXY
        .replace("bind :8000", &format!("bind 127.0.0.1:{front}"))
        .replace("10.0.0.11:8000", &format!("127.0.0.1:{back}"))
        .replace("10.0.0.12:8000", &format!("127.0.0.1:{back}"));
    assert_ne!(
        local, HAPROXY,
        "the example's addresses are where the test expects"
    );
    let config = dir.path().join("local.cfg");
    fs::write(&config, local).expect("writes the config");
    let log = dir.path().join("haproxy.log");
    let mut child = Guard(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("creates the log"))
            .spawn()
            .expect("starts haproxy"),
    );
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.0.try_wait().expect("polls haproxy") {
            let said = fs::read_to_string(&log).unwrap_or_default();
            panic!("haproxy exited ({status}) instead of serving:\n{said}");
        }
        if TcpStream::connect(("127.0.0.1", front)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "haproxy never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}
