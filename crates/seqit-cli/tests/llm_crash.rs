//! Crash test: `seqit generate --endpoint` with 500 prompts is killed with SIGKILL at a
//! random point and run again. The re-run finishes with exactly 500 results, and the
//! server's log shows that no request whose answer had reached the client (its cache or
//! its partial output) was asked again.
//!
//! The kill point is drawn from `SEQIT_CRASH_SEED` (printed, so a failure can be
//! replayed) or from the clock.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_faultserver::{BackgroundFaultServer, FaultConfig, FaultRates};
use seqit_llm::{Cache, CacheKey, EndpointKind};
use seqit_testkit::cli::Seqit;
use serde_json::{json, Value};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

const RECORDS: usize = 500;
const CONCURRENCY: usize = 16;

fn seed() -> u64 {
    std::env::var("SEQIT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        })
}

/// Complete lines of a partial output (a torn last line is ignored).
fn partial_ids(path: &Path) -> HashSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashSet::new();
    };
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn killed_run_resumes_without_loss_duplicates_or_asking_twice() {
    let seed = seed();
    // 60..440 answers before the kill: somewhere inside the run.
    let kill_after = 60
        + (seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 33) as usize
            % 380;
    eprintln!("SEQIT_CRASH_SEED={seed}: SIGKILL after {kill_after} answers");

    let server = BackgroundFaultServer::start(FaultConfig {
        latency: Duration::from_millis(15),
        faults: FaultRates::uniform(0.05),
        seed,
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let cache_path = dir.path().join("seqit-cache.sqlite");
    let text: String = (0..RECORDS)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": format!("r{i}"), "prompt": format!("crash prompt {i}")})
            )
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let concurrency = CONCURRENCY.to_string();
    let args = [
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
        "16",
        "--concurrency",
        &concurrency,
        "--timeout",
        "1",
        "--max-retries",
        "20",
    ];

    let mut child = SEQIT
        .command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let answered: u32 = server.answered_counts().values().sum();
        if answered as usize >= kill_after {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before the kill point"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run made no progress"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!output.exists(), "killed before the end");

    // What the client had received when it died: lines in the partial output, answers in
    // the cache.
    let written = partial_ids(&dir.path().join("out.jsonl.partial"));
    let cache = Cache::open(&cache_path).unwrap();
    let received: HashSet<String> = (0..RECORDS)
        .filter(|i| {
            let prompt = Prompt::Chat(vec![ChatMessage::user(format!("crash prompt {i}"))]);
            let key = CacheKey::new(
                Some(&seqit_llm::remote::endpoint_identity(server.url())),
                EndpointKind::Chat,
                "fault-model",
                &prompt,
                &SamplingParams::greedy(16),
                0,
                "",
            );
            cache.get(&key).unwrap().is_some()
        })
        .map(|i| format!("crash prompt {i}"))
        .collect();
    drop(cache);
    let answered_at_kill: u32 = server.answered_counts().values().sum();
    eprintln!(
        "at the kill: server answered {answered_at_kill}, client had cached {} and written {} records",
        received.len(),
        written.len()
    );
    for id in &written {
        assert!(
            received.contains(&format!("crash prompt {}", &id[1..])),
            "{id} written but not cached"
        );
    }

    let rerun = SEQIT.output(args);
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{stderr}");
    if !written.is_empty() {
        assert!(
            stderr.contains(&format!("resuming: {} of {RECORDS}", written.len())),
            "{stderr}"
        );
    }

    // Exactly 500 results, each once, each the answer to its own prompt.
    let lines: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), RECORDS);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["id"], format!("r{i}"));
        assert_eq!(line["output"], format!("echo[0 #0]: crash prompt {i}"));
    }

    // The server's log: every request the client had received was answered once; the
    // only requests answered twice are those in flight at the kill.
    let mut answers: HashMap<String, u32> = HashMap::new();
    for entry in server
        .log()
        .iter()
        .filter(|e| e.outcome == seqit_faultserver::Outcome::Answered)
    {
        *answers.entry(entry.prompt.clone()).or_default() += 1;
    }
    assert_eq!(answers.len(), RECORDS, "every prompt answered");
    for prompt in &received {
        assert_eq!(
            answers[prompt], 1,
            "`{prompt}` was received before the kill but asked again"
        );
    }
    let twice: Vec<&String> = answers
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(p, _)| p)
        .collect();
    assert!(answers.values().all(|&n| n <= 2));
    // At most the futures in flight (twice the concurrency) can hold an answer the
    // server sent and the client had not committed.
    assert!(
        twice.len() <= 2 * CONCURRENCY,
        "{} answered twice, more than were in flight",
        twice.len()
    );
    eprintln!(
        "re-run: {} requests answered again (in flight at the kill), {} answered once in all",
        twice.len(),
        RECORDS - twice.len()
    );
}
