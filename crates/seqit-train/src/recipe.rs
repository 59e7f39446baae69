//! Hand-off to distributed trainers: the data in the trainer's format plus a config that
//! reproduces the SIT paper's recipe (full fine-tuning, lr 2e-5, 3 epochs, effective
//! batch 128, max length 2048, 3% warmup, linear decay, bf16, assistant-only loss).
//! The config texts are versioned files in `prompts/recipes/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use seqit_core::{ChatMessage, Role};

use crate::{read_conversations, ChatFormat};
use serde::Serialize;
use serde_json::json;

const TRL: &str = include_str!("../../../prompts/recipes/trl.yaml");
const ACCELERATE_ZERO3: &str = include_str!("../../../prompts/recipes/accelerate_zero3.yaml");
const LLAMAFACTORY: &str = include_str!("../../../prompts/recipes/llamafactory.yaml");
const AXOLOTL: &str = include_str!("../../../prompts/recipes/axolotl.yaml");
const DEEPSPEED_ZERO3: &str = include_str!("../../../prompts/recipes/ds_z3_config.json");
/// The Tulu chat format with TRL's `{% generation %}` markers (assistant-only loss).
const TULU_GENERATION: &str = include_str!("../../../prompts/recipes/tulu_generation.jinja");
/// The Tulu chat format as `seqit train --template tulu` renders it.
const TULU: &str = include_str!("../../../prompts/templates/tulu.jinja");
/// The SIT paper's training recipe (the written recipes carry it; `--preset paper` and
/// `[[train]] preset = "paper"` hold a run to it).
pub mod paper {
    /// Full fine-tuning at this peak learning rate.
    pub const LR: f64 = 2e-5;
    /// Passes over the training data.
    pub const EPOCHS: usize = 3;
    /// Sequences per optimizer step, over all devices.
    pub const EFFECTIVE_BATCH: usize = 128;
    /// Tokens per sequence; longer ones are cut.
    pub const MAX_LEN: usize = 2048;
    /// Linear warm-up over this share of the steps, then linear decay to 0.
    pub const WARMUP_SHARE: f64 = 0.03;
    /// AdamW's weight decay: none.
    pub const WEIGHT_DECAY: f64 = 0.0;
    /// The chat format (`prompts/templates/tulu.jinja`).
    pub const TEMPLATE: &str = "tulu";
}
use paper::{EPOCHS, WARMUP_SHARE};

/// The trainer [`export_recipe`] writes for; every recipe also gets `ds_z3_config.json`
/// (DeepSpeed ZeRO-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistributedTrainer {
    /// TRL's SFT script under Accelerate: `train.jsonl`, `trl.yaml`,
    /// `accelerate_zero3.yaml` and `tulu.jinja` (the Tulu format with assistant-only loss).
    Trl,
    /// LLaMA-Factory: ShareGPT data in `data/` and `llamafactory.yaml`.
    LlamaFactory,
    /// Axolotl: `train.jsonl` and `axolotl.yaml`.
    Axolotl,
}

/// What [`export_recipe`] fills into the recipe templates; the default is the paper's setup
/// (Llama 3 8B on 8 GPUs).
#[derive(Debug, Clone)]
pub struct RecipeSettings {
    /// Hugging Face id or path of the base model (the paper: meta-llama/Meta-Llama-3-8B).
    pub model: String,
    /// GPUs the run is spread over (the launcher's process count).
    pub gpus: usize,
    /// Sequences per GPU per forward pass.
    pub micro_batch: usize,
    /// Sequences per optimizer step over all GPUs; a multiple of `gpus × micro_batch`, the
    /// quotient being the gradient accumulation.
    pub effective_batch: usize,
    /// Tokens per sequence; longer ones are cut.
    pub max_len: usize,
    /// LLaMA-Factory's chat format: [`TULU_FOR_LLAMAFACTORY`] (the paper's, written
    /// into the data) or the name of one of LLaMA-Factory's templates (e.g. `llama3`).
    pub llamafactory_template: String,
    /// The base model's end-of-sequence text (`<|end_of_text|>` for Llama 3): the Tulu
    /// format written for LLaMA-Factory ends each answer with it.
    pub eos_token: Option<String>,
}

