//! The cipher suites of our crypto provider, for a host where memory per peer is what runs
//! out: ring's suites, whose record keys are kept as their raw bytes (32 B and a 12-B IV)
//! instead of a ring key object (560 B each, two per session: ring sizes every key for
//! AES-GCM's expanded schedule, ChaCha20 included). ring's key is built on the stack for
//! each record: for ChaCha20-Poly1305 that is a copy of the 32 bytes; for AES-GCM it is a
//! key expansion and a GHASH table per record, which is why AES-GCM keeps ring's own keys
//! here (callgrind figures in the README, "Memory per idle TLS peer").
//!
//! Owns only the AEAD glue between rustls' record layer and ring's `aead` (the nonce and
//! additional data of RFC 8446 §5.2-5.3 and RFC 7905, written as rustls' own ring provider
//! writes them in `crypto/ring/tls13.rs` and `tls12.rs`): no cryptography of its own, and
//! no key schedule (ring's HKDF is kept: after a handshake rustls holds no HKDF or HMAC
//! key, only three 64-B secrets, so a smaller one would save nothing on an idle peer). Does
//! not own which suites, versions and groups are offered (`edge::tls`).

use std::sync::LazyLock;

use ring::aead;
use rustls::crypto::cipher::{
    make_tls12_aad, make_tls13_aad, AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv,
    KeyBlockShape, MessageDecrypter, MessageEncrypter, Nonce, OutboundOpaqueMessage,
    OutboundPlainMessage, PrefixedPayload, Tls12AeadAlgorithm, Tls13AeadAlgorithm,
    UnsupportedOperationError, NONCE_LEN,
};
use rustls::crypto::CipherSuiteCommon;
use rustls::{
    ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion, SupportedCipherSuite,
    Tls12CipherSuite, Tls13CipherSuite,
};

/// ChaCha20-Poly1305's tag: what a record's ciphertext adds to its plaintext.
const TAG_LEN: usize = 16;
/// The most plaintext a TLS 1.2 record may carry (2^14 B, RFC 5246 §6.2.1): a longer one
/// is refused, as rustls' ring suite does.
const MAX_FRAGMENT_LEN: usize = 16_384;

/// TLS 1.3's `TLS_CHACHA20_POLY1305_SHA256` with raw record keys.
pub fn tls13_chacha20_poly1305() -> SupportedCipherSuite {
    SupportedCipherSuite::Tls13(&TLS13_CHACHA20_POLY1305)
}

/// TLS 1.2's `ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256` with raw record keys.
pub fn tls12_ecdsa_chacha20_poly1305() -> SupportedCipherSuite {
    SupportedCipherSuite::Tls12(&TLS12_ECDSA_CHACHA20_POLY1305)
}

/// TLS 1.2's `ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256` with raw record keys.
pub fn tls12_rsa_chacha20_poly1305() -> SupportedCipherSuite {
    SupportedCipherSuite::Tls12(&TLS12_RSA_CHACHA20_POLY1305)
}

// ring's suites with only their AEAD replaced: the same suite number, hash, HKDF or PRF,
// signature schemes and limits. rustls' structs are not `Clone`, so the fields are copied.
// Not usable for QUIC (`quic: None`): this server speaks TCP only.
static TLS13_CHACHA20_POLY1305: LazyLock<Tls13CipherSuite> = LazyLock::new(|| {
    #[allow(deprecated)]
    let base = rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256;
    let SupportedCipherSuite::Tls13(base) = base else {
        unreachable!("ring's TLS13_* suite is a TLS 1.3 suite")
    };
    Tls13CipherSuite {
        common: common(&base.common),
        hkdf_provider: base.hkdf_provider,
        aead_alg: &RawChacha20Poly1305,
        quic: None,
    }
});

