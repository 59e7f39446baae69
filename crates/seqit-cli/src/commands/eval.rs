//! `seqit eval`: benchmarks. `humaneval` scores completions (generated here by a model
//! through `eval_run`, or read from a human-eval samples file) with every program run in
//! the sandbox, writing `results.jsonl` and `metrics.json` to `--output`. Results are
//! appended to `results.jsonl.partial` as they arrive, so an interrupted run resumes
//! where it stopped. The answered and judged benchmarks live in `eval_run`, VQA in `vqa`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use seqit_core::journal::{with_suffix, Journal};
use seqit_eval::humaneval::{
    read_problems, read_samples, HumanEval, Report, Sample, SampleResult, Settings,
};
use seqit_eval::io::write_atomic;
use seqit_sandbox::{IsolationPolicy, Sandbox, SandboxConfig};
use serde_json::{json, Value};

use super::eval_run;
use crate::cli::{EvalCommand, HumanevalArgs, SandboxArg};

/// The problems shipped in the `human-eval` package, inside the assets directory.
const PACKAGED_PROBLEMS: &str = "human_eval/data/HumanEval.jsonl.gz";

pub fn run(command: EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Humaneval(args) => humaneval(args),
        EvalCommand::Vqa(args) => super::vqa::run(args),
        EvalCommand::Gsm8k(args) => eval_run::gsm8k(args),
        EvalCommand::Mgsm(args) => eval_run::mgsm(args),
        EvalCommand::Xquad(args) => eval_run::xquad(args),
        EvalCommand::Seqeval(args) => eval_run::seqeval(args),
        EvalCommand::Alpacaeval(args) => eval_run::alpacaeval(args),
        EvalCommand::Mtbench(args) => eval_run::mtbench(args),
    }
}

fn humaneval(args: HumanevalArgs) -> Result<()> {
    let problems_path = match &args.problems {
        Some(path) => path.clone(),
        None => seqit_engine::assets_dir()
            .context("cannot find the packaged HumanEval problems\nhint: run `scripts/setup --assets-only` or pass `--problems FILE`")?
            .join(PACKAGED_PROBLEMS),
    };
    let mut problems = read_problems(&problems_path)?;
    let (completions, generation) = match &args.completions {
        Some(path) => {
            let answerer = &args.answerer;
            if answerer.model.is_some() || answerer.endpoint.is_some() {
                bail!("give either `--completions FILE` or `--model`/`--endpoint`, not both");
            }
            (path.clone(), Value::Null)
        }
        None => {
            if let Some(n) = args.answerer.limit {
                problems.truncate(n);
            }
            eval_run::humaneval_samples(&args, &problems, &problems_path)?
        }
    };
    if args.timeout <= 0.0 || !args.timeout.is_finite() {
        bail!(
            "`--timeout {}` must be a positive number of seconds",
            args.timeout
        );
    }
    let samples = read_samples(&completions)?;
    let settings = Settings {
        ks: args.k.clone(),
        workers: args.workers.unwrap_or(0),
        allow_incomplete: args.allow_incomplete,
        fresh_process: args.fresh_process,
    };
    let eval = HumanEval::new(&problems, &samples, &completions, settings)?;
    let sandbox = Sandbox::new(SandboxConfig {
        python: args.python.clone(),
        timeout: Duration::from_secs_f64(args.timeout),
        memory_bytes: args.memory_mb << 20,
        disk_bytes: args.disk_mb << 20,
        allow_root: args.allow_root_sandbox,
        isolation: match args.sandbox {
            SandboxArg::Auto => IsolationPolicy::Auto,
            SandboxArg::Namespaces => IsolationPolicy::Namespaces,
            SandboxArg::Basic => IsolationPolicy::Basic,
        },
        ..SandboxConfig::default()
    })?;
    for warning in sandbox.warnings() {
        eprintln!("warning: {warning}");
    }

    std::fs::create_dir_all(&args.answerer.output)
        .with_context(|| format!("cannot create `{}`", args.answerer.output.display()))?;
    let results_path = args.answerer.output.join("results.jsonl");
    let metrics_path = args.answerer.output.join("metrics.json");
    let partial_path = with_suffix(&results_path, ".partial");
    let run_settings = json!({
        "problems": problems_path,
        "completions": completions,
        "timeout_s": args.timeout,
        "memory_bytes": args.memory_mb << 20,
        "disk_bytes": args.disk_mb << 20,
        "python": sandbox.python(),
    });
    let (partial, journal) = Journal::open(&partial_path, Some(&run_settings))
        .with_context(|| format!("cannot write `{}`", partial_path.display()))?;
    if journal.restarted {
        eprintln!(
            "note: `{}` was made with other settings; starting over",
            partial_path.display()
        );
    }
    let previous = earlier_results(journal.entries, &samples);
    let resumed = previous.iter().filter(|r| r.is_some()).count();
    if resumed > 0 {
        eprintln!(
            "resuming: {resumed} of {} samples already scored in `{}`",
            samples.len(),
            partial_path.display()
        );
    }

    let started = Instant::now();
    let passed_before = previous.iter().flatten().filter(|r| r.passed).count();
    let mut progress = Progress::new(samples.len(), resumed, passed_before);
    let mut write_error = None;
    let report = eval.run(&sandbox, &previous, |i, result| {
        let line = json!({
            "index": i,
            "fingerprint": fingerprint(&samples[i]),
            "task_id": result.task_id,
            "completion_id": result.completion_id,
            "passed": result.passed,
            "result": result.result,
        });
        if let Err(err) = partial.append(&line) {
            write_error = Some(err);
            return false;
        }
        progress.tick(result.passed);
        true
    });
    progress.finish();
    if let Some(err) = write_error {
        return Err(err).with_context(|| format!("cannot write `{}`", partial_path.display()));
    }
    let report = report?;
    drop(partial);

    write_outputs(&report, &samples, &results_path)?;
    let settings = json!({
        "problems": problems_path,
        "completions": completions,
        "k": args.k,
        "workers": args.workers.unwrap_or_else(seqit_eval::pool::default_workers),
        "fresh_process": args.fresh_process,
        "sandbox": sandbox.describe(),
        "generation": generation,
        "seqit_version": env!("CARGO_PKG_VERSION"),
    });
    let metrics = report.metrics(settings);
    let text = serde_json::to_string_pretty(&metrics)? + "\n";
    write_atomic(&metrics_path, text.as_bytes())?;
    let _ = std::fs::remove_file(&partial_path);

    let scores: Vec<String> = report
        .pass_at_k
        .iter()
        .map(|(k, v)| format!("pass@{k} {v:.4}"))
        .collect();
    println!(
        "{}  ({} problems, {} samples, {:.1} s, sandbox: {})",
        scores.join("  "),
        report.problems.len(),
        report.results.len(),
        started.elapsed().as_secs_f64(),
        sandbox.summary(),
    );
    for (k, reason) in &report.skipped_k {
        eprintln!("note: pass@{k} not computed: {reason}");
    }
    println!(
        "wrote {} and {}",
        results_path.display(),
        metrics_path.display()
    );
    Ok(())
}

