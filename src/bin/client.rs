//! `client`: command line → configuration → the client's poll loop → what happened.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use heartbeat::cli::{print_line, ClientArgs, StartError};
use heartbeat::client::{sources, Client, Finish};
use heartbeat::config;
use heartbeat::net::{self, SetupError};
use heartbeat::{logging, prompt};

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
    let (file, path) = config::load(args.config.as_deref())?;
    let mut config = args.resolve(&file, path.as_deref())?;
    logging::init(args.log_level.filter(), None)?;
    let stdin = std::io::stdin();
    if config.connections == 1 && !args.no_prompt && !args.settings_given() && stdin.is_terminal() {
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
    if config.connections as u64 > possible {
        return Err(SetupError::TooFewFiles {
            wanted: config.connections as u64,
            possible,
            limit,
        }
        .into());
    }
    let single = config.connections == 1;
    let by_hand = !args.bind.is_empty();
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
    let mut client = Client::new(config)?;
    client.stop_on_signals()?;
    let outcome = client.run()?;
    if args.json {
        print_line(&outcome.summary.to_json());
    } else if !single {
        print_line(&outcome.summary.to_text());
    }
    if outcome.finish == Finish::NothingConnected {
        if let Some(error) = &outcome.first_error {
            eprintln!("client: {error}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
