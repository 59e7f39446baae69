//! SeqEval scoring (SPEC §6): a model answers each sequential instruction, a judge
//! checks every recorded sub-step (following), rates quality 1–5 and compares the answer
//! with a reference model's (win rate, both orders); [`metrics`] breaks the scores down
//! by depth 1–4 with bootstrap 95% confidence intervals.
//!
//! Records are the JSONL written by `seqit seqeval build`: `id`, `instruction`, `input`
//! (optional), `iteration` (the depth, 1..4), `original_instruction`, `modes`,
//! `sub_steps` (every task of the chain, in order).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::answer::Answerer;
use crate::benchmarks::{BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED};
use crate::error::{EvalError, Result};
use crate::io::{kind, read_jsonl, string_field};
use crate::judge::Judge;
use crate::metrics::{bootstrap_mean_ci, mean};

/// Deepest chain SeqEval builds.
pub const MAX_DEPTH: u64 = 4;

/// One SeqEval item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Unique id.
    pub id: String,
    /// The sequential instruction.
    pub instruction: String,
    /// Optional input the instruction works on.
    pub input: Option<String>,
    /// Rewriting rounds applied, 1..=4.
    pub depth: u64,
    /// The base prompt it was built from.
    pub original_instruction: String,
    /// Edits applied (`prefix`, `suffix`, `decompose`).
    pub modes: Vec<String>,
    /// Every task of the chain, in order.
    pub sub_steps: Vec<String>,
}

impl Item {
    /// What the model is asked: the instruction, then the input after a blank line.
    pub fn prompt(&self) -> String {
        match self.input.as_deref().map(str::trim) {
            Some(input) if !input.is_empty() => format!("{}\n\n{input}", self.instruction),
            _ => self.instruction.clone(),
        }
    }
}

fn strings(
    record: &Map<String, Value>,
    field: &str,
    path: &Path,
    line: usize,
) -> Result<Vec<String>> {
    let error = |message: String| EvalError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    match record.get(field) {
        Some(Value::Array(values)) => values
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(error(format!(
                    "field `{field}`[{i}]: expected a string, found {}",
                    kind(other)
                ))),
            })
            .collect(),
        Some(other) => Err(error(format!(
            "field `{field}`: expected a list of strings, found {}",
            kind(other)
        ))),
        None => Err(error(format!("missing field `{field}`"))),
    }
}

/// Reads SeqEval JSONL; errors name the file, line and field.
pub fn read(path: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (line, record) in read_jsonl(path)? {
        let error = |message: String| EvalError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let id = match record.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(error(format!(
                    "field `id`: expected a string, found {}",
                    kind(other)
                )))
            }
            None => return Err(error("missing field `id`".into())),
        };
        let depth = match record.get("iteration") {
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|d| (1..=MAX_DEPTH).contains(d))
                .ok_or_else(|| {
                    error(format!(
                        "field `iteration`: expected a depth 1..{MAX_DEPTH}, found {n}"
                    ))
                })?,
            Some(other) => {
                return Err(error(format!(
                    "field `iteration`: expected a number 1..{MAX_DEPTH}, found {}",
                    kind(other)
                )))
            }
            None => return Err(error("missing field `iteration`".into())),
        };
        let input = match record.get("input") {
            None | Some(Value::Null) => None,
            Some(_) => Some(string_field(&record, "input", path, line)?),
        };
        let sub_steps = strings(&record, "sub_steps", path, line)?;
        if sub_steps.is_empty() {
            return Err(error(
                "field `sub_steps`: expected at least one step".into(),
            ));
        }
        items.push(Item {
            id,
            instruction: string_field(&record, "instruction", path, line)?,
            input,
            depth,
            original_instruction: string_field(&record, "original_instruction", path, line)?,
            modes: strings(&record, "modes", path, line)?,
            sub_steps,
        });
    }
    Ok(items)
}

/// Reference outputs (alpaca_eval JSON: a list of `{instruction, output, …}`) by
/// instruction.
pub fn reference_by_instruction(outputs: &[crate::alpaca::Output]) -> HashMap<String, String> {
    outputs
        .iter()
        .map(|o| (o.instruction.trim().to_string(), o.output.clone()))
        .collect()
}

