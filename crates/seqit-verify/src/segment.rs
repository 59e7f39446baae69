//! A response cut into lines and the candidate segments a step's answer may occupy.
//!
//! Each line is cleaned of the decoration models add around an answer (`Step 2:`,
//! `Then,`, `**`, `#`, `Answer:`, list markers) before it is judged, so decoration never
//! fails a right answer; lines that only introduce an answer (`**Step 2: Count the
//! words**`, `Here is my list:`) are skipped like blank lines, so an echoed instruction
//! does not pass for an answer.

/// Where a segment lies in the response: 0-based line numbers, `end_line` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    /// First line of the segment.
    pub start_line: usize,
    /// Line after its last line.
    pub end_line: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// Trimmed, as written.
    raw: String,
    /// Labels and emphasis removed, list markers kept.
    body: String,
    /// Also without a list marker: the text an answer is judged on.
    clean: String,
    /// Nothing to judge: empty, a heading or a `---` separator.
    blank: bool,
    /// A `***` line (the paragraph separator).
    rule: bool,
    /// Begins a new block: after a blank line, or carrying a label or a number.
    starts_block: bool,
}

/// The shapes an answer can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A block of lines up to the next blank or labelled line, or a single line.
    Text,
    /// Lines `1.`, `2.`, ... (blank lines between items allowed), as many as there are.
    NumberedList,
    /// Lines starting with `-`, `*` or `•`, as many as there are.
    BulletedList,
    /// Blocks separated by `***` lines.
    Paragraphs,
    /// A JSON value from a line starting with `{` (or a ``` fence) to its end.
    Json,
    /// A block followed by a line starting with `P.S.`.
    Postscript,
}

/// A candidate answer: its lines, its cleaned text and, for lists, paragraphs and
/// postscripts, its parts.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub span: Span,
    pub text: String,
    pub parts: Vec<String>,
}

const CONNECTIVES: [&str; 17] = [
    "first",
    "firstly",
    "second",
    "secondly",
    "third",
    "thirdly",
    "fourth",
    "then",
    "next",
    "after that",
    "afterwards",
    "finally",
    "lastly",
    "last",
    "to start",
    "to begin",
    "to finish",
];
const ANSWER_LABELS: [&str; 5] = ["answer", "output", "result", "response", "solution"];
const STEP_WORDS: [&str; 3] = ["step", "part", "task"];

/// `s` without a leading case-insensitive ASCII `prefix`.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// One leading label (`Step 2:`, `Then,`, `Answer:`) removed, or `None`.
fn strip_label(s: &str) -> Option<&str> {
    for word in STEP_WORDS {
        if let Some(rest) = strip_prefix_ci(s, word) {
            let rest = rest.trim_start();
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits > 0 {
                let rest = rest[digits..].trim_start();
                let rest = rest
                    .strip_prefix(|c: char| ":.)-–—".contains(c))
                    .unwrap_or(rest);
                return Some(rest.trim_start());
            }
        }
    }
    for word in CONNECTIVES.iter().chain(ANSWER_LABELS.iter()) {
        if let Some(rest) = strip_prefix_ci(s, word) {
            let separator = if ANSWER_LABELS.contains(word) {
                ":"
            } else {
                ",:"
            };
            if let Some(rest) = rest.strip_prefix(|c: char| separator.contains(c)) {
                return Some(rest.trim_start());
            }
        }
    }
    None
}

/// The number of a numbered-list line (`3.`, `3)`, `(3)` then text) and its text.
fn numbered_marker(s: &str) -> Option<(usize, &str)> {
    let inner = s.strip_prefix('(').unwrap_or(s);
    let digits = inner.len() - inner.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 3 {
        return None;
    }
    let number: usize = inner[..digits].parse().ok()?;
    let rest = &inner[digits..];
    let rest = if s.starts_with('(') {
        rest.strip_prefix(')')?
    } else {
        rest.strip_prefix(['.', ')'])?
    };
    // "2." alone, or "3.5", is an answer, not a marker.
    if !rest.starts_with(char::is_whitespace) || rest.trim().is_empty() {
        return None;
    }
    Some((number, rest.trim()))
}

/// The text of a bulleted line.
fn bullet_marker(s: &str) -> Option<&str> {
    ["- ", "* ", "• ", "+ "]
        .iter()
        .find_map(|m| s.strip_prefix(m))
        .map(str::trim)
        .filter(|rest| !rest.is_empty())
}

/// The text after a leading `P.S.` (any case), if the line starts with one.
pub(crate) fn postscript_text(s: &str) -> Option<&str> {
    strip_prefix_ci(s, "p.s.").map(str::trim)
}

