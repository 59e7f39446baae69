//! The builders' prompt texts: TOML files under `prompts/build/v1/` in the repository,
//! embedded as defaults and replaceable by a file of the same name in a user directory
//! (`--prompts DIR`). Each file carries a `version`; its SHA-256 (first 16 hex digits)
//! goes with it into every report so that outputs say which texts made them.
//!
//! Texts are templates with `{name}` placeholders; `{{` and `}}` are literal braces. A
//! placeholder the builder does not fill is an error when the file is loaded, not a
//! stray `{name}` in the data.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{BuildError, Result};

const TRANSLATE_FILE: &str = "translate.toml";
const TRANSLATE_BUILTIN: &str = include_str!("../../../prompts/build/v1/translate.toml");
const CAPTION_FILE: &str = "caption.toml";
const CAPTION_BUILTIN: &str = include_str!("../../../prompts/build/v1/caption.toml");

/// Which prompt file was used: its version label and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptVersion {
    /// The file's `version` (e.g. `build/v1/translate`).
    pub version: String,
    /// First 16 hex digits of the SHA-256 of the file's text.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(String),
}

/// A text with `{name}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`, accepting only the placeholders in `allowed`. The error says
    /// which placeholder is unknown and which are known.
    pub fn parse(text: &str, allowed: &[&str]) -> std::result::Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` at byte {at}"))?;
                    let name = &rest[..end];
                    if !allowed.contains(&name) {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}` (known: {}; write `{{{{` for a literal brace)",
                            allowed
                                .iter()
                                .map(|a| format!("`{{{a}}}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(name.to_string()));
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                }
                '}' => return Err(format!("lone `}}` at byte {at} (write `}}}}`)")),
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Self { pieces })
    }

    /// Fills the placeholders in one pass (values are never re-scanned, so a value
    /// containing `{name}` stays as it is). Placeholders without a value render empty.
    pub fn render(&self, values: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field(name) => {
                    if let Some((_, value)) = values.iter().find(|(n, _)| n == name) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// One loaded prompt file.
struct PromptFile {
    origin: PathBuf,
    table: toml::Table,
    version: PromptVersion,
}

impl PromptFile {
    /// `dir/name` when `dir` is given, else the embedded `builtin` text.
    fn load(dir: Option<&Path>, name: &str, builtin: &str) -> Result<Self> {
        let (origin, text) = match dir {
            Some(dir) => {
                let path = dir.join(name);
                let text = std::fs::read_to_string(&path).map_err(|e| BuildError::io(&path, e))?;
                (path, text)
            }
            None => (
                PathBuf::from(format!("prompts/build/v1/{name} (built in)")),
                builtin.to_string(),
            ),
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| BuildError::content(&origin, e.to_string()))?;
        let hash = Sha256::digest(text.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut file = Self {
            origin,
            table,
            version: PromptVersion {
                version: String::new(),
                hash,
            },
        };
        file.version.version = file.string("version")?;
        Ok(file)
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.table.get(key) {
            Some(toml::Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(BuildError::content(
                &self.origin,
                format!(
                    "field `{key}`: expected a string, found {}",
                    other.type_str()
                ),
            )),
            None => Err(BuildError::content(
                &self.origin,
                format!("field `{key}` is missing"),
            )),
        }
    }

    fn template(&self, key: &str, allowed: &[&str]) -> Result<Template> {
        Template::parse(&self.string(key)?, allowed)
            .map_err(|e| BuildError::content(&self.origin, format!("field `{key}`: {e}")))
    }
}

/// The translate-then-predict texts (`translate.toml`).
#[derive(Debug, Clone)]
pub struct TranslatePrompts {
    /// Which file was used.
    pub version: PromptVersion,
    instruction: Template,
    target: Template,
}

impl TranslatePrompts {
    /// The file in `dir`, or the built-in one.
    pub fn load(dir: Option<&Path>) -> Result<Self> {
        let file = PromptFile::load(dir, TRANSLATE_FILE, TRANSLATE_BUILTIN)?;
        Ok(Self {
            instruction: file.template("instruction", &["language", "task"])?,
            target: file.template("target", &["translation", "result"])?,
            version: file.version,
        })
    }

    /// The sequential instruction for an item whose input is in `language`.
    pub fn instruction(&self, language: &str, task: &str) -> String {
        self.instruction
            .render(&[("language", language), ("task", &lower_first(task))])
    }

    /// The target: the English input, then the English output, each marked.
    pub fn target(&self, translation: &str, result: &str) -> String {
        self.target
            .render(&[("translation", translation), ("result", result)])
    }
}

/// The caption-then-answer texts (`caption.toml`).
#[derive(Debug, Clone)]
pub struct CaptionPrompts {
    /// Which file was used.
    pub version: PromptVersion,
    sit_prompt: Template,
    sit_target: Template,
    it_prompt: Template,
    it_target: Template,
}

impl CaptionPrompts {
    /// The file in `dir`, or the built-in one.
    pub fn load(dir: Option<&Path>) -> Result<Self> {
        let file = PromptFile::load(dir, CAPTION_FILE, CAPTION_BUILTIN)?;
        let all = ["question", "caption", "answer"];
        Ok(Self {
            sit_prompt: file.template("sit_prompt", &all)?,
            sit_target: file.template("sit_target", &all)?,
            it_prompt: file.template("it_prompt", &["question", "answer"])?,
            // The IT target must not see the caption (the original code's mistake).
            it_target: file.template("it_target", &["question", "answer"])?,
            version: file.version,
        })
    }

    /// The SIT human turn (without the `<image>` line) and target.
    pub fn sit(&self, question: &str, caption: &str, answer: &str) -> (String, String) {
        let values = [
            ("question", question),
            ("caption", caption),
            ("answer", answer),
        ];
        (
            self.sit_prompt.render(&values),
            self.sit_target.render(&values),
        )
    }

    /// The IT human turn (without the `<image>` line) and target.
    pub fn it(&self, question: &str, answer: &str) -> (String, String) {
        let values = [("question", question), ("answer", answer)];
        (
            self.it_prompt.render(&values),
            self.it_target.render(&values),
        )
    }
}

/// `Classify the text.` → `classify the text.`, so that the task reads on after
/// "then"; acronyms and names written in capitals (`AI`, `JSON`) stay as they are.
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(first), second)
            if first.is_uppercase() && !second.is_some_and(char::is_uppercase) =>
        {
            first
                .to_lowercase()
                .chain(text[first.len_utf8()..].chars())
                .collect()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_once_and_reject_unknown_placeholders() {
        let t = Template::parse("a {x} {{literal}} {y}", &["x", "y"]).unwrap();
        assert_eq!(t.render(&[("x", "{y}"), ("y", "2")]), "a {y} {literal} 2");
        let err = Template::parse("{z}", &["x"]).unwrap_err();
        assert!(err.contains("`{z}`") && err.contains("`{x}`"), "{err}");
        assert!(Template::parse("a } b", &[]).is_err());
        assert!(Template::parse("a { b", &[]).is_err());
    }

    #[test]
    fn builtin_texts_load_with_versions() {
        let t = TranslatePrompts::load(None).unwrap();
        assert_eq!(t.version.version, "build/v1/translate");
        assert_eq!(t.version.hash.len(), 16);
        assert_eq!(
            t.instruction("German", "Summarize the text."),
            "First translate the input, which is written in German, into English. Then, \
             working from your English translation, summarize the text."
        );
        let c = CaptionPrompts::load(None).unwrap();
        assert_eq!(c.version.version, "build/v1/caption");
        let (_, target) = c.it("what shape is it?", "circle");
        assert_eq!(target, "Answer: circle");
    }

    #[test]
    fn a_user_file_must_not_put_the_caption_in_the_it_target() {
        let dir = tempfile::tempdir().unwrap();
        let text = CAPTION_BUILTIN.replace(
            "it_target = \"Answer: {answer}\"",
            "it_target = \"{caption} {answer}\"",
        );
        std::fs::write(dir.path().join(CAPTION_FILE), text).unwrap();
        let err = CaptionPrompts::load(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("caption.toml") && err.contains("it_target") && err.contains("{caption}"),
            "{err}"
        );
    }

    #[test]
    fn lower_first_keeps_acronyms() {
        assert_eq!(lower_first("Give a title."), "give a title.");
        assert_eq!(lower_first("AI is what?"), "AI is what?");
        assert_eq!(lower_first("Écris"), "écris");
        assert_eq!(lower_first(""), "");
    }
}
