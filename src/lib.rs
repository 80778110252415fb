//! heartbeat: a TCP heartbeat server and client on one single-threaded `mio` loop.
//!
//! Module map, pure cores first, then the shells that own sockets. The cores touch no socket
//! and read no clock; the loops only move bytes between sockets and them.
//!
//! | module      | owns                                                                  | I/O        |
//! |-------------|-----------------------------------------------------------------------|------------|
//! | `protocol`  | line framing (incremental decoder with a length limit), the messages  | none       |
//! | `wheel`     | the hierarchical timer wheel keyed by slab key, in integer ticks      | none       |
//! | `liveness`  | the per-peer heartbeat state machine; takes `now` as an argument      | none       |
//! | `server::core` | every server decision: lifecycle, timers, stopping; takes `now`    | none       |
//! | `timer`     | `Instant`s to wheel ticks and back, rounding deadlines up             | none       |
//! | `stats`     | counters, latency histograms, summaries (text and JSON); `stats::client` the load client's | none |
//! | `allow`     | `--allow` address blocks                                              | none       |
//! | `rng`       | SplitMix64: seeded, reproducible spreading (faults, jitter, back-off) | none       |
//! | `escape`    | peers' bytes made safe for a log line (`Escaped`)                     | none       |
//! | `ratelimit` | at most N log lines per reason per period; counts what it held back   | none       |
//! | `proxy`     | PROXY protocol v2 headers (`--proxy-protocol`): parsing, encoding      | none       |
//! | `metrics`   | Prometheus text for `--metrics`, its HTTP requests and responses      | none       |
//! | `events`    | the event log's JSON lines (`--events`)                               | none       |
//! | `config`    | `configuration.json`, durations, sizes, their errors                  | reads it   |
//! | `cli`       | both command lines; flags over the file over the defaults             | none       |
//! | `prompt`    | the original's interactive questions, on any reader and writer        | terminal   |
//! | `conn`      | reading and writing one non-blocking socket; buffers only when needed | sockets    |
//! | `net`       | resolving, listening, connecting, the open-file limit; `SetupError`   | sockets    |
//! | `stop`      | stopping a loop: a `Stopper` handle, SIGINT, SIGTERM and SIGHUP       | signals    |
//! | `alarm`     | a `timerfd` for wake-ups finer than `epoll`'s millisecond             | timerfd    |
//! | `logging`   | simplelog's lines, queued (bounded); a writer thread per destination  | files      |
//! | `memory`    | giving freed heap back to the OS (the crate's one `unsafe` call)      | allocator  |
//! | `notify`    | readiness for systemd: `READY=1`, `STOPPING=1` to `NOTIFY_SOCKET`     | a datagram |
//! | `server`    | the server's poll loop around `server::core`: sockets and the clock   | all of it  |
//! | `client`    | the client: its poll loop (`load`) and pure parts (faults, schedule, …) | all of it  |
//! | `workers`   | `--workers N`: starts, signals, restarts worker processes; their reports; the parent's `--metrics` | processes |
//!
//! The binaries in `src/bin/` turn the command line into a configuration and run a loop.
// No `unsafe` anywhere but one measured, documented call in `memory` (glibc's `malloc_trim`),
// which allows it locally; `deny` rather than `forbid` so that it can.
#![deny(unsafe_code)]

pub mod alarm;
pub mod allow;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod escape;
pub mod events;
pub mod liveness;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod prompt;
pub mod protocol;
pub mod proxy;
pub mod ratelimit;
pub mod rng;
pub mod server;
pub mod stats;
pub mod stop;
pub mod timer;
pub mod wheel;
pub mod workers;
