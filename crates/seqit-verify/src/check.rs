//! Checking a response against a chain: every step is located (in order, and anywhere)
//! and judged on its own segment only.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::item::VerifiableItem;
use crate::segment::{postscript_text, Document, Segment, Shape, Span};
use crate::step::{computation_step, StepKind, StepSpec};
use crate::text;

/// What a passing answer yields for later steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Produced {
    Text(String),
    List(Vec<String>),
    Word(String),
    Number(i64),
    Done,
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Kind of the step, for tallies by kind.
    pub kind: StepKind,
    /// Done in order: a segment after the previous done steps' segments passes.
    pub passed: bool,
    /// Done somewhere in the response, order ignored.
    pub passed_anywhere: bool,
    /// The segment it was found in (in order when `passed`, else anywhere).
    pub span: Option<Span>,
}

/// A response checked against a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCheck {
    /// One outcome per step, in the chain's order.
    pub steps: Vec<StepOutcome>,
    /// Every step done, in order: the chain is followed.
    pub all_passed: bool,
    /// Every step done anywhere was also found in order (the done steps come in the
    /// order asked; steps not done at all do not count against it).
    pub in_order: bool,
    /// The first step not done in order (0-based).
    pub first_failed: Option<usize>,
}

impl ChainCheck {
    /// Steps done in order.
    pub fn passed_count(&self) -> usize {
        self.steps.iter().filter(|s| s.passed).count()
    }

    /// Steps done anywhere.
    pub fn done_count(&self) -> usize {
        self.steps.iter().filter(|s| s.passed_anywhere).count()
    }

    /// Every step done, in whatever order.
    pub fn all_done(&self) -> bool {
        self.steps.iter().all(|s| s.passed_anywhere)
    }
}

fn shape(kind: StepKind) -> Shape {
    match kind {
        StepKind::NumberedList => Shape::NumberedList,
        StepKind::BulletedList => Shape::BulletedList,
        StepKind::Paragraphs => Shape::Paragraphs,
        StepKind::JsonObject => Shape::Json,
        StepKind::Postscript => Shape::Postscript,
        _ => Shape::Text,
    }
}

fn overlaps(a: Span, b: Span) -> bool {
    a.start_line < b.end_line && b.start_line < a.end_line
}

/// Tokens of an instruction's opening words ("write a sentence about the"): a
/// segment holding them is the instruction echoed, not an answer to it. Empty (no
/// detection) for instructions too short to tell.
fn echo_key(instruction: &str) -> Vec<String> {
    let tokens = text::tokens(instruction);
    if tokens.len() < 4 {
        return Vec::new();
    }
    tokens.into_iter().take(5).collect()
}

/// Whether the segment holds the opening of any of the chain's instructions.
fn echoes(segment: &Segment, keys: &[Vec<String>]) -> bool {
    if keys.is_empty() {
        return false;
    }
    let tokens = text::tokens(&segment.text);
    keys.iter()
        .filter(|k| !k.is_empty())
        .any(|key| tokens.windows(key.len()).any(|w| w == key.as_slice()))
}

/// A step to locate: its specification and the openings of the chain's instructions
/// (an echo of any step is no answer to this one).
struct Target<'a> {
    spec: &'a StepSpec,
    echo: &'a [Vec<String>],
}

/// The earliest segment from line `from` on, clear of `taken`, that passes the step.
fn find(
    doc: &Document,
    target: &Target,
    context: &[Option<Produced>],
    from: usize,
    taken: &[Span],
) -> Option<(Span, Produced)> {
    let shape = shape(target.spec.kind());
    (from..doc.len()).find_map(|start| {
        doc.candidates(start, shape)
            .into_iter()
            .filter(|segment| !taken.iter().any(|t| overlaps(*t, segment.span)))
            .filter(|segment| !echoes(segment, target.echo))
            .find_map(|segment| judge(target.spec, &segment, context).map(|p| (segment.span, p)))
    })
}

/// Judgements a full-chain search may spend before giving up (a long response with
/// many permissive steps); the greedy scan's result stands then.
const SEARCH_BUDGET: usize = 20_000;

