//! [`Record`]: the one in-memory form every dataset format is read into and written from.

use seqit_core::{ChatMessage, Role};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How an Alpaca-style `input` is joined to its instruction in the user turn.
pub const INPUT_SEPARATOR: &str = "\n\n";

/// Metadata key under which extra per-turn fields of ShareGPT / `messages` data are kept
/// (an object from turn index, or `"system"`, to that turn's extra fields), so that
/// conversions between formats that hold them restore them on their turns.
pub const TURN_FIELDS_KEY: &str = "turn_fields";

/// One training or evaluation example: a conversation with an optional system prompt,
/// plus everything else the source file said about it.
///
/// `messages` is the complete conversation without the system prompt: every user turn
/// holds the full text the model is shown. For Alpaca-style data with an `input`, the
/// last user turn is `instruction + INPUT_SEPARATOR + input` and `input` keeps the
/// input apart so that [`Record::instruction`] and writers of Alpaca-style formats can
/// split it again.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Record {
    /// The source's id (a string or a number), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// The system prompt, if the source had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The conversation's user and assistant turns, in order, without the system prompt.
    pub messages: Vec<ChatMessage>,
    /// Alpaca's `input`: the trailing part of the last user turn (never empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Every other field of the source record (provenance, category, generator, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

impl Record {
    /// A single exchange in Alpaca's terms: instruction, optional input, optional
    /// response.
    pub fn exchange(instruction: &str, input: Option<&str>, response: Option<&str>) -> Self {
        let input = input.filter(|i| !i.is_empty());
        let prompt = match input {
            Some(input) => format!("{instruction}{INPUT_SEPARATOR}{input}"),
            None => instruction.to_string(),
        };
        let mut messages = vec![ChatMessage::user(prompt)];
        if let Some(response) = response {
            messages.push(ChatMessage::assistant(response));
        }
        Self {
            messages,
            input: input.map(str::to_string),
            ..Self::default()
        }
    }

    /// A lone prompt (one user turn).
    pub fn prompt(text: &str) -> Self {
        Self::exchange(text, None, None)
    }

    /// Index of the last user turn.
    fn last_user_index(&self) -> Option<usize> {
        self.messages.iter().rposition(|m| m.role == Role::User)
    }

    /// The full text of the last user turn (instruction and input together).
    pub fn prompt_text(&self) -> Option<&str> {
        self.last_user_index()
            .map(|i| self.messages[i].content.as_str())
    }

    /// The instruction of the last user turn, without the Alpaca `input`.
    pub fn instruction(&self) -> Option<&str> {
        let prompt = self.prompt_text()?;
        Some(match &self.input {
            Some(input) => split_input(prompt, input).unwrap_or(prompt),
            None => prompt,
        })
    }

    /// The reply to the last user turn, if the conversation has one.
    pub fn response(&self) -> Option<&str> {
        let last_user = self.last_user_index()?;
        self.messages[last_user + 1..]
            .iter()
            .find(|m| m.role == Role::Assistant)
            .map(|m| m.content.as_str())
    }

    /// The id as text, for reports (`None` when the record has none).
    pub fn id_text(&self) -> Option<String> {
        self.id.as_ref().map(|id| match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// The conversation with the system prompt (if any) as its first message, the way a
    /// chat template takes it.
    pub fn conversation(&self) -> Vec<ChatMessage> {
        let mut all = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = &self.system {
            all.push(ChatMessage::system(system.clone()));
        }
        all.extend(self.messages.iter().cloned());
        all
    }

    /// [`Record::conversation`] with the Alpaca `input` joined to its instruction by
    /// `separator` instead of [`INPUT_SEPARATOR`] (the SIT paper's Tulu training joins
    /// them with one space). Records without a separate input are unchanged.
    pub fn conversation_joined(&self, separator: &str) -> Vec<ChatMessage> {
        let mut all = self.conversation();
        // Only when the last user turn still ends with the input (an edited record may
        // not): otherwise the input would be written twice.
        let Some((instruction, input)) = self.input.as_deref().and_then(|input| {
            split_input(self.prompt_text()?, input).map(|instruction| (instruction, input))
        }) else {
            return all;
        };
        let joined = format!("{instruction}{separator}{input}");
        if let Some(turn) = all.iter_mut().rev().find(|m| m.role == Role::User) {
            turn.content = joined;
        }
        all
    }

    /// Number of user turns.
    pub fn user_turns(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| m.role == Role::User)
            .count()
    }
}

/// The instruction part of `prompt` when it ends with `INPUT_SEPARATOR + input`.
pub(crate) fn split_input<'a>(prompt: &'a str, input: &str) -> Option<&'a str> {
    prompt.strip_suffix(input)?.strip_suffix(INPUT_SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_keeps_input_apart() {
        let r = Record::exchange("Sum these.", Some("1 2"), Some("3"));
        assert_eq!(r.prompt_text(), Some("Sum these.\n\n1 2"));
        assert_eq!(r.instruction(), Some("Sum these."));
        assert_eq!(r.response(), Some("3"));
        let r = Record::exchange("Hi", Some(""), None);
        assert_eq!(r.input, None);
        assert_eq!(r.response(), None);
    }

    #[test]
    fn conversation_joined_rejoins_only_a_separate_input() {
        let mut r = Record::exchange("Sum these.", Some("1 2"), Some("3"));
        r.system = Some("Be exact.".into());
        let joined = r.conversation_joined(" ");
        assert_eq!(joined[0], ChatMessage::system("Be exact."));
        assert_eq!(joined[1], ChatMessage::user("Sum these. 1 2"));
        assert_eq!(joined[2], ChatMessage::assistant("3"));
        // An edited turn that no longer ends with the input stays as it is.
        r.messages[0].content = "Add up: 1 2 (quickly)".into();
        assert_eq!(
            r.conversation_joined(" ")[1].content,
            "Add up: 1 2 (quickly)"
        );
        let plain = Record::exchange("Say hi.", None, Some("Hi"));
        assert_eq!(plain.conversation_joined(" "), plain.conversation());
    }
}
