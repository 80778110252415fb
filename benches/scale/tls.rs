//! The TLS phase (issue 18; `SCALE_PHASES=tls`): the same N idle peers from the crate's load
//! client, three ways, one after the other on the same machine:
//!
//! - **plain**: heartbeat without TLS (the reference);
//! - **TLS**: heartbeat with `--tls-cert` (rustls in its loop), the client with `--tls`
//!   and `--no-tls-resume`: every handshake a full one;
//! - **TLS resumed**: the same with the client's resumption on (its default): after a
//!   warm-up of a few full handshakes, the burst resumes with tickets the server gave
//!   earlier connections (TLS 1.3 PSK with X25519: no certificate, no signature);
//! - **HAProxy**: when `haproxy` is installed, HAProxy + OpenSSL terminating TLS (`bind …
//!   ssl crt`, TCP mode, one thread) in front of a plain heartbeat, the same TLS clients.
//!
//! For each: the connect (+ handshake) rate, the front's RSS per idle peer (as figure 2b:
//! growth over N, read after the peers are in), the front's CPU per connection opened (the
//! accept, the handshake, admission), and its CPU per echoed line when C connections each
//! send a line every `SCALE_TLS_ECHO_INTERVAL` (one line per read and per record, like
//! request–response, not pipelined). The TLS and HAProxy columns' handshakes are all full;
//! the resumed column's are counted full and resumed in its note (the load client's
//! `TicketStore` keeps two tickets per connection, where rustls' own cache kept 8 per
//! server name and a burst found it empty).
//! `SCALE_TLS_FRONTS=tls,resumed,plain,haproxy` picks fronts.
//!
//! The certificate is made here (rcgen: a P-256 key, self-signed for `localhost` and
//! 127.0.0.1), written to a temporary folder with the key, and trusted by the client.
//! Heartbeat is watched through its `--metrics` endpoint (peers admitted, handshakes, lines
//! echoed); HAProxy, which has none here, through heartbeat behind it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use heartbeat::client::ClientTls;
use heartbeat::edge::tls::provider;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;

use crate::figures::SKIPPED;
use crate::load::{client_line, idle_config, Load};
use crate::proc::{cpu_ticks, rss_bytes};
use crate::report::aligned;
use crate::server::ServerProc;
use crate::{env_or, progress, Kind, Run, CONNECT_TIMEOUT, FAR_TIMING};

/// The ways the peers reach the server, in the order they run and the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Plain,
    Tls,
    TlsResumed,
    Haproxy,
}

impl Front {
    pub const ALL: [Front; 4] = [Front::Tls, Front::TlsResumed, Front::Plain, Front::Haproxy];

    /// Heartbeat itself speaks TLS (`--tls-cert`).
    fn ours_tls(self) -> bool {
        matches!(self, Front::Tls | Front::TlsResumed)
    }

    /// As `SCALE_TLS_FRONTS` names it.
    fn name(self) -> &'static str {
        match self {
            Front::Plain => "plain",
            Front::Tls => "tls",
            Front::TlsResumed => "resumed",
            Front::Haproxy => "haproxy",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Front::Plain => "heartbeat, plain",
            Front::Tls => "heartbeat, TLS (rustls)",
            Front::TlsResumed => "heartbeat, TLS resumed",
            Front::Haproxy => "HAProxy 2.6 + OpenSSL",
        }
    }
}

/// The sizes of the TLS phase, from the environment.
pub struct TlsSizes {
    pub peers: usize,
    pub rate: u32,
    pub echo_conns: usize,
    pub echo_interval: Duration,
    pub echo_secs: u64,
}

impl TlsSizes {
    pub fn from_env(quick: bool) -> TlsSizes {
        let pick = |full: u64, small: u64| if quick { small } else { full };
        TlsSizes {
            peers: env_or("SCALE_TLS_PEERS", pick(10_000, 300) as usize),
            rate: env_or("SCALE_TLS_RATE", 20_000),
            echo_conns: env_or("SCALE_TLS_ECHO_CONNS", pick(1_000, 100) as usize),
            echo_interval: Duration::from_millis(env_or("SCALE_TLS_ECHO_INTERVAL_MS", 100)),
            echo_secs: env_or("SCALE_TLS_ECHO_SECS", pick(5, 1)),
        }
    }

