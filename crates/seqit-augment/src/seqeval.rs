//! Building a SeqEval set from any prompt set: each prompt gets a target
//! depth (1–4 by default, in the given shares, seeded), then that many rounds of
//! rewriting with the teacher through the Seq-Instruct rewrite prompts: round 1 one of
//! decompose / prefix / suffix per item, later rounds prefix or suffix. Each round's
//! added task (the `#Added Task#` line) is kept, and the chain of sub-steps is built
//! in order: a prefix or decomposition's first task goes before the chain, a suffix
//! after it.
//!
//! Records (one JSON line each; the schema shared with the evaluation):
//! `{"id", "instruction", "input", "iteration", "original_instruction", "modes",
//! "sub_steps"}`. Finished items are journaled (`SEQEVAL.state.jsonl`) so a killed run
//! resumes; the set is written atomically at the end.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use seqit_core::SamplingParams;
use seqit_data::{Record, SeededRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::extract::{extract_added_task, extract_new_instruction};
use crate::item::SourceItem;
use crate::option::Edit;
use crate::prompts::PromptSet;
use crate::state::{journaled_item, open_item_states, run_journaled, settings_fingerprint};
use crate::teacher::{item_rng, Asked, Teacher};
use seqit_core::journal::with_suffix;
use seqit_core::progress::Progress;

/// One SeqEval record (the shared schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqEvalRecord {
    /// The source prompt's id.
    pub id: String,
    /// The final, sequential instruction.
    pub instruction: String,
    /// The prompt's input (empty when it has none).
    pub input: String,
    /// Depth: the number of rewriting rounds applied (1..=4).
    pub iteration: u32,
    /// The prompt's instruction before any rewriting.
    pub original_instruction: String,
    /// `decompose`, `prefix` or `suffix`, one per round.
    pub modes: Vec<String>,
    /// The tasks of the chain in order, the original task included.
    pub sub_steps: Vec<String>,
}

/// Settings of a SeqEval build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqEvalSettings {
    /// Depths to place prompts at, e.g. `[1, 2, 3, 4]`.
    pub depths: Vec<u32>,
    /// Relative share of each depth, e.g. `[10, 20, 30, 40]`.
    pub shares: Vec<f64>,
    /// Seed of the depth assignment and of each item's rewrite modes and few-shot examples.
    pub seed: u64,
    /// The teacher's decoding for the rewrites.
    pub decoding: SamplingParams,
    /// Tries per round before the chain stops early (unparseable rewrites).
    pub attempts: u32,
}

impl SeqEvalSettings {
    /// The paper's layout: depths 1–4 at 10/20/30/40 %.
    pub fn paper(seed: u64, decoding: SamplingParams) -> Self {
        Self {
            depths: vec![1, 2, 3, 4],
            shares: vec![10.0, 20.0, 30.0, 40.0],
            seed,
            decoding,
            attempts: 3,
        }
    }

    fn check(&self) -> Result<()> {
        if self.depths.is_empty() || self.depths.contains(&0) {
            bail!("depths must be at least 1, got {:?}", self.depths);
        }
        if self.depths.len() != self.shares.len() {
            bail!(
                "{} depths but {} shares: give one share per depth",
                self.depths.len(),
                self.shares.len()
            );
        }
        if self.shares.iter().any(|s| !s.is_finite() || *s < 0.0)
            || self.shares.iter().sum::<f64>() <= 0.0
        {
            bail!(
                "shares must be numbers >= 0 with a positive sum, got {:?}",
                self.shares
            );
        }
        if self.attempts == 0 {
            bail!("attempts must be at least 1");
        }
        Ok(())
    }
}

/// How many items get each depth, as the paper counted them: every depth but the last
/// gets its share of `n` rounded half up, the last what remains (805 prompts at
/// 10/20/30/40% → 81/161/242/321).
pub fn depth_counts(n: usize, shares: &[f64]) -> Vec<usize> {
    let total: f64 = shares.iter().sum();
    let mut counts = Vec::with_capacity(shares.len());
    let mut left = n;
    for (i, share) in shares.iter().enumerate() {
        let count = if i + 1 == shares.len() {
            left
        } else {
            ((n as f64 * share / total) + 0.5).floor().min(left as f64) as usize
        };
        left -= count;
        counts.push(count);
    }
    counts
}

