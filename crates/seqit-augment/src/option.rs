//! The four Seq-Instruct edits and the rules that read the teacher's choice out of a
//! classification answer.

use serde::{Deserialize, Serialize};

/// Which edit the teacher chose for an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Edit {
    /// A: decompose the instruction into two sequential tasks.
    #[serde(rename = "A")]
    Decompose,
    /// B: add a task to do first.
    #[serde(rename = "B")]
    Prefix,
    /// C: add a task to do after.
    #[serde(rename = "C")]
    Suffix,
    /// D: keep the instruction as it is (the item is frozen).
    #[serde(rename = "D")]
    Keep,
}

impl Edit {
    /// The four edits in letter order, A to D.
    pub const ALL: [Edit; 4] = [Edit::Decompose, Edit::Prefix, Edit::Suffix, Edit::Keep];

    /// The option letter, `A` to `D`.
    pub fn letter(self) -> char {
        match self {
            Edit::Decompose => 'A',
            Edit::Prefix => 'B',
            Edit::Suffix => 'C',
            Edit::Keep => 'D',
        }
    }

    /// The edit of an option letter, either case; `None` for other characters.
    pub fn from_letter(letter: char) -> Option<Self> {
        match letter.to_ascii_uppercase() {
            'A' => Some(Edit::Decompose),
            'B' => Some(Edit::Prefix),
            'C' => Some(Edit::Suffix),
            'D' => Some(Edit::Keep),
            _ => None,
        }
    }

    /// The SeqEval mode name (`decompose`, `prefix`, `suffix`; `keep` for D).
    pub fn mode(self) -> &'static str {
        match self {
            Edit::Decompose => "decompose",
            Edit::Prefix => "prefix",
            Edit::Suffix => "suffix",
            Edit::Keep => "keep",
        }
    }
}

/// Which parsing rule decided the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// An explicit "option X" / "option: X" mention.
    Explicit,
    /// A bare "X." letter.
    Letter,
    /// A keyword: "prefix task", "suffix task" or "decompose".
    Keyword,
    /// Nothing matched: D by default (counted as a parse failure).
    Default,
}

/// The option read from a classification answer and the rule that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedOption {
    /// The option read (D when no rule matched).
    pub edit: Edit,
    /// The rule that read it.
    pub rule: Rule,
}

/// Reads the chosen option, trying the rules in order: an explicit "option X" or
/// "option: X" mention (case-insensitive), then a bare capital letter followed by a
/// period ("B."), then the keywords "prefix task" (B), "suffix task" (C) and
/// "decompose" (A), else D.
///
/// When a rule matches several options, the paper's priority decides: its parser tests
/// "option a" before "option b", "option c" and "option d", so A > B > C > D whatever
/// the order in the text ("option A does not fit ... Option: C" is A). Structured
/// outputs (the default) make such answers rare: the reply ends with one option line.
pub fn parse_option(text: &str) -> ParsedOption {
    if let Some(edit) = first_explicit(text) {
        return ParsedOption {
            edit,
            rule: Rule::Explicit,
        };
    }
    if let Some(edit) = first_bare_letter(text) {
        return ParsedOption {
            edit,
            rule: Rule::Letter,
        };
    }
    let lower = text.to_lowercase();
    let keywords = [
        ("prefix task", Edit::Prefix),
        ("suffix task", Edit::Suffix),
        ("decompose", Edit::Decompose),
    ];
    if let Some((_, edit)) = keywords.iter().find(|(word, _)| lower.contains(word)) {
        return ParsedOption {
            edit: *edit,
            rule: Rule::Keyword,
        };
    }
    ParsedOption {
        edit: Edit::Keep,
        rule: Rule::Default,
    }
}

/// The highest-priority option named by an "option X" / "option: X" mention (any case;
/// spaces, `:` or `**` between) whose letter is A–D and stands alone (not the start of a
/// word such as "option because").
fn first_explicit(text: &str) -> Option<Edit> {
    let bytes = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let mut found = None;
    for (at, _) in lower.match_indices("option") {
        if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let mut i = at + "option".len();
        while i < bytes.len() && matches!(bytes[i], b' ' | b':' | b'*' | b'\t') {
            i += 1;
        }
        let Some(&letter) = bytes.get(i) else {
            continue;
        };
        let alone = bytes
            .get(i + 1)
            .is_none_or(|next| !next.is_ascii_alphanumeric());
        if alone {
            if let Some(edit) = Edit::from_letter(letter as char) {
                found = Some(found.map_or(edit, |f: Edit| f.min(edit)));
            }
        }
    }
    found
}

