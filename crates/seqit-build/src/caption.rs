//! Caption-then-answer: SIT and IT visual QA data as LLaVA-style
//! conversation records, which LLaMA-Factory and other VLM trainers read:
//!
//! ```json
//! {"id": "0", "image": "/data/images/0.png",
//!  "conversations": [{"from": "human", "value": "<image>\nFirst describe ..."},
//!                    {"from": "gpt", "value": "Description: a red triangle\nAnswer: triangle"}]}
//! ```
//!
//! The SIT item asks to describe the image and then answer, with target
//! `Description: <caption>` then `Answer: <answer>`; the IT item asks the question
//! directly with target `Answer: <answer>` only. Both files hold the same questions, in
//! the same order, with the same ids. Questions whose image has no caption are left out
//! of both (counted in the report).

use std::collections::BTreeSet;
use std::path::PathBuf;

use seqit_data::SeededRng;
use serde::{Deserialize, Serialize};

use crate::error::{BuildError, Result};
use crate::output::{write_json, write_report};
use crate::prompts::{CaptionPrompts, PromptVersion};
use crate::vqa::{VqaSet, VqaSource};

/// The image token LLaVA-style trainers expect at the start of the human turn.
pub const IMAGE_TOKEN: &str = "<image>";

/// One turn of a LLaVA-style conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// `human` or `gpt`.
    pub from: String,
    /// The text (`<image>\n…` in the human turn).
    pub value: String,
}

/// One LLaVA-style record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlavaRecord {
    /// The question's id.
    pub id: String,
    /// Path of the image file.
    pub image: String,
    /// Human question, then the target answer.
    pub conversations: Vec<Turn>,
}

impl LlavaRecord {
    fn new(id: &str, image: String, human: String, gpt: String) -> Self {
        Self {
            id: id.to_string(),
            image,
            conversations: vec![
                Turn {
                    from: "human".into(),
                    value: format!("{IMAGE_TOKEN}\n{human}"),
                },
                Turn {
                    from: "gpt".into(),
                    value: gpt,
                },
            ],
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct CaptionReport {
    /// Questions read.
    pub questions: usize,
    /// Questions left out because their image has no caption.
    pub without_caption: usize,
    /// Records written to each of the SIT and IT files.
    pub written: usize,
    /// Distinct images among the written records.
    pub images: usize,
    /// `--limit`, if one was set.
    pub limit: Option<usize>,
    /// Seed of the `--limit` draw.
    pub seed: u64,
    /// The prompt file used.
    pub prompts: PromptVersion,
}

/// The SIT records, the IT records (same ids, same order) and the report.
#[derive(Debug, Clone)]
pub struct CaptionData {
    /// Caption-then-answer records.
    pub sit: Vec<LlavaRecord>,
    /// Answer-only records.
    pub it: Vec<LlavaRecord>,
    /// Counts and settings.
    pub report: CaptionReport,
}

/// One `seqit build caption` run.
#[derive(Debug, Clone)]
pub struct CaptionJob {
    /// Where the questions, answers and images come from.
    pub source: VqaSource,
    /// SIT output (caption-then-answer), LLaVA-style JSON.
    pub sit_output: PathBuf,
    /// IT output (answer only), LLaVA-style JSON.
    pub it_output: PathBuf,
    /// At most this many questions (at least 1), drawn with `seed`; `None`: all.
    pub limit: Option<usize>,
    /// Seed of the `limit` draw.
    pub seed: u64,
    /// Directory with a replacement `caption.toml`; `None`: the built-in prompts.
    pub prompts: Option<PathBuf>,
}

/// Reads the source, builds both files ([`build`]) and writes them, with the report
/// beside the SIT output as `<sit_output>.report.json`. Returns the report.
pub fn run(job: &CaptionJob) -> Result<CaptionReport> {
    if job.limit == Some(0) {
        return Err(BuildError::Settings("`--limit` must be at least 1".into()));
    }
    let set = job.source.read()?;
    let prompts = CaptionPrompts::load(job.prompts.as_deref())?;
    let data = build(&set, &prompts, job.limit, job.seed);
    write_json(&job.sit_output, &data.sit)?;
    write_json(&job.it_output, &data.it)?;
    write_report(&job.sit_output, &data.report)?;
    Ok(data.report)
}

/// Builds both files' records. With `limit`, that many captioned questions are drawn
/// with `seed` and written in their file order.
pub fn build(
    set: &VqaSet,
    prompts: &CaptionPrompts,
    limit: Option<usize>,
    seed: u64,
) -> CaptionData {
    let captioned: Vec<usize> = (0..set.items.len())
        .filter(|&i| set.caption(&set.items[i]).is_some())
        .collect();
    let chosen: Vec<usize> = match limit {
        Some(limit) if limit < captioned.len() => {
            let mut drawn: Vec<usize> = SeededRng::new(seed)
                .sample(captioned.len(), limit)
                .into_iter()
                .map(|d| captioned[d])
                .collect();
            drawn.sort_unstable();
            drawn
        }
        _ => captioned.clone(),
    };
    let mut sit = Vec::with_capacity(chosen.len());
    let mut it = Vec::with_capacity(chosen.len());
    let mut images = BTreeSet::new();
    for &index in &chosen {
        let item = &set.items[index];
        let caption = set.caption(item).unwrap_or_default();
        let image = item.image.display().to_string();
        images.insert(item.image_id.as_str());
        let (human, target) = prompts.sit(&item.question, caption, &item.answer);
        sit.push(LlavaRecord::new(&item.id, image.clone(), human, target));
        let (human, target) = prompts.it(&item.question, &item.answer);
        it.push(LlavaRecord::new(&item.id, image, human, target));
    }
    let report = CaptionReport {
        questions: set.items.len(),
        without_caption: set.items.len() - captioned.len(),
        written: chosen.len(),
        images: images.len(),
        limit,
        seed,
        prompts: prompts.version.clone(),
    };
    CaptionData { sit, it, report }
}
