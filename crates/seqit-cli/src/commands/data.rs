//! `seqit data`: validate, convert, stats, mix, dedupe and decontaminate datasets.
//! The work is done by `seqit-data`; this module turns flags into its settings and
//! prints results (stdout) and progress notes (stderr).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use seqit_data::{
    Decontaminator, DedupeKey, DedupeOptions, Deduper, EncodeOptions, Error as DataError,
    MixSource, ReadOptions, Reader, Record, Schema, WriteOptions, Writer,
};

use crate::cli::{
    DataCommand, DataConvertArgs, DataDecontaminateArgs, DataDedupeArgs, DataMixArgs, DataReadArgs,
    DataStatsArgs, DataValidateArgs,
};

/// How many removed ids a summary lists before pointing at the report.
const LISTED_IDS: usize = 20;

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

fn schema(name: Option<&str>) -> Result<Option<Schema>> {
    name.map(|n| n.parse::<Schema>().map_err(anyhow::Error::msg))
        .transpose()
}

fn read_options(args: &DataReadArgs) -> Result<ReadOptions> {
    if args.max_line_bytes == 0 {
        bail!("`--max-line-bytes` must be at least 1");
    }
    Ok(ReadOptions {
        schema: schema(args.format.as_deref())?,
        max_line_bytes: args.max_line_bytes,
    })
}

/// Distinct hints kept for the final error (they are fixed texts; this only bounds a
/// file that would produce many different ones).
const MAX_HINTS: usize = 16;

fn validate(args: DataValidateArgs) -> Result<()> {
    let options = read_options(&args.read)?;
    // One problem per line on stdout as it is found (the first `--max-problems`; then
    // only counted); their hints once each with the final error.
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut hints: Vec<String> = Vec::new();
    let mut listed = 0usize;
    let mut write_error: Option<std::io::Error> = None;
    let result = seqit_data::validate(&args.file, &options, &mut |problem| {
        let mut lines = problem.split("\nhint: ");
        let first = lines.next().unwrap_or_default();
        if listed < args.max_problems && write_error.is_none() {
            listed += 1;
            if let Err(e) = writeln!(out, "{first}") {
                write_error = Some(e);
            }
        }
        for hint in lines {
            if hints.len() < MAX_HINTS && !hints.iter().any(|h| h == hint) {
                hints.push(hint.to_string());
            }
        }
    });
    if let Some(e) = write_error {
        return Err(anyhow::Error::new(e).context("cannot write the problems to stdout"));
    }

    let format = result.format.map(|f| format!(", {f}")).unwrap_or_default();
    if result.is_clean() {
        writeln!(
            out,
            "ok: `{}`: {} records{format}, no problems",
            args.file.display(),
            result.records
        )?;
        return Ok(());
    }
    out.flush()?;
    let n = result.problems;
    let unlisted = if listed < n {
        format!(
            " ({} listed, {} more counted only; raise --max-problems to list them)",
            listed,
            n - listed
        )
    } else {
        String::new()
    };
    let hints: String = hints.iter().map(|h| format!("\nhint: {h}")).collect();
    bail!(
        "`{}`: {n} problem{} found{unlisted}{hints}",
        args.file.display(),
        if n == 1 { "" } else { "s" },
    )
}

/// Writer errors for a record name where that record came from.
fn write_error(error: DataError, reader: &Reader) -> anyhow::Error {
    match (error, reader.location()) {
        (DataError::Unwritable { format, reason, .. }, Some(at)) => {
            anyhow!("{at}: cannot write this record as {format}: {reason}")
        }
        (error, _) => error.into(),
    }
}

/// Copies every record of `reader` that `keep` accepts into `writer`, then finishes it.
fn pipe(
    reader: &mut Reader,
    mut writer: Writer,
    mut keep: impl FnMut(&Record) -> bool,
) -> Result<(usize, usize)> {
    let mut read = 0;
    while let Some(record) = reader.next() {
        let record = record?;
        read += 1;
        if keep(&record) {
            writer.write(&record).map_err(|e| write_error(e, reader))?;
        }
    }
    let written = writer.finish()?;
    Ok((read, written))
}

fn convert(args: DataConvertArgs) -> Result<()> {
    let to: Schema = args.to.parse().map_err(anyhow::Error::msg)?;
    let mut reader = Reader::open(&args.input, &read_options(&args.read)?)?;
    let writer = Writer::create(
        &args.output,
        &WriteOptions {
            schema: to,
            container: None,
            encode: EncodeOptions {
                generator: args.generator.clone(),
            },
        },
    )?;
    let format = writer.format();
    let (_, written) = pipe(&mut reader, writer, |_| true)?;
    eprintln!(
        "converted {written} records from {} to {format}: {}",
        reader.format().map(|f| f.to_string()).unwrap_or_default(),
        args.output.display()
    );
    Ok(())
}