fn parse_line(raw: &str) -> Line {
    let raw = raw.trim().to_string();
    let rule = matches!(raw.as_str(), "***" | "* * *");
    let separator = matches!(raw.as_str(), "---" | "___");
    let bold_line = raw.len() > 4 && raw.starts_with("**") && raw.ends_with("**");
    let header = raw.starts_with('#');
    let mut s = raw.trim_start_matches('#').trim_start();
    s = s.trim_start_matches('>').trim_start();
    let unbolded = s.replace("**", "");
    let mut body = unbolded.trim();
    let mut labelled = false;
    while let Some(rest) = strip_label(body) {
        body = rest;
        labelled = true;
    }
    let numbered = numbered_marker(body).is_some();
    let mut clean = numbered_marker(body)
        .map(|(_, rest)| rest)
        .or_else(|| bullet_marker(body))
        .unwrap_or(body);
    while let Some(rest) = strip_label(clean) {
        clean = rest;
    }
    // An introduction to an answer, not an answer.
    let heading = clean.ends_with(':') || (labelled && (bold_line || header));
    let blank = rule || separator || heading || clean.is_empty();
    Line {
        body: body.to_string(),
        clean: if blank && !rule {
            String::new()
        } else {
            clean.to_string()
        },
        raw,
        blank: blank && !rule,
        rule,
        starts_block: labelled || numbered,
    }
}

/// A response as cleaned lines.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    lines: Vec<Line>,
}

