//! Statistics of an augmentation run: option shares per iteration next to the paper's,
//! parse failures, lengths before and after, tokens and cost.

use std::collections::BTreeMap;
use std::fmt::Write;

use seqit_data::Schema;
use seqit_llm::{Ledger, ModelTally};
use serde::Serialize;

use crate::augment::ItemState;
use crate::item::SourceItem;
use crate::option::{Edit, Rule};

/// Option shares (A, B, C, D in percent) the paper reports.
pub struct PaperShares {
    /// The paper's dataset: `alpaca` or `flan`.
    pub dataset: &'static str,
    /// Per iteration, A/B/C/D.
    pub rounds: &'static [[f64; 4]],
}

/// Alpaca (52k): round 1 A 7 / B 51 / C 25 / D 17, round 2 A 30 / B 4 / C 3 / D 63.
pub const PAPER_ALPACA: PaperShares = PaperShares {
    dataset: "alpaca",
    rounds: &[[7.0, 51.0, 25.0, 17.0], [30.0, 4.0, 3.0, 63.0]],
};
/// FlanCoT (100k): round 1 A 23 / B 48 / C 8 / D 21.
pub const PAPER_FLAN: PaperShares = PaperShares {
    dataset: "flan",
    rounds: &[[23.0, 48.0, 8.0, 21.0]],
};

/// What the statistics are computed from.
pub(crate) struct StatsInput<'a> {
    pub items: &'a [SourceItem],
    pub states: &'a [&'a ItemState],
    pub iterations: u32,
    pub source_schema: Schema,
    pub ledger: &'a Ledger,
}

/// Counts and shares of one iteration.
#[derive(Debug, Clone, Serialize)]
pub struct IterationStats {
    /// The iteration, from 1.
    pub iteration: u32,
    /// Items classified in this iteration (D items of earlier ones are frozen).
    pub classified: usize,
    /// Items frozen (D) in an earlier iteration, counted as D here.
    pub frozen_before: usize,
    /// Items per option letter, the frozen ones under D.
    pub counts: BTreeMap<char, usize>,
    /// Percent per option letter over all items (classified + frozen before), as the
    /// paper reports them.
    pub shares: BTreeMap<char, f64>,
    /// The paper's shares for this iteration, when it reports them for this kind of data.
    pub paper_shares: Option<BTreeMap<char, f64>>,
    /// Classification answers no rule could read (counted as D).
    pub unparsed_classifications: usize,
    /// Rewrites that could not be used (no marker, empty, or rejected by the check).
    pub failed_rewrites: usize,
}

/// Means over all items, before (the source) and after (the SIT data) augmentation.
#[derive(Debug, Clone, Serialize)]
pub struct Lengths {
    /// Mean instruction length of the sources, in characters.
    pub instruction_chars_before: f64,
    /// Mean instruction length of the SIT data, in characters.
    pub instruction_chars_after: f64,
    /// Mean instruction length of the sources, in words.
    pub instruction_words_before: f64,
    /// Mean instruction length of the SIT data, in words.
    pub instruction_words_after: f64,
    /// Mean response length of the sources, in characters, over items whose source
    /// had a response (`None`: none had).
    pub response_chars_before: Option<f64>,
    /// Mean response length of the SIT data, in characters.
    pub response_chars_after: f64,
}

/// The statistics written to `OUT.stats.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AugmentStats {
    /// Items in the run, resumed ones included.
    pub items: usize,
    /// Iterations the run was asked for.
    pub iterations: u32,
    /// Which of the paper's datasets the shares are compared with.
    pub paper_reference: &'static str,
    /// One entry per iteration, in order.
    pub per_iteration: Vec<IterationStats>,
    /// Items whose final instruction differs from the original.
    pub rewritten_items: usize,
    /// Items whose step-0 split could not be read (their prompt was kept whole).
    pub failed_splits: usize,
    /// Mean lengths of instructions and responses, before and after.
    pub lengths: Lengths,
    /// Tokens and requests per teacher model (this run; cached samples counted apart).
    pub teachers: BTreeMap<String, ModelTally>,
    /// Spent cost, when the model has a price.
    pub cost: Option<f64>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn words(text: &str) -> f64 {
    text.split_whitespace().count() as f64
}

fn chars(text: &str) -> f64 {
    text.chars().count() as f64
}

