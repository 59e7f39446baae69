//! The server end to end: the real default model (SmolLM2-135M-Instruct) served on an
//! ephemeral port, talked to over HTTP with reqwest.
//!
//! One server is started per test binary (loading the model once) and shared by every
//! test; tests run concurrently, so their requests are batched together, as they would
//! be in production.
//!
//! Greedy text is never compared with a fixed answer (the default model's first token
//! for the France question is a near-tie): the server's reply must equal what the engine
//! itself generates for the same request.

mod common;

use std::sync::OnceLock;

use common::{chat, client, engine, start_server, MODEL};
use reqwest::{Response, StatusCode};
use seqit_core::{ChatMessage, Completion, Prompt, SamplingParams};
use seqit_engine::GenerationRequest;
use seqit_serve::ServerConfig;
use serde_json::{json, Value};

const API_KEY: &str = "test-key-123";
const BODY_LIMIT: usize = 256 * 1024;
const FRANCE: &str = "What is the capital of France?";

/// The engine's own greedy reply to one user message (what the server must answer to a
/// `temperature: 0` request with the same `max_tokens`).
async fn engine_greedy_reply(content: &str, max_tokens: usize) -> Completion {
    let engine = engine();
    let request = GenerationRequest {
        prompt: Prompt::Chat(vec![ChatMessage::user(content)]),
        params: SamplingParams::greedy(max_tokens),
    };
    tokio::task::spawn_blocking(move || engine.generate(&[request], &mut |_, _| {}))
        .await
        .unwrap()
        .unwrap()
        .remove(0)
}

/// A completion's `finish_reason` as the API spells it.
fn wire_reason(completion: &Completion) -> Value {
    serde_json::to_value(completion.finish_reason).unwrap()
}

/// The text of the chat deltas of an SSE body.
fn streamed_chat_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let chunk: Value = serde_json::from_str(d).unwrap();
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Base URL of the server most tests share.
fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| {
        let mut config = ServerConfig::new(MODEL);
        config.api_key = Some(API_KEY.to_string());
        config.max_body_bytes = BODY_LIMIT;
        start_server(config)
    })
}

fn url(path: &str) -> String {
    format!("{}{path}", server())
}

