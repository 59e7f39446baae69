//! Reading JSONL (plain or gzip-compressed) and writing files atomically.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{EvalError, Result};

/// Opens `path`, transparently decompressing gzip (recognised by its magic bytes).
pub fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>> {
    let read_err = |source| EvalError::File(seqit_core::FileError::read(path, source));
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(read_err)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// The JSON objects of a JSONL file with their 1-based line numbers; blank lines are
/// skipped.
pub fn read_jsonl(path: &Path) -> Result<Vec<(usize, serde_json::Map<String, Value>)>> {
    let reader = open_maybe_gz(path)?;
    let mut records = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_no = index + 1;
        let line = line.map_err(|source| match source.kind() {
            std::io::ErrorKind::InvalidData => EvalError::Parse {
                path: path.to_path_buf(),
                line: line_no,
                message: "not valid UTF-8 text".to_string(),
            },
            _ => EvalError::File(seqit_core::FileError::read(path, source)),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|err| EvalError::Parse {
            path: path.to_path_buf(),
            line: line_no,
            message: format!("invalid JSON: {err}"),
        })?;
        match value {
            Value::Object(map) => records.push((line_no, map)),
            other => {
                return Err(EvalError::Parse {
                    path: path.to_path_buf(),
                    line: line_no,
                    message: format!("expected a JSON object, found {}", kind(&other)),
                })
            }
        }
    }
    Ok(records)
}

/// A string field of a record, or an error naming the file, line and field.
pub fn string_field(
    record: &serde_json::Map<String, Value>,
    field: &str,
    path: &Path,
    line: usize,
) -> Result<String> {
    match record.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(EvalError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("field `{field}`: expected a string, found {}", kind(other)),
        }),
        None => Err(EvalError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("missing field `{field}`"),
        }),
    }
}

/// A record deserialized as `T`, or an error naming the file, line and what the record
/// should hold (`expected`, e.g. "`name` and `text` strings").
pub fn from_record<T: DeserializeOwned>(
    record: serde_json::Map<String, Value>,
    path: &Path,
    line: usize,
    expected: &str,
) -> Result<T> {
    serde_json::from_value(Value::Object(record)).map_err(|err| EvalError::Parse {
        path: path.to_path_buf(),
        line,
        message: format!("{err} (expected {expected})"),
    })
}

/// `a string`, `a number`, … for messages.
pub use seqit_core::json::kind;

/// Writes `bytes` to `path` through a temporary file in the same directory, synced and
/// renamed into place (see [`seqit_core::durable::atomic_write`]), so readers never see
/// a half-written file and a crash leaves the old content or the new.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    seqit_core::durable::atomic_write(path, bytes)
        .map_err(|source| EvalError::File(seqit_core::FileError::write(path, source)))
}

pub use seqit_core::journal::with_suffix;
