//! seqit's LLM interface: one async trait, two backends, and what every long job
//! against a model needs around them.
//!
//! * [`Llm`] — answers an [`LlmRequest`] (a chat or text prompt, [`SamplingParams`],
//!   `n` numbered samples) with an [`LlmResponse`].
//! * [`LocalBackend`] — the in-process engine on a dedicated thread; concurrent calls
//!   are batched together.
//! * [`RemoteBackend`] — any OpenAI-compatible endpoint: bounded concurrency,
//!   requests- and tokens-per-minute limits, retries with backoff honouring
//!   `Retry-After`, per-request timeouts, a retry cap, `n > 1` capability probing.
//! * [`Cache`] — the persistent request cache (SQLite, WAL): answers are committed as
//!   they arrive, so a killed run re-asks nothing.
//! * [`Ledger`] — tokens and cost per model; [`Estimate`] for dry runs.
//! * [`Client`] — a backend behind the cache and the ledger: what callers use.
//! * [`batch`] — OpenAI Batch API request files and results import.
//! * [`BackendSpec`] and [`open_backend`] — the local model or an endpoint, from what a
//!   user wrote (every teacher, answerer and judge is opened this way).
//! * [`generate_file`] — a JSONL file of prompts answered by any [`Client`], resumable;
//!   with [`RequestSettings`], dry-run estimates and [`export_batch`] for the same
//!   requests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), seqit_llm::LlmError> {
//! use std::sync::Arc;
//! use seqit_core::{ChatMessage, Prompt, SamplingParams};
//! use seqit_llm::{Cache, Client, LlmRequest, RemoteBackend, RemoteConfig};
//!
//! let backend = RemoteBackend::new(RemoteConfig::new("http://localhost:8000/v1", "my-model"))?;
//! let cache = Arc::new(Cache::open("run/cache.sqlite".as_ref())?);
//! let client = Client::new(Arc::new(backend)).with_cache(cache);
//! let request = LlmRequest::new(Prompt::Chat(vec![ChatMessage::user("Hi!")]), SamplingParams::greedy(64));
//! let answer = client.generate(&request).await?;
//! println!("{}", answer.samples[0].text);
//! eprintln!("{}", client.ledger().summary());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod batch;
mod cache;
mod client;
mod error;
mod jobs;
mod ledger;
mod local;
mod open;
pub mod remote;
mod structured;
mod tls;
mod types;

pub use cache::{Cache, CacheKey, CachedAnswer};
pub use client::Client;
pub use error::{is_retryable_status, LlmError};
pub use jobs::{
    export_batch, generate_file, DryRun, ExportReport, FileReport, GenerateFile, InputRecord,
    RequestSettings,
};
pub use ledger::{thousands, Estimate, Ledger, ModelTally, Price, PriceTable};
pub use local::LocalBackend;
pub use open::{open_backend, served_model, BackendSpec};
pub use remote::{
    ApiKey, EndpointCacheSettings, MultiSampleMode, RemoteBackend, RemoteConfig, RemoteSettings,
    DEFAULT_API_KEY_ENV, DEFAULT_CACHE_FILE, DEFAULT_MAX_RESPONSE_BYTES,
};
pub use seqit_core::SamplingParams;
pub use structured::{check_reply, Switch};
pub use tls::{tls_roots, TlsRoots};
pub use types::{EndpointKind, Llm, LlmRequest, LlmResponse, MultiSample, Sample, Usage};
