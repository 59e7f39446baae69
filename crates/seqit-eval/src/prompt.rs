//! Versioned few-shot prompts kept in plain-text files.
//!
//! A **template** file has sections, each opened by a line `[name]`:
//!
//! ```text
//! # comment lines before the first section are ignored
//! [instruction]
//! Solve each question step by step.
//! [shot]
//! Question: {question}
//! Answer: {reasoning}
//! [query]
//! Question: {question}
//! Answer:
//! [stop]
//! Question:
//! ```
//!
//! The prompt is the instruction, each exemplar rendered with `[shot]`, and the item
//! rendered with `[query]`, separated by blank lines. `{name}` is replaced by the field
//! `name` (`{{` and `}}` are literal braces); `[stop]` lists, one per line, where a
//! reply should be cut. An **exemplar** file holds records separated by lines `---`;
//! each field starts with `Name:` at the start of a line and runs to the next field.
//!
//! The built-in prompts live in `prompts/eval/<task>/<version>/`; every
//! rendered prompt carries its version and a hash of the texts used, so results say
//! exactly which prompt produced them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{EvalError, Result};

/// A parsed template (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Text before the shots (may be empty).
    pub instruction: String,
    /// How one exemplar is written (empty: zero-shot).
    pub shot: String,
    /// How the item is written.
    pub query: String,
    /// Where replies should be cut.
    pub stop: Vec<String>,
}

/// One worked example: field name (lower case) → text.
pub type Exemplar = BTreeMap<String, String>;

/// A template with its exemplars and a version label.
#[derive(Debug, Clone)]
pub struct FewShot {
    /// `gsm8k/v1/cot`, or the file name of a user-supplied template.
    pub version: String,
    /// The template.
    pub template: Template,
    /// The exemplars, in order.
    pub exemplars: Vec<Exemplar>,
    /// FNV-1a hash (hex) of the template and exemplar texts.
    pub hash: String,
}

/// A rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prompt {
    /// The text to send.
    pub text: String,
    /// Where the reply should be cut.
    pub stop: Vec<String>,
    /// Which prompt produced it.
    pub version: String,
    /// Hash of the prompt texts.
    pub hash: String,
}

impl FewShot {
    /// Builds from a template text and an optional exemplar text, each with the path
    /// that errors name.
    pub fn parse(
        version: &str,
        template: (&str, &Path),
        exemplars: Option<(&str, &Path)>,
    ) -> Result<Self> {
        let parsed = parse_template(template.0, template.1)?;
        let exemplars = match exemplars {
            Some((text, origin)) => parse_exemplars(text, origin)?,
            None => Vec::new(),
        };
        if !exemplars.is_empty() && parsed.shot.is_empty() {
            return Err(EvalError::Data {
                path: template.1.to_path_buf(),
                message: "exemplars are given but the template has no `[shot]` section".to_string(),
            });
        }
        let mut hash = Fnv1a::new();
        hash.write(template.0.as_bytes());
        hash.write(&[0]);
        hash.write(exemplars_text(&exemplars).as_bytes());
        Ok(Self {
            version: version.to_string(),
            template: parsed,
            exemplars,
            hash: hash.hex(),
        })
    }

    /// Reads a template file and an optional exemplar file; the version is the
    /// template's file name.
    pub fn from_files(template: &Path, exemplars: Option<&Path>) -> Result<Self> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|source| EvalError::File(seqit_core::FileError::read(path, source)))
        };
        let template_text = read(template)?;
        let exemplar_text = exemplars.map(read).transpose()?;
        let version = template
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse(
            &version,
            (&template_text, template),
            exemplar_text.as_deref().zip(exemplars),
        )
    }

    /// The same template with other exemplars, under `version`; the hash covers the
    /// template and the new exemplars.
    pub fn with_exemplars(&self, version: &str, exemplars: Vec<Exemplar>) -> Self {
        let mut hash = Fnv1a::new();
        hash.write(self.hash.as_bytes());
        hash.write(&[0]);
        hash.write(exemplars_text(&exemplars).as_bytes());
        Self {
            version: version.to_string(),
            template: self.template.clone(),
            exemplars,
            hash: hash.hex(),
        }
    }

    /// The prompt for one item (`fields` fill the `[query]` placeholders; each exemplar
    /// fills `[shot]`). A placeholder without a value is an error naming it.
    pub fn render(&self, fields: &BTreeMap<&str, &str>) -> Result<Prompt> {
        let mut parts: Vec<String> = Vec::new();
        if !self.template.instruction.is_empty() {
            parts.push(self.template.instruction.clone());
        }
        for exemplar in &self.exemplars {
            let values: BTreeMap<&str, &str> = exemplar
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            parts.push(fill(&self.template.shot, &values, &self.version)?);
        }
        parts.push(fill(&self.template.query, fields, &self.version)?);
        Ok(Prompt {
            text: parts.join("\n\n"),
            stop: self.template.stop.clone(),
            version: self.version.clone(),
            hash: self.hash.clone(),
        })
    }
}

