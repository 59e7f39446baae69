//! The remote backend against the fault-injecting server: faults survived, nothing lost
//! or duplicated, `Retry-After` respected, retry cap, timeouts, `n` probing, rate
//! limits, lenient parsing, API keys kept out of the cache.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use seqit_core::{ChatMessage, FinishReason, Prompt, SamplingParams};
use seqit_faultserver::{
    FaultConfig, FaultRates, FaultServer, LogEntry, MultiSample, Outcome, RetryAfterStyle,
};
use seqit_llm::remote::Backoff;
use seqit_llm::{ApiKey, Cache, Client, LlmError, LlmRequest, RemoteBackend, RemoteConfig};

fn chat(text: &str) -> LlmRequest {
    LlmRequest::new(
        Prompt::Chat(vec![ChatMessage::user(text)]),
        SamplingParams::greedy(16),
    )
}

fn config(server: &FaultServer) -> RemoteConfig {
    let mut config = RemoteConfig::new(server.url(), "fault-model");
    config.concurrency = 64;
    config.timeout = Duration::from_millis(500);
    config.max_retries = 3;
    config.backoff = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    config.seed = 7;
    config
}

/// Runs all requests concurrently; results by request position.
async fn run_all(client: &Client, requests: &[LlmRequest]) -> Vec<Result<Vec<String>, LlmError>> {
    let mut pending: FuturesUnordered<_> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| async move { (i, client.generate(r).await) })
        .collect();
    let mut results: Vec<Option<Result<Vec<String>, LlmError>>> =
        (0..requests.len()).map(|_| None).collect();
    while let Some((i, result)) = pending.next().await {
        assert!(results[i].is_none(), "request {i} finished twice");
        results[i] = Some(result.map(|r| r.samples.into_iter().map(|s| s.text).collect()));
    }
    results
        .into_iter()
        .map(|r| r.expect("every request finishes"))
        .collect()
}