/// An in-order assignment of every step to its own segment, searched with
/// backtracking when the greedy scan fails: an early segment that happened to pass a
/// step (a preface passing "at most 5 words") must not hide the chain done right below.
fn search_chain(
    doc: &Document,
    targets: &[Target],
    from: usize,
    found: &mut Vec<(Span, Produced)>,
    budget: &mut usize,
) -> bool {
    let Some(target) = targets.get(found.len()) else {
        return true;
    };
    let spec = target.spec;
    let shape = shape(spec.kind());
    for start in from..doc.len() {
        for segment in doc.candidates(start, shape) {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            if echoes(&segment, target.echo) {
                continue;
            }
            let context: Vec<Option<Produced>> =
                found.iter().map(|(_, p)| Some(p.clone())).collect();
            if let Some(produced) = judge(spec, &segment, &context) {
                found.push((segment.span, produced));
                if search_chain(doc, targets, segment.span.end_line, found, budget) {
                    return true;
                }
                found.pop();
            }
        }
    }
    false
}

/// Checks `response` against `item`'s chain.
///
/// Step k is found at the earliest segment that starts after step k−1's segment (or
/// after the last step found, when k−1 was not) and passes k's check. Dependent steps
/// are judged against the segments found for the steps they refer to. When this
/// greedy scan misses a step, a backtracking search looks for an in-order assignment
/// of every step; if there is one, the chain passes with it.
pub fn check(item: &VerifiableItem, response: &str) -> ChainCheck {
    let texts = (item.sub_steps.len() == item.steps.len()).then_some(item.sub_steps.as_slice());
    check_chain(&item.steps, texts, response)
}

/// [`check`] for a bare list of steps (no instruction texts, so echoes of them are not
/// recognized).
pub fn check_steps(steps: &[StepSpec], response: &str) -> ChainCheck {
    check_chain(steps, None, response)
}

fn check_chain(steps: &[StepSpec], texts: Option<&[String]>, response: &str) -> ChainCheck {
    let doc = Document::parse(response);
    let n = steps.len();
    let echo: Vec<Vec<String>> = texts
        .map(|t| t.iter().map(|s| echo_key(s)).collect())
        .unwrap_or_default();
    let targets: Vec<Target> = steps
        .iter()
        .map(|spec| Target { spec, echo: &echo })
        .collect();
    let mut ordered: Vec<Option<(Span, Produced)>> = Vec::with_capacity(n);
    let mut context: Vec<Option<Produced>> = Vec::with_capacity(n);
    let mut from = 0;
    for target in &targets {
        let found = find(&doc, target, &context, from, &[]);
        if let Some((span, _)) = &found {
            from = span.end_line;
        }
        context.push(found.as_ref().map(|(_, p)| p.clone()));
        ordered.push(found);
    }
    if ordered.iter().any(Option::is_none) {
        let mut found = Vec::with_capacity(n);
        let mut budget = SEARCH_BUDGET;
        if search_chain(&doc, &targets, 0, &mut found, &mut budget) {
            ordered = found.into_iter().map(Some).collect();
        }
    }
    // Anywhere: in a segment no other step was found in (in order), and not in the
    // segments of the steps it acts on ("repeat the last word" must not pass on the
    // sentence itself). Dependent steps act on what their references were found as.
    let claimed: Vec<Option<Span>> = ordered
        .iter()
        .map(|f| f.as_ref().map(|(s, _)| *s))
        .collect();
    let mut any_context: Vec<Option<Produced>> = Vec::with_capacity(n);
    let mut any_spans: Vec<Option<Span>> = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    for (k, (spec, in_order)) in steps.iter().zip(&ordered).enumerate() {
        let anywhere = match in_order {
            Some(found) => Some(found.clone()),
            None => {
                let references = spec.references();
                let taken: Vec<Span> = claimed
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .filter_map(|(_, s)| *s)
                    .chain(
                        references
                            .iter()
                            .filter_map(|&r| any_spans.get(r).copied().flatten()),
                    )
                    .collect();
                find(&doc, &targets[k], &any_context, 0, &taken)
            }
        };
        any_spans.push(anywhere.as_ref().map(|(s, _)| *s));
        any_context.push(anywhere.as_ref().map(|(_, p)| p.clone()));
        outcomes.push(StepOutcome {
            kind: spec.kind(),
            passed: in_order.is_some(),
            passed_anywhere: anywhere.is_some(),
            span: anywhere.map(|(span, _)| span),
        });
    }
    let first_failed = outcomes.iter().position(|o| !o.passed);
    ChainCheck {
        all_passed: first_failed.is_none(),
        in_order: outcomes.iter().all(|o| o.passed || !o.passed_anywhere),
        first_failed,
        steps: outcomes,
    }
}

