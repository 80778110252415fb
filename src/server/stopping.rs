//! Stopping the loop: the first stop signal (or a `Stopper`) begins the stop, a second one
//! ends a `--drain` at once. What stopping does to each peer is the core's (`core::ending`);
//! this only drops the listener, tells systemd, and hands the core the moment.

use std::time::Instant;

use log::info;

use super::Server;

impl Server {
    pub(super) fn begin_stop(&mut self, now: Instant) {
        crate::ops::notify::stopping();
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        info!(
            "stopping: telling {} peers End Connection",
            self.core.open()
        );
        self.core.handle_stop(now);
        self.carry_out(now);
    }

    pub(super) fn take_signals(&mut self, now: Instant) {
        let Some(signal) = self.stop.on_signal_event() else {
            return;
        };
        let name = crate::edge::stop::signal_name(signal);
        // The drain that ends TLS peers kept after a live upgrade is no stop: a first
        // signal then stops as ever.
        if !self.core.is_stop_asked() {
            info!("received {name}: stopping");
            return;
        }
        // A second signal: whoever sent it wants out now, drain or not.
        info!("received {name} again: telling every remaining peer End Connection now");
        self.core.handle_stop(now);
        self.carry_out(now);
    }
}
