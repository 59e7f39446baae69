//! Errors of the dataset layer. Every problem with a file's content names the file,
//! the line (text files) or record index (JSON arrays, Parquet), the field and what was
//! expected, e.g. ``data.jsonl:17: field `instruction`: expected a string, found number``.

use std::fmt;
use std::path::{Path, PathBuf};

/// Result of the dataset layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in a file something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as the user named it.
    pub file: PathBuf,
    /// 1-based line number (JSONL, text and JSON arrays).
    pub line: Option<usize>,
    /// 0-based record index (JSON arrays and Parquet: the position in the array or table).
    pub record: Option<usize>,
}

impl Location {
    /// The whole file.
    pub fn file(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            record: None,
        }
    }

    /// A line of a text or JSONL file.
    pub fn line(file: &Path, line: usize) -> Self {
        Self {
            line: Some(line),
            ..Self::file(file)
        }
    }

    /// A record of a JSON array or Parquet file, with the line it starts on when known.
    pub fn record(file: &Path, record: usize, line: Option<usize>) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            record: Some(record),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(record) = self.record {
            write!(f, ": record {record}")?;
        }
        Ok(())
    }
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, and the line or record in it.
    pub at: Location,
    /// The field, as a path into the record (``conversations[2].from``), when one is to blame.
    pub field: Option<String>,
    /// What is wrong, e.g. ``expected a string, found number``. A message may carry
    /// `\nhint: ...` lines.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field `{field}`: {}", self.at, self.message),
            None => write!(f, "{}: {}", self.at, self.message),
        }
    }
}

/// A problem inside one record, before the reader knows where the record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldProblem {
    pub field: Option<String>,
    pub message: String,
}

impl FieldProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn record(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }

    pub fn at(self, at: &Location) -> Problem {
        Problem {
            at: at.clone(),
            field: self.field,
            message: self.message,
        }
    }
}

/// Errors of the dataset layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file (or directory) could not be read, or the output could not be written.
    #[error(transparent)]
    File(#[from] seqit_core::FileError),
    /// The content of a file is wrong: one or more problems in one place.
    #[error("{}", render_problems(problems))]
    Invalid {
        /// Every problem found there (the message shows the first and counts the rest).
        problems: Vec<Problem>,
    },
    /// A record cannot be written in the target format.
    #[error(
        "record {index}{}: cannot write it as {format}: {reason}",
        id_suffix(id)
    )]
    Unwritable {
        /// 0-based position of the record in the written stream.
        index: usize,
        /// The record's id, when it has one.
        id: Option<String>,
        /// The target format, as shown to users (e.g. `alpaca (JSON Lines)`).
        format: String,
        /// Why the record does not fit the format.
        reason: String,
    },
    /// A request that cannot be carried out (unknown extension, feature not built, ...).
    #[error("{0}")]
    Usage(String),
}

fn id_suffix(id: &Option<String>) -> String {
    id.as_ref()
        .map(|id| format!(" (id `{id}`)"))
        .unwrap_or_default()
}

fn render_problems(problems: &[Problem]) -> String {
    match problems {
        [] => "invalid data".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!(
            "{first} (and {} more problem{} in this record)",
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    }
}

impl Error {
    pub(crate) fn invalid(problem: Problem) -> Self {
        Error::Invalid {
            problems: vec![problem],
        }
    }

    pub(crate) fn at(at: &Location, message: impl Into<String>) -> Self {
        Self::invalid(Problem {
            at: at.clone(),
            field: None,
            message: message.into(),
        })
    }

    pub(crate) fn read(path: &Path, source: std::io::Error) -> Self {
        Error::File(seqit_core::FileError::read(path, source))
    }

    pub(crate) fn write(path: &Path, source: std::io::Error) -> Self {
        Error::File(seqit_core::FileError::write(path, source))
    }

    /// Every problem this error stands for, one line each (what `seqit data validate`
    /// lists). Errors that are not about content give one line of their own.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Error::Invalid { problems } => problems.iter().map(Problem::to_string).collect(),
            other => {
                let mut text = other.to_string();
                let mut source = std::error::Error::source(other);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                vec![text]
            }
        }
    }
}

/// The JSON type of a value, as error messages name it.
pub(crate) fn type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}
