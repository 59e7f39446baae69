//! The LLM interface: what is asked ([`LlmRequest`]), what comes back ([`LlmResponse`])
//! and the [`Llm`] trait every backend implements.

use futures::future::BoxFuture;
use seqit_core::{FinishReason, Prompt, SamplingParams, TokenLogprob};
use serde::{Deserialize, Serialize};

use crate::error::LlmError;

/// Which OpenAI endpoint a prompt is sent to: conversations go to chat completions,
/// raw text to (legacy) completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// OpenAI chat completions (`/chat/completions`), for [`Prompt::Chat`].
    Chat,
    /// OpenAI (legacy) text completions (`/completions`), for [`Prompt::Text`].
    Completions,
}

impl EndpointKind {
    /// The endpoint a prompt goes to: chat for conversations, completions for text.
    pub fn of(prompt: &Prompt) -> Self {
        match prompt {
            Prompt::Chat(_) => EndpointKind::Chat,
            Prompt::Text(_) => EndpointKind::Completions,
        }
    }

    /// Path under the API base (`/v1`).
    pub fn path(self) -> &'static str {
        match self {
            EndpointKind::Chat => "/chat/completions",
            EndpointKind::Completions => "/completions",
        }
    }

    /// The kind's name (`chat` or `completions`), for logs and statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Chat => "chat",
            EndpointKind::Completions => "completions",
        }
    }
}

/// One prompt and the samples wanted for it.
///
/// Samples are numbered: a request asks for indices `first_sample .. first_sample + n`.
/// The index is part of the cache key, so a resumed run with several stochastic samples
/// per prompt fills exactly the indices still missing. A single-sample request for index
/// `i > 0` is decoded with seed `params.seed + i`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// The conversation or text to continue.
    pub prompt: Prompt,
    /// Decoding settings; for sample `i` asked alone, the seed is `params.seed + i`.
    pub params: SamplingParams,
    /// Number of samples wanted (at least 1).
    pub n: u32,
    /// Index of the first sample.
    pub first_sample: u32,
    /// Version of the prompt template that produced `prompt`, supplied by the caller and
    /// made part of the cache key, so that changing a template re-asks.
    pub prompt_version: String,
}

impl LlmRequest {
    /// One sample (index 0) of `prompt`.
    pub fn new(prompt: Prompt, params: SamplingParams) -> Self {
        Self {
            prompt,
            params,
            n: 1,
            first_sample: 0,
            prompt_version: String::new(),
        }
    }

    /// Asks for samples `0..n`.
    pub fn with_samples(mut self, n: u32) -> Self {
        self.n = n.max(1);
        self
    }

    /// Sets the prompt-template version that goes into the cache key.
    pub fn with_prompt_version(mut self, version: impl Into<String>) -> Self {
        self.prompt_version = version.into();
        self
    }

    /// The endpoint the prompt goes to.
    pub fn kind(&self) -> EndpointKind {
        EndpointKind::of(&self.prompt)
    }

    /// The sample indices asked for: `first_sample .. first_sample + n`.
    pub fn sample_indices(&self) -> std::ops::Range<u32> {
        self.first_sample..self.first_sample + self.n.max(1)
    }

    /// The same prompt, asking for samples `first .. first + n` only.
    pub fn for_samples(&self, first: u32, n: u32) -> Self {
        Self {
            first_sample: first,
            n,
            ..self.clone()
        }
    }

    /// The seed used when sample `index` is decoded on its own.
    pub fn seed_for_sample(&self, index: u32) -> u64 {
        self.params.seed.wrapping_add(u64::from(index))
    }
}

/// One generated sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The sample's number among its prompt's samples (see [`LlmRequest`]).
    pub index: u32,
    /// The generated text.
    pub text: String,
    /// Why generation of this sample ended.
    pub finish_reason: FinishReason,
    /// Tokens of the prompt, when the backend reported them.
    pub prompt_tokens: Option<u64>,
    /// Tokens of this sample (a share of the request's total when several samples came
    /// in one answer), when the backend reported them.
    pub completion_tokens: Option<u64>,
    /// Whether the sample came from the request cache instead of the backend.
    pub cached: bool,
    /// Per token, when the request asked for log-probabilities and the backend
    /// returned them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// For a constrained request: whether the text satisfies the constraint (checked
    /// by the engine locally, by [`check_reply`](crate::check_reply) for endpoints);
    /// `None` without a constraint or where it cannot be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint_met: Option<bool>,
}

impl Sample {
    /// A sample with no token counts, log-probabilities or constraint verdict.
    pub fn new(index: u32, text: impl Into<String>, finish_reason: FinishReason) -> Self {
        Self {
            index,
            text: text.into(),
            finish_reason,
            prompt_tokens: None,
            completion_tokens: None,
            cached: false,
            logprobs: None,
            constraint_met: None,
        }
    }
}

/// Token counts of one backend call, as reported by the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens of the call (or estimated, see `estimated`).
    pub prompt_tokens: u64,
    /// Completion tokens of the call, all samples together (or estimated).
    pub completion_tokens: u64,
    /// The backend did not report usage; the counts are estimates (characters / 4).
    pub estimated: bool,
}

/// What a backend answered for one [`LlmRequest`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LlmResponse {
    /// Samples by index. A remote server that ignores `n > 1` may return fewer samples
    /// than asked; the [`Client`](crate::Client) asks for the rest one by one.
    pub samples: Vec<Sample>,
    /// Tokens billed for this answer (zero when it came from the cache).
    pub usage: Usage,
    /// HTTP attempts made (1 when the first try succeeded; 0 for local and cached answers).
    pub attempts: u32,
    /// Times the request was asked again because a reply broke its constraint (an
    /// endpoint that does not enforce constraints itself).
    pub constraint_retries: u32,
}

/// Whether a backend can return several samples in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiSample {
    /// Not known yet: the first `n > 1` request finds out.
    Unknown,
    /// The backend answers `n > 1` with `n` choices.
    Supported,
    /// The backend gives one choice per request: the client asks sample by sample.
    Unsupported,
}

/// A language model that answers [`LlmRequest`]s. Implemented by
/// [`LocalBackend`](crate::LocalBackend), [`RemoteBackend`](crate::RemoteBackend) and
/// the caching [`Client`](crate::Client) that wraps either.
pub trait Llm: Send + Sync {
    /// The model name requests are sent with (and cached under).
    fn model(&self) -> &str;

    /// Whether a request with `n > 1` may be answered in one call.
    fn multi_sample(&self) -> MultiSample {
        MultiSample::Supported
    }

    /// Who answers, as far as the request cache is concerned: for an endpoint its URL
    /// without credentials, query or fragment (see
    /// [`endpoint_identity`](crate::remote::endpoint_identity)), so that two servers
    /// serving the same model name keep separate answers; `None` for the local engine,
    /// whose answers are keyed by the model alone.
    fn cache_scope(&self) -> Option<String> {
        None
    }

    /// Answers `request`. Errors are final: backends retry what can be retried.
    fn generate<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>>;
}
