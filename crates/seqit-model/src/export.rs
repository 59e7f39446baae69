//! Writing a dense model in Hugging Face layout (`model.safetensors` + `config.json`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use seqit_core::durable::{atomic_write, atomic_write_with};

use crate::arch::{Module, Param};
use crate::config::RopeLayout;
use crate::linear::{Linear, LinearWeight};
use crate::llama::Llama;

/// The model's tensors under their Hugging Face names (as its architecture spells them).
/// Fails for quantized weights.
pub fn named_weights(model: &Llama) -> Result<Vec<(String, Tensor)>> {
    if model.rope_layout != RopeLayout::HalfSplit {
        bail!("the model is in llama.cpp's interleaved RoPE layout; load it with `dequantize` to export it");
    }
    let names = model.arch().hf_names;
    let mut out = vec![(
        names.tensor(Module::Embedding, Param::Weight),
        model.embed_tokens.0.clone(),
    )];
    let push_linear = |out: &mut Vec<(String, Tensor)>, module: Module, l: &Linear| -> Result<()> {
        let name = names.module(module);
        if l.adapter().is_some() {
            bail!("`{name}` has a LoRA adapter: merge it before exporting the weights");
        }
        match l.weight() {
            LinearWeight::Dense(w) => out.push((names.tensor(module, Param::Weight), w.clone())),
            LinearWeight::Quantized(_) => {
                bail!("`{name}` is quantized; load the model with `dequantize` to export it")
            }
        }
        if let Some(b) = l.bias() {
            out.push((names.tensor(module, Param::Bias), b.clone()));
        }
        Ok(())
    };
    for (i, block) in model.layers.iter().enumerate() {
        for (part, norm) in block.norms() {
            let name = names.tensor(Module::Layer(i, part), Param::Weight);
            out.push((name, norm.weight().clone()));
        }
        for (part, linear) in block.projections() {
            push_linear(&mut out, Module::Layer(i, part), linear)?;
        }
    }
    out.push((
        names.tensor(Module::FinalNorm, Param::Weight),
        model.norm.weight().clone(),
    ));
    if !model.config.tie_word_embeddings {
        push_linear(&mut out, Module::LmHead, &model.lm_head)?;
    }
    Ok(out)
}

/// Writes `model.safetensors` and `config.json` into `dir` (created if needed), with
/// weights cast to `dtype` (F32, BF16 or F16).
pub fn save_hf_weights(model: &Llama, dir: &Path, dtype: DType) -> Result<()> {
    let torch_dtype = match dtype {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        other => bail!("cannot export weights as {other:?}: use f32, bf16 or f16"),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let tensors = named_weights(model)?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    let weights = dir.join("model.safetensors");
    let tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
    atomic_write_with(&weights, |tmp| {
        candle_core::safetensors::save(&tensors, tmp).map_err(std::io::Error::other)
    })
    .with_context(|| format!("cannot write `{}`", weights.display()))?;
    let config = model.arch().config_to_hf(&model.config, torch_dtype);
    let config_path = dir.join("config.json");
    atomic_write(
        &config_path,
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )
    .with_context(|| format!("cannot write `{}`", config_path.display()))
}
