//! Decoding JSON records of each [`Schema`] into [`Record`]s and encoding them back.
//!
//! Fields a schema does not know become the record's metadata and are written back as
//! top-level fields. What a target schema cannot hold in its own fields (an Alpaca
//! `input` in a chat format, a system prompt in alpaca_eval output, metadata whose key
//! is one of the schema's own field names) goes into one extra object, `"seqit"`,
//! which the reader folds back in, so conversions round-trip.

mod exchange;
mod fields;
pub(crate) mod out;
mod turns;

use serde_json::{Map, Value};

use self::fields::remove_keeping_order;
use crate::error::{type_name, FieldProblem};
use crate::format::Schema;
use crate::record::{split_input, Record};
use fields::Fields;
use out::Out;

/// Name of the extra object holding what a schema has no field for.
pub const EXTRA_KEY: &str = "seqit";

/// Settings for encoding records.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    /// The `generator` written into alpaca_eval output, overriding the records' own.
    pub generator: Option<String>,
}

/// Decodes one JSON record, listing every problem with it.
pub(crate) fn decode(schema: Schema, value: Value) -> Result<Record, Vec<FieldProblem>> {
    let map = match value {
        Value::Object(map) => map,
        other => {
            return Err(vec![FieldProblem::record(format!(
                "expected a JSON object, found {}",
                type_name(&other)
            ))])
        }
    };
    let mut fields = Fields::new(map);
    let id = fields.id();
    let extra = take_extra(&mut fields);
    let mut record = match schema {
        Schema::ShareGpt | Schema::Messages => turns::decode(schema, &mut fields),
        _ => exchange::decode(schema, &mut fields),
    };
    let (rest, problems) = fields.into_rest();
    if !problems.is_empty() {
        return Err(problems);
    }
    record.id = id;
    let turn_fields = remove_keeping_order(&mut record.metadata, crate::record::TURN_FIELDS_KEY);
    record.metadata.extend(rest);
    let Extra {
        input,
        system,
        metadata,
        other,
    } = extra;
    record.metadata.extend(metadata);
    if !other.is_empty() {
        record
            .metadata
            .insert(EXTRA_KEY.to_string(), Value::Object(other));
    }
    if let Some(turn_fields) = turn_fields {
        if record
            .metadata
            .insert(crate::record::TURN_FIELDS_KEY.to_string(), turn_fields)
            .is_some()
        {
            return Err(vec![FieldProblem::new(
                crate::record::TURN_FIELDS_KEY,
                "this name is reserved for the extra fields of turns, which this record also has",
            )]);
        }
    }
    if record.system.is_none() {
        record.system = system;
    }
    if let (None, Some(input)) = (&record.input, input) {
        if record
            .prompt_text()
            .is_some_and(|p| split_input(p, &input).is_some())
        {
            record.input = Some(input);
        }
    }
    Ok(record)
}

/// What the `"seqit"` object of a record carried.
#[derive(Default)]
struct Extra {
    input: Option<String>,
    system: Option<String>,
    metadata: Map<String, Value>,
    other: Map<String, Value>,
}

fn take_extra(fields: &mut Fields) -> Extra {
    let mut extra = Extra::default();
    let Some(value) = fields.take(EXTRA_KEY) else {
        return extra;
    };
    // Parquet stores the object as JSON text.
    let value = match value {
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(value) => value,
            Err(e) => {
                fields.problem(
                    EXTRA_KEY,
                    format!("expected a JSON object, found text that is not JSON ({e})"),
                );
                return extra;
            }
        },
        other => other,
    };
    let Value::Object(mut map) = value else {
        fields.problem(
            EXTRA_KEY,
            format!("expected an object, found {}", type_name(&value)),
        );
        return extra;
    };
    for (key, slot) in [("input", &mut extra.input), ("system", &mut extra.system)] {
        match remove_keeping_order(&mut map, key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => *slot = Some(s),
            Some(other) => fields.problem(
                format!("{EXTRA_KEY}.{key}"),
                format!("expected a string, found {}", type_name(&other)),
            ),
        }
    }
    match remove_keeping_order(&mut map, "metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => extra.metadata = m,
        Some(other) => fields.problem(
            format!("{EXTRA_KEY}.metadata"),
            format!("expected an object, found {}", type_name(&other)),
        ),
    }
    extra.other = map;
    extra
}

/// Encodes a record as `schema`, fields in the schema's usual order, or says why the
/// schema cannot hold it.
pub(crate) fn encode(
    schema: Schema,
    record: &Record,
    options: &EncodeOptions,
) -> Result<Vec<(String, Out)>, String> {
    let mut metadata = record.metadata.clone();
    let mut extra = Map::new();
    let mut out: Vec<(String, Out)> = Vec::new();
    if let Some(id) = &record.id {
        out.push(("id".into(), Out::Json(id.clone())));
    }
    let reserved: &[&str] = match schema {
        Schema::ShareGpt | Schema::Messages => {
            turns::encode(schema, record, &mut metadata, &mut out)?;
            if let (Some(input), Some(prompt)) = (&record.input, record.prompt_text()) {
                if split_input(prompt, input).is_some() {
                    extra.insert("input".into(), Value::String(input.clone()));
                }
            }
            turns::reserved(schema)
        }
        _ => {
            exchange::encode(schema, record, options, &mut metadata, &mut extra, &mut out)?;
            exchange::reserved(schema)
        }
    };
    let mut colliding = Map::new();
    for (key, value) in metadata {
        if key == "id" || key == EXTRA_KEY || reserved.contains(&key.as_str()) {
            colliding.insert(key, value);
        } else {
            out.push((key, Out::Json(value)));
        }
    }
    if !colliding.is_empty() {
        extra.insert("metadata".into(), Value::Object(colliding));
    }
    if !extra.is_empty() {
        out.push((EXTRA_KEY.into(), Out::Json(Value::Object(extra))));
    }
    Ok(out)
}

/// The JSON text of an encoded record (one line).
pub(crate) fn to_json_line(fields: Vec<(String, Out)>) -> String {
    serde_json::to_string(&Out::Obj(fields)).expect("JSON values always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_colliding_with_schema_fields_goes_to_the_extra_object() {
        let mut record = Record::exchange("Hi", None, Some("Hello"));
        record.metadata.insert("instruction".into(), json!("old"));
        record.metadata.insert("category".into(), json!("chat"));
        let encoded = encode(Schema::Alpaca, &record, &EncodeOptions::default()).unwrap();
        let line = to_json_line(encoded);
        assert_eq!(
            line,
            r#"{"instruction":"Hi","input":"","output":"Hello","category":"chat","seqit":{"metadata":{"instruction":"old"}}}"#
        );
        let back = decode(Schema::Alpaca, serde_json::from_str(&line).unwrap()).unwrap();
        assert_eq!(back, record);
    }
}
