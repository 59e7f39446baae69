//! `seqit augment`: Seq-Instruct over a dataset (classify, rewrite, regenerate,
//! iterate) with the IT control, or verified answers to program-checked chains
//! (`--verify`), through a local or remote teacher behind the request cache; the job
//! is `seqit_augment::augment`. Also the teacher flags and the progress display that
//! `seqit seqeval build` shares.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use seqit_augment::{AugmentJob, AugmentPaths, AugmentSettings, Teacher, TeacherSettings};
use seqit_core::SamplingParams;
use seqit_data::Schema;

use super::Switch;
use crate::cli::EndpointCacheArgs;
use crate::printer::{note, Printer};

#[derive(Debug, Args)]
pub struct AugmentArgs {
    /// Data to augment: Alpaca, FlanCoT, ShareGPT or `messages` (JSON/JSONL).
    #[arg(long)]
    pub input: PathBuf,
    /// The input's format when it cannot be detected (alpaca, sharegpt, messages, flan, ...).
    #[arg(long)]
    pub input_format: Option<Schema>,
    /// The SIT data to write. Next to it: `.state.jsonl` (resume and iteration state)
    /// and `.stats.json`.
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the IT control here: the same items, answered for their original
    /// instructions (same ids and order).
    #[arg(long)]
    pub it_output: Option<PathBuf>,
    /// Output format: alpaca, messages or sharegpt (provenance is added as a field).
    #[arg(long, default_value = "alpaca")]
    pub format: Schema,
    /// Rounds of classify + rewrite. A later run with more continues from this one.
    #[arg(long, default_value_t = 2)]
    pub iterations: u32,
    /// Step 0: let the teacher split each prompt into instruction and input first
    /// (greedy), for data that mixes them (FlanCoT).
    #[arg(long)]
    pub split: bool,
    /// Refinement check: ask the teacher whether a rewrite lost information and retry
    /// up to this many times (0: no check).
    #[arg(long, default_value_t = 0)]
    pub refine: u32,
    /// Structured outputs: constrain the teacher's classification, rewrite, split and
    /// refinement replies to the formats the parsers read (`*_format` in the prompt
    /// set). `off` sends the paper's free-text prompts alone (for fidelity studies).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub structured: Switch,
    /// Verified SIT data (beyond the paper): `--input` is a set of program-checked
    /// chains (`seqit seqeval synth`); ask the teacher up to this many seeded samples
    /// per chain, keep the first that passes every step, drop chains with none. No
    /// rewriting: the chains already are sequential instructions.
    #[arg(long, value_name = "TRIES", conflicts_with_all = ["it_output", "split", "refine", "iterations"])]
    pub verify: Option<u32>,
    #[command(flatten)]
    pub teacher: TeacherArgs,
}

/// The teacher model and its decoding, shared by `augment` and `seqeval build`.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Teacher")]
pub struct TeacherArgs {
    /// API base of an OpenAI-compatible teacher (e.g. `http://localhost:8000/v1`);
    /// without it the local default model is the teacher.
    #[arg(long, env = "SEQIT_TEACHER_ENDPOINT")]
    pub teacher_endpoint: Option<String>,
    /// Model name at the endpoint, or a local `.gguf` / HF directory (default
    /// `smollm2-135m`).
    #[arg(long, env = "SEQIT_TEACHER_MODEL")]
    pub teacher_model: Option<String>,
    /// Environment variable holding the endpoint's API key.
    #[arg(long, default_value = seqit_llm::DEFAULT_API_KEY_ENV)]
    pub api_key_env: String,
    /// Most teacher requests in flight at once. Twice as many items are worked on, so
    /// the teacher always has requests waiting while items are between steps.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds one HTTP attempt may take.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Retries of a failed request.
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,
    /// Most sequences the local teacher decodes together.
    #[arg(long, default_value_t = 16)]
    pub local_batch: usize,
    /// Request cache (SQLite); default `seqit-cache.sqlite` next to `--output`.
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Neither read nor write the request cache (a killed run then re-asks).
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub endpoint_cache: EndpointCacheArgs,
    /// Prices per model per 1M tokens (TOML or JSON) for the cost figure.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Directory with your own prompt files (templates.toml, classify_examples.toml,
    /// rewrite_examples.toml); default: the built-in `seq-instruct/v2`.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Append one JSON line per teacher request (id, iteration, purpose, cached).
    #[arg(long)]
    pub request_log: Option<PathBuf>,
    /// Seed of the example shuffles, depth assignment and sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most new tokens per teacher answer.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// 0 disables top-k filtering.
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
}

impl TeacherArgs {
    /// The paper's decoding with these flags' values, checked.
    pub fn decoding(&self) -> Result<SamplingParams> {
        let params = SamplingParams {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            ..seqit_augment::paper_decoding(self.seed)
        };
        params.validate().map_err(anyhow::Error::msg)?;
        Ok(params)
    }

    /// How the job opens the teacher.
    pub fn settings(&self) -> TeacherSettings {
        TeacherSettings {
            endpoint: self.teacher_endpoint.clone(),
            model: self.teacher_model.clone(),
            api_key_env: self.api_key_env.clone(),
            concurrency: self.concurrency,
            timeout_secs: self.timeout,
            max_retries: self.max_retries,
            local_batch: self.local_batch,
            max_response_bytes: self.endpoint_cache.max_response_bytes,
            share_cache_across_endpoints: self.endpoint_cache.share_cache_across_endpoints,
            cache: self.cache.clone(),
            no_cache: self.no_cache,
            prices: self.prices.clone(),
            prompts: self.prompts.clone(),
            request_log: self.request_log.clone(),
        }
    }
}

/// A one-thread async runtime: the work is waiting on the teacher.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(args: AugmentArgs) -> Result<()> {
    let job = AugmentJob {
        input: args.input,
        input_format: args.input_format,
        paths: AugmentPaths {
            output: args.output,
            it_output: args.it_output,
            schema: args.format,
        },
        settings: AugmentSettings {
            iterations: args.iterations,
            seed: args.teacher.seed,
            decoding: args.teacher.decoding()?,
            split: args.split,
            refine: args.refine,
            structured: args.structured == Switch::On,
        },
        verify: args.verify,
        teacher: args.teacher.settings(),
    };
    let report = runtime()?.block_on(seqit_augment::augment(&job, printer_for))?;
    note(report.summary(&job.paths));
    Ok(())
}

/// The printer, with the teacher's generated tokens as its token rate.
pub fn printer_for(teacher: &Teacher) -> Printer {
    let ledger = teacher.client().ledger().clone();
    Printer::new().with_tokens(Arc::new(move || {
        ledger.tallies().values().map(|t| t.completion_tokens).sum()
    }))
}
