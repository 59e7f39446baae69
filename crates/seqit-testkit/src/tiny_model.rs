//! A tiny Llama with seeded random weights, written both as a Hugging Face directory and
//! as GGUF files the way llama.cpp lays them out (Q/K rows permuted for interleaved RoPE,
//! llama.cpp tensor names, tokenizer in the metadata).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seqit_model::gguf::{gguf_tensor_name, permute_for_interleaved_rope};
use seqit_model::{Architecture, ModelConfig, RopeLayout};

const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// A few merges so the tokenizer is a real BPE, not only bytes.
const MERGES: [(&str, &str); 6] = [
    ("t", "h"),
    ("th", "e"),
    ("Ġ", "t"),
    ("i", "n"),
    ("a", "n"),
    ("Ġ", "the"),
];

/// Shape of the tiny model.
#[derive(Debug, Clone)]
pub struct TinyModelSpec {
    /// Decoder family (Llama by default; Qwen2 adds Q/K/V biases, Qwen3 per-head Q/K
    /// norms).
    pub architecture: Architecture,
    /// Width of the residual stream (64 by default); a multiple of `num_attention_heads`.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer (128 by default).
    pub intermediate_size: usize,
    /// Decoder blocks (2 by default).
    pub num_hidden_layers: usize,
    /// Query heads (4 by default).
    pub num_attention_heads: usize,
    /// Size of one head: `hidden_size / num_attention_heads` unless set (Qwen3's heads
    /// are wider than that).
    pub head_dim: Option<usize>,
    /// Key/value heads (2 by default: grouped-query attention); divides
    /// `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Whether the output projection reuses the embedding matrix (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// Context window (judge prompts need more than the default).
    pub max_position_embeddings: usize,
    /// Seed of the random weights: the same spec always gives the same model.
    pub seed: u64,
}

impl Default for TinyModelSpec {
    fn default() -> Self {
        Self {
            architecture: Architecture::Llama,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            head_dim: None,
            num_key_value_heads: 2,
            tie_word_embeddings: false,
            max_position_embeddings: 512,
            seed: 7,
        }
    }
}

impl TinyModelSpec {
    /// A tiny Qwen3: per-head query and key norms, and heads twice as wide as
    /// `hidden_size / num_attention_heads` (as Qwen3's 128-wide heads are).
    pub fn qwen3() -> Self {
        Self {
            architecture: Architecture::Qwen3,
            head_dim: Some(32),
            ..Self::default()
        }
    }
}

/// A generated model: its configuration, tokens and weights (Hugging Face names and layout).
pub struct TinyModel {
    /// The model's configuration: vocabulary from `tokens`, `<|im_end|>` as its EOS token.
    pub config: ModelConfig,
    /// The vocabulary, by id: the 256 byte-level tokens, one per merge, then
    /// `<|endoftext|>`, `<|im_start|>` and `<|im_end|>`.
    pub tokens: Vec<String>,
    /// The BPE merges, as `"a b"` lines.
    pub merges: Vec<String>,
    /// Every tensor as (Hugging Face name, f32 tensor on the CPU).
    pub weights: Vec<(String, Tensor)>,
}

