//! `seqit seqeval build`: a SeqEval set from any prompt set, by rounds of rewriting
//! with the teacher (the job is `seqit_augment::build_seqeval`); `seqit seqeval synth`:
//! a verifiable SeqEval set, chains whose every step a program checks
//! (`seqit_augment::synthesize_seqeval`).

use anyhow::Result;
use clap::Subcommand;
use seqit_augment::{SeqevalBuildOptions, SeqevalSynthOptions};

use super::augment::{printer_for, runtime};
use crate::printer::note;

#[derive(Debug, Subcommand)]
pub enum SeqevalCommand {
    /// Build a SeqEval set: each prompt rewritten 1-4 times into a sequential instruction.
    Build(Box<SeqevalBuildOptions>),
    /// Synthesize a verifiable SeqEval set: chained instructions of 1-4 steps, each step
    /// checked by program (no judge needed to score it).
    Synth(SeqevalSynthOptions),
}

pub fn run(command: SeqevalCommand) -> Result<()> {
    match command {
        SeqevalCommand::Build(options) => {
            let job = options.job()?;
            let report = runtime()?.block_on(seqit_augment::build_seqeval(&job, printer_for))?;
            note(report.summary(&job.output));
        }
        SeqevalCommand::Synth(options) => {
            let job = options.job()?;
            let report = seqit_augment::synthesize_seqeval(&job)?;
            note(format!(
                "wrote {} verifiable items to {} (depths {}, {} per depth, seed {}, templates {})",
                report.items,
                job.output.display(),
                options.depths,
                options.per_depth,
                options.seed,
                report.templates
            ));
        }
    }
    Ok(())
}
