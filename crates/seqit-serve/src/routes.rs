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
use seqit_engine::{Engine, GenerationRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::connections::ConnHandle;
use crate::error::ApiError;
use crate::stream::{self, Kind, StreamMeta};
use crate::structured::{
    chat_logprobs, text_logprobs, ChatLogprobs, ConstraintFields, RequestedConstraint, TextLogprobs,
};
use crate::wire::{
    fields, AssistantMessage, ChatChoice, ChatFields, CommonFields, CompletionFields,
    CompletionResponse, JsonBody, ModelCard, ModelList, Sampling, TextChoice, Usage,
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
        .route(CHAT_COMPLETIONS, post(completions::<ChatFields>))
        .route(COMPLETIONS, post(completions::<CompletionFields>))
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

/// The series of [`METRICS`]: name, Prometheus type and help text, in the order in which
/// [`metrics`] reads their values.
const SERIES: [(&str, &str, &str); 14] = [
    (
        "seqit_requests_total",
        "counter",
        "Completion requests answered.",
    ),
    (
        "seqit_request_failures_total",
        "counter",
        "Completion requests whose generation failed.",
    ),
    (
        "seqit_cancelled_sequences_total",
        "counter",
        "Sequences stopped or skipped because their client went away.",
    ),
    (
        "seqit_timed_out_sequences_total",
        "counter",
        "Sequences that reached their request's deadline (queued or generating).",
    ),
    (
        "seqit_prompt_tokens_total",
        "counter",
        "Prompt tokens of the answered sequences.",
    ),
    (
        "seqit_generated_tokens_total",
        "counter",
        "Tokens generated for the answered sequences.",
    ),
    (
        "seqit_prefix_cache_lookups_total",
        "counter",
        "Prompts looked up in the prefix cache.",
    ),
    (
        "seqit_prefix_cache_prompt_tokens_total",
        "counter",
        "Tokens of the prompts looked up in the prefix cache.",
    ),
    (
        "seqit_prefix_cache_hit_tokens_total",
        "counter",
        "Prompt tokens whose keys and values came from the prefix cache.",
    ),
    (
        "seqit_prefix_cache_shared_prefill_tokens_total",
        "counter",
        "Tokens computed once ahead of a batch for a prefix several of its prompts share.",
    ),
    (
        "seqit_prefix_cache_evictions_total",
        "counter",
        "Prefix-cache blocks evicted.",
    ),
    (
        "seqit_prefix_cache_blocks",
        "gauge",
        "Prefix-cache blocks held.",
    ),
    (
        "seqit_prefix_cache_bytes",
        "gauge",
        "Bytes of keys and values held by the prefix cache.",
    ),
    (
        "seqit_prefix_cache_capacity_bytes",
        "gauge",
        "The prefix cache's budget in bytes (0: disabled).",
    ),
];

/// The counters of the scheduler and the engine's prefix cache, Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let counters = state.scheduler.counters();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let prefixes = state.engine.prefix_cache_stats();
    // One value per entry of `SERIES`, in its order.
    let values: [u64; SERIES.len()] = [
        load(&counters.requests),
        load(&counters.failures),
        load(&counters.cancelled_sequences),
        load(&counters.timed_out_sequences),
        load(&counters.prompt_tokens),
        load(&counters.generated_tokens),
        prefixes.lookups,
        prefixes.prompt_tokens,
        prefixes.hit_tokens,
        prefixes.shared_prefill_tokens,
        prefixes.evictions,
        prefixes.blocks as u64,
        prefixes.bytes as u64,
        prefixes.capacity_bytes as u64,
    ];
    let mut text = String::new();
    for ((name, kind, help), value) in SERIES.into_iter().zip(values) {
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

/// The fields in which chat and text completion requests differ.
trait Dialect: DeserializeOwned {
    /// The API that reads these fields.
    const KIND: Kind;
    /// The body field that holds the prompts, for error messages.
    const PROMPT_FIELD: &'static str;
    /// The alternatives per token whose log-probabilities the request asks for, if any.
    fn sampling_logprobs(&self) -> Result<Option<usize>, ApiError>;
    /// The prompts, checked (and rendered here when the request brings its own template
    /// variables).
    fn engine_prompts(&self, engine: &Engine) -> Result<Vec<Prompt>, ApiError>;
}

impl Dialect for ChatFields {
    const KIND: Kind = Kind::Chat;
    const PROMPT_FIELD: &'static str = "messages";

    fn sampling_logprobs(&self) -> Result<Option<usize>, ApiError> {
        chat_logprobs(self.logprobs, self.top_logprobs)
    }

    fn engine_prompts(&self, engine: &Engine) -> Result<Vec<Prompt>, ApiError> {
        let messages = self.messages()?;
        let Some(variables) = self.chat_template_kwargs.as_ref().filter(|v| !v.is_empty()) else {
            return Ok(vec![Prompt::Chat(messages)]);
        };
        let param = Some("chat_template_kwargs".to_string());
        let template = engine.chat_template().ok_or_else(|| {
            ApiError::invalid(
                "the model has no chat template to take variables",
                param.clone(),
            )
        })?;
        // Rendered here with the request's variables; the engine tokenizes the text as it
        // would have tokenized its own rendering.
        let text = template
            .render_with(&messages, true, variables)
            .map_err(|e| ApiError::invalid(format!("{e:#}"), param))?;
        Ok(vec![Prompt::Text(text)])
    }
}

impl Dialect for CompletionFields {
    const KIND: Kind = Kind::Text;
    const PROMPT_FIELD: &'static str = "prompt";

    fn sampling_logprobs(&self) -> Result<Option<usize>, ApiError> {
        text_logprobs(self.logprobs)
    }

    fn engine_prompts(&self, _: &Engine) -> Result<Vec<Prompt>, ApiError> {
        Ok(self.prompts()?.into_iter().map(Prompt::Text).collect())
    }
}

/// Chat completions (`D` = [`ChatFields`]) and text completions (`D` =
/// [`CompletionFields`]).
async fn completions<D: Dialect>(
    State(state): State<AppState>,
    conn: ConnHandle,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let common: CommonFields = fields(&body)?;
    state.check_model(common.model.as_deref())?;
    let dialect: D = fields(&body)?;
    let mut sampling = state.sampling(&common)?;
    sampling.params.logprobs = dialect.sampling_logprobs()?;
    let constraint = fields::<ConstraintFields>(&body)?.constraint()?;
    let prompts = dialect.engine_prompts(&state.engine)?;
    let request = Generate {
        kind: D::KIND,
        prompts,
        sampling,
        prompt_field: D::PROMPT_FIELD,
        constraint,
        arrived,
        conn,
    };
    generate(&state, request).await
}

/// One request for [`generate`].
struct Generate {
    /// The API the request came in on, which shapes the answer.
    kind: Kind,
    prompts: Vec<Prompt>,
    sampling: Sampling,
    /// The body field that holds the prompts, for error messages.
    prompt_field: &'static str,
    /// The structured-output constraint, checked with the prompts.
    constraint: Option<RequestedConstraint>,
    /// When the handler started (the request's deadline counts from here).
    arrived: Instant,
    conn: ConnHandle,
}

/// Checks the prompts, queues `n` sequences per prompt (seeds `seed`, `seed + 1`, ...;
/// choice `p * n + j` is sequence `j` of prompt `p`), then either waits for them and
/// answers with all of them or, for `stream: true`, returns the SSE response that will
/// carry them.
async fn generate(state: &AppState, request: Generate) -> Result<Response, ApiError> {
    let Generate {
        kind,
        prompts,
        mut sampling,
        prompt_field,
        constraint,
        arrived,
        conn,
    } = request;
    let id_prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Text => "cmpl",
    };
    let meta = StreamMeta {
        kind,
        id: format!("{id_prefix}-{:016x}", random_u64()),
        created: unix_now(),
        model: state.config.model_name.clone(),
        choices: prompts.len().saturating_mul(sampling.n),
        n: sampling.n,
        include_usage: sampling.include_usage,
        request_timeout: state.config.request_timeout,
    };
    let sequences = meta.choices;
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
        return Ok(stream::sse(meta, events, conn).into_response());
    }
    loop {
        match events.recv().await {
            Some(Event::Text { .. }) => {}
            Some(Event::Finished(completions)) => return Ok(whole_response(&meta, &completions)),
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

/// The answer to a request that did not stream: `completions` (every sequence, in
/// choice order) as its choices.
fn whole_response(meta: &StreamMeta, completions: &[Completion]) -> Response {
    let usage = stream::usage(completions, meta.n);
    let choices = completions.iter().enumerate();
    match meta.kind {
        Kind::Chat => {
            let choices = choices.map(|(index, c)| ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content: &c.text,
                },
                logprobs: c.logprobs.as_deref().map(ChatLogprobs::new),
                finish_reason: c.finish_reason,
            });
            whole_body(meta, "chat.completion", choices.collect(), usage)
        }
        Kind::Text => {
            let choices = choices.map(|(index, c)| TextChoice {
                index,
                text: &c.text,
                logprobs: c.logprobs.as_deref().map(TextLogprobs::new),
                finish_reason: Some(c.finish_reason),
            });
            whole_body(meta, "text_completion", choices.collect(), usage)
        }
    }
}

/// The JSON answer `object` of `meta`'s request, with `choices`.
fn whole_body<C: Serialize>(
    meta: &StreamMeta,
    object: &'static str,
    choices: Vec<C>,
    usage: Usage,
) -> Response {
    let body = CompletionResponse {
        id: &meta.id,
        object,
        created: meta.created,
        model: &meta.model,
        choices,
        usage,
    };
    Json(body).into_response()
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