/// `llamafactory_template` value that writes the Tulu format into the data.
pub const TULU_FOR_LLAMAFACTORY: &str = "tulu";

/// The end-of-sequence text of the paper's base models, for recipes written without a
/// local tokenizer to read it from.
pub fn known_eos_token(model: &str) -> Option<&'static str> {
    match model {
        "meta-llama/Meta-Llama-3-8B" => Some("<|end_of_text|>"),
        "mistralai/Mistral-7B-v0.1" => Some("</s>"),
        _ => None,
    }
}

impl Default for RecipeSettings {
    fn default() -> Self {
        Self {
            model: "meta-llama/Meta-Llama-3-8B".into(),
            gpus: 8,
            micro_batch: 2,
            effective_batch: 128,
            max_len: 2048,
            llamafactory_template: TULU_FOR_LLAMAFACTORY.into(),
            eos_token: Some("<|end_of_text|>".into()),
        }
    }
}

/// Writes the data and configs for `trainer` into `output` and returns the files written.
pub fn export_recipe(
    trainer: DistributedTrainer,
    conversations: &[Vec<ChatMessage>],
    settings: &RecipeSettings,
    output: &Path,
) -> Result<Vec<String>> {
    let per_step = settings.gpus * settings.micro_batch;
    if per_step == 0 || !settings.effective_batch.is_multiple_of(per_step) {
        bail!(
            "effective batch {} is not a multiple of gpus × micro batch = {per_step}",
            settings.effective_batch
        );
    }
    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create `{}`", output.display()))?;
    let out_dir = output.join("checkpoints").display().to_string();
    let grad_accum = (settings.effective_batch / per_step).to_string();
    // Trainers that take warm-up in steps get the paper's 3% of the optimizer steps.
    let total_steps = conversations.len().div_ceil(settings.effective_batch) * EPOCHS;
    let warmup_steps = ((total_steps as f64 * WARMUP_SHARE).ceil() as usize).max(1);
    let tulu_block: String = TULU
        .trim_end()
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect();
    let fill = |template: &str, data_file: &str| {
        template
            .replace("{{model}}", &settings.model)
            .replace("{{gpus}}", &settings.gpus.to_string())
            .replace("{{micro_batch}}", &settings.micro_batch.to_string())
            .replace("{{grad_accum}}", &grad_accum)
            .replace("{{effective_batch}}", &settings.effective_batch.to_string())
            .replace("{{max_len}}", &settings.max_len.to_string())
            .replace("{{output}}", &out_dir)
            .replace("{{recipe_dir}}", &output.display().to_string())
            .replace("{{data_file}}", data_file)
            .replace(
                "{{dataset_dir}}",
                &output.join("data").display().to_string(),
            )
            .replace("{{total_steps}}", &total_steps.to_string())
            .replace("{{warmup_steps}}", &warmup_steps.to_string())
            .replace("{{tulu_template}}\n", &tulu_block)
    };
    let mut files = Vec::new();
    let mut write = |name: &str, text: String| -> Result<()> {
        let path = output.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        seqit_core::durable::atomic_write(&path, text.as_bytes())
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        files.push(name.to_string());
        Ok(())
    };
    match trainer {
        DistributedTrainer::Trl | DistributedTrainer::Axolotl => {
            let data_file = output.join("train.jsonl").display().to_string();
            write("train.jsonl", messages_jsonl(conversations))?;
            write("ds_z3_config.json", DEEPSPEED_ZERO3.to_string())?;
            if trainer == DistributedTrainer::Trl {
                write("tulu.jinja", TULU_GENERATION.to_string())?;
                write("trl.yaml", fill(TRL, &data_file))?;
                write("accelerate_zero3.yaml", fill(ACCELERATE_ZERO3, &data_file))?;
            } else {
                write("axolotl.yaml", fill(AXOLOTL, &data_file))?;
            }
        }
        DistributedTrainer::LlamaFactory => {
            let (data, template) = if settings.llamafactory_template == TULU_FOR_LLAMAFACTORY {
                let Some(eos) = settings.eos_token.as_deref() else {
                    bail!(
                        "the Tulu format for LLaMA-Factory needs the base model's end-of-sequence text: \
                         give --eos-token (e.g. `<|end_of_text|>` for Llama 3), or a LLaMA-Factory \
                         template name with --llamafactory-template"
                    );
                };
                let rendered = conversations
                    .iter()
                    .map(|c| tulu_turns(c, eos))
                    .collect::<Result<Vec<_>>>()?;
                // `empty` adds nothing around the turns: they already hold the Tulu text.
                (sharegpt_json(&rendered)?, "empty")
            } else {
                (
                    sharegpt_json(conversations)?,
                    settings.llamafactory_template.as_str(),
                )
            };
            write("data/seqit_sit.json", data)?;
            let info = json!({"seqit_sit": {
                "file_name": "seqit_sit.json",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system"},
            }});
            write(
                "data/dataset_info.json",
                serde_json::to_string_pretty(&info)?,
            )?;
            write("ds_z3_config.json", DEEPSPEED_ZERO3.to_string())?;
            write(
                "llamafactory.yaml",
                fill(LLAMAFACTORY, "").replace("{{llamafactory_template}}", template),
            )?;
        }
    }
    Ok(files)
}

