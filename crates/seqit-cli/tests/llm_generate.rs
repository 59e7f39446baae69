//! `seqit generate --endpoint` and `seqit batch` as real processes against the
//! fault-injecting server: faults survived, resume from the cache, failures reported,
//! dry runs, Batch API export/import, API keys kept out of every file.

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use seqit_faultserver::{BackgroundFaultServer, FaultConfig, FaultRates, Outcome};
use seqit_testkit::cli::{stderr, stdout, Seqit};
use seqit_testkit::read_jsonl;
use serde_json::json;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn write_prompts(path: &Path, count: usize) {
    let text: String = (0..count)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": format!("r{i}"), "prompt": format!("question {i}")})
            )
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

fn server(faults: FaultRates) -> BackgroundFaultServer {
    BackgroundFaultServer::start(FaultConfig {
        latency: Duration::from_millis(1),
        faults,
        seed: 9,
        ..FaultConfig::default()
    })
    .unwrap()
}

#[test]
fn faults_are_survived_and_a_rerun_asks_nothing() {
    let server = server(FaultRates::uniform(0.3));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    write_prompts(&input, 120);
    let args = [
        "generate",
        "--endpoint",
        server.url(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--max-tokens",
        "16",
        "--timeout",
        "0.5",
        "--max-retries",
        "12",
        "--concurrency",
        "32",
        "--backoff",
        "0.02",
    ];
    let run = SEQIT.output(args);
    assert!(run.status.success(), "{}", stderr(&run));
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 120);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["id"], format!("r{i}"));
        assert_eq!(record["output"], format!("echo[0 #0]: question {i}"));
        assert_eq!(record["finish_reason"], "stop");
    }
    // The model was asked from /v1/models; the summary names it.
    assert!(
        stderr(&run).contains("model `fault-model`: 120 requests"),
        "{}",
        stderr(&run)
    );
    assert!(
        dir.path().join("seqit-cache.sqlite").exists(),
        "the cache defaults to the output's directory"
    );
    assert!(server.answered_counts().values().all(|&n| n == 1));
    let asked = server.log().len();

    // Same command again: everything from the cache, nothing sent but the model lookup.
    std::fs::remove_file(&output).unwrap();
    let again = SEQIT.output(args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(server.log().len(), asked);
    assert!(
        stderr(&again).contains("0 requests (0 attempts)"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("120 samples from the cache"),
        "{}",
        stderr(&again)
    );
    assert_eq!(read_jsonl(&output), records);

    // --no-cache asks again.
    let fresh = SEQIT.output([&args[..], &["--no-cache"]].concat());
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    assert!(server.log().len() > asked);
}

#[test]
fn failed_records_are_reported_kept_out_of_the_output_and_retried_on_rerun() {
    let server = server(FaultRates {
        server_error: 0.5,
        ..FaultRates::none()
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    write_prompts(&input, 40);
    let base = [
        "generate",
        "--endpoint",
        server.url(),
        "--model",
        "fault-model",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--backoff",
        "0.02",
    ];
    let run = SEQIT.output([&base[..], &["--max-retries", "0"]].concat());
    assert!(!run.status.success());
    let message = stderr(&run);
    assert!(
        message.contains("records failed after every retry"),
        "{message}"
    );
    assert!(
        message.contains("hint: run the same command again"),
        "{message}"
    );
    assert!(!output.exists(), "no output while records are missing");
    let errors = read_jsonl(&dir.path().join("out.jsonl.errors.jsonl"));
    let partial = read_jsonl(&dir.path().join("out.jsonl.partial"));
    assert!(!errors.is_empty() && !partial.is_empty());
    assert_eq!(
        errors.len() + partial.len(),
        40,
        "every record answered or reported failed"
    );
    assert!(errors
        .iter()
        .all(|e| e["kind"] == "http_status" && e["error"].as_str().unwrap().contains("HTTP 500")));
    let failed: HashSet<String> = errors
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();

    let rerun = SEQIT.output([&base[..], &["--max-retries", "30"]].concat());
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert!(
        stderr(&rerun).contains(&format!("resuming: {} of 40", partial.len())),
        "{}",
        stderr(&rerun)
    );
    assert_eq!(read_jsonl(&output).len(), 40);
    assert!(!dir.path().join("out.jsonl.errors.jsonl").exists());
    // Only the failed records were asked the second time, each answered once.
    assert!(server.answered_counts().values().all(|&n| n == 1));
    let second_run_prompts: HashSet<String> = server
        .log()
        .iter()
        .filter(|e| e.attempt > 1)
        .map(|e| e.prompt.clone())
        .collect();
    let failed_prompts: HashSet<String> = failed
        .iter()
        .map(|id| format!("question {}", &id[1..]))
        .collect();
    assert_eq!(second_run_prompts, failed_prompts);
    assert_eq!(server.answered_counts().len(), 40);
}

#[test]
fn samples_and_dry_run_estimates() {
    let server = server(FaultRates::none());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let prices = dir.path().join("prices.toml");
    std::fs::write(&prices, "[\"fault-model\"]\ninput = 2.0\noutput = 8.0\n").unwrap();
    write_prompts(&input, 10);
    let base = [
        "generate",
        "--endpoint",
        server.url(),
        "--model",
        "fault-model",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--max-tokens",
        "100",
        "--n",
        "3",
        "--temperature",
        "0.7",
        "--prices",
        prices.to_str().unwrap(),
    ];
    let dry = SEQIT.output([&base[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = stdout(&dry);
    assert!(
        text.contains("30 samples, 0 already in the cache, 30 to ask"),
        "{text}"
    );
    assert!(text.contains("estimated as characters / 4"), "{text}");
    assert!(text.contains("completion tokens: at most 3,000"), "{text}");
    assert!(text.contains("cost: $"), "{text}");
    assert!(server.log().is_empty(), "a dry run sends nothing");
    assert!(
        !dir.path().join("seqit-cache.sqlite").exists(),
        "a dry run creates nothing"
    );

    let run = SEQIT.output(base);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("cost $"), "{}", stderr(&run));
    let records = read_jsonl(&output);
    for (i, record) in records.iter().enumerate() {
        let outputs: Vec<&str> = record["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(
            outputs,
            (0..3)
                .map(|k| format!("echo[0 #{k}]: question {i}"))
                .collect::<Vec<_>>()
        );
    }
    let dry = SEQIT.output([&base[..], &["--dry-run"]].concat());
    assert!(
        stdout(&dry).contains("30 samples, 30 already in the cache, 0 to ask"),
        "{}",
        stdout(&dry)
    );
}

#[test]
fn batch_export_then_import_completes_the_job_without_requests() {
    let server = server(FaultRates::none());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let batch = dir.path().join("batch.jsonl");
    let cache = dir.path().join("cache.sqlite");
    write_prompts(&input, 25);
    // A duplicate prompt under another id is sent once.
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("{\"id\": \"dup\", \"prompt\": \"question 3\"}\n");
    std::fs::write(&input, text).unwrap();
    let sampling = ["--max-tokens", "32", "--temperature", "0.5", "--seed", "4"];
    let export = SEQIT.output(
        [
            &[
                "batch",
                "export",
                "--input",
                input.to_str().unwrap(),
                "--output",
                batch.to_str().unwrap(),
                "--model",
                "gpt-x",
                "--endpoint",
                server.url(),
            ][..],
            &sampling,
        ]
        .concat(),
    );
    assert!(export.status.success(), "{}", stderr(&export));
    assert!(
        stderr(&export).contains("wrote 25 requests"),
        "{}",
        stderr(&export)
    );
    let requests = read_jsonl(&batch);
    assert_eq!(requests.len(), 25);
    let mut ids = HashSet::new();
    for request in &requests {
        assert!(
            ids.insert(request["custom_id"].as_str().unwrap().to_string()),
            "custom_id unique"
        );
        assert_eq!(request["method"], "POST");
        assert_eq!(request["url"], "/v1/chat/completions");
        assert_eq!(request["body"]["model"], "gpt-x");
        assert_eq!(request["body"]["max_tokens"], 32);
        assert_eq!(request["body"]["temperature"], 0.5);
        assert_eq!(request["body"]["seed"], 4);
        assert_eq!(request["body"]["messages"][0]["role"], "user");
    }

    // What the Batch API would return (one request failed in the batch).
    let mut results = String::new();
    for (i, request) in requests.iter().enumerate() {
        let prompt = request["body"]["messages"][0]["content"].as_str().unwrap();
        let line = if i == 7 {
            json!({"id": format!("batch_req_{i}"), "custom_id": request["custom_id"], "response": {"status_code": 500, "request_id": "x", "body": {"error": {"message": "server had an error"}}}, "error": null})
        } else {
            json!({"id": format!("batch_req_{i}"), "custom_id": request["custom_id"], "response": {"status_code": 200, "request_id": format!("req_{i}"), "body": {"id": "chatcmpl", "object": "chat.completion", "created": 1, "model": "gpt-x-2025", "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("batch answer to {prompt}")}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}}, "error": null})
        };
        results.push_str(&format!("{line}\n"));
    }
    let results_path = dir.path().join("results.jsonl");
    std::fs::write(&results_path, results).unwrap();
    // `seqit batch import` of the results file into the cache.
    let import_results = || {
        SEQIT.output([
            "batch",
            "import",
            "--results",
            results_path.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ])
    };
    let import = import_results();
    assert!(import.status.success(), "{}", stderr(&import));
    assert!(
        stderr(&import).contains("imported 24 answers"),
        "{}",
        stderr(&import)
    );
    assert!(
        stderr(&import).contains("1 requests failed in the batch"),
        "{}",
        stderr(&import)
    );

    // The same job online: only the request that failed in the batch is sent.
    let output = dir.path().join("out.jsonl");
    let generate = SEQIT.output(
        [
            &[
                "generate",
                "--endpoint",
                server.url(),
                "--model",
                "gpt-x",
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
                "--cache",
                cache.to_str().unwrap(),
            ][..],
            &sampling,
        ]
        .concat(),
    );
    assert!(generate.status.success(), "{}", stderr(&generate));
    assert_eq!(server.log().len(), 1, "{:?}", server.log());
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 26);
    let answered_online = records
        .iter()
        .filter(|r| r["output"].as_str().unwrap().starts_with("echo"))
        .count();
    assert_eq!(answered_online, 1);
    assert_eq!(records[25]["output"], records[3]["output"]);
    assert_eq!(records[0]["output"], "batch answer to question 0");

    // Exporting again against the cache leaves out what it holds.
    let again = SEQIT.output(
        [
            &[
                "batch",
                "export",
                "--input",
                input.to_str().unwrap(),
                "--output",
                batch.to_str().unwrap(),
                "--model",
                "gpt-x",
                "--cache",
                cache.to_str().unwrap(),
                "--endpoint",
                server.url(),
            ][..],
            &sampling,
        ]
        .concat(),
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("wrote 0 requests"),
        "{}",
        stderr(&again)
    );

    // A results file from something else is refused with its line.
    std::fs::write(
        &results_path,
        "{\"custom_id\": \"request-1\", \"response\": {}}\n",
    )
    .unwrap();
    let bad = import_results();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("results.jsonl:1"), "{}", stderr(&bad));
}

/// Runs `seqit generate --endpoint URL` on `input` with a shared cache file.
fn generate_with_cache(
    url: &str,
    input: &Path,
    output: &Path,
    cache: &Path,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "generate",
        "--endpoint",
        url,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--max-tokens",
        "16",
    ];
    args.extend_from_slice(extra);
    SEQIT.output(&args)
}

#[test]
fn endpoints_keep_their_own_cached_answers_and_oversized_bodies_fail_clearly() {
    let a = server(FaultRates::none());
    let b = server(FaultRates::none());
    let dir = tempfile::tempdir().unwrap();
    let (input, cache) = (dir.path().join("in.jsonl"), dir.path().join("cache.sqlite"));
    write_prompts(&input, 5);
    let out = |name: &str| dir.path().join(name);
    let first = generate_with_cache(a.url(), &input, &out("a.jsonl"), &cache, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(a.log().len(), 5);
    // Same model name, same prompts, same cache: the other server is asked all of them.
    let second = generate_with_cache(b.url(), &input, &out("b.jsonl"), &cache, &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(b.log().len(), 5, "{}", stderr(&second));
    // Shared on purpose: the third run (keys without the endpoint) asks once, the fourth
    // (another server) nothing.
    let share = ["--share-cache-across-endpoints"];
    let shared_a = generate_with_cache(a.url(), &input, &out("c.jsonl"), &cache, &share);
    assert!(shared_a.status.success(), "{}", stderr(&shared_a));
    let shared_b = generate_with_cache(b.url(), &input, &out("d.jsonl"), &cache, &share);
    assert!(shared_b.status.success(), "{}", stderr(&shared_b));
    assert_eq!((a.log().len(), b.log().len()), (10, 5));
    assert_eq!(read_jsonl(&out("c.jsonl")), read_jsonl(&out("d.jsonl")));

    // A body over `--max-response-bytes` fails its record with a clear error, once.
    let small = ["--max-response-bytes", "100", "--no-cache"];
    let args: Vec<&str> = [
        "generate",
        "--endpoint",
        a.url(),
        "--prompt",
        "a question whose echoed answer is longer than one hundred bytes once wrapped",
    ]
    .into_iter()
    .chain(small)
    .collect();
    let before = a.log().len();
    let refused = SEQIT.output(&args);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("is larger than the limit of 100 bytes")
            && stderr(&refused).contains("hint: raise the limit with --max-response-bytes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(a.log().len(), before + 1, "not retried");
    // Batch export asks which endpoint its answers are for.
    let refused = SEQIT.output([
        "batch",
        "export",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out("batch.jsonl").to_str().unwrap(),
        "--model",
        "m",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("`--endpoint URL`"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn api_keys_are_sent_but_never_written_or_printed() {
    let secret = "sk-live-do-not-leak-0123456789";
    let server = BackgroundFaultServer::start(FaultConfig {
        api_key: Some(secret.into()),
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    write_prompts(&input, 5);
    let args = [
        "generate",
        "--endpoint",
        server.url(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--stats",
    ];

    let without = SEQIT.output(args);
    assert!(!without.status.success());
    assert!(stderr(&without).contains("401"), "{}", stderr(&without));
    assert!(
        stderr(&without).contains("hint: set OPENAI_API_KEY"),
        "{}",
        stderr(&without)
    );

    let missing = SEQIT.output([&args[..], &["--api-key-env", "MY_TEAM_KEY"]].concat());
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("`MY_TEAM_KEY`"),
        "{}",
        stderr(&missing)
    );

    let run = SEQIT.output_with(
        [&args[..], &["--api-key-env", "MY_TEAM_KEY"]].concat(),
        &[("MY_TEAM_KEY", secret)],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let run = SEQIT.output_with(args, &[("OPENAI_API_KEY", secret)]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!stderr(&run).contains(secret) && !stdout(&run).contains(secret));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the key reached a file"
        );
    }
    assert!(server
        .log()
        .iter()
        .any(|e| e.outcome == Outcome::Unauthorized));
}

#[test]
fn remote_flags_need_an_endpoint_and_bad_settings_are_refused() {
    let out = SEQIT.output(["generate", "--prompt", "hi", "--n", "2", "--dry-run"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--n, --dry-run only apply to a remote endpoint"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("hint: add `--endpoint URL`"),
        "{}",
        stderr(&out)
    );

    let out = SEQIT.output(["generate", "--prompt", "hi", "--endpoint", "localhost:8000"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hint: give the API base"),
        "{}",
        stderr(&out)
    );

    let out = SEQIT.output([
        "generate",
        "--prompt",
        "hi",
        "--endpoint",
        "http://127.0.0.1:9/v1",
        "--concurrency",
        "0",
    ]);
    assert!(
        stderr(&out).contains("`--concurrency` must be at least 1"),
        "{}",
        stderr(&out)
    );

    // Nothing listens on port 9: the model lookup fails with the cause.
    let out = SEQIT.output([
        "generate",
        "--prompt",
        "hi",
        "--endpoint",
        "http://127.0.0.1:9/v1",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`--model` was not given"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

#[test]
fn a_single_prompt_prints_the_reply() {
    let server = server(FaultRates::none());
    let out = SEQIT.output([
        "generate",
        "--endpoint",
        server.url(),
        "--model",
        "m",
        "--prompt",
        "hello",
        "--system",
        "be brief",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "echo[0 #0]: hello\n");
    let raw = SEQIT.output([
        "generate",
        "--endpoint",
        server.url(),
        "--model",
        "m",
        "--prompt",
        "once upon",
        "--raw",
    ]);
    assert_eq!(stdout(&raw), "echo[0 #0]: once upon\n");
    assert_eq!(server.log()[1].endpoint, "completions");
}
