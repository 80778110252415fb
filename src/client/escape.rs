//! Showing a server's bytes on a terminal without letting them drive it: every byte outside
//! printable ASCII is written as an escape (`\x1b`, `\r`, `\0`, `\xff`), so a server cannot
//! clear the screen, move the cursor, or overwrite a line with a fake `Connected with`.

use std::fmt;

/// Displays bytes with control and non-ASCII bytes escaped; a backslash is doubled, so the
/// text can be read back unambiguously.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for &byte in self.0 {
            match byte {
                b'\\' => f.write_str("\\\\")?,
                b' '..=b'~' => f.write_char(char::from(byte))?,
                b'\r' => f.write_str("\\r")?,
                b'\n' => f.write_str("\\n")?,
                b'\t' => f.write_str("\\t")?,
                0 => f.write_str("\\0")?,
                _ => write!(f, "\\x{byte:02x}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let shown = Escaped(b"\x1b[2J\rConnected with evil\0\x07\xff\t\\").to_string();
        assert_eq!(shown, "\\x1b[2J\\rConnected with evil\\0\\x07\\xff\\t\\\\");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert_eq!(Escaped(b"Hello, there").to_string(), "Hello, there");
    }
}
