//! TLS set-up, read once at start: PEM certificates and keys from files, turned into
//! `rustls` configurations for the server (`--tls-cert`, `--tls-key`, `--tls-client-ca`)
//! and the client (`--tls`, `--tls-ca`, `--tls-cert/--tls-key`). A missing, unreadable or
//! mismatched file is a [`TlsSetupError`], one line naming the file, exit 2.
//!
//! Owns the choice of crypto: `ring` rather than `aws-lc-rs` (rustls' default), because it
//! builds with a C compiler alone (no cmake, no nasm), builds faster and smaller, and its
//! handshake cost was measured for this project (DESIGN.md, "Where it meets the world");
//! and the key-exchange groups X25519 then P-256, without P-384: a handshake costs 393 µs
//! of CPU for both ends with X25519 and 2.1 ms when secp384r1 was negotiated; and the
//! ChaCha20-Poly1305 suites of `tls/provider.rs`, ring's with record keys kept as
//! raw bytes (2.3 KB per idle peer instead of 3.3), offered first. Does not own sessions
//! (`cores::tls`) nor any socket.

#[cfg(test)]
pub(crate) mod localhost;
mod provider;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// Where the server's certificate chain and key are, and the CA for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Peers must present a certificate that chains to this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug)]
pub enum TlsSetupError {
    /// A file could not be read or holds no usable PEM item of the kind asked for.
    File {
        flag: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The files were read but rustls refused them (a key that does not match the
    /// certificate, an unsupported key type, ...).
    Refused { what: &'static str, message: String },
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::File {
                flag,
                path,
                message,
            } => write!(f, "{flag} {}: {message}", path.display()),
            TlsSetupError::Refused { what, message } => write!(f, "{what}: {message}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// `ring` with X25519 and P-256 only, and ChaCha20-Poly1305 (first) with raw record keys
/// (see the module's `//!` for why).
///
/// rustls 0.23.48 marks `ring::default_provider` deprecated because ring has no
/// post-quantum hybrid (X25519MLKEM768, aws-lc-rs only). That is a choice here, not an
/// oversight: the hybrid costs more CPU and a kilobyte more per handshake on a constrained
/// host; revisit with the provider if peers need it.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    use ring::cipher_suite::*;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            provider::tls13_chacha20_poly1305(),
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            provider::tls12_ecdsa_chacha20_poly1305(),
            provider::tls12_rsa_chacha20_poly1305(),
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        kx_groups: vec![ring::kx_group::X25519, ring::kx_group::SECP256R1],
        ..ring::default_provider()
    })
}

/// The server's configuration from `files`: TLS 1.3 and 1.2 with rustls' defaults, our
/// groups, and a client-certificate verifier when `client_ca` is given.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let chain = certificates("--tls-cert", &files.cert)?;
    let key = private_key("--tls-key", &files.key)?;
    let client_roots = match &files.client_ca {
        Some(path) => Some(Arc::new(roots("--tls-client-ca", path)?)),
        None => None,
    };
    server_config_from(chain, key, client_roots).map_err(|e| TlsSetupError::Refused {
        what: "--tls-cert/--tls-key",
        message: format!("{e} ({} and {})", files.cert.display(), files.key.display()),
    })
}

/// The server's configuration from a certificate chain, its key, and the roots a client's
/// certificate must chain to (mutual TLS) if any. Tests build theirs with it too.
pub fn server_config_from(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<Arc<RootCertStore>>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| rustls::Error::General(format!("client CA: {e:?}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    // Our order (ChaCha20 first), whatever the client prefers: its raw record keys hold
    // 1 KB less per idle peer than ring's AES-GCM keys (README, "Memory per idle TLS
    // peer"), and a heartbeat's records are too small for AES-NI's speed to matter.
    config.ignore_client_order = true;
    // Stateless resumption tickets (encrypted with a key rotated every 6 hours): a peer
    // that reconnects skips the certificate and its signature, and the server keeps
    // nothing per ticket. rustls' default stores each ticket in a 256-entry cache instead,
    // which costs ~700 B per handshake until full and cannot serve a fleet.
    config.ticketer = ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// What the client needs to speak TLS to the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsFiles {
    /// Trust anchors for the server's certificate.
    pub ca: Option<PathBuf>,
    /// A certificate and key of our own, for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The client's configuration: the server must chain to `ca`, else to the system's roots.
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let roots = match &files.ca {
        Some(ca) => roots("--tls-ca", ca)?,
        None => system_roots()?,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused("TLS versions"))?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates("--tls-cert", cert)?;
            let key = private_key("--tls-key", key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(refused("--tls-cert/--tls-key"))?
        }
        _ => {
            return Err(TlsSetupError::Refused {
                what: "--tls-cert/--tls-key",
                message: "give both or neither".into(),
            })
        }
    };
    Ok(Arc::new(config))
}

/// The operating system's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` if set).
fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or("none found".to_string(), |e| e.to_string());
        return Err(TlsSetupError::Refused {
            what: "--tls",
            message: format!("no system root certificates ({why}); give --tls-ca PATH"),
        });
    }
    Ok(roots)
}

/// The name the client checks in the server's certificate.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(name.to_string()).map_err(|e| TlsSetupError::Refused {
        what: "--tls-server-name",
        message: format!("{name:?}: {e}"),
    })
}

fn refused<E: fmt::Display>(what: &'static str) -> impl Fn(E) -> TlsSetupError {
    move |e| TlsSetupError::Refused {
        what,
        message: e.to_string(),
    }
}

fn file_error(flag: &'static str, path: &Path, message: String) -> TlsSetupError {
    TlsSetupError::File {
        flag,
        path: path.to_path_buf(),
        message,
    }
}

/// A PEM item could not be had: a file that cannot be opened says so plainly.
fn pem_message(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the right kind".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(flag, path, pem_message(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, pem_message(e)))?;
    if chain.is_empty() {
        return Err(file_error(flag, path, "no CERTIFICATE in the file".into()));
    }
    Ok(chain)
}

fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(flag, path, pem_message(e)))
}

fn roots(flag: &'static str, path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(flag, path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(flag, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}
