//! [`Reader`]: records out of a file, one at a time.
//!
//! JSON Lines and text files are streamed line by line (a line may not exceed
//! [`ReadOptions::max_line_bytes`]); JSON arrays are streamed element by element (one
//! record in memory, no larger than the same limit), with errors naming the line and
//! record index; Parquet is read row by row. A problem confined to one record (bad JSON on one line, a field of the wrong
//! type) is yielded as an error and reading goes on with the next record; a problem
//! that leaves the rest of the file unreadable ends the iteration after its error.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::array::ArraySource;
use crate::codec;
use crate::error::{type_name, Error, Location, Result};
use crate::format::{Container, Format, Schema};
use crate::lines::{Line, LineReader};
use crate::record::Record;

/// The longest line a reader accepts by default (64 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How to read a file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The record schema; detected from the first record when `None`.
    pub schema: Option<Schema>,
    /// The longest line accepted in line-based files, and the longest record of a
    /// JSON array.
    pub max_line_bytes: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            schema: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

impl ReadOptions {
    /// Options that read with this schema (`None`: detect it) and the default line limit.
    pub fn with_schema(schema: Option<Schema>) -> Self {
        Self {
            schema,
            ..Self::default()
        }
    }
}

/// Reads all records of a file, stopping at the first problem.
pub fn read_all(path: &Path, options: &ReadOptions) -> Result<(Format, Vec<Record>)> {
    let mut reader = Reader::open(path, options)?;
    let mut records = Vec::new();
    for record in &mut reader {
        records.push(record?);
    }
    let format = reader.format().expect("a file with records has a format");
    Ok((format, records))
}

enum Source {
    Lines(LineReader<BufReader<File>>),
    Array(ArraySource),
    #[cfg(feature = "parquet")]
    Parquet(crate::parquet::RowSource),
    Done,
}

/// An iterator over the records of one file (see the module documentation).
pub struct Reader {
    path: PathBuf,
    container: Container,
    schema: Option<Schema>,
    source: Source,
    /// Records met so far, good or bad.
    seen: usize,
    location: Option<Location>,
    /// `.json` read as JSON Lines: a multi-line first object may be a single document.
    json_named: bool,
}

