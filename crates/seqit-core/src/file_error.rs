//! The error of a file that could not be read or written, shared by every crate that
//! reads user files, so that the message is the same wherever it comes from.

use std::path::{Path, PathBuf};

/// A file (or directory) that could not be read or written: the path as the user named
/// it, and the I/O error that stopped the work.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error that stopped the read.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written; nothing was left in its place.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error that stopped the write.
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// Reading `path` failed with `source`.
    pub fn read(path: &Path, source: std::io::Error) -> Self {
        Self::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Writing `path` failed with `source`.
    pub fn write(path: &Path, source: std::io::Error) -> Self {
        Self::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}
