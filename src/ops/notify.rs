//! Telling a service manager how the server is doing: systemd's notification protocol
//! (`sd_notify(3)`), one datagram per change of state sent to the unix socket named by the
//! `NOTIFY_SOCKET` environment variable, either a path (`/run/systemd/notify`) or a Linux
//! abstract socket (`@name`).
//!
//! Owns reading `NOTIFY_SOCKET`, the text of the messages, and sending them. Does not own
//! when to send them: the binary says [`ready`] once it listens, the poll loop says
//! [`stopping`] when it begins to stop. Without `NOTIFY_SOCKET` every call does nothing. A
//! failure is logged once, as a warning, and never stops or slows the server: [`ready`] waits
//! at most [`READY_WAIT`] (it is sent before the loop runs), every other message is sent
//! without waiting at all (the loop must never block).
//!
//! The protocol's words come from the `sd-notify` crate ([`NotifyState`]); the sending is
//! ours, because the crate's `notify` cannot keep the promises above: it sends on a blocking
//! socket with no time limit (a service manager that does not read would stop the loop), it
//! reads `NOTIFY_SOCKET` again at every call, and it cannot reach a Linux abstract socket
//! (`@name`), which systemd and container managers use.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use sd_notify::NotifyState;

/// The environment variable systemd sets for a `Type=notify` service.
pub const ENV: &str = "NOTIFY_SOCKET";

/// The longest [`ready`] waits for the service manager to take its datagram.
pub const READY_WAIT: Duration = Duration::from_secs(1);

/// Where the notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket file, by absolute path.
    Path(PathBuf),
    /// A Linux abstract socket: the name after the `@`.
    Abstract(Vec<u8>),
}

impl Target {
    /// Reads a `NOTIFY_SOCKET` value.
    pub fn parse(value: &OsStr) -> Result<Target, NotifyError> {
        let bytes = value.as_bytes();
        match bytes.first() {
            Some(b'@') if bytes.len() > 1 => Ok(Target::Abstract(bytes[1..].to_vec())),
            Some(b'/') => Ok(Target::Path(PathBuf::from(value))),
            _ => Err(NotifyError::Address(value.to_string_lossy().into_owned())),
        }
    }

    fn send(&self, message: &[u8], wait: Duration) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        match wait.is_zero() {
            true => socket.set_nonblocking(true)?,
            false => socket.set_write_timeout(Some(wait))?,
        }
        match self {
            Target::Path(path) => socket.send_to(message, path).map(drop),
            Target::Abstract(name) => send_abstract(&socket, name, message),
        }
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(message, &addr).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor `@name` (e.g. a `vsock:` address).
    #[error("{ENV}={0:?} is neither an absolute path nor @name; not notifying")]
    Address(String),
    /// The socket would not take the datagram.
    #[error("could not notify the service manager at {}: {source}", target_name(.target))]
    Send {
        target: Target,
        #[source]
        source: io::Error,
    },
}

/// A target as a person reads it: the path, or `@name`.
fn target_name(target: &Target) -> String {
    match target {
        Target::Path(path) => path.display().to_string(),
        Target::Abstract(name) => format!("@{}", String::from_utf8_lossy(name)),
    }
}

/// Where to notify, read once, and what has been said.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Result<Target, String>>,
    warned: AtomicBool,
    stopping_sent: AtomicBool,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; one that does nothing when it is not set.
    pub fn from_env() -> Notifier {
        let target =
            std::env::var_os(ENV).map(|value| Target::parse(&value).map_err(|e| e.to_string()));
        Notifier::new(target)
    }

    /// Notifies `target`.
    pub fn to(target: Target) -> Notifier {
        Notifier::new(Some(Ok(target)))
    }

    /// Does nothing, as without `NOTIFY_SOCKET`.
    pub fn off() -> Notifier {
        Notifier::new(None)
    }

    fn new(target: Option<Result<Target, String>>) -> Notifier {
        Notifier {
            target,
            warned: AtomicBool::new(false),
            stopping_sent: AtomicBool::new(false),
        }
    }

    /// `READY=1` with `status` as the text a person sees in `systemctl status`. Waits at most
    /// [`READY_WAIT`].
    pub fn ready(&self, status: &str) {
        let status = sanitize(status);
        self.send(
            &message(&[NotifyState::Ready, NotifyState::Status(&status)]),
            READY_WAIT,
        );
    }

    /// `MAINPID=` this process, `READY=1` and `status`: the new process of a live upgrade
    /// says it is the one to watch now. Waits at most [`READY_WAIT`].
    pub fn ready_as_main(&self, status: &str) {
        let status = sanitize(status);
        let states = [
            NotifyState::MainPid(std::process::id()),
            NotifyState::Ready,
            NotifyState::Status(&status),
        ];
        self.send(&message(&states), READY_WAIT);
    }

    /// This process handed its peers to a new one and ends: it must not say `STOPPING=1`
    /// (the service goes on), so [`stopping`](Self::stopping) says nothing from now on.
    pub fn handed_over(&self) {
        self.stopping_sent.store(true, Ordering::Relaxed);
    }

    /// `STOPPING=1`, once however often it is called; never waits.
    pub fn stopping(&self) {
        if !self.stopping_sent.swap(true, Ordering::Relaxed) {
            let states = [NotifyState::Stopping, NotifyState::Status("Stopping")];
            self.send(&message(&states), Duration::ZERO);
        }
    }

    /// A new status text; never waits.
    pub fn status(&self, status: &str) {
        let status = sanitize(status);
        self.send(&message(&[NotifyState::Status(&status)]), Duration::ZERO);
    }

    /// True once a failure has been logged (later ones are not).
    pub fn has_warned(&self) -> bool {
        self.warned.load(Ordering::Relaxed)
    }

    fn send(&self, text: &str, wait: Duration) {
        let result = match &self.target {
            None => return,
            Some(Err(bad)) => Err(bad.clone()),
            Some(Ok(target)) => target.send(text.as_bytes(), wait).map_err(|source| {
                let target = target.clone();
                NotifyError::Send { target, source }.to_string()
            }),
        };
        if let Err(why) = result {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!("{why} (the server goes on; further failures are not logged)");
            }
        }
    }
}

