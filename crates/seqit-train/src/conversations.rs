//! Training conversations read from any dataset format.

use std::path::Path;

use anyhow::{bail, Result};
use seqit_core::{ChatMessage, Role};
use seqit_data::{read_all, ReadOptions};

use crate::ChatFormat;

/// Every record of `path` as a conversation (system prompt first) in the form `format`
/// trains on: an Alpaca `input` joined to its instruction by
/// [`ChatFormat::input_separator`]. Every record must have a response.
pub fn read_conversations(path: &Path, format: &ChatFormat) -> Result<Vec<Vec<ChatMessage>>> {
    let (_, records) = read_all(path, &ReadOptions::default())?;
    let mut conversations = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        if !record.messages.iter().any(|m| m.role == Role::Assistant) {
            bail!("{}: record {i} has no response to train on", path.display());
        }
        conversations.push(record.conversation_joined(format.input_separator()));
    }
    Ok(conversations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_decides_how_the_input_is_joined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alpaca.json");
        std::fs::write(
            &path,
            r#"[{"instruction": "Sum these.", "input": "1 2", "output": "3"},
                {"instruction": "Say hi.", "input": "", "output": "Hi"}]"#,
        )
        .unwrap();
        let tulu = read_conversations(&path, &ChatFormat::Tulu).unwrap();
        assert_eq!(tulu[0][0], ChatMessage::user("Sum these. 1 2"));
        assert_eq!(tulu[1][0], ChatMessage::user("Say hi."));
        let chatml = read_conversations(&path, &ChatFormat::ChatMl).unwrap();
        assert_eq!(chatml[0][0], ChatMessage::user("Sum these.\n\n1 2"));

        let prompts = dir.path().join("prompts.jsonl");
        std::fs::write(
            &prompts,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"No answer\"}]}\n",
        )
        .unwrap();
        let err = read_conversations(&prompts, &ChatFormat::Tulu).unwrap_err();
        assert!(
            err.to_string().contains("record 0 has no response"),
            "{err}"
        );
    }
}
