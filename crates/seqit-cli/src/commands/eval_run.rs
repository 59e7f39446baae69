//! `seqit eval gsm8k|mgsm|xquad|seqeval|alpacaeval`: benchmarks answered (and judged) by
//! a model through seqit-llm. Each item's record is appended to `OUTPUT/items.jsonl.partial`
//! the moment it is ready (answers and verdicts also go to the request cache), so a
//! killed run resumes with the missing items only; at the end `items.jsonl` (in data
//! order) and `metrics.json` (scores and every setting) are written atomically.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use seqit_core::SamplingParams;
use seqit_eval::alpaca::{self, length_controlled, win_rate};
use seqit_eval::answer::Answerer;
use seqit_eval::benchmarks::{self, describe_prompt, prompt_key};
use seqit_eval::humaneval::{generate as humaneval_generate, Problem};
use seqit_eval::io::{with_suffix, write_atomic};
use seqit_eval::journal::Journal;
use seqit_eval::judge::{Judge, JudgePrompts};
use seqit_eval::prompt::FewShot;
use seqit_eval::tasks::{gsm8k, mgsm, xquad};
use seqit_eval::{mtbench, seqeval};
use seqit_llm::{BackendSpec, Cache, Client, Llm};
use serde_json::{json, Value};

use crate::cli::{
    AlpacaevalArgs, AnswererArgs, EndpointCacheArgs, Gsm8kArgs, HumanevalArgs, JudgeArgs, MgsmArgs,
    MgsmStyleArg, MtbenchArgs, SeqevalArgs, XquadArgs,
};

/// Where a run writes.
struct Output {
    dir: PathBuf,
    cache: Arc<Cache>,
    /// Cache keys leave the endpoint out; bodies larger than this fail.
    endpoint_cache: EndpointCacheArgs,
    /// One runtime for the whole command: backends keep connections on it.
    runtime: tokio::runtime::Runtime,
}

impl Output {
    fn create(
        dir: &Path,
        cache: Option<&Path>,
        endpoint_cache: &EndpointCacheArgs,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let cache_path = cache.map_or_else(|| dir.join("cache.sqlite"), Path::to_path_buf);
        let cache = Arc::new(Cache::open(&cache_path).with_context(|| {
            format!("cannot open the request cache `{}`", cache_path.display())
        })?);
        Ok(Self {
            dir: dir.to_path_buf(),
            cache,
            endpoint_cache: endpoint_cache.clone(),
            runtime: tokio::runtime::Runtime::new()?,
        })
    }

    fn client(&self, backend: Arc<dyn Llm>) -> Client {
        Client::new(backend)
            .with_cache(self.cache.clone())
            .share_cache_across_endpoints(self.endpoint_cache.share_cache_across_endpoints)
    }

    /// Runs `work` over `items` through the journal, then writes `items.jsonl` and
    /// `metrics.json` (`scores` of the records, `settings`). Returns the records and the
    /// metrics.
    fn run<'a, T, F, Fut>(
        &self,
        job: Job<'_>,
        items: &'a [T],
        key: impl Fn(&T) -> String,
        work: F,
        scores: impl FnOnce(&[Value]) -> Value,
    ) -> Result<(Vec<Value>, Value)>
    where
        F: Fn(&'a T) -> Fut,
        Fut: Future<Output = seqit_eval::Result<Value>>,
    {
        let started = Instant::now();
        let benchmark = job.benchmark.to_string();
        let settings = job.settings.clone();
        let records = self.journaled(job, "items.jsonl", items, key, work)?;
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
        println!(
            "wrote {} and {}",
            self.dir.join("items.jsonl").display(),
            metrics_path.display()
        );
        Ok((records, metrics))
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
    ) -> Result<Vec<Value>>
    where
        F: Fn(&'a T) -> Fut,
        Fut: Future<Output = seqit_eval::Result<Value>>,
    {
        let path = self.dir.join(file);
        let journal_path = with_suffix(&path, ".partial");
        let mut journal = Journal::open(&journal_path, &job.settings)?;
        let resumed = items
            .iter()
            .filter(|item| journal.done().contains_key(&key(item)))
            .count();
        if resumed > 0 {
            eprintln!(
                "resuming: {resumed} of {} items already done in `{}`",
                items.len(),
                journal_path.display()
            );
        }
        let mut progress = Progress::new(job.benchmark, items.len(), resumed);
        let records =
            self.runtime
                .block_on(journal.run(items, &key, job.concurrency, work, |_| progress.tick()))?;
        drop(journal);
        let mut text = String::new();
        for record in &records {
            text.push_str(&record.to_string());
            text.push('\n');
        }
        write_atomic(&path, text.as_bytes())?;
        let _ = std::fs::remove_file(&journal_path);
        Ok(records)
    }
}

/// What a run is called, how many items it works on at once, and the settings that
/// decide its results (the journal header and the metrics file's `settings`).
struct Job<'a> {
    benchmark: &'a str,
    concurrency: usize,
    settings: Value,
}

