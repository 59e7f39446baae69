//! `seqit model convert`: a GGUF file to a Hugging Face directory that seqit and
//! transformers both load (dequantized safetensors, config, tokenizer, chat template).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use seqit_model::gguf::GgufFile;
use seqit_model::{load_gguf, save_hf_weights, LoadOptions, ModelConfig, WeightStorage};
use serde_json::json;

use crate::tokenizer::Tokenizer;

/// Writes `output/` with `model.safetensors`, `config.json`, `generation_config.json`,
/// `tokenizer.json` and `tokenizer_config.json`. Files are written under temporary names
/// and renamed, so an interrupted conversion leaves no half-written file behind.
pub fn convert_gguf_to_hf(gguf_path: &Path, output: &Path, dtype: DType) -> Result<()> {
    let mut file = GgufFile::open(gguf_path)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let template = file.string("tokenizer.chat_template").map(String::from);
    let options = LoadOptions {
        weights: WeightStorage::Dequantized,
        dtype: DType::F32,
    };
    let model = load_gguf(&mut file, &Device::Cpu, options)
        .with_context(|| format!("cannot load `{}`", gguf_path.display()))?;
    save_hf_weights(&model, output, dtype)?;
    write_tokenizer_files(output, &tokenizer, template.as_deref(), &model.config)
}

/// Writes `tokenizer.json`, `tokenizer_config.json` (with the chat template) and
/// `generation_config.json`, the files that make a weights directory a usable model.
pub fn write_tokenizer_files(
    output: &Path,
    tokenizer: &Tokenizer,
    template: Option<&str>,
    model_config: &ModelConfig,
) -> Result<()> {
    write_json(output, "tokenizer.json", tokenizer.to_json())?;
    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.eos_token,
        "add_bos_token": tokenizer.add_bos,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model_config.max_position_embeddings,
    });
    if let Some(template) = template {
        config["chat_template"] = json!(template);
    }
    write_json(output, "tokenizer_config.json", &config)?;
    let mut generation = json!({"bos_token_id": model_config.bos_token_id});
    generation["eos_token_id"] = json!(model_config.eos_token_ids);
    write_json(output, "generation_config.json", &generation)?;
    Ok(())
}

fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> Result<()> {
    let path = dir.join(name);
    seqit_core::durable::atomic_write(&path, serde_json::to_string_pretty(value)?.as_bytes())
        .with_context(|| format!("cannot write `{}`", path.display()))
}
