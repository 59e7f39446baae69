//! Building a [`Llama`] from a GGUF file or a Hugging Face directory, with every tensor's
//! presence and shape checked against the configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::config::{ModelConfig, RopeLayout};
use crate::decoder::{DecoderParts, PackedDecoder};
use crate::gguf::{gguf_tensor_name, unpermute_interleaved_rope, GgufFile};
use crate::linear::{Linear, LinearWeight};
use crate::llama::{inverse_frequencies, Attention, Block, Embedding, Llama, Mlp, RmsNorm};
use crate::packed;

/// How a model's matrices are held in memory for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStorage {
    /// As the file stores them: GGUF blocks bit-comparable with llama.cpp, safetensors dense.
    AsStored,
    /// The fast default. GGUF types without SIMD kernels in candle (Q4_1, Q5_x, ...)
    /// re-quantized to Q8_0, others kept as stored; dense f32 matrices of a Hugging Face
    /// directory (a trained checkpoint) quantized to Q8_0 on the CPU, so that the packed
    /// decoder runs them (the same format as SmolLM2's GGUF; about 4x less memory traffic).
    Fast,
    /// Dense tensors in Hugging Face layout (needed for training and conversion).
    Dequantized,
}

/// How to materialise the weights.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub weights: WeightStorage,
    /// Dtype of dense weights.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            weights: WeightStorage::Fast,
            dtype: DType::F32,
        }
    }
}

impl LoadOptions {
    fn dequantize(&self) -> bool {
        self.weights == WeightStorage::Dequantized
    }
}

/// A loaded model and, for GGUF files, the file (its metadata holds the tokenizer).
pub struct LoadedModel {
    pub llama: Llama,
    pub path: PathBuf,
    pub gguf: Option<GgufFile>,
}

/// Loads a `.gguf` file or a Hugging Face model directory.
pub fn load_model(path: &Path, device: &Device, options: LoadOptions) -> Result<LoadedModel> {
    if path.is_dir() {
        let quantize = options.weights == WeightStorage::Fast
            && device.is_cpu()
            && options.dtype == DType::F32;
        let llama = load_safetensors(path, device, options.dtype, quantize)?;
        return Ok(LoadedModel {
            llama,
            path: path.to_path_buf(),
            gguf: None,
        });
    }
    if !path.exists() {
        bail!("model `{}` does not exist", path.display());
    }
    let mut file = GgufFile::open(path)?;
    let llama = load_gguf(&mut file, device, options)?;
    Ok(LoadedModel {
        llama,
        path: path.to_path_buf(),
        gguf: Some(file),
    })
}

pub fn load_gguf(file: &mut GgufFile, device: &Device, options: LoadOptions) -> Result<Llama> {
    let config = file.model_config()?;
    let stored_layout = file.rope_layout()?;
    let layout = if options.dequantize() {
        RopeLayout::HalfSplit
    } else {
        stored_layout
    };
    let mut source = GgufSource {
        file,
        device: device.clone(),
        options,
        stored_layout,
        config: config.clone(),
    };
    build_llama(config, layout, &mut source)
}

/// Loads a GGUF file straight into the packed decoder, for inference without candle's
/// kernels (see [`Llama::into_packed_decoder`] for the same from a loaded model). Each
/// layer is packed as soon as it is read, so candle's copies of the weights are never all
/// held at once; a tied LM head stored as Q8_0 or Q4_1 also serves the embeddings (its
/// rows dequantize to the table's exact values), so the f32 table is never built. Peak
/// memory stays near the size of the packed weights.
///
/// Matrices of other types are re-quantized to Q8_0 as [`Llama`]'s packed decoder does.
/// `None` when the packed decoder cannot run the file (a CPU without packed kernels,
/// unsupported shapes, biases it does not apply): load it with [`load_gguf`].
pub fn load_packed_gguf(file: &mut GgufFile) -> Result<Option<PackedDecoder>> {
    let Some(isa) = packed::decoder_isa().map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let mut config = file.model_config()?;
    let layout = file.rope_layout()?;
    let mut source = GgufSource {
        file,
        device: Device::Cpu,
        options: LoadOptions::default(),
        stored_layout: layout,
        config: config.clone(),
    };
    let reproduces_table = |lm_head: &Linear, tied: bool| {
        tied && matches!(lm_head.weight(), LinearWeight::Quantized(q)
            if matches!(q.dtype(), GgmlDType::Q8_0 | GgmlDType::Q4_1))
    };
    let parts = read_model(
        &config,
        &mut source,
        |lm_head, tied| !reproduces_table(lm_head, tied),
        |block| PackedDecoder::pack_layer(&block, &config),
    )?;
    let Some(layers) = parts.layers.into_iter().collect::<Option<Vec<_>>>() else {
        return Ok(None);
    };
    config.tie_word_embeddings = parts.tied;
    let inv_freq = inverse_frequencies(&config, &Device::Cpu)?.to_vec1::<f32>()?;
    let decoder_parts = DecoderParts {
        config: &config,
        rope_layout: layout,
        inv_freq,
        embedding_table: parts.embed,
        final_norm: &parts.final_norm,
        lm_head: &parts.lm_head,
    };
    PackedDecoder::assemble(isa, decoder_parts, layers)
}

