//! aarch64 kernels. NEON is part of the base architecture, so [`super::reference`]'s
//! element-wise kernels are already compiled with it; the tile product uses `sdot` (the
//! dot-product extension, ARMv8.2+: Apple Silicon, Graviton 2+, Cortex-A76+).
//!
//! A 128-bit register holds 4 inner values of 4 rows, so one `sdot` by element multiplies
//! them by 4 activations of one row: a 16-row tile is 4 row quads. The dot-product
//! intrinsics (`vdotq_laneq_s32`) are still unstable in Rust, while the `dotprod` target
//! feature and inline assembly are stable: `sdot` is written in `asm!`, one instruction
//! per block, and everything else with the stable NEON intrinsics.
//!
//! f16 scales are widened with `fcvtl`, exact for every finite value and infinity, like
//! [`reference::f16_to_f32`] (only a signalling NaN would come out quieted; scales are
//! never NaN).

use super::{Kind, QuantizedRows, MT, QK, TILE_N};
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

/// Calls `$f::<R, TWO>(args)` for the run-time row count and level count.
macro_rules! dispatch_rows {
    ($f:ident, $rows:expr, $two:expr, ($($arg:expr),*)) => {
        match ($rows, $two) {
            (1, false) => $f::<1, false>($($arg),*),
            (2, false) => $f::<2, false>($($arg),*),
            (3, false) => $f::<3, false>($($arg),*),
            (4, false) => $f::<4, false>($($arg),*),
            (5, false) => $f::<5, false>($($arg),*),
            (6, false) => $f::<6, false>($($arg),*),
            (7, false) => $f::<7, false>($($arg),*),
            (_, false) => $f::<8, false>($($arg),*),
            (1, true) => $f::<1, true>($($arg),*),
            (2, true) => $f::<2, true>($($arg),*),
            (3, true) => $f::<3, true>($($arg),*),
            (4, true) => $f::<4, true>($($arg),*),
            (5, true) => $f::<5, true>($($arg),*),
            (6, true) => $f::<6, true>($($arg),*),
            (7, true) => $f::<7, true>($($arg),*),
            (_, true) => $f::<8, true>($($arg),*),
        }
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
    let mut acc = [[vdupq_n_f32(0.0); 4]; MT];
    let k = kb * QK;
    let qs = x.qs.as_ptr().add(m0 * k);
    let qs2 = if TWO { x.qs2.as_ptr().add(m0 * k) } else { qs };
    let d = x.d.as_ptr().add(m0 * kb);
    let sum = x.sum.as_ptr().add(m0 * kb);
    for b in 0..kb {
        let p = tile.add(b * Kind::Q4.block_bytes());
        for (quad, w) in (0..4).map(|quad| (quad, p.add(64 + 16 * quad))) {
            let dw = load_f16x4(p.add(8 * quad));
            let mw = load_f16x4(p.add(32 + 8 * quad));
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
            for (i, acc) in acc.iter_mut().enumerate().take(R) {
                let blk = i * kb + b;
                let mut isum = dot!(zero, load_block(qs.add(i * k + b * QK)));
                if TWO {
                    isum = dot!(vshlq_n_s32::<8>(isum), load_block(qs2.add(i * k + b * QK)));
                }
                let scale = vmulq_n_f32(dw, *d.add(blk));
                let a = vfmaq_f32(acc[quad], vcvtq_f32_s32(isum), scale);
                acc[quad] = vfmaq_n_f32(a, mw, *sum.add(blk));
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(&acc).take(R) {
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
    let mut acc = [[vdupq_n_f32(0.0); 4]; MT];
    let k = kb * QK;
    let qs = x.qs.as_ptr().add(m0 * k);
    let qs2 = if TWO { x.qs2.as_ptr().add(m0 * k) } else { qs };
    let d = x.d.as_ptr().add(m0 * kb);
    for b in 0..kb {
        let p = tile.add(b * Kind::Q8.block_bytes());
        for (quad, w) in (0..4).map(|quad| (quad, p.add(64 + 16 * quad))) {
            let dw = load_f16x4(p.add(8 * quad));
            // Line g: values 4g..4g+4 of each row as q + 128; back to signed q.
            let line = |g: usize| vreinterpretq_s8_u8(veorq_u8(vld1q_u8(w.add(64 * g)), offset));
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
            for (i, acc) in acc.iter_mut().enumerate().take(R) {
                let blk = i * kb + b;
                let mut isum = dot!(zero, load_block(qs.add(i * k + b * QK)));
                if TWO {
                    isum = dot!(vshlq_n_s32::<8>(isum), load_block(qs2.add(i * k + b * QK)));
                }
                let scale = vmulq_n_f32(dw, *d.add(blk));
                acc[quad] = vfmaq_f32(acc[quad], vcvtq_f32_s32(isum), scale);
            }
        }
    }
    for (out, acc) in out.iter_mut().zip(&acc).take(R) {
        for (quad, acc) in acc.iter().enumerate() {
            vst1q_f32(out.as_mut_ptr().add(4 * quad), *acc);
        }
    }
}

const _: () = assert!(QK == 32 && TILE_N == 16);
