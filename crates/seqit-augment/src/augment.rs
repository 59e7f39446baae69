//! The Seq-Instruct pipeline over a dataset: per item and iteration, classify
//! (A/B/C/D), rewrite A/B/C, then answer the final instruction; D items are frozen and
//! never sent again. Optionally a step-0 instruction/input split, a refinement check
//! after each rewrite, and the IT control (answers to the original instructions).
//!
//! Items are independent, so each item runs its whole chain while other items run
//! theirs (up to `concurrency` at once); the result is the same as running round by
//! round. Only the final instruction of a chain is answered: the classification never
//! looks at responses, so answers to intermediate instructions would be overwritten
//! unused. An item that never gets a rewrite is answered with its original
//! instruction, the same request as its IT control, so IT and SIT differ only in the
//! instruction side.
//!
//! Every finished item is appended to a state journal (`OUT.state.jsonl`), which is
//! what makes a killed run resume and what lets a later run with more (or fewer)
//! `iterations` continue from the rounds already done. Outputs are written atomically
//! once every item is finished.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_data::{Record, Schema, WriteOptions, Writer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::extract::{extract_added_task, extract_new_instruction, extract_split, extract_verdict};
use crate::item::{output_id, user_turn, SourceItem};
use crate::option::{parse_option, Edit, Rule};
use crate::prompts::{PromptSet, Stage};
use crate::state::{
    check_unique_ids, compact, journaled_item, open_item_states, run_journaled,
    settings_fingerprint,
};
use crate::stats::{AugmentStats, StatsInput};
use crate::teacher::{item_rng, Asked, Teacher};
use seqit_core::journal::with_suffix;
use seqit_core::progress::Progress;

/// Metadata key of the provenance object in every output record.
pub const PROVENANCE_KEY: &str = "provenance";

/// Settings of a run that decide its results (all of them are in the fingerprint that
/// keeps a resumed run from mixing in items made with other settings, except
/// `iterations`, which may change between runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentSettings {
    /// Rounds of classify-and-rewrite per item (the paper: 2); an item classified D stops
    /// early.
    pub iterations: u32,
    /// Seed of the per-item RNGs ([`item_rng`](crate::item_rng)) that pick and order the
    /// prompts' few-shot examples; the teacher's sampling seed is `decoding.seed`.
    pub seed: u64,
    /// Teacher decoding for classification, rewrites and answers.
    pub decoding: SamplingParams,
    /// Step 0: split each prompt into instruction and input first (greedy decoding).
    pub split: bool,
    /// Refinement check: retries of a rewrite the teacher judges to have lost
    /// information (0 = no check).
    pub refine: u32,
    /// Structured outputs: each classification, rewrite, split and refinement reply is
    /// constrained to the format its parser reads (the prompt set's `*_format`
    /// regular expressions). Off: the paper's free-text prompts and rule parser alone.
    #[serde(default = "structured_default")]
    pub structured: bool,
}

fn structured_default() -> bool {
    true
}

impl AugmentSettings {
    /// The paper's decoding (temperature 1.0, top-p 0.9, top-k 50, 2048 new tokens)
    /// and its two rounds.
    pub fn paper(seed: u64) -> Self {
        Self {
            iterations: 2,
            seed,
            decoding: paper_decoding(seed),
            split: false,
            refine: 0,
            structured: true,
        }
    }
}

/// Temperature 1.0, top-p 0.9, top-k 50, up to 2048 new tokens.
pub fn paper_decoding(seed: u64) -> SamplingParams {
    SamplingParams {
        max_tokens: 2048,
        temperature: 1.0,
        top_p: 0.9,
        top_k: 50,
        seed,
        ..SamplingParams::default()
    }
}

/// Where a run reads and writes.
#[derive(Debug, Clone)]
pub struct AugmentPaths {
    /// The SIT output; its format comes from `schema` and its extension.
    pub output: PathBuf,
    /// The IT control output, if wanted.
    pub it_output: Option<PathBuf>,
    /// Format both outputs are written in.
    pub schema: Schema,
}

