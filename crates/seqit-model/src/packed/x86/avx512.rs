//! AVX-512 VNNI kernels: one `vpdpbusd` multiplies 4 inner values of a whole 16-row tile.

use super::super::{reference, AttendSpan, Kind, QuantizedRows, MT, QK, TILE_N};
use super::{bcast4, for_rows};
use std::arch::x86_64::*;

macro_rules! bcast {
    ($a:expr, $j:expr) => {
        bcast4!(_mm512_set1_epi32, $a, $j)
    };
}

/// [`reference::rms_norm`] compiled for AVX-512.
#[target_feature(enable = "avx512f,fma")]
pub(crate) unsafe fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    reference::rms_norm(x, weight, eps, out)
}

/// [`reference::swiglu16`] in one register.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn swiglu16(gate: &mut [f32; TILE_N], up: &[f32; TILE_N]) {
    let g = _mm512_loadu_ps(gate.as_ptr());
    let u = _mm512_loadu_ps(up.as_ptr());
    let e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
    let silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e));
    _mm512_storeu_ps(gate.as_mut_ptr(), _mm512_mul_ps(silu, u));
}

/// [`reference::exp`] for 16 lanes.
#[target_feature(enable = "avx512f")]
unsafe fn exp_ps(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 720.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 120.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 24.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0 / 6.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
    _mm512_scalef_ps(p, n)
}

/// The sum of 16 lanes in [`reference::sum16`]'s order.
#[target_feature(enable = "avx512f")]
unsafe fn sum16(v: __m512) -> f32 {
    let mut lanes = [0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), v);
    reference::sum16(lanes)
}

