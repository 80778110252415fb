//! What a client run leaves behind: its summary line and exit status ([`finish`]), the
//! `--report` HTML file, and the `merge FILE...` subcommand, which reads saved summaries back
//! into one. Moved out of the binary (which parses, sets up and calls these) unchanged in
//! behaviour.
//!
//! Owns opening and writing those files and their one-line errors. Does not own the report's
//! content (`ops::report`) or the merge rules (`ops::stats::client::merge`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Finish, Outcome};
use crate::cli::{print_line, MergeArgs};
use crate::ops::report;
use crate::ops::stats::client::merge;
use crate::ops::stats::ClientSummary;

/// Summaries larger than this are not ours (a day of rows is a few MB): refused unread.
const MAX_SUMMARY_BYTES: u64 = 64 << 20;

/// A `--report` file, opened before the run so that a path that cannot be written is said
/// before the run, not after.
pub struct ReportFile {
    path: PathBuf,
    file: File,
}

impl ReportFile {
    /// Creates `path`; `None` when it cannot be (said on stderr: exit status 2).
    pub fn create(path: &Path) -> Option<ReportFile> {
        match File::create(path) {
            Ok(file) => Some(ReportFile {
                path: path.to_path_buf(),
                file,
            }),
            Err(e) => {
                eprintln!("client: --report {}: {e}", path.display());
                None
            }
        }
    }

    /// Writes the HTML report; false (said on stderr) when the file could not be written.
    pub fn write(mut self, summary: &ClientSummary) -> bool {
        match self.file.write_all(report::html(summary).as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("client: --report {}: {e}", self.path.display());
                false
            }
        }
    }
}

/// The end of a run in one process: its summary printed (`--json`, or text unless it was a
/// single connection), the report written, and the exit status: 1 when nothing connected
/// (the first error said) or the report could not be written.
pub fn finish(
    outcome: &Outcome,
    json: bool,
    single: bool,
    report_file: Option<ReportFile>,
) -> ExitCode {
    if json {
        print_line(&outcome.summary.to_json());
    } else if !single {
        print_line(&outcome.summary.to_text());
    }
    if report_file.is_some_and(|file| !file.write(&outcome.summary)) {
        return ExitCode::from(1);
    }
    if outcome.finish == Finish::NothingConnected {
        if let Some(error) = &outcome.first_error {
            eprintln!("client: {error}");
        }
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// `merge FILE...`: one JSON summary of them all on stdout, and the report if asked; a file
/// that cannot be read or combined is named on one line, exit status 2.
pub fn run_merge(args: &MergeArgs) -> ExitCode {
    let mut files = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let name = path.display().to_string();
        let mut text = String::new();
        let read =
            File::open(path).and_then(|f| f.take(MAX_SUMMARY_BYTES + 1).read_to_string(&mut text));
        match read {
            Ok(n) if n as u64 > MAX_SUMMARY_BYTES => {
                eprintln!("client: {name}: over {MAX_SUMMARY_BYTES} bytes: not a summary");
                return ExitCode::from(2);
            }
            Ok(_) => files.push((name, text)),
            Err(e) => {
                eprintln!("client: {name}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let summary = match merge::merge(&files) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("client: {e}");
            return ExitCode::from(2);
        }
    };
    let report_file = match &args.report {
        Some(path) => match ReportFile::create(path) {
            Some(file) => Some(file),
            None => return ExitCode::from(2),
        },
        None => None,
    };
    print_line(&summary.to_json());
    match report_file.map(|file| file.write(&summary)) {
        Some(false) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}
