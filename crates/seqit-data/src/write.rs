//! [`Writer`]: records into a file, atomically. Records go to a temporary file in the
//! target's directory, which is synced and renamed over the target (and the directory
//! synced) only by [`Writer::finish`]; a writer dropped early (an error, a panic)
//! removes it, so a failed run never leaves a half-written file where good data was
//! expected. Both go through [`seqit_core::durable`].

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use seqit_core::durable::AtomicFile;

use crate::codec::{self, out::Out, EncodeOptions};
use crate::error::{Error, Result};
use crate::format::{Container, Format, Schema};
use crate::record::Record;

/// How to write a file.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The record schema to write.
    pub schema: Schema,
    /// Taken from the file's extension when `None`.
    pub container: Option<Container>,
    /// Options of alpaca_eval output (its `generator`).
    pub encode: EncodeOptions,
}

impl WriteOptions {
    /// Options for this schema, the container taken from the file's extension.
    pub fn new(schema: Schema) -> Self {
        Self {
            schema,
            container: None,
            encode: EncodeOptions::default(),
        }
    }
}

enum Sink {
    Json(BufWriter<AtomicFile>),
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    Parquet(AtomicFile, Vec<Vec<(String, Out)>>),
}

/// Writes records of one format into a file (see the module documentation).
pub struct Writer {
    path: PathBuf,
    format: Format,
    encode: EncodeOptions,
    sink: Sink,
    count: usize,
}

impl Writer {
    /// Starts writing `path` (parent directories are created).
    pub fn create(path: &Path, options: &WriteOptions) -> Result<Self> {
        let container = match options.container.or_else(|| Container::from_path(path)) {
            Some(container) => container,
            None => {
                return Err(Error::Usage(format!(
                    "cannot tell which kind of file to write from the name `{}`\nhint: name it .json, .jsonl, .txt or .parquet",
                    path.display()
                )))
            }
        };
        if container == Container::Text && options.schema != Schema::Prompts {
            return Err(Error::Usage(format!(
                "`{}`: a .txt file holds a prompt list, not {} records\nhint: name it .json or .jsonl",
                path.display(),
                options.schema
            )));
        }
        if container == Container::Parquet && !cfg!(feature = "parquet") {
            return Err(Error::Usage(format!(
                "cannot write `{}`: this build of seqit has no Parquet support\nhint: build with `--features parquet`",
                path.display()
            )));
        }
        let tmp = AtomicFile::create(path).map_err(|e| Error::write(path, e))?;
        let sink = match container {
            Container::Parquet => Sink::Parquet(tmp, Vec::new()),
            _ => {
                let mut out = BufWriter::with_capacity(1 << 16, tmp);
                if container == Container::JsonArray {
                    out.write_all(b"[").map_err(|e| Error::write(path, e))?;
                }
                Sink::Json(out)
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            format: Format {
                schema: options.schema,
                container,
            },
            encode: options.encode.clone(),
            sink,
            count: 0,
        })
    }

    /// The format being written: the schema and the container it resolved to.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Records written so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds one record, or says why the format cannot hold it.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let unwritable = |reason: String| Error::Unwritable {
            index: self.count,
            id: record.id_text(),
            format: self.format.schema.to_string(),
            reason,
        };
        let fields = codec::encode(self.format.schema, record, &self.encode).map_err(unwritable)?;
        match &mut self.sink {
            Sink::Json(out) => {
                let text = match self.format.container {
                    Container::Text => {
                        let prompt = fields
                            .iter()
                            .find(|(k, _)| k == "prompt")
                            .and_then(|(_, v)| v.as_str())
                            .unwrap_or_default();
                        if prompt.contains(['\n', '\r']) {
                            return Err(unwritable(
                                "its prompt has a line break, which a .txt prompt list cannot hold\nhint: write .jsonl"
                                    .into(),
                            ));
                        }
                        prompt.to_string()
                    }
                    _ => codec::to_json_line(fields),
                };
                let sep: &[u8] = match (self.format.container, self.count) {
                    (Container::JsonArray, 0) => b"\n",
                    (Container::JsonArray, _) => b",\n",
                    _ => b"",
                };
                out.write_all(sep)
                    .and_then(|()| out.write_all(text.as_bytes()))
                    .and_then(|()| match self.format.container {
                        Container::JsonArray => Ok(()),
                        _ => out.write_all(b"\n"),
                    })
                    .map_err(|e| Error::write(&self.path, e))?;
            }
            Sink::Parquet(_, rows) => rows.push(fields),
        }
        self.count += 1;
        Ok(())
    }

    /// Writes the end of the file, syncs it and moves it into place. Returns the number
    /// of records written.
    pub fn finish(self) -> Result<usize> {
        let path = self.path;
        let tmp = match self.sink {
            Sink::Json(mut out) => {
                if self.format.container == Container::JsonArray {
                    let end: &[u8] = if self.count == 0 { b"]\n" } else { b"\n]\n" };
                    out.write_all(end).map_err(|e| Error::write(&path, e))?;
                }
                out.into_inner()
                    .map_err(|e| Error::write(&path, e.into_error()))?
            }
            #[cfg(feature = "parquet")]
            Sink::Parquet(tmp, rows) => {
                let file = tmp.file().try_clone().map_err(|e| Error::write(&path, e))?;
                crate::parquet::write_rows(file, self.format.schema, &rows)
                    .map_err(|e| Error::write(&path, e))?;
                tmp
            }
            #[cfg(not(feature = "parquet"))]
            Sink::Parquet(..) => unreachable!("refused by `create`"),
        };
        tmp.commit().map_err(|e| Error::write(&path, e))?;
        Ok(self.count)
    }
}

/// Writes all records into `path` in one go.
pub fn write_all<'a>(
    path: &Path,
    options: &WriteOptions,
    records: impl IntoIterator<Item = &'a Record>,
) -> Result<usize> {
    let mut writer = Writer::create(path, options)?;
    for record in records {
        writer.write(record)?;
    }
    writer.finish()
}

/// Writes a whole file atomically and durably (temporary file in the same directory,
/// sync, rename, sync of the directory).
pub fn write_file_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    seqit_core::durable::atomic_write(path, contents).map_err(|e| Error::write(path, e))
}
