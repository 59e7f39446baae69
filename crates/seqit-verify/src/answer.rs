//! Scripted answerers: responses built from the step specifications alone, to test the
//! checker (a perfect answer must pass; one with a step left out must not) and for
//! users to sanity-check it on their own sets.

use crate::check::Produced;
use crate::item::VerifiableItem;
use crate::step::{computation_step, StepSpec};
use crate::text::{self, capitalize};

/// Items for scripted lists (capitalized single words, unlike any other answer).
const LIST_ITEMS: [&str; 8] = [
    "Harbor", "Lantern", "Meadow", "Orchard", "Summit", "Compass", "Ember", "Falcon",
];

/// Words for answers of a set length; none is a topic keyword or a number word.
const FILLER: [&str; 32] = [
    "calm",
    "and",
    "bright",
    "under",
    "a",
    "pale",
    "morning",
    "sky",
    "while",
    "people",
    "walk",
    "slowly",
    "past",
    "and",
    "smile",
    "at",
    "everything",
    "they",
    "see",
    "before",
    "going",
    "home",
    "again",
    "for",
    "a",
    "quiet",
    "evening",
    "meal",
    "together",
    "with",
    "old",
    "friends",
];

/// A sentence about `topic` (with a comma, so that "no commas" cannot pass on it).
fn sentence(topic: &str) -> String {
    format!(
        "{} is worth a close look, because it changes a little every single day.",
        capitalize(topic)
    )
}

/// Exactly `n` words about `topic`.
fn words_about(topic: &str, n: usize, comma: bool) -> String {
    let mut words: Vec<String> = topic.split_whitespace().map(str::to_string).collect();
    if comma {
        if let Some(last) = words.last_mut() {
            last.push(',');
        }
    }
    words.extend(
        FILLER
            .iter()
            .cycle()
            .take(n.saturating_sub(words.len()))
            .map(|w| w.to_string()),
    );
    words.truncate(n);
    let mut out = capitalize(&words.join(" "));
    out = out.trim_end_matches(',').to_string();
    out.push('.');
    out
}

const SENTENCES: [&str; 4] = [
    "{T} is worth a close look, because it changes every day.",
    "Many people visit it, and most of them come back.",
    "It is easy to like, and hard to forget.",
    "Nobody I know has ever been bored there, not even for a moment.",
];

const PARAGRAPHS: [&str; 3] = [
    "{T} looks calm in the morning, and people walk nearby.",
    "By noon, {t} feels busy, and everyone has somewhere to be.",
    "In the evening, {t} turns quiet again, and the day is done.",
];

fn about(template: &str, topic: &str) -> String {
    template
        .replace("{T}", &capitalize(topic))
        .replace("{t}", topic)
}

