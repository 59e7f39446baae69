//! XQuAD (Artetxe et al., 2020): SQuAD v1.1 questions in eleven languages, asked
//! zero-shot with a translate-then-answer prompt; substring accuracy and follow rate.
//!
//! Every language file has the questions of the English file `xquad.en.json`, with the
//! same ids. The model translates into English before it answers, so, as the SIT paper
//! does, a non-English item is scored against the English answers of its id
//! ([`attach_english`], [`read_all`]); its own answers count as well, so an answer left
//! in the source language is still right ([`Item::gold`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::prompt::{FewShot, Prompt};

const TEMPLATE: &str = include_str!("../../../../prompts/eval/xquad/v1/translate_answer.template");

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
    /// The answers of the English question with the same id, when looked up.
    pub english: EnglishGold,
}

/// Whether an item is scored against English answers too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnglishGold {
    /// Not looked up: the item is English, or no English file was given or found.
    #[default]
    NotUsed,
    /// The answers of the English question with the same id.
    Found(Vec<String>),
    /// The English file has no question with this id: own answers only.
    Missing,
}

impl EnglishGold {
    /// `used`, `missing` or `not_used` (the per-item field of `items.jsonl`).
    pub fn status(&self) -> &'static str {
        match self {
            EnglishGold::NotUsed => "not_used",
            EnglishGold::Found(_) => "used",
            EnglishGold::Missing => "missing",
        }
    }
}

impl Item {
    /// The answers the item is scored against: the English answers of its id (when
    /// found) followed by its own, without duplicates.
    pub fn gold(&self) -> Vec<String> {
        let english = match &self.english {
            EnglishGold::Found(answers) => answers.as_slice(),
            _ => &[],
        };
        let mut gold: Vec<String> = Vec::new();
        for answer in english.iter().chain(&self.answers) {
            if !gold.contains(answer) {
                gold.push(answer.clone());
            }
        }
        gold
    }

    /// Whether the item is English (scored against its own answers only).
    pub fn is_english(&self) -> bool {
        self.language == ENGLISH
    }
}

/// The language code of the English file.
pub const ENGLISH: &str = "en";

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
    let text = std::fs::read_to_string(path)
        .map_err(|source| EvalError::File(seqit_core::FileError::read(path, source)))?;
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
                    english: EnglishGold::NotUsed,
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

/// The English file paired with a language file by default: `xquad.en.json` in the same
/// directory, when it exists.
pub fn sibling_english(path: &Path) -> Option<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new(""));
    let english = dir.join(format!("xquad.{ENGLISH}.json"));
    english.is_file().then_some(english)
}

/// Gives every non-English item the answers of the English item with the same id
/// (`english`, as read from the English file); an id the English file lacks leaves the
/// item [`EnglishGold::Missing`]. English items are left as they are. Returns the
/// `(language, id)` of the items left without English answers.
pub fn attach_english(items: &mut [Item], english: &[Item]) -> Vec<(String, String)> {
    let mut by_id: HashMap<&str, &[String]> = HashMap::new();
    for item in english {
        by_id.entry(item.id.as_str()).or_insert(&item.answers);
    }
    let mut missing = Vec::new();
    for item in items.iter_mut().filter(|i| !i.is_english()) {
        item.english = match by_id.get(item.id.as_str()) {
            Some(answers) => EnglishGold::Found(answers.to_vec()),
            None => {
                missing.push((item.language.clone(), item.id.clone()));
                EnglishGold::Missing
            }
        };
    }
    missing
}

/// Items of several language files with their English gold attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// All items, in file order.
    pub items: Vec<Item>,
    /// The English files whose answers were looked up, in the order first used.
    pub english_files: Vec<PathBuf>,
    /// Items whose id the English file lacks: `(English file, language, id)`.
    pub missing: Vec<(PathBuf, String, String)>,
}

/// Reads `paths` (see [`read`]) and attaches English gold ([`attach_english`]) from
/// `english` when given, else from each file's [`sibling_english`] when it exists. Files
/// without an English file keep their own answers only.
pub fn read_all(paths: &[PathBuf], english: Option<&Path>) -> Result<Loaded> {
    let mut loaded = Loaded {
        items: Vec::new(),
        english_files: Vec::new(),
        missing: Vec::new(),
    };
    let mut english_items: HashMap<PathBuf, Vec<Item>> = HashMap::new();
    // A file named on the command line is read even when no item needs it, so that a
    // wrong path is an error.
    if let Some(path) = english {
        english_items.insert(path.to_path_buf(), read(path, Some(ENGLISH))?);
    }
    for path in paths {
        let mut items = read(path, None)?;
        let english_path = match english {
            Some(e) => Some(e.to_path_buf()),
            None => sibling_english(path),
        };
        let needed = items.iter().any(|i| !i.is_english());
        if let Some(english_path) = english_path.filter(|_| needed) {
            if !english_items.contains_key(&english_path) {
                let english = read(&english_path, Some(ENGLISH))?;
                english_items.insert(english_path.clone(), english);
            }
            if !loaded.english_files.contains(&english_path) {
                loaded.english_files.push(english_path.clone());
            }
            let missing = attach_english(&mut items, &english_items[&english_path]);
            loaded.missing.extend(
                missing
                    .into_iter()
                    .map(|(language, id)| (english_path.clone(), language, id)),
            );
        }
        loaded.items.extend(items);
    }
    Ok(loaded)
}
