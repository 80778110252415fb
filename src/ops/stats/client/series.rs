//! The load client's counts per wall-clock second: one fixed-size row per second of the run,
//! so that runs on different hosts line up by second when merged and a report can draw them
//! over time.
//!
//! The loop tells the series the time once per turn ([`Series::at`]); each count the client
//! makes adds to the current second's row (an index, no allocation). A new row is pushed only
//! when a second passes. Rows are bounded: past [`MAX_ROWS`] seconds, counts add to the last
//! row. Reads no clock itself: the loop hands it `now` and, once, the wall-clock time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// At most a day of rows (88 bytes each, ~7.6 MB); a longer run adds into the last row.
pub const MAX_ROWS: usize = 86_400;

/// What each row counts, in the order of [`Row`]'s array and of the JSON's `columns`.
pub const COLUMNS: [&str; COLUMN_COUNT] = [
    "open",
    "opened",
    "failed",
    "closed_by_server",
    "false_deaths",
    "lines",
    "echoes",
    "heartbeats_answered",
    "rtt_sum_us",
    "rtt_max_us",
    "lag_max_us",
];
pub const COLUMN_COUNT: usize = 11;

/// A column of [`Row`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Connections open at the end of the second (a gauge: merged runs add theirs).
    Open,
    Opened,
    Failed,
    ClosedByServer,
    FalseDeaths,
    /// Data lines sent.
    Lines,
    Echoes,
    HeartbeatsAnswered,
    /// Sum of the round trips of the second's echoes, in µs (its mean is this over `echoes`).
    RttSumUs,
    /// The longest round trip in the second, in µs (merged: the longest of all).
    RttMaxUs,
    /// The client's longest lag in the second, in µs (merged: the longest of all).
    LagMaxUs,
}

impl Column {
    /// A merged row takes the larger of these (the rest are sums).
    fn is_max(self) -> bool {
        matches!(self, Column::RttMaxUs | Column::LagMaxUs)
    }
}

/// One second's counts, indexed by [`Column`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row(pub [u64; COLUMN_COUNT]);

impl Row {
    pub fn get(&self, column: Column) -> u64 {
        self.0[column as usize]
    }

    pub fn add(&mut self, column: Column, n: u64) {
        self.0[column as usize] += n;
    }

    /// Keeps the larger of the cell and `value`.
    pub fn max(&mut self, column: Column, value: u64) {
        let cell = &mut self.0[column as usize];
        *cell = (*cell).max(value);
    }

    pub fn set(&mut self, column: Column, value: u64) {
        self.0[column as usize] = value;
    }
}

/// Equal when what is written is: the loop's own bookkeeping (its clock, the spare row) is not
/// part of a series.
impl PartialEq for Series {
    fn eq(&self, other: &Series) -> bool {
        (self.start_unix_secs, &self.columns, &self.rows)
            == (other.start_unix_secs, &other.columns, &other.rows)
    }
}

impl Eq for Series {}

/// `d` in whole microseconds, saturating: in 64-bit arithmetic (`Duration::as_micros` is
/// 128-bit), as it runs for every line and heartbeat.
pub fn micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

/// Rows from the wall-clock second `start_unix_secs` on, one per second.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    /// The Unix time (seconds) of the first row.
    pub start_unix_secs: u64,
    /// [`COLUMNS`], so that a file says what its numbers are.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    /// Where the loop's clock stood at `start_unix_secs`'s boundary (not serialised: an
    /// `Instant` means nothing in another process).
    #[serde(skip)]
    clock: Option<Instant>,
    #[serde(skip)]
    current: usize,
    /// Takes the counts made before [`start`](Series::start) (tests, a loop not started).
    #[serde(skip)]
    spare: Row,
}

