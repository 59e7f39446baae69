//! Verifiable sequential instructions ("verifiable SeqEval"): chains of 1–4 steps
//! whose every step is checked by program, so a model's following of a chained
//! instruction is measured without an LLM judge. This crate owns the step kinds, the
//! chain synthesis from the versioned template file
//! (`prompts/seqeval-verifiable/v1/steps.toml`), the checker, scores and the scripted
//! answerers used to test the checker.
//!
//! # Step kinds
//!
//! A step kind ([`StepKind`]) is one checkable task; a step ([`StepSpec`]) is a kind
//! with its parameters, stored as data (`{"kind": "sum", "numbers": [12, 30]}`). Kinds
//! come in four groups ([`Group`]):
//!
//! * **format** — capitals, lowercase, double quotes, a JSON object with given keys,
//!   numbered and bulleted lists of N items, a `<<title>>`, N paragraphs separated by
//!   `***`, a given ending or first word, a `P.S.`;
//! * **content** — keywords to include or avoid, exactly / at least / at most N words,
//!   N sentences, a word N times, no commas, one word chosen from given options;
//! * **computation** — sum, product, difference, letters in a word, a letter's count,
//!   sorting words, reversing a word, unit conversion, a word in capitals, the largest
//!   number: one exact answer each;
//! * **dependent** — acts on an earlier step's answer, named by its index: count its
//!   words, repeat its last word, its list's first item in capitals or number of items,
//!   translate the chosen word with a given table, the letters of the word given, the
//!   sum of earlier numeric answers, an earlier number multiplied.
//!
//! Every kind has several phrasings in the template file; [`synthesize`] draws kinds,
//! parameters, phrasings and a connective style ("First, … Then …", numbered steps,
//! or one sentence "…, then …, and finally …") from one seeded RNG.
//!
//! # How answers are located
//!
//! Each step's answer is its own *segment* of the response; a step is judged on its
//! segment only ("all capitals" means that segment is in capitals). Lines are first
//! cleaned of decoration (`Step 2:`, `2.`, `Then,`, `Answer:`, `**`, `#`), and lines
//! that only introduce an answer (`**Step 2: Count the words**`, `Here is the list:`)
//! count as blank, and a segment repeating the opening words of any of the chain's
//! instructions is an echo, never an answer. A segment is, depending on the kind: a block of lines (up to a blank
//! or labelled line) or a single line; a maximal numbered or bulleted list; paragraphs
//! joined by `***` lines; a JSON value; a note followed by a `P.S.` line.
//!
//! [`check`] scans in order: step k is found at the earliest segment starting after
//! step k−1's segment that passes k's check (when k−1 was not found, after the last
//! step that was). Dependent steps are judged against the segments found for the steps
//! they refer to (the word count they state must equal the count of that segment).
//! When that greedy scan misses a step, a bounded backtracking search looks for an
//! in-order assignment of every step to its own segment (a preface that happens to pass
//! "at most 5 words" must not hide a chain done right below it). Each step missed in
//! order is also looked for anywhere in the response, in segments no other step took.
//!
//! # What the scores mean
//!
//! Per step, [`StepOutcome::passed`] is "done in order" and
//! [`StepOutcome::passed_anywhere`] is "done". Per chain, [`ChainCheck::all_passed`]
//! is the headline: every step done, in order; [`ChainCheck::in_order`] says the
//! steps that were done came in the order asked (steps not done at all do not count
//! against it); [`ChainCheck::first_failed`] is where the chain broke. [`summarize`]
//! turns a set of checks into chain accuracy, step accuracy, step done rate and
//! in-order rate, overall, by depth and by kind.
//!
//! Checks must be able to fail: a numeric answer needs the exact number (restating the
//! instruction's numbers does not pass), a word count the exact count, a keyword the
//! keyword in that step's own segment. Synthesized chains are kept only when the
//! checker can tell their steps apart ([`is_distinguishable`]): the perfect answer
//! passes, leaving out step k makes step k the first failure, and the reversed answer
//! is out of order.
//!
//! # Files
//!
//! Items are JSONL ([`write_jsonl`], [`read_jsonl`]) with the SeqEval record fields
//! (`id`, `instruction`, `input`, `iteration`, `original_instruction`, `modes`,
//! `sub_steps`), so the judged SeqEval can score them too, plus `steps` and
//! `template_version`.

#![deny(missing_docs)]

mod answer;
mod check;
mod item;
mod score;
mod segment;
mod step;
mod synth;
mod templates;
pub mod text;

pub use answer::{
    answer_in_order, answer_reversed, answer_skipping, perfect_answer, perfect_segments,
};
pub use check::{check, check_steps, ChainCheck, StepOutcome};
pub use item::{read_jsonl, write_jsonl, VerifiableItem, MAX_DEPTH};
pub use score::{summarize, Summary, Tally};
pub use segment::Span;
pub use step::{Conversion, Group, StepKind, StepSpec, Yields, OPTIONAL_PLACEHOLDERS};
pub use synth::{is_distinguishable, render_item, synthesize, SynthSettings};
pub use templates::{
    fill, placeholders, Connectives, JsonSubject, Pools, References, Templates, Topic, WordTable,
    BUILTIN_PATH, BUILTIN_TEMPLATES,
};
