//! Asking a model: prompts become [`LlmRequest`]s sent through a seqit-llm [`Client`]
//! (the local engine or any OpenAI-compatible endpoint, behind the request cache), so
//! every answer is committed to the cache as it arrives and a resumed run re-asks
//! nothing. Benchmarks use an [`Answerer`] for the model under test and for the judge.

use seqit_core::{ChatMessage, Constraint, Prompt, SamplingParams};
use seqit_llm::{Client, LlmRequest, Sample};
use serde_json::{json, Value};

use crate::error::Result;
use crate::extract::truncate_at;

/// A model with fixed decoding settings.
#[derive(Debug, Clone)]
pub struct Answerer {
    client: Client,
    params: SamplingParams,
    raw: bool,
}

/// One text a model was asked for, and what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The prompt text as rendered (before any chat template).
    pub prompt: String,
    /// The model's reply for each sample, cut at the prompt's stop strings.
    pub outputs: Vec<String>,
    /// Whether every sample came from the request cache.
    pub cached: bool,
}

impl Answerer {
    /// Prompts are sent as one user message (chat), with `params`.
    pub fn new(client: Client, params: SamplingParams) -> Self {
        Self {
            client,
            params,
            raw: false,
        }
    }

    /// Sends prompts as plain text to the completions endpoint instead (base models).
    pub fn with_raw_prompts(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        self.client.backend().model()
    }

    /// The decoding settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The settings that decide the answers, for metrics files and journal headers.
    pub fn describe(&self) -> Value {
        json!({
            "model": self.model(),
            "prompt_format": if self.raw { "text" } else { "chat" },
            "max_tokens": self.params.max_tokens,
            "temperature": self.params.temperature,
            "top_p": self.params.top_p,
            "top_k": self.params.top_k,
            "seed": self.params.seed,
        })
    }

    /// The request for `samples` samples of `text`; `stop` adds to the decoding stops and
    /// `version` (the prompt's version and hash) is part of the cache key.
    pub fn request(&self, text: &str, stop: &[String], version: &str, samples: u32) -> LlmRequest {
        let prompt = if self.raw {
            Prompt::Text(text.to_string())
        } else {
            Prompt::Chat(vec![ChatMessage::user(text)])
        };
        let mut params = self.params.clone();
        params.stop.extend(stop.iter().cloned());
        LlmRequest::new(prompt, params)
            .with_samples(samples)
            .with_prompt_version(version)
    }

    /// Asks for `samples` samples of `text` (cached ones are not asked again).
    pub async fn ask(
        &self,
        text: &str,
        stop: &[String],
        version: &str,
        samples: u32,
    ) -> Result<Exchange> {
        let request = self.request(text, stop, version, samples);
        let response = self.client.generate(&request).await?;
        let stops: Vec<&str> = request.params.stop.iter().map(String::as_str).collect();
        Ok(Exchange {
            prompt: text.to_string(),
            cached: response.samples.iter().all(|s| s.cached),
            outputs: response
                .samples
                .iter()
                .map(|s| truncate_at(&s.text, &stops).to_string())
                .collect(),
        })
    }

    /// One reply to a conversation (multi-turn answers, judges with a system message).
    pub async fn ask_chat(&self, messages: Vec<ChatMessage>, version: &str) -> Result<String> {
        let request = LlmRequest::new(Prompt::Chat(messages), self.params.clone())
            .with_prompt_version(version);
        let response = self.client.generate(&request).await?;
        Ok(response
            .samples
            .into_iter()
            .next()
            .map(|s| s.text)
            .unwrap_or_default())
    }

    /// One reply whose shape `constraint` fixes (structured outputs), with each token's
    /// log-probability and `logprobs` alternatives when asked for (backends that do not
    /// return them leave `Sample::logprobs` empty). `text` is sent like
    /// [`Answerer::ask`] sends it; `system`, when given, comes first as a system turn.
    pub async fn ask_shaped(
        &self,
        system: Option<&str>,
        text: &str,
        version: &str,
        constraint: Option<Constraint>,
        logprobs: Option<usize>,
    ) -> Result<Sample> {
        let mut request = self.request(text, &[], version, 1);
        if let (Some(system), Prompt::Chat(messages)) = (system, &mut request.prompt) {
            messages.insert(0, ChatMessage::system(system));
        }
        request.params.constraint = constraint;
        request.params.logprobs = logprobs;
        let response = self.client.generate(&request).await?;
        Ok(response
            .samples
            .into_iter()
            .next()
            .unwrap_or_else(|| Sample::new(0, "", seqit_core::FinishReason::Stop)))
    }

    /// One reply to `text`.
    pub async fn ask_one(&self, text: &str, stop: &[String], version: &str) -> Result<String> {
        let mut exchange = self.ask(text, stop, version, 1).await?;
        Ok(exchange.outputs.swap_remove(0))
    }
}
