//! AVX2 kernels (+FMA, F16C). Without VNNI, integer products go through `vpmaddubsw`
//! (u8 × i8 pairs summed into i16) and `vpmaddwd` (i16 pairs into i32): exact, because
//! activations stay within `[-127, 127]` (Q4: 15·127·2 per pair, and 8 pairs summed in
//! i16; Q8: the sign trick `|w| · (a·sign w)`, 128·127·2 per pair). A 256-bit register
//! holds half a tile (8 rows × 4 values).

use super::super::{reference, AttendSpan, Kind, QuantizedRows, MT, QK, TILE_N};
use super::{bcast4, for_rows};
use std::arch::x86_64::*;

macro_rules! bcast {
    ($a:expr, $j:expr) => {
        bcast4!(_mm256_set1_epi32, $a, $j)
    };
}

/// Quantizes 32 values (`x0..x3`, 8 each) to `[-127, 127]` on the step `scale`, as
/// [`reference::quantize_blocks`] does; returns `Σq` and the residuals `x − q·scale`.
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block(x: [__m256; 4], scale: f32, out: *mut i8) -> (i32, [__m256; 4]) {
    let inv = _mm256_set1_ps(if scale != 0.0 { 1.0 / scale } else { 0.0 });
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let vscale = _mm256_set1_ps(scale);
    let mut q = [_mm256_setzero_si256(); 4];
    let mut residual = x;
    let mut sum = _mm256_setzero_si256();
    for i in 0..4 {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x[i], inv),
        );
        let r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
        residual[i] = _mm256_fnmadd_ps(r, vscale, x[i]);
        q[i] = _mm256_cvtps_epi32(r);
        sum = _mm256_add_epi32(sum, q[i]);
    }
    // i32 → i8 (the values fit, so the saturating packs are exact). The packs work per
    // 128-bit lane and leave 4-byte groups in the order q0 q1 q2 q3 | q0' q1' q2' q3'
    // (primes: each vector's upper half); the permutation restores q0 q0' q1 q1' ...
    let bytes = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        ),
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    );
    _mm256_storeu_si256(out as *mut __m256i, bytes);
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, sum);
    (lanes.iter().sum(), residual)
}

/// [`reference::quantize_blocks`] with 256-bit registers.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_blocks(x: &[f32], rows: &mut QuantizedRows, first_block: usize) {
    let two = rows.levels == 2;
    let sign = _mm256_set1_ps(-0.0);
    for (i, block) in x.chunks_exact(QK).enumerate() {
        let b = first_block + i;
        let p = block.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let a = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), a);
        let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
        let d = amax / 127.0;
        let (sum, residual) = quantize_block(v, d, rows.qs.as_mut_ptr().add(b * QK));
        if two {
            let unit = d / 256.0;
            let (sum2, _) = quantize_block(residual, unit, rows.qs2.as_mut_ptr().add(b * QK));
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

/// [`reference::rms_norm`] compiled for AVX2.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    reference::rms_norm(x, weight, eps, out)
}

/// [`reference::swiglu16`] compiled for AVX2.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn swiglu16(gate: &mut [f32; TILE_N], up: &[f32; TILE_N]) {
    reference::swiglu16(gate, up)
}

/// `dst[i] = f16(src[i])` (round to nearest even), as raw bits.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn to_f16(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
        _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
        i += 8;
    }
    reference::to_f16(&src[i..n], &mut dst[i..n]);
}

/// [`reference::exp`] for 8 lanes.
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_ps(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 5040.0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 720.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 120.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 24.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 6.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    // 2^n, built in the exponent field (n is within [-126, 127] after the clamp).
    let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    ));
    _mm256_mul_ps(p, pow2)
}

/// See [`super::super::tile`]: rows in groups of up to 4, each over both halves.
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
    let two = x.levels == 2;
    let mut r0 = 0;
    while r0 < rows {
        let n = (rows - r0).min(4);
        let m = m0 + r0;
        for half in 0..2 {
            match kind {
                Kind::Q4 => dispatch_rows!(tile_q4, n, two, (tile, kb, x, m, half, out, r0)),
                Kind::Q8 => dispatch_rows!(tile_q8, n, two, (tile, kb, x, m, half, out, r0)),
            }
        }
        r0 += n;
    }
}

