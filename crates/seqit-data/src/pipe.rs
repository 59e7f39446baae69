//! Streaming one dataset file into another, record by record: [`convert`], and the
//! filters behind [`dedupe`](crate::dedupe()) and
//! [`decontaminate`](crate::decontaminate()), which keep the input's format and list
//! what they removed in a JSONL report beside the output.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Location, Problem, Result};
use crate::format::Format;
use crate::read::{ReadOptions, Reader};
use crate::record::Record;
use crate::write::{write_file_atomic, WriteOptions, Writer};

/// How many removed records a filter's summary names before pointing at the report.
pub(crate) const LISTED: usize = 20;

/// What [`convert`] did.
#[derive(Debug, Clone)]
pub struct Converted {
    /// Records written.
    pub records: usize,
    /// The input's format.
    pub from: Format,
    /// The output's format.
    pub to: Format,
}

impl Converted {
    /// One line: how many records went from which format to which, into `output`.
    pub fn summary(&self, output: &Path) -> String {
        let Self { records, from, to } = self;
        format!(
            "converted {records} records from {from} to {to}: {}",
            output.display()
        )
    }
}

/// Copies every record of `input` into `output` in the format `write` asks for. A
/// record the target cannot hold fails the copy, naming where that record is.
pub fn convert(
    input: &Path,
    output: &Path,
    read: &ReadOptions,
    write: &WriteOptions,
) -> Result<Converted> {
    let mut reader = Reader::open(input, read)?;
    let writer = Writer::create(output, write)?;
    let to = writer.format();
    let (_, records) = pipe(&mut reader, None, writer, |_| true)?;
    let from = reader.format().expect("a file with records has a format");
    Ok(Converted { records, from, to })
}

/// Where a filter reads and writes.
#[derive(Debug, Clone)]
pub struct FilterPaths {
    /// The dataset to filter.
    pub input: PathBuf,
    /// How to read it.
    pub read: ReadOptions,
    /// The kept records, in the input's format.
    pub output: PathBuf,
    /// JSONL list of the removed records; `None`: beside the output, named after it
    /// (`out.jsonl` → `out.<what>.jsonl`, `what` depending on the filter).
    pub report: Option<PathBuf>,
}

/// What a filter did.
#[derive(Debug, Clone)]
pub struct Filtered<T> {
    /// Records read.
    pub read: usize,
    /// Records kept (written to the output).
    pub written: usize,
    /// Why each removed record went, in input order.
    pub removed: Vec<T>,
    /// Where the list of removed records was written.
    pub report: PathBuf,
}

/// Copies `paths.input` to `paths.output` without the records `remove` gives a reason
/// for, and writes those reasons to the report (default `out.<suffix>.jsonl`).
pub(crate) fn filter<T: Serialize>(
    paths: &FilterPaths,
    suffix: &str,
    mut remove: impl FnMut(&Record) -> Option<T>,
) -> Result<Filtered<T>> {
    let mut reader = Reader::open(&paths.input, &paths.read)?;
    // The writer takes the input's format, which is known once a record is read.
    let first = reader.next().unwrap_or_else(|| {
        Err(Error::at(
            &Location::file(&paths.input),
            "the file holds no records",
        ))
    })?;
    let schema = reader
        .format()
        .expect("a file with records has a format")
        .schema;
    let writer = Writer::create(&paths.output, &WriteOptions::new(schema))?;
    let mut removed = Vec::new();
    let (read, written) = pipe(&mut reader, Some(first), writer, |record| {
        match remove(record) {
            Some(reason) => {
                removed.push(reason);
                false
            }
            None => true,
        }
    })?;
    let report = paths
        .report
        .clone()
        .unwrap_or_else(|| beside(&paths.output, suffix));
    let mut text = String::new();
    for reason in &removed {
        let line = serde_json::to_string(reason)
            .map_err(|e| Error::write(&report, std::io::Error::other(e)))?;
        text.push_str(&line);
        text.push('\n');
    }
    write_file_atomic(&report, text.as_bytes())?;
    Ok(Filtered {
        read,
        written,
        removed,
        report,
    })
}

/// `out.jsonl` → `out.<suffix>.jsonl`.
fn beside(output: &Path, suffix: &str) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{stem}.{suffix}.jsonl"))
}

/// Copies the records of `reader` (after `first`, already read from it) that `keep`
/// accepts into `writer`, then finishes it. Returns the records read and written.
fn pipe(
    reader: &mut Reader,
    first: Option<Record>,
    mut writer: Writer,
    mut keep: impl FnMut(&Record) -> bool,
) -> Result<(usize, usize)> {
    let mut read = 0;
    let mut next = first.map(Ok).or_else(|| reader.next());
    while let Some(record) = next {
        let record = record?;
        read += 1;
        if keep(&record) {
            writer.write(&record).map_err(|e| locate(e, reader))?;
        }
        next = reader.next();
    }
    Ok((read, writer.finish()?))
}

/// A record the writer cannot hold, named by where the reader found it (the writer
/// only knows its position in the output).
fn locate(error: Error, reader: &Reader) -> Error {
    match (error, reader.location()) {
        (Error::Unwritable { format, reason, .. }, Some(at)) => Error::invalid(Problem {
            at: at.clone(),
            field: None,
            message: format!("cannot write this record as {format}: {reason}"),
        }),
        (error, _) => error,
    }
}

/// How a report and a summary name a record: its id, else `#index` (0-based).
pub(crate) fn record_name(id: Option<&Value>, index: usize) -> String {
    match id {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => format!("#{index}"),
    }
}
