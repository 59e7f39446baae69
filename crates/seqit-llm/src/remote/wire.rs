//! OpenAI wire types: the request body seqit sends (also written into Batch API files)
//! and lenient response types that accept what real servers send: missing `usage`,
//! `null` content, content as a list of parts, extra fields, unordered choices and the
//! many spellings of `finish_reason`.

use seqit_core::{ChatMessage, Constraint, FinishReason, Prompt, Role, TokenLogprob, TopLogprob};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::{LlmRequest, Sample, Usage};

/// The JSON body of a chat or completions request.
#[derive(Debug, Serialize)]
pub struct RequestBody<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<OutMessage<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    max_tokens: usize,
    temperature: f64,
    top_p: f64,
    /// Not an OpenAI parameter: sent only when set (vLLM, SGLang and llama.cpp know it).
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<usize>,
    seed: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "is_one")]
    n: u32,
    /// vLLM extension: sent only when set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ignore_eos: bool,
    /// Chat: `true` asks for log-probabilities; completions: the number of
    /// alternatives per token.
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<Value>,
    /// Chat: alternatives per token.
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<usize>,
    /// The constraint in the fields servers read (see [`RequestBody::with_constraint`]).
    #[serde(flatten)]
    constraint: ConstraintFields,
}

/// A constraint as request fields: JSON constraints as OpenAI's `response_format`
/// (which OpenAI, vLLM, SGLang and llama.cpp's server all read), the text ones as
/// vLLM's `guided_regex` / `guided_choice` / `guided_grammar`.
#[derive(Debug, Default, Serialize)]
struct ConstraintFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guided_regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guided_choice: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guided_grammar: Option<String>,
}

impl ConstraintFields {
    fn new(constraint: &Constraint) -> Self {
        let mut fields = Self::default();
        match constraint {
            Constraint::JsonObject => {
                fields.response_format = Some(serde_json::json!({"type": "json_object"}))
            }
            Constraint::JsonSchema { schema } => {
                // Not `strict`: OpenAI's strict mode accepts only a subset of JSON
                // Schema; replies are checked here either way.
                fields.response_format = Some(serde_json::json!({"type": "json_schema",
                    "json_schema": {"name": "seqit", "schema": schema, "strict": false}}))
            }
            Constraint::Regex { pattern } => fields.guided_regex = Some(pattern.clone()),
            Constraint::Choice { options } => fields.guided_choice = Some(options.clone()),
            Constraint::Grammar { lark } => fields.guided_grammar = Some(lark.clone()),
        }
        fields
    }
}

/// A chat message as sent: `content` is the text alone, or, when the message carries
/// images, OpenAI content parts (the text, then one `image_url` part per image).
#[derive(Debug, Serialize)]
struct OutMessage<'a> {
    role: &'a Role,
    content: OutContent<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Text(&'a str),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Debug, Serialize)]
struct ImageUrl<'a> {
    url: &'a str,
}

impl<'a> OutMessage<'a> {
    fn new(message: &'a ChatMessage) -> Self {
        let content = if message.images.is_empty() {
            OutContent::Text(&message.content)
        } else {
            let text = (!message.content.is_empty()).then_some(ContentPart::Text {
                text: &message.content,
            });
            let images = message.images.iter().map(|url| ContentPart::ImageUrl {
                image_url: ImageUrl { url },
            });
            OutContent::Parts(text.into_iter().chain(images).collect())
        };
        Self {
            role: &message.role,
            content,
        }
    }
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl<'a> RequestBody<'a> {
    /// The body asking for `request`'s samples; the seed is that of its first sample.
    pub fn new(model: &'a str, request: &'a LlmRequest) -> Self {
        let (messages, prompt) = match &request.prompt {
            Prompt::Chat(messages) => (Some(messages.iter().map(OutMessage::new).collect()), None),
            Prompt::Text(text) => (None, Some(text.as_str())),
        };
        let p = &request.params;
        Self {
            model,
            messages,
            prompt,
            max_tokens: p.max_tokens,
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: (p.top_k > 0).then_some(p.top_k),
            seed: request.seed_for_sample(request.first_sample),
            stop: &p.stop,
            n: request.n.max(1),
            ignore_eos: p.ignore_eos,
            logprobs: p.logprobs.map(|top| match request.prompt {
                Prompt::Chat(_) => Value::Bool(true),
                Prompt::Text(_) => Value::from(top),
            }),
            top_logprobs: p
                .logprobs
                .filter(|_| matches!(request.prompt, Prompt::Chat(_))),
            constraint: ConstraintFields::default(),
        }
    }

    /// Adds the request's constraint, if any, in the fields servers read.
    pub fn with_constraint(mut self, request: &LlmRequest) -> Self {
        if let Some(constraint) = &request.params.constraint {
            self.constraint = ConstraintFields::new(constraint);
        }
        self
    }
}

/// A chat or completions response, as loosely as it can be read.
#[derive(Debug, Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: Option<Value>,
    #[serde(default)]
    message: Option<WireMessage>,
    /// Completions endpoint.
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    finish_reason: Option<Value>,
    #[serde(default)]
    logprobs: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<Value>,
    #[serde(default)]
    completion_tokens: Option<Value>,
}