fn messages_jsonl(conversations: &[Vec<ChatMessage>]) -> String {
    conversations
        .iter()
        .map(|c| format!("{}\n", json!({ "messages": c })))
        .collect()
}

/// A conversation as user/assistant turns whose texts, put together, are the Tulu
/// format (`prompts/templates/tulu.jinja`, the paper's training text): each user turn
/// carries the blocks before the answer (the system block on the first, the newline
/// that ends the previous answer on later ones), each assistant turn the answer and
/// `eos`. LLaMA-Factory trains the assistant turns only, as the paper masks.
fn tulu_turns(conversation: &[ChatMessage], eos: &str) -> Result<Vec<ChatMessage>> {
    let (system, rest) = match conversation.split_first() {
        Some((first, rest)) if first.role == Role::System => (first.content.trim(), rest),
        _ => ("", conversation),
    };
    let mut prompt = format!("<|system|>\n{system}\n");
    let mut turns = Vec::with_capacity(rest.len());
    for message in rest {
        match message.role {
            Role::User => prompt.push_str(&format!("<|user|>\n{}\n", message.content.trim())),
            Role::Assistant => {
                prompt.push_str("<|assistant|>\n");
                turns.push(ChatMessage::user(std::mem::take(&mut prompt)));
                turns.push(ChatMessage::assistant(format!(
                    "{}{eos}",
                    message.content.trim()
                )));
                prompt.push('\n');
            }
            _ => bail!("the Tulu format has no role `{}`", message.role.as_str()),
        }
    }
    Ok(turns)
}

/// LLaMA-Factory's ShareGPT layout: system prompt apart, alternating human/gpt turns.
fn sharegpt_json(conversations: &[Vec<ChatMessage>]) -> Result<String> {
    let mut items = Vec::with_capacity(conversations.len());
    for (i, conversation) in conversations.iter().enumerate() {
        let mut system = None;
        let mut turns = Vec::new();
        for message in conversation {
            let from = match &message.role {
                Role::System => {
                    system = Some(message.content.clone());
                    continue;
                }
                Role::User => "human",
                Role::Assistant => "gpt",
                Role::Other(other) => {
                    bail!("conversation {i}: LLaMA-Factory's ShareGPT format has no role `{other}`")
                }
            };
            turns.push(json!({"from": from, "value": message.content}));
        }
        // Every item has the column (LLaMA-Factory reads it from each one); the Tulu
        // turns carry their system block themselves, so it is empty there.
        items.push(json!({ "conversations": turns, "system": system.unwrap_or_default() }));
    }
    Ok(serde_json::to_string_pretty(&items)?)
}

