//! Settings: `configuration.json`, the two command lines and the original's prompts, and how
//! they combine (a flag over the file over the default). Opens no socket.

pub mod cli;
pub mod config;
pub mod prompt;
