//! Where log lines go: stderr always, and a file when `--log-file` is given (simplelog).
//!
//! Owns logger set-up only; what is logged, and at which level, is decided where it happens.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;

use log::LevelFilter;
use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger,
};

use crate::net::SetupError;

/// Installs the process's logger. Call once, before the loop starts.
pub fn init(level: LevelFilter, file: Option<&Path>) -> Result<(), SetupError> {
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .build();
    // Colour only on a terminal: a log redirected to a file must not hold escape codes.
    let colour = match std::io::stderr().is_terminal() {
        true => ColorChoice::Auto,
        false => ColorChoice::Never,
    };
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![TermLogger::new(
        level,
        config.clone(),
        TerminalMode::Stderr,
        colour,
    )];
    if let Some(path) = file {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SetupError::LogFile {
                path: path.to_path_buf(),
                source,
            })?;
        loggers.push(WriteLogger::new(level, config, file));
    }
    // Fails only if a logger is already installed, in which case that one keeps working.
    let _ = CombinedLogger::init(loggers);
    Ok(())
}
