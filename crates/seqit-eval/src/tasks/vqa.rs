//! Visual QA (VQAv2, GQA, easy-VQA) with the caption-then-answer prompt: the model is
//! shown the image (inline, as a base64 `data:` URL) and asked to describe it and then
//! answer.
//!
//! Two scores per item:
//!
//! * **accuracy** (the paper's): the text after the last "answer" (any case) is the
//!   answer; it is correct if, normalized (lower case, punctuation removed), it equals
//!   the label or contains it as whole words (`"a red triangle"` contains `triangle`;
//!   `"not sure"` does not contain `no`). In strict mode an output without "answer" is
//!   wrong; in flexible mode its whole text is taken as the answer.
//! * **VQA accuracy** (Antol et al.; the VQAv2 evaluation script): the extracted answer
//!   and the human answers are normalized as the official script does (punctuation,
//!   periods, number words to digits, articles, common contractions); with `n ≥ 2` human
//!   answers the score is the mean over each human left out of `min(#others who gave
//!   that answer / 3, 1)` — for VQAv2's ten answers, the official metric. With a single
//!   answer (easy-VQA, or a set without the human answers) the formula would give 0
//!   always, so it degrades to exact match of the normalized answer (1 or 0), i.e. the
//!   score as if every human had given that one answer.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::extract::{answer_after_marker, has_marker, Mode};
use crate::metrics::{normalize_answer, Rate};
use crate::prompt::{FewShot, Prompt};

const TEMPLATE: &str = include_str!("../../../../prompts/eval/vqa/v1/caption_answer.template");

/// The marker the answer is read after (matched case-insensitively).
pub const VQA_MARKERS: &[&str] = &["answer"];

/// The built-in caption-then-answer prompt, `vqa/v1/caption_answer`.
pub fn caption_answer_prompt() -> FewShot {
    super::builtin("vqa/v1/caption_answer", TEMPLATE, None)
}

/// The text sent with the image of a question.
pub fn render(prompt: &FewShot, question: &str) -> Result<Prompt> {
    prompt.render(&BTreeMap::from([("question", question)]))
}

/// The image file as a `data:` URL (`data:image/png;base64,...`); the type is read from
/// the file's first bytes (PNG, JPEG, GIF, WebP).
pub fn image_data_url(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|source| EvalError::File(seqit_core::FileError::read(path, source)))?;
    let mime = match bytes.as_slice() {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => {
            return Err(EvalError::Data {
                path: path.to_path_buf(),
                message: "is not a PNG, JPEG, GIF or WebP image".into(),
            })
        }
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(format!("data:{mime};base64,{encoded}"))
}

/// One output scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VqaScore {
    /// The output contains "answer".
    pub followed: bool,
    /// The text taken as the answer.
    pub extracted: Option<String>,
    /// The answer equals or contains the label (normalized, whole words).
    pub correct: bool,
    /// VQA accuracy against the human answers (see the module documentation).
    pub vqa_accuracy: f64,
}

/// Scores one output against its label and human answers.
pub fn score(output: &str, label: &str, answers: &[String], mode: Mode) -> VqaScore {
    let followed = has_marker(output, VQA_MARKERS);
    let extracted = match answer_after_marker(output, VQA_MARKERS) {
        Some(answer) => Some(answer),
        None if !followed && mode == Mode::Flexible => {
            Some(output.trim().to_string()).filter(|s| !s.is_empty())
        }
        None => None,
    };
    let (correct, vqa_accuracy) = match &extracted {
        Some(answer) => (
            contains_words(&normalize_answer(answer), &normalize_answer(label)),
            vqa_accuracy(answer, answers),
        ),
        None => (false, 0.0),
    };
    VqaScore {
        followed,
        extracted,
        correct,
        vqa_accuracy,
    }
}

/// Whether `label`'s words appear in `answer` as a contiguous run of whole words.
fn contains_words(answer: &str, label: &str) -> bool {
    !label.is_empty() && format!(" {answer} ").contains(&format!(" {label} "))
}

