//! Property tests for the PROXY protocol v2 parser, with the same checks as the fuzz target
//! `fuzz/fuzz_targets/proxy.rs` (its `src/lib.rs` is included below): random bytes never
//! panic and get consistent answers, and every header a balancer could send parses back to
//! what was encoded, however its bytes are cut.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_checks;

use std::net::{IpAddr, SocketAddr};

use fuzz_checks::check_proxy;
use heartbeat::cores::proxy::{self, Header, Parsed};
use proptest::prelude::*;

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        Just(Header::Local),
        Just(Header::Unknown),
        (socket_addr(), socket_addr()).prop_map(|(source, destination)| Header::Proxied {
            source,
            destination
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes: no panic, consistent answers.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        check_proxy(&bytes);
    }

    /// Arbitrary bytes after a valid signature, where most of the parser's branches are.
    #[test]
    fn random_bytes_after_the_signature_never_panic(
        rest in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut bytes = proxy::SIGNATURE.to_vec();
        bytes.extend(rest);
        check_proxy(&bytes);
    }

    /// Every encoded header parses back, with the client's address as sent (an IPv4 source
    /// beside an IPv6 destination comes back IPv4-mapped), and the data after it untouched.
    #[test]
    fn encoded_headers_parse_back(header in header(), data in proptest::collection::vec(any::<u8>(), 0..20)) {
        let mut bytes = proxy::encode(&header);
        let len = bytes.len();
        bytes.extend(&data);
        check_proxy(&bytes);
        let Ok(Parsed::Complete { header: got, len: got_len }) = proxy::parse(&bytes) else {
            panic!("{:?}", proxy::parse(&bytes));
        };
        prop_assert_eq!(got_len, len);
        let same_family = match header {
            Header::Proxied { source, destination } => source.is_ipv4() == destination.is_ipv4(),
            _ => true,
        };
        if same_family {
            prop_assert_eq!(got, header);
        } else {
            let (Some(sent), Some(back)) = (header.source(), got.source()) else {
                panic!("{got:?}");
            };
            let mapped = match (sent.ip(), back.ip()) {
                (IpAddr::V4(v4), IpAddr::V6(v6)) => v6.to_ipv4_mapped() == Some(v4),
                (a, b) => a == b,
            };
            prop_assert!(mapped && sent.port() == back.port(), "{:?} {:?}", sent, back);
        }
    }
}
