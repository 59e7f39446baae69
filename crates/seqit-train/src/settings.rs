//! `seqit train`'s settings: one typed struct that clap parses from flags, that a
//! `--config` TOML file fills in, and that `seqit run` turns back into a command line
//! ([`seqit_core::flags::ToFlags`]); [`TrainSettings::job`] resolves it into a
//! [`TrainJob`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use seqit_core::progress::Progress;
use seqit_engine::TemplateVariables;
use serde::{Deserialize, Serialize};

use crate::{
    latest_checkpoint, read_conversations, ChatFormat, LoraSettings, Precision, Schedule,
    TrainConfig, TrainJob,
};

/// `seqit train` settings. Every one can also come from `--config FILE` (TOML, the same
/// keys as the flags, e.g. `lora-rank = 8`); flags given on the command line win.
/// Unset values get the defaults shown, which follow the SIT paper's recipe.
#[derive(Debug, Clone, PartialEq, clap::Args, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrainSettings {
    /// TOML file of settings (keys as the flags, without `--`).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Base model: a Hugging Face directory, a `.gguf` file (dequantized), or `smollm2-135m`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Training data in any format `seqit data` reads (Alpaca, ShareGPT, messages, ...).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// Run directory: metrics.jsonl, checkpoints, the trained (merged) model in `model/`
    /// and, with LoRA, the PEFT adapter in `adapter/`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// Chat format the examples are rendered in: `model` (the model's own template, the
    /// default), `tulu` (the SIT paper's), `chatml`, or a path to a Jinja template.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A variable for the chat template, NAME=VALUE with VALUE as JSON where it parses
    /// (repeatable): `enable_thinking=false` renders Qwen3's turns without reasoning.
    /// Generate with the same ones.
    #[arg(long, value_name = "NAME=VALUE")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chat_template_var: Vec<String>,
    /// Train every weight instead of LoRA adapters (the paper's setting).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "is_false")]
    pub full: bool,
    /// LoRA rank [default: 16].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<usize>,
    /// LoRA alpha; updates are scaled by alpha / rank [default: 2 × rank].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<f64>,
    /// Dropout on the adapters' inputs [default: 0.05].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_dropout: Option<f64>,
    /// Projections that get adapters [default: q,k,v,o,gate,up,down].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_targets: Option<String>,
    /// [default: 3]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Peak learning rate [default: 2e-5 with --full, 2e-4 for LoRA].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Rows per micro-batch [default: 4].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Micro-batches per update [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_accum: Option<usize>,
    /// Longest example in tokens; longer ones are truncated, and dropped when no
    /// assistant token is left [default: 2048].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// [default: 0.03]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    /// linear, cosine or constant [default: linear].
    #[arg(long, value_parser = ["linear", "cosine", "constant"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// [default: 0]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm (0 disables) [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    /// [default: 42]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Pack several examples per row (no attention across them).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "is_false")]
    pub packing: bool,
    /// Validation data; its loss goes to metrics.jsonl as `eval_loss`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<PathBuf>,
    /// Evaluate every N updates (0: only at the end) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// Checkpoint every N updates (0: only at the end) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_every: Option<usize>,
    /// Stop after N updates.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Weights and activations: f32, or bf16/f16 with f32 master weights and optimizer
    /// state (f16 with dynamic loss scaling) [default: f32].
    #[arg(long, value_parser = ["f32", "bf16", "f16"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`) [default: cpu].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Continue the run in `--output` from its newest checkpoint.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "is_false")]
    pub resume: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TrainSettings {
    /// These settings over the `--config` file's (the flags win); without a config file,
    /// the settings as they are.
    pub fn with_config_file(self) -> Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the config file `{}`", path.display()))?;
        let from_file: Self = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let serde_json::Value::Object(mut merged) = serde_json::to_value(&from_file)? else {
            unreachable!("a struct serializes to an object");
        };
        let serde_json::Value::Object(flags) = serde_json::to_value(&self)? else {
            unreachable!("a struct serializes to an object");
        };
        merged.extend(flags);
        let mut settings: Self = serde_json::from_value(serde_json::Value::Object(merged))?;
        settings.config = Some(path);
        Ok(settings)
    }

    /// The loop's settings: LoRA unless `full`, with the paper's recipe as defaults.
    pub fn config(&self) -> Result<TrainConfig> {
        let lora = if self.full {
            if self.lora_rank.is_some() || self.lora_targets.is_some() {
                bail!("--lora-rank/--lora-targets contradict --full: drop one of them");
            }
            None
        } else {
            let defaults = LoraSettings::default();
            let rank = self.lora_rank.unwrap_or(defaults.rank);
            Some(LoraSettings {
                rank,
                alpha: self.lora_alpha.unwrap_or(2.0 * rank as f64),
                dropout: self.lora_dropout.unwrap_or(defaults.dropout),
                targets: match &self.lora_targets {
                    Some(list) => LoraSettings::parse_targets(list)?,
                    None => defaults.targets,
                },
            })
        };
        let defaults = TrainConfig::default();
        let schedule = match self.schedule.as_deref().unwrap_or("linear") {
            "linear" => Schedule::Linear,
            "cosine" => Schedule::Cosine,
            "constant" => Schedule::Constant,
            other => bail!("schedule `{other}`: expected linear, cosine or constant"),
        };
        let max_grad_norm = self.max_grad_norm.unwrap_or(1.0);
        Ok(TrainConfig {
            epochs: self.epochs.unwrap_or(defaults.epochs),
            lr: self
                .lr
                .unwrap_or(if lora.is_some() { 2e-4 } else { defaults.lr }),
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            grad_accum: self.grad_accum.unwrap_or(defaults.grad_accum),
            max_len: self.max_len.unwrap_or(defaults.max_len),
            warmup_ratio: self.warmup_ratio.unwrap_or(defaults.warmup_ratio),
            schedule,
            weight_decay: self.weight_decay.unwrap_or(defaults.weight_decay),
            max_grad_norm: (max_grad_norm > 0.0).then_some(max_grad_norm),
            seed: self.seed.unwrap_or(defaults.seed),
            packing: self.packing,
            save_every: self.save_every.unwrap_or(0),
            max_steps: self.max_steps,
            lora,
            precision: Precision::parse(self.dtype.as_deref().unwrap_or("f32"))?,
        })
    }

    /// The job these settings describe, its data read and checked; what it will do is
    /// reported through `progress`.
    pub fn job(&self, progress: &dyn Progress) -> Result<TrainJob> {
        let (Some(data), Some(output)) = (&self.data, &self.output) else {
            bail!("`seqit train` needs --data and --output (as flags or in the --config file)");
        };
        let config = self.config()?;
        let device_name = self.device.as_deref().unwrap_or("cpu");
        let device = seqit_model::parse_device(device_name)?;
        if device.is_cpu() && config.precision != Precision::F32 {
            // The CPU computes bf16/f16 in f32 and keeps f32 copies for backward
            // (docs/benchmarks.md: bf16 LoRA 8.6 GB vs 4.8 GB in f32 at 4 x 512).
            progress.note(
                "note: on the CPU, f32 trains faster and in less memory than bf16/f16, which are meant for GPUs",
            );
        }
        let model = seqit_engine::resolve_model(self.model.as_deref())?;
        let format = ChatFormat::from_name(self.template.as_deref().unwrap_or("model"))?;
        let template_variables = self
            .chat_template_var
            .iter()
            .map(|arg| seqit_engine::parse_template_variable(arg))
            .collect::<Result<TemplateVariables, String>>()
            .map_err(|e| anyhow::anyhow!("--chat-template-var {e}"))?;
        let conversations = read_conversations(data, &format)?;
        let eval_conversations = match &self.eval_data {
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
        progress.note(&format!(
            "{mode}, lr {:.1e}, {:?} on {device_name}",
            config.lr, config.precision
        ));
        if self.resume {
            match output
                .is_dir()
                .then(|| latest_checkpoint(output))
                .transpose()?
                .flatten()
            {
                Some(dir) => progress.note(&format!("resuming from `{}`", dir.display())),
                None => progress.note(&format!(
                    "no checkpoint in `{}` yet: training from the start",
                    output.display()
                )),
            }
        }
        Ok(TrainJob {
            model,
            conversations,
            format,
            template_variables,
            output: output.clone(),
            config,
            resume: self.resume,
            eval_conversations,
            eval_every: self.eval_every.unwrap_or(0),
            device,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use seqit_core::flags::ToFlags;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        settings: TrainSettings,
    }

    fn parse(flags: &[String]) -> TrainSettings {
        Command::try_parse_from(std::iter::once("train".to_string()).chain(flags.iter().cloned()))
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .settings
    }

    #[test]
    fn every_setting_survives_the_command_line() {
        let settings = TrainSettings {
            // Not a flag to give back: the runner passes settings, not config files.
            config: None,
            model: Some("smollm2-135m".into()),
            data: Some("data/sit.jsonl".into()),
            output: Some("runs/sit".into()),
            template: Some("tulu".into()),
            chat_template_var: vec!["enable_thinking=false".into(), "mode=brief".into()],
            full: true,
            lora_rank: Some(8),
            lora_alpha: Some(16.5),
            lora_dropout: Some(0.1),
            lora_targets: Some("q,v".into()),
            epochs: Some(2),
            lr: Some(2e-5),
            batch_size: Some(4),
            grad_accum: Some(16),
            max_len: Some(2048),
            warmup_ratio: Some(0.03),
            schedule: Some("cosine".into()),
            weight_decay: Some(0.01),
            max_grad_norm: Some(0.5),
            seed: Some(7),
            packing: true,
            eval_data: Some("data/val.jsonl".into()),
            eval_every: Some(10),
            save_every: Some(5),
            max_steps: Some(100),
            dtype: Some("bf16".into()),
            device: Some("cuda:1".into()),
            resume: true,
        };
        assert_eq!(parse(&settings.to_flags()), settings);
        assert_eq!(
            parse(&TrainSettings::default().to_flags()),
            TrainSettings::default()
        );
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.toml");
        std::fs::write(&path, "lora-rank = 8\nepochs = 5\npacking = true\n").unwrap();
        let settings = parse(&[
            "--config".into(),
            path.display().to_string(),
            "--epochs".into(),
            "1".into(),
        ])
        .with_config_file()
        .unwrap();
        assert_eq!(
            (settings.lora_rank, settings.epochs, settings.packing),
            (Some(8), Some(1), true)
        );
        std::fs::write(&path, "lora-rnk = 8\n").unwrap();
        let err = parse(&["--config".into(), path.display().to_string()])
            .with_config_file()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.toml") && err.contains("lora-rnk"),
            "{err}"
        );
    }
}
