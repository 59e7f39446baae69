//! The one owner of an [`Engine`] shared by concurrent callers (the HTTP server's
//! handlers, the local `Llm` backend's tasks): a dedicated thread that takes every queued
//! job (up to the engine's batch size) and runs them together as one
//! [`Engine::generate_cancellable`] call, so that concurrent callers share decoding steps.
//!
//! Callers [`Scheduler::submit`] a job and get back a channel of [`Event`]s: text deltas
//! (streaming jobs only) and then exactly one `Finished`, `Failed` or `Expired`. A caller
//! that goes away drops its receiver: its job is skipped if it has not started, and its
//! sequences stop at the next decode step if it has (its queue places are given back at
//! once). A job past its deadline is refused if still queued; if running, its sequences
//! end there with the text they have. When a batch of several jobs fails, each job is run
//! again alone, so that one bad request does not fail the others.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seqit_core::{Completion, FinishReason};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::{Engine, GenerationRequest};

/// What a job reports back to its caller.
#[derive(Debug)]
pub enum Event {
    /// New final text of sequence `index` of the job.
    Text {
        /// Position of the sequence among the job's requests.
        index: usize,
        /// Text that follows what was sent before; never taken back.
        delta: String,
    },
    /// Every sequence of the job, in order.
    Finished(Vec<Completion>),
    /// Generation failed; the message is for the caller's client.
    Failed(String),
    /// The job's deadline passed while it was queued; it never ran.
    Expired,
}

/// One HTTP request's sequences.
struct Job {
    requests: Vec<GenerationRequest>,
    stream: bool,
    events: UnboundedSender<Event>,
    /// When the job must end (see `ServerConfig::request_timeout`).
    deadline: Instant,
    /// Its places in the queue; emptied (given back) once the job is over or its
    /// client has gone.
    slot: Cell<Option<QueueSlot>>,
    /// Text of it has been sent (it cannot be run again from the start).
    streamed: Cell<bool>,
}

impl Job {
    fn client_gone(&self) -> bool {
        self.events.is_closed()
    }
}

/// Sequences a job holds in the queue; given back when the job is dropped.
struct QueueSlot {
    pending: Arc<AtomicUsize>,
    sequences: usize,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.pending.fetch_sub(self.sequences, Ordering::AcqRel);
    }
}

/// Why [`Scheduler::submit`] refused a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Taking the job would put more than `limit` sequences in the queue.
    Overloaded {
        /// Sequences already queued or running when the job came.
        queued: usize,
        /// Most sequences that may be queued or running at once.
        limit: usize,
    },
    /// The generation thread has stopped.
    Stopped,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Overloaded { queued, limit } => write!(
                f,
                "{queued} sequences are queued, the limit is {limit}: try again later"
            ),
            SubmitError::Stopped => f.write_str("the generation thread has stopped"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// What the scheduler has done since it started (the server's `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Jobs (HTTP requests) answered with completions.
    pub requests: AtomicU64,
    /// Jobs whose generation failed.
    pub failures: AtomicU64,
    /// Prompt tokens of the answered sequences.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated for the answered sequences.
    pub generated_tokens: AtomicU64,
    /// Sequences stopped (or never started) because their client went away.
    pub cancelled_sequences: AtomicU64,
    /// Sequences that reached their request's deadline (queued or running).
    pub timed_out_sequences: AtomicU64,
}

/// Handle to the scheduler thread; the thread ends when every handle is dropped.
pub struct Scheduler {
    jobs: mpsc::Sender<Job>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    counters: Arc<Counters>,
}

impl Scheduler {
    /// Starts the scheduler thread. At most `max_pending` sequences may be queued or
    /// running; after the first job of a batch arrives, the scheduler waits up to
    /// `batch_window` for others to join it.
    pub fn start(
        engine: Arc<Engine>,
        max_pending: usize,
        batch_window: Duration,
    ) -> std::io::Result<Self> {
        // A std channel: the consumer is a plain thread that needs a timed receive.
        let (jobs, queue) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let counted = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("seqit-scheduler".into())
            .spawn(move || run(&engine, &queue, batch_window, &counted))?;
        Ok(Self {
            jobs,
            pending: Arc::new(AtomicUsize::new(0)),
            max_pending: max_pending.max(1),
            counters,
        })
    }

    /// The scheduler's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Queues one request's sequences, to be done by `deadline`, or refuses when the
    /// queue is full.
    pub fn submit(
        &self,
        requests: Vec<GenerationRequest>,
        stream: bool,
        deadline: Instant,
    ) -> Result<UnboundedReceiver<Event>, SubmitError> {
        let sequences = requests.len();
        let reserved = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let after = queued.saturating_add(sequences);
                (after <= self.max_pending).then_some(after)
            });
        if let Err(queued) = reserved {
            return Err(SubmitError::Overloaded {
                queued,
                limit: self.max_pending,
            });
        }
        let slot = QueueSlot {
            pending: Arc::clone(&self.pending),
            sequences,
        };
        let (events, receiver) = unbounded_channel();
        let job = Job {
            requests,
            stream,
            events,
            deadline,
            slot: Cell::new(Some(slot)),
            streamed: Cell::new(false),
        };
        self.jobs.send(job).map_err(|_| SubmitError::Stopped)?;
        Ok(receiver)
    }
}