/// The target depth of each item (by position): [`depth_counts`] of each depth, placed
/// on a seeded shuffle of the items.
pub fn assign_depths(n: usize, depths: &[u32], shares: &[f64], seed: u64) -> Vec<u32> {
    let counts = depth_counts(n, shares);
    let mut order: Vec<usize> = (0..n).collect();
    SeededRng::new(seed).shuffle(&mut order);
    let mut assigned = vec![0; n];
    let mut next = order.into_iter();
    for (&depth, &count) in depths.iter().zip(&counts) {
        for index in next.by_ref().take(count) {
            assigned[index] = depth;
        }
    }
    assigned
}

/// One round of one item, raw teacher texts included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainRound {
    /// The rewrite asked for: decompose, prefix or suffix (round 1), prefix or suffix
    /// (later rounds).
    pub mode: Edit,
    /// Raw rewrite answers, one per attempt.
    pub raw: Vec<String>,
    /// The new instruction of the last attempt (`None`: unreadable).
    pub instruction: Option<String>,
    /// The task the last attempt added, from its `#Added Task#` line.
    pub added_task: Option<String>,
}

/// One journaled item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainState {
    /// The source prompt's id.
    pub id: String,
    /// Hash of the settings, prompts and teacher the item was built with; a run with other
    /// ones rebuilds the item.
    pub fingerprint: String,
    /// Rounds the item was assigned ([`assign_depths`]).
    pub target_depth: u32,
    /// Rounds asked, in order; a failed round is the last.
    pub rounds: Vec<ChainRound>,
}

journaled_item!(ChainState);

impl ChainRound {
    /// A round counts when it produced both a new instruction and the task it added: a
    /// sub-step is never empty.
    fn succeeded(&self) -> bool {
        self.instruction.is_some() && self.added_task.is_some()
    }
}

impl ChainState {
    /// Rounds that succeeded (a failed round ends the chain).
    fn good_rounds(&self) -> impl Iterator<Item = &ChainRound> {
        self.rounds.iter().take_while(|r| r.succeeded())
    }

    /// The SeqEval record, or `None` when not even round 1 succeeded.
    pub fn record(&self, item: &SourceItem) -> Option<SeqEvalRecord> {
        let mut instruction = &item.instruction;
        let mut modes = Vec::new();
        let mut steps = vec![item.instruction.clone()];
        for round in self.good_rounds() {
            instruction = round.instruction.as_ref().expect("good rounds have one");
            modes.push(round.mode.mode().to_string());
            let added = round.added_task.clone().expect("good rounds have one");
            match round.mode {
                Edit::Suffix => steps.push(added),
                _ => steps.insert(0, added),
            }
        }
        (!modes.is_empty()).then(|| SeqEvalRecord {
            id: item.id.clone(),
            instruction: instruction.clone(),
            input: item.input.clone().unwrap_or_default(),
            iteration: modes.len() as u32,
            original_instruction: item.instruction.clone(),
            modes,
            sub_steps: steps,
        })
    }
}

/// What a build produced.
#[derive(Debug, Clone, Serialize)]
pub struct SeqEvalStats {
    /// Prompts read.
    pub items: usize,
    /// Records written: the prompts whose first round succeeded.
    pub written: usize,
    /// Items per target depth.
    pub target_depths: HashMap<u32, usize>,
    /// Records per depth reached.
    pub depths: HashMap<u32, usize>,
    /// Items whose chain stopped short of its target (unparseable rewrites).
    pub short_chains: usize,
    /// Items left out because round 1 failed.
    pub dropped: usize,
    /// Rounds whose rewrites gave a new instruction but no `#Added Task#` line in any
    /// attempt: the chain stops before them (no empty sub-step is written).
    pub missing_added_tasks: usize,
    /// Version of the prompt set used.
    pub prompt_version: String,
    /// Content hash of the prompt set used.
    pub prompt_hash: String,
    /// The teacher backend's description (kind, model, API base).
    pub teacher: String,
    /// Items finished by an earlier run and reused.
    pub resumed: usize,
}

/// Builds a SeqEval set (see the module documentation).
pub struct SeqEvalBuilder<'a> {
    /// Templates and few-shot examples of the rewrite requests.
    pub prompts: &'a PromptSet,
    /// The model that rewrites.
    pub teacher: &'a Teacher,
    /// What decides the set.
    pub settings: SeqEvalSettings,
    /// Items worked on at once.
    pub concurrency: usize,
}

