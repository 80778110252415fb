//! A live upgrade (SIGUSR2) of the server binary with `--tls-cert`. A TLS session cannot move
//! to another process, so the old process keeps its TLS peers, listening no more, while the
//! new one takes the listening socket and every plain peer. Which process serves a
//! connection is read from `/proc`: the process holding the socket of the server's end.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::Duration;

use super::common::procs::{alive, children, eventually, kill, scrape, start_logged, Logged};
use super::common::{summary_value, Lines};
use super::{Pki, TlsPeer, HANG_GUARD};

const SERVER: &str = env!("CARGO_BIN_EXE_heartbeat-server");

/// The socket inodes of the listening and established IPv4 TCP sockets on `port` (the
/// server's side), with the remote port (`None` for the listener).
fn server_sockets(port: u16) -> Vec<(u64, Option<u16>)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_of = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (local, remote, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            if port_of(local)? != port {
                return None;
            }
            let inode = fields.get(9)?.parse().ok()?;
            match *state {
                "0A" => Some((inode, None)),
                "01" => Some((inode, Some(port_of(remote)?))),
                _ => None,
            }
        })
        .collect()
}

fn holds(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read_link(entry.path()).ok())
            .any(|target| target.to_string_lossy() == want)
    })
}

/// The server process of `pids` holding the server's end of `peer`'s connection.
fn serving(peer: &TlsPeer, port: u16, pids: &[u32]) -> Option<u32> {
    let client_port = peer.0.get_ref().sock.local_addr().unwrap().port();
    serving_port(client_port, port, pids)
}

fn serving_port(client_port: u16, port: u16, pids: &[u32]) -> Option<u32> {
    let (inode, _) = server_sockets(port)
        .into_iter()
        .find(|(_, remote)| *remote == Some(client_port))?;
    pids.iter().copied().find(|pid| holds(*pid, inode))
}

/// The processes of `pids` holding the listening socket on `port`.
fn listening(port: u16, pids: &[u32]) -> Vec<u32> {
    let listeners: Vec<u64> = server_sockets(port)
        .into_iter()
        .filter(|(_, remote)| remote.is_none())
        .map(|(inode, _)| inode)
        .collect();
    pids.iter()
        .copied()
        .filter(|pid| listeners.iter().any(|inode| holds(*pid, *inode)))
        .collect()
}

/// The server binary and the processes its upgrades start, all writing to one stdout and
/// one stderr; every one still running is killed when dropped.
struct Servers {
    first: Child,
    port: u16,
    stdout: Lines,
    log: Lines,
    pids: Vec<u32>,
}

impl Servers {
    fn start(args: &[&str]) -> Servers {
        Servers::start_with_env(args, &[])
    }

