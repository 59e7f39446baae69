//! The Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3, SmolLM2): pre-norm blocks of
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

use crate::arch::{ArchSpec, LayerModule, Module, Param, TensorNames};
use crate::cache::KvCache;
use crate::config::{ModelConfig, RopeLayout};
use crate::decoder::PackedDecoder;
use crate::linear::{Linear, LinearWeight};
use crate::load::ModelReader;
use crate::packed::{self, Isa};
use crate::train_ops::{self, Heads};

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
    /// Logits of each row's last position only: `[batch, vocab]`.
    LastPosition,
    /// Logits of every position: `[batch, positions, vocab]`.
    AllPositions,
}

/// Root-mean-square normalization with a learned scale per channel, as in Llama.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// A norm with scale `weight` (`[hidden]`) and `eps` added to the mean square.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// The learned scale, `[hidden]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `x: [..., heads · head_dim]` with each head of `head_dim` values normalized on its
    /// own (Qwen3's query and key norms).
    fn forward_per_head(
        &self,
        x: &Tensor,
        head_dim: usize,
        kernels: Kernels,
    ) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let (last, outer) = dims
            .split_last()
            .expect("projections have a last dimension");
        let heads = [outer, &[last / head_dim, head_dim]].concat();
        self.forward(&x.reshape(heads)?, kernels)?.reshape(dims)
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

/// Grouped-query self-attention with RoPE.
#[derive(Debug, Clone)]
pub struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    /// The per-head norms of queries and keys, when the architecture has them.
    pub(crate) qk_norm: Option<QkNorm>,
}

/// RMSNorms over each query head and each key head (`[head_dim]` scales), applied after
/// the projections and before RoPE, as Qwen3 does.
#[derive(Debug, Clone)]
pub struct QkNorm {
    pub(crate) q: RmsNorm,
    pub(crate) k: RmsNorm,
}

/// The SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

/// A pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Debug, Clone)]
pub struct Block {
    pub(crate) input_layernorm: RmsNorm,
    pub(crate) self_attn: Attention,
    pub(crate) post_attention_layernorm: RmsNorm,
    pub(crate) mlp: Mlp,
}

/// What the layers of one forward pass share.
pub(crate) struct LayerPass<'a> {
    angles: &'a RopeAngles,
    mask: Option<&'a Tensor>,
    attention: AttentionSpec,
    /// Attention runs on [`train_ops`] (a training pass on the CPU).
    train_ops: bool,
}

