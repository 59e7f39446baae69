//! `seqit batch export|import`: a `seqit generate --endpoint` job as an OpenAI Batch API
//! request file, and the batch's results back into the request cache, so the same
//! `generate` command afterwards completes without asking anything.

use std::io::BufReader;

use anyhow::{bail, Context, Result};
use seqit_llm::batch::import_results;
use seqit_llm::remote::{endpoint_identity, normalize_base_url};
use seqit_llm::{export_batch, thousands, Cache, RequestSettings};

use crate::cli::{BatchCommand, BatchExportArgs, BatchImportArgs};
use crate::printer::{note, warn};

pub fn run(command: BatchCommand) -> Result<()> {
    match command {
        BatchCommand::Export(args) => export(*args),
        BatchCommand::Import(args) => import(args),
    }
}

fn export(args: BatchExportArgs) -> Result<()> {
    if args.samples == 0 {
        bail!("`--n` must be at least 1");
    }
    // Cache keys name the endpoint that will read the answers, as that run's would.
    let scope = match (&args.endpoint, args.share_cache_across_endpoints) {
        (_, true) => None,
        (Some(endpoint), false) => Some(endpoint_identity(&normalize_base_url(endpoint)?)),
        (None, false) => bail!(
            "say which endpoint the batch's answers are for: `--endpoint URL` (the one the later `seqit generate --endpoint` uses), or `--share-cache-across-endpoints` (the later run then needs that flag too)\nhint: cached answers are kept per endpoint, so two servers with the same model name never share them"
        ),
    };
    let settings = RequestSettings {
        system: args.system.clone(),
        raw: args.raw,
        params: super::sampling_params(&args.decoding)?,
        samples: args.samples,
        prompt_version: args.prompt_version.clone(),
    };
    let records = settings.read_input(&args.input)?;
    let cache = args.cache.as_deref().map(Cache::open).transpose()?;
    let report = export_batch(
        &settings,
        &records,
        &args.model,
        scope.as_deref(),
        cache.as_ref(),
        &args.output,
    )?;
    let mut left_out = String::new();
    if report.duplicates > 0 {
        let duplicates = thousands(report.duplicates);
        left_out.push_str(&format!("; {duplicates} duplicate prompts sent once"));
    }
    if report.cached > 0 {
        let cached = thousands(report.cached);
        left_out.push_str(&format!("; {cached} already in the cache left out"));
    }
    note(format!(
        "wrote {} requests ({} records × {} samples{left_out}) to {}",
        thousands(report.requests),
        thousands(records.len() as u64),
        args.samples,
        args.output.display()
    ));
    Ok(())
}

fn import(args: BatchImportArgs) -> Result<()> {
    let file = std::fs::File::open(&args.results)
        .with_context(|| format!("cannot open `{}`", args.results.display()))?;
    let cache = Cache::open(&args.cache)?;
    let source = args.results.display().to_string();
    let report = import_results(BufReader::new(file), &source, &cache)?;
    note(format!(
        "imported {} answers into {}",
        thousands(report.imported),
        args.cache.display()
    ));
    if !report.failed.is_empty() {
        let mut message = format!(
            "{} requests failed in the batch and were not imported (a later `seqit generate --endpoint` asks them online):",
            thousands(report.failed.len() as u64)
        );
        for (custom_id, error) in report.failed.iter().take(10) {
            message.push_str(&format!("\n  {custom_id}: {error}"));
        }
        if report.failed.len() > 10 {
            message.push_str(&format!("\n  ... and {} more", report.failed.len() - 10));
        }
        warn(message);
    }
    Ok(())
}
