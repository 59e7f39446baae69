//! `seqit generate`: one prompt to stdout, or a JSONL file of prompts to a JSONL file of
//! replies (appended as batches finish, so an interrupted run resumes where it stopped).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use seqit_core::journal::{with_suffix, Journal};
use seqit_core::{ChatMessage, Completion, Prompt, SamplingParams};
use seqit_engine::{Engine, GenerationRequest};
use serde_json::{json, Value};

use crate::cli::GenerateArgs;

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.remote.endpoint.is_some() {
        return super::endpoint::run(args);
    }
    super::endpoint::reject_remote_only_flags(&args.remote)?;
    let params = super::sampling_params(&args.decoding)?;
    let engine = super::load_engine(&args.model)?;
    let started = Instant::now();
    let completions = match (&args.prompt, &args.input, &args.output) {
        (Some(prompt), _, _) => {
            let request = GenerationRequest {
                prompt: build_prompt(prompt, args.system.as_deref(), args.raw),
                params,
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let completions = engine.generate(&[request], &mut |_, delta| {
                let _ = out.write_all(delta.as_bytes());
                let _ = out.flush();
            })?;
            writeln!(out)?;
            out.flush()?;
            report_structure(&completions[0]);
            completions
        }
        (None, Some(input), Some(output)) => generate_file(&engine, &args, input, output, params)?,
        _ => bail!("give `--prompt TEXT`, or `--input FILE --output FILE`"),
    };
    if args.stats {
        let generated: usize = completions.iter().map(Completion::completion_tokens).sum();
        let prompt: usize = completions.iter().map(|c| c.prompt_tokens).sum();
        let seconds = started.elapsed().as_secs_f64();
        // The engine is this run's own: its prefix-cache counters cover this run.
        let prefixes = engine.prefix_cache_stats();
        eprintln!(
            "{}",
            json!({"sequences": completions.len(), "prompt_tokens": prompt, "generated_tokens": generated,
                   "seconds": seconds, "generated_tokens_per_second": generated as f64 / seconds,
                   "prefix_cache_hit_tokens": prefixes.hit_tokens,
                   "prefix_cache_hit_rate": prefixes.hit_rate(),
                   "prefix_cache_shared_prefill_tokens": prefixes.shared_prefill_tokens})
        );
    }
    Ok(())
}

pub(super) fn build_prompt(text: &str, system: Option<&str>, raw: bool) -> Prompt {
    if raw {
        return Prompt::Text(text.to_string());
    }
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage::system(system));
    }
    messages.push(ChatMessage::user(text));
    Prompt::Chat(messages)
}

/// One line of the input file.
pub(super) struct InputRecord {
    pub(super) id: Value,
    pub(super) prompt: Prompt,
}

pub(super) fn read_input(path: &Path, system: Option<&str>, raw: bool) -> Result<Vec<InputRecord>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut records = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line_no = index + 1;
        let at = || format!("{}:{line_no}", path.display());
        let line = line.with_context(|| format!("{}: not valid UTF-8 text", at()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(&line).with_context(|| format!("{}: invalid JSON", at()))?;
        let id = value.get("id").cloned().unwrap_or(json!(records.len()));
        if !seen.insert(id.to_string()) {
            bail!("{}: field `id`: {id} appears twice", at());
        }
        let prompt = match (value.get("prompt"), value.get("messages")) {
            (Some(Value::String(text)), None) => build_prompt(text, system, raw),
            (None, Some(messages)) => {
                let mut messages: Vec<ChatMessage> = serde_json::from_value(messages.clone()).with_context(|| {
                    format!("{}: field `messages`: expected a list of {{\"role\", \"content\"}} objects", at())
                })?;
                if let Some(system) = system {
                    if messages.first().map(|m| m.role.as_str()) != Some("system") {
                        messages.insert(0, ChatMessage::system(system));
                    }
                }
                Prompt::Chat(messages)
            }
            (Some(_), None) => bail!("{}: field `prompt`: expected a string", at()),
            (Some(_), Some(_)) => bail!("{}: give either `prompt` or `messages`, not both", at()),
            (None, None) => bail!("{}: missing field `prompt` or `messages`", at()),
        };
        records.push(InputRecord { id, prompt });
    }
    Ok(records)
}

pub(super) fn partial_path(output: &Path) -> PathBuf {
    with_suffix(output, ".partial")
}

