//! Opening the model a job talks to from what a user wrote: an endpoint URL and a model
//! name, or a local model file (or nothing: the embedded default).
//!
//! Every stage that needs a model (teacher, answerer, judge) goes through
//! [`open_backend`], so they all resolve names, read API keys and describe themselves
//! the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use seqit_engine::{resolve_model, Engine, EngineOptions};
use sha2::{Digest, Sha256};

use crate::remote::{list_models, normalize_base_url, redact_url};
use crate::{ApiKey, Llm, LocalBackend, RemoteBackend, RemoteConfig, DEFAULT_API_KEY_ENV};

/// Where a model lives and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// API base of an OpenAI-compatible server; `None` means the local engine.
    pub endpoint: Option<String>,
    /// Local: a GGUF file, a Hugging Face directory or a known name (`None`: the embedded
    /// default). Remote: the served model name (`None`: asked from `GET /models`, which
    /// must list exactly one).
    pub model: Option<String>,
    /// Environment variable holding the API key (remote only).
    pub api_key_env: String,
    /// Most requests in flight at once (remote only).
    pub concurrency: usize,
    /// Time one HTTP attempt may take (remote only).
    pub timeout: Duration,
    /// Retries of a failed request (remote only).
    pub max_retries: u32,
    /// Most sequences the local engine decodes together.
    pub local_max_batch: usize,
    /// Largest response body accepted from the endpoint (remote only).
    pub max_response_bytes: usize,
}

impl BackendSpec {
    /// The local engine on `model` (`None`: the embedded default model).
    pub fn local(model: Option<String>) -> Self {
        Self {
            endpoint: None,
            model,
            api_key_env: DEFAULT_API_KEY_ENV.to_string(),
            concurrency: 64,
            timeout: Duration::from_secs(300),
            max_retries: 8,
            local_max_batch: EngineOptions::default().max_batch,
            max_response_bytes: crate::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// The OpenAI-compatible server at `endpoint`.
    pub fn remote(endpoint: impl Into<String>, model: Option<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            ..Self::local(model)
        }
    }

    /// `remote(endpoint, model)` when an endpoint is given, else `local(model)`.
    pub fn from_flags(endpoint: Option<String>, model: Option<String>) -> Self {
        match endpoint {
            Some(endpoint) => Self::remote(endpoint, model),
            None => Self::local(model),
        }
    }

    /// Whether an endpoint is set (the remote backend), not the local engine.
    pub fn is_remote(&self) -> bool {
        self.endpoint.is_some()
    }

    /// "local smollm2-135m" or "remote NAME at URL": for logs and provenance. Never
    /// contains a key (passwords in the URL are removed).
    pub fn describe(&self) -> String {
        match &self.endpoint {
            None => format!(
                "local {}",
                self.model
                    .as_deref()
                    .unwrap_or(seqit_core::DEFAULT_MODEL_NAME)
            ),
            Some(url) => format!(
                "remote {} at {}",
                self.model.as_deref().unwrap_or("(served model)"),
                redact_url(url)
            ),
        }
    }
}

/// Opens the backend `spec` describes: loads the local model (seconds) or checks the
/// endpoint's URL, key variable and model name. Errors say which flag to fix.
pub async fn open_backend(spec: &BackendSpec) -> Result<Arc<dyn Llm>> {
    match &spec.endpoint {
        None => {
            let path = resolve_model(spec.model.as_deref())?;
            let options = EngineOptions {
                max_batch: spec.local_max_batch.max(1),
                ..EngineOptions::default()
            };
            let engine = tokio::task::spawn_blocking({
                let path = path.clone();
                move || Engine::load_for_inference(&path, options)
            })
            .await
            .context("the model loading thread panicked")??;
            Ok(Arc::new(LocalBackend::new(
                Arc::new(engine),
                local_model_name(spec.model.as_deref(), &path),
            )))
        }
        Some(endpoint) => {
            let base_url = normalize_base_url(endpoint)?;
            let api_key = ApiKey::from_env(&spec.api_key_env);
            if api_key.is_none() && spec.api_key_env != DEFAULT_API_KEY_ENV {
                bail!(
                    "environment variable `{}` (named as the API key variable) is not set",
                    spec.api_key_env
                );
            }
            if spec.concurrency == 0 {
                bail!("concurrency must be at least 1");
            }
            let model = match &spec.model {
                Some(model) => model.clone(),
                None => {
                    served_model(&base_url, api_key.as_ref(), spec.timeout, "the model name")
                        .await?
                }
            };
            let mut config = RemoteConfig::new(base_url, model);
            config.api_key = api_key;
            config.concurrency = spec.concurrency;
            config.timeout = spec.timeout;
            config.max_retries = spec.max_retries;
            config.max_response_bytes = spec.max_response_bytes;
            Ok(Arc::new(RemoteBackend::new(config)?))
        }
    }
}

/// The name a local model is cached and reported under: the name the user gave for a
/// known model, else the file or directory name with a fingerprint of its files.
///
/// The name is part of every request-cache key, so two models must never share it: the
/// merged models of two training runs are both called `model`, and a model retrained in
/// place keeps its path. The fingerprint covers each weight, config and tokenizer file's
/// canonical path, size and modification time (cheap, and changed by any rewrite).
fn local_model_name(given: Option<&str>, path: &Path) -> String {
    match given {
        None => seqit_core::DEFAULT_MODEL_NAME.to_string(),
        Some(name) if !name.contains('/') && !Path::new(name).exists() => name.to_string(),
        Some(_) => {
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            format!("{file_name}@{}", model_fingerprint(path))
        }
    }
}

/// 12 hex digits identifying the model files under `path` (a file or a directory) as
/// they are now.
fn model_fingerprint(path: &Path) -> String {
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension().is_some_and(|e| {
                            ["safetensors", "json", "gguf"].contains(&&*e.to_string_lossy())
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![path.to_path_buf()]
    };
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let canonical = file.canonicalize().unwrap_or(file);
        hasher.update(canonical.to_string_lossy().as_bytes());
        if let Ok(meta) = std::fs::metadata(&canonical) {
            hasher.update(meta.len().to_le_bytes());
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            hasher.update(modified.to_le_bytes());
        }
    }
    hasher.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The one model the endpoint at `base_url` serves (`GET /models`), for a run that
/// names none; an endpoint that lists none or several is an error saying so and how to
/// name one (`naming`: the flag or setting, e.g. "`--model`").
pub async fn served_model(
    base_url: &str,
    key: Option<&ApiKey>,
    timeout: Duration,
    naming: &str,
) -> Result<String> {
    let models = list_models(base_url, key, timeout.min(Duration::from_secs(30)))
        .await
        .with_context(|| {
            format!("{naming} was not given, so the endpoint was asked which models it serves")
        })?;
    match models.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!(
            "`{}` lists no models\nhint: give {naming}",
            redact_url(base_url)
        ),
        many => bail!(
            "`{}` serves several models ({})\nhint: give {naming}",
            redact_url(base_url),
            many.join(", ")
        ),
    }
}
