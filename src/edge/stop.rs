//! Stopping a poll loop: from another thread through a [`Stopper`], or on SIGINT, SIGTERM or
//! SIGHUP (a closing terminal or SSH session): all three mean the same graceful stop.
//!
//! The other signals whose default would kill the process without a word to its peers are
//! caught too (nginx's conventions): `SIGUSR1` reopens the log files (through the hook the
//! logging registers with [`on_reopen`]: this layer does not import `ops`), `SIGUSR2` asks a
//! loop that [`StopSignal::take_upgrades`] for a live upgrade (elsewhere it is logged and
//! ignored), `SIGALRM` is ignored.
//!
//! Owns the stop flag, the loop's `mio::Waker` and the signal registration. Both loops use
//! it the same way: check [`StopSignal::is_requested`] each turn, and pass events for
//! [`SIGNALS`] to [`StopSignal::on_signal_event`]; and both offer the same two methods to
//! whoever runs them, `stopper()` and `stop_on_signals()`, through [`Stoppable`]. What a
//! stop does to the peers is each loop's own.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use mio::{Interest, Registry, Token, Waker};
use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::edge::net::SetupError;

/// Tokens the stop machinery uses; connection tokens never reach them (see `turn::token`).
pub const WAKER: Token = Token(usize::MAX);
pub const SIGNALS: Token = Token(usize::MAX - 1);

/// The signals that stop a loop gracefully. SIGHUP is among them: without a handler a closing
/// terminal would kill the process at once, peers getting a bare end of stream and no
/// `End Connection`, and no summary printed.
pub const STOP_SIGNALS: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Signals caught so that they do not kill the process, and that do not stop it:
/// `SIGUSR1` reopens the log files, `SIGUSR2` and `SIGALRM` are ignored (see the module notes).
pub const OTHER_SIGNALS: [i32; 3] = [SIGUSR1, SIGUSR2, SIGALRM];

/// What `SIGUSR1` calls: the logging's reopen, registered when logging starts.
static REOPEN: OnceLock<fn()> = OnceLock::new();

/// Registers what `SIGUSR1` does (`ops::logging::reopen`); the first registration stays.
pub fn on_reopen(hook: fn()) {
    let _ = REOPEN.set(hook);
}

/// Reacts to a signal that does not stop the loop (SIGUSR2 here only when no loop takes
/// upgrades). Never waits.
fn handle_other(signal: i32) {
    match signal {
        SIGUSR1 => {
            log::info!("received SIGUSR1: reopening the log file and the event log");
            if let Some(reopen) = REOPEN.get() {
                reopen();
            }
        }
        SIGUSR2 => log::warn!(
            "received SIGUSR2: this process does not upgrade live (a server does; with \
             --workers, its parent does: signal the parent); ignored"
        ),
        _ => log::debug!("received signal {signal}: ignored"),
    }
}

/// A signal's name as a log line gives it: `SIGTERM`, or `a signal` for any other.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Asks a running loop to stop, from any thread. It is the same as SIGTERM.
#[derive(Clone)]
pub struct Stopper {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Stopper {
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // A failed wake-up only delays the stop until the loop's next event or timer.
        let _ = self.waker.wake();
    }
}

pub struct StopSignal {
    stopper: Stopper,
    /// Set once, by [`listen_for_signals`](Self::listen_for_signals), which needs only a
    /// shared borrow so that [`Stoppable`] asks each loop for one accessor.
    signals: OnceCell<Signals>,
    /// SIGUSR2 is for the loop ([`take_upgrades`](Self::take_upgrades)), and has come.
    upgrades: Option<bool>,
}

impl StopSignal {
    pub fn new(registry: &Registry) -> Result<StopSignal, SetupError> {
        let waker = Waker::new(registry, WAKER).map_err(|source| SetupError::EventLoop {
            what: "waker",
            source,
        })?;
        Ok(StopSignal {
            stopper: Stopper {
                requested: Arc::new(AtomicBool::new(false)),
                waker: Arc::new(waker),
            },
            signals: OnceCell::new(),
            upgrades: None,
        })
    }

