//! Every instruction set's kernels against the portable reference (bit for bit), and the
//! reference against plain f64 arithmetic.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::{
    attend, matmul, matmul_swiglu, reference, rms_norm_rows, swiglu16, to_f16, AttendSpan, Isa,
    PackedMatrix, QuantizedRows,
};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn qtensor(n: usize, k: usize, seed: u64, dtype: GgmlDType) -> QTensor {
    let w = Tensor::from_vec(values(n * k, seed), (n, k), &Device::Cpu).unwrap();
    QTensor::quantize(&w, dtype).unwrap()
}

/// The instruction sets tested here, printed so that a log shows what ran.
fn isas(test: &str) -> Vec<Isa> {
    let all = Isa::supported_all();
    let names: Vec<&str> = all.iter().map(|i| i.name()).collect();
    let missing: Vec<&str> = Isa::ALL
        .iter()
        .filter(|i| !i.supported())
        .map(|i| i.name())
        .collect();
    eprintln!(
        "{test}: kernels tested on this CPU: {} (not available here: {})",
        names.join(", "),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        }
    );
    all
}

/// Rounds like the kernels: to steps of `d` (default `amax / 127`) within ±127.
fn round_block(block: &[f32], d: Option<f32>) -> (Vec<f32>, f32) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = d.unwrap_or(amax / 127.0);
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    (
        block
            .iter()
            .map(|v| (v * inv).round_ties_even().clamp(-127.0, 127.0) * d)
            .collect(),
        d,
    )
}

/// `x · W^T` in f64 from the dequantized weights and the activations rounded the way the
/// kernels round them (one level, or the residual rounded again with two).
fn f64_product(w: &QTensor, x: &[f32], k: usize, levels: usize) -> Vec<f32> {
    let dense: Vec<f32> = w
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut xq = Vec::with_capacity(x.len());
    for block in x.chunks(32) {
        let (first, d) = round_block(block, None);
        if levels == 1 {
            xq.extend(first.iter().map(|&v| v as f64));
        } else {
            let residual: Vec<f32> = block.iter().zip(&first).map(|(x, q)| x - q).collect();
            let (second, _) = round_block(&residual, Some(d / 256.0));
            xq.extend(
                first
                    .iter()
                    .zip(&second)
                    .map(|(a, b)| *a as f64 + *b as f64),
            );
        }
    }
    xq.chunks(k)
        .flat_map(|row| {
            dense
                .chunks(k)
                .map(|w| row.iter().zip(w).map(|(a, b)| a * *b as f64).sum::<f64>() as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * (1.0 + w.abs()),
            "{what}, element {i}: {g} vs {w}"
        );
    }
}

fn assert_bits_equal(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}, element {i}: {g} vs the reference's {w}"
        );
    }
}

fn product(isa: Isa, w: &PackedMatrix, x: &[f32], k: usize, levels: usize) -> Vec<f32> {
    let mut rows = QuantizedRows::new(levels);
    rows.quantize(isa, x, k);
    let mut out = vec![0f32; x.len() / k * w.rows()];
    matmul(isa, w, &rows, &mut out);
    out
}

/// Odd shapes: row counts that are not multiples of 16, ragged activation counts around
/// the 8-row passes, every block format and both activation levels.
#[test]
fn every_isa_computes_the_references_products_bit_for_bit() {
    let formats = [
        (GgmlDType::Q4_0, 96),
        (GgmlDType::Q4_1, 96),
        (GgmlDType::Q8_0, 96),
        (GgmlDType::Q4K, 256),
        (GgmlDType::Q6K, 256),
        (GgmlDType::Q5_0, 64),
    ];
    for isa in isas("products") {
        for (dtype, k) in formats {
            for levels in [1, 2] {
                for (n, m) in [(48, 1), (40, 3), (16, 8), (24, 9), (48, 17)] {
                    let w = qtensor(n, k, n as u64 * 31 + m as u64, dtype);
                    let packed = PackedMatrix::stack(&[&w], false).unwrap();
                    let x = values(m * k, 7 * m as u64 + levels as u64);
                    let want = product(Isa::Scalar, &packed, &x, k, levels);
                    let got = product(isa, &packed, &x, k, levels);
                    let what = format!("{isa:?} {dtype:?} n={n} m={m} levels={levels}");
                    assert_bits_equal(&got, &want, &what);
                }
            }
        }
    }
}

#[test]
fn the_reference_matches_f64_arithmetic() {
    let k = 96;
    for levels in [1, 2] {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4_0] {
            for (n, m) in [(48, 1), (48, 5), (40, 8), (48, 13), (16, 17), (40, 150)] {
                let w = qtensor(n, k, n as u64 + m as u64, dtype);
                let packed = PackedMatrix::stack(&[&w], false).unwrap();
                let x = values(m * k, 7 * m as u64);
                let got = product(Isa::Scalar, &packed, &x, k, levels);
                // Q4_0, Q4_1 and Q8_0 are multiplied as stored: exact up to f32 rounding.
                let what = format!("{dtype:?} n={n} m={m} levels={levels}");
                assert_close(&got, &f64_product(&w, &x, k, levels), 1e-4, &what);
            }
        }
    }
}

