//! Structured outputs and log-probabilities on the wire: the request fields of the
//! dialects clients speak (OpenAI's `response_format`, vLLM's `guided_*` and
//! `structured_outputs`, llama.cpp's `json_schema`) read into one [`Constraint`], and
//! the `logprobs` objects of chat and text completions.

use std::collections::BTreeMap;

use seqit_core::{Constraint, TokenLogprob, MAX_TOP_LOGPROBS};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// The request fields that constrain the output. At most one may be given.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConstraintFields {
    /// OpenAI: `{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}`.
    pub response_format: Option<Value>,
    /// vLLM: a JSON Schema (an object, or a string holding one).
    pub guided_json: Option<Value>,
    pub guided_regex: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    /// vLLM: a grammar; seqit reads Lark (llguidance's dialect).
    pub guided_grammar: Option<String>,
    /// vLLM ≥ 0.10: `{"json" | "regex" | "choice" | "grammar" | "json_object": ...}`.
    pub structured_outputs: Option<Value>,
    /// llama.cpp server: a JSON Schema.
    pub json_schema: Option<Value>,
}

/// A request's constraint and the body field it came from (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct RequestedConstraint {
    pub constraint: Constraint,
    pub field: String,
}

impl ConstraintFields {
    /// The one constraint the request asks for, if any.
    pub fn constraint(&self) -> Result<Option<RequestedConstraint>, ApiError> {
        let mut found: Vec<RequestedConstraint> = Vec::new();
        let mut add = |field: &str, constraint: Constraint| {
            found.push(RequestedConstraint {
                constraint,
                field: field.to_string(),
            })
        };
        if let Some(format) = self.response_format.as_ref().filter(|v| !v.is_null()) {
            if let Some(constraint) = response_format(format)? {
                add("response_format", constraint);
            }
        }
        if let Some(schema) = self.guided_json.as_ref().filter(|v| !v.is_null()) {
            add("guided_json", schema_constraint("guided_json", schema)?);
        }
        if let Some(pattern) = &self.guided_regex {
            add(
                "guided_regex",
                Constraint::Regex {
                    pattern: pattern.clone(),
                },
            );
        }
        if let Some(options) = &self.guided_choice {
            add(
                "guided_choice",
                Constraint::Choice {
                    options: options.clone(),
                },
            );
        }
        if let Some(lark) = &self.guided_grammar {
            add("guided_grammar", Constraint::Grammar { lark: lark.clone() });
        }
        if let Some(outputs) = self.structured_outputs.as_ref().filter(|v| !v.is_null()) {
            let (field, constraint) = structured_outputs(outputs)?;
            add(&field, constraint);
        }
        if let Some(schema) = self.json_schema.as_ref().filter(|v| !v.is_null()) {
            add("json_schema", schema_constraint("json_schema", schema)?);
        }
        if found.len() > 1 {
            let names: Vec<String> = found.iter().map(|c| format!("`{}`", c.field)).collect();
            return Err(ApiError::field(
                &found[1].field,
                format!(
                    "{} each constrain the output; send only one",
                    names.join(" and ")
                ),
            ));
        }
        let requested = found.pop();
        if let Some(r) = &requested {
            r.constraint
                .validate_shape()
                .map_err(|problem| ApiError::field(&r.field, problem))?;
        }
        Ok(requested)
    }
}

fn response_format(format: &Value) -> Result<Option<Constraint>, ApiError> {
    let kind = format.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::field(
            "response_format.type",
            "expected \"text\", \"json_object\" or \"json_schema\"",
        )
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Constraint::JsonObject)),
        "json_schema" => {
            // OpenAI nests the schema in `json_schema.schema`; some clients put it one
            // level up.
            let inner = format.get("json_schema").ok_or_else(|| {
                ApiError::invalid(
                    "missing field `response_format.json_schema`",
                    Some("response_format.json_schema".into()),
                )
            })?;
            let schema = inner
                .get("schema")
                .or(format.get("schema"))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "missing field `response_format.json_schema.schema`",
                        Some("response_format.json_schema.schema".into()),
                    )
                })?;
            schema_constraint("response_format.json_schema.schema", schema).map(Some)
        }
        other => Err(ApiError::field(
            "response_format.type",
            format!("expected \"text\", \"json_object\" or \"json_schema\", got \"{other}\""),
        )),
    }
}