/// `seqit export-recipe`: the data and config that train the paper's recipe with a
/// distributed trainer.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RecipeOptions {
    /// Distributed trainer to write for.
    #[arg(long, value_parser = ["trl", "llamafactory", "axolotl"])]
    pub to: String,
    /// Training data in any format `seqit data` reads.
    #[arg(long)]
    pub data: PathBuf,
    /// Directory to write the data and configs to.
    #[arg(long)]
    pub output: PathBuf,
    /// Base model id or path for the trainer (the paper: meta-llama/Meta-Llama-3-8B).
    #[arg(long, default_value = "meta-llama/Meta-Llama-3-8B")]
    pub model: String,
    /// GPUs the trainer runs on.
    #[arg(long, default_value_t = 8)]
    pub gpus: usize,
    /// Rows per GPU per micro-batch.
    #[arg(long, default_value_t = 2)]
    pub micro_batch: usize,
    /// Rows per update over all GPUs (gradient accumulation makes up the rest).
    #[arg(long, default_value_t = 128)]
    pub effective_batch: usize,
    /// Longest example in tokens.
    #[arg(long, default_value_t = 2048)]
    pub max_len: usize,
    /// LLaMA-Factory's chat format: `tulu` (the paper's, written into the data; needs
    /// the base model's EOS text) or one of LLaMA-Factory's template names (`llama3`).
    #[arg(long, default_value = "tulu")]
    pub llamafactory_template: String,
    /// The base model's end-of-sequence text for the Tulu format (default: read from
    /// the local model's tokenizer_config.json, or known for the paper's base models).
    #[arg(long)]
    pub eos_token: Option<String>,
    /// Hold the recipe to a published setup: `paper` refuses an effective batch or a
    /// maximum length other than the SIT paper's (128, 2048); the recipe files always
    /// carry its other settings.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
}

/// A published training setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The SIT paper's: full fine-tuning, lr 2e-5, 3 epochs, effective batch 128, max
    /// length 2048, 3% warm-up, linear decay, no weight decay, Tulu format.
    Paper,
}

impl RecipeOptions {
    /// Checks these settings against the preset, reads the data in the Tulu format and
    /// writes the recipe; returns the files written and the number of examples.
    pub fn export(&self) -> Result<(Vec<String>, usize)> {
        let args = self;
        if args.preset == Some(Preset::Paper) {
            for (flag, value, papers) in [
                (
                    "--effective-batch",
                    args.effective_batch,
                    paper::EFFECTIVE_BATCH,
                ),
                ("--max-len", args.max_len, paper::MAX_LEN),
            ] {
                if value != papers {
                    bail!("`--preset paper` trains with {flag} {papers} (the SIT paper's), not {value}: drop one of them");
                }
            }
        }
        let trainer = match args.to.as_str() {
            "trl" => DistributedTrainer::Trl,
            "llamafactory" => DistributedTrainer::LlamaFactory,
            _ => DistributedTrainer::Axolotl,
        };
        // The recipes train in the paper's Tulu format (LLaMA-Factory's own template only when
        // asked), so the data is joined the way that format trains.
        let conversations = read_conversations(&args.data, &ChatFormat::Tulu)?;
        let eos_token = match args.eos_token.clone() {
            Some(eos) => Some(eos),
            None => local_eos_token(Path::new(&args.model))?
                .or_else(|| known_eos_token(&args.model).map(str::to_string)),
        };
        let settings = RecipeSettings {
            eos_token,
            model: args.model.clone(),
            gpus: args.gpus,
            micro_batch: args.micro_batch,
            effective_batch: args.effective_batch,
            max_len: args.max_len,
            llamafactory_template: args.llamafactory_template.clone(),
        };
        let files = export_recipe(trainer, &conversations, &settings, &args.output)?;
        Ok((files, conversations.len()))
    }
}