static TLS12_ECDSA_CHACHA20_POLY1305: LazyLock<Tls12CipherSuite> = LazyLock::new(|| {
    tls12(rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
});

static TLS12_RSA_CHACHA20_POLY1305: LazyLock<Tls12CipherSuite> = LazyLock::new(|| {
    tls12(rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)
});

fn common(base: &CipherSuiteCommon) -> CipherSuiteCommon {
    CipherSuiteCommon {
        suite: base.suite,
        hash_provider: base.hash_provider,
        confidentiality_limit: base.confidentiality_limit,
    }
}

fn tls12(base: SupportedCipherSuite) -> Tls12CipherSuite {
    let SupportedCipherSuite::Tls12(base) = base else {
        unreachable!("ring's TLS_ECDHE_* suites are TLS 1.2 suites")
    };
    Tls12CipherSuite {
        common: common(&base.common),
        prf_provider: base.prf_provider,
        kx: base.kx,
        sign: base.sign,
        aead_alg: &RawChacha20Poly1305,
    }
}

/// ChaCha20-Poly1305 whose encrypters and decrypters hold the key's bytes.
struct RawChacha20Poly1305;

/// A record key as bytes, and the IV its nonces are made from. ring's key is made from it
/// for each record ([`RawKey::with_ring`]): for ChaCha20 a 32-byte copy (about 250
/// instructions a record with ring's moves of its key struct, against some 1,100 for a
/// short record's ChaCha20-Poly1305 itself), and 504 B less held per key.
struct RawKey {
    /// Zeroed when dropped (rustls' `AeadKey` does that).
    key: AeadKey,
    iv: Iv,
}

impl RawKey {
    fn new(key: AeadKey, iv: Iv) -> RawKey {
        RawKey { key, iv }
    }

    /// Runs `f` with ring's key for one record; `error` if it fails. ring refuses only a
    /// key of the wrong length, which rustls' key schedule never gives (it asks
    /// [`Tls13AeadAlgorithm::key_len`]): that record is refused, never a panic. The key
    /// is lent, not returned: each move of ring's 540-B key is a `memcpy`.
    #[inline(always)]
    fn with_ring<R>(
        &self,
        error: Error,
        f: impl FnOnce(&aead::LessSafeKey) -> Result<R, ring::error::Unspecified>,
    ) -> Result<R, Error> {
        let Ok(key) = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, self.key.as_ref()) else {
            return Err(error);
        };
        f(&aead::LessSafeKey::new(key)).map_err(|_| error)
    }

    fn nonce(&self, seq: u64) -> aead::Nonce {
        aead::Nonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0)
    }
}

impl Tls13AeadAlgorithm for RawChacha20Poly1305 {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Tls13Seal(RawKey::new(key, iv)))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Tls13Open(RawKey::new(key, iv)))
    }

    fn key_len(&self) -> usize {
        aead::CHACHA20_POLY1305.key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv })
    }

    fn fips(&self) -> bool {
        false // ChaCha20-Poly1305 is not FIPS-approved
    }
}

impl Tls12AeadAlgorithm for RawChacha20Poly1305 {
    fn encrypter(&self, key: AeadKey, iv: &[u8], _explicit: &[u8]) -> Box<dyn MessageEncrypter> {
        Box::new(Tls12Seal(RawKey::new(key, Iv::copy(iv))))
    }

    fn decrypter(&self, key: AeadKey, iv: &[u8]) -> Box<dyn MessageDecrypter> {
        Box::new(Tls12Open(RawKey::new(key, Iv::copy(iv))))
    }

    fn key_block_shape(&self) -> KeyBlockShape {
        KeyBlockShape {
            enc_key_len: 32,
            fixed_iv_len: NONCE_LEN,
            explicit_nonce_len: 0,
        }
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: &[u8],
        _explicit: &[u8],
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(ConnectionTrafficSecrets::Chacha20Poly1305 {
            key,
            iv: Iv::copy(iv),
        })
    }

    fn fips(&self) -> bool {
        false
    }
}

// One direction's key each: rustls boxes it (`Box<dyn …>`), one 56-B allocation.
struct Tls13Seal(RawKey);
struct Tls13Open(RawKey);
struct Tls12Seal(RawKey);
struct Tls12Open(RawKey);