/// A JSON Schema given as a JSON value or as a string holding one.
fn schema_constraint(field: &str, schema: &Value) -> Result<Constraint, ApiError> {
    let schema = match schema {
        Value::String(text) => serde_json::from_str(text)
            .map_err(|e| ApiError::field(field, format!("is not a JSON Schema: {e}")))?,
        other => other.clone(),
    };
    Ok(Constraint::JsonSchema { schema })
}

fn structured_outputs(outputs: &Value) -> Result<(String, Constraint), ApiError> {
    let object = outputs
        .as_object()
        .ok_or_else(|| ApiError::field("structured_outputs", "expected an object"))?;
    let given: Vec<(&String, &Value)> = object.iter().filter(|(_, v)| !v.is_null()).collect();
    let [(key, value)] = given.as_slice() else {
        return Err(ApiError::field(
            "structured_outputs",
            "expected exactly one of `json`, `json_object`, `regex`, `choice`, `grammar`",
        ));
    };
    let field = format!("structured_outputs.{key}");
    let text = |v: &Value| {
        v.as_str()
            .map(String::from)
            .ok_or_else(|| ApiError::field(&field, "expected a string"))
    };
    let constraint = match key.as_str() {
        "json" => schema_constraint(&field, value)?,
        "json_object" => Constraint::JsonObject,
        "regex" => Constraint::Regex {
            pattern: text(value)?,
        },
        "grammar" => Constraint::Grammar { lark: text(value)? },
        "choice" => Constraint::Choice {
            options: serde_json::from_value((*value).clone())
                .map_err(|_| ApiError::field(&field, "expected a list of strings"))?,
        },
        other => {
            return Err(ApiError::field(
                "structured_outputs",
                format!("unknown kind `{other}`; expected `json`, `json_object`, `regex`, `choice` or `grammar`"),
            ))
        }
    };
    Ok((field, constraint))
}

/// The number of alternatives a chat request asks for: `logprobs: true` and
/// `top_logprobs` (0–20); `None` without `logprobs`.
pub(crate) fn chat_logprobs(
    logprobs: Option<bool>,
    top_logprobs: Option<u64>,
) -> Result<Option<usize>, ApiError> {
    match (logprobs.unwrap_or(false), top_logprobs) {
        (false, Some(_)) => Err(ApiError::field("top_logprobs", "needs `logprobs: true`")),
        (false, None) => Ok(None),
        (true, top) => top_count("top_logprobs", top.unwrap_or(0)).map(Some),
    }
}

/// The number of alternatives a text-completion request asks for (`logprobs`: 0–20).
pub(crate) fn text_logprobs(logprobs: Option<u64>) -> Result<Option<usize>, ApiError> {
    logprobs.map(|n| top_count("logprobs", n)).transpose()
}

fn top_count(field: &str, n: u64) -> Result<usize, ApiError> {
    if n > MAX_TOP_LOGPROBS as u64 {
        return Err(ApiError::field(
            field,
            format!("must be at most {MAX_TOP_LOGPROBS}, got {n}"),
        ));
    }
    Ok(n as usize)
}

/// A chat choice's `logprobs`: `{"content": [...]}`.
#[derive(Debug, Serialize)]
pub(crate) struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