impl Series {
    /// Starts the rows at `wall`'s second; `now` is the loop's clock at the same moment.
    pub fn start(&mut self, now: Instant, wall: SystemTime) {
        let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let into_second = Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
        self.start_unix_secs = since_epoch.as_secs();
        self.columns = COLUMNS.iter().map(|c| c.to_string()).collect();
        // The instant the first row's second began, so that rows turn over on the wall
        // clock's seconds, not the run's.
        self.clock = Some(now.checked_sub(into_second).unwrap_or(now));
        self.rows.clear();
        self.rows.push(Row::default());
        self.current = 0;
    }

    /// The loop's clock at this turn: counts from now on go to its second's row. Once per turn.
    pub fn at(&mut self, now: Instant) {
        let Some(clock) = self.clock else { return };
        let second = now.saturating_duration_since(clock).as_secs();
        let index = usize::try_from(second)
            .unwrap_or(usize::MAX)
            .min(MAX_ROWS - 1);
        if index < self.rows.len() {
            self.current = self.current.max(index);
            return;
        }
        // The gauge carries over into the seconds in which nothing happened.
        let open = self.rows.last().map_or(0, |row| row.get(Column::Open));
        let mut empty = Row::default();
        empty.0[Column::Open as usize] = open;
        self.rows.resize(index + 1, empty);
        self.current = index;
    }

    /// The current second's row, which each count adds to: an index, no allocation.
    pub fn row(&mut self) -> &mut Row {
        if self.current < self.rows.len() {
            &mut self.rows[self.current]
        } else {
            &mut self.spare
        }
    }

    /// Adds `other`'s rows to these, second by second of the wall clock: counts and gauges
    /// summed, maxima kept. Fails when the two together would span more than [`MAX_ROWS`]
    /// seconds (runs a day or more apart are not one test).
    pub fn merge(&mut self, other: &Series) -> Result<(), SeriesError> {
        if other.rows.is_empty() {
            return Ok(());
        }
        if self.rows.is_empty() {
            *self = Series {
                clock: None,
                current: 0,
                spare: Row::default(),
                ..other.clone()
            };
            return Ok(());
        }
        let start = self.start_unix_secs.min(other.start_unix_secs);
        let end = (self.start_unix_secs + self.rows.len() as u64)
            .max(other.start_unix_secs + other.rows.len() as u64);
        if end - start > MAX_ROWS as u64 {
            return Err(SeriesError::TooFarApart {
                seconds: end - start,
            });
        }
        let mut rows = vec![Row::default(); (end - start) as usize];
        for series in [&*self, other] {
            let offset = (series.start_unix_secs - start) as usize;
            for (sum, row) in rows[offset..].iter_mut().zip(&series.rows) {
                for (i, column) in ALL.iter().enumerate() {
                    let (cell, add) = (&mut sum.0[i], row.0[i]);
                    *cell = if column.is_max() {
                        (*cell).max(add)
                    } else {
                        *cell + add
                    };
                }
            }
        }
        self.start_unix_secs = start;
        self.rows = rows;
        self.columns = COLUMNS.iter().map(|c| c.to_string()).collect();
        Ok(())
    }
}

const ALL: [Column; COLUMN_COUNT] = [
    Column::Open,
    Column::Opened,
    Column::Failed,
    Column::ClosedByServer,
    Column::FalseDeaths,
    Column::Lines,
    Column::Echoes,
    Column::HeartbeatsAnswered,
    Column::RttSumUs,
    Column::RttMaxUs,
    Column::LagMaxUs,
];

/// Why two series cannot be combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesError {
    TooFarApart { seconds: u64 },
}

