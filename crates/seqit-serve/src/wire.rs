//! The JSON the API reads and writes. Requests are parsed leniently (unknown fields are
//! ignored, `null` means "default", common aliases such as `max_completion_tokens` are
//! accepted) and turned into checked engine settings; every complaint names its field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use seqit_core::{json, ChatMessage, FinishReason, Role, SamplingParams};
use seqit_engine::TemplateVariables;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::structured::{ChatLogprobs, TextLogprobs};
use crate::AppState;

/// Most sequences (prompts × `n`) that one request may ask for.
pub(crate) const MAX_SEQUENCES_PER_REQUEST: usize = 128;

/// A JSON request body, read within the server's size limit. Rejections are
/// OpenAI-shaped: 413 when too large, 400 when not JSON or not an object.
pub(crate) struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: state.config.max_body_bytes,
                }
            } else {
                ApiError::invalid(
                    format!("cannot read the request body: {}", rejection.body_text()),
                    None,
                )
            }
        })?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|err| ApiError::MalformedJson {
                message: err.to_string(),
            })?;
        if !value.is_object() {
            return Err(ApiError::invalid(
                "the request body must be a JSON object",
                None,
            ));
        }
        Ok(Self(value))
    }
}

/// Reads the fields of `T` out of a request body, naming the field that is wrong.
pub(crate) fn fields<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        // A missing field is reported at its parent: "missing field `role`" at `messages[0]`.
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        match missing {
            Some(name) => {
                let full = if path == "." {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
                ApiError::invalid(format!("missing field `{full}`"), Some(full))
            }
            None if path == "." => ApiError::invalid(inner, None),
            None => ApiError::invalid(format!("`{path}`: {inner}"), Some(path)),
        }
    })
}

/// Fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CommonFields {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u64>,
    pub max_tokens: Option<u64>,
    /// Newer OpenAI name of `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Extension (vLLM): 0 or -1 disable top-k filtering.
    pub top_k: Option<i64>,
    pub seed: Option<serde_json::Number>,
    /// A string or a list of strings.
    pub stop: Option<Value>,
    /// Extension (vLLM): keep generating past end-of-sequence.
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// Fields only chat completions have.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatFields {
    pub messages: Option<Vec<WireMessage>>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    /// Variables for the chat template over the server's own (vLLM's extension, e.g.
    /// `{"enable_thinking": false}`).
    pub chat_template_kwargs: Option<TemplateVariables>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireMessage {
    pub role: String,
    /// A string, a list of `{"type": "text", "text": ...}` parts, or null.
    pub content: Option<Value>,
}

/// Fields only text completions have.
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionFields {
    /// A string or a list of strings.
    pub prompt: Option<Value>,
    pub echo: Option<bool>,
    pub logprobs: Option<u64>,
    pub suffix: Option<String>,
    pub best_of: Option<u64>,
}

/// What a request asks of the engine, checked.
#[derive(Debug, Clone)]
pub(crate) struct Sampling {
    /// Settings of the first sequence; sequence `j` uses seed `seed + j`.
    pub params: SamplingParams,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
}

impl CommonFields {
    /// Turns the decoding fields into engine settings. `max_tokens` above
    /// `max_tokens_limit` is lowered to it. `random_seed` is used when the request gives
    /// no seed (sampling is then not reproducible, as with OpenAI).
    pub fn sampling(
        &self,
        default_max_tokens: usize,
        max_tokens_limit: usize,
        random_seed: u64,
    ) -> Result<Sampling, ApiError> {
        // Numbers from clients are compared as sent (u64), never cast down first.
        let n = match self.n {
            None => 1,
            Some(0) => return Err(ApiError::field("n", "must be at least 1")),
            Some(n) if n > MAX_SEQUENCES_PER_REQUEST as u64 => {
                return Err(ApiError::field(
                    "n",
                    format!("must be at most {MAX_SEQUENCES_PER_REQUEST}, got {n}"),
                ))
            }
            Some(n) => n as usize, // at most MAX_SEQUENCES_PER_REQUEST
        };
        let (max_field, max_tokens) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(v), _) => ("max_completion_tokens", Some(v)),
            (None, v) => ("max_tokens", v),
        };
        let max_tokens = match max_tokens {
            None => default_max_tokens,
            Some(0) => return Err(ApiError::field(max_field, "must be at least 1")),
            Some(v) => usize::try_from(v).unwrap_or(usize::MAX),
        }
        .min(max_tokens_limit);
        let temperature = self.temperature.unwrap_or(1.0);
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(ApiError::field(
                "temperature",
                format!("must be a number >= 0, got {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::field(
                "top_p",
                format!("must be in (0, 1], got {top_p}"),
            ));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
            Some(k) => {
                return Err(ApiError::field(
                    "top_k",
                    format!("must be >= 1, or 0 or -1 to disable it, got {k}"),
                ))
            }
        };
        let seed = match &self.seed {
            None => random_seed,
            Some(number) => match (number.as_u64(), number.as_i64()) {
                (Some(seed), _) => seed,
                // Negative seeds are valid for OpenAI; keep their bits.
                (None, Some(seed)) => seed as u64,
                _ => {
                    return Err(ApiError::field(
                        "seed",
                        format!("must be an integer, got {number}"),
                    ))
                }
            },
        };
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ApiError::field(
                        &format!("stop[{i}]"),
                        format!("expected a string, got {}", json::kind(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(ApiError::field(
                    "stop",
                    format!(
                        "expected a string or a list of strings, got {}",
                        json::kind(other)
                    ),
                ))
            }
        };
        let params = SamplingParams {
            max_tokens,
            temperature,
            top_p,
            top_k,
            seed,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            ignore_eos: self.ignore_eos.unwrap_or(false),
            // Set from the dialect-specific fields by the handlers.
            constraint: None,
            logprobs: None,
        };
        params
            .validate()
            .map_err(|message| ApiError::invalid(message, None))?;
        let stream = self.stream.unwrap_or(false);
        let include_usage = self
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        Ok(Sampling {
            params,
            n,
            stream,
            include_usage,
        })
    }
}

