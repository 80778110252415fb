//! TLS on the server's side, in memory (no sockets): a whole handshake (both ends: our
//! `TlsSession` and a rustls client, TLS 1.3, X25519, a P-256 certificate, no resumption),
//! and a line's round (sealed by the client, opened in place and echoed by the server, the
//! echo opened by the client). For a
//! figure that does not depend on a busy machine, count instructions:
//! `valgrind --tool=callgrind target/release/deps/tls-* --bench --profile-time 5 handshake`,
//! or, per handshake and per line with stock ring's record keys beside ours, in a table:
//! `cargo build --release --example tls_cost && target/release/examples/tls_cost`.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use heartbeat::cores::tls::{sealed_len, TlsSession};
use heartbeat::edge::tls::{provider, server_config_from};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = server_config_from(vec![cert.der().clone()], key, None).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake a full one: the figure a fleet reconnecting after a restart sees.
    client.resumption = rustls::client::Resumption::disabled();
    (server, Arc::new(client))
}

/// Moves bytes both ways until neither side has any.
fn pump(client: &mut ClientConnection, session: &mut TlsSession) {
    for _ in 0..20 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        session.receive(&mut wire, |_| {}).unwrap();
        let reply = session.outgoing().to_vec();
        session.sent(reply.len());
        if wire.is_empty() && reply.is_empty() {
            return;
        }
        let mut reader = &reply[..];
        while !reader.is_empty() {
            client.read_tls(&mut reader).unwrap();
        }
        client.process_new_packets().unwrap();
    }
}

fn tls(c: &mut Criterion) {
    let (server, client) = configs();
    let name = ServerName::try_from("localhost").unwrap();
    let mut group = c.benchmark_group("tls");
    group.throughput(Throughput::Elements(1));

    group.bench_function("handshake", |b| {
        b.iter(|| {
            let mut session = TlsSession::new(server.clone()).unwrap();
            let mut conn = ClientConnection::new(client.clone(), name.clone()).unwrap();
            pump(&mut conn, &mut session);
            black_box(session.is_established())
        })
    });

    group.bench_function("echo_line", |b| {
        // A whole round both ends do for one line: the client seals it, the server opens it
        // in place and seals its echo, the client opens the echo.
        let mut session = TlsSession::new(server.clone()).unwrap();
        let mut conn = ClientConnection::new(client.clone(), name.clone()).unwrap();
        pump(&mut conn, &mut session);
        let mut out = vec![0; sealed_len(64)];
        let mut wire = Vec::with_capacity(256);
        let mut echo = [0u8; 64];
        b.iter(|| {
            conn.writer().write_all(b"Hello, there\n").unwrap();
            wire.clear();
            conn.write_tls(&mut wire).unwrap();
            let mut lines = 0;
            session.receive(&mut wire, |_| lines += 1).unwrap();
            let n = session.seal(b"Echoing...Hello, there\n", &mut out).unwrap();
            let mut reader = &out[..n];
            conn.read_tls(&mut reader).unwrap();
            conn.process_new_packets().unwrap();
            black_box(std::io::Read::read(&mut conn.reader(), &mut echo).unwrap());
            black_box(lines)
        })
    });
    group.finish();
}

criterion_group!(benches, tls);
criterion_main!(benches);
