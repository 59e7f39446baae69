//! Reading results out of the teacher's free text: the rewritten instruction, the added
//! task, the step-0 split and the refinement verdict.

/// Marker before the rewritten instruction.
pub const NEW_INSTRUCTION_MARKER: &str = "#New Instruction#";
/// Marker before the added sub-task (one line).
pub const ADDED_TASK_MARKER: &str = "#Added Task#";
/// Marker that ends a result.
pub const END_MARKER: &str = "###";

/// Where the rewritten instruction starts when the teacher dropped the `#` of the
/// marker: the paper's code falls back to the last plain "new instruction".
const NEW_INSTRUCTION_FALLBACK: &str = "new instruction";

/// The rewritten instruction: the text after the **last** `#New Instruction#` marker
/// (any case; without one, after the last "new instruction", as the paper's code falls
/// back) up to the first `###` after it (or the end), trimmed of whitespace and of the
/// `:`/`#` that usually follow the marker, cut before a line that starts an explanation
/// (`Explanation:`, `#Explanation#`, `**Explanation**`), and without quotes around the
/// whole of it. `None` when there is no marker or nothing after it.
pub fn extract_new_instruction(text: &str) -> Option<String> {
    let after = after_last_marker(text, NEW_INSTRUCTION_MARKER)
        .or_else(|| after_last_marker(text, NEW_INSTRUCTION_FALLBACK))?
        .trim_start_matches([':', '#', '*', ' ', '\t', '\n', '\r']);
    let body = match after.find(END_MARKER) {
        Some(end) => &after[..end],
        None => after,
    };
    let body = cut_at_explanation(body);
    non_empty(unquote(non_empty(body)?.as_str()))
}

