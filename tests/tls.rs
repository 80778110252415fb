//! The server with `--tls-cert` end to end: real third-party clients (`openssl s_client`)
//! and in-process rustls clients, certificates made here by `rcgen`. Plain bytes to a TLS
//! port are refused and the next TLS peer served; mutual TLS refuses no certificate and
//! another CA's, serves ours; heartbeats, End Connection and stop carry close_notify; the
//! PROXY header comes before TLS; bad files are one line, exit 2. `tls/upgrade.rs`: a live
//! upgrade, whose old process keeps its TLS peers.

mod common;
#[path = "tls/upgrade.rs"]
mod upgrade;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{one_line_failure, start_server, Lines, ServerProcess, FAST};
use heartbeat::cores::proxy::{encode, Header};
use heartbeat::cores::tls::Refusal;
use heartbeat::edge::tls::{provider, server_config, ServerTlsFiles};
use heartbeat::ops::stats::ServerStats;
use heartbeat::server::ServerConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const HANG_GUARD: Duration = Duration::from_secs(30);

/// Certificates and keys for a test, as PEM files in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: CertifiedIssuer<'static, KeyPair>,
    client_ca: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate for `name` signed by `issuer`, and its key.
fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(vec![name.to_string(), "127.0.0.1".into()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, issuer).unwrap(), key)
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            server_ca: ca("heartbeat test server CA"),
            client_ca: ca("heartbeat test client CA"),
        };
        let (cert, key) = leaf(&pki.server_ca, "localhost");
        pki.write("server.pem", &cert.pem());
        pki.write("server.key", &key.serialize_pem());
        pki.write("ca.pem", &pki.server_ca.pem());
        pki.write("client-ca.pem", &pki.client_ca.pem());
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    fn files(&self, mutual: bool) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mutual.then(|| self.path("client-ca.pem")),
        }
    }

    /// A server on 127.0.0.1:0 speaking TLS (mutual when `mutual`).
    fn server(&self, mutual: bool, config: ServerConfig) -> common::RunningServer {
        start_server(ServerConfig {
            tls: Some(server_config(&self.files(mutual)).expect("TLS configuration")),
            ..config
        })
    }

    /// A rustls client configuration trusting our server CA, with `identity` if given.
    fn client(&self, identity: Option<(rcgen::Certificate, KeyPair)>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.server_ca.der().clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
                builder
                    .with_client_auth_cert(vec![cert.der().clone()], key)
                    .unwrap()
            }
        })
    }
}

/// A TLS peer reading lines, each read bounded by a timeout.
struct TlsPeer(BufReader<StreamOwned<ClientConnection, TcpStream>>);

impl TlsPeer {
    fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsPeer {
        let stream = TcpStream::connect(addr).expect("connects");
        TlsPeer::over(stream, config)
    }

    fn over(stream: TcpStream, config: Arc<ClientConfig>) -> TlsPeer {
        stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config, name).unwrap();
        TlsPeer(BufReader::new(StreamOwned::new(conn, stream)))
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stream = self.0.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// The next line without its newline; `Ok(None)` at a clean end (close_notify).
    fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        match self.0.read_line(&mut line)? {
            0 => Ok(None),
            _ => Ok(Some(line.trim_end().to_string())),
        }
    }
}

fn refused(stats: &ServerStats, refusal: Refusal) -> u64 {
    stats.rejected_tls.0[refusal as usize]
}

