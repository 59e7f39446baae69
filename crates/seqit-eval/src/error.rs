//! The crate's error type.

use std::path::PathBuf;

use seqit_core::FileError;
use seqit_sandbox::SandboxError;

/// Errors of evaluation: unreadable or malformed inputs, inconsistent settings, a
/// sandbox that cannot run. Messages name the file, the line and the field.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A record is malformed.
    #[error("`{}` line {line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (or record) number.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A file is well-formed but unusable as a whole.
    #[error("`{}`: {message}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The settings contradict each other or the data.
    #[error("{0}")]
    Settings(String),
    /// The sandbox failed (not the program in it).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A model (answerer or judge) could not answer.
    #[error(transparent)]
    Llm(#[from] seqit_llm::LlmError),
}

/// `Result` with [`EvalError`].
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
