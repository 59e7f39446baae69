//! A projection whose weight is either a dense tensor (trainable, Hugging Face
//! checkpoints) or a GGUF quantized matrix (inference only, multiplied without
//! dequantizing), optionally with a LoRA adapter added to its output.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{
    CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Storage, Tensor, D,
};

use crate::pool::{parallel, SharedMut};
use crate::train_ops;

/// Inner dimension granularity of candle's repacked x86 kernels (AVX-512 VNNI / AVX-VNNI
/// `dpbusd` tiles), which are several times faster than its per-row dot products.
const REPACKED_KERNEL_K: usize = 256;

#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out_features, in_features]`, as in PyTorch.
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    /// candle's matmul of a quantized weight (zero-padded for its repacked kernels), built
    /// on first use: the packed kernels of [`packed`] usually serve quantized weights.
    quantized: OnceLock<std::result::Result<(Arc<QTensor>, QMatMul), String>>,
    bias: Option<Tensor>,
    /// The weight never receives a gradient (LoRA training): backward computes only the
    /// input's gradient instead of also the weight's, a third of the matmul work.
    frozen: bool,
    adapter: Option<LoraAdapter>,
}

/// A low-rank update of a projection (LoRA, Hu et al. 2021): `y += scale · B·A·dropout(x)`
/// with `A: [rank, in]`, `B: [out, rank]` and `scale = alpha / rank`, as in PEFT.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    pub dropout: Option<LoraDropout>,
}

/// Dropout on an adapter's input, reproducible from a seed: every adapter draws its mask
/// from `(shared seed, its own id)`, so a training step gives the same masks when replayed
/// after a resume. Off unless the shared state is enabled (training only).
#[derive(Debug, Clone)]
pub struct LoraDropout {
    pub p: f32,
    pub id: u64,
    pub state: Arc<DropoutState>,
}

#[derive(Debug, Default)]
pub struct DropoutState {
    enabled: AtomicBool,
    seed: AtomicU64,
}

impl DropoutState {
    /// Enables dropout with masks derived from `seed` (one seed per micro-batch).
    pub fn enable(&self, seed: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn disable(&self) {
        self.enabled.store(false, Ordering::Relaxed);
    }
}

impl LoraDropout {
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let Some(keep) = self.keep_bits(x.elem_count()) else {
            return Ok(x.clone());
        };
        let scale = self.keep_scale();
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|e| {
                if keep[e / 64] >> (e % 64) & 1 == 1 {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }

    /// The factor kept values are scaled by, `1 / (1 − p)`.
    pub(crate) fn keep_scale(&self) -> f32 {
        1.0 / (1.0 - self.p)
    }

    /// Which of `len` input values this adapter keeps in the current micro-batch (bit
    /// `e % 64` of word `e / 64` set when value `e` is kept), or `None` when dropout is
    /// off. Value `e` draws 16 random bits: lane `e % 4` of the `e / 4`-th output of a
    /// SplitMix64 stream seeded by (micro-batch seed, adapter id), so any word of the
    /// mask can be computed on its own (and in parallel).
    pub(crate) fn keep_bits(&self, len: usize) -> Option<Vec<u64>> {
        if self.p <= 0.0 || !self.state.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let seed = self.state.seed.load(Ordering::Relaxed) ^ self.id.wrapping_mul(GOLDEN_GAMMA);
        let threshold = (self.p as f64 * 65536.0).round() as u64;
        let mut words = vec![0u64; len.div_ceil(64)];
        let out = SharedMut(words.as_mut_ptr());
        parallel(words.len(), |range| {
            for w in range {
                let mut word = 0u64;
                for draw in 0..16u64 {
                    let random = split_mix64(
                        seed.wrapping_add((w as u64 * 16 + draw + 1).wrapping_mul(GOLDEN_GAMMA)),
                    );
                    for lane in 0..4 {
                        let bit = draw * 4 + lane;
                        if (random >> (16 * lane)) & 0xFFFF >= threshold {
                            word |= 1 << bit;
                        }
                    }
                }
                // Bits past `len` are never read.
                // SAFETY: word `w` is written by this unit only.
                unsafe { *out.get().add(w) = word };
            }
        });
        Some(words)
    }
}

/// SplitMix64's increment (2^64 / φ) and output function (Steele et al., "Fast
/// splittable pseudorandom number generators", 2014): `split_mix64(seed + k·γ)` is the
/// `k`-th output of the stream started at `seed`.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn split_mix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl LoraAdapter {
    /// `scale · B·A·dropout(x)` with candle's ops (the CPU's training step fuses it
    /// into the projection: [`train_ops::lora_linear`]).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.branch(x, &self.a, &self.b)
    }

