//! `--allow`: which source addresses may connect, as a list of CIDR blocks.
//!
//! Owns parsing and matching; the server decides what to do with a peer that does not match.
//!
//! One rule for IPv4-mapped addresses: an IPv4 peer is matched as IPv4, also when a dual-stack
//! (`::`) listener sees it as `::ffff:a.b.c.d` ([`IpAddr::to_canonical`]), and a mapped block
//! (`::ffff:10.0.0.0/104`) is the IPv4 block it maps. So `::/0` admits every IPv6 peer but no
//! IPv4 one; `0.0.0.0/0,::/0` (or no `--allow`) admits everyone.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One block of addresses, such as `127.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows up as `::ffff:a.b.c.d`: match it as IPv4.
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_match(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: u128, ip: u128, prefix: u8, bits: u32) -> bool {
    let host_bits = bits - u32::from(prefix);
    if host_bits >= bits {
        return true;
    }
    (net >> host_bits) == (ip >> host_bits)
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX`, or a bare address meaning just that address.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!("{text:?} is not an address block (examples: 127.0.0.0/8, 10.1.2.3, ::1/128)")
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        // An IPv4-mapped block (`::ffff:10.0.0.0/104`) is the IPv4 block it maps, the way
        // peers are matched (see the module notes).
        if let IpAddr::V6(v6) = network {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Ok(Cidr {
                    network: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Blocks allowed to connect; an empty list allows every address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<Cidr>);

impl AllowList {
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|cidr| cidr.contains(ip))
    }
}

impl FromStr for AllowList {
    type Err = String;

    /// A comma-separated list of blocks. An empty or blank list, or an empty entry, is an
    /// error, not "everyone": `--allow "$LIST"` with the variable unset must fail closed.
    fn from_str(text: &str) -> Result<AllowList, String> {
        if text.trim().is_empty() {
            return Err(format!(
                "{text:?} is an empty list: name at least one address block \
                 (leave the setting out to let everyone in)"
            ));
        }
        text.split(',')
            .map(|part| match part.trim().is_empty() {
                true => Err(format!(
                    "{text:?} has an empty entry: every comma must separate two address blocks"
                )),
                false => part.parse(),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21, one rule for mapped addresses: an IPv4 peer seen on a `::` listener is
    /// matched as IPv4, so `::/0` does not admit it while `0.0.0.0/0` and `::ffff:0:0/96` do.
    #[test]
    fn a_mapped_ipv4_peer_is_matched_as_ipv4_and_all_of_ipv6_is_not_all() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let list = |text: &str| text.parse::<AllowList>().unwrap();
        let six = list("::/0");
        assert!(six.allows(ip("::1")) && six.allows(ip("2001:db8::1")));
        assert!(!six.allows(ip("::ffff:10.0.0.1")), "mapped IPv4 is IPv4");
        assert!(!six.allows(ip("10.0.0.1")));
        for all_v4 in ["0.0.0.0/0", "::ffff:0:0/96"] {
            assert!(list(all_v4).allows(ip("::ffff:10.0.0.1")), "{all_v4}");
            assert!(!list(all_v4).allows(ip("::1")), "{all_v4}");
        }
        let both = list("0.0.0.0/0,::/0");
        assert!(both.allows(ip("::ffff:10.0.0.1")) && both.allows(ip("::1")));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_match_at_their_edges() {
        let lan: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(lan.contains(ip("10.1.0.0")));
        assert!(lan.contains(ip("10.1.255.255")));
        assert!(!lan.contains(ip("10.2.0.0")));
        assert!(!lan.contains(ip("10.0.255.255")));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert!(one.contains(ip("127.0.0.2")));
        assert!(!one.contains(ip("127.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("::1")), "an IPv4 block never matches IPv6");
    }

    #[test]
    fn ipv6_blocks_and_mapped_ipv4_peers() {
        let loopback: Cidr = "::1/128".parse().unwrap();
        assert!(loopback.contains(ip("::1")));
        assert!(!loopback.contains(ip("::2")));
        let v4: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(v4.contains(ip("::ffff:127.0.0.5")));
        let mapped: Cidr = "::ffff:127.0.0.0/104".parse().unwrap();
        assert!(mapped.contains(ip("127.0.0.5")));
        assert!(mapped.contains(ip("::ffff:127.0.0.5")));
        assert!(!mapped.contains(ip("10.0.0.1")));
    }

    #[test]
    fn lists_parse_and_empty_allows_all() {
        let list: AllowList = "127.0.0.0/8, ::1".parse().unwrap();
        assert!(list.allows(ip("127.9.9.9")));
        assert!(list.allows(ip("::1")));
        assert!(!list.allows(ip("192.0.2.1")));
        assert!(AllowList::default().allows(ip("192.0.2.1")));
    }

    #[test]
    fn empty_and_blank_lists_fail_closed() {
        for bad in ["", " ", ",", " , ", "127.0.0.1,", ",::1", "10.0.0.0/8,,::1"] {
            let error = bad.parse::<AllowList>().unwrap_err();
            assert!(error.starts_with(&format!("{bad:?}")), "{error}");
        }
        assert!("".parse::<AllowList>().unwrap_err().contains("empty list"));
        assert!(","
            .parse::<AllowList>()
            .unwrap_err()
            .contains("empty entry"));
    }

    #[test]
    fn bad_blocks_are_rejected_with_the_text() {
        for bad in ["10.0.0.0/33", "::1/129", "localhost", "10.0.0.0/x", "/8"] {
            let error = bad.parse::<Cidr>().unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
    }
}