#[test]
fn activations_saturate_nowhere_and_stay_within_127() {
    // A block whose residuals sit at the rounding boundary, and extreme values.
    let mut x = values(64, 3);
    x[0] = 1e6;
    x[1] = -1e6;
    x[33] = 0.0;
    for isa in isas("quantize") {
        let mut rows = QuantizedRows::new(2);
        rows.quantize(isa, &x, 64);
        assert!(rows.qs.iter().chain(&rows.qs2).all(|&q| q >= -127));
        assert_eq!(rows.qs[0], 127);
        assert_eq!(rows.qs[1], -127);
        let mut want = QuantizedRows::new(2);
        want.quantize(Isa::Scalar, &x, 64);
        assert_eq!(
            (&rows.qs, &rows.qs2, &rows.sum128),
            (&want.qs, &want.qs2, &want.sum128)
        );
        assert_bits_equal(&rows.d, &want.d, "scales");
        assert_bits_equal(&rows.sum, &want.sum, "sums");
    }
}

#[test]
fn two_levels_are_close_to_f32() {
    let (k, n, m) = (256, 32, 3);
    let w = qtensor(n, k, 11, GgmlDType::Q4_1);
    let packed = PackedMatrix::stack(&[&w], false).unwrap();
    let x = values(m * k, 12);
    let dense: Vec<f32> = w
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let exact: Vec<f32> = x
        .chunks(k)
        .flat_map(|row| {
            dense
                .chunks(k)
                .map(|w| row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>())
                .collect::<Vec<_>>()
        })
        .collect();
    let error = |levels| {
        product(Isa::best(), &packed, &x, k, levels)
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    };
    let (one, two) = (error(1), error(2));
    assert!(
        two < 1e-3 && two * 20.0 < one,
        "one level {one}, two levels {two}"
    );
}

#[test]
fn stacked_and_swiglu_products_match_on_every_isa() {
    let (k, m) = (64, 9);
    let a = qtensor(32, k, 1, GgmlDType::Q4_1);
    let b = qtensor(16, k, 2, GgmlDType::Q4_1);
    let c = qtensor(16, k, 3, GgmlDType::Q8_0);
    let x = values(m * k, 4);
    let gate = qtensor(32, k, 5, GgmlDType::Q4_1);
    let up = qtensor(32, k, 6, GgmlDType::Q4_1);
    let swiglu_weights = PackedMatrix::stack(&[&gate, &up], true).unwrap();
    let (g, u) = (f64_product(&gate, &x, k, 1), f64_product(&up, &x, k, 1));
    let swiglu_want: Vec<f32> = g
        .iter()
        .zip(&u)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    let mut swiglu_reference = vec![];
    for isa in isas("stacked") {
        let mut rows = QuantizedRows::new(1);
        rows.quantize(isa, &x, k);
        // Mixed formats stack as Q8_0 (the Q4_1 parts re-quantized): compare loosely,
        // which still catches rows or tiles out of place.
        let stacked = PackedMatrix::stack(&[&a, &b, &c], false).unwrap();
        let mut out = vec![0f32; m * 64];
        matmul(isa, &stacked, &rows, &mut out);
        let parts = [
            f64_product(&a, &x, k, 1),
            f64_product(&b, &x, k, 1),
            f64_product(&c, &x, k, 1),
        ];
        for r in 0..m {
            let want: Vec<f32> = [(&parts[0], 32), (&parts[1], 16), (&parts[2], 16)]
                .iter()
                .flat_map(|(p, n)| p[r * n..(r + 1) * n].to_vec())
                .collect();
            let what = format!("{isa:?} stacked row {r}");
            assert_close(&out[r * 64..(r + 1) * 64], &want, 0.1, &what);
        }

        let mut out = vec![0f32; m * 32];
        matmul_swiglu(isa, &swiglu_weights, &rows, &mut out);
        assert_close(&out, &swiglu_want, 1e-4, &format!("{isa:?} swiglu"));
        if isa == Isa::Scalar {
            swiglu_reference = out;
        } else {
            assert_bits_equal(&out, &swiglu_reference, &format!("{isa:?} swiglu"));
        }
    }
}

