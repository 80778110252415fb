//! `heartbeat-client`: command line → configuration → the client's poll loop → what
//! happened, or with `--workers N` the parent of N such loops (`workers::client`).

use std::io::IsTerminal;
use std::process::ExitCode;

use heartbeat::cli::{ClientArgs, ClientCommand, StartError};
use heartbeat::client::outputs::{self, run_merge, ReportFile};
use heartbeat::client::{sources, Client};
use heartbeat::edge::stop::Stoppable;
use heartbeat::settings::config;
use heartbeat::workers::{self, client as parent};
use heartbeat::{ops::logging, settings::prompt};

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
    let worker = workers::worker_index();
    workers::name_in_logs(worker);
    logging::init(args.log_level.filter(), None)?;
    if let Some(index) = worker {
        parent::take_share(&mut config, index);
    }
    let stdin = std::io::stdin();
    let single = config.connections == 1;
    let ask = single && worker.is_none() && !args.no_prompt && !args.settings_given();
    if ask && stdin.is_terminal() {
        let (interval, block, mut stdout) =
            (config.interval, config.heartbeat_block, std::io::stdout());
        match prompt::ask_client_timing(&mut stdin.lock(), &mut stdout, interval, block) {
            Ok((interval, block)) => (config.interval, config.heartbeat_block) = (interval, block),
            Err(e) => log::warn!("could not read settings from the terminal: {e}; using defaults"),
        }
    }
    // Each process has its own limit: with workers, the largest share must fit in it.
    let workers_here = if worker.is_some() { 1 } else { args.workers };
    parent::check_open_files(config.connections, workers_here)?;
    // A worker's addresses were chosen by its parent.
    let by_hand = !args.bind.is_empty() || worker.is_some();
    let ports = sources::local_port_count();
    let (server, connections) = (config.server, config.connections);
    let plan = sources::plan(server, connections, &config.bind, by_hand, ports);
    if let (false, Some(notice)) = (single, &plan.notice) {
        eprintln!("{notice}");
    }
    config.bind = plan.bind;
    // Opened now, so that a path that cannot be written is said before the run, not after.
    let report_file = match (&args.report, worker) {
        (Some(path), None) => match ReportFile::create(path) {
            Some(file) => Some(file),
            None => return Ok(ExitCode::from(2)),
        },
        _ => None,
    };
    if worker.is_none() && args.workers > 1 {
        let outcome = parent::run_client_parent(args.workers, args.json, &config)?;
        let written = match (report_file, &outcome.summary) {
            (Some(file), Some(summary)) => file.write(summary),
            _ => true,
        };
        return Ok(ExitCode::from(u8::from(!(outcome.succeeded && written))));
    }
    if worker.is_some() {
        parent::run_client_worker(config)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = Client::new(config)?;
    client.stop_on_signals()?;
    let outcome = client.run()?;
    Ok(outputs::finish(&outcome, args.json, single, report_file))
}
