//! Schemas holding whole conversations: ShareGPT (`conversations` of `{from, value}`)
//! and OpenAI-style `messages` (`{role, content}`). A leading system turn becomes the
//! record's system prompt; extra fields of a turn are kept under
//! [`TURN_FIELDS_KEY`](crate::record::TURN_FIELDS_KEY) and restored on that turn.

use seqit_core::{ChatMessage, Role};
use serde_json::{Map, Value};

use super::fields::{remove_keeping_order, Fields};
use super::out::Out;
use crate::error::type_name;
use crate::format::Schema;
use crate::record::{Record, TURN_FIELDS_KEY};

/// Tool-use roles of either convention (OpenAI, LLaMA-Factory's ShareGPT, Llama 3),
/// accepted by both schemas and kept verbatim so that they convert without loss.
const OTHER_ROLES: &[&str] = &[
    "tool",
    "function",
    "function_call",
    "observation",
    "developer",
    "ipython",
];

struct Layout {
    list: &'static str,
    role: &'static str,
    content: &'static str,
    /// Role names accepted besides the standard ones, kept verbatim.
    other_roles: &'static [&'static str],
    expected: &'static str,
}

fn layout(schema: Schema) -> Layout {
    match schema {
        Schema::ShareGpt => Layout {
            list: "conversations",
            role: "from",
            content: "value",
            other_roles: OTHER_ROLES,
            expected: "one of `human`, `gpt`, `system` (or `user`, `assistant`, `function_call`, `observation`, `tool`, `function`, `developer`, `ipython`)",
        },
        _ => Layout {
            list: "messages",
            role: "role",
            content: "content",
            other_roles: OTHER_ROLES,
            expected: "one of `system`, `user`, `assistant` (or `tool`, `function`, `developer`, `function_call`, `observation`, `ipython`)",
        },
    }
}

pub(super) fn reserved(schema: Schema) -> &'static [&'static str] {
    match schema {
        Schema::ShareGpt => &["conversations", "system", TURN_FIELDS_KEY],
        _ => &["messages", TURN_FIELDS_KEY],
    }
}

fn parse_role(schema: Schema, name: &str, layout: &Layout) -> Option<Role> {
    let role = match (schema, name) {
        (_, "system") => Role::System,
        (_, "user") | (Schema::ShareGpt, "human") => Role::User,
        (_, "assistant") | (Schema::ShareGpt, "gpt") => Role::Assistant,
        (_, other) if layout.other_roles.contains(&other) => Role::Other(other.to_string()),
        _ => return None,
    };
    Some(role)
}

fn role_name(schema: Schema, role: &Role) -> &str {
    match (schema, role) {
        (Schema::ShareGpt, Role::User) => "human",
        (Schema::ShareGpt, Role::Assistant) => "gpt",
        (_, role) => role.as_str(),
    }
}

