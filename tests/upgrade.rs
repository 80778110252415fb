//! Live upgrade between real processes: the running side (`server::upgrade::Upgrader`)
//! starts a new process, which here is this very test binary running one of the `child_*`
//! tests below (each does nothing unless started with the upgrade channel), so the new side
//! runs the real `server::takeover` code. Every rollback case, and a whole handover whose
//! sockets keep working in the new process. `upgrade/binaries.rs`: the built server binary
//! upgraded live by rename, under a load client; `upgrade/workers.rs`: the same with
//! `--workers`, SIGUSR2 to the parent.

#[path = "upgrade/binaries.rs"]
mod binaries;
mod common;
#[path = "upgrade/workers.rs"]
mod workers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use heartbeat::cores::upgrade::wire::{Message, PeerState, WireError, VERSION};
use heartbeat::cores::upgrade::ANSWER_WAIT;
use heartbeat::edge::handover::{self, Channel};
use heartbeat::server::takeover::{take_over, GiveUp, Taken};
use heartbeat::server::upgrade::{StartedAs, Step, Upgrader};

/// Only a hang guard: every wait below ends on the state it waits for.
const GUARD: Duration = Duration::from_secs(60);

fn fixed(port: u16) -> Vec<(String, String)> {
    vec![("the listening address".into(), format!("127.0.0.1:{port}"))]
}

/// This test binary, running only the test named `child`.
fn this_binary_as(child: &str) -> StartedAs {
    StartedAs {
        exe: std::env::current_exe().expect("the test binary's path"),
        args: vec![child.into(), "--exact".into(), "--nocapture".into()],
    }
}

/// Drives the running side until it stops being `Continue` while the new process starts.
/// `begin` is given a `now` far enough ahead that a slow start on a loaded machine is not
/// taken for silence (silence itself is tested with a fake clock).
fn start(upgrader: &mut Upgrader) -> Step {
    let lenient = Instant::now() + GUARD;
    let step = upgrader.begin(lenient).expect("no upgrade under way");
    if step != Step::Continue {
        return step;
    }
    let guard = Instant::now() + GUARD;
    while Instant::now() < guard {
        let step = upgrader.on_readable(Instant::now());
        if step != Step::Continue {
            return step;
        }
    }
    panic!("the new process never answered");
}

fn rolled_back(step: Step) -> String {
    match step {
        Step::RolledBack { reason } => reason,
        other => panic!("expected a rollback, got {other:?}"),
    }
}

/// A listener with `n` peers: (listener, its address, the clients, the server-side sockets).
fn peers(n: usize) -> (TcpListener, SocketAddr, Vec<TcpStream>, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::new();
    let mut served = Vec::new();
    for _ in 0..n {
        let client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(GUARD)).unwrap();
        clients.push(client);
        served.push(listener.accept().unwrap().0);
    }
    (listener, addr, clients, served)
}

fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Each peer is still served by the old process after a rollback: its socket still works.
fn still_served_by_the_old_process(served: &mut [TcpStream], clients: &mut [TcpStream]) {
    for (server, client) in served.iter_mut().zip(clients.iter_mut()) {
        server.write_all(b"still here\n").unwrap();
        assert_eq!(read_line(client), "still here");
    }
}

/// A missing binary: one log line's reason, nothing else happens, and a later SIGUSR2 may try.
#[test]
fn a_missing_binary_rolls_back() {
    let started_as = StartedAs {
        exe: PathBuf::from("/nonexistent/heartbeat-server"),
        args: vec![],
    };
    let mut upgrader = Upgrader::new(started_as, fixed(8000));
    let reason = rolled_back(upgrader.begin(Instant::now()).unwrap());
    assert!(reason.contains("cannot start the new binary"), "{reason}");
    assert!(reason.contains("/nonexistent/heartbeat-server"), "{reason}");
    assert!(!reason.contains('\n'));
    assert_eq!(upgrader.counts(), (0, 1));
    assert!(!upgrader.is_under_way());
    assert!(upgrader.begin(Instant::now()).is_some(), "may try again");
}