/// Loads `config.json` and `*.safetensors` (single file or sharded with an index), with
/// dense weights of `dtype` (for training and exact comparisons).
pub fn load_hf_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Llama> {
    load_safetensors(dir, device, dtype, false)
}

/// [`load_hf_dir`], with the projection matrices quantized to Q8_0 when `quantize`.
fn load_safetensors(dir: &Path, device: &Device, dtype: DType, quantize: bool) -> Result<Llama> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read `{}`", config_path.display()))?;
    let config = ModelConfig::from_hf_json(&text)
        .with_context(|| format!("in `{}`", config_path.display()))?;
    let files = safetensors_files(dir)?;
    // SAFETY: the files are mapped read-only; seqit never writes them while loaded.
    let tensors = unsafe { MmapedSafetensors::multi(&files) }
        .with_context(|| format!("cannot read the safetensors files in `{}`", dir.display()))?;
    let mut source = SafetensorsSource {
        tensors,
        dir: dir.to_path_buf(),
        device: device.clone(),
        dtype,
        quantize,
    };
    build_llama(config, RopeLayout::HalfSplit, &mut source)
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not valid JSON", index.display()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("`{}` has no `weight_map` object", index.display()))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    bail!(
        "`{}` has neither `model.safetensors` nor `model.safetensors.index.json`",
        dir.display()
    )
}

/// Where tensors come from, addressed by their Hugging Face names.
trait TensorSource {
    fn describe(&self) -> String;
    fn contains(&self, name: &str) -> bool;
    fn dense(&mut self, name: &str) -> Result<Tensor>;
    fn linear_weight(&mut self, name: &str) -> Result<LinearWeight>;
}

struct GgufSource<'a> {
    file: &'a mut GgufFile,
    device: Device,
    options: LoadOptions,
    stored_layout: RopeLayout,
    config: ModelConfig,
}

impl GgufSource<'_> {
    fn gguf_name(&self, name: &str) -> Result<String> {
        gguf_tensor_name(name).with_context(|| format!("no GGUF name for tensor `{name}`"))
    }

    /// Heads of the Q or K projection named `name`, if it is one.
    fn rope_heads(&self, name: &str) -> Option<usize> {
        if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
            Some(self.config.num_attention_heads)
        } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
            Some(self.config.num_key_value_heads)
        } else {
            None
        }
    }
}