/// A line every tenth of the items.
struct Progress {
    name: String,
    total: usize,
    done: usize,
    next: usize,
    started: Instant,
}

impl Progress {
    fn new(name: &str, total: usize, done: usize) -> Self {
        Self {
            name: name.to_string(),
            total,
            done,
            next: done + total.div_ceil(10).max(1),
            started: Instant::now(),
        }
    }

    fn tick(&mut self) {
        self.done += 1;
        if self.done >= self.next || self.done == self.total {
            eprintln!(
                "{}: {}/{} items, {:.0} s",
                self.name,
                self.done,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
            self.next = self.done + self.total.div_ceil(10).max(1);
        }
    }
}

/// Opens a model: `endpoint` (with `model` as the name sent) or the local engine.
fn open_model(
    output: &Output,
    endpoint: Option<&str>,
    model: Option<&str>,
    api_key_env: &str,
    concurrency: usize,
) -> Result<(Arc<dyn Llm>, BackendSpec)> {
    if concurrency == 0 {
        bail!("`--concurrency` must be at least 1");
    }
    let mut spec = BackendSpec::from_flags(endpoint.map(str::to_string), model.map(str::to_string));
    spec.api_key_env = api_key_env.to_string();
    spec.concurrency = concurrency;
    spec.local_max_batch = concurrency;
    spec.max_response_bytes = output.endpoint_cache.max_response_bytes;
    let backend = output.runtime.block_on(seqit_llm::open_backend(&spec))?;
    Ok((backend, spec))
}

/// The model under test and the items to use.
struct Subject {
    answerer: Answerer,
    backend: Arc<dyn Llm>,
    spec: BackendSpec,
    output: Output,
    concurrency: usize,
}

impl Subject {
    fn open(args: &AnswererArgs, params: SamplingParams) -> Result<Self> {
        params.validate().map_err(anyhow::Error::msg)?;
        let output = Output::create(&args.output, args.cache.as_deref(), &args.endpoint_cache)?;
        let (backend, spec) = open_model(
            &output,
            args.endpoint.as_deref(),
            args.model.as_deref(),
            &args.api_key_env,
            args.concurrency,
        )?;
        let answerer =
            Answerer::new(output.client(backend.clone()), params).with_raw_prompts(args.raw);
        Ok(Self {
            answerer,
            backend,
            spec,
            output,
            concurrency: args.concurrency,
        })
    }

    fn settings(&self) -> Value {
        let mut settings = self.answerer.describe();
        settings["backend"] = json!(self.spec.describe());
        settings
    }

    /// The job of a few-shot prompted benchmark: the answerer's settings plus the data
    /// files and the prompt (name, version, hash).
    fn prompted_job<'a>(&self, benchmark: &'a str, data: Value, prompt: &FewShot) -> Job<'a> {
        let mut settings = self.settings();
        settings["data"] = data;
        settings["prompt"] = describe_prompt(prompt);
        Job {
            benchmark,
            concurrency: self.concurrency,
            settings,
        }
    }
}

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

fn print_rate(label: &str, value: &Value) {
    println!(
        "{label}: {:.4} ({} of {})",
        value["value"].as_f64().unwrap_or(0.0),
        value["hits"],
        value["total"]
    );
}