/// VQA accuracy of `predicted` against the human `answers` (see the module documentation).
pub fn vqa_accuracy(predicted: &str, answers: &[String]) -> f64 {
    let predicted = normalize_vqa(predicted);
    let humans: Vec<String> = answers.iter().map(|a| normalize_vqa(a)).collect();
    match humans.as_slice() {
        [] => 0.0,
        [only] => f64::from(u8::from(*only == predicted)),
        _ => {
            let total: f64 = (0..humans.len())
                .map(|left_out| {
                    let matches = humans
                        .iter()
                        .enumerate()
                        .filter(|&(i, h)| i != left_out && *h == predicted)
                        .count();
                    (matches as f64 / 3.0).min(1.0)
                })
                .sum();
            total / humans.len() as f64
        }
    }
}

/// The answer normalization of the official VQA evaluation script.
pub fn normalize_vqa(text: &str) -> String {
    const PUNCTUATION: &[char] = &[
        ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`',
        ',', '?', '!',
    ];
    let text = text.replace(['\n', '\t'], " ");
    let text = text.trim().to_lowercase();
    // A comma between digits (1,000) is dropped, as is any mark touching a space;
    // other marks become spaces.
    let digit_comma = text
        .as_bytes()
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == b',' && w[2].is_ascii_digit());
    let mut out = text.clone();
    for p in PUNCTUATION {
        let touches_space = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        out = out.replace(
            *p,
            if touches_space || digit_comma {
                ""
            } else {
                " "
            },
        );
    }
    // Periods not followed by a digit are dropped (3.5 stays).
    let chars: Vec<char> = out.chars().collect();
    let out: String = chars
        .iter()
        .enumerate()
        .filter(|&(i, &c)| c != '.' || chars.get(i + 1).is_some_and(char::is_ascii_digit))
        .map(|(_, &c)| c)
        .collect();
    out.split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(|w| number_or_contraction(w).unwrap_or(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Number words as digits and the script's most common contractions restored.
fn number_or_contraction(word: &str) -> Option<&'static str> {
    Some(match word {
        "none" | "zero" => "0",
        "one" => "1",
        "two" => "2",
        "three" => "3",
        "four" => "4",
        "five" => "5",
        "six" => "6",
        "seven" => "7",
        "eight" => "8",
        "nine" => "9",
        "ten" => "10",
        "arent" => "aren't",
        "cant" => "can't",
        "couldnt" => "couldn't",
        "didnt" => "didn't",
        "doesnt" => "doesn't",
        "dont" => "don't",
        "hasnt" => "hasn't",
        "havent" => "haven't",
        "isnt" => "isn't",
        "its" => "it's",
        "shouldnt" => "shouldn't",
        "thats" => "that's",
        "theres" => "there's",
        "theyre" => "they're",
        "wasnt" => "wasn't",
        "werent" => "weren't",
        "wont" => "won't",
        "wouldnt" => "wouldn't",
        "youre" => "you're",
        _ => return None,
    })
}

/// Aggregate scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VqaMetrics {
    /// Share of items answered correctly (equals or contains the label).
    pub accuracy: Rate,
    /// Mean VQA accuracy.
    pub vqa_accuracy: f64,
    /// Share of outputs that contain "answer".
    pub follow_rate: Rate,
}

/// Aggregates scored items.
pub fn metrics<'a>(scores: impl IntoIterator<Item = &'a VqaScore> + Clone) -> VqaMetrics {
    let n = scores.clone().into_iter().count();
    let total: f64 = scores.clone().into_iter().map(|s| s.vqa_accuracy).sum();
    VqaMetrics {
        accuracy: Rate::of(scores.clone().into_iter().map(|s| s.correct)),
        vqa_accuracy: if n == 0 { 0.0 } else { total / n as f64 },
        follow_rate: Rate::of(scores.into_iter().map(|s| s.followed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn extraction_and_contains_match() {
        let s = score(
            "Description: a red triangle.\nAnswer: Triangle.",
            "triangle",
            &answers(&["triangle"]),
            Mode::Strict,
        );
        assert_eq!(
            (
                s.followed,
                s.extracted.as_deref(),
                s.correct,
                s.vqa_accuracy
            ),
            (true, Some("Triangle"), true, 1.0)
        );
        // Contains the label as words: correct, but not VQA-exact.
        let s = score(
            "the answer is a red triangle",
            "triangle",
            &answers(&["triangle"]),
            Mode::Strict,
        );
        assert_eq!(
            (s.extracted.as_deref(), s.correct, s.vqa_accuracy),
            (Some("is a red triangle"), true, 0.0)
        );
        // `no` inside `not` is no match.
        let s = score("ANSWER: not sure", "no", &answers(&["no"]), Mode::Strict);
        assert!(!s.correct);
        // The last "answer" counts.
        let s = score(
            "Answer: yes\nWait. Final answer: no",
            "no",
            &answers(&["no"]),
            Mode::Strict,
        );
        assert_eq!((s.extracted.as_deref(), s.correct), (Some("no"), true));
        // No marker: wrong in strict mode, the whole text in flexible mode.
        let s = score(
            "Triangle",
            "triangle",
            &answers(&["triangle"]),
            Mode::Strict,
        );
        assert_eq!(
            (s.followed, s.extracted, s.correct, s.vqa_accuracy),
            (false, None, false, 0.0)
        );
        let s = score(
            "Triangle",
            "triangle",
            &answers(&["triangle"]),
            Mode::Flexible,
        );
        assert_eq!((s.followed, s.correct, s.vqa_accuracy), (false, true, 1.0));
    }

    #[test]
    fn vqa_accuracy_matches_the_official_leave_one_out_formula() {
        // Seven of ten said "2" and one "two": 8 matches after normalization; each
        // left-out subset has ≥ 3 → 1.0.
        let ten = answers(&["2", "2", "two", "2", "3", "2", "2", "1", "2", "2"]);
        assert_eq!(vqa_accuracy("Two.", &ten), 1.0);
        // "3" given by one human: leaving that one out gives 0 matches, the other nine
        // subsets give 1/3 → 9 × (1/3) / 10 = 0.3.
        assert!((vqa_accuracy("3", &ten) - 0.3).abs() < 1e-12);
        // Two humans: leaving either out leaves one match of 3 → 1/3 each.
        let two = answers(&["red", "red", "blue", "green"]);
        // red: left-out red → 1 match (1/3); left-out others → 2 matches (2/3).
        let expected = (2.0 * (1.0 / 3.0) + 2.0 * (2.0 / 3.0)) / 4.0;
        assert!((vqa_accuracy("red", &two) - expected).abs() < 1e-12);
        // A single answer degrades to normalized exact match.
        assert_eq!(vqa_accuracy("The circle!", &answers(&["circle"])), 1.0);
        assert_eq!(vqa_accuracy("a red circle", &answers(&["circle"])), 0.0);
        assert_eq!(vqa_accuracy("x", &[]), 0.0);
    }

    #[test]
    fn normalization_follows_the_vqa_script() {
        assert_eq!(normalize_vqa("The Dog's bowl."), "dog's bowl");
        assert_eq!(normalize_vqa("1,000"), "1000");
        assert_eq!(normalize_vqa("3.5 feet"), "3.5 feet");
        assert_eq!(normalize_vqa("black-and-white"), "black and white");
        assert_eq!(normalize_vqa("yes , it is"), "yes it is");
        assert_eq!(normalize_vqa("Dont know"), "don't know");
        assert_eq!(normalize_vqa("  none\n"), "0");
    }

    #[test]
    fn metrics_average() {
        let scores = [
            score("Answer: red", "red", &answers(&["red"]), Mode::Strict),
            score("Answer: a red one", "red", &answers(&["red"]), Mode::Strict),
            score("red", "red", &answers(&["red"]), Mode::Strict),
        ];
        let m = metrics(&scores);
        assert_eq!((m.accuracy.hits, m.accuracy.total), (2, 3));
        assert!((m.vqa_accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((m.follow_rate.hits, m.follow_rate.total), (2, 3));
    }
}
