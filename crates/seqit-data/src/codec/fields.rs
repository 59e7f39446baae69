//! Typed access to the fields of one JSON record, collecting every problem instead of
//! stopping at the first.

use serde_json::{Map, Value};

use crate::error::{type_name, FieldProblem};

/// The fields of a record not yet consumed, and the problems found so far.
pub(crate) struct Fields {
    map: Map<String, Value>,
    pub problems: Vec<FieldProblem>,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Self {
            map,
            problems: Vec::new(),
        }
    }

    pub fn problem(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(FieldProblem::new(field, message));
    }

    /// Removes a field; `null` counts as absent.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        match remove_keeping_order(&mut self.map, key) {
            Some(Value::Null) | None => None,
            Some(value) => Some(value),
        }
    }

    /// A required string field.
    pub fn required_str(&mut self, key: &str) -> Option<String> {
        match remove_keeping_order(&mut self.map, key) {
            None => {
                self.problem(key, "missing; expected a string");
                None
            }
            Some(value) => self.expect_str(key, value),
        }
    }

    /// An optional string field (`null` counts as absent).
    pub fn optional_str(&mut self, key: &str) -> Option<String> {
        let value = self.take(key)?;
        self.expect_str(key, value)
    }

    /// Checks that a field is a string without consuming it (it stays for the metadata).
    pub fn check_str(&mut self, key: &str, required: bool) {
        let problem = match self.map.get(key) {
            None if required => Some("missing; expected a string".to_string()),
            None | Some(Value::String(_)) => None,
            Some(Value::Null) if !required => None,
            Some(other) => Some(format!("expected a string, found {}", type_name(other))),
        };
        if let Some(message) = problem {
            self.problem(key, message);
        }
    }

    pub fn expect_str(&mut self, field: &str, value: Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.problem(
                    field,
                    format!("expected a string, found {}", type_name(&other)),
                );
                None
            }
        }
    }

    /// The record's `id`: a string or a number.
    pub fn id(&mut self) -> Option<Value> {
        let value = self.take("id")?;
        match value {
            Value::String(_) | Value::Number(_) => Some(value),
            other => {
                self.problem(
                    "id",
                    format!("expected a string or a number, found {}", type_name(&other)),
                );
                None
            }
        }
    }

    /// What is left: the record's metadata.
    pub fn into_rest(self) -> (Map<String, Value>, Vec<FieldProblem>) {
        (self.map, self.problems)
    }
}

/// Removes `key`, leaving the other fields in their order: where serde_json keeps
/// insertion order (its `preserve_order` feature, which a dependency may turn on), its
/// `remove` moves the last field into the hole, and metadata would come back reordered.
pub(crate) fn remove_keeping_order(map: &mut Map<String, Value>, key: &str) -> Option<Value> {
    if !map.contains_key(key) {
        return None;
    }
    let mut removed = None;
    for (k, v) in std::mem::take(map) {
        if k == key {
            removed = Some(v);
        } else {
            map.insert(k, v);
        }
    }
    removed
}
