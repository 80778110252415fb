//! Where log lines go, without ever making the loop wait for them: stderr always, and a file
//! when `--log-file` is given.
//!
//! simplelog formats the lines and filters them by level: its `WriteLogger`, with RFC 3339
//! time in UTC and no target or thread (`2026-01-02T03:04:05.123456789Z [INFO] message`; the
//! fraction loses its trailing zeros, so the time is not fixed-width).
//! This module owns what comes after: `LineWriter`, the writer simplelog writes into, which
//! gathers each line and queues it whole; one bounded queue and one writer thread per
//! destination; the count of lines dropped. Lines are plain text, also on a terminal:
//! simplelog colours only its `TermLogger`, which writes to the terminal itself and would
//! make the loop wait for it. What is logged, and at which level, is decided where it
//! happens; rate limits are `ratelimit`'s.
//!
//! A `log!` call never writes to a file descriptor, so a pipe nobody reads (a stalled log
//! shipper, `| less`) cannot stop the poll loop. When a queue holds [`QUEUE_BYTES`] the line is
//! dropped for that destination and counted ([`dropped_lines`]); the next time that
//! destination's writer gets a batch out, it adds one line saying how many were dropped. A
//! destination that fails (`--log-file /dev/full`) gives one warning on stderr and its lines
//! are dropped and counted until it works again. fd 2 stays blocking (its file description is
//! shared with the shell): only the writer thread ever waits on it. The binaries call
//! [`flush`] before they exit.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Record};
use simplelog::{Config, ConfigBuilder, WriteLogger};

use crate::edge::net::{describe, SetupError};

/// Bytes of log lines waiting per destination while it is not keeping up (about 8,000
/// lines). Past it new lines are dropped and counted: memory stays bounded whatever peers do,
/// at about twice this per destination (the lines waiting, and the batch being written).
pub const QUEUE_BYTES: usize = 1 << 20;

/// Bytes of one line kept; the rest of a longer line is cut, and the line says how much.
pub const LINE_BYTES: usize = 16 * 1024;

/// Bytes a writer thread gathers before writing them out.
const CHUNK_BYTES: usize = 64 * 1024;

/// How long [`flush`] waits for a destination that makes no progress at all.
pub const FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// Book-keeping bytes charged per queued line besides its text, so that a flood of empty
/// lines is bounded too.
const LINE_OVERHEAD: usize = 32;

/// One queued line, its newline included.
type Line = Box<[u8]>;