/// After a `--prompt` reply: the log-probabilities as a JSON line on stderr when asked
/// for, and a warning when the reply does not complete its constraint.
fn report_structure(completion: &Completion) {
    if let Some(logprobs) = &completion.logprobs {
        eprintln!("{}", json!({ "logprobs": logprobs }));
    }
    if completion.constraint_met == Some(false) {
        eprintln!(
            "warning: the reply does not complete the constraint (finish reason: {:?}); raise --max-tokens",
            completion.finish_reason
        );
    }
}

/// Ids already written by an earlier, interrupted run, and their replies. A torn last
/// line (the process died mid-write) is cut off and its record generated again.
pub(super) fn resume_done(partial: &Path) -> Result<(HashSet<String>, Vec<Completion>)> {
    if !partial.exists() {
        // Nothing to resume, and nothing created (a dry run touches no file).
        return Ok(Default::default());
    }
    let (_, resumed) = Journal::open(partial, None)
        .with_context(|| format!("cannot resume from `{}`", partial.display()))?;
    let mut done = HashSet::new();
    let mut completions = Vec::new();
    for value in resumed.entries {
        done.insert(value["id"].to_string());
        completions.push(Completion {
            text: value["output"].as_str().unwrap_or_default().to_string(),
            token_ids: Vec::new(),
            prompt_tokens: value["prompt_tokens"].as_u64().unwrap_or(0) as usize,
            finish_reason: serde_json::from_value(value["finish_reason"].clone())
                .unwrap_or(seqit_core::FinishReason::Stop),
            logprobs: None,
            constraint_met: value["constraint_met"].as_bool(),
        });
    }
    Ok((done, completions))
}

fn generate_file(
    engine: &Engine,
    args: &GenerateArgs,
    input: &Path,
    output: &Path,
    params: SamplingParams,
) -> Result<Vec<Completion>> {
    let records = read_input(input, args.system.as_deref(), args.raw)?;
    let partial = partial_path(output);
    let (done, mut completions) = resume_done(&partial)?;
    let todo: Vec<&InputRecord> = records
        .iter()
        .filter(|r| !done.contains(&r.id.to_string()))
        .collect();
    if !done.is_empty() {
        eprintln!(
            "resuming: {} of {} records already generated",
            done.len(),
            records.len()
        );
    }
    let mut sink = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .with_context(|| format!("cannot write `{}`", partial.display()))?;
    for chunk in todo.chunks(engine.max_batch()) {
        let requests: Vec<GenerationRequest> = chunk
            .iter()
            .map(|r| GenerationRequest {
                prompt: r.prompt.clone(),
                params: params.clone(),
            })
            .collect();
        let batch = engine.generate(&requests, &mut |_, _| {})?;
        let mut lines = String::new();
        for (record, completion) in chunk.iter().zip(&batch) {
            let mut line = json!({
                "id": record.id,
                "output": completion.text,
                "finish_reason": completion.finish_reason,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens(),
            });
            if let Some(met) = completion.constraint_met {
                line["constraint_met"] = json!(met);
            }
            if let Some(logprobs) = &completion.logprobs {
                line["logprobs"] = json!(logprobs);
            }
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        // One write per batch: a crash leaves whole lines plus at most one torn line.
        sink.write_all(lines.as_bytes())?;
        sink.flush()?;
        completions.extend(batch);
    }
    sink.sync_all()?;
    drop(sink);
    finish_output(&records, &partial, output)?;
    Ok(completions)
}

/// Writes the replies in `partial` to `output` in input order (an atomic rename), then
/// removes `partial`.
pub(super) fn finish_output(records: &[InputRecord], partial: &Path, output: &Path) -> Result<()> {
    // Records in input order, then an atomic rename into place.
    let text = std::fs::read_to_string(partial)?;
    let mut by_id: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    #[derive(serde::Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Value,
    }
    for line in text.lines() {
        let value: IdOnly = serde_json::from_str(line)?;
        by_id.insert(value.id.to_string(), line);
    }
    let mut ordered = String::with_capacity(text.len());
    for record in records {
        let line = by_id
            .get(&record.id.to_string())
            .with_context(|| format!("record {} has no reply", record.id))?;
        ordered.push_str(line);
        ordered.push('\n');
    }
    seqit_core::durable::atomic_write(output, ordered.as_bytes())
        .with_context(|| format!("cannot write `{}`", output.display()))?;
    std::fs::remove_file(partial)?;
    eprintln!("wrote {} replies to {}", records.len(), output.display());
    Ok(())
}