impl std::fmt::Display for SeriesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeriesError::TooFarApart { seconds } => write!(
                f,
                "its time series and the others' span {seconds} s together (at most {MAX_ROWS}): \
                 not one test"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn started(wall_ms: u64) -> (Series, Instant) {
        let now = Instant::now();
        let mut s = Series::default();
        s.start(now, UNIX_EPOCH + Duration::from_millis(wall_ms));
        (s, now)
    }

    #[test]
    fn rows_turn_over_on_the_wall_clocks_seconds() {
        // Started 700 ms into second 1000: the first row ends 300 ms later.
        let (mut s, t0) = started(1_000_700);
        assert_eq!(s.start_unix_secs, 1000);
        s.row().add(Column::Lines, 1);
        s.at(t0 + Duration::from_millis(299));
        s.row().add(Column::Lines, 1);
        s.at(t0 + Duration::from_millis(300));
        s.row().add(Column::Lines, 5);
        assert_eq!(s.rows.len(), 2);
        assert_eq!(
            (s.rows[0].get(Column::Lines), s.rows[1].get(Column::Lines)),
            (2, 5)
        );
    }

    #[test]
    fn quiet_seconds_get_rows_that_carry_the_open_gauge() {
        let (mut s, t0) = started(0);
        s.row().set(Column::Open, 7);
        s.row().max(Column::RttMaxUs, 40);
        s.row().max(Column::RttMaxUs, 30);
        s.at(t0 + 3 * SEC);
        assert_eq!(s.rows.len(), 4);
        assert!(s.rows.iter().all(|r| r.get(Column::Open) == 7), "{s:?}");
        assert_eq!(s.rows[0].get(Column::RttMaxUs), 40);
        assert_eq!(s.rows[3].get(Column::RttMaxUs), 0);
        // A clock that went back a little (another turn's `now`) stays in the current row.
        s.at(t0 + SEC);
        s.row().add(Column::Opened, 1);
        assert_eq!(s.rows[3].get(Column::Opened), 1);
    }

    #[test]
    fn rows_are_bounded_and_later_counts_add_to_the_last() {
        let (mut s, t0) = started(0);
        s.at(t0 + Duration::from_secs(10 * MAX_ROWS as u64));
        s.row().add(Column::Failed, 1);
        s.at(t0 + Duration::from_secs(20 * MAX_ROWS as u64));
        s.row().add(Column::Failed, 1);
        assert_eq!(s.rows.len(), MAX_ROWS);
        assert_eq!(s.rows[MAX_ROWS - 1].get(Column::Failed), 2);
    }

    #[test]
    fn merging_aligns_by_wall_clock_second_sums_counts_and_keeps_maxima() {
        let (mut a, ta) = started(100_000);
        a.row().set(Column::Open, 2);
        a.row().max(Column::LagMaxUs, 9);
        a.at(ta + SEC);
        a.row().add(Column::Lines, 3);
        // b started a second later.
        let (mut b, tb) = started(101_500);
        b.row().set(Column::Open, 5);
        b.row().add(Column::Lines, 4);
        b.row().max(Column::LagMaxUs, 2);
        b.at(tb + SEC);
        b.row().add(Column::Lines, 1);
        a.merge(&b).expect("close enough");
        assert_eq!(a.start_unix_secs, 100);
        assert_eq!(a.rows.len(), 3);
        let col = |c| a.rows.iter().map(|r| r.get(c)).collect::<Vec<_>>();
        assert_eq!(col(Column::Lines), [0, 7, 1]);
        assert_eq!(col(Column::Open), [2, 7, 5]);
        assert_eq!(col(Column::LagMaxUs), [9, 2, 0]);
        let (far, _) = started(100_000 + 2_000 * MAX_ROWS as u64);
        assert!(matches!(
            a.merge(&far),
            Err(SeriesError::TooFarApart { .. })
        ));
    }

    #[test]
    fn json_is_columns_and_rows_of_numbers() {
        let (mut s, _) = started(5_000);
        s.row().add(Column::Opened, 1);
        let json = serde_json::to_string(&s).expect("serialises");
        assert!(
            json.starts_with(r#"{"start_unix_secs":5,"columns":["open","opened","#),
            "{json}"
        );
        assert!(
            json.ends_with(r#""rows":[[0,1,0,0,0,0,0,0,0,0,0]]}"#),
            "{json}"
        );
        let back: Series = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back.rows, s.rows);
    }
}
