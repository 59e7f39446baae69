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
use candle_core::{DType, Device, Tensor, D};

use crate::cache::KvCache;
use crate::config::{ModelConfig, RopeLayout};
use crate::decoder::PackedDecoder;
use crate::linear::Linear;
use crate::packed::{self, Isa};
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
    pub(crate) inv_freq: Tensor,
    /// The quantized weights re-laid for the packed kernels, when they all are quantized.
    packed: Option<Arc<PackedDecoder>>,
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
            llama.packed = PackedDecoder::build(&llama, isa)?.map(Arc::new);
        }
        Ok(llama)
    }

    /// The same model with the packed decoder running `isa`'s kernels (to compare
    /// instruction sets on one machine; the default is [`Isa::selected`]).
    pub fn with_packed_isa(mut self, isa: Isa) -> Result<Self> {
        if !isa.supported() {
            bail!("this CPU has no {} instructions", isa.name());
        }
        self.packed = PackedDecoder::build(&self, isa)?.map(Arc::new);
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
pub(crate) fn inverse_frequencies(cfg: &ModelConfig, device: &Device) -> Result<Tensor> {
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

impl Llama {
    /// The packed decoder, when it runs: every projection is quantized (and has not been
    /// replaced since construction), the CPU has packed kernels, and the kernels are
    /// [`Kernels::Fused`].
    pub fn packed_decoder(&self) -> Option<&PackedDecoder> {
        let decoder = self.packed.as_deref()?;
        (self.kernels == Kernels::Fused && decoder.packs(self)).then_some(decoder)
    }

    /// Whether [`Self::forward_packed`] runs.
    pub fn packed_available(&self) -> bool {
        self.packed_decoder().is_some()
    }

    /// The instruction set of the packed decoder, when it runs.
    pub fn packed_isa(&self) -> Option<Isa> {
        self.packed_decoder().map(PackedDecoder::isa)
    }

    /// Keeps the packed decoder alone, for inference without candle's kernels: the
    /// model's candle tensors are freed (unless clones of it hold them), and so is the
    /// embedding table when the tied LM head reproduces it exactly. Gives the model back
    /// when the packed decoder does not run.
    pub fn into_packed_decoder(mut self) -> std::result::Result<Arc<PackedDecoder>, Box<Self>> {
        if !self.packed_available() {
            return Err(Box::new(self));
        }
        let mut decoder = self.packed.take().expect("checked above");
        drop(self);
        if let Some(only) = Arc::get_mut(&mut decoder) {
            // An error here only means the table stays.
            let _ = only.drop_embedding_table();
        }
        Ok(decoder)
    }

    /// [`PackedDecoder::forward`] of this model's packed decoder.
    pub fn forward_packed(
        &self,
        tokens: &[u32],
        batch: usize,
        pads: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        self.require_packed()?.forward(tokens, batch, pads, cache)
    }

    /// [`PackedDecoder::forward_from`] of this model's packed decoder.
    pub fn forward_packed_from(
        &self,
        tokens: &[u32],
        batch: usize,
        pads: &[usize],
        starts: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        self.require_packed()?
            .forward_from(tokens, batch, pads, starts, cache)
    }

    fn require_packed(&self) -> Result<&PackedDecoder> {
        self.packed_decoder()
            .context("the packed decoder needs quantized weights and a CPU it has kernels for")
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
