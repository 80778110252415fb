//! A stalled server must not turn its own lateness into its peers' deaths. The real `server`
//! binary is stopped (`kill -STOP`, as Ctrl-Z or a paused VM does) for longer than its whole
//! heartbeat protocol while peers that answer every heartbeat are connected, then continued.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{eventually, summary_value, Lines, ServerProcess, MS};

const CLIENT: &str = env!("CARGO_BIN_EXE_heartbeat-client");
/// Heartbeat 1 after 2 s of silence, then one more, a second apart: a stall of 4.5 s is
/// longer than the whole protocol (2 s + 2 × 1 s), so a server that fired every timer that
/// had come due would send both heartbeats and `End Connection` in one turn.
const TIMING: [&str; 6] = ["--interval", "1s", "--count", "2", "--idle", "2s"];
const PEERS: usize = 50;
/// Of the peers, these many speak while the server is stopped.
const TALKERS: usize = 5;

/// A raw peer that answers every `heartbeat` at once and records every line it receives.
struct AnsweringPeer {
    writer: TcpStream,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl AnsweringPeer {
    fn connect(port: u16, done: Arc<AtomicBool>) -> AnsweringPeer {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        stream
            .set_read_timeout(Some(100 * MS))
            .expect("read timeout");
        let mut answers = stream.try_clone().expect("clone");
        let writer = stream.try_clone().expect("clone");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while !done.load(Ordering::SeqCst) {
                match reader.read_line(&mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        let text = line.trim_end().to_string();
                        if text == "heartbeat"
                            && answers.write_all(b"Echoing...heartbeat\n").is_err()
                        {
                            return;
                        }
                        seen.lock().expect("lines").push(text);
                        line.clear();
                    }
                    // A timeout keeps a partial line in `line` and tries again.
                    Err(_) => {}
                }
            }
        });
        AnsweringPeer {
            writer,
            lines,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for AnsweringPeer {
    fn drop(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// 50 answering peers and the real client survive a 4.5 s stop of the server: each gets
/// heartbeat 1 after the stall and answers it, the answers are counted, and nobody is told
/// `End Connection`; peers that spoke during the stall get their echo first, no heartbeat.
#[test]
fn a_stopped_server_closes_no_peer_that_answers() {
    let mut server = ServerProcess::start(&TIMING);
    let done = Arc::new(AtomicBool::new(false));
    let peers: Vec<AnsweringPeer> = (0..PEERS)
        .map(|_| AnsweringPeer::connect(server.port, done.clone()))
        .collect();
    let mut client = Command::new(CLIENT)
        .args(["--port", &server.port.to_string(), "--no-prompt"])
        .args(["--interval", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("client starts");
    let client_out = Lines::collect(client.stdout.take().expect("stdout"));
    assert!(
        server.wait_for_peers(PEERS + 1, Duration::from_secs(20)),
        "the server accepted everyone"
    );

    server.signal("-STOP");
    std::thread::sleep(Duration::from_secs(2));
    for peer in &peers[..TALKERS] {
        let mut writer = &peer.writer;
        writer.write_all(b"still here\n").expect("send");
    }
    std::thread::sleep(Duration::from_millis(2500));
    server.signal("-CONT");

    let answered_heartbeat_1 = || {
        let peers_heard = peers[TALKERS..]
            .iter()
            .all(|p| p.lines().iter().any(|l| l == "heartbeat"));
        let client_heard = client_out
            .snapshot()
            .iter()
            .any(|l| l == "Received: heartbeat");
        peers_heard && client_heard
    };
    assert!(
        eventually(Duration::from_secs(20), answered_heartbeat_1),
        "every quiet peer got heartbeat 1 after the stall"
    );
    for peer in &peers[..TALKERS] {
        assert!(
            eventually(Duration::from_secs(10), || !peer.lines().is_empty()),
            "a talker got its echo"
        );
        assert_eq!(
            peer.lines()[0],
            "Echoing...still here",
            "bytes sent during the stall were read before any timer fired"
        );
    }
    // Longer than count × interval after heartbeat 1: a peer the server had judged dead
    // would have been told End Connection by now.
    std::thread::sleep(Duration::from_secs(3));
    for (i, peer) in peers.iter().enumerate() {
        let lines = peer.lines();
        assert!(
            lines.iter().all(|l| l != "End Connection"),
            "peer {i}: {lines:?}"
        );
    }
    let client_lines = client_out.snapshot();
    assert!(
        client_lines.iter().all(|l| !l.contains("End Connection")),
        "{client_lines:?}"
    );
    assert!(
        client.try_wait().expect("try_wait").is_none(),
        "the client is still connected"
    );

    server.signal("-TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
    let summary = server.rest_of_stdout();
    let dead = summary_value(
        &summary,
        "closed as dead (each heartbeat unanswered a full interval)",
    );
    assert_eq!(dead, Some(0), "{summary}");
    let answered = summary_value(&summary, "heartbeat rounds answered").expect("a row");
    let quiet = (PEERS - TALKERS + 1) as u64;
    assert!(answered >= quiet, "{answered} < {quiet}: {summary}");
    done.store(true, Ordering::SeqCst);
    let _ = client.kill();
    let _ = client.wait();
}
