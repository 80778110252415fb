//! The client's command line (`heartbeat-client`) and how it resolves into a
//! [`ClientConfig`]: a flag over `configuration.json` over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use super::{
    duration, for_tcp, from_file, port, positive, positive_u32, tick, LogLevel, Origin, StartError,
};
use crate::client::faults::FaultSpec;
use crate::client::{self, ClientConfig};
use crate::cores::liveness::Timing;
use crate::cores::protocol;
use crate::cores::vocab::DEFAULT_PORT;
use crate::edge::net::{self, SetupError};
use crate::settings::config::{ConfigError, FileConfig};

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
    /// Set by parsing: some flag other than `--no-prompt` was given.
    #[arg(skip)]
    pub flags_given: bool,
    /// Processes to share the load, each one loop: connections, connect rate and source
    /// addresses are split among them, and one summary is merged from all
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = 1)]
    pub workers: usize,
    /// Also write an HTML report of the run to PATH: one self-contained file, charts as
    /// inline SVG, readable on a phone
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Speak TLS to the server; the handshake is timed on its own and failures are named
    #[arg(long)]
    pub tls: bool,
    /// The CA the server's certificate must chain to (PEM) [default: the system's roots]
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// Our certificate for mutual TLS (PEM), with --tls-key
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must be for [default: --host, else the server's
    /// address]
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_server_name: Option<String>,
    /// Every handshake a full one: no session resumption (by default connections resume
    /// with tickets the server gave earlier ones)
    #[arg(long, requires = "tls")]
    pub no_tls_resume: bool,
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
Questions: only when stdin is a terminal and no flag at all was given (--no-prompt aside), a
single client asks for both as the original did; Enter keeps the value shown.
SIGINT, SIGTERM or SIGHUP (a closing terminal): stop sending, wait up to 1 s for the
echoes owed, close, print the summary (load mode), exit 0.
Exit status: 0 finished, 1 could not connect, 2 bad configuration.";

super::noting_flags!(ClientArgs, "client");

impl ClientArgs {
    pub fn resolve(
        &self,
        file: &FileConfig,
        path: Option<&Path>,
    ) -> Result<ClientConfig, StartError> {
        let port = self.port.or(file.server.port).unwrap_or(DEFAULT_PORT);
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
            tls: self.client_tls(file, server)?,
            ..ClientConfig::default()
        })
    }

    /// `--tls`: the configuration (its files read now: a bad one is one line, exit 2) and the
    /// name to check: `--tls-server-name`, else the host as given, else the address.
    fn client_tls(
        &self,
        file: &FileConfig,
        server: SocketAddr,
    ) -> Result<Option<client::ClientTls>, ConfigError> {
        if !self.tls {
            return Ok(None);
        }
        let invalid = |e: crate::edge::tls::TlsSetupError| ConfigError::Invalid {
            setting: "tls".into(),
            message: e.to_string(),
        };
        let files = crate::edge::tls::ClientTlsFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        };
        let name = match (&self.tls_server_name, &self.host, &file.server.host) {
            (Some(name), _, _) | (None, Some(name), _) | (None, None, Some(name)) => name.clone(),
            (None, None, None) => server.ip().to_string(),
        };
        Ok(Some(client::ClientTls {
            config: crate::edge::tls::client_config(&files).map_err(invalid)?,
            server_name: crate::edge::tls::server_name(&name).map_err(invalid)?,
            resume: !self.no_tls_resume,
        }))
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