pub fn gsm8k(args: Gsm8kArgs) -> Result<()> {
    let items = limit(gsm8k::read(&args.data)?, args.answerer.limit);
    let prompt = prompt_or(args.prompts.as_deref(), "cot", gsm8k::cot_prompt())?;
    let subject = Subject::open(&args.answerer, SamplingParams::greedy(args.max_tokens))?;
    let (_, metrics) = subject.output.run(
        subject.prompted_job("gsm8k", json!(args.data), &prompt),
        &items,
        |item| item.id.clone(),
        |item| benchmarks::gsm8k_item(&subject.answerer, &prompt, item),
        benchmarks::number_metrics,
    )?;
    print_rate(
        "exact match (last number, the paper's)",
        &metrics["scores"]["exact_match"]["rate"],
    );
    print_rate(
        "exact match (strict: after an answer marker)",
        &metrics["scores"]["exact_match_strict"]["rate"],
    );
    Ok(())
}

pub fn mgsm(args: MgsmArgs) -> Result<()> {
    let mut items = Vec::new();
    for path in &args.data {
        items.extend(mgsm::read(path, None)?);
    }
    let (style, name) = match args.style {
        MgsmStyleArg::Cot => (mgsm::PromptStyle::Cot, "cot"),
        MgsmStyleArg::TranslateCot => (mgsm::PromptStyle::TranslateCot, "translate_cot"),
    };
    let items = limit(items, args.answerer.limit);
    let prompt = prompt_or(args.prompts.as_deref(), name, mgsm::prompt(style))?;
    let per_language = match &args.exemplars {
        Some(dir) => {
            let mut languages: Vec<&str> = items.iter().map(|i| i.language.as_str()).collect();
            languages.sort_unstable();
            languages.dedup();
            mgsm::prompts_per_language(&prompt, style, dir, &languages)?
        }
        None => Default::default(),
    };
    let prompt_for = |item: &mgsm::Item| per_language.get(&item.language).unwrap_or(&prompt);
    let subject = Subject::open(&args.answerer, SamplingParams::greedy(args.max_tokens))?;
    let mut job = subject.prompted_job("mgsm", json!(args.data), &prompt);
    if let Some(dir) = &args.exemplars {
        job.settings["prompt"]["exemplars"] = json!(dir);
        job.settings["prompt"]["per_language"] = per_language
            .iter()
            .map(|(language, p)| (language.clone(), benchmarks::describe_prompt(p)))
            .collect();
    }
    let (_, metrics) = subject.output.run(
        job,
        &items,
        |item| item.id.clone(),
        |item| benchmarks::mgsm_item(&subject.answerer, prompt_for(item), item),
        benchmarks::number_metrics,
    )?;
    print_rate("exact match", &metrics["scores"]["exact_match"]["rate"]);
    println!(
        "mean over languages: {:.4}",
        metrics["scores"]["exact_match"]["per_language"]["mean"]
            .as_f64()
            .unwrap_or(0.0)
    );
    Ok(())
}

pub fn xquad(args: XquadArgs) -> Result<()> {
    let mut loaded = xquad::read_all(&args.data, args.english.as_deref())?;
    loaded.items = limit(loaded.items, args.answerer.limit);
    let kept: std::collections::HashSet<(&str, &str)> = loaded
        .items
        .iter()
        .map(|i| (i.language.as_str(), i.id.as_str()))
        .collect();
    loaded
        .missing
        .retain(|(_, language, id)| kept.contains(&(language.as_str(), id.as_str())));
    for warning in missing_english_warnings(&loaded) {
        eprintln!("warning: {warning}");
    }
    let items = loaded.items;
    let prompt = prompt_or(
        args.prompts.as_deref(),
        "translate_answer",
        xquad::translate_answer_prompt(),
    )?;
    let subject = Subject::open(&args.answerer, SamplingParams::greedy(args.max_tokens))?;
    let mut job = subject.prompted_job("xquad", json!(args.data), &prompt);
    job.settings["english"] = json!(loaded.english_files);
    job.settings["scoring"] = benchmarks::xquad_scoring();
    let (_, metrics) = subject.output.run(
        job,
        &items,
        |item| format!("{}/{}", item.language, item.id),
        |item| benchmarks::xquad_item(&subject.answerer, &prompt, item),
        benchmarks::xquad_summary,
    )?;
    print_rate(
        "accuracy (the paper's: after the last marker, else the whole output)",
        &metrics["scores"]["accuracy"]["rate"],
    );
    print_rate(
        "accuracy (strict: only after a marker)",
        &metrics["scores"]["accuracy_strict"]["rate"],
    );
    print_rate("follow rate", &metrics["scores"]["follow_rate"]);
    let english = &metrics["scores"]["english_gold"];
    println!(
        "English gold: {} items ({} missing from the English file, {} without)",
        english["used"], english["missing"], english["not_used"]
    );
    Ok(())
}

