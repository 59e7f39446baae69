//! The remote backend: any OpenAI-compatible chat/completions endpoint (vLLM, SGLang,
//! llama.cpp server, OpenAI, `seqit serve`, ...).
//!
//! Every call goes through the same steps: a concurrency permit (semaphore), the
//! requests-per-minute and tokens-per-minute buckets, one HTTP attempt under the
//! per-request timeout, then either an answer or a classified error. Retryable errors
//! (429, 5xx, timeouts, broken connections, cut-off, malformed or empty answers) are
//! retried after the server's `Retry-After` or an exponential backoff with jitter, at
//! most `max_retries` times; then the request is reported failed.

mod limiter;
mod retry;
mod settings;
pub mod wire;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use serde_json::Value;
use tokio::sync::Semaphore;

pub use self::limiter::TokenBucket;
pub use self::retry::{parse_retry_after, Backoff};
pub use self::settings::{EndpointCacheSettings, RemoteSettings, DEFAULT_CACHE_FILE};
use self::wire::{parse_response, ParseError, RequestBody};
use crate::error::LlmError;
use crate::structured::check_reply;
use crate::types::{EndpointKind, Llm, LlmRequest, LlmResponse, MultiSample};

/// Environment variable read for the API key unless another is named.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// Largest response body read by default (64 MiB): a completion is far smaller, so a
/// larger body is a misbehaving server, not an answer.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key given directly (not from the environment); kept as is.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key in the environment variable `var`, if set and not empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(|k| Self(k.trim().to_string()))
    }

    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How requests with `n > 1` are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MultiSampleMode {
    /// Try `n` on the first such request; if the server refuses it (HTTP 400/422) or
    /// answers fewer choices, ask sample by sample from then on.
    Auto,
    /// Always send `n`.
    Native,
    /// Always one request per sample.
    FanOut,
}

/// Settings of a [`RemoteBackend`].
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// API base, e.g. `http://localhost:8000/v1`.
    pub base_url: String,
    /// Model name sent in every request.
    pub model: String,
    /// Sent as a bearer token; `None` sends no `Authorization` header.
    pub api_key: Option<ApiKey>,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Most requests started per minute; `None` for no limit.
    pub requests_per_minute: Option<u64>,
    /// Most tokens per minute (the prompt estimated as characters / 4, plus `max_tokens`
    /// per sample); `None` for no limit.
    pub tokens_per_minute: Option<u64>,
    /// Limit on one HTTP attempt, from sending to the last byte of the answer.
    pub timeout: Duration,
    /// Limit on opening a connection (10 s by default).
    pub connect_timeout: Duration,
    /// Retries after the first attempt; then the request is reported failed.
    pub max_retries: u32,
    /// Waits between retries when the server does not say how long to wait.
    pub backoff: Backoff,
    /// Longest `Retry-After` honoured; a longer one is waited for this long.
    pub max_retry_after: Duration,
    /// How requests with `n > 1` are sent.
    pub multi_sample: MultiSampleMode,
    /// Seed of the backoff jitter.
    pub seed: u64,
    /// Largest response body read; a larger one fails the request with
    /// [`LlmError::TooLarge`] (not retried).
    pub max_response_bytes: usize,
    /// Times a constrained request is asked again when a reply breaks its constraint
    /// (the server ignored or does not know the constraint fields); after that the
    /// reply is returned with `constraint_met: false`.
    pub max_constraint_retries: u32,
}

impl RemoteConfig {
    /// Defaults for everything but where to send and which model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            concurrency: 64,
            requests_per_minute: None,
            tokens_per_minute: None,
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_retries: 8,
            backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(60),
            },
            max_retry_after: Duration::from_secs(600),
            multi_sample: MultiSampleMode::Auto,
            seed: 0,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_constraint_retries: 3,
        }
    }
}

/// Normalises an API base: trailing slashes and a pasted `/chat/completions` or
/// `/completions` are removed, and a bare `http://host:port` gets `/v1`.
pub fn normalize_base_url(url: &str) -> Result<String, LlmError> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| {
        LlmError::Invalid(format!(
            "`{url}` is not a URL ({e})\nhint: give the API base, e.g. `--endpoint http://localhost:8000/v1`"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        let url = redact_url(url);
        return Err(LlmError::Invalid(format!(
            "`{url}` is not an http or https URL\nhint: give the API base, e.g. `--endpoint http://localhost:8000/v1`"
        )));
    }
    if parsed.scheme() == "https" && !cfg!(feature = "https") {
        let url = redact_url(url);
        return Err(LlmError::Invalid(format!(
            "`{url}` is an https endpoint and this seqit was built without TLS (`--no-default-features`)\nhint: build with the default features (or `--features https`), or reach the server over http"
        )));
    }
    let mut base = trimmed.to_string();
    for suffix in ["/chat/completions", "/completions"] {
        if let Some(stripped) = base.strip_suffix(suffix) {
            base = stripped.to_string();
            break;
        }
    }
    if parsed.path().is_empty() || parsed.path() == "/" {
        base.push_str("/v1");
    }
    Ok(base)
}

/// `url` with any user name and password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("***");
            let _ = parsed.set_password(None);
            parsed.to_string().trim_end_matches('/').to_string()
        }
        _ => url.to_string(),
    }
}

