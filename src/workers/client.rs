//! `heartbeat-client --workers N`: the parent ([`run_client_parent`]), which splits the
//! connections, the connect rate and the source addresses among N worker processes and
//! merges their reports into one summary, and a worker's side ([`take_share`],
//! [`run_client_worker`]).
//!
//! Owns the split and the merge of the workers' [`ClientReport`]s. Does not own the
//! processes (the [`Supervisor`]) or the client's loop. A worker that ends without its report
//! (killed, crashed) makes the run a failure: the summary then lacks its connections, and
//! the parent says so and exits non-zero.

use std::process::ExitStatus;

use super::{say, shares, sources_from, Supervisor, Watch, WorkersError, BIND_ENV, SHARE_ENV};
use crate::client::{Client, ClientConfig, Outcome};
use crate::edge::net::{self, SetupError};
use crate::edge::stop::Stoppable;
use crate::ops::stats::client::{ClientReport, RunFacts};
use crate::ops::stats::{ClientStats, ClientSummary};

/// In a worker: its share of the connections and connect rate, its source addresses, and a
/// seed of its own (so workers' faults are not copies of each other), from its parent.
pub fn take_share(config: &mut ClientConfig, index: usize) {
    let share = std::env::var(SHARE_ENV).unwrap_or_default();
    if let Some((connections, rate)) = share.split_once(',') {
        if let (Ok(connections), Ok(rate)) = (connections.parse(), rate.parse()) {
            config.connections = connections;
            config.connect_rate = rate;
        }
    }
    let bind = std::env::var(BIND_ENV).unwrap_or_default();
    config.bind = bind.split(',').filter_map(|a| a.parse().ok()).collect();
    config.seed = config.seed.wrapping_add(index as u64);
    config.verbose = false;
    config.status_line = false;
}

/// Descriptors a process needs besides its connections (stdio, poll, waker, signals).
const SPARE_FILES: u64 = 16;

/// Raises the open-file limit, and fails when the largest of `connections` split over
/// `processes` cannot fit in it: each process has a limit of its own.
pub fn check_open_files(connections: usize, processes: usize) -> Result<(), SetupError> {
    let limit = net::raise_open_file_limit().unwrap_or(1024);
    let possible = limit.saturating_sub(SPARE_FILES);
    let wanted = shares(connections, processes)[0] as u64;
    if wanted > possible {
        return Err(SetupError::TooFewFiles {
            wanted,
            possible,
            limit,
        });
    }
    Ok(())
}

/// The worker's side: runs its share, stopping when the parent goes, and reports.
pub fn run_client_worker(config: ClientConfig) -> Result<(), SetupError> {
    let mut client = Client::new(config)?;
    client.stop_on_signals()?;
    super::stop_when_parent_goes(client.stopper());
    say(&report_line(client.run()?));
    Ok(())
}

/// In a worker: its one line for the parent, the run's report.
fn report_line(outcome: Outcome) -> String {
    let report = ClientReport {
        stats: outcome.stats,
        facts: outcome.facts,
        connected: outcome.finish != crate::client::Finish::NothingConnected,
        first_error: outcome.first_error,
    };
    serde_json::to_string(&report).unwrap_or_default()
}

/// Each worker's last line, kept when it ends with status 0.
#[derive(Default)]
struct Reports {
    last: Vec<Option<String>>,
    reports: Vec<String>,
}

impl Watch for Reports {
    fn line(&mut self, slot: usize, _: u32, line: &str) {
        if self.last.len() <= slot {
            self.last.resize(slot + 1, None);
        }
        self.last[slot] = Some(line.to_string());
    }

    fn ended(&mut self, slot: usize, status: ExitStatus) {
        let last = self.last.get_mut(slot).and_then(Option::take);
        if let (true, Some(line)) = (status.success(), last) {
            self.reports.push(line);
        }
    }
}

/// What a client parent's run came to.
pub struct ParentOutcome {
    /// Some connection opened, and every worker reported.
    pub succeeded: bool,
    /// The merged summary (already printed), for what the caller also writes (a report);
    /// `None` when no worker reported.
    pub summary: Option<ClientSummary>,
}

/// The parent: runs `workers` workers on shares of `config` and prints one summary (`json`
/// or text).
pub fn run_client_parent(
    workers: usize,
    json: bool,
    config: &ClientConfig,
) -> Result<ParentOutcome, WorkersError> {
    super::check_count(workers, "client")?;
    let shares = shares(config.connections, workers);
    let mut first = 0;
    let envs = shares
        .iter()
        .map(|&share| {
            let rate = (u64::from(config.connect_rate) * share as u64)
                .div_ceil(config.connections as u64)
                .max(1);
            let bind: Vec<String> = sources_from(&config.bind, first)
                .iter()
                .map(ToString::to_string)
                .collect();
            first += share;
            vec![
                (SHARE_ENV.to_string(), format!("{share},{rate}")),
                (BIND_ENV.to_string(), bind.join(",")),
            ]
        })
        .collect();
    let mut reports = Reports::default();
    let finished = Supervisor::start(envs, false)?.run(&mut reports);
    let mut stats: Option<ClientStats> = None;
    let mut facts = RunFacts::default();
    let (mut connected, mut first_error) = (false, None);
    let mut reported = 0;
    for line in &reports.reports {
        let Ok(report) = serde_json::from_str::<ClientReport>(line) else {
            continue;
        };
        reported += 1;
        match &mut stats {
            Some(stats) => stats.merge(&report.stats),
            None => stats = Some(report.stats.clone()),
        }
        facts.merge(&report.facts);
        connected |= report.connected;
        first_error = first_error.or(report.first_error);
    }
    // Workers a stop signal kept from starting are not lost: they had no share to run.
    let lost = finished.started.saturating_sub(reported);
    let summary = stats.map(|stats| stats.summary(&facts));
    if let Some(summary) = &summary {
        say(&match json {
            true => summary.to_json(),
            false => summary.to_text(),
        });
    }
    if !connected {
        if let Some(error) = first_error {
            eprintln!("client: {error}");
        }
    }
    if lost > 0 {
        eprintln!(
            "client: error: {lost} of {workers} workers ended without a report \
             (killed or crashed): their connections are missing from the summary"
        );
    }
    Ok(ParentOutcome {
        succeeded: connected && lost == 0,
        summary,
    })
}