/// Results in the samples' order, with each completion, like human-eval's
/// `<samples>_results.jsonl`.
fn write_outputs(report: &Report, samples: &[Sample], path: &Path) -> Result<()> {
    let mut text = String::new();
    for (result, sample) in report.results.iter().zip(samples) {
        let line = json!({
            "task_id": result.task_id,
            "completion_id": result.completion_id,
            "completion": sample.completion,
            "passed": result.passed,
            "result": result.result,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Identifies a sample's content, so a changed samples file is not resumed.
fn fingerprint(sample: &Sample) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in sample
        .task_id
        .as_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(sample.completion.as_bytes())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The results of an interrupted run (its journal's entries, same settings) that still
/// belong to the same samples: a changed samples file is not resumed.
fn earlier_results(entries: Vec<Value>, samples: &[Sample]) -> Vec<Option<SampleResult>> {
    let mut previous = vec![None; samples.len()];
    for value in entries {
        let Some(index) = value["index"].as_u64().map(|i| i as usize) else {
            continue;
        };
        if index >= samples.len()
            || value["fingerprint"].as_str() != Some(fingerprint(&samples[index]).as_str())
        {
            continue;
        }
        let (Some(task_id), Some(completion_id), Some(passed), Some(result)) = (
            value["task_id"].as_str(),
            value["completion_id"].as_u64(),
            value["passed"].as_bool(),
            value["result"].as_str(),
        ) else {
            continue;
        };
        previous[index] = Some(SampleResult {
            task_id: task_id.to_string(),
            completion_id: completion_id as usize,
            passed,
            result: result.to_string(),
        });
    }
    previous
}

/// One status line on a terminal, a line per tenth otherwise.
struct Progress {
    total: usize,
    done: usize,
    passed: usize,
    fresh: usize,
    started: Instant,
    last_draw: Instant,
    terminal: bool,
    next_log: usize,
}

impl Progress {
    fn new(total: usize, done: usize, passed: usize) -> Self {
        Self {
            total,
            done,
            passed,
            fresh: 0,
            started: Instant::now(),
            last_draw: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            next_log: done + total.div_ceil(10),
        }
    }

    fn tick(&mut self, passed: bool) {
        self.done += 1;
        self.fresh += 1;
        self.passed += usize::from(passed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = self.fresh as f64 / elapsed.max(1e-9);
        let eta = (self.total - self.done) as f64 / rate.max(1e-9);
        let line = format!(
            "humaneval: {}/{} programs, {} passed, {:.1}/s, ETA {:.0} s",
            self.done, self.total, self.passed, rate, eta
        );
        if self.terminal {
            if self.last_draw.elapsed() >= Duration::from_millis(100) || self.done == self.total {
                eprint!("\r{line}\x1b[K");
                self.last_draw = Instant::now();
            }
        } else if self.done >= self.next_log || self.done == self.total {
            eprintln!("{line}");
            self.next_log = self.done + self.total.div_ceil(10);
        }
    }

    fn finish(&self) {
        if self.terminal && self.fresh > 0 {
            eprintln!();
        }
    }
}
