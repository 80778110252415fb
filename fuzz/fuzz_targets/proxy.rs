//! Fuzz target: arbitrary bytes as the start of a connection to `server --proxy-protocol`,
//! into `heartbeat::cores::proxy::parse`. The checks are in `heartbeat_fuzz::check_proxy`
//! (`src/lib.rs`), which `tests/proxy_props.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    heartbeat_fuzz::check_proxy(bytes);
});
