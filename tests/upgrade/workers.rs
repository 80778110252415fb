//! `--workers`: SIGUSR2 to the parent replaces every worker, one at a time, by the binary
//! now at the path the parent was started from, and every peer stays; a worker whose upgrade
//! fails serves on, the parent says why and stops the round there.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use super::binaries::{connect, load_client, read_line, saw_nothing, Upgradable};
use crate::common::procs::{alive, children, eventually, kill, scrape, sockets};

/// The parent's `n` workers, once there are `n`.
fn workers(server: &Upgradable, n: usize) -> Vec<u32> {
    eventually(&format!("{n} workers"), || children(server.pid).len() == n);
    children(server.pid)
}

/// Installs a new copy by rename and signals the parent; waits until its round has replaced
/// all `n` workers, and checks that each process serving now runs the file at the path (not
/// the deleted one) and that none of the old workers is left.
fn upgrade_workers(server: &mut Upgradable, n: usize) {
    server.install_build();
    let old = workers(server, n);
    let done = format!("live upgrade: {n} of {n} workers replaced");
    let rounds = server.stderr.containing(&done);
    kill("-USR2", server.pid);
    eventually(
        &format!("{done}; log: {:?}", server.stderr.snapshot()),
        || server.stderr.containing(&done) == rounds + 1,
    );
    eventually("the old workers to exit", || old.iter().all(|p| !alive(*p)));
    let new = workers(server, n);
    for pid in &new {
        assert!(
            !old.contains(pid),
            "{pid} was not replaced: {old:?} → {new:?}"
        );
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, server.exe(), "the new file runs, not the deleted one");
    }
}

fn echo(peer: &mut TcpStream, line: &str) {
    peer.write_all(format!("{line}\n").as_bytes()).unwrap();
    assert_eq!(read_line(peer), format!("Echoing...{line}"));
}

/// A load client's peers echoing every 500 ms over two workers see nothing of two rounds of
/// upgrades by rename; the workers then run the new file; SIGTERM to the parent ends the run
/// with one summary that counts every peer once and every handover.
#[test]
fn with_workers_a_load_client_sees_nothing_of_two_upgrades() {
    let peers = 300;
    let mut server = Upgradable::start(&["--workers", "2", "--max-connections", "10000"]);
    let idle: usize = workers(&server, 2).into_iter().map(sockets).sum();
    let client = load_client(server.port, peers, "15s");
    eventually("every peer connected", || {
        children(server.pid).into_iter().map(sockets).sum::<usize>() >= idle + peers
    });
    upgrade_workers(&mut server, 2);
    std::thread::sleep(Duration::from_secs(1));
    upgrade_workers(&mut server, 2);
    // A newcomer is served by the new workers.
    let mut late = connect(server.addr());
    echo(&mut late, "late");
    drop(late);
    saw_nothing(client, peers);
    let summary = server.stop();
    // Counted once each, though three processes in turn served each worker's share.
    let accepted = format!("Summary: {} connections accepted", peers + 1);
    assert!(summary.starts_with(&accepted), "{summary}");
    assert!(summary.contains("live upgrades (SIGUSR2): 4"), "{summary}");
    let handed = format!("peers handed over in live upgrades: {}", 2 * peers);
    assert!(summary.contains(&handed), "{summary}");
    assert!(
        summary.contains("workers: 2 (started again: 0; ended abnormally"),
        "{summary}"
    );
}

