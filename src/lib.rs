//! heartbeat: a TCP heartbeat server and client on one single-threaded `mio` loop.
//!
//! Module map (pure cores first, then the shells that own sockets):
//!
//! | module     | owns                                                               | touches I/O? |
//! |------------|--------------------------------------------------------------------|--------------|
//! | `protocol` | line framing (incremental decoder with a length limit), messages   | no           |
//! | `wheel`    | the hierarchical timer wheel keyed by slab key, in integer ticks   | no           |
//! | `liveness` | the per-peer heartbeat state machine; takes `now` as an argument   | no           |
//! | `config`   | `configuration.json`, durations, the idle rule, validation errors  | reads a file |
//!
//! The binaries in `src/bin/` parse the command line and call into the library.
#![forbid(unsafe_code)]

pub mod alarm;
pub mod allow;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod liveness;
pub mod logging;
pub mod net;
pub mod prompt;
pub mod protocol;
pub mod ratelimit;
pub mod server;
pub mod stats;
pub mod stop;
pub mod timer;
pub mod wheel;
