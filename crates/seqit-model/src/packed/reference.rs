//! Portable kernels: the definition of the packed decoder's arithmetic.
//!
//! Every SIMD kernel of the other modules computes exactly these values. The functions
//! marked `#[inline(always)]` are also compiled inside `#[target_feature]` wrappers there
//! (the compiler vectorizes them with that instruction set; Rust never reassociates or
//! contracts float operations, so the results stay the same).

use super::{AttendSpan, Kind, QuantizedRows, MT, QK, TILE_N};
use half::f16;

/// `1.5 · 2^23`: adding and subtracting it rounds an f32 below `2^22` in magnitude to the
/// nearest integer, ties to even (the default rounding of every SIMD conversion).
const ROUNDING: f32 = 12_582_912.0;

/// Rounds `v` (`|v| < 2^22`) to the nearest integer, ties to even.
#[inline(always)]
pub(crate) fn round_even(v: f32) -> f32 {
    (v + ROUNDING) - ROUNDING
}

/// The sum of 16 lanes in one fixed order (halves added pairwise: 8, 4, 2, 1).
#[inline(always)]
pub(crate) fn sum16(mut lanes: [f32; 16]) -> f32 {
    for half in [8, 4, 2, 1] {
        for i in 0..half {
            lanes[i] += lanes[i + half];
        }
    }
    lanes[0]
}

/// Quantizes one block to `[-127, 127]` on the step `scale`; returns `Σq` and the
/// residuals `x − q·scale` (fused).
#[inline(always)]
fn quantize_block(x: &[f32; QK], scale: f32, out: &mut [i8]) -> (i32, [f32; QK]) {
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut sum = 0i32;
    let mut residual = [0f32; QK];
    for j in 0..QK {
        let q = round_even(x[j] * inv).clamp(-127.0, 127.0);
        out[j] = q as i8;
        sum += q as i32;
        residual[j] = (-q).mul_add(scale, x[j]);
    }
    (sum, residual)
}

/// Quantizes `x` (whole blocks) into `rows`, starting at block `first_block`: per block,
/// `d = amax / 127` as llama.cpp's `quantize_row_q8_1`, then (with two levels) the
/// residual on `d / 256`.
///
/// # Safety
/// `rows` must be sized for the blocks written; callers running this in parallel must
/// give each call disjoint blocks.
#[inline(always)]
pub(crate) unsafe fn quantize_blocks(x: &[f32], rows: &mut QuantizedRows, first_block: usize) {
    let two = rows.levels == 2;
    for (i, block) in x.chunks_exact(QK).enumerate() {
        let b = first_block + i;
        let block: &[f32; QK] = block.try_into().expect("whole blocks");
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let (sum, residual) = quantize_block(block, d, &mut rows.qs[b * QK..][..QK]);
        if two {
            let unit = d / 256.0;
            let (sum2, _) = quantize_block(&residual, unit, &mut rows.qs2[b * QK..][..QK]);
            rows.d[b] = unit;
            rows.sum128[b] = 128 * (256 * sum + sum2);
            rows.sum[b] = d * sum as f32 + unit * sum2 as f32;
        } else {
            rows.d[b] = d;
            rows.sum128[b] = 128 * sum;
            rows.sum[b] = d * sum as f32;
        }
    }
}

fn f16_at(p: *const u8) -> f32 {
    // SAFETY: callers pass pointers inside a tile block.
    f16::from_le_bytes(unsafe { [*p, *p.add(1)] }).to_f32()
}

/// `Σ q_w·q_a` of row `r` of the tile block at `p` with the 32 activations `a`.
///
/// # Safety
/// `p` must point at a whole tile block of `kind`.
unsafe fn block_dot(kind: Kind, p: *const u8, r: usize, a: &[i8]) -> i32 {
    let mut sum = 0i32;
    match kind {
        Kind::Q4 => {
            for g in 0..4 {
                for t in 0..4 {
                    let byte = *p.add(64 + g * 64 + r * 4 + t);
                    sum += (byte & 0x0F) as i32 * a[4 * g + t] as i32;
                    sum += (byte >> 4) as i32 * a[16 + 4 * g + t] as i32;
                }
            }
        }
        Kind::Q8 => {
            for g in 0..8 {
                for t in 0..4 {
                    let w = *p.add(64 + g * 64 + r * 4 + t) as i32 - 128;
                    sum += w * a[4 * g + t] as i32;
                }
            }
        }
    }
    sum
}

/// One 16-row weight tile against `rows` (≤ 8) activation rows from `m0`: per output,
/// `acc = fma(Σq_w·q_a, d_w·d_a, acc)` block after block (then `fma(m_w, Σa, acc)` for Q4).
///
/// # Safety
/// `tile` must point at a whole tile of `kind` with `kb` blocks; `x` must hold the rows.
pub(crate) unsafe fn tile(
    kind: Kind,
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    rows: usize,
    out: &mut [[f32; TILE_N]; MT],
) {
    let k = kb * QK;
    let two = x.levels == 2;
    for (i, out) in out.iter_mut().enumerate().take(rows) {
        let row = m0 + i;
        let mut acc = [0f32; TILE_N];
        for b in 0..kb {
            let p = tile.add(b * kind.block_bytes());
            let blk = row * kb + b;
            let a = &x.qs[row * k + b * QK..][..QK];
            for (r, acc) in acc.iter_mut().enumerate() {
                let mut isum = block_dot(kind, p, r, a);
                if two {
                    isum = isum * 256 + block_dot(kind, p, r, &x.qs2[row * k + b * QK..][..QK]);
                }
                let scale = f16_at(p.add(2 * r)) * x.d[blk];
                *acc = (isum as f32).mul_add(scale, *acc);
                if kind == Kind::Q4 {
                    *acc = f16_at(p.add(32 + 2 * r)).mul_add(x.sum[blk], *acc);
                }
            }
        }
        *out = acc;
    }
}

