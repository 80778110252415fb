//! Shared helpers for the end-to-end tests: a server started in-process on 127.0.0.1:0 with
//! millisecond timings, and a blocking line-based peer with timeouts, so no test can hang.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heartbeat::liveness::Timing;
use heartbeat::server::{Server, ServerConfig};
use heartbeat::stats::ServerStats;
use heartbeat::stop::Stopper;

pub const MS: Duration = Duration::from_millis(1);

/// The timings of the tests: heartbeat every 100 ms, 3 times, after 400 ms of silence.
pub const FAST: Timing = Timing {
    idle: Duration::from_millis(400),
    interval: Duration::from_millis(100),
    count: 3,
};

pub struct RunningServer {
    pub addr: SocketAddr,
    stopper: Stopper,
    thread: Option<JoinHandle<ServerStats>>,
}

impl RunningServer {
    /// Stops the server as SIGTERM would and returns its counters.
    pub fn stop(mut self) -> ServerStats {
        self.stopper.stop();
        self.thread
            .take()
            .expect("not yet stopped")
            .join()
            .expect("server thread panicked")
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stopper.stop();
    }
}

pub fn start_server(config: ServerConfig) -> RunningServer {
    let server = Server::bind(ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..config
    })
    .expect("server binds");
    let addr = server.local_addr();
    let stopper = server.stopper();
    let thread = std::thread::spawn(move || server.run().expect("server runs"));
    RunningServer {
        addr,
        stopper,
        thread: Some(thread),
    }
}

pub fn start_fast_server() -> RunningServer {
    start_server(ServerConfig {
        timing: FAST,
        ..ServerConfig::default()
    })
}

/// A peer that reads whole lines, each read bounded by a timeout.
pub struct Peer {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Peer {
    pub fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        Peer {
            reader: BufReader::new(stream),
            writer,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// The next line without its newline; `None` at end of stream.
    pub fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert_eq!(
                    line.pop(),
                    Some(b'\n'),
                    "a line ends in a newline: {line:?}"
                );
                Some(String::from_utf8_lossy(&line).into_owned())
            }
            Err(e) => panic!("reading a line: {e}"),
        }
    }

    /// The next line, or `None` if nothing arrives within `wait`.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut line = Vec::new();
        let got = match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => Some(String::from_utf8_lossy(&line).trim_end().to_string()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(line.is_empty(), "a partial line arrived: {line:?}");
                None
            }
            Err(e) => panic!("reading a line: {e}"),
        };
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        got
    }

    /// Reads until the server closes the connection; returns everything read.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to end");
        rest
    }
}

/// Waits up to `limit` for `done` to hold, polling every few milliseconds.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(5 * MS);
    }
    done()
}