impl ChatFields {
    /// The conversation, checked: at least one message, text content only.
    pub fn messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        let messages = self.messages.as_ref().ok_or_else(|| {
            ApiError::invalid("missing field `messages`", Some("messages".to_string()))
        })?;
        if messages.is_empty() {
            return Err(ApiError::field(
                "messages",
                "must contain at least one message",
            ));
        }
        messages
            .iter()
            .enumerate()
            .map(|(i, message)| {
                let role = match message.role.as_str() {
                    "" => {
                        return Err(ApiError::field(
                            &format!("messages[{i}].role"),
                            "must not be empty",
                        ))
                    }
                    // OpenAI's newer name for the system role.
                    "developer" => Role::System,
                    other => serde_json::from_value(Value::String(other.to_string()))
                        .unwrap_or_else(|_| Role::Other(other.to_string())),
                };
                let content = message_text(message.content.as_ref()).map_err(|problem| {
                    ApiError::field(&format!("messages[{i}].content"), problem)
                })?;
                Ok(ChatMessage::new(role, content))
            })
            .collect()
    }
}

impl CompletionFields {
    /// The raw text prompts, checked: a string or a non-empty list of strings.
    pub fn prompts(&self) -> Result<Vec<String>, ApiError> {
        let unsupported = |param: &str, what: &str| ApiError::Unsupported {
            message: format!("{what} is not supported by this server"),
            param: param.to_string(),
        };
        if self.echo == Some(true) {
            return Err(unsupported("echo", "`echo`"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "`suffix` (fill-in-the-middle)"));
        }
        if self.best_of.is_some_and(|n| n > 1) {
            return Err(unsupported("best_of", "`best_of`"));
        }
        let token_prompts = || {
            ApiError::field(
                "prompt",
                "token-id prompts are not supported; send the prompt as text",
            )
        };
        match &self.prompt {
            None | Some(Value::Null) => Err(ApiError::invalid(
                "missing field `prompt`",
                Some("prompt".to_string()),
            )),
            Some(Value::String(text)) => Ok(vec![text.clone()]),
            Some(Value::Array(items)) if items.is_empty() => Err(ApiError::field(
                "prompt",
                "must contain at least one prompt",
            )),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(text) => Ok(text.clone()),
                    Value::Number(_) | Value::Array(_) => Err(token_prompts()),
                    other => Err(ApiError::field(
                        &format!("prompt[{i}]"),
                        format!("expected a string, got {}", json::kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(ApiError::field(
                "prompt",
                format!(
                    "expected a string or a list of strings, got {}",
                    json::kind(other)
                ),
            )),
        }
    }
}

/// The text of a message's `content`: a string, text parts joined by newlines, or
/// nothing (`null`, e.g. an assistant turn that only called tools).
fn message_text(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (i, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text") | None, Some(Value::String(text))) => texts.push(text.as_str()),
                    (Some(kind), _) if kind != "text" => {
                        return Err(format!(
                            "part {i} has type `{kind}`; this model accepts only text"
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "part {i}: expected {{\"type\": \"text\", \"text\": \"...\"}}"
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => Err(format!(
            "expected a string or a list of text parts, got {}",
            json::kind(other)
        )),
    }
}

// ---- responses ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// A whole (not streamed) chat or text completion; `C` is [`ChatChoice`] or
/// [`TextChoice`].
#[derive(Debug, Serialize)]
pub(crate) struct CompletionResponse<'a, C> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<C>,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChatChoice<'a> {
    pub index: usize,
    pub message: AssistantMessage<'a>,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Serialize)]
pub(crate) struct AssistantMessage<'a> {
    pub role: &'static str,
    pub content: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct TextChoice<'a> {
    pub index: usize,
    pub text: &'a str,
    pub logprobs: Option<TextLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

/// One server-sent event of a streamed chat or text completion.
#[derive(Debug, Serialize)]
pub(crate) struct Chunk<'a, C> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<C>,
    /// Present (as `null` until the last chunk) only when the client asked for usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChatChunkChoice<'a> {
    pub index: usize,
    pub delta: Delta<'a>,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ModelList<'a> {
    pub object: &'static str,
    pub data: Vec<ModelCard<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ModelCard<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Extension (vLLM): the context window in tokens.
    pub max_model_len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn common(body: Value) -> Result<Sampling, ApiError> {
        fields::<CommonFields>(&body)?.sampling(512, 4096, 7)
    }

    #[test]
    fn defaults_follow_openai() {
        let s = common(json!({"messages": []})).unwrap();
        assert_eq!(s.params.temperature, 1.0);
        assert_eq!(s.params.max_tokens, 512);
        assert_eq!(s.params.seed, 7);
        assert_eq!(s.n, 1);
        assert!(!s.stream && !s.include_usage);
    }

    #[test]
    fn nulls_mean_default_and_aliases_are_read() {
        let s = common(
            json!({"temperature": null, "stop": null, "n": null, "max_tokens": 9,
                              "max_completion_tokens": 3, "stop": "\n", "seed": -1, "top_k": -1}),
        )
        .unwrap();
        assert_eq!(s.params.temperature, 1.0);
        assert_eq!(s.params.max_tokens, 3);
        assert_eq!(s.params.stop, vec!["\n".to_string()]);
        assert_eq!(s.params.seed, u64::MAX);
        assert_eq!(s.params.top_k, 0);
    }

    #[test]
    fn huge_numbers_are_capped_not_wrapped() {
        let s = common(json!({"max_tokens": u64::MAX})).unwrap();
        assert_eq!(s.params.max_tokens, 4096);
        let s = common(json!({"max_completion_tokens": 100, "top_k": i64::MAX})).unwrap();
        assert_eq!(s.params.max_tokens, 100);
        assert_eq!(s.params.top_k, usize::try_from(i64::MAX).unwrap());
        let err = common(json!({"n": u64::MAX})).unwrap_err();
        assert!(matches!(err, ApiError::InvalidRequest { param: Some(p), .. } if p == "n"));
        // 2^32 + 1 must not pass as 1 where usize has 32 bits.
        assert!(common(json!({"n": (1u64 << 32) + 1})).is_err());
        assert_eq!(Usage::new(usize::MAX, 5).total_tokens, usize::MAX);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = common(json!({"temperature": "hot"})).unwrap_err();
        let ApiError::InvalidRequest { message, param } = err else {
            panic!()
        };
        assert_eq!(param.as_deref(), Some("temperature"));
        assert!(
            message.starts_with("`temperature`: invalid type: string \"hot\""),
            "{message}"
        );
        let err = common(json!({"temperature": -1})).unwrap_err();
        assert!(
            matches!(err, ApiError::InvalidRequest { param: Some(p), .. } if p == "temperature")
        );
        let err = common(json!({"stop": ["a", 3]})).unwrap_err();
        assert!(matches!(err, ApiError::InvalidRequest { param: Some(p), .. } if p == "stop[1]"));
        let err = common(json!({"max_completion_tokens": 0})).unwrap_err();
        assert!(
            matches!(err, ApiError::InvalidRequest { param: Some(p), .. } if p == "max_completion_tokens")
        );
    }

    #[test]
    fn messages_accept_text_parts_and_name_bad_ones() {
        let chat: ChatFields = fields(&json!({"messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null}]}))
        .unwrap();
        let messages = chat.messages().unwrap();
        assert_eq!(messages[0], ChatMessage::system("Be brief."));
        assert_eq!(messages[1], ChatMessage::user("a\nb"));
        assert_eq!(messages[2], ChatMessage::assistant(""));

        let chat: ChatFields =
            fields(&json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}))
                .unwrap();
        let err = chat.messages().unwrap_err();
        assert!(
            matches!(err, ApiError::InvalidRequest { param: Some(p), .. } if p == "messages[0].content")
        );

        let err = fields::<ChatFields>(&json!({"messages": [{"content": "hi"}]})).unwrap_err();
        assert!(
            matches!(&err, ApiError::InvalidRequest { param: Some(p), .. } if p == "messages[0].role"),
            "{err:?}"
        );
        let chat: ChatFields = fields(&json!({})).unwrap();
        assert!(
            matches!(chat.messages().unwrap_err(), ApiError::InvalidRequest { param: Some(p), .. } if p == "messages")
        );
    }

    #[test]
    fn prompts_are_strings() {
        let fields_of = |v: Value| fields::<CompletionFields>(&v).unwrap();
        assert_eq!(
            fields_of(json!({"prompt": "x"})).prompts().unwrap(),
            vec!["x"]
        );
        assert_eq!(
            fields_of(json!({"prompt": ["x", "y"]})).prompts().unwrap(),
            vec!["x", "y"]
        );
        assert!(fields_of(json!({"prompt": [1, 2]})).prompts().is_err());
        assert!(fields_of(json!({"prompt": []})).prompts().is_err());
        assert!(fields_of(json!({})).prompts().is_err());
    }
}
