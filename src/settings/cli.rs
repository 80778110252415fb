//! The command lines of both binaries, and how flags, `configuration.json` and the built-in
//! defaults combine: a flag wins over the file, the file over the default.
//!
//! Owns argument parsing and that merge. It opens no socket and asks no question: resolving
//! host names is `net`'s job, prompting is `prompt`'s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::client::faults::FaultSpec;
use crate::client::{self, ClientConfig};
use crate::cores::allow::AllowList;
use crate::cores::liveness::Timing;
use crate::cores::protocol;
use crate::edge::net::{self, SetupError};
use crate::server::{self, ServerConfig};
use crate::settings::config::{self, ConfigError, FileConfig};
use crate::workers::WorkersError;

/// Why the command line could not be turned into a configuration.
#[derive(Debug)]
pub enum StartError {
    /// A bad configuration file or value: exit status 2.
    Config(ConfigError),
    /// An address that cannot be used: exit status 1.
    Setup(SetupError),
    /// `--workers`: a worker could not be started, or failed at start (its own status).
    Workers(WorkersError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => e.fmt(f),
            StartError::Setup(e) => e.fmt(f),
            StartError::Workers(e) => e.fmt(f),
        }
    }
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::Setup(_) => 1,
            StartError::Workers(e) => e.exit_code(),
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<WorkersError> for StartError {
    fn from(e: WorkersError) -> Self {
        StartError::Workers(e)
    }
}

impl From<SetupError> for StartError {
    fn from(e: SetupError) -> Self {
        StartError::Setup(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
}

fn size(text: &str) -> Result<usize, String> {
    config::parse_size(text).and_then(|n| match n {
        0 => Err("must be more than 0".to_string()),
        n => Ok(n),
    })
}

fn tick(text: &str) -> Result<Duration, String> {
    config::parse_duration(text).and_then(|d| match d.is_zero() {
        true => Err("must be more than 0".to_string()),
        false => Ok(d),
    })
}

fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be more than 0".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

fn positive_u32(text: &str) -> Result<u32, String> {
    positive(text).and_then(|n| u32::try_from(n).map_err(|_| format!("{n} is too large")))
}

fn port(text: &str) -> Result<u16, String> {
    config::parse_port(text)
}

/// An address and port to serve metrics on, e.g. `127.0.0.1:9100` or `[::1]:9100`.
fn metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not ADDRESS:PORT, e.g. 127.0.0.1:9100"))?;
    match net::not_for_tcp(addr.ip()) {
        Some(what) => Err(format!("{} is {what}: TCP cannot listen there", addr.ip())),
        None => Ok(addr),
    }
}

/// TCP heartbeat server: echoes each line as `Echoing...<line>`, sends `heartbeat` to peers
/// that go quiet, and closes those that do not answer with `End Connection`.
///
/// Settings come from the flags, then `configuration.json` (the `server` object), then the
/// defaults. Durations are written 500ms, 5s, 2m, or a bare number of seconds.
#[derive(Debug, Parser)]
#[command(name = "heartbeat-server", version, after_help = SERVER_AFTER_HELP)]
pub struct ServerArgs {
    /// Configuration file, at most 1 MiB [default: ./configuration.json if present]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on; 0.0.0.0 or :: listens on every interface; multicast and broadcast
    /// addresses are refused [default: 127.0.0.1]
    #[arg(long, value_name = "ADDR")]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 8000]
    #[arg(long, value_name = "N", value_parser = port)]
    pub port: Option<u16>,
    /// Time between heartbeats to a quiet peer [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub interval: Option<Duration>,
    /// Heartbeats sent before a silent peer is closed [default: 3]
    #[arg(long, value_name = "N")]
    pub count: Option<u32>,
    /// Silence before the first heartbeat; at least interval × count [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub idle: Option<Duration>,
    /// Timer resolution: heartbeats and closes are at most this late
    #[arg(long, value_name = "DUR", value_parser = tick, default_value = "500us")]
    pub tick: Duration,
    /// Longest line accepted; longer ones get `Error: line too long`
    #[arg(long, value_name = "BYTES", value_parser = size, default_value = "64KiB")]
    pub max_line: usize,
    /// Output held for a peer that is not reading before the server stops reading from it
    #[arg(long, value_name = "BYTES", value_parser = size, default_value = "1MiB")]
    pub max_write_buffer: usize,
    /// All peers' buffers together; past it the peer that grows stops being read, and if it
    /// lasts a second the peers holding the most are closed
    #[arg(long, value_name = "BYTES", value_parser = size, default_value = "256MiB")]
    pub max_buffered: usize,
    /// Peers served at once; more are told `Error: server full` and closed
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Only accept peers from these address blocks, e.g. 127.0.0.0/8,::1; an empty list is
    /// refused [default: all]
    #[arg(long, value_name = "CIDR,...")]
    pub allow: Option<AllowList>,
    /// Length of the queue of connections waiting to be accepted
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_BACKLOG)]
    pub backlog: i32,
    /// Open-file limit to run with [default: raise the soft limit to the hard limit]
    #[arg(long, value_name = "N")]
    pub max_open_files: Option<u64>,
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "info")]
    pub log_level: LogLevel,
    /// Also write the log to this file. Log lines are queued (1 MiB per destination) and
    /// written by their own thread: a stalled stderr or file drops lines, counted, and never
    /// stops the server
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Never ask for settings, even on a terminal
    #[arg(long)]
    pub no_prompt: bool,
    /// Print the exit summary as one JSON object on stdout instead of text
    #[arg(long)]
    pub json: bool,
    /// On SIGTERM, spread the peers' `End Connection`s evenly over this long, so that their
    /// reconnects do not reach the other servers in one burst; a second signal ends it
    #[arg(long, value_name = "DUR", value_parser = duration, default_value = "0")]
    pub drain: Duration,
    /// Delay each peer's first heartbeat after a silence by a random share of up to PCT% of
    /// the interval (never earlier), so that peers that connected together are not asked
    /// together
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100), default_value_t = 0)]
    pub jitter: u8,
    /// Seed for --jitter, for a reproducible run [default: from the clock]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics, from the same loop [default: off]
    #[arg(long, value_name = "ADDR:PORT", value_parser = metrics_addr)]
    pub metrics: Option<SocketAddr>,
    /// Append one JSON object per line to this file for each connect, heartbeat sent and
    /// answered, End Connection and close (queued like the log: never waited for)
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,
    /// Worker processes sharing the port (SO_REUSEPORT), each one loop; a parent passes
    /// signals on, starts a worker that dies again, and prints one summary for all
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 1)]
    pub workers: usize,
    /// Behind a layer-4 balancer (HAProxy send-proxy-v2, Envoy, AWS NLB): every peer must
    /// first send a PROXY protocol v2 header, whose client address is then used for --allow,
    /// logs and the summary; a peer without one within 5 s is closed and counted
    #[arg(long)]
    pub proxy_protocol: bool,
}

