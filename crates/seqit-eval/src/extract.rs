//! Answer extraction from model outputs: numbers for GSM8K/MGSM, the text after an
//! answer marker for XQuAD.
//!
//! Numbers: [`find_numbers`] scans for numerals written the ways models write them:
//! `1,234.5`, `$1,200`, `-7`, `−7` (U+2212), `.5`, `50%`, `12 km`, `1.234.567` and
//! `1.234,5` (European grouping), `3,5` (decimal comma), and digits of other scripts
//! (Arabic-Indic, Devanagari, Bengali, Telugu, Thai, full-width). A `-` is a sign only
//! when it does not follow a letter or digit (`COVID-19` is 19, `5-3` is 5 and 3).
//! Ambiguities are settled so: `1,234` is one thousand two hundred thirty-four (a comma
//! followed by exactly three digits groups thousands); `3,5` and `3,25` are decimals; a
//! single `.` is a decimal point (`1.234` is 1.234); several dots with three-digit groups
//! group thousands; `1,2,3` is three numbers.
//!
//! [`extract_number`] in [`Mode::Strict`] takes the first number after the last answer
//! marker (`The answer is`, `####`, and the localized phrases in [`ANSWER_MARKERS`]) and
//! nothing when no marker is present; [`Mode::Flexible`] does the same when a marker is
//! present and otherwise takes the last number of the text.

use std::ops::Range;

/// Phrases that introduce the final answer of a chain of thought: English (`The answer
/// is`, `The final answer is`, `Final answer:`), GSM8K's `####`, and the MGSM
/// languages' usual translations of "The answer is".
pub const ANSWER_MARKERS: &[&str] = &[
    "answer is", // "The answer is", "The final answer is"
    "final answer:",
    "####",
    "la respuesta es",    // es
    "la réponse est",     // fr
    "die antwort lautet", // de
    "die antwort ist",    // de
    "ответ:",             // ru
    "ответ —",            // ru
    "答案是",             // zh
    "答えは",             // ja
    "jibu ni",            // sw
    "คำตอบคือ",            // th
    "উত্তর হল",            // bn
    "సమాధానం",              // te
];

/// How strictly to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only an answer introduced by a marker counts.
    Strict,
    /// The marked answer if there is one, else the last number (or the whole text).
    #[default]
    Flexible,
    /// Numbers only: the last number of the output, markers ignored (the paper's
    /// GSM8K/MGSM scoring).
    LastNumber,
}

/// A number found in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundNumber {
    /// Its value.
    pub value: f64,
    /// Byte range in the original text (sign and currency symbol included).
    pub span: Range<usize>,
}

const CURRENCY: &[char] = &['$', '€', '£', '¥', '₹', '₩', '₽', '₦', '฿', '₺'];

/// The ASCII digit a character stands for, for the decimal digits of the scripts MGSM
/// outputs use.
fn digit_value(c: char) -> Option<u32> {
    if c.is_ascii_digit() {
        return c.to_digit(10);
    }
    // Each block is ten consecutive code points starting at zero.
    const ZEROS: &[u32] = &[
        0x0660, 0x06F0, 0x0966, 0x09E6, 0x0C66, 0x0E50, 0x0BE6, 0x0AE6, 0xFF10,
    ];
    let code = c as u32;
    ZEROS
        .iter()
        .find(|&&zero| (zero..zero + 10).contains(&code))
        .map(|zero| code - zero)
}

/// Every number in `text`, in order.
pub fn find_numbers(text: &str) -> Vec<FoundNumber> {
    find_numbers_in(text, false)
}

/// Languages whose writers group thousands with dots and use a decimal comma
/// (`1.234,5`); for them a lone `1.234` is read as 1234.
pub fn uses_decimal_comma(language: &str) -> bool {
    matches!(
        language,
        "de" | "es" | "fr" | "ru" | "it" | "pt" | "nl" | "tr" | "id" | "ro" | "el" | "vi"
    )
}

/// [`find_numbers`], reading a lone dot followed by exactly three digits as a thousands
/// separator when `dot_groups_thousands` (see [`uses_decimal_comma`]).
pub fn find_numbers_in(text: &str, dot_groups_thousands: bool) -> Vec<FoundNumber> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        let starts_fraction = c == '.'
            && chars
                .get(i + 1)
                .is_some_and(|&(_, d)| digit_value(d).is_some())
            && !prev_is_digit(&chars, i);
        if digit_value(c).is_none() && !starts_fraction {
            i += 1;
            continue;
        }
        // The numeral: digits and separators.
        let start = i;
        let mut j = i;
        let mut body = String::new();
        while j < chars.len() {
            let ch = chars[j].1;
            if let Some(d) = digit_value(ch) {
                body.push(char::from_digit(d, 10).unwrap_or('0'));
            } else if matches!(ch, '.' | ',')
                && chars
                    .get(j + 1)
                    .is_some_and(|&(_, d)| digit_value(d).is_some())
            {
                body.push(ch);
            } else if GROUP_SPACES.contains(&ch) && three_digits_follow(&chars, j + 1) {
                // `1 234` with a no-break or thin space (French, Russian style).
                body.push(',');
            } else {
                break;
            }
            j += 1;
        }
        // Sign and currency before it.
        let (negative, span_start) = prefix(&chars, start);
        let span_begin = end_of(span_start);
        let span_end = end_of(j);
        for (k, value) in interpret(&body, dot_groups_thousands)
            .into_iter()
            .enumerate()
        {
            let value = if negative && k == 0 { -value } else { value };
            found.push(FoundNumber {
                value,
                span: span_begin..span_end,
            });
        }
        i = j;
    }
    found
}

