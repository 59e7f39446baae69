//! Cross-entropy over the trained tokens only (candle's has no ignore-index).
//!
//! On the CPU it is one op whose backward pass writes `softmax − one-hot` straight into
//! the logits' gradient: the log-softmax temporaries of a `[rows, t, vocab]` tensor
//! (hundreds of MB for a 49k vocabulary) are never materialised.

use anyhow::Result;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor, D};
use rayon::prelude::*;

/// Mean negative log-likelihood of `targets` under `logits` (`[rows, t, vocab]`, the last
/// position unused), weighted by `weights` (`[rows, t - 1]`, 1 for trained tokens).
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    if !logits.device().is_cpu() || logits.dtype() != DType::F32 {
        return composite_cross_entropy(logits, targets, weights);
    }
    let weights: Vec<f32> = weights.flatten_all()?.to_vec1()?;
    let op = MaskedCrossEntropy {
        targets: targets.flatten_all()?.to_vec1()?,
        count: weights.iter().sum::<f32>().max(1.0),
        weights,
        t: logits.dim(1)?,
    };
    Ok(logits.contiguous()?.apply_op1(op)?)
}

/// The same loss spelled with candle's differentiable ops (other devices and dtypes).
fn composite_cross_entropy(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
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

struct MaskedCrossEntropy {
    /// `[rows · (t − 1)]`: the token each position predicts, and its weight.
    targets: Vec<u32>,
    weights: Vec<f32>,
    count: f32,
    t: usize,
}

impl MaskedCrossEntropy {
    /// `(logits row, target, weight)` of every weighted position `j` (row-major over
    /// `[rows, t]`, the last position of each row excluded).
    fn position(&self, j: usize) -> Option<(usize, f32)> {
        let (row, i) = (j / self.t, j % self.t);
        if i + 1 == self.t {
            return None;
        }
        let k = row * (self.t - 1) + i;
        let w = self.weights[k];
        (w != 0.0).then(|| (self.targets[k] as usize, w))
    }
}

/// `log Σ exp(x)`, stably.
fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
        candle_core::bail!("masked cross-entropy takes contiguous f32 logits");
    };
    Ok(&data[start..end])
}

impl CustomOp1 for MaskedCrossEntropy {
    fn name(&self) -> &'static str {
        "masked-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let logits = f32_slice(s, l)?;
        let vocab = l.shape().dims()[2];
        let total: f64 = logits
            .par_chunks(vocab)
            .enumerate()
            .filter_map(|(j, row)| {
                let (target, w) = self.position(j)?;
                Some(w as f64 * (log_sum_exp(row) - row[target]) as f64)
            })
            .sum();
        Ok((
            CpuStorage::F32(vec![(total / self.count as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        _loss: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let scale = grad.to_scalar::<f32>()? / self.count;
        let (storage, layout) = logits.storage_and_layout();
        let Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("masked cross-entropy: logits not on the CPU");
        };
        let data = f32_slice(storage, layout)?;
        let vocab = layout.shape().dims()[2];
        let mut out = vec![0f32; data.len()];
        out.par_chunks_mut(vocab)
            .zip(data.par_chunks(vocab))
            .enumerate()
            .for_each(|(j, (g, row))| {
                let Some((target, w)) = self.position(j) else {
                    return;
                };
                let lse = log_sum_exp(row);
                let s = w * scale;
                for (g, x) in g.iter_mut().zip(row) {
                    *g = (x - lse).exp() * s;
                }
                g[target] -= s;
            });
        Ok(Some(Tensor::from_vec(
            out,
            layout.shape(),
            logits.device(),
        )?))
    }
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

    /// The fused op and the composite one agree on the value and the gradient.
    #[test]
    fn fused_matches_composite_gradient() {
        let dev = Device::Cpu;
        let values: Vec<f32> = (0..2 * 5 * 7)
            .map(|i| ((i as f32) * 0.73).sin() * 3.0)
            .collect();
        let var =
            candle_core::Var::from_tensor(&Tensor::from_vec(values, (2, 5, 7), &dev).unwrap())
                .unwrap();
        let targets = Tensor::new(&[[1u32, 6, 0, 3], [2, 2, 5, 4]], &dev).unwrap();
        let weights = Tensor::new(&[[0f32, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]], &dev).unwrap();
        let fused = masked_cross_entropy(var.as_tensor(), &targets, &weights).unwrap();
        let composite = composite_cross_entropy(var.as_tensor(), &targets, &weights).unwrap();
        let (a, b) = (
            fused.to_scalar::<f32>().unwrap(),
            composite.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        let gradient = |loss: &Tensor| -> Vec<f32> {
            let grads = loss.backward().unwrap();
            let g = grads.get(var.as_tensor()).unwrap();
            g.flatten_all().unwrap().to_vec1().unwrap()
        };
        let (ga, gb) = (gradient(&fused), gradient(&composite));
        let d = ga
            .iter()
            .zip(&gb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "gradient difference {d}");
    }
}
