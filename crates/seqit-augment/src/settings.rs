//! The settings of `seqit augment`, `seqit seqeval build` and `seqit seqeval synth` as
//! typed structs that clap parses, that `seqit run` fills and turns back into flags
//! ([`seqit_core::flags::to_flags`]), and that resolve into the jobs they describe.

use std::path::PathBuf;

use anyhow::{bail, Result};
use seqit_data::Schema;
use seqit_llm::Switch;
use seqit_verify::SynthSettings;
use serde::Serialize;

use crate::job::{AugmentJob, SeqEvalJob, SynthJob};
use crate::{parse_depths, AugmentPaths, AugmentSettings, SeqEvalSettings, TeacherSettings};

/// The data a teacher job reads, and its format.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InputSettings {
    /// The data to read (JSON or JSON Lines; `seqit seqeval build` also reads a prompt
    /// list, one per line of a `.txt` file).
    #[arg(long)]
    pub input: PathBuf,
    /// The input's format when it cannot be detected (alpaca, sharegpt, messages, flan,
    /// alpaca-eval, ...).
    #[arg(long)]
    #[serde(serialize_with = "seqit_core::flags::as_optional_text")]
    pub input_format: Option<Schema>,
}

/// `seqit augment`: Seq-Instruct over a dataset with the IT control, or verified
/// answers to program-checked chains.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AugmentOptions {
    /// Data to augment: Alpaca, FlanCoT, ShareGPT or `messages` (JSON/JSONL).
    #[command(flatten)]
    #[serde(flatten)]
    pub read: InputSettings,
    /// The SIT data to write. Next to it: `.state.jsonl` (resume and iteration state)
    /// and `.stats.json`.
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the IT control here: the same items, answered for their original
    /// instructions (same ids and order).
    #[arg(long)]
    pub it_output: Option<PathBuf>,
    /// Output format: alpaca, messages or sharegpt (provenance is added as a field).
    #[arg(long, default_value = "alpaca")]
    #[serde(serialize_with = "seqit_core::flags::as_text")]
    pub format: Schema,
    /// Rounds of classify + rewrite. A later run with more continues from this one.
    #[arg(long, default_value_t = 2)]
    pub iterations: u32,
    /// Step 0: let the teacher split each prompt into instruction and input first
    /// (greedy), for data that mixes them (FlanCoT).
    #[arg(long)]
    pub split: bool,
    /// Refinement check: ask the teacher whether a rewrite lost information and retry
    /// up to this many times (0: no check).
    #[arg(long, default_value_t = 0)]
    pub refine: u32,
    /// Structured outputs: constrain the teacher's classification, rewrite, split and
    /// refinement replies to the formats the parsers read (`*_format` in the prompt
    /// set). `off` sends the paper's free-text prompts alone (for fidelity studies).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub structured: Switch,
    /// Verified SIT data (beyond the paper): `--input` is a set of program-checked
    /// chains (`seqit seqeval synth`); ask the teacher up to this many seeded samples
    /// per chain, keep the first that passes every step, drop chains with none. No
    /// rewriting: the chains already are sequential instructions.
    #[arg(long, value_name = "TRIES", conflicts_with_all = ["it_output", "split", "refine", "iterations"])]
    pub verify: Option<u32>,
    /// The teacher model, its endpoint, cache and decoding.
    #[command(flatten)]
    #[serde(flatten)]
    pub teacher: TeacherSettings,
}

impl AugmentOptions {
    /// The job these settings describe, the decoding checked.
    pub fn job(&self) -> Result<AugmentJob> {
        Ok(AugmentJob {
            input: self.read.input.clone(),
            input_format: self.read.input_format,
            paths: AugmentPaths {
                output: self.output.clone(),
                it_output: self.it_output.clone(),
                schema: self.format,
            },
            settings: AugmentSettings {
                iterations: self.iterations,
                seed: self.teacher.seed,
                decoding: self.teacher.decoding()?,
                split: self.split,
                refine: self.refine,
                structured: self.structured.is_on(),
            },
            verify: self.verify,
            teacher: self.teacher.clone(),
        })
    }
}

/// `seqit seqeval build`: a SeqEval set from a prompt set, each prompt rewritten into a
/// sequential instruction of 1-4 steps by the teacher.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SeqevalBuildOptions {
    /// Base prompts: a prompt list (.txt), alpaca_eval, Alpaca or chat data.
    #[command(flatten)]
    #[serde(flatten)]
    pub read: InputSettings,
    /// SeqEval JSONL to write (`.state.jsonl` and `.stats.json` go next to it).
    #[arg(long)]
    pub output: PathBuf,
    /// Depths to place prompts at: a range `1-4` or a list `1,2,3,4`.
    #[arg(long, default_value = "1-4")]
    pub depths: String,
    /// Share of prompts per depth, one per depth.
    #[arg(long, value_delimiter = ',', default_value = "10,20,30,40")]
    pub shares: Vec<f64>,
    /// Tries per round when a rewrite cannot be read.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    /// Constrain the teacher's rewrites to the format the parser reads (the prompt
    /// set's `rewrite_format`); `off`: free text, as the paper.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub structured: Switch,
    /// The teacher model, its endpoint, cache and decoding.
    #[command(flatten)]
    #[serde(flatten)]
    pub teacher: TeacherSettings,
}