/// Whether one segment passes one step; what it yields if so.
pub(crate) fn judge(
    spec: &StepSpec,
    segment: &Segment,
    context: &[Option<Produced>],
) -> Option<Produced> {
    use StepSpec as S;
    let t = segment.text.trim();
    let words = text::word_count(t);
    let sentence = || Produced::Text(t.to_string());
    let pass = |ok: bool, produced: Produced| ok.then_some(produced);
    match spec {
        S::AllCapitals { .. } => pass(
            words >= 3 && t.chars().any(char::is_alphabetic) && !t.chars().any(char::is_lowercase),
            sentence(),
        ),
        S::AllLowercase { .. } => pass(
            words >= 3 && t.chars().any(char::is_alphabetic) && !t.chars().any(char::is_uppercase),
            sentence(),
        ),
        S::DoubleQuotes { .. } => {
            // A period after the closing quote is tolerated.
            let wrapped = t.trim_end_matches(['.', '!', '?']);
            let inner = wrapped
                .strip_prefix(['"', '“'])
                .and_then(|s| s.strip_suffix(['"', '”']));
            pass(inner.is_some_and(|s| text::word_count(s) >= 3), sentence())
        }
        S::JsonObject { keys, .. } => {
            let value: Value = serde_json::from_str(t).ok()?;
            let object = value.as_object()?;
            let mut found: Vec<&str> = object.keys().map(String::as_str).collect();
            let mut wanted: Vec<&str> = keys.iter().map(String::as_str).collect();
            found.sort_unstable();
            wanted.sort_unstable();
            pass(found == wanted, Produced::Done)
        }
        S::NumberedList { count, .. } | S::BulletedList { count, .. } => pass(
            segment.parts.len() == *count && segment.parts.iter().all(|p| !p.trim().is_empty()),
            Produced::List(segment.parts.clone()),
        ),
        S::Title { .. } => {
            let open = t.find("<<")?;
            let close = open + 2 + t[open + 2..].find(">>")?;
            let title = t[open + 2..close].trim();
            pass(
                text::word_count(title) >= 1 && !title.contains(['<', '>', '\n']),
                Produced::Done,
            )
        }
        S::Paragraphs { count, .. } => pass(
            segment.parts.len() == *count && segment.parts.iter().all(|p| text::word_count(p) >= 2),
            Produced::Done,
        ),
        S::EndWith { phrase, .. } => {
            let closing = |c: char| ".!?\"'”’)*".contains(c) || c.is_whitespace();
            let body = t.trim_end_matches(closing).to_lowercase();
            let phrase = phrase.trim_end_matches(closing).to_lowercase();
            let ends = body.strip_suffix(&phrase).is_some_and(|before| {
                !before.ends_with(char::is_alphanumeric) && text::word_count(before) >= 1
            });
            pass(ends && !phrase.is_empty(), sentence())
        }
        S::StartWith { word, .. } => pass(
            words >= 3
                && text::first_word(t).is_some_and(|w| w.eq_ignore_ascii_case(word))
                // The word opens the text, not a quotation or list inside it.
                && t.trim_start_matches(['"', '“', '\'', '*', '_']).starts_with(|c: char| c.is_alphanumeric()),
            sentence(),
        ),
        S::Postscript { .. } => {
            let [note, postscript] = segment.parts.as_slice() else {
                return None;
            };
            let after = postscript_text(postscript).unwrap_or("");
            pass(
                text::word_count(note) >= 2 && text::word_count(after) >= 1,
                Produced::Done,
            )
        }
        S::IncludeKeywords { keywords, .. } => pass(
            keywords.iter().all(|k| text::contains_word(t, k)),
            sentence(),
        ),
        S::AvoidKeyword {
            mention, keyword, ..
        } => pass(
            text::contains_word(t, mention) && !text::contains_word(t, keyword),
            sentence(),
        ),
        S::ExactWords { count, .. } => pass(words == *count, sentence()),
        S::MinWords { count, .. } => pass(words >= *count, sentence()),
        S::MaxWords { count, .. } => pass((2..=*count).contains(&words), sentence()),
        S::ExactSentences { count, .. } => pass(text::sentence_count(t) == *count, sentence()),
        S::MentionTimes { word, count, .. } => {
            pass(text::count_word(t, word) >= *count, sentence())
        }
        S::NoCommas { count, .. } => pass(
            words >= *count && !t.contains([',', '，', '、']),
            sentence(),
        ),
        S::ChooseWord { options, .. } => {
            let tokens = text::tokens(t);
            let named: Vec<&String> = options
                .iter()
                .filter(|o| tokens.contains(&o.to_lowercase()))
                .collect();
            match named.as_slice() {
                [one] => Some(Produced::Word((*one).clone())),
                _ => None,
            }
        }
        computation_step!() => {
            let expected = spec.computed_number()?;
            number_answer(t, expected, &spec.given_numbers())
        }
        S::SortWords { words: given } => {
            let wanted: Vec<String> = given.iter().map(|w| w.to_lowercase()).collect();
            let mut sorted = wanted.clone();
            sorted.sort();
            let written: Vec<String> = text::tokens(t)
                .into_iter()
                .filter(|tok| wanted.contains(tok))
                .collect();
            pass(written == sorted, sentence())
        }
        S::ReverseWord { word } => {
            let reversed: String = word.chars().rev().collect::<String>().to_lowercase();
            pass(
                text::tokens(t).contains(&reversed),
                Produced::Word(reversed.clone()),
            )
        }
        S::UppercaseWord { word } => {
            let upper = word.to_uppercase();
            let written = t
                .split(|c: char| !c.is_alphanumeric())
                .any(|tok| tok == upper);
            pass(written, Produced::Word(upper.clone()))
        }
        S::CountWords { of } => match reference(context, *of)? {
            Produced::Text(s) => number_answer(t, text::word_count(s) as i64, &[]),
            _ => None,
        },
        S::ListFirstItemCaps { of } => match reference(context, *of)? {
            Produced::List(items) => {
                let expected = text::normalize(items.first()?).to_uppercase();
                let written = text::normalize(t);
                pass(
                    expected.chars().any(char::is_alphabetic) && written.contains(&expected),
                    Produced::Text(expected),
                )
            }
            _ => None,
        },
        S::RepeatLastWord { of } => match reference(context, *of)? {
            Produced::Text(s) => {
                let expected = text::last_word(s)?.to_lowercase();
                let written = text::last_word(t)?.to_lowercase();
                pass(written == expected, Produced::Word(expected))
            }
            _ => None,
        },
        S::TranslateWord { of, table, .. } => match reference(context, *of)? {
            Produced::Word(chosen) => {
                let (_, expected) = table
                    .iter()
                    .find(|(source, _)| source.eq_ignore_ascii_case(chosen))?;
                let others = table
                    .iter()
                    .filter(|(_, target)| target != expected)
                    .any(|(_, target)| text::contains_word(t, target));
                pass(
                    text::contains_word(t, expected) && !others,
                    Produced::Word(expected.clone()),
                )
            }
            _ => None,
        },
        S::CountListItems { of } => match reference(context, *of)? {
            Produced::List(items) => number_answer(t, items.len() as i64, &[]),
            _ => None,
        },
        S::CountLettersOfWord { of } => match reference(context, *of)? {
            Produced::Word(w) => number_answer(t, text::letter_count(w) as i64, &[]),
            _ => None,
        },
        S::SumOfAnswers { of } => {
            let mut total = 0i64;
            for r in of {
                match reference(context, *r)? {
                    Produced::Number(n) => total += n,
                    _ => return None,
                }
            }
            number_answer(t, total, &[])
        }
        S::MultiplyAnswer { of, factor } => match reference(context, *of)? {
            Produced::Number(n) => number_answer(t, n * factor, &spec.given_numbers()),
            _ => None,
        },
    }
}

fn reference(context: &[Option<Produced>], index: usize) -> Option<&Produced> {
    context.get(index)?.as_ref()
}

/// A numeric answer is right when the segment's last number is the expected one, or
/// when the expected number appears and every other number only restates the
/// instruction's own (`12 + 30 = 42`). Restating alone never passes: when the answer
/// is itself one of the given numbers (the largest of a list), it must come last.
fn number_answer(t: &str, expected: i64, given: &[i64]) -> Option<Produced> {
    let found = text::numbers(t);
    let target = expected as f64;
    let last = *found.last()?;
    let restated = |n: &f64| given.iter().any(|g| *g as f64 == *n);
    let ok = last == target
        || (!given.contains(&expected)
            && found.contains(&target)
            && found.iter().all(|n| *n == target || restated(n)));
    ok.then_some(Produced::Number(expected))
}
