//! MGSM: 8-shot plain CoT or translate-then-CoT, exact match per language and the mean
//! over languages.

use anyhow::Result;
use seqit_core::progress::Progress;
use seqit_core::SamplingParams;
use serde_json::json;

use super::{limit, prompt_or, rate_line, MgsmSettings, MgsmStyle, Outcome, Subject};
use crate::benchmarks::{self, describe_prompt};
use crate::tasks::mgsm::{self, PromptStyle};

/// Answers and scores every item (see the [module](super) documentation); with
/// `exemplars`, each question is shown the first 8 exemplars of its own language (see
/// [`mgsm::prompts_per_language`]). The outcome shows exact match and its mean over
/// languages.
pub fn run(job: &MgsmSettings, progress: &dyn Progress) -> Result<Outcome> {
    let mut items = Vec::new();
    for path in &job.data {
        items.extend(mgsm::read(path, None)?);
    }
    let items = limit(items, job.answerer.run.limit);
    let (style, name) = match job.style {
        MgsmStyle::Cot => (PromptStyle::Cot, "cot"),
        MgsmStyle::TranslateCot => (PromptStyle::TranslateCot, "translate_cot"),
    };
    let prompt = prompt_or(job.prompts.as_deref(), name, mgsm::prompt(style))?;
    let per_language = match &job.exemplars {
        Some(dir) => {
            let mut languages: Vec<&str> = items.iter().map(|i| i.language.as_str()).collect();
            languages.sort_unstable();
            languages.dedup();
            mgsm::prompts_per_language(&prompt, style, dir, &languages)?
        }
        None => Default::default(),
    };
    let prompt_for = |item: &mgsm::Item| per_language.get(&item.language).unwrap_or(&prompt);
    let subject = Subject::open(&job.answerer, SamplingParams::greedy(job.max_tokens))?;
    let mut run = subject.prompted_job("mgsm", json!(job.data), &prompt);
    if let Some(dir) = &job.exemplars {
        run.settings["prompt"]["exemplars"] = json!(dir);
        run.settings["prompt"]["per_language"] = per_language
            .iter()
            .map(|(language, p)| (language.clone(), describe_prompt(p)))
            .collect();
    }
    let (_, mut outcome) = subject.workspace.run(
        run,
        &items,
        |item| item.id.clone(),
        |item| benchmarks::mgsm_item(&subject.answerer, prompt_for(item), item),
        benchmarks::number_metrics,
        progress,
    )?;
    let exact_match = &outcome.metrics["scores"]["exact_match"];
    outcome.lines.extend([
        rate_line("exact match", &exact_match["rate"]),
        format!(
            "mean over languages: {:.4}",
            exact_match["per_language"]["mean"].as_f64().unwrap_or(0.0)
        ),
    ]);
    Ok(outcome)
}
