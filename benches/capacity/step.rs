//! One step of the ramp: check that it fits, start its server/client pairs, wait until the
//! servers hold every connection, hold all of them through the heartbeat rounds (watching
//! memory, the children and the connections held), and read the figures.

use std::collections::BTreeMap;
use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use crate::fleet::Fleet;
use crate::host::{machine_busy_ticks, Host};
use crate::proc::{cpu_ticks, fd_count, own_cpu_ticks, rss_bytes};
use crate::{progress, Run};

/// Cost per connection assumed before the first step has measured one (all memory, both
/// ends): about 12 KiB was measured here with 19,000 connections.
const FIRST_GUESS_BYTES: f64 = 16_384.0;
/// Open files a server or client process holds besides its connections (epoll, timerfd,
/// signal pipe, standard streams, log pipe), with room to spare.
const FILES_PER_PROCESS: u64 = 32;
/// A ramp with no new connection for this long has stalled (a client gives up a connect
/// after 10 s).
const STALL: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(250);

/// Why the run stopped before its last step.
pub enum Stop {
    /// A limit of the machine: the step would not fit, so it was not tried.
    Limit(String),
    /// The step was tried and failed.
    Failed(String),
    /// The time budget would be exceeded.
    Budget(String),
    /// SIGINT, SIGTERM or SIGHUP.
    Interrupted,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Limit(why) => write!(f, "limit of this machine: {why}"),
            Stop::Failed(why) => write!(f, "failed: {why}"),
            Stop::Budget(why) => write!(f, "time budget: {why}"),
            Stop::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl From<String> for Stop {
    fn from(why: String) -> Stop {
        Stop::Failed(why)
    }
}

/// The figures of one completed step (all connections of the run so far).
pub struct Row {
    pub held: usize,
    pub pairs: usize,
    pub added: usize,
    pub connect_secs: f64,
    pub host: Host,
    /// The slab caches at the end of the hold, if `/proc/slabinfo` is readable.
    pub caches: Option<BTreeMap<String, u64>>,
    /// The servers' RSS growth since each started, summed.
    pub server_rss_grown: u64,
    /// The clients' RSS now, summed (their start RSS comes from their JSON at the end).
    pub client_rss: u64,
    pub clients: usize,
    /// CPU over the last idle period of the hold, in clock ticks, and its length.
    pub server_ticks: u64,
    pub client_ticks: u64,
    pub other_ticks: u64,
    pub window_secs: f64,
}

impl Row {
    pub fn per_conn(&self, bytes: f64) -> f64 {
        bytes / self.held as f64
    }
}

/// Runs the step to `target` connections in all.
pub fn run(run: &Run, fleet: &mut Fleet, target: usize, last: Option<&Row>) -> Result<Row, Stop> {
    let settings = &run.settings;
    let had = fleet.target();
    let added = target - had;
    let pairs = added.div_ceil(settings.per_process);
    check_fits(run, added, pairs, last)?;
    let first_new = fleet.servers.len();
    let mut left = added;
    while left > 0 {
        let n = left.min(settings.per_process);
        fleet.start_server(&settings.timing_args(), n)?;
        left -= n;
    }
    // A few clients ramp at a time: all at once (56 processes on 2 cores) starves every
    // loop, connects time out and heartbeats go unanswered.
    let parallel = settings.ramp_parallel.clamp(1, pairs);
    let rate = (settings.connect_rate / parallel as u32).max(1);
    // A backstop: clients stop by themselves even if nobody stops them.
    let duration = settings.budget + settings.hold() * 2;
    let client_args = vec![
        "--connect-rate".to_string(),
        rate.to_string(),
        "--duration".into(),
        format!("{}s", duration.as_secs()),
        "--server-interval".into(),
        heartbeat::settings::config::format_duration(settings.interval),
    ];
    let t0 = Instant::now();
    let mut next = first_new;
    let mut ramping: Vec<usize> = Vec::new();
    let (mut most, mut most_at) = (0, t0);
    // The ramp: until the new servers hold every connection.
    let connected = loop {
        let mut still = Vec::new();
        for &k in &ramping {
            let s = &fleet.servers[k];
            if fd_count(s.proc.pid)? < s.fds0 + s.target as u64 {
                still.push(k);
            }
        }
        ramping = still;
        while ramping.len() < parallel && next < fleet.servers.len() {
            fleet.start_client(next, settings.sources_each, &client_args)?;
            ramping.push(next);
            next += 1;
        }
        let new_held = held(fleet, first_new)?;
        if new_held >= added {
            break Instant::now();
        }
        if new_held > most {
            (most, most_at) = (new_held, Instant::now());
        } else if most_at.elapsed() > STALL {
            return Err(Stop::Failed(format!(
                "the ramp stalled: no new connection for {} s, the new servers hold {new_held} \
                 of {added} (a client gives up a connect after 10 s: see their summaries)",
                STALL.as_secs()
            )));
        }
        watch(run, fleet, None)?;
        thread::sleep(Duration::from_millis(50));
    };
    let connect_secs = (connected - t0).as_secs_f64();
    progress(&format!(
        "{target}: all {added} new connections open in {connect_secs:.1} s ({:.0}/s); holding \
         {} s",
        added as f64 / connect_secs,
        settings.hold().as_secs()
    ));
    // The hold. The CPU window is the last full idle period: each connection gets one
    // heartbeat in it (connections answer, so each is heartbeated once every `idle`).
    let window_start = connected + settings.idle * (settings.rounds - 1);
    hold_until(run, fleet, target, window_start)?;
    let cpu0 = Cpu::read(fleet)?;
    hold_until(run, fleet, target, window_start + settings.idle)?;
    let cpu1 = Cpu::read(fleet)?;
    hold_until(run, fleet, target, connected + settings.hold())?;
    let host = Host::read()?;
    let caches = crate::host::slab_caches();
    let mut server_rss_grown = 0;
    for s in &fleet.servers {
        server_rss_grown += rss_bytes(s.proc.pid)?.saturating_sub(s.rss0);
    }
    let mut client_rss = 0;
    for c in &fleet.clients {
        client_rss += rss_bytes(c.proc.pid)?;
    }
    Ok(Row {
        held: held(fleet, 0)?,
        pairs: fleet.servers.len(),
        added,
        connect_secs,
        host,
        caches,
        server_rss_grown,
        client_rss,
        clients: fleet.clients.len(),
        server_ticks: cpu1.servers - cpu0.servers,
        client_ticks: cpu1.clients - cpu0.clients,
        other_ticks: cpu1
            .machine
            .saturating_sub(cpu0.machine)
            .saturating_sub(cpu1.ours() - cpu0.ours()),
        window_secs: (cpu1.at - cpu0.at).as_secs_f64(),
    })
}

/// Whether the step fits in the open files, the memory and the time left.
fn check_fits(run: &Run, added: usize, pairs: usize, last: Option<&Row>) -> Result<(), Stop> {
    let settings = &run.settings;
    let host = Host::read()?;
    let files = 2 * added as u64 + 2 * pairs as u64 * FILES_PER_PROCESS;
    let free = host.file_max.saturating_sub(host.files);
    if files + settings.file_reserve > free {
        return Err(Stop::Limit(format!(
            "open files (fs.file-max {}): {added} more connections need {files} more (one per \
             end, plus each process's own), {free} are free, and {} are left to the machine's \
             other users",
            host.file_max, settings.file_reserve
        )));
    }
    let per_conn = last.map_or(FIRST_GUESS_BYTES, |row| {
        row.per_conn(
            run.at_start
                .available_kib
                .saturating_sub(row.host.available_kib) as f64
                * 1024.0,
        )
    });
    let projected = host.available_kib as f64 - added as f64 * per_conn / 1024.0;
    if projected < settings.min_available_kib as f64 {
        return Err(Stop::Limit(format!(
            "memory: {added} more connections at {per_conn:.0} B each (all memory, both ends) \
             would leave {:.1} GiB available, under the {:.1} GiB floor (MemAvailable is {:.1} GiB)",
            projected / 1048576.0,
            settings.min_available_kib as f64 / 1048576.0,
            host.available_kib as f64 / 1048576.0
        )));
    }
    let rate = last.map_or(10_000.0, |row| row.added as f64 / row.connect_secs);
    let needs =
        Duration::from_secs_f64(added as f64 / rate) + settings.hold() + Duration::from_secs(15);
    let left = settings.budget.saturating_sub(run.start.elapsed());
    if needs > left {
        return Err(Stop::Budget(format!(
            "{added} more connections need about {} s (ramp at {rate:.0}/s, hold, stop), {} s of \
             the {} s budget are left (CAPACITY_BUDGET_SECS)",
            needs.as_secs(),
            left.as_secs(),
            settings.budget.as_secs()
        )));
    }
    Ok(())
}

/// Connections held by the servers from index `from` on (their descriptors beyond those they
/// had at start).
fn held(fleet: &Fleet, from: usize) -> Result<usize, String> {
    let mut total = 0;
    for s in &fleet.servers[from..] {
        total += fd_count(s.proc.pid)?.saturating_sub(s.fds0) as usize;
    }
    Ok(total)
}

/// Waits until `until`, checking that every connection is still held.
fn hold_until(run: &Run, fleet: &mut Fleet, target: usize, until: Instant) -> Result<(), Stop> {
    while Instant::now() < until {
        watch(run, fleet, Some(target))?;
        thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    Ok(())
}

/// Stops the step if the run was interrupted, memory ran low, a child exited, or (`target`
/// given) the servers hold fewer connections than they should.
fn watch(run: &Run, fleet: &mut Fleet, target: Option<usize>) -> Result<(), Stop> {
    if run.interrupted() {
        return Err(Stop::Interrupted);
    }
    let host = Host::read()?;
    if host.available_kib < run.settings.min_available_kib {
        return Err(Stop::Failed(format!(
            "memory: MemAvailable fell to {:.1} GiB, under the {:.1} GiB floor, with {} \
             connections held",
            host.available_kib as f64 / 1048576.0,
            run.settings.min_available_kib as f64 / 1048576.0,
            held(fleet, 0)?
        )));
    }
    if let Some(name) = fleet.exited() {
        return Err(Stop::Failed(format!(
            "{name} exited (see its output below)"
        )));
    }
    if let Some(target) = target {
        let now = held(fleet, 0)?;
        if now < target {
            return Err(Stop::Failed(format!(
                "connections were closed while held: the servers hold {now} of {target}"
            )));
        }
    }
    Ok(())
}

/// CPU used so far by the servers, the clients, the machine, and this process, in ticks.
struct Cpu {
    at: Instant,
    servers: u64,
    clients: u64,
    machine: u64,
    own: u64,
}

impl Cpu {
    fn read(fleet: &Fleet) -> Result<Cpu, String> {
        let mut servers = 0;
        for s in &fleet.servers {
            servers += cpu_ticks(s.proc.pid)?;
        }
        let mut clients = 0;
        for c in &fleet.clients {
            clients += cpu_ticks(c.proc.pid)?;
        }
        Ok(Cpu {
            at: Instant::now(),
            servers,
            clients,
            machine: machine_busy_ticks().ok_or("cannot read /proc/stat")?,
            own: own_cpu_ticks().ok_or("cannot read /proc/self/stat")?,
        })
    }

    fn ours(&self) -> u64 {
        self.servers + self.clients + self.own
    }
}
