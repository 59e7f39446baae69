//! An OpenAI-compatible HTTP server over seqit's local [`Engine`].
//!
//! This crate owns the HTTP side of `seqit serve`: routes, wire types, the mapping of
//! errors to status codes and OpenAI error bodies, the request queue and batching
//! scheduler, and server-sent-event streaming. It never prints; the binary decides what
//! the operator sees.
//!
//! * [`serve`] / [`serve_with_shutdown`] — run the server on a bound listener.
//! * [`router`] — the same application as an axum [`Router`], for embedding.
//! * [`ServerConfig`] — served model name, API key, body size limit, queue bounds.
//!
//! Routes ([`routes`] holds the paths): `GET /health`, `GET /metrics` (Prometheus text:
//! requests, tokens, the engine's prefix cache), `GET /v1/models`,
//! `GET /v1/models/{model}`, `POST /v1/chat/completions` and `POST /v1/completions`,
//! both with `stream: true` support.
//!
//! Concurrency: one scheduler thread owns the engine. Requests are queued; the scheduler
//! takes everything queued (up to the engine's batch size) and decodes it as one batch,
//! forwarding text deltas to streaming clients as they become final. When more than
//! [`ServerConfig::max_queued_sequences`] sequences wait, requests get 503 with
//! `Retry-After`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use seqit_engine::{resolve_model, Engine, EngineOptions};
//!
//! let engine = Arc::new(Engine::load(&resolve_model(None)?, EngineOptions::default())?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! seqit_serve::serve(engine, seqit_serve::ServerConfig::new("smollm2-135m"), listener).await
//! # }
//! ```

#![deny(missing_docs)]

mod error;
pub mod routes;
mod scheduler;
mod stream;
mod wire;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::Router;
use seqit_engine::Engine;

use crate::scheduler::Scheduler;

/// Settings of a server, checked by [`ServerConfig::validate`] before it starts.
#[derive(Clone)]
pub struct ServerConfig {
    /// The model id clients send and `/v1/models` lists.
    pub model_name: String,
    /// When set, every `/v1` request needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest accepted request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// `max_tokens` of requests that give none.
    pub default_max_tokens: usize,
    /// Most sequences queued or running at once; beyond it requests get 503.
    pub max_queued_sequences: usize,
    /// How long the scheduler waits after a request arrives for others to batch with it.
    pub batch_window: Duration,
}

impl ServerConfig {
    /// Defaults for serving a model under `model_name`: no API key, 2 MiB bodies,
    /// `max_tokens` 512, 256 queued sequences, a 2 ms batching window.
    pub fn new(model_name: impl Into<String>) -> Self {
        Self {
            model_name: model_name.into(),
            api_key: None,
            max_body_bytes: 2 * 1024 * 1024,
            default_max_tokens: 512,
            max_queued_sequences: 256,
            batch_window: Duration::from_millis(2),
        }
    }

    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.model_name.trim().is_empty() {
            bail!("the served model name must not be empty");
        }
        if self
            .api_key
            .as_deref()
            .is_some_and(|key| key.trim().is_empty())
        {
            bail!("the API key must not be empty\nhint: omit `--api-key` to serve without one");
        }
        if self.max_body_bytes == 0 {
            bail!("the request body limit must be at least 1 byte");
        }
        if self.default_max_tokens == 0 {
            bail!("the default `max_tokens` must be at least 1");
        }
        if self.max_queued_sequences == 0 {
            bail!("the queue must hold at least 1 sequence");
        }
        Ok(())
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("model_name", &self.model_name)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("default_max_tokens", &self.default_max_tokens)
            .field("max_queued_sequences", &self.max_queued_sequences)
            .field("batch_window", &self.batch_window)
            .finish()
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    engine: Arc<Engine>,
    config: ServerConfig,
    scheduler: Scheduler,
    /// The model's context window in tokens.
    context: usize,
    /// Unix time the server started (the `created` of its model).
    started: u64,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The application as an axum router, with its scheduler thread started. The thread
/// ends once the router (and every clone of it) is dropped.
pub fn router(engine: Arc<Engine>, config: ServerConfig) -> Result<Router> {
    config.validate()?;
    let scheduler = Scheduler::start(
        Arc::clone(&engine),
        config.max_queued_sequences,
        config.batch_window,
    )
    .context("cannot start the generation thread")?;
    let context = engine.model().config.max_position_embeddings;
    let state = AppState(Arc::new(Shared {
        engine,
        config,
        scheduler,
        context,
        started: routes::unix_now(),
    }));
    Ok(routes::router(state))
}

/// Serves until the process ends.
pub async fn serve(
    engine: Arc<Engine>,
    config: ServerConfig,
    listener: tokio::net::TcpListener,
) -> Result<()> {
    serve_with_shutdown(engine, config, listener, std::future::pending()).await
}

/// Serves until `shutdown` completes, then stops accepting connections and returns
/// once the requests in flight are answered.
pub async fn serve_with_shutdown(
    engine: Arc<Engine>,
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(engine, config)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")
}
