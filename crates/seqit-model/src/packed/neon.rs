//! aarch64 kernels. NEON is part of the base architecture, so [`super::reference`]'s
//! element-wise kernels (quantization, RMSNorm, SwiGLU) are already compiled with it; the
//! tile product uses `sdot` (the dot-product extension, ARMv8.2+: Apple Silicon,
//! Graviton 2+, Cortex-A76+), and attention reads the f16 cache with `fcvtl`.
//!
//! A 128-bit register holds 4 inner values of 4 rows, so one `sdot` by element multiplies
//! them by 4 activations of one row: a 16-row tile is 4 row quads. The dot-product
//! intrinsics (`vdotq_laneq_s32`) are still unstable in Rust (as is `float16x4_t`, the
//! argument of `vcvt_f32_f16`), while the `dotprod` target feature and inline assembly are
//! stable: `sdot` and `fcvtl` are written in `asm!`, one instruction each, and everything
//! else with the stable NEON intrinsics.
//!
//! `fcvtl` widens f16 exactly like [`reference::f16_to_f32`] for every finite value and
//! infinity (only a signalling NaN would come out quieted: neither the weight scales nor
//! the cache, written by `to_f16`, hold one).

use super::{reference, AttendSpan, Kind, QuantizedRows, MT, QK, TILE_N};
use std::arch::aarch64::*;
use std::arch::asm;

/// `$acc + Σ_t $w[4l+t]·$a[4·$lane+t]` in every 32-bit lane `l` (`sdot` by element).
/// A macro rather than a function, so that the instruction is always assembled inside a
/// function compiled with the `dotprod` feature.
macro_rules! sdot {
    ($acc:expr, $w:expr, $a:expr, $lane:literal) => {{
        let mut acc: int32x4_t = $acc;
        let w: int8x16_t = $w;
        let a: int8x16_t = $a;
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            lane = const $lane,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }};
}

