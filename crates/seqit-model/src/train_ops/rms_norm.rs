//! RMSNorm (Zhang & Sennrich, 2019) over the last dimension: `y = x · r · w` with
//! `r = 1 / sqrt(mean(x²) + eps)` per row.
//!
//! Backward, with `a = dy ⊙ w`: `dx = r·a − x·r³·(a·x)/n` and `dw = Σ_rows dy ⊙ x·r`.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::{f32_slice, gradient, in_f32, with_slices};
use crate::pool::{parallel, SharedMut};

/// Rows per partial sum of the weight's gradient.
const ROWS_PER_PARTIAL: usize = 64;

/// `x: [..., n]` normalised and scaled by `weight: [n]`.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    in_f32([x, weight], |[x, weight]| {
        let op = RmsNormOp {
            eps,
            inverse_rms: Mutex::new(Vec::new()),
        };
        x.contiguous()?.apply_op2(&weight.contiguous()?, op)
    })
}

struct RmsNormOp {
    eps: f32,
    /// `r` of each row, written by forward for backward.
    inverse_rms: Mutex<Vec<f32>>,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "train-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (f32_slice(x, x_l)?, f32_slice(w, w_l)?);
        let n = w.len();
        let rows = x.len() / n;
        let mut y = vec![0f32; x.len()];
        let mut inverse_rms = vec![0f32; rows];
        let (y_ptr, r_ptr) = (
            SharedMut(y.as_mut_ptr()),
            SharedMut(inverse_rms.as_mut_ptr()),
        );
        parallel(rows, |range| {
            for i in range {
                let row = &x[i * n..(i + 1) * n];
                let r = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / n as f32 + self.eps).sqrt();
                // SAFETY: each row is written by one unit only.
                let out = unsafe { std::slice::from_raw_parts_mut(y_ptr.get().add(i * n), n) };
                for ((o, v), w) in out.iter_mut().zip(row).zip(w) {
                    *o = v * r * w;
                }
                unsafe { *r_ptr.get().add(i) = r };
            }
        });
        *self.inverse_rms.lock().expect("rms lock") = inverse_rms;
        Ok((CpuStorage::F32(y), x_l.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_y = grad_y.contiguous()?;
        let inverse_rms = self.inverse_rms.lock().expect("rms lock");
        let n = w.elem_count();
        let rows = inverse_rms.len();
        let mut grad_x = vec![0f32; x.elem_count()];
        let want_grad_w = w.track_op();
        // dw is summed per fixed block of rows, then over blocks in order: the result
        // does not depend on how the pool scheduled the blocks (exact resume relies on it).
        let blocks = rows.div_ceil(ROWS_PER_PARTIAL);
        let mut partials = vec![0f32; if want_grad_w { blocks * n } else { 0 }];
        let dx_ptr = SharedMut(grad_x.as_mut_ptr());
        let partials_ptr = SharedMut(partials.as_mut_ptr());
        with_slices([x, w, &grad_y], |[x, w, grad_y]| {
            parallel(blocks, |range| {
                for block in range {
                    let first = block * ROWS_PER_PARTIAL;
                    for i in first..rows.min(first + ROWS_PER_PARTIAL) {
                        let (row, dy) = (&x[i * n..(i + 1) * n], &grad_y[i * n..(i + 1) * n]);
                        let r = inverse_rms[i];
                        let ax: f32 = dy.iter().zip(w).zip(row).map(|((g, w), v)| g * w * v).sum();
                        let c = r * r * r * ax / n as f32;
                        // SAFETY: each row and each block's partial sum is written by one
                        // unit only.
                        let dx =
                            unsafe { std::slice::from_raw_parts_mut(dx_ptr.get().add(i * n), n) };
                        for (((dx, g), w), v) in dx.iter_mut().zip(dy).zip(w).zip(row) {
                            *dx = r * g * w - v * c;
                        }
                        if want_grad_w {
                            let partial = unsafe {
                                std::slice::from_raw_parts_mut(partials_ptr.get().add(block * n), n)
                            };
                            for ((pw, g), v) in partial.iter_mut().zip(dy).zip(row) {
                                *pw += g * v * r;
                            }
                        }
                    }
                }
            });
            Ok(())
        })?;
        let grad_w = want_grad_w
            .then(|| {
                let mut total = vec![0f32; n];
                for partial in partials.chunks_exact(n) {
                    total.iter_mut().zip(partial).for_each(|(t, p)| *t += p);
                }
                Tensor::from_vec(total, n, w.device())
            })
            .transpose()?;
        Ok((gradient(grad_x, x)?, grad_w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_ops::test_support::{assert_same_maths, max_abs, max_abs_diff, var};

    #[test]
    fn matches_composite_ops() {
        let (x, w) = (var(&[3, 5, 48], 1, 2.0), var(&[48], 2, 1.0));
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let composite = candle_nn::ops::rms_norm_slow(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        assert_same_maths(&[("x", &x), ("w", &w)], &fused, &composite, "rms-norm");
    }

    /// bf16 inputs: computed in f32, rounded once into a bf16 result, and the gradient
    /// flows back through the casts.
    #[test]
    fn bf16_runs_in_f32_and_returns_bf16() {
        use candle_core::DType;
        let (x, w) = (var(&[3, 5, 48], 1, 2.0), var(&[48], 2, 1.0));
        let bf16 = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
        let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let (xb, wb) = (bf16(x.as_tensor()), bf16(w.as_tensor()));
        let out = rms_norm(&xb, &wb, 1e-5).unwrap();
        assert_eq!(out.dtype(), DType::BF16);
        let reference = bf16(&rms_norm(&f32(&xb), &f32(&wb), 1e-5).unwrap());
        assert_eq!(max_abs_diff(&f32(&out), &f32(&reference)), 0.0);
        let grads = f32(&out).sum_all().unwrap().backward().unwrap();
        assert!(max_abs(grads.get(x.as_tensor()).unwrap()) > 0.0);
        assert!(max_abs(grads.get(w.as_tensor()).unwrap()) > 0.0);
    }
}
