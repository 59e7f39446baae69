//! A fault-injecting OpenAI-protocol server for seqit's tests and benchmarks (never part
//! of the `seqit` CLI).
//!
//! [`FaultServer`] answers `POST /v1/chat/completions`, `POST /v1/completions` and
//! `GET /v1/models` on loopback after a fixed latency, and injects faults at configured
//! rates ([`FaultRates`]): 429 with `Retry-After` (seconds or HTTP date), 500, 503, hung
//! connections that never answer, bodies cut off mid-way, malformed JSON and answers
//! with empty `choices`. Faults are deterministic: whether the `k`-th arrival of a given
//! request fails depends only on the seed, the request's content and `k`, never on
//! arrival order.
//!
//! Every request is recorded ([`LogEntry`]: a content hash of the request, the prompt,
//! the attempt number, the outcome, the time), and answered requests are counted per
//! key, so tests can assert that each request was answered exactly once. A scripted
//! mode ([`ScriptRule`]) answers prompts containing given substrings with given replies.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use seqit_faultserver::{FaultConfig, FaultRates, FaultServer};
//! let server = FaultServer::start(FaultConfig { faults: FaultRates::uniform(0.3), ..FaultConfig::default() }).await?;
//! println!("send requests to {}", server.url());
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod server;

pub use server::{
    canonical_json, request_key, BackgroundFaultServer, FaultConfig, FaultRates, FaultServer,
    LogEntry, MultiSample, Outcome, RetryAfterStyle, ScriptRule, Stats,
};
