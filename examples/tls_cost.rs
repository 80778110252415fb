//! What TLS costs the server in CPU, counted in instructions (`valgrind --tool=callgrind`,
//! repeatable on a busy machine), with our provider (record keys kept as raw bytes, ring's
//! key built per record) and with stock ring's (ring's key objects kept per session):
//!
//! ```text
//! cargo build --release --example tls_cost
//! target/release/examples/tls_cost          # runs itself under callgrind, prints a table
//! ```
//!
//! Rows: the server's side of a full handshake (TLS 1.3, X25519, P-256 certificate, a rustls
//! client on stock ring, no resumption; the client's work is not counted), the server's
//! side of one line (a record opened in place, its echo sealed), and building ring's key
//! for one record (what raw keys add, twice per echoed line: open and seal) for
//! ChaCha20-Poly1305 and AES-GCM. Each row is the instructions of the counted function
//! (`--toggle-collect`) divided by how many times it ran.
//!
//! A second table counts handshakes as the load client makes them (our provider at both
//! ends): the server's side and the client's, full and resumed (a ticket from the handshake
//! before), with rustls' two tickets per handshake and with one
//! (`ServerConfig::send_tls13_tickets`). Measured (busy 2-core host; instructions do not
//! depend on the load):
//!
//! ```text
//! handshake, our client and server                2 tickets     1 ticket
//! server side, full                                 1219906      1198171
//! server side, resumed                              1072758      1049186
//! client side, full                                 2500092      2485694
//! client side, resumed                              1029545      1013809
//! ```
//!
//! Where it goes (callgrind_annotate): the client's full handshake is 60% two ECDSA P-256
//! verifications (the chain, then CertificateVerify), 29% X25519; resumed, both are gone
//! but X25519 stays (PSK with (EC)DHE). The server's resumed handshake is 63% X25519 and the
//! rest HKDF/HMAC of the key schedule (and, full, one P-256 signature). Nothing per handshake
//! is ours (configurations, verifier and ticketer are built once; a session costs an `Arc`
//! clone and the server name's). A second ticket costs the server ~22,000 instructions
//! (2%) and the client ~15,000; it is kept: a burst's warm-up doubles its tickets each
//! round trip with two, and clients that open parallel connections use both. (Under
//! valgrind ring takes its generic X25519 and P-256 paths; natively ADX/BMI2 paths may run.)
//!
//! `tls_cost PHASE PROVIDER SUITE N` runs one row's work without valgrind.

use std::hint::black_box;
use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use heartbeat::cores::tls::{sealed_len, TlsSession};
use heartbeat::edge::tls::server_config_from;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedCipherSuite};

const LINE: &[u8] = b"Hello, there\n";
const ECHO: &[u8] = b"Echoing...Hello, there\n";

/// Stock ring with our groups and the given suites.
#[allow(deprecated)]
fn stock_ring(suites: Vec<SupportedCipherSuite>) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: suites,
        kx_groups: vec![ring::kx_group::X25519, ring::kx_group::SECP256R1],
        ..ring::default_provider()
    })
}

#[allow(deprecated)]
fn suite(name: &str) -> SupportedCipherSuite {
    use ring::cipher_suite::*;
    match name {
        "aes128" => TLS13_AES_128_GCM_SHA256,
        "aes256" => TLS13_AES_256_GCM_SHA384,
        _ => TLS13_CHACHA20_POLY1305_SHA256,
    }
}

/// The server's configuration (`ours`: the server's own; `stock`: the same on stock ring's
/// suites), a stock-ring client that offers only `suite`, so that it is negotiated, and the
/// roots that trust the server.
fn configs(
    provider: &str,
    suite_name: &str,
) -> (Arc<ServerConfig>, Arc<ClientConfig>, RootCertStore) {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let ours = server_config_from(vec![cert.der().clone()], key.clone_key(), None).unwrap();
    let server = if provider == "stock" {
        let mut stock = ServerConfig::builder_with_provider(stock_ring(vec![
            suite("chacha"),
            suite("aes128"),
            suite("aes256"),
        ]))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        stock.ignore_client_order = ours.ignore_client_order;
        stock.ticketer = ring::Ticketer::new().unwrap();
        Arc::new(stock)
    } else {
        ours
    };
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client = ClientConfig::builder_with_provider(stock_ring(vec![suite(suite_name)]))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (server, Arc::new(client), roots)
}

