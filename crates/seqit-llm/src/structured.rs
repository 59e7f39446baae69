//! Checking replies against structured-output constraints, for endpoints that do not
//! enforce them (or say they do and do not): JSON with a JSON Schema validator, the
//! text constraints with llguidance over bytes.

use std::sync::OnceLock;

use seqit_core::Constraint;
use seqit_engine::TextChecker;

/// `Ok` when `text` satisfies `constraint`; otherwise what is wrong, for logs.
pub fn check_reply(constraint: &Constraint, text: &str) -> Result<(), String> {
    match constraint.json_schema() {
        Some(schema) => check_json(&schema, text),
        None => {
            static CHECKER: OnceLock<Result<TextChecker, String>> = OnceLock::new();
            let checker = CHECKER
                .get_or_init(|| TextChecker::new().map_err(|e| format!("{e:#}")))
                .as_ref()?;
            checker.check(constraint, text)
        }
    }
}

fn check_json(schema: &serde_json::Value, text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let validator =
        jsonschema::validator_for(schema).map_err(|e| format!("invalid JSON Schema: {e}"))?;
    let first_error = validator
        .iter_errors(&value)
        .next()
        .map(|error| format!("at `{}`: {error}", error.instance_path()));
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_replies_are_validated_with_any_layout() {
        let c = Constraint::JsonSchema {
            schema: json!({"type": "object", "properties": {"option": {"enum": ["A", "B"]}},
                           "required": ["option"]}),
        };
        assert!(check_reply(&c, "{\"option\":\"A\"}").is_ok());
        assert!(check_reply(&c, "\n{ \"option\" : \"B\" }\n").is_ok());
        assert!(check_reply(&c, "{\"option\": \"C\"}")
            .unwrap_err()
            .contains("/option"));
        assert!(check_reply(&c, "{}").is_err());
        assert!(check_reply(&c, "Option: A")
            .unwrap_err()
            .contains("not JSON"));
        assert!(check_reply(&Constraint::JsonObject, "[1]").is_err());
    }

    #[test]
    fn text_constraints_are_checked_byte_by_byte() {
        let regex = Constraint::Regex {
            pattern: r"Option: [ABCD]".into(),
        };
        assert!(check_reply(&regex, "Option: C").is_ok());
        assert!(check_reply(&regex, "Option: E").is_err());
        assert!(check_reply(&regex, "Option: CD").is_err());
        assert!(check_reply(&regex, "Option:").is_err());
        let choice = Constraint::Choice {
            options: vec!["yes".into(), "no".into()],
        };
        assert!(check_reply(&choice, "no").is_ok());
        assert!(check_reply(&choice, "maybe").is_err());
        let grammar = Constraint::Grammar {
            lark: "start: \"é\" NUMBER\nNUMBER: /[0-9]+/".into(),
        };
        assert!(check_reply(&grammar, "é42").is_ok());
        assert!(check_reply(&grammar, "é4x").is_err());
    }
}

/// An on/off flag value (`--structured on|off`): whether replies are constrained to
/// the format their parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// Constrained.
    On,
    /// Free text.
    Off,
}

impl Switch {
    /// Whether it is on.
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}
