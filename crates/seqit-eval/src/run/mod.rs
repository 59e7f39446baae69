//! Whole evaluation jobs, as `seqit eval` runs them: one settings struct (in
//! [`settings`]: what clap parses, taken as it is) and one `run` function per benchmark
//! ([`gsm8k`], [`mgsm`], [`xquad`], [`seqeval`], [`alpacaeval`], [`mtbench`],
//! [`humaneval`], [`vqa`]).
//!
//! A job opens its models (the local engine or an OpenAI-compatible endpoint, behind the
//! request cache), answers (and judges) every item through the [`journal`](crate::journal),
//! writes its files atomically and returns an [`Outcome`]: the metrics and the result
//! lines to show. Each item's record is appended to `OUTPUT/items.jsonl.partial` the
//! moment it is ready (answers and verdicts also go to the request cache), so a killed
//! run resumes with the missing items only; at the end `items.jsonl` (in data order) and
//! `metrics.json` (scores and every setting) replace the journal.
//!
//! Jobs report through the caller's [`Progress`] and print nothing. They block: each
//! runs its own tokio runtime (backends keep their connections on it), so call them
//! outside any async runtime. Their errors are [`anyhow`] errors because they join those
//! of several crates (model loading, the cache, the sandbox, the readers), each with the
//! file or the setting at fault.

pub mod alpacaeval;
pub mod gsm8k;
pub mod humaneval;
pub mod mgsm;
pub mod mtbench;
pub mod seqeval;
pub mod settings;
pub mod vqa;
pub mod xquad;

pub use settings::{
    AlpacaevalSettings, AnswererSettings, EvalCommand, Gsm8kSettings, HumanevalSettings,
    JudgeSettings, MgsmSettings, MgsmStyle, MtbenchSettings, RunSettings, SandboxChoice,
    SeqevalSettings, VqaMode, VqaSettings, XquadSettings,
};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use seqit_core::progress::Progress;
use seqit_core::SamplingParams;
use seqit_llm::{BackendSpec, Cache, Client, Llm};
use serde_json::{json, Value};

use crate::answer::Answerer;
use crate::benchmarks::describe_prompt;
use crate::io::{with_suffix, write_atomic};
use crate::journal::Journal;
use crate::judge::{Judge, JudgePrompts};
use crate::prompt::FewShot;

/// A model to ask: an OpenAI-compatible endpoint or the local engine.
struct ModelSpec {
    /// API base of the endpoint; `None`: the local engine.
    endpoint: Option<String>,
    /// With an endpoint, the model name sent (`None`: the one model it lists); else a
    /// local model (`None`: the default one).
    model: Option<String>,
    /// Environment variable holding the endpoint's API key.
    api_key_env: String,
    /// Requests in flight at once (the local engine batches as many); at least 1.
    concurrency: usize,
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The metrics document, as written to `metrics.json`.
    pub metrics: Value,
    /// The results for the user, in order: the files written and the scores (what
    /// `seqit eval` prints on stdout).
    pub lines: Vec<String>,
}

/// A job's output directory, request cache and async runtime.
struct Workspace {
    dir: PathBuf,
    cache: Option<Arc<Cache>>,
    share_cache_across_endpoints: bool,
    max_response_bytes: usize,
    /// One runtime for the whole job: backends keep their connections on it.
    runtime: tokio::runtime::Runtime,
}

/// What a run is called, how many items it works on at once, and the settings that
/// decide its results (the journal header and the metrics file's `settings`).
struct Job<'a> {
    benchmark: &'a str,
    concurrency: usize,
    settings: Value,
}