/// Rows `8·half..8·half + 8` of the tile against activation rows `m0..m0 + R`, written to
/// `out[first..first + R]`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q4<const R: usize, const TWO: bool>(
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    half: usize,
    out: &mut [[f32; TILE_N]; MT],
    first: usize,
) {
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); MT];
    let k = kb * QK;
    let qs = x.qs.as_ptr().add(m0 * k);
    let qs2 = if TWO { x.qs2.as_ptr().add(m0 * k) } else { qs };
    let d = x.d.as_ptr().add(m0 * kb);
    let sum = x.sum.as_ptr().add(m0 * kb);
    for b in 0..kb {
        let p = tile.add(b * Kind::Q4.block_bytes());
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * half) as *const __m128i));
        let mw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(32 + 16 * half) as *const __m128i));
        let line = |g: usize| _mm256_load_si256(p.add(64 + 64 * g + 32 * half) as *const __m256i);
        let (w0, w1, w2, w3) = (line(0), line(1), line(2), line(3));
        let lo = |w: __m256i| _mm256_and_si256(w, mask);
        let hi = |w: __m256i| _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
        let (l0, h0, l1, h1) = (lo(w0), hi(w0), lo(w1), hi(w1));
        let (l2, h2, l3, h3) = (lo(w2), hi(w2), lo(w3), hi(w3));
        // Σ q_w·q_a over the block: 8 products of ≤ 3810 summed in i16, then into i32.
        macro_rules! dot {
            ($a:expr) => {{
                let a = $a;
                let mut s = _mm256_maddubs_epi16(l0, bcast!(a, 0));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(h0, bcast!(a, 4)));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(l1, bcast!(a, 1)));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(h1, bcast!(a, 5)));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(l2, bcast!(a, 2)));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(h2, bcast!(a, 6)));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(l3, bcast!(a, 3)));
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(h3, bcast!(a, 7)));
                _mm256_madd_epi16(s, ones)
            }};
        }
        macro_rules! row {
            ($i:literal) => {
                let blk = $i * kb + b;
                let mut isum = dot!(qs.add($i * k + b * QK));
                if TWO {
                    isum = _mm256_add_epi32(
                        _mm256_slli_epi32(isum, 8),
                        dot!(qs2.add($i * k + b * QK)),
                    );
                }
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*d.add(blk)));
                acc[$i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[$i]);
                acc[$i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*sum.add(blk)), acc[$i]);
            };
        }
        for_rows!(R, row);
    }
    macro_rules! store {
        ($i:literal) => {
            _mm256_storeu_ps(out[first + $i].as_mut_ptr().add(8 * half), acc[$i]);
        };
    }
    for_rows!(R, store);
}

/// As [`tile_q4`] for Q8 tiles.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q8<const R: usize, const TWO: bool>(
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    half: usize,
    out: &mut [[f32; TILE_N]; MT],
    first: usize,
) {
    let offset = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); MT];
    let k = kb * QK;
    let qs = x.qs.as_ptr().add(m0 * k);
    let qs2 = if TWO { x.qs2.as_ptr().add(m0 * k) } else { qs };
    let d = x.d.as_ptr().add(m0 * kb);
    for b in 0..kb {
        let p = tile.add(b * Kind::Q8.block_bytes());
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * half) as *const __m128i));
        let mut isum = [_mm256_setzero_si256(); MT];
        let mut isum2 = [_mm256_setzero_si256(); MT];
        for g in 0..8 {
            // The stored `q + 128`, back to signed.
            let w = _mm256_xor_si256(
                _mm256_load_si256(p.add(64 + 64 * g + 32 * half) as *const __m256i),
                offset,
            );
            let magnitude = _mm256_abs_epi8(w);
            macro_rules! row {
                ($i:literal) => {
                    let a = bcast!(qs.add($i * k + b * QK), g);
                    let s = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(a, w));
                    isum[$i] = _mm256_add_epi32(isum[$i], _mm256_madd_epi16(s, ones));
                    if TWO {
                        let a = bcast!(qs2.add($i * k + b * QK), g);
                        let s = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(a, w));
                        isum2[$i] = _mm256_add_epi32(isum2[$i], _mm256_madd_epi16(s, ones));
                    }
                };
            }
            for_rows!(R, row);
        }
        macro_rules! row {
            ($i:literal) => {
                let blk = $i * kb + b;
                let total = if TWO {
                    _mm256_add_epi32(_mm256_slli_epi32(isum[$i], 8), isum2[$i])
                } else {
                    isum[$i]
                };
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*d.add(blk)));
                acc[$i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), scale, acc[$i]);
            };
        }
        for_rows!(R, row);
    }
    macro_rules! store {
        ($i:literal) => {
            _mm256_storeu_ps(out[first + $i].as_mut_ptr().add(8 * half), acc[$i]);
        };
    }
    for_rows!(R, store);
}

