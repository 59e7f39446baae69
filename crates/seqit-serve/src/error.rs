//! Every failure the API reports, mapped to a status code and an OpenAI-shaped body
//! (`{"error": {"message", "type", "param", "code"}}`) in this one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Seconds a client is asked to wait before retrying when the queue is full.
const RETRY_AFTER_SECONDS: &str = "1";

/// A request the server cannot answer, as the client will see it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ApiError {
    /// A field is missing, has the wrong type or is out of range (400).
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The body is not JSON at all (400).
    MalformedJson { message: String },
    /// The prompt does not fit the model's context window (400).
    ContextLengthExceeded {
        message: String,
        param: &'static str,
    },
    /// A feature of the OpenAI API this server does not implement (400).
    Unsupported { message: String, param: String },
    /// No or a wrong `Authorization: Bearer` key (401).
    Unauthorized,
    /// The request names a model this server does not serve (404).
    ModelNotFound { model: String },
    /// No route at this path (404).
    RouteNotFound { method: String, path: String },
    /// A route exists at this path, but not for this method (405).
    MethodNotAllowed { method: String, path: String },
    /// The body is larger than the server accepts (413).
    PayloadTooLarge { limit: usize },
    /// Too many sequences are queued (503, with `Retry-After`).
    Overloaded { queued: usize, limit: usize },
    /// The request's deadline passed while it was queued (503, with `Retry-After`).
    QueueTimeout { timeout: std::time::Duration },
    /// Generation failed inside the engine (500).
    Internal { message: String },
}

/// The `error` object of an OpenAI error response.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorObject {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorObject,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: param.into(),
        }
    }

    /// A bad value of field `field`, with a message naming it.
    pub fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::invalid(format!("`{field}`: {problem}"), Some(field.to_string()))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. }
            | Self::MalformedJson { .. }
            | Self::ContextLengthExceeded { .. }
            | Self::Unsupported { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ModelNotFound { .. } | Self::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded { .. } | Self::QueueTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI body of this error.
    pub fn body(&self) -> ErrorBody {
        let (kind, code, param) = match self {
            Self::InvalidRequest { param, .. } => ("invalid_request_error", None, param.clone()),
            Self::MalformedJson { .. } => ("invalid_request_error", Some("invalid_json"), None),
            Self::ContextLengthExceeded { param, .. } => (
                "invalid_request_error",
                Some("context_length_exceeded"),
                Some(param.to_string()),
            ),
            Self::Unsupported { param, .. } => (
                "invalid_request_error",
                Some("unsupported_parameter"),
                Some(param.clone()),
            ),
            Self::Unauthorized => ("invalid_request_error", Some("invalid_api_key"), None),
            Self::ModelNotFound { .. } => (
                "invalid_request_error",
                Some("model_not_found"),
                Some("model".to_string()),
            ),
            Self::RouteNotFound { .. } => ("invalid_request_error", Some("not_found"), None),
            Self::MethodNotAllowed { .. } => {
                ("invalid_request_error", Some("method_not_allowed"), None)
            }
            Self::PayloadTooLarge { .. } => {
                ("invalid_request_error", Some("payload_too_large"), None)
            }
            Self::Overloaded { .. } => ("server_overloaded", Some("server_overloaded"), None),
            Self::QueueTimeout { .. } => ("server_overloaded", Some("timeout"), None),
            Self::Internal { .. } => ("server_error", None, None),
        };
        ErrorBody {
            error: ErrorObject {
                message: self.message(),
                kind,
                param,
                code,
            },
        }
    }

    fn message(&self) -> String {
        match self {
            Self::InvalidRequest { message, .. }
            | Self::ContextLengthExceeded { message, .. }
            | Self::Unsupported { message, .. }
            | Self::Internal { message } => message.clone(),
            Self::MalformedJson { message } => {
                format!("the request body is not valid JSON: {message}")
            }
            // Never echo the key that was sent.
            Self::Unauthorized => {
                "missing or incorrect API key; send the header `Authorization: Bearer <key>`".into()
            }
            Self::ModelNotFound { model } => {
                format!("the model `{model}` does not exist on this server")
            }
            Self::RouteNotFound { method, path } => format!("no route for {method} `{path}`"),
            Self::MethodNotAllowed { method, path } => {
                format!("method {method} is not allowed for `{path}`")
            }
            Self::PayloadTooLarge { limit } => {
                format!("the request body is larger than this server's limit of {limit} bytes")
            }
            Self::Overloaded { queued, limit } => format!(
                "the server is overloaded ({queued} of {limit} sequences queued); retry later"
            ),
            Self::QueueTimeout { timeout } => format!(
                "the request was still queued after the server's request timeout of {} s; retry later",
                timeout.as_secs_f64()
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Overloaded { .. } | Self::QueueTimeout { .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_openai_shaped() {
        let body = serde_json::to_value(
            ApiError::ModelNotFound {
                model: "gpt-x".into(),
            }
            .body(),
        )
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "the model `gpt-x` does not exist on this server",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
        );
        let error = ApiError::field("temperature", "must be >= 0");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let body = serde_json::to_value(error.body()).unwrap();
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["message"], "`temperature`: must be >= 0");
    }
}
