//! The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM2): pre-norm blocks of
//! grouped-query attention with RoPE and a SwiGLU MLP, after "LLaMA: Open and Efficient
//! Foundation Language Models" (Touvron et al., 2023).
//!
//! One definition serves inference and training. [`Kernels::Fused`] uses candle's fused
//! softmax/RMSNorm/RoPE kernels, which are fast but have no backward pass;
//! [`Kernels::Differentiable`] computes the same maths with ops that have one: seqit's
//! CPU training ops, or candle's elementary ops on other devices
//! ([`Kernels::Elementary`] forces the latter).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Storage, Tensor, D};

use crate::cache::{KvCache, PackedKv};
use crate::config::{ModelConfig, RopeLayout};
use crate::linear::{Linear, LinearWeight};
use crate::packed::{self, AttendSpan, Isa, PackedMatrix, QuantizedRows};
use crate::pool::{parallel, SharedMut};
use crate::train_ops::{self, Heads};

/// Module names of a layer's projections, as PEFT's `target_modules` spells them.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Which implementation of the non-matmul ops to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Inference: candle's fused kernels, which have no backward pass.
    Fused,
    /// Training: seqit's CPU ops with hand-written backward passes (`train_ops`) on the
    /// CPU, candle's elementary ops on other devices.
    Differentiable,
    /// Training on candle's elementary ops only, as devices other than the CPU run it;
    /// tests select it on the CPU to check that path. (A LoRA projection on the CPU
    /// still takes its fused op, which `train_ops` tests check against candle's ops.)
    Elementary,
}

