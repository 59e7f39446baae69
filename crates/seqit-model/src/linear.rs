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

/// The weight matrix of a [`Linear`], dense or as GGUF quantized blocks.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out_features, in_features]`, as in PyTorch.
    Dense(Tensor),
    /// GGUF blocks, `[out_features, in_features]`, multiplied without dequantizing
    /// (inference only).
    Quantized(Arc<QTensor>),
}

/// A projection `y = x·Wᵀ + bias`, plus the output of its LoRA adapter when it has one.
/// Every attention and MLP projection and the LM head is one.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    /// candle's matmul of a quantized weight (zero-padded for its repacked kernels), built
    /// on first use: the packed kernels of [`crate::packed`] usually serve quantized weights.
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
    /// `[rank, in_features]`, applied first.
    pub a: Tensor,
    /// `[out_features, rank]`, applied second (all zeros when training starts, so a new
    /// adapter changes nothing).
    pub b: Tensor,
    /// Factor on the adapter's output: `alpha / rank` (or `alpha / sqrt(rank)` with
    /// rsLoRA).
    pub scale: f64,
    /// Dropout on the adapter's input during training; `None` for none.
    pub dropout: Option<LoraDropout>,
}

/// Dropout on an adapter's input, reproducible from a seed: every adapter draws its mask
/// from `(shared seed, its own id)`, so a training step gives the same masks when replayed
/// after a resume. Off unless the shared state is enabled (training only).
#[derive(Debug, Clone)]
pub struct LoraDropout {
    /// Probability that an input value is dropped; kept values are scaled by `1 / (1 − p)`.
    pub p: f32,
    /// This adapter's number, mixed into the seed so that adapters draw different masks.
    pub id: u64,
    /// The switch and seed all adapters of a model share.
    pub state: Arc<DropoutState>,
}

/// Whether LoRA dropout is on and the seed of the current micro-batch, shared by every
/// adapter of a model. The trainer enables it per micro-batch; it starts off, so inference
/// never drops.
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

    /// Turns dropout off (for evaluation and generation during training).
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
    /// A projection with this weight and optional bias (`[out_features]`), trainable and
    /// without an adapter.
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

    /// The same projection with `adapter` added to its output.
    pub fn with_adapter(mut self, adapter: LoraAdapter) -> Self {
        self.adapter = Some(adapter);
        self
    }

    /// The LoRA adapter, if one is attached.
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

    /// The weight matrix, dense or quantized, `[out_features, in_features]`.
    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    /// The bias (`[out_features]`), if the projection has one.
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