/// Answers one item and judges the answer: following, quality, and (with a reference
/// output) the pairwise comparison. Returns the item's `items.jsonl` record.
pub async fn evaluate_item(
    answerer: &Answerer,
    judge: &Judge,
    item: &Item,
    reference: Option<&str>,
) -> Result<Value> {
    let prompt = item.prompt();
    let output = answerer.ask_one(&prompt, &[], "seqeval/answer").await?;
    let following = judge.following(&prompt, &item.sub_steps, &output).await?;
    let quality = judge.quality(&prompt, &output).await?;
    let parsed = following.parsed.as_ref();
    let pairwise = match reference {
        Some(reference) => Some(judge.compare(&prompt, &output, reference).await?),
        None => None,
    };
    Ok(json!({
        "id": item.id,
        "depth": item.depth,
        "prompt": prompt,
        "output": output,
        "sub_steps": item.sub_steps,
        "following": {
            "steps": parsed.map(|f| &f.steps),
            "all_steps": parsed.map(|f| f.all_steps()),
            "chain": parsed.map(|f| f.chain),
            "step_yes_probability": following.step_yes,
            "chain_yes_probability": following.chain_yes,
            "judge_raw": following.raw,
        },
        "quality": {
            "rating": quality.rating,
            "expected_rating": quality.expected,
            "judge_raw": quality.raw,
        },
        "pairwise": pairwise.map(|p| json!({
            "score": p.score,
            "expected_score": p.expected_score,
            "verdicts": p.verdicts,
            "parse_failures": p.parse_failures(),
            "judge_raw": [p.model_first_raw, p.model_second_raw],
        })),
    }))
}

/// A mean over items with its bootstrap 95% CI (`null` for no items).
pub fn summary(values: &[f64]) -> Value {
    json!({
        "n": values.len(),
        "mean": mean(values),
        "ci95": bootstrap_mean_ci(values, BOOTSTRAP_RESAMPLES, 0.95, BOOTSTRAP_SEED)
            .map(|ci| [ci.low, ci.high]),
    })
}

fn flag(value: &Value) -> Option<f64> {
    value.as_bool().map(|b| f64::from(u8::from(b)))
}

/// Scores of one group of records.
fn group_metrics(records: &[&Value]) -> Value {
    let collect = |pick: &dyn Fn(&Value) -> Option<f64>| -> Vec<f64> {
        records.iter().filter_map(|r| pick(r)).collect()
    };
    let following = collect(&|r| flag(&r["following"]["all_steps"]));
    let chain = collect(&|r| flag(&r["following"]["chain"]));
    let steps: Vec<f64> = records
        .iter()
        .filter_map(|r| r["following"]["steps"].as_array())
        .flatten()
        .filter_map(flag)
        .collect();
    let quality = collect(&|r| r["quality"]["rating"].as_f64());
    let win = collect(&|r| r["pairwise"]["score"].as_f64());
    // Probability-weighted scores (judges that returned log-probabilities).
    let chain_yes = collect(&|r| r["following"]["chain_yes_probability"].as_f64());
    let step_yes: Vec<f64> = records
        .iter()
        .filter_map(|r| r["following"]["step_yes_probability"].as_array())
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    let expected_quality = collect(&|r| r["quality"]["expected_rating"].as_f64());
    let expected_win = collect(&|r| r["pairwise"]["expected_score"].as_f64());
    let compared = records.iter().filter(|r| r["pairwise"].is_object()).count();
    let pairwise_failures: u64 = records
        .iter()
        .filter_map(|r| r["pairwise"]["parse_failures"].as_u64())
        .sum();
    json!({
        "items": records.len(),
        "following_rate": summary(&following),
        "chain_following_rate": summary(&chain),
        "step_attempt_rate": { "steps": steps.len(), "mean": mean(&steps) },
        "quality": summary(&quality),
        "win_rate": summary(&win),
        "logprob_scores": {
            "chain_yes_probability": summary(&chain_yes),
            "step_yes_probability": { "steps": step_yes.len(), "mean": mean(&step_yes) },
            "expected_quality": summary(&expected_quality),
            "expected_win_rate": summary(&expected_win),
        },
        "parse_failures": {
            "following": records.len() - following.len(),
            "quality": records.len() - quality.len(),
            "pairwise_orders": pairwise_failures,
            "pairwise_items_without_verdict": compared - win.len(),
        },
    })
}

/// Overall and per-depth (1..=4) scores of `items.jsonl` records: following rate (items
/// whose every step was attempted), the judge's whole-chain rate, the pooled step attempt
/// rate, mean quality and win rate, each mean with a seeded percentile-bootstrap 95% CI
/// over the items whose verdict parsed, and the parse-failure counts.
pub fn metrics(records: &[Value]) -> Value {
    let all: Vec<&Value> = records.iter().collect();
    let mut by_depth = BTreeMap::new();
    for depth in 1..=MAX_DEPTH {
        let group: Vec<&Value> = records
            .iter()
            .filter(|r| r["depth"].as_u64() == Some(depth))
            .collect();
        by_depth.insert(depth.to_string(), group_metrics(&group));
    }
    json!({ "overall": group_metrics(&all), "by_depth": by_depth })
}
