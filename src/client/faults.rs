//! Fault injection: which connections turn bad, how, and when.
//!
//! Owns the `--faults` specification (`silent=5%,halfclose=1%,...`) and the schedule it
//! implies. Every decision is a pure function of the seed and a connection's index, so a run
//! is reproducible; the loop carries the faults out (see `load`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::cores::rng::SplitMix64;

pub use crate::cores::vocab::FaultKind;

/// Shares of connections per fault kind, in parts per million.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSpec {
    ppm: [u32; 4],
}

const MILLION: u32 = 1_000_000;

impl FaultSpec {
    pub fn is_empty(&self) -> bool {
        self.ppm.iter().all(|&p| p == 0)
    }

    /// The share of connections given `kind`, from 0 to 1.
    pub fn share(&self, kind: FaultKind) -> f64 {
        f64::from(self.ppm[kind as usize]) / f64::from(MILLION)
    }

    /// The fault of connection `index` in a run seeded `seed`, if it gets one, and how long
    /// after the connection opens it strikes (uniform over `window`).
    pub fn plan(&self, seed: u64, index: u64, window: Duration) -> Option<(FaultKind, Duration)> {
        if self.is_empty() {
            return None;
        }
        let mut rng = SplitMix64::for_item(seed, index);
        let draw = (rng.next_u64() % u64::from(MILLION)) as u32;
        let mut below = 0;
        let kind = FaultKind::ALL.into_iter().find(|kind| {
            below += self.ppm[*kind as usize];
            draw < below
        })?;
        Some((kind, window.mul_f64(rng.next_f64())))
    }
}

/// Why a `--faults` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpecError(String);

impl fmt::Display for FaultSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FaultSpecError {}

impl FromStr for FaultSpec {
    type Err = FaultSpecError;

    /// `KIND=P%[,KIND=P%...]`, kinds `silent`, `halfclose`, `noread`, `reset`; percentages may
    /// have decimals (`0.5%`); together at most 100%.
    fn from_str(text: &str) -> Result<FaultSpec, FaultSpecError> {
        let error = |message: String| FaultSpecError(message);
        let mut spec = FaultSpec::default();
        let mut seen = Vec::with_capacity(FaultKind::ALL.len());
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, share) = part
                .split_once('=')
                .ok_or_else(|| error(format!("{part:?} is not KIND=PERCENT%")))?;
            let kind = FaultKind::ALL
                .into_iter()
                .find(|kind| kind.as_str() == name.trim())
                .ok_or_else(|| {
                    error(format!(
                        "unknown fault {name:?} (known: silent, halfclose, noread, reset)"
                    ))
                })?;
            // A bare number is refused: `silent=5` could mean 5% or 5 connections.
            let number = match share.trim().strip_suffix('%') {
                Some(number) => number,
                None if share.trim().parse::<f64>().is_ok() => {
                    return Err(error(format!(
                        "{share:?} has no %: write {}={}% for a share of connections",
                        kind.as_str(),
                        share.trim()
                    )))
                }
                None => share.trim(),
            };
            if seen.contains(&kind) {
                return Err(error(format!(
                    "{} is given twice; give each kind once",
                    kind.as_str()
                )));
            }
            seen.push(kind);
            let percent: f64 = number
                .parse()
                .ok()
                .filter(|p: &f64| p.is_finite() && (0.0..=100.0).contains(p))
                .ok_or_else(|| error(format!("{share:?} is not a percentage from 0% to 100%")))?;
            spec.ppm[kind as usize] = (percent * 10_000.0).round() as u32;
        }
        if spec.ppm.iter().sum::<u32>() > MILLION {
            return Err(error("the shares add up to more than 100%".into()));
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shares_with_and_without_decimals() {
        let spec: FaultSpec = "silent=5%,halfclose=1%, noread=0.5% ,reset=1%"
            .parse()
            .unwrap();
        assert_eq!(spec.share(FaultKind::Silent), 0.05);
        assert_eq!(spec.share(FaultKind::HalfClose), 0.01);
        assert_eq!(spec.share(FaultKind::NoRead), 0.005);
        assert_eq!(spec.share(FaultKind::Reset), 0.01);
        assert!("".parse::<FaultSpec>().unwrap().is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_mean() {
        let error = |text: &str| text.parse::<FaultSpec>().unwrap_err().to_string();
        assert!(error("crash=5%").contains("unknown fault \"crash\""));
        assert!(error("silent").contains("not KIND=PERCENT%"));
        assert!(error("silent=lots").contains("not a percentage"));
        assert!(error("silent=-1%").contains("not a percentage"));
        assert!(error("silent=101%").contains("not a percentage"));
        assert!(error("silent=60%,reset=50%").contains("more than 100%"));
        // Issue 21: a share without `%`, and a kind given twice, were accepted silently.
        assert_eq!(
            error("silent=5"),
            "\"5\" has no %: write silent=5% for a share of connections"
        );
        assert_eq!(
            error("silent=5%,reset=1%,silent=1%"),
            "silent is given twice; give each kind once"
        );
    }

    #[test]
    fn the_schedule_is_deterministic_and_honours_the_shares() {
        let spec: FaultSpec = "silent=10%,reset=5%".parse().unwrap();
        let window = Duration::from_secs(10);
        let plan = |seed| -> Vec<_> { (0..20_000).map(|i| spec.plan(seed, i, window)).collect() };
        let first = plan(3);
        assert_eq!(first, plan(3), "same seed, same faults");
        assert_ne!(first, plan(4), "another seed, other faults");
        let count = |kind| first.iter().flatten().filter(|(k, _)| *k == kind).count();
        // 2,000 and 1,000 expected; a binomial spread of a few dozen.
        assert!((1_850..=2_150).contains(&count(FaultKind::Silent)));
        assert!((900..=1_100).contains(&count(FaultKind::Reset)));
        assert_eq!(count(FaultKind::HalfClose) + count(FaultKind::NoRead), 0);
        assert!(first.iter().flatten().all(|(_, at)| *at < window));
        let late = first.iter().flatten().filter(|(_, at)| *at >= window / 2);
        assert!(
            (1_300..=1_700).contains(&late.count()),
            "moments spread over the window"
        );
    }

    #[test]
    fn no_faults_no_plan_and_all_faults_every_connection() {
        let none = FaultSpec::default();
        assert_eq!(none.plan(1, 1, Duration::from_secs(1)), None);
        let all: FaultSpec = "noread=100%".parse().unwrap();
        assert!((0..1000).all(|i| matches!(
            all.plan(9, i, Duration::ZERO),
            Some((FaultKind::NoRead, at)) if at.is_zero()
        )));
    }
}