/// The `eos_token` of a local Hugging Face model directory's `tokenizer_config.json`
/// (a string, or an object with `content`); `None` when `model` is not such a directory.
fn local_eos_token(model: &Path) -> Result<Option<String>> {
    let path = model.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("`{}` is not JSON", path.display()))?;
    let eos = &config["eos_token"];
    Ok(eos
        .as_str()
        .or_else(|| eos["content"].as_str())
        .map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<Vec<ChatMessage>> {
        vec![vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("Translate 'cat', then define it."),
            ChatMessage::assistant("Chat. A small feline."),
        ]]
    }

    /// Writes `trainer`'s recipe for [`data`] into `dir` and returns its config, `name`.
    fn exported_config(
        trainer: DistributedTrainer,
        settings: &RecipeSettings,
        dir: &Path,
        name: &str,
    ) -> String {
        export_recipe(trainer, &data(), settings, dir).unwrap();
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    fn read_json(dir: &Path, name: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    }

    #[test]
    fn trl_recipe_has_the_paper_settings_and_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let files = export_recipe(
            DistributedTrainer::Trl,
            &data(),
            &RecipeSettings::default(),
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            files,
            [
                "train.jsonl",
                "ds_z3_config.json",
                "tulu.jinja",
                "trl.yaml",
                "accelerate_zero3.yaml"
            ]
        );
        let config = std::fs::read_to_string(dir.path().join("trl.yaml")).unwrap();
        for line in [
            "learning_rate: 2.0e-5",
            "num_train_epochs: 3",
            "per_device_train_batch_size: 2",
            "gradient_accumulation_steps: 8",
            "max_length: 2048",
            "warmup_steps: 0.03   # a float below 1 is a ratio of the total steps (transformers 5)",
            "lr_scheduler_type: linear",
            "bf16: true",
            "assistant_only_loss: true",
            "model_name_or_path: meta-llama/Meta-Llama-3-8B",
            // TRL reads local files through a dataset mixture.
            "datasets:",
            "  - path: json",
            "    split: train",
        ] {
            assert!(config.lines().any(|l| l == line), "missing `{line}`");
        }
        let data_line = format!(
            "    data_files: {}",
            dir.path().join("train.jsonl").display()
        );
        assert!(config.lines().any(|l| l == data_line), "{config}");
        let template_line = format!(
            "chat_template_path: {}",
            dir.path().join("tulu.jinja").display()
        );
        assert!(config.lines().any(|l| l == template_line), "{config}");
        let template = std::fs::read_to_string(dir.path().join("tulu.jinja")).unwrap();
        assert!(template.contains("{% generation %}"), "{template}");
        assert!(!config.contains("{{"), "unfilled placeholder");
        let first: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(dir.path().join("train.jsonl"))
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["messages"][0]["role"], "system");
        assert_eq!(first["messages"][2]["content"], "Chat. A small feline.");
    }

    #[test]
    fn llamafactory_recipe_writes_sharegpt_and_dataset_info() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RecipeSettings {
            gpus: 4,
            micro_batch: 4,
            ..RecipeSettings::default()
        };
        let config = exported_config(
            DistributedTrainer::LlamaFactory,
            &settings,
            dir.path(),
            "llamafactory.yaml",
        );
        assert!(
            config.contains("gradient_accumulation_steps: 8")
                && config.contains("train_on_prompt: false")
        );
        // Two conversations, effective batch 128: one step per epoch, 3 epochs.
        assert!(
            config.contains("warmup_steps: 1   # 3% of 3 steps"),
            "{config}"
        );
        assert!(config.contains("finetuning_type: full") && !config.contains("{{"));
        // The Tulu text is in the turns; LLaMA-Factory adds nothing around them.
        assert!(config.contains("\ntemplate: empty\n"), "{config}");
        let items = read_json(dir.path(), "data/seqit_sit.json");
        assert_eq!(items[0]["conversations"][0]["from"], "human");
        assert_eq!(
            items[0]["conversations"][0]["value"],
            "<|system|>\nBe brief.\n<|user|>\nTranslate 'cat', then define it.\n<|assistant|>\n"
        );
        assert_eq!(items[0]["conversations"][1]["from"], "gpt");
        assert_eq!(
            items[0]["conversations"][1]["value"],
            "Chat. A small feline.<|end_of_text|>"
        );

        // A LLaMA-Factory template by name: raw turns, system prompt apart.
        let named = RecipeSettings {
            llamafactory_template: "llama3".into(),
            ..settings
        };
        let config = exported_config(
            DistributedTrainer::LlamaFactory,
            &named,
            dir.path(),
            "llamafactory.yaml",
        );
        assert!(config.contains("\ntemplate: llama3\n"), "{config}");
        let items = read_json(dir.path(), "data/seqit_sit.json");
        assert_eq!(items[0]["system"], "Be brief.");
        assert_eq!(
            items[0]["conversations"][1]["value"],
            "Chat. A small feline."
        );
        let info = read_json(dir.path(), "data/dataset_info.json");
        assert_eq!(info["seqit_sit"]["formatting"], "sharegpt");
    }

    /// The LLaMA-Factory turns put together are the Tulu text `seqit train` renders.
    #[test]
    fn llamafactory_gets_the_tulu_text_in_its_turns() {
        let conversation = vec![
            ChatMessage::user(" Name a colour. "),
            ChatMessage::assistant("Red."),
            ChatMessage::user("Another?"),
            ChatMessage::assistant("Blue.\n"),
        ];
        let turns = tulu_turns(&conversation, "<|end_of_text|>").unwrap();
        assert_eq!(turns.len(), 4);
        assert_eq!(
            turns[0].content,
            "<|system|>\n\n<|user|>\nName a colour.\n<|assistant|>\n"
        );
        assert_eq!(turns[1].content, "Red.<|end_of_text|>");
        assert_eq!(turns[2].content, "\n<|user|>\nAnother?\n<|assistant|>\n");
        let joined: String = turns.iter().map(|t| t.content.as_str()).collect();
        let template =
            seqit_engine::ChatTemplate::new(TULU, None, Some("<|end_of_text|>")).unwrap();
        assert_eq!(joined, template.render(&conversation, false).unwrap());
        let with_system = tulu_turns(&data()[0], "</s>").unwrap();
        assert!(with_system[0]
            .content
            .starts_with("<|system|>\nBe brief.\n<|user|>\n"));

        let dir = tempfile::tempdir().unwrap();
        let settings = RecipeSettings {
            eos_token: None,
            model: "org/unknown".into(),
            ..RecipeSettings::default()
        };
        let err = export_recipe(
            DistributedTrainer::LlamaFactory,
            &data(),
            &settings,
            dir.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--eos-token"), "{err}");
    }

    #[test]
    fn axolotl_recipe_trains_assistant_turns_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = exported_config(
            DistributedTrainer::Axolotl,
            &RecipeSettings::default(),
            dir.path(),
            "axolotl.yaml",
        );
        assert!(
            config.contains("roles_to_train: [\"assistant\"]")
                && config.contains("train_on_eos: turn")
        );
        assert!(config.contains("sequence_len: 2048"));
        // No placeholder of seqit's (`{{name}}`) is left; the template's own Jinja
        // expressions (`{{ ... }}`) are.
        assert!(!config
            .split("{{")
            .skip(1)
            .any(|rest| rest.starts_with(|c: char| c.is_ascii_alphabetic())));
        // The Tulu template, as a YAML block under `chat_template_jinja`.
        let block = config
            .split("chat_template_jinja: |\n")
            .nth(1)
            .expect("a template block");
        let template: String = block
            .lines()
            .take_while(|l| l.starts_with("  "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        assert_eq!(template.trim_end(), TULU.trim_end());
        assert!(config.contains("chat_template: jinja\n"));
    }

    #[test]
    fn rejects_batch_sizes_that_do_not_divide() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RecipeSettings {
            gpus: 3,
            ..RecipeSettings::default()
        };
        let err =
            export_recipe(DistributedTrainer::Trl, &data(), &settings, dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");
    }
}
