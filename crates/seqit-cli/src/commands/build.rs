//! `seqit build translate|caption`: the manual sequential data builders of `seqit-build`.
//! Outputs are written atomically; a JSON summary (counts, seed, prompt version and
//! hash) goes to stdout and to `<output>.report.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use seqit_build::caption;
use seqit_build::prompts::{CaptionPrompts, TranslatePrompts};
use seqit_build::translate::{self, LanguageSource, TranslateConfig, Variant};
use seqit_build::vqa::{self, Vqav2Files};
use seqit_data::{Schema, WriteOptions};
use serde::Serialize;

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
        BuildCommand::Translate(args) => translate(args),
        BuildCommand::Caption(args) => caption(args),
    }
}

fn translate(args: TranslateArgs) -> Result<()> {
    if args.per_language == 0 {
        bail!("`--per-language` must be at least 1");
    }
    let languages = args
        .languages
        .iter()
        .map(|spec| LanguageSource::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let prompts = TranslatePrompts::load(args.prompts.as_deref())?;
    let config = TranslateConfig {
        english: args.english,
        languages,
        per_language: args.per_language,
        seed: args.seed,
        variant: match args.control {
            None => Variant::TranslateThenPredict,
            Some(ControlArg::CrossLingual) => Variant::CrossLingual,
        },
    };
    let (records, report) = translate::build(&config, &prompts)?;
    let schema = match args.format {
        TranslateFormat::Alpaca => Schema::Alpaca,
        TranslateFormat::Messages => Schema::Messages,
    };
    seqit_data::write_all(&args.output, &WriteOptions::new(schema), &records)
        .with_context(|| format!("cannot write `{}`", args.output.display()))?;
    write_report(&args.output, &report)
}

fn caption(args: CaptionArgs) -> Result<()> {
    if args.limit == Some(0) {
        bail!("`--limit` must be at least 1");
    }
    let set = match (&args.easy_vqa, &args.questions) {
        (Some(dir), None) => vqa::read_easy_vqa(&easy_vqa_dir(dir)?)?,
        (None, Some(questions)) => vqa::read_vqav2(&Vqav2Files {
            questions: questions.clone(),
            annotations: args.annotations.clone().unwrap_or_default(),
            images: args.images.clone().unwrap_or_default(),
            captions: args.captions.clone(),
        })?,
        _ => bail!(
            "no visual QA source given\nhint: pass `--easy-vqa SPLIT_DIR`, or `--questions`, `--annotations`, `--captions` and `--images` for VQAv2 + COCO"
        ),
    };
    let prompts = CaptionPrompts::load(args.prompts.as_deref())?;
    let data = caption::build(&set, &prompts, args.limit, args.seed);
    write_json(&args.sit_output, &data.sit)?;
    write_json(&args.it_output, &data.it)?;
    write_report(&args.sit_output, &data.report)
}

/// The package's split directory for `train`/`test` when no such path exists here.
pub(super) fn easy_vqa_dir(given: &Path) -> Result<PathBuf> {
    if given.exists() {
        return Ok(given.to_path_buf());
    }
    match given.to_str() {
        Some(split @ ("train" | "test")) => Ok(seqit_engine::assets_dir()
            .context("cannot find the installed easy-VQA package\nhint: run `scripts/setup --assets-only` or pass the split directory")?
            .join("easy_vqa/data")
            .join(split)),
        _ => Ok(given.to_path_buf()),
    }
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    seqit_data::write_file_atomic(path, &bytes)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Prints the summary and keeps it beside the output as `<output>.report.json`.
fn write_report<T: Serialize>(output: &Path, report: &T) -> Result<()> {
    let mut name = output.as_os_str().to_owned();
    name.push(".report.json");
    write_json(Path::new(&name), report)?;
    println!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
}