const SERVER_AFTER_HELP: &str = "\
On a terminal, with no setting given by flag and no --no-prompt, the server asks for the interval,
count and idle time as the original did; Enter keeps the value shown.
SIGINT, SIGTERM or SIGHUP (a closing terminal): every peer is told `End Connection`, a
summary is printed (one JSON line with --json), exit 0. Under systemd (NOTIFY_SOCKET set)
it reports READY=1 once listening and STOPPING=1 when stopping.
Exit status: 0 stopped cleanly, 1 could not listen, 2 bad configuration.";

impl ServerArgs {
    /// True when a setting came from a flag: then the server asks nothing.
    pub fn settings_given(&self) -> bool {
        let timing = self.interval.is_some() || self.count.is_some() || self.idle.is_some();
        let given = timing || self.host.is_some() || self.port.is_some();
        given || self.config.is_some() || self.workers > 1
    }

    /// Flags over the file over the defaults. The idle rule is not applied here: the caller
    /// applies it after any prompt, so that it can print the warning. `path` is the file the
    /// configuration came from, for naming it in errors.
    pub fn resolve(
        &self,
        file: &FileConfig,
        path: Option<&Path>,
    ) -> Result<ServerConfig, StartError> {
        let section = &file.server;
        let port = self.port.or(section.port).unwrap_or(server::DEFAULT_PORT);
        let addr = match (&self.host, &section.host) {
            (Some(host), _) => for_tcp(net::resolve(host, port)?, Origin::Flag("--host"))?,
            (None, Some(host)) => {
                let addr = from_file(path, "server.host", net::resolve(host, port))?;
                for_tcp(addr, Origin::File(path, "server.host"))?
            }
            (None, None) => SocketAddr::new(ServerConfig::default().addr.ip(), port),
        };
        let timing = Timing {
            idle: self.idle.or(section.idle).unwrap_or(Timing::DEFAULT.idle),
            interval: self
                .interval
                .or(section.interval)
                .unwrap_or(Timing::DEFAULT.interval),
            count: self
                .count
                .or(section.count)
                .unwrap_or(Timing::DEFAULT.count),
        };
        check_timing(&timing, self.tick)?;
        Ok(ServerConfig {
            addr,
            timing,
            tick: self.tick,
            max_line: self.max_line,
            max_write_buffer: self.max_write_buffer,
            max_buffered: self.max_buffered,
            max_connections: self.max_connections,
            allow: self.allow.clone().unwrap_or_default(),
            backlog: self.backlog,
            drain: self.drain,
            jitter_percent: self.jitter,
            jitter_seed: self.seed.unwrap_or_else(seed_from_clock),
            metrics: self.metrics,
            events: self.events.clone(),
            reuse_port: false,
            proxy_protocol: self.proxy_protocol,
        })
    }
}