    /// Also stop on [`STOP_SIGNALS`]. Only for a process that owns its signals (a binary),
    /// never for a loop started inside a test. Asking twice changes nothing.
    pub fn listen_for_signals(&self, registry: &Registry) -> Result<(), SetupError> {
        if self.signals.get().is_some() {
            return Ok(());
        }
        let error = |source| SetupError::EventLoop {
            what: "signal handler",
            source,
        };
        let caught = STOP_SIGNALS.iter().chain(&OTHER_SIGNALS).copied();
        let mut signals = Signals::new(caught).map_err(error)?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(error)?;
        let _ = self.signals.set(signals);
        Ok(())
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    pub fn is_requested(&self) -> bool {
        self.stopper.requested.load(Ordering::SeqCst)
    }

    /// Call for an event on [`SIGNALS`]; returns the signal that asked for the stop, if one
    /// did. Signals of [`OTHER_SIGNALS`] that came with it are handled here.
    pub fn on_signal_event(&mut self) -> Option<i32> {
        for signal in self.signals.get_mut()?.pending() {
            if STOP_SIGNALS.contains(&signal) {
                self.stopper.requested.store(true, Ordering::SeqCst);
                return Some(signal);
            }
            match (signal, &mut self.upgrades) {
                (SIGUSR2, Some(asked)) => *asked = true,
                _ => handle_other(signal),
            }
        }
        None
    }

    /// From now on SIGUSR2 asks this loop for a live upgrade ([`upgrade_asked`]) instead of
    /// being logged and ignored.
    ///
    /// [`upgrade_asked`]: Self::upgrade_asked
    pub fn take_upgrades(&mut self) {
        self.upgrades.get_or_insert(false);
    }

    /// Whether SIGUSR2 came since the last call.
    pub fn upgrade_asked(&mut self) -> bool {
        self.upgrades.as_mut().is_some_and(std::mem::take)
    }
}

/// What every poll loop offers whoever runs it to stop it; a loop only says where its
/// [`StopSignal`] and its poll's registry are.
pub trait Stoppable {
    /// The loop's stop machinery and the registry of the poll it wakes.
    fn stop_parts(&self) -> (&StopSignal, &Registry);

    /// A handle that stops the loop from any thread, as SIGTERM would.
    fn stopper(&self) -> Stopper {
        self.stop_parts().0.stopper()
    }

    /// Also stops the loop on [`STOP_SIGNALS`] (for a binary, not for tests).
    fn stop_on_signals(&mut self) -> Result<(), SetupError> {
        let (stop, registry) = self.stop_parts();
        stop.listen_for_signals(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least a loop needs to be [`Stoppable`].
    struct Loop {
        poll: mio::Poll,
        stop: StopSignal,
    }

    impl Stoppable for Loop {
        fn stop_parts(&self) -> (&StopSignal, &Registry) {
            (&self.stop, self.poll.registry())
        }
    }

    #[test]
    fn a_stopper_from_another_thread_sets_the_flag_and_wakes_the_poll() {
        let poll = mio::Poll::new().unwrap();
        let stop = StopSignal::new(poll.registry()).unwrap();
        let mut looped = Loop { poll, stop };
        assert!(!looped.stop.is_requested());
        let stopper = looped.stopper();
        std::thread::spawn(move || stopper.stop()).join().unwrap();
        assert!(looped.stop.is_requested());
        let mut events = mio::Events::with_capacity(4);
        // Bounded: the wake is already pending, so this returns at once.
        let timeout = Some(std::time::Duration::from_secs(10));
        looped.poll.poll(&mut events, timeout).unwrap();
        assert!(events.iter().any(|event| event.token() == WAKER));
        assert_eq!(
            looped.stop.on_signal_event(),
            None,
            "no signal was listened for"
        );
    }

    #[test]
    fn signals_are_named_as_log_lines_give_them() {
        assert_eq!(signal_name(SIGINT), "SIGINT");
        assert_eq!(signal_name(SIGTERM), "SIGTERM");
        assert_eq!(signal_name(SIGHUP), "SIGHUP");
        assert_eq!(signal_name(signal_hook::consts::SIGUSR1), "a signal");
        assert!(STOP_SIGNALS.contains(&SIGHUP));
    }
}
