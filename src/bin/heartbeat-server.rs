//! `server`: command line → configuration → the server's poll loop.

use std::io::IsTerminal;
use std::process::ExitCode;

use heartbeat::edge::handover::Channel;
use heartbeat::edge::stop::Stoppable;
use heartbeat::ops::stats::ServerStats;
use heartbeat::server::takeover::GiveUp;
use heartbeat::server::upgrade::StartedAs;
use heartbeat::settings::cli::{print_line, ServerArgs, StartError};
use heartbeat::settings::config::{self, format_duration};
use heartbeat::workers::{self, Supervisor, WorkersError};
use heartbeat::{
    edge::net, ops::logging, ops::notify, server::Server, server::ServerConfig, settings::prompt,
};

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
    std::env::remove_var(heartbeat::edge::handover::ENV);
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
    logging::init(args.log_level.filter(), args.log_file.as_deref())?;
    let worker = workers::worker_index();
    let stdin = std::io::stdin();
    if worker.is_none() && !args.no_prompt && !args.settings_given() && stdin.is_terminal() {
        let mut stdout = std::io::stdout();
        match prompt::ask_server_timing(&mut stdin.lock(), &mut stdout, config.timing) {
            Ok(timing) => config.timing = timing,
            Err(e) => log::warn!("could not read settings from the terminal: {e}; using defaults"),
        }
    }
    heartbeat::settings::cli::check_timing(&config.timing, config.tick)?;
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
    if worker.is_none() && args.workers > 1 {
        return run_parent(args, &config);
    }
    if worker.is_some() {
        config.reuse_port = true;
        // The parent serves --metrics for all; each worker answers it on a port of its own,
        // named in its first line.
        if config.metrics.is_some() {
            config.metrics = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        if let Some(port) = std::env::var(workers::PORT_ENV)
            .ok()
            .and_then(|p| p.parse().ok())
        {
            config.addr.set_port(port);
        }
    }
    let taking_over = channel.is_some();
    let mut server = match channel {
        Some(channel) => match Server::take_over(&config, channel) {
            Ok(server) => server,
            Err(GiveUp { why, status }) => {
                // The running server serves on; it logs why as well.
                log::warn!("live upgrade: not taking over: {why}");
                logging::flush();
                eprintln!("server: not taking over: {why}");
                std::process::exit(i32::from(status));
            }
        },
        None => Server::bind(config.clone())?,
    };
    server.stop_on_signals()?;
    if worker.is_some() {
        workers::stop_when_parent_goes(server.stopper());
    } else if let Some(started_as) = started_as {
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
    // What the loop logged as it stopped (`received SIGINT: stopping`) comes before the
    // summary, as it happened; and the count of dropped lines is then final.
    logging::flush();
    stats.on_log_lines_dropped(logging::dropped_lines());
    match (worker, args.json) {
        // For the parent to merge: histograms whole, not as percentiles.
        (Some(_), _) => print_line(&stats.to_exact_json()),
        (None, true) => print_line(&stats.to_json()),
        (None, false) => print_line(&stats.summary()),
    }
    Ok(())
}

/// `Listening on ADDR (heartbeat every …)`, with the number of workers when there are several
/// and where metrics are served when they are.
fn listening_line(
    addr: std::net::SocketAddr,
    config: &ServerConfig,
    workers: Option<usize>,
    metrics: Option<std::net::SocketAddr>,
) -> String {
    let timing = config.timing;
    let workers = workers.map_or(String::new(), |n| format!("{n} workers, "));
    let metrics = metrics.map_or(String::new(), |at| {
        format!("; metrics at http://{at}/metrics")
    });
    format!(
        "Listening on {addr} ({workers}heartbeat every {}, {} times, after {} idle{metrics})",
        format_duration(timing.interval),
        timing.count,
        format_duration(timing.idle)
    )
}

/// `--workers N`: reserves the port (choosing it for `--port 0`), starts the workers, and
/// once they have all stopped prints one summary merged from their reports.
fn run_parent(args: &ServerArgs, config: &ServerConfig) -> Result<(), StartError> {
    // Held, not listening, for as long as the parent runs: the port stays ours while a
    // worker is started again, and the workers know it before they bind.
    let reserved = net::reserve_shared(config.addr)?;
    let addr = reserved
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(config.addr);
    let env = vec![(workers::PORT_ENV.to_string(), addr.port().to_string())];
    refuse_upgrades();
    let mut supervisor = Supervisor::start(vec![env; args.workers], true)?;
    supervisor.wait_ready()?;
    let metrics = match config.metrics {
        Some(at) => Some(workers::metrics::serve(at, supervisor.first_lines())?),
        None => None,
    };
    let listening = listening_line(addr, config, Some(args.workers), metrics);
    print_line(&listening);
    notify::ready(&listening);
    let finished = supervisor.run();
    notify::stopping();
    drop(reserved);
    // `received SIGINT: stopping the workers` before the summary, as it happened.
    logging::flush();
    let mut stats = ServerStats::default();
    let mut unreadable = 0;
    for report in &finished.reports {
        match ServerStats::from_exact_json(report) {
            Ok(worker) => stats.merge(&worker),
            Err(_) => unreadable += 1,
        }
    }
    stats.on_log_lines_dropped(stats.log_lines_dropped + logging::dropped_lines());
    let lost = finished.lost + unreadable;
    if args.json {
        let mut json: serde_json::Value =
            serde_json::from_str(&stats.to_json()).unwrap_or_default();
        if let Some(object) = json.as_object_mut() {
            object.insert("workers".into(), args.workers.into());
            object.insert("worker_restarts".into(), finished.restarts.into());
            object.insert("workers_lost".into(), lost.into());
        }
        print_line(&json.to_string());
    } else {
        print_line(&format!(
            "{}\n  workers: {} (started again: {}; ended without a report, their counts \
             lost: {lost})",
            stats.summary(),
            args.workers,
            finished.restarts
        ));
    }
    Ok(())
}

/// SIGUSR2 to the `--workers` parent: one line saying no, instead of the default action
/// (which ends the process, and every worker with it, without a word to any peer).
fn refuse_upgrades() {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2])
    else {
        log::warn!("cannot catch SIGUSR2: it would end the server");
        return;
    };
    std::thread::spawn(move || {
        for _ in signals.forever() {
            log::warn!("received SIGUSR2: live upgrade with --workers is not built yet; ignored");
        }
    });
}

fn set_open_file_limit(limit: u64) {
    let result = rlimit::Resource::NOFILE
        .get()
        .and_then(|(_, hard)| rlimit::Resource::NOFILE.set(limit.min(hard), hard));
    if let Err(e) = result {
        log::warn!(
            "could not set the open-file limit to {limit}: {}",
            net::describe(&e)
        );
    }
}
