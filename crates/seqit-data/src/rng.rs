//! A seeded random number generator whose output is fixed by this crate, not by the
//! version of `rand`: ChaCha8 (value-stable) with our own bounded sampling and shuffle.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Used by the data tools and the manual builders (`seqit-build`) so that one seed gives
/// the same selection everywhere.
pub struct SeededRng(ChaCha8Rng);

impl SeededRng {
    /// A generator seeded with `seed`; the same seed always gives the same numbers.
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A uniform integer in `0..n` (`n > 0`), by rejection sampling.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.0.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// `k` distinct indices of `0..n`, in random order (partial Fisher–Yates).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut indices: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            indices.swap(i, j);
        }
        indices.truncate(k.min(n));
        indices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_uniform_enough() {
        let a: Vec<usize> = {
            let mut r = SeededRng::new(7);
            (0..20).map(|_| r.below(10)).collect()
        };
        let b: Vec<usize> = {
            let mut r = SeededRng::new(7);
            (0..20).map(|_| r.below(10)).collect()
        };
        assert_eq!(a, b);
        let mut r = SeededRng::new(1);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[r.below(4)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
        let s = SeededRng::new(3).sample(10, 4);
        assert_eq!(s.len(), 4);
        let mut sorted = s.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
    }
}