/// The binary removed: the parent says why in one line, the round stops, and every peer is
/// still served by the workers it had; a later SIGUSR2, once a binary is back, replaces them.
#[test]
fn with_workers_a_missing_binary_is_given_up_and_every_peer_served() {
    let mut server = Upgradable::start(&["--workers", "2", "--metrics", "127.0.0.1:0"]);
    let first = server.stdout.snapshot()[0].clone();
    let metrics = heartbeat::workers::metrics::metrics_addr_in(&first).expect(&first);
    let before = workers(&server, 2);
    let mut peers: Vec<TcpStream> = (0..8).map(|_| connect(server.addr())).collect();
    for peer in &mut peers {
        echo(peer, "before");
    }
    std::fs::remove_file(server.exe()).unwrap();
    kill("-USR2", server.pid);
    let why = format!(
        "live upgrade of worker 0 given up: cannot start the new binary: {}: no such file or \
         directory; it serves on with the binary it had; worker 1 keeps its own too",
        server.exe().display()
    );
    eventually(
        &format!("{why}; log: {:?}", server.stderr.snapshot()),
        || server.stderr.containing(&why) == 1,
    );
    for peer in &mut peers {
        echo(peer, "after");
    }
    assert_eq!(children(server.pid), before, "no worker was replaced");
    upgrade_workers(&mut server, 2);
    for peer in &mut peers {
        echo(peer, "again");
    }
    // The parent's endpoint: each worker replaced, the round it gave up itself, the peers
    // (the workers report once a second).
    let want = [
        "heartbeat_upgrades_total{result=\"done\"} 2",
        "heartbeat_upgrades_total{result=\"failed\"} 1",
        "heartbeat_upgrade_peers_handed_over_total 8",
    ];
    let mut text = String::new();
    eventually(&format!("the upgrades in the metrics: {text}"), || {
        text = scrape(metrics);
        want.iter().all(|line| text.contains(line))
    });
    let summary = server.stop();
    assert!(
        summary.contains("live upgrades given up (served on): 1"),
        "{summary}"
    );
    assert!(summary.contains("live upgrades (SIGUSR2): 2"), "{summary}");
    assert!(
        summary.contains("peers handed over in live upgrades: 8"),
        "{summary}"
    );
    for peer in &mut peers {
        assert_eq!(read_line(peer), "End Connection");
    }
}

/// A new worker that refuses (its configuration, read afresh, moves the listening address):
/// the old worker serves on and says why, the parent's line carries its reason, and the
/// failure is counted once.
#[test]
fn with_workers_a_refusal_is_told_by_the_parent_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("configuration.json");
    let write = |host: &str| {
        let text = format!(r#"{{"server": {{"host": "{host}", "port": "0"}}}}"#);
        std::fs::write(&config, text).unwrap();
    };
    write("127.0.0.1");
    let config_arg = config.to_str().unwrap().to_string();
    let server = Upgradable::start(&["--workers", "2", "--config", &config_arg]);
    let before = workers(&server, 2);
    let mut peer = connect(server.addr());
    echo(&mut peer, "before");
    write("127.0.0.2");
    kill("-USR2", server.pid);
    let port = server.port;
    let why = format!(
        "live upgrade of worker 0 given up: the new binary refused: the listening address \
         changed from 127.0.0.1:{port} to 127.0.0.2:{port}"
    );
    eventually(
        &format!("{why}; log: {:?}", server.stderr.snapshot()),
        || server.stderr.containing(&why) == 1,
    );
    echo(&mut peer, "after");
    assert_eq!(children(server.pid), before, "no worker was replaced");
    let summary = server.stop();
    assert!(
        summary.contains("live upgrades given up (served on): 1"),
        "{summary}"
    );
    assert_eq!(read_line(&mut peer), "End Connection");
}

/// A stop signal just after SIGUSR2: the round ends, every peer is told `End Connection` by
/// whichever worker serves it, the parent exits 0 with its summary, and no worker is left.
#[test]
fn with_workers_a_stop_during_an_upgrade_ends_every_peer_and_every_process() {
    let mut server = Upgradable::start(&["--workers", "2"]);
    let before = workers(&server, 2);
    let mut peers: Vec<TcpStream> = (0..8).map(|_| connect(server.addr())).collect();
    for peer in &mut peers {
        echo(peer, "hello");
    }
    server.install_build();
    kill("-USR2", server.pid);
    kill("-TERM", server.pid);
    for peer in &mut peers {
        assert_eq!(read_line(peer), "End Connection");
    }
    assert!(server.first.wait().unwrap().success());
    eventually("the summary", || server.stdout.starting("Summary:") == 1);
    for pid in before {
        eventually("the old workers to end", || !alive(pid));
    }
    let exe = server.exe();
    eventually("no worker left", || {
        super::binaries::running_from(&exe).is_none()
    });
}

