//! The local backend: the in-process engine behind the [`Llm`] trait.
//!
//! Generation is CPU-bound and synchronous, so the engine belongs to the batching
//! [`Scheduler`] thread (the same one `seqit serve` uses): calls made while a batch is
//! running queue up and form the next batch (up to the engine's `max_batch` sequences),
//! so many concurrent callers share the engine's batching.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use seqit_core::{Completion, Prompt};
use seqit_engine::scheduler::{Event, Scheduler};
use seqit_engine::{Engine, GenerationRequest};

use crate::error::LlmError;
use crate::types::{Llm, LlmRequest, LlmResponse, MultiSample, Sample, Usage};

/// No deadline: a local job runs however long it takes.
const NO_DEADLINE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// An [`Engine`] answering [`LlmRequest`]s. Sample `i` of a stochastic request is
/// decoded with seed `seed + i`; greedy requests decode once and repeat the answer.
pub struct LocalBackend {
    name: String,
    scheduler: Scheduler,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("name", &self.name)
            .finish()
    }
}

impl LocalBackend {
    /// Starts the generation thread. `name` is the model name used in cache keys and
    /// the ledger (e.g. the model file's name).
    pub fn new(engine: Arc<Engine>, name: impl Into<String>) -> Self {
        // No queue limit (callers bound their own concurrency) and no batch window:
        // jobs queued while a batch runs form the next one.
        let scheduler = Scheduler::start(engine, usize::MAX, Duration::ZERO)
            .expect("the generation thread starts");
        Self {
            name: name.into(),
            scheduler,
        }
    }

    async fn run(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        request.params.validate().map_err(LlmError::Invalid)?;
        if let Prompt::Chat(messages) = &request.prompt {
            if messages.iter().any(|m| !m.images.is_empty()) {
                return Err(LlmError::Invalid(format!(
                    "the local model `{}` reads text only and this request carries images\nhint: send it to a vision model with `--endpoint URL --model NAME`",
                    self.name
                )));
            }
        }
        let greedy = request.params.is_greedy();
        let decoded: Vec<u32> = if greedy {
            vec![request.first_sample]
        } else {
            request.sample_indices().collect()
        };
        let requests: Vec<GenerationRequest> = decoded
            .iter()
            .map(|&index| {
                let mut params = request.params.clone();
                params.seed = request.seed_for_sample(index);
                GenerationRequest {
                    prompt: request.prompt.clone(),
                    params,
                }
            })
            .collect();
        let completions = self.complete(requests).await?;
        let mut usage = Usage::default();
        for c in &completions {
            usage.prompt_tokens += c.prompt_tokens as u64;
            usage.completion_tokens += c.completion_tokens() as u64;
        }
        let samples = request
            .sample_indices()
            .enumerate()
            .map(|(position, index)| {
                let c = &completions[if greedy { 0 } else { position }];
                Sample {
                    index,
                    text: c.text.clone(),
                    finish_reason: c.finish_reason,
                    prompt_tokens: Some(c.prompt_tokens as u64),
                    completion_tokens: Some(c.completion_tokens() as u64),
                    cached: false,
                    logprobs: c.logprobs.clone(),
                    constraint_met: c.constraint_met,
                }
            })
            .collect();
        Ok(LlmResponse {
            samples,
            usage,
            attempts: 0,
            constraint_retries: 0,
        })
    }
}

impl LocalBackend {
    /// One job of `requests` through the scheduler, answered together.
    async fn complete(
        &self,
        requests: Vec<GenerationRequest>,
    ) -> Result<Vec<Completion>, LlmError> {
        let stopped = || LlmError::Local("the generation thread has stopped".into());
        let mut events = self
            .scheduler
            .submit(requests, false, Instant::now() + NO_DEADLINE)
            .map_err(|e| LlmError::Local(e.to_string()))?;
        loop {
            match events.recv().await.ok_or_else(stopped)? {
                Event::Finished(completions) => return Ok(completions),
                Event::Failed(message) => return Err(LlmError::Local(message)),
                Event::Text { .. } => {}
                Event::Expired => return Err(stopped()),
            }
        }
    }
}

impl Llm for LocalBackend {
    fn model(&self) -> &str {
        &self.name
    }

    fn multi_sample(&self) -> MultiSample {
        MultiSample::Supported
    }

    fn generate<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(self.run(request))
    }
}
