//! [`Client`]: a backend with the request cache and the ledger in front of it. This is
//! what commands and pipelines talk to.

use std::sync::Arc;

use futures::future::{join_all, BoxFuture};

use crate::cache::{Cache, CacheKey, CachedAnswer};
use crate::error::LlmError;
use crate::ledger::Ledger;
use crate::types::{Llm, LlmRequest, LlmResponse, MultiSample, Sample, Usage};

/// A backend behind the request cache and the token ledger.
///
/// For each request the client looks every wanted sample index up in the cache, asks
/// the backend only for the missing ones (all together when the backend takes `n > 1`,
/// otherwise one request per sample) and commits each answer to the cache the moment
/// it arrives. A request fails if any of its samples fails; the samples that did arrive
/// stay cached.
///
/// Cache keys include the backend's [`cache_scope`](Llm::cache_scope) (for an endpoint,
/// its URL without credentials), so answers of one server are never served for another
/// that happens to use the same model name, unless
/// [`share_cache_across_endpoints`](Client::share_cache_across_endpoints) says so.
#[derive(Clone)]
pub struct Client {
    backend: Arc<dyn Llm>,
    cache: Option<Arc<Cache>>,
    ledger: Arc<Ledger>,
    /// The endpoint identity in cache keys; `None` when shared.
    scope: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("model", &self.backend.model())
            .field("cache", &self.cache)
            .finish()
    }
}

impl Client {
    /// A client without a cache and with a ledger without prices.
    pub fn new(backend: Arc<dyn Llm>) -> Self {
        Self {
            scope: backend.cache_scope(),
            backend,
            cache: None,
            ledger: Arc::new(Ledger::default()),
        }
    }

    /// With `share`, cache keys leave the endpoint out: every endpoint serving the same
    /// model name reads and writes the same answers (e.g. replicas of one deployment, or
    /// answers imported from a Batch API file).
    pub fn share_cache_across_endpoints(mut self, share: bool) -> Self {
        self.scope = if share {
            None
        } else {
            self.backend.cache_scope()
        };
        self
    }

    /// The endpoint identity in this client's cache keys (`None`: shared, or local).
    pub fn cache_scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Stores answers in `cache` and serves them from it; without one every request goes to
    /// the backend.
    pub fn with_cache(mut self, cache: Arc<Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Counts this client's requests, tokens and cache hits in `ledger` (shared with other
    /// clients to total a run).
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// The ledger this client counts into.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The request cache, if the client has one.
    pub fn cache(&self) -> Option<&Arc<Cache>> {
        self.cache.as_ref()
    }

    /// The backend asked for answers the cache does not hold.
    pub fn backend(&self) -> &Arc<dyn Llm> {
        &self.backend
    }

    /// The cache key of sample `index` of `request` for this client's model.
    pub fn key(&self, request: &LlmRequest, index: u32) -> CacheKey {
        CacheKey::new(
            self.scope.as_deref(),
            request.kind(),
            self.backend.model(),
            &request.prompt,
            &request.params,
            index,
            &request.prompt_version,
        )
    }

    /// The cached samples of `request`, by position (`None` where not cached). Touches
    /// neither the backend nor the ledger.
    pub fn lookup(&self, request: &LlmRequest) -> Result<Vec<Option<Sample>>, LlmError> {
        let Some(cache) = &self.cache else {
            return Ok(vec![None; request.n.max(1) as usize]);
        };
        let keys: Vec<CacheKey> = request
            .sample_indices()
            .map(|index| self.key(request, index))
            .collect();
        Ok(cache
            .get_many(&keys)?
            .into_iter()
            .map(|a| a.map(|a| a.sample))
            .collect())
    }

    /// For each request, its answer if the cache holds every sample it asks for (counted
    /// in the ledger as cache hits), else `None`. All lookups share one read
    /// transaction; used to skip fully answered requests before a large run.
    pub fn lookup_many(
        &self,
        requests: &[LlmRequest],
    ) -> Result<Vec<Option<LlmResponse>>, LlmError> {
        let Some(cache) = &self.cache else {
            return Ok(vec![None; requests.len()]);
        };
        let keys: Vec<CacheKey> = requests
            .iter()
            .flat_map(|r| r.sample_indices().map(move |i| (r, i)))
            .map(|(r, i)| self.key(r, i))
            .collect();
        let mut found = cache.get_many(&keys)?.into_iter();
        let model = self.backend.model();
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            let samples: Vec<Option<Sample>> = found
                .by_ref()
                .take(request.n.max(1) as usize)
                .map(|a| a.map(|a| a.sample))
                .collect();
            if samples.iter().all(Option::is_some) {
                let samples: Vec<Sample> = samples.into_iter().flatten().collect();
                for sample in &samples {
                    self.ledger.record_cached(
                        model,
                        sample.prompt_tokens.unwrap_or(0),
                        sample.completion_tokens.unwrap_or(0),
                    );
                }
                answers.push(Some(LlmResponse {
                    samples,
                    ..LlmResponse::default()
                }));
            } else {
                answers.push(None);
            }
        }
        Ok(answers)
    }

