//! Scores over a set: how many chains were followed, how many steps were done in
//! order and anywhere, by depth and by step kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::ChainCheck;
use crate::item::VerifiableItem;

/// Counts for a group of items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Items (chains) tallied.
    pub items: usize,
    /// Chains with every step done in order.
    pub chains_passed: usize,
    /// Chains whose done steps all came in order.
    pub chains_in_order: usize,
    /// Steps over all items tallied.
    pub steps: usize,
    /// Steps done in order.
    pub steps_passed: usize,
    /// Steps done anywhere.
    pub steps_done: usize,
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl Tally {
    fn add(&mut self, check: &ChainCheck) {
        self.items += 1;
        self.chains_passed += usize::from(check.all_passed);
        self.chains_in_order += usize::from(check.in_order);
        self.steps += check.steps.len();
        self.steps_passed += check.passed_count();
        self.steps_done += check.done_count();
    }

    /// Share of chains followed completely, in order (the headline score).
    pub fn chain_accuracy(&self) -> f64 {
        share(self.chains_passed, self.items)
    }

    /// Share of steps done in order.
    pub fn step_accuracy(&self) -> f64 {
        share(self.steps_passed, self.steps)
    }

    /// Share of steps done anywhere, order ignored.
    pub fn step_done_rate(&self) -> f64 {
        share(self.steps_done, self.steps)
    }

    /// Share of chains whose done steps came in the order asked.
    pub fn in_order_rate(&self) -> f64 {
        share(self.chains_in_order, self.items)
    }
}

/// Scores of a whole set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// All items.
    pub overall: Tally,
    /// Items per chain depth (number of steps).
    pub by_depth: BTreeMap<usize, Tally>,
    /// Per step kind: `steps`, `steps_passed` and `steps_done` (chain fields unused).
    pub by_kind: BTreeMap<String, Tally>,
}

/// Tallies `checks[i]`, the check of `items[i]`.
pub fn summarize(items: &[VerifiableItem], checks: &[ChainCheck]) -> Summary {
    let mut summary = Summary::default();
    for (item, check) in items.iter().zip(checks) {
        summary.overall.add(check);
        summary.by_depth.entry(item.depth).or_default().add(check);
        for step in &check.steps {
            let tally = summary
                .by_kind
                .entry(step.kind.name().to_string())
                .or_default();
            tally.steps += 1;
            tally.steps_passed += usize::from(step.passed);
            tally.steps_done += usize::from(step.passed_anywhere);
        }
    }
    summary
}
