//! The one place where an architecture states what sets it apart: how its Hugging Face
//! `config.json` and its GGUF metadata map to a [`ModelConfig`], how both formats name
//! its tensors, and the details of its blocks. Loading, export, GGUF and PEFT code ask an
//! [`ArchSpec`] instead of spelling tensor names; the blocks in `llama.rs` load themselves
//! through it.
//!
//! Every block is a pre-norm block (RMSNorm before attention and before the MLP) with
//! grouped-query attention, RoPE and a SwiGLU MLP; the spec says where architectures of
//! that shape differ. One that differs in structure (extra norms, another MLP) adds a
//! field here and the branch in the block that reads it.

mod llama;

use anyhow::{Context, Result};

use crate::config::{Architecture, ModelConfig, RopeLayout};
use crate::gguf::GgufFile;

pub use llama::{LLAMA, MISTRAL, QWEN2, QWEN3};

/// Every architecture seqit recognises by name (a Hugging Face class or `model_type`, a
/// GGUF `general.architecture`). A new architecture adds its spec here and a match arm in
/// [`Architecture::spec`].
pub const REGISTRY: [&ArchSpec; 4] = [&LLAMA, &MISTRAL, &QWEN2, &QWEN3];

impl Architecture {
    /// This architecture's spec.
    pub fn spec(self) -> &'static ArchSpec {
        match self {
            Self::Llama => &LLAMA,
            Self::Mistral => &MISTRAL,
            Self::Qwen2 => &QWEN2,
            Self::Qwen3 => &QWEN3,
        }
    }
}

/// What one architecture states. Specs are constants: an architecture that differs from
/// another in a few details is that one with those fields replaced
/// (`ArchSpec { qkv_bias: true, ..LLAMA }`).
#[derive(Debug, Clone, Copy)]
pub struct ArchSpec {
    /// The [`ModelConfig::architecture`] its configurations carry.
    pub architecture: Architecture,
    /// The name used in messages, e.g. `Qwen2`.
    pub name: &'static str,
    /// The Hugging Face class, `architectures[0]` of `config.json`.
    pub hf_class: &'static str,
    /// `model_type` of `config.json`, which is also GGUF's `general.architecture` and the
    /// prefix of its metadata keys.
    pub model_type: &'static str,
    /// Whether the q/k/v projections carry a bias.
    pub qkv_bias: bool,
    /// Whether each query and key head is RMS-normalized (over `head_dim`, with a learned
    /// scale shared by the heads) between its projection and RoPE.
    pub qk_norm: bool,
    /// How GGUF files of this architecture lay out Q/K rows (Hugging Face checkpoints
    /// are always [`RopeLayout::HalfSplit`]).
    pub gguf_rope_layout: RopeLayout,
    /// Tensor names of Hugging Face checkpoints (also PEFT's module names).
    pub hf_names: TensorNames,
    /// Tensor names of GGUF files.
    pub gguf_names: TensorNames,
    /// Reads a parsed `config.json`; see [`ArchSpec::config_from_hf`].
    pub parse_hf_config: fn(&ArchSpec, &serde_json::Value) -> Result<ModelConfig>,
    /// Writes `config.json`; see [`ArchSpec::config_to_hf`].
    pub write_hf_config: fn(&ArchSpec, &ModelConfig, &str) -> serde_json::Value,
    /// Reads GGUF metadata; see [`ArchSpec::config_from_gguf`].
    pub parse_gguf_config: fn(&ArchSpec, &GgufFile) -> Result<ModelConfig>,
}

impl ArchSpec {
    /// The checked configuration a Hugging Face `config.json` describes.
    pub fn config_from_hf(&self, json: &serde_json::Value) -> Result<ModelConfig> {
        (self.parse_hf_config)(self, json)
    }

    /// The Hugging Face `config.json` describing `config`, with `torch_dtype` as given.
    pub fn config_to_hf(&self, config: &ModelConfig, torch_dtype: &str) -> serde_json::Value {
        (self.write_hf_config)(self, config, torch_dtype)
    }

    /// The checked configuration a GGUF file's metadata describes.
    pub fn config_from_gguf(&self, file: &GgufFile) -> Result<ModelConfig> {
        (self.parse_gguf_config)(self, file)
    }

