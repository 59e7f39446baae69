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
    // The paper scores the last number of the output; an answer after a marker
    // ("The answer is 42") is the stricter second figure.
    let last = score_number(&output, gold, Mode::LastNumber, &rendered.stop, language);
    let strict = score_number(&output, gold, Mode::Strict, &rendered.stop, language);
    Ok(json!({
        "prompt": rendered.text,
        "output": output,
        "gold": format_number(gold),
        "extracted": last.extracted.map(format_number),
        "correct": last.correct,
        "extracted_strict": strict.extracted.map(format_number),
        "correct_strict": strict.correct,
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

/// One XQuAD question answered and scored against [`xquad::Item::gold`] (the English
/// answers of its id and its own) with [`score_xquad`]: `correct` is the paper's score
/// (the whole output is the prediction when it has no marker), `correct_strict` counts
/// only an answer after a marker (the paper's "accuracy with follow").
pub async fn xquad_item(
    answerer: &Answerer,
    prompt: &FewShot,
    item: &xquad::Item,
) -> Result<Value> {
    let rendered = xquad::render(prompt, item)?;
    let output = answerer
        .ask_one(&rendered.text, &rendered.stop, &prompt_key(&rendered))
        .await?;
    let gold = item.gold();
    let paper = score_xquad(&output, &gold, Mode::Flexible, XQUAD_MARKERS);
    let strict = score_xquad(&output, &gold, Mode::Strict, XQUAD_MARKERS);
    Ok(json!({
        "id": item.id,
        "language": item.language,
        "prompt": rendered.text,
        "output": output,
        "gold": gold,
        "english_gold": item.english.status(),
        "followed": paper.followed,
        "extracted": paper.extracted,
        "correct": paper.correct,
        "extracted_strict": strict.extracted,
        "correct_strict": strict.correct,
    }))
}

/// How XQuAD outputs are scored (the `scoring` entry of the metrics file's settings).
pub fn xquad_scoring() -> Value {
    json!({
        "gold": "English answers of the same id (when an English file is available) and the item's own",
        "markers": XQUAD_MARKERS,
        "prediction": "text after the last marker; the whole output when none (strict: none)",
        "match": "normalized gold in prediction or non-empty prediction in gold",
    })
}

fn flags(records: &[Value], field: &str) -> Vec<bool> {
    records
        .iter()
        .map(|r| r[field].as_bool() == Some(true))
        .collect()
}

/// GSM8K/MGSM exact match with bootstrap 95% CIs: `exact_match` on the last number of
/// the output (the paper's headline) and `exact_match_strict` on the number after an
/// answer marker, plus per-language scores and their mean when records carry a
/// `language`.
pub fn number_metrics(records: &[Value]) -> Value {
    rate_metrics(
        records,
        &[
            ("exact_match", "correct"),
            ("exact_match_strict", "correct_strict"),
        ],
    )
}

/// A rate with its bootstrap CI (and per language) for each `(score, record field)`.
fn rate_metrics(records: &[Value], scores_of: &[(&str, &str)]) -> Value {
    let mut scores = json!({});
    for &(name, field) in scores_of {
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

/// XQuAD substring accuracy (the paper's, and strict: only after a marker) and follow
/// rate, overall and per language (mean over languages), and how many items were scored
/// against English answers (`english_gold`: `used`, `missing` from the English file,
/// `not_used`).
pub fn xquad_summary(records: &[Value]) -> Value {
    let mut scores = rate_metrics(
        records,
        &[
            ("accuracy", "correct"),
            ("accuracy_strict", "correct_strict"),
        ],
    );
    let followed = flags(records, "followed");
    scores["follow_rate"] = json!(Rate::of(followed.iter().copied()));
    scores["follow_rate"]["per_language"] = json!(per_language(
        records
            .iter()
            .zip(&followed)
            .map(|(r, &f)| (r["language"].as_str().unwrap_or(""), f)),
    ));
    let count = |status: &str| {
        records
            .iter()
            .filter(|r| r["english_gold"].as_str().unwrap_or("not_used") == status)
            .count()
    };
    scores["english_gold"] = json!({
        "used": count("used"),
        "missing": count("missing"),
        "not_used": count("not_used"),
    });
    scores
}
