//! The event log's file (`--events`): whole lines queued without waiting and written by a
//! thread of their own, like the log's, reopened with it on [`super::reopen`].
//!
//! Owns opening the file and queueing its lines; what a line says is `ops::events`'s.

use std::path::Path;
use std::sync::Arc;

use super::queue::{spawn_writer, FailureReport, Notes, PathFile, Queue};
use super::{lock_others, QUEUE_BYTES, SINKS};
use crate::edge::net::SetupError;

/// A file of lines of its own (the event log), written like the log: [`LineSink::push`]
/// queues a whole line and never waits; a thread named `log events` writes them; a full
/// queue drops lines, counted in [`super::dropped_lines`] and noted in the file as a JSON line
/// `{"event":"dropped","lines":N}`; a failing file gives one warning on stderr. [`super::flush`]
/// waits for it too.
pub struct LineSink {
    queue: Arc<Queue>,
}

impl LineSink {
    /// Opens `path` for appending and starts its writer.
    pub fn open(path: &Path) -> Result<LineSink, SetupError> {
        let file = PathFile::open(path).map_err(|source| SetupError::EventLog {
            path: path.to_path_buf(),
            source,
        })?;
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