impl Reader {
    /// Opens a file, working out how it stores records from its name and first bytes.
    pub fn open(path: &Path, options: &ReadOptions) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::read(path, e))?;
        let first = first_byte(&mut file).map_err(|e| Error::read(path, e))?;
        let Some(first) = first else {
            return Err(Error::at(&Location::file(path), "the file is empty"));
        };
        let named = Container::from_path(path);
        let container = match (named, first) {
            (Some(Container::Parquet), _) => Container::Parquet,
            (None, b'P') if has_parquet_magic(path) => Container::Parquet,
            (Some(Container::JsonArray) | None, b'[') => Container::JsonArray,
            (Some(Container::JsonArray) | None, b'{') => Container::Jsonl,
            (Some(Container::JsonArray), other) => {
                return Err(Error::at(
                    &Location::file(path),
                    format!(
                        "expected a JSON array of records at the top level, found {}",
                        describe_start(other)
                    ),
                ))
            }
            (Some(container), _) => container,
            (None, _) => {
                return Err(Error::Usage(format!(
                    "cannot tell how `{}` stores records from its name\nhint: name it .json, .jsonl, .txt or .parquet",
                    path.display()
                )))
            }
        };
        let schema = match (container, options.schema) {
            (Container::Text, Some(schema)) if schema != Schema::Prompts => {
                return Err(Error::Usage(format!(
                    "`{}` is a text file, which holds a prompt list; `--format {schema}` does not apply",
                    path.display()
                )))
            }
            (Container::Text, _) => Some(Schema::Prompts),
            (_, schema) => schema,
        };
        let source = match container {
            Container::Jsonl | Container::Text => {
                let file = File::open(path).map_err(|e| Error::read(path, e))?;
                Source::Lines(LineReader::new(
                    BufReader::with_capacity(1 << 16, file),
                    options.max_line_bytes,
                ))
            }
            Container::JsonArray => Source::Array(ArraySource::open(path, options.max_line_bytes)?),
            Container::Parquet => open_parquet(path)?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            container,
            schema,
            source,
            seen: 0,
            location: None,
            json_named: named == Some(Container::JsonArray),
        })
    }

    /// The file being read, as given to [`Reader::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format, once the schema is known (given, or detected from the first record).
    pub fn format(&self) -> Option<Format> {
        self.schema.map(|schema| Format {
            schema,
            container: self.container,
        })
    }

    /// How the file stores its records (by extension; a `.json` file that starts with `{`
    /// is read as JSON Lines).
    pub fn container(&self) -> Container {
        self.container
    }

    /// Where the record (or error) last returned is.
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    /// Stops the iteration after a problem that leaves the rest unreadable.
    fn fatal<T>(&mut self, error: Error) -> Option<Result<T>> {
        self.source = Source::Done;
        Some(Err(error))
    }

    /// The next raw item (a JSON value, or a string for a line of a text file) and where
    /// it is, before any schema is applied. After the last item of a file without any,
    /// yields "the file holds no records".
    pub fn next_value(&mut self) -> Option<Result<(Location, Value)>> {
        loop {
            let item = match &mut self.source {
                Source::Done => return None,
                Source::Lines(lines) => {
                    let cap = lines.max_bytes();
                    match lines.next_line() {
                        Some(line) => match self.line_value(line, cap) {
                            Some(item) => Some(item),
                            None => continue, // a blank line
                        },
                        None => None,
                    }
                }
                // The source ends itself after a problem that leaves the rest unreadable.
                Source::Array(array) => array.next(&self.path),
                #[cfg(feature = "parquet")]
                Source::Parquet(rows) => {
                    let at = Location::record(&self.path, self.seen, None);
                    match rows.next() {
                        Some(Ok(value)) => Some(Ok((at, value))),
                        Some(Err(message)) => self.fatal(Error::at(&at, message)),
                        None => None,
                    }
                }
            };
            match item {
                Some(item) => {
                    self.seen += 1;
                    self.location = Some(match &item {
                        Ok((at, _)) => at.clone(),
                        Err(Error::Invalid { problems }) => problems[0].at.clone(),
                        Err(_) => Location::file(&self.path),
                    });
                    return Some(item);
                }
                None => {
                    let empty = self.seen == 0;
                    self.source = Source::Done;
                    if empty {
                        return Some(Err(Error::at(
                            &Location::file(&self.path),
                            "the file holds no records",
                        )));
                    }
                    return None;
                }
            }
        }
    }

    /// Turns one JSON value into a record, detecting the schema on the first object.
    fn decode(&mut self, at: Location, value: Value) -> Option<Result<Record>> {
        if self.container == Container::Text {
            let text = value.as_str().unwrap_or_default();
            return Some(Ok(Record::prompt(text)));
        }
        let schema = match (self.schema, &value) {
            (Some(schema), _) => schema,
            (None, Value::Object(map)) => match Schema::detect(map) {
                Some(schema) => {
                    self.schema = Some(schema);
                    schema
                }
                None => {
                    let keys: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
                    let fields = if keys.is_empty() {
                        "it has no fields".to_string()
                    } else {
                        format!("its fields: {}", keys.join(", "))
                    };
                    return self.fatal(Error::at(
                        &at,
                        format!(
                            "cannot tell the dataset format from this first record ({fields})\nhint: pass --format with one of {}",
                            Schema::NAMES.join(", ")
                        ),
                    ));
                }
            },
            (None, other) => {
                return Some(Err(Error::at(
                    &at,
                    format!("expected a JSON object, found {}", type_name(other)),
                )))
            }
        };
        Some(
            codec::decode(schema, value).map_err(|problems| Error::Invalid {
                problems: problems.into_iter().map(|p| p.at(&at)).collect(),
            }),
        )
    }

    /// One line as a raw item; `None` for a blank line.
    fn line_value(
        &mut self,
        item: std::io::Result<(usize, Line)>,
        cap: usize,
    ) -> Option<Result<(Location, Value)>> {
        let (number, line) = match item {
            Ok(item) => item,
            Err(e) => {
                let error = Error::read(&self.path, e);
                return self.fatal(error);
            }
        };
        let at = Location::line(&self.path, number);
        let bytes = match line {
            Line::TooLong => {
                return Some(Err(Error::at(
                    &at,
                    format!(
                        "the line is longer than the limit of {}; is this really a JSON Lines file?\nhint: raise the limit with --max-line-bytes",
                        human_bytes(cap)
                    ),
                )));
            }
            Line::Text(bytes) => bytes,
        };
        let mut bytes = bytes.as_slice();
        if number == 1 {
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return Some(Err(Error::at(&at, utf8_message(bytes, &e)))),
        };
        if text.trim().is_empty() {
            return None;
        }
        if self.container == Container::Text {
            return Some(Ok((at, Value::String(text.to_string()))));
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => Some(Ok((at, value))),
            Err(e) => {
                if number == 1
                    && self.json_named
                    && e.is_eof()
                    && whole_file_is_one_value(&self.path)
                {
                    return self.fatal(Error::at(
                        &Location::file(&self.path),
                        "expected a JSON array of records at the top level, found an object\nhint: records go in a JSON array (.json) or one object per line (.jsonl)",
                    ));
                }
                let mut message = format!(
                    "invalid JSON at column {}: {}",
                    e.column(),
                    json_message(&e)
                );
                if text.trim_start().starts_with('[') {
                    message.push_str("\nhint: this line starts a JSON array; a file holding one array should be named .json");
                }
                Some(Err(Error::at(&at, message)))
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_value()? {
            Ok((at, value)) => self.decode(at, value),
            Err(error) => Some(Err(error)),
        }
    }
}

#[cfg(feature = "parquet")]
fn open_parquet(path: &Path) -> Result<Source> {
    Ok(Source::Parquet(crate::parquet::RowSource::open(path)?))
}

#[cfg(not(feature = "parquet"))]
fn open_parquet(path: &Path) -> Result<Source> {
    Err(Error::Usage(format!(
        "`{}` is a Parquet file, and this build of seqit has no Parquet support\nhint: build with `--features parquet`",
        path.display()
    )))
}

/// The first byte that is not whitespace (after a byte-order mark), if any.
fn first_byte(file: &mut File) -> std::io::Result<Option<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    let mut first_chunk = true;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        let mut chunk = &buf[..n];
        if first_chunk {
            chunk = chunk.strip_prefix(BOM).unwrap_or(chunk);
            first_chunk = false;
        }
        if let Some(b) = chunk.iter().find(|b| !b.is_ascii_whitespace()) {
            return Ok(Some(*b));
        }
    }
}

