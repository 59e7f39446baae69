//! Reading a file line by line with a cap on the length of one line, so that a file
//! without line breaks cannot make a reader buffer gigabytes.

use std::io::{BufRead, ErrorKind};

/// One line of input.
#[derive(Debug)]
pub(crate) enum Line {
    /// The bytes of the line, without `\n` (a trailing `\r` is kept).
    Text(Vec<u8>),
    /// The line was longer than the cap; its bytes were skipped.
    TooLong,
}

/// Splits a reader into lines of at most `max_bytes` bytes each.
pub(crate) struct LineReader<R> {
    inner: R,
    max_bytes: usize,
    /// 1-based number of the last line returned.
    line: usize,
    done: bool,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max_bytes: usize) -> Self {
        Self {
            inner,
            max_bytes,
            line: 0,
            done: false,
        }
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The next line and its 1-based number, `None` at the end.
    pub fn next_line(&mut self) -> Option<std::io::Result<(usize, Line)>> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if available.is_empty() {
                self.done = true;
                if !any {
                    return None;
                }
                break;
            }
            any = true;
            let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            if !too_long {
                if buf.len() + chunk.len() > self.max_bytes {
                    too_long = true;
                    buf = Vec::new();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            let used = chunk.len() + usize::from(found_newline);
            self.inner.consume(used);
            if found_newline {
                break;
            }
        }
        self.line += 1;
        let line = if too_long {
            Line::TooLong
        } else {
            Line::Text(buf)
        };
        Some(Ok((self.line, line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], cap: usize) -> Vec<(usize, Option<Vec<u8>>)> {
        let mut reader = LineReader::new(std::io::BufReader::with_capacity(4, text), cap);
        let mut out = Vec::new();
        while let Some(item) = reader.next_line() {
            let (n, line) = item.unwrap();
            out.push((
                n,
                match line {
                    Line::Text(t) => Some(t),
                    Line::TooLong => None,
                },
            ));
        }
        out
    }

    #[test]
    fn splits_and_caps() {
        let got = lines(b"ab\n\nlonger line\nxyz", 5);
        assert_eq!(
            got,
            vec![
                (1, Some(b"ab".to_vec())),
                (2, Some(Vec::new())),
                (3, None),
                (4, Some(b"xyz".to_vec())),
            ]
        );
        assert_eq!(lines(b"a\n", 5), vec![(1, Some(b"a".to_vec()))]);
        assert!(lines(b"", 5).is_empty());
    }
}
