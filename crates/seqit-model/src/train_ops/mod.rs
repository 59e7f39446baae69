//! The training forward pass's non-matmul pieces on the CPU, each one op with a
//! hand-written backward pass: [`attention`], [`lora_linear`], [`rms_norm`], [`swiglu`].
//!
//! Spelled with candle's elementary ops, each of these is a chain of passes over memory
//! (and a tensor kept for backward per link), which cost more than the matrix products
//! around them. They compute in f32 (bf16/f16 tensors are widened at their boundaries);
//! other devices use the elementary ops.

mod attention;
mod lora;
mod rms_norm;
mod swiglu;

pub(crate) use attention::{attention, Heads};
pub(crate) use lora::lora_linear;
pub(crate) use rms_norm::rms_norm;
pub(crate) use swiglu::swiglu;

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};
use gemm::{gemm, Parallelism};

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("training ops take contiguous f32 CPU tensors"),
    }
}

/// Runs `f` on the f32 data of each tensor (all on the CPU and contiguous).
fn with_slices<const N: usize, R>(
    tensors: [&Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> Result<R>,
) -> Result<R> {
    let guards = tensors.map(|t| t.storage_and_layout());
    let mut slices = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        let Storage::Cpu(storage) = &**storage else {
            candle_core::bail!("training ops run on the CPU");
        };
        slices.push(f32_slice(storage, layout)?);
    }
    f(slices.try_into().expect("one slice per tensor"))
}

/// The gradient of an op's `input`, computed as f32 `values` (one per element), as a
/// tensor of `input`'s shape on its device.
fn gradient(values: Vec<f32>, input: &Tensor) -> Result<Option<Tensor>> {
    let values = Tensor::from_vec(values, input.shape(), input.device())?;
    Ok(Some(values))
}

/// Whether the CPU ops of this module apply to `x`: on the CPU, in f32, or in bf16/f16,
/// which [`in_f32`] computes in f32.
pub(crate) fn applies_to(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
}

/// `op` on f32 versions of `inputs`, its result cast back to their dtype. bf16/f16
/// training on the CPU computes each fused op in f32 (candle's CPU has no low-precision
/// arithmetic of its own) and keeps low-precision tensors between them: candle's
/// elementary ops would instead keep several full-size intermediates per op for backward.
/// The casts are differentiable; f32 inputs are not copied.
fn in_f32<const N: usize>(
    inputs: [&Tensor; N],
    op: impl FnOnce([Tensor; N]) -> Result<Tensor>,
) -> Result<Tensor> {
    let dtype = inputs[0].dtype();
    let mut widened = Vec::with_capacity(N);
    for t in inputs {
        widened.push(t.to_dtype(DType::F32)?);
    }
    op(widened.try_into().expect("one tensor per input"))?.to_dtype(dtype)
}

/// Whether a matrix product may use all threads (rayon's pool, as candle's matmul does)
/// or runs on the calling thread (inside a parallel loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Threads {
    One,
    All,
}

/// `dst[m×n] = (accumulate ? dst : 0) + beta·lhs[m×k]·rhs[k×n]`, every matrix given by
/// its pointer, row stride and column stride.
///
/// # Safety
/// Each matrix's extent (from its pointer, strides and dimensions) must be in bounds, and
/// no other thread may write `dst`'s extent meanwhile.
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize, usize),
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
    threads: Threads,
) {
    let parallelism = match threads {
        Threads::One => Parallelism::None,
        Threads::All => Parallelism::Rayon(0),
    };
    gemm(
        m,
        n,
        k,
        dst.0,
        dst.2 as isize,
        dst.1 as isize,
        accumulate,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        if accumulate { 1.0 } else { 0.0 },
        beta,
        false,
        false,
        false,
        parallelism,
    );
}

#[cfg(test)]
pub(crate) mod test_support {
    use candle_core::{Device, Tensor, Var};

    /// Deterministic values in `[-scale, scale)`.
    pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    pub fn var(shape: &[usize], seed: u64, scale: f32) -> Var {
        let n = shape.iter().product();
        Var::from_tensor(&Tensor::from_vec(values(n, seed, scale), shape, &Device::Cpu).unwrap())
            .unwrap()
    }

    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        max_abs(&(a - b).unwrap())
    }

    pub fn max_abs(a: &Tensor) -> f32 {
        a.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Asserts that `fused` and `composite` (functions of `inputs`) agree in value and in
    /// the gradients of every input, under a fixed random projection of the output.
    pub fn assert_same_maths(
        inputs: &[(&str, &Var)],
        fused: &Tensor,
        composite: &Tensor,
        what: &str,
    ) {
        let scale = max_abs(composite).max(1.0);
        assert!(
            max_abs_diff(fused, composite) < 1e-5 * scale,
            "{what}: outputs differ"
        );
        let n = composite.elem_count();
        let probe =
            Tensor::from_vec(values(n, 4242, 1.0), composite.shape(), &Device::Cpu).unwrap();
        let grads = |y: &Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gc) = (grads(fused), grads(composite));
        for (name, v) in inputs {
            let (p, q) = (
                gf.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            let scale = max_abs(q);
            assert!(scale > 0.01, "{what}: the gradient of {name} vanishes");
            assert!(
                max_abs_diff(p, q) < 1e-4 * scale.max(1.0),
                "{what}: gradients of {name} differ"
            );
        }
    }
}
