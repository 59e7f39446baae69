//! Routes, fault decisions, replies and the request log.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Semaphore};

const CHAT_PATH: &str = "/v1/chat/completions";
const COMPLETIONS_PATH: &str = "/v1/completions";
const MODELS_PATH: &str = "/v1/models";
const LOG_PATH: &str = "/_fault/log";
const STATS_PATH: &str = "/_fault/stats";

/// Probability of each fault per request arrival (their sum must be at most 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRates {
    /// 429 with `Retry-After`.
    pub rate_limit: f64,
    /// 500.
    pub server_error: f64,
    /// 503.
    pub unavailable: f64,
    /// The connection stays open and never answers.
    pub hang: f64,
    /// A 200 whose body stops half-way (the connection is closed).
    pub truncate: f64,
    /// A 200 whose body is not valid JSON.
    pub malformed: f64,
    /// A 200 with `"choices": []`.
    pub empty_choices: f64,
}

impl FaultRates {
    /// No faults: every request is answered.
    pub fn none() -> Self {
        Self::default()
    }

    /// `total` spread evenly over the seven kinds of fault.
    pub fn uniform(total: f64) -> Self {
        let each = total / 7.0;
        Self {
            rate_limit: each,
            server_error: each,
            unavailable: each,
            hang: each,
            truncate: each,
            malformed: each,
            empty_choices: each,
        }
    }

    /// Sum of the seven rates: the probability that an arrival gets a fault
    /// ([`FaultServer::bind`] refuses a sum outside `[0, 1]`).
    pub fn total(&self) -> f64 {
        self.rate_limit
            + self.server_error
            + self.unavailable
            + self.hang
            + self.truncate
            + self.malformed
            + self.empty_choices
    }

    /// The fault for a uniform draw `u` in `[0, 1)`, or `Answered`.
    fn pick(&self, u: f64) -> Outcome {
        let table = [
            (self.rate_limit, Outcome::RateLimited),
            (self.server_error, Outcome::ServerError),
            (self.unavailable, Outcome::Unavailable),
            (self.hang, Outcome::Hung),
            (self.truncate, Outcome::Truncated),
            (self.malformed, Outcome::Malformed),
            (self.empty_choices, Outcome::EmptyChoices),
        ];
        let mut edge = 0.0;
        for (rate, outcome) in table {
            edge += rate;
            if u < edge {
                return outcome;
            }
        }
        Outcome::Answered
    }
}

/// How a 429 says when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryAfterStyle {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP date>` that many seconds ahead.
    HttpDate(u64),
    /// No header.
    Absent,
}

/// What the server does with `n > 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiSample {
    /// Returns `n` choices.
    Honour,
    /// Returns one choice whatever `n` is.
    Ignore,
    /// Answers 400 to `n > 1`.
    Reject,
}

/// Scripted answer: a prompt containing `contains` is answered with `reply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRule {
    /// Substring looked for in the request's text (every chat message, or the prompt).
    pub contains: String,
    /// Text of every choice of the answer when `contains` matches.
    pub reply: String,
}

/// Settings of a [`FaultServer`].
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// The model listed by `/v1/models` (requests may name any model).
    pub model: String,
    /// Wait before every answer (faults included, hangs excepted).
    pub latency: Duration,
    /// Probability of each fault per arrival.
    pub faults: FaultRates,
    /// Seed of the fault decisions.
    pub seed: u64,
    /// `Retry-After` header of the 429s.
    pub retry_after: RetryAfterStyle,
    /// How long a hung request is held before the server gives up on it.
    pub hang_for: Duration,
    /// Handling of requests with `n > 1`.
    pub multi_sample: MultiSample,
    /// Vary the shape of successful answers like real servers do (no `usage`, content
    /// as a list of parts, `finish_reason` spelled `eos`, extra fields); the text is
    /// the same whatever the shape.
    pub variations: bool,
    /// Most requests served at once (the rest wait): the server's capacity is
    /// `max_concurrency / latency` requests per second.
    pub max_concurrency: Option<usize>,
    /// Scripted replies, first match wins; unmatched prompts get the default reply.
    pub script: Vec<ScriptRule>,
    /// Require `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Append every log entry as a JSON line to this file.
    pub log_file: Option<PathBuf>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            model: "fault-model".into(),
            latency: Duration::ZERO,
            faults: FaultRates::none(),
            seed: 0,
            retry_after: RetryAfterStyle::Seconds(1),
            hang_for: Duration::from_secs(600),
            multi_sample: MultiSample::Honour,
            variations: false,
            max_concurrency: None,
            script: Vec::new(),
            api_key: None,
            log_file: None,
        }
    }
}

