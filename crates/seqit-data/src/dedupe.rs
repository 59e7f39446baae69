//! `seqit data dedupe`: exact and near-duplicate removal.
//!
//! Records are compared by a key text: the system prompt and user turns
//! ([`DedupeKey::Prompt`], the default) or the whole conversation. The text is
//! normalised ([`normalize`](crate::normalize): lowercase, punctuation removed,
//! whitespace collapsed).
//!
//! * **Exact**: records whose normalised key texts are equal.
//! * **Near** (with a threshold): records whose sets of word shingles (`shingle`
//!   consecutive normalised words; a text shorter than that is one shingle) have a
//!   Jaccard similarity at or above the threshold. Candidates are found with MinHash
//!   (128 hash functions) and locality-sensitive hashing, with bands chosen so that a
//!   pair at the threshold is a candidate with probability above 99.5%; each candidate
//!   is then checked with the exact Jaccard similarity of the shingle sets.
//!
//! Records are taken in file order; the first of a group is kept and each later one
//! is compared with the records kept so far.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use seqit_core::Role;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::pipe::{filter, record_name, FilterPaths, Filtered, LISTED};
use crate::record::Record;
use crate::text::{fnv1a, mix64, normalized_words};

/// Which text of a record decides whether it duplicates another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DedupeKey {
    /// System prompt and user turns.
    #[default]
    Prompt,
    /// System prompt and every turn.
    Conversation,
}

/// Settings of [`Deduper`].
#[derive(Debug, Clone)]
pub struct DedupeOptions {
    /// The text records are compared by.
    pub key: DedupeKey,
    /// Jaccard threshold for near duplicates; exact duplicates only when `None`.
    pub near: Option<f64>,
    /// Words per shingle.
    pub shingle: usize,
}

impl Default for DedupeOptions {
    fn default() -> Self {
        Self {
            key: DedupeKey::Prompt,
            near: None,
            shingle: 3,
        }
    }
}

impl DedupeOptions {
    fn check(&self) -> Result<()> {
        if let Some(t) = self.near.filter(|t| !(*t > 0.0 && *t <= 1.0)) {
            return Err(Error::Usage(format!(
                "`--near` must be a Jaccard similarity in (0, 1], got {t}"
            )));
        }
        if self.shingle == 0 {
            return Err(Error::Usage("`--shingle` must be at least 1".into()));
        }
        Ok(())
    }
}

/// `seqit data dedupe`: copies `paths.input` to `paths.output` without the records
/// that duplicate an earlier one, listing those in the report (default
/// `out.removed.jsonl`).
pub fn dedupe(paths: &FilterPaths, options: &DedupeOptions) -> Result<Filtered<Removal>> {
    options.check()?;
    let mut deduper = Deduper::new(options.clone());
    filter(paths, "removed", |record| deduper.check(record))
}

impl Filtered<Removal> {
    /// Records kept and removed (exact and near), the first removed ones by name, and
    /// where the report is; one line each.
    pub fn summary(&self) -> String {
        let removed = self.removed.len();
        let exact = self.removed.iter().filter(|r| r.kind == "exact").count();
        let mut out = format!(
            "kept {} of {} records; removed {exact} exact and {} near duplicates\n",
            self.written,
            self.read,
            removed - exact
        );
        if removed > 0 {
            let mut names: Vec<String> = self
                .removed
                .iter()
                .take(LISTED)
                .map(Removal::name)
                .collect();
            if removed > LISTED {
                names.push(format!("and {} more", removed - LISTED));
            }
            out.push_str(&format!("removed: {}\n", names.join(", ")));
        }
        out + &format!("report: {}", self.report.display())
    }
}

const NUM_HASHES: usize = 128;

/// A removed record and the kept record it duplicates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removal {
    /// 0-based position of the removed record in the input.
    pub index: usize,
    /// Its id, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// `exact` or `near`.
    pub kind: &'static str,
    /// 0-based position of the kept record it duplicates.
    pub duplicate_of: usize,
    /// That record's id, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of_id: Option<Value>,
    /// Jaccard similarity of the shingle sets (1 for exact duplicates).
    pub similarity: f64,
}

impl Removal {
    /// The removed record's id, else `#index`.
    pub fn name(&self) -> String {
        record_name(self.id.as_ref(), self.index)
    }
}

struct Kept {
    index: usize,
    id: Option<Value>,
    shingles: Vec<u64>,
}

/// Decides record by record whether to keep it.
pub struct Deduper {
    options: DedupeOptions,
    rows_per_band: usize,
    seeds: Vec<u64>,
    exact: HashMap<u128, usize>,
    kept: Vec<Kept>,
    buckets: HashMap<(usize, u64), Vec<usize>>,
    seen: usize,
}

