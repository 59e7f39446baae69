//! `seqit generate`: one prompt to stdout, or a JSONL file of prompts to a JSONL file of
//! replies with seqit-llm's resumable [`seqit_llm::generate_file`], here with the local
//! model and in `endpoint.rs` with an OpenAI-compatible server.
//!
//! A single local prompt is the one thing that drives the engine directly: its reply is
//! streamed to stdout token by token, which the `Llm` trait does not carry.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use seqit_core::{Completion, DEFAULT_MODEL_NAME};
use seqit_engine::{Engine, GenerationRequest};
use seqit_llm::{Client, FileReport, GenerateFile, InputRecord, LocalBackend, RequestSettings};
use serde_json::json;

use crate::cli::GenerateArgs;
use crate::printer::{note, warn, Printer};

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.remote.endpoint.is_some() {
        return super::endpoint::run(args);
    }
    args.remote.reject_without_endpoint()?;
    let settings = request_settings(&args)?;
    let engine = Arc::new(super::load_engine(&args.model)?);
    let started = Instant::now();
    // The engine decodes a batch at a time.
    let job = file_job(&args, settings.clone(), engine.max_batch());
    let (sequences, prompt_tokens, generated) = match (&args.prompt, job) {
        (Some(prompt), _) => {
            let completion = stream_reply(&engine, &settings, prompt)?;
            let generated = completion.completion_tokens() as u64;
            (1, completion.prompt_tokens as u64, generated)
        }
        (None, Some(job)) => {
            let records = job.read_records()?;
            let name = args.model.model.as_deref().unwrap_or(DEFAULT_MODEL_NAME);
            let client = Client::new(Arc::new(LocalBackend::new(engine.clone(), name)));
            let report = block_on(generate_file(&client, &job, &records))??;
            (
                report.records,
                report.prompt_tokens,
                report.completion_tokens,
            )
        }
        _ => bail!("give `--prompt TEXT`, or `--input FILE --output FILE`"),
    };
    if args.stats {
        let seconds = started.elapsed().as_secs_f64();
        // The engine is this run's own: its prefix-cache counters cover this run.
        let prefixes = engine.prefix_cache_stats();
        eprintln!(
            "{}",
            json!({"sequences": sequences, "prompt_tokens": prompt_tokens, "generated_tokens": generated,
                   "seconds": seconds, "generated_tokens_per_second": generated as f64 / seconds,
                   "prefix_cache_hit_tokens": prefixes.hit_tokens,
                   "prefix_cache_hit_rate": prefixes.hit_rate(),
                   "prefix_cache_shared_prefill_tokens": prefixes.shared_prefill_tokens})
        );
    }
    Ok(())
}

/// How `args` asks each prompt (both backends).
pub(super) fn request_settings(args: &GenerateArgs) -> Result<RequestSettings> {
    Ok(RequestSettings {
        system: args.system.clone(),
        raw: args.raw,
        params: super::sampling_params(&args.decoding)?,
        samples: args.remote.samples,
        prompt_version: args.remote.prompt_version.clone(),
    })
}

/// The job of `--input FILE --output FILE` (`None` for `--prompt`).
pub(super) fn file_job(
    args: &GenerateArgs,
    requests: RequestSettings,
    concurrency: usize,
) -> Option<GenerateFile> {
    Some(GenerateFile {
        input: args.input.clone()?,
        output: args.output.clone()?,
        requests,
        concurrency,
    })
}

/// Runs `future` on a single-threaded runtime: the work is waiting on the network or on
/// the engine's own thread, and one thread saves a cross-thread wake-up per request.
pub(super) fn block_on<F: Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

/// [`seqit_llm::generate_file`] with the printer, stopped cleanly by Ctrl-C.
pub(super) async fn generate_file(
    client: &Client,
    job: &GenerateFile,
    records: &[InputRecord],
) -> Result<FileReport> {
    let printer = Printer::new();
    let report = tokio::select! {
        report = seqit_llm::generate_file(client, job, records, &printer) => report?,
        Ok(()) = tokio::signal::ctrl_c() => bail!(
            "interrupted: the replies received so far are in `{}`\nhint: run the same command again to resume from there",
            job.partial_path().display()
        ),
    };
    note(format!(
        "wrote {} replies to {}",
        report.records,
        job.output.display()
    ));
    Ok(report)
}

/// Streams the reply to `prompt` to stdout; then its log-probabilities go to stderr as
/// a JSON line when asked for, and a warning when it does not complete its constraint.
fn stream_reply(engine: &Engine, settings: &RequestSettings, prompt: &str) -> Result<Completion> {
    let request = GenerationRequest {
        prompt: settings.prompt(prompt),
        params: settings.params.clone(),
    };
    let mut out = std::io::stdout().lock();
    let completion = engine
        .generate(&[request], &mut |_, delta| {
            let _ = out.write_all(delta.as_bytes());
            let _ = out.flush();
        })?
        .remove(0);
    writeln!(out)?;
    out.flush()?;
    if let Some(logprobs) = &completion.logprobs {
        eprintln!("{}", json!({ "logprobs": logprobs }));
    }
    if completion.constraint_met == Some(false) {
        warn(format!(
            "the reply does not complete the constraint (finish reason: {:?}); raise --max-tokens",
            completion.finish_reason
        ));
    }
    Ok(completion)
}
