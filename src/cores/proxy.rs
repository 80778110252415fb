//! The PROXY protocol, version 2 (binary), as HAProxy's `send-proxy-v2`, Envoy and AWS NLB
//! send it: a header in front of a connection's first bytes that says who the real client
//! is when a layer-4 balancer accepted the connection in its place (`--proxy-protocol`).
//!
//! Owns parsing and encoding that header; touches no socket (the server's shell reads the
//! bytes, `server::proxied`). The header, from the specification
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>, section 2.2):
//!
//! | bytes  | field                                                                  |
//! |--------|------------------------------------------------------------------------|
//! | 0–11   | signature `\r\n\r\n\0\r\nQUIT\n`                                        |
//! | 12     | version (high nibble, 2) and command (low: 0 LOCAL, 1 PROXY)           |
//! | 13     | family (high: 0 unspecified, 1 IPv4, 2 IPv6, 3 Unix) and transport      |
//! | 14–15  | length of what follows, big-endian                                     |
//! | 16–    | source and destination addresses, then ports (IPv4 12 bytes, IPv6 36, Unix 216), then TLVs (skipped) |
//!
//! LOCAL (the balancer's own health check) and PROXY with an unspecified or Unix family carry
//! no IP client: the connection's own address stands. Version 1 (text, `PROXY TCP4 ...`) is
//! recognised only to be refused with a message that says so.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part: signature, version and command, family and transport, length.
pub const FIXED: usize = 16;
/// The longest header accepted (fixed part, addresses and TLVs). Balancers send a few dozen
/// bytes of TLVs at most (AWS NLB's endpoint id, HAProxy's unique id); a larger header is
/// refused, so a peer cannot make the server hold 64 KiB before it has said anything.
pub const MAX_HEADER: usize = FIXED + 1024;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The real client (`source`) and the address it reached on the balancer.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer speaks for itself (a health check): the connection's own address stands.
    Local,
    /// PROXY with no IP address (unspecified or Unix family): the connection's own stands.
    Unknown,
}

impl Header {
    /// The client address to use in place of the connection's, if the header gives one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Header::Proxied { source, .. } => Some(*source),
            Header::Local | Header::Unknown => None,
        }
    }
}

/// How far [`parse`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Valid so far; the header is `need` bytes long at least: read up to that many.
    Incomplete { need: usize },
    /// The header is the first `len` bytes; what follows is the connection's own data.
    Complete { header: Header, len: usize },
}

/// Why the bytes are not a header this server accepts. Each says what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The first bytes are not the version 2 signature.
    NotProxy,
    /// A version 1 (text) header.
    TextVersion,
    Version(u8),
    Command(u8),
    Family(u8),
    Transport(u8),
    /// The length is too short for the addresses of its family.
    TooShort {
        length: usize,
        family: &'static str,
    },
    /// The header is longer than [`MAX_HEADER`].
    TooLong(usize),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("no PROXY protocol v2 signature"),
            ProxyError::TextVersion => {
                f.write_str("a PROXY protocol v1 (text) header; only v2 is accepted")
            }
            ProxyError::Version(v) => write!(f, "PROXY protocol version {v}, not 2"),
            ProxyError::Command(c) => write!(f, "unknown PROXY command {c:#x}"),
            ProxyError::Family(a) => write!(f, "unknown address family {a:#x}"),
            ProxyError::Transport(t) => write!(f, "unknown transport {t:#x}"),
            ProxyError::TooShort { length, family } => {
                write!(f, "{length} bytes cannot hold {family} addresses")
            }
            ProxyError::TooLong(n) => write!(f, "a {n}-byte header (at most {MAX_HEADER})"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses the start of a connection's bytes. Fails as soon as the bytes so far cannot begin
/// a valid header, so a peer that sends something else is told at once, not at a deadline.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ProxyError> {
    let seen = bytes.len().min(SIGNATURE.len());
    if bytes[..seen] != SIGNATURE[..seen] {
        return Err(
            match bytes.starts_with(b"PROXY") || b"PROXY".starts_with(bytes) {
                true => ProxyError::TextVersion,
                false => ProxyError::NotProxy,
            },
        );
    }
    if let Some(&version_command) = bytes.get(12) {
        match (version_command >> 4, version_command & 0xf) {
            (2, 0 | 1) => {}
            (2, command) => return Err(ProxyError::Command(command)),
            (version, _) => return Err(ProxyError::Version(version)),
        }
    }
    if let Some(&family_transport) = bytes.get(13) {
        if family_transport >> 4 > 3 {
            return Err(ProxyError::Family(family_transport >> 4));
        }
        if family_transport & 0xf > 2 {
            return Err(ProxyError::Transport(family_transport & 0xf));
        }
    }
    let Some(fixed) = bytes.get(..FIXED) else {
        return Ok(Parsed::Incomplete { need: FIXED });
    };
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let len = FIXED + length;
    if len > MAX_HEADER {
        return Err(ProxyError::TooLong(len));
    }
    let Some(body) = bytes.get(FIXED..len) else {
        return Ok(Parsed::Incomplete { need: len });
    };
    let header = match (fixed[12] & 0xf, fixed[13] >> 4) {
        (0, _) => Header::Local,
        (_, 1) => addresses_v4(body)?,
        (_, 2) => addresses_v6(body)?,
        (_, 3) if body.len() < 216 => {
            return Err(ProxyError::TooShort {
                length,
                family: "Unix",
            })
        }
        _ => Header::Unknown,
    };
    Ok(Parsed::Complete { header, len })
}

