//! One server peer's TLS session, sans-IO: ciphertext in, plaintext out; plaintext in,
//! ciphertext out. It touches no socket and reads no clock; the loop moves the bytes.
//!
//! Built on rustls' unbuffered API (`UnbufferedServerConnection`), where the caller owns the
//! buffers, so that an idle peer holds none: records are decrypted in place in the loop's
//! read buffer, and only a record split across reads is copied here (`incoming`), only
//! ciphertext the kernel refused is kept (`outgoing`); both are given back once empty. The
//! buffered `ServerConnection` keeps its own buffers for the peer's whole life (5.3 KB per
//! idle peer against 2.3 KB here, keys included: `tests/tls_memory.rs`).
//!
//! Owns the rustls state machine, those two buffers, and naming why a handshake failed
//! ([`Refusal`]). Does not own the handshake's deadline, the cap on handshakes or counting
//! (the server core's waiting stage), logging (the loop's), nor what the plaintext means
//! (the server core's).

use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, WriteTraffic};
use rustls::{CertificateError, Error};

/// The first byte of every TLS connection: a handshake record (ClientHello).
const HANDSHAKE_RECORD: u8 = 0x16;
/// Ciphertext a record adds to its plaintext at most (header, tag, padding; TLS 1.2's
/// explicit nonce): sizes the buffer [`TlsSession::seal`] writes into.
pub const RECORD_OVERHEAD: usize = 5 + 256;
/// Plaintext in one record at most: each record of this size costs [`RECORD_OVERHEAD`].
pub const MAX_FRAGMENT: usize = 16 * 1024;

/// Why a peer's handshake did not end in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its first bytes were not a TLS handshake (plain text to a TLS port).
    NotTls,
    /// Mutual TLS, and it presented no certificate.
    NoClientCertificate,
    /// Its certificate does not chain to `--tls-client-ca` (or has a bad signature).
    UnknownCa,
    /// Its certificate has expired, or is not valid yet.
    Expired,
    /// Its certificate was refused for another reason (revoked, wrong usage, malformed).
    BadCertificate,
    /// It sent an alert: it refused us (it does not trust our certificate, ...).
    PeerAlert,
    /// No version, cipher suite or group in common, or a protocol error.
    Protocol,
    /// It did not finish its handshake in time.
    Deadline,
    /// Too many handshakes in flight: the oldest made room for a newer one.
    Evicted,
    /// It closed or reset the connection during the handshake.
    Closed,
}

impl Refusal {
    /// Every reason, in the order summaries list them.
    pub const ALL: [Refusal; 10] = [
        Refusal::NotTls,
        Refusal::NoClientCertificate,
        Refusal::UnknownCa,
        Refusal::Expired,
        Refusal::BadCertificate,
        Refusal::PeerAlert,
        Refusal::Protocol,
        Refusal::Deadline,
        Refusal::Evicted,
        Refusal::Closed,
    ];

    /// Its name in metrics labels and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NotTls => "not_tls",
            Refusal::NoClientCertificate => "no_client_certificate",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Expired => "expired",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::PeerAlert => "peer_alert",
            Refusal::Protocol => "protocol",
            Refusal::Deadline => "deadline",
            Refusal::Evicted => "evicted",
            Refusal::Closed => "closed",
        }
    }

    /// What a person reading the log should understand.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::NotTls => "not TLS (plain bytes to a TLS port)",
            Refusal::NoClientCertificate => "no client certificate (--tls-client-ca)",
            Refusal::UnknownCa => "client certificate not from --tls-client-ca",
            Refusal::Expired => "client certificate expired or not yet valid",
            Refusal::BadCertificate => "client certificate refused",
            Refusal::PeerAlert => "the peer refused the handshake (alert)",
            Refusal::Protocol => "TLS protocol error or nothing in common",
            Refusal::Deadline => "handshake not finished in time",
            Refusal::Evicted => "too many handshakes in flight: oldest closed",
            Refusal::Closed => "closed during the handshake",
        }
    }

    /// The reason a rustls error gives.
    pub fn of(error: &Error) -> Refusal {
        match error {
            Error::NoCertificatesPresented => Refusal::NoClientCertificate,
            Error::InvalidCertificate(e) => match e {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Refusal::UnknownCa
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Refusal::Expired,
                _ => Refusal::BadCertificate,
            },
            Error::AlertReceived(_) => Refusal::PeerAlert,
            _ => Refusal::Protocol,
        }
    }
}

