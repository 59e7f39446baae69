//! `seqit seqeval build`: a SeqEval set from any prompt set, by rounds of rewriting
//! with the teacher (see `seqit_augment::SeqEvalBuilder`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use seqit_augment::{parse_depths, PromptSet, SeqEvalBuilder, SeqEvalSettings};
use seqit_data::Schema;

use super::augment::{runtime, Display, TeacherArgs};

#[derive(Debug, Subcommand)]
pub enum SeqevalCommand {
    /// Build a SeqEval set: each prompt rewritten 1-4 times into a sequential instruction.
    Build(SeqevalBuildArgs),
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
    #[command(flatten)]
    pub teacher: TeacherArgs,
}

pub fn run(command: SeqevalCommand) -> Result<()> {
    let SeqevalCommand::Build(args) = command;
    let depths = parse_depths(&args.depths)?;
    if depths.len() != args.shares.len() {
        bail!(
            "`--depths {}` names {} depths but `--shares` gives {} shares",
            args.depths,
            depths.len(),
            args.shares.len()
        );
    }
    let prompts = PromptSet::load_or_builtin(args.teacher.prompts.as_deref())?;
    let settings = SeqEvalSettings {
        depths,
        shares: args.shares.clone(),
        seed: args.teacher.seed,
        decoding: args.teacher.decoding()?,
        attempts: args.attempts,
    };
    let (_, records) = seqit_augment::read_records(&args.input, args.input_format)?;
    runtime()?.block_on(build(args, prompts, settings, records))
}

async fn build(
    args: SeqevalBuildArgs,
    prompts: PromptSet,
    settings: SeqEvalSettings,
    records: Vec<seqit_data::Record>,
) -> Result<()> {
    let teacher = args.teacher.open(&args.output, &prompts).await?;
    eprintln!(
        "building SeqEval from {} prompts in `{}` with {}",
        records.len(),
        args.input.display(),
        teacher.info().backend
    );
    let builder = SeqEvalBuilder {
        prompts: &prompts,
        teacher: &teacher,
        settings,
        concurrency: args.teacher.items_in_flight(),
    };
    let progress = Display::new(teacher.client().ledger().clone());
    let stats = builder.run(&records, &args.output, &progress).await?;
    let mut depths: Vec<_> = stats.depths.iter().collect();
    depths.sort();
    eprintln!(
        "wrote {} records to {} (by depth: {}); {} chains stopped short, {} prompts dropped",
        stats.written,
        args.output.display(),
        depths
            .iter()
            .map(|(d, n)| format!("{d}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        stats.short_chains,
        stats.dropped
    );
    eprintln!("{}", teacher.client().ledger().summary());
    Ok(())
}
