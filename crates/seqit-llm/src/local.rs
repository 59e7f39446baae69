//! The local backend: the in-process engine behind the [`Llm`] trait.
//!
//! Generation is CPU-bound and synchronous, so it runs on one dedicated thread. Calls
//! made while a batch is running queue up and form the next batch (up to the engine's
//! `max_batch` sequences), so many concurrent callers share the engine's batching.

use std::sync::Arc;

use futures::future::BoxFuture;
use seqit_core::{Completion, Prompt};
use seqit_engine::{Engine, GenerationRequest};
use tokio::sync::{mpsc, oneshot};

use crate::error::LlmError;
use crate::types::{Llm, LlmRequest, LlmResponse, MultiSample, Sample, Usage};

struct Job {
    request: GenerationRequest,
    reply: oneshot::Sender<Result<Completion, String>>,
}

/// An [`Engine`] answering [`LlmRequest`]s. Sample `i` of a stochastic request is
/// decoded with seed `seed + i`; greedy requests decode once and repeat the answer.
pub struct LocalBackend {
    name: String,
    jobs: mpsc::UnboundedSender<Job>,
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
        let (jobs, receiver) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("seqit-local-llm".into())
            .spawn(move || serve(engine, receiver))
            .expect("the generation thread starts");
        Self {
            name: name.into(),
            jobs,
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
        let mut waiting = Vec::with_capacity(decoded.len());
        for &index in &decoded {
            let mut params = request.params.clone();
            params.seed = request.seed_for_sample(index);
            let (reply, answer) = oneshot::channel();
            let job = Job {
                request: GenerationRequest {
                    prompt: request.prompt.clone(),
                    params,
                },
                reply,
            };
            self.jobs
                .send(job)
                .map_err(|_| LlmError::Local("the generation thread has stopped".into()))?;
            waiting.push(answer);
        }
        let mut completions = Vec::with_capacity(waiting.len());
        for answer in waiting {
            let completion = answer
                .await
                .map_err(|_| LlmError::Local("the generation thread has stopped".into()))?
                .map_err(LlmError::Local)?;
            completions.push(completion);
        }
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

/// The generation thread: takes every job waiting (up to `max_batch`), generates them as
/// one batch, answers, repeats until every sender is gone.
fn serve(engine: Arc<Engine>, mut receiver: mpsc::UnboundedReceiver<Job>) {
    let max_batch = engine.max_batch().max(1);
    while let Some(first) = receiver.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let requests: Vec<GenerationRequest> = jobs.iter().map(|j| j.request.clone()).collect();
        match engine.generate(&requests, &mut |_, _| {}) {
            Ok(completions) => {
                for (job, completion) in jobs.into_iter().zip(completions) {
                    let _ = job.reply.send(Ok(completion));
                }
            }
            // One bad request must not fail the others: retry them one by one.
            Err(_) if jobs.len() > 1 => {
                for job in jobs {
                    let result = engine
                        .generate(std::slice::from_ref(&job.request), &mut |_, _| {})
                        .map(|mut c| c.remove(0))
                        .map_err(|e| format!("{e:#}"));
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                let job = jobs.remove(0);
                let _ = job.reply.send(Err(format!("{error:#}")));
            }
        }
    }
}
