//! Architecture hyper-parameters, read from a Hugging Face `config.json` or from GGUF
//! metadata and checked once, so the model code can trust them.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::arch;

/// The architectures seqit's Llama implementation covers. What distinguishes them is
/// stated once, in each one's [`ArchSpec`](crate::arch::ArchSpec) ([`Architecture::spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// Meta's Llama (also SmolLM2 and other `LlamaForCausalLM` checkpoints).
    Llama,
    /// Mistral (`MistralForCausalLM`), the Llama layout under another name.
    Mistral,
    /// Qwen2 (`Qwen2ForCausalLM`): Llama with biases on the q/k/v projections.
    Qwen2,
    /// Qwen3 (`Qwen3ForCausalLM`): Llama with each query and key head RMS-normalized
    /// before RoPE.
    Qwen3,
}

impl Architecture {
    /// Maps a Hugging Face `architectures[0]` or GGUF `general.architecture` value.
    pub fn parse(name: &str) -> Option<Self> {
        arch::find(name).map(|spec| spec.architecture)
    }

    /// The Hugging Face class, `architectures[0]` of `config.json` (e.g.
    /// `LlamaForCausalLM`).
    pub fn hf_class(self) -> &'static str {
        self.spec().hf_class
    }

    /// The `model_type` of `config.json`, also GGUF's `general.architecture` (e.g.
    /// `llama`).
    pub fn hf_model_type(self) -> &'static str {
        self.spec().model_type
    }

    /// Whether the q/k/v projections carry a bias.
    pub fn has_qkv_bias(self) -> bool {
        self.spec().qkv_bias
    }

    /// Whether each query and key head is RMS-normalized before RoPE.
    pub fn has_qk_norm(self) -> bool {
        self.spec().qk_norm
    }
}

/// How pairs of dimensions are rotated by RoPE. Hugging Face checkpoints rotate the two
/// halves of a head (`rotate_half`); llama.cpp's GGUF files of Llama models store Q and K
/// rows permuted so that adjacent dimensions form the pairs instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeLayout {
    /// Pairs are dimension `i` and `i + head_dim / 2` (Hugging Face's `rotate_half`).
    HalfSplit,
    /// Pairs are adjacent dimensions `2i` and `2i + 1` (llama.cpp's GGUF Q/K rows).
    Interleaved,
}

/// Llama 3.1-style frequency scaling of RoPE (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    /// How much low frequencies are divided by.
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled in
    /// full.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are left
    /// alone; between the two bounds the scaling is interpolated.
    pub high_freq_factor: f64,
    /// The context length the model was first trained with.
    pub original_max_position_embeddings: usize,
}

/// Checked configuration of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Which architecture the weights belong to (tensor names, q/k/v biases).
    pub architecture: Architecture,
    /// Rows of the embedding (and output) matrix; at least the tokenizer's vocabulary.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads per attention layer; a multiple of `num_key_value_heads`.
    pub num_attention_heads: usize,
    /// Key/value heads (fewer than query heads under grouped-query attention).
    pub num_key_value_heads: usize,
    /// Size of one attention head (even, for RoPE); `hidden_size / num_attention_heads`
    /// unless the config says otherwise.
    pub head_dim: usize,
    /// Epsilon added to the mean square in RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base: the inverse frequencies are `rope_theta^(-2i / head_dim)`.
    pub rope_theta: f64,
    /// Llama 3.1 frequency scaling of RoPE, when the model uses it.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Context window: most positions (prompt plus generated tokens) per sequence.
    pub max_position_embeddings: usize,
    /// Whether the output projection reuses the embedding matrix (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id, if the config names one.
    pub bos_token_id: Option<u32>,
    /// Token ids that end generation (none, one or several, as the config lists them).
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Checks the relations the model code relies on; messages name the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("`{name}` must be positive");
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "`num_attention_heads` ({}) must be a multiple of `num_key_value_heads` ({})",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!("`head_dim` must be even for RoPE, got {}", self.head_dim);
        }
        Ok(())
    }

    /// Reads and checks a Hugging Face `config.json`, with the architecture it names.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let json: serde_json::Value =
            serde_json::from_str(text).context("config.json is not valid")?;
        arch::for_hf_config(&json)?.config_from_hf(&json)
    }

    /// The Hugging Face `config.json` describing this model.
    pub fn to_hf_json(&self, torch_dtype: &str) -> serde_json::Value {
        self.architecture.spec().config_to_hf(self, torch_dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_config_round_trips() {
        let text = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
            "num_key_value_heads":2,"rms_norm_eps":1e-5,"tie_word_embeddings":true,
            "eos_token_id":[2,3]}"#;
        let cfg = ModelConfig::from_hf_json(text).unwrap();
        assert_eq!(cfg.head_dim, 16);
        assert_eq!(cfg.eos_token_ids, vec![2, 3]);
        let again = ModelConfig::from_hf_json(&cfg.to_hf_json("float32").to_string()).unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn rejects_unknown_architecture_and_bad_heads() {
        let err = ModelConfig::from_hf_json(
            r#"{"architectures":["GPT2LMHeadModel"],"vocab_size":1,"hidden_size":8,
            "intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("GPT2LMHeadModel"), "{err}");
        let err = ModelConfig::from_hf_json(
            r#"{"architectures":["LlamaForCausalLM"],"vocab_size":1,"hidden_size":12,
            "intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":3,"num_key_value_heads":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");
    }
}
