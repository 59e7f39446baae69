//! The packed CPU decoder: a Llama's forward pass for generation on the quantized
//! kernels of [`crate::packed`], holding its own copy of the weights in their layout.
//!
//! A [`Llama`] whose projections are all quantized builds one at construction and runs
//! it from [`Llama::packed_decoder`]. An inference-only caller can keep the decoder
//! alone ([`Llama::into_packed_decoder`]): candle's copies of the weights are freed, and
//! the token embeddings are read from the tied LM head when its rows are exactly the
//! f32 table (a GGUF stores one quantized matrix for both).

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::quantized::QTensor;
use candle_core::{DType, Storage, Tensor};

use crate::cache::{KvCache, PackedKv};
use crate::config::{ModelConfig, RopeLayout};
use crate::linear::{Linear, LinearWeight};
use crate::llama::{Block, Llama, PaddedBatch, RmsNorm};
use crate::packed::{self, AttendSpan, Isa, PackedMatrix, QuantizedRows};
use crate::pool::{parallel, SharedMut};

/// Most positions computed in one pass over the layers: longer prompts run in windows.
/// 512 like llama.cpp's default micro-batch: the matrix kernels reach full speed long
/// before (they block activations in rows of 64), and activations stay ~15 MiB.
pub const PREFILL_CHUNK_TOKENS: usize = 512;

/// One decoder layer for the packed kernels.
pub(crate) struct PackedLayer {
    attn_norm: Vec<f32>,
    mlp_norm: Vec<f32>,
    /// q, k and v projections stacked.
    qkv: PackedMatrix,
    qkv_bias: Option<Vec<f32>>,
    /// The per-head query and key norms' scales (`[head_dim]` each), when the model has them.
    qk_norm: Option<[Vec<f32>; 2]>,
    o: PackedMatrix,
    /// gate and up projections, tiles interleaved for the fused SwiGLU.
    gate_up: PackedMatrix,
    down: PackedMatrix,
}

/// Where the packed decoder reads token embeddings from.
enum EmbeddingRows {
    /// The model's f32 table (shared with the [`Llama`] while both live).
    Table(Tensor),
    /// The tied LM head's rows, dequantized on lookup: bit for bit the table they
    /// replaced (checked when it was dropped), in a quarter of its memory or less.
    LmHead,
}

/// A Llama's forward pass for generation on the packed kernels, with its own copy of
/// the weights in the layout of [`packed`].
pub struct PackedDecoder {
    /// The instruction set every kernel of this decoder runs with.
    isa: Isa,
    config: ModelConfig,
    rope_layout: RopeLayout,
    inv_freq: Vec<f32>,
    embedding: EmbeddingRows,
    layers: Vec<PackedLayer>,
    final_norm: Vec<f32>,
    lm_head: PackedMatrix,
    /// Addresses of the quantized tensors packed from a [`Llama`], in a fixed order: a
    /// model whose weights were replaced since falls back to the candle path. Empty for
    /// a decoder loaded without one.
    sources: Vec<usize>,
}

impl std::fmt::Debug for PackedDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedDecoder")
            .field("isa", &self.isa)
            .field("layers", &self.layers.len())
            .field("lm_head", &self.lm_head)
            .field(
                "embedding_table",
                &matches!(self.embedding, EmbeddingRows::Table(_)),
            )
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

/// A layer's seven quantized projections (q, k, v, o, gate, up, down), or `None` if one
/// is dense, carries a LoRA adapter, or has a bias the packed path does not apply (only
/// q, k and v may).
fn block_sources(block: &Block) -> Option<[&Arc<QTensor>; 7]> {
    let all = block.projections().map(|(_, linear)| linear);
    if all.iter().any(|l| l.adapter().is_some()) || all[3..].iter().any(|l| l.bias().is_some()) {
        return None;
    }
    let mut out = [quantized(all[0])?; 7];
    for (slot, l) in out.iter_mut().zip(all) {
        *slot = quantized(l)?;
    }
    Some(out)
}

