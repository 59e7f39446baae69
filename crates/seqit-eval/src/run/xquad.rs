//! XQuAD: zero-shot translate-then-answer, substring accuracy against the item's own and
//! the English gold, and the rate of outputs that follow the format.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::Result;
use seqit_core::progress::Progress;
use seqit_core::SamplingParams;
use serde_json::json;

use super::{limit, prompt_or, rate_line, Outcome, Subject, XquadSettings};
use crate::benchmarks;
use crate::tasks::xquad;

/// Answers and scores every item (see the [module](super) documentation); warns once
/// per English file that lacks some items' ids. The outcome shows both accuracies, the
/// follow rate and how many items had English gold.
pub fn run(job: &XquadSettings, progress: &dyn Progress) -> Result<Outcome> {
    let mut loaded = xquad::read_all(&job.data, job.english.as_deref())?;
    loaded.items = limit(loaded.items, job.answerer.run.limit);
    let kept: HashSet<(&str, &str)> = loaded
        .items
        .iter()
        .map(|i| (i.language.as_str(), i.id.as_str()))
        .collect();
    loaded
        .missing
        .retain(|(_, language, id)| kept.contains(&(language.as_str(), id.as_str())));
    for warning in missing_english_warnings(&loaded) {
        progress.warn(&warning);
    }
    let prompt = prompt_or(
        job.prompts.as_deref(),
        "translate_answer",
        xquad::translate_answer_prompt(),
    )?;
    let subject = Subject::open(&job.answerer, SamplingParams::greedy(job.max_tokens))?;
    let mut run = subject.prompted_job("xquad", json!(job.data), &prompt);
    run.settings["english"] = json!(loaded.english_files);
    run.settings["scoring"] = benchmarks::xquad_scoring();
    let (_, mut outcome) = subject.workspace.run(
        run,
        &loaded.items,
        |item| format!("{}/{}", item.language, item.id),
        |item| benchmarks::xquad_item(&subject.answerer, &prompt, item),
        benchmarks::xquad_summary,
        progress,
    )?;
    let scores = &outcome.metrics["scores"];
    let english = &scores["english_gold"];
    outcome.lines.extend([
        rate_line(
            "accuracy (the paper's: after the last marker, else the whole output)",
            &scores["accuracy"]["rate"],
        ),
        rate_line(
            "accuracy (strict: only after a marker)",
            &scores["accuracy_strict"]["rate"],
        ),
        rate_line("follow rate", &scores["follow_rate"]),
        format!(
            "English gold: {} items ({} missing from the English file, {} without)",
            english["used"], english["missing"], english["not_used"]
        ),
    ]);
    Ok(outcome)
}

/// One line per English file that lacks some items' ids.
fn missing_english_warnings(loaded: &xquad::Loaded) -> Vec<String> {
    let mut by_file: Vec<(&Path, BTreeMap<&str, usize>)> = Vec::new();
    for (file, language, _) in &loaded.missing {
        let index = match by_file.iter().position(|(f, _)| f == file) {
            Some(i) => i,
            None => {
                by_file.push((file, BTreeMap::new()));
                by_file.len() - 1
            }
        };
        *by_file[index].1.entry(language).or_default() += 1;
    }
    by_file
        .into_iter()
        .map(|(file, languages)| {
            let total: usize = languages.values().sum();
            let per_language: Vec<String> = languages
                .iter()
                .map(|(language, n)| format!("{language}: {n}"))
                .collect();
            let (items, have, they) = if total == 1 {
                ("item", "has", "it is")
            } else {
                ("items", "have", "they are")
            };
            format!(
                "{total} {items} ({}) {have} no question with the same id in `{}`; {they} scored against their own answers only",
                per_language.join(", "),
                file.display()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn missing_english_ids_make_one_warning_per_file() {
        let german =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xquad/xquad.de.json");
        let loaded = crate::tasks::xquad::read_all(&[german], None).unwrap();
        let warnings = super::missing_english_warnings(&loaded);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("1 item (de: 1) has no question with the same id in `")
                && warnings[0].contains("xquad.en.json"),
            "{}",
            warnings[0]
        );
    }
}