/// What [`TlsSession::receive`] found, besides the plaintext it passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// The peer sent close_notify: no more plaintext will come (as an end of stream).
    pub peer_closed: bool,
}

/// A server peer's TLS session. Box it: the rustls state is a few hundred bytes, and a
/// connection record must stay small for the peers that do not speak TLS.
pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Ciphertext of a record not yet complete: empty (no heap) between records.
    incoming: Vec<u8>,
    /// Ciphertext made and not yet taken by the kernel: empty (no heap) once it has been.
    outgoing: Vec<u8>,
    /// Something has been received (the first byte is checked to be a handshake record).
    started: bool,
}

impl TlsSession {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<TlsSession, Error> {
        Ok(TlsSession {
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            started: false,
        })
    }

    /// The handshake is over: plaintext can be sealed and received.
    pub fn is_established(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// The handshake resumed a session (a ticket we gave, TLS 1.3 PSK) rather than a full one.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The peer's certificate chain (mutual TLS), leaf first.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Takes `fresh` ciphertext just read (decrypted in place, so it is `mut`), passing each
    /// record's plaintext to `on_plaintext`; handshake messages to send go to
    /// [`outgoing`](Self::outgoing). A partial record is kept for the next call. On `Err`
    /// the session is over; any alert telling the peer why is in `outgoing`.
    pub fn receive(
        &mut self,
        fresh: &mut [u8],
        mut on_plaintext: impl FnMut(&[u8]),
    ) -> Result<Received, Refusal> {
        if !self.started && !fresh.is_empty() {
            self.started = true;
            if fresh[0] != HANDSHAKE_RECORD {
                return Err(Refusal::NotTls);
            }
        }
        if self.incoming.is_empty() {
            let (result, used) =
                process(&mut self.conn, &mut self.outgoing, fresh, &mut on_plaintext);
            self.incoming.extend_from_slice(&fresh[used..]);
            return result;
        }
        self.incoming.extend_from_slice(fresh);
        let mut incoming = std::mem::take(&mut self.incoming);
        let (result, used) = process(
            &mut self.conn,
            &mut self.outgoing,
            &mut incoming,
            &mut on_plaintext,
        );
        incoming.drain(..used);
        if !incoming.is_empty() {
            self.incoming = incoming;
        }
        result
    }

    /// Encrypts `plaintext` into `out`, which must hold
    /// [`sealed_len`]`(plaintext.len())` bytes; returns how many it wrote. `None` if the
    /// session cannot send (not established, or closed).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Option<usize> {
        self.seal_with(|writer, out| writer.encrypt(plaintext, out), out)
    }

    /// Queues close_notify in [`outgoing`](Self::outgoing) (once; nothing if the session
    /// cannot send any more).
    pub fn close_notify(&mut self) {
        let mut buf = [0u8; 64];
        let n = self.seal_with(|writer, out| writer.queue_close_notify(out), &mut buf);
        if let Some(n) = n {
            self.outgoing.extend_from_slice(&buf[..n]);
        }
    }

