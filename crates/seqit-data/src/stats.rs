//! `seqit data stats`: record counts and length distributions of a dataset.
//!
//! Lengths are taken per turn: every user turn is an instruction (an Alpaca `input`
//! included, since the model reads it), every assistant turn a response. Words are
//! runs of non-whitespace; tokens come from a caller-supplied tokenizer. Percentiles
//! use the nearest-rank method: p-th percentile of n sorted values is the value at
//! rank ⌈p/100 · n⌉.

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;
use seqit_core::Role;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::format::{Format, Schema};
use crate::read::Reader;
use crate::record::Record;

/// Counts tokens of a text (the model's tokenizer, without special tokens).
pub type TokenCounter<'a> = &'a (dyn Fn(&str) -> std::result::Result<usize, String> + Sync);

/// Summary of a length distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lengths {
    /// Number of values.
    pub count: usize,
    /// Arithmetic mean (0 for no values).
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: usize,
    /// 90th percentile (nearest rank).
    pub p90: usize,
    /// 99th percentile (nearest rank).
    pub p99: usize,
    /// Largest value (0 for no values).
    pub max: usize,
}

impl Lengths {
    /// Summarises values (sorted in place).
    pub fn of(values: &mut [usize]) -> Self {
        values.sort_unstable();
        let n = values.len();
        let total: usize = values.iter().sum();
        Self {
            count: n,
            mean: if n == 0 { 0.0 } else { total as f64 / n as f64 },
            p50: percentile(values, 50),
            p90: percentile(values, 90),
            p99: percentile(values, 99),
            max: values.last().copied().unwrap_or(0),
        }
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[usize], p: usize) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Statistics of one dataset file.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// The file, as the user named it.
    pub file: String,
    /// The record schema's name (e.g. `alpaca`).
    pub schema: String,
    /// How the file stores records (e.g. `JSON Lines`).
    pub container: String,
    /// Number of records.
    pub records: usize,
    /// User and assistant turns (the system prompt not counted).
    pub turns: usize,
    /// Records with more than one user turn.
    pub multi_turn: usize,
    /// Records with an Alpaca `input`.
    pub with_input: usize,
    /// Records with a system prompt.
    pub with_system: usize,
    /// Records whose last user turn has no reply.
    pub without_response: usize,
    /// Records whose user turns (system prompt included) repeat an earlier record's.
    pub duplicate_prompts: usize,
    /// Depths and step kinds, for SeqEval files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chains: Option<ChainStats>,
    /// Words per user turn (an Alpaca `input` included).
    pub instruction_words: Lengths,
    /// Words per assistant turn.
    pub response_words: Lengths,
    /// The tokenizer's name, when tokens were counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Tokens per user turn, when a tokenizer was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction_tokens: Option<Lengths>,
    /// Tokens per assistant turn, when a tokenizer was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_tokens: Option<Lengths>,
}

/// What a SeqEval file holds: chains by depth (`iteration`) and the step kinds used
/// (`steps[].kind` of program-checked chains, else `modes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChainStats {
    /// Records per depth (their `iteration` value).
    pub by_depth: BTreeMap<u64, usize>,
    /// Records without a numeric `iteration`.
    pub without_depth: usize,
    /// Records with `steps` (checked by program).
    pub verifiable: usize,
    /// Steps per kind over all records.
    pub step_kinds: BTreeMap<String, usize>,
}

impl ChainStats {
    fn add(&mut self, record: &Record) {
        match record.metadata.get("iteration").and_then(Value::as_u64) {
            Some(depth) => *self.by_depth.entry(depth).or_default() += 1,
            None => self.without_depth += 1,
        }
        let steps = record.metadata.get("steps").and_then(Value::as_array);
        self.verifiable += usize::from(steps.is_some());
        let kinds: Vec<&str> = match steps {
            Some(steps) => steps.iter().filter_map(|s| s["kind"].as_str()).collect(),
            None => record
                .metadata
                .get("modes")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
        };
        for kind in kinds {
            *self.step_kinds.entry(kind.to_string()).or_default() += 1;
        }
    }
}

/// A 64-bit digest of a record's prompt parts (collisions are negligible at dataset
/// sizes, and the set stays small).
fn prompt_key(parts: &[&str]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// Texts waiting for the tokenizer, counted in parallel batches.
struct TokenBatch<'a> {
    counter: TokenCounter<'a>,
    pending: Vec<(bool, String)>,
    instruction: Vec<usize>,
    response: Vec<usize>,
}

impl TokenBatch<'_> {
    const SIZE: usize = 4096;

    fn push(&mut self, is_instruction: bool, text: &str) -> Result<()> {
        self.pending.push((is_instruction, text.to_string()));
        if self.pending.len() >= Self::SIZE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let counter = self.counter;
        let counts: Vec<std::result::Result<usize, String>> = self
            .pending
            .par_iter()
            .map(|(_, text)| counter(text))
            .collect();
        for ((is_instruction, _), count) in self.pending.drain(..).zip(counts) {
            let count = count.map_err(|e| Error::Usage(format!("cannot count tokens: {e}")))?;
            if is_instruction {
                self.instruction.push(count);
            } else {
                self.response.push(count);
            }
        }
        Ok(())
    }
}