/// A seed that differs from run to run (and from server to server started together).
fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Prints a line on stdout for the binaries; a reader that went away (`| head`) is not a
/// reason to panic.
pub fn print_line(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// A zero idle time or interval would heartbeat a peer the moment it connects; a tick longer
/// than the interval would let timers fire a whole interval late, so that heartbeats bunch up
/// and a peer gets less time to answer than it was promised.
pub fn check_timing(timing: &Timing, tick: Duration) -> Result<(), ConfigError> {
    let invalid = |setting: &str, message: String| ConfigError::Invalid {
        setting: setting.to_string(),
        message,
    };
    if timing.idle.is_zero() {
        return Err(invalid("idle", "must be more than 0".to_string()));
    }
    if timing.count == 0 {
        return Ok(());
    }
    if timing.interval.is_zero() {
        return Err(invalid("interval", "must be more than 0".to_string()));
    }
    if tick > timing.interval {
        let message = format!(
            "{} is longer than the heartbeat interval {}; use at most the interval",
            config::format_duration(tick),
            config::format_duration(timing.interval)
        );
        return Err(invalid("tick", message));
    }
    Ok(())
}

/// Where an address setting came from, for naming it in an error.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Flag(&'static str),
    File(Option<&'a Path>, &'static str),
}

/// Refuses an address TCP can never use (multicast, broadcast) as a bad setting (exit 2):
/// a server listening there would wait for peers that can never come.
fn for_tcp(addr: SocketAddr, origin: Origin) -> Result<SocketAddr, ConfigError> {
    let Some(why) = net::not_for_tcp(addr.ip()) else {
        return Ok(addr);
    };
    let message = format!("{} is {why}: TCP cannot listen or connect there", addr.ip());
    Err(match origin {
        Origin::Flag(flag) => ConfigError::Invalid {
            setting: flag.to_string(),
            message,
        },
        Origin::File(path, key) => ConfigError::Key {
            path: path
                .unwrap_or(Path::new(config::DEFAULT_FILE))
                .to_path_buf(),
            key: key.to_string(),
            message,
        },
    })
}

