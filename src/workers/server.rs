//! `heartbeat-server --workers N`: the parent ([`run_server_parent`]) and one worker's side
//! ([`run_server_worker`]), and the JSON messages between them ([`Message`]).
//!
//! The parent refuses a port already served, holds the port, starts the workers with their
//! share of `--max-connections`, asks each for its counts every [`ASK_EVERY`], keeps them in
//! a [`Tally`] (from which its `--metrics` endpoint renders), and prints one summary merged
//! from exact counts when all have ended. A worker listens with `SO_REUSEPORT` beside its
//! siblings, answers each ask with a [`Message::Stats`] line, and ends with one. On SIGUSR2
//! the parent's [`Supervisor`] replaces the workers one at a time (live upgrade); a new
//! worker takes over from the old one instead of binding, and an old worker whose upgrade
//! was given up says why in a [`Message::UpgradeGivenUp`] line. With `--tls-cert` an old
//! worker that handed over serves on the TLS peers it kept, and its counts say only what
//! happened since the handover (`since_handover`), which the tally adds to its successor's.
//!
//! Owns the parent's flow and the message format. Does not own the processes (the
//! [`Supervisor`]), the merge rules ([`Tally`]), the endpoint ([`super::metrics`]) or the
//! server's loop.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

use super::tally::{Report, Tally};
use super::{say, shares, Supervisor, Watch, WorkersError, PORT_ENV, TAKEOVER_ENV};
use crate::edge::net::{self, SetupError};
use crate::edge::stop::Stoppable;
use crate::ops::metrics::Gauges;
use crate::ops::stats::ServerStats;
use crate::ops::{logging, notify};
use crate::server::takeover::GiveUp;
use crate::server::upgrade::StartedAs;
use crate::server::{Server, ServerConfig, ToParent};
use crate::settings::config::format_duration;

/// How often the parent asks each worker for its counts: what a scrape may lag behind, and
/// at most what a killed worker's count loses.
pub const ASK_EVERY: Duration = Duration::from_secs(1);

/// One line from a worker to its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// The first line: the worker listens at `addr`.
    Ready { addr: SocketAddr },
    /// The worker's counts, on each ask and once more at its end: `stats` as
    /// [`ServerStats::to_exact_json`] writes them (histograms whole). `since_handover`: from
    /// an old worker that handed over and keeps TLS peers, only what happened since the
    /// handover (the new worker carries the rest on).
    Stats {
        stats: serde_json::Value,
        buffered_bytes: u64,
        log_lines_dropped: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        since_handover: bool,
    },
    /// The live upgrade the parent asked for was given up, for `reason`: the worker serves
    /// on with the binary it has.
    UpgradeGivenUp { reason: String },
}

impl Message {
    /// The line for `stats` and `gauges`.
    pub fn stats_line(stats: &ServerStats, gauges: &Gauges) -> String {
        Message::counts_line(stats, gauges, false)
    }

    /// The line for `stats` and `gauges`, of all the worker counted or (`since_handover`)
    /// only since it handed over.
    fn counts_line(stats: &ServerStats, gauges: &Gauges, since_handover: bool) -> String {
        let message = Message::Stats {
            stats: serde_json::from_str(&stats.to_exact_json()).unwrap_or_default(),
            buffered_bytes: gauges.buffered_bytes,
            log_lines_dropped: gauges.log_lines_dropped,
            since_handover,
        };
        serde_json::to_string(&message).unwrap_or_default()
    }

    /// The reason in a [`Message::UpgradeGivenUp`] line; `None` for any other line.
    pub fn given_up_in(line: &str) -> Option<String> {
        match serde_json::from_str(line).ok()? {
            Message::UpgradeGivenUp { reason } => Some(reason),
            _ => None,
        }
    }

    /// The report in a [`Message::Stats`] line; `None` for any other line.
    pub fn report_in(line: &str) -> Option<Report> {
        Message::counts_in(line).map(|(report, _)| report)
    }

    /// The report in a [`Message::Stats`] line, and whether it counts only since a handover.
    pub fn counts_in(line: &str) -> Option<(Report, bool)> {
        let Message::Stats {
            stats,
            buffered_bytes,
            log_lines_dropped,
            since_handover,
        } = serde_json::from_str(line).ok()?
        else {
            return None;
        };
        let report = Report {
            stats: ServerStats::from_exact_json(&stats.to_string()).ok()?,
            gauges: Gauges {
                buffered_bytes,
                log_lines_dropped,
            },
        };
        Some((report, since_handover))
    }
}

