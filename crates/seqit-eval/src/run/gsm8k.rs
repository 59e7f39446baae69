//! GSM8K: 8-shot chain of thought, exact match on the final number.

use anyhow::Result;
use seqit_core::progress::Progress;
use seqit_core::SamplingParams;
use serde_json::json;

use super::{limit, prompt_or, rate_line, Gsm8kSettings, Outcome, Subject};
use crate::benchmarks;
use crate::tasks::gsm8k;

/// Answers and scores every item (see the [module](super) documentation); the outcome
/// shows exact match by the last number (the paper's) and after an answer marker.
pub fn run(job: &Gsm8kSettings, progress: &dyn Progress) -> Result<Outcome> {
    let items = limit(gsm8k::read(&job.data)?, job.answerer.run.limit);
    let prompt = prompt_or(job.prompts.as_deref(), "cot", gsm8k::cot_prompt())?;
    let subject = Subject::open(&job.answerer, SamplingParams::greedy(job.max_tokens))?;
    let (_, mut outcome) = subject.workspace.run(
        subject.prompted_job("gsm8k", json!(job.data), &prompt),
        &items,
        |item| item.id.clone(),
        |item| benchmarks::gsm8k_item(&subject.answerer, &prompt, item),
        benchmarks::number_metrics,
        progress,
    )?;
    let scores = &outcome.metrics["scores"];
    outcome.lines.extend([
        rate_line(
            "exact match (last number, the paper's)",
            &scores["exact_match"]["rate"],
        ),
        rate_line(
            "exact match (strict: after an answer marker)",
            &scores["exact_match_strict"]["rate"],
        ),
    ]);
    Ok(outcome)
}
