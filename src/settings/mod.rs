//! Settings: `configuration.json` (its keys, durations, sizes) and the original's prompts.
//! Opens no socket. How they combine with the command line is `cli`'s, a layer above.

pub mod config;
pub mod prompt;