impl Document {
    pub fn parse(response: &str) -> Self {
        let mut lines: Vec<Line> = response.lines().map(parse_line).collect();
        for i in 0..lines.len() {
            let after_gap = i == 0 || lines[i - 1].blank || lines[i - 1].rule;
            lines[i].starts_block |= after_gap;
        }
        Document { lines }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    fn usable(&self, i: usize) -> bool {
        !self.lines[i].blank && !self.lines[i].rule
    }

    /// End (exclusive) of the block starting at `start`.
    fn block_end(&self, start: usize) -> usize {
        let mut end = start + 1;
        while end < self.len() && self.usable(end) && !self.lines[end].starts_block {
            end += 1;
        }
        end
    }

    fn skip_blank(&self, mut i: usize) -> usize {
        while i < self.len() && self.lines[i].blank {
            i += 1;
        }
        i
    }

    fn joined(&self, from: usize, to: usize) -> String {
        self.lines[from..to]
            .iter()
            .map(|l| l.clean.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn segment(&self, start: usize, end: usize, parts: Vec<String>) -> Segment {
        Segment {
            span: Span {
                start_line: start,
                end_line: end,
            },
            text: self.joined(start, end),
            parts,
        }
    }

    /// The candidate segments of `shape` starting at line `start`, the likeliest first.
    pub fn candidates(&self, start: usize, shape: Shape) -> Vec<Segment> {
        if start >= self.len() || !self.usable(start) {
            return Vec::new();
        }
        let line = &self.lines[start];
        match shape {
            Shape::Text => {
                let mut found = Vec::new();
                if line.starts_block {
                    let end = self.block_end(start);
                    found.push(self.segment(start, end, Vec::new()));
                    if end > start + 1 {
                        found.push(self.segment(start, start + 1, Vec::new()));
                    }
                } else {
                    found.push(self.segment(start, start + 1, Vec::new()));
                }
                found
            }
            Shape::NumberedList => self.list(start, |body, n| {
                numbered_marker(body).filter(|(m, _)| *m == n + 1).is_some()
            }),
            Shape::BulletedList => {
                // A bulleted list starts at its first bullet.
                let inside = self
                    .previous(start)
                    .is_some_and(|p| bullet_marker(&self.lines[p].body).is_some());
                if inside {
                    return Vec::new();
                }
                self.list(start, |body, _| bullet_marker(body).is_some())
            }
            Shape::Paragraphs => {
                // Paragraphs start at the first one, not after a `***`.
                let after_rule = self.previous(start).is_some_and(|p| self.lines[p].rule);
                if !line.starts_block || after_rule {
                    return Vec::new();
                }
                let mut end = self.block_end(start);
                let mut parts = vec![self.joined(start, end)];
                loop {
                    let at = self.skip_blank(end);
                    if at >= self.len() || !self.lines[at].rule {
                        break;
                    }
                    let next = self.skip_blank(at + 1);
                    if next >= self.len() || !self.usable(next) {
                        break;
                    }
                    end = self.block_end(next);
                    parts.push(self.joined(next, end));
                }
                vec![self.segment(start, end, parts)]
            }
            Shape::Json => self.json(start).into_iter().collect(),
            Shape::Postscript => {
                if !line.starts_block || postscript_text(&line.clean).is_some() {
                    return Vec::new();
                }
                let end = self.block_end(start);
                let (ps, ps_end) = match (start + 1..end)
                    .find(|&i| postscript_text(&self.lines[i].clean).is_some())
                {
                    Some(i) => (i, end),
                    None => {
                        let next = self.skip_blank(end);
                        if next >= self.len() || postscript_text(&self.lines[next].clean).is_none()
                        {
                            return Vec::new();
                        }
                        (next, self.block_end(next))
                    }
                };
                let note = self.joined(start, ps.min(end));
                let postscript = self.joined(ps, ps_end);
                vec![self.segment(start, ps_end, vec![note, postscript])]
            }
        }
    }

    /// The previous line that is not blank.
    fn previous(&self, start: usize) -> Option<usize> {
        (0..start).rev().find(|&i| !self.lines[i].blank)
    }

    /// A maximal list: item lines (`is_item(body, items so far)`), blank lines between
    /// them allowed. Maximal (and, by the callers, starting at its first item) so that
    /// "exactly N items" fails on N + 1.
    fn list(&self, start: usize, is_item: impl Fn(&str, usize) -> bool) -> Vec<Segment> {
        if !is_item(&self.lines[start].body, 0) {
            return Vec::new();
        }
        let mut parts = vec![self.lines[start].clean.clone()];
        let mut end = start + 1;
        loop {
            let next = self.skip_blank(end);
            if next >= self.len() || !is_item(&self.lines[next].body, parts.len()) {
                break;
            }
            parts.push(self.lines[next].clean.clone());
            end = next + 1;
        }
        vec![self.segment(start, end, parts)]
    }

    /// A JSON value: fenced, or from a `{` line to the line where its braces close.
    fn json(&self, start: usize) -> Option<Segment> {
        let body = self.lines[start].body.trim();
        if body.starts_with("```") {
            let close = (start + 1..self.len()).find(|&i| self.lines[i].raw.starts_with("```"))?;
            let text = self.lines[start + 1..close]
                .iter()
                .map(|l| l.raw.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            return Some(Segment {
                span: Span {
                    start_line: start,
                    end_line: close + 1,
                },
                text,
                parts: Vec::new(),
            });
        }
        if !body.starts_with('{') {
            return None;
        }
        let mut text = String::new();
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for i in start..self.len() {
            let line = if i == start {
                body
            } else {
                self.lines[i].raw.as_str()
            };
            for c in line.chars() {
                text.push(c);
                if in_string {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match c {
                    '"' => in_string = true,
                    '{' | '[' => depth += 1,
                    '}' | ']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Some(Segment {
                                span: Span {
                                    start_line: start,
                                    end_line: i + 1,
                                },
                                text,
                                parts: Vec::new(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            text.push('\n');
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_markers() {
        assert_eq!(strip_label("Step 2: 42"), Some("42"));
        assert_eq!(strip_label("step 3 - done"), Some("done"));
        assert_eq!(strip_label("Then, the sea"), Some("the sea"));
        assert_eq!(strip_label("Then the sea"), None);
        assert_eq!(strip_label("Answer: 7"), Some("7"));
        assert_eq!(strip_label("Stepping stones"), None);
        assert_eq!(numbered_marker("2. Pear"), Some((2, "Pear")));
        assert_eq!(numbered_marker("(3) Plum"), Some((3, "Plum")));
        assert_eq!(numbered_marker("2."), None);
        assert_eq!(numbered_marker("3.5 liters"), None);
        assert_eq!(bullet_marker("- apple"), Some("apple"));
        assert_eq!(bullet_marker("-5"), None);
    }

    #[test]
    fn lines_are_cleaned() {
        let doc = Document::parse(
            "**Step 1: Write a sentence**\n**Step 1:** THE SEA.\n\n2. Then, 7\n## Here is the list:\n- a\n***",
        );
        let l = &doc.lines;
        assert!(l[0].blank, "a bold labelled line is a heading");
        assert_eq!(l[1].clean, "THE SEA.");
        assert!(l[2].blank);
        assert_eq!(l[3].clean, "7");
        assert!(l[3].starts_block);
        assert!(l[4].blank);
        assert_eq!(l[5].body, "- a");
        assert_eq!(l[5].clean, "a");
        assert!(l[6].rule);
    }

    #[test]
    fn candidates_by_shape() {
        let doc = Document::parse("1. a\n\n2. b\n3. c\n\nX\n***\nY\n\nZ\nP.S. w");
        let list = doc.candidates(0, Shape::NumberedList);
        assert_eq!(list[0].parts, vec!["a", "b", "c"]);
        assert_eq!(list[0].span.end_line, 4);
        let paragraphs = doc.candidates(5, Shape::Paragraphs);
        assert_eq!(paragraphs[0].parts, vec!["X", "Y"]);
        let ps = doc.candidates(9, Shape::Postscript);
        assert_eq!(ps[0].parts, vec!["Z", "P.S. w"]);
        let doc = Document::parse("Step 3: {\"a\": 1,\n \"b\": \"}\"}\nafter");
        let json = doc.candidates(0, Shape::Json);
        assert_eq!(json[0].text, "{\"a\": 1,\n\"b\": \"}\"}");
        assert_eq!(json[0].span.end_line, 2);
    }
}
