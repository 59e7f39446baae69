//! Self-attention for training on the CPU: RoPE, scaled dot products, the additive mask,
//! softmax and the weighted sum of values as one op with a hand-written backward pass.
//!
//! Spelled with candle's elementary ops, attention materialises a dozen `[batch, heads,
//! t, t]` tensors per layer (scores, mask sum, max, exponentials, probabilities and their
//! gradients), each one a pass over memory. Here the work is done per (row, KV head) in
//! blocks of query rows that live in cache, with matrix products on gemm, and only the
//! keys that the mask leaves visible to a block are multiplied: under a causal mask, 56%
//! of them at t = 512. Forward keeps only each query's log-sum-exp; backward recomputes the
//! probabilities from it (the FlashAttention recipe, Dao et al. 2022, on a CPU).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::{f32_slice, gradient, in_f32, matmul, with_slices, Threads};
use crate::config::RopeLayout;
use crate::pool::{parallel, SharedMut};

/// Query rows per block: a block's scores (`QUERY_BLOCK × t`) stay in L2.
const QUERY_BLOCK: usize = 64;

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layout: RopeLayout,
}

/// Attention over `q: [batch, t, heads·d]`, `k`, `v: [batch, t, kv_heads·d]` (projected,
/// not rotated) with RoPE angles `cos`, `sin: [batch, t, d/2]` and an additive mask
/// `[batch, 1, t, t]` (0 or -inf, f32; `None`: every key visible). Returns `[batch, t,
/// heads·d]`, in `q`'s dtype (computed in f32).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: Option<&Tensor>,
    heads: Heads,
) -> Result<Tensor> {
    let (batch, t, _) = q.dims3()?;
    let flat = |x: &Tensor| -> Result<Vec<f32>> {
        x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
    };
    // Every layer's op shares the one mask tensor (kept for backward), instead of a copy.
    let mask = mask.map(Tensor::contiguous).transpose()?;
    let visible = match &mask {
        Some(m) => with_slices([m], |[m]| Ok(key_ranges(Some(m), batch, t)))?,
        None => key_ranges(None, batch, t),
    };
    let op = AttentionOp {
        heads,
        batch,
        t,
        cos: flat(cos)?,
        sin: flat(sin)?,
        mask,
        visible,
        log_sum_exp: Mutex::new(Vec::new()),
    };
    in_f32([q, k, v], |[q, k, v]| {
        q.contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
    })
}

struct AttentionOp {
    heads: Heads,
    batch: usize,
    t: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// `[batch, 1, t, t]`, contiguous f32 on the CPU.
    mask: Option<Tensor>,
    /// Per (row, query block): the keys `[start, end)` that some query of it may see.
    visible: Vec<(usize, usize)>,
    /// Per (row, head, query): `log Σ_j exp(score)`, written by forward for backward.
    log_sum_exp: Mutex<Vec<f32>>,
}

/// For each (row, query block), the smallest key range holding every key with a finite
/// mask value for some query of the block.
fn key_ranges(mask: Option<&[f32]>, batch: usize, t: usize) -> Vec<(usize, usize)> {
    let blocks = t.div_ceil(QUERY_BLOCK);
    let mut ranges = Vec::with_capacity(batch * blocks);
    for b in 0..batch {
        for block in 0..blocks {
            let rows = block * QUERY_BLOCK..t.min((block + 1) * QUERY_BLOCK);
            let Some(mask) = mask else {
                ranges.push((0, t));
                continue;
            };
            let (mut start, mut end) = (t, 0);
            for i in rows {
                let row = &mask[(b * t + i) * t..(b * t + i + 1) * t];
                if let Some(first) = row.iter().position(|m| m.is_finite()) {
                    let last = row
                        .iter()
                        .rposition(|m| m.is_finite())
                        .expect("has a first");
                    start = start.min(first);
                    end = end.max(last + 1);
                }
            }
            ranges.push(if start < end { (start, end) } else { (0, 0) });
        }
    }
    ranges
}