fn stats(args: DataStatsArgs) -> Result<()> {
    let reader = Reader::open(&args.file, &read_options(&args.read)?)?;
    let tokenizer = if args.no_tokens {
        None
    } else {
        match load_tokenizer(args.model.as_deref()) {
            Ok(t) => Some(t),
            Err(e) if args.model.is_none() => {
                eprintln!(
                    "note: token lengths skipped: {}",
                    e.to_string().replace('\n', "\n  ")
                );
                None
            }
            Err(e) => return Err(e),
        }
    };
    let counter = tokenizer.as_ref().map(|(_, t)| {
        move |text: &str| -> Result<usize, String> {
            t.encode(text)
                .map(|ids| ids.len())
                .map_err(|e| e.to_string())
        }
    });
    let tokens = match (&tokenizer, &counter) {
        (Some((name, _)), Some(counter)) => {
            Some((name.as_str(), counter as seqit_data::TokenCounter))
        }
        _ => None,
    };
    let stats = seqit_data::stats(reader, tokens)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.to_table());
    }
    Ok(())
}

/// The tokenizer of a model (only the tokenizer: no weights are loaded).
fn load_tokenizer(model: Option<&str>) -> Result<(String, seqit_engine::Tokenizer)> {
    let path = seqit_engine::resolve_model(model)?;
    let tokenizer = if path.is_dir() {
        seqit_engine::Tokenizer::from_hf_dir(&path)?
    } else {
        let file = seqit_model::gguf::GgufFile::open(&path)
            .with_context(|| format!("cannot read the tokenizer of `{}`", path.display()))?;
        seqit_engine::Tokenizer::from_gguf(&file)?
    };
    let name = model.map_or_else(
        || seqit_core::DEFAULT_MODEL_NAME.to_string(),
        str::to_string,
    );
    Ok((name, tokenizer))
}

/// `PATH:WEIGHT` (or just `PATH`, weight 1).
fn parse_source(text: &str) -> Result<MixSource> {
    if let Some((path, weight)) = text.rsplit_once(':') {
        if let Ok(weight) = weight.parse::<f64>() {
            if !(weight.is_finite() && weight > 0.0) {
                bail!("`{text}`: the weight must be a number above 0");
            }
            return Ok(MixSource {
                path: PathBuf::from(path),
                weight,
            });
        }
    }
    Ok(MixSource {
        path: PathBuf::from(text),
        weight: 1.0,
    })
}

fn mix(args: DataMixArgs) -> Result<()> {
    let sources = args
        .sources
        .iter()
        .map(|s| parse_source(s))
        .collect::<Result<Vec<_>>>()?;
    let options = read_options(&args.read)?;
    let (records, formats, report) = seqit_data::mix(&sources, args.total, args.seed, &options)?;
    let to = match schema(args.to.as_deref())? {
        Some(to) => to,
        None => {
            let first = formats[0].schema;
            if formats.iter().any(|f| f.schema != first) {
                let names: Vec<String> = formats.iter().map(|f| f.schema.to_string()).collect();
                bail!(
                    "the sources are in different formats ({})\nhint: pass --to with the format to write",
                    names.join(", ")
                );
            }
            first
        }
    };
    let written = seqit_data::write_all(&args.output, &WriteOptions::new(to), &records).map_err(
        |e| match e {
            DataError::Unwritable {
                format, reason, id, ..
            } => anyhow!(
                "cannot write a mixed record{} as {format}: {reason}",
                id.map(|id| format!(" (id `{id}`)")).unwrap_or_default()
            ),
            other => other.into(),
        },
    )?;
    for source in &report.sources {
        println!(
            "{}: {} of {} records (weight {}){}",
            source.path,
            source.taken,
            source.available,
            source.weight,
            if source.upsampled { ", upsampled" } else { "" }
        );
    }
    println!(
        "wrote {written} records (seed {}) to {}",
        args.seed,
        args.output.display()
    );
    Ok(())
}

/// `out.jsonl` → `out.<suffix>.jsonl`.
fn report_path(output: &Path, suffix: &str) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{stem}.{suffix}.jsonl"))
}

fn write_report<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item)?);
        text.push('\n');
    }
    seqit_data::write_file_atomic(path, text.as_bytes())?;
    Ok(())
}