/// 4 f16 values (raw bits at `p`) as f32, exactly.
#[inline(always)]
unsafe fn load_f16x4(p: *const u8) -> float32x4_t {
    let h = vld1_u16(p as *const u16);
    let out: float32x4_t;
    asm!(
        "fcvtl {out:v}.4s, {h:v}.4h",
        out = lateout(vreg) out,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

/// 8 f16 values (raw bits at `p`) as f32, exactly: values 0..4 and 4..8.
#[inline(always)]
unsafe fn load_f16x8(p: *const u16) -> (float32x4_t, float32x4_t) {
    let h = vld1q_u16(p);
    let (lo, hi): (float32x4_t, float32x4_t);
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        lo = lateout(vreg) lo,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    asm!(
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        hi = lateout(vreg) hi,
        h = in(vreg) h,
        options(pure, nomem, nostack, preserves_flags)
    );
    (lo, hi)
}

/// Runs `$body!(quad)` for the 4 row quads of a tile, unrolled so that the accumulators
/// of few activation rows stay in registers.
macro_rules! for_quads {
    ($body:ident) => {
        $body!(0);
        $body!(1);
        $body!(2);
        $body!(3);
    };
}

/// See [`super::tile`].
///
/// # Safety
/// The CPU must have `dotprod`; `tile` must point at a whole tile of `kind` with `kb`
/// blocks; `x` must hold the rows `m0..m0 + rows`, `rows` in `1..=8`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    kind: Kind,
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    rows: usize,
    out: &mut [[f32; TILE_N]; MT],
) {
    debug_assert!((1..=MT).contains(&rows));
    let two = x.levels == 2;
    match kind {
        Kind::Q4 => dispatch_rows!(tile_q4, rows, two, (tile, kb, x, m0, out)),
        Kind::Q8 => dispatch_rows!(tile_q8, rows, two, (tile, kb, x, m0, out)),
    }
}

/// The 32 activations of one block as two registers (values 0..16, 16..32).
#[inline(always)]
unsafe fn load_block(a: *const i8) -> (int8x16_t, int8x16_t) {
    (vld1q_s8(a), vld1q_s8(a.add(16)))
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_q4<const R: usize, const TWO: bool>(
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    out: &mut [[f32; TILE_N]; MT],
) {
    let mask = vdupq_n_u8(0x0F);
    let zero = vdupq_n_s32(0);
    // Per activation row, the 4 row quads of the tile.
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    let k = kb * QK;
    let qs = x.qs.as_ptr().add(m0 * k);
    let qs2 = if TWO { x.qs2.as_ptr().add(m0 * k) } else { qs };
    let d = x.d.as_ptr().add(m0 * kb);
    let sum = x.sum.as_ptr().add(m0 * kb);
    for b in 0..kb {
        let p = tile.add(b * Kind::Q4.block_bytes());
        // Rows 4·quad.. of the tile: bytes 16·quad.. of every line.
        macro_rules! quad {
            ($quad:literal) => {
                let w = p.add(64 + 16 * $quad);
                let dw = load_f16x4(p.add(8 * $quad));
                let mw = load_f16x4(p.add(32 + 8 * $quad));
                // Line g: bytes 4g..4g+4 of each row; low nibbles are values 4g.., high
                // nibbles values 16+4g.. (0..16, the same as signed bytes).
                let line = |g: usize| vld1q_u8(w.add(64 * g));
                let lo = |v: uint8x16_t| vreinterpretq_s8_u8(vandq_u8(v, mask));
                let hi = |v: uint8x16_t| vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                let (w0, w1, w2, w3) = (line(0), line(1), line(2), line(3));
                let (l0, h0, l1, h1) = (lo(w0), hi(w0), lo(w1), hi(w1));
                let (l2, h2, l3, h3) = (lo(w2), hi(w2), lo(w3), hi(w3));
                // Σ q_w·q_a over the block for the activations (a0, a1), in two chains from s0.
                macro_rules! dot {
                    ($s0:expr, $a:expr) => {{
                        let (a0, a1) = $a;
                        let mut s0 = sdot!($s0, l0, a0, 0);
                        let mut s1 = sdot!(zero, h0, a1, 0);
                        s0 = sdot!(s0, l1, a0, 1);
                        s1 = sdot!(s1, h1, a1, 1);
                        s0 = sdot!(s0, l2, a0, 2);
                        s1 = sdot!(s1, h2, a1, 2);
                        s0 = sdot!(s0, l3, a0, 3);
                        s1 = sdot!(s1, h3, a1, 3);
                        vaddq_s32(s0, s1)
                    }};
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let blk = i * kb + b;
                    let mut isum = dot!(zero, load_block(qs.add(i * k + b * QK)));
                    if TWO {
                        isum = dot!(vshlq_n_s32::<8>(isum), load_block(qs2.add(i * k + b * QK)));
                    }
                    let scale = vmulq_n_f32(dw, *d.add(blk));
                    let a = vfmaq_f32(acc[$quad], vcvtq_f32_s32(isum), scale);
                    acc[$quad] = vfmaq_n_f32(a, mw, *sum.add(blk));
                }
            };
        }
        for_quads!(quad);
    }
    for (out, acc) in out.iter_mut().zip(&acc) {
        for (quad, acc) in acc.iter().enumerate() {
            vst1q_f32(out.as_mut_ptr().add(4 * quad), *acc);
        }
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_q8<const R: usize, const TWO: bool>(
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    out: &mut [[f32; TILE_N]; MT],
) {
    let offset = vdupq_n_u8(0x80);
    let zero = vdupq_n_s32(0);
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    let k = kb * QK;
    let qs = x.qs.as_ptr().add(m0 * k);
    let qs2 = if TWO { x.qs2.as_ptr().add(m0 * k) } else { qs };
    let d = x.d.as_ptr().add(m0 * kb);
    for b in 0..kb {
        let p = tile.add(b * Kind::Q8.block_bytes());
        // Rows 4·quad.. of the tile: bytes 16·quad.. of every line.
        macro_rules! quad {
            ($quad:literal) => {
                let w = p.add(64 + 16 * $quad);
                let dw = load_f16x4(p.add(8 * $quad));
                // Line g: values 4g..4g+4 of each row as q + 128; back to signed q.
                let line =
                    |g: usize| vreinterpretq_s8_u8(veorq_u8(vld1q_u8(w.add(64 * g)), offset));
                let (w0, w1, w2, w3) = (line(0), line(1), line(2), line(3));
                let (w4, w5, w6, w7) = (line(4), line(5), line(6), line(7));
                // Σ q_w·q_a over the block for the activations (a0, a1), in two chains from s0.
                macro_rules! dot {
                    ($s0:expr, $a:expr) => {{
                        let (a0, a1) = $a;
                        let mut s0 = sdot!($s0, w0, a0, 0);
                        let mut s1 = sdot!(zero, w1, a0, 1);
                        s0 = sdot!(s0, w2, a0, 2);
                        s1 = sdot!(s1, w3, a0, 3);
                        s0 = sdot!(s0, w4, a1, 0);
                        s1 = sdot!(s1, w5, a1, 1);
                        s0 = sdot!(s0, w6, a1, 2);
                        s1 = sdot!(s1, w7, a1, 3);
                        vaddq_s32(s0, s1)
                    }};
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let blk = i * kb + b;
                    let mut isum = dot!(zero, load_block(qs.add(i * k + b * QK)));
                    if TWO {
                        isum = dot!(vshlq_n_s32::<8>(isum), load_block(qs2.add(i * k + b * QK)));
                    }
                    let scale = vmulq_n_f32(dw, *d.add(blk));
                    acc[$quad] = vfmaq_f32(acc[$quad], vcvtq_f32_s32(isum), scale);
                }
            };
        }
        for_quads!(quad);
    }
    for (out, acc) in out.iter_mut().zip(&acc) {
        for (quad, acc) in acc.iter().enumerate() {
            vst1q_f32(out.as_mut_ptr().add(4 * quad), *acc);
        }
    }
}

/// [`reference::exp`] for 4 lanes, with the same operations.
#[inline(always)]
unsafe fn exp4(x: float32x4_t) -> float32x4_t {
    // `f32::max`/`min` are IEEE maxNum/minNum, as `fmaxnm`/`fminnm`.
    let x = vminnmq_f32(vmaxnmq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
    // reference::round_even, literally.
    let rounding = vdupq_n_f32(12_582_912.0);
    let n = vmulq_f32(x, vdupq_n_f32(std::f32::consts::LOG2_E));
    let n = vsubq_f32(vaddq_f32(n, rounding), rounding);
    let minus_n = vnegq_f32(n);
    let r = vfmaq_f32(x, minus_n, vdupq_n_f32(0.693_145_75));
    let r = vfmaq_f32(r, minus_n, vdupq_n_f32(1.428_606_8e-6));
    let mut p = vdupq_n_f32(1.0 / 5040.0);
    p = vfmaq_f32(vdupq_n_f32(1.0 / 720.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0 / 120.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0 / 24.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0 / 6.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0), p, r);
    // 2^n: n is an integer in [-126, 127].
    let pow2 = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(p, vreinterpretq_f32_s32(pow2))
}

/// See [`super::attend`]: [`reference::attend`]'s arithmetic, 4 lanes per register.
pub(crate) fn attend(
    heads: usize,
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    span: AttendSpan,
    scores: &mut [f32],
    o: &mut [f32],
) {
    match heads {
        1 => attend_heads::<1>(q, keys, values, span, scores, o),
        2 => attend_heads::<2>(q, keys, values, span, scores, o),
        3 => attend_heads::<3>(q, keys, values, span, scores, o),
        _ => attend_heads::<4>(q, keys, values, span, scores, o),
    }
}

fn attend_heads<const G: usize>(
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    span: AttendSpan,
    scores: &mut [f32],
    o: &mut [f32],
) {
    let AttendSpan { from, to, scale } = span;
    let d = q.len() / G;
    let n = to - from;
    // Scores are computed for whole key blocks: index `i` is position `first + i`.
    let first = from / 16 * 16;
    let chunks = (to - first).div_ceil(16);
    let stride = chunks * 16;
    assert!(q.len() == G * d && d.is_multiple_of(16));
    assert!(keys.len() >= (first + stride) * d && values.len() >= to * d);
    assert!(scores.len() >= G * stride && o.len() >= G * d);
    // SAFETY: every access below is within the lengths asserted above.
    unsafe {
        let (qp, kp, sp) = (q.as_ptr(), keys.as_ptr(), scores.as_mut_ptr());
        for c in 0..chunks {
            let block = kp.add((first + c * 16) * d);
            let mut acc = [[vdupq_n_f32(0.0); 4]; G];
            for dd in 0..d {
                let (k0, k1) = load_f16x8(block.add(dd * 16));
                let (k2, k3) = load_f16x8(block.add(dd * 16 + 8));
                for (g, acc) in acc.iter_mut().enumerate() {
                    let qv = *qp.add(g * d + dd);
                    acc[0] = vfmaq_n_f32(acc[0], k0, qv);
                    acc[1] = vfmaq_n_f32(acc[1], k1, qv);
                    acc[2] = vfmaq_n_f32(acc[2], k2, qv);
                    acc[3] = vfmaq_n_f32(acc[3], k3, qv);
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                for (j, acc) in acc.iter().enumerate() {
                    vst1q_f32(sp.add(g * stride + c * 16 + 4 * j), *acc);
                }
            }
        }
        // Lanes at positions outside `from..to` do not count: all ones where valid.
        let lane = vld1q_u32([0u32, 1, 2, 3].as_ptr());
        let (lo, hi) = (vdupq_n_u32(from as u32), vdupq_n_u32(to as u32));
        let valid = |i: usize| {
            let position = vaddq_u32(vdupq_n_u32((first + i) as u32), lane);
            vandq_u32(vcgeq_u32(position, lo), vcltq_u32(position, hi))
        };
        let vscale = vdupq_n_f32(scale);
        let mut inv = [0f32; G];
        for (g, inv) in inv.iter_mut().enumerate() {
            let row = sp.add(g * stride);
            let mut max = vdupq_n_f32(f32::NEG_INFINITY);
            for i in (0..stride).step_by(4) {
                let v = vmulq_f32(vld1q_f32(row.add(i)), vscale);
                vst1q_f32(row.add(i), v);
                max = vbslq_f32(valid(i), vmaxnmq_f32(max, v), max);
            }
            let max = vdupq_n_f32(vmaxnmvq_f32(max));
            let mut sums = [vdupq_n_f32(0.0); 4];
            for i in (0..stride).step_by(4) {
                let e = exp4(vsubq_f32(vld1q_f32(row.add(i)), max));
                let e = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), valid(i)));
                sums[i / 4 % 4] = vaddq_f32(sums[i / 4 % 4], e);
                vst1q_f32(row.add(i), e);
            }
            let mut lanes = [0f32; 16];
            for (j, sum) in sums.iter().enumerate() {
                vst1q_f32(lanes.as_mut_ptr().add(4 * j), *sum);
            }
            *inv = 1.0 / reference::sum16(lanes);
        }
        // Weighted values, 16 dimensions at a time (32 for one or two heads).
        let p = sp.add(from - first);
        let vp = values.as_ptr().add(from * d);
        let mut c0 = 0;
        while c0 < d {
            let (vp, op) = (vp.add(c0), o.as_mut_ptr().add(c0));
            if G <= 2 && c0 + 32 <= d {
                weighted_values::<G, 2>(p, stride, n, vp, d, &inv, op);
                c0 += 32;
            } else {
                weighted_values::<G, 1>(p, stride, n, vp, d, &inv, op);
                c0 += 16;
            }
        }
    }
}

/// `o_g[..16W] = inv_g · Σ_j p_g[j] · v[j·d..][..16W]` for `G` heads (`p_g` at `g·stride`,
/// `o_g` at `g·d`), in position order.
///
/// # Safety
/// The pointers must cover those ranges.
#[inline(always)]
unsafe fn weighted_values<const G: usize, const W: usize>(
    p: *const f32,
    stride: usize,
    n: usize,
    v: *const u16,
    d: usize,
    inv: &[f32; G],
    o: *mut f32,
) {
    let mut acc = [[[vdupq_n_f32(0.0); 4]; W]; G];
    for j in 0..n {
        let row = v.add(j * d);
        let mut vals = [[vdupq_n_f32(0.0); 4]; W];
        for (w, vals) in vals.iter_mut().enumerate() {
            (vals[0], vals[1]) = load_f16x8(row.add(16 * w));
            (vals[2], vals[3]) = load_f16x8(row.add(16 * w + 8));
        }
        for (g, acc) in acc.iter_mut().enumerate() {
            let pj = *p.add(g * stride + j);
            for (acc, vals) in acc.iter_mut().zip(&vals) {
                for (acc, val) in acc.iter_mut().zip(vals) {
                    *acc = vfmaq_n_f32(*acc, *val, pj);
                }
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        for (w, acc) in acc.iter().enumerate() {
            for (i, acc) in acc.iter().enumerate() {
                vst1q_f32(o.add(g * d + 16 * w + 4 * i), vmulq_n_f32(*acc, inv[g]));
            }
        }
    }
}

const _: () = assert!(QK == 32 && TILE_N == 16);
