//! Verified SIT data (beyond the paper; opt-in with `seqit augment --verify K`): for
//! chained instructions whose every step a program checks (`seqit seqeval synth`), ask
//! the teacher up to K seeded samples, keep the first answer that passes every step in
//! order, record how many tries it took, and drop items no sample got right. A weak
//! teacher then still yields correct sequential targets, at the price of asking more.
//!
//! Tries are asked one after another per item (the first pass ends an item), items in
//! parallel. Every finished item is appended to the state journal, so a killed run
//! resumes, and a later run with a larger K continues the dropped items from the try
//! where they stopped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};
use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_data::{Record, WriteOptions, Writer};
use seqit_verify::VerifiableItem;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::augment::{AugmentPaths, PROVENANCE_KEY};
use crate::state::{
    check_unique_ids, compact, journaled_item, open_item_states, run_journaled,
    settings_fingerprint,
};
use crate::teacher::{Asked, Teacher};
use seqit_core::progress::Progress;

/// What decides a verified run's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifySettings {
    /// Most samples asked per item (K).
    pub tries: u32,
    /// The run's seed, kept in the fingerprint and each record's provenance; samples are
    /// drawn with `decoding.seed`.
    pub seed: u64,
    /// The teacher's decoding; sample `k` is asked with the seed of sample `k`.
    pub decoding: SamplingParams,
}

/// One sample and its check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedTry {
    /// The teacher's answer.
    pub response: String,
    /// Steps passed in order.
    pub steps_passed: usize,
    /// Every step passed: the answer can be kept.
    pub all_passed: bool,
    /// The first step not passed in order (0-based).
    pub first_failed: Option<usize>,
}

/// Everything done for one item (one line of the state journal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedState {
    /// Id of the verifiable item: the state journal's key.
    pub id: String,
    /// Hash of the seed, decoding and teacher the tries were asked with
    /// ([`VerifiedAugmenter::fingerprint`]); a run with other ones starts the item over.
    pub fingerprint: String,
    /// Tries asked so far, in order; the first that passed everything is kept.
    pub tries: Vec<VerifiedTry>,
}

journaled_item!(VerifiedState);

impl VerifiedState {
    /// Index of the kept try among the first `limit`.
    fn kept(&self, limit: u32) -> Option<usize> {
        self.tries
            .iter()
            .take(limit as usize)
            .position(|t| t.all_passed)
    }

    fn is_done(&self, limit: u32) -> bool {
        self.kept(limit).is_some() || self.tries.len() >= limit as usize
    }
}

/// Counts of one depth.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DepthYield {
    /// Items at this depth.
    pub items: usize,
    /// Of them, items with a passing answer.
    pub kept: usize,
}

/// The statistics written to `OUT.stats.json`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyStats {
    /// Items read.
    pub items: usize,
    /// Items with a passing answer among their first K tries (written out).
    pub kept: usize,
    /// Items without one (left out).
    pub dropped: usize,
    /// Most tries per item (K).
    pub tries_limit: u32,
    /// Samples asked over all items.
    pub samples: usize,
    /// Items whose first sample passed, over all items.
    pub first_try_pass_rate: f64,
    /// Mean tries of the kept items.
    pub mean_tries_kept: Option<f64>,
    /// Kept items by the number of tries they took (1..=K).
    pub kept_by_tries: BTreeMap<usize, usize>,
    /// Items and kept items per chain depth (steps).
    pub by_depth: BTreeMap<usize, DepthYield>,
}

impl VerifyStats {
    fn compute(items: &[VerifiableItem], states: &[&VerifiedState], limit: u32) -> Self {
        let mut stats = VerifyStats {
            items: items.len(),
            kept: 0,
            dropped: 0,
            tries_limit: limit,
            samples: 0,
            first_try_pass_rate: 0.0,
            mean_tries_kept: None,
            kept_by_tries: BTreeMap::new(),
            by_depth: BTreeMap::new(),
        };
        let mut first_try = 0;
        let mut tries_of_kept = 0;
        for (item, state) in items.iter().zip(states) {
            let depth = stats.by_depth.entry(item.depth).or_default();
            depth.items += 1;
            let kept = state.kept(limit);
            stats.samples += kept.map_or(state.tries.len().min(limit as usize), |k| k + 1);
            if let Some(k) = kept {
                depth.kept += 1;
                stats.kept += 1;
                tries_of_kept += k + 1;
                *stats.kept_by_tries.entry(k + 1).or_default() += 1;
                first_try += usize::from(k == 0);
            }
        }
        stats.dropped = stats.items - stats.kept;
        if stats.items > 0 {
            stats.first_try_pass_rate = first_try as f64 / stats.items as f64;
        }
        if stats.kept > 0 {
            stats.mean_tries_kept = Some(tries_of_kept as f64 / stats.kept as f64);
        }
        stats
    }

    /// A short human-readable summary (the CLI prints it).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} items: {} kept, {} dropped (no passing answer in {} tries); {} samples asked; first try passed {:.1}%, kept items took {} tries on average",
            self.items,
            self.kept,
            self.dropped,
            self.tries_limit,
            self.samples,
            100.0 * self.first_try_pass_rate,
            self.mean_tries_kept
                .map_or("n/a".to_string(), |m| format!("{m:.2}")),
        );
        let _ = write!(out, "  kept by depth:");
        for (depth, y) in &self.by_depth {
            let _ = write!(out, " {depth}: {}/{}", y.kept, y.items);
        }
        out
    }
}

