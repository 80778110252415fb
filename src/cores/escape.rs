//! Peers' raw bytes made safe to put in a log line: printable ASCII as it is, `\n`, `\r`,
//! `\t`, `\\` and `\xNN` for everything else, so that ESC, CR or NUL from a peer can neither
//! drive the operator's terminal nor forge or split log lines.
//!
//! Owns only the escaping, as a `Display` that writes straight into the formatter (no
//! allocation). Each byte that needs it is escaped by the standard library's
//! `u8::escape_ascii`; runs of plain bytes are written whole, and quotes are left as they are
//! (`<[u8]>::escape_ascii` would write `\"`), which is all that is ours here. What is logged, and when, is the loops' business.

use std::fmt;

/// Displays bytes escaped. A precision limits how many bytes are shown:
/// `format!("{:.4}", Escaped(b"abcdef"))` gives `abcd…(2 more bytes)`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, hidden) = match f.precision() {
            Some(limit) if limit < self.0.len() => self.0.split_at(limit),
            _ => (self.0, &[][..]),
        };
        let mut rest = shown;
        while !rest.is_empty() {
            // The longest run that needs no escape goes out in one write.
            let run = rest.iter().take_while(|b| plain(**b)).count();
            let (printable, after) = rest.split_at(run);
            if let Ok(text) = std::str::from_utf8(printable) {
                f.write_str(text)?;
            }
            let Some((&byte, after)) = after.split_first() else {
                break;
            };
            // The standard library's escape (`\n`, `\r`, `\t`, `\\`, `\xNN`); quotes never get
            // here (they are plain), so a line keeps them as they are.
            write!(f, "{}", byte.escape_ascii())?;
            rest = after;
        }
        if !hidden.is_empty() {
            write!(f, "…({} more bytes)", hidden.len())?;
        }
        Ok(())
    }
}

/// Printable ASCII other than the backslash, shown as it is.
fn plain(byte: u8) -> bool {
    (0x20..0x7f).contains(&byte) && byte != b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(bytes: &[u8]) -> String {
        Escaped(bytes).to_string()
    }

    #[test]
    fn printable_ascii_is_shown_as_it_is() {
        assert_eq!(shown(b"Hello, there ~!\"'{}"), "Hello, there ~!\"'{}");
        assert_eq!(shown(b""), "");
    }

    #[test]
    fn control_bytes_backslashes_and_non_ascii_are_escaped() {
        assert_eq!(shown(b"a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(shown(b"\\"), "\\\\");
        assert_eq!(shown(b"\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(shown(b"\0\x7f\x80\xff"), "\\x00\\x7f\\x80\\xff");
        assert_eq!(shown("é".as_bytes()), "\\xc3\\xa9");
    }

    #[test]
    fn every_byte_comes_out_printable_and_on_one_line() {
        let all: Vec<u8> = (0..=255).collect();
        let text = shown(&all);
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{text}");
        assert_eq!(text.len(), 94 + 2 + 3 * 2 + 4 * (256 - 95 - 3));
    }

    #[test]
    fn a_precision_limits_the_bytes_shown() {
        assert_eq!(format!("{:.4}", Escaped(b"abcdef")), "abcd…(2 more bytes)");
        assert_eq!(
            format!("{:.2}", Escaped(b"\n\n\n")),
            "\\n\\n…(1 more bytes)"
        );
        assert_eq!(format!("{:.6}", Escaped(b"abcdef")), "abcdef");
        assert_eq!(format!("{:.0}", Escaped(b"ab")), "…(2 more bytes)");
    }
}
