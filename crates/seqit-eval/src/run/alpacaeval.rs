//! AlpacaEval: a judge compares the model's outputs with reference outputs; win rate,
//! standard error and length-controlled win rate, plus alpaca_eval's annotation file.

use std::collections::HashMap;

use anyhow::{bail, Result};
use seqit_core::progress::Progress;
use serde_json::{json, Value};

use super::{limit, open_judge, AlpacaevalSettings, Job, Outcome, Workspace};
use crate::alpaca::{self, length_controlled, win_rate};
use crate::io::write_atomic;

/// Has the judge compare every output with its reference in both orders (see the
/// [module](super) documentation) and writes alpaca_eval's `annotations.json` too; the
/// judge's key variable and concurrency default to `api_key_env` and `concurrency`. The
/// outcome shows the win rates and names the annotation file.
pub fn run(job: &AlpacaevalSettings, progress: &dyn Progress) -> Result<Outcome> {
    let outputs = limit(alpaca::read_outputs(&job.outputs)?, job.run.limit);
    let references: HashMap<String, alpaca::Output> = alpaca::read_outputs(&job.reference)?
        .into_iter()
        .map(|o| (o.instruction.trim().to_string(), o))
        .collect();
    let mut pairs = Vec::with_capacity(outputs.len());
    for (i, output) in outputs.iter().enumerate() {
        let Some(reference) = references.get(output.instruction.trim()) else {
            bail!(
                "`{}` record {}: no reference output for instruction {:?}",
                job.outputs.display(),
                i + 1,
                output.instruction.chars().take(80).collect::<String>()
            );
        };
        pairs.push((i, output, reference));
    }
    let workspace = Workspace::create(&job.run)?;
    let (judge, judge_settings) = open_judge(
        &job.judge,
        &job.run.api_key_env,
        job.run.concurrency,
        &workspace,
        None,
    )?;
    let settings = json!({
        "outputs": job.outputs,
        "reference": job.reference,
        "judge": judge_settings,
    });
    let (records, mut outcome) = workspace.run(
        Job {
            benchmark: "alpacaeval",
            concurrency: job.run.concurrency,
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
        scores,
        progress,
    )?;
    // alpaca_eval's annotation file: output_1 is the reference, output_2 the model;
    // preference 1 = reference wins, 2 = model wins, 1.5 = tie; null when unparsed.
    let annotator = &outcome.metrics["settings"]["judge"]["model"];
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
    let annotations_path = job.run.output.join("annotations.json");
    write_atomic(
        &annotations_path,
        (serde_json::to_string_pretty(&annotations)? + "\n").as_bytes(),
    )?;
    let scores = &outcome.metrics["scores"];
    let line = format!(
        "win rate {:.2} ± {:.2}  length-controlled {:.2}  ({} compared, {} without verdict)",
        scores["win_rate"].as_f64().unwrap_or(0.0),
        scores["standard_error"].as_f64().unwrap_or(0.0),
        scores["length_controlled_winrate"]
            .as_f64()
            .unwrap_or(f64::NAN),
        scores["n_total"],
        scores["unparsed"],
    );
    outcome.lines.push(line);
    outcome
        .lines
        .push(format!("wrote {}", annotations_path.display()));
    Ok(outcome)
}

/// Win rate, standard error and length-controlled win rate over the items whose verdict
/// parsed (alpaca_eval's leaderboard fields), plus parse-failure counts.
fn scores(records: &[Value]) -> Value {
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
    out["avg_length"] = json!(crate::metrics::mean(
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