/// Which positions get logits: generation only needs the last one, training needs all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    LastPosition,
    AllPositions,
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    fn forward(&self, x: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
        let eps = self.eps as f32;
        match kernels {
            Kernels::Fused => candle_nn::ops::rms_norm(x, &self.weight, eps),
            Kernels::Differentiable if train_ops::applies_to(x) => {
                train_ops::rms_norm(x, &self.weight, eps)
            }
            Kernels::Differentiable | Kernels::Elementary => {
                candle_nn::ops::rms_norm_slow(x, &self.weight, eps)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
}

#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Debug, Clone)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

/// Token embedding table, `[vocab, hidden]`.
#[derive(Debug, Clone)]
pub struct Embedding(pub Tensor);

#[derive(Debug, Clone)]
pub struct Llama {
    pub config: ModelConfig,
    pub rope_layout: RopeLayout,
    pub embed_tokens: Embedding,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    pub lm_head: Linear,
    pub kernels: Kernels,
    inv_freq: Tensor,
    /// The quantized weights re-laid for the packed kernels, when they all are quantized.
    packed: Option<Arc<PackedWeights>>,
}

/// Rotation angles for a batch of positions, shared by all layers of one forward pass.
#[derive(Clone)]
pub(crate) struct RopeAngles {
    /// `[batch, t, head_dim / 2]`
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
}

impl Llama {
    pub fn new(
        config: ModelConfig,
        rope_layout: RopeLayout,
        embed_tokens: Embedding,
        layers: Vec<Block>,
        norm: RmsNorm,
        lm_head: Linear,
    ) -> Result<Self> {
        let device = embed_tokens.0.device().clone();
        let inv_freq = inverse_frequencies(&config, &device)?;
        let mut llama = Self {
            config,
            rope_layout,
            embed_tokens,
            layers,
            norm,
            lm_head,
            kernels: Kernels::Fused,
            inv_freq,
            packed: None,
        };
        if let Some(isa) = packed::decoder_isa().map_err(anyhow::Error::msg)? {
            llama.packed = PackedWeights::build(&llama, isa)?.map(Arc::new);
        }
        Ok(llama)
    }

    /// The same model with the packed decoder running `isa`'s kernels (to compare
    /// instruction sets on one machine; the default is [`Isa::selected`]).
    pub fn with_packed_isa(mut self, isa: Isa) -> Result<Self> {
        if !isa.supported() {
            bail!("this CPU has no {} instructions", isa.name());
        }
        self.packed = PackedWeights::build(&self, isa)?.map(Arc::new);
        Ok(self)
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.0.device()
    }

    /// The projections of every layer under their Hugging Face module names
    /// (`model.layers.{i}.self_attn.q_proj`, ...; see [`PROJECTIONS`]), for adapters.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * PROJECTIONS.len());
        for (i, block) in self.layers.iter_mut().enumerate() {
            let (a, m) = (&mut block.self_attn, &mut block.mlp);
            for (name, linear) in [
                ("self_attn.q_proj", &mut a.q_proj),
                ("self_attn.k_proj", &mut a.k_proj),
                ("self_attn.v_proj", &mut a.v_proj),
                ("self_attn.o_proj", &mut a.o_proj),
                ("mlp.gate_proj", &mut m.gate_proj),
                ("mlp.up_proj", &mut m.up_proj),
                ("mlp.down_proj", &mut m.down_proj),
            ] {
                out.push((format!("model.layers.{i}.{name}"), linear));
            }
        }
        out
    }

    /// Folds every LoRA adapter into its dense weight.
    pub fn merge_adapters(&mut self) -> Result<()> {
        for (name, linear) in self.projections_mut() {
            *linear = linear
                .merged()
                .with_context(|| format!("merging the adapter of `{name}`"))?;
        }
        Ok(())
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.0.dtype()
    }

    /// Runs the decoder.
    ///
    /// * `input_ids`: `[batch, t]` u32 token ids.
    /// * `positions`: `[batch, t]` u32 RoPE positions (per row, so left-padded batches work).
    /// * `mask`: additive `[batch, 1, t, past + t]` mask (0 or -inf), or `None` for a
    ///   single new token that may see the whole cache.
    /// * `cache`: appended to when given.
    ///
    /// Returns logits `[batch, t, vocab]` (or `[batch, 1, vocab]` for the last position), in f32.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        logits_for: LogitsFor,
    ) -> Result<Tensor> {
        let (batch, t) = input_ids.dims2().context("input_ids must be [batch, t]")?;
        let angles = self.rope_angles(positions)?;
        let mut x = self
            .embed_tokens
            .0
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((batch, t, self.config.hidden_size))?;
        // The CPU's training ops take an f32 mask whatever the model's dtype.
        let mask_dtype = if self.uses_train_ops(&x, cache.is_none()) {
            DType::F32
        } else {
            self.dtype()
        };
        let mask = mask.map(|m| m.to_dtype(mask_dtype)).transpose()?;
        for (index, block) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (index, c));
            x = self
                .block_forward(block, &x, &angles, mask.as_ref(), layer_cache)
                .with_context(|| format!("layer {index}"))?;
        }
        let x = match logits_for {
            LogitsFor::LastPosition => x.narrow(1, t - 1, 1)?.contiguous()?,
            LogitsFor::AllPositions => x,
        };
        let x = self.norm.forward(&x, self.kernels)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }

    fn rope_angles(&self, positions: &Tensor) -> Result<RopeAngles> {
        let (batch, t) = positions.dims2()?;
        let half = self.config.head_dim / 2;
        let angles = positions
            .to_dtype(DType::F32)?
            .reshape((batch * t, 1))?
            .broadcast_mul(&self.inv_freq.reshape((1, half))?)?
            .reshape((batch, t, half))?;
        Ok(RopeAngles {
            cos: angles.cos()?.to_dtype(self.dtype())?,
            sin: angles.sin()?.to_dtype(self.dtype())?,
        })
    }

    fn block_forward(
        &self,
        block: &Block,
        x: &Tensor,
        angles: &RopeAngles,
        mask: Option<&Tensor>,
        cache: Option<(usize, &mut KvCache)>,
    ) -> Result<Tensor> {
        let h = block.input_layernorm.forward(x, self.kernels)?;
        let h = self.attention(&block.self_attn, &h, angles, mask, cache)?;
        let x = (x + h)?;
        let h = block.post_attention_layernorm.forward(&x, self.kernels)?;
        let mlp = &block.mlp;
        let [gate, up] = Linear::forward_shared([&mlp.gate_proj, &mlp.up_proj], &h)?;
        let gated = match self.kernels {
            Kernels::Differentiable if train_ops::applies_to(&gate) => {
                train_ops::swiglu(&gate, &up)?
            }
            _ => (gate.silu()? * up)?,
        };
        let h = mlp.down_proj.forward(&gated)?;
        Ok((x + h)?)
    }

    /// Whether a forward pass over `x` runs attention on [`train_ops`]: a training pass
    /// (differentiable kernels, no cache) on the CPU.
    fn uses_train_ops(&self, x: &Tensor, without_cache: bool) -> bool {
        self.kernels == Kernels::Differentiable && without_cache && train_ops::applies_to(x)
    }

    fn attention(
        &self,
        attn: &Attention,
        x: &Tensor,
        angles: &RopeAngles,
        mask: Option<&Tensor>,
        cache: Option<(usize, &mut KvCache)>,
    ) -> Result<Tensor> {
        let [q, k, v] = Linear::forward_shared([&attn.q_proj, &attn.k_proj, &attn.v_proj], x)?;
        let spec = AttentionSpec {
            heads: Heads {
                heads: self.config.num_attention_heads,
                kv_heads: self.config.num_key_value_heads,
                head_dim: self.config.head_dim,
                layout: self.rope_layout,
            },
            kernels: self.kernels,
        };
        let out = if self.uses_train_ops(x, cache.is_none()) {
            train_ops::attention(&q, &k, &v, &angles.cos, &angles.sin, mask, spec.heads)?
        } else {
            spec.core(&q, &k, &v, angles, mask, cache)?
        };
        Ok(attn.o_proj.forward(&out)?)
    }
}

/// Attention spelled with candle's ops: for inference ([`Kernels::Fused`]) and, on other
/// devices than the CPU, for training ([`train_ops::attention`] is the CPU's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionSpec {
    pub(crate) heads: Heads,
    pub(crate) kernels: Kernels,
}

