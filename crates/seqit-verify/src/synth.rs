//! Building chains: step kinds planned so that every kind gets used, parameters drawn
//! from the template pools, texts from the phrasings, steps joined with a connective
//! style; all from one seeded RNG, so a seed gives the same set byte for byte.
//!
//! A chain is kept only if it is *distinguishable*: its perfect answer passes, leaving
//! out any one step makes that very step the first to fail, and the answers in reverse
//! order are not in order. Chains where a later step's answer would also satisfy an
//! earlier step's check (so the checker could not tell the steps apart) are drawn again.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use seqit_data::SeededRng;

use crate::answer::{answer_reversed, answer_skipping, perfect_answer};
use crate::check::check;
use crate::item::{VerifiableItem, MAX_DEPTH};
use crate::step::{Conversion, StepKind, StepSpec};
use crate::templates::{fill, Templates};
use crate::text::{join_list, ordinal};

/// Tries per item before a depth is given up (only reached when the template pools are
/// too small for the number of distinct prompts asked).
const MAX_ATTEMPTS: usize = 2000;
/// Tries that insist on the least used kind before any kind is allowed.
const ANCHORED_ATTEMPTS: usize = 40;

/// Kinds never combined in one chain: they read as contradictory even though each
/// applies to its own answer.
const CONFLICTS: [&[StepKind]; 2] = [
    &[StepKind::AllCapitals, StepKind::AllLowercase],
    &[StepKind::ExactWords, StepKind::MinWords, StepKind::MaxWords],
];

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SynthSettings {
    /// Chain depths to build, each in 1..=4.
    pub depths: Vec<usize>,
    /// Items per depth.
    pub per_depth: usize,
    /// Seed of the one RNG that draws every kind, parameter and phrasing: a seed gives the
    /// same set byte for byte.
    pub seed: u64,
}

impl SynthSettings {
    /// Depths 1–4, 100 items each.
    pub fn standard(seed: u64) -> Self {
        SynthSettings {
            depths: (1..=MAX_DEPTH).collect(),
            per_depth: 100,
            seed,
        }
    }

    /// Fails when no depth is given or a depth is outside `1..=4`.
    pub fn check(&self) -> Result<()> {
        if self.depths.is_empty() {
            bail!("no depths given");
        }
        if let Some(d) = self.depths.iter().find(|d| !(1..=MAX_DEPTH).contains(*d)) {
            bail!("depth {d} is not in 1..={MAX_DEPTH}");
        }
        Ok(())
    }
}

fn pick<'a, T>(rng: &mut SeededRng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len())]
}

/// A number in `low..=high`.
fn between(rng: &mut SeededRng, low: i64, high: i64) -> i64 {
    low + rng.below((high - low + 1) as usize) as i64
}

fn conflicts(a: StepKind, b: StepKind) -> bool {
    a == b || CONFLICTS.iter().any(|g| g.contains(&a) && g.contains(&b))
}

/// Whether `kind` can go at a position after `before` in a chain holding `chain`.
fn fits(kind: StepKind, before: &[StepKind], chain: &[StepKind]) -> bool {
    if chain.iter().any(|&k| conflicts(k, kind)) {
        return false;
    }
    let referable = before.iter().filter(|&&k| kind.can_refer_to(k)).count();
    referable >= kind.references_needed()
}

/// The kinds of a chain of `depth` holding `anchor`, or `None` when it cannot be
/// completed.
fn plan_kinds(depth: usize, anchor: StepKind, rng: &mut SeededRng) -> Option<Vec<StepKind>> {
    let need = anchor.references_needed();
    if need >= depth {
        return None;
    }
    let mut slots: Vec<Option<StepKind>> = vec![None; depth];
    let at = need + rng.below(depth - need);
    slots[at] = Some(anchor);
    // The steps the anchor acts on go before it.
    for p in rng.sample(at, need) {
        let chain: Vec<StepKind> = slots.iter().flatten().copied().collect();
        let options: Vec<StepKind> = StepKind::ALL
            .iter()
            .copied()
            .filter(|&k| !k.is_dependent() && anchor.can_refer_to(k) && fits(k, &[], &chain))
            .collect();
        if options.is_empty() {
            return None;
        }
        slots[p] = Some(*pick(rng, &options));
    }
    for i in 0..depth {
        if slots[i].is_some() {
            continue;
        }
        let before: Vec<StepKind> = slots[..i].iter().flatten().copied().collect();
        let chain: Vec<StepKind> = slots.iter().flatten().copied().collect();
        let options: Vec<StepKind> = StepKind::ALL
            .iter()
            .copied()
            .filter(|&k| fits(k, &before, &chain))
            .collect();
        if options.is_empty() {
            return None;
        }
        slots[i] = Some(*pick(rng, &options));
    }
    slots.into_iter().collect()
}

