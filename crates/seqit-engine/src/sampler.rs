//! Choosing the next token from logits: greedy, or temperature + top-k + top-p with a
//! seeded generator per sequence.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seqit_core::SamplingParams;

/// Picks each next token of one sequence from its logits, per [`SamplingParams`]; the
/// engine makes one per sequence.
pub struct Sampler {
    temperature: f64,
    top_k: usize,
    top_p: f64,
    rng: Option<StdRng>,
}

impl Sampler {
    /// A sampler for these settings, its generator seeded with `params.seed` (none when
    /// greedy).
    pub fn new(params: &SamplingParams) -> Self {
        let rng = (!params.is_greedy()).then(|| StdRng::seed_from_u64(params.seed));
        Self {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            rng,
        }
    }

    /// The next token id: the argmax when greedy, else a draw after temperature, top-k and
    /// top-p.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let Some(rng) = self.rng.as_mut() else {
            return argmax(logits);
        };
        // Candidates as (id, logit), best first, cut to top-k.
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        let by_logit_desc =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if self.top_k > 0 && self.top_k < candidates.len() {
            candidates.select_nth_unstable_by(self.top_k - 1, by_logit_desc);
            candidates.truncate(self.top_k);
        }
        candidates.sort_unstable_by(by_logit_desc);
        let max = candidates[0].1 as f64;
        let mut probs: Vec<f64> = candidates
            .iter()
            .map(|(_, l)| ((*l as f64 - max) / self.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cumulative += p;
                    cumulative >= self.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut draw: f64 = rng.random();
        for (i, p) in probs.iter().enumerate() {
            draw -= p;
            if draw <= 0.0 {
                return candidates[i].0;
            }
        }
        candidates[probs.len() - 1].0
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
            ..SamplingParams::greedy(1)
        }
    }

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(&params(0.0, 0, 1.0, 0));
        assert_eq!(s.sample(&[0.1, 3.0, 2.9, -1.0]), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [5.0, 4.9, 0.0, -1.0, 4.8];
        let mut k2 = Sampler::new(&params(1.0, 2, 1.0, 7));
        let mut p_small = Sampler::new(&params(1.0, 0, 0.3, 7));
        for _ in 0..500 {
            assert!(matches!(k2.sample(&logits), 0 | 1));
            assert_eq!(p_small.sample(&logits), 0);
        }
    }

    #[test]
    fn same_seed_same_draws_and_distribution_follows_softmax() {
        let logits = [1.0f32, 0.0, (3f32).ln()];
        let draw = |seed| {
            let mut s = Sampler::new(&params(1.0, 0, 1.0, seed));
            (0..4000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let counts = draw(11).iter().fold([0usize; 3], |mut c, &t| {
            c[t as usize] += 1;
            c
        });
        // softmax([1, 0, ln 3]) = [e, 1, 3] / (e + 4) ≈ [0.405, 0.149, 0.446]
        let share = |i: usize| counts[i] as f64 / 4000.0;
        assert!((share(0) - 0.405).abs() < 0.03, "{counts:?}");
        assert!((share(1) - 0.149).abs() < 0.03, "{counts:?}");
        assert!((share(2) - 0.446).abs() < 0.03, "{counts:?}");
    }
}
