//! A JSON array of records read as a stream: the bytes of one element at a time are cut
//! out by a small scanner (strings, escapes and nesting), then parsed, so memory holds
//! one record however large the file is. Lines and columns are counted as bytes go by,
//! so errors name the line (and column) as if the whole file had been parsed at once.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Location, Result};
use crate::read::{human_bytes, json_message, utf8_message_from, BOM};

/// Where the next unread byte is.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// 1-based line.
    line: usize,
    /// Characters before it on its line.
    chars: usize,
}

impl Position {
    fn advance(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.line += 1;
                self.chars = 0;
            } else if b & 0xC0 != 0x80 {
                self.chars += 1;
            }
        }
    }

    fn column(&self) -> usize {
        self.chars + 1
    }
}

/// Scanner state inside one element.
#[derive(Default)]
struct Scan {
    /// Closing brackets expected, innermost last.
    closers: Vec<u8>,
    in_string: bool,
    escaped: bool,
    /// The element is a bare scalar (number, `true`, ...): it ends before a delimiter.
    scalar: bool,
    started: bool,
}

impl Scan {
    /// Feeds bytes; returns how many belong to the element and whether it ended.
    fn feed(&mut self, bytes: &[u8]) -> (usize, bool) {
        for (i, &b) in bytes.iter().enumerate() {
            if !self.started {
                self.started = true;
                match b {
                    b'{' => self.closers.push(b'}'),
                    b'[' => self.closers.push(b']'),
                    b'"' => self.in_string = true,
                    _ => self.scalar = true,
                }
                continue;
            }
            if self.scalar {
                if matches!(b, b',' | b']' | b'}') || b.is_ascii_whitespace() {
                    return (i, true);
                }
                continue;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.closers.is_empty() {
                        return (i + 1, true);
                    }
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' => self.closers.push(b'}'),
                b'[' => self.closers.push(b']'),
                b'}' | b']' => {
                    // A mismatched bracket ends the element too: parsing reports it.
                    let matched = self.closers.pop() == Some(b);
                    if !matched || self.closers.is_empty() {
                        return (i + 1, true);
                    }
                }
                _ => {}
            }
        }
        (bytes.len(), false)
    }
}

