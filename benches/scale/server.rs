//! A server under test as a child process: started (the real `server` binary, or this
//! binary in the baseline role), its address read from its first line, stopped with
//! SIGTERM, and everything it printed on stdout handed back (heartbeat's exit summary).

use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use heartbeat::cores::liveness::Timing;

use crate::lines::read_stdout;
use crate::{baseline, duration_arg, Kind, START_TIMEOUT, STOP_TIMEOUT};

/// A server child process. Dropping it (also while unwinding from a panic) stops it: SIGTERM,
/// then SIGKILL if it lingers, then wait.
pub struct ServerProc {
    kind: Kind,
    child: Child,
    pub addr: SocketAddr,
    /// Heartbeat's `--metrics` address, when it was given one (`start_with`).
    pub metrics: Option<SocketAddr>,
    /// The baseline exits when its stdin closes: a safety net if this process dies.
    stdin: Option<ChildStdin>,
    output: Option<JoinHandle<Vec<String>>>,
    stopped: bool,
}

impl ServerProc {
    /// Starts a server with `timing`; `tick` is heartbeat's `--tick` (the baseline has none).
    pub fn start(kind: Kind, timing: Timing, tick: Duration) -> Result<ServerProc, String> {
        ServerProc::start_with(kind, timing, tick, &[])
    }

    /// [`ServerProc::start`] with more arguments for heartbeat (`--tls-cert`, `--metrics`).
    pub fn start_with(
        kind: Kind,
        timing: Timing,
        tick: Duration,
        extra: &[String],
    ) -> Result<ServerProc, String> {
        let mut command = match kind {
            Kind::Heartbeat => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_heartbeat-server"));
                command
                    .args(["--port", "0", "--no-prompt", "--log-level", "warn"])
                    .args(["--host", "127.0.0.1"])
                    .args(["--interval", &duration_arg(timing.interval)])
                    .args(["--count", &timing.count.to_string()])
                    .args(["--idle", &duration_arg(timing.idle)])
                    .args(["--tick", &duration_arg(tick)])
                    .args(extra)
                    .stdin(Stdio::null());
                command
            }
            Kind::Tokio => baseline::command(false, timing)?,
            Kind::TokioTuned => baseline::command(true, timing)?,
        };
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the {} server: {e}", kind.name()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        // Reads every line until the server exits: the first is sent at once, all are kept.
        let (rx, output) = read_stdout(stdout);
        let mut server = ServerProc {
            kind,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            stdin,
            output: Some(output),
            stopped: false,
        };
        let first = rx.recv_timeout(START_TIMEOUT).map_err(|_| {
            format!(
                "the {} server printed no `Listening on` line within {} s",
                kind.name(),
                START_TIMEOUT.as_secs()
            )
        })?;
        server.addr = first
            .strip_prefix("Listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| format!("unexpected first line from the server: {first:?}"))?;
        // `…; metrics at http://ADDR/metrics`
        server.metrics = first
            .split("metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok());
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server and returns every line it printed on stdout, the first included.
    pub fn stop(mut self) -> Result<Vec<String>, String> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<Vec<String>, String> {
        if self.stopped {
            return Ok(Vec::new());
        }
        self.stopped = true;
        // Not yet reaped, so the pid is still this child's.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut result = Ok(());
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    result = Err(format!(
                        "the {} server did not stop within {} s of SIGTERM; killed",
                        self.kind.name(),
                        STOP_TIMEOUT.as_secs()
                    ));
                    break;
                }
            }
        }
        let output = self.output.take().and_then(|h| h.join().ok());
        result.map(|()| output.unwrap_or_default())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
