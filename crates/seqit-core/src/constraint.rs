//! Structured outputs: what shape a generated text must have, and the per-token
//! log-probabilities a backend can report.
//!
//! A [`Constraint`] travels inside [`SamplingParams`](crate::SamplingParams): the local
//! engine enforces it token by token (constrained decoding), `seqit serve` reads it from
//! OpenAI's `response_format` and vLLM's `guided_*` fields, and the remote client sends it
//! in the dialect its server speaks or checks replies against it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The language a generated text must belong to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Constraint {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON value valid under this JSON Schema.
    JsonSchema {
        /// The schema, a JSON object or boolean.
        schema: Value,
    },
    /// A text matched in full by this regular expression.
    Regex {
        /// The pattern (non-empty); it must match the whole text.
        pattern: String,
    },
    /// Exactly one of these strings.
    Choice {
        /// The allowed texts: at least one, none empty.
        options: Vec<String>,
    },
    /// A text of this Lark grammar (llguidance's dialect: `start` is the top rule).
    Grammar {
        /// The grammar's source text (non-empty).
        lark: String,
    },
}

impl Constraint {
    /// Short name for logs, statistics and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonObject => "json_object",
            Constraint::JsonSchema { .. } => "json_schema",
            Constraint::Regex { .. } => "regex",
            Constraint::Choice { .. } => "choice",
            Constraint::Grammar { .. } => "grammar",
        }
    }

    /// The JSON Schema a JSON constraint stands for (`{"type": "object"}` for
    /// [`Constraint::JsonObject`]); `None` for the text constraints.
    pub fn json_schema(&self) -> Option<Value> {
        match self {
            Constraint::JsonObject => Some(serde_json::json!({"type": "object"})),
            Constraint::JsonSchema { schema } => Some(schema.clone()),
            _ => None,
        }
    }

    /// A regular expression equivalent to a choice (options escaped, joined by `|`).
    pub fn choice_pattern(options: &[String]) -> String {
        let escaped: Vec<String> = options.iter().map(|o| escape_regex(o)).collect();
        format!("(?:{})", escaped.join("|"))
    }

    /// Checks what can be checked without compiling: options present, pattern and
    /// grammar non-empty, schema a JSON object or boolean. Errors name the problem.
    pub fn validate_shape(&self) -> Result<(), String> {
        match self {
            Constraint::JsonObject => Ok(()),
            Constraint::JsonSchema { schema } => match schema {
                Value::Object(_) | Value::Bool(_) => Ok(()),
                other => Err(format!(
                    "a JSON Schema must be an object or a boolean, got {}",
                    json_type_name(other)
                )),
            },
            Constraint::Regex { pattern } if pattern.is_empty() => {
                Err("the regular expression is empty".into())
            }
            Constraint::Choice { options } if options.is_empty() => {
                Err("a choice needs at least one option".into())
            }
            Constraint::Choice { options } if options.iter().any(String::is_empty) => {
                Err("a choice option is empty".into())
            }
            Constraint::Grammar { lark } if lark.trim().is_empty() => {
                Err("the grammar is empty".into())
            }
            _ => Ok(()),
        }
    }
}

/// Escapes the characters a regular expression gives a meaning to.
pub fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The log-probability of one generated token, with the most likely alternatives at
/// its position (OpenAI's `logprobs.content[]` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (lossy where a token is part of a UTF-8 character).
    pub token: String,
    /// The token's bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability under the model (before temperature, top-k/p and
    /// the constraint's mask, as vLLM reports by default).
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens at this position, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopLogprob>,
}

/// One alternative of a [`TokenLogprob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The alternative's text (lossy where a token is part of a UTF-8 character).
    pub token: String,
    /// The alternative's bytes.
    pub bytes: Vec<u8>,
    /// Natural log of its probability, measured as for [`TokenLogprob::logprob`].
    pub logprob: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_pattern_escapes_options() {
        let pattern = Constraint::choice_pattern(&["A.".into(), "(b)".into()]);
        assert_eq!(pattern, r"(?:A\.|\(b\))");
    }

    #[test]
    fn shape_errors_name_the_problem() {
        let bad = Constraint::JsonSchema {
            schema: Value::String("x".into()),
        };
        assert!(bad.validate_shape().unwrap_err().contains("a string"));
        let empty = Constraint::Choice { options: vec![] };
        assert!(empty.validate_shape().unwrap_err().contains("at least one"));
        assert!(Constraint::JsonObject.validate_shape().is_ok());
    }

    #[test]
    fn serializes_with_a_type_tag() {
        let c = Constraint::Regex {
            pattern: "a+".into(),
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json, serde_json::json!({"type": "regex", "pattern": "a+"}));
        assert_eq!(serde_json::from_value::<Constraint>(json).unwrap(), c);
    }
}