/// A rustls client is echoed, and the idle peer gets its heartbeats, then `End Connection`
/// and a close_notify: a clean TLS end, not a bare FIN.
#[test]
fn heartbeats_and_end_connection_over_tls_end_with_close_notify() {
    let pki = Pki::new();
    let server = pki.server(
        false,
        ServerConfig {
            timing: FAST,
            ..ServerConfig::default()
        },
    );
    let mut peer = TlsPeer::connect(server.addr, pki.client(None));
    peer.send(b"Hello, there\n").unwrap();
    assert_eq!(
        peer.line().unwrap().as_deref(),
        Some("Echoing...Hello, there")
    );
    for _ in 0..FAST.count {
        assert_eq!(peer.line().unwrap().as_deref(), Some("heartbeat"));
    }
    assert_eq!(peer.line().unwrap().as_deref(), Some("End Connection"));
    // `Ok(None)`, not `UnexpectedEof`: rustls saw close_notify before the FIN.
    assert_eq!(peer.line().unwrap(), None);
    let stats = server.stop();
    assert_eq!(stats.lines_echoed, 1);
    assert_eq!(stats.closed_dead, 1);
}

/// A heartbeat answered over TLS keeps the peer; stopping the server tells it
/// `End Connection` with a close_notify.
#[test]
fn an_answering_tls_peer_stays_and_stop_ends_it_cleanly() {
    let pki = Pki::new();
    let server = pki.server(
        false,
        ServerConfig {
            timing: FAST,
            ..ServerConfig::default()
        },
    );
    let mut peer = TlsPeer::connect(server.addr, pki.client(None));
    for _ in 0..3 {
        assert_eq!(peer.line().unwrap().as_deref(), Some("heartbeat"));
        peer.send(b"Echoing...heartbeat\n").unwrap();
    }
    let stopping = std::thread::spawn(move || server.stop());
    assert_eq!(peer.line().unwrap().as_deref(), Some("End Connection"));
    assert_eq!(peer.line().unwrap(), None);
    let stats = stopping.join().unwrap();
    assert_eq!(stats.heartbeats_answered, 3);
    assert_eq!(stats.closed_dead, 0);
    assert_eq!(stats.closed_at_shutdown, 1);
}

/// Plain bytes to a TLS port get no line and are closed, counted as `not_tls`; the next
/// TLS peer is served.
#[test]
fn plain_bytes_are_refused_and_the_next_tls_peer_is_served() {
    let pki = Pki::new();
    let server = pki.server(false, ServerConfig::default());
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(HANG_GUARD)).unwrap();
    plain.write_all(b"Hello, there\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(got.is_empty(), "no line for a plain peer: {got:?}");
    let mut peer = TlsPeer::connect(server.addr, pki.client(None));
    peer.send(b"next\n").unwrap();
    assert_eq!(peer.line().unwrap().as_deref(), Some("Echoing...next"));
    let stats = server.stop();
    assert_eq!(refused(&stats, Refusal::NotTls), 1);
    assert_eq!(stats.accepted, 1, "only the TLS peer reached the core");
}

/// Whether a peer with `config` is served: it sends a line and waits for its echo.
fn served(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    let mut peer = TlsPeer::connect(addr, config);
    if peer.send(b"ping\n").is_err() {
        return false;
    }
    matches!(peer.line(), Ok(Some(line)) if line == "Echoing...ping")
}

