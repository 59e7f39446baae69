//! Errors of the LLM layer, each saying which request step failed and whether another
//! attempt can help.

use std::time::Duration;

/// Why a request failed. Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The server answered with an error status.
    #[error("`{url}` answered HTTP {status}: {message}")]
    Status {
        /// The URL the request was sent to, credentials removed.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The server's error text (shortened), with a hint for 401 and 403.
        message: String,
        /// Wait asked for by `Retry-After` (or `retry-after-ms`).
        retry_after: Option<Duration>,
    },
    /// No complete answer arrived within the per-request timeout.
    #[error("`{url}` did not answer within {}s", .timeout.as_secs_f64())]
    Timeout {
        /// The URL the request was sent to, credentials removed.
        url: String,
        /// The per-request timeout that passed.
        timeout: Duration,
    },
    /// The connection could not be made or broke before the response head.
    #[error("cannot reach `{url}`: {message}")]
    Connect {
        /// The URL the request was sent to, credentials removed.
        url: String,
        /// What the HTTP client reported.
        message: String,
    },
    /// The server's TLS certificate is not trusted (or not valid for its name); another
    /// attempt would meet the same certificate, so it is not retried.
    #[error("the TLS certificate of `{url}` is not trusted: {message}\nhint: seqit trusts {roots}; for a private CA or a self-signed certificate, point SSL_CERT_FILE at its PEM file (`seqit doctor` shows the roots in use)")]
    Certificate {
        /// The URL the request was sent to, credentials removed.
        url: String,
        /// Why the certificate was refused, as the TLS library says.
        message: String,
        /// The roots trusted, and how many (e.g. `system store (140 certificates)`).
        roots: String,
    },
    /// The response body was cut off.
    #[error("the response from `{url}` was cut off: {message}")]
    Truncated {
        /// The URL the request was sent to, credentials removed.
        url: String,
        /// What the HTTP client reported.
        message: String,
    },
    /// The response body is not the JSON of a completion.
    #[error("the response from `{url}` is not a valid completion: {message}")]
    Malformed {
        /// The URL the request was sent to, credentials removed.
        url: String,
        /// What is wrong with the body.
        message: String,
    },
    /// The response body is larger than the configured limit (`--max-response-bytes`);
    /// another attempt would fetch it again, so it is not retried.
    #[error("the response from `{url}` is larger than the limit of {}\nhint: raise the limit with --max-response-bytes", human_size(*.limit))]
    TooLarge {
        /// The URL the request was sent to, credentials removed.
        url: String,
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// The answer has no choices.
    #[error("the response from `{url}` has no choices")]
    EmptyChoices {
        /// The URL the request was sent to, credentials removed.
        url: String,
    },
    /// The server refused a request with `n > 1`; the caller asks sample by sample.
    #[error("`{url}` does not accept `n` > 1")]
    MultiSampleUnsupported {
        /// The URL the request was sent to, credentials removed.
        url: String,
    },
    /// Every allowed attempt failed.
    #[error("gave up after {attempts} attempts")]
    RetriesExhausted {
        /// Attempts made, the first included.
        attempts: u32,
        /// The error of the last attempt.
        #[source]
        last: Box<LlmError>,
    },
    /// The request cannot succeed as asked (bad parameters, unknown model, no access).
    #[error("{0}")]
    Invalid(String),
    /// The local engine failed.
    #[error("local engine: {0}")]
    Local(String),
    /// The request cache failed.
    #[error("request cache: {0}")]
    Cache(String),
}

impl LlmError {
    /// Whether another attempt of the same request can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => is_retryable_status(*status),
            LlmError::Timeout { .. }
            | LlmError::Connect { .. }
            | LlmError::Truncated { .. }
            | LlmError::Malformed { .. }
            | LlmError::EmptyChoices { .. } => true,
            LlmError::MultiSampleUnsupported { .. }
            | LlmError::TooLarge { .. }
            | LlmError::Certificate { .. }
            | LlmError::RetriesExhausted { .. }
            | LlmError::Invalid(_)
            | LlmError::Local(_)
            | LlmError::Cache(_) => false,
        }
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Short machine-readable name of the failure, for logs and error files.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Status { status: 429, .. } => "rate_limited",
            LlmError::Status { .. } => "http_status",
            LlmError::Timeout { .. } => "timeout",
            LlmError::Connect { .. } => "connect",
            LlmError::Certificate { .. } => "certificate",
            LlmError::Truncated { .. } => "truncated",
            LlmError::Malformed { .. } => "malformed",
            LlmError::TooLarge { .. } => "response_too_large",
            LlmError::EmptyChoices { .. } => "empty_choices",
            LlmError::MultiSampleUnsupported { .. } => "multi_sample_unsupported",
            LlmError::RetriesExhausted { last, .. } => last.kind(),
            LlmError::Invalid(_) => "invalid",
            LlmError::Local(_) => "local",
            LlmError::Cache(_) => "cache",
        }
    }

    /// The message with its causes, on one line.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// 408, 409, 425, 429 and every 5xx are worth another attempt; other statuses are not.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429) || status >= 500
}

/// `64 MiB (67108864 bytes)`, `1000 bytes`.
pub(crate) fn human_size(n: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit} ({n} bytes)", n >> shift);
        }
    }
    format!("{n} bytes")
}
