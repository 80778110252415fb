//! Latency histograms: [`Latencies`] (microseconds, 1 µs to an hour, 3 significant figures),
//! their percentiles, Prometheus-style buckets, and the exact form ([`Recorded`]) that worker
//! processes hand their parent. Used by the server's and the load client's statistics.
//!
//! Owns the histogram and what is read from it; not the summaries that print it (`stats`).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{micros, ms};

/// A histogram of durations in microseconds (1 µs to an hour, 3 significant figures; longer
/// ones count as an hour): how late timers fired, round trips, connect times.
#[derive(Clone)]
pub struct Latencies(pub(super) Histogram<u64>);

impl Latencies {
    pub fn record(&mut self, late: Duration) {
        self.0.saturating_record(micros(late));
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.0)
    }

    /// The values recorded and how often each was: the histogram itself, exactly.
    pub fn recorded(&self) -> Recorded {
        let values = self.0.iter_recorded();
        Recorded(
            values
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// The histogram [`recorded`](Self::recorded) gave (values beyond the range saturate).
    pub fn from_recorded(recorded: &Recorded) -> Latencies {
        let mut latencies = Latencies::default();
        for &(value, count) in &recorded.0 {
            latencies.0.saturating_record_n(value, count);
        }
        latencies
    }

    /// Adds every duration `other` recorded, as if they had been recorded here: merged
    /// percentiles are those of all the durations together, not an average of percentiles.
    pub fn merge(&mut self, other: &Latencies) {
        for v in other.0.iter_recorded() {
            self.0
                .saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    /// The counts of a Prometheus-style histogram: for each of `bounds` (ascending), how many
    /// durations were at most it, plus the count and the sum of all of them. Exact below
    /// 2 ms; above that a bound is as exact as the histogram (3 significant figures): a value
    /// counts under the lowest duration its histogram bucket shares. Durations that
    /// saturated at an hour count under no bound below an hour.
    pub fn buckets(&self, bounds: &[Duration]) -> Buckets {
        let bounds_us: Vec<u64> = bounds.iter().map(|b| micros(*b)).collect();
        let mut cumulative = vec![0; bounds.len()];
        for value in self.0.iter_recorded() {
            let at = self.0.lowest_equivalent(value.value_iterated_to());
            if let Some(first) = bounds_us.iter().position(|bound| at <= *bound) {
                cumulative[first] += value.count_at_value();
            }
        }
        let mut running = 0;
        for count in &mut cumulative {
            running += *count;
            *count = running;
        }
        let count = self.0.len();
        // The histogram keeps no exact sum; its mean is over each bucket's middle value.
        let sum_us = self.0.mean() * count as f64;
        Buckets {
            cumulative,
            count,
            sum_secs: sum_us / 1e6,
        }
    }
}

/// A histogram as `[value, count]` pairs (each value the top of its bucket): exact and
/// small, for carrying a histogram between processes (`--workers`) and merging it there.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recorded(pub Vec<(u64, u64)>);

/// `#[serde(with = "exact")]`: a [`Latencies`] as its [`Recorded`] values, for the JSON that
/// worker processes hand their parent (never for what a person or script reads).
pub mod exact {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Latencies, Recorded};

    pub fn serialize<S: Serializer>(latencies: &Latencies, s: S) -> Result<S::Ok, S::Error> {
        latencies.recorded().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Latencies, D::Error> {
        Recorded::deserialize(d).map(|recorded| Latencies::from_recorded(&recorded))
    }
}

/// What [`Latencies::buckets`] counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// For each bound, how many durations were at most it (so never decreasing).
    pub cumulative: Vec<u64>,
    /// How many durations were recorded (the `+Inf` bucket).
    pub count: u64,
    /// Their sum in seconds, to the histogram's precision.
    pub sum_secs: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies(new_histogram())
    }
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.percentiles().fmt(f)
    }
}

impl PartialEq for Latencies {
    fn eq(&self, other: &Self) -> bool {
        self.percentiles() == other.percentiles()
    }
}

impl Eq for Latencies {}

impl Serialize for Latencies {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.percentiles().serialize(serializer)
    }
}

/// Histogram range in microseconds: 1 µs up to one hour, 3 significant figures.
const HIST_LOW_US: u64 = 1;
const HIST_HIGH_US: u64 = 3_600_000_000;
const HIST_SIGFIG: u8 = 3;

fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    let mut h = Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_SIGFIG)
        .expect("constant histogram bounds are valid");
    h.auto(false);
    h
}

/// Latency percentiles in microseconds; all zero when nothing was recorded.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }

    /// One summary row: `label`, then p50 … max in milliseconds and the sample count.
    pub(crate) fn row(&self, label: &str) -> String {
        let (p50, p90, p99) = (ms(self.p50_us, 3), ms(self.p90_us, 3), ms(self.p99_us, 3));
        let (p999, max, n) = (ms(self.p999_us, 3), ms(self.max_us, 3), self.count);
        format!(
            "  {label:<12} p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  max {max}  ({n} samples)"
        )
    }
}
