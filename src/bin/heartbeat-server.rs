//! `heartbeat-server`: command line → configuration → the server's poll loop, or with
//! `--workers N` the parent of N such loops (`workers::server`).

use std::io::IsTerminal;
use std::process::ExitCode;

use heartbeat::cli::{print_line, ServerArgs, StartError};
use heartbeat::edge::handover::{self, Channel};
use heartbeat::edge::stop::Stoppable;
use heartbeat::server::takeover::GiveUp;
use heartbeat::server::upgrade::StartedAs;
use heartbeat::settings::{config, prompt};
use heartbeat::workers::{self, server::listening_line, WorkersError};
use heartbeat::{edge::net, ops::logging, ops::notify, server::Server};

fn main() -> ExitCode {
    // First, before anything can change: the path a live upgrade runs again (see StartedAs).
    let started_as = StartedAs::capture();
    let args = ServerArgs::parse();
    // Started by a running server to take over from it (SIGUSR2)?
    let channel = match Channel::inherited() {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("server: {e}");
            return ExitCode::from(2);
        }
    };
    // Read once: no process this one starts (a worker, the next upgrade) inherits it. Still
    // one thread here, so changing the environment races with nothing.
    std::env::remove_var(handover::ENV);
    let result = run(&args, channel, started_as.ok());
    // The last lines (`received SIGTERM`) are still queued for the log writer.
    logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A worker that failed at start said why in its own one line.
            if !matches!(error, StartError::Workers(WorkersError::Failed { .. })) {
                eprintln!("server: {error}");
            }
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

fn run(
    args: &ServerArgs,
    channel: Option<Channel>,
    started_as: Option<StartedAs>,
) -> Result<(), StartError> {
    let (file, path) = config::load(args.config.as_deref())?;
    let mut config = args.resolve(&file, path.as_deref())?;
    let worker = workers::worker_index();
    workers::name_in_logs(worker);
    logging::init(args.log_level.filter(), args.log_file.as_deref())?;
    let stdin = std::io::stdin();
    if worker.is_none() && !args.no_prompt && !args.settings_given() && stdin.is_terminal() {
        let mut stdout = std::io::stdout();
        match prompt::ask_server_timing(&mut stdin.lock(), &mut stdout, config.timing) {
            Ok(timing) => config.timing = timing,
            Err(e) => log::warn!("could not read settings from the terminal: {e}; using defaults"),
        }
    }
    heartbeat::cli::check_timing(&config.timing, config.tick)?;
    let (timing, raised) = config.timing.with_idle_rule();
    if let (Some(warning), None) = (raised, worker) {
        // Printed whatever the log level (by the parent only): it changes what the server
        // will do.
        eprintln!("server: warning: {warning}");
    }
    config.timing = timing;
    match args.max_open_files {
        Some(limit) => set_open_file_limit(limit),
        None => {
            if let Err(e) = net::raise_open_file_limit() {
                log::warn!("could not raise the open-file limit: {}", net::describe(&e));
            }
        }
    }
    match worker {
        Some(_) => return Ok(workers::server::run_server_worker(config)?),
        None if args.workers > 1 => {
            return Ok(workers::server::run_server_parent(
                args.workers,
                args.json,
                &config,
                started_as,
            )?);
        }
        None => {}
    }
    let taking_over = channel.is_some();
    let mut server = match channel {
        Some(channel) => match Server::take_over(&config, channel) {
            Ok(server) => server,
            Err(GiveUp { why, status }) => {
                // The running server serves on, and logs why as well.
                log::warn!("live upgrade: not taking over: {why}");
                logging::flush();
                eprintln!("server: not taking over: {why}");
                std::process::exit(i32::from(status));
            }
        },
        None => Server::bind(config.clone())?,
    };
    server.stop_on_signals()?;
    if let Some(started_as) = started_as {
        server.enable_upgrade(started_as, &config);
    }
    let listening = listening_line(server.local_addr(), &config, None, server.metrics_addr());
    print_line(&listening);
    // After the line a script waits for, so that both say the same thing at the same time.
    // The new process of a live upgrade also names itself as the service's main process.
    match taking_over {
        true => notify::ready_as_main(&listening),
        false => notify::ready(&listening),
    }
    let ended = server.run_to_end();
    if let Ok((_, true)) = ended {
        // The service goes on in the new process: no STOPPING=1 from this one.
        notify::handed_over();
    }
    // The loop says it when it begins to stop; this is for a loop that ended otherwise, and
    // does nothing if it was said already.
    notify::stopping();
    let mut stats = ended?.0;
    // What the loop logged as it stopped comes before the summary, as it happened.
    logging::flush();
    stats.on_log_lines_dropped(logging::dropped_lines());
    match args.json {
        true => print_line(&stats.to_json()),
        false => print_line(&stats.summary()),
    }
    Ok(())
}

fn set_open_file_limit(limit: u64) {
    let result = rlimit::Resource::NOFILE
        .get()
        .and_then(|(_, hard)| rlimit::Resource::NOFILE.set(limit.min(hard), hard));
    if let Err(e) = result {
        let e = net::describe(&e);
        log::warn!("could not set the open-file limit to {limit}: {e}");
    }
}