/// A `--workers` worker starts nothing itself: without a channel from its parent it rolls
/// back at once, saying where to send SIGUSR2; with one, it offers its state on it, and a
/// channel given while an upgrade is under way is closed (its new process gives up).
#[test]
fn a_worker_upgrades_over_the_channel_its_parent_gives() {
    let mut upgrader = Upgrader::for_worker(fixed(8000));
    let reason = rolled_back(upgrader.begin(Instant::now()).unwrap());
    assert!(reason.contains("SIGUSR2 to its parent"), "{reason}");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    upgrader.give_channel(Channel::from_stream(ours).unwrap());
    assert_eq!(upgrader.begin(Instant::now()), Some(Step::Continue));
    let mut new_side = Channel::from_stream(theirs).unwrap();
    let offer = new_side.recv().unwrap().message;
    assert!(
        matches!(
            offer,
            Message::Offer {
                version: VERSION,
                ..
            }
        ),
        "{offer:?}"
    );
    let (late, mut late_new_side) = std::os::unix::net::UnixStream::pair().unwrap();
    upgrader.give_channel(Channel::from_stream(late).unwrap());
    assert!(
        matches!(late_new_side.read(&mut [0u8; 1]), Ok(0)),
        "closed at once"
    );
}

/// A binary that exits at once (`/bin/false` standing in for one that fails to start).
#[test]
fn a_binary_that_exits_at_once_rolls_back_naming_its_status() {
    let (_listener, _, mut clients, mut served) = peers(2);
    let started_as = StartedAs {
        exe: PathBuf::from("/bin/false"),
        args: vec![],
    };
    let mut upgrader = Upgrader::new(started_as, fixed(8000));
    let reason = rolled_back(start(&mut upgrader));
    assert!(
        reason.contains("exited") && reason.contains("exit status: 1"),
        "{reason}"
    );
    assert_eq!(upgrader.counts(), (0, 1));
    still_served_by_the_old_process(&mut served, &mut clients);
}

/// A binary that knows another state format answers with its one-line refusal; a shell
/// script sends exactly the frame such a binary sends.
#[test]
fn a_binary_that_refuses_the_format_rolls_back_with_its_reason() {
    let refusal = Message::Refuse(WireError::Version { got: VERSION }.to_string()).encode();
    let octal: String = refusal.iter().map(|b| format!("\\{b:03o}")).collect();
    let started_as = StartedAs {
        exe: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), format!("printf '{octal}' >&0; sleep 1").into()],
    };
    let mut upgrader = Upgrader::new(started_as, fixed(8000));
    let reason = rolled_back(start(&mut upgrader));
    assert!(
        reason.contains("refused") && reason.contains("state format"),
        "{reason}"
    );
}

/// The real new side refuses a changed listening address, and the old process serves on.
#[test]
fn a_changed_listening_address_is_refused_by_the_new_process() {
    let (_listener, _, mut clients, mut served) = peers(2);
    let mut upgrader = Upgrader::new(this_binary_as("child_on_port_8001"), fixed(8000));
    let reason = rolled_back(start(&mut upgrader));
    assert!(
        reason.contains("127.0.0.1:8000 to 127.0.0.1:8001"),
        "{reason}"
    );
    still_served_by_the_old_process(&mut served, &mut clients);
}

