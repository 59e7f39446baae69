//! Route paths and their handlers. Handlers read typed fields from the body, check them,
//! hand the sequences to the scheduler and shape its answer; every failure is an
//! [`ApiError`].

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use seqit_core::{Completion, Prompt};
use seqit_engine::GenerationRequest;
use serde_json::json;

use crate::connections::ConnHandle;
use crate::error::ApiError;
use crate::stream::{self, Kind, StreamMeta};
use crate::structured::{
    chat_logprobs, text_logprobs, ChatLogprobs, ConstraintFields, RequestedConstraint, TextLogprobs,
};
use crate::wire::{
    fields, AssistantMessage, ChatChoice, ChatCompletion, ChatFields, CommonFields,
    CompletionFields, JsonBody, ModelCard, ModelList, Sampling, TextChoice, TextCompletion,
    MAX_SEQUENCES_PER_REQUEST,
};
use crate::AppState;
use seqit_engine::scheduler::{Event, SubmitError};

/// Liveness probe; never needs the API key.
pub const HEALTH: &str = "/health";
/// The served model, as a list.
pub const MODELS: &str = "/v1/models";
/// One model by id.
pub const MODEL: &str = "/v1/models/{model}";
/// Chat completions (messages rendered with the model's chat template).
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
/// Text completions (raw prompts).
pub const COMPLETIONS: &str = "/v1/completions";
/// Counters in Prometheus' text format (requests, tokens, prefix cache); like
/// [`HEALTH`], it never needs the API key.
pub const METRICS: &str = "/metrics";

pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(MODELS, get(list_models))
        .route(MODEL, get(get_model))
        .route(CHAT_COMPLETIONS, post(chat_completions))
        .route(COMPLETIONS, post(completions))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .route(HEALTH, get(health))
        .route(METRICS, get(metrics))
        .merge(api)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The counters of the scheduler and the engine's prefix cache, Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let counters = state.scheduler.counters();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let prefixes = state.engine.prefix_cache_stats();
    let series: [(&str, &str, &str, u64); 14] = [
        (
            "seqit_requests_total",
            "counter",
            "Completion requests answered.",
            load(&counters.requests),
        ),
        (
            "seqit_request_failures_total",
            "counter",
            "Completion requests whose generation failed.",
            load(&counters.failures),
        ),
        (
            "seqit_cancelled_sequences_total",
            "counter",
            "Sequences stopped or skipped because their client went away.",
            load(&counters.cancelled_sequences),
        ),
        (
            "seqit_timed_out_sequences_total",
            "counter",
            "Sequences that reached their request's deadline (queued or generating).",
            load(&counters.timed_out_sequences),
        ),
        (
            "seqit_prompt_tokens_total",
            "counter",
            "Prompt tokens of the answered sequences.",
            load(&counters.prompt_tokens),
        ),
        (
            "seqit_generated_tokens_total",
            "counter",
            "Tokens generated for the answered sequences.",
            load(&counters.generated_tokens),
        ),
        (
            "seqit_prefix_cache_lookups_total",
            "counter",
            "Prompts looked up in the prefix cache.",
            prefixes.lookups,
        ),
        (
            "seqit_prefix_cache_prompt_tokens_total",
            "counter",
            "Tokens of the prompts looked up in the prefix cache.",
            prefixes.prompt_tokens,
        ),
        (
            "seqit_prefix_cache_hit_tokens_total",
            "counter",
            "Prompt tokens whose keys and values came from the prefix cache.",
            prefixes.hit_tokens,
        ),
        (
            "seqit_prefix_cache_shared_prefill_tokens_total",
            "counter",
            "Tokens computed once ahead of a batch for a prefix several of its prompts share.",
            prefixes.shared_prefill_tokens,
        ),
        (
            "seqit_prefix_cache_evictions_total",
            "counter",
            "Prefix-cache blocks evicted.",
            prefixes.evictions,
        ),
        (
            "seqit_prefix_cache_blocks",
            "gauge",
            "Prefix-cache blocks held.",
            prefixes.blocks as u64,
        ),
        (
            "seqit_prefix_cache_bytes",
            "gauge",
            "Bytes of keys and values held by the prefix cache.",
            prefixes.bytes as u64,
        ),
        (
            "seqit_prefix_cache_capacity_bytes",
            "gauge",
            "The prefix cache's budget in bytes (0: disabled).",
            prefixes.capacity_bytes as u64,
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in series {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// Refuses requests without the configured `Authorization: Bearer <key>`.
async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        if !key.admits(given) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn list_models(State(state): State<AppState>) -> Response {
    let list = ModelList {
        object: "list",
        data: vec![model_card(&state)],
    };
    Json(list).into_response()
}

async fn get_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    if model != state.config.model_name {
        return Err(ApiError::ModelNotFound { model });
    }
    Ok(Json(model_card(&state)).into_response())
}

fn model_card(state: &AppState) -> ModelCard<'_> {
    ModelCard {
        id: &state.config.model_name,
        object: "model",
        created: state.started,
        owned_by: "seqit",
        max_model_len: state.context,
    }
}

async fn chat_completions(
    State(state): State<AppState>,
    conn: ConnHandle,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let common: CommonFields = fields(&body)?;
    state.check_model(common.model.as_deref())?;
    let chat: ChatFields = fields(&body)?;
    let mut sampling = state.sampling(&common)?;
    sampling.params.logprobs = chat_logprobs(chat.logprobs, chat.top_logprobs)?;
    let constraint = fields::<ConstraintFields>(&body)?.constraint()?;
    let prompts = vec![Prompt::Chat(chat.messages()?)];
    let meta = StreamMeta {
        kind: Kind::Chat,
        id: format!("chatcmpl-{:016x}", random_u64()),
        created: unix_now(),
        model: state.config.model_name.clone(),
        choices: sampling.n,
        n: sampling.n,
        include_usage: sampling.include_usage,
        request_timeout: state.config.request_timeout,
    };
    let request = Generate {
        prompts,
        sampling: &sampling,
        meta: &meta,
        prompt_field: "messages",
        constraint,
        arrived,
        conn,
    };
    let completions = match generate(&state, request).await? {
        Generated::Stream(response) => return Ok(response),
        Generated::Done(completions) => completions,
    };
    let response = ChatCompletion {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: &meta.model,
        choices: completions
            .iter()
            .enumerate()
            .map(|(index, c)| ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content: &c.text,
                },
                logprobs: c.logprobs.as_deref().map(ChatLogprobs::new),
                finish_reason: c.finish_reason,
            })
            .collect(),
        usage: stream::usage(&completions, sampling.n),
    };
    Ok(Json(response).into_response())
}