impl TensorSource for GgufSource<'_> {
    fn describe(&self) -> String {
        format!("`{}`", self.file.path().display())
    }

    fn contains(&self, name: &str) -> bool {
        gguf_tensor_name(name).is_some_and(|g| self.file.has_tensor(&g))
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        let gguf_name = self.gguf_name(name)?;
        let q = self.file.tensor(&gguf_name, &self.device)?;
        let mut t = q.dequantize(&self.device)?;
        if self.options.dequantize() && self.stored_layout == RopeLayout::Interleaved {
            if let Some(heads) = self.rope_heads(name) {
                t = match t.rank() {
                    1 => unpermute_interleaved_rope(&t.unsqueeze(1)?, heads)?.squeeze(1)?,
                    _ => unpermute_interleaved_rope(&t, heads)?,
                };
            }
        }
        Ok(t.to_dtype(self.options.dtype)?)
    }

    fn linear_weight(&mut self, name: &str) -> Result<LinearWeight> {
        if self.options.dequantize() {
            return Ok(LinearWeight::Dense(self.dense(name)?));
        }
        let gguf_name = self.gguf_name(name)?;
        let mut q = self.file.tensor(&gguf_name, &self.device)?;
        // The packed kernels multiply Q4_0, Q4_1 and Q8_0 blocks as stored; candle's fast paths
        // need Q8_0 (or a K-quant).
        let packed = self.device.is_cpu() && crate::packed::multiplies_as_stored(q.dtype());
        if self.options.weights == WeightStorage::Fast && needs_requantization(q.dtype()) && !packed
        {
            q = QTensor::quantize(&q.dequantize(&self.device)?, GgmlDType::Q8_0)?;
        }
        Ok(LinearWeight::Quantized(Arc::new(q)))
    }
}

struct SafetensorsSource {
    tensors: MmapedSafetensors,
    dir: PathBuf,
    device: Device,
    dtype: DType,
    /// Hold projection matrices as Q8_0 blocks (rows whose length is a whole number of
    /// blocks; others stay dense).
    quantize: bool,
}

impl TensorSource for SafetensorsSource {
    fn describe(&self) -> String {
        format!("`{}`", self.dir.display())
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.get(name).is_ok()
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        if !self.contains(name) {
            bail!("{} has no tensor `{name}`", self.describe());
        }
        let t = self
            .tensors
            .load(name, &self.device)
            .with_context(|| format!("reading tensor `{name}` from {}", self.describe()))?;
        Ok(t.to_dtype(self.dtype)?)
    }

    fn linear_weight(&mut self, name: &str) -> Result<LinearWeight> {
        let dense = self.dense(name)?;
        let whole_blocks = dense
            .dims()
            .last()
            .is_some_and(|&n| n.is_multiple_of(GgmlDType::Q8_0.block_size()));
        if self.quantize && dense.rank() == 2 && whole_blocks {
            let q = QTensor::quantize(&dense, GgmlDType::Q8_0)?;
            return Ok(LinearWeight::Quantized(Arc::new(q)));
        }
        Ok(LinearWeight::Dense(dense))
    }
}

/// Block types whose dot products candle only implements in scalar code on x86.
fn needs_requantization(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q5_1
            | GgmlDType::Q2K
            | GgmlDType::Q3K
            | GgmlDType::Q5K
    )
}

fn weight_shape(w: &LinearWeight) -> Vec<usize> {
    match w {
        LinearWeight::Dense(t) => t.dims().to_vec(),
        LinearWeight::Quantized(q) => q.shape().dims().to_vec(),
    }
}

fn build_llama(
    config: ModelConfig,
    layout: RopeLayout,
    src: &mut dyn TensorSource,
) -> Result<Llama> {
    let parts = read_model(&config, src, |_, _| true, Ok)?;
    let mut config = config;
    config.tie_word_embeddings = parts.tied;
    Llama::new(
        config,
        layout,
        Embedding(parts.embed.expect("asked for")),
        parts.layers,
        parts.final_norm,
        parts.lm_head,
    )
}

/// A model's tensors as [`read_model`] hands them over, each layer turned into `L`.
struct ModelParts<L> {
    /// The embedding table, unless the caller declined it.
    embed: Option<Tensor>,
    layers: Vec<L>,
    final_norm: RmsNorm,
    lm_head: Linear,
    /// The LM head is the embedding matrix.
    tied: bool,
}

