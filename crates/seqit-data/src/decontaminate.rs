//! `seqit data decontaminate`: removes training records that share an n-gram with a
//! benchmark's prompts.
//!
//! Texts are normalised (lowercase, punctuation removed, whitespace collapsed) and cut
//! into n-grams of `n` consecutive words (13 by default, as in GPT-3's
//! decontamination). A benchmark prompt shorter than `n` words counts as one n-gram of
//! its own length when it has at least ⌈n/2⌉ words; shorter ones are too generic to
//! check and are counted as skipped. A training record is contaminated when any of its
//! user or assistant turns contains one of the benchmark's n-grams.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use seqit_core::Role;
use serde::Serialize;
use serde_json::Value;

use crate::error::{type_name, Error, Result};
use crate::pipe::{filter, record_name, FilterPaths, Filtered, LISTED};
use crate::read::{ReadOptions, Reader};
use crate::record::Record;
use crate::text::{fnv1a, normalized_words};

/// Fields read as a benchmark's prompt, in order of preference.
pub const BENCHMARK_FIELDS: [&str; 8] = [
    "prompt",
    "instruction",
    "question",
    "problem",
    "query",
    "input",
    "text",
    "turns",
];

/// Settings of [`decontaminate`].
#[derive(Debug, Clone)]
pub struct DecontaminateOptions {
    /// The benchmark files (see [`read_benchmark`]).
    pub against: Vec<PathBuf>,
    /// The field holding a benchmark record's prompt; `None`: the usual names.
    pub field: Option<String>,
    /// Words per n-gram (at least 1).
    pub ngram: usize,
}

/// What [`decontaminate`] did.
#[derive(Debug, Clone)]
pub struct Decontaminated {
    /// The records kept and removed, and where the report went.
    pub filtered: Filtered<Contamination>,
    /// Benchmark prompts read.
    pub prompts: usize,
    /// Of those, the ones too short to check.
    pub skipped: usize,
}

impl Decontaminated {
    /// Records kept and removed, against what (`options`), the first removed ones with
    /// the n-gram they share and its source, and where the report is; one line each.
    pub fn summary(&self, options: &DecontaminateOptions) -> String {
        let Filtered {
            read,
            written,
            removed,
            report,
        } = &self.filtered;
        let benches: Vec<String> = options
            .against
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut out = format!(
            "kept {written} of {read} records; removed {} that share a {}-gram with {} ({} prompts, {} too short to check)\n",
            removed.len(),
            options.ngram,
            benches.join(", "),
            self.prompts,
            self.skipped
        );
        for hit in removed.iter().take(LISTED) {
            let (name, source) = (hit.name(), &hit.benchmark.source);
            out.push_str(&format!(
                "removed {name}: \"{}\" (from {source})\n",
                hit.ngram
            ));
        }
        if removed.len() > LISTED {
            out.push_str(&format!("... and {} more\n", removed.len() - LISTED));
        }
        out + &format!("report: {}", report.display())
    }
}

/// `seqit data decontaminate`: copies `paths.input` to `paths.output` without the
/// records that share an n-gram with a prompt of the benchmarks, listing those in the
/// report (default `out.contaminated.jsonl`).
pub fn decontaminate(
    paths: &FilterPaths,
    options: &DecontaminateOptions,
) -> Result<Decontaminated> {
    if options.ngram == 0 {
        return Err(Error::Usage("`--ngram` must be at least 1".into()));
    }
    let mut items = Vec::new();
    for bench in &options.against {
        items.extend(read_benchmark(bench, options.field.as_deref())?);
    }
    let prompts = items.len();
    let mut checker = Decontaminator::new(items, options.ngram);
    let filtered = filter(paths, "contaminated", |record| checker.check(record))?;
    Ok(Decontaminated {
        filtered,
        prompts,
        skipped: checker.skipped,
    })
}