    /// `scale · B·A·dropout(x)`, the scale applied at rank width (the smallest tensor).
    fn branch(&self, x: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let x = match &self.dropout {
            Some(d) => d.apply(x)?,
            None => x.clone(),
        };
        let down = (matmul_t(&x, a)? * self.scale)?;
        matmul_t(&down, b)
    }

    /// `scale · B·A`, the dense update that merging adds to the weight, in f32 whatever
    /// the adapter's dtype (merging then rounds once, into the weight's dtype).
    pub fn delta(&self) -> Result<Tensor> {
        let (a, b) = (self.a.to_dtype(DType::F32)?, self.b.to_dtype(DType::F32)?);
        b.matmul(&a)? * self.scale
    }
}

/// `x @ w^T` for `x` of shape `[..., in]` and `w` of shape `[out, in]`.
fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match x.dims() {
        [b, t, k] => x
            .reshape((b * t, *k))?
            .matmul(&w.t()?)?
            .reshape((*b, *t, ())),
        _ => x.broadcast_matmul(&w.t()?),
    }
}

/// `x @ w^T` whose backward pass computes only `x`'s gradient (`w` is frozen).
struct FrozenMatmul {
    weight: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, x_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, k) = x_l.shape().dims2()?;
        let w_t = self.weight.t()?;
        let (w, w_l) = w_t.storage_and_layout();
        let Storage::Cpu(w) = &*w else {
            candle_core::bail!("frozen-matmul: the weight is not on the CPU");
        };
        let n = w_l.dims()[1];
        Ok((x.matmul(w, (1, m, n, k), x_l, w_l)?, Shape::from((m, n))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_y.matmul(&self.weight)?))
    }
}

impl Linear {
    pub fn new(weight: LinearWeight, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight,
            quantized: OnceLock::new(),
            bias,
            frozen: false,
            adapter: None,
        })
    }

    /// Marks the weight (and bias) as never trained, so that backward skips its gradient.
    pub fn frozen(mut self) -> Self {
        self.frozen = true;
        self
    }

    pub fn with_adapter(mut self, adapter: LoraAdapter) -> Self {
        self.adapter = Some(adapter);
        self
    }

    pub fn adapter(&self) -> Option<&LoraAdapter> {
        self.adapter.as_ref()
    }

    /// Folds the adapter into a dense weight (`W + scale·B·A`) and drops it.
    pub fn merged(&self) -> Result<Self> {
        let Some(adapter) = &self.adapter else {
            return Ok(self.clone());
        };
        let LinearWeight::Dense(w) = &self.weight else {
            candle_core::bail!("a LoRA adapter can only be merged into dense weights");
        };
        let merged = (w.to_dtype(DType::F32)? + adapter.delta()?)?.to_dtype(w.dtype())?;
        let mut linear = Self::new(LinearWeight::Dense(merged), self.bias.clone())?;
        linear.frozen = self.frozen;
        Ok(linear)
    }

    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The quantized weight as candle multiplies it (possibly zero-padded) and its matmul.
    fn candle_quantized(&self) -> Result<Option<&(Arc<QTensor>, QMatMul)>> {
        let LinearWeight::Quantized(q) = &self.weight else {
            return Ok(None);
        };
        let built = self.quantized.get_or_init(|| {
            let q = pad_for_repacked_kernels(q).map_err(|e| e.to_string())?;
            let matmul = QMatMul::from_arc(q.clone()).map_err(|e| e.to_string())?;
            Ok((q, matmul))
        });
        match built {
            Ok(pair) => Ok(Some(pair)),
            Err(e) => Err(candle_core::Error::Msg(e.clone())),
        }
    }

    /// `x @ W^T + b` (plus the adapter's update) for `x` of shape `[..., in_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match (&self.weight, self.candle_quantized()?) {
            (_, Some((q, matmul))) => matmul.forward(&pad_input(x, q.shape().dims()[1])?)?,
            (LinearWeight::Dense(w), None) if self.trains_adapter_on_cpu(x) => {
                let adapter = self.adapter.as_ref().expect("checked");
                let y = train_ops::lora_linear(x, w, adapter)?;
                return match &self.bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                };
            }
            (LinearWeight::Dense(w), None) if self.frozen && x.device().is_cpu() => {
                let dims = x.dims();
                let rows = x.elem_count() / dims[dims.len() - 1];
                let mut out_dims = dims.to_vec();
                *out_dims.last_mut().expect("rank >= 1") = w.dim(0)?;
                x.reshape((rows, ()))?
                    .apply_op1(FrozenMatmul { weight: w.clone() })?
                    .reshape(out_dims)?
            }
            (LinearWeight::Dense(w), None) => matmul_t(x, w)?,
            (LinearWeight::Quantized(_), None) => unreachable!("quantized weights get a QMatMul"),
        };
        self.finish(x, y)
    }

    /// Whether `forward` is a LoRA training step on the CPU (one fused op).
    fn trains_adapter_on_cpu(&self, x: &Tensor) -> bool {
        let trained = self.adapter.as_ref().is_some_and(|a| a.a.is_variable());
        trained && self.frozen && train_ops::applies_to(x)
    }

    /// Adds the bias and the adapter's update to the base projection `y` of `x`.
    fn finish(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        match &self.adapter {
            Some(adapter) => y + adapter.forward(x)?,
            None => Ok(y),
        }
    }

    /// Applies several projections to the same input (q/k/v, gate/up). Quantized
    /// weights then share one padding and one quantization of `x` and one parallel
    /// region, instead of one each.
    pub fn forward_shared<const N: usize>(
        linears: [&Linear; N],
        x: &Tensor,
    ) -> Result<[Tensor; N]> {
        let mut quantized = Vec::with_capacity(N);
        for linear in linears {
            match linear.candle_quantized()? {
                Some((q, _)) => quantized.push(q.as_ref()),
                None => break,
            }
        }
        let padded_in = quantized.first().map(|q| q.shape().dims()[1]);
        let fusable = quantized.len() == N
            && quantized
                .iter()
                .all(|q| Some(q.shape().dims()[1]) == padded_in);
        if let (true, Some(padded_in)) = (fusable, padded_in) {
            let padded = pad_input(x, padded_in)?.contiguous()?;
            if let Some(outputs) = QTensor::gemv_fused_shared_lhs(&quantized, &padded)? {
                let mut outputs = outputs.into_iter();
                let mut results = Vec::with_capacity(N);
                for linear in linears {
                    results.push(linear.finish(x, outputs.next().expect("one output per weight"))?);
                }
                return Ok(results.try_into().expect("N results"));
            }
        }
        let mut results = Vec::with_capacity(N);
        for linear in linears {
            results.push(linear.forward(x)?);
        }
        Ok(results.try_into().expect("N results"))
    }
}

