//! A model as judge: seqit's own versioned judge prompts
//! (`prompts/eval/judge/v1/`), the calls that ask them through an
//! [`Answerer`] (so verdicts are cached like any answer), and strict verdict parsing.
//!
//! | prompt | asks | verdict lines |
//! |---|---|---|
//! | `following` | did the response attempt each task of the chain, and the whole chain? | `Task <i>: yes\|no` for every task, `Overall: yes\|no` |
//! | `quality` | quality on a 1–5 scale | `Rating: <1-5>` |
//! | `pairwise` | which of two responses is better | `Winner: A\|B\|tie` |
//!
//! Parsing is strict: a verdict missing, out of range or given twice with different
//! values is a parse failure (`None`), never a guess; callers count failures.
//! Pairwise comparisons are asked in both orders, and ties count half.
//!
//! A structured judge (the default) is constrained to exactly these verdict formats
//! (its reasons may hold no `:` or `#`, so no verdict line can hide in them), and asks
//! for token log-probabilities: where the backend returns them, every verdict also gets
//! a probability-weighted score (see [`crate::logprob_score`]) beside the parsed one.

use std::collections::BTreeMap;
use std::path::Path;

use seqit_core::{Constraint, TokenLogprob};
use serde::Serialize;
use serde_json::{json, Value};

use crate::answer::Answerer;
use crate::benchmarks::prompt_key;
use crate::error::Result;
use crate::logprob_score::{
    expected_rating, winner_distribution, yes_probabilities, JUDGE_TOP_LOGPROBS,
};
use crate::prompt::FewShot;

const FOLLOWING: &str = include_str!("../../../prompts/eval/judge/v1/following.template");
const QUALITY: &str = include_str!("../../../prompts/eval/judge/v1/quality.template");
const PAIRWISE: &str = include_str!("../../../prompts/eval/judge/v1/pairwise.template");

/// The three judge prompts.
#[derive(Debug, Clone)]
pub struct JudgePrompts {
    /// Per-task and whole-chain following (`judge/v1/following`).
    pub following: FewShot,
    /// 1–5 quality (`judge/v1/quality`).
    pub quality: FewShot,
    /// A against B (`judge/v1/pairwise`).
    pub pairwise: FewShot,
}

impl JudgePrompts {
    /// The built-in prompts, version 1.
    pub fn builtin() -> Self {
        let parse = |name: &str, text: &str| {
            let version = format!("judge/v1/{name}");
            let origin = Path::new("prompts/eval").join(&version);
            FewShot::parse(&version, (text, &origin), None)
                .unwrap_or_else(|err| panic!("built-in prompt `{version}` is malformed: {err}"))
        };
        Self {
            following: parse("following", FOLLOWING),
            quality: parse("quality", QUALITY),
            pairwise: parse("pairwise", PAIRWISE),
        }
    }

    /// `following.template`, `quality.template` and `pairwise.template` from `dir`;
    /// files missing there keep the built-in prompt.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut prompts = Self::builtin();
        for (name, slot) in [
            ("following", &mut prompts.following),
            ("quality", &mut prompts.quality),
            ("pairwise", &mut prompts.pairwise),
        ] {
            let path = dir.join(format!("{name}.template"));
            if path.exists() {
                *slot = FewShot::from_files(&path, None)?;
            }
        }
        Ok(prompts)
    }

    /// Versions and hashes, for metrics files.
    pub fn describe(&self) -> Value {
        let one = |p: &FewShot| json!({ "version": p.version, "hash": p.hash });
        json!({
            "following": one(&self.following),
            "quality": one(&self.quality),
            "pairwise": one(&self.pairwise),
        })
    }
}

/// A parsed following verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Following {
    /// Per task, in order: attempted?
    pub steps: Vec<bool>,
    /// The judge's whole-chain verdict.
    pub chain: bool,
}

impl Following {
    /// Every task attempted.
    pub fn all_steps(&self) -> bool {
        self.steps.iter().all(|&s| s)
    }
}

/// The outcome of one pairwise question, from the first response's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    /// Response A is better.
    A,
    /// Response B is better.
    B,
    /// Neither.
    Tie,
}

/// A verdict line's content with decoration removed: `**Task 1:** Yes.` → `task 1: yes`.
fn clean(line: &str) -> String {
    let lowered = line.to_lowercase().replace(['*', '`', '_'], "");
    let trimmed = lowered
        .trim()
        .trim_start_matches(['#', '-', '>', ' '])
        .trim_end_matches(['.', '!', ' ']);
    trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Values of the lines `<label>: <value>` (after [`clean`]), in order.
fn labelled<'a>(lines: &'a [String], label: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(label))
        .filter_map(|rest| rest.strip_prefix(':'))
        .map(str::trim)
        .collect()
}