impl TinyModel {
    /// Generates the model of `spec` with seeded random weights. Fails if the spec's shape
    /// is not a valid configuration.
    pub fn new(spec: &TinyModelSpec) -> Result<Self> {
        let tokens = byte_level_vocab();
        let vocab_size = tokens.len();
        let head_dim = spec
            .head_dim
            .unwrap_or(spec.hidden_size / spec.num_attention_heads);
        let im_end = tokens
            .iter()
            .position(|t| t == "<|im_end|>")
            .expect("special token") as u32;
        let config = ModelConfig {
            architecture: spec.architecture,
            vocab_size,
            hidden_size: spec.hidden_size,
            intermediate_size: spec.intermediate_size,
            num_hidden_layers: spec.num_hidden_layers,
            num_attention_heads: spec.num_attention_heads,
            num_key_value_heads: spec.num_key_value_heads,
            head_dim,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            max_position_embeddings: spec.max_position_embeddings,
            tie_word_embeddings: spec.tie_word_embeddings,
            bos_token_id: None,
            eos_token_ids: vec![im_end],
        };
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let dev = Device::Cpu;
        let mut random = |shape: &[usize], scale: f32| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
                .collect();
            Ok(Tensor::from_vec(data, shape, &dev)?)
        };
        let (h, i) = (spec.hidden_size, spec.intermediate_size);
        let q_out = spec.num_attention_heads * head_dim;
        let kv_out = spec.num_key_value_heads * head_dim;
        let mut weights = vec![(
            "model.embed_tokens.weight".to_string(),
            random(&[vocab_size, h], 1.0)?,
        )];
        let proj = 1.0 / (h as f32).sqrt();
        for l in 0..spec.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut norm = |name: &str| -> Result<(String, Tensor)> {
                Ok((format!("{p}.{name}.weight"), (random(&[h], 0.2)? + 1.0)?))
            };
            weights.push(norm("input_layernorm")?);
            weights.push(norm("post_attention_layernorm")?);
            if spec.architecture.has_qk_norm() {
                for name in ["self_attn.q_norm", "self_attn.k_norm"] {
                    let scale = (random(&[head_dim], 0.2)? + 1.0)?;
                    weights.push((format!("{p}.{name}.weight"), scale));
                }
            }
            for (name, out, inp) in [
                ("self_attn.q_proj", q_out, h),
                ("self_attn.k_proj", kv_out, h),
                ("self_attn.v_proj", kv_out, h),
                ("self_attn.o_proj", h, q_out),
                ("mlp.gate_proj", i, h),
                ("mlp.up_proj", i, h),
                ("mlp.down_proj", h, i),
            ] {
                weights.push((format!("{p}.{name}.weight"), random(&[out, inp], proj)?));
                if spec.architecture.has_qkv_bias()
                    && matches!(
                        name,
                        "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj"
                    )
                {
                    weights.push((format!("{p}.{name}.bias"), random(&[out], 0.1)?));
                }
            }
        }
        weights.push(("model.norm.weight".to_string(), (random(&[h], 0.2)? + 1.0)?));
        if !spec.tie_word_embeddings {
            weights.push((
                "lm_head.weight".to_string(),
                random(&[vocab_size, h], proj)?,
            ));
        }
        let merges = MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
        Ok(Self {
            config,
            tokens,
            merges,
            weights,
        })
    }

    /// Writes `config.json`, `model.safetensors`, `tokenizer.json` and
    /// `tokenizer_config.json` (with the chat template) into `dir`.
    pub fn write_hf_dir(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let map: HashMap<String, Tensor> = self.weights.iter().cloned().collect();
        candle_core::safetensors::save(&map, dir.join("model.safetensors"))?;
        std::fs::write(
            dir.join("config.json"),
            self.config.to_hf_json("float32").to_string(),
        )?;
        // The tokenizer document is the one seqit rebuilds from GGUF metadata: write a
        // throwaway GGUF and let the engine derive it.
        let scratch = dir.join("tokenizer.scratch.gguf");
        self.write_gguf(&scratch, GgmlDType::F32)?;
        let file = seqit_model::gguf::GgufFile::open(&scratch)?;
        let tokenizer = seqit_engine::Tokenizer::from_gguf(&file)?;
        drop(file);
        std::fs::remove_file(&scratch)?;
        std::fs::write(dir.join("tokenizer.json"), tokenizer.to_json().to_string())?;
        let tokenizer_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<|im_end|>",
            "bos_token": null,
            "add_bos_token": false,
            "chat_template": CHATML_TEMPLATE,
        });
        std::fs::write(
            dir.join("tokenizer_config.json"),
            tokenizer_config.to_string(),
        )?;
        Ok(dir.to_path_buf())
    }

    /// Writes a GGUF file with matrices stored as `dtype` (norms stay F32), Q/K rows
    /// permuted as llama.cpp's converter does for Llama-architecture models (Mistral's
    /// converted files say `llama` too).
    pub fn write_gguf(&self, path: &Path, dtype: GgmlDType) -> Result<PathBuf> {
        let spec = self.config.architecture.spec();
        let arch = match self.config.architecture {
            Architecture::Mistral => "llama",
            _ => spec.model_type,
        };
        let permute = spec.gguf_rope_layout == RopeLayout::Interleaved;
        let c = &self.config;
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        for (name, t) in &self.weights {
            let mut t = t.clone();
            if permute {
                let heads = if name.contains("q_proj") {
                    Some(c.num_attention_heads)
                } else if name.contains("k_proj") {
                    Some(c.num_key_value_heads)
                } else {
                    None
                };
                if let Some(heads) = heads {
                    t = match t.rank() {
                        1 => permute_for_interleaved_rope(&t.unsqueeze(1)?, heads)?.squeeze(1)?,
                        _ => permute_for_interleaved_rope(&t, heads)?,
                    };
                }
            }
            let stored = if t.rank() == 2 { dtype } else { GgmlDType::F32 };
            let q = QTensor::quantize(&t.to_dtype(DType::F32)?, stored)?;
            let gguf_name =
                gguf_tensor_name(name).with_context(|| format!("no GGUF name for {name}"))?;
            tensors.push((gguf_name, q));
        }
        let u32v = |v: usize| Value::U32(v as u32);
        let token_types: Vec<Value> = self
            .tokens
            .iter()
            .map(|t| {
                Value::I32(if SPECIAL_TOKENS.contains(&t.as_str()) {
                    3
                } else {
                    1
                })
            })
            .collect();
        let metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            ("general.name".into(), Value::String("tiny-random".into())),
            (
                format!("{arch}.context_length"),
                u32v(c.max_position_embeddings),
            ),
            (format!("{arch}.embedding_length"), u32v(c.hidden_size)),
            (
                format!("{arch}.feed_forward_length"),
                u32v(c.intermediate_size),
            ),
            (format!("{arch}.block_count"), u32v(c.num_hidden_layers)),
            (
                format!("{arch}.attention.head_count"),
                u32v(c.num_attention_heads),
            ),
            (
                format!("{arch}.attention.head_count_kv"),
                u32v(c.num_key_value_heads),
            ),
            (
                format!("{arch}.attention.layer_norm_rms_epsilon"),
                Value::F32(c.rms_norm_eps as f32),
            ),
            (
                format!("{arch}.rope.freq_base"),
                Value::F32(c.rope_theta as f32),
            ),
            (format!("{arch}.vocab_size"), u32v(c.vocab_size)),
            (format!("{arch}.attention.key_length"), u32v(c.head_dim)),
            (format!("{arch}.attention.value_length"), u32v(c.head_dim)),
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String("gpt2".into())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(
                    self.tokens
                        .iter()
                        .map(|t| Value::String(t.clone()))
                        .collect(),
                ),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(token_types),
            ),
            (
                "tokenizer.ggml.merges".into(),
                Value::Array(
                    self.merges
                        .iter()
                        .map(|m| Value::String(m.clone()))
                        .collect(),
                ),
            ),
            (
                "tokenizer.ggml.eos_token_id".into(),
                u32v(c.eos_token_ids[0] as usize),
            ),
            (
                "tokenizer.chat_template".into(),
                Value::String(CHATML_TEMPLATE.into()),
            ),
        ];
        let mut file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let metadata_refs: Vec<(&str, &Value)> =
            metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut file, &metadata_refs, &tensor_refs)?;
        Ok(path.to_path_buf())
    }
}