fn pad_input(x: &Tensor, padded_in: usize) -> Result<Tensor> {
    let k = x.dim(D::Minus1)?;
    if k < padded_in {
        x.pad_with_zeros(D::Minus1, 0, padded_in - k)
    } else {
        Ok(x.clone())
    }
}

/// candle only takes its fast repacked path when the inner dimension is a multiple of
/// 256 (SmolLM2's 576 is not). Zero columns cost a third more multiply-adds there but
/// make the product several times faster; the result is unchanged since the padded
/// activations are zero too.
fn pad_for_repacked_kernels(q: &Arc<QTensor>) -> Result<Arc<QTensor>> {
    let Ok((_, k)) = q.shape().dims2() else {
        return Ok(q.clone());
    };
    let repackable = matches!(q.dtype(), GgmlDType::Q8_0);
    if !repackable || k % REPACKED_KERNEL_K == 0 || !cpu_has_vnni() {
        return Ok(q.clone());
    }
    let device = q.device();
    let dense = q.dequantize(&device)?;
    let padded = dense.pad_with_zeros(1, 0, k.next_multiple_of(REPACKED_KERNEL_K) - k)?;
    Ok(Arc::new(QTensor::quantize(&padded, q.dtype())?))
}

fn cpu_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni"))
            || (is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantized matrix products with AVX-512 VNNI (`vpdpbusd`), written for the decode and
/// prefill shapes of small models, where candle's kernels need the inner dimension to be
/// a multiple of 256 and quantize activations per 256 values.
///
/// Weights are packed in tiles of 16 output rows × 32 inner values, so that one
/// `vpdpbusd` multiplies 4 inner values of 16 rows by 4 activations. Two block formats:
///
/// * `Q4`: GGUF `Q4_1` blocks as stored (`w = d·q + m`, `q` in 0..16), nibbles kept packed.
/// * `Q8`: GGUF `Q8_0` blocks as stored (`w = d·q`), offset by +128 to be unsigned.
///
/// Activations are quantized per 32 values to i8 with an f32 scale (like llama.cpp's
/// `Q8_1`), so a row's dot product is `Σ_blocks d_w·d_a·Σ q_w q_a (+ m_w·d_a·Σ q_a)`: the
/// same arithmetic as llama.cpp's `Q4_1 × Q8_1` and `Q8_0 × Q8_0` dot products. Each
/// output row is computed by the same instruction sequence whatever the batch size,
/// so a sequence's results do not depend on the other sequences in its batch.
pub(crate) mod packed {
    use std::borrow::Cow;

    use crate::pool::{parallel, SharedMut};

    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Result};
    use half::f16;

    /// Output rows per tile.
    pub const TILE_N: usize = 16;
    /// Inner values per block.
    pub const QK: usize = 32;
    /// Activation rows multiplied per pass over a weight tile.
    const MT: usize = 8;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Q4,
        Q8,
    }

    impl Kind {
        /// Bytes of one tile block: 16 f16 scales, 16 f16 offsets (Q4 only, but kept for
        /// alignment), then the quants.
        const fn block_bytes(self) -> usize {
            match self {
                Kind::Q4 => 64 + TILE_N * QK / 2,
                Kind::Q8 => 64 + TILE_N * QK,
            }
        }
    }

    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    struct Line([u8; 64]);

    /// A weight matrix `[n, k]` in tiles of 16 rows.
    pub struct PackedMatrix {
        n: usize,
        k: usize,
        kind: Kind,
        tiles: usize,
        lines: Vec<Line>,
    }

    impl std::fmt::Debug for PackedMatrix {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PackedMatrix")
                .field("n", &self.n)
                .field("k", &self.k)
                .field("kind", &self.kind)
                .finish()
        }
    }

    /// Whether this CPU runs the packed kernels.
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static OK: OnceLock<bool> = OnceLock::new();
            *OK.get_or_init(|| {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
                    && is_x86_feature_detected!("fma")
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Whether the kernels multiply blocks of `dtype` as stored (on this CPU).
    pub fn takes(dtype: GgmlDType) -> bool {
        available() && matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q8_0)
    }

    /// Raw GGUF blocks of one matrix in a format the kernels take.
    struct Source<'a> {
        kind: Kind,
        n: usize,
        data: Cow<'a, [u8]>,
    }

    const Q4_1_BYTES: usize = 20;
    const Q8_0_BYTES: usize = 34;

    fn source(q: &QTensor) -> Result<Source<'_>> {
        let (n, k) = q.shape().dims2()?;
        if !k.is_multiple_of(QK) {
            candle_core::bail!("inner dimension {k} is not a multiple of {QK}");
        }
        Ok(match q.dtype() {
            GgmlDType::Q4_1 => Source {
                kind: Kind::Q4,
                n,
                data: q.data()?,
            },
            GgmlDType::Q8_0 => Source {
                kind: Kind::Q8,
                n,
                data: q.data()?,
            },
            _ => {
                // Any other type: the nearest format with a kernel is Q8_0.
                let dense = q.dequantize(&Device::Cpu)?;
                let q8 = QTensor::quantize(&dense, GgmlDType::Q8_0)?;
                Source {
                    kind: Kind::Q8,
                    n,
                    data: Cow::Owned(q8.data()?.into_owned()),
                }
            }
        })
    }

    /// Re-encodes a Q4_1 source as Q8_0 blocks (exact up to the Q8_0 rounding), for
    /// stacking it with Q8_0 matrices.
    fn to_q8(src: Source<'_>, k: usize) -> Source<'static> {
        if src.kind == Kind::Q8 {
            return Source {
                kind: Kind::Q8,
                n: src.n,
                data: Cow::Owned(src.data.into_owned()),
            };
        }
        let kb = k / QK;
        let mut out = Vec::with_capacity(src.n * kb * Q8_0_BYTES);
        for block in src.data.chunks_exact(Q4_1_BYTES) {
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            let m = f16::from_le_bytes([block[2], block[3]]).to_f32();
            let mut values = [0f32; QK];
            for j in 0..QK / 2 {
                values[j] = d * (block[4 + j] & 0x0F) as f32 + m;
                values[j + QK / 2] = d * (block[4 + j] >> 4) as f32 + m;
            }
            let amax = values.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
            out.extend(values.iter().map(|v| (v * inv).round() as i8 as u8));
        }
        Source {
            kind: Kind::Q8,
            n: src.n,
            data: Cow::Owned(out),
        }
    }

    impl PackedMatrix {
        /// Stacks the rows of `parts` (which share the inner dimension). With
        /// `interleave`, the tiles of two parts alternate (`a0 b0 a1 b1 ...`), as
        /// [`matmul_swiglu`] expects. Every part but the last must have a multiple of 16
        /// rows.
        pub fn stack(parts: &[&QTensor], interleave: bool) -> Result<Self> {
            let k = parts[0].shape().dims2()?.1;
            let mut sources = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                let (n, pk) = part.shape().dims2()?;
                if pk != k {
                    candle_core::bail!("stacked matrices differ in their inner dimension");
                }
                if !n.is_multiple_of(TILE_N) && i + 1 < parts.len() {
                    candle_core::bail!("stacked matrix with {n} rows (not a multiple of {TILE_N})");
                }
                sources.push(source(part)?);
            }
            let kind = if sources.iter().all(|s| s.kind == Kind::Q4) {
                Kind::Q4
            } else {
                Kind::Q8
            };
            if kind == Kind::Q8 {
                sources = sources.into_iter().map(|s| to_q8(s, k)).collect();
            }
            if interleave && (sources.len() != 2 || sources[0].n != sources[1].n) {
                candle_core::bail!("only two matrices of equal shape interleave");
            }
            let kb = k / QK;
            let n: usize = sources.iter().map(|s| s.n).sum();
            let tiles = n.div_ceil(TILE_N);
            let block_lines = kind.block_bytes() / 64;
            let mut lines = vec![Line([0; 64]); tiles * kb * block_lines];
            // (source, first row) of each output tile, in packed order.
            let mut order: Vec<(usize, usize)> = Vec::with_capacity(tiles);
            if interleave {
                for t in 0..sources[0].n.div_ceil(TILE_N) {
                    order.push((0, t * TILE_N));
                    order.push((1, t * TILE_N));
                }
            } else {
                for (si, s) in sources.iter().enumerate() {
                    for t in 0..s.n.div_ceil(TILE_N) {
                        order.push((si, t * TILE_N));
                    }
                }
            }
            let block_bytes = kind.block_bytes();
            let src_block = match kind {
                Kind::Q4 => Q4_1_BYTES,
                Kind::Q8 => Q8_0_BYTES,
            };
            // SAFETY: `Line` is 64 plain bytes.
            let bytes: &mut [u8] = unsafe {
                std::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut u8, lines.len() * 64)
            };
            for (tile, &(si, row0)) in order.iter().enumerate() {
                let s = &sources[si];
                for b in 0..kb {
                    let dst = &mut bytes[(tile * kb + b) * block_bytes..][..block_bytes];
                    for r in 0..TILE_N.min(s.n - row0) {
                        let blk = &s.data[((row0 + r) * kb + b) * src_block..][..src_block];
                        dst[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
                        match kind {
                            Kind::Q4 => {
                                dst[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&blk[2..4]);
                                // Register g holds bytes 4g..4g+4 of every row: low
                                // nibbles are values 4g.., high nibbles 16+4g...
                                for g in 0..4 {
                                    let o = 64 + g * 64 + r * 4;
                                    dst[o..o + 4].copy_from_slice(&blk[4 + 4 * g..8 + 4 * g]);
                                }
                            }
                            Kind::Q8 => {
                                for g in 0..8 {
                                    let o = 64 + g * 64 + r * 4;
                                    for j in 0..4 {
                                        dst[o + j] = (blk[2 + 4 * g + j] as i8 as i16 + 128) as u8;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Ok(Self {
                n,
                k,
                kind,
                tiles,
                lines,
            })
        }

        pub fn rows(&self) -> usize {
            self.n
        }

        fn tile_ptr(&self, tile: usize) -> *const u8 {
            let kb = self.k / QK;
            // SAFETY: in bounds for tile < self.tiles.
            unsafe { (self.lines.as_ptr() as *const u8).add(tile * kb * self.kind.block_bytes()) }
        }
    }

    /// Activation rows quantized per 32 values, in one or two levels.
    ///
    /// One level: `x ≈ d·q` with `q` in i8 (llama.cpp's arithmetic). Two levels: the
    /// rounding residual is quantized again on the scale `d/256`, `x ≈ d·q₁ + (d/256)·q₂`,
    /// and the kernels accumulate `256·Σq_w·q₁ + Σq_w·q₂` in one integer: products come
    /// within ~1e-5 of f32 arithmetic on the same weights, for twice the `vpdpbusd`s.
    #[derive(Debug)]
    pub struct QuantizedRows {
        levels: usize,
        m: usize,
        k: usize,
        qs: Vec<i8>,
        qs2: Vec<i8>,
        /// Per block: the scale of one unit of the integer sums (`d`, or `d/256` with two
        /// levels), the Q8_0 offset correction `128·Σq` (in the same units) and the sum of
        /// the quantized values.
        d: Vec<f32>,
        sum128: Vec<i32>,
        sum: Vec<f32>,
    }

    impl QuantizedRows {
        pub fn new(levels: usize) -> Self {
            assert!(levels == 1 || levels == 2, "one or two quantization levels");
            Self {
                levels,
                m: 0,
                k: 0,
                qs: Vec::new(),
                qs2: Vec::new(),
                d: Vec::new(),
                sum128: Vec::new(),
                sum: Vec::new(),
            }
        }

        /// Quantizes `x` (`m` rows of `k` values, `k` a multiple of 32), reusing buffers.
        pub fn quantize(&mut self, x: &[f32], k: usize) {
            assert!(k.is_multiple_of(QK) && x.len().is_multiple_of(k));
            let m = x.len() / k;
            let kb = k / QK;
            self.m = m;
            self.k = k;
            let two = self.levels == 2;
            self.qs.resize(m * k, 0);
            self.qs2.resize(if two { m * k } else { 0 }, 0);
            self.d.resize(m * kb, 0.0);
            self.sum128.resize(m * kb, 0);
            self.sum.resize(m * kb, 0.0);
            // SAFETY: the kernels were checked to be available before packing.
            unsafe { kernels::quantize_rows(x, self) }
        }
    }

    /// `out[m, n] = x[m, :] · W[n, :]`, `out` row-major with `w.rows()` columns.
    pub fn matmul(w: &PackedMatrix, x: &QuantizedRows, out: &mut [f32]) {
        assert_eq!(x.k, w.k, "inner dimensions differ");
        let (m, n) = (x.m, w.n);
        assert!(out.len() >= m * n);
        let m_chunks = m.div_ceil(MT);
        let dst = SharedMut(out.as_mut_ptr());
        parallel(w.tiles * m_chunks, |range| {
            for unit in range {
                let (tile, m0) = (unit / m_chunks, (unit % m_chunks) * MT);
                let rows = (m - m0).min(MT);
                let cols = (n - tile * TILE_N).min(TILE_N);
                // SAFETY: units write disjoint [rows, 16-column] blocks of `out`.
                unsafe {
                    let mut acc = [[0f32; TILE_N]; MT];
                    kernels::tile(w.kind, w.tile_ptr(tile), w.k / QK, x, m0, rows, &mut acc);
                    for (r, row) in acc.iter().enumerate().take(rows) {
                        let p = dst.get().add((m0 + r) * n + tile * TILE_N);
                        std::ptr::copy_nonoverlapping(row.as_ptr(), p, cols);
                    }
                }
            }
        });
    }

    /// SwiGLU over gate/up weights stacked with [`PackedMatrix::stack`]`(.., true)`:
    /// `out[m, j] = silu(x·gate_j) · (x·up_j)`, `out` row-major with `w.rows() / 2` columns.
    pub fn matmul_swiglu(w: &PackedMatrix, x: &QuantizedRows, out: &mut [f32]) {
        assert_eq!(x.k, w.k, "inner dimensions differ");
        let (m, n) = (x.m, w.n / 2);
        assert!(out.len() >= m * n && w.tiles.is_multiple_of(2));
        let m_chunks = m.div_ceil(MT);
        let dst = SharedMut(out.as_mut_ptr());
        parallel(w.tiles / 2 * m_chunks, |range| {
            for unit in range {
                let (pair, m0) = (unit / m_chunks, (unit % m_chunks) * MT);
                let rows = (m - m0).min(MT);
                let cols = (n - pair * TILE_N).min(TILE_N);
                // SAFETY: units write disjoint [rows, 16-column] blocks of `out`.
                unsafe {
                    let mut gate = [[0f32; TILE_N]; MT];
                    let mut up = [[0f32; TILE_N]; MT];
                    kernels::tile(
                        w.kind,
                        w.tile_ptr(2 * pair),
                        w.k / QK,
                        x,
                        m0,
                        rows,
                        &mut gate,
                    );
                    kernels::tile(
                        w.kind,
                        w.tile_ptr(2 * pair + 1),
                        w.k / QK,
                        x,
                        m0,
                        rows,
                        &mut up,
                    );
                    for r in 0..rows {
                        kernels::swiglu16(&mut gate[r], &up[r]);
                        let p = dst.get().add((m0 + r) * n + pair * TILE_N);
                        std::ptr::copy_nonoverlapping(gate[r].as_ptr(), p, cols);
                    }
                }
            }
        });
    }

    #[cfg(target_arch = "x86_64")]
    pub(crate) mod kernels {
        use super::{Kind, QuantizedRows, MT, QK, TILE_N};
        use std::arch::x86_64::*;

        /// Quantizes 32 values to i8 with the scale `1 / inv` (round to nearest even,
        /// saturating); returns Σq and the rounding residuals.
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn quantize_block(
            x0: __m512,
            x1: __m512,
            scale: f32,
            out: *mut i8,
        ) -> (i32, __m512, __m512) {
            let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            let vinv = _mm512_set1_ps(inv);
            let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vinv));
            let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vinv));
            let (b0, b1) = (_mm512_cvtsepi32_epi8(q0), _mm512_cvtsepi32_epi8(q1));
            _mm_storeu_si128(out as *mut __m128i, b0);
            _mm_storeu_si128(out.add(16) as *mut __m128i, b1);
            // Sum and residuals of the values as stored (after saturation).
            let (q0, q1) = (_mm512_cvtepi8_epi32(b0), _mm512_cvtepi8_epi32(b1));
            let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            let vs = _mm512_set1_ps(scale);
            let r0 = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(q0), vs, x0);
            let r1 = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(q1), vs, x1);
            (sum, r0, r1)
        }

        /// Fills `rows` (sized by the caller) from `x`: per block, `d = amax / 127` as
        /// llama.cpp's `quantize_row_q8_1` (but in f32), then the residual on `d / 256`.
        #[target_feature(enable = "avx512f,avx512bw")]
        pub unsafe fn quantize_rows(x: &[f32], rows: &mut QuantizedRows) {
            let blocks = x.len() / QK;
            let two = rows.levels == 2;
            let sign = _mm512_set1_ps(-0.0);
            for b in 0..blocks {
                let p = x.as_ptr().add(b * QK);
                let (x0, x1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
                let a = _mm512_max_ps(_mm512_andnot_ps(sign, x0), _mm512_andnot_ps(sign, x1));
                let d = _mm512_reduce_max_ps(a) / 127.0;
                let (sum, r0, r1) = quantize_block(x0, x1, d, rows.qs.as_mut_ptr().add(b * QK));
                if two {
                    let unit = d / 256.0;
                    let (sum2, _, _) =
                        quantize_block(r0, r1, unit, rows.qs2.as_mut_ptr().add(b * QK));
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

        /// `dst[i] = f16(src[i])` (round to nearest even), as raw bits.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn to_f16(src: &[f32], dst: &mut [u16]) {
            let n = src.len().min(dst.len());
            let mut i = 0;
            while i + 16 <= n {
                let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm512_loadu_ps(src.as_ptr().add(i)),
                );
                _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, h);
                i += 16;
            }
            for j in i..n {
                dst[j] = half::f16::from_f32(src[j]).to_bits();
            }
        }

        /// `out = x / sqrt(mean(x²) + eps) * weight`.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
            let n = x.len();
            let mut acc = _mm512_setzero_ps();
            let mut i = 0;
            while i + 16 <= n {
                let v = _mm512_loadu_ps(x.as_ptr().add(i));
                acc = _mm512_fmadd_ps(v, v, acc);
                i += 16;
            }
            let mut sum = _mm512_reduce_add_ps(acc);
            for v in &x[i..] {
                sum += v * v;
            }
            let scale = 1.0 / (sum / n as f32 + eps).sqrt();
            for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
                *o = v * scale * w;
            }
        }

        /// `out = silu(gate) * up` for 16 values.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn swiglu16(gate: &mut [f32; TILE_N], up: &[f32; TILE_N]) {
            let g = _mm512_loadu_ps(gate.as_ptr());
            let u = _mm512_loadu_ps(up.as_ptr());
            let e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e));
            _mm512_storeu_ps(gate.as_mut_ptr(), _mm512_mul_ps(silu, u));
        }

        /// `e^x` for 16 lanes (relative error ~2e-7; inputs clamped to [-87, 88]).
        #[target_feature(enable = "avx512f")]
        pub unsafe fn exp_ps(x: __m512) -> __m512 {
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

        /// One 16-row weight tile against `rows` (≤ 8) activation rows from `m0`.
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn tile(
            kind: Kind,
            tile: *const u8,
            kb: usize,
            x: &QuantizedRows,
            m0: usize,
            rows: usize,
            out: &mut [[f32; TILE_N]; MT],
        ) {
            macro_rules! dispatch {
                ($f:ident, $two:literal) => {
                    match rows {
                        1 => $f::<1, $two>(tile, kb, x, m0, out),
                        2 => $f::<2, $two>(tile, kb, x, m0, out),
                        3 => $f::<3, $two>(tile, kb, x, m0, out),
                        4 => $f::<4, $two>(tile, kb, x, m0, out),
                        5 => $f::<5, $two>(tile, kb, x, m0, out),
                        6 => $f::<6, $two>(tile, kb, x, m0, out),
                        7 => $f::<7, $two>(tile, kb, x, m0, out),
                        _ => $f::<8, $two>(tile, kb, x, m0, out),
                    }
                };
            }
            match (kind, x.levels == 2) {
                (Kind::Q4, false) => dispatch!(tile_q4, false),
                (Kind::Q4, true) => dispatch!(tile_q4, true),
                (Kind::Q8, false) => dispatch!(tile_q8, false),
                (Kind::Q8, true) => dispatch!(tile_q8, true),
            }
        }

        macro_rules! bcast {
            ($a:expr, $j:expr) => {
                _mm512_set1_epi32(std::ptr::read_unaligned(($a as *const i32).add($j)))
            };
        }

        /// Runs `$body!(i)` for the rows `i < R`, unrolled so that the accumulators stay
        /// in registers.
        macro_rules! for_rows {
            ($R:ident, $body:ident) => {
                $body!(0);
                if $R > 1 {
                    $body!(1);
                }
                if $R > 2 {
                    $body!(2);
                }
                if $R > 3 {
                    $body!(3);
                }
                if $R > 4 {
                    $body!(4);
                }
                if $R > 5 {
                    $body!(5);
                }
                if $R > 6 {
                    $body!(6);
                }
                if $R > 7 {
                    $body!(7);
                }
            };
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
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(crate) mod kernels {
        use super::{Kind, QuantizedRows, MT, TILE_N};

        pub unsafe fn quantize_rows(_: &[f32], _: &mut QuantizedRows) {
            unreachable!("packed kernels are x86-64 only")
        }

        pub unsafe fn swiglu16(_: &mut [f32; TILE_N], _: &[f32; TILE_N]) {
            unreachable!("packed kernels are x86-64 only")
        }

        pub unsafe fn to_f16(_: &[f32], _: &mut [u16]) {
            unreachable!("packed kernels are x86-64 only")
        }

        pub unsafe fn rms_norm(_: &[f32], _: &[f32], _: f32, _: &mut [f32]) {
            unreachable!("packed kernels are x86-64 only")
        }

        pub unsafe fn tile(
            _: Kind,
            _: *const u8,
            _: usize,
            _: &QuantizedRows,
            _: usize,
            _: usize,
            _: &mut [[f32; TILE_N]; MT],
        ) {
            unreachable!("packed kernels are x86-64 only")
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::packed::{self, PackedMatrix, QuantizedRows};

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

    /// Rounds like the kernels: to i8 steps of `d` (default `amax / 127`), saturating.
    fn round_block(block: &[f32], d: Option<f32>) -> (Vec<f32>, f32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = d.unwrap_or(amax / 127.0);
        let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
        (
            block
                .iter()
                .map(|v| (v * inv).round_ties_even().clamp(-128.0, 127.0) * d)
                .collect(),
            d,
        )
    }

    /// `x · W^T` in f64 from the dequantized weights and the activations rounded the way
    /// the kernels round them (one level, or the residual rounded again with two).
    fn reference(w: &QTensor, x: &[f32], k: usize, levels: usize) -> Vec<f32> {
        let dense: Vec<f32> = w
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = dense.len() / k;
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
            .take(x.len() / k * n)
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

    #[test]
    fn packed_matmul_matches_reference() {
        if !packed::available() {
            return;
        }
        let k = 96;
        for levels in [1, 2] {
            for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4_0] {
                for (n, m) in [(48, 1), (48, 5), (40, 8), (48, 13), (16, 17)] {
                    let w = qtensor(n, k, n as u64 + m as u64, dtype);
                    let packed = PackedMatrix::stack(&[&w], false).unwrap();
                    let x = values(m * k, 7 * m as u64);
                    let mut rows = QuantizedRows::new(levels);
                    rows.quantize(&x, k);
                    let mut out = vec![0f32; m * n];
                    packed::matmul(&packed, &rows, &mut out);
                    // Q4_1 and Q8_0 are multiplied as stored (exact up to f32 rounding);
                    // Q4_0 is re-quantized to Q8_0 first.
                    let tolerance = if dtype == GgmlDType::Q4_0 { 0.05 } else { 1e-4 };
                    let what = format!("{dtype:?} n={n} m={m} levels={levels}");
                    assert_close(&out, &reference(&w, &x, k, levels), tolerance, &what);
                }
            }
        }
    }

    #[test]
    fn two_levels_are_close_to_f32() {
        if !packed::available() {
            return;
        }
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
            let mut rows = QuantizedRows::new(levels);
            rows.quantize(&x, k);
            let mut out = vec![0f32; m * n];
            packed::matmul(&packed, &rows, &mut out);
            out.iter()
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
    fn stacked_and_swiglu_matmuls_match_reference() {
        if !packed::available() {
            return;
        }
        let (k, m) = (64, 9);
        let a = qtensor(32, k, 1, GgmlDType::Q4_1);
        let b = qtensor(16, k, 2, GgmlDType::Q4_1);
        let c = qtensor(16, k, 3, GgmlDType::Q8_0);
        let x = values(m * k, 4);
        let mut rows = QuantizedRows::new(1);
        rows.quantize(&x, k);

        // Mixed formats stack as Q8_0 (the Q4_1 parts re-quantized): compare loosely,
        // which still catches rows or tiles out of place.
        let stacked = PackedMatrix::stack(&[&a, &b, &c], false).unwrap();
        let mut out = vec![0f32; m * 64];
        packed::matmul(&stacked, &rows, &mut out);
        let parts = [
            reference(&a, &x, k, 1),
            reference(&b, &x, k, 1),
            reference(&c, &x, k, 1),
        ];
        for r in 0..m {
            let want: Vec<f32> = [(&parts[0], 32), (&parts[1], 16), (&parts[2], 16)]
                .iter()
                .flat_map(|(p, n)| p[r * n..(r + 1) * n].to_vec())
                .collect();
            assert_close(
                &out[r * 64..(r + 1) * 64],
                &want,
                0.1,
                &format!("stacked row {r}"),
            );
        }

        let gate = qtensor(32, k, 5, GgmlDType::Q4_1);
        let up = qtensor(32, k, 6, GgmlDType::Q4_1);
        let packed = PackedMatrix::stack(&[&gate, &up], true).unwrap();
        let mut out = vec![0f32; m * 32];
        packed::matmul_swiglu(&packed, &rows, &mut out);
        let (g, u) = (reference(&gate, &x, k, 1), reference(&up, &x, k, 1));
        let want: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        assert_close(&out, &want, 1e-4, "swiglu");
    }
}
