//! Fuzz target: arbitrary UTF-8 as the text of a configuration file. `config::parse` and the
//! value parsers must never panic, and what they accept must match what the text says. The
//! checks are in `heartbeat_fuzz::check_config` and `check_values` (`src/lib.rs`), which
//! `tests/config_props.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    heartbeat_fuzz::check_config(text);
    heartbeat_fuzz::check_values(text);
});