/// One line per English file that lacks some items' ids.
fn missing_english_warnings(loaded: &xquad::Loaded) -> Vec<String> {
    let mut by_file: Vec<(&Path, BTreeMap<&str, usize>)> = Vec::new();
    for (file, language, _) in &loaded.missing {
        let index = match by_file.iter().position(|(f, _)| f == file) {
            Some(i) => i,
            None => {
                by_file.push((file, BTreeMap::new()));
                by_file.len() - 1
            }
        };
        *by_file[index].1.entry(language).or_default() += 1;
    }
    by_file
        .into_iter()
        .map(|(file, languages)| {
            let total: usize = languages.values().sum();
            let per_language: Vec<String> = languages
                .iter()
                .map(|(language, n)| format!("{language}: {n}"))
                .collect();
            let (items, have, they) = if total == 1 {
                ("item", "has", "it is")
            } else {
                ("items", "have", "they are")
            };
            format!(
                "{total} {items} ({}) {have} no question with the same id in `{}`; {they} scored against their own answers only",
                per_language.join(", "),
                file.display()
            )
        })
        .collect()
}

/// The judge: `--judge-endpoint`, else a local model (the answerer's own backend when it
/// is the same local model, so the engine is loaded once). Its key variable and
/// concurrency default to the answerer's (`api_key_env`, `concurrency`).
fn open_judge(
    args: &JudgeArgs,
    api_key_env: &str,
    concurrency: usize,
    output: &Output,
    subject: Option<&Subject>,
) -> Result<(Judge, Value)> {
    let api_key_env = args.judge_api_key_env.as_deref().unwrap_or(api_key_env);
    let concurrency = args.judge_concurrency.unwrap_or(concurrency);
    let prompts = match &args.judge_prompts {
        Some(dir) => JudgePrompts::from_dir(dir)?,
        None => JudgePrompts::builtin(),
    };
    let reuse = subject.filter(|s| {
        args.judge_endpoint.is_none()
            && s.spec.endpoint.is_none()
            && (args.judge_model.is_none() || args.judge_model == s.spec.model)
    });
    let remote_self = subject.is_some_and(|s| {
        s.spec.endpoint.is_some()
            && args.judge_endpoint == s.spec.endpoint
            && args.judge_model == s.spec.model
    });
    if (reuse.is_some() || remote_self) && !args.self_judge {
        let model = subject
            .and_then(|s| s.spec.model.clone())
            .unwrap_or_else(|| seqit_core::DEFAULT_MODEL_NAME.to_string());
        bail!(
            "the judge would be the model under test (`{model}`)\nhint: name another judge with `--judge-model` (and `--judge-endpoint`), or pass `--self-judge` to let it judge its own answers (such scores favour it and do not compare across models)"
        );
    }
    let (backend, spec) = match reuse {
        Some(subject) => (subject.backend.clone(), subject.spec.clone()),
        None => open_model(
            output,
            args.judge_endpoint.as_deref(),
            args.judge_model.as_deref(),
            api_key_env,
            concurrency,
        )?,
    };
    let params = SamplingParams::greedy(args.judge_max_tokens);
    let answerer = Answerer::new(output.client(backend), params);
    let mut describe = answerer.describe();
    describe["backend"] = json!(spec.describe());
    describe["prompts"] = prompts.describe();
    let structured = args.judge_structured == crate::commands::Switch::On;
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

fn fmt_summary(value: &Value) -> String {
    match value["mean"].as_f64() {
        Some(mean) => format!(
            "{mean:.3} [{:.3}, {:.3}] n={}",
            value["ci95"][0].as_f64().unwrap_or(f64::NAN),
            value["ci95"][1].as_f64().unwrap_or(f64::NAN),
            value["n"]
        ),
        None => "-".to_string(),
    }
}

pub fn seqeval(args: SeqevalArgs) -> Result<()> {
    let items = limit(seqeval::read(&args.data)?, args.answerer.limit);
    if args.verifiable_only {
        if let Some(item) = items.iter().find(|i| i.verifiable.is_none()) {
            bail!(
                "--verifiable-only: item `{}` of `{}` has no `steps` to check (make verifiable sets with `seqit seqeval synth`)",
                item.id,
                args.data.display()
            );
        }
    }
    let subject = Subject::open(&args.answerer, SamplingParams::greedy(args.max_tokens))?;
    let (judge, judge_settings) = if args.verifiable_only {
        (None, Value::Null)
    } else {
        let (judge, settings) = open_judge(
            &args.judge,
            &args.answerer.api_key_env,
            args.answerer.concurrency,
            &subject.output,
            Some(&subject),
        )?;
        (Some(judge), settings)
    };
    let references = match &args.reference {
        Some(path) => Some(seqeval::reference_by_instruction(&alpaca::read_outputs(
            path,
        )?)),
        None => None,
    };
    if let Some(references) = &references {
        let missing = items
            .iter()
            .filter(|i| !references.contains_key(i.prompt().trim()))
            .count();
        if missing > 0 {
            eprintln!(
                "note: {missing} of {} items have no reference output; they get no win rate",
                items.len()
            );
        }
    }
    let mut settings = subject.settings();
    settings["data"] = json!(args.data);
    settings["reference"] = json!(args.reference);
    settings["judge"] = judge_settings;
    let (_, metrics) = subject.output.run(
        Job {
            benchmark: "seqeval",
            concurrency: subject.concurrency,
            settings,
        },
        &items,
        |item| item.id.clone(),
        |item| {
            let reference = references
                .as_ref()
                .and_then(|r| r.get(item.prompt().trim()))
                .map(String::as_str);
            seqeval::evaluate_item(&subject.answerer, judge.as_ref(), item, reference)
        },
        seqeval::metrics,
    )?;
    let scores = &metrics["scores"];
    let mut rows: Vec<(String, &Value)> = vec![("all".into(), &scores["overall"])];
    if let Some(by_depth) = scores["by_depth"].as_object() {
        rows.extend(by_depth.iter().map(|(d, v)| (d.clone(), v)));
    }
    if !scores["overall"]["verifiable"].is_null() {
        println!("verified by program:");
        println!("depth  items  chain passed     in order         steps passed");
        for (depth, row) in &rows {
            let v = &row["verifiable"];
            println!(
                "{depth:<6} {:<6} {:<16} {:<16} {}",
                v["items"],
                fmt_summary(&v["chain_pass_rate"]),
                fmt_summary(&v["in_order_rate"]),
                fmt_summary(&v["step_pass_rate"]),
            );
        }
    }
    if judge.is_none() {
        return Ok(());
    }
    println!("depth  items  following        chain            quality          win rate");
    for (depth, row) in rows {
        println!(
            "{depth:<6} {:<6} {:<16} {:<16} {:<16} {}",
            row["items"],
            fmt_summary(&row["following_rate"]),
            fmt_summary(&row["chain_following_rate"]),
            fmt_summary(&row["quality"]),
            fmt_summary(&row["win_rate"]),
        );
    }
    println!(
        "judge parse failures: {}",
        scores["overall"]["parse_failures"]
    );
    Ok(())
}

pub fn alpacaeval(args: AlpacaevalArgs) -> Result<()> {
    let outputs = limit(alpaca::read_outputs(&args.outputs)?, args.limit);
    let references: HashMap<String, alpaca::Output> = alpaca::read_outputs(&args.reference)?
        .into_iter()
        .map(|o| (o.instruction.trim().to_string(), o))
        .collect();
    let mut pairs = Vec::with_capacity(outputs.len());
    for (i, output) in outputs.iter().enumerate() {
        let Some(reference) = references.get(output.instruction.trim()) else {
            bail!(
                "`{}` record {}: no reference output for instruction {:?}",
                args.outputs.display(),
                i + 1,
                output.instruction.chars().take(80).collect::<String>()
            );
        };
        pairs.push((i, output, reference));
    }
    let output = Output::create(&args.output, args.cache.as_deref(), &args.endpoint_cache)?;
    let (judge, judge_settings) = open_judge(
        &args.judge,
        &args.api_key_env,
        args.concurrency,
        &output,
        None,
    )?;
    let settings = json!({
        "outputs": args.outputs,
        "reference": args.reference,
        "judge": judge_settings,
    });
    let (records, metrics) = output.run(
        Job {
            benchmark: "alpacaeval",
            concurrency: args.concurrency,
            settings,
        },
        &pairs,
        |(i, _, _)| i.to_string(),
        |(_, model, reference)| {
            let judge = &judge;
            async move {
                let verdict = judge
                    .compare(&model.instruction, &model.output, &reference.output)
                    .await?;
                Ok(json!({
                    "instruction": model.instruction,
                    "output": model.output,
                    "reference_output": reference.output,
                    "generator": model.generator,
                    "reference_generator": reference.generator,
                    "dataset": model.dataset,
                    "score": verdict.score,
                    "verdicts": verdict.verdicts,
                    "parse_failures": verdict.parse_failures(),
                    "judge_raw": [verdict.model_first_raw, verdict.model_second_raw],
                }))
            }
        },
        alpacaeval_scores,
    )?;
    // alpaca_eval's annotation file: output_1 is the reference, output_2 the model;
    // preference 1 = reference wins, 2 = model wins, 1.5 = tie; null when unparsed.
    let annotator = metrics["settings"]["judge"]["model"].clone();
    let annotations: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "instruction": r["instruction"],
                "output_1": r["reference_output"],
                "generator_1": r["reference_generator"],
                "output_2": r["output"],
                "generator_2": r["generator"],
                "dataset": r["dataset"],
                "annotator": annotator,
                "preference": r["score"].as_f64().map(|s| 1.0 + s),
                "raw_completion": r["judge_raw"],
            })
        })
        .collect();
    let annotations_path = args.output.join("annotations.json");
    write_atomic(
        &annotations_path,
        (serde_json::to_string_pretty(&annotations)? + "\n").as_bytes(),
    )?;
    let scores = &metrics["scores"];
    println!(
        "win rate {:.2} ± {:.2}  length-controlled {:.2}  ({} compared, {} without verdict)",
        scores["win_rate"].as_f64().unwrap_or(0.0),
        scores["standard_error"].as_f64().unwrap_or(0.0),
        scores["length_controlled_winrate"]
            .as_f64()
            .unwrap_or(f64::NAN),
        scores["n_total"],
        scores["unparsed"],
    );
    println!("wrote {}", annotations_path.display());
    Ok(())
}