/// See [`super::super::tile`].
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
    match kind {
        Kind::Q4 => dispatch_rows!(tile_q4, rows, two, (tile, kb, x, m0, out)),
        Kind::Q8 => dispatch_rows!(tile_q8, rows, two, (tile, kb, x, m0, out)),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_q4<const R: usize, const TWO: bool>(
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    out: &mut [[f32; TILE_N]; MT],
) {
    let mask = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); MT];
    let k = kb * QK;
    let qs = x.qs.as_ptr().add(m0 * k);
    let qs2 = if TWO { x.qs2.as_ptr().add(m0 * k) } else { qs };
    let d = x.d.as_ptr().add(m0 * kb);
    let sum = x.sum.as_ptr().add(m0 * kb);
    for b in 0..kb {
        let p = tile.add(b * Kind::Q4.block_bytes());
        let dw = _mm512_cvtph_ps(_mm256_load_si256(p as *const __m256i));
        let mw = _mm512_cvtph_ps(_mm256_load_si256(p.add(32) as *const __m256i));
        let w0 = _mm512_load_si512(p.add(64) as *const __m512i);
        let w1 = _mm512_load_si512(p.add(128) as *const __m512i);
        let w2 = _mm512_load_si512(p.add(192) as *const __m512i);
        let w3 = _mm512_load_si512(p.add(256) as *const __m512i);
        let (l0, h0) = (
            _mm512_and_si512(w0, mask),
            _mm512_and_si512(_mm512_srli_epi16(w0, 4), mask),
        );
        let (l1, h1) = (
            _mm512_and_si512(w1, mask),
            _mm512_and_si512(_mm512_srli_epi16(w1, 4), mask),
        );
        let (l2, h2) = (
            _mm512_and_si512(w2, mask),
            _mm512_and_si512(_mm512_srli_epi16(w2, 4), mask),
        );
        let (l3, h3) = (
            _mm512_and_si512(w3, mask),
            _mm512_and_si512(_mm512_srli_epi16(w3, 4), mask),
        );
        // Σ q_w·q_a over the block for activations `a` (32 i8), in two chains
        // starting from `s0`.
        macro_rules! dot {
            ($s0:expr, $a:expr) => {{
                let a = $a;
                let mut s0 = _mm512_dpbusd_epi32($s0, l0, bcast!(a, 0));
                let mut s1 = _mm512_dpbusd_epi32(zero, h0, bcast!(a, 4));
                s0 = _mm512_dpbusd_epi32(s0, l1, bcast!(a, 1));
                s1 = _mm512_dpbusd_epi32(s1, h1, bcast!(a, 5));
                s0 = _mm512_dpbusd_epi32(s0, l2, bcast!(a, 2));
                s1 = _mm512_dpbusd_epi32(s1, h2, bcast!(a, 6));
                s0 = _mm512_dpbusd_epi32(s0, l3, bcast!(a, 3));
                s1 = _mm512_dpbusd_epi32(s1, h3, bcast!(a, 7));
                _mm512_add_epi32(s0, s1)
            }};
        }
        macro_rules! row {
            ($i:literal) => {
                let blk = $i * kb + b;
                let mut isum = dot!(zero, qs.add($i * k + b * QK));
                if TWO {
                    isum = dot!(_mm512_slli_epi32(isum, 8), qs2.add($i * k + b * QK));
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*d.add(blk)));
                acc[$i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[$i]);
                acc[$i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*sum.add(blk)), acc[$i]);
            };
        }
        for_rows!(R, row);
    }
    macro_rules! store {
        ($i:literal) => {
            _mm512_storeu_ps(out[$i].as_mut_ptr(), acc[$i]);
        };
    }
    for_rows!(R, store);
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_q8<const R: usize, const TWO: bool>(
    tile: *const u8,
    kb: usize,
    x: &QuantizedRows,
    m0: usize,
    out: &mut [[f32; TILE_N]; MT],
) {
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); MT];
    let k = kb * QK;
    let qs = x.qs.as_ptr().add(m0 * k);
    let qs2 = if TWO { x.qs2.as_ptr().add(m0 * k) } else { qs };
    let d = x.d.as_ptr().add(m0 * kb);
    let sum128 = x.sum128.as_ptr().add(m0 * kb);
    for b in 0..kb {
        let p = tile.add(b * Kind::Q8.block_bytes());
        let dw = _mm512_cvtph_ps(_mm256_load_si256(p as *const __m256i));
        let w0 = _mm512_load_si512(p.add(64) as *const __m512i);
        let w1 = _mm512_load_si512(p.add(128) as *const __m512i);
        let w2 = _mm512_load_si512(p.add(192) as *const __m512i);
        let w3 = _mm512_load_si512(p.add(256) as *const __m512i);
        let w4 = _mm512_load_si512(p.add(320) as *const __m512i);
        let w5 = _mm512_load_si512(p.add(384) as *const __m512i);
        let w6 = _mm512_load_si512(p.add(448) as *const __m512i);
        let w7 = _mm512_load_si512(p.add(512) as *const __m512i);
        // Σ (q_w + 128)·q_a over the block for activations `a`, from `s0`.
        macro_rules! dot {
            ($s0:expr, $a:expr) => {{
                let a = $a;
                let mut s0 = _mm512_dpbusd_epi32($s0, w0, bcast!(a, 0));
                let mut s1 = _mm512_dpbusd_epi32(zero, w1, bcast!(a, 1));
                s0 = _mm512_dpbusd_epi32(s0, w2, bcast!(a, 2));
                s1 = _mm512_dpbusd_epi32(s1, w3, bcast!(a, 3));
                s0 = _mm512_dpbusd_epi32(s0, w4, bcast!(a, 4));
                s1 = _mm512_dpbusd_epi32(s1, w5, bcast!(a, 5));
                s0 = _mm512_dpbusd_epi32(s0, w6, bcast!(a, 6));
                s1 = _mm512_dpbusd_epi32(s1, w7, bcast!(a, 7));
                _mm512_add_epi32(s0, s1)
            }};
        }
        macro_rules! row {
            ($i:literal) => {
                let blk = $i * kb + b;
                let mut isum = dot!(zero, qs.add($i * k + b * QK));
                if TWO {
                    isum = dot!(_mm512_slli_epi32(isum, 8), qs2.add($i * k + b * QK));
                }
                // The +128 offset of the weights, taken back.
                let isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(*sum128.add(blk)));
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*d.add(blk)));
                acc[$i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[$i]);
            };
        }
        for_rows!(R, row);
    }
    macro_rules! store {
        ($i:literal) => {
            _mm512_storeu_ps(out[$i].as_mut_ptr(), acc[$i]);
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

#[target_feature(enable = "avx512f")]
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
    // Scores are computed for whole key blocks: index `i` is position `first + i`.
    let first = from / 16 * 16;
    let chunks = (to - first).div_ceil(16);
    let stride = chunks * 16;
    let kp = keys.as_ptr();
    let sp = scores.as_mut_ptr();
    let load_k = |c: usize, dd: usize| {
        _mm512_cvtph_ps(_mm256_loadu_si256(
            kp.add((first + c * 16) * d + dd * 16) as *const __m256i
        ))
    };
    // Two key blocks at a time so that 2·G FMA chains are in flight.
    let mut c = 0;
    while c < chunks {
        let two = c + 1 < chunks;
        let mut acc = [[_mm512_setzero_ps(); 2]; G];
        for dd in 0..d {
            let k0 = load_k(c, dd);
            let k1 = if two { load_k(c + 1, dd) } else { k0 };
            for (g, acc) in acc.iter_mut().enumerate() {
                let qb = _mm512_set1_ps(*q.get_unchecked(g * d + dd));
                acc[0] = _mm512_fmadd_ps(qb, k0, acc[0]);
                acc[1] = _mm512_fmadd_ps(qb, k1, acc[1]);
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(sp.add(g * stride + c * 16), acc[0]);
            if two {
                _mm512_storeu_ps(sp.add(g * stride + c * 16 + 16), acc[1]);
            }
        }
        c += 2;
    }
    // Lanes of the first and last blocks outside `from..to` do not count.
    let lanes = |c: usize| -> u16 {
        let lo = if c == 0 { from - first } else { 0 };
        let hi = (to - first - c * 16).min(16);
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
    };
    let vscale = _mm512_set1_ps(scale);
    let mut inv = [0f32; G];
    for (g, inv) in inv.iter_mut().enumerate() {
        let row = sp.add(g * stride);
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in 0..chunks {
            let v = _mm512_mul_ps(_mm512_loadu_ps(row.add(c * 16)), vscale);
            _mm512_storeu_ps(row.add(c * 16), v);
            max = _mm512_mask_max_ps(max, lanes(c), max, v);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        let mut sum = _mm512_setzero_ps();
        for c in 0..chunks {
            let e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(row.add(c * 16)), max));
            let e = _mm512_maskz_mov_ps(lanes(c), e);
            sum = _mm512_add_ps(sum, e);
            _mm512_storeu_ps(row.add(c * 16), e);
        }
        *inv = 1.0 / sum16(sum);
    }
    // Weighted values, 64 dimensions at a time.
    let vp = values.as_ptr().add(from * d);
    let p = std::slice::from_raw_parts(sp.add(from - first), G * stride - (from - first));
    for c0 in (0..d).step_by(64) {
        let (vp, op) = (vp.add(c0), o.as_mut_ptr().add(c0));
        match (d - c0) / 16 {
            1 => weighted_values::<G, 1>(p, stride, n, vp, d, &inv, op),
            2 => weighted_values::<G, 2>(p, stride, n, vp, d, &inv, op),
            3 => weighted_values::<G, 3>(p, stride, n, vp, d, &inv, op),
            _ => weighted_values::<G, 4>(p, stride, n, vp, d, &inv, op),
        }
    }
}

/// `o_g[..16W] = inv_g · Σ_j p_g[j] · v[j·d..][..16W]` for `G` heads (`p_g` at `g·stride`,
/// `o_g` at `g·d`).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_values<const G: usize, const W: usize>(
    p: &[f32],
    stride: usize,
    n: usize,
    v: *const u16,
    d: usize,
    inv: &[f32; G],
    o: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); W]; G];
    for j in 0..n {
        let row = v.add(j * d);
        let mut vals = [_mm512_setzero_ps(); W];
        for (c, val) in vals.iter_mut().enumerate() {
            *val = _mm512_cvtph_ps(_mm256_loadu_si256(row.add(16 * c) as *const __m256i));
        }
        for (g, acc) in acc.iter_mut().enumerate() {
            let pj = _mm512_set1_ps(*p.get_unchecked(g * stride + j));
            for (c, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(pj, vals[c], *acc);
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        let scale = _mm512_set1_ps(inv[g]);
        for (c, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(o.add(g * d + 16 * c), _mm512_mul_ps(*acc, scale));
        }
    }
}