    /// The modules each of its layers has, in [`LayerModule::ALL`] order.
    pub fn layer_modules(&self) -> impl Iterator<Item = LayerModule> + '_ {
        LayerModule::ALL.into_iter().filter(|part| match part {
            LayerModule::QNorm | LayerModule::KNorm => self.qk_norm,
            _ => true,
        })
    }

    /// A Hugging Face tensor name in GGUF, e.g. `model.layers.3.self_attn.q_proj.weight`
    /// → `blk.3.attn_q.weight` for the Llama family.
    pub fn gguf_tensor_name(&self, hf_name: &str) -> Option<String> {
        let (module, param) = self.hf_names.parse_tensor(hf_name)?;
        Some(self.gguf_names.tensor(module, param))
    }

    /// Inverse of [`Self::gguf_tensor_name`].
    pub fn hf_tensor_name(&self, gguf_name: &str) -> Option<String> {
        let (module, param) = self.gguf_names.parse_tensor(gguf_name)?;
        Some(self.hf_names.tensor(module, param))
    }
}

/// The registered spec named `name`: a Hugging Face class or `model_type`, or a GGUF
/// `general.architecture`.
pub fn find(name: &str) -> Option<&'static ArchSpec> {
    REGISTRY
        .into_iter()
        .find(|spec| spec.hf_class == name || spec.model_type == name)
}

/// The registered spec of a parsed `config.json`: `architectures[0]` names the class,
/// `model_type` counts only when the list is absent.
pub fn for_hf_config(json: &serde_json::Value) -> Result<&'static ArchSpec> {
    let name = json
        .get("architectures")
        .and_then(|list| list.get(0))
        .or_else(|| json.get("model_type"))
        .and_then(|name| name.as_str())
        .unwrap_or_default();
    find(name).with_context(|| {
        let names = REGISTRY.map(|spec| spec.name);
        format!(
            "unsupported architecture `{name}`: seqit runs {} models",
            listed(&names)
        )
    })
}

/// The registered spec of a GGUF `general.architecture` value, with an error naming the
/// ones there are.
pub(crate) fn for_gguf(name: &str) -> Result<&'static ArchSpec> {
    find(name).with_context(|| {
        let names = REGISTRY.map(|spec| spec.model_type);
        format!(
            "unsupported architecture `{name}`: seqit runs {} models",
            listed(&names)
        )
    })
}

/// `a, b and c`.
fn listed(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [only] => only.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A module of a decoder layer, whatever a checkpoint calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerModule {
    /// The RMSNorm before attention.
    AttnNorm,
    /// The query projection.
    Q,
    /// The key projection.
    K,
    /// The value projection.
    V,
    /// The attention's output projection.
    O,
    /// The RMSNorm before the MLP.
    MlpNorm,
    /// The MLP's gate projection (through SiLU).
    Gate,
    /// The MLP's up projection.
    Up,
    /// The MLP's down projection.
    Down,
    /// The RMSNorm of each query head, when the architecture has one.
    QNorm,
    /// The RMSNorm of each key head, when the architecture has one.
    KNorm,
}

impl LayerModule {
    /// Every layer module, in the order of [`TensorNames::layer`] (an architecture
    /// without per-head norms has no `QNorm` and `KNorm` tensors).
    pub const ALL: [Self; 11] = [
        Self::AttnNorm,
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::MlpNorm,
        Self::Gate,
        Self::Up,
        Self::Down,
        Self::QNorm,
        Self::KNorm,
    ];

    /// The seven projections, the modules LoRA can adapt, in [`crate::Block::projections`]
    /// order.
    pub const PROJECTIONS: [Self; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// The projection a LoRA target names, whatever the architecture: its short name
    /// (`q`, `k`, `v`, `o`, `gate`, `up`, `down`) or Llama's module name (`q_proj`, ...),
    /// as LoRA configurations of the Llama family spell it.
    pub fn parse_target(name: &str) -> Option<Self> {
        let short = name.strip_suffix("_proj").unwrap_or(name);
        Self::PROJECTIONS
            .into_iter()
            .find(|part| part.short_name() == Some(short))
    }

    /// A projection's short name (`q`, …, `down`); `None` for the norms.
    pub fn short_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Q => "q",
            Self::K => "k",
            Self::V => "v",
            Self::O => "o",
            Self::Gate => "gate",
            Self::Up => "up",
            Self::Down => "down",
            Self::AttnNorm | Self::MlpNorm | Self::QNorm | Self::KNorm => return None,
        })
    }
}

/// A module of a model: a weight and, for some projections, a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// The token embedding table (also the LM head when tied).
    Embedding,
    /// The RMSNorm after the last layer.
    FinalNorm,
    /// The output projection to logits.
    LmHead,
    /// A module of the layer with this index.
    Layer(usize, LayerModule),
}

/// Which tensor of a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `<module>.weight`.
    Weight,
    /// `<module>.bias`.
    Bias,
}

impl Param {
    fn suffix(self) -> &'static str {
        match self {
            Self::Weight => "weight",
            Self::Bias => "bias",
        }
    }
}

