//! The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM2): pre-norm blocks of
//! grouped-query attention with RoPE and a SwiGLU MLP, after "LLaMA: Open and Efficient
//! Foundation Language Models" (Touvron et al., 2023).
//!
//! One definition serves inference and training. [`Kernels::Fused`] uses candle's fused
//! softmax/RMSNorm/RoPE kernels, which are fast but have no backward pass;
//! [`Kernels::Differentiable`] spells the same maths with elementary ops so that every
//! parameter receives a gradient.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};

use crate::cache::KvCache;
use crate::config::{ModelConfig, RopeLayout};
use crate::linear::Linear;

/// Which implementation of the non-matmul ops to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    Fused,
    Differentiable,
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
        match kernels {
            Kernels::Fused => candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32),
            Kernels::Differentiable => {
                candle_nn::ops::rms_norm_slow(x, &self.weight, self.eps as f32)
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
}

/// Rotation angles for a batch of positions, shared by all layers of one forward pass.
struct RopeAngles {
    /// `[batch, t, head_dim / 2]`
    cos: Tensor,
    sin: Tensor,
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
        Ok(Self {
            config,
            rope_layout,
            embed_tokens,
            layers,
            norm,
            lm_head,
            kernels: Kernels::Fused,
            inv_freq,
        })
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.0.device()
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
        let mask = mask.map(|m| m.to_dtype(self.dtype())).transpose()?;
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
        let h = mlp.down_proj.forward(&(gate.silu()? * up)?)?;
        Ok((x + h)?)
    }

    fn attention(
        &self,
        attn: &Attention,
        x: &Tensor,
        angles: &RopeAngles,
        mask: Option<&Tensor>,
        cache: Option<(usize, &mut KvCache)>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (batch, t, _) = x.dims3()?;
        let (n_heads, n_kv, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let [q, k, v] = Linear::forward_shared([&attn.q_proj, &attn.k_proj, &attn.v_proj], x)?;
        let heads = |projected: Tensor, n: usize| -> Result<Tensor> {
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
            Kernels::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let out = probs
            .matmul(&v.contiguous()?)?
            .reshape((batch, n_heads, t, d))?
            .transpose(1, 2)?
            .reshape((batch, t, n_heads * d))?;
        Ok(attn.o_proj.forward(&out)?)
    }

    /// Rotates `x` (`[batch, heads, t, head_dim]`) by the angles of its positions.
    fn rope(&self, x: &Tensor, angles: &RopeAngles) -> Result<Tensor> {
        let (cos, sin) = (&angles.cos, &angles.sin);
        let out = match (self.kernels, self.rope_layout) {
            (Kernels::Fused, RopeLayout::HalfSplit) => candle_nn::rotary_emb::rope(x, cos, sin)?,
            (Kernels::Fused, RopeLayout::Interleaved) => {
                candle_nn::rotary_emb::rope_i(x, cos, sin)?
            }
            (Kernels::Differentiable, layout) => {
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
