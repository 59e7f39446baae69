//! Tables as data, and the two ways the reports lay them out: HTML ([`html_table`]) and
//! Markdown ([`markdown_table`]). A section computes its [`Table`] once; each report
//! renders it in its own format.

use std::fmt::Write;

use crate::svg::escape;

/// Column headings and rows of cells, as plain text.
pub struct Table {
    pub headings: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these headings and no rows yet.
    pub fn new<S: Into<String>>(headings: impl IntoIterator<Item = S>) -> Self {
        Table {
            headings: headings.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }
}

/// One cell of a [`Table`].
#[derive(Default)]
pub struct Cell {
    pub text: String,
    /// The cell's HTML `class` (the sign of a delta); Markdown has none.
    pub class: Option<&'static str>,
    /// A number that qualifies the text (e.g. how many steps a rate is over), shown after
    /// it in brackets, muted in HTML.
    pub note: Option<String>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell {
            text,
            ..Cell::default()
        }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::from(text.to_string())
    }
}

/// `<table>` (with `class` when given), a heading row, then a row per row; text escaped.
pub fn html_table(h: &mut String, class: Option<&str>, table: &Table) {
    match class {
        Some(class) => {
            let _ = write!(h, "<table class=\"{class}\"><tr>");
        }
        None => h.push_str("<table><tr>"),
    }
    for heading in &table.headings {
        let _ = write!(h, "<th>{}</th>", escape(heading));
    }
    h.push_str("</tr>\n");
    for row in &table.rows {
        h.push_str("<tr>");
        for cell in row {
            match cell.class {
                Some(class) => {
                    let _ = write!(h, "<td class=\"{class}\">");
                }
                None => h.push_str("<td>"),
            }
            h.push_str(&escape(&cell.text));
            if let Some(note) = &cell.note {
                let _ = write!(h, " <span class=\"muted\">({})</span>", escape(note));
            }
            h.push_str("</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

/// A pipe table followed by a blank line; text as it is.
pub fn markdown_table(m: &mut String, table: &Table) {
    m.push('|');
    for heading in &table.headings {
        let _ = write!(m, " {heading} |");
    }
    let _ = writeln!(m, "\n|{}", "---|".repeat(table.headings.len()));
    for row in &table.rows {
        m.push('|');
        for cell in row {
            let _ = write!(m, " {}", cell.text);
            if let Some(note) = &cell.note {
                let _ = write!(m, " ({note})");
            }
            m.push_str(" |");
        }
        m.push('\n');
    }
    m.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut table = Table::new(["model", "rate <n>"]);
        table.rows.push(vec![
            "a & b".into(),
            Cell {
                class: Some("pos"),
                note: Some("4".into()),
                ..Cell::from("0.75")
            },
        ]);
        table.rows.push(vec!["c".into(), "–".into()]);
        table
    }

    #[test]
    fn html_escapes_text_and_marks_classes_and_notes() {
        let mut h = String::new();
        html_table(&mut h, Some("results"), &sample());
        assert_eq!(
            h,
            "<table class=\"results\"><tr><th>model</th><th>rate &lt;n&gt;</th></tr>\n\
             <tr><td>a &amp; b</td><td class=\"pos\">0.75 <span class=\"muted\">(4)</span></td></tr>\n\
             <tr><td>c</td><td>–</td></tr>\n</table>\n"
        );
    }

    #[test]
    fn markdown_is_a_pipe_table_and_a_blank_line() {
        let mut m = String::new();
        markdown_table(&mut m, &sample());
        assert_eq!(
            m,
            "| model | rate <n> |\n|---|---|\n| a & b | 0.75 (4) |\n| c | – |\n\n"
        );
    }
}
