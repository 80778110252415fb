//! The command lines of both binaries, and how flags, `configuration.json` and the built-in
//! defaults combine: a flag wins over the file, the file over the default.
//!
//! This file holds what both share (the start error, log levels, value parsers, address
//! checks); `server` and `client` hold each binary's flags and how they resolve.
//!
//! Owns argument parsing and that merge. It opens no socket and asks no question: resolving
//! host names is `net`'s job, prompting is `prompt`'s.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, ValueEnum};

use crate::cores::liveness::Timing;
use crate::edge::net::{self, SetupError};
use crate::settings::config::{self, ConfigError};
use crate::workers::WorkersError;

mod client;
mod server;

pub use self::client::{ClientArgs, ClientCommand, MergeArgs};
pub use self::server::ServerArgs;

/// Why the command line could not be turned into a configuration. Each variant shows its
/// cause's message as it is, and `source()` reaches the cause's own source.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad configuration file or value: exit status 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An address that cannot be used: exit status 1.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// `--workers`: a worker could not be started, or failed at start (its own status).
    /// (`WorkersError` is not a `std::error::Error`, so it has no source to give.)
    #[error("{0}")]
    Workers(WorkersError),
}

impl From<WorkersError> for StartError {
    fn from(e: WorkersError) -> Self {
        StartError::Workers(e)
    }
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::Setup(_) => 1,
            StartError::Workers(e) => e.exit_code(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// The prompt rule, in one sentence both binaries keep: questions are asked only when stdin
/// is a terminal and no flag at all but `--no-prompt` was given (`--json`, `--max-line`,
/// `--allow`, `--log-level`, even with their default values, count as settings).
pub const PROMPT_RULE: &str = "Questions are asked only when stdin is a terminal and no flag \
                               at all was given; --no-prompt turns them off.";

/// Parses a command line as clap's `Parser` does, and says whether any flag but
/// `--no-prompt` was given on it (the prompt rule, [`PROMPT_RULE`]).
fn parse_noting_flags<A, I, T>(args: I) -> Result<(A, bool), clap::Error>
where
    A: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = A::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let parsed = A::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
    // The command's own arguments, not `matches.ids()`, which also holds the derive's group
    // of all of them.
    let given = command.get_arguments().any(|arg| {
        let id = arg.get_id().as_str();
        id != "no_prompt" && matches.value_source(id) == Some(ValueSource::CommandLine)
    });
    Ok((parsed, given))
}

/// The command-line entry points both argument structs share: clap's `parse`,
/// `try_parse` and `try_parse_from`, shadowed so that the struct's `flags_given` knows
/// whether any flag but `--no-prompt` was given, and the prompt rule ([`PROMPT_RULE`]) on it.
macro_rules! noting_flags {
    ($args:ty, $who:literal) => {
        impl $args {
            /// Parses the process's command line (the same as clap's `Parser::parse`).
            pub fn parse() -> $args {
                Self::try_parse().unwrap_or_else(|e| e.exit())
            }

            /// The same as clap's `Parser::try_parse`, noting the flags given.
            pub fn try_parse() -> Result<$args, clap::Error> {
                Self::try_parse_from(std::env::args_os())
            }

            /// The same as clap's `Parser::try_parse_from`, noting the flags given.
            pub fn try_parse_from<I, T>(args: I) -> Result<$args, clap::Error>
            where
                I: IntoIterator<Item = T>,
                T: Into<std::ffi::OsString> + Clone,
            {
                let (mut parsed, given) = super::parse_noting_flags::<$args, _, _>(args)?;
                parsed.flags_given = given;
                Ok(parsed)
            }

            #[doc = concat!("True when any flag but `--no-prompt` was given: then the ", $who, " asks nothing.")]
            pub fn settings_given(&self) -> bool {
                self.flags_given
            }

            /// Whether to ask the questions: stdin is a terminal, no flag was given, and
            /// `--no-prompt` was not.
            pub fn asks(&self, stdin_is_terminal: bool) -> bool {
                stdin_is_terminal && !self.no_prompt && !self.settings_given()
            }
        }
    };
}
use noting_flags;

fn duration(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
}

fn size(text: &str) -> Result<usize, String> {
    config::parse_size(text).and_then(|n| match n {
        0 => Err("must be more than 0".to_string()),
        n => Ok(n),
    })
}

fn tick(text: &str) -> Result<Duration, String> {
    config::parse_duration(text).and_then(|d| match d.is_zero() {
        true => Err("must be more than 0".to_string()),
        false => Ok(d),
    })
}

fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be more than 0".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

fn positive_u32(text: &str) -> Result<u32, String> {
    positive(text).and_then(|n| u32::try_from(n).map_err(|_| format!("{n} is too large")))
}

fn count(text: &str) -> Result<u32, String> {
    config::parse_count(text)
}

fn port(text: &str) -> Result<u16, String> {
    config::parse_port(text)
}

/// An address and port to serve metrics on, e.g. `127.0.0.1:9100` or `[::1]:9100`.
fn metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not ADDRESS:PORT, e.g. 127.0.0.1:9100"))?;
    match net::not_for_tcp(addr.ip()) {
        Some(what) => Err(format!("{} is {what}: TCP cannot listen there", addr.ip())),
        None => Ok(addr),
    }
}

