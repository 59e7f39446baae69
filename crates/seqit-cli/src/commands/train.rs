//! `seqit train`: full fine-tuning on a dataset, with progress, metrics and resume.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use seqit_core::{ChatMessage, Role};
use seqit_data::{read_all, ReadOptions};
use seqit_engine::resolve_model;
use seqit_train::{run_training, ChatFormat, Schedule, TrainConfig, TrainJob};

use crate::cli::TrainArgs;

/// Training conversations (system prompt first) from any dataset format; every record
/// must have a response.
pub fn read_conversations(path: &std::path::Path) -> Result<Vec<Vec<ChatMessage>>> {
    let (_, records) = read_all(path, &ReadOptions::default())?;
    let mut conversations = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        if !record.messages.iter().any(|m| m.role == Role::Assistant) {
            bail!("{}: record {i} has no response to train on", path.display());
        }
        let mut messages = Vec::with_capacity(record.messages.len() + 1);
        if let Some(system) = record.system {
            messages.push(ChatMessage::system(system));
        }
        messages.extend(record.messages);
        conversations.push(messages);
    }
    Ok(conversations)
}

pub fn run(args: TrainArgs) -> Result<()> {
    if !args.full {
        bail!("LoRA training is not implemented yet\nhint: pass --full for full fine-tuning");
    }
    let model = resolve_model(args.model.as_deref())?;
    let format = match args.template.as_str() {
        "model" => ChatFormat::Model,
        "tulu" => ChatFormat::Tulu,
        "chatml" => ChatFormat::ChatMl,
        path => ChatFormat::Custom(std::fs::read_to_string(path).with_context(|| {
            format!("`--template {path}` is neither model, tulu, chatml nor a readable file")
        })?),
    };
    let conversations = read_conversations(&args.data)?;
    let config = TrainConfig {
        epochs: args.epochs,
        lr: args.lr,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_len: args.max_len,
        warmup_ratio: args.warmup_ratio,
        schedule: match args.schedule.as_str() {
            "cosine" => Schedule::Cosine,
            "constant" => Schedule::Constant,
            _ => Schedule::Linear,
        },
        weight_decay: args.weight_decay,
        max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
        seed: args.seed,
        packing: args.packing,
        save_every: args.save_every,
        max_steps: args.max_steps,
    };
    let job = TrainJob {
        model,
        conversations,
        format,
        output: args.output.clone(),
        config,
        resume: args.resume,
    };
    let started = Instant::now();
    let summary = run_training(&job, &mut |m, total| {
        eprintln!(
            "step {}/{total}  loss {:.4}  lr {:.2e}  grad-norm {:.3}  {:.0} tokens/s",
            m.step, m.loss, m.lr, m.grad_norm, m.tokens_per_second
        );
    })?;
    if summary.skipped_without_labels > 0 {
        eprintln!(
            "skipped {} examples that had no assistant token within --max-len {}",
            summary.skipped_without_labels, args.max_len
        );
    }
    eprintln!(
        "trained {} updates on {} examples in {:.1}s; model written to {}",
        summary.updates,
        summary.examples,
        started.elapsed().as_secs_f64(),
        summary.model_dir.display()
    );
    Ok(())
}