impl MessageEncrypter for Tls13Seal {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        let nonce = self.0.nonce(seq);
        let aad = aead::Aad::from(make_tls13_aad(total_len));
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        self.0.with_ring(Error::EncryptError, |key| {
            key.seal_in_place_append_tag(nonce, aad, &mut payload)
        })?;
        // Every TLS 1.3 record says TLS 1.2 and application data on the outside (RFC 8446
        // §5.1-5.2); the real type is the last byte inside.
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

impl MessageDecrypter for Tls13Open {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let nonce = self.0.nonce(seq);
        let aad = aead::Aad::from(make_tls13_aad(payload.len()));
        let plain_len = self.0.with_ring(Error::DecryptError, |key| {
            key.open_in_place(nonce, aad, payload)
                .map(|plain| plain.len())
        })?;
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

impl MessageEncrypter for Tls12Seal {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        let nonce = self.0.nonce(seq);
        let aad = aead::Aad::from(make_tls12_aad(seq, msg.typ, msg.version, msg.payload.len()));
        payload.extend_from_chunks(&msg.payload);
        self.0.with_ring(Error::EncryptError, |key| {
            key.seal_in_place_append_tag(nonce, aad, &mut payload)
        })?;
        Ok(OutboundOpaqueMessage::new(msg.typ, msg.version, payload))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + TAG_LEN
    }
}

impl MessageDecrypter for Tls12Open {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &msg.payload;
        if payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let nonce = self.0.nonce(seq);
        let aad = aead::Aad::from(make_tls12_aad(
            seq,
            msg.typ,
            msg.version,
            payload.len() - TAG_LEN,
        ));
        let payload = &mut msg.payload;
        let plain_len = self.0.with_ring(Error::DecryptError, |key| {
            key.open_in_place(nonce, aad, payload)
                .map(|plain| plain.len())
        })?;
        if plain_len > MAX_FRAGMENT_LEN {
            return Err(Error::PeerSentOversizedRecord);
        }
        payload.truncate(plain_len);
        Ok(msg.into_plain_message())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use crate::edge::tls::localhost::identity;
    use rustls::crypto::{ring as stock, CryptoProvider};
    use rustls::pki_types::ServerName;
    use rustls::{
        ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
        SupportedCipherSuite,
    };

    /// rustls' ring provider as shipped, offering only `suite`: the peer our suites must
    /// interoperate with (a record sealed by one is opened by the other).
    #[allow(deprecated)]
    fn stock(suite: SupportedCipherSuite) -> Arc<CryptoProvider> {
        Arc::new(CryptoProvider {
            cipher_suites: vec![suite],
            ..stock::default_provider()
        })
    }