/// Reads every tensor of a model, checking each one's presence and shape against the
/// configuration. Each layer goes through `per_layer` as soon as it is read (so a caller
/// can repack it and let candle's copy go); the LM head is read before the embedding
/// table, which is read only when `want_table(&lm_head, tied)`.
fn read_model<L>(
    config: &ModelConfig,
    src: &mut dyn TensorSource,
    want_table: impl FnOnce(&Linear, bool) -> bool,
    mut per_layer: impl FnMut(Block) -> Result<L>,
) -> Result<ModelParts<L>> {
    let c = config;
    let (hidden, inter) = (c.hidden_size, c.intermediate_size);
    let q_out = c.num_attention_heads * c.head_dim;
    let kv_out = c.num_key_value_heads * c.head_dim;

    let check = |name: &str, got: Vec<usize>, want: &[usize], src: &dyn TensorSource| {
        if got != want {
            bail!(
                "{}: tensor `{name}` has shape {got:?}, the configuration implies {want:?}",
                src.describe()
            );
        }
        Ok(())
    };
    let linear = |src: &mut dyn TensorSource,
                  name: &str,
                  out: usize,
                  inp: usize,
                  bias: bool|
     -> Result<Linear> {
        let w = src.linear_weight(&format!("{name}.weight"))?;
        check(
            &format!("{name}.weight"),
            weight_shape(&w),
            &[out, inp],
            src,
        )?;
        let b = if bias {
            let b = src.dense(&format!("{name}.bias"))?;
            if b.dims() != [out] {
                bail!(
                    "{}: tensor `{name}.bias` has shape {:?}, expected [{out}]",
                    src.describe(),
                    b.dims()
                );
            }
            Some(b)
        } else {
            None
        };
        Ok(Linear::new(w, b)?)
    };
    let norm = |src: &mut dyn TensorSource, name: &str| -> Result<RmsNorm> {
        let w = src.dense(name)?;
        if w.dims() != [hidden] {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected [{hidden}]",
                src.describe(),
                w.dims()
            );
        }
        Ok(RmsNorm::new(w, c.rms_norm_eps))
    };

    let bias = c.architecture.has_qkv_bias();
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        layers.push(per_layer(Block {
            input_layernorm: norm(src, &format!("{p}.input_layernorm.weight"))?,
            self_attn: Attention {
                q_proj: linear(src, &format!("{p}.self_attn.q_proj"), q_out, hidden, bias)?,
                k_proj: linear(src, &format!("{p}.self_attn.k_proj"), kv_out, hidden, bias)?,
                v_proj: linear(src, &format!("{p}.self_attn.v_proj"), kv_out, hidden, bias)?,
                o_proj: linear(src, &format!("{p}.self_attn.o_proj"), hidden, q_out, false)?,
            },
            post_attention_layernorm: norm(src, &format!("{p}.post_attention_layernorm.weight"))?,
            mlp: Mlp {
                gate_proj: linear(src, &format!("{p}.mlp.gate_proj"), inter, hidden, false)?,
                up_proj: linear(src, &format!("{p}.mlp.up_proj"), inter, hidden, false)?,
                down_proj: linear(src, &format!("{p}.mlp.down_proj"), hidden, inter, false)?,
            },
        })?);
    }
    let final_norm = norm(src, "model.norm.weight")?;
    let tied = !src.contains("lm_head.weight") || c.tie_word_embeddings;
    let read_table = |src: &mut dyn TensorSource| -> Result<Tensor> {
        let embed = src.dense("model.embed_tokens.weight")?;
        if embed.dims() != [c.vocab_size, hidden] {
            bail!(
                "{}: tensor `model.embed_tokens.weight` has shape {:?}, expected [{}, {hidden}]",
                src.describe(),
                embed.dims(),
                c.vocab_size
            );
        }
        Ok(embed)
    };
    let (lm_head, embed) = if !tied {
        let lm_head = linear(src, "lm_head", c.vocab_size, hidden, false)?;
        let embed = want_table(&lm_head, tied)
            .then(|| read_table(src))
            .transpose()?;
        (lm_head, embed)
    } else {
        // Tied: multiply by the embedding table, kept quantized when the file stores it so.
        match src.linear_weight("model.embed_tokens.weight")? {
            LinearWeight::Dense(_) => {
                let embed = read_table(src)?;
                (
                    Linear::new(LinearWeight::Dense(embed.clone()), None)?,
                    Some(embed),
                )
            }
            quantized => {
                check(
                    "model.embed_tokens.weight",
                    weight_shape(&quantized),
                    &[c.vocab_size, hidden],
                    src,
                )?;
                let lm_head = Linear::new(quantized, None)?;
                let embed = want_table(&lm_head, tied)
                    .then(|| read_table(src))
                    .transpose()?;
                (lm_head, embed)
            }
        }
    };
    Ok(ModelParts {
        embed,
        layers,
        final_norm,
        lm_head,
        tied,
    })
}
