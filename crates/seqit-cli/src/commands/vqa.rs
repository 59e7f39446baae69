//! `seqit eval vqa`: visual QA with the caption-then-answer prompt against a vision
//! model behind an OpenAI-compatible endpoint. Each question is sent with its image as
//! a base64 `data:` URL content part; the reply is scored by contains-match accuracy
//! and VQA accuracy (`seqit_eval::tasks::vqa`).
//!
//! Writes `results.jsonl` (one line per question, in data order) and `metrics.json`
//! (scores and every setting) to `--output`. Scored lines go to the journal
//! `results.jsonl.partial` as answers arrive and answers are kept in the request cache
//! (`OUTPUT/cache.sqlite` by default), so a killed run resumes without asking again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use seqit_build::vqa::{self, VqaItem, Vqav2Files};
use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_eval::benchmarks::{describe_prompt, prompt_key};
use seqit_eval::extract::Mode;
use seqit_eval::io::{with_suffix, write_atomic};
use seqit_eval::journal::Journal;
use seqit_eval::prompt::FewShot;
use seqit_eval::tasks::vqa::{
    caption_answer_prompt, image_data_url, metrics, render, score, VqaScore,
};
use seqit_llm::{open_backend, BackendSpec, Cache, Client, LlmRequest, DEFAULT_API_KEY_ENV};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::EndpointCacheArgs;

/// Seconds between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

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

/// One line of `results.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct ResultLine {
    id: String,
    image: PathBuf,
    question: String,
    label: String,
    answers: Vec<String>,
    prompt: String,
    output: String,
    extracted: Option<String>,
    followed: bool,
    correct: bool,
    vqa_accuracy: f64,
}

impl ResultLine {
    fn score(&self) -> VqaScore {
        VqaScore {
            followed: self.followed,
            extracted: self.extracted.clone(),
            correct: self.correct,
            vqa_accuracy: self.vqa_accuracy,
        }
    }
}

pub fn run(args: VqaArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("`--concurrency` must be at least 1");
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!(
            "`--timeout` must be a number of seconds > 0, got {}",
            args.timeout
        );
    }
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        ..SamplingParams::greedy(args.max_tokens)
    };
    params.validate().map_err(anyhow::Error::msg)?;
    let mut items = read_items(&args)?;
    if let Some(limit) = args.limit {
        items.truncate(limit);
    }
    let prompt = match &args.prompt_template {
        Some(path) => FewShot::from_files(path, None)?,
        None => caption_answer_prompt(),
    };
    let mode = match args.mode {
        VqaModeArg::Strict => Mode::Strict,
        VqaModeArg::Flexible => Mode::Flexible,
    };
    let mut spec = BackendSpec::remote(args.endpoint.clone(), args.model.clone());
    spec.api_key_env = args.api_key_env.clone();
    spec.concurrency = args.concurrency;
    spec.timeout = Duration::from_secs_f64(args.timeout);
    spec.max_response_bytes = args.endpoint_cache.max_response_bytes;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create `{}`", args.output.display()))?;
    let cache_path = match (&args.cache, args.no_cache) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        (None, false) => Some(args.output.join("cache.sqlite")),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(evaluate(
        &args, &spec, cache_path, &prompt, mode, &params, &items,
    ))
}

fn read_items(args: &VqaArgs) -> Result<Vec<VqaItem>> {
    let data = super::build::easy_vqa_dir(&args.data)?;
    let set = if data.is_dir() {
        if args.annotations.is_some() {
            bail!("`--data {}` is an easy-VQA directory; `--annotations`/`--images` go with a VQAv2 questions file", args.data.display());
        }
        vqa::read_easy_vqa(&data)?
    } else {
        let (Some(annotations), Some(images)) = (&args.annotations, &args.images) else {
            bail!(
                "`--data {}` is a file, read as VQAv2 questions, which need `--annotations FILE` and `--images DIR`\nhint: for easy-VQA pass the split directory, e.g. `$SEQIT_ASSETS/easy_vqa/data/test`",
                args.data.display()
            );
        };
        vqa::read_vqav2(&Vqav2Files {
            questions: args.data.clone(),
            annotations: annotations.clone(),
            images: images.clone(),
            captions: None,
        })?
    };
    Ok(set.items)
}

