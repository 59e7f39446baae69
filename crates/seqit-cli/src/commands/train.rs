//! `seqit train`: LoRA or full fine-tuning on a dataset, with settings from flags and a
//! config file, progress, metrics, validation loss and resume.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use seqit_engine::resolve_model;
use seqit_model::parse_device;
use seqit_train::{
    read_conversations, run_training, ChatFormat, LoraSettings, Precision, Schedule, TrainConfig,
    TrainJob,
};

use crate::cli::TrainArgs;

/// The flags over the `--config` file's settings (flags win).
fn merged_settings(args: TrainArgs) -> Result<TrainArgs> {
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file `{}`", path.display()))?;
    let from_file: TrainArgs = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let serde_json::Value::Object(mut merged) = serde_json::to_value(&from_file)? else {
        unreachable!("a struct serializes to an object");
    };
    let serde_json::Value::Object(flags) = serde_json::to_value(&args)? else {
        unreachable!("a struct serializes to an object");
    };
    merged.extend(flags);
    let mut settings: TrainArgs = serde_json::from_value(serde_json::Value::Object(merged))?;
    settings.config = Some(path);
    Ok(settings)
}

/// Resolved run settings: LoRA unless `--full`, with the paper's recipe as defaults.
fn train_config(args: &TrainArgs) -> Result<TrainConfig> {
    let lora = if args.full {
        if args.lora_rank.is_some() || args.lora_targets.is_some() {
            bail!("--lora-rank/--lora-targets contradict --full: drop one of them");
        }
        None
    } else {
        let defaults = LoraSettings::default();
        let rank = args.lora_rank.unwrap_or(defaults.rank);
        Some(LoraSettings {
            rank,
            alpha: args.lora_alpha.unwrap_or(2.0 * rank as f64),
            dropout: args.lora_dropout.unwrap_or(defaults.dropout),
            targets: match &args.lora_targets {
                Some(list) => LoraSettings::parse_targets(list)?,
                None => defaults.targets,
            },
        })
    };
    let defaults = TrainConfig::default();
    let schedule = match args.schedule.as_deref().unwrap_or("linear") {
        "linear" => Schedule::Linear,
        "cosine" => Schedule::Cosine,
        "constant" => Schedule::Constant,
        other => bail!("schedule `{other}`: expected linear, cosine or constant"),
    };
    let max_grad_norm = args.max_grad_norm.unwrap_or(1.0);
    Ok(TrainConfig {
        epochs: args.epochs.unwrap_or(defaults.epochs),
        lr: args
            .lr
            .unwrap_or(if lora.is_some() { 2e-4 } else { defaults.lr }),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        grad_accum: args.grad_accum.unwrap_or(defaults.grad_accum),
        max_len: args.max_len.unwrap_or(defaults.max_len),
        warmup_ratio: args.warmup_ratio.unwrap_or(defaults.warmup_ratio),
        schedule,
        weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
        max_grad_norm: (max_grad_norm > 0.0).then_some(max_grad_norm),
        seed: args.seed.unwrap_or(defaults.seed),
        packing: args.packing,
        save_every: args.save_every.unwrap_or(0),
        max_steps: args.max_steps,
        lora,
        precision: Precision::parse(args.dtype.as_deref().unwrap_or("f32"))?,
    })
}

pub fn run(args: TrainArgs) -> Result<()> {
    let args = merged_settings(args)?;
    let (Some(data), Some(output)) = (&args.data, &args.output) else {
        bail!("`seqit train` needs --data and --output (as flags or in the --config file)");
    };
    let config = train_config(&args)?;
    let device = parse_device(args.device.as_deref().unwrap_or("cpu"))?;
    if device.is_cpu() && config.precision != Precision::F32 {
        // The CPU computes bf16/f16 in f32 and keeps f32 copies for backward
        // (docs/benchmarks.md: bf16 LoRA 8.6 GB vs 4.8 GB in f32 at 4 x 512).
        eprintln!(
            "note: on the CPU, f32 trains faster and in less memory than bf16/f16, which are meant for GPUs"
        );
    }
    let model = resolve_model(args.model.as_deref())?;
    let format = ChatFormat::from_name(args.template.as_deref().unwrap_or("model"))?;
    let conversations = read_conversations(data, &format)?;
    let eval_conversations = match &args.eval_data {
        Some(path) => read_conversations(path, &format)?,
        None => Vec::new(),
    };
    let mode = match &config.lora {
        Some(l) => format!(
            "LoRA r={} alpha={} dropout={} on {}",
            l.rank,
            l.alpha,
            l.dropout,
            l.targets.join(",")
        ),
        None => "full fine-tuning".to_string(),
    };
    eprintln!(
        "{mode}, lr {:.1e}, {:?} on {}",
        config.lr,
        config.precision,
        args.device.as_deref().unwrap_or("cpu")
    );
    if args.resume {
        match output
            .is_dir()
            .then(|| seqit_train::latest_checkpoint(output))
            .transpose()?
            .flatten()
        {
            Some(dir) => eprintln!("resuming from `{}`", dir.display()),
            None => eprintln!(
                "no checkpoint in `{}` yet: training from the start",
                output.display()
            ),
        }
    }
    let job = TrainJob {
        model,
        conversations,
        format,
        output: output.clone(),
        config: config.clone(),
        resume: args.resume,
        eval_conversations,
        eval_every: args.eval_every.unwrap_or(0),
        device,
    };
    let started = Instant::now();
    let summary = run_training(&job, &mut |m, total| {
        let eval = m
            .eval_loss
            .map(|l| format!("  eval-loss {l:.4}"))
            .unwrap_or_default();
        eprintln!(
            "step {}/{total}  loss {:.4}  lr {:.2e}  grad-norm {:.3}  {:.0} tokens/s{eval}",
            m.step, m.loss, m.lr, m.grad_norm, m.tokens_per_second
        );
    })?;
    if summary.skipped_without_labels > 0 {
        eprintln!(
            "skipped {} examples that had no assistant token within --max-len {}",
            summary.skipped_without_labels, config.max_len
        );
    }
    eprintln!(
        "trained {} updates on {} examples in {:.1}s; model written to {}",
        summary.updates,
        summary.examples,
        started.elapsed().as_secs_f64(),
        summary.model_dir.display()
    );
    if let Some(adapter) = &summary.adapter_dir {
        eprintln!(
            "LoRA adapter (PEFT layout) written to {}",
            adapter.display()
        );
    }
    Ok(())
}
