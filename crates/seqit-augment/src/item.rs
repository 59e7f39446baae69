//! What augmentation reads from a dataset record: the first exchange of the
//! conversation, split into system prompt, instruction, input and response.

use anyhow::{bail, Result};
use seqit_core::Role;
use seqit_data::{Record, INPUT_SEPARATOR};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One item to augment (the first user turn of a record and its reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceItem {
    /// The record's id as text, or its 0-based position when it has none.
    pub id: String,
    /// The record's system prompt, sent along when the teacher is asked to answer.
    pub system: Option<String>,
    /// The first user turn; the Alpaca `instruction` when a single-turn record has an
    /// `input`.
    pub instruction: String,
    /// The Alpaca `input` of a single-turn record.
    pub input: Option<String>,
    /// The dataset's own reply, if any (only used for length statistics).
    pub response: Option<String>,
}

impl SourceItem {
    /// Reads the first exchange of `record` (record number `index`, 0-based).
    pub fn from_record(index: usize, record: &Record) -> Result<Self> {
        let id = record.id_text().unwrap_or_else(|| index.to_string());
        let Some(first_user) = record.messages.iter().position(|m| m.role == Role::User) else {
            bail!("record {index} (id `{id}`) has no user turn to augment");
        };
        let text = &record.messages[first_user].content;
        // The Alpaca `input` belongs to the last user turn; with a single user turn that
        // is the first one.
        let (instruction, input) = match (&record.input, record.user_turns()) {
            (Some(input), 1) => match record.instruction() {
                Some(instruction) if instruction.len() < text.len() => {
                    (instruction.to_string(), Some(input.clone()))
                }
                _ => (text.clone(), None),
            },
            _ => (text.clone(), None),
        };
        if instruction.trim().is_empty() {
            bail!("record {index} (id `{id}`): field `instruction` is empty");
        }
        let response = record.messages[first_user + 1..]
            .iter()
            .take_while(|m| m.role != Role::User)
            .find(|m| m.role == Role::Assistant)
            .map(|m| m.content.clone());
        Ok(Self {
            id,
            system: record.system.clone(),
            instruction,
            input,
            response,
        })
    }
}

/// The user turn the teacher answers: the instruction, then the input if any.
pub fn user_turn(instruction: &str, input: Option<&str>) -> String {
    match input.filter(|i| !i.is_empty()) {
        Some(input) => format!("{instruction}{INPUT_SEPARATOR}{input}"),
        None => instruction.to_string(),
    }
}

/// The id a written record carries: the source's own id, else its position.
pub fn output_id(record: &Record, index: usize) -> Value {
    record.id.clone().unwrap_or_else(|| Value::from(index))
}

#[cfg(test)]
mod tests {
    use seqit_core::ChatMessage;

    use super::*;

    #[test]
    fn first_exchange_of_each_kind() {
        let alpaca = Record::exchange("Sum.", Some("1 2"), Some("3"));
        let item = SourceItem::from_record(4, &alpaca).unwrap();
        assert_eq!(
            (
                item.id.as_str(),
                item.instruction.as_str(),
                item.input.as_deref(),
                item.response.as_deref()
            ),
            ("4", "Sum.", Some("1 2"), Some("3"))
        );
        let chat = Record {
            id: Some(Value::from("c1")),
            system: Some("Be brief.".into()),
            messages: vec![
                ChatMessage::user("Hi there"),
                ChatMessage::assistant("Hello"),
                ChatMessage::user("Again"),
            ],
            ..Record::default()
        };
        let item = SourceItem::from_record(0, &chat).unwrap();
        assert_eq!(item.id, "c1");
        assert_eq!(item.instruction, "Hi there");
        assert_eq!(item.response.as_deref(), Some("Hello"));
        assert_eq!(item.system.as_deref(), Some("Be brief."));
        let empty = Record {
            messages: vec![ChatMessage::assistant("x")],
            ..Record::default()
        };
        let error = SourceItem::from_record(7, &empty).unwrap_err().to_string();
        assert!(
            error.contains("record 7") && error.contains("no user turn"),
            "{error}"
        );
        assert_eq!(user_turn("Do it.", Some("data")), "Do it.\n\ndata");
    }

    #[test]
    fn flan_and_sharegpt_files() {
        let dir = tempfile::tempdir().unwrap();
        let flan = dir.path().join("flan.jsonl");
        std::fs::write(
            &flan,
            "{\"id\": \"f1\", \"system_prompt\": \"Think step by step.\", \"question\": \"Is 7 prime? Options: yes, no\", \"response\": \"yes\"}\n",
        )
        .unwrap();
        let (_, records) = seqit_data::read_all(&flan, &Default::default()).unwrap();
        let item = SourceItem::from_record(0, &records[0]).unwrap();
        assert_eq!(item.id, "f1");
        assert_eq!(item.system.as_deref(), Some("Think step by step."));
        assert_eq!(item.instruction, "Is 7 prime? Options: yes, no");
        assert_eq!(item.response.as_deref(), Some("yes"));
        let share = dir.path().join("share.jsonl");
        std::fs::write(
            &share,
            "{\"conversations\": [{\"from\": \"human\", \"value\": \"First question\"}, {\"from\": \"gpt\", \"value\": \"First answer\"}, {\"from\": \"human\", \"value\": \"Follow-up\"}]}\n",
        )
        .unwrap();
        let (_, records) = seqit_data::read_all(&share, &Default::default()).unwrap();
        let item = SourceItem::from_record(0, &records[0]).unwrap();
        assert_eq!(
            (
                item.id.as_str(),
                item.instruction.as_str(),
                item.response.as_deref()
            ),
            ("0", "First question", Some("First answer"))
        );
    }
}