/// Installs the process's logger. Call once, before the loop starts; a second call keeps the
/// first logger.
pub fn init(level: LevelFilter, file: Option<&Path>) -> Result<(), SetupError> {
    if SINKS.get().is_some() {
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
    spawn_writer("stderr", stderr_queue.clone(), stderr, None, Notes::Log).map_err(thread_error)?;
    let mut sinks = vec![stderr_queue.clone()];
    if let Some(path) = file {
        let file = open_append(path)?;
        let queue = Arc::new(Queue::new(QUEUE_BYTES));
        let report = FailureReport {
            what: "log file",
            path: path.to_path_buf(),
            to: stderr_queue,
        };
        spawn_writer(
            "file",
            queue.clone(),
            Box::new(file),
            Some(report),
            Notes::Log,
        )
        .map_err(thread_error)?;
        sinks.push(queue);
    }
    if SINKS.set(sinks.clone()).is_ok() {
        // Fails only if another logger is installed already; that one keeps working.
        let logger = WriteLogger::new(level, config(), LineWriter::new(sinks));
        let _ = match PREFIX.get() {
            Some(prefix) => log::set_boxed_logger(Box::new(Prefixed { logger, prefix })),
            None => log::set_boxed_logger(logger),
        }
        .map(|()| log::set_max_level(level));
    }
    Ok(())
}

/// Put before every message of this process (`worker 1: `); `None` until [`set_prefix`].
static PREFIX: OnceLock<String> = OnceLock::new();

/// Names this process in each of its log lines, after the time and level (`… [INFO] worker
/// 1: stopping`): `--workers` processes share stderr and the log file. Call before [`init`].
pub fn set_prefix(prefix: String) {
    let _ = PREFIX.set(prefix);
}

/// simplelog's logger with [`PREFIX`] put before each message (formatted in place: no
/// allocation per line).
struct Prefixed {
    logger: Box<WriteLogger<LineWriter>>,
    prefix: &'static str,
}

impl Log for Prefixed {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.logger.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.logger.log(
            &Record::builder()
                .args(format_args!("{}{}", self.prefix, record.args()))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.logger.flush();
    }
}

/// Lines dropped so far, over every destination, the event log's included (a line lost for
/// both stderr and the file counts twice): queues that were full, and writes that failed.
pub fn dropped_lines() -> u64 {
    let logs = SINKS.get().map_or(0, |sinks| {
        sinks.iter().map(|queue| queue.lock().dropped_total).sum()
    });
    let others = lock_others()
        .iter()
        .map(|q| q.lock().dropped_total)
        .sum::<u64>();
    logs + others
}

/// A file of lines of its own (the event log), written like the log: [`LineSink::push`]
/// queues a whole line and never waits; a thread named `log events` writes them; a full
/// queue drops lines, counted in [`dropped_lines`] and noted in the file as a JSON line
/// `{"event":"dropped","lines":N}`; a failing file gives one warning on stderr. [`flush`]
/// waits for it too.
pub struct LineSink {
    queue: Arc<Queue>,
}

impl LineSink {
    /// Opens `path` for appending and starts its writer.
    pub fn open(path: &Path) -> Result<LineSink, SetupError> {
        let file = open_append(path)?;
        let queue = Arc::new(Queue::new(QUEUE_BYTES));
        let report = SINKS
            .get()
            .and_then(|sinks| sinks.first())
            .map(|stderr| FailureReport {
                what: "event log",
                path: path.to_path_buf(),
                to: stderr.clone(),
            });
        spawn_writer("events", queue.clone(), Box::new(file), report, Notes::Json).map_err(
            |source| SetupError::EventLoop {
                what: "event log writer thread",
                source,
            },
        )?;
        lock_others().push(queue.clone());
        Ok(LineSink { queue })
    }

    /// Queues one line (it must end in `\n`), or drops and counts it if the queue is full.
    pub fn push(&self, line: &[u8]) {
        self.queue.push(line.into());
    }
}

/// Opens a log or event file for appending, creating it if need be.
fn open_append(path: &Path) -> Result<File, SetupError> {
    let opened = OpenOptions::new().create(true).append(true).open(path);
    opened.map_err(|source| SetupError::LogFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Queues of [`LineSink`]s, for [`dropped_lines`] and [`flush`].
static OTHERS: Mutex<Vec<Arc<Queue>>> = Mutex::new(Vec::new());

fn lock_others() -> MutexGuard<'static, Vec<Arc<Queue>>> {
    OTHERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until every queued line has been written, giving up on a destination that makes no
/// progress for [`FLUSH_PATIENCE`]. Returns true if everything was written. The binaries call
/// it before exiting so that the last lines (`received SIGTERM`) are not lost.
pub fn flush() -> bool {
    let mut queues: Vec<Arc<Queue>> = SINKS.get().cloned().unwrap_or_default();
    queues.extend(lock_others().iter().cloned());
    // Every destination gets its chance, even after one has given up.
    let mut all = true;
    for queue in &queues {
        all &= queue.wait_drained(FLUSH_PATIENCE);
    }
    all
}

/// Every destination's queue, stderr first.
static SINKS: OnceLock<Vec<Arc<Queue>>> = OnceLock::new();

/// simplelog's settings: RFC 3339 time in UTC, the level, the message; no target, thread or
/// source location. (simplelog panics if the time cannot be written as RFC 3339: a clock past
/// the year 9999.)
fn config() -> Config {
    ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .build()
}

/// One line formatted by simplelog, for the lines the writer threads add themselves.
fn own_line(level: Level, message: fmt::Arguments<'_>) -> Line {
    let queue = Arc::new(Queue::new(QUEUE_BYTES));
    let logger = WriteLogger::new(
        LevelFilter::Trace,
        config(),
        LineWriter::new(vec![queue.clone()]),
    );
    logger.log(&Record::builder().level(level).args(message).build());
    let line = queue.lock().lines.pop_front();
    line.unwrap_or_default()
}

/// What simplelog writes into. It calls `write` several times per line (the time, the level,
/// the message); this gathers the pieces up to each newline and queues the whole line for
/// every destination. It never waits for output and never fails. A line longer than
/// [`LINE_BYTES`] is cut there and ends with how many bytes were cut.
///
/// A message's own newlines make separate lines (each may be dropped on its own); a message
/// whose `Display` fails midway leaves its start to be joined to the next line.
struct LineWriter {
    sinks: Vec<Arc<Queue>>,
    line: Vec<u8>,
    /// Bytes of the current line past [`LINE_BYTES`], not kept.
    cut: usize,
}

impl LineWriter {
    fn new(sinks: Vec<Arc<Queue>>) -> LineWriter {
        LineWriter {
            sinks,
            line: Vec::with_capacity(256),
            cut: 0,
        }
    }

    fn gather(&mut self, piece: &[u8]) {
        let kept = piece.len().min(LINE_BYTES.saturating_sub(self.line.len()));
        self.line.extend_from_slice(&piece[..kept]);
        self.cut += piece.len() - kept;
    }

    fn end_line(&mut self) {
        if self.cut > 0 {
            // The cut may have split a character: it becomes U+FFFD, the line stays UTF-8.
            let kept = String::from_utf8_lossy(&self.line).into_owned();
            self.line = format!("{kept} [... {} bytes cut]", self.cut).into_bytes();
            self.cut = 0;
        }
        self.line.push(b'\n');
        for queue in &self.sinks {
            queue.push(Line::from(self.line.as_slice()));
        }
        self.line.clear();
        // A cut line must not keep its memory for the rest of the run.
        if self.line.capacity() > 4096 {
            self.line = Vec::with_capacity(256);
        }
    }
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let (line, after) = rest.split_at(end);
            self.gather(line);
            self.end_line();
            rest = after.get(1..).unwrap_or_default();
        }
        self.gather(rest);
        Ok(buf.len())
    }

    /// Nothing to do: lines are queued as they end, and [`flush`] waits for the writers.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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

/// What a line holds in memory while queued.
fn cost(line: &Line) -> usize {
    line.len() + LINE_OVERHEAD
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
        if state.bytes + cost(&line) > state.capacity {
            state.dropped += 1;
            state.dropped_total += 1;
            return false;
        }
        state.bytes += cost(&line);
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
    /// What the file is, for the warning: `log file`, `event log`.
    what: &'static str,
    path: PathBuf,
    to: Arc<Queue>,
}

/// How a destination's own lines (how many were dropped) are written: as a log line, or as
/// a JSON object (the event log, which a machine reads line by line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notes {
    Log,
    Json,
}

/// The thread is named `log NAME` (`log stderr`, `log file`), as `/proc` shows it.
fn spawn_writer(
    name: &str,
    queue: Arc<Queue>,
    out: Box<dyn Write + Send>,
    report: Option<FailureReport>,
    notes: Notes,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("log {name}"))
        .spawn(move || write_forever(&queue, out, report, notes))
        .map(drop)
}