/// Rotates each of the `t` rows (`head_dim` wide, `row_stride` apart in `src`) by its
/// position's angles into the dense `[t, head_dim]` `dst`; `inverse` rotates back (the
/// transpose of the rotation, which is how gradients flow through it).
#[allow(clippy::too_many_arguments)]
fn rotate(
    src: &[f32],
    row_stride: usize,
    cos: &[f32],
    sin: &[f32],
    layout: RopeLayout,
    inverse: bool,
    dst: &mut [f32],
    head_dim: usize,
) {
    let half = head_dim / 2;
    let sign = if inverse { -1.0 } else { 1.0 };
    for (i, out) in dst.chunks_exact_mut(head_dim).enumerate() {
        let x = &src[i * row_stride..i * row_stride + head_dim];
        let (c, s) = (
            &cos[i * half..(i + 1) * half],
            &sin[i * half..(i + 1) * half],
        );
        for j in 0..half {
            let (a, b) = match layout {
                RopeLayout::HalfSplit => (j, j + half),
                RopeLayout::Interleaved => (2 * j, 2 * j + 1),
            };
            let (sj, cj) = (sign * s[j], c[j]);
            out[a] = x[a] * cj - x[b] * sj;
            out[b] = x[b] * cj + x[a] * sj;
        }
    }
}

impl AttentionOp {
    /// Runs `f` with the mask's values (`None`: no mask).
    fn with_mask<R>(&self, f: impl FnOnce(Option<&[f32]>) -> Result<R>) -> Result<R> {
        match &self.mask {
            Some(mask) => with_slices([mask], |[mask]| f(Some(mask))),
            None => f(None),
        }
    }

    fn scale(&self) -> f32 {
        1.0 / (self.heads.head_dim as f32).sqrt()
    }

    /// Angles of row `b`'s positions.
    fn angles(&self, b: usize) -> (&[f32], &[f32]) {
        let n = self.t * self.heads.head_dim / 2;
        (&self.cos[b * n..(b + 1) * n], &self.sin[b * n..(b + 1) * n])
    }

    /// Rotated heads of row `b`: `x` is `[batch, t, count·d]`, `index` the head.
    fn rotated(&self, x: &[f32], b: usize, index: usize, count: usize, out: &mut [f32]) {
        let (d, t) = (self.heads.head_dim, self.t);
        let (cos, sin) = self.angles(b);
        let start = b * t * count * d + index * d;
        rotate(
            &x[start..],
            count * d,
            cos,
            sin,
            self.heads.layout,
            false,
            out,
            d,
        );
    }

    /// Scores of queries `rows` (rotated, `[t, d]`) against keys `keys`, scaled and
    /// masked, into `scores` (`rows.len() × keys.len()`, row-major).
    fn scores(
        &self,
        b: usize,
        rows: std::ops::Range<usize>,
        keys: (usize, usize),
        (q, k, mask): (&[f32], &[f32], Option<&[f32]>),
        scores: &mut [f32],
    ) {
        let (d, t) = (self.heads.head_dim, self.t);
        let width = keys.1 - keys.0;
        // SAFETY: the operands are in bounds: `q` and `k` are `[t, d]`, `scores` holds
        // `rows.len() × width` values.
        unsafe {
            matmul(
                (rows.len(), width, d),
                (scores.as_mut_ptr(), width, 1),
                false,
                (q.as_ptr().add(rows.start * d), d, 1),
                (k.as_ptr().add(keys.0 * d), 1, d),
                self.scale(),
                Threads::One,
            );
        }
        if let Some(mask) = mask {
            for (r, i) in rows.enumerate() {
                let m = &mask[(b * t + i) * t + keys.0..(b * t + i) * t + keys.1];
                for (s, m) in scores[r * width..(r + 1) * width].iter_mut().zip(m) {
                    *s += m;
                }
            }
        }
    }

