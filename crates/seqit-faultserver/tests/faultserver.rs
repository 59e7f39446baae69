//! The fault server over real HTTP: scripted replies, deterministic faults, the request
//! log and counts, each kind of fault as a client sees it.

use std::time::{Duration, Instant};

use seqit_faultserver::{
    request_key, FaultConfig, FaultRates, FaultServer, MultiSample, Outcome, RetryAfterStyle,
    ScriptRule,
};
use serde_json::{json, Value};

fn chat(text: &str) -> Value {
    json!({"model": "m", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": text}], "max_tokens": 8})
}

async fn post(server: &FaultServer, body: &Value) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", server.url()))
        .timeout(Duration::from_millis(500))
        .json(body)
        .send()
        .await
}

#[tokio::test]
async fn scripted_replies_and_default_echo() {
    let server = FaultServer::start(FaultConfig {
        script: vec![
            ScriptRule {
                contains: "capital of France".into(),
                reply: "Paris.".into(),
            },
            ScriptRule {
                contains: "sys".into(),
                reply: "matched the system prompt".into(),
            },
        ],
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let answer: Value = post(&server, &chat("What is the capital of France?"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Paris.");
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    // The second rule matches any message, the system one included.
    let answer: Value = post(&server, &chat("anything"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "matched the system prompt"
    );

    let plain = FaultServer::start(FaultConfig::default()).await.unwrap();
    let mut body = chat("hi");
    body["n"] = json!(2);
    body["seed"] = json!(5);
    let answer: Value = post(&plain, &body).await.unwrap().json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo[5 #0]: hi");
    assert_eq!(answer["choices"][1]["message"]["content"], "echo[5 #1]: hi");
    let models: Value = reqwest::get(format!("{}/models", plain.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "fault-model");
}

#[tokio::test]
async fn faults_depend_only_on_seed_request_and_attempt() {
    let config = FaultConfig {
        faults: FaultRates::uniform(0.7),
        hang_for: Duration::from_secs(1),
        seed: 5,
        ..FaultConfig::default()
    };
    let mut sequences = Vec::new();
    for _ in 0..2 {
        let server = FaultServer::start(config.clone()).await.unwrap();
        for i in 0..30 {
            for _ in 0..3 {
                let _ = post(&server, &chat(&format!("q{i}"))).await;
            }
        }
        let mut log = server.log();
        log.sort_by(|a, b| (&a.key, a.attempt).cmp(&(&b.key, b.attempt)));
        sequences.push(
            log.into_iter()
                .map(|e| (e.key, e.attempt, e.outcome))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(sequences[0], sequences[1]);
    assert_eq!(sequences[0].len(), 90);
    // The server's key is the content hash of the request, whatever the field order.
    assert_eq!(
        sequences[0]
            .iter()
            .filter(|(k, _, _)| *k == request_key("chat", &chat("q0")))
            .count(),
        3
    );
}

#[tokio::test]
async fn every_fault_looks_like_it_should() {
    async fn one(
        faults: FaultRates,
    ) -> (
        FaultServer,
        Result<(u16, Option<String>, Result<bytes::Bytes, String>), String>,
    ) {
        let server = FaultServer::start(FaultConfig {
            faults,
            retry_after: RetryAfterStyle::Seconds(3),
            hang_for: Duration::from_secs(5),
            ..FaultConfig::default()
        })
        .await
        .unwrap();
        let result = match post(&server, &chat("x")).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                Ok((
                    status,
                    retry,
                    response.bytes().await.map_err(|e| e.to_string()),
                ))
            }
            Err(e) => Err(e.to_string()),
        };
        (server, result)
    }
    let none = FaultRates::none();
    let (_, r) = one(FaultRates {
        rate_limit: 1.0,
        ..none
    })
    .await;
    let (status, retry, _) = r.unwrap();
    assert_eq!((status, retry.as_deref()), (429, Some("3")));
    let (_, r) = one(FaultRates {
        server_error: 1.0,
        ..none
    })
    .await;
    assert_eq!(r.unwrap().0, 500);
    let (_, r) = one(FaultRates {
        unavailable: 1.0,
        ..none
    })
    .await;
    assert_eq!(r.unwrap().0, 503);
    let (_, r) = one(FaultRates {
        truncate: 1.0,
        ..none
    })
    .await;
    let (status, _, body) = r.unwrap();
    assert_eq!(status, 200);
    assert!(body.is_err(), "the body is cut off");
    let (_, r) = one(FaultRates {
        malformed: 1.0,
        ..none
    })
    .await;
    let body = r.unwrap().2.unwrap();
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    let (_, r) = one(FaultRates {
        empty_choices: 1.0,
        ..none
    })
    .await;
    let body: Value = serde_json::from_slice(&r.unwrap().2.unwrap()).unwrap();
    assert_eq!(body["choices"], json!([]));
    let started = Instant::now();
    let (server, r) = one(FaultRates { hang: 1.0, ..none }).await;
    assert!(
        r.is_err() && started.elapsed() >= Duration::from_millis(500),
        "the client timed out"
    );
    assert_eq!(server.log()[0].outcome, Outcome::Hung);
    assert_eq!(server.stats().by_outcome["hung"], 1);
}

#[tokio::test]
async fn logs_count_answers_and_enforce_keys_and_n_modes() {
    let server = FaultServer::start(FaultConfig {
        api_key: Some("k".into()),
        multi_sample: MultiSample::Reject,
        latency: Duration::from_millis(20),
        ..FaultConfig::default()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.url());
    assert_eq!(
        client
            .post(&url)
            .json(&chat("a"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    for _ in 0..2 {
        let status = client
            .post(&url)
            .bearer_auth("k")
            .json(&chat("a"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let mut with_n = chat("b");
    with_n["n"] = json!(3);
    assert_eq!(
        client
            .post(&url)
            .bearer_auth("k")
            .json(&with_n)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        client
            .post(&url)
            .bearer_auth("k")
            .body("{not json")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    let log = server.log();
    let outcomes: Vec<Outcome> = log.iter().map(|e| e.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Unauthorized,
            Outcome::Answered,
            Outcome::Answered,
            Outcome::BadRequest,
            Outcome::BadRequest
        ]
    );
    assert_eq!((log[1].attempt, log[2].attempt), (1, 2));
    assert_eq!(log[1].prompt, "a");
    assert!(log[2].at_ms - log[1].at_ms >= 20.0, "latency applies");
    let counts = server.answered_counts();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [2]);
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.answered_keys, stats.duplicate_answers),
        (5, 1, 1)
    );
    let over_http: Vec<Value> = reqwest::get(format!(
        "{}/_fault/log",
        server.url().trim_end_matches("/v1")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(over_http.len(), 5);
}
