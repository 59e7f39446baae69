//! `seqit data mix`: a seeded mixture of datasets by weight.
//!
//! Weights are relative shares of the output: `a.jsonl:3 b.jsonl:1` gives three
//! records of `a` for each of `b`. The output size is `total` when given; otherwise
//! the largest size at which no record has to be repeated. Each source's count is
//! its share of the total, rounded by the largest-remainder method (so the counts add
//! up exactly; ties go to the earlier source).
//!
//! Sampling is **without replacement** within a source: a source asked for no more
//! records than it has gives distinct records. A source asked for more is
//! upsampled: it gives every record ⌊count/size⌋ times, plus a sample without
//! replacement for the rest, so no record appears more than once more often than any
//! other. The chosen records of all sources are then shuffled together. The same
//! sources, weights, total and seed always give the same output.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{Format, Schema};
use crate::read::{read_all, ReadOptions};
use crate::record::Record;
use crate::rng::SeededRng;
use crate::write::{write_all, WriteOptions};

/// One input of a mixture.
#[derive(Debug, Clone)]
pub struct MixSource {
    /// The dataset.
    pub path: PathBuf,
    /// Relative share of the output (> 0).
    pub weight: f64,
}

impl FromStr for MixSource {
    type Err = Error;

    /// `PATH:WEIGHT`, or just `PATH` (weight 1). A suffix that is not a number is part
    /// of the path.
    fn from_str(text: &str) -> Result<Self> {
        if let Some((path, weight)) = text.rsplit_once(':') {
            if let Ok(weight) = weight.parse::<f64>() {
                if !(weight.is_finite() && weight > 0.0) {
                    return Err(Error::Usage(format!(
                        "`{text}`: the weight must be a number above 0"
                    )));
                }
                return Ok(Self {
                    path: PathBuf::from(path),
                    weight,
                });
            }
        }
        Ok(Self {
            path: PathBuf::from(text),
            weight: 1.0,
        })
    }
}

/// A mixture to draw and write ([`write_mix`]).
#[derive(Debug, Clone)]
pub struct MixSettings {
    /// The inputs and their weights.
    pub sources: Vec<MixSource>,
    /// Records to write; `None`: as many as possible without repeating a record.
    pub total: Option<usize>,
    /// Seed of the sampling and shuffling.
    pub seed: u64,
    /// How to read the sources.
    pub read: ReadOptions,
    /// The format to write; `None`: the sources' format, when they share one.
    pub to: Option<Schema>,
    /// The file to write.
    pub output: PathBuf,
}

/// `seqit data mix`: draws the mixture ([`mix`]) and writes it, atomically. The
/// report's `total` is the number of records written.
pub fn write_mix(settings: &MixSettings) -> Result<MixReport> {
    let (records, formats, report) = mix(
        &settings.sources,
        settings.total,
        settings.seed,
        &settings.read,
    )?;
    let to = match settings.to {
        Some(to) => to,
        None => {
            let first = formats[0].schema;
            if formats.iter().any(|f| f.schema != first) {
                let names: Vec<String> = formats.iter().map(|f| f.schema.to_string()).collect();
                return Err(Error::Usage(format!(
                    "the sources are in different formats ({})\nhint: pass --to with the format to write",
                    names.join(", ")
                )));
            }
            first
        }
    };
    // Records come from several files, so a failure names the record by its id.
    write_all(&settings.output, &WriteOptions::new(to), &records).map_err(|e| match e {
        Error::Unwritable {
            format, reason, id, ..
        } => Error::Usage(format!(
            "cannot write a mixed record{} as {format}: {reason}",
            id.map(|id| format!(" (id `{id}`)")).unwrap_or_default()
        )),
        other => other,
    })?;
    Ok(report)
}

/// What a mixture took from each source.
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    /// Records in the mixture.
    pub total: usize,
    /// Seed of the sampling and shuffling.
    pub seed: u64,
    /// Each source, in the order given.
    pub sources: Vec<MixedSource>,
}

impl MixReport {
    /// What each source gave, then how many records were written (to `output`); one
    /// line each.
    pub fn summary(&self, output: &Path) -> String {
        let mut out = String::new();
        for source in &self.sources {
            let upsampled = if source.upsampled { ", upsampled" } else { "" };
            out.push_str(&format!(
                "{}: {} of {} records (weight {}){upsampled}\n",
                source.path, source.taken, source.available, source.weight
            ));
        }
        let (total, seed) = (self.total, self.seed);
        out + &format!(
            "wrote {total} records (seed {seed}) to {}",
            output.display()
        )
    }
}

