//! `seqit generate --endpoint URL`: the same job as the local `generate`, sent to an
//! OpenAI-compatible server through seqit-llm's remote backend, request cache and
//! ledger.
//!
//! Replies are appended to `OUTPUT.partial` one line each as they arrive (after the
//! answer is committed to the cache), so a run that is killed and started again skips
//! the records already written and re-asks nothing answered. Records that fail after
//! every retry are listed in `OUTPUT.errors.jsonl`; the output is only written once
//! every record has a reply.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use seqit_core::{FinishReason, SamplingParams, TokenLogprob};
use seqit_llm::remote::{list_models, Backoff};
use seqit_llm::{
    ApiKey, Cache, Client, Estimate, Ledger, LlmRequest, LlmResponse, MultiSampleMode, PriceTable,
    RemoteBackend, RemoteConfig, DEFAULT_API_KEY_ENV,
};
use serde::Serialize;
use serde_json::{json, Value};

use super::generate::{
    build_prompt, finish_output, partial_path, read_input, resume_done, InputRecord,
};
use crate::cli::{GenerateArgs, NModeArg, RemoteArgs};

/// Name of the default cache file, next to the output.
pub(super) const DEFAULT_CACHE_FILE: &str = "seqit-cache.sqlite";

/// Seconds between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Flags that only mean something with `--endpoint`.
pub(super) fn reject_remote_only_flags(remote: &RemoteArgs) -> Result<()> {
    let used: Vec<&str> = [
        (remote.samples != 1, "--n"),
        (remote.dry_run, "--dry-run"),
        (remote.cache.is_some(), "--cache"),
        (remote.rpm.is_some(), "--rpm"),
        (remote.tpm.is_some(), "--tpm"),
        (remote.prices.is_some(), "--prices"),
        (
            remote.endpoint_cache.share_cache_across_endpoints,
            "--share-cache-across-endpoints",
        ),
        (
            remote.endpoint_cache.max_response_bytes != seqit_llm::DEFAULT_MAX_RESPONSE_BYTES,
            "--max-response-bytes",
        ),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    if !used.is_empty() {
        bail!(
            "{} only apply to a remote endpoint\nhint: add `--endpoint URL`, or drop them to generate with the local model",
            used.join(", ")
        );
    }
    Ok(())
}

/// The remote settings, checked before any work starts.
struct Settings {
    base_url: String,
    model: Option<String>,
    api_key: Option<ApiKey>,
    cache_path: Option<PathBuf>,
    params: SamplingParams,
    prices: Option<PriceTable>,
}

impl Settings {
    fn from_args(args: &GenerateArgs) -> Result<Self> {
        let remote = &args.remote;
        let endpoint = remote.endpoint.as_deref().expect("called with --endpoint");
        let base_url = seqit_llm::remote::normalize_base_url(endpoint)?;
        let api_key = ApiKey::from_env(&remote.api_key_env);
        if api_key.is_none() && remote.api_key_env != DEFAULT_API_KEY_ENV {
            bail!(
                "environment variable `{}` (named by --api-key-env) is not set\nhint: export it, or drop --api-key-env to use {DEFAULT_API_KEY_ENV}",
                remote.api_key_env
            );
        }
        if remote.concurrency == 0 {
            bail!("`--concurrency` must be at least 1");
        }
        if remote.samples == 0 {
            bail!("`--n` must be at least 1");
        }
        if !(remote.timeout.is_finite() && remote.timeout > 0.0) {
            bail!(
                "`--timeout` must be a number of seconds > 0, got {}",
                remote.timeout
            );
        }
        if !(remote.backoff.is_finite() && remote.backoff >= 0.0) {
            bail!(
                "`--backoff` must be a number of seconds >= 0, got {}",
                remote.backoff
            );
        }
        if remote.rpm == Some(0) || remote.tpm == Some(0) {
            bail!("`--rpm` and `--tpm` must be at least 1");
        }
        let cache_path = match (&remote.cache, remote.no_cache, &args.output) {
            (_, true, _) => None,
            (Some(path), false, _) => Some(path.clone()),
            (None, false, Some(output)) => {
                let dir = output
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                Some(dir.join(DEFAULT_CACHE_FILE))
            }
            (None, false, None) => None,
        };
        let prices = remote.prices.as_deref().map(PriceTable::load).transpose()?;
        Ok(Self {
            base_url,
            model: args.model.model.clone(),
            api_key,
            cache_path,
            params: super::sampling_params(&args.decoding)?,
            prices,
        })
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let settings = Settings::from_args(&args)?;
    let records = match (&args.prompt, &args.input) {
        (Some(prompt), _) => vec![InputRecord {
            id: json!(0),
            prompt: build_prompt(prompt, args.system.as_deref(), args.raw),
        }],
        (None, Some(input)) => read_input(input, args.system.as_deref(), args.raw)?,
        _ => bail!("give `--prompt TEXT`, or `--input FILE --output FILE`"),
    };
    // One thread runs everything: the client is network-bound, and a single thread
    // avoids a cross-thread wake-up per request (it uses a small share of one core at
    // thousands of requests per second).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args, settings, records))
}

async fn resolve_model(settings: &Settings, timeout: Duration) -> Result<String> {
    if let Some(model) = &settings.model {
        return Ok(model.clone());
    }
    let models = list_models(&settings.base_url, settings.api_key.as_ref(), timeout)
        .await
        .context("`--model` was not given, so the endpoint was asked which models it serves")?;
    match models.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!(
            "`{}` lists no models\nhint: pass `--model NAME`",
            settings.base_url
        ),
        many => bail!(
            "`{}` serves several models ({})\nhint: pass `--model NAME`",
            settings.base_url,
            many.join(", ")
        ),
    }
}

fn request_for(record: &InputRecord, params: &SamplingParams, remote: &RemoteArgs) -> LlmRequest {
    LlmRequest::new(record.prompt.clone(), params.clone())
        .with_samples(remote.samples)
        .with_prompt_version(remote.prompt_version.clone())
}

async fn run_async(
    args: GenerateArgs,
    settings: Settings,
    records: Vec<InputRecord>,
) -> Result<()> {
    let remote = &args.remote;
    let timeout = Duration::from_secs_f64(remote.timeout);
    if remote.dry_run {
        return dry_run(&args, &settings, &records);
    }
    let model = resolve_model(&settings, timeout.min(Duration::from_secs(30))).await?;
    let mut config = RemoteConfig::new(settings.base_url.clone(), model.clone());
    config.api_key = settings.api_key.clone();
    config.concurrency = remote.concurrency;
    config.requests_per_minute = remote.rpm;
    config.tokens_per_minute = remote.tpm;
    config.timeout = timeout;
    config.max_retries = remote.max_retries;
    config.backoff = Backoff {
        base: Duration::from_secs_f64(remote.backoff),
        max: Duration::from_secs(60),
    };
    config.multi_sample = match remote.n_mode {
        NModeArg::Auto => MultiSampleMode::Auto,
        NModeArg::Native => MultiSampleMode::Native,
        NModeArg::FanOut => MultiSampleMode::FanOut,
    };
    config.seed = settings.params.seed;
    config.max_response_bytes = remote.endpoint_cache.max_response_bytes;
    let backend = RemoteBackend::new(config)?;
    let ledger = Arc::new(Ledger::new(settings.prices.clone()));
    let mut client = Client::new(Arc::new(backend))
        .with_ledger(ledger.clone())
        .share_cache_across_endpoints(remote.endpoint_cache.share_cache_across_endpoints);
    if let Some(path) = &settings.cache_path {
        client = client.with_cache(Arc::new(Cache::open(path)?));
    }

    let started = Instant::now();
    let outcome = match (&args.prompt, &args.output) {
        (Some(_), _) => {
            let request = request_for(&records[0], &settings.params, remote);
            let answer = client.generate(&request).await?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for sample in &answer.samples {
                writeln!(out, "{}", sample.text)?;
            }
            out.flush()?;
            Ok(())
        }
        (None, Some(output)) => generate_file(&client, &args, &settings, &records, output).await,
        _ => bail!("give `--prompt TEXT`, or `--input FILE --output FILE`"),
    };
    eprintln!("{}", ledger.summary());
    if args.stats {
        let tallies = ledger.tallies();
        let t = tallies.get(&model).cloned().unwrap_or_default();
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{}",
            json!({"records": records.len(), "requests": t.requests, "attempts": t.attempts, "failed": t.failed,
                   "cached_samples": t.cached_samples, "prompt_tokens": t.prompt_tokens,
                   "completion_tokens": t.completion_tokens, "seconds": seconds,
                   "requests_per_second": t.requests as f64 / seconds})
        );
    }
    outcome
}