fn server_turn(session: &mut TlsSession, wire: &mut [u8]) -> Vec<u8> {
    session.receive(wire, |_| {}).unwrap();
    let reply = session.outgoing().to_vec();
    session.sent(reply.len());
    reply
}

/// The server's part of one turn: counted in the server's handshake rows.
#[inline(never)]
fn counted_server_turn(session: &mut TlsSession, wire: &mut [u8]) -> Vec<u8> {
    server_turn(session, wire)
}

/// The client's part of one turn (the server's reply in, its next flight out).
fn client_turn(conn: &mut ClientConnection, reply: &[u8]) -> Vec<u8> {
    let mut reader = reply;
    while !reader.is_empty() {
        conn.read_tls(&mut reader).unwrap();
    }
    conn.process_new_packets().unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    wire
}

/// The client's part of one turn: counted in the client's handshake rows.
#[inline(never)]
fn counted_client_turn(conn: &mut ClientConnection, reply: &[u8]) -> Vec<u8> {
    client_turn(conn, reply)
}

/// The client's session made (a ticket taken from its cache when it has one): counted in
/// the client's rows.
#[inline(never)]
fn counted_client_new(client: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Which side's work is counted.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Server,
    Client,
    Neither,
}

/// One handshake, both ends in memory, until both are quiet (the server's tickets read by
/// the client); only `side`'s work is counted.
fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    side: Side,
) -> (TlsSession, ClientConnection) {
    let mut session = TlsSession::new(server.clone()).unwrap();
    let mut conn = match side {
        Side::Client => counted_client_new(client),
        _ => ClientConnection::new(client.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap(),
    };
    let mut reply = Vec::new();
    for _ in 0..20 {
        let mut wire = match side {
            Side::Client => counted_client_turn(&mut conn, &reply),
            _ => client_turn(&mut conn, &reply),
        };
        reply = match side {
            Side::Server => counted_server_turn(&mut session, &mut wire),
            _ => server_turn(&mut session, &mut wire),
        };
        if wire.is_empty() && reply.is_empty() {
            break;
        }
    }
    assert!(session.is_established());
    (session, conn)
}

/// A client on our own provider (the load client's) trusting `roots`, resuming from
/// rustls' in-memory cache when `resume` (one handshake at a time here: its 8 tickets per
/// name are enough; the load client keeps its own `TicketStore` for bursts).
fn our_client(roots: RootCertStore, resume: bool) -> Arc<ClientConfig> {
    let mut client = ClientConfig::builder_with_provider(heartbeat::edge::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        client.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(client)
}

/// The server's side of `records.len()` lines: each record opened in place, its echo sealed.
#[inline(never)]
fn counted_lines(session: &mut TlsSession, records: &mut [Vec<u8>], out: &mut [u8]) -> usize {
    let mut sealed = 0;
    for record in records {
        let mut lines = 0;
        session.receive(record, |_| lines += 1).unwrap();
        assert_eq!(lines, 1);
        sealed += session.seal(ECHO, out).unwrap();
    }
    sealed
}

/// ring's key for one record, `n` times.
#[inline(never)]
fn counted_key_setup(alg: &'static ::ring::aead::Algorithm, n: usize) {
    let key = [7u8; 32];
    for _ in 0..n {
        let unbound = ::ring::aead::UnboundKey::new(alg, &key[..alg.key_len()]).unwrap();
        black_box(::ring::aead::LessSafeKey::new(unbound));
    }
}

fn run(phase: &str, provider: &str, suite_name: &str, n: usize) {
    let (mut server, client, roots) = configs(provider, suite_name);
    match phase {
        "handshake" => {
            for _ in 0..n {
                black_box(handshake(&server, &client, Side::Server));
            }
        }
        // `PROVIDER` here is the server's; the client is the load client's (our provider).
        // `SUITE` names the side counted and the tickets the server sends after each
        // handshake: `server` or `client`, then `-1t` for one ticket (else rustls' two).
        "full" | "resumed" => {
            let side = match suite_name.starts_with("client") {
                true => Side::Client,
                false => Side::Server,
            };
            if suite_name.ends_with("-1t") {
                let mut config = (*server).clone();
                config.send_tls13_tickets = 1;
                server = Arc::new(config);
            }
            let resume = phase == "resumed";
            let client = our_client(roots, resume);
            // The first handshake (full, uncounted) brings the first tickets.
            black_box(handshake(&server, &client, Side::Neither));
            for _ in 0..n {
                let (session, conn) = handshake(&server, &client, side);
                let kind = conn.handshake_kind();
                assert_eq!(kind == Some(rustls::HandshakeKind::Resumed), resume);
                black_box((session, conn));
            }
        }
        "line" => {
            let (mut session, mut conn) = handshake(&server, &client, Side::Neither);
            // The client's records first, uncounted.
            let mut records: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    conn.writer().write_all(LINE).unwrap();
                    let mut wire = Vec::new();
                    while conn.wants_write() {
                        conn.write_tls(&mut wire).unwrap();
                    }
                    wire
                })
                .collect();
            let mut out = vec![0; sealed_len(ECHO.len())];
            black_box(counted_lines(&mut session, &mut records, &mut out));
        }
        "keysetup" => {
            let alg = match suite_name {
                "aes128" => &::ring::aead::AES_128_GCM,
                "aes256" => &::ring::aead::AES_256_GCM,
                _ => &::ring::aead::CHACHA20_POLY1305,
            };
            counted_key_setup(alg, n);
        }
        other => panic!("unknown phase {other}"),
    }
}

