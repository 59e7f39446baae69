//! Experiment configs, the stage graph, manifests and resume: `seqit run CONFIG.toml`.
//!
//! [`config::load`] parses and checks a TOML experiment (every problem reported with
//! the file, line and key path before any work starts); [`plan::plan`] turns it into
//! stages (seed data → augment (SIT + IT control) → mixture → training runs →
//! SeqEval build → evaluations → report); [`runner::run`] runs them, each stage's
//! subcommand as a child process of the same binary that dies with the runner, and
//! keeps `RUN_DIR/<stage>/manifest.json` (config slice, input hashes, seqit version,
//! status, timings) so that a re-run skips finished stages, resumes interrupted ones
//! and re-runs a stage whose config slice or inputs changed, with its dependents.
//!
//! At scale the same graph drives outside programs: a training run with `handoff` and
//! `launch` writes a recipe and runs an external trainer ([`supervise`]), and a model
//! with `serve` is served on loopback by its own command while the stages that query it
//! run ([`servers`]); neither outlives the runner.

pub mod config;
pub mod manifest;
pub mod plan;
pub mod runner;
pub mod servers;
pub mod supervise;

pub use config::{load, ConfigError, ConfigErrors, Experiment};
pub use runner::{run, Decision, Options, Summary};
pub use supervise::supervise;