/// No-break and thin spaces, which some languages use to group thousands.
const GROUP_SPACES: &[char] = &['\u{a0}', '\u{202f}', '\u{2009}'];

/// Exactly three digits at `at`, not followed by a fourth.
fn three_digits_follow(chars: &[(usize, char)], at: usize) -> bool {
    (at..at + 3).all(|k| chars.get(k).is_some_and(|&(_, c)| digit_value(c).is_some()))
        && chars
            .get(at + 3)
            .is_none_or(|&(_, c)| digit_value(c).is_none())
}

fn prev_is_digit(chars: &[(usize, char)], i: usize) -> bool {
    i > 0 && digit_value(chars[i - 1].1).is_some()
}

/// Whether the numeral starting at char `start` is negative, and where its span starts
/// (including a sign and a currency symbol).
fn prefix(chars: &[(usize, char)], start: usize) -> (bool, usize) {
    let mut k = start;
    let is_sign = |c: char| matches!(c, '-' | '−' | '–');
    let mut negative = false;
    // `$-5`, `-$5`, `-5`
    if k > 0 && CURRENCY.contains(&chars[k - 1].1) {
        k -= 1;
    }
    if k > 0 && is_sign(chars[k - 1].1) {
        let before = if k >= 2 { Some(chars[k - 2].1) } else { None };
        if before.is_none_or(|b| !b.is_alphanumeric()) {
            negative = true;
            k -= 1;
            if k > 0 && CURRENCY.contains(&chars[k - 1].1) && start - k == 1 {
                k -= 1;
            }
        }
    }
    (negative, k)
}

/// The values a numeral (ASCII digits, `.` and `,` only, no trailing separator) stands for.
fn interpret(body: &str, dot_groups_thousands: bool) -> Vec<f64> {
    let parse = |s: &str| s.parse::<f64>().ok();
    let commas = body.matches(',').count();
    let dots = body.matches('.').count();
    let groups_of_three = |sep: char| {
        let mut parts = body.split(sep);
        let first = parts.next().unwrap_or("");
        (1..=3).contains(&first.len()) && parts.all(|p| p.len() == 3)
    };
    let value = match (commas, dots) {
        (0, 0) => parse(body),
        (0, 1) if dot_groups_thousands && groups_of_three('.') => parse(&body.replace('.', "")),
        (0, 1) => parse(body),
        (_, 0) if groups_of_three(',') => parse(&body.replace(',', "")),
        (1, 0) => parse(&body.replace(',', ".")),
        (0, _) if groups_of_three('.') => parse(&body.replace('.', "")),
        (_, _) if commas > 0 && dots > 0 => {
            let last_comma = body.rfind(',').unwrap_or(0);
            let last_dot = body.rfind('.').unwrap_or(0);
            if last_dot > last_comma {
                parse(&body.replace(',', ""))
            } else {
                parse(&body.replace('.', "").replace(',', "."))
            }
        }
        _ => None,
    };
    match value {
        Some(v) => vec![v],
        // `1,2,3` or `1.2.3`: separate numbers.
        None => body
            .split([',', '.'])
            .filter(|p| !p.is_empty())
            .filter_map(parse)
            .collect(),
    }
}

/// The last number in `text`.
pub fn last_number(text: &str) -> Option<f64> {
    find_numbers(text).last().map(|n| n.value)
}

/// Byte offset just after the last (case-insensitive) occurrence of any marker.
pub fn after_last_marker(text: &str, markers: &[&str]) -> Option<usize> {
    let lower = text.to_lowercase();
    // Lower-casing can change byte lengths; map back through char positions.
    let mut best: Option<(usize, usize)> = None; // (char index of end, byte offset in lower)
    for marker in markers {
        let marker = marker.to_lowercase();
        if marker.is_empty() {
            continue;
        }
        if let Some(pos) = lower.rfind(&marker) {
            let end = pos + marker.len();
            if best.is_none_or(|(_, b)| end > b) {
                best = Some((lower[..end].chars().count(), end));
            }
        }
    }
    let (char_end, _) = best?;
    // Lower-casing may change lengths: walk both strings together.
    let mut chars_seen = 0;
    for (byte, c) in text.char_indices() {
        if chars_seen >= char_end {
            return Some(byte);
        }
        chars_seen += c.to_lowercase().count();
    }
    Some(text.len())
}

/// The answer number of a chain-of-thought output.
///
/// `markers` are matched case-insensitively; pass [`ANSWER_MARKERS`] for the defaults.
pub fn extract_number(text: &str, mode: Mode, markers: &[&str]) -> Option<f64> {
    extract_number_in(text, mode, markers, false)
}

