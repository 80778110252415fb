//! The built server binary upgraded live, as an operator does it: the binary is copied to a
//! directory of its own and run from there, a new copy is moved over it with `mv`, and the
//! running server gets SIGUSR2. Peers must not notice.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::procs::{alive, eventually, kill, sockets, start_logged, Logged, GUARD};
use crate::common::Lines;

pub(super) const SERVER: &str = env!("CARGO_BIN_EXE_heartbeat-server");
pub(super) const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");

/// The server run from a copy in a temporary directory, followed across its upgrades.
pub(super) struct Upgradable {
    pub(super) dir: tempfile::TempDir,
    pub(super) first: Child,
    /// The process serving now (the first, or the one the last upgrade started).
    pub(super) pid: u32,
    pub(super) port: u16,
    pub(super) stdout: Lines,
    pub(super) stderr: Lines,
}

impl Upgradable {
    pub(super) fn start(args: &[&str]) -> Upgradable {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("server");
        std::fs::copy(SERVER, &exe).unwrap();
        let Logged {
            child: first,
            port,
            stdout,
            stderr,
        } = start_logged(&exe, args, &[]);
        let pid = first.id();
        Upgradable {
            dir,
            first,
            pid,
            port,
            stdout,
            stderr,
        }
    }

    pub(super) fn exe(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Moves a new copy of the server binary over the file it runs from, as `mv` does.
    pub(super) fn install_build(&self) {
        self.install(|next| {
            std::fs::copy(SERVER, next).unwrap();
        });
    }

    /// Moves a shell script running `script` over the file, in place of a build.
    pub(super) fn install_script(&self, script: &str) {
        self.install(|next| {
            std::fs::write(next, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(next, PermissionsExt::from_mode(0o755)).unwrap();
        });
    }

    /// `write` makes a file beside the one the server runs from, then it is renamed over it.
    fn install(&self, write: impl FnOnce(&Path)) {
        let next = self.dir.path().join("server.new");
        write(&next);
        std::fs::rename(&next, self.exe()).unwrap();
    }

    /// Installs a new copy of the binary by rename, signals SIGUSR2, and waits until the old
    /// process has exited and another runs the file now at the path.
    fn upgrade(&mut self) {
        self.install_build();
        let old = self.pid;
        let listening = self.stdout.starting("Listening on");
        kill("-USR2", old);
        eventually("the old process to exit", || !alive(old));
        if old == self.first.id() {
            let status = self.first.wait().unwrap();
            assert!(status.success(), "{status}");
        }
        // The new process says it listens once the old one has let go: maybe just after.
        let stdout = self.stdout.clone();
        let log = self.stderr.clone();
        let said = move || stdout.starting("Listening on") == listening + 1;
        if !said() {
            eventually(
                &format!("the new process's first line; log: {:?}", log.snapshot()),
                said,
            );
        }
        self.pid = running_from(&self.exe()).expect("a process runs the new file");
        assert_ne!(self.pid, old);
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid)).unwrap();
        assert_eq!(exe, self.exe(), "the new file runs, not the deleted one");
    }

    /// SIGTERM to the serving process; waits for it to end and returns what it printed last.
    pub(super) fn stop(self) -> String {
        kill("-TERM", self.pid);
        eventually("the last process to exit", || !alive(self.pid));
        // Its summary is whole only once its output has ended (the lines may lag the exit).
        eventually("its output to end", || self.stdout.ended());
        assert!(
            self.stdout.starting("Summary:") >= self.stdout.starting("Listening on"),
            "a summary from each process: {:?}",
            self.stdout.snapshot()
        );
        let all = self.stdout.snapshot();
        let last = all.iter().rposition(|l| l.starts_with("Summary:")).unwrap();
        all[last..].join("\n")
    }
}

impl Drop for Upgradable {
    fn drop(&mut self) {
        let _ = self.first.kill();
        let _ = self.first.wait();
        if alive(self.pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// The process whose command line starts with `exe`, if one runs.
pub(super) fn running_from(exe: &Path) -> Option<u32> {
    let want = exe.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let argv0 = cmdline.split(|b| *b == 0).next()?;
            (argv0 == want && alive(pid)).then_some(pid)
        })
}

pub(super) fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(GUARD)).unwrap();
    stream
}

