//! Scores and aggregates: exact match on numbers, per-language means (MGSM, XQuAD),
//! XQuAD's substring accuracy and follow rate, and seeded bootstrap confidence
//! intervals.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::extract::{same_number, Mode};

/// Whether a predicted number equals the gold one (a missing prediction is wrong).
pub fn exact_match(predicted: Option<f64>, gold: f64) -> bool {
    predicted.is_some_and(|p| same_number(p, gold))
}

/// The arithmetic mean, `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// A share of items with its counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// `hits / total` (0 when there are no items).
    pub value: f64,
    /// Items that count.
    pub hits: usize,
    /// All items.
    pub total: usize,
}

impl Rate {
    /// The share of `true` in `flags`.
    pub fn of(flags: impl IntoIterator<Item = bool>) -> Self {
        let (hits, total) = flags
            .into_iter()
            .fold((0, 0), |(h, t), f| (h + usize::from(f), t + 1));
        let value = if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        };
        Self { value, hits, total }
    }
}

/// Scores per language and their unweighted mean (each language counts once, however
/// many items it has — MGSM's and XQuAD's convention).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerLanguage {
    /// Language → share of its items scored 1.
    pub languages: BTreeMap<String, Rate>,
    /// Mean of the per-language values.
    pub mean: f64,
}

/// Groups `(language, correct)` pairs by language.
pub fn per_language<'a>(items: impl IntoIterator<Item = (&'a str, bool)>) -> PerLanguage {
    let mut groups: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for (language, correct) in items {
        groups
            .entry(language.to_string())
            .or_default()
            .push(correct);
    }
    let languages: BTreeMap<String, Rate> = groups
        .into_iter()
        .map(|(l, flags)| (l, Rate::of(flags)))
        .collect();
    let values: Vec<f64> = languages.values().map(|r| r.value).collect();
    PerLanguage {
        mean: mean(&values).unwrap_or(0.0),
        languages,
    }
}

/// The answer markers of XQuAD's translate-then-answer scoring, the SIT paper's set in
/// its order: the answer is the text after the first of them the output contains, at
/// its first occurrence (matched case-insensitively), as the paper's script reads it.
pub const XQUAD_MARKERS: &[&str] = &["result:", "answer:", "answer is", "result is"];

/// One XQuAD output scored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XquadScore {
    /// The output contains an answer marker.
    pub followed: bool,
    /// The prediction: the text after the marker (see [`XQUAD_MARKERS`]; to the end of
    /// the output), or in
    /// flexible mode the whole output when no marker is present, with punctuation, quotes
    /// and whitespace at its ends removed. `None` when that leaves nothing, or in strict
    /// mode when no marker is present.
    pub extracted: Option<String>,
    /// After [`normalize_xquad`], some non-empty gold answer is a substring of the
    /// prediction or the prediction is a substring of it.
    pub correct: bool,
}

/// Scores one output against the gold answers (any of them counts), as the SIT paper
/// does: the prediction is the text after the first of `markers` ([`XQUAD_MARKERS`]) that
/// the output contains, at its first (case-insensitive) occurrence; with no marker, [`Mode::Flexible`] (the paper's)
/// takes the whole output and [`Mode::Strict`] counts the item wrong
/// ([`Mode::LastNumber`] reads as flexible). A prediction matches a gold answer when,
/// both normalized by [`normalize_xquad`], either is a substring of the other; an empty
/// prediction or gold answer never matches.
pub fn score_xquad(output: &str, gold: &[String], mode: Mode, markers: &[&str]) -> XquadScore {
    let after = after_first_listed_marker(output, markers);
    let followed = after.is_some();
    let prediction = match after {
        Some(offset) => Some(output[offset..].trim()),
        None if mode == Mode::Strict => None,
        None => Some(output.trim()),
    };
    let prediction = prediction.map(trim_surrounding).filter(|p| !p.is_empty());
    let correct = prediction.is_some_and(|p| {
        let p = normalize_xquad(p);
        gold.iter()
            .map(|g| normalize_xquad(g))
            .any(|g| !g.is_empty() && (p.contains(&g) || g.contains(&p)))
    });
    XquadScore {
        followed,
        extracted: prediction.map(str::to_string),
        correct,
    }
}

/// The byte offset just after the first marker of `markers`, in list order, that `text`
/// contains (ASCII markers, any case), at its first occurrence.
fn after_first_listed_marker(text: &str, markers: &[&str]) -> Option<usize> {
    markers.iter().find_map(|marker| {
        let marker = marker.as_bytes();
        text.as_bytes()
            .windows(marker.len().max(1))
            .position(|window| window.eq_ignore_ascii_case(marker))
            .map(|at| at + marker.len())
    })
}