/// Prints a line on stdout for the binaries; a reader that went away (`| head`) is not a
/// reason to panic.
pub fn print_line(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

/// A zero idle time or interval would heartbeat a peer the moment it connects; a tick longer
/// than the interval would let timers fire a whole interval late, so that heartbeats bunch up
/// and a peer gets less time to answer than it was promised.
pub fn check_timing(timing: &Timing, tick: Duration) -> Result<(), ConfigError> {
    let invalid = |setting: &str, message: String| ConfigError::Invalid {
        setting: setting.to_string(),
        message,
    };
    if timing.idle.is_zero() {
        return Err(invalid("idle", "must be more than 0".to_string()));
    }
    if timing.count == 0 {
        return Err(invalid(
            "count",
            "must be at least 1: a silent peer is asked at least once".into(),
        ));
    }
    if timing.interval.is_zero() {
        return Err(invalid("interval", "must be more than 0".to_string()));
    }
    if tick > timing.interval {
        let message = format!(
            "{} is longer than the heartbeat interval {}; use at most the interval",
            config::format_duration(tick),
            config::format_duration(timing.interval)
        );
        return Err(invalid("tick", message));
    }
    Ok(())
}

/// Where an address setting came from, for naming it in an error.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Flag(&'static str),
    File(Option<&'a Path>, &'static str),
}

/// Refuses an address TCP can never use (multicast, broadcast) as a bad setting (exit 2):
/// a server listening there would wait for peers that can never come.
fn for_tcp(addr: SocketAddr, origin: Origin) -> Result<SocketAddr, ConfigError> {
    let Some(why) = net::not_for_tcp(addr.ip()) else {
        return Ok(addr);
    };
    let message = format!("{} is {why}: TCP cannot listen or connect there", addr.ip());
    Err(match origin {
        Origin::Flag(flag) => ConfigError::Invalid {
            setting: flag.to_string(),
            message,
        },
        Origin::File(path, key) => ConfigError::Key {
            path: path
                .unwrap_or(Path::new(config::DEFAULT_FILE))
                .to_path_buf(),
            key: key.to_string(),
            message,
        },
    })
}

/// A setup error about a value that came from the configuration file is a configuration
/// error naming the file and the key.
fn from_file<T>(
    path: Option<&Path>,
    key: &str,
    result: Result<T, SetupError>,
) -> Result<T, ConfigError> {
    result.map_err(|e| ConfigError::Key {
        path: path
            .unwrap_or(Path::new(config::DEFAULT_FILE))
            .to_path_buf(),
        key: key.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