fn id_list(ids: impl Iterator<Item = String>, total: usize) -> String {
    let mut listed: Vec<String> = ids.take(LISTED_IDS).collect();
    if total > LISTED_IDS {
        listed.push(format!("and {} more", total - LISTED_IDS));
    }
    listed.join(", ")
}

fn record_name(id: &Option<serde_json::Value>, index: usize) -> String {
    match id {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => format!("#{index}"),
    }
}

fn output_writer(reader: &Reader, output: &Path) -> Result<Writer> {
    // The input's format, so the first record has to be read before the writer is made.
    let schema = reader
        .format()
        .map(|f| f.schema)
        .context("the input's format is not known yet")?;
    Ok(Writer::create(output, &WriteOptions::new(schema))?)
}

/// Reads the first record (which fixes the schema) and returns it with the reader.
fn open_with_first(path: &Path, options: &ReadOptions) -> Result<(Reader, Record)> {
    let mut reader = Reader::open(path, options)?;
    let first = reader.next().context("the file holds no records")??;
    Ok((reader, first))
}

fn dedupe(args: DataDedupeArgs) -> Result<()> {
    if let Some(t) = args.near {
        if !(t > 0.0 && t <= 1.0) {
            bail!("`--near` must be a Jaccard similarity in (0, 1], got {t}");
        }
    }
    if args.shingle == 0 {
        bail!("`--shingle` must be at least 1");
    }
    let key = match args.by.as_str() {
        "prompt" => DedupeKey::Prompt,
        _ => DedupeKey::Conversation,
    };
    let mut deduper = Deduper::new(DedupeOptions {
        key,
        near: args.near,
        shingle: args.shingle,
    });
    let (mut reader, first) = open_with_first(&args.input, &read_options(&args.read)?)?;
    let mut writer = output_writer(&reader, &args.output)?;
    let mut removed = Vec::new();
    let mut keep = |record: &Record| match deduper.check(record) {
        Some(removal) => {
            removed.push(removal);
            false
        }
        None => true,
    };
    if keep(&first) {
        writer.write(&first).map_err(|e| write_error(e, &reader))?;
    }
    let (read, written) = pipe(&mut reader, writer, &mut keep)?;
    let report = args
        .report
        .clone()
        .unwrap_or_else(|| report_path(&args.output, "removed"));
    write_report(&report, &removed)?;
    let exact = removed.iter().filter(|r| r.kind == "exact").count();
    println!(
        "kept {written} of {} records; removed {exact} exact and {} near duplicates",
        read + 1,
        removed.len() - exact
    );
    if !removed.is_empty() {
        println!(
            "removed: {}",
            id_list(
                removed.iter().map(|r| record_name(&r.id, r.index)),
                removed.len()
            )
        );
    }
    println!("report: {}", report.display());
    Ok(())
}

fn decontaminate(args: DataDecontaminateArgs) -> Result<()> {
    if args.ngram == 0 {
        bail!("`--ngram` must be at least 1");
    }
    let mut items = Vec::new();
    for bench in &args.against {
        items.extend(seqit_data::read_benchmark(
            bench,
            args.bench_field.as_deref(),
        )?);
    }
    let prompts = items.len();
    let mut checker = Decontaminator::new(items, args.ngram);
    let (mut reader, first) = open_with_first(&args.input, &read_options(&args.read)?)?;
    let mut writer = output_writer(&reader, &args.output)?;
    let mut removed = Vec::new();
    let mut keep = |record: &Record| match checker.check(record) {
        Some(hit) => {
            removed.push(hit);
            false
        }
        None => true,
    };
    if keep(&first) {
        writer.write(&first).map_err(|e| write_error(e, &reader))?;
    }
    let (read, written) = pipe(&mut reader, writer, &mut keep)?;
    let report = args
        .report
        .clone()
        .unwrap_or_else(|| report_path(&args.output, "contaminated"));
    write_report(&report, &removed)?;
    let benches: Vec<String> = args
        .against
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    println!(
        "kept {written} of {} records; removed {} that share a {}-gram with {} ({prompts} prompts, {} too short to check)",
        read + 1,
        removed.len(),
        args.ngram,
        benches.join(", "),
        checker.skipped
    );
    for hit in removed.iter().take(LISTED_IDS) {
        println!(
            "removed {}: \"{}\" (from {})",
            record_name(&hit.id, hit.index),
            hit.ngram,
            hit.benchmark.source
        );
    }
    if removed.len() > LISTED_IDS {
        println!("... and {} more", removed.len() - LISTED_IDS);
    }
    println!("report: {}", report.display());
    Ok(())
}
