//! `seqit seqeval build`: a SeqEval set from any prompt set, by rounds of rewriting
//! with the teacher (the job is `seqit_augment::build_seqeval`); `seqit seqeval synth`:
//! a verifiable SeqEval set, chains whose every step a program checks
//! (`seqit_augment::synthesize_seqeval`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use seqit_augment::{parse_depths, SeqEvalJob, SeqEvalSettings, SynthJob};
use seqit_data::Schema;
use seqit_verify::SynthSettings;

use super::augment::{printer_for, runtime, TeacherArgs};
use super::Switch;
use crate::printer::note;

#[derive(Debug, Subcommand)]
pub enum SeqevalCommand {
    /// Build a SeqEval set: each prompt rewritten 1-4 times into a sequential instruction.
    Build(Box<SeqevalBuildArgs>),
    /// Synthesize a verifiable SeqEval set: chained instructions of 1-4 steps, each step
    /// checked by program (no judge needed to score it).
    Synth(SeqevalSynthArgs),
}

#[derive(Debug, Args)]
pub struct SeqevalSynthArgs {
    /// JSONL to write (SeqEval records plus each step's check as data).
    #[arg(long)]
    pub output: PathBuf,
    /// Chain depths: a range `1-4` or a list `1,2,4`.
    #[arg(long, default_value = "1-4")]
    pub depths: String,
    /// Items per depth.
    #[arg(long, default_value_t = 100)]
    pub per_depth: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Step templates (TOML like `prompts/seqeval-verifiable/v1/steps.toml`); default:
    /// the built-in ones.
    #[arg(long)]
    pub templates: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SeqevalBuildArgs {
    /// Base prompts: a prompt list (.txt), alpaca_eval, Alpaca or chat data.
    #[arg(long)]
    pub input: PathBuf,
    /// The input's format when it cannot be detected.
    #[arg(long)]
    pub input_format: Option<Schema>,
    /// SeqEval JSONL to write (`.state.jsonl` and `.stats.json` go next to it).
    #[arg(long)]
    pub output: PathBuf,
    /// Depths to place prompts at: a range `1-4` or a list `1,2,3,4`.
    #[arg(long, default_value = "1-4")]
    pub depths: String,
    /// Share of prompts per depth, one per depth.
    #[arg(long, value_delimiter = ',', default_value = "10,20,30,40")]
    pub shares: Vec<f64>,
    /// Tries per round when a rewrite cannot be read.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    /// Constrain the teacher's rewrites to the format the parser reads (the prompt
    /// set's `rewrite_format`); `off`: free text, as the paper.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub structured: Switch,
    #[command(flatten)]
    pub teacher: TeacherArgs,
}

pub fn run(command: SeqevalCommand) -> Result<()> {
    match command {
        SeqevalCommand::Build(args) => build(*args),
        SeqevalCommand::Synth(args) => synth(args),
    }
}

fn build(args: SeqevalBuildArgs) -> Result<()> {
    let depths = parse_depths(&args.depths)?;
    if depths.len() != args.shares.len() {
        bail!(
            "`--depths {}` names {} depths but `--shares` gives {} shares",
            args.depths,
            depths.len(),
            args.shares.len()
        );
    }
    let job = SeqEvalJob {
        input: args.input,
        input_format: args.input_format,
        output: args.output,
        settings: SeqEvalSettings {
            depths,
            shares: args.shares,
            seed: args.teacher.seed,
            decoding: args.teacher.decoding()?,
            attempts: args.attempts,
        },
        structured: args.structured == Switch::On,
        teacher: args.teacher.settings(),
    };
    let report = runtime()?.block_on(seqit_augment::build_seqeval(&job, printer_for))?;
    note(report.summary(&job.output));
    Ok(())
}

fn synth(args: SeqevalSynthArgs) -> Result<()> {
    let job = SynthJob {
        output: args.output,
        settings: SynthSettings {
            depths: parse_depths(&args.depths)?
                .into_iter()
                .map(|d| d as usize)
                .collect(),
            per_depth: args.per_depth,
            seed: args.seed,
        },
        templates: args.templates,
    };
    let report = seqit_augment::synthesize_seqeval(&job)?;
    note(format!(
        "wrote {} verifiable items to {} (depths {}, {} per depth, seed {}, templates {})",
        report.items,
        job.output.display(),
        args.depths,
        args.per_depth,
        args.seed,
        report.templates
    ));
    Ok(())
}
