//! Architecture hyper-parameters, read from a Hugging Face `config.json` or from GGUF
//! metadata and checked once, so the model code can trust them.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::arch;

/// The architectures seqit's Llama implementation covers. What distinguishes them is
/// stated once, in each one's [`ArchSpec`](crate::arch::ArchSpec) ([`Architecture::spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    /// Maps a Hugging Face `architectures[0]` or GGUF `general.architecture` value.
    pub fn parse(name: &str) -> Option<Self> {
        arch::find(name).map(|spec| spec.architecture)
    }

    pub fn hf_class(self) -> &'static str {
        self.spec().hf_class
    }

    pub fn hf_model_type(self) -> &'static str {
        self.spec().model_type
    }

    /// Whether the q/k/v projections carry a bias.
    pub fn has_qkv_bias(self) -> bool {
        self.spec().qkv_bias
    }
}

/// How pairs of dimensions are rotated by RoPE. Hugging Face checkpoints rotate the two
/// halves of a head (`rotate_half`); llama.cpp's GGUF files of Llama models store Q and K
/// rows permuted so that adjacent dimensions form the pairs instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeLayout {
    HalfSplit,
    Interleaved,
}

/// Llama 3.1-style frequency scaling of RoPE (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Checked configuration of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
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
