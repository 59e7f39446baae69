//! MGSM (Shi et al., 2022): GSM8K problems in ten languages plus English; exact match
//! per language and the mean over languages.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{EvalError, Result};
use crate::extract::find_numbers;
use crate::io::{kind, open_maybe_gz, read_jsonl, string_field};
use crate::prompt::{Exemplar, FewShot, Prompt};

const EXEMPLARS: &str = include_str!("../../../../prompts/eval/mgsm/v1/exemplars.txt");
const COT: &str = include_str!("../../../../prompts/eval/mgsm/v1/cot.template");
const TRANSLATE_COT: &str = include_str!("../../../../prompts/eval/mgsm/v1/translate_cot.template");

/// One MGSM problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// `<language>/<0-based index>`.
    pub id: String,
    /// Language code (`de`, `zh`, …).
    pub language: String,
    /// The problem, in `language`.
    pub question: String,
    /// The answer.
    pub gold: f64,
}

/// The two prompt styles the paper compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    /// Question in its language, reasoning in English.
    Cot,
    /// First translate the question into English, then reason.
    TranslateCot,
}

/// The built-in 8-shot prompt of a style (`mgsm/v1/cot`, `mgsm/v1/translate_cot`).
pub fn prompt(style: PromptStyle) -> FewShot {
    match style {
        PromptStyle::Cot => super::builtin("mgsm/v1/cot", COT, Some(EXEMPLARS)),
        PromptStyle::TranslateCot => {
            super::builtin("mgsm/v1/translate_cot", TRANSLATE_COT, Some(EXEMPLARS))
        }
    }
}

/// The prompt for one question.
pub fn render(prompt: &FewShot, question: &str) -> Result<Prompt> {
    prompt.render(&BTreeMap::from([("question", question)]))
}

/// How many exemplars the paper shows per question.
pub const SHOTS: usize = 8;

/// The prompts for each language: `template`'s shots replaced by the first [`SHOTS`]
/// exemplars of that language, as the paper prompts (8 shots in the test language).
///
/// `dir` holds the MGSM train split, one `<language>.jsonl` per language, each line with
/// `question` and `answer` (the worked answer in that language, after a heading such as
/// `Step-by-Step Answer:`). The plain style shows the language's own worked answers; the
/// translate-then-CoT style shows the English question of the same exemplar (`en.jsonl`,
/// the exemplars are parallel) as the translation and its English worked answer.
pub fn prompts_per_language(
    template: &FewShot,
    style: PromptStyle,
    dir: &Path,
    languages: &[&str],
) -> Result<BTreeMap<String, FewShot>> {
    let english = match style {
        PromptStyle::TranslateCot => Some(read_exemplars(&dir.join("en.jsonl"))?),
        PromptStyle::Cot => None,
    };
    let mut prompts = BTreeMap::new();
    for &language in languages {
        let own = read_exemplars(&dir.join(format!("{language}.jsonl")))?;
        let exemplars = own
            .iter()
            .enumerate()
            .map(|(i, (question, answer))| {
                let mut exemplar = Exemplar::from([("question".to_string(), question.clone())]);
                match &english {
                    None => {
                        exemplar.insert("reasoning".into(), answer.clone());
                    }
                    Some(english) => {
                        let path = dir.join("en.jsonl");
                        let (question, answer) = english.get(i).ok_or_else(|| EvalError::Data {
                            path,
                            message: format!(
                                "has {} exemplars, fewer than `{language}.jsonl`'s {}",
                                english.len(),
                                own.len()
                            ),
                        })?;
                        exemplar.insert("translation".into(), question.clone());
                        exemplar.insert("reasoning".into(), answer.clone());
                    }
                }
                Ok(exemplar)
            })
            .collect::<Result<Vec<_>>>()?;
        let version = format!("{}+exemplars/{language}", template.version);
        prompts.insert(
            language.to_string(),
            template.with_exemplars(&version, exemplars),
        );
    }
    Ok(prompts)
}

/// The first [`SHOTS`] `(question, worked answer without its heading)` pairs of an
/// exemplar file.
fn read_exemplars(path: &Path) -> Result<Vec<(String, String)>> {
    let records = read_jsonl(path)?;
    if records.len() < SHOTS {
        return Err(EvalError::Data {
            path: path.to_path_buf(),
            message: format!("has {} exemplars; the paper shows {SHOTS}", records.len()),
        });
    }
    records
        .into_iter()
        .take(SHOTS)
        .map(|(line, record)| {
            let question = string_field(&record, "question", path, line)?;
            let answer = string_field(&record, "answer", path, line)?;
            Ok((question, without_heading(&answer).to_string()))
        })
        .collect()
}

/// A worked answer without its heading (`Step-by-Step Answer:`, `Schritt-für-Schritt-
/// Antwort:`, `逐步解答：`): the text before the first colon of the first line, when that
/// text is short and has no digit (a colon inside the reasoning, as in `Ratio: 3:1`,
/// follows a digit or comes later).
fn without_heading(answer: &str) -> &str {
    let first_line = answer.lines().next().unwrap_or_default();
    let colon = first_line
        .char_indices()
        .find(|&(_, c)| c == ':' || c == '：')
        .filter(|&(at, _)| {
            let head = &first_line[..at];
            head.chars().count() <= 40 && !head.chars().any(|c| c.is_ascii_digit())
        });
    match colon {
        Some((at, c)) => answer[at + c.len_utf8()..].trim_start(),
        None => answer,
    }
}

