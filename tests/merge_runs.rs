//! `heartbeat-client merge` on the `--json` of two real client runs against one server (one
//! with `--faults`): counts add up, merged percentiles lie between the inputs', time series
//! add up; and bad inputs are refused on one line naming the file (exit status 2).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::ServerProcess;
use heartbeat::ops::stats::{hdr, Percentiles};
use serde_json::Value;

const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");

/// The two runs' settings, save duration and faults: compatible, so they merge.
fn client_args(port: u16) -> Vec<String> {
    let port = port.to_string();
    [
        "--no-prompt",
        "--port",
        &port,
        "--connections",
        "40",
        "--interval",
        "100ms",
        "--server-interval",
        "200ms",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON summary")
}

fn merge(files: &[&Path], extra: &[&str]) -> Output {
    Command::new(CLIENT)
        .arg("merge")
        .args(files)
        .args(extra)
        .output()
        .expect("client runs")
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {v}"))
}

/// Sum of one per-second column.
fn column_sum(v: &Value, name: &str) -> u64 {
    let columns = v["series"]["columns"].as_array().expect("columns");
    let i = columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let rows = v["series"]["rows"].as_array().expect("rows");
    rows.iter().map(|r| r[i].as_u64().expect("a count")).sum()
}

/// Runs a plain client and a faulty one at once against one server, writes their JSON, and
/// returns (plain, faulty, their paths).
fn two_runs(dir: &Path) -> (Value, Value, PathBuf, PathBuf) {
    let server = ServerProcess::start(&["--interval", "200ms", "--count", "2", "--idle", "400ms"]);
    let plain = Command::new(CLIENT)
        .args(client_args(server.port))
        .args(["--duration", "2s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("client starts");
    let faulty = Command::new(CLIENT)
        .args(client_args(server.port))
        .args(["--duration", "3s", "--faults", "silent=25%", "--seed", "7"])
        .args(["--fault-window", "500ms"])
        .output()
        .expect("client runs");
    let plain = plain.wait_with_output().expect("client ends");
    let (a, b) = (json_of(&plain), json_of(&faulty));
    let (pa, pb) = (dir.join("plain.json"), dir.join("faulty.json"));
    std::fs::write(&pa, &plain.stdout).expect("writes");
    std::fs::write(&pb, &faulty.stdout).expect("writes");
    (a, b, pa, pb)
}

/// Two real runs merge into one summary whose counts are the sums, whose percentiles are
/// those of the union (between the inputs', never outside), and whose per-second rows add up.
#[test]
fn two_runs_merge_into_one_summary_of_the_same_shape() {
    let dir = tempfile::tempdir().expect("tmp dir");
    let (a, b, pa, pb) = two_runs(dir.path());
    assert!(u(&b, &["faults", "silent", "injected"]) > 0, "{b}");
    let report = dir.path().join("merged.html");
    let out = merge(&[&pa, &pb], &["--report", report.to_str().expect("utf-8")]);
    let m = json_of(&out);
    for key in [
        "target",
        "opened",
        "failed",
        "closed_by_server",
        "false_deaths",
        "lines_sent",
        "echoes_received",
        "unanswered",
        "heartbeats_answered",
    ] {
        assert_eq!(u(&m, &[key]), u(&a, &[key]) + u(&b, &[key]), "{key}");
    }
    assert_eq!(u(&m, &["runs"]), 2);
    assert_eq!(u(&m, &["settings", "connections"]), 80);
    assert_eq!(
        m["faults"]["silent"], b["faults"]["silent"],
        "only one run had faults"
    );
    for hist in ["rtt", "connect_time", "lag"] {
        assert_eq!(
            u(&m, &[hist, "count"]),
            u(&a, &[hist, "count"]) + u(&b, &[hist, "count"]),
            "{hist}"
        );
        for p in ["p50_us", "p90_us", "p99_us", "max_us"] {
            let (x, y, got) = (u(&a, &[hist, p]), u(&b, &[hist, p]), u(&m, &[hist, p]));
            assert!(
                x.min(y) <= got && got <= x.max(y),
                "{hist} {p}: merged {got} outside {x}..{y}"
            );
        }
    }
    // Exactly the union's: the inputs' histograms decoded and merged give the same figures.
    for hist in ["rtt", "connect_time", "lag"] {
        let decode = |v: &Value| {
            let text = v["histograms"][hist]
                .as_str()
                .expect("an encoded histogram");
            hdr::decode(text).expect("HdrHistogram V2")
        };
        let mut union = decode(&a);
        union.merge(&decode(&b));
        let got: Percentiles = serde_json::from_value(m[hist].clone()).expect("percentiles");
        assert_eq!(got, union.percentiles(), "{hist}");
        assert_eq!(
            decode(&m).percentiles(),
            got,
            "{hist}: the merged histogram is written"
        );
    }
    // The same key order as a run's JSON: the same shape, so a merge merges again.
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&m), keys(&a));
    for (column, key) in [
        ("opened", "opened"),
        ("lines", "lines_sent"),
        ("echoes", "echoes_received"),
    ] {
        assert_eq!(column_sum(&m, column), u(&m, &[key]), "{column}");
    }
    let page = std::fs::read_to_string(&report).expect("the report was written");
    assert!(page.matches("<svg").count() >= 5, "charts in the report");
}

/// A file of another version, one made with another line interval, and one that is not JSON
/// are each refused: exit status 2, one line on stderr naming the file and why; nothing on
/// stdout.
#[test]
fn bad_inputs_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tmp dir");
    let (a, pa) = one_run(dir.path());
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("writes");
        path
    };
    let mut old = a.clone();
    old["version"] = Value::from("0.0.1");
    let old = write("old.json", old.to_string());
    let mut slow = a.clone();
    slow["settings"]["interval_ms"] = Value::from(30_000);
    let slow = write("slow.json", slow.to_string());
    let text = write("status.txt", "connected 40/40  rate 0/s".to_string());
    let missing = dir.path().join("missing.json");
    let cases: [(&Path, &str); 4] = [
        (&old, "written by heartbeat-client 0.0.1"),
        (&slow, "--interval 30000 ms, not 100 ms"),
        (&text, "not JSON"),
        (&missing, "No such file"),
    ];
    for (bad, why) in cases {
        let out = merge(&[&pa, bad], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(&bad.display().to_string()) && stderr.contains(why),
            "{bad:?} / {why}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "no summary printed");
    }
    let out = Command::new(CLIENT).arg("merge").output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "no file given");
}