/// Topics and words drawn without repeats within one chain.
struct Deck {
    order: Vec<usize>,
}

impl Deck {
    fn new(n: usize, rng: &mut SeededRng) -> Self {
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        Deck { order }
    }

    fn next(&mut self) -> usize {
        // Decks are at least as long as a chain; wrap around if not.
        let i = self.order.remove(0);
        self.order.push(i);
        i
    }
}

/// Parameters for step `index` of kind `kind`, after `earlier`.
fn draw_step(
    kind: StepKind,
    earlier: &[StepSpec],
    t: &Templates,
    topics: &mut Deck,
    letter_words: &mut Deck,
    rng: &mut SeededRng,
) -> Option<StepSpec> {
    use StepKind as K;
    use StepSpec as S;
    let mut topic = || &t.topics[topics.next()];
    let count = |rng: &mut SeededRng, low: usize, high: usize| low + rng.below(high - low + 1);
    let refs: Vec<usize> = earlier
        .iter()
        .enumerate()
        .filter(|(_, s)| kind.can_refer_to(s.kind()))
        .map(|(i, _)| i)
        .collect();
    let one_ref = |rng: &mut SeededRng| refs.get(rng.below(refs.len().max(1))).copied();
    let spec = match kind {
        K::AllCapitals => S::AllCapitals {
            topic: topic().name.clone(),
        },
        K::AllLowercase => S::AllLowercase {
            topic: topic().name.clone(),
        },
        K::DoubleQuotes => S::DoubleQuotes {
            topic: topic().name.clone(),
        },
        K::JsonObject => {
            let subject = pick(rng, &t.json_subjects);
            S::JsonObject {
                subject: subject.subject.clone(),
                keys: subject.keys.clone(),
            }
        }
        K::NumberedList => S::NumberedList {
            topic: topic().name.clone(),
            count: count(rng, 2, 5),
        },
        K::BulletedList => S::BulletedList {
            topic: topic().name.clone(),
            count: count(rng, 2, 5),
        },
        K::Title => S::Title {
            topic: topic().name.clone(),
        },
        K::Paragraphs => S::Paragraphs {
            topic: topic().name.clone(),
            count: count(rng, 2, 3),
        },
        K::EndWith => S::EndWith {
            topic: topic().name.clone(),
            phrase: pick(rng, &t.pools.end_phrases).clone(),
        },
        K::StartWith => S::StartWith {
            topic: topic().name.clone(),
            word: pick(rng, &t.pools.start_words).clone(),
        },
        K::Postscript => S::Postscript {
            topic: topic().name.clone(),
        },
        K::IncludeKeywords => {
            let topic = topic();
            let keywords = rng
                .sample(topic.related.len(), 2)
                .into_iter()
                .map(|i| topic.related[i].clone())
                .collect();
            S::IncludeKeywords {
                topic: topic.name.clone(),
                keywords,
            }
        }
        K::AvoidKeyword => {
            let topic = topic();
            S::AvoidKeyword {
                topic: topic.name.clone(),
                mention: topic.word.clone(),
                keyword: pick(rng, &topic.related).clone(),
            }
        }
        K::ExactWords => S::ExactWords {
            topic: topic().name.clone(),
            count: count(rng, 6, 12),
        },
        K::MinWords => S::MinWords {
            topic: topic().name.clone(),
            count: count(rng, 15, 30),
        },
        K::MaxWords => S::MaxWords {
            topic: topic().name.clone(),
            count: count(rng, 5, 10),
        },
        K::ExactSentences => S::ExactSentences {
            topic: topic().name.clone(),
            count: count(rng, 2, 4),
        },
        K::MentionTimes => {
            let topic = topic();
            S::MentionTimes {
                topic: topic.name.clone(),
                word: topic.word.clone(),
                count: count(rng, 2, 4),
            }
        }
        K::NoCommas => S::NoCommas {
            topic: topic().name.clone(),
            count: count(rng, 6, 12),
        },
        K::ChooseWord => {
            let table = pick(rng, &t.word_tables);
            let options = rng
                .sample(table.pairs.len(), 3)
                .into_iter()
                .map(|i| table.pairs[i].0.clone())
                .collect();
            S::ChooseWord {
                category: table.category.clone(),
                options,
            }
        }
        K::Sum => {
            let n = count(rng, 2, 3);
            let numbers = rng
                .sample(98, n)
                .into_iter()
                .map(|i| i as i64 + 2)
                .collect();
            S::Sum { numbers }
        }
        K::Product => {
            let numbers = rng
                .sample(14, 2)
                .into_iter()
                .map(|i| i as i64 + 2)
                .collect();
            S::Product { numbers }
        }
        K::Difference => {
            let minuend = between(rng, 20, 99);
            let mut subtrahend = between(rng, 2, minuend - 1);
            // Else restating "40 - 20" would end on the answer.
            if subtrahend * 2 == minuend {
                subtrahend += 1;
            }
            S::Difference {
                minuend,
                subtrahend,
            }
        }
        K::CountLetters => S::CountLetters {
            word: t.pools.letter_words[letter_words.next()].clone(),
        },
        K::CountLetter => {
            let word = t.pools.letter_words[letter_words.next()].clone();
            let letters: Vec<char> = word.chars().collect();
            S::CountLetter {
                letter: *pick(rng, &letters),
                word,
            }
        }
        K::SortWords => {
            let n = count(rng, 3, 5);
            let mut words: Vec<String> = rng
                .sample(t.pools.sort_words.len(), n)
                .into_iter()
                .map(|i| t.pools.sort_words[i].clone())
                .collect();
            if words
                .windows(2)
                .all(|w| w[0].to_lowercase() <= w[1].to_lowercase())
            {
                words.reverse();
            }
            S::SortWords { words }
        }
        K::ReverseWord => {
            let word = (0..t.pools.letter_words.len())
                .map(|_| t.pools.letter_words[letter_words.next()].clone())
                .find(|w| w.chars().rev().collect::<String>() != *w)?;
            S::ReverseWord { word }
        }
        K::ConvertUnits => S::ConvertUnits {
            value: between(rng, 2, 20),
            conversion: *pick(rng, &Conversion::ALL),
        },
        K::UppercaseWord => S::UppercaseWord {
            word: t.pools.letter_words[letter_words.next()].clone(),
        },
        K::LargestNumber => {
            let n = count(rng, 3, 5);
            let mut numbers: Vec<i64> = rng
                .sample(98, n)
                .into_iter()
                .map(|i| i as i64 + 2)
                .collect();
            // The answer must not be the last number given, or restating the list
            // would end on it.
            let largest = numbers.iter().enumerate().max_by_key(|(_, n)| **n)?.0;
            if largest == n - 1 {
                numbers.swap(largest, 0);
            }
            S::LargestNumber { numbers }
        }
        K::CountWords => S::CountWords { of: one_ref(rng)? },
        K::ListFirstItemCaps => S::ListFirstItemCaps { of: one_ref(rng)? },
        K::RepeatLastWord => S::RepeatLastWord { of: one_ref(rng)? },
        K::TranslateWord => {
            let of = one_ref(rng)?;
            let S::ChooseWord { category, options } = &earlier[of] else {
                return None;
            };
            let table = t.word_tables.iter().find(|w| &w.category == category)?;
            let pairs = options
                .iter()
                .map(|o| table.pairs.iter().find(|(s, _)| s == o).cloned())
                .collect::<Option<Vec<_>>>()?;
            S::TranslateWord {
                of,
                language: table.language.clone(),
                table: pairs,
            }
        }
        K::CountListItems => S::CountListItems { of: one_ref(rng)? },
        K::CountLettersOfWord => S::CountLettersOfWord { of: one_ref(rng)? },
        K::SumOfAnswers => {
            if refs.len() < 2 {
                return None;
            }
            S::SumOfAnswers { of: refs.clone() }
        }
        K::MultiplyAnswer => S::MultiplyAnswer {
            of: one_ref(rng)?,
            factor: between(rng, 2, 5),
        },
    };
    Some(spec)
}