/// Samples, checks and keeps (see the module documentation).
pub struct VerifiedAugmenter<'a> {
    /// The model asked for answers.
    pub teacher: &'a Teacher,
    /// What decides the results.
    pub settings: VerifySettings,
    /// Items worked on at once.
    pub concurrency: usize,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct VerifyOutcome {
    /// The run's statistics, also written to [`AugmentPaths::stats`].
    pub stats: VerifyStats,
    /// Items finished by an earlier run and reused.
    pub resumed: usize,
}

impl VerifiedAugmenter<'_> {
    /// Hash of what decides each sample (not K: a larger K continues a run).
    pub fn fingerprint(&self) -> String {
        settings_fingerprint(&json!({
            "mode": "verified",
            "seed": self.settings.seed,
            "decoding": self.settings.decoding,
            "teacher": self.teacher.info().model,
        }))
    }

    /// Asks and checks the `items` not finished by an earlier run, then writes the kept
    /// answers to `paths.output` and the statistics next to it. A verified run has no IT
    /// control: `paths.it_output` must be `None`.
    pub async fn run(
        &self,
        items: &[VerifiableItem],
        paths: &AugmentPaths,
        progress: &dyn Progress,
    ) -> Result<VerifyOutcome> {
        let limit = self.settings.tries;
        if limit == 0 {
            bail!("`--verify` needs at least 1 try per item");
        }
        if paths.it_output.is_some() {
            bail!("a verified run has no IT control: its chains are sequential by construction");
        }
        check_unique_ids(items.iter().map(|i| i.id.as_str()), "items")?;
        let fingerprint = self.fingerprint();
        let (journal, mut states) =
            open_item_states::<VerifiedState>(&paths.state(), &fingerprint)?;
        let mut resumed = 0;
        let mut pending = Vec::new();
        for item in items {
            match states.get(&item.id) {
                Some(state) if state.is_done(limit) => resumed += 1,
                Some(state) => pending.push((item, state.clone())),
                None => pending.push((
                    item,
                    VerifiedState {
                        id: item.id.clone(),
                        fingerprint: fingerprint.clone(),
                        tries: Vec::new(),
                    },
                )),
            }
        }
        progress.start("verify", items.len() as u64, resumed as u64);
        run_journaled(
            &journal,
            pending,
            self.concurrency,
            progress,
            |(item, state)| self.advance(item, state),
            |state: VerifiedState| {
                states.insert(state.id.clone(), state);
            },
        )
        .await?;
        let ordered: Vec<&VerifiedState> = items.iter().map(|i| &states[&i.id]).collect();
        self.write_output(items, &ordered, paths)?;
        compact(&journal, &ordered)?;
        let stats = VerifyStats::compute(items, &ordered, limit);
        seqit_data::write_file_atomic(&paths.stats(), &serde_json::to_vec_pretty(&stats)?)?;
        Ok(VerifyOutcome { stats, resumed })
    }

    /// Asks samples until one passes or K were asked.
    async fn advance(
        &self,
        item: &VerifiableItem,
        mut state: VerifiedState,
    ) -> Result<VerifiedState> {
        let prompt = Prompt::Chat(vec![ChatMessage::user(item.prompt.clone())]);
        while !state.is_done(self.settings.tries) {
            let sample = state.tries.len() as u32;
            let response = self
                .teacher
                .ask(
                    prompt.clone(),
                    &self.settings.decoding,
                    sample,
                    Asked {
                        id: &item.id,
                        iteration: 0,
                        purpose: "verified answer",
                    },
                )
                .await?;
            let check = seqit_verify::check(item, &response);
            state.tries.push(VerifiedTry {
                steps_passed: check.passed_count(),
                all_passed: check.all_passed,
                first_failed: check.first_failed,
                response,
            });
        }
        Ok(state)
    }

    fn write_output(
        &self,
        items: &[VerifiableItem],
        states: &[&VerifiedState],
        paths: &AugmentPaths,
    ) -> Result<()> {
        let mut out = Writer::create(&paths.output, &WriteOptions::new(paths.schema))?;
        for (item, state) in items.iter().zip(states) {
            let Some(kept) = state.kept(self.settings.tries) else {
                continue;
            };
            let mut record =
                Record::exchange(&item.prompt, None, Some(&state.tries[kept].response));
            record.id = Some(Value::String(item.id.clone()));
            record
                .metadata
                .insert(PROVENANCE_KEY.into(), self.provenance(item, kept + 1));
            out.write(&record)?;
        }
        out.finish()?;
        Ok(())
    }

    fn provenance(&self, item: &VerifiableItem, tries: usize) -> Value {
        json!({
            "variant": "sit-verified",
            "source_id": item.id,
            "depth": item.depth,
            "steps": item.steps,
            "template_version": item.template_version,
            "tries": tries,
            "tries_limit": self.settings.tries,
            "teacher": self.teacher.info(),
            "decoding": self.settings.decoding,
            "seed": self.settings.seed,
        })
    }
}
