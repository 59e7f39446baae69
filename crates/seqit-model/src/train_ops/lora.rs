//! A frozen projection with a LoRA adapter, `y = x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ`, as one op.
//!
//! Spelled with candle's ops, every adapted projection adds a dropout mask tensor, the
//! masked input, the adapter's output and its sum with the base output, in forward and
//! again in backward (where the gradient of the shared input is summed over the
//! branches). Here the adapter's update is accumulated into the base product's output
//! by gemm, the dropout mask is one bit per value (drawn once, kept for backward), and
//! only the rank-wide `h = drop(x)·Aᵀ` is kept.
//!
//! Backward, with `g = dy`: `dx = g·W + keep ⊙ (s·g·B)·A`, `dB = s·gᵀ·h` and
//! `dA = (s·g·B)ᵀ·drop(x)`.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::{f32_slice, gradient, in_f32, matmul, with_slices, Threads};
use crate::linear::LoraAdapter;
use crate::pool::{parallel, SharedMut};

/// `x @ weightᵀ` plus the adapter's update, for `x: [..., in]`, `weight: [out, in]`
/// (frozen: it gets no gradient) and the adapter's `a: [rank, in]`, `b: [out, rank]`.
pub(crate) fn lora_linear(x: &Tensor, weight: &Tensor, adapter: &LoraAdapter) -> Result<Tensor> {
    // The frozen weight gets no gradient: its f32 copy (none for f32) is the op's own.
    let weight = weight.to_dtype(DType::F32)?;
    in_f32([x, &adapter.a, &adapter.b], |[x, a, b]| {
        lora_linear_f32(&x, &weight, &a, &b, adapter)
    })
}

fn lora_linear_f32(
    x: &Tensor,
    weight: &Tensor,
    a: &Tensor,
    b: &Tensor,
    adapter: &LoraAdapter,
) -> Result<Tensor> {
    let dims = x.dims();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k;
    let keep = adapter
        .dropout
        .as_ref()
        .and_then(|d| Some((d.keep_bits(x.elem_count())?, d.keep_scale())));
    let op = LoraLinearOp {
        weight: weight.contiguous()?,
        scale: adapter.scale as f32,
        keep,
        down: Mutex::new(Vec::new()),
    };
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("rank >= 1") = weight.dim(0)?;
    x.reshape((rows, k))?
        .contiguous()?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)?
        .reshape(out_dims)
}

struct LoraLinearOp {
    weight: Tensor,
    scale: f32,
    /// Dropout's keep-bits of `x` (see [`crate::LoraDropout`]) and the kept values' scale.
    keep: Option<(Vec<u64>, f32)>,
    /// `h = drop(x)·Aᵀ`, `[rows, rank]`, written by forward for backward.
    down: Mutex<Vec<f32>>,
}

impl LoraLinearOp {
    /// `drop(x)`: `x` itself without dropout, else a masked and scaled copy.
    fn dropped<'a>(&self, x: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        let Some((keep, scale)) = &self.keep else {
            return std::borrow::Cow::Borrowed(x);
        };
        let mut out = vec![0f32; x.len()];
        let dst = SharedMut(out.as_mut_ptr());
        parallel(x.len().div_ceil(64), |words| {
            for w in words {
                let (start, end) = (w * 64, x.len().min(w * 64 + 64));
                for (bit, e) in (start..end).enumerate() {
                    let kept = keep[w] >> bit & 1 == 1;
                    // SAFETY: each word's values are written by one unit only.
                    unsafe { *dst.get().add(e) = if kept { x[e] * scale } else { 0.0 } };
                }
            }
        });
        std::borrow::Cow::Owned(out)
    }
}

