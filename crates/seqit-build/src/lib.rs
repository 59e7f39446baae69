//! Manual, task-driven sequential data: the *translate-then-predict* and
//! *caption-then-answer* builders behind `seqit build translate|caption`, and the
//! visual QA source formats they (and `seqit eval vqa`) read.
//!
//! * [`translate`] — an English Alpaca file plus aligned machine translations per
//!   language in, a mixture out in which a seeded selection of items with an input
//!   becomes "first translate the input (given in X) into English, then <task>" with the
//!   target `Translation into English: …` / `Result: …`; or the cross-lingual control.
//! * [`vqa`] — visual QA items ([`vqa::VqaItem`]) read from VQAv2 questions and
//!   annotations joined with COCO captions, or from the easy-VQA package layout, with a
//!   caption per image derived from that image's own answers.
//! * [`caption`] — SIT (`Description: …` then `Answer: …`) and IT (`Answer: …` only)
//!   LLaVA-style conversation records with image paths.
//! * [`prompts`] — the versioned prompt files (`prompts/build/v1/*.toml`, embedded as
//!   defaults, overridable from a directory) and their `{placeholder}` templates.
//!
//! ```
//! use seqit_build::prompts::TranslatePrompts;
//! let prompts = TranslatePrompts::load(None).unwrap();
//! assert_eq!(
//!     prompts.target("Hello.", "Bonjour."),
//!     "Translation into English: Hello.\nResult: Bonjour."
//! );
//! ```
//!
//! [`translate::run`] and [`caption::run`] are the whole jobs behind the commands: they
//! write the outputs atomically, each with its report beside it as
//! `<output>.report.json`, and return the report. Libraries do not print; the CLI
//! reports what the returned summaries say.
#![deny(missing_docs)]

pub mod caption;
mod error;
mod output;
pub mod prompts;
pub mod translate;
pub mod vqa;

pub use error::{BuildError, Result};
