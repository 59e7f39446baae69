//! A whole training run: load the base model, tokenize the data, train, export (the
//! model, and for LoRA the adapter in PEFT's layout).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use seqit_core::ChatMessage;
use seqit_engine::{write_tokenizer_files, TemplateVariables};
use seqit_model::{load_model, save_hf_weights, save_peft_adapter, LoadOptions, WeightStorage};

use crate::tokenize::{chat_tokenizer, tokenize_example, ChatFormat, TokenizedExample};
use crate::trainable::{full_finetuning, lora};
use crate::trainer::{truncate_examples, StepMetrics, TrainConfig, Trainer};

/// Everything [`run_training`] needs for one run: the base model, the conversations, the
/// chat format, the loop's settings and where to write.
pub struct TrainJob {
    /// Base model: a Hugging Face directory or a `.gguf` file (dequantized to f32).
    pub model: PathBuf,
    /// Training conversations; only their assistant turns carry loss.
    pub conversations: Vec<Vec<ChatMessage>>,
    /// Chat format the conversations are rendered in, for training and in the exported
    /// model.
    pub format: ChatFormat,
    /// Extra variables the chat template is rendered with (`enable_thinking = false`);
    /// inference should pass the same ones.
    pub template_variables: TemplateVariables,
    /// Run directory: `metrics.jsonl`, `checkpoint-N/`, then `model/` and, for LoRA,
    /// `adapter/`.
    pub output: PathBuf,
    /// Settings of the training loop.
    pub config: TrainConfig,
    /// Continue from the newest checkpoint in `output`; without it, an `output` that
    /// already holds a run is an error.
    pub resume: bool,
    /// Validation conversations, evaluated every `eval_every` updates and at the end.
    pub eval_conversations: Vec<Vec<ChatMessage>>,
    /// Updates between validation passes (0: only after the last update).
    pub eval_every: usize,
    /// Where the model trains: the CPU, or a CUDA GPU (builds with the `cuda` feature).
    pub device: Device,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct TrainSummary {
    /// Examples trained on, after those left without trained tokens were dropped.
    pub examples: usize,
    /// Examples dropped because cutting them to `max_len` left no assistant token.
    pub skipped_without_labels: usize,
    /// Optimizer updates done, counting those before a resume.
    pub updates: usize,
    /// Loss of the first update of this call (after a resume: the first one after it);
    /// `None` when no update was left to do.
    pub first_loss: Option<f64>,
    /// Loss of the last update of this call.
    pub last_loss: Option<f64>,
    /// The latest validation loss of this call; `None` without validation data.
    pub last_eval_loss: Option<f64>,
    /// The trained (for LoRA: merged) model as a Hugging Face directory.
    pub model_dir: PathBuf,
    /// LoRA only: the adapter in PEFT's layout.
    pub adapter_dir: Option<PathBuf>,
}

/// Runs `job`: tokenizes and cuts the conversations, loads the base model, trains it (fully
/// or with LoRA), and exports the result to `output/model` (and `output/adapter`).
/// `on_step` gets each update's metrics and the estimated number of updates in the run.
/// Fails when no example has a trained token left.
pub fn run_training(
    job: &TrainJob,
    on_step: &mut dyn FnMut(&StepMetrics, usize),
) -> Result<TrainSummary> {
    let (tokenizer, template) = chat_tokenizer(&job.model, &job.format, &job.template_variables)?;
    let tokenize_all = |conversations: &[Vec<ChatMessage>], what: &str| {
        conversations
            .iter()
            .enumerate()
            .map(|(i, c)| {
                tokenize_example(&tokenizer, &template, c)
                    .with_context(|| format!("{what} example {i}"))
            })
            .collect::<Result<Vec<TokenizedExample>>>()
    };
    let examples = tokenize_all(&job.conversations, "training")?;
    let (examples, skipped) = truncate_examples(examples, job.config.max_len);
    let (eval_examples, _) = truncate_examples(
        tokenize_all(&job.eval_conversations, "validation")?,
        job.config.max_len,
    );
    if examples.is_empty() {
        bail!(
            "no example has an assistant token left to train on (max length {})",
            job.config.max_len
        );
    }
    let dtype = job.config.precision.dtype();
    let options = LoadOptions {
        weights: WeightStorage::Dequantized,
        dtype,
    };
    let base = load_model(&job.model, &job.device, options)
        .with_context(|| format!("cannot load `{}`", job.model.display()))?
        .llama;
    let model = match &job.config.lora {
        Some(settings) => lora(base, settings, job.config.seed)?,
        None => full_finetuning(base)?,
    };
    let mut trainer = Trainer::new(model, job.config.clone(), &job.output, job.resume)?
        .with_eval(eval_examples, job.eval_every);
    let total = total_updates(examples.len(), &job.config);
    let metrics = trainer.train(&examples, &mut |m| on_step(m, total))?;
    let adapter_dir = match &trainer.model.lora {
        Some((settings, _)) => {
            let dir = job.output.join("adapter");
            let mut config = settings.peft_config(&trainer.model.llama.arch().hf_names)?;
            config.base_model_name_or_path = Some(job.model.display().to_string());
            let weights = trainer.trained_weights()?;
            write_dir(&dir, |tmp| save_peft_adapter(tmp, &config, &weights))?;
            Some(dir)
        }
        None => None,
    };
    let model_dir = job.output.join("model");
    export(&trainer, &tokenizer, template.source(), &model_dir, dtype)?;
    Ok(TrainSummary {
        examples: examples.len(),
        skipped_without_labels: skipped,
        updates: trainer.step(),
        first_loss: metrics.first().map(|m| m.loss),
        last_loss: metrics.last().map(|m| m.loss),
        last_eval_loss: metrics.iter().rev().find_map(|m| m.eval_loss),
        model_dir,
        adapter_dir,
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

/// Writes the trained model (adapters merged) in `dtype` as a Hugging Face directory
/// carrying the chat template it was trained with, so that `seqit generate` and
/// transformers prompt it the same way.
fn export(
    trainer: &Trainer,
    tokenizer: &seqit_engine::Tokenizer,
    template: &str,
    dir: &Path,
    dtype: DType,
) -> Result<()> {
    let mut llama = trainer.model.llama.clone();
    llama.merge_adapters()?;
    write_dir(dir, |tmp| {
        save_hf_weights(&llama, tmp, dtype)?;
        write_tokenizer_files(tmp, tokenizer, Some(template), &llama.config)
    })
}

/// Writes a directory durably: `write` fills `.NAME.tmp/` next to it, which is synced
/// and then replaces `dir` (see [`seqit_core::durable::replace_dir`]), so a kill leaves
/// the old directory or the new one, complete.
fn write_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = seqit_core::durable::parent_dir(dir).join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    write(&tmp)?;
    seqit_core::durable::replace_dir(&tmp, dir)
        .with_context(|| format!("cannot write `{}`", dir.display()))
}
