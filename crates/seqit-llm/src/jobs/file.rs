//! [`generate_file`]: every record of an input file answered into a JSONL output.
//!
//! Replies are appended to `OUTPUT.partial`, a [`Journal`], one line each as they arrive
//! (after the client has committed the answer to its cache), so a run that is killed and
//! started again skips the records already written and, with a cache, re-asks nothing
//! answered. Records that fail after the backend's retries are listed in
//! `OUTPUT.errors.jsonl`; the output is only written, in input order and atomically,
//! once every record has a reply.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use seqit_core::durable::atomic_write;
use seqit_core::journal::{with_suffix, Journal};
use seqit_core::progress::Progress;
use seqit_core::{FinishReason, TokenLogprob};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{InputRecord, RequestSettings};
use crate::{Client, LlmRequest, LlmResponse};

/// Requests looked up in the cache per read transaction.
const LOOKUP_CHUNK: usize = 4096;

/// A file-generation job: the records of `input` answered into `output`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateFile {
    /// JSONL records (see [`RequestSettings::read_input`]).
    pub input: PathBuf,
    /// JSONL replies, one per record in input order, keeping its id. Its journal is
    /// [`partial_path`](Self::partial_path), its failed records
    /// [`errors_path`](Self::errors_path).
    pub output: PathBuf,
    /// How each record is asked.
    pub requests: RequestSettings,
    /// Requests the backend answers at once (its own limit: twice as many are handed to
    /// the client, so that the next ones are always queued).
    pub concurrency: usize,
}

/// What a finished [`generate_file`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileReport {
    /// Records in the output.
    pub records: usize,
    /// Of them, found in the partial output of an earlier run.
    pub resumed: usize,
    /// Prompt tokens of every reply in the output (those of earlier runs included).
    pub prompt_tokens: u64,
    /// Completion tokens of every reply in the output (those of earlier runs included).
    pub completion_tokens: u64,
}

impl GenerateFile {
    /// The records of [`input`](Self::input).
    pub fn read_records(&self) -> Result<Vec<InputRecord>> {
        self.requests.read_input(&self.input)
    }

    /// The journal of replies: `OUTPUT.partial`.
    pub fn partial_path(&self) -> PathBuf {
        with_suffix(&self.output, ".partial")
    }

    /// Where failed records are listed: `OUTPUT.errors.jsonl`.
    pub fn errors_path(&self) -> PathBuf {
        with_suffix(&self.output, ".errors.jsonl")
    }
}

/// Opens the journal of replies at `path`, with the ids it holds. A torn last line (the
/// process died mid-write) is cut off and its record generated again.
pub(super) fn open_partial(path: &Path) -> Result<(Journal, HashSet<String>)> {
    let (journal, resumed) = Journal::open(path, None)
        .with_context(|| format!("cannot resume from `{}`", path.display()))?;
    let done = resumed
        .entries
        .iter()
        .map(|e| e["id"].to_string())
        .collect();
    Ok((journal, done))
}

/// Answers the `records` of `job` (read with [`GenerateFile::read_records`]) with
/// `client` into `job.output` (see the module documentation). Records with the same
/// prompt share one request; requests the cache answers in full are written without
/// going through the backend. `progress` gets a `generate` stage counting records.
///
/// Dropping the future (e.g. on Ctrl-C) loses nothing written: every reply is a whole
/// line of the journal as soon as it arrives.
pub async fn generate_file(
    client: &Client,
    job: &GenerateFile,
    records: &[InputRecord],
    progress: &dyn Progress,
) -> Result<FileReport> {
    let partial = job.partial_path();
    let (journal, done) = open_partial(&partial)?;
    let (requests, members) = group_by_prompt(job, records, &done);
    let resumed = records.len() - members.iter().map(Vec::len).sum::<usize>();
    if resumed > 0 {
        progress.note(&format!(
            "resuming: {resumed} of {} records already generated",
            records.len()
        ));
    }
    progress.start("generate", records.len() as u64, resumed as u64);
    let write = |group: usize, answer: &LlmResponse| -> Result<()> {
        for &i in &members[group] {
            journal
                .append(&Reply::new(&records[i].id, answer, job.requests.samples))
                .with_context(|| format!("cannot write `{}`", partial.display()))?;
        }
        progress.advance(members[group].len() as u64);
        Ok(())
    };

    // One read transaction per chunk of requests.
    let mut pending = Vec::new();
    for (chunk_index, chunk) in requests.chunks(LOOKUP_CHUNK).enumerate() {
        for (offset, hit) in client.lookup_many(chunk)?.into_iter().enumerate() {
            let group = chunk_index * LOOKUP_CHUNK + offset;
            match hit {
                Some(answer) => write(group, &answer)?,
                None => pending.push(group),
            }
        }
    }

    let mut failures = Vec::new();
    let requests = &requests;
    let mut answers = stream::iter(pending)
        .map(|group| async move { (group, client.generate(&requests[group]).await) })
        .buffer_unordered(job.concurrency.saturating_mul(2).max(1));
    while let Some((group, answer)) = answers.next().await {
        match answer {
            Ok(answer) => write(group, &answer)?,
            Err(error) => {
                let (message, kind) = (error.chain(), error.kind());
                failures.extend(members[group].iter().map(|&i| (i, message.clone(), kind)));
                progress.advance(members[group].len() as u64);
            }
        }
    }
    drop(answers);
    progress.finish();
    list_failures(job, records, failures)?;
    drop(journal);
    let report = finish_output(records, &partial, &job.output)?;
    Ok(FileReport { resumed, ..report })
}

