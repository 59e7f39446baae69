//! Helpers for messages about JSON values.

use serde_json::Value;

/// What kind of JSON value `value` is, for messages: `a string`, `a number`, `null`, …
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn kinds_read_as_phrases() {
        assert_eq!(super::kind(&json!(null)), "null");
        assert_eq!(super::kind(&json!(true)), "a boolean");
        assert_eq!(super::kind(&json!(1.5)), "a number");
        assert_eq!(super::kind(&json!("x")), "a string");
        assert_eq!(super::kind(&json!([1])), "a list");
        assert_eq!(super::kind(&json!({})), "an object");
    }
}
