//! The teacher as the pipelines use it: a caching [`Client`], a description for the
//! provenance, seeded RNGs per item, and an optional log of every request made.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use seqit_core::{Prompt, SamplingParams};
use seqit_data::SeededRng;
use seqit_llm::{Client, LlmRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Which teacher answered, as recorded in the provenance (never a key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherInfo {
    /// The model name requests are sent (and cached) under.
    pub model: String,
    /// `local` or `remote`.
    pub endpoint_kind: String,
    /// The backend's description (kind, model, API base without credentials).
    pub backend: String,
}

/// A teacher model behind the request cache.
pub struct Teacher {
    client: Client,
    info: TeacherInfo,
    /// `cache_version` of the prompt set: part of every request's cache key.
    prompt_version: String,
    log: Option<Mutex<File>>,
}

impl Teacher {
    pub fn new(client: Client, info: TeacherInfo, prompt_version: String) -> Self {
        Self {
            client,
            info,
            prompt_version,
            log: None,
        }
    }

    /// Appends one JSON line per request (`id`, `iteration`, `purpose`, `sample`,
    /// `cached`) to `path`, so runs can show what was asked.
    pub fn with_request_log(mut self, path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the request log `{}`", path.display()))?;
        self.log = Some(Mutex::new(file));
        Ok(self)
    }

    pub fn info(&self) -> &TeacherInfo {
        &self.info
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Asks sample `sample` of `prompt` and returns its text.
    pub async fn ask(
        &self,
        prompt: Prompt,
        params: &SamplingParams,
        sample: u32,
        what: Asked<'_>,
    ) -> Result<String> {
        let mut request = LlmRequest::new(prompt, params.clone())
            .with_prompt_version(self.prompt_version.clone());
        request.first_sample = sample;
        let answer = self.client.generate(&request).await.with_context(|| {
            format!(
                "the teacher `{}` failed on the {} request of item `{}` (iteration {})",
                self.info.model, what.purpose, what.id, what.iteration
            )
        })?;
        let sample_answer = answer
            .samples
            .into_iter()
            .next()
            .context("the teacher returned no sample")?;
        if let Some(log) = &self.log {
            let line = json!({
                "id": what.id,
                "iteration": what.iteration,
                "purpose": what.purpose,
                "sample": sample,
                "cached": sample_answer.cached,
            });
            let _ = writeln!(log.lock().expect("request log lock"), "{line}");
        }
        Ok(sample_answer.text)
    }
}

/// What a request is for (for the request log and error messages).
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub id: &'a str,
    pub iteration: u32,
    pub purpose: &'a str,
}

/// The RNG of one decision: a function of the run seed, the item id, the iteration and
/// the purpose only, so results do not depend on the order or concurrency of the run.
pub fn item_rng(seed: u64, id: &str, iteration: u32, purpose: &str) -> SeededRng {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update((id.len() as u64).to_le_bytes());
    hasher.update(id.as_bytes());
    hasher.update(iteration.to_le_bytes());
    hasher.update(purpose.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    SeededRng::new(u64::from_le_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_rngs_depend_on_every_part() {
        let draw = |seed, id, it, p| item_rng(seed, id, it, p).below(1 << 30);
        let base = draw(1, "a", 1, "classify");
        assert_eq!(base, draw(1, "a", 1, "classify"));
        assert_ne!(base, draw(2, "a", 1, "classify"));
        assert_ne!(base, draw(1, "b", 1, "classify"));
        assert_ne!(base, draw(1, "a", 2, "classify"));
        assert_ne!(base, draw(1, "a", 1, "rewrite"));
    }
}
