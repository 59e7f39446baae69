//! The Llama family: Llama 2/3 (and SmolLM2, a Llama), Mistral, Qwen2 and Qwen3. They
//! share tensor names and configuration keys; Qwen2 has biases on the q/k/v projections,
//! Qwen3 an RMSNorm on each query and key head; both keep Hugging Face's RoPE layout in
//! GGUF files, where llama.cpp permutes the Q/K rows of Llama and Mistral models.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use serde::Deserialize;

use super::{ArchSpec, TensorNames};
use crate::config::{Architecture, Llama3RopeScaling, ModelConfig, RopeLayout};
use crate::gguf::GgufFile;

/// Llama 2/3 and SmolLM2.
pub const LLAMA: ArchSpec = ArchSpec {
    architecture: Architecture::Llama,
    name: "Llama",
    hf_class: "LlamaForCausalLM",
    model_type: "llama",
    qkv_bias: false,
    qk_norm: false,
    gguf_rope_layout: RopeLayout::Interleaved,
    hf_names: TensorNames {
        embedding: "model.embed_tokens",
        final_norm: "model.norm",
        lm_head: "lm_head",
        layer_prefix: "model.layers.",
        layer: [
            "input_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "post_attention_layernorm",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "self_attn.q_norm",
            "self_attn.k_norm",
        ],
    },
    gguf_names: TensorNames {
        embedding: "token_embd",
        final_norm: "output_norm",
        lm_head: "output",
        layer_prefix: "blk.",
        layer: [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
            "attn_q_norm",
            "attn_k_norm",
        ],
    },
    parse_hf_config: config_from_hf,
    write_hf_config: config_to_hf,
    parse_gguf_config: config_from_gguf,
};

/// Mistral: a Llama under another name.
pub const MISTRAL: ArchSpec = ArchSpec {
    architecture: Architecture::Mistral,
    name: "Mistral",
    hf_class: "MistralForCausalLM",
    model_type: "mistral",
    ..LLAMA
};

/// Qwen2: q/k/v biases, and Hugging Face's RoPE layout in GGUF files too.
pub const QWEN2: ArchSpec = ArchSpec {
    architecture: Architecture::Qwen2,
    name: "Qwen2",
    hf_class: "Qwen2ForCausalLM",
    model_type: "qwen2",
    qkv_bias: true,
    gguf_rope_layout: RopeLayout::HalfSplit,
    ..LLAMA
};

/// Qwen3: no biases, an RMSNorm on each query and key head before RoPE, and Hugging
/// Face's RoPE layout in GGUF files.
pub const QWEN3: ArchSpec = ArchSpec {
    architecture: Architecture::Qwen3,
    name: "Qwen3",
    hf_class: "Qwen3ForCausalLM",
    model_type: "qwen3",
    qk_norm: true,
    gguf_rope_layout: RopeLayout::HalfSplit,
    ..LLAMA
};

/// `config.json` as Hugging Face writes it; only the fields seqit uses.
#[derive(Debug, Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    /// transformers 5 moved `rope_theta` here.
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: Option<bool>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
fn default_max_positions() -> usize {
    2048
}