/// `s` with its first letter lowercased, unless its first word is an acronym.
fn lower_first(s: &str) -> String {
    let first_word = s.split_whitespace().next().unwrap_or("");
    let acronym =
        first_word.chars().count() > 1 && first_word.chars().skip(1).any(|c| c.is_uppercase());
    if acronym {
        return s.to_string();
    }
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `template` with `{step}` (and `{n}`) filled; the step lowercased when it continues
/// a sentence ("First, write ...", "..., then write ...") rather than opening one
/// ("Step 1: Write ...", "Start with this: Write ...").
fn place(template: &str, step: &str, n: usize, numbered: bool) -> String {
    let before = template.split("{step}").next().unwrap_or("").trim_end();
    let opens = numbered || before.is_empty() || before.ends_with([':', '.']);
    let step = if opens {
        step.to_string()
    } else {
        lower_first(step)
    };
    fill(template, &[("step", step), ("n", n.to_string())])
}

/// Alternatives drawn without repeats while there are enough.
fn draw_distinct<'a>(rng: &mut SeededRng, items: &'a [String], n: usize) -> Vec<&'a String> {
    let mut order = rng.sample(items.len(), n.min(items.len()));
    while order.len() < n {
        order.push(rng.below(items.len()));
    }
    order.into_iter().map(|i| &items[i]).collect()
}