/// The quantized tensors of a model in the order [`PackedDecoder::sources`] records them,
/// or `None` if the packed path cannot run one of its projections.
pub(crate) fn packed_sources(model: &Llama) -> Option<Vec<&Arc<QTensor>>> {
    let mut out = Vec::with_capacity(model.layers.len() * 7 + 1);
    for block in &model.layers {
        out.extend(block_sources(block)?);
    }
    if model.lm_head.bias().is_some() {
        return None;
    }
    out.push(quantized(&model.lm_head)?);
    Some(out)
}

/// Whether the packed kernels take a model of this shape.
fn shape_supported(cfg: &ModelConfig) -> bool {
    cfg.head_dim.is_multiple_of(16)
        && cfg.hidden_size.is_multiple_of(packed::QK)
        && cfg.intermediate_size.is_multiple_of(packed::TILE_N)
        && cfg
            .num_attention_heads
            .is_multiple_of(cfg.num_key_value_heads)
}

/// The parts of a model that are not layers, as [`PackedDecoder::assemble`] takes them.
pub(crate) struct DecoderParts<'a> {
    pub config: &'a ModelConfig,
    pub rope_layout: RopeLayout,
    pub inv_freq: Vec<f32>,
    /// The f32 embedding table, or `None` to read embeddings from the tied LM head (the
    /// caller knows it holds the same values).
    pub embedding_table: Option<Tensor>,
    pub final_norm: &'a RmsNorm,
    pub lm_head: &'a Linear,
}

impl PackedDecoder {
    /// Packs `model`'s weights for `isa`, or `None` when they have no packed kernels
    /// (dense or biased projections, LoRA adapters, another device, odd shapes).
    pub(crate) fn build(model: &Llama, isa: Isa) -> Result<Option<Self>> {
        let usable = model.device().is_cpu()
            && model.embed_tokens.0.dtype() == DType::F32
            && shape_supported(&model.config);
        let Some(sources) = packed_sources(model).filter(|_| usable) else {
            return Ok(None);
        };
        let mut layers = Vec::with_capacity(model.layers.len());
        for block in &model.layers {
            layers.push(Self::pack_layer(block, &model.config)?.expect("checked above"));
        }
        let parts = DecoderParts {
            config: &model.config,
            rope_layout: model.rope_layout,
            inv_freq: model.inv_freq.to_vec1::<f32>()?,
            embedding_table: Some(model.embed_tokens.0.clone()),
            final_norm: &model.norm,
            lm_head: &model.lm_head,
        };
        let mut decoder = Self::assemble(isa, parts, layers)?.expect("checked above");
        decoder.sources = sources.iter().map(|q| Arc::as_ptr(q) as usize).collect();
        Ok(Some(decoder))
    }

    /// One layer in the packed layout, or `None` if the packed path cannot run it.
    pub(crate) fn pack_layer(block: &Block, cfg: &ModelConfig) -> Result<Option<PackedLayer>> {
        let Some([q, k, v, o, gate, up, down]) = block_sources(block) else {
            return Ok(None);
        };
        if !shape_supported(cfg)
            || gate.shape().dims2()? != (cfg.intermediate_size, cfg.hidden_size)
        {
            return Ok(None);
        }
        let a = &block.self_attn;
        let qkv_bias = match (a.q_proj.bias(), a.k_proj.bias(), a.v_proj.bias()) {
            (None, None, None) => None,
            (qb, kb, vb) => {
                let mut bias = Vec::new();
                for (b, n) in [(qb, q), (kb, k), (vb, v)] {
                    match b {
                        Some(b) => bias.extend(vector(b)?),
                        None => bias.extend(std::iter::repeat_n(0f32, n.shape().dims2()?.0)),
                    }
                }
                Some(bias)
            }
        };
        let qk_norm = match &a.qk_norm {
            Some(norm) => Some([vector(norm.q.weight())?, vector(norm.k.weight())?]),
            None => None,
        };
        Ok(Some(PackedLayer {
            attn_norm: vector(block.input_layernorm.weight())?,
            mlp_norm: vector(block.post_attention_layernorm.weight())?,
            qkv: PackedMatrix::stack(&[q, k, v], false)?,
            qkv_bias,
            qk_norm,
            o: PackedMatrix::stack(&[o], false)?,
            gate_up: PackedMatrix::stack(&[gate, up], true)?,
            down: PackedMatrix::stack(&[down], false)?,
        }))
    }