/// A setup error about a value that came from the configuration file is a configuration
/// error naming the file and the key.
fn from_file<T>(
    path: Option<&Path>,
    key: &str,
    result: Result<T, SetupError>,
) -> Result<T, ConfigError> {
    result.map_err(|e| ConfigError::Key {
        path: path
            .unwrap_or(Path::new(config::DEFAULT_FILE))
            .to_path_buf(),
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// TCP heartbeat client: connects to the server, sends a line every --interval, answers
/// each `heartbeat`, and exits when the server says `End Connection`.
///
/// With --connections N (N > 1) it is a load generator: N connections on one event loop,
/// a status line on a terminal, and a summary with round-trip percentiles at the end.
#[derive(Debug, Parser)]
#[command(name = "heartbeat-client", version, after_help = CLIENT_AFTER_HELP)]
pub struct ClientArgs {
    /// Configuration file, at most 1 MiB [default: ./configuration.json if present]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Server address [default: the file's server.host, else 127.0.0.1]
    #[arg(long, value_name = "ADDR")]
    pub host: Option<String>,
    /// Server port [default: the file's server.port, else 8000]
    #[arg(long, value_name = "N", value_parser = port)]
    pub port: Option<u16>,
    /// Local address(es) to connect from, used in turn, e.g. 127.0.0.1,127.0.0.2
    /// [default: the file's client object, else any; over 10000 connections to 127.0.0.1
    /// are spread over 127.0.0.x]
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub bind: Vec<String>,
    /// Time between data lines; 0 never sends data (only answers heartbeats). Lines go out on
    /// a fixed schedule and round trips count from the scheduled instant [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub interval: Option<Duration>,
    /// Wait this long before answering a heartbeat (a testing aid) [default: 0]
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub heartbeat_block: Option<Duration>,
    /// The data line to send
    #[arg(long, value_name = "TEXT", default_value = client::DEFAULT_MESSAGE)]
    pub message: String,
    /// Stop after this long [default: until the server closes the connection]
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub duration: Option<Duration>,
    /// Connections to open; more than 1 is load mode
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 1)]
    pub connections: usize,
    /// New connections per second at most
    #[arg(long, value_name = "R", value_parser = positive_u32, default_value_t = client::DEFAULT_CONNECT_RATE)]
    pub connect_rate: u32,
    /// Print the final summary as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// Shares of connections that turn bad at a random moment: silent (stops answering),
    /// halfclose (shuts down its sending side), noread (stops reading), reset (closes with a
    /// reset); e.g. silent=5%,halfclose=1%,noread=1%,reset=1%. The summary says how long the
    /// server took to notice each kind, and how many healthy connections it closed
    #[arg(long, value_name = "KIND=P%,...")]
    pub faults: Option<FaultSpec>,
    /// Faults strike at a moment uniform over this long after each connection opens
    /// [default: half of --duration, else 60s]
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub fault_window: Option<Duration>,
    /// Seed of the fault schedule and the reconnect jitter: the same seed, the same faults
    #[arg(long, value_name = "N", default_value_t = client::DEFAULT_SEED)]
    pub seed: u64,
    /// Reopen a connection that closed, after an exponential back-off with jitter (100 ms
    /// doubling up to 10 s, back to 100 ms only after a connection stayed open 10 s);
    /// reconnects are counted
    #[arg(long)]
    pub reconnect: bool,
    /// The server's heartbeat interval: the client says it was the bottleneck when its own
    /// lag p99 exceeds a tenth of it [default: the file's server.interval, else 10s]
    #[arg(long, value_name = "DUR", value_parser = tick)]
    pub server_interval: Option<Duration>,
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "warn")]
    pub log_level: LogLevel,
    /// Never ask for settings, even on a terminal
    #[arg(long)]
    pub no_prompt: bool,
    /// Processes to share the load, each one loop: connections, connect rate and source
    /// addresses are split among them, and one summary is merged from all
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 1)]
    pub workers: usize,
    /// Also write an HTML report of the run to PATH: one self-contained file, charts as
    /// inline SVG, readable on a phone
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<ClientCommand>,
}

/// What the client does besides running.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Combine the --json summaries of several runs (other hosts, other processes) into one
    /// JSON summary: counts added, histograms merged, time series aligned by second
    Merge(MergeArgs),
}

/// `heartbeat-client merge FILE...`
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Summaries written by `heartbeat-client --json`, each of one version and compatible
    /// settings (line interval, message, heartbeat delay, server interval)
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Also write an HTML report of the merged result to PATH
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
}

const CLIENT_AFTER_HELP: &str = "\
Example, load mode: client --connections 10000 --interval 0 --duration 60s
Example, faults:    client --connections 5000 --interval 0 --duration 30s \\
                      --faults silent=10% --server-interval 500ms
Against a server on 127.0.0.1, more than 10000 connections are spread over source addresses
127.0.0.1, 127.0.0.2, ... (at most 5000 each) unless --bind is given.
On a terminal, with no setting given by flag and no --no-prompt, a single
client asks for both as the original did; Enter keeps the value shown.
SIGINT, SIGTERM or SIGHUP (a closing terminal): stop sending, wait up to 1 s for the
echoes owed, close, print the summary (load mode), exit 0.
Exit status: 0 finished, 1 could not connect, 2 bad configuration.";

