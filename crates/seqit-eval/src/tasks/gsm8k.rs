//! GSM8K (Cobbe et al., 2021): grade-school maths, exact match on the final number.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::extract::gsm8k_gold;
use crate::io::{read_jsonl, string_field};
use crate::prompt::{FewShot, Prompt};

const TEMPLATE: &str = include_str!("../../../../prompts/eval/gsm8k/v1/cot.template");
const EXEMPLARS: &str = include_str!("../../../../prompts/eval/gsm8k/v1/exemplars.txt");

/// One GSM8K problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// The record's `id` field, else its 0-based index in the file.
    pub id: String,
    /// The problem.
    pub question: String,
    /// The reference solution (`… #### 72`).
    pub answer: String,
    /// The number after `####`.
    pub gold: f64,
}

/// Reads GSM8K JSONL (`question`, `answer` ending in `#### N`; `.gz` accepted).
pub fn read(path: &Path) -> Result<Vec<Item>> {
    read_jsonl(path)?
        .into_iter()
        .enumerate()
        .map(|(index, (line, record))| {
            let question = string_field(&record, "question", path, line)?;
            let answer = string_field(&record, "answer", path, line)?;
            let gold = gsm8k_gold(&answer).ok_or_else(|| EvalError::Parse {
                path: path.to_path_buf(),
                line,
                message: "field `answer`: no number after `####`".to_string(),
            })?;
            let id = match record.get("id") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => index.to_string(),
            };
            Ok(Item {
                id,
                question,
                answer,
                gold,
            })
        })
        .collect()
}

/// The built-in 8-shot chain-of-thought prompt, `gsm8k/v1/cot`.
pub fn cot_prompt() -> FewShot {
    super::builtin("gsm8k/v1/cot", TEMPLATE, Some(EXEMPLARS))
}

/// The prompt for one question.
pub fn render(prompt: &FewShot, question: &str) -> Result<Prompt> {
    prompt.render(&BTreeMap::from([("question", question)]))
}
