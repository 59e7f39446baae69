//! `GET /metrics` on a real loopback server over the default model: Prometheus text with
//! request and token counters and the engine's prefix cache, which a repeated long
//! prompt hits.

mod common;

use std::collections::HashMap;

use common::{client, load_engine, start_server_with};
use reqwest::StatusCode;
use seqit_engine::EngineOptions;
use seqit_serve::ServerConfig;
use serde_json::{json, Value};

const API_KEY: &str = "metrics-key";

/// The samples of a Prometheus text body, checking that each has HELP and TYPE lines.
fn parse(body: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(' ').expect("`name value`");
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} has no TYPE"
        );
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        samples.insert(name.to_string(), value.parse().unwrap());
    }
    samples
}

async fn metrics(base: &str) -> HashMap<String, f64> {
    // No API key: scrapers reach it like /health.
    let response = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    parse(&response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_prefix_cache_hits() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let engine = load_engine(EngineOptions {
        prefix_cache_mib: 32,
        ..EngineOptions::default()
    });
    let mut config = ServerConfig::new("smollm2-135m");
    config.api_key = Some(API_KEY.to_string());
    let base = format!("http://{}", start_server_with(engine, config));

    let before = metrics(&base).await;
    assert_eq!(before["seqit_requests_total"], 0.0);
    assert_eq!(before["seqit_prefix_cache_hit_tokens_total"], 0.0);
    assert_eq!(
        before["seqit_prefix_cache_capacity_bytes"],
        (32u64 << 20) as f64
    );

    // A long fixed system prompt, sent twice: the second request reuses its prefix.
    let rubric: String = (1..=12)
        .map(|i| format!("Rule {i}: judge whether step {i} of the answer was followed. "))
        .collect();
    let body = json!({
        "messages": [{"role": "system", "content": rubric}, {"role": "user", "content": "Hi"}],
        "max_tokens": 4,
    });
    let mut generated = 0.0;
    let mut prompt = 0.0;
    for _ in 0..2 {
        let response = client()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        generated += answer["usage"]["completion_tokens"].as_f64().unwrap();
        prompt += answer["usage"]["prompt_tokens"].as_f64().unwrap();
    }

    let after = metrics(&base).await;
    assert_eq!(after["seqit_requests_total"], 2.0);
    assert_eq!(after["seqit_request_failures_total"], 0.0);
    assert_eq!(after["seqit_generated_tokens_total"], generated);
    assert_eq!(after["seqit_prompt_tokens_total"], prompt);
    assert_eq!(after["seqit_prefix_cache_prompt_tokens_total"], prompt);
    let hits = after["seqit_prefix_cache_hit_tokens_total"];
    assert!(hits > 100.0 && hits < prompt / 2.0, "hit tokens {hits}");
    assert!(after["seqit_prefix_cache_bytes"] > 0.0);
    assert!(after["seqit_prefix_cache_blocks"] > 0.0);
    assert_eq!(after["seqit_prefix_cache_evictions_total"], 0.0);
}