/// XQuAD's normalization before the substring match: punctuation, quotes and emphasis
/// marks stripped from both ends (`**"Paris".**` → `paris`; punctuation inside is kept,
/// `u.s. army`), whitespace collapsed to single spaces, lower case.
pub fn normalize_xquad(text: &str) -> String {
    trim_surrounding(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `text` without punctuation, quotes, emphasis marks and whitespace at either end.
fn trim_surrounding(text: &str) -> &str {
    const PUNCT: &str = "。、，！？；：「」『』（）《》〈〉【】“”‘’«»—–…·・‧¿¡،؟।॥";
    text.trim_matches(|c: char| c.is_ascii_punctuation() || PUNCT.contains(c) || c.is_whitespace())
}

/// Lower case, punctuation removed, whitespace collapsed (SQuAD's normalization without
/// its English-only article removal).
pub fn normalize_answer(text: &str) -> String {
    const PUNCT: &str = "。、，！？；：「」『』（）《》〈〉【】“”‘’«»—–…·・‧";
    let mut out = String::with_capacity(text.len());
    for c in text.to_lowercase().chars() {
        if c.is_ascii_punctuation() || PUNCT.contains(c) {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Aggregate XQuAD scores: substring accuracy and follow rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct XquadMetrics {
    /// Share of items answered correctly.
    pub accuracy: Rate,
    /// Share of outputs that contain an answer marker.
    pub follow_rate: Rate,
}

/// Aggregates scored items.
pub fn xquad_metrics<'a>(scores: impl IntoIterator<Item = &'a XquadScore> + Clone) -> XquadMetrics {
    XquadMetrics {
        accuracy: Rate::of(scores.clone().into_iter().map(|s| s.correct)),
        follow_rate: Rate::of(scores.into_iter().map(|s| s.followed)),
    }
}

/// A point estimate with a bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConfidenceInterval {
    /// The statistic on the data itself.
    pub estimate: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Coverage asked for (0.95).
    pub confidence: f64,
    /// Resamples drawn.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

/// Percentile bootstrap CI of the mean of `values`: `resamples` resamples with
/// replacement drawn from a SplitMix64 stream seeded with `seed` (same inputs and seed,
/// same interval, on every platform), bounds at the `(1 ± confidence) / 2` quantiles
/// with linear interpolation (numpy's default). `None` for no values.
pub fn bootstrap_mean_ci(
    values: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<ConfidenceInterval> {
    bootstrap_ci(values.len(), resamples, confidence, seed, |indices| {
        indices.iter().map(|&i| values[i]).sum::<f64>() / indices.len() as f64
    })
    .map(|(low, high)| ConfidenceInterval {
        estimate: mean(values).unwrap_or(0.0),
        low,
        high,
        confidence,
        resamples,
        seed,
    })
}

/// Paired bootstrap CI of `mean(a) - mean(b)` for two systems scored on the same items
/// (items are resampled together). `None` unless both have the same, non-zero length.
pub fn bootstrap_paired_diff_ci(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<ConfidenceInterval> {
    if a.len() != b.len() {
        return None;
    }
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    bootstrap_mean_ci(&diffs, resamples, confidence, seed)
}

/// Bootstrap bounds of any statistic of `n` items; `statistic` gets the resampled indices.
pub fn bootstrap_ci(
    n: usize,
    resamples: usize,
    confidence: f64,
    seed: u64,
    statistic: impl Fn(&[usize]) -> f64,
) -> Option<(f64, f64)> {
    if n == 0 || resamples == 0 || !(0.0..1.0).contains(&confidence) {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let mut indices = vec![0usize; n];
    let mut stats: Vec<f64> = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in indices.iter_mut() {
            *slot = rng.below(n);
        }
        stats.push(statistic(&indices));
    }
    stats.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence) / 2.0;
    Some((quantile(&stats, alpha), quantile(&stats, 1.0 - alpha)))
}

/// Linear-interpolation quantile of sorted data (numpy's default method).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

/// SplitMix64 (Steele, Lea and Flood 2014): small, fast, and fixed forever, so intervals
/// are reproducible across versions of seqit and of its dependencies.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; bias below 2^-40 for n < 2^24).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // The first outputs of the reference implementation (splitmix64.c) for seed 1234567.
        let mut rng = SplitMix64(1234567);
        assert_eq!(rng.next(), 6457827717110365317);
        assert_eq!(rng.next(), 3203168211198807973);
        assert_eq!(rng.next(), 9817491932198370423);
    }

    #[test]
    fn quantile_interpolates() {
        let data = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&data, 0.0), 1.0);
        assert_eq!(quantile(&data, 1.0), 4.0);
        assert!((quantile(&data, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile(&data, 0.25) - 1.75).abs() < 1e-12);
    }
}