/// `--tls-client-ca`: no certificate and another CA's certificate are refused, each counted
/// by its reason, and never get a line; ours is served, and its subject is in the events.
#[test]
fn mutual_tls_refuses_no_certificate_and_another_ca_and_serves_ours() {
    let pki = Pki::new();
    let events = pki.path("events.jsonl");
    let server = pki.server(
        true,
        ServerConfig {
            events: Some(events.clone()),
            ..ServerConfig::default()
        },
    );
    assert!(!served(server.addr, pki.client(None)));
    let other = ca("someone else's CA");
    assert!(!served(
        server.addr,
        pki.client(Some(leaf(&other, "intruder")))
    ));
    assert!(served(
        server.addr,
        pki.client(Some(leaf(&pki.client_ca, "device-7")))
    ));
    let stats = server.stop();
    assert_eq!(refused(&stats, Refusal::NoClientCertificate), 1);
    assert_eq!(refused(&stats, Refusal::UnknownCa), 1);
    assert_eq!(stats.accepted, 1);
    let tls_event = |text: &str| {
        text.lines()
            .any(|l| l.contains(r#""event":"tls""#) && l.contains(r#""subject":"CN=device-7""#))
    };
    let logged = common::eventually(HANG_GUARD, || {
        std::fs::read_to_string(&events).is_ok_and(|text| tls_event(&text))
    });
    assert!(logged, "{:?}", std::fs::read_to_string(&events));
}

/// With `--proxy-protocol`, the PROXY header comes first and TLS after it.
#[test]
fn the_proxy_header_comes_before_tls() {
    let pki = Pki::new();
    let server = pki.server(
        false,
        ServerConfig {
            proxy_protocol: true,
            ..ServerConfig::default()
        },
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let header = encode(&Header::Proxied {
        source: "198.51.100.7:4000".parse().unwrap(),
        destination: "203.0.113.1:8000".parse().unwrap(),
    });
    stream.write_all(&header).unwrap();
    let mut peer = TlsPeer::over(stream, pki.client(None));
    peer.send(b"behind a balancer\n").unwrap();
    assert_eq!(
        peer.line().unwrap().as_deref(),
        Some("Echoing...behind a balancer")
    );
    let stats = server.stop();
    assert_eq!(stats.accepted, 1);
}

/// `openssl s_client`, a real third-party client, gets `Echoing...` back; with mutual TLS
/// its certificate's subject is logged. Needs the `openssl` command; without it the test
/// says so and passes, except in CI (`CI` set, `.ci/run` installs it), where it fails.
#[test]
fn openssl_s_client_gets_its_line_echoed() {
    if common::tool("openssl", "openssl").is_none() {
        return;
    }
    let pki = Pki::new();
    let (cert, key) = leaf(&pki.client_ca, "device-7");
    pki.write("client.pem", &cert.pem());
    pki.write("client.key", &key.serialize_pem());
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let server = ServerProcess::start_logged(&[
        "--tls-cert",
        &path("server.pem"),
        "--tls-key",
        &path("server.key"),
        "--tls-client-ca",
        &path("client-ca.pem"),
    ]);
    let connect = format!("127.0.0.1:{}", server.port);
    let mut client = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &connect,
            "-servername",
            "localhost",
        ])
        .args(["-CAfile", &path("ca.pem"), "-verify_return_error"])
        .args(["-cert", &path("client.pem"), "-key", &path("client.key")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    let output = Lines::collect(client.stdout.take().unwrap());
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"Hello, there\n").unwrap();
    let echoed = output.wait_for("Echoing...Hello, there", HANG_GUARD);
    let _ = client.kill();
    let _ = client.wait();
    assert!(echoed, "s_client printed {:?}", output.snapshot());
    let log = server.log.as_ref().unwrap();
    assert!(
        log.wait_for("TLS client certificate CN=device-7", HANG_GUARD),
        "{:?}",
        log.snapshot()
    );
}

/// A missing file, a key that is not the certificate's, and a certificate file without a
/// certificate are each one line naming the file, exit 2.
#[test]
fn bad_certificate_files_are_one_line_exit_2() {
    let pki = Pki::new();
    let other = KeyPair::generate().unwrap();
    pki.write("other.key", &other.serialize_pem());
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let cases = [
        (path("missing.pem"), path("server.key"), "missing.pem"),
        (path("server.pem"), path("other.key"), "other.key"),
        (path("server.key"), path("server.key"), "server.key"),
    ];
    for (cert, key, named) in cases {
        let args = [
            "--no-prompt",
            "--port",
            "0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        let (line, _) = one_line_failure(env!("CARGO_BIN_EXE_heartbeat-server"), &args, 2);
        assert!(line.contains(named), "{line}");
    }
}

/// A peer that connects and never finishes its handshake is closed at the deadline and
/// counted; it never reaches the core.
#[test]
fn a_silent_handshake_is_closed_at_its_deadline() {
    let pki = Pki::new();
    let server = pki.server(false, ServerConfig::default());
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut got = Vec::new();
    let closed = silent.read_to_end(&mut got).is_ok() || got.is_empty();
    assert!(closed && got.is_empty());
    let stats = server.stop();
    assert_eq!(refused(&stats, Refusal::Deadline), 1);
    assert_eq!(stats.accepted, 0);
}

/// Runs the load client with `args` against `addr`; its `--json` summary.
fn load_client(addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let port = addr.port().to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_heartbeat-client"))
        .args([
            "--no-prompt",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--json",
        ])
        .args(["--duration", "1s", "--log-level", "off"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("client runs");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("one JSON summary")
}

/// The load client with `--tls`: every connection handshakes (timed in its own histogram)
/// and is echoed; a wrong `--tls-server-name`, a CA that is not the server's, and a missing
/// client certificate for a mutual-TLS server are failures named by their reason.
#[test]
fn the_load_client_times_handshakes_and_names_tls_failures() {
    let pki = Pki::new();
    let (cert, key) = leaf(&pki.client_ca, "load-client");
    pki.write("client.pem", &cert.pem());
    pki.write("client.key", &key.serialize_pem());
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let server = pki.server(true, ServerConfig::default());
    let ours = [
        "--tls",
        "--tls-ca",
        &path("ca.pem"),
        "--tls-server-name",
        "localhost",
    ];
    let identity = [
        "--tls-cert",
        &path("client.pem"),
        "--tls-key",
        &path("client.key"),
    ];
    let load = ["--connections", "20", "--interval", "100ms"];
    let served = load_client(server.addr, &[&ours[..], &identity, &load].concat());
    assert_eq!(served["opened"], 20, "{served}");
    assert_eq!(served["handshake_time"]["count"], 20, "{served}");
    assert!(served["echoes_received"].as_u64() > Some(0), "{served}");
    assert_eq!(
        served["tls_failed_by_reason"],
        serde_json::json!({}),
        "{served}"
    );

    let mut wrong_name = ours;
    wrong_name[4] = "example.com";
    let failed = load_client(server.addr, &[&wrong_name[..], &identity].concat());
    let reasons = failed["tls_failed_by_reason"].to_string();
    assert!(reasons.contains("not for the server name"), "{failed}");

    let mut wrong_ca = ours;
    let client_ca = path("client-ca.pem");
    wrong_ca[2] = &client_ca;
    let failed = load_client(server.addr, &[&wrong_ca[..], &identity].concat());
    let reasons = failed["tls_failed_by_reason"].to_string();
    assert!(reasons.contains("not from --tls-ca"), "{failed}");

    // No certificate for a mutual-TLS server: the server refuses after the client's side of
    // the handshake (TLS 1.3), and says so in an alert.
    let failed = load_client(server.addr, &[&ours[..], &["--interval", "100ms"]].concat());
    let reasons = failed["tls_failed_by_reason"].to_string();
    assert!(reasons.contains("refused by the server"), "{failed}");
    let stats = server.stop();
    assert!(refused(&stats, Refusal::NoClientCertificate) >= 1);
    assert!(
        refused(&stats, Refusal::PeerAlert) >= 2,
        "the clients' own refusals"
    );
}

/// Past 1,024 handshakes in flight, the oldest is closed to make room (counted `evicted`),
/// and a TLS peer arriving after the flood is still served.
#[test]
fn a_flood_of_silent_handshakes_evicts_the_oldest_and_real_peers_get_in() {
    let pki = Pki::new();
    let server = pki.server(false, ServerConfig::default());
    let cap = heartbeat::server::HANDSHAKE_CAP;
    let mut silent: Vec<TcpStream> = (0..cap + 1)
        .map(|_| TcpStream::connect(server.addr).expect("connects"))
        .collect();
    // The first one is the oldest: the server closes it once the last is accepted.
    silent[0].set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut got = Vec::new();
    let _ = silent[0].read_to_end(&mut got);
    assert!(got.is_empty());
    let mut peer = TlsPeer::connect(server.addr, pki.client(None));
    peer.send(b"still served\n").unwrap();
    assert_eq!(
        peer.line().unwrap().as_deref(),
        Some("Echoing...still served")
    );
    drop(silent);
    let stats = server.stop();
    assert!(
        refused(&stats, Refusal::Evicted) >= 2,
        "the first, then the real peer's room"
    );
}

/// HAProxy (OpenSSL) with `ssl` to our TLS server, sending a PROXY header first: a plain
/// peer in front of it is echoed through TLS, and the server logs the peer's real address
/// with the certificate check done by HAProxy (`verify required`). Needs `haproxy`; without
/// it the test says so and passes, except in CI (`CI` set), where it fails.
#[test]
fn haproxy_with_ssl_and_a_proxy_header_reaches_our_tls_server() {
    use std::process::{Command, Stdio};
    let Some(haproxy) = common::tool("haproxy", "haproxy") else {
        return;
    };
    let pki = Pki::new();
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let server = ServerProcess::start_logged(&[
        "--tls-cert",
        &path("server.pem"),
        "--tls-key",
        &path("server.key"),
        "--proxy-protocol",
    ]);
    let front = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend heartbeat\n    bind 127.0.0.1:{front}\n    default_backend servers\n\
         backend servers\n\
         \x20   server one 127.0.0.1:{} send-proxy-v2 ssl verify required ca-file {} sni str(localhost)\n",
        server.port,
        path("ca.pem")
    );
    pki.write("haproxy.cfg", &config);
    let mut child = Command::new(&haproxy)
        .args(["-f", &path("haproxy.cfg"), "-db"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy starts");
    let front = SocketAddr::from(([127, 0, 0, 1], front));
    let up = common::eventually(HANG_GUARD, || TcpStream::connect(front).is_ok());
    let echoed = up && {
        let mut peer = common::Peer::connect(front);
        peer.send(b"through haproxy\n");
        peer.line_within(HANG_GUARD).as_deref() == Some("Echoing...through haproxy")
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "haproxy listening on {front}");
    assert!(echoed, "echoed through HAProxy's TLS");
    let log = server.log.as_ref().unwrap();
    assert!(
        log.wait_for("connected", HANG_GUARD),
        "{:?}",
        log.snapshot()
    );
}

/// `tls_cert` and `tls_key` in the `server` object of the configuration file turn TLS on
/// as the flags do.
#[test]
fn the_configuration_file_names_the_certificate_and_key() {
    let pki = Pki::new();
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let json = serde_json::json!({
        "server": { "host": "127.0.0.1", "tls_cert": path("server.pem"), "tls_key": path("server.key") }
    });
    pki.write("configuration.json", &json.to_string());
    let server = ServerProcess::start(&["--config", &path("configuration.json")]);
    let mut peer = TlsPeer::connect(server.addr(), pki.client(None));
    peer.send(b"from the file\n").unwrap();
    assert_eq!(
        peer.line().unwrap().as_deref(),
        Some("Echoing...from the file")
    );
}

/// A server that closes or resets before the handshake is done (its deadline, too many in
/// flight, not TLS at all) is a TLS failure `closed during the handshake`, not a plain error.
#[test]
fn the_load_client_names_a_close_during_the_handshake() {
    let pki = Pki::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let closer = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            // Hang up with the ClientHello unread: the kernel sends a reset, which the
            // client reads as an error, not an end of stream.
            std::thread::sleep(Duration::from_millis(100));
            drop(stream);
        }
    });
    let ca = pki.path("ca.pem").to_string_lossy().into_owned();
    let failed = load_client(addr, &["--tls", "--tls-ca", &ca, "--connections", "2"]);
    closer.join().unwrap();
    let reasons = failed["tls_failed_by_reason"].to_string();
    assert!(reasons.contains("closed during the handshake"), "{failed}");
    assert_eq!(failed["errors"], 0, "{failed}");
}

/// At `--max-connections`, a TLS peer is refused at accept, before any handshake: it is told
/// so in a fatal `internal_error` alert (it cannot read the plain `Error: server full`
/// line), counted `rejected_full`, and the server begins no handshake for it.
#[test]
fn a_full_server_refuses_a_tls_peer_before_its_handshake_with_an_alert() {
    let pki = Pki::new();
    let server = pki.server(
        false,
        ServerConfig {
            max_connections: 1,
            ..ServerConfig::default()
        },
    );
    let mut first = TlsPeer::connect(server.addr, pki.client(None));
    first.send(b"in\n").unwrap();
    assert_eq!(first.line().unwrap().as_deref(), Some("Echoing...in"));
    let mut second = TlsPeer::connect(server.addr, pki.client(None));
    let error = second.line().expect_err("refused, not a line");
    let alert = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        alert,
        Some(&rustls::Error::AlertReceived(
            rustls::AlertDescription::InternalError
        )),
        "{error:?}"
    );
    let stats = server.stop();
    assert_eq!(stats.rejected_full, 1);
    assert_eq!(stats.tls_handshakes, 1, "the first peer's only");
    assert_eq!(stats.rejected_tls.total(), 0);
}

/// A TLS peer outside `--allow` is refused at accept as a plain one is: closed with nothing
/// said, counted `rejected_not_allowed`, and no handshake begun (the load client names it
/// `closed during the handshake`; the server's `tls_handshakes` stays 0).
#[test]
fn a_tls_peer_outside_allow_is_refused_before_any_handshake() {
    let pki = Pki::new();
    let server = pki.server(
        false,
        ServerConfig {
            allow: "10.0.0.0/8".parse().unwrap(),
            ..ServerConfig::default()
        },
    );
    let ca = pki.path("ca.pem").to_string_lossy().into_owned();
    let args = ["--tls", "--tls-ca", &ca, "--tls-server-name", "localhost"];
    let failed = load_client(server.addr, &[&args[..], &["--connections", "3"]].concat());
    assert_eq!(failed["handshake_time"]["count"], 0, "{failed}");
    let reasons = failed["tls_failed_by_reason"].to_string();
    assert!(reasons.contains("closed during the handshake"), "{failed}");
    let stats = server.stop();
    assert!(stats.rejected_not_allowed >= 3, "{stats:?}");
    assert_eq!(stats.tls_handshakes, 0);
    assert_eq!(stats.rejected_tls.total(), 0);
    assert_eq!(stats.accepted, 0);
}

/// A peer judged at accept while a place was free, whose place went to another while it
/// shook hands (a handshake holds no place), is still refused once its handshake is done,
/// and told `Error: server full` inside TLS, then closed.
#[test]
fn a_tls_peer_whose_place_went_during_its_handshake_is_told_inside_tls() {
    let pki = Pki::new();
    let server = pki.server(
        false,
        ServerConfig {
            max_connections: 1,
            ..ServerConfig::default()
        },
    );
    // The late peer's handshake, up to its last flight: the server's answer proves it was
    // accepted (and judged) while the one place was free.
    let mut late_tcp = TcpStream::connect(server.addr).unwrap();
    late_tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut late = ClientConnection::new(pki.client(None), name).unwrap();
    late.write_tls(&mut late_tcp).unwrap();
    while late.is_handshaking() {
        assert!(
            late.read_tls(&mut late_tcp).unwrap() > 0,
            "the server's flight"
        );
        late.process_new_packets().unwrap();
    }
    let mut first = TlsPeer::connect(server.addr, pki.client(None));
    first.send(b"in\n").unwrap();
    assert_eq!(first.line().unwrap().as_deref(), Some("Echoing...in"));
    // Its last flight now: the handshake ends with no place left.
    let mut late = TlsPeer(BufReader::new(StreamOwned::new(late, late_tcp)));
    assert_eq!(late.line().unwrap().as_deref(), Some("Error: server full"));
    let stats = server.stop();
    assert_eq!(stats.rejected_full, 1);
    assert_eq!(stats.tls_handshakes, 2);
}

/// The load client keeps at most 512 connections between `connect()` and the end of their
/// handshake (`MAX_HANDSHAKES_IN_FLIGHT`: half the server's cap of 1,024, past which it
/// would close the oldest), whatever `--connect-rate` says: against a listener that takes
/// connections and never answers, 600 asked for at up to 100,000 a second make 512, and one
/// more once one of them is closed.
#[test]
fn the_load_client_keeps_at_most_512_handshakes_in_flight() {
    let pki = Pki::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            if tx.send(stream).is_err() {
                return;
            }
        }
    });
    let ca = pki.path("ca.pem").to_string_lossy().into_owned();
    let port = addr.port().to_string();
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_heartbeat-client"))
        .args(["--no-prompt", "--host", "127.0.0.1", "--port", &port])
        .args(["--tls", "--tls-ca", &ca, "--tls-server-name", "localhost"])
        .args([
            "--connections",
            "600",
            "--connect-rate",
            "100000",
            "--no-tls-resume",
        ])
        .args(["--interval", "0", "--duration", "60s", "--log-level", "off"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("client runs");
    let mut held: Vec<TcpStream> = Vec::new();
    while held.len() < 512 {
        held.push(rx.recv_timeout(HANG_GUARD).expect("the first 512 connect"));
    }
    // None past the cap while all 512 wait for the server (it never answers).
    assert!(rx.recv_timeout(Duration::from_secs(1)).is_err());
    drop(held.swap_remove(0));
    held.push(
        rx.recv_timeout(HANG_GUARD)
            .expect("one more once one is gone"),
    );
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    let _ = client.kill();
    let _ = client.wait();
}

/// The load client resumes: after the first handshakes (full), later connections present a
/// ticket the server gave earlier ones and the server accepts it (rustls reports a resumed
/// handshake only when the server's hello took the PSK). With `--no-tls-resume` none does.
#[test]
fn the_load_client_resumes_later_connections_with_tickets() {
    let pki = Pki::new();
    let server = pki.server(false, ServerConfig::default());
    let ca = pki.path("ca.pem").to_string_lossy().into_owned();
    let args = [
        "--tls",
        "--tls-ca",
        &ca,
        "--tls-server-name",
        "localhost",
        "--connections",
        "300",
        "--connect-rate",
        "100000",
        "--interval",
        "0",
    ];
    let resumed = load_client(server.addr, &args);
    assert_eq!(resumed["opened"], 300, "{resumed}");
    assert_eq!(resumed["handshake_time"]["count"], 300, "{resumed}");
    let count = resumed["resumed_handshake_time"]["count"].as_u64();
    // The warm-up starts a connection on a ticket in hand, or while fewer than 16 that will
    // bring tickets are unresolved: most of a burst of 300 resumes (259-277 on a busy 2-core
    // host, with this file's other tests running; with rustls' own cache of 8 tickets per
    // name, all 300 started at once and nearly all were full; counting tickets on their way
    // as in hand, 6-250).
    assert!(count >= Some(200), "{resumed}");

    let full = load_client(server.addr, &[&args[..], &["--no-tls-resume"]].concat());
    assert_eq!(full["handshake_time"]["count"], 300, "{full}");
    assert_eq!(full["resumed_handshake_time"]["count"], 0, "{full}");
    // The server counts the same resumptions, from its own side of the handshake.
    let stats = server.stop();
    assert_eq!(stats.tls_handshakes, 600);
    assert_eq!(Some(stats.tls_resumed), count);
}