/// What a mixture took from one source.
#[derive(Debug, Clone, Serialize)]
pub struct MixedSource {
    /// The source's path.
    pub path: String,
    /// Its format.
    pub format: String,
    /// Records it holds.
    pub available: usize,
    /// Its weight.
    pub weight: f64,
    /// Records taken from it.
    pub taken: usize,
    /// Whether records were repeated (taken > available).
    pub upsampled: bool,
}

/// Splits `total` into counts proportional to `weights` (largest remainder).
pub fn allocate(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    let quotas: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let assigned: usize = counts.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest fractional part first; ties to the earlier source.
    order.sort_by(|&a, &b| {
        let fa = quotas[a] - quotas[a].floor();
        let fb = quotas[b] - quotas[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order.iter().take(total.saturating_sub(assigned)) {
        counts[i] += 1;
    }
    counts
}

/// The largest total at which every source gives each record at most once.
pub fn largest_total(sizes: &[usize], weights: &[f64]) -> usize {
    let sum: f64 = weights.iter().sum();
    let mut best = usize::MAX;
    for (&size, &w) in sizes.iter().zip(weights) {
        // Nudged up against float error; the check below steps down if that asks a
        // source for a record too many.
        let limit = ((size as f64) * sum / w + 1e-9).floor() as usize;
        best = best.min(limit.max(usize::from(size > 0)));
    }
    // Check and step down where rounding still asks too much.
    while best > 0
        && allocate(best, weights)
            .iter()
            .zip(sizes)
            .any(|(c, s)| c > s)
    {
        best -= 1;
    }
    best
}

/// Reads the sources and draws the mixture. Returns the records, the formats of the
/// sources and a report.
pub fn mix(
    sources: &[MixSource],
    total: Option<usize>,
    seed: u64,
    read: &ReadOptions,
) -> Result<(Vec<Record>, Vec<Format>, MixReport)> {
    if sources.is_empty() {
        return Err(Error::Usage("give at least one source to mix".into()));
    }
    for source in sources {
        if !(source.weight.is_finite() && source.weight > 0.0) {
            return Err(Error::Usage(format!(
                "the weight of `{}` must be a number above 0, got {}",
                source.path.display(),
                source.weight
            )));
        }
    }
    let mut datasets = Vec::with_capacity(sources.len());
    let mut formats = Vec::with_capacity(sources.len());
    for source in sources {
        let (format, records) = read_all(&source.path, read)?;
        formats.push(format);
        datasets.push(records);
    }
    let sizes: Vec<usize> = datasets.iter().map(Vec::len).collect();
    let weights: Vec<f64> = sources.iter().map(|s| s.weight).collect();
    let total = total.unwrap_or_else(|| largest_total(&sizes, &weights));
    let counts = allocate(total, &weights);
    let mut rng = SeededRng::new(seed);
    let mut mixed = Vec::with_capacity(total);
    let mut report = MixReport {
        total,
        seed,
        sources: Vec::new(),
    };
    for (i, records) in datasets.iter().enumerate() {
        let (size, count) = (records.len(), counts[i]);
        for _ in 0..count / size {
            mixed.extend(records.iter().cloned());
        }
        for j in rng.sample(size, count % size) {
            mixed.push(records[j].clone());
        }
        report.sources.push(MixedSource {
            path: sources[i].path.display().to_string(),
            format: formats[i].to_string(),
            available: size,
            weight: sources[i].weight,
            taken: count,
            upsampled: count > size,
        });
    }
    rng.shuffle(&mut mixed);
    Ok((mixed, formats, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_adds_up() {
        assert_eq!(allocate(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(allocate(7, &[3.0, 1.0]), vec![5, 2]);
        assert_eq!(allocate(0, &[1.0]), vec![0]);
        assert_eq!(allocate(5, &[0.5, 0.25, 0.25]).iter().sum::<usize>(), 5);
    }

    #[test]
    fn largest_total_without_repeats() {
        assert_eq!(largest_total(&[10, 3], &[1.0, 2.0]), 4);
        assert_eq!(largest_total(&[3, 3], &[1.0, 1.0]), 6);
        assert_eq!(largest_total(&[100, 10], &[1.0, 1.0]), 20);
        assert_eq!(largest_total(&[5], &[0.3]), 5);
    }
}
