//! Building a [`Llama`] from a GGUF file or a Hugging Face directory, with every tensor's
//! presence and shape checked against the configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::arch::{ArchSpec, LayerModule, Module, Param};
use crate::config::{ModelConfig, RopeLayout};
use crate::decoder::{DecoderParts, PackedDecoder};
use crate::gguf::{unpermute_interleaved_rope, GgufFile};
use crate::linear::{Linear, LinearWeight};
use crate::llama::{inverse_frequencies, Block, Embedding, Llama, RmsNorm};
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
    /// How matrices are held: as stored, fast (re-quantized) or dense.
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
    /// The decoder with its weights, held as the [`LoadOptions`] asked.
    pub llama: Llama,
    /// The `.gguf` file or Hugging Face directory it was loaded from.
    pub path: PathBuf,
    /// The open GGUF file (its metadata holds the tokenizer); `None` for a Hugging Face
    /// directory.
    pub gguf: Option<GgufFile>,
}

/// Loads a `.gguf` file or a Hugging Face model directory.
pub fn load_model(path: &Path, device: &Device, options: LoadOptions) -> Result<LoadedModel> {
    if path.is_dir() {
        let quantize = options.weights == WeightStorage::Fast
            && device.is_cpu()
            && options.dtype == DType::F32;
        let llama = load_safetensors(path, None, device, options.dtype, quantize)?;
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

/// Loads a GGUF file, as its `general.architecture`'s spec reads it.
pub fn load_gguf(file: &mut GgufFile, device: &Device, options: LoadOptions) -> Result<Llama> {
    let arch = file.arch_spec()?;
    let config = arch.config_from_gguf(file)?;
    let stored_layout = arch.gguf_rope_layout;
    let layout = if options.dequantize() {
        RopeLayout::HalfSplit
    } else {
        stored_layout
    };
    let mut source = GgufSource {
        file,
        arch,
        device: device.clone(),
        options,
        stored_layout,
        config: config.clone(),
    };
    build_llama(arch, config, layout, &mut source)
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
    let arch = file.arch_spec()?;
    let mut config = arch.config_from_gguf(file)?;
    let layout = arch.gguf_rope_layout;
    let mut source = GgufSource {
        file,
        arch,
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
        ModelReader::new(arch, &config, &mut source),
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
    load_safetensors(dir, None, device, dtype, false)
}

/// [`load_hf_dir`] for an architecture given rather than named by `config.json` (one
/// that is not in the [registry](crate::arch::REGISTRY)).
pub fn load_hf_dir_as(
    dir: &Path,
    arch: &'static ArchSpec,
    device: &Device,
    dtype: DType,
) -> Result<Llama> {
    load_safetensors(dir, Some(arch), device, dtype, false)
}

/// [`load_hf_dir_as`], with the architecture `config.json` names when `arch` is `None`
/// and the projection matrices quantized to Q8_0 when `quantize`.
fn load_safetensors(
    dir: &Path,
    arch: Option<&'static ArchSpec>,
    device: &Device,
    dtype: DType,
    quantize: bool,
) -> Result<Llama> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read `{}`", config_path.display()))?;
    let (arch, config) =
        read_hf_config(&text, arch).with_context(|| format!("in `{}`", config_path.display()))?;
    let files = safetensors_files(dir)?;
    // SAFETY: the files are mapped read-only; seqit never writes them while loaded.
    let tensors = unsafe { MmapedSafetensors::multi(&files) }
        .with_context(|| format!("cannot read the safetensors files in `{}`", dir.display()))?;
    let mut source = SafetensorsSource {
        tensors,
        arch,
        dir: dir.to_path_buf(),
        device: device.clone(),
        dtype,
        quantize,
    };
    build_llama(arch, config, RopeLayout::HalfSplit, &mut source)
}

/// The architecture (`arch`, or the one `config.json` names) and the configuration.
fn read_hf_config(
    text: &str,
    arch: Option<&'static ArchSpec>,
) -> Result<(&'static ArchSpec, ModelConfig)> {
    let json: serde_json::Value = serde_json::from_str(text).context("config.json is not valid")?;
    let arch = match arch {
        Some(arch) => arch,
        None => crate::arch::for_hf_config(&json)?,
    };
    Ok((arch, arch.config_from_hf(&json)?))
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

/// Where tensors come from, addressed by module; each source spells the names as its
/// format does.
pub(crate) trait TensorSource {
    fn describe(&self) -> String;
    /// Whether the source holds `module`'s weight.
    fn contains(&self, module: Module) -> bool;
    fn dense(&mut self, module: Module, param: Param) -> Result<Tensor>;
    /// `module`'s weight, as the source holds it for matrix products.
    fn linear_weight(&mut self, module: Module) -> Result<LinearWeight>;
}

struct GgufSource<'a> {
    file: &'a mut GgufFile,
    arch: &'static ArchSpec,
    device: Device,
    options: LoadOptions,
    stored_layout: RopeLayout,
    config: ModelConfig,
}

impl GgufSource<'_> {
    fn read(&mut self, module: Module, param: Param) -> Result<QTensor> {
        let name = self.arch.gguf_names.tensor(module, param);
        self.file.tensor(&name, &self.device)
    }

    /// Heads of `module` if its values are laid out per RoPE head: the Q or K projection,
    /// or a per-head norm (one head's scales).
    fn rope_heads(&self, module: Module) -> Option<usize> {
        match module {
            Module::Layer(_, LayerModule::Q) => Some(self.config.num_attention_heads),
            Module::Layer(_, LayerModule::K) => Some(self.config.num_key_value_heads),
            Module::Layer(_, LayerModule::QNorm | LayerModule::KNorm) => Some(1),
            _ => None,
        }
    }
}

impl TensorSource for GgufSource<'_> {
    fn describe(&self) -> String {
        format!("`{}`", self.file.path().display())
    }

    fn contains(&self, module: Module) -> bool {
        let name = self.arch.gguf_names.tensor(module, Param::Weight);
        self.file.has_tensor(&name)
    }

    fn dense(&mut self, module: Module, param: Param) -> Result<Tensor> {
        let q = self.read(module, param)?;
        let mut t = q.dequantize(&self.device)?;
        if self.options.dequantize() && self.stored_layout == RopeLayout::Interleaved {
            if let Some(heads) = self.rope_heads(module) {
                t = match t.rank() {
                    1 => unpermute_interleaved_rope(&t.unsqueeze(1)?, heads)?.squeeze(1)?,
                    _ => unpermute_interleaved_rope(&t, heads)?,
                };
            }
        }
        Ok(t.to_dtype(self.options.dtype)?)
    }

    fn linear_weight(&mut self, module: Module) -> Result<LinearWeight> {
        if self.options.dequantize() {
            return Ok(LinearWeight::Dense(self.dense(module, Param::Weight)?));
        }
        let mut q = self.read(module, Param::Weight)?;
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
    arch: &'static ArchSpec,
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

    fn contains(&self, module: Module) -> bool {
        let name = self.arch.hf_names.tensor(module, Param::Weight);
        self.tensors.get(&name).is_ok()
    }

    fn dense(&mut self, module: Module, param: Param) -> Result<Tensor> {
        let name = self.arch.hf_names.tensor(module, param);
        if self.tensors.get(&name).is_err() {
            bail!("{} has no tensor `{name}`", self.describe());
        }
        let t = self
            .tensors
            .load(&name, &self.device)
            .with_context(|| format!("reading tensor `{name}` from {}", self.describe()))?;
        Ok(t.to_dtype(self.dtype)?)
    }

    fn linear_weight(&mut self, module: Module) -> Result<LinearWeight> {
        let dense = self.dense(module, Param::Weight)?;
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
    arch: &'static ArchSpec,
    config: ModelConfig,
    layout: RopeLayout,
    src: &mut dyn TensorSource,
) -> Result<Llama> {
    let parts = read_model(ModelReader::new(arch, &config, src), |_, _| true, Ok)?;
    let mut config = config;
    config.tie_word_embeddings = parts.tied;
    Llama::new(
        arch,
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

/// Reads modules from a [`TensorSource`], checking each tensor's presence and shape
/// against the configuration; messages name tensors as Hugging Face checkpoints of the
/// architecture do.
pub(crate) struct ModelReader<'a> {
    pub(crate) arch: &'static ArchSpec,
    pub(crate) config: &'a ModelConfig,
    src: &'a mut dyn TensorSource,
}

impl<'a> ModelReader<'a> {
    fn new(
        arch: &'static ArchSpec,
        config: &'a ModelConfig,
        src: &'a mut dyn TensorSource,
    ) -> Self {
        Self { arch, config, src }
    }

    fn name(&self, module: Module, param: Param) -> String {
        self.arch.hf_names.tensor(module, param)
    }

    /// Fails unless `got == want`; `implies` words the message for shapes the
    /// configuration implies rather than states.
    fn check(
        &self,
        module: Module,
        param: Param,
        got: &[usize],
        want: &[usize],
        implied: bool,
    ) -> Result<()> {
        if got != want {
            let expected = if implied {
                "the configuration implies"
            } else {
                "expected"
            };
            bail!(
                "{}: tensor `{}` has shape {got:?}, {expected} {want:?}",
                self.src.describe(),
                self.name(module, param)
            );
        }
        Ok(())
    }

    /// The `[out, inp]` projection `module`, with a `[out]` bias when `bias`.
    pub(crate) fn linear(
        &mut self,
        module: Module,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Linear> {
        let w = self.src.linear_weight(module)?;
        self.check(module, Param::Weight, &weight_shape(&w), &[out, inp], true)?;
        let b = if bias {
            let b = self.src.dense(module, Param::Bias)?;
            self.check(module, Param::Bias, b.dims(), &[out], false)?;
            Some(b)
        } else {
            None
        };
        Ok(Linear::new(w, b)?)
    }

    /// The RMSNorm `module` over `width` values (the hidden size, or the head size of a
    /// per-head norm).
    pub(crate) fn norm(&mut self, module: Module, width: usize) -> Result<RmsNorm> {
        let w = self.src.dense(module, Param::Weight)?;
        self.check(module, Param::Weight, w.dims(), &[width], false)?;
        Ok(RmsNorm::new(w, self.config.rms_norm_eps))
    }

    /// The `[vocab, hidden]` embedding table, dense.
    fn embedding_table(&mut self) -> Result<Tensor> {
        let embed = self.src.dense(Module::Embedding, Param::Weight)?;
        let want = [self.config.vocab_size, self.config.hidden_size];
        self.check(Module::Embedding, Param::Weight, embed.dims(), &want, false)?;
        Ok(embed)
    }
}

/// Reads every tensor of a model. Each layer goes through `per_layer` as soon as it is
/// read (so a caller can repack it and let candle's copy go); the LM head is read before
/// the embedding table, which is read only when `want_table(&lm_head, tied)`.
fn read_model<L>(
    mut reader: ModelReader<'_>,
    want_table: impl FnOnce(&Linear, bool) -> bool,
    mut per_layer: impl FnMut(Block) -> Result<L>,
) -> Result<ModelParts<L>> {
    let c = reader.config;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        layers.push(per_layer(Block::load(&mut reader, i)?)?);
    }
    let final_norm = reader.norm(Module::FinalNorm, c.hidden_size)?;
    let tied = !reader.src.contains(Module::LmHead) || c.tie_word_embeddings;
    let (lm_head, embed) = if !tied {
        let lm_head = reader.linear(Module::LmHead, c.vocab_size, c.hidden_size, false)?;
        let embed = want_table(&lm_head, tied)
            .then(|| reader.embedding_table())
            .transpose()?;
        (lm_head, embed)
    } else {
        // Tied: multiply by the embedding table, kept quantized when the file stores it so.
        match reader.src.linear_weight(Module::Embedding)? {
            LinearWeight::Dense(_) => {
                let embed = reader.embedding_table()?;
                (
                    Linear::new(LinearWeight::Dense(embed.clone()), None)?,
                    Some(embed),
                )
            }
            quantized => {
                let want = [c.vocab_size, c.hidden_size];
                let got = weight_shape(&quantized);
                reader.check(Module::Embedding, Param::Weight, &got, &want, true)?;
                let lm_head = Linear::new(quantized, None)?;
                let embed = want_table(&lm_head, tied)
                    .then(|| reader.embedding_table())
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
