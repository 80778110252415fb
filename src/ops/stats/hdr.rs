//! A [`Latencies`] histogram as text that merges exactly: HdrHistogram's standard V2
//! compressed encoding (the one Java's `HistogramLogProcessor`, `hdr-plot` and the other HDR
//! ports read), in standard base64. Written into `client --json` and read back by
//! `client merge` and the HTML report.
//!
//! The encoding is the `hdrhistogram` crate's (`V2DeflateSerializer`, `Deserializer`); this
//! module only adds base64, a size cap on what it reads, and the conversion into our own
//! histogram's range (values beyond it saturate, as when recorded). Pure: no file, no clock.

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::Latencies;

/// Encoded text longer than this is refused unread: our histograms encode to a few KiB, so
/// anything near this is not one of ours, and reading it could cost much memory.
pub const MAX_ENCODED: usize = 1 << 20;

/// Why an encoded histogram could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooLong(usize),
    Base64(String),
    Histogram(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLong(n) => write!(
                f,
                "an encoded histogram of {n} bytes (at most {MAX_ENCODED})"
            ),
            DecodeError::Base64(e) => write!(f, "a histogram that is not base64: {e}"),
            DecodeError::Histogram(e) => {
                write!(f, "not an HdrHistogram V2 compressed histogram: {e}")
            }
        }
    }
}

/// `latencies` in HdrHistogram's V2 compressed encoding, base64.
pub fn encode(latencies: &Latencies) -> String {
    let mut bytes = Vec::new();
    // Writing into a Vec fails only on a histogram too large to encode (over 4 GiB); ours
    // are a few KiB. Should it ever fail, an empty string reads back as an error, not a lie.
    if V2DeflateSerializer::new()
        .serialize(&latencies.0, &mut bytes)
        .is_err()
    {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads what [`encode`] wrote (or another HDR tool's V2 histogram of microseconds).
pub fn decode(text: &str) -> Result<Latencies, DecodeError> {
    if text.len() > MAX_ENCODED {
        return Err(DecodeError::TooLong(text.len()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| DecodeError::Base64(e.to_string()))?;
    let read: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| DecodeError::Histogram(format!("{e:?}")))?;
    let mut latencies = Latencies::default();
    for v in read.iter_recorded() {
        latencies
            .0
            .saturating_record_n(v.value_iterated_to(), v.count_at_value());
    }
    Ok(latencies)
}

impl Latencies {
    /// HdrHistogram's percentile-distribution curve: `(quantile, value in µs)` points, dense
    /// towards the tail (five per halving of the distance to 100 %), ending at the maximum.
    pub fn percentile_curve(&self) -> Vec<(f64, u64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        self.0
            .iter_quantiles(5)
            .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn encoding_round_trips_exactly_and_merges_like_the_originals() {
        let (mut a, mut b) = (Latencies::default(), Latencies::default());
        for us in 1..=990 {
            a.record(Duration::from_micros(us));
        }
        for us in 0..10 {
            b.record(Duration::from_millis(100 + us));
        }
        let text = encode(&a);
        assert!(
            text.starts_with("HISTF"),
            "the V2 compressed cookie, base64: {text}"
        );
        let back = decode(&text).expect("reads back");
        assert_eq!(back.recorded(), a.recorded(), "every value and count");
        let mut merged = decode(&encode(&b)).expect("reads back");
        merged.merge(&back);
        let mut all = a.clone();
        all.merge(&b);
        assert_eq!(merged.percentiles(), all.percentiles());
        assert!(
            merged.percentiles().p999_us >= 100_000,
            "the slow tail is kept"
        );
    }

    #[test]
    fn the_percentile_curve_rises_to_the_maximum_and_thickens_in_the_tail() {
        let mut l = Latencies::default();
        for us in 1..=10_000 {
            l.record(Duration::from_micros(us));
        }
        let curve = l.percentile_curve();
        assert!(curve
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let last = curve.last().expect("points");
        assert_eq!(last.0, 1.0);
        assert!((9_990..=10_010).contains(&last.1), "{last:?}");
        let tail = curve.iter().filter(|(q, _)| *q > 0.99).count();
        assert!(tail >= 10, "{curve:?}");
        assert!(Latencies::default().percentile_curve().is_empty());
    }

    #[test]
    fn an_empty_histogram_encodes_and_reads_back_empty() {
        let back = decode(&encode(&Latencies::default())).expect("reads back");
        assert_eq!(back.percentiles().count, 0);
    }

    #[test]
    fn bad_text_is_an_error_not_a_panic() {
        assert!(matches!(decode("not base64!"), Err(DecodeError::Base64(_))));
        assert!(matches!(decode("aGVsbG8="), Err(DecodeError::Histogram(_))));
        let text = encode(&Latencies::default());
        let cut = &text[..text.len() / 2];
        assert!(decode(cut).is_err(), "a truncated histogram");
        let long = "A".repeat(MAX_ENCODED + 1);
        assert_eq!(decode(&long), Err(DecodeError::TooLong(MAX_ENCODED + 1)));
    }
}