/// One step's correct answer and what it yields for later steps.
fn answer_step(spec: &StepSpec, context: &[Option<Produced>]) -> (String, Produced) {
    use StepSpec as S;
    let reference = |i: usize| context.get(i).and_then(Option::as_ref);
    let text = |s: String| (s.clone(), Produced::Text(s));
    let number = |n: i64| (n.to_string(), Produced::Number(n));
    let word = |w: String| (w.clone(), Produced::Word(w));
    let nothing = (String::new(), Produced::Done);
    match spec {
        S::AllCapitals { topic } => text(sentence(topic).to_uppercase()),
        S::AllLowercase { topic } => text(sentence(topic).to_lowercase()),
        S::DoubleQuotes { topic } => text(format!("\"{}\"", sentence(topic))),
        S::JsonObject { keys, .. } => {
            let object: serde_json::Map<String, serde_json::Value> = keys
                .iter()
                .map(|k| (k.clone(), format!("Example {k}").into()))
                .collect();
            (
                serde_json::Value::Object(object).to_string(),
                Produced::Done,
            )
        }
        S::NumberedList { count, .. } | S::BulletedList { count, .. } => {
            let items: Vec<String> = LIST_ITEMS
                .iter()
                .cycle()
                .take(*count)
                .map(|s| s.to_string())
                .collect();
            let lines: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, item)| match spec {
                    S::NumberedList { .. } => format!("{}. {item}", i + 1),
                    _ => format!("- {item}"),
                })
                .collect();
            (lines.join("\n"), Produced::List(items))
        }
        S::Title { topic } => (format!("<<Notes on {topic}>>"), Produced::Done),
        S::Paragraphs { topic, count } => {
            let paragraphs: Vec<String> = PARAGRAPHS
                .iter()
                .cycle()
                .take(*count)
                .map(|p| about(p, topic))
                .collect();
            (paragraphs.join("\n***\n"), Produced::Done)
        }
        S::EndWith { topic, phrase } => text(format!(
            "We spent the whole day talking about {topic}, {phrase}."
        )),
        S::StartWith { topic, word } => text(format!(
            "{word}, {topic} is worth a close look because it changes every day."
        )),
        S::Postscript { topic } => (
            format!(
                "Dear friend, I keep thinking about {topic}. I hope you can visit soon.\nP.S. Bring your walking shoes."
            ),
            Produced::Done,
        ),
        S::IncludeKeywords { topic, keywords } => text(format!(
            "{} brings to mind {}, all at once.",
            capitalize(topic),
            text::join_list(keywords, "and")
        )),
        S::AvoidKeyword { mention, .. } => {
            text(format!("Everyone I know likes the {mention}, and so do I."))
        }
        S::ExactWords { topic, count } => text(words_about(topic, *count, true)),
        S::MinWords { topic, count } => text(words_about(topic, count + 3, true)),
        S::MaxWords { topic, count } => text(words_about(topic, count.saturating_sub(1).max(2), true)),
        S::ExactSentences { topic, count } => text(
            SENTENCES
                .iter()
                .cycle()
                .take(*count)
                .map(|s| about(s, topic))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        S::MentionTimes { word, count, .. } => {
            let parts = vec![format!("the {word} is close"); *count];
            text(format!("{}.", capitalize(&parts.join(", and "))))
        }
        S::NoCommas { topic, count } => text(words_about(topic, count + 2, false)),
        S::ChooseWord { options, .. } => word(options.first().cloned().unwrap_or_default()),
        computation_step!() => match spec.computed_number() {
            Some(n) => number(n),
            None => nothing,
        },
        S::SortWords { words } => {
            let mut sorted = words.clone();
            sorted.sort_by_key(|w| w.to_lowercase());
            (sorted.join(", "), Produced::Done)
        }
        S::ReverseWord { word: w } => word(w.chars().rev().collect()),
        S::UppercaseWord { word: w } => word(w.to_uppercase()),
        S::CountWords { of } => match reference(*of) {
            Some(Produced::Text(s)) => number(text::word_count(s) as i64),
            _ => nothing,
        },
        S::ListFirstItemCaps { of } => match reference(*of) {
            Some(Produced::List(items)) if !items.is_empty() => {
                let caps = text::normalize(&items[0]).to_uppercase();
                (caps.clone(), Produced::Text(caps))
            }
            _ => nothing,
        },
        S::RepeatLastWord { of } => match reference(*of) {
            Some(Produced::Text(s)) => word(text::last_word(s).unwrap_or_default().to_string()),
            _ => nothing,
        },
        S::TranslateWord { of, table, .. } => match reference(*of) {
            Some(Produced::Word(chosen)) => match table
                .iter()
                .find(|(source, _)| source.eq_ignore_ascii_case(chosen))
            {
                Some((_, target)) => word(target.clone()),
                None => nothing,
            },
            _ => nothing,
        },
        S::CountListItems { of } => match reference(*of) {
            Some(Produced::List(items)) => number(items.len() as i64),
            _ => nothing,
        },
        S::CountLettersOfWord { of } => match reference(*of) {
            Some(Produced::Word(w)) => number(text::letter_count(w) as i64),
            _ => nothing,
        },
        S::SumOfAnswers { of } => {
            let mut total = 0;
            for r in of {
                match reference(*r) {
                    Some(Produced::Number(n)) => total += n,
                    _ => return nothing,
                }
            }
            number(total)
        }
        S::MultiplyAnswer { of, factor } => match reference(*of) {
            Some(Produced::Number(n)) => number(n * factor),
            _ => nothing,
        },
    }
}

/// The correct answer to every step, in order (one segment each).
pub fn perfect_segments(steps: &[StepSpec]) -> Vec<String> {
    let mut context = Vec::with_capacity(steps.len());
    let mut segments = Vec::with_capacity(steps.len());
    for spec in steps {
        let (answer, produced) = answer_step(spec, &context);
        segments.push(answer);
        context.push(Some(produced));
    }
    segments
}

/// The segments of [`perfect_segments`] in the given order (indices may be left out),
/// separated by blank lines.
pub fn answer_in_order(item: &VerifiableItem, order: &[usize]) -> String {
    let segments = perfect_segments(&item.steps);
    order
        .iter()
        .filter_map(|&i| segments.get(i).map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Every step answered correctly, in order, one segment per step.
pub fn perfect_answer(item: &VerifiableItem) -> String {
    perfect_segments(&item.steps).join("\n\n")
}

/// The perfect answer without step `k`'s segment.
pub fn answer_skipping(item: &VerifiableItem, k: usize) -> String {
    let order: Vec<usize> = (0..item.steps.len()).filter(|&i| i != k).collect();
    answer_in_order(item, &order)
}

/// The perfect answer's segments in reverse order.
pub fn answer_reversed(item: &VerifiableItem) -> String {
    let order: Vec<usize> = (0..item.steps.len()).rev().collect();
    answer_in_order(item, &order)
}
