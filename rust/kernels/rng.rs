//! A tiny counter-seeded generator (SplitMix64) for label shuffles. Each shuffle's stream is a
//! function of (seed, unit, shuffle index) only, so it does not depend on scheduling.

pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator for one (seed, unit, shuffle) triple; the hashing keeps nearby triples apart.
    pub(crate) fn for_stream(seed: u64, unit: u64, shuffle: u64) -> Self {
        let mut g = SplitMix64::new(seed);
        let a = g.next_u64() ^ unit;
        let mut g = SplitMix64::new(a);
        let b = g.next_u64() ^ shuffle;
        let mut g = SplitMix64::new(b);
        SplitMix64::new(g.next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `0..n` (multiply-shift; the bias is below 2^-32 for n < 2^32).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Fisher-Yates shuffle in place.
    pub(crate) fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_reproducible() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        SplitMix64::for_stream(7, 3, 1).shuffle(&mut a);
        SplitMix64::for_stream(7, 3, 1).shuffle(&mut b);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        assert_ne!(a, (0..100).collect::<Vec<u32>>());
        let mut c: Vec<u32> = (0..100).collect();
        SplitMix64::for_stream(7, 4, 1).shuffle(&mut c);
        assert_ne!(a, c);
    }

    #[test]
    fn below_stays_in_range() {
        let mut g = SplitMix64::new(1);
        for n in 1..50 {
            for _ in 0..20 {
                assert!(g.below(n) < n);
            }
        }
    }
}