async fn evaluate(
    args: &VqaArgs,
    spec: &BackendSpec,
    cache_path: Option<PathBuf>,
    prompt: &FewShot,
    mode: Mode,
    params: &SamplingParams,
    items: &[VqaItem],
) -> Result<()> {
    let backend = open_backend(spec).await?;
    let model = backend.model().to_string();
    let mut client = Client::new(backend)
        .share_cache_across_endpoints(args.endpoint_cache.share_cache_across_endpoints);
    if let Some(path) = &cache_path {
        client = client.with_cache(Arc::new(Cache::open(path)?));
    }
    let settings = json!({
        "data": args.data,
        "annotations": args.annotations,
        "images": args.images,
        "limit": args.limit,
        "backend": spec.describe(),
        "model": model,
        "mode": mode,
        "params": params,
        "prompt": describe_prompt(prompt),
    });
    let results_path = args.output.join("results.jsonl");
    let mut journal = Journal::open(&with_suffix(&results_path, ".partial"), &settings)?;
    let total = items.len() - journal.done().len();
    let started = Instant::now();
    let mut last_note = Instant::now();
    let mut answered = 0;
    let records = journal
        .run(
            items,
            |item| item.id.clone(),
            args.concurrency,
            |item| {
                let item = item.clone();
                let client = &client;
                async move { ask(client, prompt, mode, params, &item).await }
            },
            |_| {
                answered += 1;
                if last_note.elapsed() >= PROGRESS_EVERY {
                    eprintln!(
                        "vqa: {answered}/{total} answered ({:.1}/s)",
                        answered as f64 / started.elapsed().as_secs_f64()
                    );
                    last_note = Instant::now();
                }
            },
        )
        .await?;

    let mut results = Vec::new();
    let mut scores = Vec::with_capacity(records.len());
    for record in &records {
        serde_json::to_writer(&mut results, record)?;
        results.push(b'\n');
        scores.push(serde_json::from_value::<ResultLine>(record.clone())?.score());
    }
    write_atomic(&results_path, &results)?;
    let mut report = json!({
        "task": "vqa",
        "items": records.len(),
        "metrics": metrics(&scores),
        "settings": settings,
        "ledger": client.ledger().summary(),
    });
    report["settings"]["vqa_accuracy"] = json!(
        "min(#humans who gave the answer / 3, 1), averaged over each human left out; items with one answer score normalized exact match"
    );
    write_atomic(
        &args.output.join("metrics.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::remove_file(journal.path()).ok();
    println!("{}", serde_json::to_string_pretty(&report["metrics"])?);
    Ok(())
}

/// Asks one question with its image and scores the reply.
async fn ask(
    client: &Client,
    prompt: &FewShot,
    mode: Mode,
    params: &SamplingParams,
    item: &VqaItem,
) -> seqit_eval::Result<serde_json::Value> {
    let rendered = render(prompt, &item.question)?;
    let image = image_data_url(&item.image)?;
    let mut params = params.clone();
    params.stop.extend(rendered.stop.iter().cloned());
    let request = LlmRequest::new(
        Prompt::Chat(vec![
            ChatMessage::user(rendered.text.clone()).with_image(image)
        ]),
        params,
    )
    .with_prompt_version(prompt_key(&rendered));
    let response = client.generate(&request).await?;
    let output = response
        .samples
        .into_iter()
        .next()
        .map(|s| s.text)
        .unwrap_or_default();
    let scored = score(&output, &item.answer, &item.answers, mode);
    let line = ResultLine {
        id: item.id.clone(),
        image: item.image.clone(),
        question: item.question.clone(),
        label: item.answer.clone(),
        answers: item.answers.clone(),
        prompt: rendered.text,
        output,
        extracted: scored.extracted,
        followed: scored.followed,
        correct: scored.correct,
        vqa_accuracy: scored.vqa_accuracy,
    };
    Ok(serde_json::to_value(line).expect("result lines serialize"))
}
