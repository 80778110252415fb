//! Starting the two ends of a row and waiting until they are connected: a server from the
//! run's copy of the binary (its arguments, its `Listening on` line, its descriptors before
//! any peer), a load client with its share of source addresses, and the wait until the
//! server's processes hold every peer.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use heartbeat::settings::config::format_duration;

use crate::child::Group;
use crate::{progress, tree, Row, Settings};

const START_TIMEOUT: Duration = Duration::from_secs(15);
/// A client gives up a connect after 10 s: no new peer for this long is a stall.
const STALL: Duration = Duration::from_secs(20);
/// Connections per source address: under a fifth of the ephemeral range (the client's own
/// rule when it spreads by itself).
const PER_SOURCE: usize = 5_000;
/// Peers one process may hold here: 20,000 open files, less room for its own.
pub const PER_PROCESS: usize = 19_500;

/// A server and what it held before any peer.
pub struct Server {
    pub group: Group,
    pub addr: SocketAddr,
    pub files0: u64,
}

impl Server {
    /// Peers held now: descriptors beyond those it started with.
    pub fn held(&self) -> u64 {
        tree::files(self.group.pgid).saturating_sub(self.files0)
    }
}

/// Starts a server on `port` (0: any) with `drain`. `files0` is what a server started so
/// held before any peer, when known: a server started while peers are already reconnecting
/// cannot be counted before they come.
pub fn server(
    s: &Settings,
    row: &Row,
    name: &str,
    port: u16,
    files0: Option<u64>,
) -> Result<Server, String> {
    let mut args: Vec<String> = ["--host", "127.0.0.1", "--no-prompt", "--log-level", "info"]
        .map(String::from)
        .to_vec();
    args.extend([
        "--port".into(),
        port.to_string(),
        "--drain".into(),
        format_duration(s.drain),
        "--max-connections".into(),
        (PER_PROCESS * row.workers).to_string(),
    ]);
    if row.workers > 1 {
        args.extend(["--workers".into(), row.workers.to_string()]);
    }
    let group = Group::spawn(name, &s.exe, &args, &s.dir)?;
    let first = group.first_line(START_TIMEOUT)?;
    let addr = first
        .strip_prefix("Listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{name}: unexpected first line {first:?}{}", group.said()))?;
    // With --workers, every worker is up before its descriptors are counted.
    let processes = if row.workers > 1 { row.workers + 1 } else { 1 };
    let deadline = Instant::now() + START_TIMEOUT;
    while tree::live(group.pgid).len() < processes {
        if Instant::now() > deadline {
            return Err(format!(
                "{name}: its {} workers did not all start{}",
                row.workers,
                group.said()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let files0 = match files0 {
        Some(known) => known,
        None => {
            thread::sleep(Duration::from_millis(200));
            tree::files(group.pgid)
        }
    };
    Ok(Server {
        group,
        addr,
        files0,
    })
}

/// Starts the load client of `row` against `addr`.
pub fn client(s: &Settings, row: &Row, addr: SocketAddr, reconnect: bool) -> Result<Group, String> {
    let sources = row.peers.div_ceil(PER_SOURCE).clamp(1, 250);
    let bind: Vec<String> = (1..=sources).map(|h| format!("127.0.0.{h}")).collect();
    let mut args: Vec<String> = vec![
        "--host".into(),
        addr.ip().to_string(),
        "--port".into(),
        addr.port().to_string(),
        "--no-prompt".into(),
        "--json".into(),
        "--connections".into(),
        row.peers.to_string(),
        "--connect-rate".into(),
        s.connect_rate.to_string(),
        "--interval".into(),
        format_duration(s.client_interval),
        "--bind".into(),
        bind.join(","),
        // A backstop: it stops by itself even if the bench is killed.
        "--duration".into(),
        "15m".into(),
    ];
    let workers = row.peers.div_ceil(PER_PROCESS);
    if workers > 1 {
        args.extend(["--workers".into(), workers.to_string()]);
    }
    if reconnect {
        args.push("--reconnect".into());
    }
    Group::spawn("the load client", &s.client_exe, &args, &s.dir)
}

/// Waits until `server` holds `peers` peers; fails if the client exits or the ramp stalls.
pub fn connected(server: &Server, client: &Group, peers: usize) -> Result<Duration, String> {
    let t0 = Instant::now();
    let (mut most, mut most_at) = (0, t0);
    loop {
        let held = server.held();
        if held >= peers as u64 {
            let took = t0.elapsed();
            progress(&format!(
                "{peers} peers connected in {:.1} s",
                took.as_secs_f64()
            ));
            return Ok(took);
        }
        if crate::interrupted() {
            return Err("interrupted".into());
        }
        if !client.alive() {
            return Err(format!(
                "the load client exited with {held} of {peers} peers connected{}",
                client.said()
            ));
        }
        if !server.group.alive() {
            return Err(format!(
                "{} exited{}",
                server.group.name,
                server.group.said()
            ));
        }
        if held > most {
            (most, most_at) = (held, Instant::now());
        } else if most_at.elapsed() > STALL {
            return Err(format!(
                "connecting stalled: {held} of {peers} peers for {} s{}",
                STALL.as_secs(),
                client.said()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the client says at the end (its `--json` summary), stopped with SIGTERM.
pub fn client_summary(client: Group) -> Result<serde_json::Value, String> {
    let said = client.said();
    let lines = client.stop(Duration::from_secs(30))?;
    let last = lines
        .iter()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("the load client printed no JSON summary{said}"))?;
    serde_json::from_str(last).map_err(|e| format!("the load client's summary: {e}"))
}

/// A count from the client's summary; a missing key is an error, not a zero.
pub fn count(summary: &serde_json::Value, key: &str) -> Result<u64, String> {
    summary
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("the load client's summary has no count {key:?}"))
}