/// The steps' texts joined into one instruction, in one of three styles.
fn join_chain(steps: &[String], t: &Templates, rng: &mut SeededRng) -> String {
    let c = &t.connectives;
    let n = steps.len();
    if n == 1 {
        return steps[0].clone();
    }
    match rng.below(3) {
        // "First, ... Then ... Finally, ..."
        0 => {
            let middles = draw_distinct(rng, &c.middle, n - 2);
            let mut parts = vec![place(pick::<String>(rng, &c.first), &steps[0], 1, false)];
            for (i, step) in steps[1..n - 1].iter().enumerate() {
                parts.push(place(middles[i], step, i + 2, false));
            }
            parts.push(place(pick::<String>(rng, &c.last), &steps[n - 1], n, false));
            parts.join(" ")
        }
        // "1. ...\n2. ..."
        1 => {
            let intro = pick(rng, &c.numbered_intro);
            let line = pick(rng, &c.numbered_step);
            let mut lines: Vec<String> = Vec::new();
            if !intro.trim().is_empty() {
                lines.push(intro.clone());
            }
            lines.extend(
                steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| place(line, s, i + 1, true)),
            );
            lines.join("\n")
        }
        // "..., then ..., and finally ...."
        _ => {
            let bare = |s: &String| s.strip_suffix('.').unwrap_or(s).to_string();
            let middles = draw_distinct(rng, &c.sentence_middle, n - 2);
            let mut out = bare(&steps[0]);
            for (i, step) in steps[1..n - 1].iter().enumerate() {
                out.push_str(&place(middles[i], &bare(step), i + 2, false));
            }
            out.push_str(&place(
                pick::<String>(rng, &c.sentence_last),
                &bare(&steps[n - 1]),
                n,
                false,
            ));
            out.push('.');
            out
        }
    }
}

