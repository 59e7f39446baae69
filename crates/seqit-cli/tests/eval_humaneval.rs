//! `seqit eval humaneval`: the real binary on small problem and sample files.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use seqit_faultserver::{BackgroundFaultServer, FaultConfig, ScriptRule};
use seqit_testkit::cli::Seqit;
use seqit_testkit::write_jsonl;
use serde_json::{json, Value};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

/// Two tiny problems in human-eval's format.
fn problems(dir: &Path) -> PathBuf {
    let path = dir.join("problems.jsonl");
    write_jsonl(
        &path,
        &[
            json!({"task_id": "T/0", "prompt": "def add(a, b):\n", "canonical_solution": "    return a + b\n",
                   "test": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"}),
            json!({"task_id": "T/1", "prompt": "def neg(a):\n", "canonical_solution": "    return -a\n",
                   "test": "def check(f):\n    assert f(4) == -4\n", "entry_point": "neg"}),
        ],
    );
    path
}

fn fails_cleanly(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for noise in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(noise), "`{noise}` in: {stderr}");
    }
    stderr
}

#[test]
fn scores_a_samples_file() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    let samples = dir.path().join("samples.jsonl");
    write_jsonl(
        &samples,
        &[
            json!({"task_id": "T/0", "completion": "    return a + b\n"}),
            json!({"task_id": "T/1", "completion": "    return a\n"}),
            json!({"task_id": "T/0", "completion": "    return a - b\n"}),
            json!({"task_id": "T/1", "completion": "    return -a\n"}),
        ],
    );
    let output = dir.path().join("out");
    let out = SEQIT.output([
        "eval",
        "humaneval",
        "--problems",
        problems.to_str().unwrap(),
        "--completions",
        samples.to_str().unwrap(),
        "--k",
        "1,2,5",
        "--output",
        output.to_str().unwrap(),
        "--timeout",
        "5",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("pass@1 0.5000  pass@2 1.0000"), "{stdout}");
    assert!(stderr.contains("pass@5 not computed"), "{stderr}");

    let results: Vec<Value> = std::fs::read_to_string(output.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(&str, u64, bool)> = results
        .iter()
        .map(|r| {
            (
                r["task_id"].as_str().unwrap(),
                r["completion_id"].as_u64().unwrap(),
                r["passed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("T/0", 0, true),
            ("T/1", 0, false),
            ("T/0", 1, false),
            ("T/1", 1, true)
        ]
    );
    assert_eq!(results[1]["result"], "failed: ");
    assert_eq!(results[2]["completion"], "    return a - b\n");

    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["pass@k"], json!({"pass@1": 0.5, "pass@2": 1.0}));
    assert_eq!(metrics["samples"], 4);
    assert_eq!(metrics["outcomes"]["passed"], 2);
    assert_eq!(metrics["skipped_k"][0]["k"], 5);
    assert_eq!(metrics["settings"]["sandbox"]["timeout_s"], 5.0);
    assert!(!output.join("results.jsonl.partial").exists());
}

#[test]
fn the_packaged_problems_are_the_default() {
    if seqit_testkit::require_asset("human_eval/data/HumanEval.jsonl.gz").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.jsonl");
    // HumanEval/2's canonical solution, and a wrong one for HumanEval/0.
    write_jsonl(
        &samples,
        &[
            json!({"task_id": "HumanEval/2", "completion": "    return number % 1.0\n"}),
            json!({"task_id": "HumanEval/0", "completion": "    return True\n"}),
        ],
    );
    let output = dir.path().join("out");
    let args = [
        "eval",
        "humaneval",
        "--completions",
        samples.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    let out = SEQIT.output(args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-incomplete"));
    let out = SEQIT.output([&args[..], &["--allow-incomplete", "--k", "1"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["pass@k"]["pass@1"], 0.5);
    assert_eq!(metrics["problems"], 2);
    assert!(metrics["settings"]["problems"]
        .as_str()
        .unwrap()
        .ends_with("human_eval/data/HumanEval.jsonl.gz"));
}

#[test]
fn generates_completions_with_an_endpoint_and_scores_them() {
    // Scripted chat model: a full correct function for `add` (in a code block, with
    // chatter), a wrong body for `neg`.
    let server = BackgroundFaultServer::start(FaultConfig {
        script: vec![
            ScriptRule {
                contains: "def add(a, b):".into(),
                reply: "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```".into(),
            },
            ScriptRule {
                contains: "def neg(a):".into(),
                reply: "```python\nreturn a\n```".into(),
            },
        ],
        ..FaultConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    let output = dir.path().join("out");
    let args = [
        "eval",
        "humaneval",
        "--problems",
        problems.to_str().unwrap(),
        "--endpoint",
        server.url(),
        "--model",
        "coder",
        "--samples",
        "3",
        "--k",
        "1,2",
        "--max-tokens",
        "64",
        "--output",
        output.to_str().unwrap(),
    ];
    let out = SEQIT.output(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One request per problem for its 3 samples (the server takes `n`).
    let log = server.log();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|e| e.n == 3));
    assert!(log[0]
        .prompt
        .starts_with("Complete the following Python function."));

    let samples: Vec<Value> = std::fs::read_to_string(output.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 6);
    assert_eq!(samples[0]["task_id"], "T/0");
    assert_eq!(
        samples[0]["completion"],
        "    pass\n\ndef add(a, b):\n    return a + b\n"
    );
    assert_eq!(samples[3]["completion"], "    return a\n");
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["pass@k"]["pass@1"], 0.5);
    assert_eq!(metrics["pass@k"]["pass@2"], 0.5);
    let generation = &metrics["settings"]["generation"];
    assert_eq!(generation["model"], "coder");
    assert_eq!(generation["temperature"], 0.8);
    assert_eq!(generation["top_p"], 0.95);
    assert_eq!(generation["samples"], 3);
    assert_eq!(generation["prompt"]["version"], "humaneval/v1/complete");

    // Scoring a file and generating are exclusive (checked after the packaged problems
    // are found).
    if seqit_testkit::require_asset("human_eval/data/HumanEval.jsonl.gz").is_none() {
        return;
    }
    let err = fails_cleanly(&SEQIT.output([
        "eval",
        "humaneval",
        "--completions",
        "x.jsonl",
        "--model",
        "m",
        "--output",
        output.to_str().unwrap(),
    ]));
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn bad_samples_files_are_named_with_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    let output = dir.path().join("out");
    let cases = [
        (
            "{\"task_id\": \"T/0\", \"completion\": \"x\"}\n{\"task_id\": \"T/1\"}\n",
            "line 2: missing field `completion`",
        ),
        (
            "{\"task_id\": \"T/0\", \"completion\": 7}\n",
            "line 1: field `completion`: expected a string",
        ),
        (
            "{\"task_id\": \"T/9\", \"completion\": \"\"}\n",
            "task_id `T/9`, which is not in the problem file",
        ),
        ("not json\n", "line 1: invalid JSON"),
    ];
    for (text, expected) in cases {
        let samples = dir.path().join("bad.jsonl");
        std::fs::write(&samples, text).unwrap();
        let out = SEQIT.output([
            "eval",
            "humaneval",
            "--problems",
            problems.to_str().unwrap(),
            "--completions",
            samples.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        let err = fails_cleanly(&out);
        assert!(err.contains("bad.jsonl") && err.contains(expected), "{err}");
        assert!(!output.join("metrics.json").exists());
    }
}

#[test]
fn an_interrupted_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let problems = problems(dir.path());
    let samples = dir.path().join("samples.jsonl");
    let slow_right = "    import time\n    time.sleep(0.4)\n    return a + b\n";
    let records: Vec<Value> = (0..8)
        .map(|_| json!({"task_id": "T/0", "completion": slow_right}))
        .collect();
    let mut records = records;
    records.push(json!({"task_id": "T/1", "completion": "    return -a\n"}));
    write_jsonl(&samples, &records);
    let output = dir.path().join("out");
    let args = [
        "eval",
        "humaneval",
        "--problems",
        problems.to_str().unwrap(),
        "--completions",
        samples.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--workers",
        "1",
        "--k",
        "1",
    ];
    let mut child = SEQIT
        .command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (as hard as possible) once a few results are on disk.
    let partial = output.join("results.jsonl.partial");
    let started = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&partial)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!output.join("metrics.json").exists());

    let out = SEQIT.output(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("resuming: ") && stderr.contains(" of 9 samples already scored"),
        "{stderr}"
    );
    let results = std::fs::read_to_string(output.join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 9);
    assert!(
        results.lines().all(|l| l.contains("\"passed\":true")),
        "{results}"
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["pass@k"]["pass@1"], 1.0);
    assert!(!partial.exists());
}