/// Prints what the run would ask and use; touches neither the server nor the output.
fn dry_run(args: &GenerateArgs, settings: &Settings, records: &[InputRecord]) -> Result<()> {
    let remote = &args.remote;
    let Some(model) = settings.model.clone() else {
        bail!("`--dry-run` needs `--model NAME` (it does not contact the endpoint)");
    };
    let done = match &args.output {
        Some(output) => resume_done(&partial_path(output))?.0,
        None => Default::default(),
    };
    // Read the cache only if it exists: a dry run creates nothing.
    let cache = match &settings.cache_path {
        Some(path) if path.exists() => Some(Cache::open(path)?),
        _ => None,
    };
    let mut estimate = Estimate {
        model: model.clone(),
        ..Estimate::default()
    };
    let scope = (!remote.endpoint_cache.share_cache_across_endpoints)
        .then(|| seqit_llm::remote::endpoint_identity(&settings.base_url));
    let mut seen = std::collections::HashSet::new();
    for record in records.iter().filter(|r| !done.contains(&r.id.to_string())) {
        let request = request_for(record, &settings.params, remote);
        for index in request.sample_indices() {
            let key = seqit_llm::CacheKey::new(
                scope.as_deref(),
                request.kind(),
                &model,
                &request.prompt,
                &request.params,
                index,
                &request.prompt_version,
            );
            if !seen.insert(key) {
                continue;
            }
            estimate.samples += 1;
            if let Some(cache) = &cache {
                if cache.get(&key)?.is_some() {
                    estimate.cached_samples += 1;
                    continue;
                }
            }
            estimate.prompt_tokens +=
                seqit_llm::remote::wire::estimate_prompt_tokens(&request.prompt);
            estimate.max_completion_tokens += request.params.max_tokens as u64;
        }
    }
    if !done.is_empty() {
        eprintln!(
            "{} records already written to the partial output are not counted",
            done.len()
        );
    }
    println!("{}", estimate.render(settings.prices.as_ref()));
    Ok(())
}

