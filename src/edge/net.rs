//! Socket setup at the edges of the loops: resolving addresses, listening with an explicit
//! backlog, connecting from a chosen source address, the open-file limit and the size of the
//! descriptor table.
//!
//! Owns [`SetupError`], the error type of everything that can fail before a loop runs. What
//! happens on a connection once it is open belongs to `conn` and the loops.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use socket2::{Domain, Protocol, Socket, Type};

/// Something that stopped a server or client from starting. Each message names what failed
/// and, where it helps, what to do about it; `source()` gives the I/O error underneath.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The host is neither an address nor a name that resolves.
    #[error("{host:?} is not an address this host can use: {message}")]
    Resolve { host: String, message: String },
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {}{}", describe(.source), listen_hint(.source))]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The poll instance, signal handler or waker could not be created.
    #[error("cannot create the {what}: {source}")]
    EventLoop {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The log file could not be opened.
    #[error("cannot open log file {}: {source}", .path.display())]
    LogFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The event log (`--events`) could not be opened.
    #[error("cannot open event log {}: {source}", .path.display())]
    EventLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// More connections were asked for than the open-file limit allows.
    #[error(
        "{wanted} connections need more files than the open-file limit ({limit}) allows: \
         at most {possible} can be opened; raise the limit (ulimit -n) or ask for fewer"
    )]
    TooFewFiles {
        wanted: u64,
        possible: u64,
        limit: u64,
    },
}

/// What to do about a listening error, where something can be done.
fn listen_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::AddrInUse => " (is another server running? pick another --port)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        io::ErrorKind::AddrNotAvailable => " (no interface of this host has that address)",
        _ => "",
    }
}

/// An I/O error as a person reads it: `address already in use`, not `Os { code: 98, .. }`.
pub fn describe(error: &io::Error) -> String {
    let text = error.to_string();
    // std appends " (os error N)"; the number helps nobody reading a log.
    match text.find(" (os error") {
        Some(at) => text[..at].to_ascii_lowercase(),
        None => text,
    }
}

/// Resolves `host:port`; a literal address never touches the resolver.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, SetupError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let error = |message: String| SetupError::Resolve {
        host: host.to_string(),
        message,
    };
    if !looks_like_host_name(host) {
        // Caught here so that a typo never turns into a DNS query.
        return Err(error("not an IP address or a host name".into()));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| error(describe(&e)))?
        .next()
        .ok_or_else(|| error("it resolves to no address".into()))
}

