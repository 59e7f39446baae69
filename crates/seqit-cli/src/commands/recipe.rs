//! `seqit export-recipe`: hand-off to a distributed trainer.

use std::path::Path;

use anyhow::{bail, Context, Result};
use seqit_train::{
    export_recipe, known_eos_token, paper, read_conversations, ChatFormat, DistributedTrainer,
    RecipeSettings,
};

use crate::cli::{ExportRecipeArgs, PresetArg};

pub fn run(args: ExportRecipeArgs) -> Result<()> {
    if args.preset == Some(PresetArg::Paper) {
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
    let eos_token = match args.eos_token {
        Some(eos) => Some(eos),
        None => local_eos_token(Path::new(&args.model))?
            .or_else(|| known_eos_token(&args.model).map(str::to_string)),
    };
    let settings = RecipeSettings {
        eos_token,
        model: args.model,
        gpus: args.gpus,
        micro_batch: args.micro_batch,
        effective_batch: args.effective_batch,
        max_len: args.max_len,
        llamafactory_template: args.llamafactory_template,
    };
    let files = export_recipe(trainer, &conversations, &settings, &args.output)?;
    eprintln!(
        "wrote {} ({} examples) to {}",
        files.join(", "),
        conversations.len(),
        args.output.display()
    );
    Ok(())
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