/// The process's notifier, from `NOTIFY_SOCKET` as it was at the first call.
pub fn global() -> &'static Notifier {
    static NOTIFIER: OnceLock<Notifier> = OnceLock::new();
    NOTIFIER.get_or_init(Notifier::from_env)
}

/// `READY=1` and `STATUS=<status>` to the service manager, if there is one.
pub fn ready(status: &str) {
    global().ready(status);
}

/// `MAINPID=`, `READY=1` and `STATUS=<status>`, if there is a service manager: see
/// [`Notifier::ready_as_main`].
pub fn ready_as_main(status: &str) {
    global().ready_as_main(status);
}

/// No `STOPPING=1` from this process, which handed its peers over: see
/// [`Notifier::handed_over`].
pub fn handed_over() {
    global().handed_over();
}

/// `STOPPING=1` to the service manager, if there is one; once per process.
pub fn stopping() {
    global().stopping();
}

/// `STATUS=<status>` to the service manager, if there is one.
pub fn status(status: &str) {
    global().status(status);
}

/// One assignment per line, in the crate's words (`READY=1`, `STATUS=…`).
fn message(states: &[NotifyState<'_>]) -> String {
    states.iter().map(|state| format!("{state}\n")).collect()
}

/// A status is kept to one line: control characters become spaces.
fn sanitize(status: &str) -> String {
    status.replace(|c: char| c.is_control(), " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn receiver() -> (tempfile::TempDir, UnixDatagram, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("binds");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        (dir, socket, path)
    }

    fn next(socket: &UnixDatagram) -> String {
        let mut buf = [0; 512];
        let n = socket.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        let parse = |s: &str| Target::parse(&OsString::from(s));
        assert_eq!(
            parse("/run/systemd/notify").unwrap(),
            Target::Path("/run/systemd/notify".into())
        );
        assert_eq!(
            parse("@sd-notify").unwrap(),
            Target::Abstract(b"sd-notify".to_vec())
        );
        for bad in ["", "@", "notify", "vsock:2:1234"] {
            let error = parse(bad).expect_err(bad).to_string();
            assert!(error.starts_with("NOTIFY_SOCKET="), "{error}");
        }
    }

    #[test]
    fn messages_are_one_assignment_per_line() {
        let ready = |status: &str| {
            let status = sanitize(status);
            message(&[NotifyState::Ready, NotifyState::Status(&status)])
        };
        assert_eq!(ready("ok"), "READY=1\nSTATUS=ok\n");
        assert_eq!(ready("a\nb\r"), "READY=1\nSTATUS=a b \n");
    }

    #[test]
    fn ready_and_stopping_reach_a_socket_file_and_stopping_is_sent_once() {
        let (_dir, socket, path) = receiver();
        let notifier = Notifier::to(Target::Path(path));
        notifier.ready("Listening on 127.0.0.1:1");
        assert_eq!(next(&socket), "READY=1\nSTATUS=Listening on 127.0.0.1:1\n");
        notifier.stopping();
        notifier.stopping();
        notifier.status("done");
        assert_eq!(next(&socket), "STOPPING=1\nSTATUS=Stopping\n");
        assert_eq!(next(&socket), "STATUS=done\n", "no second STOPPING=1");
        assert!(!notifier.has_warned());
    }

    #[test]
    fn the_new_process_of_an_upgrade_names_itself_and_the_old_one_says_no_stopping() {
        let (_dir, socket, path) = receiver();
        let old = Notifier::to(Target::Path(path.clone()));
        old.handed_over();
        old.stopping();
        old.status("gone");
        assert_eq!(
            next(&socket),
            "STATUS=gone\n",
            "no STOPPING=1 after a handover"
        );
        Notifier::to(Target::Path(path)).ready_as_main("up");
        let pid = std::process::id();
        assert_eq!(
            next(&socket),
            format!("MAINPID={pid}\nREADY=1\nSTATUS=up\n")
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn ready_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("heartbeat-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("binds");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let target = Target::parse(&OsString::from(format!("@{name}"))).unwrap();
        Notifier::to(target).ready("up");
        assert_eq!(next(&socket), "READY=1\nSTATUS=up\n");
    }

    #[test]
    fn failures_are_warned_once_and_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let nobody = Notifier::to(Target::Path(dir.path().join("absent")));
        assert!(!nobody.has_warned());
        nobody.ready("up");
        assert!(nobody.has_warned());
        nobody.stopping();
        let off = Notifier::off();
        off.ready("up");
        off.stopping();
        assert!(!off.has_warned(), "without NOTIFY_SOCKET nothing is tried");
        let bad = Notifier::new(Some(Err("bad".into())));
        bad.ready("up");
        assert!(bad.has_warned());
    }
}