    /// Runs `what` once the session may send: handshake records still due (a session
    /// ticket) go to `outgoing` first, so that they precede what `what` writes to `out`.
    /// The held partial record is passed too, never an empty buffer: rustls' handshake
    /// deframer may hold positions in it (a post-handshake message split across records).
    fn seal_with(
        &mut self,
        mut what: impl FnMut(
            &mut WriteTraffic<'_, ServerConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
        out: &mut [u8],
    ) -> Option<usize> {
        // Bounded: each pass takes one queued record, and rustls queues a handful at most.
        for _ in 0..16 {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let done = match status.state {
                Ok(ConnectionState::WriteTraffic(mut writer)) => Some(what(&mut writer, out).ok()),
                Ok(ConnectionState::EncodeTlsData(mut encoder)) => {
                    encode(&mut encoder, &mut self.outgoing);
                    None
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => None,
                _ => Some(None),
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            if let Some(done) = done {
                return done;
            }
        }
        None
    }

    /// Ciphertext waiting for the kernel (empty when none).
    pub fn outgoing(&self) -> &[u8] {
        &self.outgoing
    }

    /// The kernel took the first `n` bytes of [`outgoing`](Self::outgoing); memory is given
    /// back once none waits.
    pub fn sent(&mut self, n: usize) {
        self.outgoing.drain(..n.min(self.outgoing.len()));
        if self.outgoing.is_empty() {
            self.outgoing = Vec::new();
        }
    }

    /// Keeps `ciphertext` (after any already waiting) for a later write.
    pub fn hold(&mut self, ciphertext: &[u8]) {
        self.outgoing.extend_from_slice(ciphertext);
    }

    /// Heap bytes of the two buffers: 0 for an idle peer.
    pub fn buffered(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity()
    }
}

/// Ciphertext for `plaintext` of this many bytes, at most.
pub fn sealed_len(plaintext: usize) -> usize {
    plaintext + plaintext.div_ceil(MAX_FRAGMENT).max(1) * RECORD_OVERHEAD
}

/// Runs the session over `buf` until it needs more bytes; returns how many bytes at the
/// front of `buf` are done with (the rest is a partial record).
fn process(
    conn: &mut UnbufferedServerConnection,
    outgoing: &mut Vec<u8>,
    buf: &mut [u8],
    on_plaintext: &mut impl FnMut(&[u8]),
) -> (Result<Received, Refusal>, usize) {
    let mut done = 0;
    let mut received = Received::default();
    loop {
        let status = conn.process_tls_records(&mut buf[done..]);
        let mut discard = status.discard;
        match status.state {
            Ok(ConnectionState::ReadTraffic(mut reader)) => {
                while let Some(record) = reader.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            on_plaintext(record.payload);
                        }
                        Err(e) => {
                            done += discard;
                            flush_alerts(conn, outgoing, &mut buf[done..]);
                            return (Err(Refusal::of(&e)), done);
                        }
                    }
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut encoder)) => encode(&mut encoder, outgoing),
            // The bytes are in `outgoing`, which the loop writes after this call.
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            Ok(ConnectionState::PeerClosed) => received.peer_closed = true,
            Ok(ConnectionState::BlockedHandshake)
            | Ok(ConnectionState::WriteTraffic(_))
            | Ok(ConnectionState::Closed) => {
                return (Ok(received), done + discard);
            }
            // Early data is never accepted (rustls' default), so it never comes; anything
            // newer than this code is treated as an error rather than spun on.
            Ok(_) => return (Err(Refusal::Protocol), done + discard),
            Err(e) => {
                done += discard;
                flush_alerts(conn, outgoing, &mut buf[done..]);
                return (Err(Refusal::of(&e)), done);
            }
        }
        done += discard;
    }
}

/// After an error, rustls may have an alert queued that tells the peer why (an unknown CA,
/// no certificate): it goes out before the connection closes. `rest` is what is left of
/// the buffer (see [`TlsSession::seal_with`] for why never an empty one).
fn flush_alerts(conn: &mut UnbufferedServerConnection, outgoing: &mut Vec<u8>, rest: &mut [u8]) {
    // Bounded: each pass takes one queued record, and rustls queues a handful at most.
    for _ in 0..8 {
        match conn.process_tls_records(rest).state {
            Ok(ConnectionState::EncodeTlsData(mut encoder)) => encode(&mut encoder, outgoing),
            Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
            _ => return,
        }
    }
}

