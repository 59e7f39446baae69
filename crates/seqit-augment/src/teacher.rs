//! The teacher as the pipelines use it: a caching [`Client`], a description for the
//! provenance, seeded RNGs per item, and an optional log of every request made; and
//! [`TeacherSettings`], how a run opens one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use seqit_core::durable::parent_dir;
use seqit_core::{Prompt, SamplingParams};
use seqit_data::SeededRng;
use seqit_llm::{
    BackendSpec, Cache, Client, EndpointCacheSettings, Ledger, LlmRequest, PriceTable,
    DEFAULT_CACHE_FILE,
};
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
    /// A teacher asking through `client`, described by `info`, its cache keys holding
    /// `prompt_version`.
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

    /// Which teacher this is.
    pub fn info(&self) -> &TeacherInfo {
        &self.info
    }

    /// The caching client (and its token ledger).
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

/// The teacher and its decoding, as `seqit augment` and `seqit seqeval build` take
/// them from flags (and `seqit run` writes them back as flags).
#[derive(Debug, Clone, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
#[command(next_help_heading = "Teacher")]
pub struct TeacherSettings {
    /// API base of an OpenAI-compatible teacher (e.g. `http://localhost:8000/v1`);
    /// without it the local default model is the teacher.
    #[arg(long, env = "SEQIT_TEACHER_ENDPOINT")]
    pub teacher_endpoint: Option<String>,
    /// Model name at the endpoint, or a local `.gguf` / HF directory (default
    /// `smollm2-135m`).
    #[arg(long, env = "SEQIT_TEACHER_MODEL")]
    pub teacher_model: Option<String>,
    /// Environment variable holding the endpoint's API key.
    #[arg(long, default_value = seqit_llm::DEFAULT_API_KEY_ENV)]
    pub api_key_env: String,
    /// Most teacher requests in flight at once. Twice as many items are worked on, so
    /// the teacher always has requests waiting while items are between steps.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds one HTTP attempt may take.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Retries of a failed request.
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,
    /// Most sequences the local teacher decodes together.
    #[arg(long, default_value_t = 16)]
    pub local_batch: usize,
    /// Request cache (SQLite); default `seqit-cache.sqlite` next to `--output`.
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Neither read nor write the request cache (a killed run then re-asks).
    #[arg(long)]
    pub no_cache: bool,
    /// How the endpoint's answers are cached and bounded.
    #[command(flatten)]
    #[serde(flatten)]
    pub endpoint_cache: EndpointCacheSettings,
    /// Prices per model per 1M tokens (TOML or JSON) for the cost figure.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Directory with your own prompt files (templates.toml, classify_examples.toml,
    /// rewrite_examples.toml); default: the built-in `seq-instruct/v2`.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Append one JSON line per teacher request (id, iteration, purpose, cached).
    #[arg(long)]
    pub request_log: Option<PathBuf>,
    /// Seed of the example shuffles, depth assignment and sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most new tokens per teacher answer.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Sampling temperature of the teacher.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling mass of the teacher.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// 0 disables top-k filtering.
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
}

impl TeacherSettings {
    /// The paper's decoding with these settings' values, checked.
    pub fn decoding(&self) -> Result<SamplingParams> {
        let params = SamplingParams {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            ..crate::paper_decoding(self.seed)
        };
        params.validate().map_err(anyhow::Error::msg)?;
        Ok(params)
    }

    /// Items worked on at once: twice the requests in flight, so that the teacher
    /// always has requests waiting while items are between steps.
    pub fn items_in_flight(&self) -> usize {
        self.concurrency.saturating_mul(2).max(1)
    }

    /// The request cache of a run that writes `output`; `None` with `no_cache`.
    pub fn cache_path(&self, output: &Path) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        Some(
            self.cache
                .clone()
                .unwrap_or_else(|| parent_dir(output).join(DEFAULT_CACHE_FILE)),
        )
    }

    /// The prompt set: the files in `prompts`, else the built-in one.
    pub fn prompt_set(&self) -> Result<crate::PromptSet> {
        crate::PromptSet::load_or_builtin(self.prompts.as_deref())
    }

    /// Opens the teacher behind the request cache ([`cache_path`](Self::cache_path)),
    /// its cache keys holding `prompts`' cache version, with a token ledger priced
    /// from `prices`.
    pub async fn open(&self, output: &Path, prompts: &crate::PromptSet) -> Result<Teacher> {
        if self.concurrency == 0 {
            bail!("`--concurrency` must be at least 1");
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            bail!(
                "`--timeout` must be a number of seconds > 0, got {}",
                self.timeout
            );
        }
        let mut spec = match &self.teacher_endpoint {
            Some(url) => BackendSpec::remote(url.clone(), self.teacher_model.clone()),
            None => BackendSpec::local(self.teacher_model.clone()),
        };
        spec.api_key_env = self.api_key_env.clone();
        spec.concurrency = self.concurrency;
        spec.timeout = Duration::from_secs_f64(self.timeout);
        spec.max_retries = self.max_retries;
        spec.local_max_batch = self.local_batch.max(1);
        spec.max_response_bytes = self.endpoint_cache.max_response_bytes;
        let backend = seqit_llm::open_backend(&spec).await?;
        let prices = self.prices.as_deref().map(PriceTable::load).transpose()?;
        let mut client = Client::new(backend.clone())
            .with_ledger(Arc::new(Ledger::new(prices)))
            .share_cache_across_endpoints(self.endpoint_cache.share_cache_across_endpoints);
        if let Some(path) = self.cache_path(output) {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create `{}`", dir.display()))?;
            }
            client = client.with_cache(Arc::new(Cache::open(&path)?));
        }
        let info = TeacherInfo {
            model: backend.model().to_string(),
            endpoint_kind: if self.teacher_endpoint.is_some() {
                "remote"
            } else {
                "local"
            }
            .into(),
            backend: spec.describe(),
        };
        let teacher = Teacher::new(client, info, prompts.cache_version());
        match &self.request_log {
            Some(path) => teacher.with_request_log(path),
            None => Ok(teacher),
        }
    }
}

/// What a request is for (for the request log and error messages).
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The item's id.
    pub id: &'a str,
    /// The iteration (round) the request belongs to.
    pub iteration: u32,
    /// What is asked (`classify`, `rewrite`, ...).
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