/// A worker that dies after the binary was replaced is started again from the path the
/// parent was started from: the new file (it used to be `/proc/self/exe`, which names the
/// deleted old file then, so the worker could not be started again at all).
#[test]
fn with_workers_a_worker_started_again_runs_the_file_at_the_path() {
    let server = Upgradable::start(&["--workers", "2"]);
    let before = workers(&server, 2);
    server.install_build();
    kill("-KILL", before[0]);
    eventually("the worker started again", || {
        let now = children(server.pid);
        now.len() == 2 && !now.contains(&before[0])
    });
    let again = children(server.pid)
        .into_iter()
        .find(|pid| !before.contains(pid))
        .unwrap();
    let exe = std::fs::read_link(format!("/proc/{again}/exe")).unwrap();
    assert_eq!(exe, server.exe());
    let mut peer = connect(server.addr());
    echo(&mut peer, "served");
    drop(server.stop());
}

/// A binary that exits at once (a script standing in for a build that fails to start): the
/// parent's one line names how it ended, the worker serves on, and the file at the path,
/// once a real build is back, is taken by a later SIGUSR2.
#[test]
fn with_workers_a_binary_that_fails_is_given_up_and_the_worker_serves_on() {
    let mut server = Upgradable::start(&["--workers", "2"]);
    let before = workers(&server, 2);
    let mut peer = connect(server.addr());
    echo(&mut peer, "before");
    server.install_script("exit 3");
    kill("-USR2", server.pid);
    let given_up = "live upgrade of worker 0 given up: ";
    eventually(
        &format!("{given_up}; log: {:?}", server.stderr.snapshot()),
        || server.stderr.containing(given_up) == 1,
    );
    let line = server
        .stderr
        .snapshot()
        .into_iter()
        .find(|l| l.contains(given_up))
        .unwrap();
    assert!(line.contains("exited with status 3"), "{line}");
    assert!(
        line.contains("it serves on with the binary it had"),
        "{line}"
    );
    echo(&mut peer, "after");
    assert_eq!(children(server.pid), before, "no worker was replaced");
    upgrade_workers(&mut server, 2);
    echo(&mut peer, "again");
    drop(server.stop());
}

/// After an upgrade the new workers are supervised like any: one killed is started again
/// (from the path), serves, and the parent's summary says so.
#[test]
fn with_workers_a_new_worker_that_dies_is_started_again() {
    let mut server = Upgradable::start(&["--workers", "2"]);
    upgrade_workers(&mut server, 2);
    let upgraded = workers(&server, 2);
    kill("-KILL", upgraded[0]);
    eventually("the worker started again", || {
        let now = children(server.pid);
        now.len() == 2 && !now.contains(&upgraded[0])
    });
    let mut peer = connect(server.addr());
    echo(&mut peer, "served");
    let summary = server.stop();
    assert!(
        summary.contains("workers: 2 (started again: 1;"),
        "{summary}"
    );
    assert_eq!(read_line(&mut peer), "End Connection");
}

/// A new binary that never answers: after 5 s the old worker gives up and serves on, and the
/// parent, which started the silent process, ends it and says why; no process is left over.
#[test]
fn with_workers_a_silent_binary_is_given_up_after_five_seconds_and_ended() {
    let server = Upgradable::start(&["--workers", "2"]);
    let before = workers(&server, 2);
    let mut peer = connect(server.addr());
    echo(&mut peer, "before");
    server.install_script("exec sleep 600");
    kill("-USR2", server.pid);
    eventually("the silent process started", || {
        children(server.pid).len() == 3
    });
    let why = "live upgrade of worker 0 given up: no answer from the new binary within 5 s; \
               it serves on with the binary it had";
    eventually(
        &format!("{why}; log: {:?}", server.stderr.snapshot()),
        || server.stderr.containing(why) == 1,
    );
    eventually("the silent process ended", || {
        children(server.pid) == before
    });
    echo(&mut peer, "after");
    let summary = server.stop();
    assert!(
        summary.contains("live upgrades given up (served on): 1"),
        "{summary}"
    );
}