/// Appends a handshake record to `outgoing`, growing it by exactly the record's size.
fn encode(encoder: &mut EncodeTlsData<'_, ServerConnectionData>, outgoing: &mut Vec<u8>) {
    let start = outgoing.len();
    let need = match encoder.encode(&mut []) {
        Ok(_) => 0,
        Err(EncodeError::InsufficientSize(size)) => size.required_size,
        Err(_) => return,
    };
    outgoing.resize(start + need, 0);
    match encoder.encode(&mut outgoing[start..]) {
        Ok(n) => outgoing.truncate(start + n),
        Err(_) => outgoing.truncate(start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn leaf(
        issuer: &CertifiedIssuer<'static, KeyPair>,
        name: &str,
        expired: bool,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    fn roots(issuer: &CertifiedIssuer<'static, KeyPair>) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(issuer.der().clone()).unwrap();
        Arc::new(roots)
    }

    /// A server config from `ca`'s "localhost", requiring client certificates from
    /// `client_ca` when given.
    fn server(
        ca: &CertifiedIssuer<'static, KeyPair>,
        client_ca: Option<&CertifiedIssuer<'static, KeyPair>>,
    ) -> Arc<ServerConfig> {
        let (chain, key) = leaf(ca, "localhost", false);
        crate::edge::tls::server_config_from(chain, key, client_ca.map(roots)).unwrap()
    }

    fn client(
        ca: &CertifiedIssuer<'static, KeyPair>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> ClientConnection {
        let builder = ClientConfig::builder_with_provider(crate::edge::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(ca));
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        };
        let name = ServerName::try_from("localhost").unwrap();
        ClientConnection::new(Arc::new(config), name).unwrap()
    }

    /// Moves bytes both ways until neither side has any; returns the plaintext the server
    /// received, or why it refused.
    fn pump(client: &mut ClientConnection, session: &mut TlsSession) -> Result<Vec<u8>, Refusal> {
        let mut plaintext = Vec::new();
        for _ in 0..100 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let reply = session.outgoing().to_vec();
            session.sent(reply.len());
            if wire.is_empty() && reply.is_empty() {
                return Ok(plaintext);
            }
            if !reply.is_empty() {
                let mut reader = &reply[..];
                while !reader.is_empty() {
                    client.read_tls(&mut reader).unwrap();
                }
                // A client refusing the server is the server's business only as an alert.
                let _ = client.process_new_packets();
            }
            // Fed a byte at a time now and then, so that split records are exercised.
            for chunk in wire.chunks(if wire.len() % 3 == 0 {
                1
            } else {
                wire.len().max(1)
            }) {
                let mut chunk = chunk.to_vec();
                session.receive(&mut chunk, |p| plaintext.extend_from_slice(p))?;
            }
        }
        panic!("no quiescence")
    }

    #[test]
    fn a_rustls_client_handshakes_and_lines_go_both_ways() {
        let ca = ca("test CA");
        let mut session = TlsSession::new(server(&ca, None)).unwrap();
        let mut client = client(&ca, None);
        assert!(pump(&mut client, &mut session).unwrap().is_empty());
        assert!(session.is_established());
        assert!(!client.is_handshaking());
        use std::io::{Read, Write};
        client.writer().write_all(b"Hello, there\n").unwrap();
        assert_eq!(pump(&mut client, &mut session).unwrap(), b"Hello, there\n");
        let mut out = vec![0; sealed_len(32)];
        let n = session.seal(b"Echoing...Hello, there\n", &mut out).unwrap();
        session.hold(&out[..n]);
        pump(&mut client, &mut session).unwrap();
        let mut got = [0u8; 64];
        let n = client.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"Echoing...Hello, there\n");
        assert_eq!(session.buffered(), 0, "an idle session holds no buffer");
        session.close_notify();
        pump(&mut client, &mut session).unwrap();
        assert_eq!(
            client.reader().read(&mut got).unwrap(),
            0,
            "close_notify seen"
        );
    }

    #[test]
    fn the_peer_closing_is_reported() {
        let ca = ca("test CA");
        let mut session = TlsSession::new(server(&ca, None)).unwrap();
        let mut client = client(&ca, None);
        pump(&mut client, &mut session).unwrap();
        client.send_close_notify();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        let received = session.receive(&mut wire, |_| {}).unwrap();
        assert!(received.peer_closed);
    }

    #[test]
    fn plain_bytes_are_not_tls() {
        let ca = ca("test CA");
        let mut session = TlsSession::new(server(&ca, None)).unwrap();
        let mut line = b"Hello, there\n".to_vec();
        assert_eq!(session.receive(&mut line, |_| {}), Err(Refusal::NotTls));
    }

    #[test]
    fn mutual_tls_refuses_no_certificate_another_ca_and_expired_and_serves_ours() {
        let ca = ca("server CA");
        let clients = self::ca("client CA");
        let other = self::ca("another CA");
        let cases = [
            (None, Err(Refusal::NoClientCertificate)),
            (
                Some(leaf(&other, "intruder", false)),
                Err(Refusal::UnknownCa),
            ),
            (Some(leaf(&clients, "old", true)), Err(Refusal::Expired)),
            (Some(leaf(&clients, "device-7", false)), Ok(())),
        ];
        for (identity, expected) in cases {
            let mut session = TlsSession::new(server(&ca, Some(&clients))).unwrap();
            let mut client = client(&ca, identity);
            let result = pump(&mut client, &mut session).map(|_| ());
            assert_eq!(result, expected);
            if result.is_ok() {
                let der = &session.peer_certificates().unwrap()[0];
                let subject = crate::cores::subject::subject(der);
                assert_eq!(subject.as_deref(), Some("CN=device-7"));
            } else {
                assert!(
                    !session.outgoing().is_empty(),
                    "an alert tells the peer why"
                );
            }
        }
    }
}
