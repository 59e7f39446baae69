//! OpenAI Batch API files.
//!
//! [`export_line`] writes one request line (`custom_id`, `method`, `url`, `body`) per
//! sample, with the same body the online client would send, so the file works with
//! OpenAI's Batch API and with `vllm run-batch`. The `custom_id` is
//! `<record id>/<sample index>/<cache key>`; [`import_results`] reads a results file
//! (`{"custom_id", "response": {"status_code", "body"}, "error"}` per line) and stores
//! every successful answer in the request cache under that key, so that the same job run
//! online afterwards finds everything answered.

use std::io::BufRead;

use serde::Serialize;
use serde_json::Value;

use crate::cache::{Cache, CacheKey, CachedAnswer};
use crate::error::LlmError;
use crate::remote::wire::{self, parse_answer, RequestBody};
use crate::types::{EndpointKind, LlmRequest};

#[derive(Serialize)]
struct RequestLine<'a> {
    custom_id: String,
    method: &'static str,
    url: String,
    body: RequestBody<'a>,
}

/// The `custom_id` of sample `index` of the record with id `record_id`.
pub fn custom_id(record_id: &str, index: u32, key: &CacheKey) -> String {
    format!("{record_id}/{index}/{}", key.to_hex())
}

/// One Batch API request line (without newline) asking for sample
/// `request.first_sample` of `request`.
pub fn export_line(model: &str, request: &LlmRequest, record_id: &str, key: &CacheKey) -> String {
    let single = request.for_samples(request.first_sample, 1);
    let line = RequestLine {
        custom_id: custom_id(record_id, request.first_sample, key),
        method: "POST",
        url: format!("/v1{}", request.kind().path()),
        body: RequestBody::new(model, &single).with_constraint(&single),
    };
    serde_json::to_string(&line).expect("request lines serialize")
}

/// What [`import_results`] did.
#[derive(Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Answers stored in the cache.
    pub imported: u64,
    /// Requests the batch did not answer: `(custom_id, message)`.
    pub failed: Vec<(String, String)>,
}

/// Reads a Batch API results file into the cache. Lines that are not results of a seqit
/// export are errors naming the line; requests that failed in the batch are reported,
/// never cached.
pub fn import_results(
    reader: impl BufRead,
    source: &str,
    cache: &Cache,
) -> Result<ImportReport, LlmError> {
    let mut report = ImportReport::default();
    let mut answers = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let at = format!("{source}:{}", number + 1);
        let line = line.map_err(|e| LlmError::Invalid(format!("{at}: cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| LlmError::Invalid(format!("{at}: invalid JSON: {e}")))?;
        let custom_id = value["custom_id"]
            .as_str()
            .ok_or_else(|| LlmError::Invalid(format!("{at}: missing string field `custom_id`")))?;
        let (index, key) = parse_custom_id(custom_id).ok_or_else(|| {
            LlmError::Invalid(format!(
                "{at}: `custom_id` `{custom_id}` was not written by `seqit batch export` \
                 (expected `<id>/<sample>/<64 hex digits>`)"
            ))
        })?;
        let response = &value["response"];
        let status = response["status_code"].as_u64();
        let body = &response["body"];
        if status != Some(200) || !value["error"].is_null() {
            let message = if !value["error"].is_null() {
                wire::error_message(&value["error"])
            } else if let Some(error) = body.get("error") {
                format!(
                    "HTTP {}: {}",
                    status.unwrap_or(0),
                    wire::error_message(error)
                )
            } else {
                format!(
                    "HTTP {}",
                    status.map_or("(none)".to_string(), |s| s.to_string())
                )
            };
            report.failed.push((custom_id.to_string(), message));
            continue;
        }
        let bytes = serde_json::to_vec(body).expect("JSON re-serializes");
        let empty = seqit_core::Prompt::Text(String::new());
        match parse_answer(&bytes, index, 1, &empty) {
            Ok((samples, _usage)) => {
                let kind = if body["object"].as_str() == Some("text_completion") {
                    EndpointKind::Completions
                } else {
                    EndpointKind::Chat
                };
                let model = body["model"].as_str().unwrap_or("batch").to_string();
                let sample = samples
                    .into_iter()
                    .next()
                    .expect("a parsed answer has a sample");
                answers.push((
                    key,
                    CachedAnswer {
                        model,
                        kind,
                        sample,
                    },
                ));
            }
            Err(error) => report
                .failed
                .push((custom_id.to_string(), format!("{error:?}"))),
        }
    }
    cache.put_many(&answers)?;
    report.imported = answers.len() as u64;
    Ok(report)
}

fn parse_custom_id(custom_id: &str) -> Option<(u32, CacheKey)> {
    let mut parts = custom_id.rsplitn(3, '/');
    let key = CacheKey::from_hex(parts.next()?)?;
    let index = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((index, key))
}

#[cfg(test)]
mod tests {
    use seqit_core::{ChatMessage, Prompt, SamplingParams};
    use serde_json::json;

    use super::*;

    #[test]
    fn export_then_import_fills_the_cache() {
        let request = LlmRequest::new(
            Prompt::Chat(vec![ChatMessage::user("hi")]),
            SamplingParams::greedy(8),
        )
        .with_samples(2)
        .for_samples(1, 1);
        let key = CacheKey::new(
            None,
            EndpointKind::Chat,
            "m",
            &request.prompt,
            &request.params,
            1,
            "",
        );
        let line: Value = serde_json::from_str(&export_line("m", &request, "rec/7", &key)).unwrap();
        assert_eq!(line["method"], "POST");
        assert_eq!(line["url"], "/v1/chat/completions");
        assert_eq!(line["body"]["model"], "m");
        assert_eq!(line["body"]["seed"], 1);
        assert!(line["body"].get("n").is_none());
        let custom_id = line["custom_id"].as_str().unwrap();
        assert_eq!(parse_custom_id(custom_id), Some((1, key)));

        let results = [
            json!({"id": "b1", "custom_id": custom_id, "response": {"status_code": 200, "request_id": "r", "body": {"object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}}, "error": null}),
            json!({"id": "b2", "custom_id": format!("x/0/{}", "ab".repeat(32)), "response": {"status_code": 429, "body": {"error": {"message": "quota"}}}, "error": null}),
            json!({"id": "b3", "custom_id": format!("y/0/{}", "cd".repeat(32)), "response": null, "error": {"code": "expired", "message": "batch expired"}}),
        ];
        let text: String = results.iter().map(|r| format!("{r}\n")).collect();
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c.sqlite")).unwrap();
        let report = import_results(text.as_bytes(), "results.jsonl", &cache).unwrap();
        assert_eq!(report.imported, 1);
        assert_eq!(report.failed.len(), 2);
        assert!(report.failed[0].1.contains("429") && report.failed[0].1.contains("quota"));
        assert_eq!(report.failed[1].1, "batch expired");
        let answer = cache.get(&key).unwrap().unwrap();
        assert_eq!(answer.sample.text, "hello");
        assert_eq!(answer.sample.index, 1);
        assert_eq!(cache.len().unwrap(), 1);

        let bad = import_results(&b"{\"custom_id\": \"request-1\"}\n"[..], "r.jsonl", &cache)
            .unwrap_err();
        assert!(bad.to_string().contains("r.jsonl:1"), "{bad}");
        let bad = import_results(&b"\n{oops\n"[..], "r.jsonl", &cache).unwrap_err();
        assert!(bad.to_string().contains("r.jsonl:2: invalid JSON"), "{bad}");
    }
}
