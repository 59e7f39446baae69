//! Schemas holding one exchange per record: Alpaca, FlanCoT, alpaca_eval outputs and
//! prompt lists. Earlier turns of a conversation are kept in `history`, a list of
//! `[instruction, response]` pairs (the convention LLaMA-Factory reads).

use seqit_core::{ChatMessage, Role};
use serde_json::{Map, Value};

use super::fields::{remove_keeping_order, Fields};
use super::out::Out;
use super::EncodeOptions;
use crate::error::type_name;
use crate::format::Schema;
use crate::record::{split_input, Record};

/// Field names of one single-exchange schema.
struct Layout {
    prompt: &'static str,
    /// Alpaca's separate input.
    input: Option<&'static str>,
    /// The reply, required when reading.
    response: Option<&'static str>,
    /// Keys read as the system prompt; the first is the one written.
    system: &'static [&'static str],
}

fn layout(schema: Schema) -> Layout {
    match schema {
        Schema::Alpaca => Layout {
            prompt: "instruction",
            input: Some("input"),
            response: Some("output"),
            system: &["system", "system_prompt"],
        },
        Schema::FlanCot => Layout {
            prompt: "question",
            input: None,
            response: Some("response"),
            system: &["system_prompt", "system"],
        },
        Schema::AlpacaEval => Layout {
            prompt: "instruction",
            input: None,
            response: Some("output"),
            system: &[],
        },
        Schema::SeqEval => Layout {
            prompt: "instruction",
            input: Some("input"),
            response: None,
            system: &["system"],
        },
        _ => Layout {
            prompt: "prompt",
            input: None,
            response: None,
            system: &["system"],
        },
    }
}

/// Field names of `schema` that metadata may not take.
pub(super) fn reserved(schema: Schema) -> &'static [&'static str] {
    match schema {
        Schema::Alpaca => &[
            "instruction",
            "input",
            "output",
            "system",
            "system_prompt",
            "history",
        ],
        Schema::FlanCot => &["question", "response", "system_prompt", "system", "history"],
        Schema::AlpacaEval => &["instruction", "output", "generator", "dataset", "history"],
        Schema::SeqEval => &["instruction", "input", "system"],
        _ => &["prompt", "system"],
    }
}

pub(super) fn decode(schema: Schema, fields: &mut Fields) -> Record {
    let layout = layout(schema);
    let prompt = fields.required_str(layout.prompt);
    let input = layout
        .input
        .and_then(|key| fields.optional_str(key))
        .filter(|i| !i.is_empty());
    let response = layout.response.and_then(|key| fields.required_str(key));
    let mut system = None;
    for key in layout.system {
        if let Some(text) = fields.optional_str(key) {
            match &system {
                Some((first, previous)) if previous != &text => fields.problem(
                    *key,
                    format!("conflicts with `{first}`; give one system prompt"),
                ),
                _ => system = Some((*key, text)),
            }
        }
    }
    if schema == Schema::AlpacaEval {
        // Kept as metadata (and written back by `encode`); checked here.
        fields.check_str("generator", true);
        fields.check_str("dataset", false);
    }
    let mut messages = Vec::new();
    if !matches!(schema, Schema::Prompts | Schema::SeqEval) {
        if let Some(history) = fields.take("history") {
            messages = decode_history(fields, history);
        }
    }
    let mut record = Record::exchange(
        prompt.as_deref().unwrap_or_default(),
        input.as_deref(),
        response.as_deref(),
    );
    messages.append(&mut record.messages);
    record.messages = messages;
    record.system = system.map(|(_, text)| text).filter(|s| !s.is_empty());
    record
}

fn decode_history(fields: &mut Fields, history: Value) -> Vec<ChatMessage> {
    let Value::Array(pairs) = history else {
        fields.problem(
            "history",
            format!(
                "expected a list of [instruction, response] pairs, found {}",
                type_name(&history)
            ),
        );
        return Vec::new();
    };
    let mut messages = Vec::new();
    for (i, pair) in pairs.into_iter().enumerate() {
        match pair {
            Value::Array(items) => match items.as_slice() {
                [Value::String(q), Value::String(a)] => {
                    messages.push(ChatMessage::user(q.clone()));
                    messages.push(ChatMessage::assistant(a.clone()));
                }
                _ => fields.problem(
                    format!("history[{i}]"),
                    format!(
                        "expected a pair [instruction, response] of strings, found a list of {} item(s)",
                        items.len()
                    ),
                ),
            },
            other => fields.problem(
                format!("history[{i}]"),
                format!(
                    "expected a pair [instruction, response] of strings, found {}",
                    type_name(&other)
                ),
            ),
        }
    }
    messages
}