/// Win rate, standard error and length-controlled win rate over the items whose verdict
/// parsed (alpaca_eval's leaderboard fields), plus parse-failure counts.
fn alpacaeval_scores(records: &[Value]) -> Value {
    let judged: Vec<&Value> = records.iter().filter(|r| r["score"].is_f64()).collect();
    let scores: Vec<f64> = judged.iter().filter_map(|r| r["score"].as_f64()).collect();
    let lengths = |field: &str| -> Vec<usize> {
        judged
            .iter()
            .map(|r| r[field].as_str().map_or(0, |s| s.chars().count()))
            .collect()
    };
    let mut out = win_rate(&scores);
    out["length_controlled_winrate"] = json!(length_controlled(
        &scores,
        &lengths("output"),
        &lengths("reference_output")
    ));
    out["avg_length"] = json!(seqit_eval::metrics::mean(
        &lengths("output")
            .iter()
            .map(|&l| l as f64)
            .collect::<Vec<_>>()
    ));
    out["unparsed"] = json!(records.len() - judged.len());
    out["parse_failures_orders"] = json!(records
        .iter()
        .filter_map(|r| r["parse_failures"].as_u64())
        .sum::<u64>());
    out
}

/// Generates HumanEval completions (`--samples` per problem) into `OUTPUT/samples.jsonl`
/// (human-eval's format, plus each raw `output`), journaled per problem in
/// `OUTPUT/generations.jsonl`. Returns the samples file and the generation settings.
pub fn humaneval_samples(
    args: &HumanevalArgs,
    problems: &[Problem],
    problems_path: &Path,
) -> Result<(PathBuf, Value)> {
    let samples = u32::try_from(args.samples)
        .ok()
        .filter(|&n| n > 0)
        .context("`--samples` must be between 1 and 2^32 - 1")?;
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: 0,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let subject = Subject::open(&args.answerer, params)?;
    let raw = args.answerer.raw;
    let prompt = humaneval_generate::chat_prompt();
    let mut settings = subject.settings();
    settings["problems"] = json!(problems_path);
    settings["samples"] = json!(samples);
    settings["prompt"] = if raw {
        json!({ "version": "humaneval/raw", "stop": humaneval_generate::RAW_STOPS })
    } else {
        describe_prompt(&prompt)
    };
    let records = subject.output.journaled(
        Job {
            benchmark: "humaneval generation",
            concurrency: subject.concurrency,
            settings: settings.clone(),
        },
        "generations.jsonl",
        problems,
        |problem| problem.task_id.clone(),
        |problem| {
            let (answerer, prompt) = (&subject.answerer, &prompt);
            async move {
                let rendered = humaneval_generate::render(prompt, problem, raw)?;
                let exchange = answerer
                    .ask(
                        &rendered.text,
                        &rendered.stop,
                        &prompt_key(&rendered),
                        samples,
                    )
                    .await?;
                let completions: Vec<String> = exchange
                    .outputs
                    .iter()
                    .map(|o| humaneval_generate::completion_from_reply(problem, o, raw))
                    .collect();
                Ok(json!({
                    "task_id": problem.task_id,
                    "prompt": rendered.text,
                    "outputs": exchange.outputs,
                    "completions": completions,
                }))
            }
        },
    )?;
    let mut text = String::new();
    for record in &records {
        let outputs = record["outputs"].as_array().cloned().unwrap_or_default();
        let completions = record["completions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (output, completion) in outputs.iter().zip(&completions) {
            let line =
                json!({ "task_id": record["task_id"], "completion": completion, "output": output });
            text.push_str(&line.to_string());
            text.push('\n');
        }
    }
    let path = subject.output.dir.join("samples.jsonl");
    write_atomic(&path, text.as_bytes())?;
    eprintln!("wrote {}", path.display());
    Ok((path, settings))
}