    /// Forward pass of row `b`, KV head `g`: writes the outputs of its query heads into
    /// `out` and their log-sum-exps into `lse`.
    fn forward_unit(
        &self,
        b: usize,
        g: usize,
        (q, k, v): (&[f32], &[f32], &[f32]),
        mask: Option<&[f32]>,
        (out, lse): (SharedMut<f32>, SharedMut<f32>),
    ) {
        let Heads {
            heads,
            kv_heads,
            head_dim: d,
            ..
        } = self.heads;
        let t = self.t;
        let group = heads / kv_heads;
        let mut k_rot = vec![0f32; t * d];
        self.rotated(k, b, g, kv_heads, &mut k_rot);
        let mut q_rot = vec![0f32; t * d];
        let mut scores = vec![0f32; QUERY_BLOCK * t];
        let v_base = b * t * kv_heads * d + g * d;
        for h in g * group..(g + 1) * group {
            self.rotated(q, b, h, heads, &mut q_rot);
            for block in 0..t.div_ceil(QUERY_BLOCK) {
                let rows = block * QUERY_BLOCK..t.min((block + 1) * QUERY_BLOCK);
                let keys = self.visible[b * t.div_ceil(QUERY_BLOCK) + block];
                let width = keys.1 - keys.0;
                let out_base = (b * t + rows.start) * heads * d + h * d;
                let lse_base = (b * heads + h) * t + rows.start;
                if width == 0 {
                    for r in 0..rows.len() {
                        // SAFETY: this unit owns head `h` of row `b`.
                        unsafe {
                            std::slice::from_raw_parts_mut(out.0.add(out_base + r * heads * d), d)
                                .fill(0.0);
                            *lse.0.add(lse_base + r) = f32::NEG_INFINITY;
                        }
                    }
                    continue;
                }
                let scores = &mut scores[..rows.len() * width];
                self.scores(b, rows.clone(), keys, (&q_rot, &k_rot, mask), scores);
                for (r, row) in scores.chunks_exact_mut(width).enumerate() {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let total = if max == f32::NEG_INFINITY {
                        row.fill(0.0);
                        f32::NEG_INFINITY
                    } else {
                        let mut sum = 0f32;
                        for s in row.iter_mut() {
                            *s = (*s - max).exp();
                            sum += *s;
                        }
                        let inv = 1.0 / sum;
                        row.iter_mut().for_each(|s| *s *= inv);
                        max + sum.ln()
                    };
                    // SAFETY: this unit owns head `h` of row `b`.
                    unsafe { *lse.0.add(lse_base + r) = total };
                }
                // SAFETY: out rows of head `h` are `heads·d` apart; `v`'s rows `kv_heads·d`.
                unsafe {
                    matmul(
                        (rows.len(), d, width),
                        (out.0.add(out_base), heads * d, 1),
                        false,
                        (scores.as_ptr(), width, 1),
                        (
                            v.as_ptr().add(v_base + keys.0 * kv_heads * d),
                            kv_heads * d,
                            1,
                        ),
                        1.0,
                        Threads::One,
                    );
                }
            }
        }
    }

