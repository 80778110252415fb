//! Finding every `\n` in a read, 64 bytes at a time: a block is compared with `\n` in one
//! pass into a 64-bit mask (a bit per byte), and each line end is then the mask's lowest set
//! bit. For short pipelined lines this replaces a search call per line (whose setup costs
//! more than the search) with a few instructions.
//!
//! Under 64 bytes (a short read, a read's last lines), and for long lines (two blocks without
//! a `\n`, until a line of 128 bytes or less comes), a `memchr` call finds the next `\n`
//! instead: one call is faster than a mask per 64 bytes there.
//!
//! Owns only the search; what a line means is `protocol`'s. On x86-64 the masks come from
//! SSE2 (part of every x86-64 CPU) through `safe_arch`, which wraps the intrinsics in safe
//! functions; elsewhere a portable loop builds the same mask.

use memchr::memchr;

/// The positions of every `\n` in a byte slice, in order.
#[derive(Debug, Clone)]
pub struct LineEnds<'a> {
    input: &'a [u8],
    /// Where the bits of `mask` count from.
    base: usize,
    /// One bit per byte from `base` that is a `\n` not yet given out.
    mask: u64,
    /// The first byte no mask or search has looked at.
    scanned: usize,
    /// The lines are long (the last search found one of over [`LONG_LINE`] bytes): each end
    /// is found by a search call, which is faster than a mask per 64 bytes for long lines
    /// and slower than masks for short ones.
    long: bool,
}

const BLOCK: usize = 64;
/// A line longer than this switches to searching; a shorter one back to masks.
const LONG_LINE: usize = 2 * BLOCK;

impl<'a> LineEnds<'a> {
    pub fn new(input: &'a [u8]) -> LineEnds<'a> {
        LineEnds {
            input,
            base: 0,
            mask: 0,
            scanned: 0,
            long: false,
        }
    }

    /// Finds the next line ends at or after `scanned`: false when there are none. The line
    /// lengths that switch between masks and searches count from `from` (at least a line's
    /// length: its start may lie before).
    #[inline]
    fn refill(&mut self) -> bool {
        let from = self.scanned;
        loop {
            let Some(rest) = self.input.get(self.scanned..) else {
                return false;
            };
            let block = match rest.first_chunk::<BLOCK>() {
                Some(block) if !self.long => block,
                // Long lines, or under 64 bytes left (a short read, a read's last lines):
                // a search call for the next end.
                _ => return self.search(from),
            };
            self.mask = newline_mask(block);
            self.base = self.scanned;
            self.scanned += BLOCK;
            if self.mask != 0 {
                return true;
            }
            self.long = self.scanned - from >= LONG_LINE;
        }
    }

    /// Searches from `scanned` for the next line end (see `refill` for `from`).
    #[inline]
    fn search(&mut self, from: usize) -> bool {
        let rest = self.input.get(self.scanned..).unwrap_or_default();
        let Some(end) = memchr(b'\n', rest) else {
            self.scanned = self.input.len();
            return false;
        };
        self.base = self.scanned + end;
        self.mask = 1;
        self.scanned = self.base + 1;
        self.long = self.base - from > LONG_LINE;
        true
    }
}

impl Iterator for LineEnds<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.mask == 0 && !self.refill() {
            return None;
        }
        let bit = self.mask.trailing_zeros() as usize;
        // Clears the lowest set bit.
        self.mask &= self.mask - 1;
        Some(self.base + bit)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn newline_mask(block: &[u8; BLOCK]) -> u64 {
    use safe_arch::{cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i};
    use safe_arch::{m128i, set_splat_i8_m128i};

    let newline: m128i = set_splat_i8_m128i(b'\n' as i8);
    let mut mask = 0;
    for (i, sixteen) in block.chunks_exact(16).enumerate() {
        let Some(sixteen) = sixteen.first_chunk::<16>() else {
            continue;
        };
        let equal = cmp_eq_mask_i8_m128i(load_unaligned_m128i(sixteen), newline);
        // `move_mask` gives 16 bits in the low half of an i32: reinterpreted, not truncated.
        mask |= u64::from(move_mask_i8_m128i(equal) as u16) << (16 * i);
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn newline_mask(block: &[u8; BLOCK]) -> u64 {
    portable_newline_mask(block)
}

/// The mask without SSE2 (and, in tests, the reference the SSE2 mask is held to).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn portable_newline_mask(block: &[u8; BLOCK]) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0, |mask, (i, byte)| mask | u64::from(*byte == b'\n') << i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(input: &[u8]) -> Vec<usize> {
        input
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn finds_ends_across_block_edges() {
        let mut input = vec![b'x'; 200];
        for i in [0, 15, 16, 63, 64, 65, 127, 128, 199] {
            input[i] = b'\n';
        }
        let got: Vec<usize> = LineEnds::new(&input).collect();
        assert_eq!(got, vec![0, 15, 16, 63, 64, 65, 127, 128, 199]);
        // A long line: no line end in a whole block, found by a search, then masks again.
        let mut long = vec![b'x'; 400];
        for i in [3, 70, 300, 301, 366, 399] {
            long[i] = b'\n';
        }
        let got: Vec<usize> = LineEnds::new(&long).collect();
        assert_eq!(got, vec![3, 70, 300, 301, 366, 399]);
        assert_eq!(LineEnds::new(b"").count(), 0);
        assert_eq!(LineEnds::new(&[b'x'; 64]).count(), 0);
    }

    proptest! {
        /// Every `\n`, in order, and nothing else, for any bytes and any length.
        #[test]
        fn matches_a_byte_by_byte_search(
            input in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..300)
        ) {
            prop_assert_eq!(LineEnds::new(&input).collect::<Vec<_>>(), naive(&input));
        }

        /// The mask of any block is the portable loop's, bit for bit.
        #[test]
        fn the_mask_is_the_portable_one(
            block in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 64)
        ) {
            let block: &[u8; BLOCK] = block.first_chunk().expect("64 bytes");
            prop_assert_eq!(newline_mask(block), portable_newline_mask(block));
        }

        /// The same with line ends far apart (long lines, blocks without one).
        #[test]
        fn matches_a_byte_by_byte_search_for_long_lines(
            input in prop::collection::vec(prop_oneof![1 => Just(b'\n'), 60 => any::<u8>()], 0..1000)
        ) {
            prop_assert_eq!(LineEnds::new(&input).collect::<Vec<_>>(), naive(&input));
        }
    }
}