pub(super) fn read_line(stream: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// A load client on 127.0.0.1:`port` with `peers` peers echoing every 500 ms for `duration`.
pub(super) fn load_client(port: u16, peers: usize, duration: &str) -> Child {
    Command::new(CLIENT)
        .args(["--port", &port.to_string(), "--no-prompt", "--json"])
        .args(["--connections", &peers.to_string(), "--interval", "500ms"])
        .args(["--duration", duration])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for `client` to end and checks from its JSON report that its peers saw nothing:
/// no close, reconnect, error or unanswered line; each opened once; more than two echoes
/// each answered.
pub(super) fn saw_nothing(client: Child, peers: usize) {
    let output = client.wait_with_output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for zero in [
        "closed_by_server",
        "reconnects",
        "errors",
        "unanswered",
        "failed",
    ] {
        assert_eq!(json[zero], 0, "{zero}: {json}");
    }
    assert_eq!(json["opened"], peers, "{json}");
    assert!(
        json["echoes_received"].as_u64().unwrap() > 2 * peers as u64,
        "{json}"
    );
}

/// A load client's peers echoing every 500 ms see nothing of two upgrades by rename: no
/// close, no reconnect, no error, no line unanswered; the last process's summary counts both
/// upgrades and every peer handed over, and SIGTERM ends the run as usual.
#[test]
fn a_load_client_sees_nothing_of_two_upgrades() {
    // 2,000 peers as the issue asks; the machine these tests run on is shared and busy, and
    // the peers are what matters, not the speed.
    let peers = 2_000;
    let mut server = Upgradable::start(&["--max-connections", "10000"]);
    let client = load_client(server.port, peers, "20s");
    eventually("every peer connected", || sockets(server.pid) > peers);
    server.upgrade();
    std::thread::sleep(Duration::from_secs(2));
    server.upgrade();
    saw_nothing(client, peers);
    let summary = server.stop();
    assert!(summary.contains("live upgrades (SIGUSR2): 2"), "{summary}");
    let handed = format!("peers handed over in live upgrades: {}", 2 * peers);
    assert!(summary.contains(&handed), "{summary}");
}

/// A line begun before the upgrade and ended after it is echoed whole, once, by the new
/// process; a line answered before is not answered again; SIGTERM to the new process ends
/// the peer with `End Connection` as usual.
#[test]
fn a_partial_line_crosses_the_upgrade_whole() {
    let mut server = Upgradable::start(&[]);
    let mut peer = connect(server.addr());
    peer.write_all(b"first\nhal").unwrap();
    assert_eq!(read_line(&mut peer), "Echoing...first");
    server.upgrade();
    peer.write_all(b"f\n").unwrap();
    assert_eq!(read_line(&mut peer), "Echoing...half");
    peer.write_all(b"after\n").unwrap();
    assert_eq!(
        read_line(&mut peer),
        "Echoing...after",
        "nothing echoed twice"
    );
    let summary = server.stop();
    assert!(
        summary.contains("peers handed over in live upgrades: 1"),
        "{summary}"
    );
    // SIGUSR2 used to kill the server without a word; now the peer was served on, and the
    // process serving it at the end tells it goodbye.
    assert_eq!(read_line(&mut peer), "End Connection");
}

/// A peer that stops reading while it keeps sending leaves output the kernel will not take
/// (and input the server will not read yet); across the upgrade every echo arrives once, in
/// order.
#[test]
fn unsent_output_to_a_slow_reader_crosses_the_upgrade() {
    let mut server = Upgradable::start(&["--max-write-buffer", "64KB"]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small window, so that the server's output stops in its own buffer soon.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let reader: TcpStream = socket.into();
    reader.set_read_timeout(Some(GUARD)).unwrap();
    let mut writer = reader.try_clone().unwrap();
    // 3 MB of lines: far more than the kernel holds for a reader that does not read.
    let lines = 100_000;
    let sent = Arc::new(Mutex::new(0usize));
    let counted = sent.clone();
    let writing = std::thread::spawn(move || {
        for n in 0..lines {
            writer
                .write_all(format!("line {n:06} of a slow reader\n").as_bytes())
                .unwrap();
            *counted.lock().unwrap() = n + 1;
        }
    });
    // Writing stalls (or ends) once the server holds its limit of output and stops reading.
    let mut last = 0;
    eventually("the writer to stall", || {
        std::thread::sleep(Duration::from_millis(300));
        let now = *sent.lock().unwrap();
        let stalled = now == last;
        last = now;
        stalled
    });
    server.upgrade();
    let mut reader = BufReader::new(reader);
    for n in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("Echoing...line {n:06} of a slow reader\n"));
    }
    writing.join().unwrap();
    drop(server.stop());
}

/// The event log of both processes (one file) says `handed_over` and then `taken_over`, with
/// the peers and the pause; the peer's own story goes on in the same file.
#[test]
fn the_event_log_tells_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut server = Upgradable::start(&["--events", path.to_str().unwrap()]);
    let mut peer = connect(server.addr());
    peer.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut peer), "Echoing...hello");
    server.upgrade();
    drop(peer);
    drop(server.stop());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    // The old process writes `handed_over` once the new one said it took over, and the new
    // one writes `taken_over` as it does: two processes, two writers, so those two lines may
    // come in either order. The peer's `connect` comes before both, its `close` after both.
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!((events[0], events[3]), ("connect", "close"), "{events:?}");
    let line = |event: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event)
            .unwrap_or_else(|| panic!("no {event} line: {events:?}"))
    };
    assert_eq!(line("handed_over")["peers"], 1);
    let taken_over = line("taken_over");
    assert_eq!(taken_over["peers"], 1);
    assert!(
        taken_over["pause_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{taken_over}"
    );
    assert_eq!(lines[3]["reason"], "peer_closed");
}

