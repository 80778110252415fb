//! A child's stdout read by a thread of its own until the child closes it: the first line
//! is sent at once (a server's `Listening on`, waited for with a timeout), and every line is
//! kept for when the child has ended (a summary, a `--json` line). Shared by the scale,
//! capacity and upgrade benches; stderr, which each treats its own way, is not read here.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};

/// Starts the thread reading `out` (nothing to read if `None`): the first line comes on the
/// receiver, all of them from the handle once `out` ended.
pub fn read_stdout(
    out: Option<impl Read + Send + 'static>,
) -> (Receiver<String>, JoinHandle<Vec<String>>) {
    let (tx, first) = mpsc::channel();
    let all = thread::spawn(move || {
        let mut lines = Vec::new();
        let Some(out) = out else { return lines };
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if lines.is_empty() {
                let _ = tx.send(line.clone());
            }
            lines.push(line);
        }
        lines
    });
    (first, all)
}
