//! The writing side of logging: one bounded queue per destination, filled by the logger and
//! the event log without waiting, and one writer thread per destination that empties it.
//!
//! Owns the queue (its byte bound, the counts of lines dropped), the writer thread (batches,
//! chunks, the note of lines dropped, one warning when a destination fails), whole lines on
//! a full disk (a line cut short is taken back, never glued to the next) and reopening a
//! file by its path. Does not own formatting (`logging`, simplelog's) or what is logged.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use log::Level;

use super::{own_line, Line, CHUNK_BYTES, LINE_OVERHEAD};
use crate::edge::net::describe;

/// One destination's bounded queue, shared by the logger (which appends) and its writer
/// thread (which takes everything queued at once).
pub(super) struct Queue {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) lines: VecDeque<Line>,
    /// What `lines` costs, against `capacity`.
    pub(super) bytes: usize,
    pub(super) capacity: usize,
    /// Dropped since the last report line.
    pub(super) dropped: u64,
    pub(super) dropped_total: u64,
    /// The writer holds a batch it has not finished writing.
    pub(super) busy: bool,
    /// The last write failed; no report line is attempted until a new line arrives.
    pub(super) failing: bool,
    /// Batches finished, so that `wait_drained` can tell a slow destination from a dead one.
    pub(super) batches: u64,
}

impl State {
    fn drained(&self) -> bool {
        self.lines.is_empty() && !self.busy && (self.dropped == 0 || self.failing)
    }
}

