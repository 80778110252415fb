//! The server's command line (`heartbeat-server`) and how it resolves into a
//! [`ServerConfig`]: a flag over `configuration.json`'s `server` object over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use super::{
    check_timing, count, duration, for_tcp, from_file, metrics_addr, port, positive, size, tick,
    LogLevel, Origin, StartError,
};
use crate::cores::allow::AllowList;
use crate::cores::liveness::Timing;
use crate::edge::net;
use crate::server::{self, ServerConfig};
use crate::settings::config::{self, ConfigError, FileConfig};

/// TCP heartbeat server: echoes each line as `Echoing...<line>`, sends `heartbeat` to peers
/// that go quiet, and closes those that do not answer with `End Connection`.
///
/// Settings come from the flags, then `configuration.json` (the `server` object), then the
/// defaults. Durations are written 500us, 500ms, 1.5s, 5s, 2m, 1h, or a bare number of
/// seconds.
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
    /// Heartbeats sent before a silent peer is closed, at least 1 [default: 3]
    #[arg(long, value_name = "N", value_parser = count)]
    pub count: Option<u32>,
    /// Silence before the first heartbeat; at least interval × count [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = duration)]
    pub idle: Option<Duration>,
    /// Timer wheel resolution: lingers and first-byte waits are at most this late; heartbeats
    /// and closes come at their exact time
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
    /// Peers served at once; more are told `Error: server full` and closed. With --workers,
    /// the total, split evenly among the workers (each keeps to its share)
    #[arg(long, value_name = "N", value_parser = positive, default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Only accept peers from these address blocks, e.g. 127.0.0.0/8,::1; an empty list is
    /// refused. IPv4 peers are matched as IPv4 also on a `::` listener, so ::/0 admits no
    /// IPv4 peer: use 0.0.0.0/0,::/0 for all [default: all]
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
    /// Set by parsing: some flag other than `--no-prompt` was given.
    #[arg(skip)]
    pub flags_given: bool,
    /// Print the exit summary as one JSON object on stdout instead of text
    #[arg(long)]
    pub json: bool,
    /// On SIGTERM, SIGINT or SIGHUP, spread the peers' `End Connection`s evenly over this long, so that their
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
    /// Speak TLS (1.3 or 1.2) to every peer with this certificate chain (PEM), after its
    /// PROXY header if --proxy-protocol [also `tls_cert` in the file's `server` object]
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1) [also `tls_key`]
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: a peer must present a certificate that chains to this CA (PEM); its
    /// subject is logged. Refused peers are counted by reason
    #[arg(long, value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,
    /// After a live upgrade (SIGUSR2) with --tls-cert, the old process serves its TLS peers
    /// (a TLS session cannot move) until they leave or this long has passed, then tells the
    /// rest End Connection spread over --drain (without it, 1 ms per peer) and exits
    #[arg(long, value_name = "DUR", value_parser = duration, default_value = "60s")]
    pub tls_upgrade_keep: Duration,
}

const SERVER_AFTER_HELP: &str = "\
Questions: only when stdin is a terminal and no flag at all was given (--no-prompt aside), the
server asks for the interval, count and idle time as the original did; Enter keeps the value.
SIGINT, SIGTERM or SIGHUP (a closing terminal): every peer is told `End Connection`, a
summary is printed (one JSON line with --json), exit 0. SIGUSR1 reopens --log-file and
--events (log rotation). SIGUSR2: live upgrade, the binary now at the path the server was
started from takes over the listening socket and every peer (no peer notices; on any failure
this process serves on; not with --workers yet; TLS peers stay, see --tls-upgrade-keep). SIGALRM is ignored. Under systemd
(NOTIFY_SOCKET set) it reports READY=1 once listening and STOPPING=1 when stopping.
Exit status: 0 stopped cleanly, 1 could not listen, 2 bad configuration.";

super::noting_flags!(ServerArgs, "server");

impl ServerArgs {
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
        check_metrics_port(self.metrics, addr)?;
        let tls = self.tls(section)?;
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
            tls_upgrade_keep: self.tls_upgrade_keep,
            jitter_percent: self.jitter,
            jitter_seed: self.seed.unwrap_or_else(seed_from_clock),
            metrics: self.metrics,
            events: self.events.clone(),
            reuse_port: false,
            proxy_protocol: self.proxy_protocol,
            tls,
        })
    }

    /// The TLS configuration, if a certificate was given (flag over file): its files are
    /// read now, so that a bad one is a one-line error at start (exit 2).
    fn tls(
        &self,
        section: &config::ServerSection,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ConfigError> {
        let cert = self.tls_cert.clone().or_else(|| section.tls_cert.clone());
        let key = self.tls_key.clone().or_else(|| section.tls_key.clone());
        let invalid = |setting: &str, message: String| ConfigError::Invalid {
            setting: setting.to_string(),
            message,
        };
        let (cert, key) = match (cert, key) {
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(invalid(
                    "tls-client-ca",
                    "needs --tls-cert and --tls-key".into(),
                ))
            }
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => return Err(invalid("tls-key", "--tls-cert needs it".into())),
            (None, Some(_)) => return Err(invalid("tls-cert", "--tls-key needs it".into())),
        };
        let files = crate::edge::tls::ServerTlsFiles {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
        };
        crate::edge::tls::server_config(&files)
            .map(Some)
            .map_err(|e| invalid("tls", e.to_string()))
    }
}

/// A seed that differs from run to run (and from server to server started together).
fn seed_from_clock() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// `--metrics` on the port the server listens on (the same address, or either of them on
/// every interface) could never work: one of the two listeners would fail with "address in
/// use", and that error would only suggest changing `--port`.
fn check_metrics_port(metrics: Option<SocketAddr>, listen: SocketAddr) -> Result<(), ConfigError> {
    let Some(metrics) = metrics else {
        return Ok(());
    };
    let same_ip = metrics.ip() == listen.ip()
        || metrics.ip().is_unspecified()
        || listen.ip().is_unspecified();
    if metrics.port() == 0 || metrics.port() != listen.port() || !same_ip {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        setting: "--metrics".into(),
        message: format!(
            "{metrics} is the port the server listens on ({listen}): give the metrics a \
             port of their own (change --metrics or --port)"
        ),
    })
}