fn exemplars_text(exemplars: &[Exemplar]) -> String {
    exemplars
        .iter()
        .map(|e| {
            e.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Parses a template (see the module documentation).
pub fn parse_template(text: &str, origin: &Path) -> Result<Template> {
    let mut sections: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') && trimmed.len() > 2 {
            let name = trimmed[1..trimmed.len() - 1].to_string();
            if !matches!(name.as_str(), "instruction" | "shot" | "query" | "stop") {
                return Err(EvalError::Parse {
                    path: origin.to_path_buf(),
                    line: index + 1,
                    message: format!(
                        "unknown section `[{name}]` (expected instruction, shot, query or stop)"
                    ),
                });
            }
            if sections.contains_key(&name) {
                return Err(EvalError::Parse {
                    path: origin.to_path_buf(),
                    line: index + 1,
                    message: format!("section `[{name}]` appears twice"),
                });
            }
            sections.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let Some(name) = &current {
            sections.get_mut(name).expect("section exists").push(line);
        }
    }
    let take = |name: &str| {
        sections
            .get(name)
            .map(|lines| lines.join("\n").trim_matches('\n').to_string())
    };
    let query = take("query")
        .filter(|q| !q.is_empty())
        .ok_or_else(|| EvalError::Data {
            path: origin.to_path_buf(),
            message: "the template has no `[query]` section".to_string(),
        })?;
    Ok(Template {
        instruction: take("instruction").unwrap_or_default(),
        shot: take("shot").unwrap_or_default(),
        query,
        stop: sections
            .get("stop")
            .map(|lines| {
                lines
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.to_string())
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Parses an exemplar file (see the module documentation).
pub fn parse_exemplars(text: &str, origin: &Path) -> Result<Vec<Exemplar>> {
    let mut exemplars = Vec::new();
    let mut current = Exemplar::new();
    let mut field: Option<String> = None;
    let mut started = false;
    let finish = |current: &mut Exemplar, exemplars: &mut Vec<Exemplar>| {
        if !current.is_empty() {
            for value in current.values_mut() {
                *value = value.trim().to_string();
            }
            exemplars.push(std::mem::take(current));
        }
    };
    for (index, line) in text.lines().enumerate() {
        if !started && (line.starts_with('#') || line.trim().is_empty()) {
            continue;
        }
        started = true;
        if line.trim() == "---" {
            finish(&mut current, &mut exemplars);
            field = None;
            continue;
        }
        let header = line.split_once(':').filter(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.len() <= 32
        });
        if let Some((name, rest)) = header {
            let name = name.to_ascii_lowercase();
            if current.contains_key(&name) {
                return Err(EvalError::Parse {
                    path: origin.to_path_buf(),
                    line: index + 1,
                    message: format!("field `{name}` appears twice in one exemplar"),
                });
            }
            current.insert(name.clone(), rest.trim_start().to_string());
            field = Some(name);
        } else if let Some(name) = &field {
            let value = current.get_mut(name).expect("field exists");
            value.push('\n');
            value.push_str(line);
        } else if !line.trim().is_empty() {
            return Err(EvalError::Parse {
                path: origin.to_path_buf(),
                line: index + 1,
                message: "text outside a field (fields start with `Name:`)".to_string(),
            });
        }
    }
    finish(&mut current, &mut exemplars);
    Ok(exemplars)
}

/// Replaces `{name}` placeholders of `template` in one pass (values are not re-scanned);
/// `{{` and `}}` are literal braces. A placeholder without a value is an error naming
/// `version`.
pub fn fill_placeholders(
    template: &str,
    values: &BTreeMap<&str, &str>,
    version: &str,
) -> Result<String> {
    fill(template, values, version)
}

/// See [`fill_placeholders`].
fn fill(template: &str, values: &BTreeMap<&str, &str>, version: &str) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if let Some(after) = tail.strip_prefix('}') {
            out.push('}');
            rest = after;
            continue;
        }
        let Some(end) = tail.find('}') else {
            out.push_str(tail);
            rest = "";
            break;
        };
        let name = &tail[1..end];
        match values.get(name) {
            Some(value) => out.push_str(value),
            None => {
                return Err(EvalError::Settings(format!(
                    "prompt `{version}` uses `{{{name}}}`, which this item does not have"
                )))
            }
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// 64-bit FNV-1a, for short content fingerprints.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_shots_and_query() {
        let template =
            "# c\n[instruction]\nDo it.\n[shot]\nQ: {q}\nA: {a}\n[query]\nQ: {q}\nA:\n[stop]\nQ:\n";
        let exemplars = "# ex\nQ: one\nA: 1\n---\nQ: two\nA: 2\nand more\n";
        let few = FewShot::parse(
            "t/v1",
            (template, Path::new("t")),
            Some((exemplars, Path::new("e"))),
        )
        .unwrap();
        let prompt = few.render(&BTreeMap::from([("q", "three {a}")])).unwrap();
        assert_eq!(
            prompt.text,
            "Do it.\n\nQ: one\nA: 1\n\nQ: two\nA: 2\nand more\n\nQ: three {a}\nA:"
        );
        assert_eq!(prompt.stop, vec!["Q:".to_string()]);
        assert_eq!(prompt.hash.len(), 16);
    }

    #[test]
    fn braces_and_missing_fields() {
        let values = BTreeMap::from([("x", "1")]);
        assert_eq!(fill("{{x}} {x}", &values, "v").unwrap(), "{x} 1");
        let err = fill("{y}", &values, "v").unwrap_err().to_string();
        assert!(err.contains("`{y}`"), "{err}");
    }

    #[test]
    fn template_errors_name_the_line() {
        let err = parse_template("[query]\nx\n[bogus]\n", Path::new("f.txt"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.txt") && err.contains("line 3") && err.contains("[bogus]"),
            "{err}"
        );
        let err = parse_template("[instruction]\nx\n", Path::new("f.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `[query]`"), "{err}");
    }
}