impl ChatLogprobs {
    pub fn new(tokens: &[TokenLogprob]) -> Self {
        Self {
            content: tokens
                .iter()
                .map(|t| ChatTokenLogprob {
                    token: t.token.clone(),
                    logprob: t.logprob,
                    bytes: t.bytes.clone(),
                    top_logprobs: t
                        .top
                        .iter()
                        .map(|a| ChatTopLogprob {
                            token: a.token.clone(),
                            logprob: a.logprob,
                            bytes: a.bytes.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A text choice's `logprobs` (the legacy completions layout).
#[derive(Debug, Serialize)]
pub(crate) struct TextLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<BTreeMap<String, f32>>,
    /// Byte offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}

impl TextLogprobs {
    pub fn new(tokens: &[TokenLogprob]) -> Self {
        let mut offset = 0;
        let mut text_offset = Vec::with_capacity(tokens.len());
        for t in tokens {
            text_offset.push(offset);
            offset += t.bytes.len();
        }
        Self {
            tokens: tokens.iter().map(|t| t.token.clone()).collect(),
            token_logprobs: tokens.iter().map(|t| t.logprob).collect(),
            top_logprobs: tokens
                .iter()
                .map(|t| t.top.iter().map(|a| (a.token.clone(), a.logprob)).collect())
                .collect(),
            text_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fields;
    use serde_json::json;

    fn constraint(body: Value) -> Result<Option<RequestedConstraint>, ApiError> {
        fields::<ConstraintFields>(&body)?.constraint()
    }

    fn param(err: ApiError) -> String {
        match err {
            ApiError::InvalidRequest { param, .. } => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_dialect_reads_into_one_constraint() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let openai = json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "strict": true, "schema": schema}}});
        let vllm = json!({"guided_json": schema.to_string()});
        let llama_cpp = json!({"json_schema": schema});
        let new_vllm = json!({"structured_outputs": {"json": schema}});
        for body in [openai, vllm, llama_cpp, new_vllm] {
            let got = constraint(body).unwrap().unwrap().constraint;
            assert_eq!(
                got,
                Constraint::JsonSchema {
                    schema: schema.clone()
                }
            );
        }
        let choice = constraint(json!({"structured_outputs": {"choice": ["A", "B"]}}));
        assert_eq!(
            choice.unwrap().unwrap().constraint,
            Constraint::Choice {
                options: vec!["A".into(), "B".into()]
            }
        );
        assert_eq!(
            constraint(json!({"response_format": {"type": "json_object"}}))
                .unwrap()
                .unwrap()
                .constraint,
            Constraint::JsonObject
        );
        assert!(constraint(json!({"response_format": {"type": "text"}}))
            .unwrap()
            .is_none());
        assert!(constraint(json!({})).unwrap().is_none());
    }

    #[test]
    fn problems_are_named() {
        let two = constraint(json!({"guided_regex": "a+", "guided_choice": ["a"]}));
        assert_eq!(param(two.unwrap_err()), "guided_choice");
        let no_schema = constraint(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        );
        assert_eq!(
            param(no_schema.unwrap_err()),
            "response_format.json_schema.schema"
        );
        let bad_kind = constraint(json!({"response_format": {"type": "yaml"}}));
        assert_eq!(param(bad_kind.unwrap_err()), "response_format.type");
        let bad_json = constraint(json!({"guided_json": "{not json"}));
        assert_eq!(param(bad_json.unwrap_err()), "guided_json");
        let empty_choice = constraint(json!({"guided_choice": []}));
        assert_eq!(param(empty_choice.unwrap_err()), "guided_choice");
        assert_eq!(
            param(chat_logprobs(None, Some(3)).unwrap_err()),
            "top_logprobs"
        );
        assert_eq!(
            param(chat_logprobs(Some(true), Some(21)).unwrap_err()),
            "top_logprobs"
        );
        assert_eq!(chat_logprobs(Some(true), None).unwrap(), Some(0));
        assert_eq!(text_logprobs(Some(5)).unwrap(), Some(5));
    }

    #[test]
    fn text_logprobs_offsets_count_bytes() {
        let token = |t: &str, lp: f32| TokenLogprob {
            token: t.into(),
            bytes: t.as_bytes().to_vec(),
            logprob: lp,
            top: vec![],
        };
        let l = TextLogprobs::new(&[token("Hé", -0.1), token("llo", -0.2)]);
        assert_eq!(l.text_offset, vec![0, 3]);
        assert_eq!(l.token_logprobs, vec![-0.1, -0.2]);
    }
}