fn config_from_hf(spec: &ArchSpec, json: &serde_json::Value) -> Result<ModelConfig> {
    let raw: HfConfig = serde_json::from_value(json.clone()).context("config.json is not valid")?;
    if let Some(act) = &raw.hidden_act {
        if act != "silu" {
            bail!("unsupported `hidden_act` `{act}`: expected `silu`");
        }
    }
    // Biases the spec does not expect would be left unread: refuse rather than run a
    // different model.
    if raw.attention_bias == Some(true) && !spec.qkv_bias {
        bail!(
            "unsupported `attention_bias: true`: {} models have no attention biases",
            spec.name
        );
    }
    let rope_scaling = match &raw.rope_scaling {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            let kind = v
                .get("rope_type")
                .or_else(|| v.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or("");
            if kind != "llama3" {
                bail!("unsupported `rope_scaling` type `{kind}`: only `llama3` is implemented");
            }
            Some(serde_json::from_value::<Llama3RopeScaling>(v.clone()).context("`rope_scaling`")?)
        }
    };
    let eos_token_ids = match raw.eos_token_id {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|id| id as u32))
            .collect(),
        Some(v) => v.as_u64().map(|id| vec![id as u32]).unwrap_or_default(),
    };
    let cfg = ModelConfig {
        architecture: spec.architecture,
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: raw.num_attention_heads,
        num_key_value_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
        head_dim: raw
            .head_dim
            .unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1)),
        rms_norm_eps: raw.rms_norm_eps,
        rope_theta: raw
            .rope_theta
            .or_else(|| {
                raw.rope_parameters
                    .as_ref()
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|t| t.as_f64())
            })
            .unwrap_or(DEFAULT_ROPE_THETA),
        rope_scaling,
        max_position_embeddings: raw.max_position_embeddings,
        tie_word_embeddings: raw.tie_word_embeddings,
        bos_token_id: raw.bos_token_id,
        eos_token_ids,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn config_to_hf(spec: &ArchSpec, c: &ModelConfig, torch_dtype: &str) -> serde_json::Value {
    let mut json = serde_json::json!({
        "architectures": [spec.hf_class],
        "model_type": spec.model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": spec.qkv_bias,
        "mlp_bias": false,
        "torch_dtype": torch_dtype,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": match c.eos_token_ids.as_slice() {
            [single] => serde_json::json!(single),
            many => serde_json::json!(many),
        },
    });
    if let Some(s) = &c.rope_scaling {
        json["rope_scaling"] = serde_json::json!({
            "rope_type": "llama3",
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        });
    }
    json
}

/// Reads llama.cpp's `<model_type>.*` keys.
fn config_from_gguf(spec: &ArchSpec, file: &GgufFile) -> Result<ModelConfig> {
    let arch = spec.model_type;
    let path = file.path().display();
    let need = |key: &str| -> Result<u64> {
        let full = format!("{arch}.{key}");
        file.uint(&full)
            .with_context(|| format!("`{path}` lacks metadata `{full}`"))
    };
    let hidden_size = need("embedding_length")? as usize;
    let num_attention_heads = need("attention.head_count")? as usize;
    let head_dim = file
        .uint(&format!("{arch}.attention.key_length"))
        .map(|v| v as usize)
        .unwrap_or(hidden_size / num_attention_heads.max(1));
    let vocab_size = match file.uint(&format!("{arch}.vocab_size")) {
        Some(v) => v as usize,
        None => match file.metadata().get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => bail!("`{path}` has neither `{arch}.vocab_size` nor a token list"),
        },
    };
    let eos = file.uint("tokenizer.ggml.eos_token_id").map(|v| v as u32);
    let cfg = ModelConfig {
        architecture: spec.architecture,
        vocab_size,
        hidden_size,
        intermediate_size: need("feed_forward_length")? as usize,
        num_hidden_layers: need("block_count")? as usize,
        num_attention_heads,
        num_key_value_heads: file
            .uint(&format!("{arch}.attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(num_attention_heads),
        head_dim,
        rms_norm_eps: file
            .float(&format!("{arch}.attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-5),
        rope_theta: file
            .float(&format!("{arch}.rope.freq_base"))
            .unwrap_or(10_000.0),
        rope_scaling: None,
        max_position_embeddings: file
            .uint(&format!("{arch}.context_length"))
            .map(|v| v as usize)
            .unwrap_or(2048),
        tie_word_embeddings: !file.has_tensor(
            &spec
                .gguf_names
                .tensor(super::Module::LmHead, super::Param::Weight),
        ),
        bos_token_id: file.uint("tokenizer.ggml.bos_token_id").map(|v| v as u32),
        eos_token_ids: eos.into_iter().collect(),
    };
    cfg.validate()
        .with_context(|| format!("`{path}` has an inconsistent configuration"))?;
    Ok(cfg)
}