/// `text` up to the first line (after the first) that starts an explanation.
fn cut_at_explanation(text: &str) -> &str {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i > 0 && starts_explanation(line) {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

/// `Explanation:`, `#Explanation#`, `**Explanation**` or `Explanation` alone on a line.
fn starts_explanation(line: &str) -> bool {
    let head = line.trim().trim_start_matches(['#', '*']);
    let Some(word) = head.get(..11) else {
        return false;
    };
    let rest = head[11..].trim_start_matches(['#', '*']);
    word.eq_ignore_ascii_case("explanation") && (rest.is_empty() || rest.starts_with(':'))
}

/// `text` without one pair of quotes around all of it (`"..."`, `'...'`, `“...”`).
fn unquote(text: &str) -> &str {
    for (open, close) in [('"', '"'), ('\'', '\''), ('“', '”')] {
        if let Some(inner) = text
            .strip_prefix(open)
            .and_then(|rest| rest.strip_suffix(close))
        {
            if !inner.contains([open, close]) {
                return inner;
            }
        }
    }
    text
}

/// The added task: the rest of the line after the last `#Added Task#` marker that comes
/// before the new instruction (any case), trimmed like the instruction.
pub fn extract_added_task(text: &str) -> Option<String> {
    let before_instruction = match rfind_ignore_case(text, NEW_INSTRUCTION_MARKER) {
        Some(at) => &text[..at],
        None => text,
    };
    let after = after_last_marker(before_instruction, ADDED_TASK_MARKER)?;
    let line = after.trim_start_matches([' ', '\t', ':']);
    let line = line.split('\n').next().unwrap_or_default();
    let line = line.split(END_MARKER).next().unwrap_or_default();
    non_empty(line)
}

/// The text after the last occurrence of `marker` (any case).
fn after_last_marker<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    rfind_ignore_case(text, marker).map(|at| &text[at + marker.len()..])
}

/// Byte offset of the last case-insensitive occurrence of an ASCII `needle`.
fn rfind_ignore_case(text: &str, needle: &str) -> Option<usize> {
    let hay = text.as_bytes();
    let needle = needle.as_bytes();
    if needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

fn non_empty(text: &str) -> Option<String> {
    let trimmed = text.trim().trim_start_matches(':').trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// The step-0 split of a raw prompt: `(instruction, input)`, the input `None` when the
/// teacher wrote `none` or nothing. `None` when the `#Instruction#` part is missing.
pub fn extract_split(text: &str) -> Option<(String, Option<String>)> {
    let body = match text.find(END_MARKER) {
        Some(end) => &text[..end],
        None => text,
    };
    let input_at = rfind_ignore_case(body, "#Input#");
    let head = &body[..input_at.unwrap_or(body.len())];
    let instruction = non_empty(after_last_marker(head, "#Instruction#")?)?;
    let input = input_at
        .and_then(|at| non_empty(&body[at + "#Input#".len()..]))
        .filter(|input| !input.eq_ignore_ascii_case("none"));
    Some((instruction, input))
}

/// The refinement verdict: `Some(true)` when the rewrite kept everything
/// ("Verdict: keep"), `Some(false)` when it lost something ("Verdict: lost"), `None`
/// when the answer has no verdict. The last verdict wins.
pub fn extract_verdict(text: &str) -> Option<bool> {
    let after = after_last_marker(text, "verdict")?;
    let word = after
        .trim_start_matches([' ', ':', '*', '\t'])
        .to_lowercase();
    if word.starts_with("keep") {
        Some(true)
    } else if word.starts_with("lost") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real-looking rewrite answers and the instruction each must give.
    const TABLE: &[(&str, Option<&str>)] = &[
        (
            "The review mixes praise and complaints.\n#Added Task#: List the points.\n#New Instruction#: First, list the points. Then answer yes or no.\n###",
            Some("First, list the points. Then answer yes or no."),
        ),
        // Lower-case marker, no colon, text on the next line.
        (
            "explanation...\n#new instruction#\nWrite a poem. Then explain it.\n###\nHope this helps!",
            Some("Write a poem. Then explain it."),
        ),
        // Marker twice: the explanation quotes it, the result follows the last one.
        (
            "I will write the result after #New Instruction# as asked.\n#New Instruction#: Solve 2x=4. Then check x.###",
            Some("Solve 2x=4. Then check x."),
        ),
        // Missing `###`: everything to the end.
        (
            "#New Instruction#:   Translate it. Then count the words.  \n",
            Some("Translate it. Then count the words."),
        ),
        // `###` twice: up to the first one after the marker.
        (
            "### Explanation\nx\n#New Instruction#: A then B ### extra ###",
            Some("A then B"),
        ),
        // Multi-line instruction with a code block is kept whole.
        (
            "#New Instruction#: First, explain the bug.\nThen fix:\n```\nx = 1\n```\n###",
            Some("First, explain the bug.\nThen fix:\n```\nx = 1\n```"),
        ),
        // Quotes around the whole instruction go; quotes inside it stay.
        (
            "#New Instruction#: \"Summarise the text. Then give it a title.\"\n###",
            Some("Summarise the text. Then give it a title."),
        ),
        (
            "#New Instruction#: “List the names. Then sort them.”###",
            Some("List the names. Then sort them."),
        ),
        (
            "#New Instruction#: Translate \"bonjour\". Then use it in a sentence.###",
            Some("Translate \"bonjour\". Then use it in a sentence."),
        ),
        // An explanation written after the instruction (no `###` before it) is cut off.
        (
            "#New Instruction#: Find the verbs. Then conjugate them.\nExplanation: the verbs come first.",
            Some("Find the verbs. Then conjugate them."),
        ),
        (
            "#New Instruction#: Count the words. Then double it.\n#Explanation#\nBecause.\n###",
            Some("Count the words. Then double it."),
        ),
        (
            "#New Instruction#: Write an explanation: why is the sky blue? Then summarise it.###",
            Some("Write an explanation: why is the sky blue? Then summarise it."),
        ),
        // Without `#...#`, the paper's fallback: after the last plain "new instruction".
        (
            "Here is the new instruction: do A then B.",
            Some("do A then B."),
        ),
        (
            "**New Instruction**: \"Name a river. Then give its length.\"\n###",
            Some("Name a river. Then give its length."),
        ),
        // No marker at all.
        ("I think option B fits best.", None),
        // Marker with nothing after it.
        ("#New Instruction#: ###", None),
        ("#New Instruction#", None),
        ("", None),
    ];

    #[test]
    fn table_of_rewrite_answers() {
        for (text, expected) in TABLE {
            assert_eq!(
                extract_new_instruction(text).as_deref(),
                *expected,
                "answer: {text:?}"
            );
        }
    }

    #[test]
    fn added_task_comes_from_its_own_line() {
        let text = "Because...\n#Added Task#: Quote the sentence.\n#New Instruction#: First quote it. Then answer.\n###";
        assert_eq!(
            extract_added_task(text).as_deref(),
            Some("Quote the sentence.")
        );
        // A marker mentioned inside the new instruction does not count.
        let text =
            "#Added Task#: Rank them.\n#New Instruction#: Give tips. #Added Task# then rank.###";
        assert_eq!(extract_added_task(text).as_deref(), Some("Rank them."));
        assert_eq!(extract_added_task("#New Instruction#: x ###"), None);
        assert_eq!(
            extract_added_task("#added task#:Check it.###").as_deref(),
            Some("Check it.")
        );
    }

    #[test]
    fn split_and_verdict() {
        assert_eq!(
            extract_split("#Instruction#: Answer the question.\n#Input#: Q: why?\n###"),
            Some(("Answer the question.".into(), Some("Q: why?".into())))
        );
        assert_eq!(
            extract_split("#Instruction#: Say hi.\n#Input#: none\n###"),
            Some(("Say hi.".into(), None))
        );
        assert_eq!(extract_split("no markers"), None);
        assert_eq!(extract_verdict("Fine.\nVerdict: keep"), Some(true));
        assert_eq!(
            extract_verdict("**Verdict:** Lost, the table is gone"),
            Some(false)
        );
        assert_eq!(extract_verdict("looks good"), None);
    }
}