/// The output line of a record: with one sample, the same fields as the local
/// `generate` (keys in the same, alphabetical, order); with several, `outputs` and
/// `finish_reasons` lists.
fn reply_line(id: &Value, answer: &LlmResponse, samples: u32) -> String {
    #[derive(Serialize)]
    struct One<'a> {
        completion_tokens: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        constraint_met: Option<bool>,
        finish_reason: FinishReason,
        id: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        logprobs: Option<&'a [TokenLogprob]>,
        output: &'a str,
        prompt_tokens: u64,
    }
    #[derive(Serialize)]
    struct Many<'a> {
        completion_tokens: u64,
        finish_reasons: Vec<FinishReason>,
        id: &'a Value,
        outputs: Vec<&'a str>,
        prompt_tokens: u64,
    }
    let prompt_tokens = answer
        .samples
        .iter()
        .filter_map(|s| s.prompt_tokens)
        .max()
        .unwrap_or(0);
    let completion_tokens: u64 = answer
        .samples
        .iter()
        .filter_map(|s| s.completion_tokens)
        .sum();
    let mut text = if samples == 1 {
        let sample = &answer.samples[0];
        serde_json::to_string(&One {
            completion_tokens,
            constraint_met: sample.constraint_met,
            finish_reason: sample.finish_reason,
            id,
            logprobs: sample.logprobs.as_deref(),
            output: &sample.text,
            prompt_tokens,
        })
    } else {
        serde_json::to_string(&Many {
            completion_tokens,
            finish_reasons: answer.samples.iter().map(|s| s.finish_reason).collect(),
            id,
            outputs: answer.samples.iter().map(|s| s.text.as_str()).collect(),
            prompt_tokens,
        })
    }
    .expect("reply lines serialize");
    text.push('\n');
    text
}