/// `Listening on ADDR (heartbeat every …)`, with the number of workers when there are several
/// and where metrics are served when they are: the first line of a server or a parent.
pub fn listening_line(
    addr: SocketAddr,
    config: &ServerConfig,
    workers: Option<usize>,
    metrics: Option<SocketAddr>,
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

/// The worker's side: listens beside its siblings with its share of the connections (or,
/// started by a live upgrade, takes over the listener and peers of the worker it replaces),
/// tells the parent it is ready, answers its asks, and reports its counts at its end.
pub fn run_server_worker(mut config: ServerConfig) -> Result<(), WorkersError> {
    config.reuse_port = true;
    // The parent serves --metrics for all, from the counts the workers send it.
    config.metrics = None;
    let share = std::env::var(PORT_ENV).unwrap_or_default();
    if let Some((port, max)) = share.split_once(',') {
        if let (Ok(port), Ok(max)) = (port.parse(), max.parse()) {
            config.addr.set_port(port);
            config.max_connections = max;
        }
    }
    let mut server = match std::env::var_os(TAKEOVER_ENV) {
        Some(_) => take_over(&config),
        None => Server::bind(config.clone())?,
    };
    server.stop_on_signals()?;
    server.enable_upgrade_by_parent(&config);
    server.answer_parent(Box::new(|told| match told {
        ToParent::Counts(stats, gauges) => say(&Message::stats_line(stats, gauges)),
        ToParent::SinceHandover(stats, gauges) => {
            say(&Message::counts_line(stats, gauges, true));
        }
        ToParent::UpgradeGivenUp(reason) => {
            let reason = reason.to_string();
            say(&serde_json::to_string(&Message::UpgradeGivenUp { reason }).unwrap_or_default());
        }
    }))?;
    let ready = Message::Ready {
        addr: server.local_addr(),
    };
    say(&serde_json::to_string(&ready).unwrap_or_default());
    let (stats, handed_over) = server.run_to_end()?;
    // After a handover the new worker carries the counts on; one that kept TLS peers has
    // said what they did since, at its end (`ToParent::SinceHandover`).
    if !handed_over {
        let gauges = Gauges {
            buffered_bytes: 0,
            log_lines_dropped: logging::dropped_lines(),
        };
        say(&Message::stats_line(&stats, &gauges));
    }
    Ok(())
}

/// A new worker's start in a live upgrade: the channel from the parent, then the listener
/// and peers of the worker it replaces, as a single server takes over
/// (`Server::take_over`). On any failure it exits (the old worker serves on and tells the
/// parent why), having served nothing.
fn take_over(config: &ServerConfig) -> Server {
    let taken = crate::server::channel_from_parent()
        .map_err(|why| GiveUp { why, status: 1 })
        .and_then(|channel| Server::take_over(config, channel));
    match taken {
        Ok(server) => server,
        Err(GiveUp { why, status }) => {
            log::warn!("live upgrade: not taking over: {why}");
            logging::flush();
            std::process::exit(i32::from(status));
        }
    }
}

/// What the parent keeps of its workers' lines: their counts.
struct Keep(Arc<Mutex<Tally>>);

impl Keep {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        lock(&self.0)
    }
}

/// The tally, even if a thread panicked while holding it (its counts are still counts).
pub(super) fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watch for Keep {
    fn line(&mut self, slot: usize, generation: u32, line: &str) {
        match Message::counts_in(line) {
            Some((report, true)) => self.tally().report_kept(slot, generation, report),
            Some((report, false)) => self.tally().report(slot, report),
            None => {}
        }
    }

    fn old_line(&mut self, slot: usize, generation: u32, line: &str) {
        // A report from before the handover is the new worker's to carry on.
        if let Some((report, true)) = Message::counts_in(line) {
            self.tally().report_kept(slot, generation, report);
        }
    }

    fn process_ended(&mut self, slot: usize, generation: u32) {
        self.tally().retire_kept(slot, generation);
    }

    fn ended(&mut self, slot: usize, _: ExitStatus) {
        self.tally().retire(slot);
    }

    fn given_up(&self, line: &str) -> Option<String> {
        Message::given_up_in(line)
    }

    fn upgrade_failed_here(&mut self) {
        self.tally().upgrade_failed_in_parent();
    }
}