/// Reads one language's file: TSV (`question<TAB>answer`, no header, as in the MGSM
/// release) or JSONL (`question` with `answer_number` or `answer`). The language is
/// `language`, else taken from the file name (`mgsm_de.tsv` → `de`).
pub fn read(path: &Path, language: Option<&str>) -> Result<Vec<Item>> {
    let language = match language {
        Some(l) => l.to_string(),
        None => super::language_from_path(path).ok_or_else(|| EvalError::Data {
            path: path.to_path_buf(),
            message: "cannot tell the language from the file name\nhint: name files like `mgsm_de.tsv` or give \
                      the language explicitly"
                .to_string(),
        })?,
    };
    let name = path.to_string_lossy();
    let is_jsonl =
        name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") || name.ends_with(".json");
    let pairs = if is_jsonl {
        read_jsonl_pairs(path)?
    } else {
        read_tsv_pairs(path)?
    };
    Ok(pairs
        .into_iter()
        .enumerate()
        .map(|(i, (question, gold))| Item {
            id: format!("{language}/{i}"),
            language: language.clone(),
            question,
            gold,
        })
        .collect())
}

fn parse_gold(text: &str, path: &Path, line: usize, field: &str) -> Result<f64> {
    match find_numbers(text).as_slice() {
        [only] => Ok(only.value),
        _ => Err(EvalError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("{field}: `{text}` is not a number"),
        }),
    }
}

fn read_tsv_pairs(path: &Path) -> Result<Vec<(String, f64)>> {
    let mut pairs = Vec::new();
    for (index, line) in open_maybe_gz(path)?.lines().enumerate() {
        let line_no = index + 1;
        let line =
            line.map_err(|source| EvalError::File(seqit_core::FileError::read(path, source)))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        // The answer is the last column; a question may itself contain a tab.
        let Some((question, answer)) = line.rsplit_once('\t') else {
            return Err(EvalError::Parse {
                path: path.to_path_buf(),
                line: line_no,
                message: "expected `question<TAB>answer`".to_string(),
            });
        };
        pairs.push((
            question.trim().to_string(),
            parse_gold(answer.trim(), path, line_no, "answer column")?,
        ));
    }
    Ok(pairs)
}

fn read_jsonl_pairs(path: &Path) -> Result<Vec<(String, f64)>> {
    read_jsonl(path)?
        .into_iter()
        .map(|(line, record)| {
            let question = string_field(&record, "question", path, line)?;
            let field = if record.contains_key("answer_number") {
                "answer_number"
            } else {
                "answer"
            };
            let gold = match record.get(field) {
                Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
                Some(Value::String(s)) => {
                    parse_gold(s.trim(), path, line, &format!("field `{field}`"))?
                }
                Some(other) => {
                    return Err(EvalError::Parse {
                        path: path.to_path_buf(),
                        line,
                        message: format!(
                            "field `{field}`: expected a number, found {}",
                            kind(other)
                        ),
                    })
                }
                None => {
                    return Err(EvalError::Parse {
                        path: path.to_path_buf(),
                        line,
                        message: "missing field `answer_number` (or `answer`)".to_string(),
                    })
                }
            };
            Ok((question, gold))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_exemplars(dir: &Path, language: &str, heading: &str, count: usize) {
        let lines: String = (0..count)
            .map(|i| {
                format!(
                    "{}\n",
                    serde_json::json!({
                        "question": format!("{language} question {i}"),
                        "answer": format!("{heading} {language} reasoning {i}. Ratio 3:1."),
                        "answer_number": i,
                    })
                )
            })
            .collect();
        std::fs::write(dir.join(format!("{language}.jsonl")), lines).unwrap();
    }

    #[test]
    fn shots_come_from_the_test_language() {
        let dir = tempfile::tempdir().unwrap();
        write_exemplars(dir.path(), "de", "Schritt-für-Schritt-Antwort:", 8);
        write_exemplars(dir.path(), "zh", "逐步解答：", 9);
        write_exemplars(dir.path(), "en", "Step-by-Step Answer:", 8);

        let plain = prompts_per_language(
            &prompt(PromptStyle::Cot),
            PromptStyle::Cot,
            dir.path(),
            &["de", "zh"],
        )
        .unwrap();
        let de = render(&plain["de"], "Wie viele?").unwrap().text;
        assert_eq!(de.matches("de question").count(), SHOTS, "{de}");
        assert!(
            de.contains("Step-by-step answer: de reasoning 7. Ratio 3:1."),
            "{de}"
        );
        assert!(!de.contains("Schritt-für-Schritt") && !de.contains("panadera"));
        // Nine exemplars in the file, eight shown; the heading with a full-width colon goes.
        let zh = render(&plain["zh"], "多少?").unwrap().text;
        assert_eq!(zh.matches("zh question").count(), SHOTS);
        assert!(zh.contains("answer: zh reasoning 0.") && !zh.contains("逐步解答"));
        assert_ne!(plain["de"].hash, plain["zh"].hash);

        let translate = prompts_per_language(
            &prompt(PromptStyle::TranslateCot),
            PromptStyle::TranslateCot,
            dir.path(),
            &["de"],
        )
        .unwrap();
        let de = render(&translate["de"], "Wie viele?").unwrap().text;
        assert!(
            de.contains("Question: de question 2\nStep-by-step answer: Translation into English: en question 2\nen reasoning 2."),
            "{de}"
        );

        write_exemplars(dir.path(), "fr", "Réponse :", 7);
        let err = prompts_per_language(
            &prompt(PromptStyle::Cot),
            PromptStyle::Cot,
            dir.path(),
            &["fr"],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("has 7 exemplars; the paper shows 8"),
            "{err}"
        );
        let err = prompts_per_language(
            &prompt(PromptStyle::Cot),
            PromptStyle::Cot,
            dir.path(),
            &["sw"],
        )
        .unwrap_err();
        assert!(err.to_string().contains("sw.jsonl"), "{err}");
    }
}