/// The record as earlier exchanges, last prompt and its reply, or why it has another
/// shape.
#[allow(clippy::type_complexity)]
fn split_conversation(record: &Record) -> Result<(Vec<(&str, &str)>, &str, Option<&str>), String> {
    let messages = &record.messages;
    for (i, m) in messages.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if m.role != expected {
            return Err(format!(
                "turn {i} has role `{}`, but this format holds a system prompt and alternating user/assistant turns only (turn {i} would be `{}`)\nhint: convert to sharegpt or messages, which hold any turns",
                m.role.as_str(),
                expected.as_str()
            ));
        }
    }
    if messages.is_empty() {
        return Err("it has no user turn".into());
    }
    let last_user = if messages.len() % 2 == 1 {
        messages.len() - 1
    } else {
        messages.len() - 2
    };
    let history = messages[..last_user]
        .chunks(2)
        .map(|pair| (pair[0].content.as_str(), pair[1].content.as_str()))
        .collect();
    let response = messages.get(last_user + 1).map(|m| m.content.as_str());
    Ok((history, messages[last_user].content.as_str(), response))
}

pub(super) fn encode(
    schema: Schema,
    record: &Record,
    options: &EncodeOptions,
    metadata: &mut Map<String, Value>,
    extra: &mut Map<String, Value>,
    out: &mut Vec<(String, Out)>,
) -> Result<(), String> {
    let layout = layout(schema);
    let (history, prompt, response) = split_conversation(record)?;
    let mut instruction = prompt;
    let mut input = None;
    if let Some(text) = &record.input {
        if let Some(before) = split_input(prompt, text) {
            if layout.input.is_some() {
                instruction = before;
                input = Some(text.as_str());
            } else {
                extra.insert("input".into(), Value::String(text.clone()));
            }
        }
    }
    out.push((layout.prompt.into(), Out::Str(instruction.into())));
    if let Some(key) = layout.input {
        out.push((key.into(), Out::Str(input.unwrap_or_default().into())));
    }
    match (schema, layout.response) {
        (Schema::AlpacaEval, Some(key)) => {
            let output = response.ok_or("it has no reply to its last user turn")?;
            out.push((key.into(), Out::Str(output.into())));
            let generator = match (&options.generator, remove_keeping_order(metadata, "generator")) {
                (Some(name), _) => name.clone(),
                (None, Some(Value::String(name))) => name,
                (None, Some(other)) => {
                    return Err(format!(
                        "its `generator` is {}, not a string\nhint: pass --generator NAME",
                        type_name(&other)
                    ))
                }
                (None, None) => {
                    return Err(
                        "it has no `generator` (the model that wrote the output)\nhint: pass --generator NAME"
                            .into(),
                    )
                }
            };
            out.push(("generator".into(), Out::Str(generator)));
            if let Some(dataset) = remove_keeping_order(metadata, "dataset") {
                out.push(("dataset".into(), Out::Json(dataset)));
            }
        }
        (_, Some(key)) => out.push((key.into(), Out::Str(response.unwrap_or_default().into()))),
        (_, None) => {}
    }
    if let Some(system) = &record.system {
        match layout.system.first() {
            Some(key) => out.push(((*key).into(), Out::Str(system.clone()))),
            None => {
                extra.insert("system".into(), Value::String(system.clone()));
            }
        }
    }
    if !history.is_empty() {
        if matches!(schema, Schema::Prompts | Schema::SeqEval) {
            return Err(format!(
                "it has {} user turns; a {schema} record holds one",
                history.len() + 1
            ));
        }
        let pairs = history
            .into_iter()
            .map(|(q, a)| Out::List(vec![Out::Str(q.into()), Out::Str(a.into())]))
            .collect();
        out.push(("history".into(), Out::List(pairs)));
    }
    Ok(())
}