async fn generate_file(
    client: &Client,
    args: &GenerateArgs,
    settings: &Settings,
    records: &[InputRecord],
    output: &Path,
) -> Result<()> {
    let remote = &args.remote;
    let partial = partial_path(output);
    let (done, _) = resume_done(&partial)?;
    if !done.is_empty() {
        eprintln!(
            "resuming: {} of {} records already generated",
            done.len(),
            records.len()
        );
    }
    // Records with the same prompt share one request.
    let mut requests: Vec<LlmRequest> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut by_prompt: HashMap<String, usize> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        if done.contains(&record.id.to_string()) {
            continue;
        }
        let key = serde_json::to_string(&record.prompt).expect("prompts serialize");
        match by_prompt.get(&key) {
            Some(&group) => members[group].push(i),
            None => {
                by_prompt.insert(key, requests.len());
                requests.push(request_for(record, &settings.params, remote));
                members.push(vec![i]);
            }
        }
    }
    drop(by_prompt);
    let todo: usize = members.iter().map(Vec::len).sum();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .with_context(|| format!("cannot write `{}`", partial.display()))?;
    // With a cache, every answer is committed there before its line is written, so
    // lines may sit in a buffer: one lost in a crash comes back from the cache. Without
    // a cache each line goes to the file at once.
    let flush_each = client.cache().is_none();
    let mut sink = std::io::BufWriter::with_capacity(1 << 16, file);
    let mut answered = 0usize;

    // Requests the cache answers in full are written without going through the
    // scheduler (one read transaction per chunk).
    let mut pending: Vec<usize> = Vec::new();
    for (chunk_index, chunk) in requests.chunks(4096).enumerate() {
        for (offset, hit) in client.lookup_many(chunk)?.into_iter().enumerate() {
            let group = chunk_index * 4096 + offset;
            match hit {
                Some(answer) => {
                    for &i in &members[group] {
                        sink.write_all(
                            reply_line(&records[i].id, &answer, remote.samples).as_bytes(),
                        )?;
                    }
                    answered += members[group].len();
                }
                None => pending.push(group),
            }
        }
    }

    let started = Instant::now();
    let mut failures: Vec<(usize, String, &'static str)> = Vec::new();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let requests = &requests;
    let members = &members;
    let mut results = stream::iter(pending)
        .map(|group| async move { (group, client.generate(&requests[group]).await) })
        .buffer_unordered(remote.concurrency.saturating_mul(2).max(1));
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let next = tokio::select! {
            next = results.next() => next,
            _ = ticker.tick() => {
                sink.flush()?;
                let seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "progress: {}/{todo} records ({} failed) in {seconds:.0}s, {:.1} records/s",
                    answered + failures.len(),
                    failures.len(),
                    answered as f64 / seconds
                );
                continue;
            }
            _ = &mut interrupt => {
                sink.flush()?;
                bail!(
                    "interrupted: {} of {} records are in `{}`\nhint: run the same command again to resume; answered requests are not asked again",
                    done.len() + answered,
                    records.len(),
                    partial.display()
                );
            }
        };
        let Some((group, result)) = next else { break };
        match result {
            Ok(answer) => {
                let mut lines = String::new();
                for &i in &members[group] {
                    lines.push_str(&reply_line(&records[i].id, &answer, remote.samples));
                }
                // Whole lines per write: a crash leaves at most one torn line.
                sink.write_all(lines.as_bytes())?;
                if flush_each {
                    sink.flush()?;
                }
                answered += members[group].len();
            }
            Err(error) => {
                for &i in &members[group] {
                    failures.push((i, error.chain(), error.kind()));
                }
            }
        }
    }
    drop(results);
    let file = sink.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);

    let errors_path = errors_path(output);
    if !failures.is_empty() {
        failures.sort_by_key(|(i, _, _)| *i);
        let mut text = String::new();
        for (i, message, kind) in &failures {
            text.push_str(
                &json!({"id": records[*i].id, "error": message, "kind": kind}).to_string(),
            );
            text.push('\n');
        }
        seqit_core::durable::atomic_write(&errors_path, text.as_bytes())
            .with_context(|| format!("cannot write `{}`", errors_path.display()))?;
        let (i, message, _) = &failures[0];
        bail!(
            "{} of {} records failed after every retry (first: record {}: {message}); they are listed in `{}`, the {} answered are kept in `{}`\nhint: run the same command again to retry only the failed records",
            failures.len(),
            records.len(),
            records[*i].id,
            errors_path.display(),
            done.len() + answered,
            partial.display()
        );
    }
    if errors_path.exists() {
        std::fs::remove_file(&errors_path)?;
    }
    finish_output(records, &partial, output)
}

fn errors_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".errors.jsonl");
    output.with_file_name(name)
}