    /// A decoder from packed layers and the rest of the model, or `None` if the packed
    /// path cannot run its LM head (dense or biased).
    pub(crate) fn assemble(
        isa: Isa,
        parts: DecoderParts<'_>,
        layers: Vec<PackedLayer>,
    ) -> Result<Option<Self>> {
        let lm_head = match quantized(parts.lm_head) {
            Some(q) if parts.lm_head.bias().is_none() => PackedMatrix::stack(&[q], false)?,
            _ => return Ok(None),
        };
        let embedding = match parts.embedding_table {
            Some(table) => EmbeddingRows::Table(table),
            None => EmbeddingRows::LmHead,
        };
        Ok(Some(Self {
            isa,
            config: parts.config.clone(),
            rope_layout: parts.rope_layout,
            inv_freq: parts.inv_freq,
            embedding,
            layers,
            final_norm: vector(parts.final_norm.weight())?,
            lm_head,
            sources: Vec::new(),
        }))
    }

    /// Whether `model`'s quantized tensors are still the ones this decoder packed.
    pub(crate) fn packs(&self, model: &Llama) -> bool {
        packed_sources(model).is_some_and(|current| {
            current.len() == self.sources.len()
                && current
                    .iter()
                    .zip(&self.sources)
                    .all(|(q, &p)| Arc::as_ptr(q) as usize == p)
        })
    }

    /// The instruction set of its kernels.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The configuration of the model the decoder was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Whether embeddings come from the tied LM head (the f32 table was dropped).
    pub fn embeds_from_lm_head(&self) -> bool {
        matches!(self.embedding, EmbeddingRows::LmHead)
    }