    /// Backward pass of row `b`, KV head `g`: gradients of its query heads, its key and
    /// its value head.
    #[allow(clippy::too_many_arguments)]
    fn backward_unit(
        &self,
        b: usize,
        g: usize,
        (q, k, v): (&[f32], &[f32], &[f32]),
        (out, grad_out): (&[f32], &[f32]),
        (lse, mask): (&[f32], Option<&[f32]>),
        (grad_q, grad_k, grad_v): (SharedMut<f32>, SharedMut<f32>, SharedMut<f32>),
    ) {
        let Heads {
            heads,
            kv_heads,
            head_dim: d,
            layout,
        } = self.heads;
        let t = self.t;
        let group = heads / kv_heads;
        let blocks = t.div_ceil(QUERY_BLOCK);
        let scale = self.scale();
        let (cos, sin) = self.angles(b);
        let mut k_rot = vec![0f32; t * d];
        self.rotated(k, b, g, kv_heads, &mut k_rot);
        let mut q_rot = vec![0f32; t * d];
        let mut grad_q_rot = vec![0f32; t * d];
        let mut grad_k_rot = vec![0f32; t * d];
        let mut grad_v_dense = vec![0f32; t * d];
        let mut probs = vec![0f32; QUERY_BLOCK * t];
        let mut grad_scores = vec![0f32; QUERY_BLOCK * t];
        let mut dot = vec![0f32; QUERY_BLOCK];
        let v_base = b * t * kv_heads * d + g * d;
        let v_rows = |start: usize| v[v_base + start * kv_heads * d..].as_ptr();
        for h in g * group..(g + 1) * group {
            self.rotated(q, b, h, heads, &mut q_rot);
            grad_q_rot.fill(0.0);
            for block in 0..blocks {
                let rows = block * QUERY_BLOCK..t.min((block + 1) * QUERY_BLOCK);
                let keys = self.visible[b * blocks + block];
                let width = keys.1 - keys.0;
                if width == 0 {
                    continue;
                }
                let n = rows.len();
                let o_base = (b * t + rows.start) * heads * d + h * d;
                let lse = &lse[(b * heads + h) * t + rows.start..][..n];
                // D_i = Σ_c dO_ic · O_ic, the softmax's correction term.
                for (r, dot) in dot[..n].iter_mut().enumerate() {
                    let at = o_base + r * heads * d;
                    *dot = out[at..at + d]
                        .iter()
                        .zip(&grad_out[at..at + d])
                        .map(|(o, g)| o * g)
                        .sum();
                }
                let probs = &mut probs[..n * width];
                self.scores(b, rows.clone(), keys, (&q_rot, &k_rot, mask), probs);
                for (row, &l) in probs.chunks_exact_mut(width).zip(lse) {
                    if l == f32::NEG_INFINITY {
                        row.fill(0.0);
                    } else {
                        row.iter_mut().for_each(|s| *s = (*s - l).exp());
                    }
                }
                let grad_scores = &mut grad_scores[..n * width];
                // SAFETY: all operands are in bounds (see the shapes in each comment).
                unsafe {
                    // dV[keys] += Pᵀ · dO      ([width × n] · [n × d])
                    matmul(
                        (width, d, n),
                        (grad_v_dense.as_mut_ptr().add(keys.0 * d), d, 1),
                        true,
                        (probs.as_ptr(), 1, width),
                        (grad_out.as_ptr().add(o_base), heads * d, 1),
                        1.0,
                        Threads::One,
                    );
                    // dP = dO · V[keys]ᵀ       ([n × d] · [d × width])
                    matmul(
                        (n, width, d),
                        (grad_scores.as_mut_ptr(), width, 1),
                        false,
                        (grad_out.as_ptr().add(o_base), heads * d, 1),
                        (v_rows(keys.0), 1, kv_heads * d),
                        1.0,
                        Threads::One,
                    );
                }
                // dS = P ⊙ (dP − D)
                for ((gs, p), &dot) in grad_scores
                    .chunks_exact_mut(width)
                    .zip(probs.chunks_exact(width))
                    .zip(&dot[..n])
                {
                    for (gs, p) in gs.iter_mut().zip(p) {
                        *gs = p * (*gs - dot);
                    }
                }
                // SAFETY: as above.
                unsafe {
                    // dQ[rows] = scale · dS · K[keys]      ([n × width] · [width × d])
                    matmul(
                        (n, d, width),
                        (grad_q_rot.as_mut_ptr().add(rows.start * d), d, 1),
                        false,
                        (grad_scores.as_ptr(), width, 1),
                        (k_rot.as_ptr().add(keys.0 * d), d, 1),
                        scale,
                        Threads::One,
                    );
                    // dK[keys] += scale · dSᵀ · Q[rows]    ([width × n] · [n × d])
                    matmul(
                        (width, d, n),
                        (grad_k_rot.as_mut_ptr().add(keys.0 * d), d, 1),
                        true,
                        (grad_scores.as_ptr(), 1, width),
                        (q_rot.as_ptr().add(rows.start * d), d, 1),
                        scale,
                        Threads::One,
                    );
                }
            }
            let mut dq = vec![0f32; t * d];
            rotate(&grad_q_rot, d, cos, sin, layout, true, &mut dq, d);
            scatter(&dq, grad_q, b * t * heads * d + h * d, heads * d, d);
        }
        let mut dk = vec![0f32; t * d];
        rotate(&grad_k_rot, d, cos, sin, layout, true, &mut dk, d);
        scatter(&dk, grad_k, b * t * kv_heads * d + g * d, kv_heads * d, d);
        scatter(
            &grad_v_dense,
            grad_v,
            b * t * kv_heads * d + g * d,
            kv_heads * d,
            d,
        );
    }
}