/// Gaps (ms) between each 429 and the next arrival of the same request.
fn retry_after_gaps(log: &[LogEntry]) -> Vec<f64> {
    let mut by_key: HashMap<&str, Vec<&LogEntry>> = HashMap::new();
    for entry in log {
        by_key.entry(&entry.key).or_default().push(entry);
    }
    let mut gaps = Vec::new();
    for entries in by_key.values() {
        for pair in entries.windows(2) {
            if pair[0].outcome == Outcome::RateLimited {
                gaps.push(pair[1].at_ms - pair[0].at_ms);
            }
        }
    }
    gaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_requests_with_30_percent_faults_end_answered_or_failed() {
    let server = FaultServer::start(FaultConfig {
        latency: Duration::from_millis(2),
        faults: FaultRates::uniform(0.3),
        seed: 42,
        retry_after: RetryAfterStyle::Seconds(1),
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&dir.path().join("cache.sqlite")).unwrap());
    let cfg = config(&server);
    let max_attempts = cfg.max_retries + 1;
    let client = Client::new(Arc::new(RemoteBackend::new(cfg).unwrap())).with_cache(cache.clone());
    let requests: Vec<LlmRequest> = (0..1000).map(|i| chat(&format!("prompt {i}"))).collect();

    let started = Instant::now();
    let results = run_all(&client, &requests).await;
    let elapsed = started.elapsed();

    let answered: Vec<usize> = (0..1000).filter(|&i| results[i].is_ok()).collect();
    let failed: Vec<usize> = (0..1000).filter(|&i| results[i].is_err()).collect();
    assert_eq!(answered.len() + failed.len(), 1000, "none lost");
    for &i in &answered {
        assert_eq!(
            results[i].as_ref().unwrap(),
            &[format!("echo[0 #0]: prompt {i}")],
            "answer of request {i}"
        );
    }
    for &i in &failed {
        let error = results[i].as_ref().unwrap_err();
        assert!(
            matches!(error, LlmError::RetriesExhausted { attempts, .. } if *attempts == max_attempts),
            "request {i}: {error}"
        );
    }

    // The server's view: every answered request answered exactly once; every failed one
    // asked exactly `max_attempts` times and never answered.
    let log = server.log();
    let counts = server.answered_counts();
    let mut attempts_by_prompt: HashMap<String, u32> = HashMap::new();
    for entry in &log {
        *attempts_by_prompt.entry(entry.prompt.clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), answered.len());
    assert!(
        counts.values().all(|&n| n == 1),
        "an answer was asked for twice"
    );
    for &i in &failed {
        assert_eq!(attempts_by_prompt[&format!("prompt {i}")], max_attempts);
    }
    let outcomes: HashSet<Outcome> = log.iter().map(|e| e.outcome).collect();
    for fault in [
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::Unavailable,
        Outcome::Hung,
        Outcome::Truncated,
        Outcome::Malformed,
        Outcome::EmptyChoices,
    ] {
        assert!(outcomes.contains(&fault), "{fault:?} was injected");
    }

    // Retry-After: 1 s asked, never retried sooner.
    let gaps = retry_after_gaps(&log);
    assert!(gaps.len() > 20, "{} rate-limited retries", gaps.len());
    let min = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!(
        min >= 1000.0,
        "a retry came {min:.1} ms after a 429 asking for 1 s"
    );
    let tally = &client.ledger().tallies()["fault-model"];
    assert_eq!(tally.requests as usize, answered.len());
    assert_eq!(tally.failed as usize, failed.len());
    assert_eq!(tally.attempts as usize, log.len());
    eprintln!(
        "1000 requests, {} answered, {} failed, {} HTTP attempts in {:.2}s; 429 -> retry gap over {} retries: min {:.0} ms, mean {:.0} ms (Retry-After: 1 s)",
        answered.len(),
        failed.len(),
        log.len(),
        elapsed.as_secs_f64(),
        gaps.len(),
        min,
        mean
    );

    // Run again on the same cache: only the failed requests are asked.
    let before = log.len();
    let client =
        Client::new(Arc::new(RemoteBackend::new(config(&server)).unwrap())).with_cache(cache);
    let again = run_all(&client, &requests).await;
    let first_attempts = server.log()[before..]
        .iter()
        .filter(|e| e.attempt == max_attempts + 1)
        .count();
    assert_eq!(
        first_attempts,
        failed.len(),
        "only the failed requests are asked again"
    );
    for &i in &answered {
        assert_eq!(again[i].as_ref().unwrap(), results[i].as_ref().unwrap());
    }
    assert!(server.answered_counts().values().all(|&n| n == 1));
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_respected() {
    let server = FaultServer::start(FaultConfig {
        faults: FaultRates {
            rate_limit: 0.5,
            ..FaultRates::none()
        },
        retry_after: RetryAfterStyle::HttpDate(1),
        seed: 3,
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(&server);
    cfg.max_retries = 20;
    let client = Client::new(Arc::new(RemoteBackend::new(cfg).unwrap()));
    let requests: Vec<LlmRequest> = (0..20).map(|i| chat(&format!("q{i}"))).collect();
    let results = run_all(&client, &requests).await;
    assert!(results.iter().all(Result::is_ok));
    let gaps = retry_after_gaps(&server.log());
    assert!(!gaps.is_empty());
    // The date has one-second resolution; the server rounds up so the wait is >= 1 s.
    assert!(gaps.iter().all(|&g| g >= 990.0), "{gaps:?}");
}

#[tokio::test]
async fn the_retry_cap_reports_the_request_failed() {
    let server = FaultServer::start(FaultConfig {
        faults: FaultRates {
            server_error: 1.0,
            ..FaultRates::none()
        },
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(&server);
    cfg.max_retries = 2;
    let client = Client::new(Arc::new(RemoteBackend::new(cfg).unwrap()));
    let error = client.generate(&chat("doomed")).await.unwrap_err();
    assert!(
        matches!(error, LlmError::RetriesExhausted { attempts: 3, .. }),
        "{error}"
    );
    assert!(error.chain().contains("HTTP 500"), "{}", error.chain());
    assert_eq!(server.log().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keys_stay_out_of_the_cache() {
    let secret = "sk-test-very-secret-42";
    let server = FaultServer::start(FaultConfig {
        api_key: Some(secret.into()),
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let error = Client::new(Arc::new(RemoteBackend::new(config(&server)).unwrap()))
        .generate(&chat("no key"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, LlmError::Status { status: 401, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("hint: set OPENAI_API_KEY"),
        "{error}"
    );
    assert_eq!(server.log().len(), 1, "a 401 is not retried");

    let dir = tempfile::tempdir().unwrap();
    let cache_path = dir.path().join("cache.sqlite");
    let mut cfg = config(&server);
    cfg.api_key = Some(ApiKey::new(secret));
    let client = Client::new(Arc::new(RemoteBackend::new(cfg).unwrap()))
        .with_cache(Arc::new(Cache::open(&cache_path).unwrap()));
    let answer = client.generate(&chat("with key")).await.unwrap();
    assert_eq!(answer.samples[0].text, "echo[0 #0]: with key");
    assert!(!format!("{client:?}").contains(secret));
    drop(client);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the key reached the cache"
        );
    }
}

#[tokio::test]
async fn hung_connections_time_out_and_are_retried() {
    let server = FaultServer::start(FaultConfig {
        faults: FaultRates {
            hang: 0.5,
            ..FaultRates::none()
        },
        seed: 11,
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let mut cfg = config(&server);
    cfg.timeout = Duration::from_millis(200);
    cfg.max_retries = 10;
    let client = Client::new(Arc::new(RemoteBackend::new(cfg).unwrap()));
    let requests: Vec<LlmRequest> = (0..20).map(|i| chat(&format!("h{i}"))).collect();
    let results = run_all(&client, &requests).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(server.log().iter().any(|e| e.outcome == Outcome::Hung));
    assert!(server.answered_counts().values().all(|&n| n == 1));
}

#[tokio::test]
async fn servers_without_n_are_probed_once_then_fanned_out() {
    for (mode, first_call_choices) in [
        (MultiSample::Reject, 0),
        (MultiSample::Ignore, 1),
        (MultiSample::Honour, 3),
    ] {
        let server = FaultServer::start(FaultConfig {
            multi_sample: mode,
            ..FaultConfig::default()
        })
        .await
        .unwrap();
        let client = Client::new(Arc::new(RemoteBackend::new(config(&server)).unwrap()));
        let mut request = chat("sample me");
        request.params.temperature = 0.8;
        request.params.seed = 100;
        let request = request.with_samples(3);
        for round in 0..2 {
            let answer = client.generate(&request).await.unwrap();
            let indices: Vec<u32> = answer.samples.iter().map(|s| s.index).collect();
            assert_eq!(indices, [0, 1, 2], "{mode:?} round {round}");
            let texts: HashSet<String> = answer.samples.iter().map(|s| s.text.clone()).collect();
            assert_eq!(texts.len(), 3, "{mode:?}: three different samples");
        }
        let log = server.log();
        let with_n: usize = log.iter().filter(|e| e.n == 3).count();
        let singles = log.iter().filter(|e| e.n == 1).count();
        match first_call_choices {
            // Refused once, then one request per sample for both rounds.
            0 => assert_eq!((with_n, singles), (1, 6), "{mode:?}"),
            // One choice came back: two more singles, then singles only.
            1 => assert_eq!((with_n, singles), (1, 5), "{mode:?}"),
            _ => assert_eq!((with_n, singles), (2, 0), "{mode:?}"),
        }
    }
}

#[tokio::test]
async fn varied_answer_shapes_are_read_alike() {
    let server = FaultServer::start(FaultConfig {
        variations: true,
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let client = Client::new(Arc::new(RemoteBackend::new(config(&server)).unwrap()));
    let requests: Vec<LlmRequest> = (0..64).map(|i| chat(&format!("v{i}"))).collect();
    let results = run_all(&client, &requests).await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.as_ref().unwrap(), &[format!("echo[0 #0]: v{i}")]);
    }
    let text = LlmRequest::new(Prompt::Text("raw text".into()), SamplingParams::greedy(4));
    let answer = client.generate(&text).await.unwrap();
    assert_eq!(answer.samples[0].text, "echo[0 #0]: raw text");
    assert_eq!(answer.samples[0].finish_reason, FinishReason::Stop);
    let tally = &client.ledger().tallies()["fault-model"];
    assert!(tally.usage_estimated > 0 && tally.usage_estimated < tally.requests);
}

#[tokio::test]
async fn requests_per_minute_are_limited() {
    let server = FaultServer::start(FaultConfig::default()).await.unwrap();
    let mut cfg = config(&server);
    cfg.requests_per_minute = Some(600); // 10 per second, bursts of 10
    let client = Client::new(Arc::new(RemoteBackend::new(cfg).unwrap()));
    let requests: Vec<LlmRequest> = (0..30).map(|i| chat(&format!("r{i}"))).collect();
    let started = Instant::now();
    let results = run_all(&client, &requests).await;
    assert!(results.iter().all(Result::is_ok));
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        elapsed >= 1.9,
        "30 requests at 10/s (burst 10) took {elapsed:.2}s"
    );
}

#[tokio::test]
async fn tokens_per_minute_are_limited() {
    let server = FaultServer::start(FaultConfig::default()).await.unwrap();
    let mut cfg = config(&server);
    // Each request is estimated at ~5 prompt + 16 completion tokens and charged its
    // real usage afterwards (~5 + ~6): 1,200 per minute = 20 per second.
    cfg.tokens_per_minute = Some(1200);
    let client = Client::new(Arc::new(RemoteBackend::new(cfg).unwrap()));
    let requests: Vec<LlmRequest> = (0..12).map(|i| chat(&format!("t{i}"))).collect();
    let started = Instant::now();
    let results = run_all(&client, &requests).await;
    assert!(results.iter().all(Result::is_ok));
    let tally = &client.ledger().tallies()["fault-model"];
    let used = (tally.prompt_tokens + tally.completion_tokens) as f64;
    let elapsed = started.elapsed().as_secs_f64();
    // One second's worth (20 tokens) may go at once; the rest at 20 per second.
    assert!(
        elapsed >= (used - 20.0 - 21.0) / 20.0,
        "{used} tokens in {elapsed:.2}s"
    );
}

/// A fault server with the default model name whose replies to `prompt` are `reply`.
async fn scripted(prompt: &str, reply: &str) -> FaultServer {
    FaultServer::start(FaultConfig {
        script: vec![seqit_faultserver::ScriptRule {
            contains: prompt.into(),
            reply: reply.into(),
        }],
        ..FaultConfig::default()
    })
    .await
    .unwrap()
}

fn client_of(server: &FaultServer, cache: &Arc<Cache>, share: bool) -> Client {
    let backend = RemoteBackend::new(config(server)).unwrap();
    Client::new(Arc::new(backend))
        .with_cache(cache.clone())
        .share_cache_across_endpoints(share)
}

#[tokio::test]
async fn two_servers_with_the_same_model_name_do_not_share_answers() {
    let a = scripted("capital", "Paris, says server A").await;
    let b = scripted("capital", "Lyon, says server B").await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&dir.path().join("cache.sqlite")).unwrap());
    let ask = |client: Client, prompt: &'static str| async move {
        client.generate(&chat(prompt)).await.unwrap().samples[0].clone()
    };

    let first = ask(client_of(&a, &cache, false), "the capital?").await;
    assert_eq!(first.text, "Paris, says server A");
    // Same model name, same prompt, same cache file, another server: asked, not served
    // server A's answer.
    let other = ask(client_of(&b, &cache, false), "the capital?").await;
    assert_eq!(other.text, "Lyon, says server B");
    assert!(!other.cached);
    assert_eq!((a.log().len(), b.log().len()), (1, 1));
    // Each server's own answer is cached for it.
    let again = ask(client_of(&a, &cache, false), "the capital?").await;
    assert!(again.cached && again.text == "Paris, says server A");
    assert_eq!(a.log().len(), 1);
    // The same server under a URL with credentials and a query is the same endpoint.
    let mut with_secrets = config(&a);
    with_secrets.base_url = a
        .url()
        .replace("http://", "http://user:secret@")
        .replace("/v1", "/v1?token=s3cret");
    let scope = Client::new(Arc::new(RemoteBackend::new(with_secrets).unwrap()))
        .cache_scope()
        .map(str::to_string);
    assert_eq!(scope.as_deref(), Some(a.url()));

    // Asked to share, endpoints of the same model name read each other's answers.
    let shared = ask(client_of(&a, &cache, true), "the capital, shared?").await;
    assert_eq!(shared.text, "Paris, says server A");
    let from_b = ask(client_of(&b, &cache, true), "the capital, shared?").await;
    assert!(from_b.cached && from_b.text == "Paris, says server A");
    assert_eq!((a.log().len(), b.log().len()), (2, 1));
}

#[tokio::test]
async fn an_oversized_body_fails_with_a_clear_error_and_is_not_retried() {
    let big = "x".repeat(2 << 20);
    let server = scripted("huge", &big).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&dir.path().join("cache.sqlite")).unwrap());
    let mut limited = config(&server);
    limited.max_response_bytes = 1 << 20;
    limited.timeout = Duration::from_secs(10);
    let client =
        Client::new(Arc::new(RemoteBackend::new(limited).unwrap())).with_cache(cache.clone());
    let error = client.generate(&chat("a huge answer")).await.unwrap_err();
    assert!(matches!(error, LlmError::TooLarge { limit, .. } if limit == 1 << 20));
    assert_eq!(error.kind(), "response_too_large");
    let message = error.chain();
    assert!(
        message.contains(&format!(
            "the response from `{}/chat/completions` is larger than the limit of 1 MiB (1048576 bytes)",
            server.url()
        )) && message.contains("hint: raise the limit with --max-response-bytes"),
        "{message}"
    );
    assert_eq!(server.log().len(), 1, "not retried");
    assert!(cache.is_empty().unwrap(), "nothing cached");
    // Within the limit the same server answers.
    let small = client.generate(&chat("a short answer")).await.unwrap();
    assert!(small.samples[0].text.contains("a short answer"));
    // The default limit is 64 MiB.
    assert_eq!(
        RemoteConfig::new(server.url(), "m").max_response_bytes,
        64 << 20
    );
}

/// A server that ignores constraint fields (the fault server answers its script
/// whatever the request says): replies are checked, a broken one is asked again up to
/// the cap, counted in the ledger, and the last one comes back marked unmet.
#[tokio::test]
async fn constraints_are_checked_and_retried_where_the_server_ignores_them() {
    let server = FaultServer::start(FaultConfig {
        script: vec![
            seqit_faultserver::ScriptRule {
                contains: "Is it raining?".into(),
                reply: "maybe".into(),
            },
            seqit_faultserver::ScriptRule {
                contains: "Is it sunny?".into(),
                reply: "yes".into(),
            },
        ],
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let mut remote = config(&server);
    remote.max_constraint_retries = 2;
    let client = Client::new(Arc::new(RemoteBackend::new(remote).unwrap()));
    let ask = |text: &str| {
        let mut request = chat(text);
        request.params.constraint = Some(seqit_core::Constraint::Choice {
            options: vec!["yes".into(), "no".into()],
        });
        request
    };
    let good = client.generate(&ask("Is it sunny?")).await.unwrap();
    assert_eq!(good.samples[0].text, "yes");
    assert_eq!(good.samples[0].constraint_met, Some(true));
    assert_eq!(good.constraint_retries, 0);

    let bad = client.generate(&ask("Is it raining?")).await.unwrap();
    assert_eq!(bad.samples[0].text, "maybe");
    assert_eq!(bad.samples[0].constraint_met, Some(false));
    assert_eq!(bad.constraint_retries, 2);
    // One request for the good reply, three (the first and two retries) for the bad one.
    let log = server.log();
    assert_eq!(log.len(), 4);
    let tally = client.ledger().tallies()["fault-model"].clone();
    assert_eq!(tally.constraint_retries, 2);
    assert!(client.ledger().summary().contains("2 constraint retries"));
}
