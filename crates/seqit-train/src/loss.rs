//! Cross-entropy over the trained tokens only (candle's has no ignore-index).

use anyhow::Result;
use candle_core::{Tensor, D};

/// Mean negative log-likelihood of `targets` under `logits` (`[rows, t, vocab]`, the last
/// position unused), weighted by `weights` (`[rows, t - 1]`, 1 for trained tokens).
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let t = logits.dim(1)?;
    let logits = logits.narrow(1, 0, t - 1)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = log_probs
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let total = (picked * weights)?.sum_all()?;
    let count = weights.sum_all()?.to_scalar::<f32>()?.max(1.0);
    Ok((total.neg()? / count as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_hand_computed_value() {
        // One row, t = 3, vocab 2: positions 0 and 1 predict tokens 1 and 0.
        let logits = Tensor::new(
            &[[[0f32, 0.0], [2.0f32.ln(), 0.0], [9.0, 9.0]]],
            &Device::Cpu,
        )
        .unwrap();
        let targets = Tensor::new(&[[1u32, 0]], &Device::Cpu).unwrap();
        let both = Tensor::new(&[[1f32, 1.0]], &Device::Cpu).unwrap();
        let first = Tensor::new(&[[1f32, 0.0]], &Device::Cpu).unwrap();
        let loss = |w: &Tensor| {
            masked_cross_entropy(&logits, &targets, w)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        // -ln(1/2) and -ln(2/3)
        let (l0, l1) = (2f32.ln(), (1.5f32).ln());
        assert!((loss(&both) - (l0 + l1) / 2.0).abs() < 1e-6);
        assert!((loss(&first) - l0).abs() < 1e-6);
    }
}
