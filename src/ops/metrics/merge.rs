//! One metrics text from several workers' texts (`server --workers N --metrics ADDR`): every
//! series summed across workers, in the order the first text gives them.
//!
//! Summing is right for every family the server exports: counters and gauges of open
//! connections add up, and histogram buckets, `_sum` and `_count` are counts and totals.
//! Two exceptions: `heartbeat_build_info` stays 1, and `heartbeat_connections_peak` is a sum
//! of the workers' peaks (at least the true peak, as in the merged exit summary).

use std::collections::HashMap;

/// The family whose value is a marker, not a count.
const BUILD_INFO: &str = "heartbeat_build_info";

/// Sums `texts` series by series. `# HELP` and `# TYPE` lines, and the order, come from the
/// first text; a series only a later text has is appended at the end.
pub fn merge(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut comments: HashMap<usize, Vec<String>> = HashMap::new();
    let mut sums: HashMap<String, f64> = HashMap::new();
    for text in texts {
        let first = order.is_empty();
        for line in text.lines() {
            if line.starts_with('#') {
                if first {
                    comments
                        .entry(order.len())
                        .or_default()
                        .push(line.to_string());
                }
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            match sums.get_mut(series) {
                Some(sum) if series.starts_with(BUILD_INFO) => *sum = sum.max(value),
                Some(sum) => *sum += value,
                None => {
                    sums.insert(series.to_string(), value);
                    order.push(series.to_string());
                }
            }
        }
    }
    let mut out = String::new();
    for (index, series) in order.iter().enumerate() {
        for comment in comments.get(&index).into_iter().flatten() {
            out.push_str(comment);
            out.push('\n');
        }
        let value = sums.get(series).copied().unwrap_or(0.0);
        out.push_str(series);
        out.push(' ');
        out.push_str(&format_value(value));
        out.push('\n');
    }
    out
}

/// Whole numbers without a fraction (counts stay integers); others to 9 decimals with the
/// trailing zeros dropped, so a sum of microsecond-precise seconds reads as written (no
/// `0.0034010000000000004` from adding `0.0004` and `0.003001`).
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{}", value as i64);
    }
    let text = format!("{value:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::{render, Gauges};
    use crate::ops::stats::ServerStats;

    fn text_of(stats: &ServerStats) -> String {
        render(stats, &Gauges::default())
    }

    #[test]
    fn series_are_summed_and_build_info_stays_one() {
        let a = ServerStats {
            accepted: 3,
            open: 2,
            ..ServerStats::default()
        };
        let b = ServerStats {
            accepted: 4,
            open: 1,
            ..ServerStats::default()
        };
        let merged = merge(&[text_of(&a), text_of(&b)]);
        assert!(
            merged.contains("\nheartbeat_connections_accepted_total 7\n"),
            "{merged}"
        );
        assert!(
            merged.contains("\nheartbeat_connections_open 3\n"),
            "{merged}"
        );
        assert!(
            merged.contains("heartbeat_build_info{version=\"0.1.0\"} 1\n"),
            "{merged}"
        );
    }

    #[test]
    fn the_merge_of_workers_is_the_text_of_their_merged_counts() {
        let us = std::time::Duration::from_micros;
        let mut a = ServerStats {
            heartbeats_sent: 5,
            closed_dead: 1,
            ..ServerStats::default()
        };
        a.close_lateness.record(us(400));
        let mut b = ServerStats {
            heartbeats_sent: 2,
            ..ServerStats::default()
        };
        b.close_lateness.record(us(3000));
        let mut both = a.clone();
        both.merge(&b);
        assert_eq!(merge(&[text_of(&a), text_of(&b)]), text_of(&both));
    }

    #[test]
    fn one_text_comes_back_unchanged_and_none_is_empty() {
        let one = text_of(&ServerStats::default());
        assert_eq!(merge(std::slice::from_ref(&one)), one);
        assert_eq!(merge(&[]), "");
    }
}