impl AugmentPaths {
    /// The state journal that lets a killed run resume: `OUTPUT.state.jsonl`.
    pub fn state(&self) -> PathBuf {
        with_suffix(&self.output, ".state.jsonl")
    }
    /// Where the run's [`AugmentStats`](crate::AugmentStats) go: `OUTPUT.stats.json`.
    pub fn stats(&self) -> PathBuf {
        with_suffix(&self.output, ".stats.json")
    }
}

/// The step-0 split of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitStep {
    /// The teacher's raw answer.
    pub raw: String,
    /// No `#Instruction#` part could be read: the prompt was kept whole.
    pub failed: bool,
}

/// One attempt at rewriting (several when the refinement check rejects some).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewriteAttempt {
    /// The teacher's raw rewrite text.
    pub raw: String,
    /// The extracted new instruction (`None`: unparseable).
    pub instruction: Option<String>,
    /// The task the rewrite added, from its `#Added Task#` line (`None`: no such line).
    pub added_task: Option<String>,
    /// The refinement check's raw answer and verdict (`true`: nothing lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The check's verdict: `false` rejects the rewrite; `None` (not checked, or
    /// unreadable) does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_everything: Option<bool>,
}

/// One iteration of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// The round's number, from 1.
    pub iteration: u32,
    /// The edit the teacher chose (D when no rule could read its answer).
    pub option: Edit,
    /// Which parsing rule found the option (`default`: none did; counted as a failure).
    pub rule: Rule,
    /// The teacher's raw classification text.
    pub classification: String,
    /// Rewrite attempts in order, the accepted one last; empty for D.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<RewriteAttempt>,
    /// No rewrite could be used: the instruction stayed as it was.
    pub rewrite_failed: bool,
    /// The added sub-task, from the `#Added Task#` line.
    pub added_task: Option<String>,
    /// The instruction after this round.
    pub instruction: String,
}

/// An answer of the teacher and the instruction it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The instruction answered (sent with the item's system prompt and input).
    pub instruction: String,
    /// The teacher's answer.
    pub text: String,
}

/// Everything done for one item so far (one line of the state journal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    /// The source item's id ([`SourceItem::id`](crate::SourceItem::id)).
    pub id: String,
    /// The settings fingerprint the item was made with.
    pub fingerprint: String,
    /// Step 0, when the run splits prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitStep>,
    /// Instruction and input before round 1 (after the split, if any).
    pub base_instruction: String,
    /// The input sent with every instruction of the item.
    pub input: Option<String>,
    /// Rounds done, in order; fewer than `iterations` once a round chose D.
    pub rounds: Vec<Round>,
    /// The teacher's answer to the final instruction (the SIT target); asked again when the
    /// instruction changed since.
    pub response: Option<Answer>,
    /// The teacher's answer to `base_instruction`, for the IT control output.
    pub it_response: Option<Answer>,
}

journaled_item!(ItemState);

impl ItemState {
    fn new(item: &SourceItem, fingerprint: &str) -> Self {
        Self {
            id: item.id.clone(),
            fingerprint: fingerprint.to_string(),
            split: None,
            base_instruction: item.instruction.clone(),
            input: item.input.clone(),
            rounds: Vec::new(),
            response: None,
            it_response: None,
        }
    }

    /// The instruction after the last round.
    pub fn instruction(&self) -> &str {
        self.rounds
            .last()
            .map_or(&self.base_instruction, |r| &r.instruction)
    }

    /// Classified D: never sent again.
    pub fn frozen(&self) -> bool {
        self.rounds.last().is_some_and(|r| r.option == Edit::Keep)
    }

    /// Keeps the first `iterations` rounds (a run asking for fewer than were done).
    fn truncate(&mut self, iterations: u32) {
        self.rounds.truncate(iterations as usize);
    }

    fn is_done(&self, settings: &AugmentSettings, it_control: bool) -> bool {
        let rounds_done = self.frozen() || self.rounds.len() >= settings.iterations as usize;
        let answered = self
            .response
            .as_ref()
            .is_some_and(|a| a.instruction == self.instruction());
        rounds_done
            && self.rounds.len() <= settings.iterations as usize
            && answered
            && (!it_control || self.it_response.is_some())
            && (!settings.split || self.split.is_some())
    }

