//! `seqit augment`: Seq-Instruct over a dataset (classify, rewrite, regenerate,
//! iterate) with the IT control, or verified answers to program-checked chains
//! (`--verify`), through a local or remote teacher behind the request cache. Also the teacher flags and the progress display `seqit seqeval build` shares.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use seqit_augment::{
    AugmentPaths, AugmentSettings, Augmenter, PromptSet, Teacher, TeacherInfo,
    VerifiedAugmenter, VerifySettings,
};
use seqit_core::SamplingParams;
use seqit_data::Schema;
use seqit_llm::{BackendSpec, Cache, Client, Ledger, PriceTable};

use super::Switch;
use crate::cli::EndpointCacheArgs;

/// Name of the default cache file, next to the output.
const DEFAULT_CACHE_FILE: &str = "seqit-cache.sqlite";


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
    /// Items worked on at once (see `--concurrency`).
    pub fn items_in_flight(&self) -> usize {
        self.concurrency.saturating_mul(2).max(1)
    }

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

    /// Opens the teacher behind the request cache (default: next to `output`).
    pub async fn open(&self, output: &Path, prompts: &PromptSet) -> Result<Teacher> {
        if self.concurrency == 0 {
            bail!("`--concurrency` must be at least 1");
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            bail!(
                "`--timeout` must be a number of seconds > 0, got {}",
                self.timeout
            );
        }
        let mut spec = match &self.teacher_endpoint {
            Some(url) => BackendSpec::remote(url.clone(), self.teacher_model.clone()),
            None => BackendSpec::local(self.teacher_model.clone()),
        };
        spec.api_key_env = self.api_key_env.clone();
        spec.concurrency = self.concurrency;
        spec.timeout = Duration::from_secs_f64(self.timeout);
        spec.max_retries = self.max_retries;
        spec.local_max_batch = self.local_batch.max(1);
        spec.max_response_bytes = self.endpoint_cache.max_response_bytes;
        let backend = seqit_llm::open_backend(&spec).await?;
        let prices = self.prices.as_deref().map(PriceTable::load).transpose()?;
        let mut client = Client::new(backend.clone())
            .with_ledger(Arc::new(Ledger::new(prices)))
            .share_cache_across_endpoints(self.endpoint_cache.share_cache_across_endpoints);
        if !self.no_cache {
            let path = match &self.cache {
                Some(path) => path.clone(),
                None => output
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .join(DEFAULT_CACHE_FILE),
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create `{}`", dir.display()))?;
            }
            client = client.with_cache(Arc::new(Cache::open(&path)?));
        }
        let info = TeacherInfo {
            model: backend.model().to_string(),
            endpoint_kind: if self.teacher_endpoint.is_some() {
                "remote"
            } else {
                "local"
            }
            .into(),
            backend: spec.describe(),
        };
        let teacher = Teacher::new(client, info, prompts.cache_version());
        match &self.request_log {
            Some(path) => teacher.with_request_log(path),
            None => Ok(teacher),
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
    if !matches!(
        args.format,
        Schema::Alpaca | Schema::Messages | Schema::ShareGpt
    ) {
        bail!(
            "`--format {}` cannot hold augmented data\nhint: use alpaca, messages or sharegpt",
            args.format
        );
    }
    if args.it_output.as_deref() == Some(args.output.as_path()) {
        bail!("`--it-output` and `--output` are the same file");
    }
    let prompts = PromptSet::load_or_builtin(args.teacher.prompts.as_deref())?;
    if let Some(tries) = args.verify {
        let items = seqit_verify::read_jsonl(&args.input)
            .context("`--verify` reads chains made by `seqit seqeval synth`")?;
        let settings = VerifySettings {
            tries,
            seed: args.teacher.seed,
            decoding: args.teacher.decoding()?,
        };
        return runtime()?.block_on(augment_verified(args, prompts, settings, items));
    }
    let settings = AugmentSettings {
        iterations: args.iterations,
        seed: args.teacher.seed,
        decoding: args.teacher.decoding()?,
        split: args.split,
        refine: args.refine,
        structured: args.structured == Switch::On,
    };
    if settings.iterations == 0 {
        bail!("`--iterations` must be at least 1");
    }
    let (schema, records) = seqit_augment::read_records(&args.input, args.input_format)?;
    runtime()?.block_on(augment(args, prompts, settings, schema, records))
}

async fn augment(
    args: AugmentArgs,
    prompts: PromptSet,
    settings: AugmentSettings,
    schema: Schema,
    records: Vec<seqit_data::Record>,
) -> Result<()> {
    let teacher = args.teacher.open(&args.output, &prompts).await?;
    let paths = AugmentPaths {
        output: args.output.clone(),
        it_output: args.it_output.clone(),
        schema: args.format,
    };
    eprintln!(
        "augmenting {} {} records from `{}` with {} ({} iteration(s), prompts {} {})",
        records.len(),
        schema,
        args.input.display(),
        teacher.info().backend,
        settings.iterations,
        prompts.version(),
        &prompts.hash()[..15],
    );
    let augmenter = Augmenter {
        prompts: &prompts,
        teacher: &teacher,
        settings,
        concurrency: args.teacher.items_in_flight(),
    };
    let progress = printer_for(teacher.client().ledger().clone());
    let outcome = augmenter.run(&records, schema, &paths, &progress).await?;
    eprintln!("{}", outcome.stats.render());
    eprintln!("{}", teacher.client().ledger().summary());
    eprintln!(
        "wrote {}{} and {} ({} items reused from an earlier run)",
        args.output.display(),
        args.it_output
            .map(|p| format!(", {}", p.display()))
            .unwrap_or_default(),
        paths.stats().display(),
        outcome.resumed
    );
    Ok(())
}

async fn augment_verified(
    args: AugmentArgs,
    prompts: PromptSet,
    settings: VerifySettings,
    items: Vec<seqit_verify::VerifiableItem>,
) -> Result<()> {
    let teacher = args.teacher.open(&args.output, &prompts).await?;
    let paths = AugmentPaths {
        output: args.output.clone(),
        it_output: None,
        schema: args.format,
    };
    eprintln!(
        "verified answers for {} chains from `{}` with {} (up to {} tries each)",
        items.len(),
        args.input.display(),
        teacher.info().backend,
        settings.tries,
    );
    let augmenter = VerifiedAugmenter {
        teacher: &teacher,
        settings,
        concurrency: args.teacher.items_in_flight(),
    };
    let progress = printer_for(teacher.client().ledger().clone());
    let outcome = augmenter.run(&items, &paths, &progress).await?;
    eprintln!("{}", outcome.stats.render());
    eprintln!("{}", teacher.client().ledger().summary());
    eprintln!(
        "wrote {} and {} ({} items reused from an earlier run)",
        args.output.display(),
        paths.stats().display(),
        outcome.resumed
    );
    Ok(())
}

/// The printer, with the teacher's generated tokens as its token rate.
pub fn printer_for(ledger: Arc<Ledger>) -> crate::printer::Printer {
    crate::printer::Printer::new().with_tokens(Arc::new(move || {
        ledger.tallies().values().map(|t| t.completion_tokens).sum()
    }))
}
