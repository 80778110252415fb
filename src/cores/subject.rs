//! A certificate's subject as a short string (`CN=device-7, O=Acme`) for logs and events,
//! read from its DER. Pure; a malformed certificate gives `None`, never a panic.
//!
//! Written by hand, and why: the only fact wanted is the subject's attributes, which is a
//! walk over four nested DER lengths. rustls verifies certificates with `webpki` but names
//! nothing, and `x509-parser` (with `nom`, `asn1-rs`, `der-parser`) would be a whole parser
//! compiled in for one string. The values are peers' bytes: shown escaped, and capped.

use std::fmt::Write;

use crate::cores::escape::Escaped;

/// Longest subject string kept (a certificate may carry long or many attributes).
pub const MAX_SUBJECT: usize = 256;

/// One DER element: its tag and contents, and what follows it.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7f);
            let bytes = rest.get(..count)?;
            let len = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
            (len, &rest[count..])
        }
        _ => return None,
    };
    let contents = rest.get(..len)?;
    Some((tag, contents, &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// The subject of the DER certificate `cert`, e.g. `CN=device-7, O=Acme`.
pub fn subject(cert: &[u8]) -> Option<String> {
    let (SEQUENCE, certificate, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, after) = element(rest)?;
    if tag == VERSION {
        rest = after;
    }
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, name, _) = element(rest)? else {
        return None;
    };
    Some(format_name(name))
}

fn format_name(mut name: &[u8]) -> String {
    let mut out = String::new();
    while let Some((SET, mut set, after)) = element(name) {
        name = after;
        while let Some((SEQUENCE, pair, after)) = element(set) {
            set = after;
            let Some((OID, oid, value)) = element(pair) else {
                continue;
            };
            let Some((_, value, _)) = element(value) else {
                continue;
            };
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = match short_name(oid) {
                Some(short) => write!(out, "{short}={}", Escaped(value)),
                None => write!(out, "{}={}", Dotted(oid), Escaped(value)),
            };
            if out.len() > MAX_SUBJECT {
                let mut end = MAX_SUBJECT;
                while !out.is_char_boundary(end) {
                    end -= 1;
                }
                out.truncate(end);
                out.push('…');
                return out;
            }
        }
    }
    out
}

/// The attributes a subject usually has (RFC 4514's short names).
fn short_name(oid: &[u8]) -> Option<&'static str> {
    match oid {
        [0x55, 0x04, 0x03] => Some("CN"),
        [0x55, 0x04, 0x06] => Some("C"),
        [0x55, 0x04, 0x07] => Some("L"),
        [0x55, 0x04, 0x08] => Some("ST"),
        [0x55, 0x04, 0x0a] => Some("O"),
        [0x55, 0x04, 0x0b] => Some("OU"),
        [0x55, 0x04, 0x05] => Some("serialNumber"),
        _ => None,
    }
}

/// An OID in dotted form.
struct Dotted<'a>(&'a [u8]);

impl std::fmt::Display for Dotted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some((&first, rest)) = self.0.split_first() else {
            return f.write_str("?");
        };
        write!(f, "{}.{}", first / 40, first % 40)?;
        let mut arc: u64 = 0;
        for &b in rest {
            arc = arc.saturating_mul(128) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                write!(f, ".{arc}")?;
                arc = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificates_subject_is_named() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject(cert.der()).as_deref(), Some("CN=device-7, O=Acme"));
    }

    #[test]
    fn malformed_input_is_none_never_a_panic() {
        assert_eq!(subject(b""), None);
        assert_eq!(subject(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(subject(&[0x30, 0x03, 0x30, 0x01]), None);
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "\u{1b}[2Jx");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        for cut in 0..der.len() {
            let _ = subject(&der[..cut]);
        }
        let named = subject(&der).unwrap_or_default();
        assert!(named.contains("CN=\\x1b[2Jx"), "{named}");
    }
}