/// Why a response body could not be turned into samples.
#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// Not JSON, or JSON of another shape.
    Malformed(String),
    /// A well-formed answer without choices.
    EmptyChoices,
    /// A 200 response carrying an `error` object.
    ErrorObject(String),
}

/// Reads a response body into samples numbered from `request.first_sample` (at most
/// `request.n` of them) and the call's usage. Missing usage is estimated from text
/// lengths.
pub fn parse_response(
    body: &[u8],
    request: &LlmRequest,
) -> Result<(Vec<Sample>, Usage), ParseError> {
    parse_answer(body, request.first_sample, request.n, &request.prompt)
}

/// [`parse_response`] for an answer whose request is known only by its first sample
/// index, sample count and prompt (used to estimate missing usage).
pub fn parse_answer(
    body: &[u8],
    first_sample: u32,
    n: u32,
    prompt: &Prompt,
) -> Result<(Vec<Sample>, Usage), ParseError> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let choices = match wire.choices {
        Some(choices) if !choices.is_empty() => choices,
        _ => {
            if let Some(error) = wire.error.filter(|e| !e.is_null()) {
                return Err(ParseError::ErrorObject(error_message(&error)));
            }
            return Err(ParseError::EmptyChoices);
        }
    };
    let mut choices: Vec<(u64, WireChoice)> = choices
        .into_iter()
        .enumerate()
        .map(|(position, c)| {
            (
                c.index
                    .as_ref()
                    .and_then(value_u64)
                    .unwrap_or(position as u64),
                c,
            )
        })
        .collect();
    choices.sort_by_key(|(index, _)| *index);
    choices.truncate(n.max(1) as usize);
    let mut samples = Vec::with_capacity(choices.len());
    for (position, (_, choice)) in choices.into_iter().enumerate() {
        let text = match (&choice.message, &choice.text) {
            (Some(message), _) => content_text(message.content.as_ref()),
            (None, Some(text)) => content_text(Some(text)),
            (None, None) => {
                return Err(ParseError::Malformed(format!(
                    "choice {position} has neither `message` nor `text`"
                )))
            }
        };
        samples.push(Sample {
            index: first_sample + position as u32,
            text,
            finish_reason: finish_reason(choice.finish_reason.as_ref()),
            prompt_tokens: None,
            completion_tokens: None,
            cached: false,
            logprobs: choice.logprobs.as_ref().and_then(read_logprobs),
            constraint_met: None,
        });
    }
    let reported = wire.usage.as_ref().and_then(|u| {
        Some((
            u.prompt_tokens.as_ref().and_then(value_u64)?,
            u.completion_tokens
                .as_ref()
                .and_then(value_u64)
                .unwrap_or(0),
        ))
    });
    let usage = match reported {
        Some((prompt_tokens, completion_tokens)) => Usage {
            prompt_tokens,
            completion_tokens,
            estimated: false,
        },
        None => Usage {
            prompt_tokens: estimate_prompt_tokens(prompt),
            completion_tokens: samples.iter().map(|s| estimate_tokens(&s.text)).sum(),
            estimated: true,
        },
    };
    let count = samples.len() as u64;
    for (i, sample) in samples.iter_mut().enumerate() {
        sample.prompt_tokens = Some(usage.prompt_tokens);
        let share = usage.completion_tokens / count
            + u64::from((i as u64) < usage.completion_tokens % count);
        sample.completion_tokens = Some(share);
    }
    Ok((samples, usage))
}