/// The parent: `workers` workers on `config`'s port, one summary at the end (`json` or text).
/// SIGUSR2 replaces every worker, one at a time, by the binary now at `started_as`'s path
/// (see `super::upgrade`); without it (the path could not be found at start) SIGUSR2 is
/// answered with a line saying why.
pub fn run_server_parent(
    workers: usize,
    json: bool,
    config: &ServerConfig,
    started_as: Option<StartedAs>,
) -> Result<(), WorkersError> {
    super::check_count(workers, "server")?;
    refuse_if_served(config.addr)?;
    // Held, not listening, for as long as the parent runs: the port stays ours while a
    // worker is started again, and the workers know it before they bind.
    let reserved = net::reserve_shared(config.addr)?;
    let addr = reserved
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(config.addr);
    // The total is split; a worker's share is at least one connection.
    let envs = shares(config.max_connections, workers)
        .into_iter()
        .map(|max| {
            let share = format!("{},{}", addr.port(), max.max(1));
            vec![(PORT_ENV.to_string(), share)]
        })
        .collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut keep = Keep(tally.clone());
    let mut supervisor = Supervisor::start_as(started_as, envs, true, true)?;
    supervisor.ask_every(ASK_EVERY);
    supervisor.wait_ready(&mut keep)?;
    // Stopped while starting: not ready, and never listening; the summary still comes.
    if !supervisor.is_stopping() {
        let metrics = match config.metrics {
            Some(at) => Some(super::metrics::serve(at, tally.clone())?),
            None => None,
        };
        let listening = listening_line(addr, config, Some(workers), metrics);
        say(&listening);
        notify::ready(&listening);
    }
    let finished = supervisor.run(&mut keep);
    notify::stopping();
    drop(reserved);
    // `received SIGINT: stopping the workers` before the summary, as it happened; and the
    // count of dropped lines is then final.
    logging::flush();
    let Report { mut stats, gauges } = lock(&tally).merged();
    stats.on_log_lines_dropped(gauges.log_lines_dropped + logging::dropped_lines());
    let cut_short = match finished.started < finished.asked {
        true => format!(
            "; {} of {} started before a stop signal",
            finished.started, finished.asked
        ),
        false => String::new(),
    };
    if json {
        let mut json: serde_json::Value =
            serde_json::from_str(&stats.to_json()).unwrap_or_default();
        if let Some(object) = json.as_object_mut() {
            object.insert("workers".into(), workers.into());
            object.insert("workers_started".into(), finished.started.into());
            object.insert("worker_restarts".into(), finished.restarts.into());
            object.insert("workers_lost".into(), finished.failed.into());
        }
        say(&json.to_string());
    } else {
        say(&format!(
            "{}\n  workers: {workers} (started again: {}; ended abnormally, counted up to \
             their last report: {}{cut_short})",
            stats.summary(),
            finished.restarts,
            finished.failed
        ));
    }
    Ok(())
}

/// Fails, as a plain server would (`address already in use (is another server running?
/// …)`), when something already listens on `addr`: workers share their port with
/// `SO_REUSEPORT`, and a second parent's workers would otherwise join the first one's group
/// and silently split the peers with it. The probe binds without `SO_REUSEPORT`, so any
/// listener refuses it; it is closed before the workers bind. Port 0 is always free.
fn refuse_if_served(addr: SocketAddr) -> Result<(), SetupError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = || -> std::io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // As the plain server's listener: connections in TIME_WAIT do not count.
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())
    };
    probe().map_err(|source| SetupError::Listen { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stats line carries the counts exactly (histograms whole), and a ready line is not
    /// taken for counts.
    #[test]
    fn a_stats_line_carries_exact_counts() {
        let mut stats = ServerStats {
            accepted: 7,
            open: 3,
            ..ServerStats::default()
        };
        stats.detection_time.record(Duration::from_micros(123_456));
        let gauges = Gauges {
            buffered_bytes: 9,
            log_lines_dropped: 2,
        };
        let line = Message::stats_line(&stats, &gauges);
        assert!(!line.contains('\n'), "one line: {line}");
        let report = Message::report_in(&line).expect("a report");
        assert_eq!(report.stats, stats);
        assert_eq!(report.gauges, gauges);
        let ready = serde_json::to_string(&Message::Ready {
            addr: "127.0.0.1:8000".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(ready, r#"{"ready":{"addr":"127.0.0.1:8000"}}"#);
        assert!(Message::report_in(&ready).is_none());
        assert!(Message::report_in("Listening on 127.0.0.1:8000").is_none());
    }

    /// A worker's word that an upgrade was given up is one line the parent reads back (with
    /// its reason whole), and is taken neither for counts nor from any other line.
    #[test]
    fn an_upgrade_given_up_line_carries_its_reason() {
        let reason = "the new binary refused: the listening address changed".to_string();
        let line = serde_json::to_string(&Message::UpgradeGivenUp {
            reason: reason.clone(),
        })
        .unwrap();
        assert!(line.starts_with(r#"{"upgrade_given_up":"#), "{line}");
        assert_eq!(Message::given_up_in(&line), Some(reason));
        assert!(Message::report_in(&line).is_none());
        let stats = Message::stats_line(&ServerStats::default(), &Gauges::default());
        assert_eq!(Message::given_up_in(&stats), None);
        assert_eq!(Message::given_up_in("upgrade_given_up"), None);
    }

    /// A port something listens on is refused before any worker starts; a free one is not.
    #[test]
    fn a_served_port_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = taken.local_addr().expect("addr");
        let error = refuse_if_served(addr).expect_err("in use");
        assert!(
            error.to_string().contains("another server running"),
            "{error}"
        );
        drop(taken);
        assert!(refuse_if_served("127.0.0.1:0".parse().unwrap()).is_ok());
    }
}