/// GPT-2's byte-to-character map: the 256 single-byte tokens of a byte-level BPE.
fn byte_level_vocab() -> Vec<String> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut pairs: Vec<(u32, u32)> = printable.into_iter().zip(chars).collect();
    pairs.sort();
    let mut tokens: Vec<String> = pairs
        .into_iter()
        .map(|(_, c)| char::from_u32(c).expect("valid char").to_string())
        .collect();
    for (a, b) in MERGES {
        tokens.push(format!("{a}{b}"));
    }
    tokens.extend(SPECIAL_TOKENS.iter().map(|s| s.to_string()));
    tokens
}

/// Rewrites the stored type id of tensor `gguf_name` in a GGUF file (to make files with
/// unknown quantization types for error tests).
pub fn set_tensor_type(path: &Path, gguf_name: &str, type_id: u32) -> Result<()> {
    let mut bytes = std::fs::read(path)?;
    let needle = gguf_name.as_bytes();
    let at = bytes
        .windows(needle.len() + 8)
        .position(|w| {
            w[8..] == *needle
                && u64::from_le_bytes(w[..8].try_into().unwrap()) == needle.len() as u64
        })
        .context("tensor name not found in the GGUF header")?;
    let mut pos = at + 8 + needle.len();
    let n_dims = u32::from_le_bytes(bytes[pos..pos + 4].try_into()?) as usize;
    pos += 4 + 8 * n_dims;
    bytes[pos..pos + 4].copy_from_slice(&type_id.to_le_bytes());
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Copies a GGUF file with one metadata value replaced (to make files that are valid
/// GGUF but describe something seqit must refuse).
pub fn rewrite_gguf_metadata(src: &Path, dst: &Path, key: &str, value: Value) -> Result<()> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(src)?);
    let content = gguf_file::Content::read(&mut reader)?;
    let mut metadata: Vec<(String, Value)> = content.metadata.clone().into_iter().collect();
    metadata.retain(|(k, _)| k != key);
    metadata.push((key.to_string(), value));
    let mut tensors = Vec::new();
    for name in content.tensor_infos.keys() {
        tensors.push((
            name.clone(),
            content.tensor(&mut reader, name, &Device::Cpu)?,
        ));
    }
    let metadata_refs: Vec<(&str, &Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(
        &mut std::fs::File::create(dst)?,
        &metadata_refs,
        &tensor_refs,
    )?;
    Ok(())
}

/// The default tiny model written as a Hugging Face directory at `dir`, returned.
pub fn tiny_hf_dir(dir: &Path) -> PathBuf {
    TinyModel::new(&TinyModelSpec::default())
        .and_then(|model| model.write_hf_dir(dir))
        .unwrap_or_else(|e| panic!("cannot write a tiny model to `{}`: {e:#}", dir.display()))
}

/// The default tiny model with a `context`-token window as a Q8_0 GGUF file at `path`
/// (quantized, so the packed decoder runs it, as `seqit serve` does), returned.
pub fn tiny_q8_gguf(path: &Path, context: usize) -> PathBuf {
    let spec = TinyModelSpec {
        max_position_embeddings: context,
        ..TinyModelSpec::default()
    };
    TinyModel::new(&spec)
        .and_then(|model| model.write_gguf(path, GgmlDType::Q8_0))
        .unwrap_or_else(|e| panic!("cannot write a tiny model to `{}`: {e:#}", path.display()))
}