/// A choice's `logprobs`: chat's `{"content": [{token, logprob, bytes, top_logprobs}]}`
/// or the legacy completions layout (`tokens`, `token_logprobs`, `top_logprobs` maps).
/// `None` when absent or unreadable.
fn read_logprobs(value: &Value) -> Option<Vec<TokenLogprob>> {
    let bytes_of = |entry: &Value, token: &str| -> Vec<u8> {
        entry["bytes"]
            .as_array()
            .and_then(|b| b.iter().map(|x| x.as_u64().map(|x| x as u8)).collect())
            .unwrap_or_else(|| token.as_bytes().to_vec())
    };
    if let Some(content) = value.get("content").and_then(Value::as_array) {
        return content
            .iter()
            .map(|entry| {
                let token = entry["token"].as_str()?.to_string();
                Some(TokenLogprob {
                    bytes: bytes_of(entry, &token),
                    logprob: entry["logprob"].as_f64()? as f32,
                    top: entry["top_logprobs"]
                        .as_array()
                        .map(|alternatives| {
                            alternatives
                                .iter()
                                .filter_map(|a| {
                                    let token = a["token"].as_str()?.to_string();
                                    Some(TopLogprob {
                                        bytes: bytes_of(a, &token),
                                        logprob: a["logprob"].as_f64()? as f32,
                                        token,
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    token,
                })
            })
            .collect();
    }
    let tokens = value.get("tokens")?.as_array()?;
    let logprobs = value.get("token_logprobs")?.as_array()?;
    let tops = value.get("top_logprobs").and_then(Value::as_array);
    tokens
        .iter()
        .zip(logprobs)
        .enumerate()
        .map(|(i, (token, logprob))| {
            let token = token.as_str()?.to_string();
            let mut top: Vec<TopLogprob> = tops
                .and_then(|t| t.get(i))
                .and_then(Value::as_object)
                .map(|alternatives| {
                    alternatives
                        .iter()
                        .filter_map(|(t, lp)| {
                            Some(TopLogprob {
                                token: t.clone(),
                                bytes: t.as_bytes().to_vec(),
                                logprob: lp.as_f64()? as f32,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
            Some(TokenLogprob {
                bytes: token.as_bytes().to_vec(),
                logprob: logprob.as_f64()? as f32,
                token,
                top,
            })
        })
        .collect()
}

/// Text of a message's `content`: a string, `null` (empty), or a list of parts whose
/// `text` fields are joined.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(text) => Some(text.as_str()),
                other => other.get("text").and_then(Value::as_str),
            })
            .collect(),
        _ => String::new(),
    }
}

/// `length` and its aliases mean the token limit was hit; everything else (`stop`,
/// `eos`, `stop_sequence`, `end_turn`, `content_filter`, `tool_calls`, `null`) is a stop.
pub fn finish_reason(value: Option<&Value>) -> FinishReason {
    match value.and_then(Value::as_str) {
        Some("length" | "max_tokens" | "max_length" | "model_length" | "max_new_tokens") => {
            FinishReason::Length
        }
        _ => FinishReason::Stop,
    }
}

fn value_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `message` of an OpenAI error object, or the object itself.
pub fn error_message(error: &Value) -> String {
    let text = match error {
        Value::String(s) => s.clone(),
        other => match other.get("message").and_then(Value::as_str) {
            Some(message) => message.to_string(),
            None => other.to_string(),
        },
    };
    shorten(&text, 300)
}

/// At most `max` characters of `text`, marked when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Tokens estimated as characters / 4 (rounded up); the heuristic used when a server
/// reports no usage and for `--dry-run` estimates.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Prompt tokens estimated as characters / 4 plus 4 tokens of chat framing per message.
pub fn estimate_prompt_tokens(prompt: &Prompt) -> u64 {
    match prompt {
        Prompt::Text(text) => estimate_tokens(text),
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + 4)
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use seqit_core::SamplingParams;
    use serde_json::json;

    use super::*;

    fn chat_request(n: u32) -> LlmRequest {
        LlmRequest::new(
            Prompt::Chat(vec![ChatMessage::user("hello there")]),
            SamplingParams::greedy(16),
        )
        .with_samples(n)
    }

    #[test]
    fn reads_a_standard_answer() {
        let body = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop", "logprobs": null}], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}, "system_fingerprint": "fp"});
        let (samples, usage) =
            parse_response(body.to_string().as_bytes(), &chat_request(1)).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].text, "hi");
        assert_eq!(samples[0].finish_reason, FinishReason::Stop);
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 9,
                completion_tokens: 1,
                estimated: false
            }
        );
    }

    #[test]
    fn tolerates_server_variations() {
        // No usage, null content, content parts, unordered choices, odd finish reasons,
        // numbers as strings or floats, extra fields everywhere.
        let body = json!({"choices": [
            {"index": 2, "message": {"content": [{"type": "text", "text": "c1"}, {"type": "text", "text": "c2"}]}, "finish_reason": "max_tokens"},
            {"index": "0", "message": {"content": null, "tool_calls": []}, "finish_reason": null},
            {"index": 1.0, "message": {"content": "b", "reasoning_content": "..."}, "finish_reason": "eos", "stop_reason": 2}
        ], "extra": {"nested": true}});
        let (samples, usage) =
            parse_response(body.to_string().as_bytes(), &chat_request(3)).unwrap();
        let texts: Vec<&str> = samples.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["", "b", "c1c2"]);
        let reasons: Vec<FinishReason> = samples.iter().map(|s| s.finish_reason).collect();
        assert_eq!(
            reasons,
            [FinishReason::Stop, FinishReason::Stop, FinishReason::Length]
        );
        assert!(usage.estimated);
        assert_eq!(usage.prompt_tokens, estimate_tokens("hello there") + 4);

        let completions = json!({"choices": [{"text": "abc", "finish_reason": "length"}], "usage": {"prompt_tokens": 3.0, "completion_tokens": "2"}});
        let request = LlmRequest::new(Prompt::Text("x".into()), SamplingParams::greedy(2));
        let (samples, usage) =
            parse_response(completions.to_string().as_bytes(), &request).unwrap();
        assert_eq!(samples[0].text, "abc");
        assert_eq!(samples[0].finish_reason, FinishReason::Length);
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.estimated
            ),
            (3, 2, false)
        );
    }

    #[test]
    fn numbers_samples_from_the_first_index_and_splits_usage() {
        let body = json!({"choices": [{"message": {"content": "a"}}, {"message": {"content": "b"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 7}});
        let request = chat_request(2).for_samples(4, 2);
        let (samples, _) = parse_response(body.to_string().as_bytes(), &request).unwrap();
        assert_eq!(samples.iter().map(|s| s.index).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(
            samples
                .iter()
                .map(|s| s.completion_tokens.unwrap())
                .sum::<u64>(),
            7
        );
    }

    #[test]
    fn rejects_empty_malformed_and_error_bodies() {
        let request = chat_request(1);
        assert_eq!(
            parse_response(br#"{"choices": []}"#, &request),
            Err(ParseError::EmptyChoices)
        );
        assert_eq!(
            parse_response(br#"{"choices": null}"#, &request),
            Err(ParseError::EmptyChoices)
        );
        assert!(matches!(
            parse_response(br#"{"choices": [{"mess"#, &request),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(b"<html>502</html>", &request),
            Err(ParseError::Malformed(_))
        ));
        assert_eq!(
            parse_response(
                br#"{"error": {"message": "overloaded", "type": "server_error"}}"#,
                &request
            ),
            Err(ParseError::ErrorObject("overloaded".into()))
        );
    }

    #[test]
    fn request_body_sends_only_what_is_set() {
        let request = chat_request(1);
        let body = serde_json::to_value(RequestBody::new("m", &request)).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16, "temperature": 0.0, "top_p": 1.0, "seed": 0})
        );
        let mut params = SamplingParams::greedy(4);
        params.top_k = 5;
        params.stop = vec!["\n".into()];
        params.seed = 10;
        params.ignore_eos = true;
        let request = LlmRequest::new(Prompt::Text("p".into()), params)
            .with_samples(3)
            .for_samples(2, 3);
        let body = serde_json::to_value(RequestBody::new("m", &request)).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "prompt": "p", "max_tokens": 4, "temperature": 0.0, "top_p": 1.0, "top_k": 5, "seed": 12, "stop": ["\n"], "n": 3, "ignore_eos": true})
        );
    }

    #[test]
    fn constraints_and_logprobs_go_in_the_fields_servers_read() {
        let mut params = SamplingParams::greedy(4);
        params.logprobs = Some(3);
        params.constraint = Some(Constraint::Choice {
            options: vec!["A".into(), "B".into()],
        });
        let chat = LlmRequest::new(Prompt::Chat(vec![ChatMessage::user("q")]), params.clone());
        let body =
            serde_json::to_value(RequestBody::new("m", &chat).with_constraint(&chat)).unwrap();
        assert_eq!(body["guided_choice"], json!(["A", "B"]));
        assert_eq!(
            (body["logprobs"].clone(), body["top_logprobs"].clone()),
            (json!(true), json!(3))
        );
        // Without `with_constraint` nothing of the constraint is sent.
        let plain = serde_json::to_value(RequestBody::new("m", &chat)).unwrap();
        assert!(plain.get("guided_choice").is_none());
        params.constraint = Some(Constraint::JsonSchema {
            schema: json!({"type": "object"}),
        });
        let text = LlmRequest::new(Prompt::Text("p".into()), params);
        let body =
            serde_json::to_value(RequestBody::new("m", &text).with_constraint(&text)).unwrap();
        assert_eq!(
            body["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        assert_eq!(
            (body["logprobs"].clone(), body.get("top_logprobs")),
            (json!(3), None)
        );
    }

    #[test]
    fn logprobs_are_read_in_both_layouts() {
        let chat = json!({"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop",
            "logprobs": {"content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
                                 {"token": "Yo", "logprob": -1.5, "bytes": null}]}]}}]});
        let (samples, _) = parse_response(chat.to_string().as_bytes(), &chat_request(1)).unwrap();
        let lp = samples[0].logprobs.as_ref().unwrap();
        assert_eq!(
            (lp[0].token.as_str(), lp[0].logprob, lp[0].top.len()),
            ("Hi", -0.5, 2)
        );
        assert_eq!(lp[0].top[1].bytes, b"Yo".to_vec());
        let text = json!({"choices": [{"text": "a b", "logprobs": {"tokens": ["a", " b"],
            "token_logprobs": [-0.1, -0.2], "top_logprobs": [{"a": -0.1, "c": -2.0}, {" b": -0.2}]}}]});
        let (samples, _) = parse_response(text.to_string().as_bytes(), &chat_request(1)).unwrap();
        let lp = samples[0].logprobs.as_ref().unwrap();
        assert_eq!(lp.len(), 2);
        assert_eq!(lp[0].top[0].token, "a");
        assert_eq!(lp[1].logprob, -0.2);
        assert!(samples[0].constraint_met.is_none());
    }

    #[test]
    fn images_go_as_content_parts_after_the_text() {
        let messages = vec![
            ChatMessage::system("Look closely."),
            ChatMessage::user("What shape?")
                .with_image("data:image/png;base64,AAAA")
                .with_image("data:image/png;base64,BBBB"),
        ];
        let request = LlmRequest::new(Prompt::Chat(messages), SamplingParams::greedy(8));
        let body = serde_json::to_value(RequestBody::new("m", &request)).unwrap();
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "Look closely."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What shape?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,BBBB"}}
                ]}
            ])
        );
    }
}
