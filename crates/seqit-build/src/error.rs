//! Errors of the builders: each names the file, the record and what was expected.

use std::path::{Path, PathBuf};

/// Result of the builders.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// Why a build could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content is not what the builder expects.
    #[error("`{}`: {message}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the record and field.
        message: String,
    },
    /// A dataset file could not be read.
    #[error(transparent)]
    Data(#[from] seqit_data::Error),
    /// An output could not be written; nothing was left in its place.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The output.
        path: PathBuf,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The settings cannot be satisfied (with a hint when one helps).
    #[error("{0}")]
    Settings(String),
}

impl BuildError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn write(
        path: &Path,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Write {
            path: path.to_path_buf(),
            source: source.into(),
        }
    }

    pub(crate) fn content(path: &Path, message: impl Into<String>) -> Self {
        Self::Content {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