impl AttentionSpec {
    /// Projected `q`, `k`, `v` (`[batch, t, heads · head_dim]`) to the heads' outputs
    /// (`[batch, t, heads · head_dim]`, before the output projection).
    pub(crate) fn core(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        angles: &RopeAngles,
        mask: Option<&Tensor>,
        cache: Option<(usize, &mut KvCache)>,
    ) -> Result<Tensor> {
        let (batch, t, _) = q.dims3()?;
        let (n_heads, n_kv, d) = (self.heads.heads, self.heads.kv_heads, self.heads.head_dim);
        let heads = |projected: &Tensor, n: usize| -> Result<Tensor> {
            Ok(projected
                .reshape((batch, t, n, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = self.rope(&heads(q, n_heads)?, angles)?;
        let k = self.rope(&heads(k, n_kv)?, angles)?;
        let v = heads(v, n_kv)?;
        let (k, v) = match cache {
            Some((layer, cache)) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        let s = k.dim(2)?;
        // Grouped-query attention without copying K/V: the query heads that share a KV head
        // are stacked along the time axis of one matmul.
        let group = n_heads / n_kv;
        let q = q.reshape((batch, n_kv, group * t, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = match mask {
            Some(mask) => scores
                .reshape((batch, n_kv, group, t, s))?
                .broadcast_add(&mask.unsqueeze(1)?)?
                .reshape((batch, n_kv, group * t, s))?,
            None => scores,
        };
        let probs = match self.kernels {
            Kernels::Fused => candle_nn::ops::softmax_last_dim(&scores)?,
            // Low-precision scores are normalised in f32 (as transformers does): bf16's
            // 8-bit mantissa is too coarse for the sums of exponentials.
            Kernels::Differentiable | Kernels::Elementary => {
                candle_nn::ops::softmax(&scores.to_dtype(DType::F32)?, D::Minus1)?
                    .to_dtype(scores.dtype())?
            }
        };
        Ok(probs
            .matmul(&v.contiguous()?)?
            .reshape((batch, n_heads, t, d))?
            .transpose(1, 2)?
            .reshape((batch, t, n_heads * d))?)
    }

    /// Rotates `x` (`[batch, heads, t, head_dim]`) by the angles of its positions.
    fn rope(&self, x: &Tensor, angles: &RopeAngles) -> Result<Tensor> {
        let (cos, sin) = (&angles.cos, &angles.sin);
        let out = match (self.kernels, self.heads.layout) {
            (Kernels::Fused, RopeLayout::HalfSplit) => candle_nn::rotary_emb::rope(x, cos, sin)?,
            (Kernels::Fused, RopeLayout::Interleaved) => {
                candle_nn::rotary_emb::rope_i(x, cos, sin)?
            }
            (Kernels::Differentiable | Kernels::Elementary, layout) => {
                let (b, h, t, d) = x.dims4()?;
                let cos = cos.unsqueeze(1)?;
                let sin = sin.unsqueeze(1)?;
                match layout {
                    RopeLayout::HalfSplit => {
                        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
                        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
                        let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                        let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
                        Tensor::cat(&[r1, r2], D::Minus1)?
                    }
                    RopeLayout::Interleaved => {
                        let pairs = x.reshape((b, h, t, d / 2, 2))?;
                        let x1 = pairs.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
                        let x2 = pairs.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
                        let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
                        let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
                        Tensor::stack(&[r1, r2], D::Minus1)?.reshape((b, h, t, d))?
                    }
                }
            }
        };
        Ok(out)
    }
}

/// RoPE inverse frequencies `theta^(-2i/d)`, with Llama 3.1 scaling when configured.
fn inverse_frequencies(cfg: &ModelConfig, device: &Device) -> Result<Tensor> {
    let d = cfg.head_dim;
    let mut inv: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d as f64))
        .collect();
    if let Some(s) = &cfg.rope_scaling {
        let old_len = s.original_max_position_embeddings as f64;
        let low_wavelen = old_len / s.low_freq_factor;
        let high_wavelen = old_len / s.high_freq_factor;
        for f in inv.iter_mut() {
            let wavelen = 2.0 * std::f64::consts::PI / *f;
            *f = if wavelen < high_wavelen {
                *f
            } else if wavelen > low_wavelen {
                *f / s.factor
            } else {
                let smooth = (old_len / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * *f / s.factor + smooth * *f
            };
        }
    }
    let inv: Vec<f32> = inv.into_iter().map(|f| f as f32).collect();
    Ok(Tensor::from_vec(inv, d / 2, device)?)
}

/// Additive attention mask for a left-padded batch.
///
/// `pad[b]` is the number of padding positions at the start of row `b`'s full history
/// (cache + new tokens). Position `j` of the history is visible from new token `i`
/// when it is not padding and `j <= past + i`. A padding position sees only itself, so
/// that its softmax row is finite (an all `-inf` row would put NaN into the cache).
pub fn padded_causal_mask(
    pad: &[usize],
    past: usize,
    t: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let s = past + t;
    let mut data = Vec::with_capacity(pad.len() * t * s);
    for &p in pad {
        for i in 0..t {
            for j in 0..s {
                let visible = (j >= p && j <= past + i) || j == past + i;
                data.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(data, (pad.len(), 1, t, s), device)
}

/// One decoder layer for the packed kernels.
struct PackedLayer {
    attn_norm: Vec<f32>,
    mlp_norm: Vec<f32>,
    /// q, k and v projections stacked.
    qkv: PackedMatrix,
    qkv_bias: Option<Vec<f32>>,
    o: PackedMatrix,
    /// gate and up projections, tiles interleaved for the fused SwiGLU.
    gate_up: PackedMatrix,
    down: PackedMatrix,
}

/// The model's quantized weights in the layout of [`packed`], built once at construction.
struct PackedWeights {
    /// The instruction set every kernel of this model runs with.
    isa: Isa,
    layers: Vec<PackedLayer>,
    final_norm: Vec<f32>,
    lm_head: PackedMatrix,
    /// Addresses of the quantized tensors packed, in a fixed order: a model whose
    /// weights were replaced since falls back to the candle path.
    sources: Vec<usize>,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights")
            .field("isa", &self.isa)
            .field("layers", &self.layers.len())
            .field("lm_head", &self.lm_head)
            .finish()
    }
}

fn quantized(linear: &Linear) -> Option<&Arc<QTensor>> {
    match linear.weight() {
        LinearWeight::Quantized(q) => Some(q),
        LinearWeight::Dense(_) => None,
    }
}

fn vector(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The quantized tensors of a model in the order [`PackedWeights::sources`] records them,
/// or `None` if any linear is dense or carries a bias the packed path does not apply.
fn packed_sources(model: &Llama) -> Option<Vec<&Arc<QTensor>>> {
    let mut out = Vec::with_capacity(model.layers.len() * 7 + 1);
    for block in &model.layers {
        let (a, m) = (&block.self_attn, &block.mlp);
        for l in [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ] {
            out.push(quantized(l)?);
        }
        for l in [&a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj] {
            if l.bias().is_some() {
                return None;
            }
        }
        // LoRA adapters kept beside quantized weights run on candle's path.
        for l in [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ] {
            if l.adapter().is_some() {
                return None;
            }
        }
    }
    if model.lm_head.bias().is_some() {
        return None;
    }
    out.push(quantized(&model.lm_head)?);
    Some(out)
}

impl PackedWeights {
    fn build(model: &Llama, isa: Isa) -> Result<Option<Self>> {
        let cfg = &model.config;
        let usable = model.device().is_cpu()
            && model.embed_tokens.0.dtype() == DType::F32
            && cfg.head_dim.is_multiple_of(16)
            && cfg.hidden_size.is_multiple_of(packed::QK)
            && cfg
                .num_attention_heads
                .is_multiple_of(cfg.num_key_value_heads);
        let Some(sources) = packed_sources(model).filter(|_| usable) else {
            return Ok(None);
        };
        let pack = |parts: &[&QTensor], interleave: bool| PackedMatrix::stack(parts, interleave);
        let mut layers = Vec::with_capacity(model.layers.len());
        for block in &model.layers {
            let (a, m) = (&block.self_attn, &block.mlp);
            fn q(l: &Linear) -> &QTensor {
                quantized(l).expect("checked").as_ref()
            }
            let qkv_bias = match (a.q_proj.bias(), a.k_proj.bias(), a.v_proj.bias()) {
                (None, None, None) => None,
                (qb, kb, vb) => {
                    let mut bias = Vec::new();
                    for (b, n) in [(qb, q(&a.q_proj)), (kb, q(&a.k_proj)), (vb, q(&a.v_proj))] {
                        match b {
                            Some(b) => bias.extend(vector(b)?),
                            None => bias.extend(std::iter::repeat_n(0f32, n.shape().dims2()?.0)),
                        }
                    }
                    Some(bias)
                }
            };
            let (inter, hidden) = q(&m.gate_proj).shape().dims2()?;
            if !inter.is_multiple_of(packed::TILE_N) || hidden != cfg.hidden_size {
                return Ok(None);
            }
            layers.push(PackedLayer {
                attn_norm: vector(block.input_layernorm.weight())?,
                mlp_norm: vector(block.post_attention_layernorm.weight())?,
                qkv: pack(&[q(&a.q_proj), q(&a.k_proj), q(&a.v_proj)], false)?,
                qkv_bias,
                o: pack(&[q(&a.o_proj)], false)?,
                gate_up: pack(&[q(&m.gate_proj), q(&m.up_proj)], true)?,
                down: pack(&[q(&m.down_proj)], false)?,
            });
        }
        let lm_head = pack(
            &[quantized(&model.lm_head).expect("checked").as_ref()],
            false,
        )?;
        Ok(Some(Self {
            isa,
            layers,
            final_norm: vector(model.norm.weight())?,
            lm_head,
            sources: sources.iter().map(|q| Arc::as_ptr(q) as usize).collect(),
        }))
    }
}

/// Buffers of one packed forward pass.
struct Scratch {
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    mlp: Vec<f32>,
    rows: QuantizedRows,
}

impl Llama {
    fn packed_weights(&self) -> Option<&PackedWeights> {
        let packed = self.packed.as_deref()?;
        if self.kernels != Kernels::Fused {
            return None;
        }
        let current = packed_sources(self)?;
        let unchanged = current.len() == packed.sources.len()
            && current
                .iter()
                .zip(&packed.sources)
                .all(|(q, &p)| Arc::as_ptr(q) as usize == p);
        unchanged.then_some(packed)
    }

    /// Whether [`Self::forward_packed`] runs: every projection is quantized (and has not
    /// been replaced since construction) and the CPU has packed kernels.
    pub fn packed_available(&self) -> bool {
        self.packed_weights().is_some()
    }

    /// The instruction set of the packed decoder, when it runs.
    pub fn packed_isa(&self) -> Option<Isa> {
        self.packed_weights().map(|p| p.isa)
    }

    /// One decoder pass of a left-padded batch for generation, with the packed
    /// quantized kernels; returns the logits of each row's last position, `[batch, vocab]`
    /// row-major.
    ///
    /// * `tokens`: `batch × t` new token ids, row-major.
    /// * `pads[b]`: padding positions at the start of row `b`'s history (cache + new
    ///   tokens), as for [`padded_causal_mask`]. Position `j` of a row has RoPE position
    ///   `j - pads[b]`; padding is never computed nor attended.
    ///
    /// Each row is computed independently of the others (same arithmetic whatever the
    /// batch), so a batch gives the same logits as its rows one by one.
    pub fn forward_packed(
        &self,
        tokens: &[u32],
        batch: usize,
        pads: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let past = cache.len();
        let starts: Vec<usize> = pads.iter().map(|&p| p.max(past)).collect();
        self.forward_packed_from(tokens, batch, pads, &starts, cache)
    }

    /// [`Self::forward_packed`] where row `b` is computed from history position
    /// `starts[b]` on (`pads[b] ≤ starts[b] < past + t`): its new tokens before that are
    /// padding (`< pads[b]`) or already in the cache (a reused prompt prefix). Only the
    /// rows' own tokens cost compute, so a ragged batch wastes nothing on padding.
    pub fn forward_packed_from(
        &self,
        tokens: &[u32],
        batch: usize,
        pads: &[usize],
        starts: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let weights = self
            .packed_weights()
            .context("the packed decoder needs quantized weights and a CPU it has kernels for")?;
        let isa = weights.isa;
        let cfg = &self.config;
        if batch == 0
            || tokens.is_empty()
            || !tokens.len().is_multiple_of(batch)
            || pads.len() != batch
            || starts.len() != batch
        {
            bail!(
                "{} tokens, {} pads and {} starts for {batch} rows",
                tokens.len(),
                pads.len(),
                starts.len()
            );
        }
        let t = tokens.len() / batch;
        let (hidden, d) = (cfg.hidden_size, cfg.head_dim);
        let (n_heads, n_kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (q_out, kv_out) = (n_heads * d, n_kv * d);
        let qkv_cols = q_out + 2 * kv_out;
        let past = cache.len();
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary ({})",
                cfg.vocab_size
            );
        }
        for (&pad, &start) in pads.iter().zip(starts) {
            if start < pad.max(past) || start >= past + t {
                bail!("a row computed from position {start} with {pad} padding positions and {past} cached");
            }
        }
        // The computed positions: (row, index among the new tokens), row by row.
        let computed: Vec<(usize, usize)> = (0..batch)
            .flat_map(|b| (starts[b] - past..t).map(move |i| (b, i)))
            .collect();
        let m = computed.len();

        // Embeddings.
        let mut x = vec![0f32; m * hidden];
        {
            let embed = &self.embed_tokens.0;
            let (storage, layout) = embed.storage_and_layout();
            let Storage::Cpu(cpu) = &*storage else {
                bail!("the packed decoder runs on the CPU");
            };
            let table = &cpu.as_slice::<f32>()?[layout.start_offset()..];
            if !layout.is_contiguous() {
                bail!("the embedding table is not contiguous");
            }
            for (row, &(b, i)) in x.chunks_exact_mut(hidden).zip(&computed) {
                let id = tokens[b * t + i] as usize;
                row.copy_from_slice(&table[id * hidden..][..hidden]);
            }
        }

        // RoPE angles of every computed position, in f64 then rounded once, so that they
        // do not depend on the platform's f32 sin/cos.
        let half = d / 2;
        let inv_freq = self.inv_freq.to_vec1::<f32>()?;
        let mut cos = vec![0f32; m * half];
        let mut sin = vec![0f32; m * half];
        for (r, &(b, i)) in computed.iter().enumerate() {
            let pos = (past + i - pads[b]) as f64;
            for (j, f) in inv_freq.iter().enumerate() {
                let angle = pos * *f as f64;
                cos[r * half + j] = angle.cos() as f32;
                sin[r * half + j] = angle.sin() as f32;
            }
        }

        let kv = cache.packed_mut(batch, n_kv, d, past + t)?;
        let eps = cfg.rms_norm_eps as f32;
        let inter = weights.layers.first().map_or(0, |l| l.gate_up.rows() / 2);
        let mut s = Scratch {
            h: vec![0.0; m * hidden],
            qkv: vec![0.0; m * qkv_cols],
            attn: vec![0.0; m * q_out],
            proj: vec![0.0; m * hidden],
            mlp: vec![0.0; m * inter],
            rows: QuantizedRows::new(activation_levels()),
        };
        let shape = AttentionShape {
            past,
            n_heads,
            n_kv,
            d,
        };
        for (index, layer) in weights.layers.iter().enumerate() {
            packed::rms_norm_rows(isa, &x, &layer.attn_norm, eps, &mut s.h);
            s.rows.quantize(isa, &s.h, hidden);
            packed::matmul(isa, &layer.qkv, &s.rows, &mut s.qkv);
            if let Some(bias) = &layer.qkv_bias {
                for row in s.qkv.chunks_exact_mut(qkv_cols) {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
            }
            for (r, row) in s.qkv.chunks_exact_mut(qkv_cols).enumerate() {
                let (cos, sin) = (&cos[r * half..][..half], &sin[r * half..][..half]);
                for head in row[..q_out + kv_out].chunks_exact_mut(d) {
                    rope_in_place(head, cos, sin, self.rope_layout);
                }
            }
            store_kv(isa, kv, index, &s.qkv, &computed, &shape);
            attention(isa, kv, index, &s.qkv, &computed, pads, &shape, &mut s.attn);
            s.rows.quantize(isa, &s.attn, q_out);
            packed::matmul(isa, &layer.o, &s.rows, &mut s.proj);
            x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);

            packed::rms_norm_rows(isa, &x, &layer.mlp_norm, eps, &mut s.h);
            s.rows.quantize(isa, &s.h, hidden);
            packed::matmul_swiglu(isa, &layer.gate_up, &s.rows, &mut s.mlp);
            s.rows.quantize(isa, &s.mlp, inter);
            packed::matmul(isa, &layer.down, &s.rows, &mut s.proj);
            x.iter_mut().zip(&s.proj).for_each(|(x, p)| *x += p);
        }
        cache.advance(t);

        // Logits of each row's last position only (the LM head is the largest matrix).
        let mut last = vec![0f32; batch * hidden];
        for (r, &(b, i)) in computed.iter().enumerate() {
            if i == t - 1 {
                last[b * hidden..][..hidden].copy_from_slice(&x[r * hidden..][..hidden]);
            }
        }
        let mut normed = vec![0f32; batch * hidden];
        packed::rms_norm_rows(isa, &last, &weights.final_norm, eps, &mut normed);
        s.rows.quantize(isa, &normed, hidden);
        let mut logits = vec![0f32; batch * weights.lm_head.rows()];
        packed::matmul(isa, &weights.lm_head, &s.rows, &mut logits);
        Ok(logits)
    }

    /// [`Self::forward_packed`]'s contract with candle's kernels (any weights): builds
    /// the positions and the padded causal mask and runs [`Self::forward`].
    pub fn forward_padded(
        &self,
        tokens: &[u32],
        batch: usize,
        pads: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        if batch == 0
            || tokens.is_empty()
            || !tokens.len().is_multiple_of(batch)
            || pads.len() != batch
        {
            bail!(
                "{} tokens and {} pads for {batch} rows",
                tokens.len(),
                pads.len()
            );
        }
        let t = tokens.len() / batch;
        let past = cache.len();
        let device = self.device().clone();
        let positions: Vec<u32> = pads
            .iter()
            .flat_map(|&p| (0..t).map(move |i| (past + i).saturating_sub(p) as u32))
            .collect();
        let input = Tensor::from_slice(tokens, (batch, t), &device)?;
        let positions = Tensor::from_vec(positions, (batch, t), &device)?;
        let mask = if t > 1 || pads.iter().any(|&p| p > 0) {
            Some(padded_causal_mask(pads, past, t, &device)?)
        } else {
            None
        };
        let logits = self.forward(
            &input,
            &positions,
            mask.as_ref(),
            Some(cache),
            LogitsFor::LastPosition,
        )?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Quantization levels of activations in the packed path (see [`QuantizedRows`]): two
/// keep results within ~1e-4 of f32 arithmetic on the same weights; one is llama.cpp's
/// arithmetic. `SEQIT_ACTIVATION_LEVELS` overrides (for comparisons).
fn activation_levels() -> usize {
    static LEVELS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LEVELS.get_or_init(
        || match std::env::var("SEQIT_ACTIVATION_LEVELS").as_deref() {
            Ok("1") => 1,
            _ => 2,
        },
    )
}

/// Rotates one head in place (`cos`, `sin`: `head_dim / 2` angles).
fn rope_in_place(head: &mut [f32], cos: &[f32], sin: &[f32], layout: RopeLayout) {
    let half = cos.len();
    match layout {
        RopeLayout::Interleaved => {
            for (j, pair) in head.chunks_exact_mut(2).enumerate() {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos[j] - b * sin[j];
                pair[1] = a * sin[j] + b * cos[j];
            }
        }
        RopeLayout::HalfSplit => {
            for j in 0..half {
                let (a, b) = (head[j], head[j + half]);
                head[j] = a * cos[j] - b * sin[j];
                head[j + half] = b * cos[j] + a * sin[j];
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct AttentionShape {
    past: usize,
    n_heads: usize,
    n_kv: usize,
    d: usize,
}

/// Writes the new keys and values of `layer` (from the stacked q/k/v rows of the
/// computed positions) into the cache.
fn store_kv(
    isa: Isa,
    kv: &mut PackedKv,
    layer: usize,
    qkv: &[f32],
    computed: &[(usize, usize)],
    s: &AttentionShape,
) {
    let (d, cap) = (s.d, kv.capacity);
    let q_out = s.n_heads * d;
    let cols = q_out + 2 * s.n_kv * d;
    let (keys, values) = (&mut kv.k[layer], &mut kv.v[layer]);
    let mut k16 = vec![0u16; d];
    for (r, &(b, i)) in computed.iter().enumerate() {
        let row = &qkv[r * cols..][..cols];
        let j = s.past + i;
        for hk in 0..s.n_kv {
            let k = &row[q_out + hk * d..][..d];
            let v = &row[q_out + s.n_kv * d + hk * d..][..d];
            let block = ((b * s.n_kv + hk) * cap + j / 16 * 16) * d;
            packed::to_f16(isa, k, &mut k16);
            for (dd, &kv) in k16.iter().enumerate() {
                keys[block + dd * 16 + j % 16] = kv;
            }
            let dst = &mut values[((b * s.n_kv + hk) * cap + j) * d..][..d];
            packed::to_f16(isa, v, dst);
        }
    }
}

/// Causal attention of the computed positions over the cache, with grouped KV heads.
/// Row `b`'s positions before `pads[b]` are padding: never attended.
#[allow(clippy::too_many_arguments)]
fn attention(
    isa: Isa,
    kv: &PackedKv,
    layer: usize,
    qkv: &[f32],
    computed: &[(usize, usize)],
    pads: &[usize],
    s: &AttentionShape,
    out: &mut [f32],
) {
    let (d, cap) = (s.d, kv.capacity);
    let q_out = s.n_heads * d;
    let cols = q_out + 2 * s.n_kv * d;
    let group = s.n_heads / s.n_kv;
    let scale = 1.0 / (d as f32).sqrt();
    let (keys, values) = (&kv.k[layer], &kv.v[layer]);
    let dst = SharedMut(out.as_mut_ptr());
    // The query heads of a KV head share its loads, in slices of at most 4 heads; with
    // few positions, one head per unit keeps every thread busy.
    let per_unit = if computed.len() * s.n_kv >= 4 {
        group.min(4)
    } else {
        1
    };
    let slices = group.div_ceil(per_unit);
    let units = computed.len() * s.n_kv * slices;
    let longest = s.past + computed.iter().map(|&(_, i)| i + 1).max().unwrap_or(0);
    parallel(units, |range| {
        let mut scores = vec![0f32; per_unit * (longest + 32)];
        for unit in range {
            let (r, rest) = (unit / (s.n_kv * slices), unit % (s.n_kv * slices));
            let (hk, slice) = (rest / slices, rest % slices);
            let (b, i) = computed[r];
            let h0 = hk * group + slice * per_unit;
            let heads = per_unit.min(hk * group + group - h0);
            let k_base = &keys[(b * s.n_kv + hk) * cap * d..];
            let v_base = &values[(b * s.n_kv + hk) * cap * d..];
            let q = &qkv[r * cols + h0 * d..][..heads * d];
            let span = AttendSpan {
                from: pads[b],
                to: s.past + i + 1,
                scale,
            };
            // SAFETY: each (position, head) output is written by exactly one unit.
            let o = unsafe {
                std::slice::from_raw_parts_mut(dst.get().add(r * q_out + h0 * d), heads * d)
            };
            packed::attend(isa, heads, q, k_base, v_base, span, &mut scores, o);
        }
    });
}

#[cfg(test)]
mod packed_tests {
    use std::sync::Arc;

    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;

    /// Deterministic pseudo-random values in [-scale, scale).
    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn quantized(rows: usize, cols: usize, seed: u64, dtype: GgmlDType) -> Linear {
        let w =
            Tensor::from_vec(values(rows * cols, seed, 0.3), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        Linear::new(LinearWeight::Quantized(Arc::new(q)), None).unwrap()
    }

    /// A 2-layer model with the shapes of a tiny Llama: hidden 64, 4 query / 2 KV heads.
    fn tiny_model() -> Llama {
        let config = ModelConfig::from_hf_json(
            r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 96,
                "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
                "tie_word_embeddings": true}"#,
        )
        .unwrap();
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let norm = |seed| {
            let w: Vec<f32> = values(h, seed, 0.2).into_iter().map(|v| 1.0 + v).collect();
            RmsNorm::new(Tensor::from_vec(w, h, &Device::Cpu).unwrap(), 1e-5)
        };
        let layers = (0..config.num_hidden_layers as u64)
            .map(|l| Block {
                input_layernorm: norm(100 + l),
                self_attn: Attention {
                    q_proj: quantized(64, h, 10 * l + 1, GgmlDType::Q4_1),
                    k_proj: quantized(32, h, 10 * l + 2, GgmlDType::Q4_1),
                    v_proj: quantized(32, h, 10 * l + 3, GgmlDType::Q4_1),
                    o_proj: quantized(h, 64, 10 * l + 4, GgmlDType::Q4_1),
                },
                post_attention_layernorm: norm(200 + l),
                mlp: Mlp {
                    gate_proj: quantized(i, h, 10 * l + 5, GgmlDType::Q4_1),
                    up_proj: quantized(i, h, 10 * l + 6, GgmlDType::Q4_1),
                    down_proj: quantized(h, i, 10 * l + 7, GgmlDType::Q8_0),
                },
            })
            .collect();
        let embed = Tensor::from_vec(values(96 * h, 7, 1.0), (96, h), &Device::Cpu).unwrap();
        let lm_head = quantized(96, h, 8, GgmlDType::Q8_0);
        Llama::new(
            config,
            RopeLayout::Interleaved,
            Embedding(embed),
            layers,
            norm(300),
            lm_head,
        )
        .unwrap()
        .with_packed_isa(Isa::best())
        .unwrap()
    }

    fn prompts() -> Vec<Vec<u32>> {
        vec![
            vec![5, 17, 33, 2, 91, 40, 8],
            vec![60, 3],
            vec![11, 12, 13, 14, 15],
        ]
    }

    /// Greedy continuation of each prompt alone, with the logits of every step.
    fn solo(model: &Llama, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
        let mut cache = KvCache::new(2);
        let mut logits = model.forward_packed(prompt, 1, &[0], &mut cache).unwrap();
        let mut out = vec![logits.clone()];
        for _ in 0..steps {
            let next = argmax(&logits);
            logits = model.forward_packed(&[next], 1, &[0], &mut cache).unwrap();
            out.push(logits.clone());
        }
        out
    }

    fn argmax(l: &[f32]) -> u32 {
        l.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32
    }

    /// The same model with every quantized weight dequantized to f32.
    fn dense_twin(model: &Llama) -> Llama {
        let dense = |l: &Linear| match l.weight() {
            LinearWeight::Quantized(q) => Linear::new(
                LinearWeight::Dense(q.dequantize(&Device::Cpu).unwrap()),
                None,
            )
            .unwrap(),
            LinearWeight::Dense(_) => l.clone(),
        };
        let mut twin = model.clone();
        for block in twin.layers.iter_mut() {
            let (a, m) = (&mut block.self_attn, &mut block.mlp);
            for l in [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut m.gate_proj,
                &mut m.up_proj,
                &mut m.down_proj,
            ] {
                *l = dense(l);
            }
        }
        twin.lm_head = dense(&twin.lm_head);
        twin
    }

    #[test]
    fn packed_path_is_as_close_to_f32_as_candles_quantized_path() {
        let model = tiny_model();
        let dense = dense_twin(&model);
        assert!(model.packed_available() && !dense.packed_available());
        let mean_abs = |p: &[f32], q: &[f32]| {
            p.iter().zip(q).map(|(p, q)| (p - q).abs()).sum::<f32>() / p.len() as f32
        };
        let (mut packed_err, mut candle_err) = (0f32, 0f32);
        for prompt in prompts() {
            let (mut a, mut b, mut c) = (KvCache::new(2), KvCache::new(2), KvCache::new(2));
            let mut tokens = prompt.clone();
            for step in 0..6 {
                let x = model.forward_packed(&tokens, 1, &[0], &mut a).unwrap();
                let y = model.forward_padded(&tokens, 1, &[0], &mut b).unwrap();
                let z = dense.forward_padded(&tokens, 1, &[0], &mut c).unwrap();
                let scale = z.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = x
                    .iter()
                    .zip(&z)
                    .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                assert!(
                    worst <= 0.1 * scale,
                    "step {step}: max diff {worst}, logit scale {scale}"
                );
                packed_err += mean_abs(&x, &z);
                candle_err += mean_abs(&y, &z);
                tokens = vec![argmax(&z)];
            }
        }
        // Both quantize activations to 8 bits per 32 values; the packed cache is f16.
        assert!(
            packed_err <= 1.25 * candle_err,
            "packed {packed_err} vs candle {candle_err}"
        );
    }

    #[test]
    fn batch_rows_do_not_affect_each_other() {
        let model = tiny_model();
        let prompts = prompts();
        let steps = 6;
        let expected: Vec<_> = prompts.iter().map(|p| solo(&model, p, steps)).collect();

        let longest = prompts.iter().map(Vec::len).max().unwrap();
        let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
        let tokens: Vec<u32> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(0, longest - p.len()).chain(p.iter().copied()))
            .collect();
        let mut cache = KvCache::with_capacity(2, longest + steps);
        let mut logits = model.forward_packed(&tokens, 3, &pads, &mut cache).unwrap();
        let vocab = 96;
        let mut rows: Vec<usize> = (0..3).collect();
        let mut pads = pads;
        #[allow(clippy::needless_range_loop)] // `step` indexes every row's expectations
        for step in 0..=steps {
            for (r, &row) in rows.iter().enumerate() {
                let want = &expected[row][step];
                assert_eq!(
                    &logits[r * vocab..(r + 1) * vocab],
                    &want[..],
                    "row {row}, step {step}"
                );
            }
            if step == steps {
                break;
            }
            let mut next: Vec<u32> = (0..rows.len())
                .map(|r| argmax(&logits[r * vocab..(r + 1) * vocab]))
                .collect();
            if step == 2 {
                // Drop the middle row, as the engine does with finished sequences.
                cache
                    .select_rows(&Tensor::new(&[0u32, 2], &Device::Cpu).unwrap())
                    .unwrap();
                rows = vec![0, 2];
                pads = vec![pads[0], pads[2]];
                next = vec![next[0], next[2]];
            }
            logits = model
                .forward_packed(&next, rows.len(), &pads, &mut cache)
                .unwrap();
        }
    }

    #[test]
    fn cache_grows_without_changing_results() {
        let model = tiny_model();
        let prompt = &prompts()[0];
        let expected = solo(&model, prompt, 40);
        // A cache reserved for 8 positions grows (copies) several times on the way.
        let mut cache = KvCache::with_capacity(2, 8);
        let mut logits = model.forward_packed(prompt, 1, &[0], &mut cache).unwrap();
        for (step, want) in expected.iter().enumerate() {
            assert_eq!(&logits, want, "step {step}");
            logits = model
                .forward_packed(&[argmax(&logits)], 1, &[0], &mut cache)
                .unwrap();
        }
    }

    #[test]
    fn replaced_weights_disable_the_packed_path() {
        let mut model = tiny_model();
        assert!(model.packed_available());
        model.layers[1].mlp.up_proj = quantized(128, 64, 99, GgmlDType::Q4_1);
        assert!(!model.packed_available());
        assert!(model
            .forward_packed(&[1, 2], 1, &[0], &mut KvCache::new(2))
            .is_err());
        // The candle path still runs.
        model
            .forward_padded(&[1, 2], 1, &[0], &mut KvCache::new(2))
            .unwrap();
    }
    #[test]
    fn every_isa_generates_the_same_logits_bit_for_bit() {
        let isas = Isa::supported_all();
        eprintln!(
            "decoder tested with: {}",
            isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
        );
        let reference = tiny_model().with_packed_isa(Isa::Scalar).unwrap();
        for isa in isas {
            let model = tiny_model().with_packed_isa(isa).unwrap();
            assert_eq!(model.packed_isa(), Some(isa));
            for prompt in prompts() {
                let (want, got) = (solo(&reference, &prompt, 6), solo(&model, &prompt, 6));
                for (step, (w, g)) in want.iter().zip(&got).enumerate() {
                    let same = w.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa:?}, prompt {prompt:?}, step {step}");
                }
            }
        }
    }

    #[test]
    fn ragged_rows_skip_padding_and_reused_prefixes_exactly() {
        let model = tiny_model();
        let prompts = prompts();
        let longest = prompts.iter().map(Vec::len).max().unwrap();
        let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
        let mut tokens = Vec::new();
        for (p, &pad) in prompts.iter().zip(&pads) {
            tokens.extend(std::iter::repeat_n(0u32, pad).chain(p.iter().copied()));
        }
        // A batch computes only real tokens: each row's logits are its solo logits.
        let mut cache = KvCache::new(2);
        let batched = model.forward_packed(&tokens, 3, &pads, &mut cache).unwrap();
        for (b, prompt) in prompts.iter().enumerate() {
            let solo = &solo(&model, prompt, 0)[0];
            assert_eq!(&batched[b * 96..(b + 1) * 96], solo.as_slice(), "row {b}");
        }
        // Prefill in two passes (the first covers every row's padding and part of its
        // prompt) gives the same logits as one.
        let mut cache = KvCache::new(2);
        let prefix_len = longest - 1;
        let prefix_tokens: Vec<u32> = (0..3)
            .flat_map(|b| tokens[b * longest..b * longest + prefix_len].to_vec())
            .collect();
        model
            .forward_packed(&prefix_tokens, 3, &pads, &mut cache)
            .unwrap();
        let rest: Vec<u32> = (0..3)
            .flat_map(|b| tokens[b * longest + prefix_len..(b + 1) * longest].to_vec())
            .collect();
        let logits = model.forward_packed(&rest, 3, &pads, &mut cache).unwrap();
        assert_eq!(logits, batched, "prefill in two passes");
    }
}