/// See [`super::super::attend`].
pub(crate) unsafe fn attend(
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

/// Lanes `lo..hi` of 8 set, as a mask of all-ones lanes.
#[target_feature(enable = "avx2")]
unsafe fn lane_mask(lo: usize, hi: usize) -> __m256 {
    let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let above = _mm256_cmpgt_epi32(index, _mm256_set1_epi32(lo as i32 - 1));
    let below = _mm256_cmpgt_epi32(_mm256_set1_epi32(hi as i32), index);
    _mm256_castsi256_ps(_mm256_and_si256(above, below))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_heads<const G: usize>(
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
    let first = from / 16 * 16;
    let chunks = (to - first).div_ceil(16);
    let stride = chunks * 16;
    let kp = keys.as_ptr();
    let sp = scores.as_mut_ptr();
    for c in 0..chunks {
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for dd in 0..d {
            let at = kp.add((first + c * 16) * d + dd * 16);
            let k0 = _mm256_cvtph_ps(_mm_loadu_si128(at as *const __m128i));
            let k1 = _mm256_cvtph_ps(_mm_loadu_si128(at.add(8) as *const __m128i));
            for (g, acc) in acc.iter_mut().enumerate() {
                let qb = _mm256_set1_ps(*q.get_unchecked(g * d + dd));
                acc[0] = _mm256_fmadd_ps(qb, k0, acc[0]);
                acc[1] = _mm256_fmadd_ps(qb, k1, acc[1]);
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(sp.add(g * stride + c * 16), acc[0]);
            _mm256_storeu_ps(sp.add(g * stride + c * 16 + 8), acc[1]);
        }
    }
    // Valid lanes of the 8-lane half `e` (0..2·chunks) of the scores.
    let valid = |e: usize| {
        let start = first + e * 8;
        let lo = from.saturating_sub(start).min(8);
        let hi = to.saturating_sub(start).min(8);
        lane_mask(lo, hi)
    };
    let vscale = _mm256_set1_ps(scale);
    let mut inv = [0f32; G];
    for (g, inv) in inv.iter_mut().enumerate() {
        let row = sp.add(g * stride);
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        for e in 0..2 * chunks {
            let v = _mm256_mul_ps(_mm256_loadu_ps(row.add(e * 8)), vscale);
            _mm256_storeu_ps(row.add(e * 8), v);
            max = _mm256_blendv_ps(max, _mm256_max_ps(max, v), valid(e));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), max);
        let max = _mm256_set1_ps(lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)));
        let (mut sum_lo, mut sum_hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in 0..chunks {
            for (h, sum) in [&mut sum_lo, &mut sum_hi].into_iter().enumerate() {
                let e = 2 * c + h;
                let x = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(row.add(e * 8)), max));
                let x = _mm256_and_ps(x, valid(e));
                *sum = _mm256_add_ps(*sum, x);
                _mm256_storeu_ps(row.add(e * 8), x);
            }
        }
        *inv = 1.0 / super::sum16(sum_lo, sum_hi);
    }
    let vp = values.as_ptr().add(from * d);
    let p = sp.add(from - first);
    for c0 in (0..d).step_by(16) {
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for j in 0..n {
            let row = vp.add(j * d + c0);
            let v0 = _mm256_cvtph_ps(_mm_loadu_si128(row as *const __m128i));
            let v1 = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8) as *const __m128i));
            for (g, acc) in acc.iter_mut().enumerate() {
                let pj = _mm256_set1_ps(*p.add(g * stride + j));
                acc[0] = _mm256_fmadd_ps(pj, v0, acc[0]);
                acc[1] = _mm256_fmadd_ps(pj, v1, acc[1]);
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            let s = _mm256_set1_ps(inv[g]);
            let at = o.as_mut_ptr().add(g * d + c0);
            _mm256_storeu_ps(at, _mm256_mul_ps(acc[0], s));
            _mm256_storeu_ps(at.add(8), _mm256_mul_ps(acc[1], s));
        }
    }
}