/// The single value all `values` agree on; `None` for none or a conflict.
fn agreed<T: PartialEq + Copy>(values: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let mut found: Option<T> = None;
    for value in values {
        let value = value?;
        match found {
            Some(previous) if previous != value => return None,
            _ => found = Some(value),
        }
    }
    found
}

fn yes_no(text: &str) -> Option<bool> {
    match text {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Parses a following verdict for `n` tasks: a `Task <i>: yes|no` line for every task
/// 1..=n (no others), and an `Overall: yes|no` line.
pub fn parse_following(text: &str, n: usize) -> Option<Following> {
    let lines: Vec<String> = text.lines().map(clean).collect();
    let mut by_task: BTreeMap<usize, Vec<Option<bool>>> = BTreeMap::new();
    for line in &lines {
        let Some((number, verdict)) = line
            .strip_prefix("task ")
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let Ok(number) = number.trim().parse::<usize>() else {
            continue;
        };
        by_task
            .entry(number)
            .or_default()
            .push(yes_no(verdict.trim()));
    }
    if by_task.len() != n || by_task.keys().any(|&i| i == 0 || i > n) {
        return None;
    }
    let steps = by_task
        .into_values()
        .map(agreed)
        .collect::<Option<Vec<bool>>>()?;
    let chain = agreed(labelled(&lines, "overall").into_iter().map(yes_no))?;
    Some(Following { steps, chain })
}

/// Parses `Rating: <n>` with `low <= n <= high` (every rating line must agree).
pub fn parse_rating(text: &str, low: u32, high: u32) -> Option<u32> {
    let lines: Vec<String> = text.lines().map(clean).collect();
    agreed(labelled(&lines, "rating").into_iter().map(|v| {
        let v = v.strip_suffix(&format!("/{high}")).unwrap_or(v).trim();
        v.parse::<u32>().ok().filter(|r| (low..=high).contains(r))
    }))
}

/// Parses `Winner: A|B|tie`.
pub fn parse_winner(text: &str) -> Option<Winner> {
    let lines: Vec<String> = text.lines().map(clean).collect();
    agreed(labelled(&lines, "winner").into_iter().map(|v| match v {
        "a" | "response a" => Some(Winner::A),
        "b" | "response b" => Some(Winner::B),
        "tie" => Some(Winner::Tie),
        _ => None,
    }))
}

/// The verdict lines [`parse_following`] reads, as a constraint: `Task <i>: yes|no` for
/// each of `n` tasks, then `Overall: yes|no`.
pub fn following_format(n: usize) -> Constraint {
    let mut pattern: String = (1..=n.max(1))
        .map(|i| format!("Task {i}: (yes|no)\n"))
        .collect();
    pattern.push_str("Overall: (yes|no)");
    Constraint::Regex { pattern }
}

/// Optionally up to `reason_chars` characters of justification (no `:` or `#`) and a
/// line break, then `<label>: ` and one of `verdicts`.
pub fn reasoned_verdict_format(reason_chars: usize, label: &str, verdicts: &[&str]) -> Constraint {
    let options: Vec<String> = verdicts
        .iter()
        .map(|v| seqit_core::escape_regex(v))
        .collect();
    Constraint::Regex {
        pattern: format!(
            "(?:[^:#]{{0,{reason_chars}}}\n)?{}: ({})",
            seqit_core::escape_regex(label),
            options.join("|")
        ),
    }
}

/// A following verdict: the raw reply, its parse and, with log-probabilities, p(yes)
/// per task and for the whole chain.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowingVerdict {
    /// The judge's reply.
    pub raw: String,
    /// Its verdict lines, when they parsed.
    pub parsed: Option<Following>,
    /// p(yes) per task (with log-probabilities).
    pub step_yes: Option<Vec<f64>>,
    /// p(yes) of the overall line (with log-probabilities).
    pub chain_yes: Option<f64>,
}

/// A quality verdict: the raw reply, the rating it states and, with
/// log-probabilities, the expected rating.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityVerdict {
    /// The judge's reply.
    pub raw: String,
    /// The rating it states, when it parsed.
    pub rating: Option<u32>,
    /// Σ p(k)·k over the ratings (with log-probabilities).
    pub expected: Option<f64>,
}

