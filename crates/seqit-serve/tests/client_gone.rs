//! Generation that nobody waits for stops: a client that hangs up mid-stream frees the
//! engine at the next decode step, and a request that reaches its deadline ends there
//! with the text it has. Real loopback servers over the default model; the tests take
//! turns, since they time generation.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{chat, client, start_server, MODEL};
use reqwest::{Client, StatusCode};
use seqit_serve::ServerConfig;
use serde_json::{json, Value};

/// One test at a time: each measures how long generation takes.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a non-streamed chat request takes, and its answer.
async fn timed(client: &Client, base: &str, body: &Value) -> (Duration, Value) {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    (started.elapsed(), answer)
}

/// The samples of the server's `/metrics`.
async fn metrics(client: &Client, base: &str) -> HashMap<String, f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split_once(' '))
        .map(|(name, value)| (name.to_string(), value.parse().unwrap()))
        .collect()
}

/// A request that would keep the engine busy for minutes.
fn endless(stream: bool) -> Value {
    chat(
        "Count from one to one thousand.",
        json!({"temperature": 0, "max_tokens": 4000, "ignore_eos": true, "stream": stream}),
    )
}

#[tokio::test]
async fn an_abandoned_stream_frees_the_engine_within_one_decode_step() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let _turn = TURN.lock().await;
    let base = start_server(ServerConfig::new(MODEL));
    let client = client();
    let one_token = chat(
        "What is the capital of France?",
        json!({"temperature": 0, "max_tokens": 1}),
    );

    // The unloaded latency of a one-token request (best of three, after a warm-up), and
    // the time of one decode step.
    timed(&client, &base, &one_token).await;
    let mut unloaded = Duration::MAX;
    for _ in 0..3 {
        unloaded = unloaded.min(timed(&client, &base, &one_token).await.0);
    }
    let steps = |n: u64| {
        chat(
            "Count to ten.",
            json!({"temperature": 0, "max_tokens": n, "ignore_eos": true}),
        )
    };
    let (one, _) = timed(&client, &base, &steps(1)).await;
    let (many, _) = timed(&client, &base, &steps(33)).await;
    let step = many.saturating_sub(one) / 32;

    // A long stream, abandoned once text arrives (the engine is decoding it).
    let mut response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&endless(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = String::new();
    while !received.contains("\"content\":\"") || received.matches("data: ").count() < 3 {
        let chunk = response.chunk().await.unwrap().expect("the stream goes on");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);

    let (loaded, answer) = timed(&client, &base, &one_token).await;
    assert_eq!(answer["usage"]["completion_tokens"], 1);
    eprintln!(
        "unloaded {:.1} ms, one decode step {:.1} ms, after an abandoned stream {:.1} ms",
        unloaded.as_secs_f64() * 1e3,
        step.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3
    );
    // Without cancellation it would wait for ~4000 decode steps. Allow the step under
    // way when the client left, one more, and scheduling noise.
    let allowed = unloaded * 2 + step * 2 + Duration::from_millis(250);
    assert!(
        loaded <= allowed,
        "the next request took {loaded:?} (unloaded {unloaded:?}, one step {step:?})"
    );

    let counts = metrics(&client, &base).await;
    assert_eq!(counts["seqit_cancelled_sequences_total"], 1.0);
    // Only the answered requests count: the warm-up, three, two, and the last one.
    assert_eq!(counts["seqit_requests_total"], 7.0);
}

#[tokio::test]
async fn a_request_past_its_deadline_ends_with_the_text_it_has() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let _turn = TURN.lock().await;
    let mut config = ServerConfig::new(MODEL);
    config.request_timeout = Duration::from_secs(1);
    let base = start_server(config);
    let client = client();

    let (took, answer) = timed(&client, &base, &endless(false)).await;
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "length", "{answer}");
    let tokens = answer["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(tokens > 0 && tokens < 4000, "{answer}");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());

    // Streamed: the last choice chunk carries `length`, then [DONE].
    let started = Instant::now();
    let body = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&endless(true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert!(body.contains("\"finish_reason\":\"length\""), "{body}");

    let counts = metrics(&client, &base).await;
    assert_eq!(counts["seqit_timed_out_sequences_total"], 2.0);
    assert_eq!(counts["seqit_cancelled_sequences_total"], 0.0);
}
