//! The interactive questions of the original program: the server asks for its heartbeat
//! settings, the client for its send interval and heartbeat delay. Enter keeps the value
//! shown; a value that does not parse is asked again.
//!
//! Owns the wording and the parsing of answers. It never decides *whether* to ask (the
//! binaries do: only on a terminal, with no timing flag and no `--no-prompt`), and it works
//! on any reader and writer, so tests drive it with byte strings.

use std::io::{self, BufRead, Write};
use std::time::Duration;

use crate::cores::liveness::Timing;
use crate::settings::config::{format_duration, parse_count, parse_duration};

/// Asks for the server's interval, count and idle timeout.
pub fn ask_server_timing(
    input: &mut impl BufRead,
    output: &mut impl Write,
    current: Timing,
) -> io::Result<Timing> {
    let interval = ask(
        input,
        output,
        "Time interval between heartbeats",
        current.interval,
        format_duration,
        |text| more_than_zero(text, "heartbeats would follow each other without a pause"),
    )?;
    let count = ask(
        input,
        output,
        "Number of heartbeats to send before disconnecting",
        current.count,
        |n| n.to_string(),
        parse_count,
    )?;
    writeln!(
        output,
        "(The idle time should be at least interval × count; if not, interval × count is used.)"
    )?;
    let idle = ask(
        input,
        output,
        "Time to wait with no data before starting heartbeats",
        current.idle,
        format_duration,
        |text| more_than_zero(text, "a peer would be asked the moment it connects"),
    )?;
    Ok(Timing {
        interval,
        count,
        idle,
    })
}

/// Asks for the client's data interval and heartbeat delay.
pub fn ask_client_timing(
    input: &mut impl BufRead,
    output: &mut impl Write,
    interval: Duration,
    heartbeat_block: Duration,
) -> io::Result<(Duration, Duration)> {
    let interval = ask(
        input,
        output,
        "Time interval between sending data to the server (0: never)",
        interval,
        format_duration,
        parse_duration,
    )?;
    writeln!(output, "(Delaying heartbeat answers is only for testing.)")?;
    let block = ask(
        input,
        output,
        "Time to wait before answering a heartbeat",
        heartbeat_block,
        format_duration,
        parse_duration,
    )?;
    Ok((interval, block))
}

/// A duration that cannot be zero; `why` says what zero would do.
fn more_than_zero(text: &str, why: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        zero if zero.is_zero() => Err(format!("It must be more than 0: {why}.")),
        duration => Ok(duration),
    }
}

/// Asks one question until the answer parses. Enter, or the end of input, keeps `current`.
fn ask<T: Copy>(
    input: &mut impl BufRead,
    output: &mut impl Write,
    question: &str,
    current: T,
    show: impl Fn(T) -> String,
    parse: impl Fn(&str) -> Result<T, String>,
) -> io::Result<T> {
    loop {
        write!(output, "{question} [{}]: ", show(current))?;
        output.flush()?;
        let mut answer = String::new();
        if input.read_line(&mut answer)? == 0 {
            writeln!(output)?;
            return Ok(current);
        }
        let answer = answer.trim();
        if answer.is_empty() {
            return Ok(current);
        }
        match parse(answer) {
            Ok(value) => return Ok(value),
            Err(message) => writeln!(output, "{message}")?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_keeps_every_default() {
        let mut out = Vec::new();
        let timing = ask_server_timing(&mut &b"\n\n\n"[..], &mut out, Timing::DEFAULT).unwrap();
        assert_eq!(timing, Timing::DEFAULT);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Time interval between heartbeats [10s]: "),
            "{text}"
        );
        assert!(text.contains("[3]: "), "{text}");
        assert!(text.contains("[30s]: "), "{text}");
    }

    #[test]
    fn answers_are_parsed_and_bad_ones_asked_again() {
        let mut out = Vec::new();
        let input = b"5\nlots\n4\n1m\n";
        let timing = ask_server_timing(&mut &input[..], &mut out, Timing::DEFAULT).unwrap();
        assert_eq!(timing.interval, Duration::from_secs(5));
        assert_eq!(timing.count, 4);
        assert_eq!(timing.idle, Duration::from_secs(60));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"lots\" is not a whole number"), "{text}");
    }

    #[test]
    fn zero_where_zero_cannot_work_says_why_and_asks_again() {
        let mut out = Vec::new();
        let input = b"0\n0ms\n2s\n3\n0\n10s\n";
        let timing = ask_server_timing(&mut &input[..], &mut out, Timing::DEFAULT).unwrap();
        assert_eq!(timing.interval, Duration::from_secs(2));
        assert_eq!(timing.count, 3);
        assert_eq!(timing.idle, Duration::from_secs(10));
        let text = String::from_utf8(out).unwrap();
        let interval_asked = "Time interval between heartbeats [10s]: ";
        assert_eq!(text.matches(interval_asked).count(), 3, "{text}");
        assert_eq!(
            text.matches("It must be more than 0: heartbeats would follow")
                .count(),
            2,
            "{text}"
        );
        assert!(
            text.contains("It must be more than 0: a peer would be asked the moment"),
            "{text}"
        );
        assert_eq!(
            text.matches("before starting heartbeats [30s]: ").count(),
            2
        );
        // The client's interval may be 0 (it then never sends data).
        let (interval, _) = ask_client_timing(
            &mut &b"0\n\n"[..],
            &mut Vec::new(),
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(interval, Duration::ZERO);
    }

    #[test]
    fn end_of_input_keeps_the_defaults() {
        let mut out = Vec::new();
        let (interval, block) = ask_client_timing(
            &mut &b"50\n"[..],
            &mut out,
            Duration::from_secs(30),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(interval, Duration::from_secs(50));
        assert_eq!(block, Duration::ZERO);
    }
}