/// The buffered bytes, reading more when none are left (empty at the end).
fn fill(input: &mut BufReader<File>) -> std::io::Result<&[u8]> {
    loop {
        match input.fill_buf() {
            Ok(_) => return input.fill_buf(),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A JSON array walked one element at a time.
pub(crate) struct ArraySource {
    input: BufReader<File>,
    max_bytes: usize,
    at: Position,
    /// Index of the next element.
    index: usize,
    opened: bool,
    finished: bool,
}

impl ArraySource {
    pub fn open(path: &Path, max_bytes: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::read(path, e))?;
        let mut input = BufReader::with_capacity(1 << 16, file);
        let head = input.fill_buf().map_err(|e| Error::read(path, e))?;
        if head.starts_with(BOM) {
            input.consume(BOM.len());
        }
        Ok(Self {
            input,
            max_bytes,
            at: Position { line: 1, chars: 0 },
            index: 0,
            opened: false,
            finished: false,
        })
    }

    fn bump(&mut self) {
        let byte = [self.input.buffer()[0]];
        self.at.advance(&byte);
        self.input.consume(1);
    }

    /// Skips whitespace; the next byte, if any.
    fn skip_ws(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let bytes = fill(&mut self.input)?;
            if bytes.is_empty() {
                return Ok(None);
            }
            let n = bytes
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(bytes.len());
            let found = bytes.get(n).copied();
            self.at.advance(&bytes[..n]);
            self.input.consume(n);
            if found.is_some() {
                return Ok(found);
            }
        }
    }

    /// The bytes of the element starting at the next byte (`None` when it is longer
    /// than the limit; it is skipped all the same).
    fn element(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut scan = Scan::default();
        let mut out = Vec::new();
        let mut too_long = false;
        loop {
            let bytes = fill(&mut self.input)?;
            if bytes.is_empty() {
                break;
            }
            let (n, ended) = scan.feed(bytes);
            if !too_long {
                if out.len() + n > self.max_bytes {
                    too_long = true;
                    out = Vec::new();
                } else {
                    out.extend_from_slice(&bytes[..n]);
                }
            }
            self.at.advance(&bytes[..n]);
            self.input.consume(n);
            if ended {
                break;
            }
        }
        Ok((!too_long).then_some(out))
    }

    fn error(&mut self, path: &Path, message: String) -> Error {
        self.finished = true;
        Error::at(
            &Location::line(path, self.at.line),
            format!("{message} (column {})", self.at.column()),
        )
    }

    /// After the closing `]`: only whitespace may follow.
    fn close(&mut self, path: &Path) -> Option<Result<(Location, Value)>> {
        self.finished = true;
        match self.skip_ws() {
            Ok(None) => None,
            Ok(Some(_)) => Some(Err(
                self.error(path, "trailing characters after the JSON array".into())
            )),
            Err(e) => Some(Err(Error::read(path, e))),
        }
    }

    pub fn next(&mut self, path: &Path) -> Option<Result<(Location, Value)>> {
        if self.finished {
            return None;
        }
        match self.step(path) {
            Ok(item) => item,
            Err(e) => {
                self.finished = true;
                Some(Err(Error::read(path, e)))
            }
        }
    }

    fn step(&mut self, path: &Path) -> std::io::Result<Option<Result<(Location, Value)>>> {
        let mut next = self.skip_ws()?;
        if !self.opened {
            // `Reader::open` checked that the first byte is `[`.
            self.opened = true;
            self.bump();
            next = self.skip_ws()?;
            if next == Some(b']') {
                self.bump();
                return Ok(self.close(path));
            }
        } else {
            let previous = self.index - 1;
            match next {
                None => {
                    return Ok(Some(Err(self.error(
                        path,
                        format!("the file ends inside the JSON array: expected `,` or `]` after record {previous}"),
                    ))))
                }
                Some(b',') => {
                    self.bump();
                    next = self.skip_ws()?;
                    if next == Some(b']') {
                        return Ok(Some(Err(
                            self.error(path, format!("trailing comma after record {previous}"))
                        )));
                    }
                }
                Some(b']') => {
                    self.bump();
                    return Ok(self.close(path));
                }
                Some(other) => {
                    let found = char::from(other);
                    return Ok(Some(Err(self.error(
                        path,
                        format!("expected `,` or `]` after record {previous}, found `{found}`"),
                    ))));
                }
            }
        }
        if next.is_none() {
            return Ok(Some(Err(self.error(
                path,
                "the file ends inside the JSON array: expected a record or `]`".into(),
            ))));
        }
        let index = self.index;
        self.index += 1;
        let start = self.at;
        let at = Location::record(path, index, Some(start.line));
        let Some(bytes) = self.element()? else {
            return Ok(Some(Err(Error::at(
                &at,
                format!(
                    "the record is longer than the limit of {}\nhint: raise the limit with --max-line-bytes",
                    human_bytes(self.max_bytes)
                ),
            ))));
        };
        if let Err(e) = std::str::from_utf8(&bytes) {
            let valid = &bytes[..e.valid_up_to()];
            let line = start.line + valid.iter().filter(|&&b| b == b'\n').count();
            return Ok(Some(Err(Error::at(
                &Location::line(path, line),
                utf8_message_from(&bytes, &e, start.column()),
            ))));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => Ok(Some(Ok((at, value)))),
            Err(e) => {
                self.finished = true;
                let (err_line, err_column) = if e.line() <= 1 {
                    (start.line, start.column() + e.column().saturating_sub(1))
                } else {
                    (start.line + e.line() - 1, e.column())
                };
                Ok(Some(Err(Error::at(
                    &Location::record(path, index, Some(err_line)),
                    format!("invalid JSON at column {err_column}: {}", json_message(&e)),
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &[u8]) -> Vec<String> {
        let mut scan_all = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut scan = Scan::default();
            // Feed in pieces of 3 bytes to cross buffer boundaries.
            let mut taken = 0;
            loop {
                let piece = &rest[taken..(taken + 3).min(rest.len())];
                if piece.is_empty() {
                    break;
                }
                let (n, ended) = scan.feed(piece);
                taken += n;
                if ended {
                    break;
                }
            }
            scan_all.push(String::from_utf8_lossy(&rest[..taken]).into_owned());
            rest = &rest[taken..];
            while let [b' ' | b',', tail @ ..] = rest {
                rest = tail;
            }
        }
        scan_all
    }

    #[test]
    fn elements_end_where_json_says() {
        assert_eq!(
            elements(br#"{"a": "}\"]", "b": [1, {"c": 2}]}, "x\"y", 12.5e3 true,[[]]"#),
            [
                r#"{"a": "}\"]", "b": [1, {"c": 2}]}"#,
                r#""x\"y""#,
                "12.5e3",
                "true",
                "[[]]"
            ]
        );
        // A mismatched bracket ends the element, for the parser to report.
        assert_eq!(elements(br#"{"a": [1}"#), [r#"{"a": [1}"#]);
    }
}