/// SIGTERM, then SIGUSR2 while the server stops: no upgrade begins (one under way when the
/// stop begins is given up: `cores::upgrade`'s trace); the peer is told `End Connection` by
/// the process it knows, which exits 0, and no other process is left.
#[test]
fn a_stop_during_an_upgrade_stops_and_hands_nothing_over() {
    let mut server = Upgradable::start(&[]);
    let mut peer = connect(server.addr());
    peer.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut peer), "Echoing...hello");
    kill("-TERM", server.pid);
    kill("-USR2", server.pid);
    assert_eq!(read_line(&mut peer), "End Connection");
    assert!(server.first.wait().unwrap().success());
    let exe = server.exe();
    eventually("no process left", || running_from(&exe).is_none());
    let log = server.stderr.snapshot().join("\n");
    assert!(!log.contains("handed over to the new process"), "{log}");
}

/// The new process reads its configuration file afresh: a changed interval takes effect
/// (its `Listening on` line says so), and a changed listening address is refused by it in one
/// line, the old process serving on.
#[test]
fn the_configuration_is_read_afresh_and_a_changed_address_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("configuration.json");
    let write = |host: &str, interval: &str| {
        let text =
            format!(r#"{{"server": {{"host": "{host}", "port": "0", "interval": "{interval}"}}}}"#);
        std::fs::write(&config, text).unwrap();
    };
    write("127.0.0.1", "7s");
    let config_arg = config.to_str().unwrap().to_string();
    let mut server = Upgradable::start(&["--config", &config_arg, "--idle", "60s"]);
    assert!(server.stdout.snapshot()[0].contains("heartbeat every 7s"));
    let mut peer = connect(server.addr());
    write("127.0.0.1", "9s");
    server.upgrade();
    let said = server.stdout.snapshot();
    let listening: Vec<_> = said
        .iter()
        .filter(|l| l.starts_with("Listening on"))
        .collect();
    assert!(listening[1].contains("heartbeat every 9s"), "{said:?}");
    write("127.0.0.2", "9s");
    let pid = server.pid;
    kill("-USR2", pid);
    let log = server.stderr.clone();
    let refused = "live upgrade given up: the new binary refused: the listening address changed \
                   from 127.0.0.1:0 to 127.0.0.2:0";
    eventually("the refusal", || {
        log.snapshot().iter().any(|l| l.contains(refused))
    });
    assert!(alive(pid), "the old process serves on");
    peer.write_all(b"still served\n").unwrap();
    assert_eq!(read_line(&mut peer), "Echoing...still served");
    let summary = server.stop();
    assert!(
        summary.contains("live upgrades given up (served on): 1"),
        "{summary}"
    );
}
