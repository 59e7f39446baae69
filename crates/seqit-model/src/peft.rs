//! LoRA adapters in PEFT's layout, which PEFT and vLLM load: `adapter_config.json` and
//! `adapter_model.safetensors` with tensors named
//! `base_model.model.<module>.lora_A.weight` (`[rank, in]`) and `.lora_B.weight`
//! (`[out, rank]`), e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use seqit_core::durable::{atomic_write, atomic_write_with};
use serde::{Deserialize, Serialize};

use crate::arch::{LayerModule, Module};
use crate::config::RopeLayout;
use crate::gguf::permute_for_interleaved_rope;
use crate::linear::{LinearWeight, LoraAdapter};
use crate::llama::Llama;

/// File name of a PEFT adapter's configuration ([`PeftConfig`] as JSON).
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// File name of a PEFT adapter's tensors.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The fields of PEFT's `LoraConfig` that matter for a Llama adapter. Unknown fields are
/// ignored on reading, as PEFT adds new ones often.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeftConfig {
    /// Adapter type; only `LORA` is supported.
    pub peft_type: String,
    /// PEFT's task, `CAUSAL_LM` for the adapters seqit writes.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank as configured (the tensors' shapes decide the rank actually used).
    pub r: usize,
    /// LoRA's alpha: the adapter's output is scaled by `lora_alpha / r` (see
    /// [`PeftConfig::scale`]).
    pub lora_alpha: f64,
    /// Dropout on the adapter's input in training; 0 for none.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Module names such as `q_proj` (PEFT also allows a regex string; not supported).
    pub target_modules: Vec<String>,
    /// rsLoRA scaling: `lora_alpha / sqrt(r)` instead of `lora_alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA adapters; must be `false` (not supported).
    #[serde(default)]
    pub use_dora: bool,
    /// Which biases are trained; must be `none` (not supported otherwise).
    #[serde(default = "no_bias")]
    pub bias: String,
    /// For Conv1D layers; must be `false` (Llama has none).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Fully trained modules; must be empty (not supported).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Per-module alphas; must be empty (not supported).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Per-module ranks, as PEFT writes them (the tensors' shapes carry the ranks).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// The base model the adapter was trained on, as a name or path.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Whether PEFT loads the adapter frozen; `true` in what seqit writes.
    #[serde(default)]
    pub inference_mode: bool,
    /// Whether PEFT gives a new adapter its default initialisation; `true` in what seqit
    /// writes.
    #[serde(default)]
    pub init_lora_weights: bool,
}

fn no_bias() -> String {
    "none".into()
}

impl PeftConfig {
    /// A causal-LM LoRA config as PEFT writes it.
    pub fn lora(r: usize, lora_alpha: f64, lora_dropout: f64, target_modules: Vec<String>) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r,
            lora_alpha,
            lora_dropout,
            target_modules,
            use_rslora: false,
            use_dora: false,
            bias: no_bias(),
            fan_in_fan_out: false,
            modules_to_save: None,
            alpha_pattern: BTreeMap::new(),
            rank_pattern: BTreeMap::new(),
            base_model_name_or_path: None,
            inference_mode: true,
            init_lora_weights: true,
        }
    }

    /// The factor applied to `B·A` for an adapter of rank `r`.
    pub fn scale(&self, r: usize) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (r as f64).sqrt()
        } else {
            self.lora_alpha / r as f64
        }
    }

    fn check_supported(&self, path: &Path) -> Result<()> {
        let problem = if self.peft_type != "LORA" {
            Some(format!(
                "peft_type is {:?}, expected \"LORA\"",
                self.peft_type
            ))
        } else if self.use_dora {
            Some("use_dora is true (DoRA adapters are not supported)".into())
        } else if self.bias != "none" {
            Some(format!("bias is {:?}, expected \"none\"", self.bias))
        } else if self.fan_in_fan_out {
            Some("fan_in_fan_out is true (Conv1D layers are not Llama's)".into())
        } else if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            Some("modules_to_save is not empty (fully trained modules are not supported)".into())
        } else if !self.alpha_pattern.is_empty() {
            Some("alpha_pattern is not empty (per-module alphas are not supported)".into())
        } else {
            None
        };
        match problem {
            Some(p) => bail!("{}: {p}", path.display()),
            None => Ok(()),
        }
    }
}

/// PEFT's name of a LoRA tensor: `which` is `lora_A` or `lora_B`, `module` a Hugging Face
/// module name such as `model.layers.0.self_attn.q_proj`.
pub fn peft_tensor_name(module: &str, which: &str) -> String {
    format!("base_model.model.{module}.{which}.weight")
}