async fn post(path: &str, body: &Value) -> Response {
    client()
        .post(url(path))
        .bearer_auth(API_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Status and JSON body of a request.
async fn post_json(path: &str, body: &Value) -> (StatusCode, Value) {
    let response = post(path, body).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .flat_map(|event| event.lines())
        .filter_map(|line| {
            line.strip_prefix("data: ")
                .or_else(|| line.strip_prefix("data:"))
        })
        .map(str::to_string)
        .collect()
}

/// Asserts an OpenAI error body and returns its `error` object.
fn error_object(body: &Value) -> &Value {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
    error
}

fn assert_usage_consistent(body: &Value) {
    let usage = &body["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(prompt > 0, "{body}");
    assert!(completion > 0, "{body}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        prompt + completion,
        "{body}"
    );
}

#[tokio::test]
async fn health_is_open_and_models_lists_the_served_name() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let health = client().get(url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let models: Value = client()
        .get(url("/v1/models"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["object"], "model");

    let one = client()
        .get(url(&format!("/v1/models/{MODEL}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), StatusCode::OK);
    let missing = client()
        .get(url("/v1/models/gpt-4o"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn greedy_chat_equals_the_engines_reply_with_consistent_usage() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let (status, body) = post_json(
        "/v1/chat/completions",
        &chat(FRANCE, json!({"temperature": 0, "max_tokens": 32})),
    )
    .await;
    let expected = engine_greedy_reply(FRANCE, 32).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL);
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], expected.text.as_str());
    assert_eq!(choice["finish_reason"], wire_reason(&expected));
    assert_usage_consistent(&body);
    assert_eq!(
        body["usage"]["completion_tokens"],
        expected.token_ids.len(),
        "{body}"
    );
    assert_eq!(
        body["usage"]["prompt_tokens"], expected.prompt_tokens,
        "{body}"
    );
}

#[tokio::test]
async fn streamed_deltas_equal_the_non_streamed_text() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let request = chat(FRANCE, json!({"temperature": 0, "max_tokens": 32}));
    let (status, whole) = post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK, "{whole}");

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = post("/v1/chat/completions", &streamed).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = response.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == MODEL));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );

    let finishing: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            c["choices"]
                .get(0)
                .is_some_and(|ch| !ch["finish_reason"].is_null())
        })
        .collect();
    assert_eq!(finishing.len(), 1);
    assert_eq!(
        finishing[0]["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], whole["usage"]);
}

#[tokio::test]
async fn n_two_returns_two_indexed_choices() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let (status, body) = post_json(
        "/v1/chat/completions",
        &chat(
            "Write one sentence about the sea.",
            json!({"n": 2, "temperature": 0.8, "seed": 11, "max_tokens": 16}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert!(
            !choice["message"]["content"].as_str().unwrap().is_empty(),
            "{body}"
        );
    }
    assert_usage_consistent(&body);
}

#[tokio::test]
async fn stop_string_cuts_the_reply_before_it() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    // A word from the middle of the engine's own greedy reply is the stop string.
    let free = engine_greedy_reply(FRANCE, 32).await;
    let words: Vec<&str> = free.text.split_whitespace().collect();
    assert!(words.len() >= 3, "the reply is too short: {:?}", free.text);
    let stop = words[words.len() / 2];
    let before = &free.text[..free.text.find(stop).unwrap()];
    assert!(!before.is_empty(), "{:?} / {stop:?}", free.text);

    let (status, body) = post_json(
        "/v1/chat/completions",
        &chat(
            FRANCE,
            json!({"temperature": 0, "max_tokens": 32, "stop": [stop]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], before, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // Streaming never sends text that the stop string later removes.
    let response = post(
        "/v1/chat/completions",
        &chat(
            FRANCE,
            json!({"temperature": 0, "max_tokens": 32, "stop": stop, "stream": true}),
        ),
    )
    .await;
    let streamed = streamed_chat_text(&response.text().await.unwrap());
    assert_eq!(streamed, before, "stop string {stop:?}");
}

#[tokio::test]
async fn max_tokens_ends_by_length() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut request = chat(
            "Tell me a long story about a dragon.",
            json!({"temperature": 0}),
        );
        request[field] = json!(5);
        let (status, body) = post_json("/v1/chat/completions", &request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 5, "{body}");
        assert_usage_consistent(&body);
    }
}

#[tokio::test]
async fn api_key_is_required() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let request = chat(FRANCE, json!({"max_tokens": 1}));
    let missing = client()
        .post(url("/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(error_object(&body)["code"], "invalid_api_key");
    assert!(!body.to_string().contains(API_KEY));

    let wrong = client()
        .post(url("/v1/chat/completions"))
        .bearer_auth("test-key-124")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert!(!body.to_string().contains("test-key-124"));
    error_object(&body);

    let models = client().get(url("/v1/models")).send().await.unwrap();
    assert_eq!(models.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn malformed_json_is_400() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let response = client()
        .post(url("/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(r#"{"messages": [{"role": "user", "content": "hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    let error = error_object(&body);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    assert_eq!(error["type"], "invalid_request_error");
}

#[tokio::test]
async fn oversized_body_is_413() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let huge = "a".repeat(4 * BODY_LIMIT);
    let (status, body) = post_json(
        "/v1/chat/completions",
        &chat(&huge, json!({"max_tokens": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let error = error_object(&body);
    assert_eq!(error["code"], "payload_too_large");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains(&BODY_LIMIT.to_string()));
}

#[tokio::test]
async fn unknown_model_is_404() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let mut request = chat(FRANCE, json!({"max_tokens": 1}));
    request["model"] = json!("gpt-4o");
    let (status, body) = post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let error = error_object(&body);
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"].as_str().unwrap().contains("gpt-4o"));

    // Leniently, no model at all means the served one.
    let mut request = chat(FRANCE, json!({"max_tokens": 1}));
    request.as_object_mut().unwrap().remove("model");
    let (status, body) = post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn invalid_fields_are_400_naming_the_field() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let cases = [
        (json!({"model": MODEL}), "messages"),
        (json!({"messages": []}), "messages"),
        (json!({"messages": "hi"}), "messages"),
        (json!({"messages": [{"content": "hi"}]}), "messages[0].role"),
        (chat("hi", json!({"temperature": -0.5})), "temperature"),
        (chat("hi", json!({"temperature": "warm"})), "temperature"),
        (chat("hi", json!({"top_p": 0})), "top_p"),
        (chat("hi", json!({"max_tokens": 0})), "max_tokens"),
        (chat("hi", json!({"n": 0})), "n"),
        (chat("hi", json!({"stop": 5})), "stop"),
    ];
    for (request, field) in cases {
        let (status, body) = post_json("/v1/chat/completions", &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        let error = error_object(&body);
        assert_eq!(error["param"], field, "{request}: {body}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{request}: {body}"
        );
    }
}

#[tokio::test]
async fn prompt_longer_than_the_context_is_400() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let long = "hello ".repeat(9000);
    let (status, body) = post_json(
        "/v1/chat/completions",
        &chat(&long, json!({"max_tokens": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error = error_object(&body);
    assert_eq!(error["code"], "context_length_exceeded");
    assert!(
        error["message"].as_str().unwrap().contains("8192"),
        "{body}"
    );
}

#[tokio::test]
async fn text_completion_continues_a_raw_prompt() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let (status, body) = post_json(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "max_tokens": 6, "temperature": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with(" 6"), "{text}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_usage_consistent(&body);
    assert_eq!(body["usage"]["completion_tokens"], 6);

    // A list of prompts: one choice per prompt, in order; streaming gives the same text.
    let request = json!({"prompt": ["1, 2, 3, 4, 5,", "Monday, Tuesday,"], "max_tokens": 4, "temperature": 0});
    let (status, whole) = post_json("/v1/completions", &request).await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    assert_eq!(whole["choices"].as_array().unwrap().len(), 2);
    assert_eq!(whole["choices"][1]["index"], 1);
    assert!(
        whole["choices"][1]["text"]
            .as_str()
            .unwrap()
            .contains("Wednesday"),
        "{whole}"
    );

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let data = sse_data(
        &post("/v1/completions", &streamed)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(data.last().unwrap(), "[DONE]");
    let mut texts = [String::new(), String::new()];
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        assert_eq!(chunk["object"], "text_completion");
        let choice = &chunk["choices"][0];
        texts[choice["index"].as_u64().unwrap() as usize]
            .push_str(choice["text"].as_str().unwrap());
    }
    assert_eq!(texts[0], whole["choices"][0]["text"].as_str().unwrap());
    assert_eq!(texts[1], whole["choices"][1]["text"].as_str().unwrap());
}

#[tokio::test]
async fn sixteen_concurrent_requests_are_all_answered() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let topics = [
        "cats", "dogs", "rain", "the moon", "bread", "music", "trains", "snow", "coffee", "books",
        "rivers", "bees", "chess", "tea", "forests", "stars",
    ];
    let requests = topics.iter().enumerate().map(|(i, topic)| async move {
        let request = chat(
            &format!("Say something about {topic}."),
            json!({"max_tokens": 12, "temperature": 0.7, "seed": i}),
        );
        post_json("/v1/chat/completions", &request).await
    });
    let answers = futures::future::join_all(requests).await;
    assert_eq!(answers.len(), 16);
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            !body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .trim()
                .is_empty(),
            "{body}"
        );
        assert_usage_consistent(&body);
    }
}

#[tokio::test]
async fn a_client_leaving_mid_stream_harms_nothing() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let mut response = post(
        "/v1/chat/completions",
        &chat(
            "Tell me a long story about a dragon.",
            json!({"max_tokens": 32, "stream": true}),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Read the first event, then hang up.
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    drop(response);

    // The next request is answered in full, as the engine answers it.
    let (status, body) = post_json(
        "/v1/chat/completions",
        &chat(FRANCE, json!({"temperature": 0, "max_tokens": 32})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = engine_greedy_reply(FRANCE, 32).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        expected.text.as_str()
    );
}

#[tokio::test]
async fn huge_max_tokens_are_capped_by_the_server_and_never_overflow() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    // The shared server's default limit (4096) lowers u64::MAX; the reply is the
    // engine's, which ends long before.
    let request = chat(FRANCE, json!({"temperature": 0, "max_tokens": u64::MAX}));
    let (status, body) = post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = engine_greedy_reply(FRANCE, 4096).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        expected.text.as_str()
    );

    // Without a limit the engine itself gets usize::MAX (a debug build checks every
    // addition for overflow).
    let mut config = ServerConfig::new(MODEL);
    config.max_tokens_limit = usize::MAX;
    let unlimited = start_server(config);
    let response = client()
        .post(format!("{unlimited}/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        expected.text.as_str()
    );

    // A small limit caps what a request asks for.
    let mut config = ServerConfig::new(MODEL);
    config.max_tokens_limit = 3;
    let capped = start_server(config);
    let response = client()
        .post(format!("{capped}/v1/completions"))
        .json(&json!({"prompt": "1, 2, 3,", "max_tokens": 100, "ignore_eos": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
}

#[tokio::test]
async fn unknown_routes_get_openai_errors() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let response = client()
        .get(url("/v1/embeddings"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    error_object(&response.json().await.unwrap());
    let response = client()
        .get(url("/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    error_object(&response.json().await.unwrap());
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    // A server of its own whose queue holds two sequences.
    let mut config = ServerConfig::new(MODEL);
    config.max_queued_sequences = 2;
    let base = start_server(config);
    let busy = json!({"messages": [{"role": "user", "content": "Count to one hundred."}],
                      "n": 2, "max_tokens": 32, "ignore_eos": true, "stream": true});
    let first = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&busy)
        .send()
        .await
        .unwrap();
    // Streaming headers arrive once the job is queued, so the queue is full now.
    assert_eq!(first.status(), StatusCode::OK);

    let second = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat(FRANCE, json!({"max_tokens": 1})))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers()["retry-after"], "1");
    let body: Value = second.json().await.unwrap();
    assert_eq!(error_object(&body)["type"], "server_overloaded");

    // Asking for more sequences than the queue can ever hold is the client's mistake.
    let (status, body) = {
        let response = client()
            .post(format!("{base}/v1/chat/completions"))
            .json(&chat(FRANCE, json!({"n": 3, "max_tokens": 1})))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_object(&body)["param"], "n");

    // Once the first request is done, its places are free again.
    let data = sse_data(&first.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat(FRANCE, json!({"max_tokens": 1})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

// ---- structured outputs and log-probabilities ----

/// Asserts a 400 whose error names `param`.
async fn assert_rejected(body: Value, param: &str) {
    let (status, body) = post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_object(&body)["param"], param, "{body}");
}

#[tokio::test]
async fn every_constraint_dialect_shapes_the_reply() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let schema = json!({"type": "object",
        "properties": {"capital": {"type": "string", "maxLength": 30}, "sure": {"type": "boolean"}},
        "required": ["capital", "sure"], "additionalProperties": false});
    let validator = jsonschema::validator_for(&schema).unwrap();
    let dialects = [
        json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "answer", "strict": true, "schema": schema}}}),
        json!({"guided_json": schema}),
        json!({"structured_outputs": {"json": schema}}),
        json!({"json_schema": schema}),
    ];
    for extra in dialects {
        let mut extra = extra;
        extra["max_tokens"] = json!(60);
        extra["temperature"] = json!(0);
        let (status, body) = post_json("/v1/chat/completions", &chat(FRANCE, extra.clone())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        let value: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(validator.is_valid(&value), "{extra}: {content}");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
    }
    let (_, body) = post_json(
        "/v1/chat/completions",
        &chat(
            FRANCE,
            json!({"guided_choice": ["Paris", "Lyon", "Rome"], "max_tokens": 8}),
        ),
    )
    .await;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(["Paris", "Lyon", "Rome"].contains(&content), "{content}");
    let (_, body) = post_json(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "The year is", "max_tokens": 12,
                "structured_outputs": {"regex": " [12][0-9]{3}\\."}}),
    )
    .await;
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert!(
        regex::Regex::new(r"^ [12][0-9]{3}\.$")
            .unwrap()
            .is_match(text),
        "{text}"
    );
}

#[tokio::test]
async fn bad_constraints_get_400_naming_the_field() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    assert_rejected(
        chat(FRANCE, json!({"guided_regex": "(unclosed"})),
        "guided_regex",
    )
    .await;
    assert_rejected(
        chat(FRANCE, json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": 7}}}}}})),
        "response_format",
    )
    .await;
    assert_rejected(
        chat(
            FRANCE,
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        ),
        "response_format.json_schema.schema",
    )
    .await;
    assert_rejected(
        chat(FRANCE, json!({"guided_choice": ["a"], "guided_regex": "a"})),
        "guided_choice",
    )
    .await;
    assert_rejected(
        chat(FRANCE, json!({"guided_grammar": "start: missing"})),
        "guided_grammar",
    )
    .await;
    assert_rejected(chat(FRANCE, json!({"top_logprobs": 2})), "top_logprobs").await;
    assert_rejected(
        chat(FRANCE, json!({"logprobs": true, "top_logprobs": 21})),
        "top_logprobs",
    )
    .await;
}

#[tokio::test]
async fn logprobs_come_back_in_chat_completions_and_streams() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let request = chat(
        FRANCE,
        json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 8, "temperature": 0}),
    );
    let (status, body) = post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(
        content.len() as u64,
        body["usage"]["completion_tokens"].as_u64().unwrap()
            - u64::from(body["choices"][0]["finish_reason"] == "stop")
    );
    let spelled: Vec<u8> = content
        .iter()
        .flat_map(|t| {
            t["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
        })
        .collect();
    assert_eq!(
        String::from_utf8(spelled).unwrap(),
        body["choices"][0]["message"]["content"]
    );
    for token in content {
        let top = token["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the best alternative.
        assert_eq!(top[0]["logprob"], token["logprob"]);
        assert!(token["logprob"].as_f64().unwrap() <= 0.0);
    }

    // Streamed: the log-probabilities of the whole choice, in its last chunk.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let response = post("/v1/chat/completions", &streamed).await;
    let data = sse_data(&response.text().await.unwrap());
    let tokens: Vec<Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["logprobs"]["content"]
                .as_array()
                .cloned()
        })
        .flatten()
        .collect();
    assert_eq!(&tokens, content);

    // Legacy completions: tokens, token_logprobs, top_logprobs maps, text offsets.
    let (_, body) = post_json(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "One, two,", "max_tokens": 5, "temperature": 0,
                "logprobs": 2, "ignore_eos": true}),
    )
    .await;
    let logprobs = &body["choices"][0]["logprobs"];
    assert_eq!(logprobs["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(logprobs["token_logprobs"].as_array().unwrap().len(), 5);
    assert_eq!(logprobs["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert_eq!(logprobs["text_offset"][0], 0);
}

/// A request's `chat_template_kwargs` (vLLM's extension) are rendered with the template:
/// variables it does not read change nothing (the same prompt tokens and reply as the
/// engine's own rendering), names the renderer owns and non-objects are 400s naming the
/// field.
#[tokio::test]
async fn chat_template_kwargs_render_with_the_template() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let (status, body) = post_json(
        "/v1/chat/completions",
        &chat(
            FRANCE,
            json!({"temperature": 0, "max_tokens": 8, "chat_template_kwargs": {"enable_thinking": false}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expected = engine_greedy_reply(FRANCE, 8).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        expected.text.as_str()
    );
    assert_eq!(
        body["usage"]["prompt_tokens"], expected.prompt_tokens,
        "{body}"
    );
    for kwargs in [json!({"messages": []}), json!({"a-b": 1}), json!(5)] {
        let request = chat(FRANCE, json!({"chat_template_kwargs": kwargs}));
        let (status, body) = post_json("/v1/chat/completions", &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        assert_eq!(
            error_object(&body)["param"],
            "chat_template_kwargs",
            "{body}"
        );
    }
}
