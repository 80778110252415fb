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
//! [`flush`] before they exit. On a full disk a line is written whole or not at all (see
//! `queue`); [`reopen`] (`SIGUSR1`) makes each file's writer open its path again.
//!
//! Files: this one is the simplelog glue (the logger, `LineWriter`, flushing, counts);
//! `queue` the queues and writer threads; `sink` the event log's file.
//!
//! Why not `tracing-appender`'s `NonBlocking` under simplelog: its queue is bounded in
//! messages, one per `write` call, and simplelog writes a line in several calls, so its lossy
//! mode can drop part of a line and keep the rest (a line would still have to be gathered
//! here first); its worker writes with `write_all` and reports failures on stderr per
//! failure, with no way to take back a half-written line on a full disk, to note the dropped
//! count in the file itself (the event log's JSON note), to warn once, or to reopen a file on
//! a signal. What it would replace is the queue and the thread, which are small; what we
//! need around them it does not have.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use log::{Level, LevelFilter, Log, Record};
use simplelog::{Config, ConfigBuilder, WriteLogger};

use crate::edge::net::SetupError;

mod queue;
mod sink;

use self::queue::{spawn_writer, Destination, FailureReport, Notes, PathFile, Queue};
pub use self::sink::LineSink;

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
    crate::edge::stop::on_reopen(reopen);
    let thread_error = |source| SetupError::EventLoop {
        what: "log writer thread",
        source,
    };
    let stderr_queue = Arc::new(Queue::new(QUEUE_BYTES));
    // A duplicate of fd 2 (same blocking file description): writing through it never takes
    // std's stderr lock, which the loop's own `eprintln!` would then wait on.
    let stderr: Box<dyn Destination> = match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(File::from(fd)),
        Err(_) => Box::new(io::stderr()),
    };
    spawn_writer("stderr", stderr_queue.clone(), stderr, None, Notes::Log).map_err(thread_error)?;
    let mut sinks = vec![stderr_queue.clone()];
    if let Some(path) = file {
        let file = PathFile::open(path).map_err(|source| SetupError::LogFile {
            path: path.to_path_buf(),
            source,
        })?;
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

/// Asks every writer thread to open its file again by its path (`SIGUSR1`, after logrotate
/// renamed it): lines written from then on land in the new file at the old path. Never
/// waits: each writer reopens before its next batch, and is woken to do it now.
pub fn reopen() {
    REOPEN.fetch_add(1, Ordering::SeqCst);
    queue::wake_all();
}

/// How many times [`reopen`] was called; a writer that saw fewer reopens its file.
static REOPEN: AtomicU64 = AtomicU64::new(0);

fn reopen_generation() -> u64 {
    REOPEN.load(Ordering::SeqCst)
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

#[cfg(test)]
mod tests;
