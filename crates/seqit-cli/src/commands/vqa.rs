//! `seqit eval vqa`: visual QA with the caption-then-answer prompt against a vision
//! model behind an OpenAI-compatible endpoint (`seqit_eval::run::vqa`): `results.jsonl`
//! and `metrics.json` in `--output`, resumable through the journal and the request cache.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use seqit_core::SamplingParams;
use seqit_eval::extract::Mode;
use seqit_eval::run::vqa::{self, VqaJob};
use seqit_eval::run::ModelSpec;
use seqit_llm::DEFAULT_API_KEY_ENV;

use super::eval_run::{output, show};
use crate::cli::EndpointCacheArgs;
use crate::printer::Printer;

#[derive(Debug, Args)]
pub struct VqaArgs {
    /// An easy-VQA split directory (`questions.json`, `images/`; `train`/`test`: the
    /// installed package's split), or a VQAv2 questions JSON (then also `--annotations`
    /// and `--images`).
    #[arg(long)]
    pub data: PathBuf,
    /// VQAv2 annotations JSON (with a VQAv2 questions file as `--data`).
    #[arg(long, requires = "images")]
    pub annotations: Option<PathBuf>,
    /// Directory of the images (with a VQAv2 questions file as `--data`).
    #[arg(long, requires = "annotations")]
    pub images: Option<PathBuf>,
    /// OpenAI-compatible endpoint of a vision model (the local engine reads text only).
    #[arg(long)]
    pub endpoint: String,
    /// Served model name (default: the one model the endpoint lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Environment variable holding the API key.
    #[arg(long, default_value = DEFAULT_API_KEY_ENV)]
    pub api_key_env: String,
    /// Directory for `results.jsonl`, `metrics.json` and the request cache.
    #[arg(long)]
    pub output: PathBuf,
    /// Evaluate only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// `strict`: an output without "answer" is wrong; `flexible`: its whole text is the answer.
    #[arg(long, value_enum, default_value_t = VqaModeArg::Strict)]
    pub mode: VqaModeArg,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds one HTTP attempt may take.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// A template file replacing the built-in `vqa/v1/caption_answer` prompt (`{question}`).
    #[arg(long)]
    pub prompt_template: Option<PathBuf>,
    /// Request cache (default: `OUTPUT/cache.sqlite`).
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub endpoint_cache: EndpointCacheArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VqaModeArg {
    Strict,
    Flexible,
}

pub fn run(args: VqaArgs) -> Result<()> {
    let job = VqaJob {
        data_path: super::build::easy_vqa_dir(&args.data)?,
        data: args.data,
        annotations: args.annotations,
        images: args.images,
        limit: args.limit,
        model: ModelSpec {
            endpoint: Some(args.endpoint),
            model: args.model,
            api_key_env: args.api_key_env,
            concurrency: args.concurrency,
        },
        timeout_s: args.timeout,
        params: SamplingParams {
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
            ..SamplingParams::greedy(args.max_tokens)
        },
        mode: match args.mode {
            VqaModeArg::Strict => Mode::Strict,
            VqaModeArg::Flexible => Mode::Flexible,
        },
        prompt_template: args.prompt_template,
        output: output(
            &args.output,
            args.cache.as_deref(),
            args.no_cache,
            &args.endpoint_cache,
        ),
    };
    show(vqa::run(&job, &Printer::new()))
}