    /// Answers `request` from the cache where possible and from the backend otherwise.
    pub async fn generate(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let model = self.backend.model();
        let mut samples = self.lookup(request)?;
        for sample in samples.iter().flatten() {
            self.ledger.record_cached(
                model,
                sample.prompt_tokens.unwrap_or(0),
                sample.completion_tokens.unwrap_or(0),
            );
        }
        let missing: Vec<u32> = request
            .sample_indices()
            .zip(&samples)
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| i)
            .collect();
        let mut response = LlmResponse::default();
        if !missing.is_empty() {
            let runs = contiguous_runs(&missing);
            let answers = join_all(
                runs.into_iter()
                    .map(|(first, n)| self.ask(request, first, n)),
            )
            .await;
            for answer in answers {
                let answer = answer?;
                response.usage.prompt_tokens += answer.usage.prompt_tokens;
                response.usage.completion_tokens += answer.usage.completion_tokens;
                response.usage.estimated |= answer.usage.estimated;
                response.attempts += answer.attempts;
                response.constraint_retries += answer.constraint_retries;
                for sample in answer.samples {
                    let position = (sample.index - request.first_sample) as usize;
                    samples[position] = Some(sample);
                }
            }
        }
        response.samples = samples
            .into_iter()
            .map(|s| s.expect("every missing sample was asked for"))
            .collect();
        Ok(response)
    }

    /// Samples `first .. first + n` from the backend, each committed as it arrives.
    async fn ask(&self, request: &LlmRequest, first: u32, n: u32) -> Result<LlmResponse, LlmError> {
        let mut total = LlmResponse::default();
        let mut remaining: Vec<u32> = (first..first + n).collect();
        if n > 1 && self.backend.multi_sample() != MultiSample::Unsupported {
            match self.call(&request.for_samples(first, n)).await {
                Ok(answer) => {
                    remaining.retain(|i| !answer.samples.iter().any(|s| s.index == *i));
                    merge(&mut total, answer);
                }
                Err(LlmError::MultiSampleUnsupported { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let singles = join_all(remaining.into_iter().map(|i| self.call_one(request, i))).await;
        let mut first_error = None;
        for single in singles {
            match single {
                Ok(answer) => merge(&mut total, answer),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(total),
        }
    }

    async fn call_one(&self, request: &LlmRequest, index: u32) -> Result<LlmResponse, LlmError> {
        let single = request.for_samples(index, 1);
        let mut answer = self.call(&single).await?;
        answer.samples.truncate(1);
        Ok(answer)
    }

    /// One backend call: commit its samples, count it.
    async fn call(&self, request: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let model = self.backend.model();
        match self.backend.generate(request).await {
            Ok(answer) => {
                self.ledger
                    .record_answer(model, answer.usage, answer.attempts);
                self.ledger
                    .record_constraint_retries(model, answer.constraint_retries);
                if let Some(cache) = &self.cache {
                    for sample in &answer.samples {
                        let stored = CachedAnswer {
                            model: model.to_string(),
                            kind: request.kind(),
                            sample: sample.clone(),
                        };
                        cache.put(&self.key(request, sample.index), &stored)?;
                    }
                }
                Ok(answer)
            }
            Err(LlmError::MultiSampleUnsupported { url }) => {
                Err(LlmError::MultiSampleUnsupported { url })
            }
            Err(error) => {
                let attempts = match &error {
                    LlmError::RetriesExhausted { attempts, .. } => *attempts,
                    _ => 1,
                };
                self.ledger.record_failure(model, attempts);
                Err(error)
            }
        }
    }
}

fn merge(total: &mut LlmResponse, answer: LlmResponse) {
    total.usage = Usage {
        prompt_tokens: total.usage.prompt_tokens + answer.usage.prompt_tokens,
        completion_tokens: total.usage.completion_tokens + answer.usage.completion_tokens,
        estimated: total.usage.estimated || answer.usage.estimated,
    };
    total.attempts += answer.attempts;
    total.constraint_retries += answer.constraint_retries;
    total.samples.extend(answer.samples);
}

/// `[0, 1, 2, 5, 6, 9]` → `[(0, 3), (5, 2), (9, 1)]`.
fn contiguous_runs(indices: &[u32]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &i in indices {
        match runs.last_mut() {
            Some((first, n)) if *first + *n == i => *n += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

impl Llm for Client {
    fn model(&self) -> &str {
        self.backend.model()
    }

    fn multi_sample(&self) -> MultiSample {
        MultiSample::Supported
    }

    fn cache_scope(&self) -> Option<String> {
        self.scope.clone()
    }

    fn generate<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
        Box::pin(Client::generate(self, request))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use seqit_core::{FinishReason, Prompt, SamplingParams};

    use super::*;

    /// Answers `"<prompt> #<index>"`, records the sample ranges asked, optionally
    /// refuses `n > 1` or fails one index.
    struct Fake {
        multi: MultiSample,
        fail_index: Option<u32>,
        calls: Mutex<Vec<(u32, u32)>>,
        count: AtomicUsize,
    }

    impl Fake {
        fn new(multi: MultiSample) -> Self {
            Self {
                multi,
                fail_index: None,
                calls: Mutex::default(),
                count: AtomicUsize::new(0),
            }
        }
    }

    impl Llm for Fake {
        fn model(&self) -> &str {
            "fake"
        }
        fn multi_sample(&self) -> MultiSample {
            self.multi
        }
        fn generate<'a>(
            &'a self,
            request: &'a LlmRequest,
        ) -> BoxFuture<'a, Result<LlmResponse, LlmError>> {
            Box::pin(async move {
                self.count.fetch_add(1, Ordering::SeqCst);
                self.calls
                    .lock()
                    .unwrap()
                    .push((request.first_sample, request.n));
                if request.n > 1 && self.multi == MultiSample::Unsupported {
                    return Err(LlmError::MultiSampleUnsupported { url: "x".into() });
                }
                if let Some(bad) = self.fail_index {
                    if request.sample_indices().contains(&bad) {
                        return Err(LlmError::Invalid("boom".into()));
                    }
                }
                let text = match &request.prompt {
                    Prompt::Text(t) => t.clone(),
                    Prompt::Chat(_) => "chat".into(),
                };
                Ok(LlmResponse {
                    samples: request
                        .sample_indices()
                        .map(|i| Sample {
                            prompt_tokens: Some(2),
                            completion_tokens: Some(3),
                            ..Sample::new(i, format!("{text} #{i}"), FinishReason::Stop)
                        })
                        .collect(),
                    usage: Usage {
                        prompt_tokens: 2,
                        completion_tokens: 3 * u64::from(request.n),
                        estimated: false,
                    },
                    attempts: 1,
                    constraint_retries: 0,
                })
            })
        }
    }

    fn request(n: u32) -> LlmRequest {
        LlmRequest::new(Prompt::Text("p".into()), SamplingParams::greedy(4)).with_samples(n)
    }

    #[tokio::test]
    async fn cached_samples_are_not_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("c.sqlite")).unwrap());
        let fake = Arc::new(Fake::new(MultiSample::Supported));
        let client = Client::new(fake.clone()).with_cache(cache.clone());
        // Sample 1 and 2 first, then 0..4: only 0 and 3 are asked.
        let first = client
            .generate(&request(2).for_samples(1, 2))
            .await
            .unwrap();
        assert_eq!(
            first
                .samples
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>(),
            ["p #1", "p #2"]
        );
        let all = client.generate(&request(4)).await.unwrap();
        let texts: Vec<&str> = all.samples.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["p #0", "p #1", "p #2", "p #3"]);
        assert_eq!(
            all.samples.iter().map(|s| s.cached).collect::<Vec<_>>(),
            [false, true, true, false]
        );
        let mut calls = fake.calls.lock().unwrap().clone();
        calls.sort();
        assert_eq!(calls, [(0, 1), (1, 2), (3, 1)]);
        // A new client on the same file: nothing asked.
        let again = Client::new(fake.clone()).with_cache(cache);
        again.generate(&request(4)).await.unwrap();
        assert_eq!(fake.count.load(Ordering::SeqCst), 3);
        let t = &again.ledger().tallies()["fake"];
        assert_eq!((t.requests, t.cached_samples), (0, 4));
        // Bulk lookups: complete requests only.
        let other = LlmRequest::new(Prompt::Text("q".into()), SamplingParams::greedy(4));
        let found = again.lookup_many(&[request(4), other, request(5)]).unwrap();
        assert_eq!(found[0].as_ref().unwrap().samples.len(), 4);
        assert!(found[1].is_none() && found[2].is_none());
        assert_eq!(again.ledger().tallies()["fake"].cached_samples, 8);
    }

    #[tokio::test]
    async fn servers_without_n_get_one_request_per_sample() {
        let fake = Arc::new(Fake::new(MultiSample::Unsupported));
        let client = Client::new(fake.clone());
        let answer = client.generate(&request(3)).await.unwrap();
        assert_eq!(answer.samples.len(), 3);
        let mut calls = fake.calls.lock().unwrap().clone();
        calls.sort();
        assert_eq!(calls, [(0, 1), (1, 1), (2, 1)]);
    }

    #[tokio::test]
    async fn a_failed_sample_fails_the_request_but_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("c.sqlite")).unwrap());
        let mut fake = Fake::new(MultiSample::Unsupported);
        fake.fail_index = Some(1);
        let client = Client::new(Arc::new(fake)).with_cache(cache.clone());
        let error = client.generate(&request(3)).await.unwrap_err();
        assert!(error.to_string().contains("boom"));
        assert_eq!(cache.len().unwrap(), 2);
        let t = &client.ledger().tallies()["fake"];
        assert_eq!((t.requests, t.failed), (2, 1));
    }

    #[test]
    fn runs() {
        assert_eq!(
            contiguous_runs(&[0, 1, 2, 5, 6, 9]),
            [(0, 3), (5, 2), (9, 1)]
        );
        assert_eq!(contiguous_runs(&[]), []);
    }
}