/// A new process that never answers is given up on at 5 s (a fake clock: no test waits 5 s)
/// and ended; the old process serves on.
#[test]
fn a_silent_binary_is_given_up_on_after_five_seconds_and_ended() {
    let (_listener, _, mut clients, mut served) = peers(1);
    let started_as = StartedAs {
        exe: PathBuf::from("/bin/sleep"),
        args: vec!["600".into()],
    };
    let mut upgrader = Upgrader::new(started_as, fixed(8000));
    let t0 = Instant::now();
    assert_eq!(upgrader.begin(t0), Some(Step::Continue));
    assert_eq!(upgrader.poll_timeout(), Some(t0 + ANSWER_WAIT));
    let before = upgrader.handle_timeout(t0 + ANSWER_WAIT - Duration::from_micros(1));
    assert_eq!(before, Step::Continue, "nothing at T-1us");
    let reason = rolled_back(upgrader.handle_timeout(t0 + ANSWER_WAIT));
    assert!(
        reason.contains("no answer from the new binary within 5 s"),
        "{reason}"
    );
    assert!(!upgrader.is_under_way());
    still_served_by_the_old_process(&mut served, &mut clients);
}

/// The whole handover: the listener and three peers with their state go to the new process,
/// which answers each peer with the partial line it inherited and serves the listener; the
/// old process is told to exit.
#[test]
fn sockets_and_state_move_to_the_new_process_and_keep_working() {
    let (listener, addr, mut clients, served) = peers(3);
    let port = 8000;
    let mut upgrader = Upgrader::new(this_binary_as("child_on_port_8000"), fixed(port));
    assert_eq!(start(&mut upgrader), Step::HandOver);
    let records = served.iter().enumerate().map(|(n, stream)| {
        let state = PeerState {
            heartbeats_sent: n as u32,
            partial: format!("half {n}").into_bytes(),
            ..PeerState::default()
        };
        (state, stream.as_fd())
    });
    let listeners = [(addr, listener.as_fd())];
    let step = upgrader.hand_over(&listeners, records, "{}".into(), Instant::now());
    assert_eq!(step, Step::Exit { peers: 3 });
    assert_eq!(upgrader.counts(), (1, 0));
    // The old process exits: its copies close, and no peer notices.
    drop((served, listener));
    for (n, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            read_line(client),
            format!("new process: half {n}, heartbeats {n}")
        );
    }
    let mut late = TcpStream::connect(addr).unwrap();
    late.set_read_timeout(Some(GUARD)).unwrap();
    assert_eq!(read_line(&mut late), "new process: a new peer");
}

/// The new side as the server binary runs it, with `port` as its configured one: takes over,
/// then (standing in for the server loop) answers each inherited peer and one new one.
fn run_child(port: u16) {
    let channel = match Channel::inherited() {
        Ok(Some(channel)) => channel,
        // Run as an ordinary test: nothing to do.
        Ok(None) => return,
        Err(e) => panic!("{e}"),
    };
    let mut listeners = Vec::new();
    let mut peers = Vec::new();
    let taken = take_over(channel, fixed(port), |taken| {
        match taken {
            Taken::Listeners(more) => listeners.extend(more),
            Taken::Peers(more) => peers.extend(more),
            Taken::Done { .. } => {}
        }
        Ok(())
    });
    if let Err(GiveUp { why, status }) = taken {
        eprintln!("child: {why}");
        std::process::exit(i32::from(status));
    }
    for (state, fd) in peers {
        let mut stream = TcpStream::from(fd);
        let partial = String::from_utf8_lossy(&state.partial);
        let line = format!(
            "new process: {partial}, heartbeats {}\n",
            state.heartbeats_sent
        );
        stream.write_all(line.as_bytes()).unwrap();
    }
    let (_, fd) = listeners.into_iter().next().expect("a listener");
    let (mut stream, _) = TcpListener::from(fd).accept().unwrap();
    stream.write_all(b"new process: a new peer\n").unwrap();
    std::process::exit(0);
}

/// The new process of the tests above whose configured port is unchanged.
#[test]
fn child_on_port_8000() {
    run_child(8000);
}

/// The new process of a test whose configured port changed.
#[test]
fn child_on_port_8001() {
    run_child(8001);
}

/// The variable alone, with no socket on standard input, is refused in one line.
#[test]
fn a_channel_variable_without_a_channel_is_refused() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["child_on_port_8000", "--exact", "--nocapture"])
        .env(handover::ENV, "0")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("standard input is not the upgrade channel"),
        "{text}"
    );
}