impl Workspace {
    /// The workspace of `run`: its output directory, created when missing, and its
    /// request cache (none with `--no-cache`).
    fn create(run: &RunSettings) -> Result<Self> {
        let dir = run.output.as_path();
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let cache = if run.no_cache {
            None
        } else {
            let path = run
                .cache
                .as_deref()
                .map_or_else(|| dir.join("cache.sqlite"), Path::to_path_buf);
            let cache = Cache::open(&path)
                .with_context(|| format!("cannot open the request cache `{}`", path.display()))?;
            Some(Arc::new(cache))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            cache,
            share_cache_across_endpoints: run.endpoint_cache.share_cache_across_endpoints,
            max_response_bytes: run.endpoint_cache.max_response_bytes,
            runtime: tokio::runtime::Runtime::new().context("cannot start the async runtime")?,
        })
    }

    fn client(&self, backend: Arc<dyn Llm>) -> Client {
        let client =
            Client::new(backend).share_cache_across_endpoints(self.share_cache_across_endpoints);
        match &self.cache {
            Some(cache) => client.with_cache(cache.clone()),
            None => client,
        }
    }

    /// Opens `model` as [`backend_spec`] describes it.
    fn open_model(&self, model: &ModelSpec) -> Result<(Arc<dyn Llm>, BackendSpec)> {
        let spec = backend_spec(model, self.max_response_bytes)?;
        Ok((self.open(&spec)?, spec))
    }

    fn open(&self, spec: &BackendSpec) -> Result<Arc<dyn Llm>> {
        self.runtime.block_on(seqit_llm::open_backend(spec))
    }

    /// Runs `work` over `items` through the journal, then writes `items.jsonl` and
    /// `metrics.json` (`scores` of the records, `settings`). Returns the records and an
    /// outcome whose first line names both files.
    fn run<'a, T, F, Fut>(
        &self,
        job: Job<'_>,
        items: &'a [T],
        key: impl Fn(&T) -> String,
        work: F,
        scores: impl FnOnce(&[Value]) -> Value,
        progress: &dyn Progress,
    ) -> Result<(Vec<Value>, Outcome)>
    where
        F: Fn(&'a T) -> Fut,
        Fut: Future<Output = crate::Result<Value>>,
    {
        let started = Instant::now();
        let benchmark = job.benchmark.to_string();
        let settings = job.settings.clone();
        let records = self.journaled(job, "items.jsonl", items, key, work, progress)?;
        let metrics = json!({
            "benchmark": benchmark,
            "items": records.len(),
            "scores": scores(&records),
            "settings": settings,
            "seqit_version": env!("CARGO_PKG_VERSION"),
            "seconds": started.elapsed().as_secs_f64(),
        });
        let metrics_path = self.dir.join("metrics.json");
        write_atomic(
            &metrics_path,
            (serde_json::to_string_pretty(&metrics)? + "\n").as_bytes(),
        )?;
        let wrote = format!(
            "wrote {} and {}",
            self.dir.join("items.jsonl").display(),
            metrics_path.display()
        );
        Ok((
            records,
            Outcome {
                metrics,
                lines: vec![wrote],
            },
        ))
    }

    /// Runs `work` over the items not yet in `OUTPUT/<file>.partial`, appending each
    /// record as it is ready, then writes all records in the items' order to
    /// `OUTPUT/<file>` and removes the journal.
    fn journaled<'a, T, F, Fut>(
        &self,
        job: Job<'_>,
        file: &str,
        items: &'a [T],
        key: impl Fn(&T) -> String,
        work: F,
        progress: &dyn Progress,
    ) -> Result<Vec<Value>>
    where
        F: Fn(&'a T) -> Fut,
        Fut: Future<Output = crate::Result<Value>>,
    {
        let path = self.dir.join(file);
        let journal_path = with_suffix(&path, ".partial");
        let mut journal = Journal::open(&journal_path, &job.settings)?;
        let resumed = items
            .iter()
            .filter(|item| journal.done().contains_key(&key(item)))
            .count();
        if resumed > 0 {
            progress.note(&format!(
                "resuming: {resumed} of {} items already done in `{}`",
                items.len(),
                journal_path.display()
            ));
        }
        progress.start(job.benchmark, items.len() as u64, resumed as u64);
        let records =
            self.runtime
                .block_on(journal.run(items, &key, job.concurrency, work, |_| progress.advance(1)));
        progress.finish();
        let records = records?;
        drop(journal);
        write_atomic(&path, jsonl(&records).as_bytes())?;
        let _ = std::fs::remove_file(&journal_path);
        Ok(records)
    }
}

/// The backend `model` names, with the job's response size limit.
fn backend_spec(model: &ModelSpec, max_response_bytes: usize) -> Result<BackendSpec> {
    if model.concurrency == 0 {
        bail!("`--concurrency` must be at least 1");
    }
    let mut spec = BackendSpec::from_flags(model.endpoint.clone(), model.model.clone());
    spec.api_key_env = model.api_key_env.clone();
    spec.concurrency = model.concurrency;
    spec.local_max_batch = model.concurrency;
    spec.max_response_bytes = max_response_bytes;
    Ok(spec)
}

/// One JSON value per line.
fn jsonl(values: &[Value]) -> String {
    let mut text = String::new();
    for value in values {
        text.push_str(&value.to_string());
        text.push('\n');
    }
    text
}

/// The model under test, opened, with its workspace.
struct Subject {
    answerer: Answerer,
    backend: Arc<dyn Llm>,
    spec: BackendSpec,
    workspace: Workspace,
    concurrency: usize,
}

impl Subject {
    /// The judge of this subject's answers, in its workspace (the subject's own model
    /// when the judge names no other), with the settings that decide its verdicts.
    fn judge(&self, judge: &JudgeSettings, answerer: &AnswererSettings) -> Result<(Judge, Value)> {
        open_judge(
            judge,
            &answerer.run.api_key_env,
            self.concurrency,
            &self.workspace,
            Some(self),
        )
    }

    fn open(subject: &AnswererSettings, params: SamplingParams) -> Result<Self> {
        params.validate().map_err(anyhow::Error::msg)?;
        let workspace = Workspace::create(&subject.run)?;
        let (backend, spec) = workspace.open_model(&ModelSpec {
            endpoint: subject.endpoint.clone(),
            model: subject.model.clone(),
            api_key_env: subject.run.api_key_env.clone(),
            concurrency: subject.run.concurrency,
        })?;
        let answerer =
            Answerer::new(workspace.client(backend.clone()), params).with_raw_prompts(subject.raw);
        Ok(Self {
            answerer,
            backend,
            spec,
            workspace,
            concurrency: subject.run.concurrency,
        })
    }

