//! `client merge`: summaries written by `client --json` (on this host or others) read back
//! into counters and combined by the same code `--workers` uses ([`ClientStats::merge`],
//! [`RunFacts::merge`]), so that counts add, histograms merge exactly (percentiles of the
//! union, never averages) and time series line up by wall-clock second.
//!
//! Pure: texts in, one summary or the first reason to refuse out. Reading the files and
//! printing are the binary's.

use std::time::Duration;

use super::{
    ClientStats, ClientSummary, ConnectFailure, FaultCounts, RunFacts, TlsFailure, FORMAT,
};
use crate::cores::vocab::FaultKind;
use crate::ops::stats::{hdr, Latencies};

/// Why a file cannot be merged: which one, and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeError {
    pub file: String,
    pub why: String,
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.why)
    }
}

/// Combines the summaries `files` (name, text); fails on the first file that is not a
/// summary, is of another format or version, or was made with settings the others were not.
pub fn merge(files: &[(String, String)]) -> Result<ClientSummary, MergeError> {
    let mut merged: Option<(ClientSummary, ClientStats, RunFacts)> = None;
    for (file, text) in files {
        let refuse = |why: String| MergeError {
            file: file.clone(),
            why,
        };
        let summary = read(text).map_err(refuse)?;
        let (stats, facts) = counters(&summary).map_err(refuse)?;
        match &mut merged {
            None => merged = Some((summary, stats, facts)),
            Some((first, all_stats, all_facts)) => {
                if summary.version != first.version {
                    return Err(refuse(format!(
                        "written by heartbeat-client {}, the others by {}: merge files of one \
                         version",
                        summary.version, first.version
                    )));
                }
                if let Some(why) = first.settings.incompatible(&summary.settings) {
                    return Err(refuse(why));
                }
                all_stats
                    .can_merge(&stats)
                    .map_err(|e| refuse(e.to_string()))?;
                all_stats.merge(&stats);
                all_facts.merge(&facts);
            }
        }
    }
    let Some((_, stats, facts)) = merged else {
        return Err(MergeError {
            file: "merge".to_string(),
            why: "no file given".to_string(),
        });
    };
    Ok(stats.summary(&facts))
}

