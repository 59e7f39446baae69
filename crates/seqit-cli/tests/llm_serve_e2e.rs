//! End to end on loopback with the real default model: `seqit serve` in one process,
//! `seqit generate --endpoint` in another; the replies equal the local engine's (greedy
//! decoding), and a second run is served from the cache.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use seqit_testkit::cli::Seqit;
use seqit_testkit::read_jsonl;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /v1/models` answered 200.
fn ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

#[test]
fn generate_against_seqit_serve_matches_the_local_engine() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server(
        SEQIT
            .command()
            .args(["serve", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !ready(port) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "seqit serve did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prompts.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"france\", \"prompt\": \"What is the capital of France?\"}\n\
         {\"id\": \"color\", \"prompt\": \"Name a color.\"}\n\
         {\"id\": \"sys\", \"messages\": [{\"role\": \"system\", \"content\": \"Answer in one word.\"}, {\"role\": \"user\", \"content\": \"Is water wet?\"}]}\n",
    )
    .unwrap();
    let remote_out = dir.path().join("remote.jsonl");
    let endpoint = format!("http://127.0.0.1:{port}/v1");
    // No --model: the served model is asked from /v1/models.
    let args = [
        "generate",
        "--endpoint",
        &endpoint,
        "--input",
        input.to_str().unwrap(),
        "--output",
        remote_out.to_str().unwrap(),
        "--max-tokens",
        "16",
    ];
    let remote = SEQIT.output(args);
    let stderr = String::from_utf8_lossy(&remote.stderr);
    assert!(remote.status.success(), "{stderr}");
    assert!(
        stderr.contains("model `smollm2-135m`: 3 requests"),
        "{stderr}"
    );

    let local_out = dir.path().join("local.jsonl");
    let local = SEQIT.output([
        "generate",
        "--input",
        input.to_str().unwrap(),
        "--output",
        local_out.to_str().unwrap(),
        "--max-tokens",
        "16",
    ]);
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );

    let remote_records = read_jsonl(&remote_out);
    let local_records = read_jsonl(&local_out);
    assert_eq!(remote_records.len(), 3);
    for (r, l) in remote_records.iter().zip(&local_records) {
        assert_eq!(r["id"], l["id"]);
        assert!(!r["output"].as_str().unwrap().is_empty());
        assert_eq!(
            r["output"], l["output"],
            "greedy replies over HTTP equal the local engine's"
        );
        assert_eq!(r["prompt_tokens"], l["prompt_tokens"]);
        assert_eq!(r["completion_tokens"], l["completion_tokens"]);
        assert_eq!(r["finish_reason"], l["finish_reason"]);
    }

    // Again: from the cache, the server is not asked.
    std::fs::remove_file(&remote_out).unwrap();
    let again = SEQIT.output(args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(
        stderr.contains("0 requests (0 attempts)") && stderr.contains("3 samples from the cache"),
        "{stderr}"
    );
    assert_eq!(read_jsonl(&remote_out), remote_records);

    // Structured outputs over HTTP: the server enforces the constraint, so the greedy
    // replies equal the local engine's constrained ones, and every one is complete.
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"answer": {"type": "string", "maxLength": 20}},
            "required": ["answer"], "additionalProperties": false}"#,
    )
    .unwrap();
    for constraint in [
        vec!["--choice", "yes,no,maybe"],
        vec!["--json-schema", schema.to_str().unwrap()],
    ] {
        let run = |out: &Path, endpoint: Option<&str>| {
            let mut args = vec![
                "generate",
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--max-tokens",
                "24",
            ];
            args.extend(&constraint);
            if let Some(endpoint) = endpoint {
                args.extend(["--endpoint", endpoint]);
            }
            let done = SEQIT.output(&args);
            assert!(
                done.status.success(),
                "{}",
                String::from_utf8_lossy(&done.stderr)
            );
            read_jsonl(out)
        };
        let remote = run(&dir.path().join("remote-shaped.jsonl"), Some(&endpoint));
        let local = run(&dir.path().join("local-shaped.jsonl"), None);
        for (r, l) in remote.iter().zip(&local) {
            assert_eq!(r["output"], l["output"], "{constraint:?}");
            assert_eq!(r["constraint_met"], true, "{r}");
            assert_eq!(l["constraint_met"], true, "{l}");
        }
    }
    drop(server);
}
