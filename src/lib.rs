//! heartbeat: a TCP heartbeat server and client on one single-threaded `mio` loop.
//!
//! Module map. Folders are layers, lowest first; nothing in a lower layer imports a higher
//! one. The cores touch no socket and read no clock; the loops only move bytes between
//! sockets and them.
//!
//! | folder      | modules                                                        | I/O        |
//! |-------------|----------------------------------------------------------------|------------|
//! | `cores`     | `protocol` (line framing, the messages), `buffers` (a connection's partial line and unsent output, held only while non-empty), `wheel` (the timer wheel in integer ticks), `liveness` (the per-peer heartbeat state machine), `timer` (`Instant`s to ticks, rounding up), `allow` (`--allow` blocks), `rng` (seeded spreading), `escape` (peers' bytes made safe for logs), `ratelimit` (N log lines per reason per period), `proxy` (PROXY v2 headers), `tls` (a server peer's TLS session on rustls' unbuffered API, no buffer while idle), `subject` (a certificate's subject for logs), `vocab` (the words and defaults server, client, stats and events share), `upgrade` (the live upgrade's protocol and its versioned wire format) | none |
//! | `edge`      | `conn` (one non-blocking socket's reads and writes), `turn` (the loop toolkit both loops share: tokens and generations, read budgets, the fairness list, deadline merging, the poll step), `net` (resolving, listening, connecting, the open-file limit; `SetupError`), `stop` (signals and the `Stopper`), `alarm` (a `timerfd` finer than `epoll`'s millisecond), `memory` (freed heap back to the OS), `tls` (certificates and keys from PEM into rustls configurations; the crypto provider and groups), `handover` (the live upgrade's socket pair, descriptors over SCM_RIGHTS) | sockets, signals |
//! | `ops`       | `stats` (counters, histograms, summaries; `stats::client` the load client's, with its per-second series and `merge`; `stats::hdr` histograms as HdrHistogram V2 base64), `report` (the load run's HTML page, pure), `metrics` (OpenMetrics text via `prometheus-client`, and its HTTP), `events` (the `--events` JSON lines), `logging` (queued lines, a writer thread per destination), `notify` (systemd readiness) | files, a datagram |
//! | `settings`  | `config` (`configuration.json`, durations, sizes), `prompt` (the original's questions) | reads the file, the terminal |
//! | `server`    | `server::core`, every server decision as a sans-IO state machine; around it the server's poll loop; `upgrade` and `takeover`, the two sides of a live upgrade | all of it |
//! | `client`    | the client's poll loop (`load`) and its pure parts (peer, schedule, faults, sources); `outputs` (the summary and exit status, `--report`, `merge`) | all of it |
//! | `cli`       | both command lines: flag over file over default, into the server's and the client's configurations (the top layer: it imports `server` and `client`) | none |
//! | `workers`   | `--workers N`: starting, signalling and restarting worker processes (`Supervisor`); the server and client parents (`server`, `client`), the workers' counts merged (`tally`), the parent's `--metrics` endpoint (`metrics`) | processes, sockets |
//!
//! The binaries in `src/bin/` parse the command line, set up and call `run`.
// No `unsafe` anywhere but one measured, documented call in `memory` (glibc's `malloc_trim`),
// which allows it locally; `deny` rather than `forbid` so that it can.
#![deny(unsafe_code)]

pub mod cli;
pub mod client;
pub mod cores;
pub mod edge;
pub mod ops;
pub mod server;
pub mod settings;
pub mod workers;
