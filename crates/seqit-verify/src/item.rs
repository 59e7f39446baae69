//! Verifiable items and their JSONL files.
//!
//! An item is written with the field names of the SeqEval records (`id`, `instruction`,
//! `input`, `iteration`, `original_instruction`, `modes`, `sub_steps`), so the judged
//! SeqEval reads these sets too, plus `steps` (kinds and parameters, what the checker
//! needs) and `template_version`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::step::StepSpec;

/// Deepest chain built.
pub const MAX_DEPTH: usize = 4;

/// One chained instruction whose every step is checked by program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiableItem {
    /// `v-{depth}-{n}`.
    pub id: String,
    /// The full chained instruction.
    #[serde(rename = "instruction")]
    pub prompt: String,
    /// Always empty: the steps carry their own data (kept for the SeqEval schema).
    #[serde(default)]
    pub input: String,
    /// The number of steps, 1..=4.
    #[serde(rename = "iteration")]
    pub depth: usize,
    /// The first step's text (the SeqEval schema's base task).
    #[serde(default)]
    pub original_instruction: String,
    /// The kind of every step, in order (SeqEval's `modes` field).
    #[serde(default)]
    pub modes: Vec<String>,
    /// The rendered text of every step, in order.
    pub sub_steps: Vec<String>,
    /// Kinds and parameters, in the expected order.
    pub steps: Vec<StepSpec>,
    /// The template file it was written from, e.g. `seqeval-verifiable/v1`.
    pub template_version: String,
}

impl VerifiableItem {
    /// Checks the item's own consistency: depth, step count, references.
    pub fn validate(&self) -> Result<()> {
        if self.depth == 0 || self.depth > MAX_DEPTH {
            bail!(
                "item `{}`: depth {} is not in 1..={MAX_DEPTH}",
                self.id,
                self.depth
            );
        }
        if self.steps.len() != self.depth || self.sub_steps.len() != self.depth {
            bail!(
                "item `{}`: depth {} but {} steps and {} sub_steps",
                self.id,
                self.depth,
                self.steps.len(),
                self.sub_steps.len()
            );
        }
        for (index, step) in self.steps.iter().enumerate() {
            step.validate(index, &self.steps)
                .with_context(|| format!("item `{}`", self.id))?;
        }
        Ok(())
    }
}

/// Writes one item per line.
pub fn write_jsonl(path: &Path, items: &[VerifiableItem]) -> Result<()> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.push(b'\n');
    }
    let mut file = std::fs::File::create(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    file.write_all(&out)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// Reads and validates items; errors name the file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<VerifiableItem>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut items = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read `{}`", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: VerifiableItem = serde_json::from_str(&line)
            .with_context(|| format!("`{}` line {}", path.display(), index + 1))?;
        item.validate()
            .with_context(|| format!("`{}` line {}", path.display(), index + 1))?;
        items.push(item);
    }
    Ok(items)
}
