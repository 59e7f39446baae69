//! The flags of `seqit data` that `seqit run` also gives: how inputs are read
//! ([`ReadFlags`]) and a mixture ([`MixOptions`]), as typed structs that clap parses and
//! that turn back into a command line (`seqit_core::flags::ToFlags`).

use std::path::PathBuf;

use serde::Serialize;

use crate::{Error, MixSettings, ReadOptions, Result, Schema, DEFAULT_MAX_LINE_BYTES};

/// How `seqit data` reads its input files.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReadFlags {
    /// Record format of the input; detected from the file name and first record when
    /// omitted.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Schema::NAMES))]
    pub format: Option<String>,
    /// Longest line accepted in JSON Lines and text files, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
}

impl ReadFlags {
    /// The reader's options, checked.
    pub fn options(&self) -> Result<ReadOptions> {
        if self.max_line_bytes == 0 {
            return Err(Error::Usage("`--max-line-bytes` must be at least 1".into()));
        }
        Ok(ReadOptions {
            schema: parse_schema(self.format.as_deref())?,
            max_line_bytes: self.max_line_bytes,
        })
    }
}

/// A format name given on the command line (`None`: not given).
pub fn parse_schema(name: Option<&str>) -> Result<Option<Schema>> {
    name.map(|n| n.parse::<Schema>().map_err(Error::Usage))
        .transpose()
}

/// `seqit data mix`: datasets mixed by weight, reproducibly for a seed.
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MixOptions {
    /// Sources as `PATH:WEIGHT` (weight 1 when omitted); weights are relative shares.
    /// Positional, so not a flag to give back: callers put them first.
    #[arg(required = true)]
    #[serde(skip)]
    pub sources: Vec<String>,
    /// The mixture to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Seed of the sampling and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Records to write (default: as many as possible without repeating a record).
    #[arg(long)]
    pub total: Option<usize>,
    /// Format to write (default: the sources' format, when they share one).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Schema::NAMES))]
    pub to: Option<String>,
    /// How the sources are read.
    #[command(flatten)]
    #[serde(flatten)]
    pub read: ReadFlags,
}

impl MixOptions {
    /// The mixture's settings, every source and format parsed.
    pub fn settings(&self) -> Result<MixSettings> {
        Ok(MixSettings {
            sources: self
                .sources
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_>>()?,
            total: self.total,
            seed: self.seed,
            read: self.read.options()?,
            to: parse_schema(self.to.as_deref())?,
            output: self.output.clone(),
        })
    }
}
