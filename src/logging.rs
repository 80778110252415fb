//! Where log lines go, without ever making the loop wait for them: stderr always, and a file
//! when `--log-file` is given.
//!
//! Owns the logger: the line format (`2026-01-02T03:04:05.123456789Z [INFO] message`, RFC 3339
//! time in UTC, colour on the level only when stderr is a terminal), one bounded queue and one
//! writer thread per destination, and the count of lines dropped. What is logged, and at which
//! level, is decided where it happens; rate limits are `ratelimit`'s.
//!
//! A `log!` call formats its line and appends it to each destination's queue; it never writes
//! to a file descriptor, so a pipe nobody reads (a stalled log shipper, `| less`) cannot stop
//! the poll loop. When a queue holds [`QUEUE_BYTES`] the line is dropped for that destination
//! and counted ([`dropped_lines`]); the next time that destination's writer gets a batch out,
//! it adds one line saying how many were dropped. A destination that fails (`--log-file
//! /dev/full`) gives one warning on stderr and its lines are dropped and counted until it
//! works again. fd 2 stays blocking (its file description is shared with the shell): only the
//! writer thread ever waits on it. The binaries call [`flush`] before they exit.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::net::{describe, SetupError};

/// Bytes of log lines waiting per destination while it is not keeping up (about 8,000
/// lines). Past it new lines are dropped and counted: memory stays bounded whatever peers do,
/// at about twice this per destination (the lines waiting, and the batch being written).
pub const QUEUE_BYTES: usize = 1 << 20;

/// Bytes a writer thread formats before writing them out.
const CHUNK_BYTES: usize = 64 * 1024;

/// How long [`flush`] waits for a destination that makes no progress at all.
pub const FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// Book-keeping bytes charged per queued line besides its text, so that a flood of empty
/// lines is bounded too.
const LINE_OVERHEAD: usize = 32;

/// Installs the process's logger. Call once, before the loop starts; a second call keeps the
/// first logger.
pub fn init(level: LevelFilter, file: Option<&Path>) -> Result<(), SetupError> {
    if LOGGER.get().is_some() {
        return Ok(());
    }
    let thread_error = |source| SetupError::EventLoop {
        what: "log writer thread",
        source,
    };
    let stderr_queue = Arc::new(Queue::new(QUEUE_BYTES));
    // A duplicate of fd 2 (same blocking file description): writing through it never takes
    // std's stderr lock, which the loop's own `eprintln!` would then wait on.
    let stderr: Box<dyn Write + Send> = match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(File::from(fd)),
        Err(_) => Box::new(io::stderr()),
    };
    let colour = io::stderr().is_terminal();
    spawn_writer("stderr", stderr_queue.clone(), stderr, colour, None).map_err(thread_error)?;
    let mut sinks = vec![stderr_queue.clone()];
    if let Some(path) = file {
        let opened = OpenOptions::new().create(true).append(true).open(path);
        let file = opened.map_err(|source| SetupError::LogFile {
            path: path.to_path_buf(),
            source,
        })?;
        let queue = Arc::new(Queue::new(QUEUE_BYTES));
        let report = FailureReport {
            path: path.to_path_buf(),
            to: stderr_queue,
        };
        spawn_writer("file", queue.clone(), Box::new(file), false, Some(report))
            .map_err(thread_error)?;
        sinks.push(queue);
    }
    if LOGGER.set(Logger { level, sinks }).is_ok() {
        if let Some(logger) = LOGGER.get() {
            if log::set_logger(logger).is_ok() {
                log::set_max_level(level);
            }
        }
    }
    Ok(())
}

/// Lines dropped so far, over every destination (a line lost for both stderr and the file
/// counts twice): queues that were full, and writes that failed.
pub fn dropped_lines() -> u64 {
    LOGGER.get().map_or(0, |logger| {
        logger
            .sinks
            .iter()
            .map(|queue| queue.lock().dropped_total)
            .sum()
    })
}