/// [`extract_number`] with the number reading of [`find_numbers_in`].
pub fn extract_number_in(
    text: &str,
    mode: Mode,
    markers: &[&str],
    dot_groups_thousands: bool,
) -> Option<f64> {
    if mode == Mode::LastNumber {
        return find_numbers_in(text, dot_groups_thousands)
            .last()
            .map(|n| n.value);
    }
    if let Some(offset) = after_last_marker(text, markers) {
        if let Some(n) = find_numbers_in(&text[offset..], dot_groups_thousands).first() {
            return Some(n.value);
        }
        if mode == Mode::Strict {
            return None;
        }
    }
    match mode {
        Mode::Strict => None,
        Mode::Flexible | Mode::LastNumber => find_numbers_in(text, dot_groups_thousands)
            .last()
            .map(|n| n.value),
    }
}

/// The gold answer of a GSM8K `answer` field: the number after `####`.
pub fn gsm8k_gold(answer: &str) -> Option<f64> {
    let offset = answer.rfind("####")? + 4;
    find_numbers(&answer[offset..]).first().map(|n| n.value)
}

/// Whether two numbers are the same answer (equal up to floating-point noise).
pub fn same_number(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// `42` for integral values, else the shortest decimal form (`2.5`).
pub fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Text after the last answer marker (`Answer:` for XQuAD), cut at the end of its line,
/// with surrounding quotes, emphasis and a final period removed. Empty answers count as
/// none.
pub fn answer_after_marker(text: &str, markers: &[&str]) -> Option<String> {
    let offset = after_last_marker(text, markers)?;
    let rest = text[offset..].trim_start_matches([' ', '\t', ':', '：']);
    let rest = rest.trim_start_matches(['\n', '\r', ' ']);
    let line = rest.lines().next().unwrap_or("");
    let cleaned = clean_span(line);
    (!cleaned.is_empty()).then_some(cleaned)
}

/// `**"Paris".**` → `Paris`.
fn clean_span(line: &str) -> String {
    let wrappers: &[char] = &[
        '"', '\'', '“', '”', '‘', '’', '«', '»', '「', '」', '『', '』', '*', '_', '`', ' ',
    ];
    let mut s = line.trim().trim_matches(wrappers);
    loop {
        let trimmed = s
            .trim_end_matches(['.', '。', '!', '！'])
            .trim_matches(wrappers);
        if trimmed == s {
            break;
        }
        s = trimmed;
    }
    s.to_string()
}

/// Whether `text` contains any marker (case-insensitive).
pub fn has_marker(text: &str, markers: &[&str]) -> bool {
    after_last_marker(text, markers).is_some()
}

/// Cuts `text` at the first of `stops` (e.g. the next few-shot `Question:` a model goes
/// on to invent).
pub fn truncate_at<'t>(text: &'t str, stops: &[&str]) -> &'t str {
    let end = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s))
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<f64> {
        find_numbers(text).into_iter().map(|n| n.value).collect()
    }

    #[test]
    fn numerals() {
        assert_eq!(values("I have 3 apples and 12 pears"), vec![3.0, 12.0]);
        assert_eq!(values("$1,234.50 total"), vec![1234.5]);
        assert_eq!(values("costs -$5 or $-6 or −7"), vec![-5.0, -6.0, -7.0]);
        assert_eq!(values("COVID-19 and 5-3"), vec![19.0, 5.0, 3.0]);
        assert_eq!(values("1.234.567 und 1.234,5"), vec![1234567.0, 1234.5]);
        assert_eq!(values("3,5 Liter"), vec![3.5]);
        assert_eq!(values("list 1,2,3"), vec![1.0, 2.0, 3.0]);
        assert_eq!(values("it is 2.75."), vec![2.75]);
        assert_eq!(values("just .5 of it"), vec![0.5]);
        assert_eq!(
            values("٣٤ and १२ and ৫ and ๑๐ and １２"),
            vec![34.0, 12.0, 5.0, 10.0, 12.0]
        );
        assert_eq!(values("50% of 12km"), vec![50.0, 12.0]);
        assert_eq!(
            values("1\u{a0}234 € et 12\u{202f}500"),
            vec![1234.0, 12500.0]
        );
        assert_eq!(values("1.234 Äpfel"), vec![1.234]);
        assert_eq!(
            find_numbers_in("1.234 Äpfel und 2.5", true)
                .iter()
                .map(|n| n.value)
                .collect::<Vec<_>>(),
            vec![1234.0, 2.5]
        );
        assert!(values("no numbers here").is_empty());
    }

    #[test]
    fn spans_cover_sign_and_currency() {
        let text = "pay -$12 now";
        let n = &find_numbers(text)[0];
        assert_eq!(&text[n.span.clone()], "-$12");
    }

    #[test]
    fn marker_positions_survive_case_changes() {
        // 'İ' lower-cases to two chars; the offset must still land in `text`.
        let text = "İİ The Answer Is 42";
        let at = after_last_marker(text, &["the answer is"]).unwrap();
        assert_eq!(text[at..].trim(), "42");
    }
}
