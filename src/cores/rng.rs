//! A small deterministic random number generator (SplitMix64) for the load client's fault
//! schedule and reconnect back-off, and the server's heartbeat jitter: the same seed gives
//! the same run. Not for anything secret.

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit word of state, good enough statistics
/// for spreading events, and trivially reproducible.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The generator for item `index` of a run seeded `seed`: each item's draws depend only
    /// on the seed and the index, not on the order in which items are handled.
    pub fn for_item(seed: u64, index: u64) -> SplitMix64 {
        let mut mixer = SplitMix64(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        SplitMix64(mixer.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_other_seed_other_numbers() {
        let draw = |seed| {
            let mut g = SplitMix64::new(seed);
            [g.next_u64(), g.next_u64(), g.next_u64()]
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_eq!(
            SplitMix64::for_item(1, 5).next_u64(),
            SplitMix64::for_item(1, 5).next_u64()
        );
        assert_ne!(
            SplitMix64::for_item(1, 5).next_u64(),
            SplitMix64::for_item(1, 6).next_u64()
        );
    }

    #[test]
    fn floats_are_in_the_unit_interval_and_spread() {
        let mut g = SplitMix64::new(42);
        let draws: Vec<f64> = (0..10_000).map(|_| g.next_f64()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let below_half = draws.iter().filter(|&&x| x < 0.5).count();
        assert!((4_700..=5_300).contains(&below_half), "{below_half}");
    }
}
