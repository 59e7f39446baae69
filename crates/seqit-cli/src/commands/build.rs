//! `seqit build translate|caption`: the manual sequential data builders of `seqit-build`,
//! which write the outputs atomically with a JSON report (counts, seed, prompt version
//! and hash) beside them as `<output>.report.json`; the report also goes to stdout.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use seqit_build::caption::{self, CaptionJob};
use seqit_build::translate::{self, LanguageSource, TranslateConfig, TranslateJob, Variant};
use seqit_build::vqa::{VqaSource, Vqav2Files};
use seqit_data::Schema;
use serde::Serialize;

use crate::printer::result;

#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Translate-then-predict: multilingual SIT data from English + translated Alpaca files.
    Translate(TranslateArgs),
    /// Caption-then-answer: SIT and IT LLaVA-style visual QA data.
    Caption(CaptionArgs),
}

#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// The English Alpaca file (JSON or JSONL).
    #[arg(long)]
    pub english: PathBuf,
    /// A translation of the English file, same items in the same order: `CODE=PATH`
    /// (`de=alpaca.de.json`) or `NAME=PATH` (`Swahili=sw.json`). Repeat per language.
    #[arg(long = "lang", value_name = "CODE=PATH", required = true)]
    pub languages: Vec<String>,
    /// Items rewritten per language (drawn among the items with a non-empty input).
    #[arg(long)]
    pub per_language: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write this control instead of the SIT data (same seed, same items).
    #[arg(long, value_enum)]
    pub control: Option<ControlArg>,
    /// Output file; `.json` or `.jsonl`.
    #[arg(long)]
    pub output: PathBuf,
    /// Output record format.
    #[arg(long, value_enum, default_value_t = TranslateFormat::Alpaca)]
    pub format: TranslateFormat,
    /// Directory with a replacement `translate.toml` (default: the built-in `prompts/build/v1`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ControlArg {
    /// Translated input, original English instruction, direct English answer.
    CrossLingual,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TranslateFormat {
    /// `instruction`, `input`, `output` (+ `provenance`).
    Alpaca,
    /// OpenAI-style `messages` (+ `provenance`).
    Messages,
}

#[derive(Debug, Args)]
pub struct CaptionArgs {
    /// An easy-VQA split directory (`questions.json`, `images/`), or `train`/`test` for
    /// the split of the installed `easy_vqa` package (`$SEQIT_ASSETS/easy_vqa/data/<split>`).
    #[arg(long, conflicts_with_all = ["questions", "annotations", "captions", "images"])]
    pub easy_vqa: Option<PathBuf>,
    /// VQAv2 questions JSON.
    #[arg(long, requires_all = ["annotations", "captions", "images"])]
    pub questions: Option<PathBuf>,
    /// VQAv2 annotations JSON.
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    /// COCO captions JSON (`captions_*.json`).
    #[arg(long)]
    pub captions: Option<PathBuf>,
    /// Directory of the COCO images.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// SIT output (caption-then-answer), LLaVA-style JSON.
    #[arg(long)]
    pub sit_output: PathBuf,
    /// IT output (answer only), LLaVA-style JSON.
    #[arg(long)]
    pub it_output: PathBuf,
    /// Write at most this many questions, drawn with the seed.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory with a replacement `caption.toml` (default: the built-in `prompts/build/v1`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
}

pub fn run(command: BuildCommand) -> Result<()> {
    match command {
        BuildCommand::Translate(args) => print_report(&translate::run(&translate_job(args)?)?),
        BuildCommand::Caption(args) => print_report(&caption::run(&caption_job(args)?)?),
    }
}

fn print_report(report: &impl Serialize) -> Result<()> {
    result(serde_json::to_string_pretty(report)?);
    Ok(())
}

fn translate_job(args: TranslateArgs) -> Result<TranslateJob> {
    let languages = args
        .languages
        .iter()
        .map(|spec| LanguageSource::parse(spec));
    Ok(TranslateJob {
        config: TranslateConfig {
            english: args.english,
            languages: languages.collect::<Result<_, _>>()?,
            per_language: args.per_language,
            seed: args.seed,
            variant: match args.control {
                None => Variant::TranslateThenPredict,
                Some(ControlArg::CrossLingual) => Variant::CrossLingual,
            },
        },
        prompts: args.prompts,
        output: args.output,
        schema: match args.format {
            TranslateFormat::Alpaca => Schema::Alpaca,
            TranslateFormat::Messages => Schema::Messages,
        },
    })
}

fn caption_job(args: CaptionArgs) -> Result<CaptionJob> {
    let source = match (args.easy_vqa, args.questions) {
        (Some(dir), None) => VqaSource::EasyVqa(seqit_engine::easy_vqa_dir(&dir)?),
        (None, Some(questions)) => VqaSource::Vqav2(Vqav2Files {
            questions,
            annotations: args.annotations.unwrap_or_default(),
            images: args.images.unwrap_or_default(),
            captions: args.captions,
        }),
        _ => bail!(
            "no visual QA source given\nhint: pass `--easy-vqa SPLIT_DIR`, or `--questions`, `--annotations`, `--captions` and `--images` for VQAv2 + COCO"
        ),
    };
    Ok(CaptionJob {
        source,
        sit_output: args.sit_output,
        it_output: args.it_output,
        limit: args.limit,
        seed: args.seed,
        prompts: args.prompts,
    })
}
