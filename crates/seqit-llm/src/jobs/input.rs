//! Input records and the requests made of them.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};
use seqit_core::{ChatMessage, Prompt, SamplingParams};
use serde_json::{json, Value};

use crate::LlmRequest;

/// How every prompt of a job is asked. File generation, dry runs, Batch API exports and
/// single prompts all build their requests here, so that they send (and cache) exactly
/// the same requests.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSettings {
    /// System message placed before every prompt (a `messages` record that starts with
    /// its own system message keeps it).
    pub system: Option<String>,
    /// Send `prompt` texts as raw text (to completions) instead of a user message.
    pub raw: bool,
    /// Sampling parameters of every request.
    pub params: SamplingParams,
    /// Samples per prompt (at least 1).
    pub samples: u32,
    /// Version of the prompt template, part of every cache key.
    pub prompt_version: String,
}

/// One record of an input file.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRecord {
    /// The record's `id`, or its position among the records when it has none.
    pub id: Value,
    /// What is asked.
    pub prompt: Prompt,
}

impl RequestSettings {
    /// The prompt of a `prompt` text: raw text, or a user message after the system
    /// message.
    pub fn prompt(&self, text: &str) -> Prompt {
        if self.raw {
            return Prompt::Text(text.to_string());
        }
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(ChatMessage::system(system));
        }
        messages.push(ChatMessage::user(text));
        Prompt::Chat(messages)
    }

    /// The request for `prompt`: every sample of it.
    pub fn request(&self, prompt: Prompt) -> LlmRequest {
        LlmRequest::new(prompt, self.params.clone())
            .with_samples(self.samples)
            .with_prompt_version(self.prompt_version.clone())
    }

    /// Reads a JSONL file of records with `prompt` (text) or `messages` (chat) and an
    /// optional unique `id`. Errors name the file, the line and the field.
    pub fn read_input(&self, path: &Path) -> Result<Vec<InputRecord>> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open `{}`", path.display()))?;
        let mut records = Vec::new();
        let mut seen = HashSet::new();
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let at = || format!("{}:{}", path.display(), index + 1);
            let line = line.with_context(|| format!("{}: not valid UTF-8 text", at()))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(&line).with_context(|| format!("{}: invalid JSON", at()))?;
            let id = value.get("id").cloned().unwrap_or(json!(records.len()));
            if !seen.insert(id.to_string()) {
                bail!("{}: field `id`: {id} appears twice", at());
            }
            let prompt = match (value.get("prompt"), value.get("messages")) {
                (Some(Value::String(text)), None) => self.prompt(text),
                (None, Some(messages)) => {
                    let mut messages: Vec<ChatMessage> = serde_json::from_value(messages.clone())
                        .with_context(|| {
                            format!(
                                "{}: field `messages`: expected a list of {{\"role\", \"content\"}} objects",
                                at()
                            )
                        })?;
                    if let Some(system) = &self.system {
                        if messages.first().map(|m| m.role.as_str()) != Some("system") {
                            messages.insert(0, ChatMessage::system(system));
                        }
                    }
                    Prompt::Chat(messages)
                }
                (Some(_), None) => bail!("{}: field `prompt`: expected a string", at()),
                (Some(_), Some(_)) => {
                    bail!("{}: give either `prompt` or `messages`, not both", at())
                }
                (None, None) => bail!("{}: missing field `prompt` or `messages`", at()),
            };
            records.push(InputRecord { id, prompt });
        }
        Ok(records)
    }
}
