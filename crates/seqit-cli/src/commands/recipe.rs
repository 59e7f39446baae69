//! `seqit export-recipe`: hand-off to a distributed trainer (`seqit_train::RecipeOptions`).

use anyhow::Result;
use seqit_train::RecipeOptions;

use crate::printer::note;

pub fn run(options: RecipeOptions) -> Result<()> {
    let (files, examples) = options.export()?;
    note(format!(
        "wrote {} ({examples} examples) to {}",
        files.join(", "),
        options.output.display()
    ));
    Ok(())
}
