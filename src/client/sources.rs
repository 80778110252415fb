//! Which local addresses the load client connects from.
//!
//! One source address can reach one server address from at most as many ports as the
//! ephemeral range holds (32768–60999 here: 28,232). Long before that the kernel's search for
//! a free port at `connect()` slows down: it probes from a random offset and prefers half of
//! the range, so each probe is more likely to hit a used port as ports fill (measured in
//! issue 10: 100–350 µs per connect with ~19,000 connections on 127.0.0.1, 78% of the
//! client's time). Against a loopback server any 127.x.y.z is local, so above
//! [`SPREAD_ABOVE`] connections the client spreads them over 127.0.0.1, 127.0.0.2, ... with
//! at most [`PER_SOURCE`] on each: under a fifth of the range, where a free port is found in
//! about one probe. `--bind` chooses by hand and is kept as given; elsewhere the client only
//! warns when the ports cannot suffice.
//!
//! Owns that decision (pure: [`plan`]) and reading the port range (`/proc`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Above this many connections to a loopback server, spread them over several addresses.
pub const SPREAD_ABOVE: usize = 10_000;
/// At most this many connections per source address when spreading.
pub const PER_SOURCE: usize = 5_000;
/// The ephemeral range of a default Linux (32768–60999), if `/proc` cannot be read.
pub const DEFAULT_PORTS: usize = 28_232;

/// The source addresses to use, and a sentence for stderr when the choice is worth saying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePlan {
    pub bind: Vec<SocketAddr>,
    pub notice: Option<String>,
}

/// Chooses the source addresses for `connections` to `server`. `bind` is what the user or
/// the configuration file gave; `by_hand` is true when it came from `--bind`. `ports` is the
/// number of ephemeral ports one source address has.
pub fn plan(
    server: SocketAddr,
    connections: usize,
    bind: &[SocketAddr],
    by_hand: bool,
    ports: usize,
) -> SourcePlan {
    let keep = |notice| SourcePlan {
        bind: bind.to_vec(),
        notice,
    };
    // The file's `client.host` is the original's "any port on this address", not a choice
    // made for a load test: spreading from it is still the right default.
    let from_file_default = !by_hand
        && matches!(bind, [one] if one.port() == 0 && one.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST));
    let loopback_v4 = matches!(server.ip(), IpAddr::V4(ip) if ip.is_loopback());
    if loopback_v4 && connections > SPREAD_ABOVE && (bind.is_empty() || from_file_default) {
        let count = connections.div_ceil(PER_SOURCE).min(254);
        let bind: Vec<SocketAddr> = (1..=count as u8)
            .map(|host| SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
            .collect();
        let notice = format!(
            "client: spreading {connections} connections over {count} source addresses \
             127.0.0.1-127.0.0.{count} (at most {PER_SOURCE} each, so the kernel finds free \
             ports fast); --bind chooses them by hand"
        );
        return SourcePlan {
            bind,
            notice: Some(notice),
        };
    }
    let mut addresses: Vec<IpAddr> = bind.iter().map(SocketAddr::ip).collect();
    addresses.sort();
    addresses.dedup();
    let sources = addresses.len().max(1);
    let fixed_ports = !bind.is_empty() && bind.iter().all(|a| a.port() != 0);
    let capacity = if fixed_ports {
        bind.len()
    } else {
        sources * ports
    };
    if connections > capacity {
        return keep(Some(format!(
            "client: warning: {connections} connections to {server} from {sources} source \
             address(es) need more than the {capacity} ports available; the rest will fail \
             with \"address not available\" (add addresses with --bind)"
        )));
    }
    keep(None)
}

/// Ephemeral ports one source address has, from `/proc/sys/net/ipv4/ip_local_port_range`.
pub fn local_port_count() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut numbers = text.split_whitespace().map(str::parse::<usize>);
            match (numbers.next(), numbers.next()) {
                (Some(Ok(low)), Some(Ok(high))) if high >= low => Some(high - low + 1),
                _ => None,
            }
        })
        .unwrap_or(DEFAULT_PORTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    const LOCAL: &str = "127.0.0.1:8000";

    #[test]
    fn few_connections_keep_what_was_given() {
        let given = [addr("127.0.0.1:0")];
        let p = plan(addr(LOCAL), SPREAD_ABOVE, &given, false, DEFAULT_PORTS);
        assert_eq!((p.bind, p.notice), (given.to_vec(), None));
        let p = plan(addr(LOCAL), 100, &[], false, DEFAULT_PORTS);
        assert_eq!((p.bind, p.notice), (vec![], None));
    }

    #[test]
    fn many_connections_to_loopback_are_spread_and_it_is_said() {
        for given in [vec![], vec![addr("127.0.0.1:0")]] {
            let p = plan(addr(LOCAL), 19_000, &given, false, DEFAULT_PORTS);
            let expected: Vec<SocketAddr> = (1..=4)
                .map(|h| SocketAddr::from(([127, 0, 0, h], 0)))
                .collect();
            assert_eq!(p.bind, expected);
            let notice = p.notice.expect("said once");
            assert!(
                notice.contains("19000 connections over 4 source addresses"),
                "{notice}"
            );
            assert!(notice.contains("--bind"), "{notice}");
        }
        let p = plan(addr(LOCAL), 10_001, &[], false, DEFAULT_PORTS);
        assert_eq!(p.bind.len(), 3);
    }

    #[test]
    fn bind_by_hand_is_kept_and_warned_about_only_past_its_ports() {
        let given = [addr("127.0.0.1:0")];
        let p = plan(addr(LOCAL), 19_000, &given, true, DEFAULT_PORTS);
        assert_eq!((p.bind, p.notice), (given.to_vec(), None));
        let p = plan(addr(LOCAL), 30_000, &given, true, DEFAULT_PORTS);
        assert_eq!(p.bind, given.to_vec());
        assert!(p
            .notice
            .expect("warned")
            .contains("more than the 28232 ports"));
        let two = [addr("127.0.0.1:0"), addr("127.0.0.2:0")];
        assert_eq!(
            plan(addr(LOCAL), 30_000, &two, true, DEFAULT_PORTS).notice,
            None
        );
    }

    #[test]
    fn elsewhere_only_a_warning_past_the_ports_of_one_address() {
        let remote = addr("192.0.2.10:8000");
        assert_eq!(plan(remote, 28_232, &[], false, DEFAULT_PORTS).notice, None);
        let p = plan(remote, 28_233, &[], false, DEFAULT_PORTS);
        assert!(p.bind.is_empty());
        assert!(p
            .notice
            .expect("warned")
            .contains("28233 connections to 192.0.2.10:8000"));
        let v6 = plan(addr("[::1]:8000"), 30_000, &[], false, DEFAULT_PORTS);
        assert!(
            v6.bind.is_empty() && v6.notice.is_some(),
            "::1 has no siblings to spread to"
        );
    }

    #[test]
    fn the_port_range_is_read_or_defaulted() {
        let n = local_port_count();
        assert!((1..=65_536).contains(&n), "{n}");
    }
}
