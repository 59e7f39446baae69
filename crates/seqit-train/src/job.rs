//! A whole training run: load the base model, tokenize the data, train, export.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use seqit_core::ChatMessage;
use seqit_engine::{load_tokenizer, write_tokenizer_files, ChatTemplate};
use seqit_model::{load_model, save_hf_weights, GgufWeights, LoadOptions};

use crate::tokenize::{tokenize_example, ChatFormat};
use crate::trainable::full_finetuning;
use crate::trainer::{truncate_examples, StepMetrics, TrainConfig, Trainer};

pub struct TrainJob {
    /// Base model: a Hugging Face directory or a `.gguf` file (dequantized to f32).
    pub model: PathBuf,
    pub conversations: Vec<Vec<ChatMessage>>,
    pub format: ChatFormat,
    pub output: PathBuf,
    pub config: TrainConfig,
    pub resume: bool,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct TrainSummary {
    pub examples: usize,
    pub skipped_without_labels: usize,
    pub updates: usize,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub model_dir: PathBuf,
}

pub fn run_training(
    job: &TrainJob,
    on_step: &mut dyn FnMut(&StepMetrics, usize),
) -> Result<TrainSummary> {
    let (tokenizer, model_template) = load_tokenizer(&job.model)?;
    let model_template = model_template
        .map(|src| {
            ChatTemplate::new(
                &src,
                tokenizer.bos_token.as_deref(),
                tokenizer.eos_token.as_deref(),
            )
        })
        .transpose()?;
    let template = job.format.template(&tokenizer, model_template.as_ref())?;
    let mut examples = Vec::with_capacity(job.conversations.len());
    for (i, conversation) in job.conversations.iter().enumerate() {
        examples.push(
            tokenize_example(&tokenizer, &template, conversation)
                .with_context(|| format!("example {i}"))?,
        );
    }
    let (examples, skipped) = truncate_examples(examples, job.config.max_len);
    if examples.is_empty() {
        bail!(
            "no example has an assistant token left to train on (max length {})",
            job.config.max_len
        );
    }
    let options = LoadOptions {
        gguf_weights: GgufWeights::Dequantized,
        dtype: DType::F32,
    };
    let base = load_model(&job.model, &Device::Cpu, options)
        .with_context(|| format!("cannot load `{}`", job.model.display()))?
        .llama;
    let model = full_finetuning(base)?;
    let mut trainer = Trainer::new(model, job.config.clone(), &job.output, job.resume)?;
    let total = total_updates(examples.len(), &job.config);
    let metrics = trainer.train(&examples, &mut |m| on_step(m, total))?;
    let model_dir = job.output.join("model");
    export(&trainer, &tokenizer, template.source(), &model_dir)?;
    Ok(TrainSummary {
        examples: examples.len(),
        skipped_without_labels: skipped,
        updates: trainer.step(),
        first_loss: metrics.first().map(|m| m.loss),
        last_loss: metrics.last().map(|m| m.loss),
        model_dir,
    })
}

/// Updates in a run (an estimate with packing, exact otherwise), for progress display.
fn total_updates(examples: usize, config: &TrainConfig) -> usize {
    let per_epoch = examples
        .div_ceil(config.batch_size.max(1))
        .div_ceil(config.grad_accum.max(1));
    config.max_steps.map_or(per_epoch * config.epochs, |m| {
        m.min(per_epoch * config.epochs)
    })
}

/// Writes the trained model as a Hugging Face directory carrying the chat template it was
/// trained with, so that `seqit generate` and transformers prompt it the same way.
fn export(
    trainer: &Trainer,
    tokenizer: &seqit_engine::Tokenizer,
    template: &str,
    dir: &Path,
) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    let llama = &trainer.model.llama;
    save_hf_weights(llama, &tmp, DType::F32)?;
    write_tokenizer_files(&tmp, tokenizer, Some(template), &llama.config)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&tmp, dir)?;
    Ok(())
}