impl SeqEvalBuilder<'_> {
    fn fingerprint(&self) -> String {
        let decided = json!({
            "settings": self.settings,
            "prompts": self.prompts.hash(),
            "teacher": self.teacher.info().model,
        });
        settings_fingerprint(&decided)
    }

    /// Builds the set from `records` into `output` (JSON Lines).
    pub async fn run(
        &self,
        records: &[Record],
        output: &Path,
        progress: &dyn Progress,
    ) -> Result<SeqEvalStats> {
        self.settings.check()?;
        let items = records
            .iter()
            .enumerate()
            .map(|(i, r)| SourceItem::from_record(i, r))
            .collect::<Result<Vec<_>>>()?;
        let targets = assign_depths(
            items.len(),
            &self.settings.depths,
            &self.settings.shares,
            self.settings.seed,
        );
        let fingerprint = self.fingerprint();
        let (journal, mut states) =
            open_item_states::<ChainState>(&with_suffix(output, ".state.jsonl"), &fingerprint)?;
        let resumed = items.iter().filter(|i| states.contains_key(&i.id)).count();
        let pending: Vec<(&SourceItem, u32)> = items
            .iter()
            .zip(&targets)
            .filter(|(i, _)| !states.contains_key(&i.id))
            .map(|(i, &t)| (i, t))
            .collect();
        progress.start("seqeval", items.len() as u64, resumed as u64);
        run_journaled(
            &journal,
            pending,
            self.concurrency,
            progress,
            |(item, depth)| self.chain(item, depth, &fingerprint),
            |state: ChainState| {
                states.insert(state.id.clone(), state);
            },
        )
        .await?;
        let mut stats = SeqEvalStats {
            items: items.len(),
            written: 0,
            target_depths: HashMap::new(),
            depths: HashMap::new(),
            short_chains: 0,
            dropped: 0,
            missing_added_tasks: 0,
            prompt_version: self.prompts.version().to_string(),
            prompt_hash: self.prompts.hash().to_string(),
            teacher: self.teacher.info().backend.clone(),
            resumed,
        };
        let mut text = Vec::new();
        for item in &items {
            let state = &states[&item.id];
            *stats.target_depths.entry(state.target_depth).or_default() += 1;
            stats.missing_added_tasks += state
                .rounds
                .iter()
                .filter(|r| r.instruction.is_some() && r.added_task.is_none())
                .count();
            match state.record(item) {
                Some(record) => {
                    if record.iteration < state.target_depth {
                        stats.short_chains += 1;
                    }
                    *stats.depths.entry(record.iteration).or_default() += 1;
                    stats.written += 1;
                    serde_json::to_writer(&mut text, &record)?;
                    text.push(b'\n');
                }
                None => stats.dropped += 1,
            }
        }
        seqit_data::write_file_atomic(output, &text)
            .with_context(|| format!("cannot write `{}`", output.display()))?;
        seqit_data::write_file_atomic(
            &with_suffix(output, ".stats.json"),
            &serde_json::to_vec_pretty(&stats)?,
        )?;
        Ok(stats)
    }

    /// Runs the rounds of one item.
    async fn chain(&self, item: &SourceItem, depth: u32, fingerprint: &str) -> Result<ChainState> {
        let id = item.id.as_str();
        let seed = self.settings.seed;
        let mut state = ChainState {
            id: item.id.clone(),
            fingerprint: fingerprint.to_string(),
            target_depth: depth,
            rounds: Vec::new(),
        };
        let mut instruction = item.instruction.clone();
        for round in 1..=depth {
            let modes: &[Edit] = if round == 1 {
                &[Edit::Decompose, Edit::Prefix, Edit::Suffix]
            } else {
                &[Edit::Prefix, Edit::Suffix]
            };
            let mode = modes[item_rng(seed, id, round, "seqeval-mode").below(modes.len())];
            let prompt = self.prompts.rewrite(
                mode,
                &instruction,
                item.input.as_deref(),
                // From round 2 the instruction is a chain: ask for a longer one, as the
                // paper's later rounds do.
                round > 1,
                &mut item_rng(seed, id, round, "seqeval-rewrite"),
            );
            let mut done = ChainRound {
                mode,
                raw: Vec::new(),
                instruction: None,
                added_task: None,
            };
            for attempt in 0..self.settings.attempts {
                let raw = self
                    .teacher
                    .ask(
                        prompt.clone(),
                        &self.settings.decoding,
                        attempt,
                        Asked {
                            id,
                            iteration: round,
                            purpose: "seqeval-rewrite",
                        },
                    )
                    .await?;
                done.instruction = extract_new_instruction(&raw);
                done.added_task = extract_added_task(&raw);
                done.raw.push(raw);
                if done.succeeded() {
                    break;
                }
            }
            let next = done.succeeded().then(|| done.instruction.clone()).flatten();
            state.rounds.push(done);
            match next {
                Some(next) => instruction = next,
                None => break,
            }
        }
        Ok(state)
    }
}