    pub fn reproduce(&self) -> String {
        format!(
            "SCALE_TLS_PEERS={} SCALE_TLS_RATE={} SCALE_TLS_ECHO_CONNS={} \
             SCALE_TLS_ECHO_INTERVAL_MS={} SCALE_TLS_ECHO_SECS={} ",
            self.peers,
            self.rate,
            self.echo_conns,
            self.echo_interval.as_millis(),
            self.echo_secs
        )
    }
}

/// One front's figures; `Err` says why one is missing.
pub struct FrontFigures {
    pub front: Front,
    /// Peers opened (and, with TLS, handshaken) per second, from the client's start until
    /// the server behind held them all.
    pub rate: Result<f64, String>,
    /// The front's RSS growth per idle peer.
    pub rss: Result<f64, String>,
    /// The front's CPU per connection opened (ns).
    pub cpu_open: Result<f64, String>,
    /// The front's CPU per echoed line (ns).
    pub cpu_line: Result<f64, String>,
}

impl FrontFigures {
    fn new(front: Front, why: &str) -> FrontFigures {
        let none = || Err(why.to_string());
        FrontFigures {
            front,
            rate: none(),
            rss: none(),
            cpu_open: none(),
            cpu_line: none(),
        }
    }
}

/// The phase's results: a column per front, and notes.
pub struct TlsFigures {
    pub sizes: TlsSizes,
    pub fronts: Vec<FrontFigures>,
    pub notes: Vec<String>,
}

/// Runs the phase: every front in turn.
pub fn tls_phase(run: &Run) -> TlsFigures {
    let sizes = TlsSizes::from_env(run.sizes.quick);
    let mut figures = TlsFigures {
        fronts: Vec::new(),
        notes: Vec::new(),
        sizes,
    };
    let pki = match Pki::new() {
        Ok(pki) => pki,
        Err(why) => {
            figures.fronts = Front::ALL
                .iter()
                .map(|&f| FrontFigures::new(f, &why))
                .collect();
            return figures;
        }
    };
    let chosen = std::env::var("SCALE_TLS_FRONTS").unwrap_or_default();
    for front in Front::ALL {
        if !chosen.trim().is_empty() && !chosen.split(',').any(|f| f.trim() == front.name()) {
            figures.fronts.push(FrontFigures::new(front, SKIPPED));
            continue;
        }
        progress(&format!("tls: {} front", front.title()));
        let mut fig = FrontFigures::new(front, "not run");
        if let Err(why) = measure(run, &figures.sizes, &pki, &mut fig, &mut figures.notes) {
            progress(&format!("tls: {}: {why}", front.title()));
            for value in [
                &mut fig.rate,
                &mut fig.rss,
                &mut fig.cpu_open,
                &mut fig.cpu_line,
            ] {
                if matches!(value, Err(e) if e == "not run") {
                    *value = Err(why.clone());
                }
            }
        }
        figures.fronts.push(fig);
    }
    figures
}

/// The certificate and key (PEM files), and the client's configuration trusting it.
struct Pki {
    dir: tempfile::TempDir,
    client: ClientTls,
}

