//! XQuAD (Artetxe et al., 2020): SQuAD v1.1 questions in eleven languages, asked
//! zero-shot with a translate-then-answer prompt; substring accuracy and follow rate.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::prompt::{FewShot, Prompt};

const TEMPLATE: &str = include_str!("../../prompts/xquad/v1/translate_answer.template");

/// One question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// The question's `id`.
    pub id: String,
    /// Language code.
    pub language: String,
    /// The paragraph.
    pub context: String,
    /// The question.
    pub question: String,
    /// Gold answer texts (spans of the context).
    pub answers: Vec<String>,
}

#[derive(Deserialize)]
struct SquadFile {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}

#[derive(Deserialize)]
struct Qa {
    id: String,
    question: String,
    answers: Vec<Answer>,
}

#[derive(Deserialize)]
struct Answer {
    text: String,
}

/// Reads a SQuAD-format JSON file (`data[].paragraphs[].qas[]`). The language is
/// `language`, else taken from the file name (`xquad.de.json` → `de`).
pub fn read(path: &Path, language: Option<&str>) -> Result<Vec<Item>> {
    let language = match language {
        Some(l) => l.to_string(),
        None => super::language_from_path(path).ok_or_else(|| EvalError::Data {
            path: path.to_path_buf(),
            message: "cannot tell the language from the file name\nhint: name files like `xquad.de.json` or give \
                      the language explicitly"
                .to_string(),
        })?,
    };
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: SquadFile = serde_json::from_str(&text).map_err(|err| EvalError::Parse {
        path: path.to_path_buf(),
        line: err.line(),
        message: format!("not a SQuAD-format file: {err}"),
    })?;
    let mut items = Vec::new();
    for article in file.data {
        for paragraph in article.paragraphs {
            for qa in paragraph.qas {
                if qa.answers.is_empty() {
                    return Err(EvalError::Data {
                        path: path.to_path_buf(),
                        message: format!("question `{}` has no answers", qa.id),
                    });
                }
                items.push(Item {
                    id: qa.id,
                    language: language.clone(),
                    context: paragraph.context.clone(),
                    question: qa.question,
                    answers: qa.answers.into_iter().map(|a| a.text).collect(),
                });
            }
        }
    }
    Ok(items)
}

/// The built-in zero-shot translate-then-answer prompt, `xquad/v1/translate_answer`.
pub fn translate_answer_prompt() -> FewShot {
    super::builtin("xquad/v1/translate_answer", TEMPLATE, None)
}

/// The prompt for one item.
pub fn render(prompt: &FewShot, item: &Item) -> Result<Prompt> {
    prompt.render(&BTreeMap::from([
        ("context", item.context.as_str()),
        ("question", item.question.as_str()),
    ]))
}
