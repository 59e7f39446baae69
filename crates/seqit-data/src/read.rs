//! [`Reader`]: records out of a file, one at a time.
//!
//! JSON Lines and text files are streamed line by line (a line may not exceed
//! [`ReadOptions::max_line_bytes`]); JSON arrays are read whole and walked record by
//! record so that errors still name the line and record index; Parquet is read row by
//! row. A problem confined to one record (bad JSON on one line, a field of the wrong
//! type) is yielded as an error and reading goes on with the next record; a problem
//! that leaves the rest of the file unreadable ends the iteration after its error.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::codec;
use crate::error::{type_name, Error, Location, Result};
use crate::format::{Container, Format, Schema};
use crate::lines::{Line, LineReader};
use crate::record::Record;

/// The longest line a reader accepts by default (64 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How to read a file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The record schema; detected from the first record when `None`.
    pub schema: Option<Schema>,
    /// The longest line accepted in line-based files.
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
            Container::JsonArray => Source::Array(ArraySource::load(path)?),
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
                Source::Array(array) => match array.next(&self.path) {
                    Some(Ok(item)) => Some(Ok(item)),
                    Some(Err(error)) => self.fatal(error),
                    None => None,
                },
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
    let valid = e.valid_up_to();
    let line_start = bytes[..valid]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&bytes[line_start..valid])
        .chars()
        .count()
        + 1;
    format!(
        "not valid UTF-8 text (byte 0x{:02x} at column {column})\nhint: convert the file to UTF-8, e.g. with `iconv -t UTF-8`",
        bytes[valid]
    )
}

/// `64 MiB (67108864 bytes)`, or `100 bytes`.
fn human_bytes(n: usize) -> String {
    let unit = if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        return format!("{n} bytes");
    };
    format!("{unit} ({n} bytes)")
}

/// A JSON array read whole and walked one element at a time.
struct ArraySource {
    bytes: Vec<u8>,
    pos: usize,
    /// Index of the next element.
    index: usize,
    opened: bool,
    finished: bool,
    /// Line bookkeeping up to `scanned`.
    scanned: usize,
    line: usize,
    line_start: usize,
}

impl ArraySource {
    fn load(path: &Path) -> Result<Self> {
        let mut bytes = std::fs::read(path).map_err(|e| Error::read(path, e))?;
        if bytes.starts_with(BOM) {
            bytes.drain(..BOM.len());
        }
        if let Err(e) = std::str::from_utf8(&bytes) {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            return Err(Error::at(
                &Location::line(path, line),
                utf8_message(&bytes, &e),
            ));
        }
        Ok(Self {
            bytes,
            pos: 0,
            index: 0,
            opened: false,
            finished: false,
            scanned: 0,
            line: 1,
            line_start: 0,
        })
    }

    fn skip_ws(&self, mut pos: usize) -> usize {
        while pos < self.bytes.len() && self.bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        pos
    }

    /// 1-based line and column of a byte position (positions only move forward).
    fn line_col(&mut self, pos: usize) -> (usize, usize) {
        for i in self.scanned..pos.min(self.bytes.len()) {
            if self.bytes[i] == b'\n' {
                self.line += 1;
                self.line_start = i + 1;
            }
        }
        self.scanned = self.scanned.max(pos);
        let column =
            String::from_utf8_lossy(&self.bytes[self.line_start..pos.min(self.bytes.len())])
                .chars()
                .count()
                + 1;
        (self.line, column)
    }

    fn error(&mut self, path: &Path, pos: usize, message: String) -> Error {
        let (line, column) = self.line_col(pos);
        self.finished = true;
        Error::at(
            &Location::line(path, line),
            format!("{message} (column {column})"),
        )
    }

    fn next(&mut self, path: &Path) -> Option<Result<(Location, Value)>> {
        if self.finished {
            return None;
        }
        let len = self.bytes.len();
        let mut pos = self.skip_ws(self.pos);
        let close = |source: &mut Self, pos: usize| -> Option<Result<(Location, Value)>> {
            source.finished = true;
            let after = source.skip_ws(pos + 1);
            if after < source.bytes.len() {
                return Some(Err(source.error(
                    path,
                    after,
                    "trailing characters after the JSON array".into(),
                )));
            }
            None
        };
        if !self.opened {
            // `Reader::open` checked that the first byte is `[`.
            self.opened = true;
            pos = self.skip_ws(pos + 1);
            if pos < len && self.bytes[pos] == b']' {
                return close(self, pos);
            }
        } else {
            let previous = self.index - 1;
            if pos >= len {
                return Some(Err(self.error(
                    path,
                    pos,
                    format!("the file ends inside the JSON array: expected `,` or `]` after record {previous}"),
                )));
            }
            match self.bytes[pos] {
                b',' => {
                    pos = self.skip_ws(pos + 1);
                    if pos < len && self.bytes[pos] == b']' {
                        return Some(Err(self.error(
                            path,
                            pos,
                            format!("trailing comma after record {previous}"),
                        )));
                    }
                }
                b']' => return close(self, pos),
                other => {
                    let found = char::from(other);
                    return Some(Err(self.error(
                        path,
                        pos,
                        format!("expected `,` or `]` after record {previous}, found `{found}`"),
                    )));
                }
            }
        }
        if pos >= len {
            return Some(Err(self.error(
                path,
                pos,
                "the file ends inside the JSON array: expected a record or `]`".into(),
            )));
        }
        let index = self.index;
        let (line, column) = self.line_col(pos);
        let mut stream =
            serde_json::Deserializer::from_slice(&self.bytes[pos..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(value)) => {
                self.pos = pos + stream.byte_offset();
                self.index += 1;
                Some(Ok((Location::record(path, index, Some(line)), value)))
            }
            Some(Err(e)) => {
                self.finished = true;
                let (err_line, err_column) = if e.line() <= 1 {
                    (line, column + e.column().saturating_sub(1))
                } else {
                    (line + e.line() - 1, e.column())
                };
                Some(Err(Error::at(
                    &Location::record(path, index, Some(err_line)),
                    format!("invalid JSON at column {err_column}: {}", json_message(&e)),
                )))
            }
            None => None,
        }
    }
}