    /// Reads embeddings from the tied LM head instead of the f32 table when its rows
    /// dequantize to exactly the table's values (as a GGUF's quantized `token_embd`
    /// does), so that the table can be freed. Returns whether embeddings now come from
    /// the LM head.
    pub(crate) fn drop_embedding_table(&mut self) -> Result<bool> {
        let EmbeddingRows::Table(table) = &self.embedding else {
            return Ok(true);
        };
        let (vocab, hidden) = (self.config.vocab_size, self.config.hidden_size);
        if !self.config.tie_word_embeddings
            || table.dims() != [vocab, hidden]
            || self.lm_head.rows() != vocab
        {
            return Ok(false);
        }
        let (storage, layout) = table.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Ok(false);
        };
        if !layout.is_contiguous() {
            return Ok(false);
        }
        let values = &cpu.as_slice::<f32>()?[layout.start_offset()..][..vocab * hidden];
        let mut row = vec![0f32; hidden];
        for (id, want) in values.chunks_exact(hidden).enumerate() {
            self.lm_head.dequantize_row(id, &mut row);
            if row
                .iter()
                .zip(want)
                .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Ok(false);
            }
        }
        drop(storage);
        self.embedding = EmbeddingRows::LmHead;
        Ok(true)
    }

    /// Writes the embedding of each of `ids` into consecutive rows of `out`.
    fn embed(&self, ids: &[usize], out: &mut [f32]) -> Result<()> {
        let hidden = self.config.hidden_size;
        match &self.embedding {
            EmbeddingRows::Table(embed) => {
                let (storage, layout) = embed.storage_and_layout();
                let Storage::Cpu(cpu) = &*storage else {
                    bail!("the packed decoder runs on the CPU");
                };
                if !layout.is_contiguous() {
                    bail!("the embedding table is not contiguous");
                }
                let table = &cpu.as_slice::<f32>()?[layout.start_offset()..];
                for (row, &id) in out.chunks_exact_mut(hidden).zip(ids) {
                    row.copy_from_slice(&table[id * hidden..][..hidden]);
                }
            }
            EmbeddingRows::LmHead => {
                for (row, &id) in out.chunks_exact_mut(hidden).zip(ids) {
                    self.lm_head.dequantize_row(id, row);
                }
            }
        }
        Ok(())
    }

    /// One decoder pass of a left-padded batch for generation; returns the logits of
    /// each row's last position, `[batch, vocab]` row-major.
    ///
    /// * `tokens`: `batch × t` new token ids, row-major.
    /// * `pads[b]`: padding positions at the start of row `b`'s history (cache + new
    ///   tokens), as for [`crate::padded_causal_mask`]. Position `j` of a row has RoPE
    ///   position `j - pads[b]`; padding is never computed nor attended.
    ///
    /// Each row is computed independently of the others (same arithmetic whatever the
    /// batch), so a batch gives the same logits as its rows one by one.
    pub fn forward(
        &self,
        tokens: &[u32],
        batch: usize,
        pads: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let past = cache.len();
        let starts: Vec<usize> = pads.iter().map(|&p| p.max(past)).collect();
        self.forward_from(tokens, batch, pads, &starts, cache)
    }

    /// [`Self::forward`] where row `b` is computed from history position `starts[b]` on
    /// (`pads[b] ≤ starts[b] < past + t`): its new tokens before that are padding
    /// (`< pads[b]`) or already in the cache (a reused prompt prefix). Only the rows' own
    /// tokens cost compute, so a ragged batch wastes nothing on padding.
    ///
    /// Long prompts run in windows of at most [`PREFILL_CHUNK_TOKENS`] computed
    /// positions, so activations stay small whatever the prompt; every position reads
    /// its keys and values from the cache either way, so the results are the same bits.
    pub fn forward_from(
        &self,
        tokens: &[u32],
        batch: usize,
        pads: &[usize],
        starts: &[usize],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let PaddedBatch { t, past, .. } = PaddedBatch::new(tokens, batch, pads, cache.len())?;
        if starts.len() != batch {
            bail!("{} starts for {batch} rows", starts.len());
        }
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
        // Room for every window at once: growing between windows would copy the cache.
        let d = cfg.head_dim;
        cache.packed_mut(batch, cfg.num_key_value_heads, d, past + t)?;
        // Positions before the earliest start are padding or cached in every row.
        let mut from = starts.iter().min().expect("batch > 0") - past;
        cache.advance(from);
        let width = (PREFILL_CHUNK_TOKENS / batch).max(1);
        let mut window = Vec::with_capacity(batch * width.min(t));
        loop {
            let to = (from + width).min(t);
            window.clear();
            for b in 0..batch {
                window.extend_from_slice(&tokens[b * t + from..b * t + to]);
            }
            let rows = PaddedBatch::new(&window, batch, pads, cache.len())?;
            let window_starts: Vec<usize> = starts.iter().map(|&s| s.max(rows.past)).collect();
            let last = to == t;
            let logits = self.forward_window(&rows, &window_starts, cache, last)?;
            if last {
                return Ok(logits);
            }
            from = to;
        }
    }

    /// [`Self::forward_from`] on one window of new tokens, `rows` (after the cache's
    /// positions; `starts` checked by the caller). A row whose start lies beyond the
    /// window computes nothing in it. Logits only when `with_logits` (the last window:
    /// every row then computes its last position).
    fn forward_window(
        &self,
        rows: &PaddedBatch<'_>,
        starts: &[usize],
        cache: &mut KvCache,
        with_logits: bool,
    ) -> Result<Vec<f32>> {
        let isa = self.isa;
        let cfg = &self.config;
        let &PaddedBatch {
            tokens,
            batch,
            pads,
            t,
            past,
        } = rows;
        let (hidden, d) = (cfg.hidden_size, cfg.head_dim);
        let (n_heads, n_kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (q_out, kv_out) = (n_heads * d, n_kv * d);
        let qkv_cols = q_out + 2 * kv_out;
        // The computed positions: (row, index among the new tokens), row by row.
        let computed: Vec<(usize, usize)> = (0..batch)
            .flat_map(|b| (starts[b] - past..t).map(move |i| (b, i)))
            .collect();
        let m = computed.len();

        let mut x = vec![0f32; m * hidden];
        let ids: Vec<usize> = computed
            .iter()
            .map(|&(b, i)| tokens[b * t + i] as usize)
            .collect();
        self.embed(&ids, &mut x)?;

        // RoPE angles of every computed position, in f64 then rounded once, so that they
        // do not depend on the platform's f32 sin/cos.
        let half = d / 2;
        let inv_freq = &self.inv_freq;
        let mut cos = vec![0f32; m * half];
        let mut sin = vec![0f32; m * half];
        for (r, &(b, i)) in computed.iter().enumerate() {
            let pos = rows.position(b, i) as f64;
            for (j, f) in inv_freq.iter().enumerate() {
                let angle = pos * *f as f64;
                cos[r * half + j] = angle.cos() as f32;
                sin[r * half + j] = angle.sin() as f32;
            }
        }

        let kv = cache.packed_mut(batch, n_kv, d, past + t)?;
        let eps = cfg.rms_norm_eps as f32;
        let inter = self.layers.first().map_or(0, |l| l.gate_up.rows() / 2);
        let mut s = Scratch {
            h: vec![0.0; m * hidden],
            qkv: vec![0.0; m * qkv_cols],
            attn: vec![0.0; m * q_out],
            proj: vec![0.0; m * hidden],
            mlp: vec![0.0; m * inter],
            head: vec![0.0; d],
            rows: QuantizedRows::new(activation_levels()),
        };
        let shape = AttentionShape {
            past,
            n_heads,
            n_kv,
            d,
        };
        for (index, layer) in self.layers.iter().enumerate() {
            packed::rms_norm_rows(isa, &x, &layer.attn_norm, eps, &mut s.h);
            s.rows.quantize(isa, &s.h, hidden);
            packed::matmul(isa, &layer.qkv, &s.rows, &mut s.qkv);
            if let Some(bias) = &layer.qkv_bias {
                for row in s.qkv.chunks_exact_mut(qkv_cols) {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
            }
            if let Some([q_norm, k_norm]) = &layer.qk_norm {
                for row in s.qkv.chunks_exact_mut(qkv_cols) {
                    let (q, rest) = row.split_at_mut(q_out);
                    normalize_heads(isa, q, q_norm, eps, &mut s.head);
                    normalize_heads(isa, &mut rest[..kv_out], k_norm, eps, &mut s.head);
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
        if !with_logits {
            return Ok(Vec::new());
        }

        // Logits of each row's last position only (the LM head is the largest matrix).
        let mut last = vec![0f32; batch * hidden];
        for (r, &(b, i)) in computed.iter().enumerate() {
            if i == t - 1 {
                last[b * hidden..][..hidden].copy_from_slice(&x[r * hidden..][..hidden]);
            }
        }
        let mut normed = vec![0f32; batch * hidden];
        packed::rms_norm_rows(isa, &last, &self.final_norm, eps, &mut normed);
        s.rows.quantize(isa, &normed, hidden);
        let mut logits = vec![0f32; batch * self.lm_head.rows()];
        packed::matmul(isa, &self.lm_head, &s.rows, &mut logits);
        Ok(logits)
    }
}

/// Buffers of one packed forward pass.
struct Scratch {
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    mlp: Vec<f32>,
    /// One head's values (the per-head norms write through it).
    head: Vec<f32>,
    rows: QuantizedRows,
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

/// RMS-normalizes each head of `heads` (consecutive runs of `weight.len()` values) in
/// place, with `scratch` of one head's size.
fn normalize_heads(isa: Isa, heads: &mut [f32], weight: &[f32], eps: f32, scratch: &mut [f32]) {
    for head in heads.chunks_exact_mut(weight.len()) {
        packed::rms_norm_rows(isa, head, weight, eps, scratch);
        head.copy_from_slice(scratch);
    }
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
mod tests {
    use std::sync::Arc;

    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::llama::{Attention, Block, Embedding, Mlp, RmsNorm};

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
                    qk_norm: None,
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
            config.architecture.spec(),
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
        solo_on(model.packed_decoder().unwrap(), prompt, steps)
    }

    fn solo_on(decoder: &PackedDecoder, prompt: &[u32], steps: usize) -> Vec<Vec<f32>> {
        let mut cache = KvCache::new(2);
        let mut logits = decoder.forward(prompt, 1, &[0], &mut cache).unwrap();
        let mut out = vec![logits.clone()];
        for _ in 0..steps {
            let next = argmax(&logits);
            logits = decoder.forward(&[next], 1, &[0], &mut cache).unwrap();
            out.push(logits.clone());
        }
        out
    }

    /// `model` with a tied LM head quantized to `dtype` and the embedding table its
    /// dequantization, as a GGUF with a quantized `token_embd` loads.
    fn tied(model: Llama, dtype: GgmlDType) -> Llama {
        let (vocab, h) = (model.config.vocab_size, model.config.hidden_size);
        let w = Tensor::from_vec(values(vocab * h, 17, 1.0), (vocab, h), &Device::Cpu).unwrap();
        let q = Arc::new(QTensor::quantize(&w, dtype).unwrap());
        let embed = q.dequantize(&Device::Cpu).unwrap();
        let lm_head = Linear::new(LinearWeight::Quantized(q), None).unwrap();
        Llama::new(
            model.arch(),
            model.config,
            model.rope_layout,
            Embedding(embed),
            model.layers,
            model.norm,
            lm_head,
        )
        .unwrap()
        .with_packed_isa(Isa::best())
        .unwrap()
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
                let x = model
                    .packed_decoder()
                    .unwrap()
                    .forward(&tokens, 1, &[0], &mut a)
                    .unwrap();
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
        let mut logits = model
            .packed_decoder()
            .unwrap()
            .forward(&tokens, 3, &pads, &mut cache)
            .unwrap();
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
                .packed_decoder()
                .unwrap()
                .forward(&next, rows.len(), &pads, &mut cache)
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
        let mut logits = model
            .packed_decoder()
            .unwrap()
            .forward(prompt, 1, &[0], &mut cache)
            .unwrap();
        for (step, want) in expected.iter().enumerate() {
            assert_eq!(&logits, want, "step {step}");
            logits = model
                .packed_decoder()
                .unwrap()
                .forward(&[argmax(&logits)], 1, &[0], &mut cache)
                .unwrap();
        }
    }

    #[test]
    fn replaced_weights_disable_the_packed_path() {
        let mut model = tiny_model();
        assert!(model.packed_available());
        model.layers[1].mlp.up_proj = quantized(128, 64, 99, GgmlDType::Q4_1);
        assert!(!model.packed_available());
        assert!(model.packed_decoder().is_none());
        // The candle path still runs.
        model
            .forward_padded(&[1, 2], 1, &[0], &mut KvCache::new(2))
            .unwrap();
    }
    #[test]
    fn every_isa_generates_the_same_logits_bit_for_bit() {
        let isas = Isa::supported_all();
        let missing: Vec<&str> = Isa::ALL
            .iter()
            .filter(|i| !i.supported())
            .map(|i| i.name())
            .collect();
        eprintln!(
            "decoder tested with: {} (not available on this CPU, so not tested: {})",
            isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
            if missing.is_empty() {
                "none".to_string()
            } else {
                missing.join(", ")
            }
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
        let batched = model
            .packed_decoder()
            .unwrap()
            .forward(&tokens, 3, &pads, &mut cache)
            .unwrap();
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
            .packed_decoder()
            .unwrap()
            .forward(&prefix_tokens, 3, &pads, &mut cache)
            .unwrap();
        let rest: Vec<u32> = (0..3)
            .flat_map(|b| tokens[b * longest + prefix_len..(b + 1) * longest].to_vec())
            .collect();
        let logits = model
            .packed_decoder()
            .unwrap()
            .forward(&rest, 3, &pads, &mut cache)
            .unwrap();
        assert_eq!(logits, batched, "prefill in two passes");
    }

    #[test]
    fn a_decoder_kept_alone_gives_the_models_logits_and_drops_a_tied_table() {
        let prompt = [5, 17, 33, 2, 91, 40, 8];
        let cases = [
            (tiny_model(), false),
            (tied(tiny_model(), GgmlDType::Q8_0), true),
            (tied(tiny_model(), GgmlDType::Q4_1), true),
        ];
        for (model, drops_table) in cases {
            let want = solo(&model, &prompt, 4);
            let decoder = model.into_packed_decoder().unwrap();
            assert_eq!(decoder.embeds_from_lm_head(), drops_table);
            assert_eq!(solo_on(&decoder, &prompt, 4), want, "tied: {drops_table}");
        }
        // A model the packed decoder cannot run comes back whole.
        let dense = dense_twin(&tiny_model());
        let back = dense.into_packed_decoder().unwrap_err();
        assert_eq!(back.layers.len(), 2);
    }

    #[test]
    fn packed_rows_dequantize_as_candle_does() {
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            // 37 rows: the last tile is partly filled.
            let w = Tensor::from_vec(values(37 * 96, 3, 2.0), (37, 96), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let packed = PackedMatrix::stack(&[&q], false).unwrap();
            let mut row = vec![0f32; 96];
            for (r, want) in want.iter().enumerate() {
                packed.dequantize_row(r, &mut row);
                assert_eq!(&row, want, "{dtype:?} row {r}");
            }
        }
    }

    /// Prompts longer than a prefill window run in several windows, with the bits of one
    /// pass: three rows of up to 200 tokens take two windows of 170 positions in a
    /// batch, one window alone.
    #[test]
    fn long_prompts_run_in_windows_with_the_same_logits() {
        let model = tiny_model();
        let lens = [200usize, 181, 190];
        assert!(lens[0] > PREFILL_CHUNK_TOKENS / 3 && lens[0] <= PREFILL_CHUNK_TOKENS);
        let prompts: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(b, &n)| (0..n).map(|i| ((i * 7 + b * 13) % 90) as u32 + 3).collect())
            .collect();
        let pads: Vec<usize> = lens.iter().map(|n| lens[0] - n).collect();
        let mut tokens = Vec::new();
        for (p, &pad) in prompts.iter().zip(&pads) {
            tokens.extend(std::iter::repeat_n(0u32, pad).chain(p.iter().copied()));
        }
        let mut cache = KvCache::new(2);
        let batched = model
            .packed_decoder()
            .unwrap()
            .forward(&tokens, 3, &pads, &mut cache)
            .unwrap();
        assert_eq!(cache.len(), lens[0]);
        for (b, prompt) in prompts.iter().enumerate() {
            let alone = &solo(&model, prompt, 0)[0];
            assert_eq!(&batched[b * 96..(b + 1) * 96], alone.as_slice(), "row {b}");
        }
    }
}
