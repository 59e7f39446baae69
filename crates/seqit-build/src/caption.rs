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

use seqit_data::SeededRng;
use serde::{Deserialize, Serialize};

use crate::prompts::{CaptionPrompts, PromptVersion};
use crate::vqa::VqaSet;

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