    fn settings(&self) -> Value {
        let mut settings = self.answerer.describe();
        settings["backend"] = json!(self.spec.describe());
        settings
    }

    /// A job of this subject with its settings plus `extra` (`settings[key] = value`).
    fn job<'a>(
        &self,
        benchmark: &'a str,
        extra: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Job<'a> {
        let mut settings = self.settings();
        for (key, value) in extra {
            settings[key] = value;
        }
        Job {
            benchmark,
            concurrency: self.concurrency,
            settings,
        }
    }

    /// The job of a few-shot prompted benchmark: the answerer's settings plus the data
    /// files and the prompt (name, version, hash).
    fn prompted_job<'a>(&self, benchmark: &'a str, data: Value, prompt: &FewShot) -> Job<'a> {
        self.job(
            benchmark,
            [("data", data), ("prompt", describe_prompt(prompt))],
        )
    }
}

/// The judge and its settings block: its endpoint, else a local model (the
/// subject's own backend when it is the same local model, so the engine is loaded
/// once). Its key variable and concurrency default to the answerer's (`api_key_env`,
/// `concurrency`).
fn open_judge(
    judge: &JudgeSettings,
    api_key_env: &str,
    concurrency: usize,
    workspace: &Workspace,
    subject: Option<&Subject>,
) -> Result<(Judge, Value)> {
    let prompts = match &judge.judge_prompts {
        Some(dir) => JudgePrompts::from_dir(dir)?,
        None => JudgePrompts::builtin(),
    };
    let reuse = subject.filter(|s| {
        judge.judge_endpoint.is_none()
            && s.spec.endpoint.is_none()
            && (judge.judge_model.is_none() || judge.judge_model == s.spec.model)
    });
    let remote_self = subject.is_some_and(|s| {
        s.spec.endpoint.is_some()
            && judge.judge_endpoint == s.spec.endpoint
            && judge.judge_model == s.spec.model
    });
    if (reuse.is_some() || remote_self) && !judge.self_judge {
        let model = subject
            .and_then(|s| s.spec.model.clone())
            .unwrap_or_else(|| seqit_core::DEFAULT_MODEL_NAME.to_string());
        bail!(
            "the judge would be the model under test (`{model}`)\nhint: name another judge with `--judge-model` (and `--judge-endpoint`), or pass `--self-judge` to let it judge its own answers (such scores favour it and do not compare across models)"
        );
    }
    let (backend, spec) = match reuse {
        Some(subject) => (subject.backend.clone(), subject.spec.clone()),
        None => workspace.open_model(&ModelSpec {
            endpoint: judge.judge_endpoint.clone(),
            model: judge.judge_model.clone(),
            api_key_env: judge
                .judge_api_key_env
                .as_deref()
                .unwrap_or(api_key_env)
                .to_string(),
            concurrency: judge.judge_concurrency.unwrap_or(concurrency),
        })?,
    };
    let answerer = Answerer::new(
        workspace.client(backend),
        SamplingParams::greedy(judge.judge_max_tokens),
    );
    let structured = judge.judge_structured.is_on();
    let mut describe = answerer.describe();
    describe["backend"] = json!(spec.describe());
    describe["prompts"] = prompts.describe();
    describe["structured"] = json!(structured);
    Ok((
        Judge {
            answerer,
            prompts,
            structured,
        },
        describe,
    ))
}

/// The first `limit` items (all without a limit).
fn limit<T>(mut items: Vec<T>, limit: Option<usize>) -> Vec<T> {
    if let Some(n) = limit {
        items.truncate(n);
    }
    items
}

/// A few-shot prompt from `dir` (`<name>.template`, plus `exemplars.txt` when the
/// built-in prompt has exemplars), else the built-in one.
fn prompt_or(dir: Option<&Path>, name: &str, builtin: FewShot) -> Result<FewShot> {
    let Some(dir) = dir else {
        return Ok(builtin);
    };
    let exemplars = dir.join("exemplars.txt");
    let exemplars = (!builtin.exemplars.is_empty()).then_some(exemplars.as_path());
    Ok(FewShot::from_files(
        &dir.join(format!("{name}.template")),
        exemplars,
    )?)
}

/// `label: 0.1234 (hits of total)` for a rate of the metrics.
fn rate_line(label: &str, rate: &Value) -> String {
    format!(
        "{label}: {:.4} ({} of {})",
        rate["value"].as_f64().unwrap_or(0.0),
        rate["hits"],
        rate["total"]
    )
}

/// `mean [low, high] n=N` for a summary of the metrics, `-` when it has no mean.
fn summary_text(summary: &Value) -> String {
    match summary["mean"].as_f64() {
        Some(mean) => format!(
            "{mean:.3} [{:.3}, {:.3}] n={}",
            summary["ci95"][0].as_f64().unwrap_or(f64::NAN),
            summary["ci95"][1].as_f64().unwrap_or(f64::NAN),
            summary["n"]
        ),
        None => "-".to_string(),
    }
}