/// What the server did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 200 with a well-formed answer.
    Answered,
    /// 429, with `Retry-After` as [`FaultConfig::retry_after`] says.
    RateLimited,
    /// 500.
    ServerError,
    /// 503.
    Unavailable,
    /// Never answered: held for [`FaultConfig::hang_for`], then a 504 (logged at arrival).
    Hung,
    /// 200 whose body stops half-way and whose connection is then cut.
    Truncated,
    /// 200 whose body is not valid JSON.
    Malformed,
    /// 200 with `"choices": []`.
    EmptyChoices,
    /// 400: invalid JSON, or `n > 1` refused.
    BadRequest,
    /// 401: missing or wrong API key.
    Unauthorized,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Arrival order.
    pub seq: u64,
    /// Milliseconds since the server started, at arrival.
    pub at_ms: f64,
    /// `chat` or `completions`.
    pub endpoint: String,
    /// Content hash of the request body (16 hex digits), see [`request_key`].
    pub key: String,
    /// The last user message (chat) or the prompt (completions).
    pub prompt: String,
    /// Choices asked for (the request's `n`, at least 1).
    pub n: u32,
    /// 1 for the first arrival of this key, 2 for the second, ...
    pub attempt: u32,
    /// What the server did with the request.
    pub outcome: Outcome,
}

/// Counts over the log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests logged, whatever their outcome.
    pub requests: u64,
    /// Requests per outcome, under its `snake_case` name (`answered`, `hung`, ...).
    pub by_outcome: BTreeMap<String, u64>,
    /// Distinct request keys answered.
    pub answered_keys: u64,
    /// Answers beyond the first for the same key.
    pub duplicate_answers: u64,
}

struct Shared {
    config: FaultConfig,
    started: Instant,
    seq: AtomicU64,
    log: Mutex<Vec<LogEntry>>,
    attempts: Mutex<HashMap<String, u32>>,
    answered: Mutex<HashMap<String, u32>>,
    permits: Option<Semaphore>,
    log_file: Option<Mutex<std::fs::File>>,
}

