//! `seqit batch export|import`: a `seqit generate --endpoint` job as an OpenAI Batch API
//! request file, and the batch's results back into the request cache, so the same
//! `generate` command afterwards completes without asking anything.

use std::collections::HashSet;
use std::io::BufReader;

use anyhow::{Context, Result};
use seqit_llm::batch::{export_line, import_results};
use seqit_llm::{thousands, Cache, CacheKey, LlmRequest};
use serde_json::Value;

use super::generate::read_input;
use crate::cli::{BatchCommand, BatchExportArgs, BatchImportArgs};

pub fn run(command: BatchCommand) -> Result<()> {
    match command {
        BatchCommand::Export(args) => export(*args),
        BatchCommand::Import(args) => import(args),
    }
}

/// A record id as text: strings as they are, other JSON values as JSON.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn export(args: BatchExportArgs) -> Result<()> {
    if args.samples == 0 {
        anyhow::bail!("`--n` must be at least 1");
    }
    // Cache keys name the endpoint that will read the answers, as that run's would.
    let scope = match (&args.endpoint, args.share_cache_across_endpoints) {
        (_, true) => None,
        (Some(endpoint), false) => Some(seqit_llm::remote::endpoint_identity(
            &seqit_llm::remote::normalize_base_url(endpoint)?,
        )),
        (None, false) => anyhow::bail!(
            "say which endpoint the batch's answers are for: `--endpoint URL` (the one the later `seqit generate --endpoint` uses), or `--share-cache-across-endpoints` (the later run then needs that flag too)\nhint: cached answers are kept per endpoint, so two servers with the same model name never share them"
        ),
    };
    let params = super::sampling_params(&args.decoding)?;
    let records = read_input(&args.input, args.system.as_deref(), args.raw)?;
    let cache = args.cache.as_deref().map(Cache::open).transpose()?;
    let mut seen = HashSet::new();
    let (mut written, mut duplicates, mut cached) = (0u64, 0u64, 0u64);
    let mut text = String::new();
    for record in &records {
        let request = LlmRequest::new(record.prompt.clone(), params.clone())
            .with_samples(args.samples)
            .with_prompt_version(args.prompt_version.clone());
        for index in request.sample_indices() {
            let key = CacheKey::new(
                scope.as_deref(),
                request.kind(),
                &args.model,
                &request.prompt,
                &request.params,
                index,
                &request.prompt_version,
            );
            if !seen.insert(key) {
                duplicates += 1;
                continue;
            }
            if let Some(cache) = &cache {
                if cache.get(&key)?.is_some() {
                    cached += 1;
                    continue;
                }
            }
            text.push_str(&export_line(
                &args.model,
                &request.for_samples(index, 1),
                &id_text(&record.id),
                &key,
            ));
            text.push('\n');
            written += 1;
        }
    }
    seqit_core::durable::atomic_write(&args.output, text.as_bytes())
        .with_context(|| format!("cannot write `{}`", args.output.display()))?;
    let mut note = String::new();
    if duplicates > 0 {
        note.push_str(&format!(
            "; {} duplicate prompts sent once",
            thousands(duplicates)
        ));
    }
    if cached > 0 {
        note.push_str(&format!(
            "; {} already in the cache left out",
            thousands(cached)
        ));
    }
    eprintln!(
        "wrote {} requests ({} records × {} samples{note}) to {}",
        thousands(written),
        thousands(records.len() as u64),
        args.samples,
        args.output.display()
    );
    Ok(())
}

fn import(args: BatchImportArgs) -> Result<()> {
    let file = std::fs::File::open(&args.results)
        .with_context(|| format!("cannot open `{}`", args.results.display()))?;
    let cache = Cache::open(&args.cache)?;
    let report = import_results(
        BufReader::new(file),
        &args.results.display().to_string(),
        &cache,
    )?;
    eprintln!(
        "imported {} answers into {}",
        thousands(report.imported),
        args.cache.display()
    );
    if !report.failed.is_empty() {
        eprintln!(
            "{} requests failed in the batch and were not imported (a later `seqit generate --endpoint` asks them online):",
            thousands(report.failed.len() as u64)
        );
        for (custom_id, message) in report.failed.iter().take(10) {
            eprintln!("  {custom_id}: {message}");
        }
        if report.failed.len() > 10 {
            eprintln!("  ... and {} more", report.failed.len() - 10);
        }
    }
    Ok(())
}
