//! MT-Bench: two-turn answers graded 1–10 by a judge with FastChat's prompts.

use std::collections::HashMap;

use anyhow::{Context, Result};
use seqit_core::progress::Progress;
use seqit_core::SamplingParams;
use serde_json::json;

use super::{limit, summary_text, MtbenchSettings, Outcome, Subject};
use crate::mtbench;

/// Answers both turns of every question and has the judge grade them (see the
/// [module](super) documentation); the data directory defaults to
/// [`mtbench::PACKAGED_DATA`] under the assets directory. The outcome shows the overall
/// and per-turn scores.
pub fn run(job: &MtbenchSettings, progress: &dyn Progress) -> Result<Outcome> {
    let data_dir = match &job.data_dir {
        Some(dir) => dir.clone(),
        None => seqit_engine::assets_dir()
            .context("cannot find the packaged MT-Bench data\nhint: run `scripts/setup --assets-only` or pass `--data-dir DIR`")?
            .join(mtbench::PACKAGED_DATA),
    };
    let questions_path = data_dir.join("mt_bench/question.jsonl");
    let questions = limit(
        mtbench::read_questions(&questions_path)?,
        job.answerer.run.limit,
    );
    let prompts_path = job
        .judge
        .judge_prompts
        .as_ref()
        .unwrap_or(&data_dir)
        .join("judge_prompts.jsonl");
    let reference_path = job
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
    let subject = Subject::open(&job.answerer, SamplingParams::greedy(job.max_tokens))?;
    let (judge, mut judge_settings) = subject.judge(&job.judge, &job.answerer)?;
    judge_settings["prompts"] = json!(prompts_path);
    let grader = mtbench::Grader {
        structured: judge.structured,
        judge: judge.answerer,
        prompts: mtbench::read_judge_prompts(&prompts_path)?,
        references,
    };
    let run = subject.job(
        "mtbench",
        [
            ("questions", json!(questions_path)),
            (
                "reference",
                json!(needs_reference.then_some(&reference_path)),
            ),
            ("judge", judge_settings),
        ],
    );
    let (_, mut outcome) = subject.workspace.run(
        run,
        &questions,
        |q| q.question_id.to_string(),
        |q| mtbench::evaluate_question(&subject.answerer, &grader, q),
        mtbench::metrics,
        progress,
    )?;
    let scores = &outcome.metrics["scores"];
    let line = format!(
        "score {}  turn 1 {}  turn 2 {}  (judge parse failures: {})",
        summary_text(&scores["overall"]),
        summary_text(&scores["turn_1"]),
        summary_text(&scores["turn_2"]),
        scores["parse_failures"]
    );
    outcome.lines.push(line);
    Ok(outcome)
}