/// One short plain run (for the refusal cases, which need one good file).
fn one_run(dir: &Path) -> (Value, PathBuf) {
    let server = ServerProcess::start(&["--interval", "200ms", "--count", "2", "--idle", "400ms"]);
    let out = Command::new(CLIENT)
        .args(client_args(server.port))
        .args(["--duration", "1s"])
        .output()
        .expect("client runs");
    let a = json_of(&out);
    let path = dir.join("plain.json");
    std::fs::write(&path, &out.stdout).expect("writes");
    (a, path)
}

/// `--workers 2` merges its processes through the same code as `merge`: its JSON says two
/// runs, its per-second rows add up to its counts, its report is written once by the parent,
/// and the JSON merges again with a plain run's.
#[test]
fn workers_merge_through_the_same_path_and_their_summary_merges_again() {
    let dir = tempfile::tempdir().expect("tmp dir");
    let server = ServerProcess::start(&["--interval", "200ms", "--count", "2", "--idle", "400ms"]);
    let report = dir.path().join("workers.html");
    let out = Command::new(CLIENT)
        .args(client_args(server.port))
        .args(["--duration", "1s", "--workers", "2", "--report"])
        .arg(&report)
        .output()
        .expect("client runs");
    let w = json_of(&out);
    assert_eq!(u(&w, &["runs"]), 2, "two worker processes");
    assert_eq!(u(&w, &["settings", "connections"]), 40, "shares add up");
    assert_eq!(column_sum(&w, "opened"), u(&w, &["opened"]));
    assert_eq!(column_sum(&w, "echoes"), u(&w, &["echoes_received"]));
    let page = std::fs::read_to_string(&report).expect("the parent wrote the report");
    assert!(page.contains("<svg"));
    let path = dir.path().join("workers.json");
    std::fs::write(&path, &out.stdout).expect("writes");
    let (plain, plain_path) = one_run(dir.path());
    let m = json_of(&merge(&[&path, &plain_path], &[]));
    assert_eq!(u(&m, &["runs"]), 3);
    assert_eq!(
        u(&m, &["opened"]),
        u(&w, &["opened"]) + u(&plain, &["opened"])
    );
}
