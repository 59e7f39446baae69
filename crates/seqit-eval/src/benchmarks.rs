//! GSM8K, MGSM and XQuAD answered by a model: each item's prompt rendered, asked
//! through an [`Answerer`], scored in both extraction modes, and returned as one JSON
//! record (the per-item line of `items.jsonl`); [`number_metrics`] and
//! [`xquad_summary`] aggregate the records into the metrics file's scores.

use serde_json::{json, Value};

use crate::answer::Answerer;
use crate::error::Result;
use crate::extract::{format_number, Mode};
use crate::metrics::{bootstrap_mean_ci, per_language, score_xquad, Rate, XQUAD_MARKERS};
use crate::prompt::{FewShot, Prompt};
use crate::tasks::{gsm8k, mgsm, score_number, xquad};

/// Bootstrap resamples and seed of every confidence interval in the metrics files.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;
/// See [`BOOTSTRAP_RESAMPLES`].
pub const BOOTSTRAP_SEED: u64 = 20240601;

/// The cache-key version of a rendered prompt: its version and content hash, so an
/// edited prompt file is asked again.
pub fn prompt_key(prompt: &Prompt) -> String {
    format!("{}#{}", prompt.version, prompt.hash)
}

/// The settings block of a few-shot prompt, for metrics files.
pub fn describe_prompt(prompt: &FewShot) -> Value {
    json!({ "version": prompt.version, "hash": prompt.hash })
}

async fn ask_number(
    answerer: &Answerer,
    rendered: Prompt,
    gold: f64,
    language: Option<&str>,
) -> Result<Value> {
    let output = answerer
        .ask_one(&rendered.text, &rendered.stop, &prompt_key(&rendered))
        .await?;
    let strict = score_number(&output, gold, Mode::Strict, &rendered.stop, language);
    let flexible = score_number(&output, gold, Mode::Flexible, &rendered.stop, language);
    Ok(json!({
        "prompt": rendered.text,
        "output": output,
        "gold": format_number(gold),
        "extracted": strict.extracted.map(format_number),
        "correct": strict.correct,
        "extracted_flexible": flexible.extracted.map(format_number),
        "correct_flexible": flexible.correct,
    }))
}

/// One GSM8K problem answered and scored.
pub async fn gsm8k_item(
    answerer: &Answerer,
    prompt: &FewShot,
    item: &gsm8k::Item,
) -> Result<Value> {
    let mut record = ask_number(
        answerer,
        gsm8k::render(prompt, &item.question)?,
        item.gold,
        None,
    )
    .await?;
    record["id"] = json!(item.id);
    Ok(record)
}

/// One MGSM problem answered and scored (numbers read the way its language writes them).
pub async fn mgsm_item(answerer: &Answerer, prompt: &FewShot, item: &mgsm::Item) -> Result<Value> {
    let rendered = mgsm::render(prompt, &item.question)?;
    let mut record = ask_number(answerer, rendered, item.gold, Some(&item.language)).await?;
    record["id"] = json!(item.id);
    record["language"] = json!(item.language);
    Ok(record)
}

/// One XQuAD question answered and scored.
pub async fn xquad_item(
    answerer: &Answerer,
    prompt: &FewShot,
    item: &xquad::Item,
) -> Result<Value> {
    let rendered = xquad::render(prompt, item)?;
    let output = answerer
        .ask_one(&rendered.text, &rendered.stop, &prompt_key(&rendered))
        .await?;
    let strict = score_xquad(&output, &item.answers, Mode::Strict, XQUAD_MARKERS);
    let flexible = score_xquad(&output, &item.answers, Mode::Flexible, XQUAD_MARKERS);
    Ok(json!({
        "id": item.id,
        "language": item.language,
        "prompt": rendered.text,
        "output": output,
        "gold": item.answers,
        "followed": strict.followed,
        "extracted": strict.extracted,
        "correct": strict.correct,
        "extracted_flexible": flexible.extracted,
        "correct_flexible": flexible.correct,
    }))
}

fn flags(records: &[Value], field: &str) -> Vec<bool> {
    records
        .iter()
        .map(|r| r[field].as_bool() == Some(true))
        .collect()
}

/// Exact match (strict and flexible) with bootstrap 95% CIs, plus per-language scores
/// and their mean when the records carry a `language`.
pub fn number_metrics(records: &[Value]) -> Value {
    let mut scores = json!({});
    for (name, field) in [
        ("exact_match", "correct"),
        ("exact_match_flexible", "correct_flexible"),
    ] {
        let hits = flags(records, field);
        let values: Vec<f64> = hits.iter().map(|&h| f64::from(u8::from(h))).collect();
        scores[name] = json!({
            "rate": Rate::of(hits.iter().copied()),
            "ci95": bootstrap_mean_ci(&values, BOOTSTRAP_RESAMPLES, 0.95, BOOTSTRAP_SEED),
        });
        if records.iter().any(|r| r["language"].is_string()) {
            let by_language = per_language(
                records
                    .iter()
                    .zip(&hits)
                    .map(|(r, &h)| (r["language"].as_str().unwrap_or(""), h)),
            );
            scores[name]["per_language"] = json!(by_language);
        }
    }
    scores
}

/// XQuAD substring accuracy (strict and flexible) and follow rate, overall and per
/// language (mean over languages).
pub fn xquad_summary(records: &[Value]) -> Value {
    let mut scores = number_metrics(records);
    let followed = flags(records, "followed");
    scores["follow_rate"] = json!(Rate::of(followed.iter().copied()));
    scores["follow_rate"]["per_language"] = json!(per_language(
        records
            .iter()
            .zip(&followed)
            .map(|(r, &f)| (r["language"].as_str().unwrap_or(""), f)),
    ));
    let rename = |v: &mut Value, from: &str, to: &str| {
        if let Some(x) = v.as_object_mut().and_then(|m| m.remove(from)) {
            v[to] = x;
        }
    };
    rename(&mut scores, "exact_match", "accuracy");
    rename(&mut scores, "exact_match_flexible", "accuracy_flexible");
    scores
}
