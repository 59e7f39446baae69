//! An OpenAI-compatible HTTP server over seqit's local [`Engine`].
//!
//! This crate owns the HTTP side of `seqit serve`: routes, wire types, the mapping of
//! errors to status codes and OpenAI error bodies, and server-sent-event streaming; the
//! batching itself is the engine's [`seqit_engine::scheduler`]. It never prints; the
//! binary decides what the operator sees.
//!
//! * [`serve`] / [`serve_with_shutdown`] — run the server on a bound listener.
//! * [`router`] — the same application as an axum [`Router`], for embedding.
//! * [`ServerConfig`] — served model name, API key, body size limit, queue bounds,
//!   generation limits, connection limits and timeouts.
//! * [`serve_until_signal`] — `seqit serve` as a process (signals, its own runtime),
//!   after [`check_exposure`]'s warnings; [`default_served_name`].
//! * [`raise_open_files_limit`] — the process's open-file limit up to its hard limit
//!   (each connection holds a file descriptor).
//!
//! Routes ([`routes`] holds the paths): `GET /health`, `GET /metrics` (Prometheus text:
//! requests, tokens, the engine's prefix cache), `GET /v1/models`,
//! `GET /v1/models/{model}`, `POST /v1/chat/completions` and `POST /v1/completions`,
//! both with `stream: true`, `logprobs`, and structured outputs in OpenAI's
//! (`response_format`), vLLM's (`guided_json`/`_regex`/`_choice`/`_grammar`,
//! `structured_outputs`) and llama.cpp's (`json_schema`) dialects, enforced by
//! constrained decoding; a constraint that does not compile gets 400 naming its field.
//!
//! Concurrency: one scheduler thread owns the engine. Requests are queued; the scheduler
//! takes everything queued (up to the engine's batch size) and decodes it as one batch,
//! forwarding text deltas to streaming clients as they become final. When more than
//! [`ServerConfig::max_queued_sequences`] sequences wait, requests get 503 with
//! `Retry-After`. A sequence whose client has gone away (closed connection) stops at
//! the next decode step and leaves the batch; one that reaches its request's deadline
//! ([`ServerConfig::request_timeout`]) ends there with the text it has.
//!
//! Connections: the server reads HTTP/1.1 itself (hyper) with a header-read timeout, an
//! idle timeout and a connection limit; at the limit, a new connection replaces the one
//! idle longest, so idle or slow clients cannot lock others out (see [`ServerConfig`]).
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

mod auth;
mod connections;
mod error;
mod process;
pub mod routes;
mod stream;
mod structured;
mod wire;

pub use connections::raise_open_files_limit;
pub use process::{check_exposure, default_served_name, serve_until_signal};

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::Router;
use seqit_engine::Engine;

use seqit_engine::scheduler::Scheduler;

/// Settings of a server, checked by [`ServerConfig::validate`] before it starts.
#[derive(Clone)]
pub struct ServerConfig {
    /// The model id clients send and `/v1/models` lists.
    pub model_name: String,
    /// When set, every `/v1` request needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest accepted request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// `max_tokens` of requests that give none (at most [`Self::max_tokens_limit`]).
    pub default_max_tokens: usize,
    /// Most new tokens per sequence, whatever a request asks for (larger `max_tokens`
    /// are lowered to it).
    pub max_tokens_limit: usize,
    /// Most sequences queued or running at once; beyond it requests get 503.
    pub max_queued_sequences: usize,
    /// How long the scheduler waits after a request arrives for others to batch with it.
    pub batch_window: Duration,
    /// Longest a request may take, counted from when its body has been read: still
    /// queued then, it gets 503; still generating, its sequences end there with the
    /// text they have (`finish_reason` `length`).
    pub request_timeout: Duration,
    /// Time allowed for a request's head (request line and headers) to arrive, counted
    /// from the connection's opening or from the end of its previous response; so it
    /// also bounds how long a kept-alive connection waits for its next request.
    pub header_timeout: Duration,
    /// A connection on which no byte moves for this long while it waits for its client
    /// (a request body that stopped arriving, a reader that stopped reading) is closed.
    /// Waiting for the engine never counts.
    pub idle_timeout: Duration,
    /// Most open connections (also capped by the open-file limit). At the limit, a new
    /// connection replaces the one idle longest; when every connection has a request
    /// being answered, new ones wait to be accepted.
    pub max_connections: usize,
}

impl ServerConfig {
    /// Defaults for serving a model under `model_name`: no API key, 2 MiB bodies,
    /// `max_tokens` 512 (at most 4096), 256 queued sequences, a 2 ms batching window,
    /// 600 s per request, 10 s for a request's head, 60 s idle, 4096 connections.
    pub fn new(model_name: impl Into<String>) -> Self {
        Self {
            model_name: model_name.into(),
            api_key: None,
            max_body_bytes: 2 * 1024 * 1024,
            default_max_tokens: 512,
            max_tokens_limit: 4096,
            max_queued_sequences: 256,
            batch_window: Duration::from_millis(2),
            request_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }

    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.model_name.trim().is_empty() {
            bail!("the served model name must not be empty");
        }
        if let Some(key) = self.api_key.as_deref() {
            if key.trim().is_empty() {
                bail!("the API key must not be empty\nhint: leave SEQIT_API_KEY unset to serve without one");
            }
            // HTTP strips surrounding whitespace from header values; such a key could
            // never be sent.
            if key.trim() != key || key.chars().any(char::is_control) {
                bail!(
                    "the API key must not start or end with whitespace or hold control characters"
                );
            }
        }
        if self.max_body_bytes == 0 {
            bail!("the request body limit must be at least 1 byte");
        }
        if self.default_max_tokens == 0 {
            bail!("the default `max_tokens` must be at least 1");
        }
        if self.max_tokens_limit == 0 {
            bail!("the `max_tokens` limit must be at least 1");
        }
        if self.max_queued_sequences == 0 {
            bail!("the queue must hold at least 1 sequence");
        }
        for (name, value) in [
            ("request timeout", self.request_timeout),
            ("header timeout", self.header_timeout),
            ("idle timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                bail!("the {name} must be longer than 0 s");
            }
        }
        if self.max_connections == 0 {
            bail!("the connection limit must be at least 1");
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
            .field("max_tokens_limit", &self.max_tokens_limit)
            .field("max_queued_sequences", &self.max_queued_sequences)
            .field("batch_window", &self.batch_window)
            .field("request_timeout", &self.request_timeout)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    engine: Arc<Engine>,
    config: ServerConfig,
    /// Digest of the API key, when one is required.
    api_key: Option<auth::KeyDigest>,
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
    let context = engine.config().max_position_embeddings;
    let state = AppState(Arc::new(Shared {
        engine,
        api_key: config.api_key.as_deref().map(auth::KeyDigest::of),
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
    let limits = connections::Limits::new(&config);
    let app = router(engine, config)?;
    connections::serve(listener, app, limits, shutdown).await;
    Ok(())
}
