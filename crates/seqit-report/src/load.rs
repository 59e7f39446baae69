//! Reading run directories: the files the stages write (augmentation statistics, the
//! IT/SIT data, training `metrics.jsonl`, evaluation `metrics.json` and per-item
//! results), found by what they contain, so that output directories of commands run by
//! hand are read as well as those of `seqit run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Most per-item records kept per evaluation for the sample browser.
pub(crate) const SAMPLES_PER_EVAL: usize = 60;

/// Everything [`load_runs`] read, one [`Run`] per directory, in the order given.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// The runs, in the order of the directories given.
    pub runs: Vec<Run>,
}

/// What one run directory holds; parts its stages did not write are empty.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Name of the directory (after resolving `.` and links), shown for the run.
    pub label: String,
    /// The directory as given.
    pub dir: PathBuf,
    /// `*.stats.json` of the augmentation (option shares per iteration, lengths, tokens).
    pub augment: Option<Value>,
    /// Words per instruction and per response, of the IT and the SIT data.
    pub lengths: Vec<LengthSet>,
    /// Training stages: every stage directory with a `metrics.jsonl`.
    pub trainings: Vec<Training>,
    /// Evaluations: every stage directory with a `metrics.json`.
    pub evals: Vec<Eval>,
}

/// Instruction and response lengths of one training data set (the mixture when the run
/// has one, else the augmentation's output).
#[derive(Debug, Clone)]
pub struct LengthSet {
    /// `IT` or `SIT`.
    pub name: String,
    /// Per record, words in its user messages.
    pub instruction_words: Vec<usize>,
    /// Per record, words in its assistant messages.
    pub response_words: Vec<usize>,
}

/// One training stage, read from its `metrics.jsonl`.
#[derive(Debug, Clone)]
pub struct Training {
    /// Stage directory name without its `train-` prefix; evaluations name the model by it.
    pub name: String,
    /// `it` or `sit`, when the run's manifest says.
    pub data: Option<String>,
    /// (step, loss)
    pub losses: Vec<(f64, f64)>,
    /// Tokens trained on: the sum of `tokens` over the log lines.
    pub tokens: u64,
}

/// One evaluation stage, read from its `metrics.json` and per-item results.
#[derive(Debug, Clone)]
pub struct Eval {
    /// From the run's manifest or `metrics.json`; else `seqeval` when the metrics have
    /// `by_depth` scores, `eval` otherwise.
    pub benchmark: String,
    /// The evaluated model: a training run's name or a configured model.
    pub model: String,
    /// `it` or `sit` when the model is a training run of this run directory.
    pub data: Option<String>,
    /// The whole `metrics.json`.
    pub metrics: Value,
    /// The first 60 records of `items.jsonl` (or `results.jsonl`), for the sample
    /// browser.
    pub samples: Vec<Value>,
    /// Per item id, whether the chain passed the program check (verifiable SeqEval).
    pub chain_passed: BTreeMap<String, bool>,
}

impl Run {
    /// A model's label across several runs.
    pub fn model_label(&self, model: &str, several_runs: bool) -> String {
        if several_runs {
            format!("{}/{model}", self.label)
        } else {
            model.to_string()
        }
    }
}

/// Reads each run directory, or one stage's output directory, into a [`Run`]. Fails when a
/// path is not a directory or a training log cannot be read; files that are missing or do
/// not parse are skipped.
pub fn load_runs(dirs: &[PathBuf]) -> Result<RunData> {
    let mut runs = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            bail!("`{}` is not a directory", dir.display());
        }
        runs.push(
            load_run(dir).with_context(|| format!("cannot read the run `{}`", dir.display()))?,
        );
    }
    Ok(RunData { runs })
}

