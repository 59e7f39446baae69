//! `seqit data`: validate, convert, stats, mix, dedupe and decontaminate datasets.
//! The work is done by `seqit-data`; this module turns flags into its settings and
//! prints what it returns (results on stdout, notes on stderr).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use seqit_data::{
    DecontaminateOptions, DedupeKey, DedupeOptions, EncodeOptions, FilterPaths, MixOptions,
    ReadFlags, Reader, WriteOptions,
};

use crate::cli::{
    DataCommand, DataConvertArgs, DataDecontaminateArgs, DataDedupeArgs, DataStatsArgs,
    DataValidateArgs,
};
use crate::printer::{note, result};

pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Validate(args) => validate(args),
        DataCommand::Convert(args) => convert(args),
        DataCommand::Stats(args) => stats(args),
        DataCommand::Mix(args) => mix(args),
        DataCommand::Dedupe(args) => dedupe(args),
        DataCommand::Decontaminate(args) => decontaminate(args),
        DataCommand::Show(args) => super::data_show::run(args),
    }
}

fn validate(args: DataValidateArgs) -> Result<()> {
    let options = args.read.options()?;
    // Each problem goes out as it is found: a long file shows its first ones at once.
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let found = seqit_data::validate(&args.file, &options, args.max_problems, &mut |problem| {
        if write_error.is_none() {
            write_error = writeln!(out, "{problem}").err();
        }
    });
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context("cannot write the problems to stdout"));
    }
    match found.verdict(&args.file) {
        Ok(line) => Ok(writeln!(out, "{line}")?),
        Err(failure) => {
            out.flush()?;
            Err(anyhow::Error::msg(failure))
        }
    }
}

fn convert(args: DataConvertArgs) -> Result<()> {
    let write = WriteOptions {
        schema: args.to.parse().map_err(anyhow::Error::msg)?,
        container: None,
        encode: EncodeOptions {
            generator: args.generator,
        },
    };
    let options = args.read.options()?;
    let done = seqit_data::convert(&args.input, &args.output, &options, &write)?;
    note(done.summary(&args.output));
    Ok(())
}

fn stats(args: DataStatsArgs) -> Result<()> {
    let reader = Reader::open(&args.file, &args.read.options()?)?;
    let tokenizer = if args.no_tokens {
        None
    } else {
        tokenizer(args.model.as_deref())?
    };
    let counter = tokenizer.as_ref().map(|(name, t)| {
        let count = move |text: &str| {
            t.encode(text)
                .map(|ids| ids.len())
                .map_err(|e| e.to_string())
        };
        (name.as_str(), count)
    });
    let tokens = counter
        .as_ref()
        .map(|(name, count)| (*name, count as seqit_data::TokenCounter));
    let stats = seqit_data::stats(reader, tokens)?;
    result(if args.json {
        serde_json::to_string_pretty(&stats)?
    } else {
        stats.to_table().trim_end_matches('\n').to_string()
    });
    Ok(())
}

/// The tokenizer of a model (only the tokenizer: no weights are loaded). Without
/// `--model` token lengths are a bonus: a missing default model only skips them.
fn tokenizer(model: Option<&str>) -> Result<Option<(String, seqit_engine::Tokenizer)>> {
    let loaded = seqit_engine::resolve_model(model).and_then(|path| {
        seqit_engine::load_tokenizer(&path)
            .with_context(|| format!("cannot read the tokenizer of `{}`", path.display()))
    });
    match loaded {
        Ok((tokenizer, _)) => {
            let name = model.unwrap_or(seqit_core::DEFAULT_MODEL_NAME);
            Ok(Some((name.to_string(), tokenizer)))
        }
        Err(e) if model.is_none() => {
            let reason = e.to_string().replace('\n', "\n  ");
            note(format!("note: token lengths skipped: {reason}"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn mix(options: MixOptions) -> Result<()> {
    let settings = options.settings()?;
    result(seqit_data::write_mix(&settings)?.summary(&settings.output));
    Ok(())
}

fn filter_paths(
    input: PathBuf,
    output: PathBuf,
    report: Option<PathBuf>,
    read: &ReadFlags,
) -> Result<FilterPaths> {
    let read = read.options()?;
    Ok(FilterPaths {
        input,
        read,
        output,
        report,
    })
}

fn dedupe(args: DataDedupeArgs) -> Result<()> {
    let options = DedupeOptions {
        key: match args.by.as_str() {
            "prompt" => DedupeKey::Prompt,
            _ => DedupeKey::Conversation,
        },
        near: args.near,
        shingle: args.shingle,
    };
    let paths = filter_paths(args.input, args.output, args.report, &args.read)?;
    result(seqit_data::dedupe(&paths, &options)?.summary());
    Ok(())
}

fn decontaminate(args: DataDecontaminateArgs) -> Result<()> {
    let options = DecontaminateOptions {
        against: args.against,
        field: args.bench_field,
        ngram: args.ngram,
    };
    let paths = filter_paths(args.input, args.output, args.report, &args.read)?;
    result(seqit_data::decontaminate(&paths, &options)?.summary(&options));
    Ok(())
}
