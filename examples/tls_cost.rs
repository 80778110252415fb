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
/// suites) and a stock-ring client that offers only `suite`, so that it is negotiated.
fn configs(provider: &str, suite_name: &str) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
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
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (server, Arc::new(client))
}

/// The server's part of one turn: counted in the handshake row.
#[inline(never)]
fn counted_server_turn(session: &mut TlsSession, wire: &mut [u8]) -> Vec<u8> {
    session.receive(wire, |_| {}).unwrap();
    let reply = session.outgoing().to_vec();
    session.sent(reply.len());
    reply
}

/// One handshake, both ends in memory; only the server's turns are counted.
fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> (TlsSession, ClientConnection) {
    let mut session = TlsSession::new(server.clone()).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(client.clone(), name).unwrap();
    for _ in 0..20 {
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        let reply = counted_server_turn(&mut session, &mut wire);
        if wire.is_empty() && reply.is_empty() {
            break;
        }
        let mut reader = &reply[..];
        while !reader.is_empty() {
            conn.read_tls(&mut reader).unwrap();
        }
        conn.process_new_packets().unwrap();
    }
    assert!(session.is_established());
    (session, conn)
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
    let (server, client) = configs(provider, suite_name);
    match phase {
        "handshake" => {
            for _ in 0..n {
                black_box(handshake(&server, &client));
            }
        }
        "line" => {
            let (mut session, mut conn) = handshake(&server, &client);
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
    let toggle = match phase {
        "handshake" => "*counted_server_turn*",
        "line" => "*counted_lines*",
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
    for (what, suite_name) in [
        ("ring key for one record, ChaCha20-Poly1305", "chacha"),
        ("ring key for one record, AES-128-GCM", "aes128"),
        ("ring key for one record, AES-256-GCM", "aes256"),
    ] {
        let cost = measure("keysetup", "ours", suite_name, 10_000);
        println!("{what:<44} {:>12} {cost:>12.0}", "");
    }
}