#[test]
fn elementwise_kernels_match_the_reference_bit_for_bit() {
    let x: Vec<f32> = values(3 * 584, 21).iter().map(|v| v * 30.0).collect();
    let weight = values(584, 22);
    let mut gate = [0f32; 16];
    let mut up = [0f32; 16];
    gate.copy_from_slice(&x[..16]);
    gate[0] = -100.0; // clamped exponent
    gate[1] = 95.0;
    up.copy_from_slice(&x[16..32]);
    let (mut norm_want, mut swiglu_want, mut f16_want) = (vec![0f32; x.len()], gate, vec![0; 100]);
    rms_norm_rows(Isa::Scalar, &x, &weight, 1e-5, &mut norm_want);
    swiglu16(Isa::Scalar, &mut swiglu_want, &up);
    to_f16(Isa::Scalar, &x[..100], &mut f16_want);
    for isa in isas("elementwise") {
        let mut norm = vec![0f32; x.len()];
        rms_norm_rows(isa, &x, &weight, 1e-5, &mut norm);
        assert_bits_equal(&norm, &norm_want, &format!("{isa:?} rms_norm"));
        let mut swiglu = gate;
        swiglu16(isa, &mut swiglu, &up);
        assert_bits_equal(&swiglu, &swiglu_want, &format!("{isa:?} swiglu"));
        let mut f16s = vec![0; 100];
        to_f16(isa, &x[..100], &mut f16s);
        assert_eq!(f16s, f16_want, "{isa:?} f16");
    }
    // The reference exponential against the standard library's.
    for v in [-87.0f32, -20.5, -1.0, -1e-3, 0.0, 0.3, 1.0, 10.25, 80.0] {
        let (ours, std) = (reference::exp(v), v.exp());
        assert!(
            (ours - std).abs() <= 1e-6 * std,
            "exp({v}): {ours} vs {std}"
        );
    }
    for h in [
        0u16, 1, 0x3C00, 0x8001, 0x7BFF, 0x7C00, 0xFC00, 0x0400, 0x03FF,
    ] {
        let want = half::f16::from_bits(h).to_f32();
        assert_eq!(
            reference::f16_to_f32(h).to_bits(),
            want.to_bits(),
            "f16 {h:#x}"
        );
    }
}

/// Keys in blocks of 16 positions transposed within a block, values row by row, as the
/// packed KV cache lays them out.
fn kv_layout(keys: &[f32], values: &[f32], d: usize) -> (Vec<u16>, Vec<u16>) {
    let positions = keys.len() / d;
    let capacity = positions.next_multiple_of(16);
    let mut k16 = vec![0u16; capacity * d + 16];
    let mut v16 = vec![0u16; capacity * d + 16];
    for j in 0..positions {
        for dd in 0..d {
            k16[(j / 16 * 16) * d + dd * 16 + j % 16] =
                half::f16::from_f32(keys[j * d + dd]).to_bits();
            v16[j * d + dd] = half::f16::from_f32(values[j * d + dd]).to_bits();
        }
    }
    (k16, v16)
}

#[test]
fn attention_matches_the_reference_and_f64_softmax() {
    let d = 64;
    let positions = 53;
    let keys = values(positions * d, 31);
    let vals = values(positions * d, 32);
    let (k16, v16) = kv_layout(&keys, &vals, d);
    let round = |v: f32| half::f16::from_f32(v).to_f32() as f64;
    for heads in 1..=4 {
        let q: Vec<f32> = values(heads * d, 33 + heads as u64)
            .iter()
            .map(|v| v * 4.0)
            .collect();
        for (from, to) in [(0, 1), (0, 53), (5, 37), (16, 33), (17, 18), (3, 16)] {
            let span = AttendSpan {
                from,
                to,
                scale: 0.125,
            };
            let mut scores = vec![0f32; heads * (to - from + 32)];
            let mut want = vec![0f32; heads * d];
            attend(
                Isa::Scalar,
                heads,
                &q,
                &k16,
                &v16,
                span,
                &mut scores,
                &mut want,
            );
            // f64 softmax over the f16-rounded cache.
            for g in 0..heads {
                let logits: Vec<f64> = (from..to)
                    .map(|j| {
                        (0..d)
                            .map(|dd| q[g * d + dd] as f64 * round(keys[j * d + dd]))
                            .sum::<f64>()
                            * 0.125
                    })
                    .collect();
                let max = logits.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for dd in 0..d {
                    let o: f64 = (from..to)
                        .map(|j| e[j - from] / total * round(vals[j * d + dd]))
                        .sum();
                    let got = want[g * d + dd] as f64;
                    assert!(
                        (got - o).abs() < 1e-5,
                        "heads {heads} {from}..{to}: {got} vs {o}"
                    );
                }
            }
            for isa in isas("attention") {
                let mut scores = vec![0f32; heads * (to - from + 32)];
                let mut out = vec![0f32; heads * d];
                attend(isa, heads, &q, &k16, &v16, span, &mut scores, &mut out);
                let what = format!("{isa:?} heads {heads} {from}..{to}");
                assert_bits_equal(&out, &want, &what);
            }
        }
    }
}
