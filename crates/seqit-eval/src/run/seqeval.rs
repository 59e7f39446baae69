//! SeqEval: following per sub-step, quality 1–5 and win rate by depth, judged; chains
//! checked by program for verifiable items.

use anyhow::{bail, Result};
use seqit_core::progress::Progress;
use seqit_core::SamplingParams;
use serde_json::{json, Value};

use super::{limit, summary_text, Outcome, SeqevalSettings, Subject};
use crate::{alpaca, seqeval};

/// Answers every item, checks verifiable chains by program and has the judge rate the
/// answers (see the [module](super) documentation). The outcome shows a table by depth
/// for the program checks (when any item is verifiable) and one for the judge's scores.
pub fn run(job: &SeqevalSettings, progress: &dyn Progress) -> Result<Outcome> {
    let items = limit(seqeval::read(&job.data)?, job.answerer.run.limit);
    if job.verifiable_only {
        if let Some(item) = items.iter().find(|i| i.verifiable.is_none()) {
            bail!(
                "--verifiable-only: item `{}` of `{}` has no `steps` to check (make verifiable sets with `seqit seqeval synth`)",
                item.id,
                job.data.display()
            );
        }
    }
    let subject = Subject::open(&job.answerer, SamplingParams::greedy(job.max_tokens))?;
    let (judge, judge_settings) = if job.verifiable_only {
        (None, Value::Null)
    } else {
        let (judge, settings) = subject.judge(&job.judge, &job.answerer)?;
        (Some(judge), settings)
    };
    let references = match &job.reference {
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
            progress.note(&format!(
                "note: {missing} of {} items have no reference output; they get no win rate",
                items.len()
            ));
        }
    }
    let run = subject.job(
        "seqeval",
        [
            ("data", json!(job.data)),
            ("reference", json!(job.reference)),
            ("judge", judge_settings),
        ],
    );
    let (_, mut outcome) = subject.workspace.run(
        run,
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
        progress,
    )?;
    let tables = tables(&outcome.metrics["scores"], judge.is_some());
    outcome.lines.extend(tables);
    Ok(outcome)
}

/// The scores by depth (first row: all depths): the program checks when any item was
/// verifiable, then the judge's scores when there was a judge.
fn tables(scores: &Value, judged: bool) -> Vec<String> {
    let mut rows: Vec<(String, &Value)> = vec![("all".into(), &scores["overall"])];
    if let Some(by_depth) = scores["by_depth"].as_object() {
        rows.extend(by_depth.iter().map(|(d, v)| (d.clone(), v)));
    }
    let mut lines = Vec::new();
    if !scores["overall"]["verifiable"].is_null() {
        lines.push("verified by program:".to_string());
        lines.push("depth  items  chain passed     in order         steps passed".to_string());
        for (depth, row) in &rows {
            let v = &row["verifiable"];
            lines.push(format!(
                "{depth:<6} {:<6} {:<16} {:<16} {}",
                v["items"],
                summary_text(&v["chain_pass_rate"]),
                summary_text(&v["in_order_rate"]),
                summary_text(&v["step_pass_rate"]),
            ));
        }
    }
    if !judged {
        return lines;
    }
    lines.push(
        "depth  items  following        chain            quality          win rate".to_string(),
    );
    for (depth, row) in rows {
        lines.push(format!(
            "{depth:<6} {:<6} {:<16} {:<16} {:<16} {}",
            row["items"],
            summary_text(&row["following_rate"]),
            summary_text(&row["chain_following_rate"]),
            summary_text(&row["quality"]),
            summary_text(&row["win_rate"]),
        ));
    }
    lines.push(format!(
        "judge parse failures: {}",
        scores["overall"]["parse_failures"]
    ));
    lines
}