impl SeqevalBuildOptions {
    /// The job these settings describe; one share per depth is required.
    pub fn job(&self) -> Result<SeqEvalJob> {
        let depths = parse_depths(&self.depths)?;
        if depths.len() != self.shares.len() {
            bail!(
                "`--depths {}` names {} depths but `--shares` gives {} shares",
                self.depths,
                depths.len(),
                self.shares.len()
            );
        }
        Ok(SeqEvalJob {
            input: self.read.input.clone(),
            input_format: self.read.input_format,
            output: self.output.clone(),
            settings: SeqEvalSettings {
                depths,
                shares: self.shares.clone(),
                seed: self.teacher.seed,
                decoding: self.teacher.decoding()?,
                attempts: self.attempts,
            },
            structured: self.structured.is_on(),
            teacher: self.teacher.clone(),
        })
    }
}

/// `seqit seqeval synth`: a verifiable SeqEval set, chains whose every step a program
/// checks.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SeqevalSynthOptions {
    /// JSONL to write (SeqEval records plus each step's check as data).
    #[arg(long)]
    pub output: PathBuf,
    /// Chain depths: a range `1-4` or a list `1,2,4`.
    #[arg(long, default_value = "1-4")]
    pub depths: String,
    /// Items per depth.
    #[arg(long, default_value_t = 100)]
    pub per_depth: usize,
    /// Seed of the chains' choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Step templates (TOML like `prompts/seqeval-verifiable/v1/steps.toml`); default:
    /// the built-in ones.
    #[arg(long)]
    pub templates: Option<PathBuf>,
}

impl SeqevalSynthOptions {
    /// The job these settings describe.
    pub fn job(&self) -> Result<SynthJob> {
        Ok(SynthJob {
            output: self.output.clone(),
            settings: SynthSettings {
                depths: parse_depths(&self.depths)?
                    .into_iter()
                    .map(|d| d as usize)
                    .collect(),
                per_depth: self.per_depth,
                seed: self.seed,
            },
            templates: self.templates.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use seqit_core::flags::ToFlags;

    use super::*;

    #[derive(Parser)]
    enum Command {
        Augment(AugmentOptions),
        Build(SeqevalBuildOptions),
    }

    fn parse(name: &str, flags: &[String]) -> Command {
        let argv = ["seqit", name].into_iter().map(String::from);
        Command::try_parse_from(argv.chain(flags.iter().cloned()))
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
    }

    fn teacher() -> TeacherSettings {
        let Command::Build(options) = parse(
            "build",
            &[
                "--input",
                "p.txt",
                "--output",
                "o.jsonl",
                "--teacher-endpoint",
                "http://t/v1",
                "--teacher-model",
                "teacher",
                "--api-key-env",
                "KEY",
                "--concurrency",
                "3",
                "--timeout",
                "9.5",
                "--max-retries",
                "1",
                "--local-batch",
                "2",
                "--cache",
                "c.sqlite",
                "--share-cache-across-endpoints",
                "--max-response-bytes",
                "1000",
                "--prices",
                "p.toml",
                "--prompts",
                "prompts",
                "--request-log",
                "log.jsonl",
                "--seed",
                "5",
                "--max-tokens",
                "64",
                "--temperature",
                "0.5",
                "--top-p",
                "0.8",
                "--top-k",
                "7",
            ]
            .map(String::from),
        ) else {
            unreachable!()
        };
        options.teacher
    }

    #[test]
    fn every_setting_survives_the_command_line() {
        let augment = AugmentOptions {
            read: InputSettings {
                input: "seed.jsonl".into(),
                input_format: Some(Schema::FlanCot),
            },
            output: "sit.jsonl".into(),
            it_output: Some("it.jsonl".into()),
            format: Schema::Messages,
            iterations: 3,
            split: true,
            refine: 2,
            structured: Switch::Off,
            verify: None,
            teacher: teacher(),
        };
        let Command::Augment(parsed) = parse("augment", &augment.to_flags()) else {
            panic!("not augment")
        };
        assert_eq!(parsed, augment);
        let build = SeqevalBuildOptions {
            read: InputSettings {
                input: "prompts.txt".into(),
                input_format: None,
            },
            output: "seqeval.jsonl".into(),
            depths: "1,3".into(),
            shares: vec![1.0, 2.5],
            attempts: 4,
            structured: Switch::On,
            teacher: teacher(),
        };
        let Command::Build(parsed) = parse("build", &build.to_flags()) else {
            panic!("not build")
        };
        assert_eq!(parsed, build);
    }

    #[test]
    fn depths_and_shares_must_agree() {
        let Command::Build(mut options) = parse(
            "build",
            &["--input", "p.txt", "--output", "o.jsonl"].map(String::from),
        ) else {
            unreachable!()
        };
        assert_eq!(options.job().unwrap().settings.depths, [1, 2, 3, 4]);
        options.shares = vec![1.0];
        let err = options.job().unwrap_err().to_string();
        assert!(
            err.contains("names 4 depths") && err.contains("1 shares"),
            "{err}"
        );
    }
}