/// A running server; stops when dropped or with [`FaultServer::stop`].
pub struct FaultServer {
    addr: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FaultServer {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: FaultConfig) -> anyhow::Result<Self> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr` (port 0 picks a free one). Fails when the fault rates add up to
    /// more than 1, the log file cannot be opened or the address cannot be bound.
    pub async fn bind(config: FaultConfig, addr: SocketAddr) -> anyhow::Result<Self> {
        let total = config.faults.total();
        anyhow::ensure!(
            (0.0..=1.0).contains(&total),
            "fault rates add up to {total}; they must be within [0, 1]"
        );
        let log_file = match &config.log_file {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot open log file `{}`: {e}", path.display())
                    })?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared {
            permits: config.max_concurrency.map(|n| Semaphore::new(n.max(1))),
            config,
            started: Instant::now(),
            seq: AtomicU64::new(0),
            log: Mutex::default(),
            attempts: Mutex::default(),
            answered: Mutex::default(),
            log_file,
        });
        let router = Router::new()
            .route(CHAT_PATH, post(chat))
            .route(COMPLETIONS_PATH, post(completions))
            .route(MODELS_PATH, get(models))
            .route(LOG_PATH, get(log))
            .route(STATS_PATH, get(stats))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind `{addr}`: {e}"))?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            url: format!("http://{addr}/v1"),
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// API base, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the server listens on, with the actual port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.log.lock().expect("log lock").clone()
    }

    /// Answers given per request key.
    pub fn answered_counts(&self) -> HashMap<String, u32> {
        self.shared.answered.lock().expect("answered lock").clone()
    }

    /// Counts over the log so far (also served as JSON at `GET /_fault/stats`).
    pub fn stats(&self) -> Stats {
        stats_of(&self.shared)
    }

    /// Stops accepting connections (hung requests are dropped).
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A [`FaultServer`] on its own runtime thread, for synchronous tests that run child
/// processes.
pub struct BackgroundFaultServer {
    server: Option<FaultServer>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl BackgroundFaultServer {
    /// Starts on `127.0.0.1` with a free port, on a new two-thread runtime that lives as
    /// long as the returned value.
    pub fn start(config: FaultConfig) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let server = runtime.block_on(FaultServer::start(config))?;
        Ok(Self {
            server: Some(server),
            runtime: Some(runtime),
        })
    }
}

impl std::ops::Deref for BackgroundFaultServer {
    type Target = FaultServer;
    fn deref(&self) -> &FaultServer {
        self.server.as_ref().expect("running")
    }
}

impl Drop for BackgroundFaultServer {
    fn drop(&mut self) {
        if let (Some(server), Some(runtime)) = (self.server.take(), self.runtime.take()) {
            runtime.block_on(server.stop());
            runtime.shutdown_background();
        }
    }
}

/// JSON with object keys sorted at every level, so equal requests hash equally whatever
/// the client's field order.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // serde_json may keep insertion order (feature `preserve_order`); inserting sorted
    // makes the output sorted either way.
    sorted(value).to_string()
}

/// The key the server logs a request under: 16 hex digits of SHA-256 over the endpoint
/// and the canonical JSON body.
pub fn request_key(endpoint: &str, body: &Value) -> String {
    let digest = Sha256::digest(format!("{endpoint}\n{}", canonical_json(body)).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A uniform draw in `[0, 1)` from the seed, the key and the attempt number.
fn draw(seed: u64, key: &str, attempt: u32) -> f64 {
    let digest = Sha256::digest(format!("{seed}/{key}/{attempt}").as_bytes());
    let bits = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Chat,
    Completions,
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(shared, Endpoint::Chat, headers, body).await
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(shared, Endpoint::Completions, headers, body).await
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({"object": "list", "data": [{"id": shared.config.model, "object": "model", "owned_by": "seqit-faultserver"}]}))
        .into_response()
}

async fn log(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.log.lock().expect("log lock").clone()).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(stats_of(&shared)).into_response()
}

fn stats_of(shared: &Shared) -> Stats {
    let log = shared.log.lock().expect("log lock");
    let mut by_outcome = BTreeMap::new();
    for entry in log.iter() {
        let name = serde_json::to_value(entry.outcome).expect("outcome serializes");
        *by_outcome
            .entry(name.as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    let answered = shared.answered.lock().expect("answered lock");
    Stats {
        requests: log.len() as u64,
        by_outcome,
        answered_keys: answered.len() as u64,
        duplicate_answers: answered
            .values()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum(),
    }
}

fn error_body(status: StatusCode, message: &str, kind: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
        ),
    )
        .into_response()
}

/// The text a request is matched and echoed by: the last user message, or the prompt.
fn prompt_text(endpoint: Endpoint, body: &Value) -> String {
    match endpoint {
        Endpoint::Completions => match &body["prompt"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        Endpoint::Chat => body["messages"]
            .as_array()
            .and_then(|messages| {
                messages
                    .iter()
                    .rev()
                    .find(|m| m["role"] == "user")
                    .or(messages.last())
                    .map(|m| match &m["content"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
            })
            .unwrap_or_default(),
    }
}

fn record(shared: &Shared, mut entry: LogEntry, outcome: Outcome) {
    entry.outcome = outcome;
    if outcome == Outcome::Answered {
        *shared
            .answered
            .lock()
            .expect("answered lock")
            .entry(entry.key.clone())
            .or_insert(0) += 1;
    }
    if let Some(file) = &shared.log_file {
        let mut line = serde_json::to_string(&entry).expect("entries serialize");
        line.push('\n');
        let _ = file
            .lock()
            .expect("log file lock")
            .write_all(line.as_bytes());
    }
    shared.log.lock().expect("log lock").push(entry);
}

async fn handle(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let config = &shared.config;
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let at_ms = shared.started.elapsed().as_secs_f64() * 1000.0;
    let endpoint_name = if endpoint == Endpoint::Chat {
        "chat"
    } else {
        "completions"
    };
    let mut entry = LogEntry {
        seq,
        at_ms,
        endpoint: endpoint_name.into(),
        key: String::new(),
        prompt: String::new(),
        n: 1,
        attempt: 0,
        outcome: Outcome::BadRequest,
    };
    if let Some(key) = &config.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {key}").as_str()) {
            record(&shared, entry, Outcome::Unauthorized);
            return error_body(
                StatusCode::UNAUTHORIZED,
                "invalid API key",
                "invalid_request_error",
            );
        }
    }
    let body: Value = match serde_json::from_slice(&raw) {
        Ok(body @ Value::Object(_)) => body,
        _ => {
            record(&shared, entry, Outcome::BadRequest);
            return error_body(
                StatusCode::BAD_REQUEST,
                "the body is not a JSON object",
                "invalid_request_error",
            );
        }
    };
    let key = request_key(endpoint_name, &body);
    let n = body["n"].as_u64().unwrap_or(1).max(1) as u32;
    let attempt = {
        let mut attempts = shared.attempts.lock().expect("attempts lock");
        let count = attempts.entry(key.clone()).or_insert(0);
        *count += 1;
        *count
    };
    entry.key = key.clone();
    entry.prompt = prompt_text(endpoint, &body);
    entry.n = n;
    entry.attempt = attempt;

    let outcome = config.faults.pick(draw(config.seed, &key, attempt));
    if outcome == Outcome::Hung {
        record(&shared, entry, Outcome::Hung);
        tokio::time::sleep(config.hang_for).await;
        return error_body(StatusCode::GATEWAY_TIMEOUT, "hung", "server_error");
    }
    let _permit = match &shared.permits {
        Some(permits) => Some(permits.acquire().await.expect("never closed")),
        None => None,
    };
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    if n > 1 && config.multi_sample == MultiSample::Reject && outcome == Outcome::Answered {
        record(&shared, entry, Outcome::BadRequest);
        return error_body(
            StatusCode::BAD_REQUEST,
            "`n` must be 1",
            "invalid_request_error",
        );
    }
    let response = match outcome {
        Outcome::RateLimited => {
            let mut response = error_body(StatusCode::TOO_MANY_REQUESTS, "rate limit reached", "rate_limit_error");
            let value = match config.retry_after {
                RetryAfterStyle::Seconds(s) => Some(s.to_string()),
                RetryAfterStyle::HttpDate(s) => Some(httpdate::fmt_http_date(
                    SystemTime::now() + Duration::from_secs(s) + Duration::from_millis(999),
                )),
                RetryAfterStyle::Absent => None,
            };
            if let Some(value) = value.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Outcome::ServerError => error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "server_error"),
        Outcome::Unavailable => error_body(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "server_error"),
        Outcome::Malformed => json_response(
            format!("{{\"id\": \"cmpl-{key}\", \"choices\": [{{\"index\": 0, \"message\": {{\"content\": \"unterminated").into_bytes(),
        ),
        Outcome::EmptyChoices => {
            let body = json!({"id": format!("cmpl-{key}"), "object": "chat.completion", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}});
            json_response(body.to_string().into_bytes())
        }
        Outcome::Truncated => {
            let full = answer(config, endpoint, &body, &key, n).to_string().into_bytes();
            let half = Bytes::copy_from_slice(&full[..full.len() / 2]);
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                vec![Ok(half), Err(std::io::Error::other("connection cut by the fault server"))];
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, full.len())
                // The pause lets the head and the first half reach the client before the
                // connection is cut.
                .body(Body::from_stream(futures::StreamExt::then(
                    futures::stream::iter(chunks),
                    |chunk| async move {
                        if chunk.is_err() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        chunk
                    },
                )))
                .expect("valid response")
        }
        _ => json_response(answer(config, endpoint, &body, &key, n).to_string().into_bytes()),
    };
    record(&shared, entry, outcome);
    response
}

fn json_response(bytes: Vec<u8>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .expect("valid response")
}

/// The reply text of choice `index`: a scripted reply, or `echo[seed #index]: <prompt>`.
fn reply_text(config: &FaultConfig, endpoint: Endpoint, body: &Value, index: u32) -> String {
    let all_text = match endpoint {
        Endpoint::Completions => prompt_text(endpoint, body),
        Endpoint::Chat => body["messages"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| content_text(&m["content"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
    };
    if let Some(rule) = config
        .script
        .iter()
        .find(|r| all_text.contains(&r.contains))
    {
        return rule.reply.clone();
    }
    let seed = body["seed"].as_u64().unwrap_or(0);
    let prompt: String = prompt_text(endpoint, body).chars().take(200).collect();
    format!("echo[{seed} #{index}]: {prompt}")
}

/// The text of a message's `content`: the string, or the `text` parts of a content-part
/// list (images and other parts skipped) joined by newlines.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// A successful answer; with `variations`, in one of several shapes chosen by the key.
fn answer(config: &FaultConfig, endpoint: Endpoint, body: &Value, key: &str, n: u32) -> Value {
    let choices_wanted = if config.multi_sample == MultiSample::Ignore {
        1
    } else {
        n
    };
    let texts: Vec<String> = (0..choices_wanted)
        .map(|i| reply_text(config, endpoint, body, i))
        .collect();
    let prompt_tokens = match endpoint {
        Endpoint::Completions => tokens(&prompt_text(endpoint, body)),
        Endpoint::Chat => body["messages"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| tokens(m["content"].as_str().unwrap_or_default()) + 4)
                    .sum()
            })
            .unwrap_or(0),
    };
    let completion_tokens: u64 = texts.iter().map(|t| tokens(t)).sum();
    let shape = if config.variations {
        u8::from_str_radix(&key[..2], 16).unwrap_or(0) % 4
    } else {
        0
    };
    let choices: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let finish = if shape == 2 { "eos" } else { "stop" };
            let mut choice = match (endpoint, shape) {
                (Endpoint::Completions, _) => json!({"index": i, "text": text, "finish_reason": finish, "logprobs": null}),
                (Endpoint::Chat, 1) => json!({"index": i, "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}, "finish_reason": finish}),
                (Endpoint::Chat, _) => json!({"index": i, "message": {"role": "assistant", "content": text, "tool_calls": []}, "finish_reason": finish, "logprobs": null}),
            };
            if shape == 3 {
                choice["stop_reason"] = json!(null);
                choice.as_object_mut().expect("object").remove("index");
            }
            choice
        })
        .collect();
    let object = if endpoint == Endpoint::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    let mut answer = json!({
        "id": format!("cmpl-{key}"),
        "object": object,
        "created": 0,
        "model": body["model"],
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    });
    match shape {
        1 => {
            answer.as_object_mut().expect("object").remove("usage");
        }
        3 => {
            answer["system_fingerprint"] = json!("fp_fault");
            answer["prompt_logprobs"] = json!(null);
        }
        _ => {}
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_pick_faults_in_proportion() {
        let rates = FaultRates::uniform(0.35);
        let mut counts: HashMap<Outcome, u32> = HashMap::new();
        for i in 0..70_000 {
            *counts
                .entry(rates.pick(draw(3, &format!("k{i}"), 1)))
                .or_default() += 1;
        }
        let answered = counts[&Outcome::Answered] as f64 / 70_000.0;
        assert!((answered - 0.65).abs() < 0.01, "{answered}");
        for outcome in [Outcome::RateLimited, Outcome::Hung, Outcome::EmptyChoices] {
            let share = counts[&outcome] as f64 / 70_000.0;
            assert!((share - 0.05).abs() < 0.005, "{outcome:?} {share}");
        }
    }

    #[test]
    fn keys_ignore_field_order() {
        let a: Value = serde_json::from_str(
            r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"seed": 1, "messages": [{"content": "x", "role": "user"}], "model": "m"}"#,
        )
        .unwrap();
        assert_eq!(request_key("chat", &a), request_key("chat", &b));
        assert_ne!(request_key("chat", &a), request_key("completions", &a));
    }
}
