//! Turning a loaded model into one whose weights (full fine-tuning) or adapters (LoRA)
//! are trainable variables.

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seqit_model::arch::{LayerModule, Module, TensorNames, LLAMA};
use seqit_model::{
    peft_tensor_name, DropoutState, Kernels, LinearWeight, Llama, LoraAdapter, LoraDropout,
    PeftConfig,
};
use serde::{Deserialize, Serialize};

/// A model whose trainable tensors are [`Var`]s, with their names: Hugging Face names in
/// full fine-tuning, PEFT names (`base_model.model.<module>.lora_A.weight`) in LoRA.
pub struct TrainableModel {
    /// The model; in LoRA its weights are frozen and its targeted projections carry
    /// adapters.
    pub llama: Llama,
    /// The trainable tensors under their names, in the optimizer's and the checkpoints'
    /// order.
    pub params: Vec<(String, Var)>,
    /// LoRA only: the adapters' settings and their shared dropout switch.
    pub lora: Option<(LoraSettings, Arc<DropoutState>)>,
}

/// LoRA hyper-parameters (PEFT's `r`, `lora_alpha`, `lora_dropout`, `target_modules`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoraSettings {
    /// Rank `r` of each adapter: `A` is `[rank, in]`, `B` `[out, rank]`.
    pub rank: usize,
    /// Adapter outputs are scaled by `alpha / rank`.
    pub alpha: f64,
    /// Dropout probability on each adapter's input while training, in `[0, 1)`.
    pub dropout: f64,
    /// The projections to adapt, spelled as Llama's modules (`q_proj`, `k_proj`, `v_proj`,
    /// `o_proj`, `gate_proj`, `up_proj`, `down_proj`) whatever the architecture: each
    /// names a [`LayerModule`], which the model's architecture names its own way.
    pub targets: Vec<String>,
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            targets: LayerModule::PROJECTIONS
                .into_iter()
                .map(|part| LLAMA.hf_names.leaf(part).to_string())
                .collect(),
        }
    }
}

impl LoraSettings {
    /// Parses `q,k,v,o,gate,up,down` (or Llama's module names, e.g. `q_proj`).
    pub fn parse_targets(list: &str) -> Result<Vec<String>> {
        let mut targets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some(part) = LayerModule::parse_target(item) else {
                bail!(
                    "unknown LoRA target `{item}`: expected a comma-separated list of q, k, v, o, gate, up, down"
                );
            };
            let module = LLAMA.hf_names.leaf(part).to_string();
            if !targets.contains(&module) {
                targets.push(module);
            }
        }
        if targets.is_empty() {
            bail!("no LoRA target given: expected e.g. `q,k,v,o,gate,up,down`");
        }
        Ok(targets)
    }

    /// The projections [`targets`](Self::targets) names.
    pub fn target_modules(&self) -> Result<Vec<LayerModule>> {
        self.targets
            .iter()
            .map(|name| {
                LayerModule::parse_target(name)
                    .ok_or_else(|| anyhow::anyhow!("unknown LoRA target `{name}`"))
            })
            .collect()
    }

    /// Fails on rank 0 or a dropout outside `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            bail!("the LoRA rank must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("the LoRA dropout must be in [0, 1), got {}", self.dropout);
        }
        Ok(())
    }

    /// The adapter's `adapter_config.json` for a model whose modules are named by
    /// `names` (its architecture's Hugging Face names).
    pub fn peft_config(&self, names: &TensorNames) -> Result<PeftConfig> {
        let modules = self.target_modules()?;
        let targets = modules.iter().map(|&part| names.leaf(part).to_string());
        Ok(PeftConfig::lora(
            self.rank,
            self.alpha,
            self.dropout,
            targets.collect(),
        ))
    }
}

/// LoRA: every weight of `model` is frozen; the projections named in `settings.targets`
/// get an adapter whose `A` is drawn uniformly from `±1/sqrt(in)` (PEFT's
/// `kaiming_uniform_(a=sqrt(5))`) and whose `B` is zero, so training starts from the base
/// model's outputs.
pub fn lora(mut model: Llama, settings: &LoraSettings, seed: u64) -> Result<TrainableModel> {
    settings.validate()?;
    let targets = settings.target_modules()?;
    let state = Arc::new(DropoutState::default());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut params = Vec::new();
    let (device, dtype) = (model.device().clone(), model.dtype());
    let names = model.arch().hf_names;
    for (id, (module, linear)) in model.projection_modules_mut().enumerate() {
        let frozen = linear.clone().frozen();
        let targeted = matches!(module, Module::Layer(_, part) if targets.contains(&part));
        if !targeted {
            *linear = frozen;
            continue;
        }
        let module = names.module(module);
        let LinearWeight::Dense(w) = linear.weight() else {
            bail!("`{module}` is quantized: load the model with dense weights to train it");
        };
        let (out, inp) = w.dims2()?;
        let bound = 1.0 / (inp as f64).sqrt();
        let a: Vec<f32> = (0..settings.rank * inp)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Tensor::from_vec(a, (settings.rank, inp), &device)?.to_dtype(dtype)?;
        let a = Var::from_tensor(&a)?;
        let b = Var::zeros((out, settings.rank), dtype, &device)?;
        let adapter = LoraAdapter {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: settings.alpha / settings.rank as f64,
            dropout: (settings.dropout > 0.0).then(|| LoraDropout {
                p: settings.dropout as f32,
                id: id as u64,
                state: state.clone(),
            }),
        };
        *linear = frozen.with_adapter(adapter);
        params.push((peft_tensor_name(&module, "lora_A"), a));
        params.push((peft_tensor_name(&module, "lora_B"), b));
    }
    model.lm_head = model.lm_head.clone().frozen();
    model.kernels = Kernels::Differentiable;
    Ok(TrainableModel {
        llama: model,
        params,
        lora: Some((settings.clone(), state)),
    })
}

/// Every weight becomes trainable (full fine-tuning). Tied embeddings stay one variable.
pub fn full_finetuning(model: Llama) -> Result<TrainableModel> {
    let mut params = Vec::new();
    let mut llama = model.try_map_weights(|name, t| {
        let v = Var::from_tensor(&t.contiguous()?)?;
        let tensor = v.as_tensor().clone();
        params.push((name, v));
        Ok(tensor)
    })?;
    llama.kernels = Kernels::Differentiable;
    Ok(TrainableModel {
        llama,
        params,
        lora: None,
    })
}
