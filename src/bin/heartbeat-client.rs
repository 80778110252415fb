//! `client`: command line → configuration → the client's poll loop → what happened.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use heartbeat::client::{sources, Client, Finish};
use heartbeat::edge::net::{self, SetupError};
use heartbeat::edge::stop::Stoppable;
use heartbeat::ops::report;
use heartbeat::ops::stats::client::{merge, ClientReport, RunFacts};
use heartbeat::ops::stats::{ClientStats, ClientSummary};
use heartbeat::settings::cli::{print_line, ClientArgs, ClientCommand, MergeArgs, StartError};
use heartbeat::settings::config;
use heartbeat::workers::{self, Supervisor};
use heartbeat::{ops::logging, settings::prompt};

/// Descriptors the process needs besides its connections (stdio, poll, waker, signals).
const SPARE_FILES: u64 = 16;

fn main() -> ExitCode {
    let args = match ClientArgs::try_parse() {
        Ok(args) => args,
        // --help and --version print and exit 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // clap's first line names the flag and why; the usage and tip after it are noise.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!("client: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let result = run(&args);
    // The last lines are still queued for the log writer.
    logging::flush();
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("client: {error}");
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

fn run(args: &ClientArgs) -> Result<ExitCode, StartError> {
    if let Some(ClientCommand::Merge(merge_args)) = &args.command {
        return Ok(run_merge(merge_args));
    }
    let (file, path) = config::load(args.config.as_deref())?;
    let mut config = args.resolve(&file, path.as_deref())?;
    logging::init(args.log_level.filter(), None)?;
    let worker = workers::worker_index();
    if let Some(index) = worker {
        take_share(&mut config, index);
    }
    let stdin = std::io::stdin();
    if config.connections == 1
        && worker.is_none()
        && !args.no_prompt
        && !args.settings_given()
        && stdin.is_terminal()
    {
        let mut stdout = std::io::stdout();
        let asked = prompt::ask_client_timing(
            &mut stdin.lock(),
            &mut stdout,
            config.interval,
            config.heartbeat_block,
        );
        match asked {
            Ok((interval, block)) => (config.interval, config.heartbeat_block) = (interval, block),
            Err(e) => log::warn!("could not read settings from the terminal: {e}; using defaults"),
        }
    }
    let limit = net::raise_open_file_limit().unwrap_or(1024);
    let possible = limit.saturating_sub(SPARE_FILES);
    // Each process has its own limit: with workers, the largest share must fit in it.
    let per_process = match worker {
        None => workers::shares(config.connections, args.workers)[0],
        Some(_) => config.connections,
    };
    if per_process as u64 > possible {
        return Err(SetupError::TooFewFiles {
            wanted: per_process as u64,
            possible,
            limit,
        }
        .into());
    }
    let single = config.connections == 1;
    // A worker's addresses were chosen by its parent.
    let by_hand = !args.bind.is_empty() || worker.is_some();
    let ports = sources::local_port_count();
    let plan = sources::plan(
        config.server,
        config.connections,
        &config.bind,
        by_hand,
        ports,
    );
    if let (false, Some(notice)) = (single, &plan.notice) {
        eprintln!("{notice}");
    }
    config.bind = plan.bind;
    // Opened now, so that a path that cannot be written is said before the run, not after.
    let report_file = match (&args.report, worker) {
        (Some(path), None) => match File::create(path) {
            Ok(file) => Some((path.as_path(), file)),
            Err(e) => {
                eprintln!("client: --report {}: {e}", path.display());
                return Ok(ExitCode::from(2));
            }
        },
        _ => None,
    };
    if worker.is_none() && args.workers > 1 {
        return run_parent(args, &config, report_file);
    }
    let mut client = Client::new(config)?;
    client.stop_on_signals()?;
    if worker.is_some() {
        workers::stop_when_parent_goes(client.stopper());
    }
    let outcome = client.run()?;
    if worker.is_some() {
        let report = ClientReport {
            stats: outcome.stats,
            facts: outcome.facts,
            connected: outcome.finish != Finish::NothingConnected,
            first_error: outcome.first_error,
        };
        print_line(&serde_json::to_string(&report).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        print_line(&outcome.summary.to_json());
    } else if !single {
        print_line(&outcome.summary.to_text());
    }
    if let Some((path, file)) = report_file {
        if !write_report(path, file, &outcome.summary) {
            return Ok(ExitCode::from(1));
        }
    }
    if outcome.finish == Finish::NothingConnected {
        if let Some(error) = &outcome.first_error {
            eprintln!("client: {error}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// In a worker: its share of the connections and connect rate, its source addresses, and a
/// seed of its own (so workers' faults are not copies of each other), from its parent.
fn take_share(config: &mut heartbeat::client::ClientConfig, index: usize) {
    let share = std::env::var(workers::SHARE_ENV).unwrap_or_default();
    if let Some((connections, rate)) = share.split_once(',') {
        if let (Ok(connections), Ok(rate)) = (connections.parse(), rate.parse()) {
            config.connections = connections;
            config.connect_rate = rate;
        }
    }
    let bind = std::env::var(workers::BIND_ENV).unwrap_or_default();
    config.bind = bind.split(',').filter_map(|a| a.parse().ok()).collect();
    config.seed = config.seed.wrapping_add(index as u64);
    config.verbose = false;
    config.status_line = false;
}

/// `--workers N`: splits the connections, the connect rate and the source addresses among N
/// worker processes, waits for them, and prints one summary merged from their reports.
fn run_parent(
    args: &ClientArgs,
    config: &heartbeat::client::ClientConfig,
    report_file: Option<(&Path, File)>,
) -> Result<ExitCode, StartError> {
    let shares = workers::shares(config.connections, args.workers);
    let mut first = 0;
    let envs = shares
        .iter()
        .map(|&share| {
            let rate = (u64::from(config.connect_rate) * share as u64)
                .div_ceil(config.connections as u64)
                .max(1);
            let bind: Vec<String> = workers::sources_from(&config.bind, first)
                .iter()
                .map(ToString::to_string)
                .collect();
            first += share;
            vec![
                (workers::SHARE_ENV.to_string(), format!("{share},{rate}")),
                (workers::BIND_ENV.to_string(), bind.join(",")),
            ]
        })
        .collect();
    let finished = Supervisor::start(envs, false)?.run();
    let mut stats: Option<ClientStats> = None;
    let mut facts = RunFacts::default();
    let (mut connected, mut first_error, mut lost) = (false, None, finished.lost);
    for line in &finished.reports {
        let Ok(report) = serde_json::from_str::<ClientReport>(line) else {
            lost += 1;
            continue;
        };
        match &mut stats {
            Some(stats) => stats.merge(&report.stats),
            None => stats = Some(report.stats.clone()),
        }
        facts.merge(&report.facts);
        connected |= report.connected;
        first_error = first_error.or(report.first_error);
    }
    if lost > 0 {
        eprintln!(
            "client: warning: {lost} of {} workers ended without a report: their counts are \
             missing",
            args.workers
        );
    }
    let Some(stats) = stats else {
        return Ok(ExitCode::from(1));
    };
    let summary = stats.summary(&facts);
    if args.json {
        print_line(&summary.to_json());
    } else {
        print_line(&summary.to_text());
    }
    if let Some((path, file)) = report_file {
        if !write_report(path, file, &summary) {
            return Ok(ExitCode::from(1));
        }
    }
    if !connected {
        if let Some(error) = first_error {
            eprintln!("client: {error}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Summaries larger than this are not ours (a day of rows is a few MB): refused unread.
const MAX_SUMMARY_BYTES: u64 = 64 << 20;

/// `merge FILE...`: one JSON summary of them all on stdout, and the report if asked; a file
/// that cannot be read or combined is named on one line, exit status 2.
fn run_merge(args: &MergeArgs) -> ExitCode {
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
        Some(path) => match File::create(path) {
            Ok(file) => Some((path.as_path(), file)),
            Err(e) => {
                eprintln!("client: --report {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    print_line(&summary.to_json());
    if let Some((path, file)) = report_file {
        if !write_report(path, file, &summary) {
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// Writes the HTML report; false (said on stderr) when the file could not be written.
fn write_report(path: &Path, mut file: File, summary: &ClientSummary) -> bool {
    match file.write_all(report::html(summary).as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("client: --report {}: {e}", path.display());
            false
        }
    }
}