/// What a line holds in memory while queued.
pub(super) fn cost(line: &Line) -> usize {
    line.len() + LINE_OVERHEAD
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                capacity,
                ..State::default()
            }),
            changed: Condvar::new(),
        }
    }

    /// A poisoned lock only means a writer thread panicked mid-batch; the counts stay usable.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `line`, or drops and counts it if the queue is full. Never waits for output.
    pub(super) fn push(&self, line: Line) -> bool {
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

    /// Wakes the writer (to reopen its file) without queueing anything. Taking the lock
    /// first means a writer between its check and its wait cannot miss the wake-up.
    pub(super) fn wake(&self) {
        drop(self.lock());
        self.changed.notify_all();
    }

    /// Waits for the writer to write everything queued; false if it made no progress for
    /// `patience`.
    pub(super) fn wait_drained(&self, patience: Duration) -> bool {
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
pub(super) struct FailureReport {
    /// What the file is, for the warning: `log file`, `event log`.
    pub(super) what: &'static str,
    pub(super) path: PathBuf,
    pub(super) to: Arc<Queue>,
}

/// How a destination's own lines (how many were dropped) are written: as a log line, or as
/// a JSON object (the event log, which a machine reads line by line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notes {
    Log,
    Json,
}

/// Where a writer thread's bytes go: stderr, a file, or (in tests) anything that writes.
/// Besides writing, a destination may take back the start of a line that went out only in
/// part, and may open its path again (log rotation, [`super::reopen`]).
pub(super) trait Destination: Write + Send {
    /// Removes the last `bytes` bytes written, the start of a line that could not be
    /// finished (a full disk), so that the next line does not begin glued to it. False if
    /// this destination cannot (a pipe, a terminal).
    fn take_back(&mut self, _bytes: u64) -> bool {
        false
    }

    /// Opens the destination's path again, so that lines go to the file now at that path.
    /// Nothing to do for a destination without a path.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Destination for File {}

impl Destination for io::Stderr {}

/// A file named by the user (`--log-file`, `--events`), opened for appending.
pub(super) struct PathFile {
    pub(super) path: PathBuf,
    pub(super) file: File,
}

impl PathFile {
    pub(super) fn open(path: &Path) -> io::Result<PathFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let path = path.to_path_buf();
        Ok(PathFile { path, file })
    }
}

impl Write for PathFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Destination for PathFile {
    /// Truncates the file by `bytes` (appends go to the new end). Only for a regular file:
    /// a FIFO or a device has no end to cut.
    fn take_back(&mut self, bytes: u64) -> bool {
        let Ok(meta) = self.file.metadata() else {
            return false;
        };
        let Some(len) = meta.len().checked_sub(bytes) else {
            return false;
        };
        meta.is_file() && self.file.set_len(len).is_ok()
    }

    fn reopen(&mut self) -> io::Result<()> {
        *self = PathFile::open(&self.path)?;
        Ok(())
    }
}

/// The thread is named `log NAME` (`log stderr`, `log file`), as `/proc` shows it.
pub(super) fn spawn_writer(
    name: &str,
    queue: Arc<Queue>,
    out: Box<dyn Destination>,
    report: Option<FailureReport>,
    notes: Notes,
) -> io::Result<()> {
    let writers = WRITERS.lock();
    let mut writers = writers.unwrap_or_else(|e| e.into_inner());
    writers.retain(|queue| queue.strong_count() > 0);
    writers.push(Arc::downgrade(&queue));
    drop(writers);
    std::thread::Builder::new()
        .name(format!("log {name}"))
        .spawn(move || write_forever(&queue, out, report, notes))
        .map(drop)
}

/// Every writer thread's queue, so that [`wake_all`] reaches each one (a queue whose writer
/// is gone is skipped and forgotten).
static WRITERS: Mutex<Vec<Weak<Queue>>> = Mutex::new(Vec::new());

/// Wakes every writer thread (to reopen its file), without waiting for any of them.
pub(super) fn wake_all() {
    let writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    for queue in writers.iter().filter_map(Weak::upgrade) {
        queue.wake();
    }
}

/// One warning on stderr about this destination: `log file PATH: BEFORE: ERROR AFTER`.
fn warn(report: &Option<FailureReport>, before: &str, error: &io::Error, after: &str) {
    if let Some(report) = report {
        report.to.push(own_line(
            Level::Warn,
            format_args!(
                "{} {}: {before}: {}{after}",
                report.what,
                report.path.display(),
                describe(error)
            ),
        ));
    }
}

/// The writer thread: takes every queued line at once, writes them in one go, then a line
/// for whatever was dropped meanwhile. Only this thread ever waits on the destination. When
/// [`super::reopen`] was called, it opens its path again before its next batch.
fn write_forever(
    queue: &Queue,
    mut out: Box<dyn Destination>,
    report: Option<FailureReport>,
    notes: Notes,
) {
    let mut batch = VecDeque::new();
    let mut bytes = Vec::new();
    let mut opened = super::reopen_generation();
    // A line that went out only in part and could not be taken back: the next write begins
    // with a newline, so that the fragment stands alone and the next line is whole.
    let mut unfinished = false;
    loop {
        let dropped = {
            let mut state = queue.lock();
            while state.lines.is_empty()
                && (state.dropped == 0 || state.failing)
                && super::reopen_generation() == opened
            {
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
        if super::reopen_generation() != opened {
            opened = super::reopen_generation();
            if let Err(error) = out.reopen() {
                let after = "; still writing to the file that was open before";
                warn(&report, "cannot reopen", &error, after);
            }
        }
        let result = match unfinished {
            // Where a line was cut and not taken back, a newline first, so that the
            // fragment stands alone; if even that fails, the batch is lost, not glued on.
            true => match write_lines(&mut *out, &mut b"\n".to_vec()) {
                Ok(_) => {
                    unfinished = false;
                    write_batch(&mut *out, &mut batch, dropped, &mut bytes, notes)
                }
                Err(failure) => Err(Failure {
                    lost: batch.len() as u64,
                    ..failure
                }),
            },
            false => write_batch(&mut *out, &mut batch, dropped, &mut bytes, notes),
        };
        let mut state = queue.lock();
        state.busy = false;
        state.batches += 1;
        match result {
            Ok(()) => state.failing = false,
            Err(Failure {
                lost,
                error,
                unfinished: cut,
            }) => {
                unfinished |= cut;
                state.dropped += dropped + lost;
                state.dropped_total += lost;
                if !state.failing {
                    state.failing = true;
                    let after = "; its lines are dropped and counted until it can be written \
                                 again";
                    warn(&report, "cannot write", &error, after);
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

/// A batch that did not go out whole.
#[derive(Debug)]
pub(super) struct Failure {
    /// Lines of the batch that were not written whole (each counted as dropped).
    pub(super) lost: u64,
    pub(super) error: io::Error,
    /// A line went out in part and could not be taken back: the file ends mid-line.
    pub(super) unfinished: bool,
}

/// Writes `batch`, emptying it, then the line reporting `dropped` lines, in chunks of about
/// [`CHUNK_BYTES`], so that a batch is never held twice (as lines and as bytes). On failure,
/// says how many of the batch's lines did not go out whole. A line is written whole or not
/// at all: the start of one the destination took only in part is taken back.
pub(super) fn write_batch(
    out: &mut dyn Destination,
    batch: &mut VecDeque<Line>,
    dropped: u64,
    bytes: &mut Vec<u8>,
    notes: Notes,
) -> Result<(), Failure> {
    let total = batch.len() as u64;
    let mut written = 0;
    let lost = |written: u64, failure: Failure| Failure {
        lost: total - (written + failure.lost).min(total),
        ..failure
    };
    bytes.clear();
    while let Some(line) = batch.pop_front() {
        bytes.extend_from_slice(&line);
        if bytes.len() >= CHUNK_BYTES {
            written += write_lines(out, bytes).map_err(|f| lost(written, f))?;
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
    write_lines(out, bytes).map_err(|f| lost(written, f))?;
    out.flush().map_err(|error| Failure {
        lost: 0,
        error,
        unfinished: false,
    })
}

/// Writes whole lines, emptying `bytes`; returns how many. On failure, [`Failure::lost`]
/// holds how many lines *did* go out whole (the caller turns it into those lost), and a line
/// cut short is taken back if the destination can.
fn write_lines(out: &mut dyn Destination, bytes: &mut Vec<u8>) -> Result<u64, Failure> {
    let mut sent = 0;
    let result = loop {
        match out.write(&bytes[sent..]) {
            Ok(0) if sent < bytes.len() => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
        if sent >= bytes.len() {
            break Ok(());
        }
    };
    let lines = memchr::memchr_iter(b'\n', &bytes[..sent]).count() as u64;
    let whole = memchr::memrchr(b'\n', &bytes[..sent]).map_or(0, |end| end + 1);
    bytes.clear();
    match result {
        Ok(()) => Ok(lines),
        Err(error) => {
            let stray = (sent - whole) as u64;
            Err(Failure {
                lost: lines,
                error,
                unfinished: stray > 0 && !out.take_back(stray),
            })
        }
    }
}