/// Waits until every queued line has been written, giving up on a destination that makes no
/// progress for [`FLUSH_PATIENCE`]. Returns true if everything was written. The binaries call
/// it before exiting so that the last lines (`received SIGTERM`) are not lost.
pub fn flush() -> bool {
    let Some(logger) = LOGGER.get() else {
        return true;
    };
    // Every destination gets its chance, even after one has given up.
    let mut all = true;
    for queue in &logger.sinks {
        all &= queue.wait_drained(FLUSH_PATIENCE);
    }
    all
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

struct Logger {
    level: LevelFilter,
    sinks: Vec<Arc<Queue>>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = Line::new(SystemTime::now(), record.level(), record.args());
        if let Some((last, rest)) = self.sinks.split_last() {
            for queue in rest {
                queue.push(line.clone());
            }
            last.push(line);
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// One formatted line, without its newline; `tag` is where `[LEVEL]` starts, for colour.
#[derive(Debug, Clone)]
struct Line {
    level: Level,
    text: String,
    tag: usize,
}

impl Line {
    fn new(time: SystemTime, level: Level, message: impl std::fmt::Display) -> Line {
        let mut text = String::with_capacity(96);
        write_rfc3339(&mut text, time);
        text.push(' ');
        let tag = text.len();
        // Writing into a String cannot fail, but a Display impl may report an error: the
        // line then holds what it wrote.
        let _ = write!(text, "[{level}] {message}");
        Line { level, text, tag }
    }

    /// What the line holds in memory while queued (its allocation, not just its text).
    fn cost(&self) -> usize {
        self.text.capacity() + LINE_OVERHEAD
    }

    fn write_to(&self, out: &mut Vec<u8>, colour: bool) {
        let tag_end = self.tag + self.level.as_str().len() + 2;
        let text = &self.text;
        let parts = (
            text.get(..self.tag),
            text.get(self.tag..tag_end),
            text.get(tag_end..),
        );
        match (colour, parts) {
            (true, (Some(time), Some(tag), Some(rest))) => {
                out.extend_from_slice(time.as_bytes());
                out.extend_from_slice(ansi_colour(self.level).as_bytes());
                out.extend_from_slice(tag.as_bytes());
                out.extend_from_slice(b"\x1b[0m");
                out.extend_from_slice(rest.as_bytes());
            }
            _ => out.extend_from_slice(self.text.as_bytes()),
        }
        out.push(b'\n');
    }
}

/// The colours simplelog used, so a terminal looks as it did.
fn ansi_colour(level: Level) -> &'static str {
    match level {
        Level::Error => "\x1b[31m",
        Level::Warn => "\x1b[33m",
        Level::Info => "\x1b[34m",
        Level::Debug => "\x1b[36m",
        Level::Trace => "\x1b[37m",
    }
}

/// `1970-01-01T00:00:00.000000000Z`: RFC 3339 in UTC, nanoseconds, so lines sort as text.
fn write_rfc3339(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_nanos()
    );
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// One destination's bounded queue, shared by the logger (which appends) and its writer
/// thread (which takes everything queued at once).
struct Queue {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    lines: VecDeque<Line>,
    /// What `lines` costs, against `capacity`.
    bytes: usize,
    capacity: usize,
    /// Dropped since the last report line.
    dropped: u64,
    dropped_total: u64,
    /// The writer holds a batch it has not finished writing.
    busy: bool,
    /// The last write failed; no report line is attempted until a new line arrives.
    failing: bool,
    /// Batches finished, so that `wait_drained` can tell a slow destination from a dead one.
    batches: u64,
}

impl State {
    fn drained(&self) -> bool {
        self.lines.is_empty() && !self.busy && (self.dropped == 0 || self.failing)
    }
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                capacity,
                ..State::default()
            }),
            changed: Condvar::new(),
        }
    }

    /// A poisoned lock only means a writer thread panicked mid-batch; the counts stay usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `line`, or drops and counts it if the queue is full. Never waits for output.
    fn push(&self, line: Line) -> bool {
        let mut state = self.lock();
        if state.bytes + line.cost() > state.capacity {
            state.dropped += 1;
            state.dropped_total += 1;
            return false;
        }
        state.bytes += line.cost();
        let was_empty = state.lines.is_empty();
        state.lines.push_back(line);
        drop(state);
        if was_empty {
            self.changed.notify_all();
        }
        true
    }

    /// Waits for the writer to write everything queued; false if it made no progress for
    /// `patience`.
    fn wait_drained(&self, patience: Duration) -> bool {
        let mut state = self.lock();
        let mut batches = state.batches;
        let mut since = Instant::now();
        loop {
            if state.drained() {
                return true;
            }
            if state.batches != batches {
                batches = state.batches;
                since = Instant::now();
            }
            let Some(left) = patience.checked_sub(since.elapsed()) else {
                return false;
            };
            let wait = left.min(Duration::from_millis(50));
            state = match self.changed.wait_timeout(state, wait) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Where a failing log file says so, once: the stderr queue.
struct FailureReport {
    path: PathBuf,
    to: Arc<Queue>,
}

/// The thread is named `log NAME` (`log stderr`, `log file`), as `/proc` shows it.
fn spawn_writer(
    name: &str,
    queue: Arc<Queue>,
    out: Box<dyn Write + Send>,
    colour: bool,
    report: Option<FailureReport>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("log {name}"))
        .spawn(move || write_forever(&queue, out, colour, report))
        .map(drop)
}

/// The writer thread: takes every queued line at once, writes them in one go, then a line
/// for whatever was dropped meanwhile. Only this thread ever waits on the destination.
fn write_forever(
    queue: &Queue,
    mut out: Box<dyn Write + Send>,
    colour: bool,
    report: Option<FailureReport>,
) {
    let mut batch = VecDeque::new();
    let mut bytes = Vec::new();
    loop {
        let dropped = {
            let mut state = queue.lock();
            while state.lines.is_empty() && (state.dropped == 0 || state.failing) {
                state = match queue.changed.wait(state) {
                    Ok(state) => state,
                    Err(poisoned) => poisoned.into_inner(),
                };
            }
            std::mem::swap(&mut batch, &mut state.lines);
            state.bytes = 0;
            state.busy = true;
            std::mem::take(&mut state.dropped)
        };
        let result = write_batch(&mut *out, &mut batch, dropped, colour, &mut bytes);
        let mut state = queue.lock();
        state.busy = false;
        state.batches += 1;
        match result {
            Ok(()) => state.failing = false,
            Err((lost, error)) => {
                state.dropped += dropped + lost;
                state.dropped_total += lost;
                if !state.failing {
                    state.failing = true;
                    if let Some(report) = &report {
                        let message = format_args!(
                            "log file {}: cannot write: {}; its lines are dropped and counted \
                             until it can be written again",
                            report.path.display(),
                            describe(&error)
                        );
                        report
                            .to
                            .push(Line::new(SystemTime::now(), Level::Warn, message));
                    }
                }
            }
        }
        drop(state);
        queue.changed.notify_all();
        batch.clear();
        // A burst must not keep its memory for the rest of the run.
        if batch.capacity() > 1024 {
            batch = VecDeque::new();
        }
        if bytes.capacity() > 2 * CHUNK_BYTES {
            bytes = Vec::new();
        }
    }
}

/// Writes `batch`, emptying it, then the line reporting `dropped` lines, in chunks of about
/// [`CHUNK_BYTES`], so that a batch is never held twice (as lines and as bytes). On failure,
/// returns how many of the batch's lines did not go out, and the error.
fn write_batch(
    out: &mut dyn Write,
    batch: &mut VecDeque<Line>,
    dropped: u64,
    colour: bool,
    bytes: &mut Vec<u8>,
) -> Result<(), (u64, io::Error)> {
    let total = batch.len() as u64;
    let mut written = 0;
    let mut in_chunk = 0;
    bytes.clear();
    while let Some(line) = batch.pop_front() {
        line.write_to(bytes, colour);
        in_chunk += 1;
        if bytes.len() >= CHUNK_BYTES {
            write_chunk(out, bytes).map_err(|e| (total - written, e))?;
            written += in_chunk;
            in_chunk = 0;
        }
    }
    if dropped > 0 {
        let message =
            format_args!("{dropped} log lines dropped: this log's output was not keeping up");
        Line::new(SystemTime::now(), Level::Warn, message).write_to(bytes, colour);
    }
    write_chunk(out, bytes)
        .and_then(|()| out.flush())
        .map_err(|e| (total - written, e))
}

fn write_chunk(out: &mut dyn Write, bytes: &mut Vec<u8>) -> io::Result<()> {
    let result = out.write_all(bytes);
    bytes.clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn line(text: &str) -> Line {
        Line::new(at(0, 0), Level::Info, text)
    }

    #[test]
    fn lines_look_as_simplelog_wrote_them() {
        let l = Line::new(at(0, 0), Level::Info, "received SIGTERM: stopping");
        assert_eq!(
            l.text,
            "1970-01-01T00:00:00.000000000Z [INFO] received SIGTERM: stopping"
        );
        let l = Line::new(at(951_825_845, 7), Level::Warn, format_args!("{} x", 1));
        assert_eq!(l.text, "2000-02-29T12:04:05.000000007Z [WARN] 1 x");
        let mut out = Vec::new();
        l.write_to(&mut out, true);
        assert_eq!(
            out,
            b"2000-02-29T12:04:05.000000007Z \x1b[33m[WARN]\x1b[0m 1 x\n"
        );
        out.clear();
        l.write_to(&mut out, false);
        assert_eq!(out, b"2000-02-29T12:04:05.000000007Z [WARN] 1 x\n");
    }

    #[test]
    fn dates_at_the_edges_of_months_years_and_leap_days() {
        let date = |days| civil_from_days(days);
        assert_eq!(date(0), (1970, 1, 1));
        assert_eq!(date(58), (1970, 2, 28));
        assert_eq!(date(59), (1970, 3, 1));
        assert_eq!(date(365), (1971, 1, 1));
        assert_eq!(date(11_016), (2000, 2, 29));
        assert_eq!(date(11_017), (2000, 3, 1));
        assert_eq!(date(47_540), (2100, 2, 28));
        assert_eq!(date(47_541), (2100, 3, 1), "2100 is not a leap year");
        assert_eq!(date(20_818), (2026, 12, 31));
        assert_eq!(date(20_819), (2027, 1, 1));
    }

    /// A destination that blocks until opened, like a pipe nobody reads.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Gate {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut open = self.open.0.lock().unwrap();
            while !*open {
                open = self.open.1.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wait_until(mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "hang guard");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_blocked_destination_never_blocks_the_caller_and_drops_are_reported_once_it_drains() {
        let gate = Gate::default();
        let queue = Arc::new(Queue::new(10 * line("n").cost()));
        spawn_writer("test", queue.clone(), Box::new(gate.clone()), false, None).unwrap();
        assert!(queue.push(line("first")));
        wait_until(|| queue.lock().busy);
        // The writer is stuck on "first": ten more fit, the rest are dropped without waiting.
        let kept = (0..100)
            .filter(|n| queue.push(line(&n.to_string())))
            .count();
        assert_eq!(kept, 10);
        assert_eq!(queue.lock().dropped_total, 90);
        assert!(
            !queue.wait_drained(Duration::from_millis(50)),
            "still blocked"
        );
        gate.open();
        assert!(queue.wait_drained(Duration::from_secs(10)));
        let text = gate.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 12, "{text}");
        assert!(lines[0].ends_with("[INFO] first"), "{text}");
        assert!(lines[10].ends_with("[INFO] 9"), "kept in order: {text}");
        assert!(
            lines[11]
                .ends_with("[WARN] 90 log lines dropped: this log's output was not keeping up"),
            "{text}"
        );
        // Once reported, the count is not repeated.
        assert!(queue.push(line("after")));
        assert!(queue.wait_drained(Duration::from_secs(10)));
        assert!(gate.text().ends_with("[INFO] after\n"));
    }

    /// Accepts its first write whole, then fails like a full disk.
    #[derive(Default)]
    struct FirstWriteOnly {
        written: Vec<u8>,
    }

    impl Write for FirstWriteOnly {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.written.is_empty() {
                return Err(io::Error::from_raw_os_error(28));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_batch_goes_out_in_order_in_chunks_and_a_failure_counts_the_lines_not_written() {
        let lines =
            || -> VecDeque<Line> { (0..3000).map(|n| line(&format!("line {n}"))).collect() };
        let mut batch = lines();
        let (mut out, mut bytes) = (Vec::new(), Vec::new());
        assert!(write_batch(&mut out, &mut batch, 7, false, &mut bytes).is_ok());
        assert!(batch.is_empty());
        assert!(out.len() > 2 * CHUNK_BYTES, "more than one chunk");
        let text = String::from_utf8(out).unwrap();
        let written: Vec<&str> = text.lines().collect();
        assert_eq!(written.len(), 3001);
        assert!(written
            .iter()
            .take(3000)
            .enumerate()
            .all(|(n, l)| l.ends_with(&format!("] line {n}"))));
        assert!(
            written[3000].contains("[WARN] 7 log lines dropped"),
            "{}",
            written[3000]
        );

        let mut out = FirstWriteOnly::default();
        let mut batch = lines();
        let (lost, _) = write_batch(&mut out, &mut batch, 0, false, &mut bytes).unwrap_err();
        let went_out = out.written.iter().filter(|b| **b == b'\n').count() as u64;
        assert!(went_out > 0 && went_out < 3000, "{went_out}");
        assert_eq!(lost, 3000 - went_out);
    }

    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_file_warns_once_on_stderr_and_counts_what_it_loses() {
        let stderr = Arc::new(Queue::new(QUEUE_BYTES));
        let file = Arc::new(Queue::new(QUEUE_BYTES));
        let report = FailureReport {
            path: PathBuf::from("/dev/full"),
            to: stderr.clone(),
        };
        spawn_writer("test", file.clone(), Box::new(Full), false, Some(report)).unwrap();
        for n in 0..5 {
            assert!(file.push(line(&n.to_string())));
            assert!(file.wait_drained(Duration::from_secs(10)));
        }
        assert_eq!(file.lock().dropped_total, 5);
        let warnings = &stderr.lock().lines;
        assert_eq!(warnings.len(), 1, "one warning, not one per line");
        assert!(
            warnings[0].text.ends_with(
                "[WARN] log file /dev/full: cannot write: no space left on device; its lines \
                 are dropped and counted until it can be written again"
            ),
            "{}",
            warnings[0].text
        );
    }
}