impl ClientArgs {
    /// True when a setting came from a flag: then the client asks nothing.
    pub fn settings_given(&self) -> bool {
        let timing = self.interval.is_some() || self.heartbeat_block.is_some();
        let given = timing || self.host.is_some() || self.port.is_some();
        given || self.config.is_some() || self.workers > 1
    }

    pub fn resolve(
        &self,
        file: &FileConfig,
        path: Option<&Path>,
    ) -> Result<ClientConfig, StartError> {
        let port = self
            .port
            .or(file.server.port)
            .unwrap_or(server::DEFAULT_PORT);
        let server = match (&self.host, &file.server.host) {
            (Some(host), _) => for_tcp(net::resolve(host, port)?, Origin::Flag("--host"))?,
            (None, Some(host)) => {
                let addr = from_file(path, "server.host", net::resolve(host, port))?;
                for_tcp(addr, Origin::File(path, "server.host"))?
            }
            (None, None) => SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let bind = if self.bind.is_empty() {
            match &file.client.host {
                Some(host) => {
                    let port = file.client.port.unwrap_or(0);
                    let addr = from_file(path, "client.host", net::resolve(host, port))?;
                    let addr = for_tcp(addr, Origin::File(path, "client.host"))?;
                    // The file's local address is for the file's server; a server of the
                    // other family (say `--host ::1`) is reached from any local address.
                    if addr.is_ipv4() == server.is_ipv4() {
                        vec![addr]
                    } else {
                        Vec::new()
                    }
                }
                None => Vec::new(),
            }
        } else {
            let bind = self
                .bind
                .iter()
                .map(|addr| parse_bind(addr))
                .collect::<Result<Vec<_>, _>>()?;
            for addr in &bind {
                for_tcp(*addr, Origin::Flag("--bind"))?;
            }
            if let Some(other) = bind.iter().find(|a| a.is_ipv4() != server.is_ipv4()) {
                return Err(StartError::Config(ConfigError::Invalid {
                    setting: "--bind".into(),
                    message: format!("{other} cannot reach the server at {server}"),
                }));
            }
            bind
        };
        if self.message.contains(['\n', '\r']) {
            return Err(StartError::Config(ConfigError::Invalid {
                setting: "--message".into(),
                message: "must be one line (no newline or carriage return)".into(),
            }));
        }
        let connections = self.connections;
        if self.workers > 1 && connections < self.workers {
            return Err(StartError::Config(ConfigError::Invalid {
                setting: "--workers".into(),
                message: format!(
                    "{} workers need at least {} connections (--connections {connections})",
                    self.workers, self.workers
                ),
            }));
        }
        Ok(ClientConfig {
            server,
            bind,
            connections,
            connect_rate: self.connect_rate,
            interval: self.interval.unwrap_or(client::DEFAULT_INTERVAL),
            heartbeat_block: self.heartbeat_block.unwrap_or(Duration::ZERO),
            // Room for the echo of the longest line either side may send.
            max_line: protocol::DEFAULT_MAX_LINE.max(self.message.len())
                + protocol::ECHO_PREFIX.len(),
            message: self.message.clone().into_bytes(),
            duration: self.duration,
            faults: self.faults.clone().unwrap_or_default(),
            fault_window: self.fault_window,
            seed: self.seed,
            reconnect: self.reconnect,
            server_interval: self
                .server_interval
                .or(file.server.interval)
                .unwrap_or(Timing::DEFAULT.interval),
            verbose: connections == 1 && !self.json,
            status_line: connections > 1 && !self.json && client::stderr_is_terminal(),
            ..ClientConfig::default()
        })
    }
}

/// `ADDR` or `ADDR:PORT` (port 0 when not given).
fn parse_bind(text: &str) -> Result<std::net::SocketAddr, SetupError> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    net::resolve(text, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(args: &[&str]) -> ServerArgs {
        ServerArgs::try_parse_from(std::iter::once("server").chain(args.iter().copied()))
            .expect("parses")
    }

    fn client(args: &[&str]) -> ClientArgs {
        ClientArgs::try_parse_from(std::iter::once("client").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn server_defaults_without_a_file() {
        let config = server(&[]).resolve(&FileConfig::default(), None).unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.timing, Timing::DEFAULT);
        assert_eq!(config.max_line, 64 * 1024);
        assert_eq!(config.max_write_buffer, 1 << 20);
        assert!(!server(&[]).settings_given());
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file = config::parse(
            std::path::Path::new("c.json"),
            r#"{"server": {"host": "127.0.0.2", "port": "9000", "interval": "5s", "count": 4}}"#,
        )
        .unwrap();
        let args = server(&["--port", "0", "--interval", "250ms", "--idle", "2s"]);
        let config = args.resolve(&file, None).unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.2:0");
        assert_eq!(config.timing.interval, Duration::from_millis(250));
        assert_eq!(config.timing.count, 4, "from the file");
        assert_eq!(config.timing.idle, Duration::from_secs(2));
        assert!(args.settings_given());
    }

    #[test]
    fn bad_flag_values_are_rejected_by_the_parser() {
        for bad in [
            &["--interval", "soon"][..],
            &["--port", "70000"],
            &["--max-line", "big"],
            &["--allow", "10.0.0.0/99"],
        ] {
            let args = std::iter::once("server").chain(bad.iter().copied());
            assert!(ServerArgs::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_where_zero_cannot_work_is_refused() {
        for bad in [
            &["--max-write-buffer", "0"][..],
            &["--max-line", "0"],
            &["--tick", "0"],
            &["--max-connections", "0"],
        ] {
            let args = std::iter::once("server").chain(bad.iter().copied());
            assert!(ServerArgs::try_parse_from(args).is_err(), "{bad:?}");
        }
        for (flags, setting) in [
            (&["--idle", "0"][..], "idle"),
            (&["--interval", "0", "--idle", "5s"], "interval"),
        ] {
            let error = server(flags).resolve(&FileConfig::default(), None);
            let error = error.expect_err("refused").to_string();
            assert!(error.starts_with(setting), "{error}");
        }
        let no_heartbeats = server(&["--interval", "0", "--count", "0"]);
        assert!(no_heartbeats.resolve(&FileConfig::default(), None).is_ok());
        let coarse = server(&["--tick", "10s", "--interval", "200ms", "--idle", "1s"]);
        let error = coarse.resolve(&FileConfig::default(), None).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            error.to_string(),
            "tick: 10s is longer than the heartbeat interval 200ms; use at most the interval"
        );
        let equal = server(&["--tick", "200ms", "--interval", "200ms", "--idle", "1s"]);
        assert!(equal.resolve(&FileConfig::default(), None).is_ok());
        for bad in [&["--connections", "0"][..], &["--connect-rate", "0"]] {
            let args = std::iter::once("client").chain(bad.iter().copied());
            assert!(ClientArgs::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_host_in_the_file_is_a_config_error_naming_the_key() {
        let file =
            config::parse(Path::new("c.json"), r#"{"server": {"host": "300.1.2.3"}}"#).unwrap();
        let error = server(&[])
            .resolve(&file, Some(Path::new("c.json")))
            .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(
            error.to_string().starts_with("c.json: key \"server.host\""),
            "{error}"
        );
    }

    #[test]
    fn client_message_must_be_one_line_and_bind_must_match_the_server() {
        let multi = client(&["--message", "a\nb"]).resolve(&FileConfig::default(), None);
        assert!(multi.unwrap_err().to_string().starts_with("--message"));
        let mixed = client(&["--host", "::1", "--bind", "127.0.0.1"]);
        let error = mixed.resolve(&FileConfig::default(), None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot reach the server at [::1]"),
            "{error}"
        );
        // The file's IPv4 local address is left out for an IPv6 server named by flag.
        let file =
            config::parse(Path::new("c.json"), r#"{"client": {"host": "127.0.0.1"}}"#).unwrap();
        let config = client(&["--host", "::1"]).resolve(&file, None).unwrap();
        assert!(config.bind.is_empty());
    }

    #[test]
    fn multicast_and_broadcast_addresses_are_bad_settings() {
        let none = FileConfig::default();
        for host in ["224.0.0.1", "255.255.255.255", "ff02::1"] {
            let error = server(&["--host", host]).resolve(&none, None).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{error}");
            assert!(error.to_string().starts_with("--host: "), "{error}");
            assert!(error.to_string().contains("TCP cannot listen"), "{error}");
            let error = client(&["--host", host]).resolve(&none, None).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{error}");
        }
        let error = client(&["--bind", "127.0.0.1,224.0.0.1"])
            .resolve(&none, None)
            .unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
        assert!(error
            .to_string()
            .starts_with("--bind: 224.0.0.1 is a multicast address"));
        let file = config::parse(
            Path::new("c.json"),
            r#"{"server": {"host": "239.1.2.3"}, "client": {"host": "255.255.255.255"}}"#,
        )
        .unwrap();
        let error = server(&[]).resolve(&file, Some(Path::new("c.json")));
        let error = error.unwrap_err().to_string();
        assert!(error.starts_with("c.json: key \"server.host\": 239.1.2.3 is a multicast"));
        let error = client(&["--host", "127.0.0.1"]).resolve(&file, Some(Path::new("c.json")));
        let error = error.unwrap_err().to_string();
        assert!(error.starts_with("c.json: key \"client.host\": 255.255.255.255 is the broadcast"));
    }

    #[test]
    fn client_line_limit_fits_the_echo_of_its_own_message() {
        let long = "x".repeat(70_000);
        let config = client(&["--message", &long])
            .resolve(&FileConfig::default(), None)
            .unwrap();
        assert!(config.max_line >= long.len() + "Echoing...".len());
    }

    #[test]
    fn a_host_that_is_not_an_address_is_a_setup_error() {
        let error = server(&["--host", "no such host!"])
            .resolve(&FileConfig::default(), None)
            .unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(error.to_string().contains("no such host!"), "{error}");
    }

    #[test]
    fn client_connects_where_the_server_listens_and_binds_the_client_section() {
        let file = config::parse(
            std::path::Path::new("c.json"),
            r#"{"server": {"host": "127.0.0.1", "port": 8123}, "client": {"host": "127.0.0.3", "port": "0"}}"#,
        )
        .unwrap();
        let config = client(&[]).resolve(&file, None).unwrap();
        assert_eq!(config.server.to_string(), "127.0.0.1:8123");
        assert_eq!(config.bind, vec!["127.0.0.3:0".parse().unwrap()]);
        assert_eq!(config.interval, Duration::from_secs(30));
        assert!(config.verbose);
    }

    #[test]
    fn client_load_mode_flags() {
        let args = client(&[
            "--connections",
            "500",
            "--interval",
            "0",
            "--bind",
            "127.0.0.1,127.0.0.2",
            "--json",
        ]);
        let config = args.resolve(&FileConfig::default(), None).unwrap();
        assert_eq!(config.connections, 500);
        assert_eq!(config.interval, Duration::ZERO);
        assert_eq!(config.bind.len(), 2);
        assert!(!config.verbose);
        assert!(!config.status_line, "never with --json");
        assert!(config.faults.is_empty() && !config.reconnect);
        assert_eq!(config.server_interval, Duration::from_secs(10));
    }

    #[test]
    fn client_fault_reconnect_and_server_interval_flags() {
        let args = client(&[
            "--faults",
            "silent=10%,reset=1%",
            "--seed",
            "7",
            "--reconnect",
            "--fault-window",
            "2s",
        ]);
        let config = args.resolve(&FileConfig::default(), None).unwrap();
        assert_eq!(config.faults.share(client::faults::FaultKind::Silent), 0.1);
        assert_eq!((config.seed, config.reconnect), (7, true));
        assert_eq!(config.fault_window(), Duration::from_secs(2));
        // The server's interval comes from the flag, else from the file's server section.
        let file =
            config::parse(Path::new("c.json"), r#"{"server": {"interval": "500ms"}}"#).unwrap();
        let config = client(&[]).resolve(&file, None).unwrap();
        assert_eq!(config.server_interval, Duration::from_millis(500));
        let config = client(&["--server-interval", "2s"])
            .resolve(&file, None)
            .unwrap();
        assert_eq!(config.server_interval, Duration::from_secs(2));
        for bad in [
            &["--faults", "silent=200%"][..],
            &["--faults", "crash=1%"],
            &["--server-interval", "0"],
        ] {
            let args = std::iter::once("client").chain(bad.iter().copied());
            assert!(ClientArgs::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
