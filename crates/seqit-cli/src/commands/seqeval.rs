//! `seqit seqeval build`: a SeqEval set from any prompt set, by rounds of rewriting
//! with the teacher (see `seqit_augment::SeqEvalBuilder`); `seqit seqeval synth`: a
//! verifiable SeqEval set, chains whose every step a program checks (see
//! `seqit_verify`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use seqit_augment::{parse_depths, PromptSet, SeqEvalBuilder, SeqEvalSettings, Stage};
use seqit_data::Schema;

use super::augment::{printer_for, runtime, TeacherArgs};
use super::Switch;

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
    let args = match command {
        SeqevalCommand::Build(args) => *args,
        SeqevalCommand::Synth(args) => return synth(&args),
    };
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
    let mut decoding = args.teacher.decoding()?;
    if args.structured == Switch::On {
        decoding.constraint = Some(prompts.format(Stage::Rewrite, decoding.max_tokens)?);
    }
    let settings = SeqEvalSettings {
        depths,
        shares: args.shares.clone(),
        seed: args.teacher.seed,
        decoding,
        attempts: args.attempts,
    };
    let (_, records) = seqit_augment::read_records(&args.input, args.input_format)?;
    runtime()?.block_on(build(args, prompts, settings, records))
}

fn synth(args: &SeqevalSynthArgs) -> Result<()> {
    let templates = match &args.templates {
        Some(path) => seqit_verify::Templates::load(path)?,
        None => seqit_verify::Templates::builtin(),
    };
    let settings = seqit_verify::SynthSettings {
        depths: parse_depths(&args.depths)?
            .into_iter()
            .map(|d| d as usize)
            .collect(),
        per_depth: args.per_depth,
        seed: args.seed,
    };
    settings.check()?;
    let items = seqit_verify::synthesize(&settings, &templates);
    let wanted = settings.depths.len() * settings.per_depth;
    if items.len() < wanted {
        bail!(
            "only {} of {wanted} distinct chains could be built from these templates; ask for fewer per depth",
            items.len()
        );
    }
    seqit_verify::write_jsonl(&args.output, &items)?;
    eprintln!(
        "wrote {} verifiable items to {} (depths {}, {} per depth, seed {}, templates {})",
        items.len(),
        args.output.display(),
        args.depths,
        args.per_depth,
        args.seed,
        templates.version()
    );
    Ok(())
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
    let progress = printer_for(teacher.client().ledger().clone());
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