/// The requests for the records not `done`, and the records (by position) each
/// answers: records with the same prompt share one request.
fn group_by_prompt(
    job: &GenerateFile,
    records: &[InputRecord],
    done: &HashSet<String>,
) -> (Vec<LlmRequest>, Vec<Vec<usize>>) {
    let mut requests = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut by_prompt: HashMap<String, usize> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        if done.contains(&record.id.to_string()) {
            continue;
        }
        let key = serde_json::to_string(&record.prompt).expect("prompts serialize");
        let group = *by_prompt.entry(key).or_insert_with(|| {
            requests.push(job.requests.request(record.prompt.clone()));
            members.push(Vec::new());
            members.len() - 1
        });
        members[group].push(i);
    }
    (requests, members)
}

/// With `failures` (record position, message, kind), lists them in
/// [`GenerateFile::errors_path`] and fails saying so; without, removes the list an
/// earlier run left.
fn list_failures(
    job: &GenerateFile,
    records: &[InputRecord],
    mut failures: Vec<(usize, String, &'static str)>,
) -> Result<()> {
    let errors_path = job.errors_path();
    if failures.is_empty() {
        if errors_path.exists() {
            std::fs::remove_file(&errors_path)
                .with_context(|| format!("cannot remove `{}`", errors_path.display()))?;
        }
        return Ok(());
    }
    failures.sort_by_key(|(i, _, _)| *i);
    let text: String = failures
        .iter()
        .map(|(i, message, kind)| {
            format!(
                "{}\n",
                json!({"id": records[*i].id, "error": message, "kind": kind})
            )
        })
        .collect();
    atomic_write(&errors_path, text.as_bytes())
        .with_context(|| format!("cannot write `{}`", errors_path.display()))?;
    let (i, message, _) = &failures[0];
    bail!(
        "{} of {} records failed after every retry (first: record {}: {message}); they are listed in `{}`, the {} answered are kept in `{}`\nhint: run the same command again to retry only the failed records",
        failures.len(),
        records.len(),
        records[*i].id,
        errors_path.display(),
        records.len() - failures.len(),
        job.partial_path().display()
    )
}

/// A record's output line. With one sample: `output`, `finish_reason`, the token
/// counts, and `constraint_met` and `logprobs` where known; with several, `outputs` and
/// `finish_reasons` lists. Fields are in this order for both backends.
#[derive(Serialize)]
#[serde(untagged)]
enum Reply<'a> {
    One {
        id: &'a Value,
        output: &'a str,
        finish_reason: FinishReason,
        prompt_tokens: u64,
        completion_tokens: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        constraint_met: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        logprobs: Option<&'a [TokenLogprob]>,
    },
    Many {
        id: &'a Value,
        outputs: Vec<&'a str>,
        finish_reasons: Vec<FinishReason>,
        prompt_tokens: u64,
        completion_tokens: u64,
    },
}

impl<'a> Reply<'a> {
    fn new(id: &'a Value, answer: &'a LlmResponse, samples: u32) -> Self {
        // The prompt is counted once however many samples came back.
        let prompt_tokens = answer.samples.iter().filter_map(|s| s.prompt_tokens).max();
        let completion_tokens = answer.samples.iter().filter_map(|s| s.completion_tokens);
        let (prompt_tokens, completion_tokens) =
            (prompt_tokens.unwrap_or(0), completion_tokens.sum());
        match (samples, answer.samples.as_slice()) {
            (1, [sample, ..]) => Reply::One {
                id,
                output: &sample.text,
                finish_reason: sample.finish_reason,
                prompt_tokens,
                completion_tokens,
                constraint_met: sample.constraint_met,
                logprobs: sample.logprobs.as_deref(),
            },
            (_, samples) => Reply::Many {
                id,
                outputs: samples.iter().map(|s| s.text.as_str()).collect(),
                finish_reasons: samples.iter().map(|s| s.finish_reason).collect(),
                prompt_tokens,
                completion_tokens,
            },
        }
    }
}

/// Writes the replies in `partial` to `output` in input order (atomically), then removes
/// `partial`. Lines are copied as they are; the last line of an id wins.
fn finish_output(records: &[InputRecord], partial: &Path, output: &Path) -> Result<FileReport> {
    /// What is read of a line: lines of earlier versions may hold anything else.
    #[derive(Deserialize)]
    struct Counted {
        #[serde(default)]
        id: Value,
        #[serde(default)]
        prompt_tokens: Value,
        #[serde(default)]
        completion_tokens: Value,
    }
    let text = std::fs::read_to_string(partial)
        .with_context(|| format!("cannot read `{}`", partial.display()))?;
    let mut by_id = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let reply: Counted = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: invalid JSON", partial.display(), number + 1))?;
        by_id.insert(reply.id.to_string(), (line, reply));
    }
    let mut report = FileReport {
        records: records.len(),
        ..FileReport::default()
    };
    let mut ordered = String::with_capacity(text.len());
    for record in records {
        let (line, reply) = by_id
            .get(&record.id.to_string())
            .with_context(|| format!("record {} has no reply", record.id))?;
        ordered.push_str(line);
        ordered.push('\n');
        report.prompt_tokens += reply.prompt_tokens.as_u64().unwrap_or(0);
        report.completion_tokens += reply.completion_tokens.as_u64().unwrap_or(0);
    }
    atomic_write(output, ordered.as_bytes())
        .with_context(|| format!("cannot write `{}`", output.display()))?;
    std::fs::remove_file(partial)
        .with_context(|| format!("cannot remove `{}`", partial.display()))?;
    Ok(report)
}
