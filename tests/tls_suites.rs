//! Each cipher suite the server offers, spoken by OpenSSL (`openssl s_client`), a TLS stack
//! that shares no code with ours: the raw-key ChaCha20-Poly1305 of `edge::tls::provider` in
//! TLS 1.3 and 1.2, and ring's AES-GCM for a client that offers no ChaCha20. A record our
//! provider seals wrongly, or a nonce or additional data built differently, fails here.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Lines, ServerProcess};

const HANG_GUARD: Duration = Duration::from_secs(30);

/// `openssl s_client` with `args` gets its line echoed, and says it used `cipher`.
fn echoed_with(server: &ServerProcess, ca: &str, args: &[&str], cipher: &str) {
    let connect = format!("127.0.0.1:{}", server.port);
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-brief", "-connect", &connect])
        .args([
            "-servername",
            "localhost",
            "-CAfile",
            ca,
            "-verify_return_error",
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let output = Lines::collect(client.stdout.take().unwrap());
    let brief = Lines::collect(client.stderr.take().unwrap());
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"Hello, there\n").unwrap();
    let echoed = output.wait_for("Echoing...Hello, there", HANG_GUARD);
    let _ = client.kill();
    let _ = client.wait();
    assert!(echoed, "{args:?}: s_client printed {:?}", brief.snapshot());
    assert!(
        brief.wait_for(cipher, HANG_GUARD),
        "{args:?}: expected {cipher}, s_client said {:?}",
        brief.snapshot()
    );
}

/// OpenSSL with its defaults gets our TLS 1.3 ChaCha20 (the server's order wins), and with
/// only TLS 1.2 our TLS 1.2 ChaCha20; a client that offers only AES-GCM gets ring's.
#[test]
fn openssl_is_served_with_every_suite_we_offer() {
    if common::tool("openssl", "openssl").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    let server = ServerProcess::start(&[
        "--tls-cert",
        &path("cert.pem"),
        "--tls-key",
        &path("key.pem"),
    ]);
    let ca = path("cert.pem");
    echoed_with(&server, &ca, &["-tls1_3"], "TLS_CHACHA20_POLY1305_SHA256");
    echoed_with(
        &server,
        &ca,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    );
    echoed_with(
        &server,
        &ca,
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
        "TLS_AES_128_GCM_SHA256",
    );
    echoed_with(
        &server,
        &ca,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    );
}
