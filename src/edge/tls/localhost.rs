//! For unit tests only: a self-signed certificate for "localhost", and a server and client
//! configuration that trust each other through it, so every test that needs a TLS pair
//! builds it the same way.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{provider, server_config_from};

/// A P-256 certificate for "localhost" and its key.
pub(crate) fn identity() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("certificate params");
    let cert = params.self_signed(&key).expect("a certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), key)
}

/// Our server's configuration for [`identity`], and a client that trusts it and resumes
/// sessions as `resumption` says.
pub(crate) fn pair(resumption: Resumption) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (cert, key) = identity();
    let server = server_config_from(vec![cert.clone()], key, None).expect("a server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("a root");
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = resumption;
    (server, Arc::new(client))
}