/// `out = x / sqrt(mean(x²) + eps) * weight`; the squares are summed in 16 lanes (fused),
/// then [`sum16`], then the tail.
#[inline(always)]
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    let mut lanes = [0f32; 16];
    let whole = n / 16 * 16;
    for chunk in x[..whole].chunks_exact(16) {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = v.mul_add(*v, *lane);
        }
    }
    let mut sum = sum16(lanes);
    for v in &x[whole..] {
        sum += v * v;
    }
    let scale = 1.0 / (sum / n as f32 + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// `2^n` for an integer-valued `n` in `[-126, 127]`.
#[inline(always)]
fn pow2(n: f32) -> f32 {
    f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `e^x` (relative error ~2e-7; inputs clamped to [-87, 88]): `x = n·ln2 + r`, a degree-7
/// polynomial in `r`, times `2^n`.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` keeps NaN; the SIMD max/min (and this) do not
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.max(-87.0).min(88.0);
    let n = round_even(x * std::f32::consts::LOG2_E);
    let r = (-n).mul_add(0.693_145_75, x);
    let r = (-n).mul_add(1.428_606_8e-6, r);
    let mut p = 1.0f32 / 5040.0;
    p = p.mul_add(r, 1.0 / 720.0);
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    p * pow2(n)
}

/// `gate = silu(gate) · up` for 16 values.
#[inline(always)]
pub(crate) fn swiglu16(gate: &mut [f32; TILE_N], up: &[f32; TILE_N]) {
    for (g, u) in gate.iter_mut().zip(up) {
        let e = exp(0.0 - *g);
        *g = *g / (1.0 + e) * u;
    }
}

/// `dst[i] = f16(src[i])` (round to nearest even), as raw bits.
pub(crate) fn to_f16(src: &[f32], dst: &mut [u16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s).to_bits();
    }
}

/// f16 bits to f32, exactly (inf and NaN included), in integer and float operations that
/// vectorize.
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let magnitude = h & 0x7FFF;
    let bits = if magnitude >= 0x7C00 {
        0x7F80_0000 | ((magnitude & 0x3FF) << 13)
    } else {
        // The f16 bit pattern shifted into an f32's, times 2^112, rebias the exponent;
        // subnormal halves become the right normal floats.
        (f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000)).to_bits()
    };
    f32::from_bits(sign | bits)
}

/// `o_h = softmax(scale · q_h·K[from..to]) · V[from..to]` for `heads` query heads sharing
/// a KV head (see [`super::attend`]): scores per 16-position block with fused
/// multiply-adds over the head dimension; softmax with the maximum over valid lanes, the
/// exponentials summed lane-wise then by [`sum16`]; values weighted by the unnormalized
/// probabilities in position order, then scaled by the inverse sum.
#[inline(always)]
pub(crate) fn attend(
    heads: usize,
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    span: AttendSpan,
    scores: &mut [f32],
    o: &mut [f32],
) {
    let AttendSpan { from, to, scale } = span;
    let d = q.len() / heads;
    let n = to - from;
    let first = from / 16 * 16;
    let chunks = (to - first).div_ceil(16);
    let stride = chunks * 16;
    for c in 0..chunks {
        let block = &keys[(first + c * 16) * d..][..16 * d];
        for g in 0..heads {
            let mut acc = [0f32; 16];
            for dd in 0..d {
                let qv = q[g * d + dd];
                for (lane, &k) in acc.iter_mut().zip(&block[dd * 16..][..16]) {
                    *lane = qv.mul_add(f16_to_f32(k), *lane);
                }
            }
            scores[g * stride + c * 16..][..16].copy_from_slice(&acc);
        }
    }
    let valid = |position: usize| position >= from && position < to;
    let mut inv = [0f32; 4];
    for (g, inv) in inv.iter_mut().enumerate().take(heads) {
        let row = &mut scores[g * stride..][..stride];
        let mut max = f32::NEG_INFINITY;
        for (i, v) in row.iter_mut().enumerate() {
            *v *= scale;
            if valid(first + i) {
                max = max.max(*v);
            }
        }
        let mut sums = [0f32; 16];
        for (c, chunk) in row.chunks_exact_mut(16).enumerate() {
            for (l, v) in chunk.iter_mut().enumerate() {
                let e = if valid(first + c * 16 + l) {
                    exp(*v - max)
                } else {
                    0.0
                };
                sums[l] += e;
                *v = e;
            }
        }
        *inv = 1.0 / sum16(sums);
    }
    for g in 0..heads {
        let p = &scores[g * stride + (from - first)..][..n];
        for c0 in (0..d).step_by(16) {
            let mut acc = [0f32; 16];
            for (j, &pj) in p.iter().enumerate() {
                let v = &values[(from + j) * d + c0..][..16];
                for (lane, &v) in acc.iter_mut().zip(v) {
                    *lane = pj.mul_add(f16_to_f32(v), *lane);
                }
            }
            for (dst, a) in o[g * d + c0..][..16].iter_mut().zip(&acc) {
                *dst = a * inv[g];
            }
        }
    }
}