pub(super) fn decode(schema: Schema, fields: &mut Fields) -> Record {
    let layout = layout(schema);
    let mut record = Record::default();
    let top_system = if schema == Schema::ShareGpt {
        fields.optional_str("system")
    } else {
        None
    };
    let list = match fields.take(layout.list) {
        Some(list) => list,
        None => {
            fields.problem(
                layout.list,
                format!(
                    "missing; expected a list of {{{}, {}}} turns",
                    layout.role, layout.content
                ),
            );
            return record;
        }
    };
    let Value::Array(items) = list else {
        fields.problem(
            layout.list,
            format!("expected a list of turns, found {}", type_name(&list)),
        );
        return record;
    };
    let mut turns: Vec<(ChatMessage, Map<String, Value>)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("{}[{i}]", layout.list);
        let Value::Object(mut turn) = item else {
            fields.problem(
                &path,
                format!(
                    "expected an object with `{}` and `{}`, found {}",
                    layout.role,
                    layout.content,
                    type_name(&item)
                ),
            );
            continue;
        };
        let role = match remove_keeping_order(&mut turn, layout.role) {
            None => {
                fields.problem(
                    format!("{path}.{}", layout.role),
                    "missing; expected a string",
                );
                None
            }
            Some(Value::String(name)) => {
                let role = parse_role(schema, &name, &layout);
                if role.is_none() {
                    fields.problem(
                        format!("{path}.{}", layout.role),
                        format!("expected {}, found `{name}`", layout.expected),
                    );
                }
                role
            }
            Some(other) => {
                fields.problem(
                    format!("{path}.{}", layout.role),
                    format!("expected a string, found {}", type_name(&other)),
                );
                None
            }
        };
        let content = match remove_keeping_order(&mut turn, layout.content) {
            None => {
                fields.problem(
                    format!("{path}.{}", layout.content),
                    "missing; expected a string",
                );
                None
            }
            Some(Value::String(text)) => Some(text),
            Some(other) => {
                let hint = if other.is_array() {
                    " (content parts are not supported)"
                } else {
                    ""
                };
                fields.problem(
                    format!("{path}.{}", layout.content),
                    format!("expected a string{hint}, found {}", type_name(&other)),
                );
                None
            }
        };
        if let (Some(role), Some(content)) = (role, content) {
            turns.push((ChatMessage::new(role, content), turn));
        }
    }
    let mut turn_fields = Map::new();
    if turns.first().is_some_and(|(m, _)| m.role == Role::System) {
        let (system, extra) = turns.remove(0);
        if top_system.is_some() {
            fields.problem(
                "system",
                "conflicts with the conversation's leading system turn; give one system prompt",
            );
        }
        record.system = Some(system.content);
        if !extra.is_empty() {
            turn_fields.insert("system".into(), Value::Object(extra));
        }
    } else {
        record.system = top_system.filter(|s| !s.is_empty());
    }
    for (i, (message, extra)) in turns.into_iter().enumerate() {
        if !extra.is_empty() {
            turn_fields.insert(i.to_string(), Value::Object(extra));
        }
        record.messages.push(message);
    }
    if !turn_fields.is_empty() {
        record
            .metadata
            .insert(TURN_FIELDS_KEY.into(), Value::Object(turn_fields));
    }
    record
}

pub(super) fn encode(
    schema: Schema,
    record: &Record,
    metadata: &mut Map<String, Value>,
    out: &mut Vec<(String, Out)>,
) -> Result<(), String> {
    let layout = layout(schema);
    let turn_fields = match remove_keeping_order(metadata, TURN_FIELDS_KEY) {
        Some(Value::Object(map)) => map,
        Some(other) => {
            // Not ours: keep it as plain metadata.
            metadata.insert(TURN_FIELDS_KEY.into(), other);
            Map::new()
        }
        None => Map::new(),
    };
    let turn = |role: &str, content: &str, key: &str| {
        let mut fields = vec![
            (layout.role.to_string(), Out::Str(role.into())),
            (layout.content.to_string(), Out::Str(content.into())),
        ];
        if let Some(Value::Object(extra)) = turn_fields.get(key) {
            for (k, v) in extra {
                if k != layout.role && k != layout.content {
                    fields.push((k.clone(), Out::Json(v.clone())));
                }
            }
        }
        Out::Obj(fields)
    };
    let mut turns = Vec::with_capacity(record.messages.len() + 1);
    if let Some(system) = &record.system {
        turns.push(turn("system", system, "system"));
    }
    for (i, message) in record.messages.iter().enumerate() {
        let name = role_name(schema, &message.role);
        if parse_role(schema, name, &layout).as_ref() != Some(&message.role) {
            return Err(format!(
                "turn {i} has role `{name}`, which this format has no name for (it takes {})",
                layout.expected
            ));
        }
        turns.push(turn(name, &message.content, &i.to_string()));
    }
    out.push((layout.list.into(), Out::List(turns)));
    Ok(())
}
