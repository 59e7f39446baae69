//! `seqit export-recipe`: hand-off to a distributed trainer.

use anyhow::{bail, Result};
use seqit_train::{
    export_recipe, paper, read_conversations, ChatFormat, DistributedTrainer, RecipeSettings,
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
    let settings = RecipeSettings {
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