/// One prompt of a benchmark.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchmarkItem {
    /// Where it is (`file:line` or `file: record i`).
    pub source: String,
    /// Its `id` (or `task_id`), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// The prompt.
    pub text: String,
}

/// Reads the prompts of a benchmark file in any of the usual layouts: a prompt list, a
/// dataset in a known schema (its user turns), or records with a prompt field
/// (`field`, else the first of [`BENCHMARK_FIELDS`] present; `instruction` and `input`
/// are joined).
pub fn read_benchmark(path: &Path, field: Option<&str>) -> Result<Vec<BenchmarkItem>> {
    let mut reader = Reader::open(path, &ReadOptions::default())?;
    let mut items = Vec::new();
    while let Some(item) = reader.next_value() {
        let (at, value) = item?;
        let source = at.to_string();
        let mut push = |text: String, id: Option<Value>| {
            items.push(BenchmarkItem {
                source: source.clone(),
                id,
                text,
            })
        };
        match value {
            Value::String(text) => push(text, None),
            Value::Object(mut map) => {
                let id = map.remove("id").or_else(|| map.remove("task_id"));
                let texts = prompt_texts(&mut map, field).map_err(|message| {
                    Error::invalid(crate::error::Problem {
                        at: at.clone(),
                        field: None,
                        message,
                    })
                })?;
                for text in texts {
                    push(text, id.clone());
                }
            }
            other => {
                return Err(Error::at(
                    &at,
                    format!(
                        "expected a JSON object or string, found {}",
                        type_name(&other)
                    ),
                ))
            }
        }
    }
    Ok(items)
}

fn prompt_texts(
    map: &mut serde_json::Map<String, Value>,
    field: Option<&str>,
) -> std::result::Result<Vec<String>, String> {
    let strings = |value: &Value| -> Option<Vec<String>> {
        match value {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => None,
        }
    };
    if let Some(field) = field {
        let value = map
            .get(field)
            .ok_or_else(|| format!("field `{field}`: missing; expected the benchmark prompt"))?;
        return strings(value).ok_or_else(|| {
            format!(
                "field `{field}`: expected a string or a list of strings, found {}",
                type_name(value)
            )
        });
    }
    for (list, role, content, user) in [
        ("messages", "role", "content", &["user"][..]),
        ("conversations", "from", "value", &["human", "user"][..]),
    ] {
        if let Some(Value::Array(turns)) = map.get(list) {
            return Ok(turns
                .iter()
                .filter(|t| {
                    t.get(role)
                        .and_then(Value::as_str)
                        .is_some_and(|r| user.contains(&r))
                })
                .filter_map(|t| t.get(content).and_then(Value::as_str).map(str::to_string))
                .collect());
        }
    }
    if let (Some(Value::String(instruction)), Some(Value::String(input))) =
        (map.get("instruction"), map.get("input"))
    {
        if !input.is_empty() {
            return Ok(vec![format!(
                "{instruction}{}{input}",
                crate::INPUT_SEPARATOR
            )]);
        }
    }
    for key in BENCHMARK_FIELDS {
        if let Some(texts) = map.get(key).and_then(strings) {
            return Ok(texts);
        }
    }
    Err(format!(
        "no benchmark prompt found (looked for `messages`, `conversations`, {})\nhint: pass --bench-field NAME",
        BENCHMARK_FIELDS.map(|f| format!("`{f}`")).join(", ")
    ))
}

/// A record removed for contamination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contamination {
    /// 0-based position of the record in the training file.
    pub index: usize,
    /// Its id, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// 0-based turn (system prompt not counted) and its role.
    pub turn: usize,
    /// The role of that turn.
    pub role: String,
    /// The shared n-gram, normalised.
    pub ngram: String,
    /// The benchmark item it comes from.
    pub benchmark: BenchmarkItem,
}

impl Contamination {
    /// The removed record's id, else `#index`.
    pub fn name(&self) -> String {
        record_name(self.id.as_ref(), self.index)
    }
}