    /// The server with `pki`'s certificate and key, then `more` arguments, and `env` set.
    fn start_tls(pki: &Pki, more: &[&str], env: &[(&str, &str)]) -> Servers {
        let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
        let tls = [
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        let args: Vec<&str> = tls.iter().chain(more).copied().collect();
        Servers::start_with_env(&args, env)
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Servers {
        let Logged {
            child: first,
            port,
            stdout,
            stderr: log,
        } = start_logged(SERVER.as_ref(), args, env);
        let pids = vec![first.id()];
        Servers {
            first,
            port,
            stdout,
            log,
            pids,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGUSR2 to `pid`; waits until a new process (its child) listens and `pid` has let
    /// go (it has said `text`). Returns the new process's pid.
    fn upgrade(&mut self, pid: u32, text: &str) -> u32 {
        let (said, listening_before) = (
            self.log.containing(text),
            self.stdout.containing("Listening on"),
        );
        kill("-USR2", pid);
        eventually(&format!("{text:?}; log: {:?}", self.log.snapshot()), || {
            self.log.containing(text) > said
        });
        eventually("the new process's Listening line", || {
            self.stdout.containing("Listening on") > listening_before
        });
        // The new process is `pid`'s child, or was (a process that exits leaves its child
        // to init): it is the one holding the listening socket now.
        let everyone = || -> Vec<u32> {
            let entries = std::fs::read_dir("/proc").unwrap();
            let pids = entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok());
            pids.collect()
        };
        let mut holders = Vec::new();
        eventually("the new process to hold the listening socket", || {
            holders = listening(self.port, &everyone());
            holders.len() == 1 && holders[0] != pid
        });
        self.pids.push(holders[0]);
        holders[0]
    }

    /// The `--json` summary the server printed when it stopped, once it is there.
    fn json_summary(&self) -> JsonSummary {
        assert!(self.stdout.wait_for("\"accepted\"", HANG_GUARD));
        let stdout = self.stdout.snapshot();
        let text = stdout.iter().find(|l| l.contains("\"accepted\"")).unwrap();
        JsonSummary {
            value: serde_json::from_str(text).unwrap(),
            text: text.clone(),
        }
    }

    /// Whether the log shows `text`, waiting for it: a process's last lines may still be on
    /// their way through the pipe when it has exited.
    fn log_has(&self, text: &str) -> bool {
        self.log.wait_for(text, HANG_GUARD)
    }
}

/// A `--json` summary line: its counts, and its text for failure messages.
struct JsonSummary {
    value: serde_json::Value,
    text: String,
}

impl JsonSummary {
    fn count(&self, key: &str) -> u64 {
        self.value[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {}", self.text))
    }
}

impl std::fmt::Display for JsonSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for pid in self.pids.iter().rev() {
            if alive(*pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = self.first.wait();
    }
}

fn echoed(peer: &mut TlsPeer, text: &str) {
    peer.send(format!("{text}\n").as_bytes()).unwrap();
    assert_eq!(
        peer.line().unwrap().as_deref(),
        Some(format!("Echoing...{text}").as_str())
    );
}

/// `End Connection`, then close_notify (a clean end, not a truncation).
fn ended_cleanly(peer: &mut TlsPeer) {
    assert_eq!(peer.line().unwrap().as_deref(), Some("End Connection"));
    assert_eq!(peer.line().unwrap(), None);
}

/// TLS peers connected before SIGUSR2 stay with the old process and keep their echoes; the
/// new process holds the listening socket (the old one no more) and serves the peers that
/// connect after it; a second SIGUSR2 to the new process while the old one lingers works as
/// the first did; SIGTERM stops the lingering old process as a stop does (End Connection,
/// close_notify, its summary, exit 0), and the others serve on.
#[test]
fn kept_tls_peers_stay_with_the_old_process_and_new_ones_go_to_the_new_process() {
    let pki = Pki::new();
    let mut servers = Servers::start_tls(&pki, &["--tls-upgrade-keep", "10m"], &[]);
    let old = servers.first.id();
    let mut stays = TlsPeer::connect(servers.addr(), pki.client(None));
    echoed(&mut stays, "before");
    let mut leaves = TlsPeer::connect(servers.addr(), pki.client(None));
    echoed(&mut leaves, "before too");

    let new = servers.upgrade(old, "keeping 2 TLS peers");
    assert!(servers.log_has("0 peers handed over to the new process; keeping 2 TLS peers"));
    echoed(&mut stays, "after");
    assert_eq!(serving(&stays, servers.port, &[old, new]), Some(old));
    assert_eq!(listening(servers.port, &[old, new]), [new]);
    let mut newcomer = TlsPeer::connect(servers.addr(), pki.client(None));
    echoed(&mut newcomer, "hello, new process");
    assert_eq!(serving(&newcomer, servers.port, &[old, new]), Some(new));
    assert!(alive(old), "the old process serves on");

    // One kept peer leaves on its own.
    drop(leaves);
    let held_by_old = || {
        let sockets = server_sockets(servers.port);
        sockets
            .iter()
            .filter(|(inode, remote)| remote.is_some() && holds(old, *inode))
            .count()
    };
    eventually("the old process to see a peer leave", || held_by_old() == 1);

    // The new process upgrades as usual while the old one lingers; the old one ignores it.
    let third = servers.upgrade(new, "keeping 1 TLS peers");
    let mut latest = TlsPeer::connect(servers.addr(), pki.client(None));
    echoed(&mut latest, "hello, third");
    let all = [old, new, third];
    assert_eq!(serving(&latest, servers.port, &all), Some(third));
    assert_eq!(serving(&newcomer, servers.port, &all), Some(new));
    assert_eq!(listening(servers.port, &all), [third]);
    kill("-USR2", old);
    assert!(servers
        .log
        .wait_for("serves only the TLS peers it kept; ignored", HANG_GUARD));
    echoed(&mut stays, "still the old process");

    kill("-TERM", old);
    ended_cleanly(&mut stays);
    let status = servers.first.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(servers.log.wait_for(
        "the peers kept here have all gone (0 accepted from handshakes under way): 1 left, 1 told End Connection",
        HANG_GUARD
    ), "{:?}", servers.log.snapshot());
    assert!(servers.stdout.wait_for("Summary:", HANG_GUARD));
    let summary = servers.stdout.snapshot().join("\n");
    assert_eq!(
        summary_value(
            &summary,
            "TLS peers kept by the old process in live upgrades"
        ),
        Some(2),
        "{summary}"
    );
    echoed(&mut newcomer, "served on");
    echoed(&mut latest, "served on");

    for pid in [new, third] {
        kill("-TERM", pid);
    }
    ended_cleanly(&mut newcomer);
    ended_cleanly(&mut latest);
    eventually("every process to exit", || !alive(new) && !alive(third));
}

/// At `--tls-upgrade-keep`, the old process tells the TLS peers it kept `End Connection`
/// with a close_notify, says how they ended, and exits 0 by itself; the new process serves.
#[test]
fn at_the_deadline_the_old_process_ends_its_tls_peers_cleanly_and_exits_0() {
    let pki = Pki::new();
    let mut servers = Servers::start_tls(&pki, &["--tls-upgrade-keep", "1s"], &[]);
    let old = servers.first.id();
    let mut peers: Vec<TlsPeer> = (0..2)
        .map(|_| TlsPeer::connect(servers.addr(), pki.client(None)))
        .collect();
    for peer in &mut peers {
        echoed(peer, "before");
    }
    let new = servers.upgrade(old, "keeping 2 TLS peers");
    assert!(servers
        .log_has("for 1s (--tls-upgrade-keep), then told End Connection spread over 1ms per peer"));
    for peer in &mut peers {
        ended_cleanly(peer);
    }
    let status = servers.first.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        servers.log_has("0 left, 2 told End Connection"),
        "{:?}",
        servers.log.snapshot()
    );
    let mut newcomer = TlsPeer::connect(servers.addr(), pki.client(None));
    echoed(&mut newcomer, "after");
    assert_eq!(serving(&newcomer, servers.port, &[new]), Some(new));
    kill("-TERM", new);
    ended_cleanly(&mut newcomer);
}

/// A plain peer of a server whose configuration file turns TLS on is handed over (it stays
/// plain); the next upgrade hands that plain peer over again and keeps the TLS peer: each
/// is served by exactly one process.
#[test]
fn plain_peers_move_and_tls_peers_stay_when_an_upgrade_turned_tls_on() {
    let pki = Pki::new();
    let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let config = pki.path("configuration.json");
    let plain = serde_json::json!({ "server": { "host": "127.0.0.1" } });
    std::fs::write(&config, plain.to_string()).unwrap();
    let config = path("configuration.json");
    let mut servers = Servers::start(&["--config", &config]);
    let old = servers.first.id();
    let stream = TcpStream::connect(servers.addr()).unwrap();
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let plain_port = stream.local_addr().unwrap().port();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut plain_echo = |text: &str| {
        writer.write_all(format!("{text}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), format!("Echoing...{text}"));
    };
    plain_echo("plain");

    let tls = serde_json::json!({ "server": {
        "host": "127.0.0.1", "tls_cert": path("server.pem"), "tls_key": path("server.key")
    }});
    std::fs::write(pki.path("configuration.json"), tls.to_string()).unwrap();
    let new = servers.upgrade(old, "1 peers handed over to the new process; exiting");
    let status = servers.first.wait().unwrap();
    assert!(status.success(), "{status}");
    plain_echo("plain, in the TLS process");
    let mut secure = TlsPeer::connect(servers.addr(), pki.client(None));
    echoed(&mut secure, "tls");

    let third = servers.upgrade(
        new,
        "1 peers handed over to the new process; keeping 1 TLS peers",
    );
    plain_echo("plain, moved again");
    echoed(&mut secure, "tls, kept");
    let processes = [new, third];
    let moved = serving_port(plain_port, servers.port, &processes);
    assert_eq!(moved, Some(third), "the plain peer moved");
    assert_eq!(serving(&secure, servers.port, &[new, third]), Some(new));
    kill("-TERM", new);
    ended_cleanly(&mut secure);
    plain_echo("plain, served on");
    kill("-TERM", third);
    eventually("every process to exit", || !alive(new) && !alive(third));
}

/// With `--proxy-protocol`, a peer still owing its PROXY header at the upgrade was accepted
/// by the old process and stays there: the old process, with no TLS peer yet, waits for it
/// instead of exiting, then serves it (header, handshake, echo) until it is stopped.
#[test]
fn a_peer_still_in_its_proxy_header_stays_with_the_old_process_and_is_served_there() {
    let pki = Pki::new();
    let more = ["--proxy-protocol", "--tls-upgrade-keep", "10m"];
    let mut servers = Servers::start_tls(&pki, &more, &[]);
    let old = servers.first.id();
    // Accepted now, silent until after the upgrade (within the header's 5 s: the upgrade
    // itself must be done within its own 5 s).
    let mut stream = TcpStream::connect(servers.addr()).unwrap();
    let new = servers.upgrade(
        old,
        "keeping 0 TLS peers (and 1 in their handshake or PROXY header)",
    );
    stream
        .write_all(&heartbeat::cores::proxy::encode(
            &heartbeat::cores::proxy::Header::Proxied {
                source: "198.51.100.7:4000".parse().unwrap(),
                destination: "203.0.113.1:8000".parse().unwrap(),
            },
        ))
        .unwrap();
    let mut late = TlsPeer::over(stream, pki.client(None));
    echoed(&mut late, "behind a balancer");
    assert_eq!(serving(&late, servers.port, &[old, new]), Some(old));
    kill("-TERM", old);
    ended_cleanly(&mut late);
    let status = servers.first.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        servers.log_has("(1 accepted from handshakes under way): 0 left, 1 told End Connection")
    );
    kill("-TERM", new);
}

/// Under systemd (`NOTIFY_SOCKET`): the new process says `MAINPID=` itself and `READY=1`;
/// the old one, stopped by SIGTERM while it keeps a TLS peer, says nothing more (no
/// `STOPPING=1`: the service goes on in the new process), which says it when it stops.
#[test]
fn under_systemd_the_new_process_is_mainpid_and_the_lingering_one_says_nothing() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let next = || {
        let mut buf = [0; 1024];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let env = [("NOTIFY_SOCKET", socket_path.to_str().unwrap())];
    let mut servers = Servers::start_tls(&pki, &["--tls-upgrade-keep", "10m"], &env);
    assert!(next().starts_with("READY=1\n"));
    let old = servers.first.id();
    let mut kept = TlsPeer::connect(servers.addr(), pki.client(None));
    echoed(&mut kept, "before");
    let new = servers.upgrade(old, "keeping 1 TLS peers");
    assert!(next().starts_with(&format!("MAINPID={new}\nREADY=1\n")));
    kill("-TERM", old);
    ended_cleanly(&mut kept);
    assert!(servers.first.wait().unwrap().success());
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0; 1024];
    let more = notify
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(more.is_err(), "the old process said {more:?}");
    notify.set_nonblocking(false).unwrap();
    kill("-TERM", new);
    assert_eq!(next(), "STOPPING=1\nSTATUS=Stopping\n");
}

/// With `--workers 2`: SIGUSR2 to the parent replaces both workers; each TLS peer stays with
/// the old worker that served it (echoes go on there), newcomers go to the new workers, the
/// old workers linger beside them, and the parent's metrics count the kept peers once.
/// SIGTERM to the parent ends every peer (kept ones included) with End Connection and
/// close_notify, waits for every process, and its summary counts each peer's accept and
/// close exactly once, the kept peers' echoes and their leaving included.
#[test]
fn with_workers_kept_tls_peers_stay_with_old_workers_and_are_counted_once() {
    let pki = Pki::new();
    let more = ["--tls-upgrade-keep", "10m", "--workers", "2", "--json"];
    let more = [&more[..], &["--metrics", "127.0.0.1:0"]].concat();
    let mut servers = Servers::start_tls(&pki, &more, &[]);
    let listening_line = servers.stdout.snapshot()[0].clone();
    let metrics: std::net::SocketAddr = listening_line
        .split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("{listening_line}"));
    let parent = servers.first.id();
    let old_workers = children(parent);
    assert_eq!(old_workers.len(), 2, "{old_workers:?}");
    let mut kept: Vec<TlsPeer> = (0..4)
        .map(|_| TlsPeer::connect(servers.addr(), pki.client(None)))
        .collect();
    for peer in &mut kept {
        echoed(peer, "before");
    }
    let mut echoes = kept.len() as u64;

    kill("-USR2", parent);
    assert!(
        servers
            .log
            .wait_for("live upgrade: 2 of 2 workers replaced", HANG_GUARD),
        "{:?}",
        servers.log.snapshot()
    );
    let workers = children(parent);
    let new_workers: Vec<u32> = workers
        .iter()
        .copied()
        .filter(|pid| !old_workers.contains(pid))
        .collect();
    assert_eq!(new_workers.len(), 2, "{workers:?} after {old_workers:?}");
    assert_eq!(listening(servers.port, &workers), new_workers);
    for peer in &mut kept {
        echoed(peer, "after");
        echoes += 1;
        let at = serving(peer, servers.port, &workers);
        assert!(at.is_some_and(|pid| old_workers.contains(&pid)), "{at:?}");
    }
    let mut newcomers: Vec<TlsPeer> = (0..3)
        .map(|_| TlsPeer::connect(servers.addr(), pki.client(None)))
        .collect();
    for peer in &mut newcomers {
        echoed(peer, "hello, new worker");
        echoes += 1;
        let at = serving(peer, servers.port, &workers);
        assert!(at.is_some_and(|pid| new_workers.contains(&pid)), "{at:?}");
    }

    // One kept peer leaves on its own: its close is the old worker's to count.
    let leaves = kept.remove(0);
    drop(leaves);
    let held_by_old = || {
        let sockets = server_sockets(servers.port);
        let held = |inode: &u64| old_workers.iter().any(|pid| holds(*pid, *inode));
        sockets
            .iter()
            .filter(|(inode, remote)| remote.is_some() && held(inode))
            .count()
    };
    eventually("an old worker to see a peer leave", || held_by_old() == 3);
    // The parent asks every worker for its counts each second, the old ones included: its
    // metrics count the kept peers open, and the one that left, once. Each worker answers on
    // its own second, so the old worker's news of the leaving may come before a new worker's
    // of its newcomers: the page is read until it holds all three.
    let want = [
        "heartbeat_connections_closed_total{reason=\"peer_closed\"} 1\n",
        "heartbeat_connections_open 6\n",
        "heartbeat_connections_accepted_total 7\n",
    ];
    eventually(
        "the parent's metrics to count the kept peer's leaving, 6 open, 7 accepted",
        || {
            let page = scrape(metrics);
            want.iter().all(|line| page.contains(line))
        },
    );

    kill("-TERM", parent);
    for peer in kept.iter_mut().chain(&mut newcomers) {
        ended_cleanly(peer);
    }
    let status = servers.first.wait().unwrap();
    assert!(status.success(), "{status}");
    for pid in old_workers.iter().chain(&new_workers) {
        eventually("every worker to have exited", || !alive(*pid));
    }
    let summary = servers.json_summary();
    assert_eq!(summary.count("accepted"), 7, "{summary}");
    assert_eq!(summary.count("open"), 0, "{summary}");
    assert_eq!(summary.count("closed_by_peer"), 1, "{summary}");
    assert_eq!(summary.count("closed_at_shutdown"), 6, "{summary}");
    assert_eq!(summary.count("lines_echoed"), echoes, "{summary}");
    assert_eq!(summary.count("tls_kept"), 4, "{summary}");
    assert_eq!(summary.count("upgrades"), 2, "{summary}");
    assert_eq!(summary.count("workers_lost"), 0, "{summary}");
}

/// With `--workers 2`: a second SIGUSR2 while the first round's old workers still keep TLS
/// peers replaces the workers again (whose TLS peers stay with them in turn); at
/// `--tls-upgrade-keep` each old worker ends its peers cleanly and exits by itself; a
/// worker killed afterwards is started again; and the parent's summary still counts each
/// peer's accept and close exactly once, across four processes per slot.
#[test]
fn with_workers_a_second_round_while_old_workers_linger_and_a_restart_count_once() {
    let pki = Pki::new();
    let more = ["--tls-upgrade-keep", "3s", "--workers", "2", "--json"];
    let mut servers = Servers::start_tls(&pki, &more, &[]);
    let parent = servers.first.id();
    let first = children(parent);
    let mut peers: Vec<TlsPeer> = (0..2)
        .map(|_| TlsPeer::connect(servers.addr(), pki.client(None)))
        .collect();
    for peer in &mut peers {
        echoed(peer, "first");
    }
    let round = "live upgrade: 2 of 2 workers replaced";
    kill("-USR2", parent);
    eventually("the first round", || servers.log.containing(round) == 1);
    let mut second: Vec<TlsPeer> = (0..2)
        .map(|_| TlsPeer::connect(servers.addr(), pki.client(None)))
        .collect();
    for peer in &mut second {
        echoed(peer, "second");
    }
    kill("-USR2", parent);
    eventually("the second round", || servers.log.containing(round) == 2);
    let mut last = TlsPeer::connect(servers.addr(), pki.client(None));
    echoed(&mut last, "third");
    // Each kept peer is ended at its old worker's deadline, cleanly; the new one serves on.
    for peer in peers.iter_mut().chain(&mut second) {
        ended_cleanly(peer);
    }
    echoed(&mut last, "served on");
    let workers = children(parent);
    for pid in &first {
        eventually("the first workers to have exited", || !alive(*pid));
    }
    eventually("only the newest workers to run", || {
        children(parent).len() == 2
    });
    let workers = children(parent).into_iter().filter(|p| workers.contains(p));
    let workers: Vec<u32> = workers.collect();
    let idle = workers
        .iter()
        .copied()
        .find(|pid| serving(&last, servers.port, &[*pid]).is_none())
        .unwrap();
    // Its counts reach the parent within a second (each worker is asked every second).
    std::thread::sleep(Duration::from_millis(1500));
    kill("-KILL", idle);
    assert!(servers.log.wait_for("is running again", HANG_GUARD));
    echoed(&mut last, "after a restart");

    kill("-TERM", parent);
    ended_cleanly(&mut last);
    assert!(servers.first.wait().unwrap().success());
    let summary = servers.json_summary();
    assert_eq!(summary.count("accepted"), 5, "{summary}");
    assert_eq!(summary.count("open"), 0, "{summary}");
    assert_eq!(summary.count("closed_at_shutdown"), 5, "{summary}");
    assert_eq!(summary.count("lines_echoed"), 7, "{summary}");
    assert_eq!(summary.count("tls_kept"), 4, "{summary}");
    assert_eq!(summary.count("upgrades"), 4, "{summary}");
    assert_eq!(summary.count("worker_restarts"), 1, "{summary}");
    assert_eq!(summary.count("workers_lost"), 1, "{summary}");
}