/// The text of step `index` (0-based).
fn render_step(spec: &StepSpec, index: usize, t: &Templates, rng: &mut SeededRng) -> String {
    use StepSpec as S;
    let phrasing = pick(rng, t.phrasings(spec.kind())).clone();
    let quoted = |items: &[String]| items.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>();
    let numbers = |ns: &[i64]| join_list(&ns.iter().map(i64::to_string).collect::<Vec<_>>(), "and");
    let reference = |of: usize, rng: &mut SeededRng| {
        if of + 1 == index {
            pick(rng, &t.references.previous).clone()
        } else {
            fill(
                pick::<String>(rng, &t.references.earlier),
                &[("ordinal", ordinal(of + 1))],
            )
        }
    };
    let values: Vec<(&str, String)> = match spec {
        S::AllCapitals { topic }
        | S::AllLowercase { topic }
        | S::DoubleQuotes { topic }
        | S::Title { topic }
        | S::Postscript { topic } => vec![("topic", topic.clone())],
        S::JsonObject { subject, keys } => vec![
            ("subject", subject.clone()),
            ("keys", join_list(&quoted(keys), "and")),
        ],
        S::NumberedList { topic, count }
        | S::BulletedList { topic, count }
        | S::Paragraphs { topic, count }
        | S::ExactWords { topic, count }
        | S::MinWords { topic, count }
        | S::MaxWords { topic, count }
        | S::ExactSentences { topic, count }
        | S::NoCommas { topic, count } => {
            vec![("topic", topic.clone()), ("count", count.to_string())]
        }
        S::EndWith { topic, phrase } => vec![("topic", topic.clone()), ("phrase", phrase.clone())],
        S::StartWith { topic, word } => vec![("topic", topic.clone()), ("word", word.clone())],
        S::IncludeKeywords { topic, keywords } => vec![
            ("topic", topic.clone()),
            ("keyword1", keywords.first().cloned().unwrap_or_default()),
            ("keyword2", keywords.get(1).cloned().unwrap_or_default()),
        ],
        S::AvoidKeyword {
            topic,
            mention,
            keyword,
        } => vec![
            ("topic", topic.clone()),
            ("mention", mention.clone()),
            ("keyword", keyword.clone()),
        ],
        S::MentionTimes { topic, word, count } => vec![
            ("topic", topic.clone()),
            ("word", word.clone()),
            ("count", count.to_string()),
        ],
        S::ChooseWord { category, options } => vec![
            ("category", category.clone()),
            ("options", join_list(options, "or")),
        ],
        S::Sum { numbers: ns } | S::Product { numbers: ns } | S::LargestNumber { numbers: ns } => {
            vec![("numbers", numbers(ns))]
        }
        S::Difference {
            minuend,
            subtrahend,
        } => vec![
            ("minuend", minuend.to_string()),
            ("subtrahend", subtrahend.to_string()),
        ],
        S::CountLetters { word } | S::ReverseWord { word } | S::UppercaseWord { word } => {
            vec![("word", word.clone())]
        }
        S::CountLetter { word, letter } => {
            vec![("word", word.clone()), ("letter", letter.to_string())]
        }
        S::SortWords { words } => vec![("words", join_list(words, "and"))],
        S::ConvertUnits { value, conversion } => {
            let (from, to) = conversion.units();
            vec![
                ("value", value.to_string()),
                ("from", from.to_string()),
                ("to", to.to_string()),
            ]
        }
        S::CountWords { of }
        | S::ListFirstItemCaps { of }
        | S::RepeatLastWord { of }
        | S::CountListItems { of }
        | S::CountLettersOfWord { of } => vec![("ref", reference(*of, rng))],
        S::TranslateWord {
            of,
            language,
            table,
        } => vec![
            ("ref", reference(*of, rng)),
            ("language", language.clone()),
            (
                "table",
                table
                    .iter()
                    .map(|(s, t)| format!("{s} = {t}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ],
        S::SumOfAnswers { of } => {
            let ordinals: Vec<String> = of.iter().map(|r| ordinal(r + 1)).collect();
            vec![(
                "refs",
                fill(
                    pick::<String>(rng, &t.references.several),
                    &[("ordinals", join_list(&ordinals, "and"))],
                ),
            )]
        }
        S::MultiplyAnswer { of, factor } => {
            vec![("ref", reference(*of, rng)), ("factor", factor.to_string())]
        }
    };
    fill(&phrasing, &values)
}

fn assemble(
    id: String,
    steps: Vec<StepSpec>,
    t: &Templates,
    rng: &mut SeededRng,
) -> VerifiableItem {
    let sub_steps: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| render_step(s, i, t, rng))
        .collect();
    VerifiableItem {
        id,
        prompt: join_chain(&sub_steps, t, rng),
        input: String::new(),
        depth: steps.len(),
        original_instruction: sub_steps[0].clone(),
        modes: steps.iter().map(|s| s.kind().name().to_string()).collect(),
        sub_steps,
        steps,
        template_version: t.version().to_string(),
    }
}

/// An item for hand-chosen steps: texts drawn from the templates with `seed`.
pub fn render_item(
    id: &str,
    steps: Vec<StepSpec>,
    templates: &Templates,
    seed: u64,
) -> Result<VerifiableItem> {
    if steps.is_empty() || steps.len() > MAX_DEPTH {
        bail!("item `{id}`: {} steps; give 1 to {MAX_DEPTH}", steps.len());
    }
    for (index, step) in steps.iter().enumerate() {
        step.validate(index, &steps)
            .with_context(|| format!("item `{id}`"))?;
    }
    let item = assemble(id.to_string(), steps, templates, &mut SeededRng::new(seed));
    item.validate()?;
    Ok(item)
}

/// Whether the checker can tell the item's steps apart: the perfect answer passes,
/// leaving out step k makes step k the first failure, and (depth ≥ 2) the reversed
/// answer is not in order.
pub fn is_distinguishable(item: &VerifiableItem) -> bool {
    if !check(item, &perfect_answer(item)).all_passed {
        return false;
    }
    let skips_fail =
        (0..item.depth).all(|k| check(item, &answer_skipping(item, k)).first_failed == Some(k));
    skips_fail && (item.depth < 2 || !check(item, &answer_reversed(item)).in_order)
}

/// Builds `per_depth` items for each depth (see the module documentation). Ids are
/// `v-{depth}-{n}`; an item that cannot be built in 2000 tries (template pools too
/// small for that many distinct prompts) is left out, so check the length when asking
/// for very large sets.
///
/// # Panics
/// On settings that [`SynthSettings::check`] rejects.
pub fn synthesize(settings: &SynthSettings, templates: &Templates) -> Vec<VerifiableItem> {
    if let Err(e) = settings.check() {
        panic!("invalid synthesis settings: {e:#}");
    }
    let mut rng = SeededRng::new(settings.seed);
    let mut prompts: HashSet<String> = HashSet::new();
    let mut items = Vec::new();
    for &depth in &settings.depths {
        // Kinds are balanced within each depth: the least used one anchors the next chain.
        let mut usage = vec![0usize; StepKind::ALL.len()];
        let index = |k: StepKind| StepKind::ALL.iter().position(|&x| x == k).unwrap_or(0);
        for n in 0..settings.per_depth {
            let possible: Vec<StepKind> = StepKind::ALL
                .iter()
                .copied()
                .filter(|k| k.references_needed() < depth)
                .collect();
            let fewest = possible.iter().map(|&k| usage[index(k)]).min().unwrap_or(0);
            let least_used: Vec<StepKind> = possible
                .iter()
                .copied()
                .filter(|&k| usage[index(k)] == fewest)
                .collect();
            for attempt in 0..MAX_ATTEMPTS {
                let anchor = if attempt < ANCHORED_ATTEMPTS {
                    *pick(&mut rng, &least_used)
                } else {
                    *pick(&mut rng, &possible)
                };
                let Some(kinds) = plan_kinds(depth, anchor, &mut rng) else {
                    continue;
                };
                let mut topics = Deck::new(templates.topics.len(), &mut rng);
                let mut words = Deck::new(templates.pools.letter_words.len(), &mut rng);
                let mut steps: Vec<StepSpec> = Vec::with_capacity(depth);
                for &kind in &kinds {
                    match draw_step(kind, &steps, templates, &mut topics, &mut words, &mut rng) {
                        Some(spec) => steps.push(spec),
                        None => break,
                    }
                }
                if steps.len() < depth {
                    continue;
                }
                let item = assemble(format!("v-{depth}-{n}"), steps, templates, &mut rng);
                if prompts.contains(&item.prompt) || !is_distinguishable(&item) {
                    continue;
                }
                prompts.insert(item.prompt.clone());
                for step in &item.steps {
                    usage[index(step.kind())] += 1;
                }
                items.push(item);
                break;
            }
        }
    }
    items
}
