//! Visual QA with the caption-then-answer prompt against a vision model behind an
//! OpenAI-compatible endpoint. Each question is sent with its image as a base64 `data:`
//! URL content part; the reply is scored by contains-match accuracy and VQA accuracy
//! ([`crate::tasks::vqa`]).
//!
//! Writes `results.jsonl` (one line per question, in data order) and `metrics.json`
//! (scores and every setting). Scored lines go to the journal `results.jsonl.partial` as
//! answers arrive and answers are kept in the request cache, so a killed run resumes
//! without asking again.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use seqit_build::vqa::{read_easy_vqa, read_vqav2, VqaItem, Vqav2Files};
use seqit_core::progress::Progress;
use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_llm::{Client, LlmRequest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{backend_spec, limit, Job, ModelSpec, Outcome, VqaMode, VqaSettings, Workspace};
use crate::benchmarks::{describe_prompt, prompt_key};
use crate::extract::Mode;
use crate::io::write_atomic;
use crate::prompt::FewShot;
use crate::tasks::vqa::{caption_answer_prompt, image_data_url, metrics, render, score, VqaScore};

/// One line of `results.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct ResultLine {
    id: String,
    image: PathBuf,
    question: String,
    label: String,
    answers: Vec<String>,
    prompt: String,
    output: String,
    extracted: Option<String>,
    followed: bool,
    correct: bool,
    vqa_accuracy: f64,
}

impl ResultLine {
    fn score(&self) -> VqaScore {
        VqaScore {
            followed: self.followed,
            extracted: self.extracted.clone(),
            correct: self.correct,
            vqa_accuracy: self.vqa_accuracy,
        }
    }
}

/// Asks and scores every question (see the [module](self) documentation); `data`
/// `train` or `test` (when no such path exists) names the installed easy-VQA split. The
/// outcome shows the metrics as pretty JSON.
pub fn run(job: &VqaSettings, progress: &dyn Progress) -> Result<Outcome> {
    let vision = ModelSpec {
        endpoint: Some(job.endpoint.clone()),
        model: job.model.clone(),
        api_key_env: job.run.api_key_env.clone(),
        concurrency: job.run.concurrency,
    };
    let mut spec = backend_spec(&vision, job.run.endpoint_cache.max_response_bytes)?;
    if !(job.timeout.is_finite() && job.timeout > 0.0) {
        bail!(
            "`--timeout` must be a number of seconds > 0, got {}",
            job.timeout
        );
    }
    spec.timeout = Duration::from_secs_f64(job.timeout);
    let params = job
        .sampling
        .params(job.max_tokens)
        .map_err(anyhow::Error::msg)?;
    let mode = match job.mode {
        VqaMode::Strict => Mode::Strict,
        VqaMode::Flexible => Mode::Flexible,
    };
    let items = limit(read_items(job)?, job.run.limit);
    let prompt = match &job.prompt_template {
        Some(path) => FewShot::from_files(path, None)?,
        None => caption_answer_prompt(),
    };
    let workspace = Workspace::create(&job.run)?;
    let backend = workspace.open(&spec)?;
    let model = backend.model().to_string();
    let client = workspace.client(backend);
    let settings = json!({
        "data": job.data,
        "annotations": job.annotations,
        "images": job.images,
        "limit": job.run.limit,
        "backend": spec.describe(),
        "model": model,
        "mode": mode,
        "params": params,
        "prompt": describe_prompt(&prompt),
    });
    let records = workspace.journaled(
        Job {
            benchmark: "vqa",
            concurrency: job.run.concurrency,
            settings: settings.clone(),
        },
        "results.jsonl",
        &items,
        |item| item.id.clone(),
        |item| ask(&client, &prompt, mode, &params, item),
        progress,
    )?;
    let mut scores = Vec::with_capacity(records.len());
    for record in &records {
        scores.push(serde_json::from_value::<ResultLine>(record.clone())?.score());
    }
    let mut report = json!({
        "task": "vqa",
        "items": records.len(),
        "metrics": metrics(&scores),
        "settings": settings,
        "ledger": client.ledger().summary(),
    });
    report["settings"]["vqa_accuracy"] = json!(
        "min(#humans who gave the answer / 3, 1), averaged over each human left out; items with one answer score normalized exact match"
    );
    write_atomic(
        &job.run.output.join("metrics.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    Ok(Outcome {
        lines: vec![serde_json::to_string_pretty(&report["metrics"])?],
        metrics: report,
    })
}

/// The questions of an easy-VQA split directory or of VQAv2 files.
fn read_items(job: &VqaSettings) -> Result<Vec<VqaItem>> {
    let data_path = seqit_engine::easy_vqa_dir(&job.data)?;
    let set = if data_path.is_dir() {
        if job.annotations.is_some() {
            bail!("`--data {}` is an easy-VQA directory; `--annotations`/`--images` go with a VQAv2 questions file", job.data.display());
        }
        read_easy_vqa(&data_path)?
    } else {
        let (Some(annotations), Some(images)) = (&job.annotations, &job.images) else {
            bail!(
                "`--data {}` is a file, read as VQAv2 questions, which need `--annotations FILE` and `--images DIR`\nhint: for easy-VQA pass the split directory, e.g. `$SEQIT_ASSETS/easy_vqa/data/test`",
                job.data.display()
            );
        };
        read_vqav2(&Vqav2Files {
            questions: data_path,
            annotations: annotations.clone(),
            images: images.clone(),
            captions: None,
        })?
    };
    Ok(set.items)
}

/// Asks one question with its image and scores the reply.
async fn ask(
    client: &Client,
    prompt: &FewShot,
    mode: Mode,
    params: &SamplingParams,
    item: &VqaItem,
) -> crate::Result<Value> {
    let rendered = render(prompt, &item.question)?;
    let image = image_data_url(&item.image)?;
    let mut params = params.clone();
    params.stop.extend(rendered.stop.iter().cloned());
    let request = LlmRequest::new(
        Prompt::Chat(vec![
            ChatMessage::user(rendered.text.clone()).with_image(image)
        ]),
        params,
    )
    .with_prompt_version(prompt_key(&rendered));
    let response = client.generate(&request).await?;
    let output = response
        .samples
        .into_iter()
        .next()
        .map(|s| s.text)
        .unwrap_or_default();
    let scored = score(&output, &item.answer, &item.answers, mode);
    let line = ResultLine {
        id: item.id.clone(),
        image: item.image.clone(),
        question: item.question.clone(),
        label: item.answer.clone(),
        answers: item.answers.clone(),
        prompt: rendered.text,
        output,
        extracted: scored.extracted,
        followed: scored.followed,
        correct: scored.correct,
        vqa_accuracy: scored.vqa_accuracy,
    };
    Ok(serde_json::to_value(line).expect("result lines serialize"))
}