/// The writer thread: takes every queued line at once, writes them in one go, then a line
/// for whatever was dropped meanwhile. Only this thread ever waits on the destination.
fn write_forever(
    queue: &Queue,
    mut out: Box<dyn Write + Send>,
    report: Option<FailureReport>,
    notes: Notes,
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
        let result = write_batch(&mut *out, &mut batch, dropped, &mut bytes, notes);
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
                        report.to.push(own_line(
                            Level::Warn,
                            format_args!(
                                "{} {}: cannot write: {}; its lines are dropped and \
                                 counted until it can be written again",
                                report.what,
                                report.path.display(),
                                describe(&error)
                            ),
                        ));
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
    bytes: &mut Vec<u8>,
    notes: Notes,
) -> Result<(), (u64, io::Error)> {
    let total = batch.len() as u64;
    let mut written = 0;
    let mut in_chunk = 0;
    bytes.clear();
    while let Some(line) = batch.pop_front() {
        bytes.extend_from_slice(&line);
        in_chunk += 1;
        if bytes.len() >= CHUNK_BYTES {
            write_chunk(out, bytes).map_err(|e| (total - written, e))?;
            written += in_chunk;
            in_chunk = 0;
        }
    }
    if dropped > 0 {
        match notes {
            Notes::Log => {
                let message = format_args!(
                    "{dropped} log lines dropped: this log's output was not keeping up"
                );
                bytes.extend_from_slice(&own_line(Level::Warn, message));
            }
            Notes::Json => {
                let note = format!("{{\"event\":\"dropped\",\"lines\":{dropped}}}\n");
                bytes.extend_from_slice(note.as_bytes());
            }
        }
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

    /// A queued line as the tests write it, without simplelog's time.
    fn line(text: &str) -> Line {
        format!("{text}\n").into_bytes().into()
    }

    fn texts(queue: &Queue) -> Vec<String> {
        let state = queue.lock();
        let lines = state.lines.iter();
        lines
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    /// `2026-01-02T03:04:05.123456789Z `: RFC 3339 in UTC, then one space.
    fn starts_with_rfc3339_utc(line: &str) -> bool {
        let time = line.split(' ').next().unwrap_or_default();
        let shape: String = time
            .chars()
            .map(|c| if c.is_ascii_digit() { 'd' } else { c })
            .collect();
        shape.starts_with("dddd-dd-ddTdd:dd:dd") && shape.ends_with('Z') && line.len() > time.len()
    }

    #[test]
    fn simplelog_lines_are_queued_whole_for_every_destination_and_filtered_by_level() {
        let (a, b) = (
            Arc::new(Queue::new(QUEUE_BYTES)),
            Arc::new(Queue::new(QUEUE_BYTES)),
        );
        let logger = WriteLogger::new(
            LevelFilter::Info,
            config(),
            LineWriter::new(vec![a.clone(), b.clone()]),
        );
        let record = |level, message: &str| {
            logger.log(
                &Record::builder()
                    .level(level)
                    .target("heartbeat::server")
                    .file(Some("src/server.rs"))
                    .line(Some(7))
                    .args(format_args!("{message}"))
                    .build(),
            );
        };
        record(Level::Info, "received SIGTERM: stopping");
        record(Level::Debug, "not at info level");
        record(Level::Error, "two\nlines");
        let lines = texts(&a);
        assert_eq!(lines, texts(&b), "the same lines for both destinations");
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(starts_with_rfc3339_utc(&lines[0]), "{lines:?}");
        assert!(
            lines[0].ends_with(" [INFO] received SIGTERM: stopping\n"),
            "no target, thread or location: {lines:?}"
        );
        assert_eq!(lines[0].split(' ').count(), 5, "{lines:?}");
        assert!(lines[1].ends_with(" [ERROR] two\n"), "{lines:?}");
        assert_eq!(lines[2], "lines\n");
    }

    #[test]
    fn a_line_written_in_pieces_is_queued_once_whole_and_an_overlong_line_is_cut() {
        let queue = Arc::new(Queue::new(QUEUE_BYTES));
        let mut writer = LineWriter::new(vec![queue.clone()]);
        for piece in ["2026", "-01-02 ", "[INFO] ", "abc", "def\nghi", "", "\n"] {
            assert_eq!(writer.write(piece.as_bytes()).ok(), Some(piece.len()));
            if piece == "abc" {
                assert!(
                    texts(&queue).is_empty(),
                    "nothing queued before the newline"
                );
            }
        }
        assert_eq!(texts(&queue), ["2026-01-02 [INFO] abcdef\n", "ghi\n"]);

        queue.lock().lines.clear();
        let long = "x".repeat(LINE_BYTES - 1);
        for piece in [
            long.as_str(),
            "é",
            "y",
            &"z".repeat(3 * LINE_BYTES),
            "\nnext\n",
        ] {
            assert!(writer.write_all(piece.as_bytes()).is_ok());
        }
        let lines = texts(&queue);
        assert_eq!(lines.len(), 2);
        let cut = 1 + 1 + 3 * LINE_BYTES;
        let expected = format!("{long}\u{FFFD} [... {cut} bytes cut]\n");
        assert!(lines[0] == expected, "{}", &lines[0][LINE_BYTES - 8..]);
        assert_eq!(lines[1], "next\n", "the next line is whole");
        assert!(
            writer.line.capacity() <= 4096,
            "the cut line's memory is given back"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_whole_lines_never_parts() {
        let queue = Arc::new(Queue::new(3 * cost(&line("0123456789"))));
        let mut writer = LineWriter::new(vec![queue.clone()]);
        for n in 0..10 {
            // Written as simplelog does it: in pieces.
            let wrote = write!(writer, "0123456").and_then(|()| writeln!(writer, "{:03}", n));
            assert!(wrote.is_ok(), "the writer never fails");
        }
        assert_eq!(
            texts(&queue),
            ["0123456000\n", "0123456001\n", "0123456002\n"]
        );
        let state = queue.lock();
        assert_eq!((state.dropped, state.dropped_total), (7, 7));
        assert_eq!(state.bytes, 3 * cost(&line("0123456789")));
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
        let queue = Arc::new(Queue::new(10 * cost(&line("n"))));
        spawn_writer(
            "test",
            queue.clone(),
            Box::new(gate.clone()),
            None,
            Notes::Log,
        )
        .unwrap();
        let mut writer = LineWriter::new(vec![queue.clone()]);
        assert!(writeln!(writer, "first").is_ok());
        wait_until(|| queue.lock().busy);
        // The writer is stuck on "first": ten more fit, the rest are dropped without waiting.
        for n in 0..100 {
            assert!(writeln!(writer, "{}", n % 10).is_ok());
        }
        assert_eq!(queue.lock().lines.len(), 10);
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
        assert_eq!(lines[..3], ["first", "0", "1"], "kept in order: {text}");
        assert_eq!(lines[10], "9", "kept in order: {text}");
        assert!(starts_with_rfc3339_utc(lines[11]), "{text}");
        assert!(
            lines[11]
                .ends_with(" [WARN] 90 log lines dropped: this log's output was not keeping up"),
            "{text}"
        );
        // Once reported, the count is not repeated.
        assert!(writeln!(writer, "after").is_ok());
        assert!(queue.wait_drained(Duration::from_secs(10)));
        assert!(
            gate.text().ends_with("keeping up\nafter\n"),
            "{}",
            gate.text()
        );
    }

    /// The event log's own note of dropped lines is a JSON object, so that every line of the
    /// file still parses.
    #[test]
    fn a_json_destination_notes_drops_as_a_json_line() {
        let mut batch: VecDeque<Line> = [line("{\"event\":\"connect\"}")].into();
        let mut out = Vec::new();
        let mut bytes = Vec::new();
        assert!(write_batch(&mut out, &mut batch, 3, &mut bytes, Notes::Json).is_ok());
        let text = String::from_utf8(out).unwrap();
        for l in text.lines() {
            assert!(serde_json::from_str::<serde_json::Value>(l).is_ok(), "{l}");
        }
        assert!(
            text.ends_with("{\"event\":\"dropped\",\"lines\":3}\n"),
            "{text}"
        );
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
        // About 60 bytes a line, as a logged line with its time is.
        let padded = |n| format!("line {n:<4} {}", "-".repeat(50));
        let lines = || -> VecDeque<Line> { (0..3000).map(|n| line(&padded(n))).collect() };
        let mut batch = lines();
        let (mut out, mut bytes) = (Vec::new(), Vec::new());
        assert!(write_batch(&mut out, &mut batch, 7, &mut bytes, Notes::Log).is_ok());
        assert!(batch.is_empty());
        assert!(out.len() > 2 * CHUNK_BYTES, "more than one chunk");
        let text = String::from_utf8(out).unwrap();
        let written: Vec<&str> = text.lines().collect();
        assert_eq!(written.len(), 3001);
        assert!(written
            .iter()
            .take(3000)
            .enumerate()
            .all(|(n, l)| *l == padded(n)));
        assert!(
            written[3000].contains(" [WARN] 7 log lines dropped"),
            "{}",
            written[3000]
        );

        let mut out = FirstWriteOnly::default();
        let mut batch = lines();
        let (lost, _) = write_batch(&mut out, &mut batch, 0, &mut bytes, Notes::Log).unwrap_err();
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
            what: "log file",
            path: PathBuf::from("/dev/full"),
            to: stderr.clone(),
        };
        spawn_writer(
            "test",
            file.clone(),
            Box::new(Full),
            Some(report),
            Notes::Log,
        )
        .unwrap();
        for n in 0..5 {
            assert!(file.push(line(&n.to_string())));
            assert!(file.wait_drained(Duration::from_secs(10)));
        }
        assert_eq!(file.lock().dropped_total, 5);
        let warnings = texts(&stderr);
        assert_eq!(warnings.len(), 1, "one warning, not one per line");
        assert!(starts_with_rfc3339_utc(&warnings[0]), "{warnings:?}");
        assert!(
            warnings[0].ends_with(
                " [WARN] log file /dev/full: cannot write: no space left on device; its lines \
                 are dropped and counted until it can be written again\n"
            ),
            "{warnings:?}"
        );
    }
}
