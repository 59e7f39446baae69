//! SeqEval scoring: a model answers each sequential instruction, a judge
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
use seqit_verify::{ChainCheck, StepKind, VerifiableItem};

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
    /// For verifiable items (a `steps` field, from `seqit seqeval synth`): the chain
    /// whose every step a program checks.
    #[serde(skip)]
    pub verifiable: Option<VerifiableItem>,
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
        let verifiable = match record.get("steps") {
            None | Some(Value::Null) => None,
            Some(_) => {
                let item: VerifiableItem = serde_json::from_value(Value::Object(record.clone()))
                    .map_err(|e| error(format!("a verifiable item (it has `steps`): {e}")))?;
                item.validate()
                    .map_err(|e| error(format!("a verifiable item: {e:#}")))?;
                Some(item)
            }
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
            verifiable,
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

/// Answers one item; checks the answer by program when the item is verifiable, and
/// has the judge (if any) rate following, quality, and (with a reference output) the
/// pairwise comparison. Returns the item's `items.jsonl` record.
pub async fn evaluate_item(
    answerer: &Answerer,
    judge: Option<&Judge>,
    item: &Item,
    reference: Option<&str>,
) -> Result<Value> {
    let prompt = item.prompt();
    let output = answerer.ask_one(&prompt, &[], "seqeval/answer").await?;
    let mut record = json!({
        "id": item.id,
        "depth": item.depth,
        "prompt": prompt,
        "output": output,
        "sub_steps": item.sub_steps,
    });
    if let Some(verifiable) = &item.verifiable {
        record["verifiable"] = verifiable_record(&seqit_verify::check(verifiable, &output));
    }
    let Some(judge) = judge else {
        return Ok(record);
    };
    let following = judge.following(&prompt, &item.sub_steps, &output).await?;
    let quality = judge.quality(&prompt, &output).await?;
    let pairwise = match reference {
        Some(reference) => Some(judge.compare(&prompt, &output, reference).await?),
        None => None,
    };
    let parsed = following.parsed.as_ref();
    record["following"] = json!({
        "steps": parsed.map(|f| &f.steps),
        "all_steps": parsed.map(|f| f.all_steps()),
        "chain": parsed.map(|f| f.chain),
        "step_yes_probability": following.step_yes,
        "chain_yes_probability": following.chain_yes,
        "judge_raw": following.raw,
    });
    record["quality"] = json!({
        "rating": quality.rating,
        "expected_rating": quality.expected,
        "judge_raw": quality.raw,
    });
    record["pairwise"] = json!(pairwise.map(|p| json!({
        "score": p.score,
        "expected_score": p.expected_score,
        "verdicts": p.verdicts,
        "parse_failures": p.parse_failures(),
        "judge_raw": [p.model_first_raw, p.model_second_raw],
    })));
    Ok(record)
}

/// The program's verdict on one answer: per step done in order / done anywhere, the
/// whole chain, order, and the first failed step (1-based, `null` when none failed).
fn verifiable_record(check: &ChainCheck) -> Value {
    json!({
        "steps": check.steps.iter().map(|s| json!({
            "kind": s.kind.name(),
            "passed": s.passed,
            "done": s.passed_anywhere,
        })).collect::<Vec<_>>(),
        "chain_passed": check.all_passed,
        "in_order": check.in_order,
        "first_failed_step": check.first_failed.map(|i| i + 1),
    })
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
    let judged = |field: &str| records.iter().filter(|r| r[field].is_object()).count();
    let pairwise_failures: u64 = records
        .iter()
        .filter_map(|r| r["pairwise"]["parse_failures"].as_u64())
        .sum();
    let verified: Vec<&Value> = records
        .iter()
        .map(|r| &r["verifiable"])
        .filter(|v| v.is_object())
        .collect();
    json!({
        "items": records.len(),
        "verifiable": verifiable_metrics(&verified),
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
        // Of the judged records only: verifiable-only runs ask no judge.
        "parse_failures": {
            "following": judged("following") - following.len(),
            "quality": judged("quality") - quality.len(),
            "pairwise_orders": pairwise_failures,
            "pairwise_items_without_verdict": compared - win.len(),
        },
    })
}

/// Program-checked scores of the verifiable records of a group: chain pass rate (every
/// step done, in order) and in-order rate with bootstrap CIs, step pass and done rates,
/// and where chains first broke (`first_failed_step` 1..=4 counts). `null` without
/// verifiable records.
fn verifiable_metrics(verified: &[&Value]) -> Value {
    if verified.is_empty() {
        return Value::Null;
    }
    let rate =
        |field: &str| -> Vec<f64> { verified.iter().filter_map(|v| flag(&v[field])).collect() };
    let steps: Vec<&Value> = verified
        .iter()
        .filter_map(|v| v["steps"].as_array())
        .flatten()
        .collect();
    let step_rate =
        |field: &str| -> Vec<f64> { steps.iter().filter_map(|s| flag(&s[field])).collect() };
    let mut first_failed = BTreeMap::new();
    for v in verified {
        if let Some(step) = v["first_failed_step"].as_u64() {
            *first_failed.entry(step.to_string()).or_insert(0u64) += 1;
        }
    }
    json!({
        "items": verified.len(),
        "chain_pass_rate": summary(&rate("chain_passed")),
        "in_order_rate": summary(&rate("in_order")),
        "step_pass_rate": summary(&step_rate("passed")),
        "step_done_rate": summary(&step_rate("done")),
        "first_failed_step": first_failed,
    })
}

/// Pass and done rates per step kind over the verifiable records (which kinds fail).
fn verifiable_by_kind(records: &[Value]) -> Value {
    let mut by_kind: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for step in records
        .iter()
        .filter_map(|r| r["verifiable"]["steps"].as_array())
        .flatten()
    {
        let Some(kind) = step["kind"].as_str() else {
            continue;
        };
        let entry = by_kind.entry(kind.to_string()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(step["passed"] == true);
        entry.2 += u64::from(step["done"] == true);
    }
    by_kind
        .into_iter()
        .map(|(kind, (n, passed, done))| {
            let share = |k: u64| k as f64 / n as f64;
            let group = StepKind::from_name(&kind).map(StepKind::group);
            (
                kind,
                json!({"group": group, "steps": n, "pass_rate": share(passed), "done_rate": share(done)}),
            )
        })
        .collect::<Map<String, Value>>()
        .into()
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
    json!({
        "overall": group_metrics(&all),
        "by_depth": by_depth,
        "verifiable_by_kind": verifiable_by_kind(records),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as `evaluate_item` writes them for verifiable items, without a judge.
    fn records(items: &[VerifiableItem], answer: impl Fn(&VerifiableItem) -> String) -> Vec<Value> {
        items
            .iter()
            .map(|item| {
                json!({
                    "id": item.id,
                    "depth": item.depth,
                    "verifiable": verifiable_record(&seqit_verify::check(item, &answer(item))),
                })
            })
            .collect()
    }

    fn synthesized() -> Vec<VerifiableItem> {
        let settings = seqit_verify::SynthSettings {
            depths: vec![1, 2, 3, 4],
            per_depth: 10,
            seed: 5,
        };
        seqit_verify::synthesize(&settings, &seqit_verify::Templates::builtin())
    }

    #[test]
    fn verifiable_scores_follow_the_program_checks() {
        let items = synthesized();
        let perfect = metrics(&records(&items, seqit_verify::perfect_answer));
        let all = &perfect["overall"]["verifiable"];
        assert_eq!(all["items"], 40);
        assert_eq!(all["chain_pass_rate"]["mean"], 1.0);
        assert_eq!(all["step_pass_rate"]["mean"], 1.0);
        assert!(all["first_failed_step"].as_object().unwrap().is_empty());
        assert_eq!(perfect["by_depth"]["3"]["verifiable"]["items"], 10);
        // The judged scores are absent, not zero.
        assert_eq!(perfect["overall"]["following_rate"]["n"], 0);

        // Skipping the last step: no chain passes, and every chain breaks at its last step.
        let skipped = metrics(&records(&items, |item| {
            seqit_verify::answer_skipping(item, item.depth - 1)
        }));
        let all = &skipped["overall"]["verifiable"];
        assert_eq!(all["chain_pass_rate"]["mean"], 0.0);
        for depth in 1..=4 {
            assert_eq!(all["first_failed_step"][depth.to_string()], 10, "{all}");
        }
        let step_rate = all["step_pass_rate"]["mean"].as_f64().unwrap();
        // 100 steps, 40 skipped.
        assert!((step_rate - 0.6).abs() < 1e-9, "{step_rate}");
        let by_kind = skipped["verifiable_by_kind"].as_object().unwrap();
        assert!(by_kind.len() >= 20, "{}", by_kind.len());
        assert!(by_kind.values().all(|k| k["steps"].as_u64().unwrap() > 0));
    }
}
