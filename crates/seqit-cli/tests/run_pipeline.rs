//! `seqit run` as a real process on a tiny random model: stages run once, a re-run
//! skips them, a changed config slice re-runs that stage and its dependents only, and
//! `kill -9` of the runner mid-training leaves nothing running; the re-run resumes to
//! the same result as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use seqit_testkit::cli::Seqit;
use seqit_testkit::{read_json, TinyModel, TinyModelSpec};
use serde_json::Value;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn write_data(path: &Path, prefix: &str) {
    let text: String = (0..8)
        .map(|i| {
            serde_json::json!({
                "id": i,
                "instruction": format!("{prefix} item {i}: repeat the word"),
                "input": if i % 2 == 0 { "cat" } else { "" },
                "output": format!("word {i}"),
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// An experiment directory: tiny base model, IT/SIT data, config.
fn experiment(dir: &Path, sit_epochs: usize, it_epochs: usize) -> PathBuf {
    if !dir.join("base").exists() {
        TinyModel::new(&TinyModelSpec::default())
            .unwrap()
            .write_hf_dir(&dir.join("base"))
            .unwrap();
        write_data(&dir.join("it.jsonl"), "do this");
        write_data(&dir.join("sit.jsonl"), "first do this, then that");
    }
    let config = format!(
        r#"[run]
output = "run"
seed = 3

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
epochs = {it_epochs}
lr = 1e-3
batch_size = 2
template = "chatml"
save_every = 4

[[train]]
name = "sit"
data = "sit"
base = "tiny"
method = "full"
epochs = {sit_epochs}
lr = 1e-3
batch_size = 2
template = "chatml"
save_every = 4
"#
    );
    let path = dir.join("exp.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn manifest(run: &Path, stage: &str) -> Value {
    read_json(&run.join(stage).join("manifest.json"))
}

fn losses(train_dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(train_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

fn stage_line<'a>(log: &'a str, stage: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!("] {stage}: ")))
        .collect()
}

#[test]
fn runs_skips_and_reruns_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment(dir.path(), 2, 2);
    let run = dir.path().join("run");

    let dry = SEQIT.output(["run", config.to_str().unwrap(), "--dry-run"]);
    let plan = String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "{plan}");
    assert!(
        plan.contains("mixture") && plan.contains("train-sit") && plan.contains("report"),
        "{plan}"
    );
    assert!(plan.contains("$ seqit train --model"), "{plan}");
    assert!(!run.exists(), "a dry run writes nothing");

    let first = SEQIT.run_experiment(&config, None);
    for stage in ["mixture", "train-it", "train-sit", "report"] {
        let m = manifest(&run, stage);
        assert_eq!(m["status"], "done", "{stage}: {m}");
        assert_eq!(m["attempts"], 1);
        assert!(
            stage_line(&first, stage)
                .iter()
                .any(|l| l.contains("running (not run yet)")),
            "{first}"
        );
    }
    let m = manifest(&run, "train-sit");
    assert_eq!(m["config"]["train"]["epochs"], 2);
    assert!(
        m["inputs"]["mixture/sit.jsonl"].as_str().unwrap().len() == 64,
        "{m}"
    );
    assert!(m["outputs"]["train-sit/model"].is_string(), "{m}");
    assert_eq!(
        losses(&run.join("train-sit")).len(),
        8,
        "8 examples, batch 2, 2 epochs"
    );
    let html = std::fs::read_to_string(run.join("report/report.html")).unwrap();
    assert!(
        html.contains("Training loss") && html.contains("sit (SIT)"),
        "report shows both curves"
    );

    // Nothing changed: every stage is skipped, manifests untouched.
    let before: Vec<String> = ["mixture", "train-it", "train-sit", "report"]
        .iter()
        .map(|s| std::fs::read_to_string(run.join(s).join("manifest.json")).unwrap())
        .collect();
    let second = SEQIT.run_experiment(&config, None);
    for stage in ["mixture", "train-it", "train-sit", "report"] {
        assert!(
            stage_line(&second, stage)
                .iter()
                .any(|l| l.contains("finished earlier, skipped")),
            "{second}"
        );
    }
    let after: Vec<String> = ["mixture", "train-it", "train-sit", "report"]
        .iter()
        .map(|s| std::fs::read_to_string(run.join(s).join("manifest.json")).unwrap())
        .collect();
    assert_eq!(before, after);

    // The SIT run's config changes: it and the report re-run, nothing else.
    experiment(dir.path(), 3, 2);
    let third = SEQIT.run_experiment(&config, None);
    assert!(
        stage_line(&third, "train-sit")
            .iter()
            .any(|l| l.contains("running (its config changed)")),
        "{third}"
    );
    assert!(
        stage_line(&third, "report")
            .iter()
            .any(|l| l.contains("running (its inputs changed)")),
        "{third}"
    );
    for stage in ["mixture", "train-it"] {
        assert!(
            stage_line(&third, stage)
                .iter()
                .any(|l| l.contains("skipped")),
            "{third}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(run.join("train-it/manifest.json")).unwrap(),
        before[1]
    );
    assert_eq!(
        losses(&run.join("train-sit")).len(),
        12,
        "a fresh run with 3 epochs, not appended"
    );

    // --only forces one stage; its dependencies must be finished, later stages are left.
    let only = SEQIT.output(["run", config.to_str().unwrap(), "--only", "train-it"]);
    let log = String::from_utf8_lossy(&only.stderr);
    assert!(only.status.success(), "{log}");
    assert!(
        stage_line(&log, "train-it")
            .iter()
            .any(|l| l.contains("asked for")),
        "{log}"
    );
    assert!(
        stage_line(&log, "report")
            .iter()
            .any(|l| l.contains("not selected")),
        "{log}"
    );
    assert_eq!(manifest(&run, "train-it")["attempts"], 1);

    let bad = SEQIT.output(["run", config.to_str().unwrap(), "--only", "nope"]);
    let log = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        log.contains("no stage `nope`") && log.contains("train-sit"),
        "{log}"
    );
}

#[test]
fn config_errors_stop_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment(dir.path(), 1, 1);
    let text =
        std::fs::read_to_string(&config)
            .unwrap()
            .replacen("base = \"tiny\"", "base = \"huge\"", 1);
    std::fs::write(&config, text).unwrap();
    let out = SEQIT.output(["run", config.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        log.contains("exp.toml:15: `train[0].base`: model `huge` is not defined"),
        "{log}"
    );
    assert!(log.contains("nothing was run"), "{log}");
    assert!(!dir.path().join("run").exists());
}

#[test]
fn kill_9_during_training_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let config = experiment(dir.path(), 40, 1);
    let straight_run = dir.path().join("straight");
    let out = SEQIT.output([
        "run",
        config.to_str().unwrap(),
        "--output",
        straight_run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = dir.path().join("run");
    let mut child = SEQIT
        .command()
        .args(["run", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the SIT run has checkpointed at least once (and the IT run finished).
    seqit_testkit::wait_for_path(
        &run.join("train-sit/checkpoint-00000008"),
        Duration::from_secs(60),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let sit = manifest(&run, "train-sit");
    assert_eq!(sit["status"], "running");
    let it_before = std::fs::read_to_string(run.join("train-it/manifest.json")).unwrap();
    assert!(
        !run.join("train-sit/model").exists(),
        "killed before the end"
    );

    // The re-run first waits for the killed runner's trainer to be gone (it holds the
    // run lock), then resumes the SIT run from its checkpoint.
    let log = SEQIT.run_experiment(&config, None);
    assert!(
        stage_line(&log, "train-it")
            .iter()
            .any(|l| l.contains("skipped")),
        "{log}"
    );
    assert!(
        stage_line(&log, "train-sit")
            .iter()
            .any(|l| l.contains("resuming")),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("train-it/manifest.json")).unwrap(),
        it_before
    );
    assert_eq!(manifest(&run, "train-sit")["attempts"], 2);

    let (resumed, straight) = (
        losses(&run.join("train-sit")),
        losses(&straight_run.join("train-sit")),
    );
    assert_eq!(resumed.len(), straight.len());
    for ((s1, l1), (s2, l2)) in resumed.iter().zip(&straight) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1e-6, "step {s1}: {l1} vs {l2}");
    }
    assert_eq!(
        manifest(&run, "train-sit")["outputs"]["train-sit/model"],
        manifest(&straight_run, "train-sit")["outputs"]["train-sit/model"],
        "the same model weights"
    );
}
