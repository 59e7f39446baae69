//! What a job would ask, without asking: dry-run estimates and Batch API request files.
//! Both key every sample exactly as the online run's [`Client`](crate::Client) will, so
//! what they count as cached is what that run finds in the cache.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use seqit_core::durable::atomic_write;
use serde_json::Value;

use super::file::open_partial;
use super::{GenerateFile, InputRecord, RequestSettings};
use crate::batch::export_line;
use crate::remote::wire::estimate_prompt_tokens;
use crate::{Cache, CacheKey, Estimate, LlmRequest};

/// What a dry run of a [`GenerateFile`] job found.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRun {
    /// Samples, cache hits and tokens of the records still to generate.
    pub estimate: Estimate,
    /// Records already in the partial output of an earlier run (not counted).
    pub already_written: usize,
}

/// What [`export_batch`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Request lines written, one per sample.
    pub requests: u64,
    /// Samples left out because an earlier record asks for the same (same prompt).
    pub duplicates: u64,
    /// Samples left out because the cache holds them.
    pub cached: u64,
}

impl RequestSettings {
    /// What asking every sample of `records` of `model` would take, contacting nothing:
    /// samples `cache` holds are counted as cached, a sample several records ask for
    /// once. `scope` is the endpoint identity in cache keys (see
    /// [`Client::cache_scope`](crate::Client::cache_scope)).
    pub fn estimate<'r>(
        &self,
        records: impl IntoIterator<Item = &'r InputRecord>,
        model: &str,
        scope: Option<&str>,
        cache: Option<&Cache>,
    ) -> Result<Estimate> {
        let mut estimate = Estimate {
            model: model.to_string(),
            ..Estimate::default()
        };
        let counts = for_each_unanswered(self, records, model, scope, cache, |_, request, _| {
            estimate.prompt_tokens += estimate_prompt_tokens(&request.prompt);
            estimate.max_completion_tokens += request.params.max_tokens as u64;
        })?;
        estimate.samples = counts.unique;
        estimate.cached_samples = counts.cached;
        Ok(estimate)
    }
}

impl GenerateFile {
    /// [`RequestSettings::estimate`] of the records not yet in the partial output of an
    /// earlier run. Creates no file.
    pub fn estimate(
        &self,
        records: &[InputRecord],
        model: &str,
        scope: Option<&str>,
        cache: Option<&Cache>,
    ) -> Result<DryRun> {
        let partial = self.partial_path();
        let done = if partial.exists() {
            open_partial(&partial)?.1
        } else {
            HashSet::new()
        };
        let todo = records.iter().filter(|r| !done.contains(&r.id.to_string()));
        Ok(DryRun {
            estimate: self.requests.estimate(todo, model, scope, cache)?,
            already_written: done.len(),
        })
    }
}

/// Writes an OpenAI Batch API request file to `output` (atomically): one line per
/// sample `records` ask for (see [`export_line`]), each once, leaving out what `cache`
/// holds. `model` is written into every request; `scope` is the endpoint identity in
/// the cache keys of the later online run (`None` when it shares answers across
/// endpoints), so that imported answers are found by that run.
pub fn export_batch(
    settings: &RequestSettings,
    records: &[InputRecord],
    model: &str,
    scope: Option<&str>,
    cache: Option<&Cache>,
    output: &Path,
) -> Result<ExportReport> {
    let mut text = String::new();
    let counts = for_each_unanswered(
        settings,
        records,
        model,
        scope,
        cache,
        |record, request, key| {
            // String ids as they are, so that `custom_id`s read naturally.
            let id = match &record.id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            text.push_str(&export_line(model, request, &id, key));
            text.push('\n');
        },
    )?;
    atomic_write(output, text.as_bytes())
        .with_context(|| format!("cannot write `{}`", output.display()))?;
    Ok(ExportReport {
        requests: counts.unique - counts.cached,
        duplicates: counts.duplicates,
        cached: counts.cached,
    })
}

/// Samples counted by [`for_each_unanswered`].
#[derive(Default)]
struct Counts {
    /// Distinct samples asked for.
    unique: u64,
    /// Samples asked for again by a later record.
    duplicates: u64,
    /// Distinct samples the cache holds.
    cached: u64,
}

/// Calls `each` with every distinct sample `records` ask for that `cache` does not hold:
/// its record (the first that asks for it), its single-sample request and its cache key.
fn for_each_unanswered<'r>(
    settings: &RequestSettings,
    records: impl IntoIterator<Item = &'r InputRecord>,
    model: &str,
    scope: Option<&str>,
    cache: Option<&Cache>,
    mut each: impl FnMut(&'r InputRecord, &LlmRequest, &CacheKey),
) -> Result<Counts> {
    let mut seen = HashSet::new();
    let mut counts = Counts::default();
    for record in records {
        let request = settings.request(record.prompt.clone());
        for index in request.sample_indices() {
            let key = CacheKey::new(
                scope,
                request.kind(),
                model,
                &request.prompt,
                &request.params,
                index,
                &request.prompt_version,
            );
            if !seen.insert(key) {
                counts.duplicates += 1;
                continue;
            }
            counts.unique += 1;
            if let Some(cache) = cache {
                if cache.get(&key)?.is_some() {
                    counts.cached += 1;
                    continue;
                }
            }
            each(record, &request.for_samples(index, 1), &key);
        }
    }
    Ok(counts)
}
