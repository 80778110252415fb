//! Logging's tests: simplelog's lines queued whole, the queue's bound, the writer thread,
//! whole lines on a full disk, reopening.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Condvar;
use std::time::Instant;

use super::queue::{cost, write_batch, Destination};
use super::*;

/// Bytes in memory: a destination that cannot take anything back.
impl Destination for Vec<u8> {}

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

impl Destination for Gate {}

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
        lines[11].ends_with(" [WARN] 90 log lines dropped: this log's output was not keeping up"),
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

impl Destination for FirstWriteOnly {}

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
    let lost = write_batch(&mut out, &mut batch, 0, &mut bytes, Notes::Log)
        .unwrap_err()
        .lost;
    let went_out = out.written.iter().filter(|b| **b == b'\n').count() as u64;
    assert!(went_out > 0 && went_out < 3000, "{went_out}");
    assert_eq!(lost, 3000 - went_out);
}

struct Full;

impl Destination for Full {}

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

/// A disk with `room` bytes: a write takes what fits, then fails with ENOSPC. Like a file,
/// it can take back what it was given last (`truncate`) unless `pipe` says it is a pipe.
struct Disk {
    data: Vec<u8>,
    room: usize,
    pipe: bool,
}

impl Disk {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.data);
        text.split_inclusive('\n').map(str::to_string).collect()
    }
}

impl Write for Disk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.room.saturating_sub(self.data.len()));
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::from_raw_os_error(28));
        }
        self.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Destination for Disk {
    fn take_back(&mut self, bytes: u64) -> bool {
        let keep = self.data.len() - bytes as usize;
        !self.pipe && {
            self.data.truncate(keep);
            true
        }
    }
}

fn event_line(n: usize) -> Line {
    line(&format!(
        "{{\"event\":\"close\",\"peer\":\"127.0.0.1:{n}\"}}"
    ))
}

/// Issue 21: on a full disk a line is written whole or not at all (counted), never half a
/// line glued to the next; after space is freed the next lines are whole.
#[test]
fn a_full_disk_takes_back_a_half_written_line_and_the_next_lines_are_whole() {
    let one = event_line(1000).len();
    let mut disk = Disk {
        data: Vec::new(),
        room: 2 * one + one / 2,
        pipe: false,
    };
    let mut bytes = Vec::new();
    let mut batch: VecDeque<Line> = (1000..1005).map(event_line).collect();
    let failure = write_batch(&mut disk, &mut batch, 0, &mut bytes, Notes::Json).unwrap_err();
    assert_eq!(failure.lost, 3, "two lines went out whole, three did not");
    assert!(!failure.unfinished, "the half line was taken back");
    assert_eq!(disk.data.len(), 2 * one, "only whole lines are left");
    disk.room = usize::MAX;
    let mut batch: VecDeque<Line> = (2000..2002).map(event_line).collect();
    assert!(write_batch(&mut disk, &mut batch, 3, &mut bytes, Notes::Json).is_ok());
    let lines = disk.lines();
    assert_eq!(lines.len(), 5, "{lines:?}");
    for l in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "{l:?}"
        );
    }
    assert_eq!(lines[4], "{\"event\":\"dropped\",\"lines\":3}\n");
}

/// Where a cut line cannot be taken back (a pipe), the writer ends the fragment with a
/// newline before anything else, so the next line is whole, not glued to it.
#[test]
fn a_cut_line_that_cannot_be_taken_back_is_ended_before_the_next_one() {
    let one = event_line(1).len();
    let disk = Disk {
        data: Vec::new(),
        room: one + 5,
        pipe: true,
    };
    let shared = Arc::new(Mutex::new(disk));
    struct Shared(Arc<Mutex<Disk>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Destination for Shared {
        fn take_back(&mut self, bytes: u64) -> bool {
            self.0.lock().unwrap().take_back(bytes)
        }
    }
    let queue = Arc::new(Queue::new(QUEUE_BYTES));
    let out = Box::new(Shared(shared.clone()));
    spawn_writer("test", queue.clone(), out, None, Notes::Json).unwrap();
    assert!(queue.push(event_line(1)) && queue.push(event_line(2)));
    assert!(queue.wait_drained(Duration::from_secs(10)));
    assert_eq!(
        queue.lock().dropped_total,
        1,
        "the cut line is counted as dropped"
    );
    shared.lock().unwrap().room = usize::MAX;
    assert!(queue.push(event_line(3)));
    assert!(queue.wait_drained(Duration::from_secs(10)));
    let lines = shared.lock().unwrap().lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], String::from_utf8_lossy(&event_line(1)));
    assert!(
        lines[1].len() == 6 && lines[1].ends_with('\n'),
        "the fragment alone: {lines:?}"
    );
    assert_eq!(lines[2], String::from_utf8_lossy(&event_line(3)), "whole");
    assert_eq!(lines[3], "{\"event\":\"dropped\",\"lines\":1}\n");
}

/// A regular file takes back the start of a line by truncating; appends go on from there.
#[test]
fn a_log_file_takes_back_a_cut_line_by_truncating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.log");
    let mut file = super::queue::PathFile::open(&path).unwrap();
    file.write_all(b"whole\nhal").unwrap();
    assert!(file.take_back(3));
    file.write_all(b"next\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "whole\nnext\n");
    assert!(
        !file.take_back(100),
        "cannot take back more than was written"
    );
}

/// Issue 21, log rotation: after the file is renamed, [`reopen`] makes the writer open the
/// path again; new lines land in a new file there, the old lines stay in the renamed one.
#[test]
fn reopen_writes_new_lines_to_a_new_file_at_the_old_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.log");
    let queue = Arc::new(Queue::new(QUEUE_BYTES));
    let file = super::queue::PathFile::open(&path).unwrap();
    spawn_writer("test", queue.clone(), Box::new(file), None, Notes::Log).unwrap();
    assert!(queue.push(line("before")));
    assert!(queue.wait_drained(Duration::from_secs(10)));
    let rotated = dir.path().join("server.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    reopen();
    wait_until(|| path.exists());
    assert!(queue.push(line("after")));
    assert!(queue.wait_drained(Duration::from_secs(10)));
    assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "before\n");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
}

/// Issue 21: an event log that cannot be opened is named as such, not as "log file", and the
/// I/O error stays reachable as the source.
#[test]
fn an_event_log_that_cannot_be_opened_says_event_log() {
    use std::error::Error;
    let Err(error) = LineSink::open(Path::new("/nonexistent/heartbeat/events.jsonl")) else {
        panic!("opened a file in a directory that does not exist");
    };
    let text = error.to_string();
    assert!(
        text.starts_with("cannot open event log /nonexistent/heartbeat/events.jsonl: "),
        "{text}"
    );
    assert!(error.source().is_some());
}
