use serde::{Deserialize, Serialize};

use crate::{ChatMessage, TokenLogprob};

/// What the model is asked to continue: a conversation (rendered with the model's chat
/// template) or raw text (used as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, tokenized as is.
    Text(String),
}

/// Why generation of a sequence ended, with OpenAI's wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string was produced.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The caller stopped the sequence before it ended (its client went away); the
    /// text is what was generated until then.
    Cancelled,
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The generated text, up to (not including) the first stop string; end-of-sequence
    /// tokens are not rendered.
    pub text: String,
    /// The generated token ids (the local engine keeps an ending end-of-sequence token
    /// here, though not in `text`).
    pub token_ids: Vec<u32>,
    /// Number of tokens in the prompt (after the chat template).
    pub prompt_tokens: usize,
    /// Why generation ended: stop, length or cancellation.
    pub finish_reason: FinishReason,
    /// Per generated token, when the request asked for log-probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// For a constrained request: whether the text is complete under the constraint
    /// (`false` when `max_tokens` or the context ran out first, or the constraint
    /// could not be followed); `None` without a constraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint_met: Option<bool>,
}

impl Completion {
    /// Number of generated tokens (`token_ids.len()`).
    pub fn completion_tokens(&self) -> usize {
        self.token_ids.len()
    }
}