/// The n-grams of a benchmark, ready to check training records against.
pub struct Decontaminator {
    n: usize,
    /// Lengths of the n-grams held (`n`, and shorter for short prompts).
    lengths: BTreeSet<usize>,
    hashes: HashSet<u64>,
    grams: HashMap<String, usize>,
    items: Vec<BenchmarkItem>,
    /// Benchmark prompts too short to check.
    pub skipped: usize,
    seen: usize,
}

impl Decontaminator {
    /// The `n`-grams of `items` (`n` is at least 1).
    pub fn new(items: Vec<BenchmarkItem>, n: usize) -> Self {
        let n = n.max(1);
        let mut this = Self {
            n,
            lengths: BTreeSet::new(),
            hashes: HashSet::new(),
            grams: HashMap::new(),
            items: Vec::new(),
            skipped: 0,
            seen: 0,
        };
        for (i, item) in items.iter().enumerate() {
            let words = normalized_words(&item.text);
            let len = if words.len() >= n {
                n
            } else if words.len() >= n.div_ceil(2) {
                words.len()
            } else {
                this.skipped += 1;
                continue;
            };
            this.lengths.insert(len);
            for window in words.windows(len) {
                let gram = window.join(" ");
                this.hashes.insert(fnv1a(gram.as_bytes()));
                this.grams.entry(gram).or_insert(i);
            }
        }
        this.items = items;
        this
    }

    /// Distinct n-grams held.
    pub fn ngrams(&self) -> usize {
        self.grams.len()
    }

    /// `None` if the record is clean, else its first overlap.
    pub fn check(&mut self, record: &Record) -> Option<Contamination> {
        let index = self.seen;
        self.seen += 1;
        for (turn, message) in record.messages.iter().enumerate() {
            if !matches!(message.role, Role::User | Role::Assistant) {
                continue;
            }
            let words = normalized_words(&message.content);
            for &len in &self.lengths {
                for window in words.windows(len) {
                    let mut hash_input = String::new();
                    for (k, w) in window.iter().enumerate() {
                        if k > 0 {
                            hash_input.push(' ');
                        }
                        hash_input.push_str(w);
                    }
                    if !self.hashes.contains(&fnv1a(hash_input.as_bytes())) {
                        continue;
                    }
                    if let Some(&item) = self.grams.get(&hash_input) {
                        return Some(Contamination {
                            index,
                            id: record.id.clone(),
                            turn,
                            role: message.role.as_str().to_string(),
                            ngram: hash_input,
                            benchmark: self.items[item].clone(),
                        });
                    }
                }
            }
        }
        None
    }

    /// Words per n-gram.
    pub fn n(&self) -> usize {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(text: &str) -> BenchmarkItem {
        BenchmarkItem {
            source: "bench".into(),
            id: None,
            text: text.into(),
        }
    }

    #[test]
    fn finds_shared_ngrams() {
        let mut d = Decontaminator::new(
            vec![
                item("The quick brown fox jumps over the lazy dog"),
                item("hi there"),
            ],
            4,
        );
        assert_eq!(d.skipped, 0); // "hi there" has 2 = ⌈4/2⌉ words
        let clean = Record::exchange("A slow brown fox sleeps.", None, Some("OK"));
        assert!(d.check(&clean).is_none());
        let dirty = Record::exchange("Tell me", None, Some("...the LAZY dog, jumps over!"));
        assert!(d.check(&dirty).is_none(), "order matters");
        let dirty = Record::exchange("Say: fox jumps over the", None, Some("ok"));
        let hit = d.check(&dirty).unwrap();
        assert_eq!(
            (hit.index, hit.turn, hit.ngram.as_str()),
            (2, 0, "fox jumps over the")
        );
        let short = Record::exchange("well, HI there!", None, None);
        assert_eq!(d.check(&short).unwrap().ngram, "hi there");
    }
}
