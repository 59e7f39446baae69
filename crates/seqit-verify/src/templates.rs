//! The versioned template file (`prompts/seqeval-verifiable/v1/steps.toml`): several
//! phrasings per step kind, the connectives that join steps into a chain, and the
//! word pools the parameters are drawn from. Checked when loaded, so a bad edit fails
//! at once with the file, the kind and the placeholder named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::step::StepKind;

/// The built-in template file, as shipped.
pub const BUILTIN_TEMPLATES: &str =
    include_str!("../../../prompts/seqeval-verifiable/v1/steps.toml");
/// Its path in the repository (named in messages).
pub const BUILTIN_PATH: &str = "prompts/seqeval-verifiable/v1/steps.toml";

/// How steps are joined into one instruction. Every list holds alternatives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connectives {
    /// Chains written as sentences: the first step (`First, {step}`).
    pub first: Vec<String>,
    /// Steps between the first and the last (`Then {step}`).
    pub middle: Vec<String>,
    /// The last step (`Finally, {step}`).
    pub last: Vec<String>,
    /// Numbered chains: a line before the steps (may be empty).
    pub numbered_intro: Vec<String>,
    /// Numbered chains: one line per step (`{n}. {step}`).
    pub numbered_step: Vec<String>,
    /// One-sentence chains: how a middle step is attached (`, then {step}`).
    pub sentence_middle: Vec<String>,
    /// One-sentence chains: how the last step is attached (`, and finally {step}`).
    pub sentence_last: Vec<String>,
}

/// How a dependent step names the steps it acts on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct References {
    /// The step just before (`your previous answer`).
    pub previous: Vec<String>,
    /// An earlier step (`your answer to the {ordinal} step`).
    pub earlier: Vec<String>,
    /// Several steps (`your answers to the {ordinals} steps`).
    pub several: Vec<String>,
}

/// Word pools for the parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pools {
    /// Phrases an answer must end with (lowercase, no final punctuation).
    pub end_phrases: Vec<String>,
    /// Words an answer must start with.
    pub start_words: Vec<String>,
    /// Words to count letters in, reverse or write in capitals.
    pub letter_words: Vec<String>,
    /// Words to sort.
    pub sort_words: Vec<String>,
}

/// A subject for the writing steps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    /// As written after "about" (`the sea`).
    pub name: String,
    /// Its key noun (`sea`): the word a step may ask to mention.
    pub word: String,
    /// Nouns that go with it: keywords to include or avoid.
    pub related: Vec<String>,
}

/// A thing to describe as a JSON object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSubject {
    /// What the object describes, as the instruction writes it (`a book`).
    pub subject: String,
    /// The keys the object must have.
    pub keys: Vec<String>,
}

/// Words of one category and their translations (for choose-then-translate chains).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordTable {
    /// What the words are, in the plural (`fruits`).
    pub category: String,
    /// Language of the translations (`French`).
    pub language: String,
    /// (word, translation) pairs; the words are the options of the choice.
    pub pairs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: String,
    phrasings: BTreeMap<String, Vec<String>>,
    connectives: Connectives,
    references: References,
    pools: Pools,
    topics: Vec<Topic>,
    json_subjects: Vec<JsonSubject>,
    word_tables: Vec<WordTable>,
}

/// A loaded, checked template file.
#[derive(Debug, Clone)]
pub struct Templates {
    version: String,
    hash: String,
    phrasings: BTreeMap<StepKind, Vec<String>>,
    /// How steps are joined into one instruction.
    pub connectives: Connectives,
    /// How dependent steps name the steps they act on.
    pub references: References,
    /// Words and phrases the parameters are drawn from.
    pub pools: Pools,
    /// Subjects of the writing steps.
    pub topics: Vec<Topic>,
    /// Things for `json_object` steps to describe.
    pub json_subjects: Vec<JsonSubject>,
    /// Word categories for choose-then-translate chains.
    pub word_tables: Vec<WordTable>,
}

/// The placeholders of a template (`{name}`; `{{` and `}}` are literal braces), or a
/// description of a stray brace.
pub fn placeholders(template: &str) -> std::result::Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        let after = &rest[i + 1..];
        if rest[i..].starts_with("{{") || rest[i..].starts_with("}}") {
            rest = &rest[i + 2..];
            continue;
        }
        if rest[i..].starts_with('}') {
            return Err(format!("a `}}` without its `{{` near `{}`", &rest[i..]));
        }
        let end = after
            .find('}')
            .ok_or_else(|| format!("a `{{` without its `}}` near `{}`", &rest[i..]))?;
        let name = &after[..end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("`{{{name}}}` is not a placeholder name"));
        }
        found.push(name);
        rest = &after[end + 1..];
    }
    Ok(found)
}

