//! How the builders write: whole files, atomically, each build's report beside its
//! output as `<output>.report.json`.

use std::path::Path;

use serde::Serialize;

use crate::error::{BuildError, Result};

/// Writes `value` as pretty JSON with a final newline, atomically.
pub(crate) fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| BuildError::write(path, e))?;
    bytes.push(b'\n');
    seqit_data::write_file_atomic(path, &bytes).map_err(|e| BuildError::write(path, e))
}

/// Keeps a build's report beside its output, as `<output>.report.json`.
pub(crate) fn write_report<T: Serialize>(output: &Path, report: &T) -> Result<()> {
    let mut name = output.as_os_str().to_owned();
    name.push(".report.json");
    write_json(Path::new(&name), report)
}