fn has_parquet_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"PAR1"
}

fn whole_file_is_one_value(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    serde_json::from_reader::<_, serde::de::IgnoredAny>(BufReader::new(file)).is_ok()
}

fn describe_start(byte: u8) -> &'static str {
    match byte {
        b'"' => "a string",
        b'-' | b'0'..=b'9' => "a number",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "text that is not JSON",
    }
}

/// A serde_json message without its "at line L column C" tail.
pub(crate) fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn utf8_message(bytes: &[u8], e: &std::str::Utf8Error) -> String {
    utf8_message_from(bytes, e, 1)
}

/// The message for invalid UTF-8 in `bytes`, whose first byte is at column
/// `first_column` of its line.
pub(crate) fn utf8_message_from(
    bytes: &[u8],
    e: &std::str::Utf8Error,
    first_column: usize,
) -> String {
    let valid = e.valid_up_to();
    let (line_start, offset) = match bytes[..valid].iter().rposition(|&b| b == b'\n') {
        Some(i) => (i + 1, 1),
        None => (0, first_column),
    };
    let column = String::from_utf8_lossy(&bytes[line_start..valid])
        .chars()
        .count()
        + offset;
    format!(
        "not valid UTF-8 text (byte 0x{:02x} at column {column})\nhint: convert the file to UTF-8, e.g. with `iconv -t UTF-8`",
        bytes[valid]
    )
}

/// `64 MiB (67108864 bytes)`, or `100 bytes`.
pub(crate) fn human_bytes(n: usize) -> String {
    let unit = if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        return format!("{n} bytes");
    };
    format!("{unit} ({n} bytes)")
}