fn run(engine: &Engine, queue: &mpsc::Receiver<Job>, batch_window: Duration, counters: &Counters) {
    let max_batch = engine.max_batch().max(1);
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut rows = first.requests.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + batch_window;
        while rows < max_batch {
            let next = match queue.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if rows + next.requests.len() > max_batch {
                // Would spill into a second engine pass; it leads the next batch instead.
                carried = Some(next);
                break;
            }
            rows += next.requests.len();
            batch.push(next);
        }
        // Clients that went away while queued cost nothing; jobs past their deadline are
        // refused.
        let now = Instant::now();
        batch.retain(|job| {
            let sequences = job.requests.len() as u64;
            if job.client_gone() {
                counters
                    .cancelled_sequences
                    .fetch_add(sequences, Ordering::Relaxed);
                false
            } else if now >= job.deadline {
                counters
                    .timed_out_sequences
                    .fetch_add(sequences, Ordering::Relaxed);
                drop(job.slot.take());
                let _ = job.events.send(Event::Expired);
                false
            } else {
                true
            }
        });
        if !batch.is_empty() {
            run_batch(engine, batch, counters);
        }
    }
}

fn run_batch(engine: &Engine, mut batch: Vec<Job>, counters: &Counters) {
    // Flat engine request `i` is sequence `owners[i].1` of job `owners[i].0`.
    let mut owners = Vec::new();
    let mut requests = Vec::new();
    for (j, job) in batch.iter_mut().enumerate() {
        for (k, request) in std::mem::take(&mut job.requests).into_iter().enumerate() {
            owners.push((j, k));
            requests.push(request);
        }
    }
    let mut on_text = |i: usize, delta: &str| {
        let (j, k) = owners[i];
        let job = &batch[j];
        if job.stream {
            job.streamed.set(true);
            // A closed channel means the client left; its text is simply dropped.
            let _ = job.events.send(Event::Text {
                index: k,
                delta: delta.to_string(),
            });
        }
    };
    // Asked for every running sequence before each decode step.
    let mut cancelled = |i: usize| {
        let job = &batch[owners[i].0];
        let gone = job.client_gone();
        if gone {
            // Nobody waits for the rest: its queue places are free now.
            drop(job.slot.take());
        }
        gone || Instant::now() >= job.deadline
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        engine.generate_cancellable(&requests, &mut on_text, &mut cancelled)
    }));
    let results: Vec<Event> = match outcome {
        Ok(Ok(completions)) => {
            let add = |counter: &AtomicU64, n: usize| {
                counter.fetch_add(n as u64, Ordering::Relaxed);
            };
            add(
                &counters.requests,
                batch.iter().filter(|job| !job.client_gone()).count(),
            );
            add(
                &counters.prompt_tokens,
                completions.iter().map(|c| c.prompt_tokens).sum(),
            );
            add(
                &counters.generated_tokens,
                completions.iter().map(Completion::completion_tokens).sum(),
            );
            let mut per_job: Vec<Vec<Completion>> = batch.iter().map(|_| Vec::new()).collect();
            for ((j, _), mut completion) in owners.iter().zip(completions) {
                if completion.finish_reason == FinishReason::Cancelled {
                    if batch[*j].client_gone() {
                        add(&counters.cancelled_sequences, 1);
                    } else {
                        // Cut at the deadline: for the client, a reply that hit a limit.
                        add(&counters.timed_out_sequences, 1);
                        completion.finish_reason = FinishReason::Length;
                    }
                }
                per_job[*j].push(completion);
            }
            per_job.into_iter().map(Event::Finished).collect()
        }
        // One bad request must not fail the others: each job runs again alone (except
        // one whose text was already streamed, which fails).
        Ok(Err(_)) | Err(_) if batch.len() > 1 => {
            for (job, requests) in batch.iter_mut().zip(split_back(&owners, requests)) {
                job.requests = requests;
            }
            for job in batch {
                if job.streamed.get() {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    let Job { events, slot, .. } = job;
                    drop(slot);
                    let _ = events.send(Event::Failed(
                        "generation failed after part of the reply was sent".into(),
                    ));
                } else {
                    run_batch(engine, vec![job], counters);
                }
            }
            return;
        }
        Ok(Err(err)) => failed(batch.len(), &format!("generation failed: {err:#}")),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            failed(
                batch.len(),
                &format!("generation failed: the engine panicked: {what}"),
            )
        }
    };
    let failures = results
        .iter()
        .filter(|r| matches!(r, Event::Failed(_)))
        .count();
    counters
        .failures
        .fetch_add(failures as u64, Ordering::Relaxed);
    for (job, result) in batch.into_iter().zip(results) {
        // Free the queue places before answering, so that a client which sends its next
        // request as soon as this one ends finds them free.
        let Job { events, slot, .. } = job;
        drop(slot);
        let _ = events.send(result);
    }
}

fn failed(jobs: usize, message: &str) -> Vec<Event> {
    (0..jobs)
        .map(|_| Event::Failed(message.to_string()))
        .collect()
}

/// The flat engine requests given back to their jobs (`owners[i]` is request `i`'s job and
/// place in it), for running the jobs again one at a time.
fn split_back(
    owners: &[(usize, usize)],
    requests: Vec<GenerationRequest>,
) -> Vec<Vec<GenerationRequest>> {
    let jobs = owners.last().map_or(0, |&(j, _)| j + 1);
    let mut per_job: Vec<Vec<GenerationRequest>> = (0..jobs).map(|_| Vec::new()).collect();
    for (&(j, _), request) in owners.iter().zip(requests) {
        per_job[j].push(request);
    }
    per_job
}