/// The identity of an endpoint in cache keys: its API base ([`normalize_base_url`])
/// without user name, password, query or fragment, so that keys never hold a secret and
/// the same server reached with other credentials shares its answers. A URL that does
/// not parse is used as given, minus anything from `?` or `#` on.
pub fn endpoint_identity(url: &str) -> String {
    let base = normalize_base_url(url).unwrap_or_else(|_| url.trim().to_string());
    match reqwest::Url::parse(&base) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => base
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

/// Reads a response body of at most `limit` bytes, refusing a larger one as soon as its
/// `Content-Length` or the bytes received say so.
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Lists the models an endpoint serves (`GET {base}/models`).
pub async fn list_models(
    base_url: &str,
    api_key: Option<&ApiKey>,
    timeout: Duration,
) -> Result<Vec<String>, LlmError> {
    let base = normalize_base_url(base_url)?;
    let target = format!("{base}/models");
    let url = redact_url(&target);
    let client = crate::tls::with_roots(reqwest::Client::builder())
        .timeout(timeout)
        .build()
        .map_err(|e| LlmError::Connect {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let mut request = client.get(&target);
    if let Some(key) = api_key {
        request = request.bearer_auth(key.expose());
    }
    let response = request
        .send()
        .await
        .map_err(|e| classify_send_error(&url, timeout, e))?;
    let status = response.status().as_u16();
    let limit = DEFAULT_MAX_RESPONSE_BYTES;
    let body = read_body(response, limit).await.map_err(|e| match e {
        BodyError::TooLarge => LlmError::TooLarge {
            url: url.clone(),
            limit,
        },
        BodyError::Read(e) => LlmError::Truncated {
            url: url.clone(),
            message: error_chain(&e.without_url()),
        },
    })?;
    if status != 200 {
        return Err(LlmError::Status {
            url,
            status,
            message: wire::shorten(&String::from_utf8_lossy(&body), 300),
            retry_after: None,
        });
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| LlmError::Malformed {
        url,
        message: e.to_string(),
    })?;
    Ok(value["data"]
        .as_array()
        .map(|models| {
            models
                .iter()
                .filter_map(|m| m["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// Lowest temperature of a constraint retry.
pub const CONSTRAINT_RETRY_TEMPERATURE: f64 = 0.7;

const UNKNOWN: u8 = 0;
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

/// An OpenAI-compatible endpoint. Cheap to share behind an `Arc`.
pub struct RemoteBackend {
    config: RemoteConfig,
    base: String,
    http: reqwest::Client,
    permits: Semaphore,
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
    multi_sample: AtomicU8,
    /// Whether the server accepts constraint fields (probed like `n`: refused with
    /// 400/422 once, never sent again).
    constraints: AtomicU8,
    rng: Mutex<StdRng>,
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend")
            .field("base", &redact_url(&self.base))
            .field("model", &self.config.model)
            .field(
                "api_key",
                &self.config.api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("concurrency", &self.config.concurrency)
            .finish()
    }
}

impl RemoteBackend {
    /// A backend for `config`. Fails when the base URL is not an http or https URL, the
    /// model name is empty, the key has characters not allowed in a header, or the HTTP
    /// client cannot be built.
    pub fn new(config: RemoteConfig) -> Result<Self, LlmError> {
        let base = normalize_base_url(&config.base_url)?;
        if config.model.trim().is_empty() {
            return Err(LlmError::Invalid(
                "the remote backend needs a model name".into(),
            ));
        }
        let concurrency = config.concurrency.max(1);
        let http = crate::tls::with_roots(reqwest::Client::builder())
            .pool_max_idle_per_host(concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| LlmError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let auth = match &config.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| {
                        LlmError::Invalid(
                            "the API key contains characters not allowed in a header".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let multi_sample = match config.multi_sample {
            MultiSampleMode::Auto => UNKNOWN,
            MultiSampleMode::Native => SUPPORTED,
            MultiSampleMode::FanOut => UNSUPPORTED,
        };
        Ok(Self {
            base,
            http,
            permits: Semaphore::new(concurrency),
            requests: config.requests_per_minute.map(TokenBucket::per_minute),
            tokens: config.tokens_per_minute.map(TokenBucket::per_minute),
            multi_sample: AtomicU8::new(multi_sample),
            constraints: AtomicU8::new(UNKNOWN),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            auth,
            config,
        })
    }

    /// The settings the backend was made with.
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// The normalised API base.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, kind: EndpointKind) -> String {
        format!("{}{}", self.base, kind.path())
    }

    /// The URL as messages show it (credentials in it redacted).
    fn shown_url(&self, kind: EndpointKind) -> String {
        redact_url(&self.url(kind))
    }

    /// Sends `request`; for a constrained one, checks every reply against the
    /// constraint and asks again (up to `max_constraint_retries` times, with a new seed
    /// and a temperature of at least [`CONSTRAINT_RETRY_TEMPERATURE`], since a greedy
    /// server would repeat itself) while one breaks it.
    async fn generate_checked(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let Some(constraint) = request.params.constraint.as_ref() else {
            return self.generate_with_retries(request, false).await;
        };
        let mut retries = 0;
        let mut current = request.clone();
        loop {
            let native = self.constraints.load(Ordering::Relaxed) != UNSUPPORTED;
            let mut response = match self.generate_with_retries(&current, native).await {
                Err(LlmError::Status {
                    status: 400 | 422, ..
                }) if native && self.constraints.load(Ordering::Relaxed) == UNKNOWN => {
                    // The server refuses the constraint fields: check replies instead.
                    self.constraints.store(UNSUPPORTED, Ordering::Relaxed);
                    continue;
                }
                other => other?,
            };
            let mut all_met = true;
            for sample in &mut response.samples {
                let met = check_reply(constraint, &sample.text).is_ok();
                sample.constraint_met = Some(met);
                all_met &= met;
            }
            if native && all_met {
                let _ = self.constraints.compare_exchange(
                    UNKNOWN,
                    SUPPORTED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            if all_met || retries >= self.config.max_constraint_retries {
                response.constraint_retries = retries;
                return Ok(response);
            }
            retries += 1;
            current.params.seed = request
                .params
                .seed
                .wrapping_add(0x9E37 * u64::from(retries));
            current.params.temperature =
                current.params.temperature.max(CONSTRAINT_RETRY_TEMPERATURE);
        }
    }

    async fn generate_with_retries(
        &self,
        request: &LlmRequest,
        send_constraint: bool,
    ) -> Result<LlmResponse, LlmError> {
        if request.n > 1 && self.multi_sample.load(Ordering::Relaxed) == UNSUPPORTED {
            return Err(LlmError::MultiSampleUnsupported {
                url: self.shown_url(request.kind()),
            });
        }
        let mut body = RequestBody::new(&self.config.model, request);
        if send_constraint {
            body = body.with_constraint(request);
        }
        let body = serde_json::to_vec(&body)
            .map_err(|e| LlmError::Invalid(format!("cannot encode the request: {e}")))?;
        let estimate = (wire::estimate_prompt_tokens(&request.prompt)
            + request.params.max_tokens as u64 * u64::from(request.n.max(1)))
            as f64;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.attempt(request, &body, estimate).await;
            let error = match result {
                Ok(mut response) => {
                    response.attempts = attempt;
                    return Ok(response);
                }
                Err(error) => error,
            };
            if !error.is_retryable() {
                return Err(error);
            }
            if attempt > self.config.max_retries {
                return Err(LlmError::RetriesExhausted {
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            let wait = {
                let mut rng = self.rng.lock().expect("rng lock");
                match error.retry_after() {
                    Some(asked) => {
                        retry::honour_retry_after(asked.min(self.config.max_retry_after), &mut *rng)
                    }
                    None => self.config.backoff.delay(attempt - 1, &mut *rng),
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP attempt.
    async fn attempt(
        &self,
        request: &LlmRequest,
        body: &[u8],
        estimate: f64,
    ) -> Result<LlmResponse, LlmError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        if let Some(bucket) = &self.requests {
            bucket.acquire(1.0).await;
        }
        if let Some(bucket) = &self.tokens {
            bucket.acquire(estimate).await;
        }
        let target = self.url(request.kind());
        let url = self.shown_url(request.kind());
        let mut builder = self
            .http
            .post(&target)
            .timeout(self.config.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("seqit/", env!("CARGO_PKG_VERSION")))
            .body(body.to_vec());
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let response = builder
            .send()
            .await
            .map_err(|e| classify_send_error(&url, self.config.timeout, e))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers(), SystemTime::now());
        let limit = self.config.max_response_bytes;
        let bytes = read_body(response, limit).await.map_err(|e| match e {
            BodyError::TooLarge => LlmError::TooLarge {
                url: url.clone(),
                limit,
            },
            BodyError::Read(e) if e.is_timeout() => LlmError::Timeout {
                url: url.clone(),
                timeout: self.config.timeout,
            },
            BodyError::Read(e) => LlmError::Truncated {
                url: url.clone(),
                message: error_chain(&e.without_url()),
            },
        });
        if status != 200 {
            let message = match &bytes {
                Ok(bytes) => body_message(bytes),
                Err(LlmError::TooLarge { .. }) => {
                    "(a body larger than --max-response-bytes)".to_string()
                }
                Err(_) => "(no body)".to_string(),
            };
            if request.n > 1
                && matches!(status, 400 | 422)
                && self.multi_sample.load(Ordering::Relaxed) == UNKNOWN
            {
                self.multi_sample.store(UNSUPPORTED, Ordering::Relaxed);
                return Err(LlmError::MultiSampleUnsupported { url });
            }
            let mut message = message;
            if matches!(status, 401 | 403) {
                message.push_str("\nhint: set OPENAI_API_KEY, or name the variable holding the key with --api-key-env");
            }
            return Err(LlmError::Status {
                url,
                status,
                message,
                retry_after,
            });
        }
        let bytes = bytes?;
        let (samples, usage) = parse_response(&bytes, request).map_err(|e| match e {
            ParseError::Malformed(message) => LlmError::Malformed {
                url: url.clone(),
                message,
            },
            ParseError::EmptyChoices => LlmError::EmptyChoices { url: url.clone() },
            ParseError::ErrorObject(message) => LlmError::Status {
                url: url.clone(),
                status: 500,
                message: format!("an error object in a 200 answer: {message}"),
                retry_after,
            },
        })?;
        if let Some(bucket) = &self.tokens {
            bucket.adjust(estimate - (usage.prompt_tokens + usage.completion_tokens) as f64);
        }
        if request.n > 1 {
            let answered_all = samples.len() >= request.n as usize;
            if self.multi_sample.load(Ordering::Relaxed) == UNKNOWN {
                let state = if answered_all { SUPPORTED } else { UNSUPPORTED };
                self.multi_sample.store(state, Ordering::Relaxed);
            }
        }
        Ok(LlmResponse {
            samples,
            usage,
            attempts: 1,
            constraint_retries: 0,
        })
    }
}

impl Llm for RemoteBackend {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn cache_scope(&self) -> Option<String> {
        Some(endpoint_identity(&self.base))
    }

    fn multi_sample(&self) -> MultiSample {
        match self.multi_sample.load(Ordering::Relaxed) {
            SUPPORTED => MultiSample::Supported,
            UNSUPPORTED => MultiSample::Unsupported,
            _ => MultiSample::Unknown,
        }
    }

    fn generate<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(self.generate_checked(request))
    }
}

fn classify_send_error(url: &str, timeout: Duration, error: reqwest::Error) -> LlmError {
    // The URL is shown by our message, redacted; reqwest's would not be.
    let error = error.without_url();
    if error.is_timeout() {
        LlmError::Timeout {
            url: url.to_string(),
            timeout,
        }
    } else {
        let message = error_chain(&error);
        if is_certificate_error(&message) {
            let roots = crate::tls::tls_roots();
            return LlmError::Certificate {
                url: url.to_string(),
                message,
                roots: format!("{} ({} certificates)", roots.source, roots.certificates),
            };
        }
        LlmError::Connect {
            url: url.to_string(),
            message,
        }
    }
}

/// Whether a connection failed on the server's certificate (rustls's wording:
/// "invalid peer certificate: UnknownIssuer", "...: NotValidForName", ...).
fn is_certificate_error(message: &str) -> bool {
    message.contains("invalid peer certificate") || message.contains("certificate verify failed")
}

/// reqwest's message with its causes ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The error message of a non-200 body: the OpenAI error object's message, or the start
/// of the body.
fn body_message(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => match value.get("error") {
            Some(error) => wire::error_message(error),
            None => wire::shorten(&value.to_string(), 300),
        },
        Err(_) if bytes.is_empty() => "(empty body)".to_string(),
        Err(_) => wire::shorten(&String::from_utf8_lossy(bytes), 300),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        let n = |u| normalize_base_url(u).unwrap();
        assert_eq!(n("http://h:1/v1/"), "http://h:1/v1");
        assert_eq!(n("http://h:1"), "http://h:1/v1");
        assert_eq!(n("http://h:1/v1/chat/completions"), "http://h:1/v1");
        if cfg!(feature = "https") {
            assert_eq!(
                n("https://api.example.com/openai/v1"),
                "https://api.example.com/openai/v1"
            );
        }
        assert!(normalize_base_url("localhost:8000").is_err());
        assert!(normalize_base_url("ftp://h/v1").is_err());
    }

    #[test]
    fn endpoint_identities_hold_no_secrets() {
        let id = endpoint_identity;
        assert_eq!(id("http://h:1/v1/"), "http://h:1/v1");
        assert_eq!(id("http://h:1"), "http://h:1/v1");
        assert_eq!(id("http://bob:hunter2@H:1/v1"), "http://h:1/v1");
        assert_eq!(id("http://h:1/v1?key=s3cret#x"), "http://h:1/v1");
        assert_eq!(id("http://h:1/v1/chat/completions"), "http://h:1/v1");
        assert_ne!(id("http://h:1/v1"), id("http://h:2/v1"));
        assert_ne!(id("http://h:1/v1"), id("http://h:1/other/v1"));
        let backend =
            RemoteBackend::new(RemoteConfig::new("http://bob:pw@127.0.0.1:9/v1", "m")).unwrap();
        assert_eq!(
            backend.cache_scope().as_deref(),
            Some("http://127.0.0.1:9/v1")
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(
            crate::error::human_size(64 << 20),
            "64 MiB (67108864 bytes)"
        );
        assert_eq!(crate::error::human_size(1000), "1000 bytes");
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(redact_url("http://user:pw@h:1/v1"), "http://***@h:1/v1");
        assert_eq!(redact_url("http://h:1/v1"), "http://h:1/v1");
        let backend =
            RemoteBackend::new(RemoteConfig::new("http://bob:hunter2@127.0.0.1:9/v1", "m"))
                .unwrap();
        assert!(!format!("{backend:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn connection_errors_do_not_show_credentials() {
        let mut config = RemoteConfig::new("http://bob:hunter2@127.0.0.1:9/v1", "m");
        config.max_retries = 0;
        let backend = RemoteBackend::new(config).unwrap();
        let request = LlmRequest::new(
            seqit_core::Prompt::Text("x".into()),
            seqit_core::SamplingParams::greedy(1),
        );
        let error = backend.generate(&request).await.unwrap_err();
        assert!(
            error
                .chain()
                .contains("cannot reach `http://***@127.0.0.1:9/v1/completions`"),
            "{}",
            error.chain()
        );
        assert!(!error.chain().contains("hunter2"), "{}", error.chain());
        let error = list_models(
            "http://bob:hunter2@127.0.0.1:9/v1",
            None,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(!error.chain().contains("hunter2"), "{}", error.chain());
    }

    #[cfg(not(feature = "https"))]
    #[test]
    fn https_needs_the_https_feature() {
        let error = normalize_base_url("https://user:pw@api.example.com/v1")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("built without TLS") && error.contains("default features"),
            "{error}"
        );
        assert!(!error.contains("pw@"), "{error}");
    }

    #[cfg(feature = "https")]
    #[tokio::test]
    async fn https_endpoints_are_supported() {
        // A TLS handshake with a plain-HTTP port fails as a connection error (without TLS
        // support the request could not even be built).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let mut config = RemoteConfig::new(format!("https://127.0.0.1:{port}/v1"), "m");
        config.max_retries = 0;
        let backend = RemoteBackend::new(config).unwrap();
        let request = LlmRequest::new(
            seqit_core::Prompt::Text("x".into()),
            seqit_core::SamplingParams::greedy(1),
        );
        let error = backend.generate(&request).await.unwrap_err();
        assert!(
            error.chain().contains("cannot reach `https://127.0.0.1"),
            "{}",
            error.chain()
        );
        assert!(
            !error.chain().to_lowercase().contains("scheme"),
            "{}",
            error.chain()
        );
    }

    #[test]
    fn keys_never_show() {
        let key = ApiKey::new("sk-secret-123");
        assert!(!format!("{key:?} {key}").contains("secret"));
        let mut config = RemoteConfig::new("http://127.0.0.1:9/v1", "m");
        config.api_key = Some(key);
        assert!(!format!("{config:?}").contains("secret"));
        let backend = RemoteBackend::new(config).unwrap();
        assert!(!format!("{backend:?}").contains("secret"));
    }
}