/// Reads every record and computes the statistics; `tokens` adds token lengths
/// (`(tokenizer name, counter)`).
pub fn stats(mut reader: Reader, tokens: Option<(&str, TokenCounter<'_>)>) -> Result<Stats> {
    let mut s = Stats {
        file: reader.path().display().to_string(),
        schema: String::new(),
        container: String::new(),
        records: 0,
        turns: 0,
        multi_turn: 0,
        with_input: 0,
        with_system: 0,
        without_response: 0,
        duplicate_prompts: 0,
        chains: None,
        instruction_words: Lengths::of(&mut []),
        response_words: Lengths::of(&mut []),
        tokenizer: None,
        instruction_tokens: None,
        response_tokens: None,
    };
    let mut instruction_words = Vec::new();
    let mut response_words = Vec::new();
    let mut batch = tokens.map(|(_, counter)| TokenBatch {
        counter,
        pending: Vec::new(),
        instruction: Vec::new(),
        response: Vec::new(),
    });
    let mut prompts_seen = HashSet::new();
    let mut chains = ChainStats::default();
    for record in &mut reader {
        let record = record?;
        s.records += 1;
        let prompt: Vec<&str> = record
            .system
            .iter()
            .map(String::as_str)
            .chain(
                record
                    .messages
                    .iter()
                    .filter(|m| m.role == Role::User)
                    .map(|m| m.content.as_str()),
            )
            .collect();
        if !prompts_seen.insert(prompt_key(&prompt)) {
            s.duplicate_prompts += 1;
        }
        chains.add(&record);
        s.turns += record.messages.len();
        s.multi_turn += usize::from(record.user_turns() > 1);
        s.with_input += usize::from(record.input.is_some());
        s.with_system += usize::from(record.system.is_some());
        s.without_response +=
            usize::from(record.prompt_text().is_some() && record.response().is_none());
        for message in &record.messages {
            let is_instruction = match message.role {
                Role::User => true,
                Role::Assistant => false,
                _ => continue,
            };
            let words = message.content.split_whitespace().count();
            if is_instruction {
                instruction_words.push(words);
            } else {
                response_words.push(words);
            }
            if let Some(batch) = &mut batch {
                batch.push(is_instruction, &message.content)?;
            }
        }
    }
    let format: Format = reader.format().expect("a file with records has a format");
    s.schema = format.schema.to_string();
    if format.schema == Schema::SeqEval {
        s.chains = Some(chains);
    }
    s.container = format.container.to_string();
    s.instruction_words = Lengths::of(&mut instruction_words);
    s.response_words = Lengths::of(&mut response_words);
    if let (Some(mut batch), Some((name, _))) = (batch, tokens) {
        batch.flush()?;
        s.tokenizer = Some(name.to_string());
        s.instruction_tokens = Some(Lengths::of(&mut batch.instruction));
        s.response_tokens = Some(Lengths::of(&mut batch.response));
    }
    Ok(s)
}

impl Stats {
    /// A plain-text table for a terminal.
    pub fn to_table(&self) -> String {
        let share = |n: usize| {
            if self.records == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.records as f64
            }
        };
        let mut out = String::new();
        out.push_str(&format!(
            "{}: {} records ({}, {})\n",
            self.file, self.records, self.schema, self.container
        ));
        out.push_str(&format!(
            "turns: {} ({:.2} per record); multi-turn records: {} ({:.1}%)\n",
            self.turns,
            if self.records == 0 {
                0.0
            } else {
                self.turns as f64 / self.records as f64
            },
            self.multi_turn,
            share(self.multi_turn)
        ));
        out.push_str(&format!(
            "with input: {} ({:.1}%), with system prompt: {} ({:.1}%), without response: {} ({:.1}%), duplicate prompts: {}\n",
            self.with_input,
            share(self.with_input),
            self.with_system,
            share(self.with_system),
            self.without_response,
            share(self.without_response),
            self.duplicate_prompts
        ));
        if let Some(chains) = &self.chains {
            let depths: Vec<String> = chains
                .by_depth
                .iter()
                .map(|(d, n)| format!("{d}: {n}"))
                .collect();
            out.push_str(&format!(
                "chains by depth: {}{}; checked by program: {}\n",
                depths.join(", "),
                if chains.without_depth > 0 {
                    format!(", no depth: {}", chains.without_depth)
                } else {
                    String::new()
                },
                chains.verifiable
            ));
            let kinds: Vec<String> = chains
                .step_kinds
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            out.push_str(&format!(
                "step kinds ({}): {}\n",
                chains.step_kinds.len(),
                kinds.join(", ")
            ));
        }
        out.push('\n');
        out.push_str(&format!(
            "{:<24} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7}\n",
            "length", "count", "mean", "p50", "p90", "p99", "max"
        ));
        let mut row = |name: String, l: &Lengths| {
            out.push_str(&format!(
                "{:<24} {:>8} {:>9.1} {:>7} {:>7} {:>7} {:>7}\n",
                name, l.count, l.mean, l.p50, l.p90, l.p99, l.max
            ));
        };
        row("instruction words".into(), &self.instruction_words);
        row("response words".into(), &self.response_words);
        if let Some(l) = &self.instruction_tokens {
            row("instruction tokens".into(), l);
        }
        if let Some(l) = &self.response_tokens {
            row("response tokens".into(), l);
        }
        if let Some(name) = &self.tokenizer {
            out.push_str(&format!("\ntokens: {name}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<usize> = (1..=10).collect();
        let l = Lengths::of(&mut v);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (5, 9, 10, 10));
        assert_eq!(l.mean, 5.5);
        assert_eq!(percentile(&[7], 1), 7);
        assert_eq!(percentile(&[], 50), 0);
        let mut v: Vec<usize> = (1..=200).collect();
        let l = Lengths::of(&mut v);
        assert_eq!((l.p50, l.p90, l.p99), (100, 180, 198));
    }
}