impl AugmentStats {
    /// The statistics of a finished run; the paper's shares compared with are FlanCoT's for
    /// FlanCoT data, Alpaca's otherwise.
    pub(crate) fn compute(input: &StatsInput<'_>) -> Self {
        let paper = if input.source_schema == Schema::FlanCot {
            &PAPER_FLAN
        } else {
            &PAPER_ALPACA
        };
        let per_iteration = (1..=input.iterations)
            .map(|iteration| {
                let rounds: Vec<_> = input
                    .states
                    .iter()
                    .filter_map(|s| s.rounds.get(iteration as usize - 1))
                    .collect();
                // Items frozen (D) in an earlier round stay D: the paper's shares are
                // over all items of every round (its round 2 is A 30 / B 4 / C 3 / D 63).
                let frozen_before = input
                    .states
                    .iter()
                    .filter(|s| s.rounds.len() < iteration as usize && s.frozen())
                    .count();
                let mut counts: BTreeMap<char, usize> =
                    Edit::ALL.iter().map(|e| (e.letter(), 0)).collect();
                for round in &rounds {
                    *counts.get_mut(&round.option.letter()).expect("all letters") += 1;
                }
                *counts.get_mut(&Edit::Keep.letter()).expect("all letters") += frozen_before;
                let counted = rounds.len() + frozen_before;
                let shares = counts
                    .iter()
                    .map(|(&letter, &n)| {
                        (
                            letter,
                            if counted == 0 {
                                0.0
                            } else {
                                100.0 * n as f64 / counted as f64
                            },
                        )
                    })
                    .collect();
                let paper_shares = paper.rounds.get(iteration as usize - 1).map(|shares| {
                    Edit::ALL
                        .iter()
                        .zip(shares)
                        .map(|(e, &s)| (e.letter(), s))
                        .collect()
                });
                IterationStats {
                    iteration,
                    classified: rounds.len(),
                    frozen_before,
                    counts,
                    shares,
                    paper_shares,
                    unparsed_classifications: rounds
                        .iter()
                        .filter(|r| r.rule == Rule::Default)
                        .count(),
                    failed_rewrites: rounds.iter().filter(|r| r.rewrite_failed).count(),
                }
            })
            .collect();
        let pairs = || input.items.iter().zip(input.states.iter());
        let lengths = Lengths {
            instruction_chars_before: mean(input.items.iter().map(|i| chars(&i.instruction)))
                .unwrap_or(0.0),
            instruction_chars_after: mean(input.states.iter().map(|s| chars(s.instruction())))
                .unwrap_or(0.0),
            instruction_words_before: mean(input.items.iter().map(|i| words(&i.instruction)))
                .unwrap_or(0.0),
            instruction_words_after: mean(input.states.iter().map(|s| words(s.instruction())))
                .unwrap_or(0.0),
            response_chars_before: mean(
                input
                    .items
                    .iter()
                    .filter_map(|i| i.response.as_deref())
                    .map(chars),
            ),
            response_chars_after: mean(
                input
                    .states
                    .iter()
                    .filter_map(|s| s.response.as_ref())
                    .map(|a| chars(&a.text)),
            )
            .unwrap_or(0.0),
        };
        let teachers = input.ledger.tallies();
        let cost = teachers
            .keys()
            .filter_map(|model| input.ledger.cost(model))
            .reduce(|a, b| a + b);
        Self {
            items: input.items.len(),
            iterations: input.iterations,
            paper_reference: paper.dataset,
            per_iteration,
            rewritten_items: pairs()
                .filter(|(i, s)| s.instruction() != i.instruction)
                .count(),
            failed_splits: input
                .states
                .iter()
                .filter(|s| s.split.as_ref().is_some_and(|x| x.failed))
                .count(),
            lengths,
            teachers,
            cost,
        }
    }

    /// A short human-readable summary (the CLI prints it).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} items, {} iteration(s); option shares (paper's {} in brackets):",
            self.items, self.iterations, self.paper_reference
        );
        for it in &self.per_iteration {
            let _ = write!(
                out,
                "  round {}: {} classified, {} frozen before:",
                it.iteration, it.classified, it.frozen_before
            );
            for (letter, share) in &it.shares {
                let _ = write!(out, " {letter} {share:.0}%");
                if let Some(paper) = &it.paper_shares {
                    let _ = write!(out, " [{:.0}%]", paper[letter]);
                }
            }
            let _ = writeln!(
                out,
                "; unparsed classifications {}, failed rewrites {}",
                it.unparsed_classifications, it.failed_rewrites
            );
        }
        let l = &self.lengths;
        let _ = writeln!(
            out,
            "  instruction length: {:.1} -> {:.1} words ({:.0} -> {:.0} chars); response length: {} -> {:.0} chars",
            l.instruction_words_before,
            l.instruction_words_after,
            l.instruction_chars_before,
            l.instruction_chars_after,
            l.response_chars_before.map_or("n/a".to_string(), |c| format!("{c:.0}")),
            l.response_chars_after
        );
        let _ = write!(out, "  {} items rewritten", self.rewritten_items);
        if self.failed_splits > 0 {
            let _ = write!(out, ", {} failed splits", self.failed_splits);
        }
        if let Some(cost) = self.cost {
            let _ = write!(out, ", cost ${cost:.4}");
        }
        out
    }
}
