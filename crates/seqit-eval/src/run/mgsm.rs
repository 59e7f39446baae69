//! MGSM: 8-shot plain CoT or translate-then-CoT, exact match per language and the mean
//! over languages.

use std::path::PathBuf;

use anyhow::Result;
use seqit_core::progress::Progress;
use seqit_core::SamplingParams;
use serde_json::json;

use super::{limit, prompt_or, rate_line, Outcome, Subject, SubjectSpec};
use crate::benchmarks::{self, describe_prompt};
use crate::tasks::mgsm::{self, PromptStyle};

/// The settings of an MGSM run.
#[derive(Debug, Clone)]
pub struct MgsmJob {
    /// One file per language (TSV `question<TAB>answer` or JSONL), named like
    /// `mgsm_de.tsv`.
    pub data: Vec<PathBuf>,
    /// The prompt style.
    pub style: PromptStyle,
    /// Evaluate only the first N items (over all files, in order).
    pub limit: Option<usize>,
    /// Most new tokens per answer (greedy).
    pub max_tokens: usize,
    /// Directory with `<style>.template` (`cot` or `translate_cot`) and `exemplars.txt`
    /// replacing the built-in prompt.
    pub prompts: Option<PathBuf>,
    /// The MGSM train split, one `<language>.jsonl` per language: each question is shown
    /// the first 8 exemplars of its own language, as in the paper (see
    /// [`mgsm::prompts_per_language`]); `None`: the same exemplars for every language.
    pub exemplars: Option<PathBuf>,
}

/// Answers and scores every item (see the [module](super) documentation); the outcome
/// shows exact match and its mean over languages.
pub fn run(job: &MgsmJob, subject: &SubjectSpec, progress: &dyn Progress) -> Result<Outcome> {
    let mut items = Vec::new();
    for path in &job.data {
        items.extend(mgsm::read(path, None)?);
    }
    let items = limit(items, job.limit);
    let name = match job.style {
        PromptStyle::Cot => "cot",
        PromptStyle::TranslateCot => "translate_cot",
    };
    let prompt = prompt_or(job.prompts.as_deref(), name, mgsm::prompt(job.style))?;
    let per_language = match &job.exemplars {
        Some(dir) => {
            let mut languages: Vec<&str> = items.iter().map(|i| i.language.as_str()).collect();
            languages.sort_unstable();
            languages.dedup();
            mgsm::prompts_per_language(&prompt, job.style, dir, &languages)?
        }
        None => Default::default(),
    };
    let prompt_for = |item: &mgsm::Item| per_language.get(&item.language).unwrap_or(&prompt);
    let subject = Subject::open(subject, SamplingParams::greedy(job.max_tokens))?;
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