async fn completions(
    State(state): State<AppState>,
    conn: ConnHandle,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let common: CommonFields = fields(&body)?;
    state.check_model(common.model.as_deref())?;
    let text: CompletionFields = fields(&body)?;
    let mut sampling = state.sampling(&common)?;
    sampling.params.logprobs = text_logprobs(text.logprobs)?;
    let constraint = fields::<ConstraintFields>(&body)?.constraint()?;
    let prompts: Vec<Prompt> = text.prompts()?.into_iter().map(Prompt::Text).collect();
    let meta = StreamMeta {
        kind: Kind::Text,
        id: format!("cmpl-{:016x}", random_u64()),
        created: unix_now(),
        model: state.config.model_name.clone(),
        choices: prompts.len().saturating_mul(sampling.n),
        n: sampling.n,
        include_usage: sampling.include_usage,
        request_timeout: state.config.request_timeout,
    };
    let request = Generate {
        prompts,
        sampling: &sampling,
        meta: &meta,
        prompt_field: "prompt",
        constraint,
        arrived,
        conn,
    };
    let completions = match generate(&state, request).await? {
        Generated::Stream(response) => return Ok(response),
        Generated::Done(completions) => completions,
    };
    let response = TextCompletion {
        id: &meta.id,
        object: "text_completion",
        created: meta.created,
        model: &meta.model,
        choices: completions
            .iter()
            .enumerate()
            .map(|(index, c)| TextChoice {
                index,
                text: &c.text,
                logprobs: c.logprobs.as_deref().map(TextLogprobs::new),
                finish_reason: Some(c.finish_reason),
            })
            .collect(),
        usage: stream::usage(&completions, sampling.n),
    };
    Ok(Json(response).into_response())
}

/// One request for [`generate`].
struct Generate<'a> {
    prompts: Vec<Prompt>,
    sampling: &'a Sampling,
    meta: &'a StreamMeta,
    /// The body field that holds the prompts, for error messages.
    prompt_field: &'static str,
    /// The structured-output constraint, checked with the prompts.
    constraint: Option<RequestedConstraint>,
    /// When the handler started (the request's deadline counts from here).
    arrived: Instant,
    conn: ConnHandle,
}

