//! Benchmarks scored from model outputs: readers for their usual public files, the
//! built-in prompts, and per-item scoring.
//!
//! | task | files | prompts | score |
//! |---|---|---|---|
//! | [`gsm8k`] | JSONL `question`/`answer` (`… #### 72`) | 8-shot CoT (`gsm8k/v1/cot`) | exact match on the number |
//! | [`mgsm`] | TSV `question<TAB>answer` or JSONL, one file per language | 8-shot plain CoT (`mgsm/v1/cot`), translate-then-CoT (`mgsm/v1/translate_cot`) | exact match, per language and mean |
//! | [`xquad`] | SQuAD-format JSON, one file per language | zero-shot translate-then-answer (`xquad/v1/translate_answer`) | substring accuracy either way against the English gold of the same id and the own answers, follow rate |
//! | [`vqa`] | read by `seqit-build` (VQAv2, easy-VQA); images as `data:` URLs | zero-shot caption-then-answer (`vqa/v1/caption_answer`) | contains-match accuracy, VQA accuracy, follow rate |

pub mod gsm8k;
pub mod mgsm;
pub mod vqa;
pub mod xquad;

use std::path::Path;

use serde::Serialize;

use crate::extract::{extract_number_in, truncate_at, uses_decimal_comma, Mode, ANSWER_MARKERS};
use crate::metrics::exact_match;
use crate::prompt::FewShot;

/// One output scored against a numeric gold answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NumberScore {
    /// The number extracted from the output, if any.
    pub extracted: Option<f64>,
    /// Whether it equals the gold answer.
    pub correct: bool,
}

/// Scores a chain-of-thought output: cut at the prompt's stop strings, extract the
/// answer number (`mode`; numbers read the way `language` writes them, English when
/// `None`), compare with `gold`.
pub fn score_number(
    output: &str,
    gold: f64,
    mode: Mode,
    stops: &[String],
    language: Option<&str>,
) -> NumberScore {
    let stops: Vec<&str> = stops.iter().map(String::as_str).collect();
    let text = truncate_at(output, &stops);
    let extracted = extract_number_in(
        text,
        mode,
        ANSWER_MARKERS,
        language.is_some_and(uses_decimal_comma),
    );
    NumberScore {
        extracted,
        correct: exact_match(extracted, gold),
    }
}

/// A built-in prompt from `prompts/eval/`.
pub(crate) fn builtin(version: &str, template: &str, exemplars: Option<&str>) -> FewShot {
    let origin = Path::new("prompts/eval").join(version);
    FewShot::parse(
        version,
        (template, &origin),
        exemplars.map(|e| (e, origin.as_path())),
    )
    .unwrap_or_else(|err| panic!("built-in prompt `{version}` is malformed: {err}"))
}

/// The language code in a file name such as `mgsm_de.tsv` or `xquad.de.json`.
pub fn language_from_path(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    let stem = stem
        .strip_suffix(".jsonl")
        .or_else(|| stem.strip_suffix(".json"))
        .unwrap_or(&stem);
    let code = stem.rsplit(['_', '.', '-']).next()?;
    let plausible = (2..=3).contains(&code.len()) && code.chars().all(|c| c.is_ascii_lowercase());
    plausible.then(|| code.to_string())
}