    /// A connected pair: `server_provider` serving, `client_provider` connecting, `version`.
    fn pair(
        server_provider: Arc<CryptoProvider>,
        client_provider: Arc<CryptoProvider>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (ServerConnection, ClientConnection) {
        let (cert, key) = identity();
        let server = ServerConfig::builder_with_provider(server_provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(client_provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut server = ServerConnection::new(Arc::new(server)).unwrap();
        let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
        for _ in 0..10 {
            move_bytes(&mut client, &mut server).unwrap();
            move_bytes(&mut server, &mut client).unwrap();
        }
        assert!(!server.is_handshaking() && !client.is_handshaking());
        (server, client)
    }

    /// Everything `from` has to send, into `to`.
    fn move_bytes(
        from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
        to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
    ) -> Result<(), rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut reader = &wire[..];
        while !reader.is_empty() {
            to.read_tls(&mut reader).unwrap();
        }
        to.process_new_packets().map(|_| ())
    }

    /// `line` sealed by `from`, opened by `to`.
    fn say(from: &mut Connection, to: &mut Connection, line: &[u8]) -> Vec<u8> {
        from.writer().write_all(line).unwrap();
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut reader = &wire[..];
        while !reader.is_empty() {
            to.read_tls(&mut reader).unwrap();
        }
        to.process_new_packets().unwrap();
        let mut got = vec![0; 64];
        let n = to.reader().read(&mut got).unwrap();
        got.truncate(n);
        got
    }

    fn ours(suite: SupportedCipherSuite) -> Arc<CryptoProvider> {
        Arc::new(CryptoProvider {
            cipher_suites: vec![suite],
            ..(*crate::edge::tls::provider()).clone()
        })
    }

    /// Our suite and stock ring's, each end both ways, for one version: the handshake ends
    /// (its Finished messages are sealed with these keys), the suite is the one asked for,
    /// and lines go both ways, in TLS 1.3 across a key update too.
    fn interoperates(
        our_suite: SupportedCipherSuite,
        stock_suite: SupportedCipherSuite,
        version: &'static rustls::SupportedProtocolVersion,
    ) {
        for (server, client) in [
            (ours(our_suite), stock(stock_suite)),
            (stock(stock_suite), ours(our_suite)),
            (ours(our_suite), ours(our_suite)),
        ] {
            let (server, client) = pair(server, client, version);
            let (mut server, mut client) = (Connection::from(server), Connection::from(client));
            assert_eq!(
                server.negotiated_cipher_suite().map(|s| s.suite()),
                Some(stock_suite.suite())
            );
            assert_eq!(server.protocol_version(), Some(version.version));
            for round in 0..4 {
                // TLS 1.3: in the last round the client asks for new keys (a KeyUpdate that
                // both ends answer with new encrypters and decrypters).
                if round == 3 && version == &rustls::version::TLS13 {
                    client.refresh_traffic_keys().unwrap();
                }
                assert_eq!(
                    say(&mut client, &mut server, b"Hello, there\n"),
                    b"Hello, there\n"
                );
                assert_eq!(
                    say(&mut server, &mut client, b"Echoing...Hello, there\n"),
                    b"Echoing...Hello, there\n"
                );
            }
        }
    }

    /// TLS 1.3 ChaCha20-Poly1305 with raw keys talks to rustls' own ring suite.
    #[test]
    #[allow(deprecated)]
    fn tls13_chacha20_interoperates_with_stock_ring() {
        interoperates(
            super::tls13_chacha20_poly1305(),
            stock::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            &rustls::version::TLS13,
        );
    }

    /// TLS 1.2 ECDHE-ECDSA ChaCha20-Poly1305 with raw keys talks to rustls' own ring suite.
    #[test]
    #[allow(deprecated)]
    fn tls12_chacha20_interoperates_with_stock_ring() {
        interoperates(
            super::tls12_ecdsa_chacha20_poly1305(),
            stock::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            &rustls::version::TLS12,
        );
    }

    /// The server's configuration prefers our raw-key ChaCha20 (not ring's) whatever a
    /// stock client that offers everything prefers (AES-GCM first).
    #[test]
    #[allow(deprecated)]
    fn the_server_config_negotiates_our_chacha20_with_a_default_client() {
        let (cert, key) = identity();
        let server = crate::edge::tls::server_config_from(vec![cert.clone()], key, None).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(stock::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut server = ServerConnection::new(server).unwrap();
        let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
        for _ in 0..10 {
            move_bytes(&mut client, &mut server).unwrap();
            move_bytes(&mut server, &mut client).unwrap();
        }
        let ours: &'static rustls::Tls13CipherSuite = &super::TLS13_CHACHA20_POLY1305;
        assert!(matches!(
            server.negotiated_cipher_suite(),
            Some(SupportedCipherSuite::Tls13(suite)) if std::ptr::eq(suite, ours)
        ));
    }

    /// A record changed on the way is refused (its tag does not verify), in both versions:
    /// the raw-key decrypter authenticates, it does not only decrypt.
    #[test]
    fn a_tampered_record_is_refused() {
        for (suite, version) in [
            (super::tls13_chacha20_poly1305(), &rustls::version::TLS13),
            (
                super::tls12_ecdsa_chacha20_poly1305(),
                &rustls::version::TLS12,
            ),
        ] {
            let (server, client) = pair(ours(suite), ours(suite), version);
            let (mut server, mut client) = (Connection::from(server), Connection::from(client));
            client.writer().write_all(b"Hello, there\n").unwrap();
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let last = wire.len() - 1;
            wire[last] ^= 1;
            let mut reader = &wire[..];
            while !reader.is_empty() {
                server.read_tls(&mut reader).unwrap();
            }
            assert_eq!(
                server.process_new_packets().unwrap_err(),
                rustls::Error::DecryptError,
                "{version:?}"
            );
        }
    }
}