/// Parses `--depths` (`1-4` or `1,2,3,4`).
pub fn parse_depths(text: &str) -> Result<Vec<u32>> {
    let parse = |s: &str| -> Result<u32> {
        s.trim()
            .parse()
            .with_context(|| format!("`{s}` in `--depths {text}` is not a whole number"))
    };
    let depths = match text.split_once('-') {
        Some((lo, hi)) => (parse(lo)?..=parse(hi)?).collect(),
        None => text.split(',').map(parse).collect::<Result<Vec<_>>>()?,
    };
    if depths.is_empty() {
        bail!("`--depths {text}` names no depth");
    }
    Ok(depths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_follow_the_shares_and_the_seed() {
        let depths = assign_depths(805, &[1, 2, 3, 4], &[10.0, 20.0, 30.0, 40.0], 7);
        let count = |d| depths.iter().filter(|&&x| x == d).count();
        // The paper's counts for its 805 prompts.
        assert_eq!(
            [count(1), count(2), count(3), count(4)],
            [81, 161, 242, 321]
        );
        assert_eq!(depth_counts(10, &[1.0, 1.0, 1.0]), [3, 3, 4]);
        assert_eq!(depth_counts(12, &[10.0, 20.0, 30.0, 40.0]), [1, 2, 4, 5]);
        assert_eq!(depth_counts(0, &[1.0, 2.0]), [0, 0]);
        assert_eq!(
            depths,
            assign_depths(805, &[1, 2, 3, 4], &[10.0, 20.0, 30.0, 40.0], 7)
        );
        assert_ne!(
            depths,
            assign_depths(805, &[1, 2, 3, 4], &[10.0, 20.0, 30.0, 40.0], 8)
        );
        assert_eq!(parse_depths("1-4").unwrap(), [1, 2, 3, 4]);
        assert_eq!(parse_depths("2,3").unwrap(), [2, 3]);
        assert!(parse_depths("x-4").is_err());
    }

    #[test]
    fn sub_steps_follow_the_modes() {
        let item = SourceItem {
            id: "7".into(),
            system: None,
            instruction: "Write a poem.".into(),
            input: None,
            response: None,
        };
        let round = |mode, new: &str, added: &str| ChainRound {
            mode,
            raw: vec![String::new()],
            instruction: Some(new.into()),
            added_task: Some(added.into()),
        };
        let mut state = ChainState {
            id: "7".into(),
            fingerprint: String::new(),
            target_depth: 3,
            rounds: vec![
                round(Edit::Suffix, "Poem, then explain.", "Explain it."),
                round(
                    Edit::Prefix,
                    "Pick a theme, poem, explain.",
                    "Pick a theme.",
                ),
            ],
        };
        state.rounds.push(ChainRound {
            instruction: None,
            ..round(Edit::Suffix, "", "")
        });
        // A round without the task it added ends the chain too: no empty sub-step.
        let mut without_task = state.clone();
        without_task.rounds[1].added_task = None;
        let short = without_task.record(&item).unwrap();
        assert_eq!(short.sub_steps, ["Write a poem.", "Explain it."]);
        assert_eq!(short.iteration, 1);
        let record = state.record(&item).unwrap();
        assert_eq!(record.iteration, 2);
        assert_eq!(record.modes, ["suffix", "prefix"]);
        assert_eq!(
            record.sub_steps,
            ["Pick a theme.", "Write a poem.", "Explain it."]
        );
        assert_eq!(record.instruction, "Pick a theme, poem, explain.");
        let value = serde_json::to_value(&record).unwrap();
        let mut keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "id",
                "input",
                "instruction",
                "iteration",
                "modes",
                "original_instruction",
                "sub_steps"
            ]
        );
    }
}