pub fn mtbench(args: MtbenchArgs) -> Result<()> {
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => seqit_engine::assets_dir()
            .context("cannot find the packaged MT-Bench data\nhint: run `scripts/setup --assets-only` or pass `--data-dir DIR`")?
            .join(mtbench::PACKAGED_DATA),
    };
    let questions_path = data_dir.join("mt_bench/question.jsonl");
    let questions = limit(
        mtbench::read_questions(&questions_path)?,
        args.answerer.limit,
    );
    let prompts_path = match &args.judge.judge_prompts {
        Some(dir) => dir.join("judge_prompts.jsonl"),
        None => data_dir.join("judge_prompts.jsonl"),
    };
    let reference_path = args
        .reference
        .clone()
        .unwrap_or_else(|| data_dir.join("mt_bench/reference_answer/gpt-4.jsonl"));
    let needs_reference = questions
        .iter()
        .any(|q| mtbench::NEED_REFERENCE.contains(&q.category.as_str()));
    let references = if needs_reference {
        mtbench::read_references(&reference_path)?
    } else {
        HashMap::new()
    };
    let subject = Subject::open(&args.answerer, SamplingParams::greedy(args.max_tokens))?;
    let (judge, mut judge_settings) = open_judge(
        &args.judge,
        &args.answerer.api_key_env,
        args.answerer.concurrency,
        &subject.output,
        Some(&subject),
    )?;
    judge_settings["prompts"] = json!(prompts_path);
    let grader = mtbench::Grader {
        structured: judge.structured,
        judge: judge.answerer,
        prompts: mtbench::read_judge_prompts(&prompts_path)?,
        references,
    };
    let mut settings = subject.settings();
    settings["questions"] = json!(questions_path);
    settings["reference"] = json!(needs_reference.then_some(&reference_path));
    settings["judge"] = judge_settings;
    let (_, metrics) = subject.output.run(
        Job {
            benchmark: "mtbench",
            concurrency: subject.concurrency,
            settings,
        },
        &questions,
        |q| q.question_id.to_string(),
        |q| mtbench::evaluate_question(&subject.answerer, &grader, q),
        mtbench::metrics,
    )?;
    let scores = &metrics["scores"];
    println!(
        "score {}  turn 1 {}  turn 2 {}  (judge parse failures: {})",
        fmt_summary(&scores["overall"]),
        fmt_summary(&scores["turn_1"]),
        fmt_summary(&scores["turn_2"]),
        scores["parse_failures"]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::Parser;
    use seqit_faultserver::{BackgroundFaultServer, FaultConfig, ScriptRule};
    use serde_json::{json, Value};

    use crate::cli::{Cli, Command, EvalCommand};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../seqit-eval/tests/fixtures/xquad")
            .join(name)
    }

    /// `seqit eval xquad` on the German fixture against a scripted endpoint: the
    /// `xquad.en.json` beside it supplies the gold of q1 and q2 (answered in English),
    /// q9 is missing from it and keeps its German answer; the scores are the paper's.
    #[test]
    fn xquad_scores_german_items_against_the_english_gold() {
        let replies = [
            // q1: English answer, the English gold of q1.
            (
                "Question: Wohin mündet der Rhein?",
                "Translation into English: Where does the Rhine flow into?\nAnswer: the North Sea",
            ),
            // q2: `result:` comes first in the paper's list, whatever comes before it; the
            // German gold alone would not match.
            (
                "Question: Wie lang ist der Rhein?",
                "The answer is 1,000 km? No. Result: 1,230 kilometres.",
            ),
            // q9: no marker (not followed), whole output; German gold only.
            (
                "Question: Wo entspringt der Rhein?",
                "Der Rhein entspringt in den Schweizer Alpen.",
            ),
        ];
        let script = replies
            .iter()
            .map(|(contains, reply)| ScriptRule {
                contains: contains.to_string(),
                reply: reply.to_string(),
            })
            .collect();
        let server = BackgroundFaultServer::start(FaultConfig {
            script,
            ..FaultConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("xquad");
        let german = fixture("xquad.de.json");
        let cli = Cli::try_parse_from([
            "seqit",
            "eval",
            "xquad",
            "--data",
            german.to_str().unwrap(),
            "--endpoint",
            server.url(),
            "--model",
            "m",
            "--concurrency",
            "2",
            "--output",
            out.to_str().unwrap(),
        ])
        .unwrap();
        let Command::Eval(EvalCommand::Xquad(args)) = cli.command else {
            panic!("not `eval xquad`");
        };
        assert_eq!(args.english, None);
        super::xquad(args).unwrap();
        assert_eq!(server.log().len(), 3);

        let records: Vec<Value> = std::fs::read_to_string(out.join("items.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summary: Vec<Value> = records
            .iter()
            .map(|r| {
                json!([
                    r["id"],
                    r["english_gold"],
                    r["followed"],
                    r["extracted"],
                    r["correct"],
                    r["correct_strict"]
                ])
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                json!(["q1", "used", true, "the North Sea", true, true]),
                json!(["q2", "used", true, "1,230 kilometres", true, true]),
                json!([
                    "q9",
                    "missing",
                    false,
                    "Der Rhein entspringt in den Schweizer Alpen",
                    true,
                    false
                ]),
            ]
        );
        assert_eq!(
            records[0]["gold"],
            json!(["the North Sea", "North Sea", "in die Nordsee", "Nordsee"])
        );
        assert_eq!(records[2]["gold"], json!(["in den Schweizer Alpen"]));

        let metrics: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap())
                .unwrap();
        let scores = &metrics["scores"];
        assert_eq!(scores["accuracy"]["rate"]["hits"], 3);
        assert_eq!(scores["accuracy_strict"]["rate"]["hits"], 2);
        assert_eq!(scores["follow_rate"]["hits"], 2);
        assert_eq!(
            scores["english_gold"],
            json!({"used": 2, "missing": 1, "not_used": 0})
        );
        assert_eq!(
            metrics["settings"]["english"],
            json!([fixture("xquad.en.json")])
        );
        assert_eq!(
            metrics["settings"]["scoring"]["markers"],
            json!(["result:", "answer:", "answer is", "result is"])
        );
    }

    #[test]
    fn missing_english_ids_make_one_warning_per_file() {
        let loaded = seqit_eval::tasks::xquad::read_all(&[fixture("xquad.de.json")], None).unwrap();
        let warnings = super::missing_english_warnings(&loaded);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("1 item (de: 1) has no question with the same id in `")
                && warnings[0].contains("xquad.en.json"),
            "{}",
            warnings[0]
        );
    }
}
