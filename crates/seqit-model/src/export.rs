//! Writing a dense model in Hugging Face layout (`model.safetensors` + `config.json`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use seqit_core::durable::{atomic_write, atomic_write_with};

use crate::config::RopeLayout;
use crate::linear::{Linear, LinearWeight};
use crate::llama::Llama;

/// The model's tensors under their Hugging Face names. Fails for quantized weights.
pub fn named_weights(model: &Llama) -> Result<Vec<(String, Tensor)>> {
    if model.rope_layout != RopeLayout::HalfSplit {
        bail!("the model is in llama.cpp's interleaved RoPE layout; load it with `dequantize` to export it");
    }
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        model.embed_tokens.0.clone(),
    )];
    let push_linear = |out: &mut Vec<(String, Tensor)>, name: String, l: &Linear| -> Result<()> {
        if l.adapter().is_some() {
            bail!("`{name}` has a LoRA adapter: merge it before exporting the weights");
        }
        match l.weight() {
            LinearWeight::Dense(w) => out.push((format!("{name}.weight"), w.clone())),
            LinearWeight::Quantized(_) => {
                bail!("`{name}` is quantized; load the model with `dequantize` to export it")
            }
        }
        if let Some(b) = l.bias() {
            out.push((format!("{name}.bias"), b.clone()));
        }
        Ok(())
    };
    for (i, block) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        out.push((
            format!("{p}.input_layernorm.weight"),
            block.input_layernorm.weight().clone(),
        ));
        out.push((
            format!("{p}.post_attention_layernorm.weight"),
            block.post_attention_layernorm.weight().clone(),
        ));
        let a = &block.self_attn;
        for (n, l) in [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
        ] {
            push_linear(&mut out, format!("{p}.self_attn.{n}"), l)?;
        }
        let m = &block.mlp;
        for (n, l) in [
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
        ] {
            push_linear(&mut out, format!("{p}.mlp.{n}"), l)?;
        }
    }
    out.push(("model.norm.weight".to_string(), model.norm.weight().clone()));
    if !model.config.tie_word_embeddings {
        push_linear(&mut out, "lm_head".to_string(), &model.lm_head)?;
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
    let config = model.config.to_hf_json(torch_dtype);
    let config_path = dir.join("config.json");
    atomic_write(
        &config_path,
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )
    .with_context(|| format!("cannot write `{}`", config_path.display()))
}
