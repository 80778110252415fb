//! Stopping a poll loop: from another thread through a [`Stopper`], or on SIGINT/SIGTERM.
//!
//! Owns the stop flag, the loop's `mio::Waker` and the signal registration. Both loops use
//! it the same way: check [`StopSignal::is_requested`] each turn, and pass events for
//! [`SIGNALS`] to [`StopSignal::on_signal_event`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Interest, Registry, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::net::SetupError;

/// Tokens the stop machinery uses; connection tokens never reach them (see `conn::token`).
pub const WAKER: Token = Token(usize::MAX);
pub const SIGNALS: Token = Token(usize::MAX - 1);

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
    signals: Option<Signals>,
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
            signals: None,
        })
    }

    /// Also stop on SIGINT or SIGTERM. Only for a process that owns its signals (a binary),
    /// never for a loop started inside a test.
    pub fn listen_for_signals(&mut self, registry: &Registry) -> Result<(), SetupError> {
        let error = |source| SetupError::EventLoop {
            what: "signal handler",
            source,
        };
        let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(error)?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(error)?;
        self.signals = Some(signals);
        Ok(())
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    pub fn is_requested(&self) -> bool {
        self.stopper.requested.load(Ordering::SeqCst)
    }

    /// Call for an event on [`SIGNALS`]; returns the signal that asked for the stop.
    pub fn on_signal_event(&mut self) -> Option<i32> {
        let signal = self.signals.as_mut()?.pending().next()?;
        self.stopper.requested.store(true, Ordering::SeqCst);
        Some(signal)
    }
}
