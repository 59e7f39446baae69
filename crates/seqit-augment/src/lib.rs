//! Seq-Instruct augmentation and SeqEval construction.
//!
//! * [`Edit`] / [`parse_option`] — the four edits (A decompose, B prefix, C suffix,
//!   D keep) and the rules that read the teacher's choice.
//! * [`extract_new_instruction`] and friends — results out of the teacher's text.
//! * [`PromptSet`] — the versioned prompt files (`prompts/seq-instruct/v2/`, or a user
//!   directory) and the requests built from them, few-shot examples shuffled by a
//!   seeded RNG.
//! * [`Augmenter`] — the Seq-Instruct pipeline over a dataset, with the IT control,
//!   provenance, a resumable state journal and [`AugmentStats`].
//! * [`VerifiedAugmenter`] — verified SIT data (opt-in, beyond the paper): K seeded
//!   teacher samples per program-checked chain, the first that passes every step kept.
//! * [`SeqEvalBuilder`] — SeqEval sets: prompts rewritten to depths 1–4, with modes and
//!   sub-steps.
//! * [`augment()`], [`build_seqeval`], [`synthesize_seqeval`] — the whole jobs behind
//!   `seqit augment` and `seqit seqeval build|synth`, the teacher opened from
//!   [`TeacherSettings`]: settings in, summaries out, nothing printed. Their settings
//!   ([`AugmentOptions`], [`SeqevalBuildOptions`], [`SeqevalSynthOptions`]) are what
//!   clap parses and what `seqit run` turns back into flags.

#![deny(missing_docs)]

mod augment;
mod extract;
mod item;
mod job;
mod option;
mod prompts;
mod seqeval;
mod settings;
mod state;
mod stats;
mod teacher;
mod verified;

pub use augment::{
    paper_decoding, read_records, Answer, AugmentOutcome, AugmentPaths, AugmentSettings, Augmenter,
    ItemState, RewriteAttempt, Round, SplitStep, PROVENANCE_KEY,
};
pub use extract::{
    extract_added_task, extract_new_instruction, extract_split, extract_verdict, ADDED_TASK_MARKER,
    END_MARKER, NEW_INSTRUCTION_MARKER,
};
pub use item::{user_turn, SourceItem};
pub use job::{
    augment, build_seqeval, synthesize_seqeval, AugmentJob, AugmentReport, SeqEvalJob,
    SeqEvalReport, SynthJob, SynthReport,
};
pub use option::{parse_option, Edit, ParsedOption, Rule};
pub use prompts::{PromptSet, Stage, CLASSIFY_SHOTS, PROMPT_FILES, REWRITE_SHOTS};
pub use seqit_core::progress::{Progress, Silent};
pub use settings::{AugmentOptions, InputSettings, SeqevalBuildOptions, SeqevalSynthOptions};
pub use stats::{AugmentStats, IterationStats, Lengths, PaperShares, PAPER_ALPACA, PAPER_FLAN};
pub use teacher::{item_rng, Asked, Teacher, TeacherInfo, TeacherSettings};
pub use verified::{
    DepthYield, VerifiedAugmenter, VerifiedState, VerifiedTry, VerifyOutcome, VerifySettings,
    VerifyStats,
};

pub use seqeval::{
    assign_depths, depth_counts, parse_depths, ChainRound, ChainState, SeqEvalBuilder,
    SeqEvalRecord, SeqEvalSettings, SeqEvalStats,
};