/// How one checkpoint format names a model's modules; a tensor's name is its module's
/// followed by `.weight` or `.bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorNames {
    /// [`Module::Embedding`]'s name.
    pub embedding: &'static str,
    /// [`Module::FinalNorm`]'s name.
    pub final_norm: &'static str,
    /// [`Module::LmHead`]'s name.
    pub lm_head: &'static str,
    /// What precedes a layer's index: `model.layers.` names layer 3's modules
    /// `model.layers.3.<module>`.
    pub layer_prefix: &'static str,
    /// The layer modules' names after the index, in [`LayerModule::ALL`] order.
    pub layer: [&'static str; 11],
}

impl TensorNames {
    /// The name of `module`.
    pub fn module(&self, module: Module) -> String {
        match module {
            Module::Embedding => self.embedding.to_string(),
            Module::FinalNorm => self.final_norm.to_string(),
            Module::LmHead => self.lm_head.to_string(),
            Module::Layer(index, part) => {
                format!("{}{index}.{}", self.layer_prefix, self.layer[part as usize])
            }
        }
    }

    /// The last part of `part`'s name (`self_attn.q_proj` → `q_proj`): what PEFT's
    /// `target_modules` lists.
    pub fn leaf(&self, part: LayerModule) -> &'static str {
        let name = self.layer[part as usize];
        name.rsplit_once('.').map_or(name, |(_, leaf)| leaf)
    }

    /// The name of `module`'s tensor `param`.
    pub fn tensor(&self, module: Module, param: Param) -> String {
        format!("{}.{}", self.module(module), param.suffix())
    }

    /// Inverse of [`Self::module`].
    pub fn parse_module(&self, name: &str) -> Option<Module> {
        let fixed = [
            (self.embedding, Module::Embedding),
            (self.final_norm, Module::FinalNorm),
            (self.lm_head, Module::LmHead),
        ];
        if let Some((_, module)) = fixed.into_iter().find(|(n, _)| *n == name) {
            return Some(module);
        }
        let (index, rest) = name.strip_prefix(self.layer_prefix)?.split_once('.')?;
        let part = LayerModule::ALL
            .into_iter()
            .find(|&part| self.layer[part as usize] == rest)?;
        Some(Module::Layer(index.parse().ok()?, part))
    }

    /// Inverse of [`Self::tensor`].
    pub fn parse_tensor(&self, name: &str) -> Option<(Module, Param)> {
        let (module, suffix) = name.rsplit_once('.')?;
        let param = [Param::Weight, Param::Bias]
            .into_iter()
            .find(|p| p.suffix() == suffix)?;
        Some((self.parse_module(module)?, param))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_agrees_with_the_enum() {
        for spec in REGISTRY {
            assert_eq!(spec.architecture.spec().hf_class, spec.hf_class);
            assert_eq!(find(spec.model_type).unwrap().name, spec.name);
        }
    }

    #[test]
    fn names_parse_back() {
        for spec in REGISTRY {
            for names in [spec.hf_names, spec.gguf_names] {
                for part in LayerModule::ALL {
                    let module = Module::Layer(11, part);
                    assert_eq!(names.parse_module(&names.module(module)), Some(module));
                }
                for module in [Module::Embedding, Module::FinalNorm, Module::LmHead] {
                    let name = names.tensor(module, Param::Bias);
                    assert_eq!(names.parse_tensor(&name), Some((module, Param::Bias)));
                }
            }
        }
        assert_eq!(
            LLAMA.hf_names.parse_module("model.layers.x.mlp.up_proj"),
            None
        );
    }

    #[test]
    fn unknown_names_list_the_registry() {
        let err = for_hf_config(&serde_json::json!({"architectures": ["GPT2LMHeadModel"]}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unsupported architecture `GPT2LMHeadModel`: seqit runs Llama, Mistral, Qwen2 and Qwen3 models"
        );
        let err = for_gguf("gpt2").unwrap_err().to_string();
        assert!(
            err.ends_with("seqit runs llama, mistral, qwen2 and qwen3 models"),
            "{err}"
        );
    }

    #[test]
    fn attention_biases_the_architecture_lacks_are_refused() {
        let config = |class: &str| {
            crate::ModelConfig::from_hf_json(&format!(
                r#"{{"architectures": ["{class}"], "vocab_size": 48, "hidden_size": 32,
                    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "attention_bias": true}}"#
            ))
        };
        let err = config("Qwen3ForCausalLM").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "unsupported `attention_bias: true`: Qwen3 models have no attention biases"
        );
        assert!(config("Qwen2ForCausalLM").is_ok());
    }
}
