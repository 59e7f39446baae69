//! `seqit generate --endpoint URL`: the same job as the local `generate`, sent to an
//! OpenAI-compatible server through seqit-llm's remote backend, request cache and
//! ledger; `--dry-run` estimates it without contacting the server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use seqit_llm::remote::endpoint_identity;
use seqit_llm::{
    Cache, Client, GenerateFile, InputRecord, Ledger, PriceTable, RemoteBackend, RemoteConfig,
    RequestSettings,
};
use serde_json::json;

use super::generate::{block_on, file_job, generate_file, request_settings};
use crate::cli::GenerateArgs;
use crate::printer::{note, result};

/// The remote job, checked before any work starts.
struct Settings {
    /// The client's settings; `model` is empty until known (`--model`, or asked).
    config: RemoteConfig,
    cache_path: Option<PathBuf>,
    prices: Option<PriceTable>,
    requests: RequestSettings,
    /// The file job (`None`: `--prompt`).
    job: Option<GenerateFile>,
}

impl Settings {
    fn from_args(args: &GenerateArgs) -> Result<Self> {
        let remote = &args.remote;
        let requests = request_settings(args)?;
        Ok(Self {
            config: remote.config(args.model.model.clone(), requests.params.seed)?,
            cache_path: remote.cache_path(args.output.as_deref()),
            prices: remote.price_table()?,
            job: file_job(args, requests.clone(), remote.concurrency),
            requests,
        })
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let mut settings = Settings::from_args(&args)?;
    let records = match (&args.prompt, &settings.job) {
        (Some(prompt), _) => vec![InputRecord {
            id: json!(0),
            prompt: settings.requests.prompt(prompt),
        }],
        (None, Some(job)) => job.read_records()?,
        _ => bail!("give `--prompt TEXT`, or `--input FILE --output FILE`"),
    };
    if args.remote.dry_run {
        return dry_run(&args, &settings, &records);
    }
    block_on(async {
        if settings.config.model.is_empty() {
            let config = &settings.config;
            settings.config.model = seqit_llm::served_model(
                &config.base_url,
                config.api_key.as_ref(),
                config.timeout,
                "`--model`",
            )
            .await?;
        }
        run_async(&args, &settings, &records).await
    })?
}

async fn run_async(
    args: &GenerateArgs,
    settings: &Settings,
    records: &[InputRecord],
) -> Result<()> {
    let ledger = Arc::new(Ledger::new(settings.prices.clone()));
    let mut client = Client::new(Arc::new(RemoteBackend::new(settings.config.clone())?))
        .with_ledger(ledger.clone())
        .share_cache_across_endpoints(args.remote.endpoint_cache.share_cache_across_endpoints);
    if let Some(path) = &settings.cache_path {
        client = client.with_cache(Arc::new(Cache::open(path)?));
    }
    let started = Instant::now();
    let outcome = match &settings.job {
        Some(job) => generate_file(&client, job, records).await.map(drop),
        None => {
            let request = settings.requests.request(records[0].prompt.clone());
            let answer = client.generate(&request).await?;
            answer
                .samples
                .iter()
                .for_each(|sample| result(&sample.text));
            Ok(())
        }
    };
    note(ledger.summary());
    if args.stats {
        let tallies = ledger.tallies();
        let t = tallies
            .get(&settings.config.model)
            .cloned()
            .unwrap_or_default();
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
    let Some(model) = args.model.model.as_deref() else {
        bail!("`--dry-run` needs `--model NAME` (it does not contact the endpoint)");
    };
    // Read the cache only if it exists: a dry run creates nothing.
    let cache = match &settings.cache_path {
        Some(path) if path.exists() => Some(Cache::open(path)?),
        _ => None,
    };
    let scope = (!args.remote.endpoint_cache.share_cache_across_endpoints)
        .then(|| endpoint_identity(&settings.config.base_url));
    let (scope, cache) = (scope.as_deref(), cache.as_ref());
    let (estimate, written) = match &settings.job {
        Some(job) => {
            let dry = job.estimate(records, model, scope, cache)?;
            (dry.estimate, dry.already_written)
        }
        None => (settings.requests.estimate(records, model, scope, cache)?, 0),
    };
    if written > 0 {
        note(format!(
            "{written} records already written to the partial output are not counted"
        ));
    }
    result(estimate.render(settings.prices.as_ref()));
    Ok(())
}