    /// Classification answers no rule could read, plus unusable rewrites (and a failed
    /// split).
    pub fn parse_failures(&self) -> u32 {
        let rounds: u32 = self
            .rounds
            .iter()
            .map(|r| u32::from(r.rule == Rule::Default) + u32::from(r.rewrite_failed))
            .sum();
        rounds + u32::from(self.split.as_ref().is_some_and(|s| s.failed))
    }
}

/// The Seq-Instruct pipeline (see the module documentation).
pub struct Augmenter<'a> {
    /// Templates and few-shot examples of the teacher requests.
    pub prompts: &'a PromptSet,
    /// The model that classifies, rewrites and answers.
    pub teacher: &'a Teacher,
    /// What decides the results.
    pub settings: AugmentSettings,
    /// Items worked on at once.
    pub concurrency: usize,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct AugmentOutcome {
    /// The run's statistics, also written to [`AugmentPaths::stats`].
    pub stats: AugmentStats,
    /// Items finished by an earlier run and reused.
    pub resumed: usize,
}

impl Augmenter<'_> {
    /// Hash of everything that decides results, except the number of iterations.
    pub fn fingerprint(&self) -> String {
        settings_fingerprint(&json!({
            "seed": self.settings.seed,
            "decoding": self.settings.decoding,
            "split": self.settings.split,
            "refine": self.settings.refine,
            "structured": self.settings.structured,
            "prompts": self.prompts.hash(),
            "teacher": self.teacher.info().model,
        }))
    }

    /// Augments `records` (read from `source_schema` data) into `paths`.
    pub async fn run(
        &self,
        records: &[Record],
        source_schema: Schema,
        paths: &AugmentPaths,
        progress: &dyn Progress,
    ) -> Result<AugmentOutcome> {
        if self.settings.iterations == 0 {
            bail!("`iterations` must be at least 1");
        }
        if self.settings.structured {
            // A prompt set without formats fails here, not after the first item.
            for stage in Stage::ALL {
                self.prompts
                    .format(stage, self.settings.decoding.max_tokens)?;
            }
        }
        let items = records
            .iter()
            .enumerate()
            .map(|(i, r)| SourceItem::from_record(i, r))
            .collect::<Result<Vec<_>>>()?;
        check_unique_ids(items.iter().map(|i| i.id.as_str()), "records")?;
        let fingerprint = self.fingerprint();
        let it_control = paths.it_output.is_some();
        let (journal, mut states) = open_item_states::<ItemState>(&paths.state(), &fingerprint)?;
        let mut resumed = 0;
        let mut pending = Vec::new();
        for item in &items {
            match states.get_mut(&item.id) {
                Some(state) => {
                    state.truncate(self.settings.iterations);
                    if state.is_done(&self.settings, it_control) {
                        resumed += 1;
                    } else {
                        pending.push((item, state.clone()));
                    }
                }
                None => pending.push((item, ItemState::new(item, &fingerprint))),
            }
        }
        progress.start("augment", items.len() as u64, resumed as u64);
        run_journaled(
            &journal,
            pending,
            self.concurrency,
            progress,
            |(item, state)| self.advance(item, state, it_control),
            |state: ItemState| {
                states.insert(state.id.clone(), state);
            },
        )
        .await?;
        let ordered: Vec<&ItemState> = items.iter().map(|i| &states[&i.id]).collect();
        self.write_outputs(records, &items, &ordered, paths)?;
        compact(&journal, &ordered)?;
        let stats = AugmentStats::compute(&StatsInput {
            items: &items,
            states: &ordered,
            iterations: self.settings.iterations,
            source_schema,
            ledger: self.teacher.client().ledger(),
        });
        let text = serde_json::to_vec_pretty(&stats)?;
        seqit_data::write_file_atomic(&paths.stats(), &text)?;
        Ok(AugmentOutcome { stats, resumed })
    }

    /// Runs what is missing of one item's chain.
    async fn advance(
        &self,
        item: &SourceItem,
        mut state: ItemState,
        it_control: bool,
    ) -> Result<ItemState> {
        let id = item.id.as_str();
        if self.settings.split && state.split.is_none() {
            let raw = self
                .teacher
                .ask(
                    self.prompts
                        .split(&user_turn(&item.instruction, item.input.as_deref())),
                    &self.params(Stage::Split, 0.0)?,
                    0,
                    Asked {
                        id,
                        iteration: 0,
                        purpose: "split",
                    },
                )
                .await?;
            let parsed = extract_split(&raw);
            if let Some((instruction, input)) = &parsed {
                state.base_instruction = instruction.clone();
                state.input = input.clone();
            }
            state.split = Some(SplitStep {
                raw,
                failed: parsed.is_none(),
            });
        }
        while !state.frozen() && state.rounds.len() < self.settings.iterations as usize {
            let iteration = state.rounds.len() as u32 + 1;
            let round = self
                .round(id, iteration, state.instruction(), state.input.as_deref())
                .await?;
            state.rounds.push(round);
        }
        let input = state.input.clone();
        let wanted = state.instruction().to_string();
        if state
            .response
            .as_ref()
            .is_none_or(|a| a.instruction != wanted)
        {
            state.response = Some(
                self.answer(item, &wanted, input.as_deref(), "answer")
                    .await?,
            );
        }
        if it_control && state.it_response.is_none() {
            let base = state.base_instruction.clone();
            state.it_response = Some(self.answer(item, &base, input.as_deref(), "answer").await?);
        }
        Ok(state)
    }

    /// Classify, and rewrite unless D.
    async fn round(
        &self,
        id: &str,
        iteration: u32,
        instruction: &str,
        input: Option<&str>,
    ) -> Result<Round> {
        let decoding = &self.settings.decoding;
        let seed = self.settings.seed;
        let mut rng = item_rng(seed, id, iteration, "classify");
        let classification = self
            .teacher
            .ask(
                self.prompts.classify(instruction, input, &mut rng),
                &self.params(Stage::Classify, decoding.temperature)?,
                0,
                Asked {
                    id,
                    iteration,
                    purpose: "classify",
                },
            )
            .await?;
        let parsed = parse_option(&classification);
        let mut round = Round {
            iteration,
            option: parsed.edit,
            rule: parsed.rule,
            classification,
            rewrites: Vec::new(),
            rewrite_failed: false,
            added_task: None,
            instruction: instruction.to_string(),
        };
        if parsed.edit == Edit::Keep {
            return Ok(round);
        }
        let prompt = self.prompts.rewrite(
            parsed.edit,
            instruction,
            input,
            false,
            &mut item_rng(seed, id, iteration, "rewrite"),
        );
        let rewrite_params = SamplingParams {
            constraint: if self.settings.structured {
                Some(
                    self.prompts
                        .rewrite_format(parsed.edit, instruction, decoding.max_tokens)?,
                )
            } else {
                None
            },
            ..decoding.clone()
        };
        for attempt in 0..=self.settings.refine {
            let raw = self
                .teacher
                .ask(
                    prompt.clone(),
                    &rewrite_params,
                    attempt,
                    Asked {
                        id,
                        iteration,
                        purpose: "rewrite",
                    },
                )
                .await?;
            let mut rewrite = RewriteAttempt {
                instruction: extract_new_instruction(&raw),
                added_task: extract_added_task(&raw),
                raw,
                check: None,
                kept_everything: None,
            };
            if let (Some(new), true) = (&rewrite.instruction, self.settings.refine > 0) {
                let check = self
                    .teacher
                    .ask(
                        self.prompts.refine(instruction, input, new),
                        &self.params(Stage::Refine, 0.0)?,
                        0,
                        Asked {
                            id,
                            iteration,
                            purpose: "refine",
                        },
                    )
                    .await?;
                rewrite.kept_everything = extract_verdict(&check);
                rewrite.check = Some(check);
            }
            // An unreadable verdict does not reject a rewrite.
            let accepted = rewrite.instruction.is_some() && rewrite.kept_everything != Some(false);
            if accepted {
                round.instruction = rewrite.instruction.clone().expect("checked");
                round.added_task = rewrite.added_task.clone();
            }
            round.rewrites.push(rewrite);
            if accepted {
                return Ok(round);
            }
        }
        round.rewrite_failed = true;
        Ok(round)
    }

    /// The teacher's decoding for `stage` at `temperature`, constrained to the stage's
    /// format in structured mode.
    fn params(&self, stage: Stage, temperature: f64) -> Result<SamplingParams> {
        let decoding = &self.settings.decoding;
        let constraint = if self.settings.structured {
            Some(self.prompts.format(stage, decoding.max_tokens)?)
        } else {
            None
        };
        Ok(SamplingParams {
            temperature,
            constraint,
            ..decoding.clone()
        })
    }

    /// The teacher's answer to `instruction` (with the item's system prompt and input).
    async fn answer(
        &self,
        item: &SourceItem,
        instruction: &str,
        input: Option<&str>,
        purpose: &str,
    ) -> Result<Answer> {
        let mut messages = Vec::new();
        if let Some(system) = &item.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(user_turn(instruction, input)));
        let text = self
            .teacher
            .ask(
                Prompt::Chat(messages),
                &self.settings.decoding,
                0,
                Asked {
                    id: &item.id,
                    iteration: 0,
                    purpose,
                },
            )
            .await?;
        Ok(Answer {
            instruction: instruction.to_string(),
            text,
        })
    }

    fn write_outputs(
        &self,
        records: &[Record],
        items: &[SourceItem],
        states: &[&ItemState],
        paths: &AugmentPaths,
    ) -> Result<()> {
        let options = WriteOptions::new(paths.schema);
        let mut sit = Writer::create(&paths.output, &options)?;
        let mut it = paths
            .it_output
            .as_ref()
            .map(|p| Writer::create(p, &options))
            .transpose()?;
        for (index, ((record, item), state)) in records.iter().zip(items).zip(states).enumerate() {
            let response = state
                .response
                .as_ref()
                .expect("finished items are answered");
            sit.write(&self.output_record(
                record,
                index,
                item,
                state,
                state.instruction(),
                &response.text,
                true,
            ))?;
            if let Some(it) = &mut it {
                let answer = state.it_response.as_ref().expect("IT answers were asked");
                it.write(&self.output_record(
                    record,
                    index,
                    item,
                    state,
                    &state.base_instruction,
                    &answer.text,
                    false,
                ))?;
            }
        }
        sit.finish()?;
        if let Some(it) = it {
            it.finish()?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn output_record(
        &self,
        source: &Record,
        index: usize,
        item: &SourceItem,
        state: &ItemState,
        instruction: &str,
        response: &str,
        sit: bool,
    ) -> Record {
        let mut record = Record::exchange(instruction, state.input.as_deref(), Some(response));
        record.id = Some(output_id(source, index));
        record.system = item.system.clone();
        record.metadata = source.metadata.clone();
        record
            .metadata
            .insert(PROVENANCE_KEY.into(), self.provenance(item, state, sit));
        record
    }

    fn provenance(&self, item: &SourceItem, state: &ItemState, sit: bool) -> Value {
        let mut p = Map::new();
        p.insert("variant".into(), json!(if sit { "sit" } else { "it" }));
        p.insert("source_id".into(), json!(item.id));
        p.insert("original_instruction".into(), json!(item.instruction));
        if let Some(input) = &item.input {
            p.insert("original_input".into(), json!(input));
        }
        if let Some(split) = &state.split {
            p.insert("split".into(), json!(split));
        }
        if sit {
            let options: Vec<Edit> = state.rounds.iter().map(|r| r.option).collect();
            p.insert("options".into(), json!(options));
            p.insert("iterations".into(), json!(state.rounds));
            p.insert("parse_failures".into(), json!(state.parse_failures()));
        }
        p.insert("teacher".into(), json!(self.teacher.info()));
        p.insert("decoding".into(), json!(self.settings.decoding));
        p.insert("seed".into(), json!(self.settings.seed));
        p.insert(
            "prompts".into(),
            json!({"version": self.prompts.version(), "hash": self.prompts.hash()}),
        );
        Value::Object(p)
    }
}

/// Reads `path` as the records to augment.
pub fn read_records(path: &Path, schema: Option<Schema>) -> Result<(Schema, Vec<Record>)> {
    let (format, records) =
        seqit_data::read_all(path, &seqit_data::ReadOptions::with_schema(schema)).with_context(
            || format!("cannot read the data to augment from `{}`", path.display()),
        )?;
    Ok((format.schema, records))
}