impl Pki {
    fn new() -> Result<Pki, String> {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let params = rcgen::CertificateParams::new(names).map_err(|e| e.to_string())?;
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("cert.pem", &cert.pem())?;
        write("key.pem", &key.serialize_pem())?;
        // HAProxy's `crt`: the chain and its key in one file.
        write("haproxy.pem", &(cert.pem() + &key.serialize_pem()))?;
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).map_err(|e| e.to_string())?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every handshake a full one: what a fleet reconnecting without tickets costs (after
        // a server restart, every ticket key is new).
        config.resumption = rustls::client::Resumption::disabled();
        let client = ClientTls {
            config: Arc::new(config),
            server_name: ServerName::try_from("localhost").map_err(|e| e.to_string())?,
            resume: false,
        };
        Ok(Pki { dir, client })
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

/// Descriptors HAProxy needs besides two per connection (listeners, logs, its own).
const HAPROXY_SPARE_FDS: usize = 400;

/// A `haproxy` child process, terminating TLS in front of `backend`; killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    /// Peers it can hold within the open-file limit (two descriptors each, front and back).
    peers: usize,
}

impl Haproxy {
    fn start(pki: &Pki, backend: SocketAddr, peers: usize) -> Result<Haproxy, String> {
        let addr = free_port()?;
        // HAProxy asks for 2 × maxconn descriptors and a few hundred more, and will not start
        // past the hard limit it inherits: fewer peers then, said in the notes.
        let limit = heartbeat::edge::net::raise_open_file_limit().unwrap_or(1024) as usize;
        let peers = peers.min(limit.saturating_sub(HAPROXY_SPARE_FDS) / 2);
        let config = format!(
            "global\n  maxconn {max}\n  nbthread 1\n  log stderr format short local0 err\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  \
             timeout server 1h\n\
             frontend tls\n  bind {addr} ssl crt {crt}\n  maxconn {max}\n  \
             default_backend heartbeat\n\
             backend heartbeat\n  server hb {backend} maxconn {max}\n",
            max = peers + 10,
            crt = pki.path("haproxy.pem"),
        );
        let path = pki.dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).map_err(|e| format!("haproxy.cfg: {e}"))?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start haproxy: {e}"))?;
        let haproxy = Haproxy { child, addr, peers };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("haproxy did not listen on {addr} within 10 s"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(haproxy)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// Whether `haproxy` can be run.
fn haproxy_installed() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The counters a front is watched by, from heartbeat's metrics.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    open: u64,
    handshakes: u64,
    echoed: u64,
}

fn scrape(metrics: SocketAddr) -> Result<Counters, String> {
    let mut stream = TcpStream::connect(metrics).map_err(|e| format!("metrics: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("metrics: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("metrics: {e}"))?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| format!("no {name} in the metrics"))
    };
    Ok(Counters {
        open: value("heartbeat_connections_open")?,
        handshakes: value("heartbeat_tls_handshakes_total")?,
        echoed: value("heartbeat_lines_echoed_total")?,
    })
}

/// Waits until heartbeat holds `n` admitted peers; returns when, and its counters then.
fn wait_open(
    metrics: SocketAddr,
    n: u64,
    load: &Load,
    front: Front,
) -> Result<(Instant, Counters), String> {
    loop {
        let now = Instant::now();
        let counters = scrape(metrics)?;
        if counters.open >= n {
            return Ok((now, counters));
        }
        if !load.is_running() {
            return Err(format!(
                "{}: the load client stopped with {} of {n} peers in",
                front.title(),
                counters.open
            ));
        }
        if now - load.started > CONNECT_TIMEOUT {
            return Err(format!(
                "{}: {} of {n} peers in after {} s",
                front.title(),
                counters.open,
                CONNECT_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Measures one front: N idle peers, then the echo load.
fn measure(
    run: &Run,
    sizes: &TlsSizes,
    pki: &Pki,
    fig: &mut FrontFigures,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let front = fig.front;
    if front == Front::Haproxy && !haproxy_installed() {
        let why = "haproxy is not installed".to_string();
        *fig = FrontFigures::new(front, &why);
        notes.push(format!("{}: not measured: {why}", front.title()));
        return Ok(());
    }
    let mut args: Vec<String> = vec!["--metrics".into(), "127.0.0.1:0".into()];
    if front.ours_tls() {
        args.extend([
            "--tls-cert".into(),
            pki.path("cert.pem"),
            "--tls-key".into(),
            pki.path("key.pem"),
        ]);
    }
    let server = ServerProc::start_with(Kind::Heartbeat, FAR_TIMING, run.sizes.tick, &args)?;
    let metrics = server
        .metrics
        .ok_or("heartbeat printed no metrics address")?;
    let haproxy = match front {
        Front::Haproxy => Some(Haproxy::start(pki, server.addr, sizes.peers)?),
        _ => None,
    };
    let (pid, addr) = match &haproxy {
        Some(h) => (h.child.id(), h.addr),
        None => (server.pid(), server.addr),
    };
    let tls = (front != Front::Plain).then(|| ClientTls {
        resume: front == Front::TlsResumed,
        ..pki.client.clone()
    });
    thread::sleep(Duration::from_millis(300));
    let clk = run.machine.clk_tck as f64;
    let n = match &haproxy {
        Some(h) => h.peers,
        None => sizes.peers,
    };
    if n < sizes.peers {
        notes.push(format!(
            "{}: {n} peers, not {}: HAProxy needs two descriptors per peer and the open-file \
             limit allows no more",
            front.title(),
            sizes.peers
        ));
    }

    // N idle peers: the rate, the CPU per connection opened, the RSS per peer.
    let (rss0, ticks0, hb_rss0) = (rss_bytes(pid)?, cpu_ticks(pid)?, rss_bytes(server.pid())?);
    // This process: the load client's thread, and this one polling the metrics.
    let own = std::process::id();
    let own0 = cpu_ticks(own)?;
    let c0 = scrape(metrics)?;
    let mut config = idle_config(addr, n, sizes.rate);
    config.tls = tls.clone();
    let load = Load::start_with(config)?;
    let (reached, c1) = match wait_open(metrics, n as u64, &load, front) {
        Ok(done) => done,
        Err(why) => return Err(load.explain(why)),
    };
    let ticks = cpu_ticks(pid)? - ticks0;
    let own_ticks = cpu_ticks(own)? - own0;
    let secs = (reached - load.started).as_secs_f64();
    fig.rate = Ok(n as f64 / secs);
    fig.cpu_open = Ok(ticks as f64 * 1e9 / clk / n as f64);
    thread::sleep(Duration::from_secs(1));
    let rss1 = rss_bytes(pid)?;
    fig.rss = Ok((rss1 as f64 - rss0 as f64) / n as f64);
    let hb_rss1 = rss_bytes(server.pid())?;
    let outcome = load.finish()?;
    let s = &outcome.summary;
    let handshakes = match front {
        Front::Tls | Front::TlsResumed => format!(
            "; heartbeat began {} handshakes, the client timed {} (p50 {:.2} ms, p99 {:.2} \
             ms), {} of them resumed (p50 {:.2} ms, p99 {:.2} ms)",
            c1.handshakes - c0.handshakes,
            s.handshake_time.count,
            s.handshake_time.p50_us as f64 / 1000.0,
            s.handshake_time.p99_us as f64 / 1000.0,
            s.resumed_handshake_time.count,
            s.resumed_handshake_time.p50_us as f64 / 1000.0,
            s.resumed_handshake_time.p99_us as f64 / 1000.0
        ),
        Front::Haproxy => format!(
            "; the client timed {} handshakes (p50 {:.2} ms, p99 {:.2} ms); heartbeat behind \
             it grew {:.0} B per peer",
            s.handshake_time.count,
            s.handshake_time.p50_us as f64 / 1000.0,
            s.handshake_time.p99_us as f64 / 1000.0,
            (hb_rss1 as f64 - hb_rss0 as f64) / n as f64
        ),
        Front::Plain => String::new(),
    };
    let tls_failed: Vec<String> = s
        .tls_failed_by_reason
        .iter()
        .map(|(why, k)| format!("{why} {k}"))
        .collect();
    notes.push(format!(
        "{}: {n} peers in {secs:.2} s ({:.0}/s; client capped at {}/s), the front's CPU {ticks} \
         ticks, the load client's {own_ticks} ({:.0} us per connection); RSS {:.1} → {:.1} \
         MiB{handshakes}; TLS failures: {}; client: {}",
        front.title(),
        n as f64 / secs,
        sizes.rate,
        own_ticks as f64 * 1e6 / clk / n as f64,
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        match tls_failed.is_empty() {
            true => "none".to_string(),
            false => tls_failed.join(", "),
        },
        client_line(&outcome)
    ));
    wait_until_empty(metrics)?;

    // The echo load: C connections, each a line every interval.
    let mut config = idle_config(addr, sizes.echo_conns, sizes.rate);
    config.tls = tls;
    config.interval = sizes.echo_interval;
    let load = Load::start_with(config)?;
    wait_open(metrics, sizes.echo_conns as u64, &load, front)?;
    thread::sleep(sizes.echo_interval * 2);
    let (ticks0, e0) = (cpu_ticks(pid)?, scrape(metrics)?.echoed);
    thread::sleep(Duration::from_secs(sizes.echo_secs));
    let (ticks, echoed) = (cpu_ticks(pid)? - ticks0, scrape(metrics)?.echoed - e0);
    let outcome = load.finish()?;
    if echoed == 0 || ticks == 0 {
        return Err(format!(
            "{echoed} lines echoed for {ticks} CPU ticks: too few; raise SCALE_TLS_ECHO_SECS"
        ));
    }
    fig.cpu_line = Ok(ticks as f64 * 1e9 / clk / echoed as f64);
    notes.push(format!(
        "{}: echo: {echoed} lines in {} s from {} connections, {ticks} CPU ticks{}; client: {}",
        front.title(),
        sizes.echo_secs,
        sizes.echo_conns,
        match ticks < 100 {
            true => format!(" (±{:.0}%)", 100.0 / ticks as f64),
            false => String::new(),
        },
        client_line(&outcome)
    ));
    drop(haproxy);
    server.stop()?;
    Ok(())
}

/// Waits until heartbeat has no peer left (the load client closed them).
fn wait_until_empty(metrics: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while scrape(metrics)?.open > 0 {
        if Instant::now() > deadline {
            return Err("peers still open a minute after the load client stopped".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One figure of a front.
type Figure = fn(&FrontFigures) -> &Result<f64, String>;

/// The phase's table, with the ratio of HAProxy to heartbeat's TLS.
pub fn table(figures: &TlsFigures) -> String {
    let s = &figures.sizes;
    let rows: [(String, Figure, &str); 4] = [
        (
            format!(
                "T1. RSS per idle peer, the front's own ({} peers, after their handshake)",
                s.peers
            ),
            |f| &f.rss,
            " B",
        ),
        (
            format!(
                "T2. connect (+ TLS handshake: full, or mostly resumed) rate, load client to the \
                 front on this host \
                 (client capped at {}/s, and at 512 handshakes in flight)",
                s.rate
            ),
            |f| &f.rate,
            "/s",
        ),
        (
            "T3. the front's CPU per connection opened (accept, + handshake)".to_string(),
            |f| &f.cpu_open,
            " ns",
        ),
        (
            format!(
                "T4. the front's CPU per echoed line ({} connections, a line every {} ms each: \
                 one line per read, not pipelined)",
                s.echo_conns,
                s.echo_interval.as_millis()
            ),
            |f| &f.cpu_line,
            " ns",
        ),
    ];
    let mut header = vec!["TLS figure".to_string()];
    header.extend(figures.fronts.iter().map(|f| f.front.title().to_string()));
    header.push("HAProxy ÷ heartbeat TLS".to_string());
    let mut cells = vec![header];
    for (label, get, unit) in rows {
        let mut row = vec![label];
        for f in &figures.fronts {
            row.push(match get(f) {
                Ok(v) => format!("{v:.0}{unit}"),
                Err(e) if e == SKIPPED => SKIPPED.to_string(),
                Err(_) => "n/a".to_string(),
            });
        }
        let value = |front| {
            figures
                .fronts
                .iter()
                .find(|f| f.front == front)
                .and_then(|f| get(f).as_ref().ok().copied())
        };
        row.push(match (value(Front::Haproxy), value(Front::Tls)) {
            (Some(h), Some(t)) if t != 0.0 => format!("{:.2}", h / t),
            _ => "n/a".to_string(),
        });
        cells.push(row);
    }
    let mut out = vec![
        String::new(),
        format!(
            "TLS (issue 18): the same load client with --tls (TLS 1.3, X25519, a P-256 \
             certificate; every handshake a full one, --no-tls-resume, except in the resumed \
             column: the client's resumption, its counts in the notes) against heartbeat with \
             --tls-cert, against HAProxy + OpenSSL terminating TLS in front of a plain \
             heartbeat (one thread), and plain heartbeat for reference; \"the front\" is the \
             process the clients connect to; reproduce: {}SCALE_PHASES=tls cargo bench --bench \
             scale",
            s.reproduce()
        ),
        String::new(),
    ];
    out.extend(aligned(&cells));
    out.join("\n")
}

/// Why figures are missing, one line each (none when all were measured or haproxy is absent).
pub fn missing(figures: &TlsFigures) -> Vec<String> {
    let mut lines = Vec::new();
    for f in &figures.fronts {
        for value in [&f.rate, &f.rss, &f.cpu_open, &f.cpu_line] {
            if let Err(why) = value {
                let line = format!("tls: {}: {why}", f.front.title());
                let expected = why == SKIPPED || why.contains("not installed");
                if !expected && !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
    }
    lines
}
