//! Fuzz target: arbitrary bytes, cut into reads at fuzzer-chosen points, fed to
//! `heartbeat::cores::protocol::LineDecoder` with a small line limit. The checks are in
//! `heartbeat_fuzz::check_decoder` (`src/lib.rs`), which `tests/config_props.rs` also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>)| {
    let (limit, cuts, bytes) = input;
    // A small limit, so overlong lines and lines right at the limit are common.
    let max_line = usize::from(limit % 48);
    let cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c)).collect();
    heartbeat_fuzz::check_decoder(max_line, &cuts, &bytes);
});
