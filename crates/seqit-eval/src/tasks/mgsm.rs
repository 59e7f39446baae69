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
use crate::prompt::{FewShot, Prompt};

const EXEMPLARS: &str = include_str!("../../prompts/mgsm/v1/exemplars.txt");
const COT: &str = include_str!("../../prompts/mgsm/v1/cot.template");
const TRANSLATE_COT: &str = include_str!("../../prompts/mgsm/v1/translate_cot.template");

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
        let line = line.map_err(|source| EvalError::Read {
            path: path.to_path_buf(),
            source,
        })?;
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