/// One file's summary, if it is one of ours.
fn read(text: &str) -> Result<ClientSummary, String> {
    let value: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("not JSON ({e}); expected the output of heartbeat-client --json"))?;
    let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != FORMAT {
        return Err(format!(
            "format {format:?}, not {FORMAT:?}: not the output of this heartbeat-client's --json"
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("a summary with a bad field: {e}"))
}

/// The counters and facts a summary was made from (histograms decoded, per-reason and
/// per-kind maps back into arrays), so that merging them is `--workers`' merging.
fn counters(s: &ClientSummary) -> Result<(ClientStats, RunFacts), String> {
    let mut failed = [0; 5];
    for (why, n) in &s.failed_by_reason {
        let Some(reason) = ConnectFailure::ALL.iter().find(|r| r.as_str() == why) else {
            return Err(format!("an unknown connect failure {why:?}"));
        };
        failed[*reason as usize] = *n;
    }
    let mut tls_failed = [0; 6];
    for (why, n) in &s.tls_failed_by_reason {
        let Some(reason) = TlsFailure::ALL.iter().find(|r| r.as_str() == why) else {
            return Err(format!("an unknown TLS failure {why:?}"));
        };
        tls_failed[*reason as usize] = *n;
    }
    let decode = |name: &str, text: &str| -> Result<Latencies, String> {
        hdr::decode(text).map_err(|e| format!("histogram {name}: {e}"))
    };
    let mut faults: [FaultCounts; 4] = Default::default();
    let mut undetected = [0; 4];
    for (name, f) in &s.faults {
        let Some(kind) = FaultKind::ALL.iter().find(|k| k.as_str() == name) else {
            return Err(format!("an unknown fault kind {name:?}"));
        };
        let detection = match s.histograms.detection.get(name) {
            Some(text) => decode(&format!("detection.{name}"), text)?,
            None => return Err(format!("no detection histogram for fault {name:?}")),
        };
        faults[*kind as usize] = FaultCounts {
            injected: f.injected,
            detected: f.detected,
            detection,
        };
        undetected[*kind as usize] = f.undetected;
    }
    // Every field by name (no `..`): a counter added later must be read back here too.
    let opened_in = Duration::try_from_secs_f64(s.opened_in_secs)
        .map_err(|_| format!("opened_in_secs {} is not a duration", s.opened_in_secs))?;
    let stats = ClientStats {
        target: s.target,
        connect_attempts: s.connect_attempts,
        connections_opened: s.connections_opened,
        opened_in,
        opened: s.opened,
        open: s.open,
        failed,
        closed_by_server: s.closed_by_server,
        false_deaths: s.false_deaths,
        goodbyes: s.goodbyes,
        refused_by_server: s.refused_by_server,
        lost_closed: s.lost_closed,
        lost_reset: s.lost_reset,
        errors: s.errors,
        closed_output_cap: s.closed_output_cap,
        reconnects: s.reconnects,
        lines_sent: s.lines_sent,
        echoes_received: s.echoes_received,
        unanswered: s.unanswered,
        heartbeats_answered: s.heartbeats_answered,
        lines_too_long: s.lines_too_long,
        rtt: decode("rtt", &s.histograms.rtt)?,
        connect_time: decode("connect_time", &s.histograms.connect_time)?,
        lag: decode("lag", &s.histograms.lag)?,
        faults,
        handshake_time: match s.histograms.handshake_time.is_empty() {
            true => Latencies::default(),
            false => decode("handshake_time", &s.histograms.handshake_time)?,
        },
        resumed_handshake_time: match s.histograms.resumed_handshake_time.is_empty() {
            true => Latencies::default(),
            false => decode(
                "resumed_handshake_time",
                &s.histograms.resumed_handshake_time,
            )?,
        },
        tls_failed,
        series: s.series.clone(),
    };
    let facts = RunFacts {
        elapsed: Duration::try_from_secs_f64(s.elapsed_secs)
            .map_err(|_| format!("elapsed_secs {} is not a duration", s.elapsed_secs))?,
        server_interval: Duration::from_millis(s.server_interval_ms),
        undetected,
        warnings_suppressed: s.warnings_suppressed,
        memory: s.memory.clone(),
        settings: s.settings.clone(),
        runs: s.runs.max(1),
    };
    Ok((stats, facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime};

    fn run(rtt_ms: u64, faults: bool) -> ClientSummary {
        let mut c = ClientStats::new(10);
        c.start_series(Instant::now(), SystemTime::now());
        for _ in 0..10 {
            c.on_connected(Duration::from_millis(1));
        }
        for i in 0..100 {
            c.on_line_sent(Duration::from_micros(10));
            c.on_echo(Duration::from_millis(rtt_ms) + Duration::from_micros(i));
        }
        c.on_connect_failed(ConnectFailure::Refused);
        if faults {
            c.on_fault_injected(FaultKind::Silent);
            c.on_fault_detected(FaultKind::Silent, Duration::from_millis(700));
            c.on_closed_by_server();
        }
        let facts = RunFacts {
            elapsed: Duration::from_secs(2),
            server_interval: Duration::from_millis(200),
            settings: super::super::RunSettings {
                interval_ms: 100,
                server_interval_ms: 200,
                connections: 10,
                ..Default::default()
            },
            runs: 1,
            ..RunFacts::default()
        };
        c.summary(&facts)
    }

    fn files(summaries: &[&ClientSummary]) -> Vec<(String, String)> {
        summaries
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("run{i}.json"), s.to_json()))
            .collect()
    }

    #[test]
    fn counts_add_and_percentiles_are_those_of_the_union() {
        let (fast, slow) = (run(1, false), run(50, true));
        let merged = merge(&files(&[&fast, &slow])).expect("merges");
        assert_eq!(merged.runs, 2);
        assert_eq!(merged.opened, 20);
        assert_eq!(merged.echoes_received, 200);
        assert_eq!(merged.failed_by_reason["refused"], 2);
        assert_eq!(merged.settings.connections, 20);
        assert_eq!(merged.faults["silent"].detected, 1);
        assert_eq!(merged.rtt.count, 200);
        // Half fast, half slow: the union's p50 is the fast run's top, its p90 the slow one's.
        assert!(merged.rtt.p50_us <= fast.rtt.max_us, "{:?}", merged.rtt);
        assert!(merged.rtt.p90_us >= slow.rtt.p50_us, "{:?}", merged.rtt);
        assert_eq!(merged.rtt.max_us, slow.rtt.max_us);
        let rows: u64 = merged.series.rows.iter().map(|r| r.0[6]).sum();
        assert_eq!(rows, 200, "echoes per second add up too");
        // What merge prints merges again: the same shape.
        let again = merge(&files(&[&merged, &fast])).expect("merges");
        assert_eq!(again.runs, 3);
        assert_eq!(again.opened, 30);
    }

    /// `--tls` runs merge their handshake times and TLS failures by reason too; a summary
    /// without them (a run without `--tls`, or written before TLS) merges as none.
    #[test]
    fn tls_handshakes_and_failures_merge() {
        let tls_run = |handshake_ms: u64| {
            let mut c = ClientStats::new(2);
            c.start_series(Instant::now(), SystemTime::now());
            c.on_handshake(Duration::from_millis(handshake_ms), false);
            c.on_tls_failed(TlsFailure::UnknownCa);
            c.summary(&RunFacts {
                runs: 1,
                ..RunFacts::default()
            })
        };
        let (a, b) = (tls_run(1), tls_run(9));
        let mut plain = a.clone();
        plain.handshake_time = Default::default();
        plain.tls_failed_by_reason.clear();
        plain.histograms.handshake_time = String::new();
        let merged = merge(&files(&[&a, &b, &plain])).expect("merges");
        assert_eq!(merged.handshake_time.count, 2);
        assert!(
            merged.handshake_time.max_us >= 9000,
            "{:?}",
            merged.handshake_time
        );
        let failed = TlsFailure::UnknownCa.as_str().to_string();
        assert_eq!(merged.tls_failed_by_reason, [(failed, 2)].into());
        assert_eq!(merged.resumed_handshake_time.count, 0);
        let mut odd = a.clone();
        odd.tls_failed_by_reason
            .insert("tls: solar flare".into(), 1);
        let e = merge(&files(&[&odd])).expect_err("refused").to_string();
        assert!(e.contains("an unknown TLS failure"), "{e}");
    }

    /// Resumed handshakes are counted apart (and in all handshakes), and merge: the
    /// resumed histogram goes through the summary's `histograms` like the others.
    #[test]
    fn resumed_handshakes_are_counted_apart_and_merge() {
        let run = |resumed_ms: u64| {
            let mut c = ClientStats::new(2);
            c.start_series(Instant::now(), SystemTime::now());
            c.on_handshake(Duration::from_millis(20), false);
            c.on_handshake(Duration::from_millis(resumed_ms), true);
            c.summary(&RunFacts {
                runs: 1,
                ..RunFacts::default()
            })
        };
        let (a, b) = (run(1), run(7));
        assert_eq!(
            (a.handshake_time.count, a.resumed_handshake_time.count),
            (2, 1)
        );
        assert!(!a.histograms.resumed_handshake_time.is_empty());
        let merged = merge(&files(&[&a, &b])).expect("merges");
        assert_eq!(merged.handshake_time.count, 4);
        assert_eq!(merged.resumed_handshake_time.count, 2);
        assert!(
            (7000..20_000).contains(&merged.resumed_handshake_time.max_us),
            "{:?}",
            merged.resumed_handshake_time
        );
    }

    #[test]
    fn bad_files_are_refused_by_name_and_reason() {
        let ok = run(1, false);
        let why = |files: Vec<(String, String)>| merge(&files).expect_err("refused").to_string();
        let not_json = vec![("a.json".to_string(), "connected 5/10".to_string())];
        assert!(why(not_json).starts_with("a.json: not JSON"));
        let other = vec![("b.json".to_string(), r#"{"format":"x"}"#.to_string())];
        assert!(why(other).starts_with("b.json: format \"x\""));
        let mut old = ok.clone();
        old.version = "0.0.1".to_string();
        let e = why(files(&[&ok, &old]));
        assert!(
            e.starts_with("run1.json: written by heartbeat-client 0.0.1"),
            "{e}"
        );
        let mut slower = ok.clone();
        slower.settings.interval_ms = 1000;
        let e = why(files(&[&ok, &slower]));
        assert!(
            e.starts_with("run1.json: --interval 1000 ms, not 100 ms"),
            "{e}"
        );
        let mut broken = ok.clone();
        broken.histograms.rtt = "!!".to_string();
        let e = why(files(&[&broken]));
        assert!(e.starts_with("run0.json: histogram rtt: "), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let mut far = ok.clone();
        far.series.start_unix_secs += 10 * 86_400;
        let e = why(files(&[&ok, &far]));
        assert!(e.contains("not one test"), "{e}");
        assert!(merge(&[]).is_err());
    }
}