/// Why TCP can never use `ip` as a listening, local or remote address, if it cannot:
/// multicast and broadcast addresses are for UDP. (A listener there "succeeds", and nothing
/// can ever connect.) An IPv4-mapped IPv6 address is judged as the IPv4 address it maps.
pub fn not_for_tcp(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        ip if ip.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// Letters, digits, `-` and `.`, not all digits and dots (that is a mistyped IPv4 address).
fn looks_like_host_name(host: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    !host.is_empty()
        && host.len() <= 253
        && host.chars().all(allowed)
        && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// A non-blocking listener on `addr` with the given accept backlog (the kernel caps it at
/// `net.core.somaxconn`). `SO_REUSEADDR` lets a restarted server bind while old connections
/// linger in TIME_WAIT, as every production daemon does.
pub fn listen(addr: SocketAddr, backlog: i32) -> Result<mio::net::TcpListener, SetupError> {
    listen_shared(addr, backlog, false)
}

/// [`listen`], and with `reuse_port` also `SO_REUSEPORT`: several processes of the same user
/// then listen on one address and the kernel spreads new connections over them (`--workers`).
pub fn listen_shared(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
) -> Result<mio::net::TcpListener, SetupError> {
    let setup = || -> io::Result<mio::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        Ok(mio::net::TcpListener::from_std(socket.into()))
    };
    setup().map_err(|source| SetupError::Listen { addr, source })
}

/// Binds (without listening) a `SO_REUSEPORT` socket on `addr`, to learn the port when it is 0
/// and to hold it while worker processes listen on it with [`listen_shared`]. A socket that
/// does not listen takes no connections: the kernel spreads them over the listening ones.
pub fn reserve_shared(addr: SocketAddr) -> Result<Socket, SetupError> {
    let setup = || -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    setup().map_err(|source| SetupError::Listen { addr, source })
}

/// Why a connection could not be started. `bind` names the source address when binding to
/// it was what failed, so that the message blames the right address.
#[derive(Debug)]
pub struct ConnectError {
    pub bind: Option<SocketAddr>,
    pub source: io::Error,
}

impl From<io::Error> for ConnectError {
    fn from(source: io::Error) -> Self {
        ConnectError { bind: None, source }
    }
}

impl ConnectError {
    /// One line for a person: `cannot bind to 192.0.2.7: cannot assign requested address
    /// (...)` or `cannot connect to 127.0.0.1:8000: connection refused`.
    pub fn describe(&self, dest: SocketAddr) -> String {
        match self.bind {
            Some(source) => {
                let hint = match self.source.kind() {
                    io::ErrorKind::AddrNotAvailable => {
                        " (no interface of this host has that address; check --bind)"
                    }
                    io::ErrorKind::AddrInUse => " (that source port is taken)",
                    _ => "",
                };
                let shown = match source.port() {
                    0 => source.ip().to_string(),
                    _ => source.to_string(),
                };
                format!("cannot bind to {shown}: {}{hint}", describe(&self.source))
            }
            None => format!("cannot connect to {dest}: {}", describe(&self.source)),
        }
    }
}

/// Starts a non-blocking connect to `dest`, from `source` when given (any port on that
/// address). The connection completes later: the socket turns writable, and
/// [`connect_result`] says whether it succeeded.
pub fn connect_from(
    source: Option<SocketAddr>,
    dest: SocketAddr,
) -> Result<mio::net::TcpStream, ConnectError> {
    let socket = Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(source) = source {
        if source.port() == 0 {
            defer_port_choice(&socket);
        }
        socket.bind(&source.into()).map_err(|e| ConnectError {
            bind: Some(source),
            source: e,
        })?;
    }
    match socket.connect(&dest.into()) {
        Ok(()) => {}
        // A non-blocking connect reports EINPROGRESS (its value differs between systems).
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || would_block(&e) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// Lets the kernel pick the source port at `connect` rather than at `bind`
/// (`IP_BIND_ADDRESS_NO_PORT`). At `bind` it must find a port free for *every* destination,
/// a search that crawls once thousands of ports sit in TIME_WAIT (measured here: 2,000
/// binds took 3.5 s with 23,000 sockets in TIME_WAIT, 49 ms with this option). At `connect`
/// only the 4-tuple must be unique. Best effort: without it, binding still works, slower.
fn defer_port_choice(socket: &Socket) {
    #[cfg(target_os = "linux")]
    if socket.domain().is_ok_and(|domain| domain == Domain::IPV4) {
        use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
        let _ = setsockopt(socket, IpBindAddressNoPort, &true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// After a connecting socket turns writable: `Ok(true)` connected, `Ok(false)` still in
/// progress (a spurious wake-up), `Err` the connect failed.
pub fn connect_result(stream: &mio::net::TcpStream) -> io::Result<bool> {
    if let Some(error) = stream.take_error()? {
        return Err(error);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Raises the soft open-file limit to the hard limit, and returns the soft limit in force.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// Descriptors a loop holds besides its peers: listeners, epoll, the alarm, the waker,
/// logs, standard streams, with room to spare.
pub const FILES_OF_OUR_OWN: u64 = 32;

/// Sizes this process's descriptor table for `peers` connections and the loop's own
/// descriptors (no more than it may open), now rather than as peers arrive; returns the size
/// asked for. The kernel doubles the table as descriptors are opened, and in a process of
/// more than one thread (the log writer is one) each doubling waits for an RCU grace period
/// with the loop stopped in `accept` or `socket`: measured on this project's machine, 5 to
/// 13 ms at each of 256, 512, 1,024, 2,048 and 4,096 peers. The table never shrinks, so a
/// copy of `any` placed at the top and closed again leaves it grown. The cost is kernel
/// memory, about 8 bytes a descriptor (800 KB for 100,000).
#[cfg(target_os = "linux")]
pub fn reserve_descriptors(any: impl std::os::fd::AsFd, peers: usize) -> io::Result<u64> {
    use nix::fcntl::{fcntl, FcntlArg};
    let wanted = u64::try_from(peers)
        .unwrap_or(u64::MAX)
        .saturating_add(FILES_OF_OUR_OWN);
    let size = open_file_limit().map_or(wanted, |files| wanted.min(files));
    let top = i32::try_from(size.saturating_sub(1)).unwrap_or(i32::MAX);
    // F_DUPFD puts the copy at the lowest free number at or above `top`.
    let copy = fcntl(any, FcntlArg::F_DUPFD_CLOEXEC(top))?;
    nix::unistd::close(copy)?;
    Ok(size)
}

#[cfg(not(target_os = "linux"))]
pub fn reserve_descriptors(_any: impl std::os::fd::AsFd, _peers: usize) -> io::Result<u64> {
    Ok(0)
}

/// [`reserve_descriptors`] at a loop's start, as best it can: if sizing fails, the table grows
/// as peers come instead (stopping the loop a moment at each doubling), and that is said at
/// debug level only, since nothing else changes.
pub fn size_descriptor_table(any: impl std::os::fd::AsFd, peers: usize) {
    if let Err(e) = reserve_descriptors(any, peers) {
        log::debug!("could not size the descriptor table: {}", describe(&e));
    }
}

/// How many files this process may open now (the soft limit), if it can be known.
pub fn open_file_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// The error kinds the loops handle by name, as mio's own examples do.
pub fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

pub fn interrupted(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Interrupted
}

/// Accept failed because this process or the system ran out of file descriptors.
pub fn out_of_files(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(EMFILE) | Some(ENFILE))
        || matches!(error.kind(), io::ErrorKind::OutOfMemory)
}

const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of this process's descriptor table, as the kernel reports it.
    #[cfg(target_os = "linux")]
    fn descriptor_table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("FDSize:"))
            .and_then(|size| size.trim().parse().ok())
            .expect("an FDSize line")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reserving_descriptors_grows_the_table_and_leaves_no_descriptor_open() {
        let limit = raise_open_file_limit().expect("the open-file limit");
        let before = descriptor_table_size();
        // Four times the table there is, if the limit allows: more than it holds now.
        let peers = (before * 4).min(limit).saturating_sub(FILES_OF_OUR_OWN);
        let any = std::fs::File::open("/dev/null").expect("/dev/null");
        let size = reserve_descriptors(&any, peers as usize).expect("reserved");
        assert_eq!(size, peers + FILES_OF_OUR_OWN);
        assert!(
            descriptor_table_size() >= size,
            "the table holds {} descriptors after reserving {size} (it held {before})",
            descriptor_table_size()
        );
        let top = format!("/proc/self/fd/{}", size - 1);
        assert!(!std::path::Path::new(&top).exists(), "{top} was left open");
        // Past the limit, the table stops at the limit.
        let capped = reserve_descriptors(&any, usize::MAX).expect("reserved");
        assert_eq!(capped, limit);
    }

    #[test]
    fn describe_drops_the_os_error_number() {
        let error = io::Error::from_raw_os_error(98);
        assert_eq!(describe(&error), "address already in use");
    }

    #[test]
    fn literal_addresses_resolve_without_a_resolver() {
        assert_eq!(
            resolve("127.0.0.1", 80).ok(),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(resolve("::1", 80).ok(), Some("[::1]:80".parse().unwrap()));
    }

    #[test]
    fn a_host_that_is_not_an_address_is_a_setup_error_naming_it() {
        for bad in ["not an address!", "300.1.2.3", "", "127.0.0.1:80"] {
            let error = resolve(bad, 80).unwrap_err();
            let text = error.to_string();
            assert!(text.starts_with(&format!("\"{bad}\"")), "{text}");
            assert!(text.contains("not an IP address or a host name"), "{text}");
        }
    }

    #[test]
    fn multicast_and_broadcast_are_not_for_tcp() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        for bad in [
            "224.0.0.1",
            "239.255.255.255",
            "ff02::1",
            "ff0e::1",
            "::ffff:224.0.0.1",
        ] {
            assert_eq!(not_for_tcp(ip(bad)), Some("a multicast address"), "{bad}");
        }
        assert_eq!(
            not_for_tcp(ip("255.255.255.255")),
            Some("the broadcast address")
        );
        for good in [
            "127.0.0.1",
            "0.0.0.0",
            "::",
            "::1",
            "223.255.255.255",
            "240.0.0.1",
        ] {
            assert_eq!(not_for_tcp(ip(good)), None, "{good}");
        }
    }

    #[test]
    fn localhost_resolves() {
        let addr = resolve("localhost", 80).expect("localhost resolves");
        assert!(addr.ip().is_loopback(), "{addr}");
    }

    #[test]
    fn listening_twice_on_one_port_names_the_address_and_says_why() {
        let first = listen("127.0.0.1:0".parse().unwrap(), 16).expect("first listener");
        let addr = first.local_addr().unwrap();
        let error = listen(addr, 16).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("address already in use"), "{text}");
        assert!(text.contains("another server running"), "{text}");
    }

    #[test]
    fn a_reserved_port_is_shared_by_listeners_that_ask_and_refused_to_others() {
        let reserved = reserve_shared("127.0.0.1:0".parse().unwrap()).expect("reserves");
        let addr = reserved
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("an inet address");
        assert_ne!(addr.port(), 0);
        let first = listen_shared(addr, 16, true).expect("first worker listens");
        let second = listen_shared(addr, 16, true).expect("second worker listens");
        let error = listen(addr, 16).unwrap_err().to_string();
        assert!(error.contains("address already in use"), "{error}");
        // Connections go to the listeners only, never to the reserving socket.
        for _ in 0..8 {
            std::net::TcpStream::connect(addr).expect("connects");
        }
        let accepted = [&first, &second]
            .iter()
            .map(|l| std::iter::from_fn(|| l.accept().ok()).count())
            .sum::<usize>();
        assert_eq!(accepted, 8);
    }

    #[test]
    fn a_bind_address_this_host_lacks_is_the_one_named() {
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let error = connect_from(Some("192.0.2.7:0".parse().unwrap()), dest).unwrap_err();
        let text = error.describe(dest);
        assert!(text.starts_with("cannot bind to 192.0.2.7: "), "{text}");
        assert!(
            text.contains("no interface of this host has that address"),
            "{text}"
        );
        assert!(!text.contains("127.0.0.1"), "{text}");
    }

    #[test]
    fn out_of_files_recognises_emfile_and_enfile() {
        assert!(out_of_files(&io::Error::from_raw_os_error(24)));
        assert!(out_of_files(&io::Error::from_raw_os_error(23)));
        assert!(!out_of_files(&io::Error::from_raw_os_error(104)));
    }
}