impl CustomOp3 for LoraLinearOp {
    fn name(&self) -> &'static str {
        "train-lora-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        a: &CpuStorage,
        a_l: &Layout,
        b: &CpuStorage,
        b_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, a, b) = (f32_slice(x, x_l)?, f32_slice(a, a_l)?, f32_slice(b, b_l)?);
        let (rows, k) = x_l.shape().dims2()?;
        let rank = a.len() / k;
        let out_features = b.len() / rank;
        let mut y = vec![0f32; rows * out_features];
        let mut down = vec![0f32; rows * rank];
        with_slices([&self.weight], |[w]| {
            let dropped = self.dropped(x);
            // SAFETY: every operand's extent matches its dimensions (x: rows×k, W: out×k,
            // A: rank×k, B: out×rank, h: rows×rank, y: rows×out).
            unsafe {
                // y = x·Wᵀ
                matmul(
                    (rows, out_features, k),
                    (y.as_mut_ptr(), out_features, 1),
                    false,
                    (x.as_ptr(), k, 1),
                    (w.as_ptr(), 1, k),
                    1.0,
                    Threads::All,
                );
                // h = drop(x)·Aᵀ
                matmul(
                    (rows, rank, k),
                    (down.as_mut_ptr(), rank, 1),
                    false,
                    (dropped.as_ptr(), k, 1),
                    (a.as_ptr(), 1, k),
                    1.0,
                    Threads::All,
                );
                // y += s·h·Bᵀ
                matmul(
                    (rows, out_features, rank),
                    (y.as_mut_ptr(), out_features, 1),
                    true,
                    (down.as_ptr(), rank, 1),
                    (b.as_ptr(), 1, rank),
                    self.scale,
                    Threads::All,
                );
            }
            Ok(())
        })?;
        *self.down.lock().expect("lora lock") = down;
        Ok((CpuStorage::F32(y), Shape::from((rows, out_features))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_y = grad_y.contiguous()?;
        let (rows, k) = x.dims2()?;
        let (rank, out_features) = (a.dim(0)?, b.dim(0)?);
        let down = self.down.lock().expect("lora lock");
        let mut grad_x = vec![0f32; rows * k];
        let mut grad_a = vec![0f32; rank * k];
        let mut grad_b = vec![0f32; out_features * rank];
        let mut grad_down = vec![0f32; rows * rank];
        with_slices([x, a, b, &grad_y, &self.weight], |[x, a, b, g, w]| {
            let dropped = self.dropped(x);
            // SAFETY: as in forward; dx: rows×k, dA: rank×k, dB: out×rank, dh: rows×rank.
            unsafe {
                // dx = g·W
                matmul(
                    (rows, k, out_features),
                    (grad_x.as_mut_ptr(), k, 1),
                    false,
                    (g.as_ptr(), out_features, 1),
                    (w.as_ptr(), k, 1),
                    1.0,
                    Threads::All,
                );
                // dh = s·g·B
                matmul(
                    (rows, rank, out_features),
                    (grad_down.as_mut_ptr(), rank, 1),
                    false,
                    (g.as_ptr(), out_features, 1),
                    (b.as_ptr(), rank, 1),
                    self.scale,
                    Threads::All,
                );
                // dB = s·gᵀ·h
                matmul(
                    (out_features, rank, rows),
                    (grad_b.as_mut_ptr(), rank, 1),
                    false,
                    (g.as_ptr(), 1, out_features),
                    (down.as_ptr(), rank, 1),
                    self.scale,
                    Threads::All,
                );
                // dA = dhᵀ·drop(x)
                matmul(
                    (rank, k, rows),
                    (grad_a.as_mut_ptr(), k, 1),
                    false,
                    (grad_down.as_ptr(), 1, rank),
                    (dropped.as_ptr(), k, 1),
                    1.0,
                    Threads::All,
                );
            }
            match &self.keep {
                // dx += dh·A
                None => unsafe {
                    // SAFETY: as above.
                    matmul(
                        (rows, k, rank),
                        (grad_x.as_mut_ptr(), k, 1),
                        true,
                        (grad_down.as_ptr(), rank, 1),
                        (a.as_ptr(), k, 1),
                        1.0,
                        Threads::All,
                    );
                },
                // dx += keep ⊙ (dh·A)·scale
                Some(_) => {
                    let mut through = vec![0f32; rows * k];
                    // SAFETY: as above.
                    unsafe {
                        matmul(
                            (rows, k, rank),
                            (through.as_mut_ptr(), k, 1),
                            false,
                            (grad_down.as_ptr(), rank, 1),
                            (a.as_ptr(), k, 1),
                            1.0,
                            Threads::All,
                        );
                    }
                    let through = self.dropped(&through);
                    grad_x
                        .iter_mut()
                        .zip(through.iter())
                        .for_each(|(d, t)| *d += t);
                }
            }
            Ok(())
        })?;
        Ok((
            gradient(grad_x, x)?,
            gradient(grad_a, a)?,
            gradient(grad_b, b)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::linear::{DropoutState, LoraDropout};
    use crate::train_ops::test_support::{assert_same_maths, var};

    /// The fused op equals `x·Wᵀ + adapter(x)` spelled with candle's ops, in value and in
    /// the gradients of x, A and B, with and without dropout (same masks by construction).
    #[test]
    fn matches_composite_ops() {
        let (rows, k, out, rank) = (37, 24, 40, 4);
        let weight = var(&[out, k], 1, 1.0).as_tensor().detach();
        let (x, a, b) = (
            var(&[2, rows, k], 2, 1.0),
            var(&[rank, k], 3, 1.0),
            var(&[out, rank], 4, 1.0),
        );
        let state = Arc::new(DropoutState::default());
        let adapter = LoraAdapter {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: 2.0,
            dropout: Some(LoraDropout {
                p: 0.3,
                id: 7,
                state: state.clone(),
            }),
        };
        for dropout in [false, true] {
            if dropout {
                state.enable(99);
            }
            let fused = lora_linear(x.as_tensor(), &weight, &adapter).unwrap();
            let base = x
                .as_tensor()
                .broadcast_matmul(&weight.t().unwrap())
                .unwrap();
            let composite = (base + adapter.forward(x.as_tensor()).unwrap()).unwrap();
            let what = format!("lora, dropout {dropout}");
            assert_same_maths(
                &[("x", &x), ("a", &a), ("b", &b)],
                &fused,
                &composite,
                &what,
            );
        }
        // Dropout drops about p of the values.
        let keep = adapter
            .dropout
            .as_ref()
            .unwrap()
            .keep_bits(64 * 1000)
            .unwrap();
        let kept: u32 = keep.iter().map(|w| w.count_ones()).sum();
        let rate = 1.0 - kept as f64 / 64_000.0;
        assert!((rate - 0.3).abs() < 0.01, "dropout rate {rate}");
    }
}