fn addresses_v4(body: &[u8]) -> Result<Header, ProxyError> {
    let Some(b) = body.get(..12) else {
        return Err(ProxyError::TooShort {
            length: body.len(),
            family: "IPv4",
        });
    };
    let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]));
    let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    Ok(Header::Proxied {
        source: SocketAddr::new(ip(0), port(8)),
        destination: SocketAddr::new(ip(4), port(10)),
    })
}

fn addresses_v6(body: &[u8]) -> Result<Header, ProxyError> {
    let Some(b) = body.get(..36) else {
        return Err(ProxyError::TooShort {
            length: body.len(),
            family: "IPv6",
        });
    };
    let ip = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&b[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    Ok(Header::Proxied {
        source: SocketAddr::new(ip(0), port(32)),
        destination: SocketAddr::new(ip(16), port(34)),
    })
}

/// The header a balancer would send for `header` over TCP, with no TLVs. (A source and
/// destination of different families are sent as IPv6, the IPv4 one mapped.)
pub fn encode(header: &Header) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    let (command, family, body) = match *header {
        Header::Local => (0x20, 0x00, Vec::new()),
        Header::Unknown => (0x21, 0x00, Vec::new()),
        Header::Proxied {
            source,
            destination,
        } => match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                let mut body = s.ip().octets().to_vec();
                body.extend(d.ip().octets());
                body.extend(s.port().to_be_bytes());
                body.extend(d.port().to_be_bytes());
                (0x21, 0x11, body)
            }
            (s, d) => {
                let v6 = |a: SocketAddr| match a.ip() {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                let mut body = v6(s).octets().to_vec();
                body.extend(v6(d).octets());
                body.extend(s.port().to_be_bytes());
                body.extend(d.port().to_be_bytes());
                (0x21, 0x21, body)
            }
        },
    };
    out.push(command);
    out.push(family);
    out.extend((body.len() as u16).to_be_bytes());
    out.extend(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_ipv4_header_from_the_specification_parses_byte_by_byte() {
        let header = Header::Proxied {
            source: addr("192.0.2.7:51000"),
            destination: addr("198.51.100.1:8000"),
        };
        let mut bytes = encode(&header);
        assert_eq!(bytes.len(), 28);
        assert_eq!(&bytes[12..16], &[0x21, 0x11, 0, 12]);
        bytes.extend(b"Hello\n");
        for cut in 0..16 {
            assert_eq!(
                parse(&bytes[..cut]),
                Ok(Parsed::Incomplete { need: 16 }),
                "{cut}"
            );
        }
        for cut in 16..28 {
            assert_eq!(
                parse(&bytes[..cut]),
                Ok(Parsed::Incomplete { need: 28 }),
                "{cut}"
            );
        }
        let complete = Ok(Parsed::Complete { header, len: 28 });
        assert_eq!(parse(&bytes[..28]), complete);
        assert_eq!(
            parse(&bytes),
            complete,
            "the data after it is not the header's"
        );
        assert_eq!(header.source(), Some(addr("192.0.2.7:51000")));
    }

    #[test]
    fn ipv6_local_and_unknown_headers_round_trip() {
        for header in [
            Header::Proxied {
                source: addr("[2001:db8::7]:443"),
                destination: addr("[2001:db8::1]:8000"),
            },
            Header::Local,
            Header::Unknown,
        ] {
            let bytes = encode(&header);
            let len = bytes.len();
            assert_eq!(parse(&bytes), Ok(Parsed::Complete { header, len }));
        }
        assert_eq!(Header::Local.source(), None);
    }

    #[test]
    fn tlvs_after_the_addresses_are_skipped() {
        let mut bytes = encode(&Header::Proxied {
            source: addr("10.0.0.1:1"),
            destination: addr("10.0.0.2:2"),
        });
        // PP2_TYPE_UNIQUE_ID, 3 bytes.
        bytes.extend([0x05, 0, 3, b'a', b'b', b'c']);
        bytes[15] += 6;
        let Ok(Parsed::Complete { header, len }) = parse(&bytes) else {
            panic!("{:?}", parse(&bytes))
        };
        assert_eq!((header.source(), len), (Some(addr("10.0.0.1:1")), 34));
    }

    #[test]
    fn anything_else_is_refused_as_soon_as_it_shows() {
        assert_eq!(parse(b"Hello"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\r\n\r\nX"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROX"), Err(ProxyError::TextVersion));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(ProxyError::TextVersion)
        );
        let good = encode(&Header::Local);
        let with = |at: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[at] = byte;
            parse(&bytes)
        };
        assert_eq!(with(12, 0x10), Err(ProxyError::Version(1)));
        assert_eq!(with(12, 0x22), Err(ProxyError::Command(2)));
        assert_eq!(with(13, 0x41), Err(ProxyError::Family(4)));
        assert_eq!(with(13, 0x13), Err(ProxyError::Transport(3)));
        // IPv4 with room for IPv6's addresses only.
        let mut short = good.clone();
        short[12] = 0x21;
        short[13] = 0x21;
        short[15] = 12;
        short.extend([0; 12]);
        assert_eq!(
            parse(&short),
            Err(ProxyError::TooShort {
                length: 12,
                family: "IPv6"
            })
        );
        let mut long = good;
        long[14] = 0xff;
        assert_eq!(parse(&long), Err(ProxyError::TooLong(16 + 0xff00)));
        assert!(ProxyError::TextVersion.to_string().contains("only v2"));
    }
}
