//! A connection's buffers carried to another process in a live upgrade: the partial input
//! line (and whether an overlong one is being dropped) and the output the kernel had not
//! taken. Copied only at the upgrade; an idle connection still holds nothing afterwards.

use super::{Buffers, Held};
use crate::cores::protocol::LineDecoder;

impl Buffers {
    /// The partial line, whether an overlong line is being dropped, and the unsent output.
    pub fn parts(&self) -> (&[u8], bool, &[u8]) {
        match self.0.as_deref() {
            Some(held) => {
                let (partial, discarding) = held.decoder.parts();
                (partial, discarding, &held.outbox)
            }
            None => (&[], false, &[]),
        }
    }

    /// Buffers in the state [`parts`](Self::parts) gave (nothing allocated if all is empty).
    pub fn from_parts(max_line: usize, partial: &[u8], discarding: bool, unsent: &[u8]) -> Buffers {
        let decoder = LineDecoder::from_parts(max_line, partial, discarding);
        if decoder.is_at_rest() && unsent.is_empty() {
            return Buffers::default();
        }
        Buffers(Some(Box::new(Held {
            decoder,
            outbox: unsent.to_vec(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_survive_and_nothing_is_allocated_for_an_idle_peer() {
        assert!(Buffers::from_parts(100, b"", false, b"").is_unallocated());
        let buffers = Buffers::from_parts(100, b"half", false, b"Echoing...x\n");
        assert_eq!(
            buffers.parts(),
            (&b"half"[..], false, &b"Echoing...x\n"[..])
        );
        assert_eq!(buffers.unsent(), 12);
        let dropping = Buffers::from_parts(100, b"", true, b"");
        assert_eq!(dropping.parts(), (&b""[..], true, &b""[..]));
    }
}