/// Writes an adapter directory atomically (temp files + rename). `tensors` are named as
/// [`peft_tensor_name`] spells them.
pub fn save_peft_adapter(
    dir: &Path,
    config: &PeftConfig,
    tensors: &[(String, Tensor)],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let weights: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_dtype(DType::F32)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let path = dir.join(ADAPTER_WEIGHTS);
    atomic_write_with(&path, |tmp| {
        candle_core::safetensors::save(&weights, tmp).map_err(std::io::Error::other)
    })
    .with_context(|| format!("cannot write `{}`", path.display()))?;
    let path = dir.join(ADAPTER_CONFIG);
    atomic_write(&path, serde_json::to_string_pretty(config)?.as_bytes())
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Reads `adapter_config.json` from `dir` and checks that seqit can apply it (no DoRA,
/// bias, Conv1D, saved modules or per-module alphas).
pub fn read_peft_config(dir: &Path) -> Result<PeftConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read `{}` (is `{}` a PEFT adapter directory?)",
            path.display(),
            dir.display()
        )
    })?;
    let config: PeftConfig = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a PEFT LoRA config", path.display()))?;
    config.check_supported(&path)?;
    Ok(config)
}

/// Attaches the adapter in `dir` to `model`'s projections. Dense weights get it merged
/// (no cost at inference); quantized ones keep it beside them, applied on every forward.
/// Returns the number of adapted projections.
pub fn apply_peft_adapter(model: &mut Llama, dir: &Path) -> Result<usize> {
    let config = read_peft_config(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let (heads, kv_heads) = (
        model.config.num_attention_heads,
        model.config.num_key_value_heads,
    );
    let interleaved = model.rope_layout == RopeLayout::Interleaved;
    let dtype = model.dtype();
    let device = model.device().clone();
    let names = model.arch().hf_names;
    let mut applied = 0;
    for (id, linear) in model.projection_modules_mut() {
        let module = names.module(id);
        let a_name = peft_tensor_name(&module, "lora_A");
        let b_name = peft_tensor_name(&module, "lora_B");
        let (Some(a), Some(b)) = (tensors.remove(&a_name), tensors.remove(&b_name)) else {
            continue;
        };
        let (r, a_in) = a
            .dims2()
            .with_context(|| format!("`{a_name}` is not a matrix"))?;
        let (b_out, b_r) = b
            .dims2()
            .with_context(|| format!("`{b_name}` is not a matrix"))?;
        let (out, inp) = match linear.weight() {
            LinearWeight::Dense(w) => w.dims2()?,
            LinearWeight::Quantized(q) => q.shape().dims2()?,
        };
        if a_in != inp || b_out != out || b_r != r {
            bail!(
                "{}: `{module}` has shape [{out}, {inp}] but the adapter's A is [{r}, {a_in}] and B is [{b_out}, {b_r}]",
                path.display()
            );
        }
        // llama.cpp's Q/K rows are permuted for interleaved RoPE: so must B's be.
        let b = match (interleaved, id) {
            (true, Module::Layer(_, LayerModule::Q)) => permute_for_interleaved_rope(&b, heads)?,
            (true, Module::Layer(_, LayerModule::K)) => permute_for_interleaved_rope(&b, kv_heads)?,
            _ => b,
        };
        let adapter_dtype = match linear.weight() {
            LinearWeight::Dense(_) => dtype,
            LinearWeight::Quantized(_) => DType::F32,
        };
        let adapter = LoraAdapter {
            a: a.to_dtype(adapter_dtype)?.to_device(&device)?,
            b: b.to_dtype(adapter_dtype)?.to_device(&device)?,
            scale: config.scale(r),
            dropout: None,
        };
        let adapted = linear.clone().with_adapter(adapter);
        *linear = match adapted.weight() {
            LinearWeight::Dense(_) => adapted.merged()?,
            LinearWeight::Quantized(_) => adapted,
        };
        applied += 1;
    }
    if let Some(name) = tensors.keys().min() {
        bail!(
            "{}: tensor `{name}` matches no projection of the model (expected names like `{}`)",
            path.display(),
            peft_tensor_name(&names.module(Module::Layer(0, LayerModule::Q)), "lora_A")
        );
    }
    if applied == 0 {
        bail!("{}: the adapter holds no LoRA tensors", path.display());
    }
    Ok(applied)
}
