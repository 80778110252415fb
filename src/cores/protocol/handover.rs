//! A line decoder's state carried to another process in a live upgrade: the line begun and
//! whether an overlong line is being dropped. Copied only at the upgrade, never per line.

use super::LineDecoder;

impl LineDecoder {
    /// The line begun and not yet ended, and whether the rest of an overlong one is being
    /// dropped (never both).
    pub fn parts(&self) -> (&[u8], bool) {
        (&self.partial, self.discarding)
    }

    /// A decoder in the state [`parts`](Self::parts) gave. A `partial` longer than
    /// `max_line` (a setting lowered in the upgrade) is dropped as the overlong line it is
    /// now, to its newline.
    pub fn from_parts(max_line: usize, partial: &[u8], discarding: bool) -> LineDecoder {
        let mut decoder = LineDecoder::new();
        if discarding || partial.len() > max_line {
            decoder.discarding = true;
        } else if !partial.is_empty() {
            decoder.hold(max_line, partial);
        }
        decoder
    }
}

#[cfg(test)]
mod tests {
    use super::super::Frame;
    use super::*;

    fn lines(decoder: &mut LineDecoder, input: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        decoder.feed(100, input, |frame| match frame {
            Frame::Line(line) => out.push(line.to_vec()),
            Frame::TooLong => out.push(b"<too long>".to_vec()),
        });
        out
    }

    #[test]
    fn a_line_split_across_the_upgrade_comes_out_whole_once() {
        let mut old = LineDecoder::new();
        assert!(lines(&mut old, b"first\nsec").len() == 1);
        let (partial, discarding) = old.parts();
        let mut new = LineDecoder::from_parts(100, partial, discarding);
        assert_eq!(lines(&mut new, b"ond\n"), vec![b"second".to_vec()]);
        assert!(new.is_at_rest());
    }

    #[test]
    fn an_overlong_line_being_dropped_stays_dropped() {
        let mut new = LineDecoder::from_parts(100, b"", true);
        assert_eq!(
            lines(&mut new, b"rest of it\nnext\n"),
            vec![b"next".to_vec()]
        );
        let mut lowered = LineDecoder::from_parts(3, b"abcdef", false);
        assert!(lowered.parts().1, "longer than the new limit: dropped");
        let mut out = Vec::new();
        lowered.feed(3, b"gh\nok\n", |frame| {
            if let Frame::Line(line) = frame {
                out.push(line.to_vec())
            }
        });
        assert_eq!(out, vec![b"ok".to_vec()]);
    }
}
