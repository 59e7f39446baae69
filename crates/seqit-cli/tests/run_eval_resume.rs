//! `kill -9` of `seqit run` while an evaluation stage is answering and judging: the
//! re-run skips the finished training stages, resumes the evaluation from its journal,
//! and ends with the same per-item results as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use seqit_testkit::cli::Seqit;
use seqit_testkit::{read_jsonl, TinyModel, TinyModelSpec};
use serde_json::Value;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));
const SEQEVAL_ITEMS: usize = 40;

/// Tiny base model, IT/SIT data, a SeqEval set, and a config that trains one model and
/// evaluates it on SeqEval with the base model as judge.
fn experiment(dir: &Path) -> PathBuf {
    TinyModel::new(&TinyModelSpec {
        max_position_embeddings: 2048,
        ..TinyModelSpec::default()
    })
    .unwrap()
    .write_hf_dir(&dir.join("base"))
    .unwrap();
    let data: String = (0..4)
        .map(|i| {
            serde_json::json!({"instruction": format!("say {i}"), "input": "", "output": format!("{i}")})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("it.jsonl"), &data).unwrap();
    std::fs::write(dir.join("sit.jsonl"), &data).unwrap();
    let seqeval: String = (0..SEQEVAL_ITEMS)
        .map(|i| {
            serde_json::json!({
                "id": format!("q{i:02}"),
                "instruction": format!("List {i} colours, then sort them by name."),
                "iteration": 1 + i % 4,
                "original_instruction": format!("List {i} colours."),
                "modes": ["suffix"],
                "sub_steps": [format!("List {i} colours."), "Sort them by name."],
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("seqeval.jsonl"), seqeval).unwrap();
    let config = r#"[run]
output = "run"
seed = 5

[models.tiny]
model = "base"

[data]
it = "it.jsonl"
sit = "sit.jsonl"

[[train]]
name = "it"
data = "it"
base = "tiny"
method = "full"
epochs = 1
batch_size = 2
template = "chatml"

[seqeval]
set = "seqeval.jsonl"

[[eval]]
benchmark = "seqeval"
models = ["it"]
judge = "tiny"
max_tokens = 24
args = ["--judge-max-tokens", "24"]
"#;
    let path = dir.join("exp.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Per-item records by id, without fields that may legitimately differ between runs.
fn items(stage_dir: &Path) -> Vec<Value> {
    read_jsonl(&stage_dir.join("items.jsonl"))
}

#[test]
fn kill_9_during_eval_resumes_to_the_same_items() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment(dir.path());
    let straight = dir.path().join("straight");
    SEQIT.run_experiment(&config, Some(&straight));
    let straight_items = items(&straight.join("eval-seqeval-it"));
    assert_eq!(straight_items.len(), SEQEVAL_ITEMS);

    let run = dir.path().join("run");
    let mut child = SEQIT
        .command()
        .args(["run", config.to_str().unwrap(), "--output"])
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a few items are journaled, well before all of them are.
    let journal = run.join("eval-seqeval-it/items.jsonl.partial");
    let started = Instant::now();
    while lines(&journal) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the evaluation never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = lines(&journal);
    assert!(
        done_before < SEQEVAL_ITEMS && !run.join("eval-seqeval-it/items.jsonl").exists(),
        "killed before the end ({done_before} items journaled)"
    );
    let train_manifest = std::fs::read_to_string(run.join("train-it/manifest.json")).unwrap();

    let log = SEQIT.run_experiment(&config, Some(&run));
    assert!(
        log.lines()
            .any(|l| l.contains("train-it: ") && l.contains("skipped")),
        "{log}"
    );
    assert!(log.contains("resuming: "), "the evaluation resumed:\n{log}");
    assert_eq!(
        std::fs::read_to_string(run.join("train-it/manifest.json")).unwrap(),
        train_manifest,
        "the finished training stage was not redone"
    );
    let resumed = items(&run.join("eval-seqeval-it"));
    let ids = |v: &[Value]| v.iter().map(|i| i["id"].clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&resumed),
        ids(&straight_items),
        "every item once, in order"
    );
    for (a, b) in resumed.iter().zip(&straight_items) {
        assert_eq!(a["output"], b["output"], "item {}", a["id"]);
        assert_eq!(a["following"], b["following"], "item {}", a["id"]);
    }
}