/// Runs one row under callgrind and returns instructions per unit.
fn measure(phase: &str, provider: &str, suite_name: &str, n: usize) -> f64 {
    let toggle = match (phase, suite_name.starts_with("client")) {
        // Two functions: callgrind takes one toggle per option.
        (_, true) => "*counted_client_*",
        ("handshake" | "full" | "resumed", _) => "*counted_server_turn*",
        ("line", _) => "*counted_lines*",
        _ => "*counted_key_setup*",
    };
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            &format!("--toggle-collect={toggle}"),
        ])
        .arg(exe)
        .args([phase, provider, suite_name, &n.to_string()])
        .output()
        .expect("valgrind (apt-get install valgrind)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let collected = stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no callgrind total:\n{stderr}"));
    collected / n as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [phase, provider, suite_name, n] = &args[..] {
        run(phase, provider, suite_name, n.parse().unwrap());
        return;
    }
    println!("instructions per unit, server side (callgrind; rustls 0.23, ring 0.17, TLS 1.3)");
    println!("{:<44} {:>12} {:>12}", "", "stock ring", "ours");
    for (what, phase, suite_name, n) in [
        ("handshake, ChaCha20-Poly1305", "handshake", "chacha", 50),
        (
            "line (open + seal), ChaCha20-Poly1305",
            "line",
            "chacha",
            10_000,
        ),
        ("line (open + seal), AES-128-GCM", "line", "aes128", 10_000),
    ] {
        let stock = measure(phase, "stock", suite_name, n);
        let ours = measure(phase, "ours", suite_name, n);
        println!("{what:<44} {stock:>12.0} {ours:>12.0}");
    }
    // Handshakes as the load client makes them (our provider at both ends): the server's
    // side and the client's, full and resumed, with rustls' two tickets and with one.
    println!();
    println!(
        "{:<44} {:>12} {:>12}",
        "handshake, our client and server", "2 tickets", "1 ticket"
    );
    for (what, phase, side) in [
        ("server side, full", "full", "server"),
        ("server side, resumed", "resumed", "server"),
        ("client side, full", "full", "client"),
        ("client side, resumed", "resumed", "client"),
    ] {
        let two = measure(phase, "ours", side, 50);
        let one = measure(phase, "ours", &format!("{side}-1t"), 50);
        println!("{what:<44} {two:>12.0} {one:>12.0}");
    }
    println!();
    for (what, suite_name) in [
        ("ring key for one record, ChaCha20-Poly1305", "chacha"),
        ("ring key for one record, AES-128-GCM", "aes128"),
        ("ring key for one record, AES-256-GCM", "aes256"),
    ] {
        let cost = measure("keysetup", "ours", suite_name, 10_000);
        println!("{what:<44} {:>12} {cost:>12.0}", "");
    }
}
