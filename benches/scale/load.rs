//! The idle-connection load: the crate's own load client (it answers heartbeats) in a
//! thread of this process, the source addresses it and the drivers connect from, and the
//! wait until a server holds the connections, read from its descriptor count.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use heartbeat::client::{Client, ClientConfig, Outcome};
use heartbeat::edge::stop::{Stoppable, Stopper};

use crate::proc::fd_count;
use crate::{Kind, CONNECT_TIMEOUT, START_TIMEOUT, STOP_TIMEOUT};

/// Client connections are spread over 127.0.0.1 ..= 127.0.0.16: about 28,000 ephemeral
/// ports each, and the ports of closed connections stay in TIME_WAIT for a minute.
const SOURCE_ADDRESSES: u8 = 16;

/// The source address of client connection `index`, any port.
pub fn source_address(index: usize) -> SocketAddr {
    let host = 1 + (index % SOURCE_ADDRESSES as usize) as u8;
    SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0))
}

/// The load client's configuration for `connections` idle connections (they send nothing
/// and answer heartbeats) opened at `rate` per second from the bench's source addresses.
pub fn idle_config(server: SocketAddr, connections: usize, rate: u32) -> ClientConfig {
    ClientConfig {
        server,
        bind: (0..SOURCE_ADDRESSES as usize).map(source_address).collect(),
        connections,
        connect_rate: rate,
        interval: Duration::ZERO,
        // A backstop only: the phase stops the client long before.
        duration: Some(Duration::from_secs(900)),
        verbose: false,
        status_line: false,
        ..Default::default()
    }
}

/// The crate's load client running in its own thread; stopped on drop.
pub struct Load {
    stopper: Stopper,
    handle: Option<JoinHandle<Result<Outcome, String>>>,
    pub started: Instant,
}

impl Load {
    pub fn start(server: SocketAddr, connections: usize, rate: u32) -> Result<Load, String> {
        Load::start_with(idle_config(server, connections, rate))
    }

    /// The load client with `config` (see [`idle_config`]).
    pub fn start_with(config: ClientConfig) -> Result<Load, String> {
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("load-client".into())
            .spawn(move || {
                let client = Client::new(config).map_err(|e| e.to_string())?;
                let _ = tx.send(client.stopper());
                client.run().map_err(|e| e.to_string())
            })
            .map_err(|e| format!("cannot start the load client thread: {e}"))?;
        let stopper = match rx.recv_timeout(START_TIMEOUT) {
            Ok(stopper) => stopper,
            Err(_) => {
                let why = match handle.join() {
                    Ok(Err(e)) => e,
                    _ => "it did not start".to_string(),
                };
                return Err(format!("load client: {why}"));
            }
        };
        Ok(Load {
            stopper,
            handle: Some(handle),
            started: Instant::now(),
        })
    }

    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops the client (it closes its connections) and returns what it counted.
    pub fn finish(mut self) -> Result<Outcome, String> {
        self.stopper.stop();
        let handle = self.handle.take().ok_or("load client already finished")?;
        let deadline = Instant::now() + STOP_TIMEOUT * 6;
        while !handle.is_finished() {
            if Instant::now() > deadline {
                return Err("the load client did not stop within 60 s".to_string());
            }
            thread::sleep(Duration::from_millis(10));
        }
        handle
            .join()
            .map_err(|_| "the load client panicked".to_string())?
    }

    /// A failed wait, with what the load client counted (connect failures by reason).
    pub fn explain(self, why: String) -> String {
        match self.finish() {
            Ok(outcome) => format!("{why}; client: {}", client_line(&outcome)),
            Err(e) => format!("{why}; {e}"),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stopper.stop();
    }
}

/// Waits until the server holds `target` descriptors; returns when it did. `load` is the
/// client opening the connections, if it is the crate's (then the wait ends if it stops).
pub fn wait_for_fds(
    pid: u32,
    target: u64,
    since: Instant,
    load: Option<&Load>,
    kind: Kind,
) -> Result<Instant, String> {
    loop {
        let now = Instant::now();
        let fds = fd_count(pid)?;
        if fds >= target {
            return Ok(now);
        }
        if load.is_some_and(|load| !load.is_running()) {
            return Err(format!(
                "the load client stopped while {} had {fds} of {target} descriptors open",
                kind.name()
            ));
        }
        if now - since > CONNECT_TIMEOUT {
            // Not a panic: the other server's figures are still worth printing, and the run
            // ends with a failure status listing this.
            return Err(format!(
                "{} did not reach {target} open descriptors within {} s (it has {fds})",
                kind.name(),
                CONNECT_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// What the load client counted, on one line for the notes.
pub fn client_line(outcome: &Outcome) -> String {
    let s = &outcome.summary;
    let reasons: Vec<String> = s
        .failed_by_reason
        .iter()
        .map(|(why, k)| format!("{why} {k}"))
        .collect();
    format!(
        "opened {}, failed {}{}, closed by server {}, errors {}, heartbeats answered {}, \
         connect time p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        s.opened,
        s.failed,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        s.closed_by_server,
        s.errors,
        s.heartbeats_answered,
        s.connect_time.p50_us as f64 / 1000.0,
        s.connect_time.p99_us as f64 / 1000.0,
        s.connect_time.max_us as f64 / 1000.0,
    )
}