/// Fills `{name}` placeholders from `values` (unknown names are left as they are; the
/// loader has rejected them already).
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        match (tail.starts_with('{'), tail.find('}')) {
            (true, Some(end)) => {
                let name = &tail[1..end];
                match values.iter().find(|(n, _)| *n == name) {
                    Some((_, value)) => out.push_str(value),
                    None => out.push_str(&tail[..=end]),
                }
                rest = &tail[end + 1..];
            }
            _ => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks that every template of a list uses only `allowed` and all of `required`.
fn check_list(
    file: &str,
    what: &str,
    list: &[String],
    allowed: &[&str],
    required: &[&str],
) -> Result<()> {
    if list.is_empty() {
        bail!("`{file}`: `{what}` is empty; give at least one text");
    }
    for (i, template) in list.iter().enumerate() {
        let used = placeholders(template)
            .map_err(|e| anyhow::anyhow!("`{file}`: `{what}` text {}: {e}", i + 1))?;
        if let Some(unknown) = used.iter().find(|p| !allowed.contains(p)) {
            bail!(
                "`{file}`: `{what}` text {} uses unknown placeholder `{{{unknown}}}` (it may use: {})",
                i + 1,
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            );
        }
        if let Some(missing) = required.iter().find(|p| !used.contains(p)) {
            bail!(
                "`{file}`: `{what}` text {} does not use placeholder `{{{missing}}}`, which it needs",
                i + 1
            );
        }
    }
    Ok(())
}

fn distinct(values: impl IntoIterator<Item = String>) -> bool {
    let mut seen = BTreeSet::new();
    values.into_iter().all(|v| seen.insert(v.to_lowercase()))
}

impl Templates {
    /// The template file shipped with the crate.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_TEMPLATES, BUILTIN_PATH).expect("the built-in template file is valid")
    }

    /// Reads and checks a template file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read template file `{}`", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks template text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let file: File =
            toml::from_str(text).with_context(|| format!("invalid template file `{source}`"))?;
        if file.version.trim().is_empty() {
            bail!("`{source}`: `version` is empty");
        }
        let mut phrasings = BTreeMap::new();
        for (name, list) in &file.phrasings {
            let Some(kind) = StepKind::from_name(name) else {
                bail!(
                    "`{source}`: [phrasings] has unknown step kind `{name}` (known: {})",
                    StepKind::ALL
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            phrasings.insert(kind, list.clone());
        }
        for &kind in StepKind::ALL {
            let list = phrasings.get(&kind).map(Vec::as_slice).unwrap_or(&[]);
            if list.is_empty() {
                bail!(
                    "`{source}`: step kind `{}` has no phrasings; add `{} = [\"...\"]` under [phrasings]",
                    kind.name(),
                    kind.name()
                );
            }
            let required: Vec<&str> = kind.required_placeholders().collect();
            check_list(
                source,
                &format!("phrasings.{}", kind.name()),
                list,
                kind.placeholders(),
                &required,
            )?;
            for (i, phrasing) in list.iter().enumerate() {
                // Phrasings are joined into chains: one sentence each, opening with a
                // capital so it can be lowercased after "First, ".
                let opens = phrasing.starts_with(|c: char| c.is_ascii_uppercase());
                if !opens || !phrasing.ends_with('.') {
                    bail!(
                        "`{source}`: phrasing {} of `{}` must start with a capital letter and end with a period: `{phrasing}`",
                        i + 1,
                        kind.name()
                    );
                }
            }
        }
        let c = &file.connectives;
        let step_lists: [(&str, &Vec<String>); 5] = [
            ("connectives.first", &c.first),
            ("connectives.middle", &c.middle),
            ("connectives.last", &c.last),
            ("connectives.sentence_middle", &c.sentence_middle),
            ("connectives.sentence_last", &c.sentence_last),
        ];
        for (what, list) in step_lists {
            check_list(source, what, list, &["step"], &["step"])?;
        }
        check_list(
            source,
            "connectives.numbered_step",
            &c.numbered_step,
            &["n", "step"],
            &["n", "step"],
        )?;
        check_list(
            source,
            "connectives.numbered_intro",
            &c.numbered_intro,
            &[],
            &[],
        )?;
        let r = &file.references;
        check_list(source, "references.previous", &r.previous, &[], &[])?;
        check_list(
            source,
            "references.earlier",
            &r.earlier,
            &["ordinal"],
            &["ordinal"],
        )?;
        check_list(
            source,
            "references.several",
            &r.several,
            &["ordinals"],
            &["ordinals"],
        )?;
        let p = &file.pools;
        let single_word = |w: &String| !w.is_empty() && w.chars().all(char::is_alphabetic);
        for (what, list) in [
            ("pools.end_phrases", &p.end_phrases),
            ("pools.start_words", &p.start_words),
            ("pools.letter_words", &p.letter_words),
            ("pools.sort_words", &p.sort_words),
        ] {
            check_list(source, what, list, &[], &[])?;
        }
        if !p.start_words.iter().all(single_word) || !p.letter_words.iter().all(single_word) {
            bail!("`{source}`: `pools.start_words` and `pools.letter_words` must be single words of letters");
        }
        let non_palindromes = p
            .letter_words
            .iter()
            .filter(|w| w.chars().rev().collect::<String>() != **w)
            .count();
        if non_palindromes < 2 {
            bail!("`{source}`: `pools.letter_words` needs at least two words that are not palindromes");
        }
        if p.sort_words.len() < 5
            || !p.sort_words.iter().all(single_word)
            || !distinct(p.sort_words.clone())
        {
            bail!("`{source}`: `pools.sort_words` needs at least five distinct single words");
        }
        // A chain takes a different topic for each step.
        if file.topics.len() < 4 {
            bail!("`{source}`: give at least four [[topics]]");
        }
        for topic in &file.topics {
            if !single_word(&topic.word)
                || topic.related.len() < 2
                || !topic.related.iter().all(single_word)
                || !distinct(topic.related.clone())
                || topic
                    .related
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&topic.word))
            {
                bail!(
                    "`{source}`: topic `{}` needs a one-word `word` and at least two other distinct one-word `related` nouns",
                    topic.name
                );
            }
        }
        if file.json_subjects.is_empty()
            || file
                .json_subjects
                .iter()
                .any(|s| s.keys.is_empty() || !distinct(s.keys.clone()))
        {
            bail!("`{source}`: give [[json_subjects]], each with distinct `keys`");
        }
        if file.word_tables.is_empty() {
            bail!("`{source}`: give at least one [[word_tables]]");
        }
        for table in &file.word_tables {
            if table.pairs.len() < 3
                || !distinct(table.pairs.iter().map(|(s, _)| s.clone()))
                || !distinct(table.pairs.iter().map(|(_, t)| t.clone()))
                || !table
                    .pairs
                    .iter()
                    .all(|(s, t)| single_word(s) && single_word(t))
            {
                bail!(
                    "`{source}`: word table `{}` needs at least three pairs of distinct single words",
                    table.category
                );
            }
        }
        Ok(Templates {
            version: file.version.clone(),
            hash: format!("{:x}", Sha256::digest(text.as_bytes())),
            phrasings,
            connectives: file.connectives,
            references: file.references,
            pools: file.pools,
            topics: file.topics,
            json_subjects: file.json_subjects,
            word_tables: file.word_tables,
        })
    }

    /// `seqeval-verifiable/v1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// SHA-256 of the file text, to record which texts a set was built from.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The phrasings of one kind (never empty).
    pub fn phrasings(&self, kind: StepKind) -> &[String] {
        self.phrasings.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_scanning_and_filling() {
        assert_eq!(placeholders("Add {numbers} to {{x}}."), Ok(vec!["numbers"]));
        assert!(placeholders("Add {numbers.").is_err());
        assert!(placeholders("Add numbers}.").is_err());
        assert!(placeholders("Add {Numbers}.").is_err());
        let filled = fill("Add {numbers} {{x}}.", &[("numbers", "1 and 2".into())]);
        assert_eq!(filled, "Add 1 and 2 {x}.");
    }

    #[test]
    fn builtin_loads_with_several_phrasings_per_kind() {
        let t = Templates::builtin();
        assert_eq!(t.version(), "seqeval-verifiable/v1");
        for &kind in StepKind::ALL {
            assert!(t.phrasings(kind).len() >= 3, "{}", kind.name());
        }
        assert_eq!(t.hash().len(), 64);
    }
}
