//! Server-sent events for `stream: true`: scheduler [`Event`]s in, OpenAI chunks out.
//!
//! Chat streams open with a role delta per choice, then content deltas as text becomes
//! final, then one chunk per choice carrying its `finish_reason`, then (when asked with
//! `stream_options.include_usage`) a chunk with `usage` and no choices, then
//! `data: [DONE]`. Log-probabilities, when asked for, come in each choice's finishing
//! chunk. Text completion streams have the same shape with `text` fields. A
//! failure after the stream has started is sent as an `{"error": ...}` event before
//! `[DONE]`. While the stream waits for the engine its connection is marked as waiting
//! (the idle timeout does not run); a client that stops reading is not waited for.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use seqit_core::{Completion, FinishReason};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::connections::ConnHandle;
use crate::error::ApiError;
use crate::structured::{ChatLogprobs, TextLogprobs};
use crate::wire::{ChatChunkChoice, Chunk, Delta, TextChoice, Usage};
use seqit_engine::scheduler::Event;

/// Which API the stream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Chat,
    Text,
}

/// What every chunk of one response repeats.
#[derive(Debug, Clone)]
pub(crate) struct StreamMeta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub choices: usize,
    /// Sequences per prompt; prompt tokens are counted once per prompt.
    pub n: usize,
    pub include_usage: bool,
    /// The server's request timeout, for the error of a request that expired queued.
    pub request_timeout: std::time::Duration,
}

enum Phase {
    Start,
    Running,
    Done,
}

struct State {
    meta: StreamMeta,
    events: UnboundedReceiver<Event>,
    phase: Phase,
    conn: ConnHandle,
}

/// The SSE response for one job. Dropping it (the client went away) drops the event
/// receiver, which the scheduler notices.
pub(crate) fn sse(
    meta: StreamMeta,
    events: UnboundedReceiver<Event>,
    conn: ConnHandle,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let state = State {
        meta,
        events,
        phase: Phase::Start,
        conn,
    };
    let events = stream::unfold(state, |mut state| async move {
        let out = match state.phase {
            Phase::Done => return None,
            Phase::Start => {
                state.phase = Phase::Running;
                match state.meta.kind {
                    Kind::Chat => (0..state.meta.choices)
                        .map(|index| {
                            state.meta.chat(
                                index,
                                Delta {
                                    role: Some("assistant"),
                                    content: Some(""),
                                },
                                None,
                                None,
                            )
                        })
                        .collect(),
                    Kind::Text => Vec::new(),
                }
            }
            Phase::Running => match next_event(&mut state).await {
                Some(Event::Text { index, delta }) => vec![state.meta.delta(index, &delta)],
                Some(Event::Finished(completions)) => {
                    state.phase = Phase::Done;
                    state.meta.finish(&completions)
                }
                Some(Event::Failed(message)) => {
                    state.phase = Phase::Done;
                    vec![error_event(ApiError::Internal { message }), done_event()]
                }
                Some(Event::Expired) => {
                    state.phase = Phase::Done;
                    let error = ApiError::QueueTimeout {
                        timeout: state.meta.request_timeout,
                    };
                    vec![error_event(error), done_event()]
                }
                None => {
                    state.phase = Phase::Done;
                    let message = "generation stopped before finishing".to_string();
                    vec![error_event(ApiError::Internal { message }), done_event()]
                }
            },
        };
        Some((stream::iter(out.into_iter().map(Ok)), state))
    })
    .flatten();
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The next event of the job; meanwhile the connection waits for the engine.
async fn next_event(state: &mut State) -> Option<Event> {
    let _waiting = state.conn.waiting();
    state.events.recv().await
}

impl StreamMeta {
    fn chunk<C: Serialize>(&self, choices: Vec<C>, usage: Option<Usage>) -> SseEvent {
        let chunk = Chunk {
            id: &self.id,
            object: match self.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Text => "text_completion",
            },
            created: self.created,
            model: &self.model,
            choices,
            usage: self.include_usage.then_some(usage),
        };
        json_event(&chunk)
    }

    fn chat(
        &self,
        index: usize,
        delta: Delta<'_>,
        finish_reason: Option<FinishReason>,
        logprobs: Option<ChatLogprobs>,
    ) -> SseEvent {
        let choice = ChatChunkChoice {
            index,
            delta,
            logprobs,
            finish_reason,
        };
        self.chunk(vec![choice], None)
    }

    fn text(
        &self,
        index: usize,
        text: &str,
        finish_reason: Option<FinishReason>,
        logprobs: Option<TextLogprobs>,
    ) -> SseEvent {
        let choice = TextChoice {
            index,
            text,
            logprobs,
            finish_reason,
        };
        self.chunk(vec![choice], None)
    }

    fn delta(&self, index: usize, text: &str) -> SseEvent {
        match self.kind {
            Kind::Chat => self.chat(
                index,
                Delta {
                    role: None,
                    content: Some(text),
                },
                None,
                None,
            ),
            Kind::Text => self.text(index, text, None, None),
        }
    }

    fn finish(&self, completions: &[Completion]) -> Vec<SseEvent> {
        let mut out: Vec<SseEvent> = completions
            .iter()
            .enumerate()
            // Log-probabilities of the whole choice come with its last chunk (clients
            // concatenate `content` across chunks).
            .map(|(index, c)| match self.kind {
                Kind::Chat => self.chat(
                    index,
                    Delta::default(),
                    Some(c.finish_reason),
                    c.logprobs.as_deref().map(ChatLogprobs::new),
                ),
                Kind::Text => self.text(
                    index,
                    "",
                    Some(c.finish_reason),
                    c.logprobs.as_deref().map(TextLogprobs::new),
                ),
            })
            .collect();
        if self.include_usage {
            let usage = usage(completions, self.n);
            out.push(self.chunk(Vec::<ChatChunkChoice>::new(), Some(usage)));
        }
        out.push(done_event());
        out
    }
}

/// Token counts of a response: each prompt once (choices of one prompt share it),
/// every generated token.
pub(crate) fn usage(completions: &[Completion], n: usize) -> Usage {
    let prompt = completions
        .iter()
        .step_by(n.max(1))
        .map(|c| c.prompt_tokens)
        .sum();
    let generated = completions.iter().map(Completion::completion_tokens).sum();
    Usage::new(prompt, generated)
}

fn json_event<T: Serialize>(value: &T) -> SseEvent {
    // Serializing these plain structs cannot fail.
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_default())
}

fn error_event(error: ApiError) -> SseEvent {
    json_event(&error.body())
}

fn done_event() -> SseEvent {
    SseEvent::default().data("[DONE]")
}
