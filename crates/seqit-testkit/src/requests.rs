//! Generation requests as the engine and backend tests build them.

use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::GenerationRequest;

/// A one-turn chat prompt: `text` from the user.
pub fn user_prompt(text: &str) -> Prompt {
    Prompt::Chat(vec![ChatMessage::user(text)])
}

/// Greedy decoding of exactly `max_tokens` tokens (the end of sequence is ignored).
pub fn greedy_exactly(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(max_tokens)
    }
}

/// A raw-text prompt continued greedily for exactly `max_tokens` tokens.
pub fn raw_request(text: &str, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: Prompt::Text(text.to_string()),
        params: greedy_exactly(max_tokens),
    }
}
