//! Shared vocabulary of seqit: chat messages, sampling settings and generation results.
//!
//! Every stage (engine, server, client, augment, train, eval) speaks in these types, so
//! they live in a crate with no heavy dependencies. The main types are [`ChatMessage`],
//! [`SamplingParams`] (with its structured-output [`Constraint`]), [`Completion`] and
//! [`FinishReason`]. [`durable`] is the one way
//! seqit replaces files and directories (temporary name, fsync, rename, fsync of the
//! parent): outputs, manifests and checkpoints all go through it; [`journal`] is the one
//! append-only record of finished work that long jobs resume from, and [`progress`] is how
//! jobs report what they do without printing. [`json::kind`] names a JSON value's kind in
//! error messages.

#![deny(missing_docs)]

mod chat;
mod constraint;
pub mod durable;
mod file_error;
pub mod flags;
mod generation;
pub mod journal;
pub mod json;
pub mod progress;
mod sampling;

pub use chat::{ChatMessage, Role};
pub use constraint::{escape_regex, Constraint, TokenLogprob, TopLogprob};
pub use file_error::FileError;
pub use generation::{Completion, FinishReason, Prompt};
pub use sampling::{SamplingParams, SamplingSettings, MAX_TOP_LOGPROBS};

/// Name under which seqit knows its embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF).
pub const DEFAULT_MODEL_NAME: &str = "smollm2-135m";

/// Environment variable that overrides where the packaged assets are installed.
pub const ASSETS_ENV: &str = "SEQIT_ASSETS";