fn load_run(dir: &Path) -> Result<Run> {
    let label = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let mut run = Run {
        label,
        dir: dir.to_path_buf(),
        ..Run::default()
    };
    // A directory that is itself one stage's output (e.g. `seqit eval ... --output DIR`).
    let mut subdirs: Vec<PathBuf> = if is_stage_dir(dir) {
        vec![dir.to_path_buf()]
    } else {
        std::fs::read_dir(dir)
            .with_context(|| format!("cannot list `{}`", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    subdirs.sort();
    let mut train_data = Vec::new();
    for sub in &subdirs {
        let manifest = read_json(&sub.join("manifest.json"));
        if let Some(stats) = find_augment_stats(sub) {
            run.augment = Some(stats);
        }
        if sub.join("metrics.jsonl").is_file() {
            let name = stage_name(sub, "train-");
            let data = manifest
                .as_ref()
                .and_then(|m| m["config"]["train"]["data"].as_str().map(String::from));
            train_data.push((name.clone(), data.clone()));
            run.trainings.push(read_training(sub, name, data)?);
        }
        if let Some(metrics) = read_json(&sub.join("metrics.json")) {
            let benchmark = manifest
                .as_ref()
                .and_then(|m| m["config"]["eval"]["benchmark"].as_str().map(String::from))
                .or_else(|| metrics["benchmark"].as_str().map(String::from))
                .unwrap_or_else(|| guess_benchmark(&metrics));
            let model = manifest
                .as_ref()
                .and_then(|m| m["config"]["target"].as_str().map(String::from))
                .unwrap_or_else(|| stage_name(sub, "eval-"));
            run.evals.push(Eval {
                benchmark,
                model,
                data: None,
                metrics,
                samples: read_samples(sub),
                chain_passed: read_chain_outcomes(sub),
            });
        }
    }
    for eval in &mut run.evals {
        eval.data = train_data
            .iter()
            .find(|(name, _)| *name == eval.model)
            .and_then(|(_, d)| d.clone());
    }
    run.lengths = read_lengths(dir);
    Ok(run)
}

fn is_stage_dir(dir: &Path) -> bool {
    ["metrics.json", "metrics.jsonl"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

fn stage_name(dir: &Path, prefix: &str) -> String {
    let name = dir
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    name.strip_prefix(prefix).unwrap_or(&name).to_string()
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The augmentation statistics: a `*.stats.json` with `per_iteration`.
fn find_augment_stats(dir: &Path) -> Option<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".stats.json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| read_json(&p))
        .find(|v| v["per_iteration"].is_array() && v.get("paper_reference").is_some())
}

fn read_training(dir: &Path, name: String, data: Option<String>) -> Result<Training> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut losses = Vec::new();
    let mut tokens = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // A torn last line of an interrupted run is not an error.
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let (Some(step), Some(loss)) = (v["step"].as_f64(), v["loss"].as_f64()) {
            losses.push((step, loss));
        }
        tokens += v["tokens"].as_u64().unwrap_or(0);
    }
    Ok(Training {
        name,
        data,
        losses,
        tokens,
    })
}

/// Per-item results (`items.jsonl` or `results.jsonl`), the first few.
fn read_samples(dir: &Path) -> Vec<Value> {
    ["items.jsonl", "results.jsonl"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .take(SAMPLES_PER_EVAL)
                .collect()
        })
        .unwrap_or_default()
}

/// Every verifiable item's whole-chain outcome in `items.jsonl`, by id.
fn read_chain_outcomes(dir: &Path) -> BTreeMap<String, bool> {
    let Ok(text) = std::fs::read_to_string(dir.join("items.jsonl")) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| {
            let id = match &r["id"] {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((id, r["verifiable"]["chain_passed"].as_bool()?))
        })
        .collect()
}

fn guess_benchmark(metrics: &Value) -> String {
    if metrics["scores"]["by_depth"].is_object() {
        "seqeval".into()
    } else {
        "eval".into()
    }
}

/// Instruction and response lengths of the IT and SIT training data (the mixture when
/// there is one, else the augmentation's output).
fn read_lengths(run_dir: &Path) -> Vec<LengthSet> {
    let mut sets = Vec::new();
    for (name, file) in [("IT", "it.jsonl"), ("SIT", "sit.jsonl")] {
        let path = ["augment", "mixture"]
            .iter()
            .map(|d| run_dir.join(d).join(file))
            .find(|p| p.is_file());
        let Some(path) = path else { continue };
        let Ok((_, records)) = seqit_data::read_all(&path, &seqit_data::ReadOptions::default())
        else {
            continue;
        };
        let words = |role: seqit_core::Role, r: &seqit_data::Record| -> usize {
            r.messages
                .iter()
                .filter(|m| m.role == role)
                .map(|m| m.content.split_whitespace().count())
                .sum()
        };
        sets.push(LengthSet {
            name: name.into(),
            instruction_words: records
                .iter()
                .map(|r| words(seqit_core::Role::User, r))
                .collect(),
            response_words: records
                .iter()
                .map(|r| words(seqit_core::Role::Assistant, r))
                .collect(),
        });
    }
    sets
}