/// The highest-priority capital A–D directly followed by `.` and not preceded by a
/// letter or digit.
fn first_bare_letter(text: &str) -> Option<Edit> {
    let bytes = text.as_bytes();
    let mut found = None;
    for i in 0..bytes.len().saturating_sub(1) {
        let letter = bytes[i];
        if matches!(letter, b'A'..=b'D')
            && bytes[i + 1] == b'.'
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
        {
            if let Some(edit) = Edit::from_letter(letter as char) {
                found = Some(found.map_or(edit, |f: Edit| f.min(edit)));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real-looking teacher answers and the option (and rule) they must give.
    const TABLE: &[(&str, Edit, Rule)] = &[
        (
            "The instruction is a direct question.\nOption: D",
            Edit::Keep,
            Rule::Explicit,
        ),
        (
            "Listing the review's points first would help.\n\nOption: B",
            Edit::Prefix,
            Rule::Explicit,
        ),
        // Lower case, no colon.
        (
            "I think option b is the best fit here.",
            Edit::Prefix,
            Rule::Explicit,
        ),
        // Several options mentioned: the paper's priority A > B > C > D, not the order.
        (
            "Option A would split it, but there is only one step. Option B adds nothing useful. \
             A follow-up explanation helps, so the answer is Option C.",
            Edit::Decompose,
            Rule::Explicit,
        ),
        (
            "Option D keeps it; option c would add a check.",
            Edit::Suffix,
            Rule::Explicit,
        ),
        ("D. or maybe B.", Edit::Prefix, Rule::Letter),
        // Markdown emphasis around the colon.
        (
            "Reasoning: two steps are joined by 'then'.\n**Option:** A",
            Edit::Decompose,
            Rule::Explicit,
        ),
        ("OPTION: c", Edit::Suffix, Rule::Explicit),
        // "options" and "optional" are not mentions; "option because" has no letter.
        (
            "None of the options fit well; an optional step would be artificial. C.",
            Edit::Suffix,
            Rule::Letter,
        ),
        (
            "I pick this option because the task is short.\nD.",
            Edit::Keep,
            Rule::Letter,
        ),
        // A bare letter answer.
        ("B.", Edit::Prefix, Rule::Letter),
        // "DNA." must not read as "A.".
        (
            "The question is about DNA. Adding a suffix task fits.",
            Edit::Suffix,
            Rule::Keyword,
        ),
        (
            "We should add a prefix task that lists the facts.",
            Edit::Prefix,
            Rule::Keyword,
        ),
        (
            "It is best to decompose this into two steps.",
            Edit::Decompose,
            Rule::Keyword,
        ),
        // Keyword order: "prefix task" is tried before "decompose".
        (
            "Rather than decompose it, a prefix task fits.",
            Edit::Prefix,
            Rule::Keyword,
        ),
        // Nothing recognisable.
        ("I am not sure.", Edit::Keep, Rule::Default),
        ("", Edit::Keep, Rule::Default),
        // A letter outside A-D after "option" is ignored.
        (
            "Option E does not exist, so: option: d",
            Edit::Keep,
            Rule::Explicit,
        ),
        ("Option Z.", Edit::Keep, Rule::Default),
    ];

    #[test]
    fn table_of_teacher_answers() {
        for (text, edit, rule) in TABLE {
            assert_eq!(
                parse_option(text),
                ParsedOption {
                    edit: *edit,
                    rule: *rule
                },
                "answer: {text:?}"
            );
        }
    }

    #[test]
    fn letters_round_trip() {
        for edit in Edit::ALL {
            assert_eq!(Edit::from_letter(edit.letter()), Some(edit));
            assert_eq!(
                serde_json::to_string(&edit).unwrap(),
                format!("\"{}\"", edit.letter())
            );
        }
    }
}