/// A shared and a mutable accessor listing a block's modules of one kind from one list,
/// so that their order cannot differ.
macro_rules! block_modules {
    (
        $(#[$doc:meta])*
        $vis:vis fn $name:ident / $vis_mut:vis fn $name_mut:ident -> [$ty:ty; $n:literal] {
            $($part:ident: $($field:ident).+),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        $vis fn $name(&self) -> [(LayerModule, &$ty); $n] {
            [$((LayerModule::$part, &self.$($field).+)),+]
        }

        $(#[$doc])*
        /// (Mutable, to replace them.)
        $vis_mut fn $name_mut(&mut self) -> [(LayerModule, &mut $ty); $n] {
            [$((LayerModule::$part, &mut self.$($field).+)),+]
        }
    };
}

/// A block's norms borrowed with `&` or `&mut`, from one list (as [`block_modules`]):
/// the two that every block has, then the optional per-head ones.
macro_rules! block_norms {
    ($block:ident, $($borrow:tt)+) => {{
        let mut out = vec![
            (LayerModule::AttnNorm, $($borrow)+ $block.input_layernorm),
            (LayerModule::MlpNorm, $($borrow)+ $block.post_attention_layernorm),
        ];
        if let Some(QkNorm { q, k }) = $($borrow)+ $block.self_attn.qk_norm {
            out.extend([(LayerModule::QNorm, q), (LayerModule::KNorm, k)]);
        }
        out
    }};
}

impl Block {
    /// Reads layer `layer`, checking each tensor's shape against the configuration.
    pub(crate) fn load(reader: &mut ModelReader<'_>, layer: usize) -> Result<Self> {
        let module = |part| Module::Layer(layer, part);
        let hidden = reader.config.hidden_size;
        Ok(Self {
            input_layernorm: reader.norm(module(LayerModule::AttnNorm), hidden)?,
            self_attn: Attention::load(reader, layer)?,
            post_attention_layernorm: reader.norm(module(LayerModule::MlpNorm), hidden)?,
            mlp: Mlp::load(reader, layer)?,
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        pass: &LayerPass<'_>,
        cache: Option<(usize, &mut KvCache)>,
    ) -> Result<Tensor> {
        let kernels = pass.attention.kernels;
        let h = self.input_layernorm.forward(x, kernels)?;
        let h = self.self_attn.forward(&h, pass, cache)?;
        let x = (x + h)?;
        let h = self.post_attention_layernorm.forward(&x, kernels)?;
        let h = self.mlp.forward(&h, kernels)?;
        Ok((x + h)?)
    }

    /// The norms: before attention and before the MLP, then the per-head query and key
    /// norms when the architecture has them.
    pub fn norms(&self) -> Vec<(LayerModule, &RmsNorm)> {
        block_norms!(self, &)
    }

    /// [`Self::norms`], mutable (to replace them).
    fn norms_mut(&mut self) -> Vec<(LayerModule, &mut RmsNorm)> {
        block_norms!(self, &mut)
    }

    block_modules! {
        /// The seven projections: q, k, v, o, gate, up, down.
        pub fn projections / pub fn projections_mut -> [Linear; 7] {
            Q: self_attn.q_proj,
            K: self_attn.k_proj,
            V: self_attn.v_proj,
            O: self_attn.o_proj,
            Gate: mlp.gate_proj,
            Up: mlp.up_proj,
            Down: mlp.down_proj,
        }
    }
}

impl Attention {
    /// Reads layer `layer`'s projections (with q/k/v biases and per-head norms when the
    /// architecture has them).
    pub(crate) fn load(reader: &mut ModelReader<'_>, layer: usize) -> Result<Self> {
        let c = reader.config;
        let (hidden, head_dim) = (c.hidden_size, c.head_dim);
        let q_out = c.num_attention_heads * head_dim;
        let kv_out = c.num_key_value_heads * head_dim;
        let bias = reader.arch.qkv_bias;
        let module = |part| Module::Layer(layer, part);
        let qk_norm = if reader.arch.qk_norm {
            Some(QkNorm {
                q: reader.norm(module(LayerModule::QNorm), head_dim)?,
                k: reader.norm(module(LayerModule::KNorm), head_dim)?,
            })
        } else {
            None
        };
        Ok(Self {
            q_proj: reader.linear(module(LayerModule::Q), q_out, hidden, bias)?,
            k_proj: reader.linear(module(LayerModule::K), kv_out, hidden, bias)?,
            v_proj: reader.linear(module(LayerModule::V), kv_out, hidden, bias)?,
            o_proj: reader.linear(module(LayerModule::O), hidden, q_out, false)?,
            qk_norm,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        pass: &LayerPass<'_>,
        cache: Option<(usize, &mut KvCache)>,
    ) -> Result<Tensor> {
        let [q, k, v] = Linear::forward_shared([&self.q_proj, &self.k_proj, &self.v_proj], x)?;
        let (q, k) = match &self.qk_norm {
            Some(norm) => {
                let (d, kernels) = (pass.attention.heads.head_dim, pass.attention.kernels);
                let q = norm.q.forward_per_head(&q, d, kernels)?;
                (q, norm.k.forward_per_head(&k, d, kernels)?)
            }
            None => (q, k),
        };
        let (angles, mask) = (pass.angles, pass.mask);
        let out = if pass.train_ops {
            let heads = pass.attention.heads;
            train_ops::attention(&q, &k, &v, &angles.cos, &angles.sin, mask, heads)?
        } else {
            pass.attention.core(&q, &k, &v, angles, mask, cache)?
        };
        Ok(self.o_proj.forward(&out)?)
    }
}

impl Mlp {
    /// Reads layer `layer`'s gate, up and down projections.
    pub(crate) fn load(reader: &mut ModelReader<'_>, layer: usize) -> Result<Self> {
        let (hidden, inter) = (reader.config.hidden_size, reader.config.intermediate_size);
        let module = |part| Module::Layer(layer, part);
        Ok(Self {
            gate_proj: reader.linear(module(LayerModule::Gate), inter, hidden, false)?,
            up_proj: reader.linear(module(LayerModule::Up), inter, hidden, false)?,
            down_proj: reader.linear(module(LayerModule::Down), hidden, inter, false)?,
        })
    }

    fn forward(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let [gate, up] = Linear::forward_shared([&self.gate_proj, &self.up_proj], x)?;
        let gated = match kernels {
            Kernels::Differentiable if train_ops::applies_to(&gate) => {
                train_ops::swiglu(&gate, &up)?
            }
            _ => (gate.silu()? * up)?,
        };
        Ok(self.down_proj.forward(&gated)?)
    }
}

/// Token embedding table, `[vocab, hidden]`.
#[derive(Debug, Clone)]
pub struct Embedding(pub Tensor);

/// A Llama-family decoder: token embedding, [`Block`]s, final norm and LM head, with its
/// configuration and the kernels it runs on.
#[derive(Debug, Clone)]
pub struct Llama {
    /// Names the tensors of its checkpoints and writes its `config.json`.
    arch: &'static ArchSpec,
    /// The checked configuration the weights were loaded with.
    pub config: ModelConfig,
    /// How Q/K rows are laid out for RoPE, as the checkpoint stores them (interleaved in
    /// llama.cpp's GGUF files of Llama models).
    pub rope_layout: RopeLayout,
    /// Token embedding table, `[vocab_size, hidden_size]`.
    pub embed_tokens: Embedding,
    /// The decoder blocks, first to last.
    pub layers: Vec<Block>,
    /// Norm applied after the last block.
    pub norm: RmsNorm,
    /// Output projection to vocabulary logits (built from the embedding matrix when
    /// `tie_word_embeddings`).
    pub lm_head: Linear,
    /// Which kernels the forward pass runs: fused ones for inference, differentiable ones
    /// for training.
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
    pub(crate) fn new(
        arch: &'static ArchSpec,
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
            arch,
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

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed_tokens.0.device()
    }

    /// The architecture: its tensor names, its `config.json`.
    pub fn arch(&self) -> &'static ArchSpec {
        self.arch
    }

    /// The projections of every layer under their Hugging Face module names
    /// (`model.layers.{i}.self_attn.q_proj`, ... for Llama), for adapters.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let names = self.arch.hf_names;
        self.projection_modules_mut()
            .map(|(module, linear)| (names.module(module), linear))
            .collect()
    }

    /// The projections of every layer, layer by layer in [`Block::projections`] order.
    pub fn projection_modules_mut(&mut self) -> impl Iterator<Item = (Module, &mut Linear)> {
        self.layers.iter_mut().enumerate().flat_map(|(i, block)| {
            block
                .projections_mut()
                .map(|(part, linear)| (Module::Layer(i, part), linear))
        })
    }

    /// The same model with every weight and bias replaced by `f(hf_name, tensor)`, in
    /// checkpoint order (e.g. by trainable variables); a tied LM head stays the replaced
    /// embedding table. Adapters are left out; quantized matrices are an error.
    pub fn try_map_weights(
        &self,
        mut f: impl FnMut(String, &Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        let names = self.arch.hf_names;
        let mut f = |module: Module, param: Param, t: &Tensor| f(names.tensor(module, param), t);
        let embed = f(Module::Embedding, Param::Weight, &self.embed_tokens.0)?;
        let mut layers = self.layers.clone();
        for (i, block) in layers.iter_mut().enumerate() {
            for (part, norm) in block.norms_mut() {
                let w = f(Module::Layer(i, part), Param::Weight, norm.weight())?;
                *norm = RmsNorm::new(w, norm.eps);
            }
            for (part, linear) in block.projections_mut() {
                *linear = map_linear(&names, Module::Layer(i, part), linear, &mut f)?;
            }
        }
        let w = f(Module::FinalNorm, Param::Weight, self.norm.weight())?;
        let norm = RmsNorm::new(w, self.norm.eps);
        let lm_head = if self.config.tie_word_embeddings {
            Linear::new(LinearWeight::Dense(embed.clone()), None)?
        } else {
            map_linear(&names, Module::LmHead, &self.lm_head, &mut f)?
        };
        let mut model = Self::new(
            self.arch,
            self.config.clone(),
            self.rope_layout,
            Embedding(embed),
            layers,
            norm,
            lm_head,
        )?;
        model.kernels = self.kernels;
        Ok(model)
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

    /// The dtype of the embedding table (that of dense weights and activations).
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
        let train_ops = self.uses_train_ops(&x, cache.is_none());
        let mask_dtype = if train_ops { DType::F32 } else { self.dtype() };
        let mask = mask.map(|m| m.to_dtype(mask_dtype)).transpose()?;
        let pass = LayerPass {
            angles: &angles,
            mask: mask.as_ref(),
            attention: self.attention_spec(),
            train_ops,
        };
        for (index, block) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (index, c));
            x = block
                .forward(&x, &pass, layer_cache)
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

    /// Whether a forward pass over `x` runs attention on [`train_ops`]: a training pass
    /// (differentiable kernels, no cache) on the CPU.
    fn uses_train_ops(&self, x: &Tensor, without_cache: bool) -> bool {
        self.kernels == Kernels::Differentiable && without_cache && train_ops::applies_to(x)
    }

    fn attention_spec(&self) -> AttentionSpec {
        AttentionSpec {
            heads: Heads {
                heads: self.config.num_attention_heads,
                kv_heads: self.config.num_key_value_heads,
                head_dim: self.config.head_dim,
                layout: self.rope_layout,
            },
            kernels: self.kernels,
        }
    }
}

/// `linear` with its weight and bias replaced by `f`'s (see [`Llama::try_map_weights`]).
fn map_linear(
    names: &TensorNames,
    module: Module,
    linear: &Linear,
    f: &mut dyn FnMut(Module, Param, &Tensor) -> Result<Tensor>,
) -> Result<Linear> {
    let LinearWeight::Dense(w) = linear.weight() else {
        bail!(
            "`{}` is quantized: load the model with dense weights",
            names.module(module)
        );
    };
    let w = f(module, Param::Weight, w)?;
    let b = linear
        .bias()
        .map(|b| f(module, Param::Bias, b))
        .transpose()?;
    Ok(Linear::new(LinearWeight::Dense(w), b)?)
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

/// A left-padded batch of new tokens, its shape checked: `batch` rows of `t` tokens each
/// (row-major in `tokens`) after `past` cached positions, row `b`'s history (cache + new
/// tokens) starting with `pads[b]` padding positions (see [`padded_causal_mask`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PaddedBatch<'a> {
    pub tokens: &'a [u32],
    pub batch: usize,
    pub pads: &'a [usize],
    /// New tokens per row.
    pub t: usize,
    /// Positions already in the cache.
    pub past: usize,
}

impl<'a> PaddedBatch<'a> {
    /// `tokens` as `batch` rows after `past` cached positions: fails unless they split
    /// into `batch > 0` rows of at least one token with one `pads` entry each.
    pub(crate) fn new(
        tokens: &'a [u32],
        batch: usize,
        pads: &'a [usize],
        past: usize,
    ) -> Result<Self> {
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
        Ok(Self {
            tokens,
            batch,
            pads,
            t,
            past,
        })
    }

    /// The RoPE position of new token `i` of row `b`: its history position less the row's
    /// padding (0 for a padding position).
    pub(crate) fn position(&self, b: usize, i: usize) -> usize {
        (self.past + i).saturating_sub(self.pads[b])
    }
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

    /// Whether the packed decoder ([`Self::packed_decoder`]) runs.
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

    /// [`PackedDecoder::forward`]'s contract with candle's kernels (any weights): builds
    /// the positions and the padded causal mask and runs [`Self::forward`].
    pub fn forward_padded(
        &self,
        tokens: &[u32],
        batch: usize,
        pads: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let rows = PaddedBatch::new(tokens, batch, pads, cache.len())?;
        let (t, past) = (rows.t, rows.past);
        let device = self.device().clone();
        let positions: Vec<u32> = (0..batch)
            .flat_map(|b| (0..t).map(move |i| rows.position(b, i) as u32))
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