impl Deduper {
    /// A deduper that has seen no record yet.
    pub fn new(options: DedupeOptions) -> Self {
        let rows_per_band = options.near.map_or(1, rows_per_band);
        Self {
            options,
            rows_per_band,
            seeds: (0..NUM_HASHES as u64).map(|i| mix64(i ^ 0x5eed)).collect(),
            exact: HashMap::new(),
            kept: Vec::new(),
            buckets: HashMap::new(),
            seen: 0,
        }
    }

    /// `None` to keep the record, or why it goes.
    pub fn check(&mut self, record: &Record) -> Option<Removal> {
        let index = self.seen;
        self.seen += 1;
        let words = normalized_words(&key_text(record, self.options.key));
        let digest = hash128(&words.join(" "));
        let removal = |of: &Kept, kind, similarity| Removal {
            index,
            id: record.id.clone(),
            kind,
            duplicate_of: of.index,
            duplicate_of_id: of.id.clone(),
            similarity,
        };
        if let Some(&k) = self.exact.get(&digest) {
            return Some(removal(&self.kept[k], "exact", 1.0));
        }
        let shingles = if self.options.near.is_some() {
            shingles(&words, self.options.shingle)
        } else {
            Vec::new()
        };
        let mut band_keys = Vec::new();
        if let (Some(threshold), false) = (self.options.near, shingles.is_empty()) {
            let signature: Vec<u64> = self
                .seeds
                .iter()
                .map(|&seed| {
                    shingles
                        .iter()
                        .map(|&s| mix64(s ^ seed))
                        .min()
                        .unwrap_or(u64::MAX)
                })
                .collect();
            let mut best: Option<(f64, usize)> = None;
            for (band, rows) in signature.chunks(self.rows_per_band).enumerate() {
                let key = (band, rows.iter().fold(0u64, |h, &r| mix64(h ^ r)));
                if let Some(candidates) = self.buckets.get(&key) {
                    for &k in candidates {
                        let similarity = jaccard(&shingles, &self.kept[k].shingles);
                        let better = match best {
                            None => true,
                            Some((s, b)) => similarity > s || (similarity == s && k < b),
                        };
                        if similarity >= threshold && better {
                            best = Some((similarity, k));
                        }
                    }
                }
                band_keys.push(key);
            }
            if let Some((similarity, k)) = best {
                return Some(removal(&self.kept[k], "near", similarity));
            }
        }
        let k = self.kept.len();
        self.exact.insert(digest, k);
        for key in band_keys {
            self.buckets.entry(key).or_default().push(k);
        }
        self.kept.push(Kept {
            index,
            id: record.id.clone(),
            shingles,
        });
        None
    }
}

/// Rows per LSH band: the most that still make a pair at the threshold a candidate
/// with probability ≥ 0.995.
fn rows_per_band(threshold: f64) -> usize {
    let mut best = 1;
    for rows in [1usize, 2, 4, 8, 16, 32] {
        let bands = (NUM_HASHES / rows) as i32;
        let p = 1.0 - (1.0 - threshold.powi(rows as i32)).powi(bands);
        if p >= 0.995 {
            best = rows;
        }
    }
    best
}

/// The text a record is compared by.
pub fn key_text(record: &Record, key: DedupeKey) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if let Some(system) = &record.system {
        parts.push(system);
    }
    for message in &record.messages {
        if key == DedupeKey::Conversation || message.role == Role::User {
            parts.push(&message.content);
        }
    }
    parts.join("\n")
}

/// Sorted, distinct hashes of the word shingles.
fn shingles(words: &[String], size: usize) -> Vec<u64> {
    let size = size.max(1);
    let mut out: Vec<u64> = if words.is_empty() {
        Vec::new()
    } else if words.len() <= size {
        vec![fnv1a(words.join(" ").as_bytes())]
    } else {
        words
            .windows(size)
            .map(|w| fnv1a(w.join(" ").as_bytes()))
            .collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Jaccard similarity of two sorted sets.
fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - both;
    if union == 0 {
        1.0
    } else {
        both as f64 / union as f64
    }
}

fn hash128(text: &str) -> u128 {
    let mut sip = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut sip);
    (u128::from(fnv1a(text.as_bytes())) << 64) | u128::from(sip.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        normalized_words(text)
    }

    #[test]
    fn jaccard_of_shingles() {
        let a = shingles(&words("a b c d e"), 3); // abc bcd cde
        let b = shingles(&words("a b c d f"), 3); // abc bcd cdf
        assert_eq!(a.len(), 3);
        assert!((jaccard(&a, &b) - 0.5).abs() < 1e-12);
        assert_eq!(shingles(&words("a b"), 3).len(), 1);
        assert_eq!(jaccard(&[], &[]), 1.0);
    }

    #[test]
    fn band_choice() {
        assert_eq!(rows_per_band(0.8), 4);
        assert_eq!(rows_per_band(0.9), 8);
        assert_eq!(rows_per_band(0.5), 2);
    }
}