/// One pairwise comparison asked in both orders.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pairwise {
    /// The judge's reply with the model's response as A.
    pub model_first_raw: String,
    /// The judge's reply with the model's response as B.
    pub model_second_raw: String,
    /// The parsed verdicts (model as A, model as B).
    pub verdicts: [Option<Winner>; 2],
    /// The model's score: 1 win, ½ tie, 0 loss, averaged over the parsed orders; `None`
    /// when neither parsed.
    pub score: Option<f64>,
    /// The same score from the judge's probabilities, p(model wins) + ½ p(tie),
    /// averaged over both orders (`None` without log-probabilities for both).
    pub expected_score: Option<f64>,
}

impl Pairwise {
    /// Scores the two verdicts from the model's side.
    pub fn new(model_first_raw: String, model_second_raw: String) -> Self {
        let verdicts = [
            parse_winner(&model_first_raw),
            parse_winner(&model_second_raw),
        ];
        let scores: Vec<f64> = [
            verdicts[0].map(|w| match w {
                Winner::A => 1.0,
                Winner::Tie => 0.5,
                Winner::B => 0.0,
            }),
            verdicts[1].map(|w| match w {
                Winner::B => 1.0,
                Winner::Tie => 0.5,
                Winner::A => 0.0,
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        let score = (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
        Self {
            model_first_raw,
            model_second_raw,
            verdicts,
            score,
            expected_score: None,
        }
    }

    /// Adds the probability-weighted score from both orders' log-probabilities.
    fn with_logprobs(
        mut self,
        model_first: Option<&[TokenLogprob]>,
        model_second: Option<&[TokenLogprob]>,
    ) -> Self {
        let first = model_first.and_then(winner_distribution);
        let second = model_second.and_then(winner_distribution);
        if let (Some([a1, _, t1]), Some([_, b2, t2])) = (first, second) {
            self.expected_score = Some(((a1 + 0.5 * t1) + (b2 + 0.5 * t2)) / 2.0);
        }
        self
    }

    /// Orders whose verdict did not parse (0, 1 or 2).
    pub fn parse_failures(&self) -> usize {
        self.verdicts.iter().filter(|v| v.is_none()).count()
    }
}

/// A model with the judge prompts.
#[derive(Debug, Clone)]
pub struct Judge {
    /// The judging model (greedy decoding, short replies).
    pub answerer: Answerer,
    /// The prompts it is asked.
    pub prompts: JudgePrompts,
    /// Constrain replies to the verdict formats and ask for log-probabilities (see the
    /// module documentation); off: free text, parsed.
    pub structured: bool,
}

/// A judge's reply and, when it came with them, its token log-probabilities.
struct Reply {
    text: String,
    logprobs: Option<Vec<TokenLogprob>>,
}

impl Judge {
    /// A structured judge.
    pub fn new(answerer: Answerer, prompts: JudgePrompts) -> Self {
        Self {
            answerer,
            prompts,
            structured: true,
        }
    }

    /// Characters of justification a reply may spend before its verdict line.
    fn reason_chars(&self) -> usize {
        self.answerer
            .params()
            .max_tokens
            .saturating_sub(12)
            .min(600)
    }

    async fn ask(
        &self,
        prompt: &FewShot,
        fields: &[(&str, &str)],
        format: Constraint,
    ) -> Result<Reply> {
        let rendered = prompt.render(&fields.iter().copied().collect())?;
        if !self.structured {
            let text = self
                .answerer
                .ask_one(&rendered.text, &rendered.stop, &prompt_key(&rendered))
                .await?;
            return Ok(Reply {
                text,
                logprobs: None,
            });
        }
        let sample = self
            .answerer
            .ask_shaped(
                None,
                &rendered.text,
                &prompt_key(&rendered),
                Some(format),
                Some(JUDGE_TOP_LOGPROBS),
            )
            .await?;
        Ok(Reply {
            text: sample.text,
            logprobs: sample.logprobs,
        })
    }

    /// Following: the raw reply and its parse.
    pub async fn following(
        &self,
        instruction: &str,
        steps: &[String],
        response: &str,
    ) -> Result<FollowingVerdict> {
        let numbered: Vec<String> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {}", i + 1, s.trim()))
            .collect();
        let n = steps.len().to_string();
        let reply = self
            .ask(
                &self.prompts.following,
                &[
                    ("instruction", instruction),
                    ("steps", &numbered.join("\n")),
                    ("n", &n),
                    ("response", response),
                ],
                following_format(steps.len()),
            )
            .await?;
        // Exactly one p(yes) per task plus the overall one, or none at all.
        let yes = reply
            .logprobs
            .as_deref()
            .map(yes_probabilities)
            .filter(|p| p.len() == steps.len() + 1);
        Ok(FollowingVerdict {
            parsed: parse_following(&reply.text, steps.len()),
            step_yes: yes.as_ref().map(|p| p[..steps.len()].to_vec()),
            chain_yes: yes.as_ref().map(|p| p[steps.len()]),
            raw: reply.text,
        })
    }

    /// Quality 1–5: the raw reply and its parse.
    pub async fn quality(&self, instruction: &str, response: &str) -> Result<QualityVerdict> {
        let format =
            reasoned_verdict_format(self.reason_chars(), "Rating", &["1", "2", "3", "4", "5"]);
        let reply = self
            .ask(
                &self.prompts.quality,
                &[("instruction", instruction), ("response", response)],
                format,
            )
            .await?;
        Ok(QualityVerdict {
            rating: parse_rating(&reply.text, 1, 5),
            expected: reply
                .logprobs
                .as_deref()
                .and_then(|l| expected_rating(l, 1, 5)),
            raw: reply.text,
        })
    }

    /// The model's response against a reference, asked in both orders.
    pub async fn compare(
        &self,
        instruction: &str,
        model: &str,
        reference: &str,
    ) -> Result<Pairwise> {
        let ask = |a: &'_ str, b: &'_ str| {
            let fields = [
                ("instruction", instruction.to_string()),
                ("response_a", a.to_string()),
                ("response_b", b.to_string()),
            ];
            async move {
                let fields: Vec<(&str, &str)> =
                    fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let format =
                    reasoned_verdict_format(self.reason_chars(), "Winner", &["A", "B", "tie"]);
                self.ask(&self.prompts.pairwise, &fields, format).await
            }
        };
        let (first, second) = futures::try_join!(ask(model, reference), ask(reference, model))?;
        Ok(Pairwise::new(first.text, second.text)
            .with_logprobs(first.logprobs.as_deref(), second.logprobs.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_verdicts_are_parsed_strictly() {
        let ok = "Task 1: yes\n**Task 2:** No.\nOverall: no";
        assert_eq!(
            parse_following(ok, 2),
            Some(Following {
                steps: vec![true, false],
                chain: false
            })
        );
        // Chatter around the verdict lines is tolerated.
        let chatty = "Here is my verdict.\n- Task 1: Yes\n- Task 2: yes\nOverall: YES\nThanks";
        assert!(parse_following(chatty, 2).unwrap().all_steps());
        // A missing task, an extra task, a conflict, no overall line, a non-verdict.
        assert_eq!(parse_following("Task 1: yes\nOverall: yes", 2), None);
        assert_eq!(
            parse_following("Task 1: yes\nTask 2: yes\nTask 3: no\nOverall: no", 2),
            None
        );
        assert_eq!(
            parse_following("Task 1: yes\nTask 1: no\nOverall: no", 1),
            None
        );
        assert_eq!(parse_following("Task 1: yes", 1), None);
        assert_eq!(parse_following("Task 1: maybe\nOverall: no", 1), None);
        // Repeating the same verdict is not a conflict.
        assert!(parse_following("Task 1: yes\nTask 1: yes\nOverall: yes", 1).is_some());
    }

    #[test]
    fn ratings_and_winners() {
        assert_eq!(parse_rating("Good answer.\nRating: 4", 1, 5), Some(4));
        assert_eq!(parse_rating("**Rating:** 5/5", 1, 5), Some(5));
        assert_eq!(parse_rating("Rating: 6", 1, 5), None);
        assert_eq!(parse_rating("Rating: 3\nRating: 4", 1, 5), None);
        assert_eq!(parse_rating("I'd give it a 4.", 1, 5), None);
        assert_eq!(parse_rating("Rating: 9", 1, 10), Some(9));
        assert_eq!(
            parse_winner("B is more complete.\nWinner: B"),
            Some(Winner::B)
        );
        assert_eq!(parse_winner("Winner: Tie."), Some(Winner::Tie));
        assert_eq!(parse_winner("Winner: both"), None);
        assert_eq!(parse_winner("A wins"), None);
    }

    #[test]
    fn both_orders_count_and_ties_are_half() {
        let p = Pairwise::new("Winner: A".into(), "Winner: B".into());
        assert_eq!(p.score, Some(1.0));
        let p = Pairwise::new("Winner: A".into(), "Winner: A".into());
        assert_eq!(p.score, Some(0.5), "position bias cancels out");
        let p = Pairwise::new("Winner: tie".into(), "Winner: A".into());
        assert_eq!(p.score, Some(0.25));
        let p = Pairwise::new("Winner: tie".into(), "garbage".into());
        assert_eq!((p.score, p.parse_failures()), (Some(0.5), 1));
        let p = Pairwise::new("?".into(), "?".into());
        assert_eq!((p.score, p.parse_failures()), (None, 2));
    }
}