/// Copies the dense `[t, d]` `src` into the rows of a head of a `[t, heads·d]` tensor.
fn scatter(src: &[f32], dst: SharedMut<f32>, start: usize, row_stride: usize, d: usize) {
    for (i, row) in src.chunks_exact(d).enumerate() {
        // SAFETY: the caller's unit owns this head of this row of the batch.
        unsafe {
            std::ptr::copy_nonoverlapping(row.as_ptr(), dst.0.add(start + i * row_stride), d);
        }
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "train-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_l: &Layout,
        k: &CpuStorage,
        k_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (f32_slice(q, q_l)?, f32_slice(k, k_l)?, f32_slice(v, v_l)?);
        let Heads {
            heads, kv_heads, ..
        } = self.heads;
        let mut out = vec![0f32; q.len()];
        let mut lse = vec![0f32; self.batch * heads * self.t];
        let (out_ptr, lse_ptr) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
        self.with_mask(|mask| {
            parallel(self.batch * kv_heads, |units| {
                for unit in units {
                    let (b, g) = (unit / kv_heads, unit % kv_heads);
                    self.forward_unit(b, g, (q, k, v), mask, (out_ptr, lse_ptr));
                }
            });
            Ok(())
        })?;
        *self.log_sum_exp.lock().expect("log-sum-exp lock") = lse;
        Ok((CpuStorage::F32(out), q_l.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_out = grad_out.contiguous()?;
        let lse = self.log_sum_exp.lock().expect("log-sum-exp lock");
        let kv_heads = self.heads.kv_heads;
        let mut grads = [q, k, v].map(|x| vec![0f32; x.elem_count()]);
        let ptrs = [0, 1, 2].map(|i| SharedMut(grads[i].as_mut_ptr()));
        with_slices([q, k, v, out, &grad_out], |[q, k, v, out, grad_out]| {
            self.with_mask(|mask| {
                parallel(self.batch * kv_heads, |units| {
                    for unit in units {
                        let (b, g) = (unit / kv_heads, unit % kv_heads);
                        self.backward_unit(
                            b,
                            g,
                            (q, k, v),
                            (out, grad_out),
                            (&lse, mask),
                            (ptrs[0], ptrs[1], ptrs[2]),
                        );
                    }
                });
                Ok(())
            })
        })?;
        let [gq, gk, gv] = grads;
        Ok((gradient(gq, q)?, gradient(gk, k)?, gradient(gv, v)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::llama::{AttentionSpec, Kernels, RopeAngles};
    use crate::train_ops::test_support::{assert_same_maths, var};

    /// The training attention op and the same maths in candle's differentiable ops agree
    /// on values and on the gradients of q, k and v: grouped heads, both RoPE layouts,
    /// a packed row (two examples, block-diagonal causal mask) and a padded one, over
    /// more than one query block.
    #[test]
    fn matches_composite_ops() {
        let (batch, t, heads, kv_heads, d) = (2, 70, 4, 2, 8);
        let dev = Device::Cpu;
        // Row 0: examples of 40 and 30 tokens; row 1: 50 tokens then padding.
        let segment = |b: usize, i: usize| match (b, i) {
            (0, i) => Some(usize::from(i >= 40)),
            (_, i) => (i < 50).then_some(0),
        };
        let mut mask = vec![f32::NEG_INFINITY; batch * t * t];
        let mut positions = vec![0u32; batch * t];
        for b in 0..batch {
            for i in 0..t {
                positions[b * t + i] = if b == 0 && i >= 40 { i - 40 } else { i } as u32;
                for j in 0..=i {
                    let same = segment(b, i).is_some() && segment(b, i) == segment(b, j);
                    if same || i == j {
                        mask[(b * t + i) * t + j] = 0.0;
                    }
                }
            }
        }
        let mask = Tensor::from_vec(mask, (batch, 1, t, t), &dev).unwrap();
        let half = d / 2;
        let angles: Vec<f32> = positions
            .iter()
            .flat_map(|&p| {
                (0..half).map(move |i| p as f32 / 10000f32.powf(2.0 * i as f32 / d as f32))
            })
            .collect();
        let angles = Tensor::from_vec(angles, (batch, t, half), &dev).unwrap();
        let angles = RopeAngles {
            cos: angles.cos().unwrap(),
            sin: angles.sin().unwrap(),
        };
        let (q, k, v) = (
            var(&[batch, t, heads * d], 1, 1.5),
            var(&[batch, t, kv_heads * d], 2, 1.5),
            var(&[batch, t, kv_heads * d], 3, 1.5),
        );
        let [q_, k_, v_] = [&q, &k, &v].map(|x| x.as_tensor());
        for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
            let shape = Heads {
                heads,
                kv_heads,
                head_dim: d,
                layout,
            };
            let spec = AttentionSpec {
                heads: shape,
                kernels: Kernels::Differentiable,
            };
            let fused =
                attention(q_, k_, v_, &angles.cos, &angles.sin, Some(&mask), shape).unwrap();
            let composite = spec.core(q_, k_, v_, &angles, Some(&mask), None).unwrap();
            let what = format!("attention, {layout:?}");
            assert_same_maths(
                &[("q", &q), ("k", &k), ("v", &v)],
                &fused,
                &composite,
                &what,
            );
        }
    }
}