/// Checks the prompts, queues `n` sequences per prompt (seeds `seed`, `seed + 1`, ...;
/// choice `p * n + j` is sequence `j` of prompt `p`), then either waits for them or,
/// for `stream: true`, returns the SSE response that will carry them.
async fn generate(state: &AppState, request: Generate<'_>) -> Result<Generated, ApiError> {
    let Generate {
        prompts,
        sampling,
        meta,
        prompt_field,
        constraint,
        arrived,
        conn,
    } = request;
    let sequences = prompts.len().saturating_mul(sampling.n);
    // More than the queue holds could never be admitted: refuse it as a bad request.
    let most = MAX_SEQUENCES_PER_REQUEST.min(state.config.max_queued_sequences);
    if sequences > most {
        let message = format!(
            "the request asks for {sequences} sequences (prompts × `n`); at most {most} are allowed"
        );
        return Err(ApiError::invalid(message, Some("n".to_string())));
    }
    // From here on the connection waits for the server, not for its client.
    let waiting = conn.waiting();
    state
        .check_prompts(&prompts, prompt_field, constraint.clone())
        .await?;
    let mut sampling = sampling.clone();
    sampling.params.constraint = constraint.map(|c| c.constraint);
    let sampling = &sampling;
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .flat_map(|prompt| {
            (0..sampling.n).map(move |j| {
                let mut params = sampling.params.clone();
                params.seed = params.seed.wrapping_add(j as u64);
                GenerationRequest {
                    prompt: prompt.clone(),
                    params,
                }
            })
        })
        .collect();
    let timeout = state.config.request_timeout;
    // A timeout too large to add means no deadline.
    let deadline = arrived
        .checked_add(timeout)
        .unwrap_or_else(|| arrived + Duration::from_secs(100 * 365 * 24 * 3600));
    let mut events = state
        .scheduler
        .submit(requests, sampling.stream, deadline)
        .map_err(|e| match e {
            SubmitError::Overloaded { queued, limit } => ApiError::Overloaded { queued, limit },
            SubmitError::Stopped => ApiError::Internal {
                message: e.to_string(),
            },
        })?;
    if sampling.stream {
        drop(waiting);
        return Ok(Generated::Stream(
            stream::sse(meta.clone(), events, conn).into_response(),
        ));
    }
    loop {
        match events.recv().await {
            Some(Event::Text { .. }) => {}
            Some(Event::Finished(completions)) => return Ok(Generated::Done(completions)),
            Some(Event::Failed(message)) => return Err(ApiError::Internal { message }),
            Some(Event::Expired) => return Err(ApiError::QueueTimeout { timeout }),
            None => {
                return Err(ApiError::Internal {
                    message: "generation stopped before finishing".into(),
                })
            }
        }
    }
}

/// What [`generate`] hands back to a handler.
enum Generated {
    /// `stream: true`: the SSE response, already wired to the scheduler.
    Stream(Response),
    /// Every sequence, in choice order.
    Done(Vec<Completion>),
}

impl AppState {
    /// The decoding settings of a request, `max_tokens` within the server's limit.
    fn sampling(&self, common: &CommonFields) -> Result<Sampling, ApiError> {
        let limit = self.config.max_tokens_limit;
        let default = self.config.default_max_tokens.min(limit);
        common.sampling(default, limit, random_u64())
    }

    /// The request may name the served model, or none.
    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None | Some("") => Ok(()),
            Some(name) if name == self.config.model_name => Ok(()),
            Some(name) => Err(ApiError::ModelNotFound {
                model: name.to_string(),
            }),
        }
    }

    /// Renders and tokenizes every prompt (off the async threads) and checks that it
    /// fits the context window, and compiles the constraint, so that one bad request
    /// cannot fail a whole batch.
    async fn check_prompts(
        &self,
        prompts: &[Prompt],
        field: &'static str,
        constraint: Option<RequestedConstraint>,
    ) -> Result<(), ApiError> {
        let engine = Arc::clone(&self.engine);
        let prompts = prompts.to_vec();
        let context = self.context;
        let checked = tokio::task::spawn_blocking(move || {
            if let Some(c) = &constraint {
                engine
                    .check_constraint(&c.constraint)
                    .map_err(|err| ApiError::field(&c.field, format!("{err:#}")))?;
            }
            for (i, prompt) in prompts.iter().enumerate() {
                let at = if prompts.len() > 1 { format!("{field}[{i}]") } else { field.to_string() };
                let ids = engine
                    .prompt_ids(prompt)
                    .map_err(|err| ApiError::field(&at, format!("{err:#}")))?;
                if ids.len() >= context {
                    return Err(ApiError::ContextLengthExceeded {
                        message: format!(
                            "this model's maximum context length is {context} tokens, but `{at}` has {} tokens",
                            ids.len()
                        ),
                        param: field,
                    });
                }
            }
            Ok(())
        })
        .await;
        checked.unwrap_or_else(|err| {
            Err(ApiError::Internal {
                message: format!("tokenization failed: {err}"),
            })
        })
    }
}

/// A fresh random number (ids, and seeds of requests that give none).
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::collections::hash_map::RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
