//! The SwiGLU gate (Shazeer, 2020): `y = silu(g) · u` with `silu(g) = g·σ(g)`.
//!
//! Backward: `du = dy · silu(g)` and `dg = dy · u · σ(g)·(1 + g·(1 − σ(g)))`.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::{f32_slice, gradient, in_f32, with_slices};
use crate::pool::{parallel, SharedMut};

/// Values per parallel unit: enough work to amortise handing it out.
const CHUNK: usize = 4096;

/// `silu(gate) · up`, elementwise (same shapes).
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    in_f32([gate, up], |[gate, up]| {
        gate.contiguous()?.apply_op2(&up.contiguous()?, SwigluOp)
    })
}

struct SwigluOp;

fn sigmoid(g: f32) -> f32 {
    1.0 / (1.0 + (-g).exp())
}

/// Runs `f(start, end)` over `0..len` in chunks, in parallel.
fn chunked(len: usize, f: impl Fn(usize, usize) + Sync) {
    parallel(len.div_ceil(CHUNK), |units| {
        for unit in units {
            f(unit * CHUNK, len.min((unit + 1) * CHUNK));
        }
    });
}

impl CustomOp2 for SwigluOp {
    fn name(&self) -> &'static str {
        "train-swiglu"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        g_l: &Layout,
        u: &CpuStorage,
        u_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (f32_slice(g, g_l)?, f32_slice(u, u_l)?);
        if g.len() != u.len() {
            candle_core::bail!("swiglu: gate and up differ in size");
        }
        let mut y = vec![0f32; g.len()];
        let y_ptr = SharedMut(y.as_mut_ptr());
        chunked(g.len(), |start, end| {
            for i in start..end {
                // SAFETY: each chunk is written by one unit only.
                unsafe { *y_ptr.get().add(i) = g[i] * sigmoid(g[i]) * u[i] };
            }
        });
        Ok((CpuStorage::F32(y), g_l.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_y = grad_y.contiguous()?;
        let mut grad_g = vec![0f32; gate.elem_count()];
        let mut grad_u = vec![0f32; up.elem_count()];
        let (dg_ptr, du_ptr) = (
            SharedMut(grad_g.as_mut_ptr()),
            SharedMut(grad_u.as_mut_ptr()),
        );
        with_slices([gate, up, &grad_y], |[g, u, dy]| {
            chunked(g.len(), |start, end| {
                for i in start..end {
                    let s = sigmoid(g[i]);
                    // SAFETY: each chunk is written by one unit only.
                    unsafe {
                        *du_ptr.get().add(i) = dy[i] * g[i] * s;
                        *dg_ptr.get().add(i) = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                    }
                }
            });
            Ok(())
        })?;
        Ok((gradient(grad_g, gate)?, gradient(grad_u, up)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_ops::test_support::{assert_same_maths, var};

    #[test]
    fn matches_composite_ops() {
        // More values than one parallel chunk.
        let (g, u) = (var(&[3, 7, 1000], 1, 4.0), var(&[3, 7, 1000], 2, 1.0));
        let fused = swiglu(g.as_tensor(), u.as_tensor()).unwrap();
        let composite = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap();
        assert_same_maths(&[("gate", &g), ("up", &u)], &fused, &composite, "swiglu");
    }
}
