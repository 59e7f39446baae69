//! `seqit run` with SmolLM2 as the Seq-Instruct teacher: `kill -9` of the runner during
//! augmentation, then a re-run, gives the same SIT and IT data as an uninterrupted run,
//! and the finished seed stage is not redone.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use seqit_testkit::cli::Seqit;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn experiment(dir: &Path) -> std::path::PathBuf {
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/data/seed.jsonl"
    ))
    .unwrap();
    let items: String = seed.lines().take(6).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("seed.jsonl"), items).unwrap();
    let config = r#"[run]
output = "run"
seed = 7

[models.smol]
model = "smollm2-135m"

[data]
seed = "seed.jsonl"

[augment]
teacher = "smol"
iterations = 1
max_tokens = 16
"#;
    std::fs::write(dir.join("exp.toml"), config).unwrap();
    dir.join("exp.toml")
}

#[test]
fn kill_9_during_augment_resumes_to_the_same_data() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = experiment(dir.path());
    let straight = dir.path().join("straight");
    SEQIT.run_experiment(&config, Some(&straight));

    let run = dir.path().join("run");
    let mut child = SEQIT
        .command()
        .args(["run", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the teacher has answered something (the request cache's log grew).
    let wal = run.join("cache.sqlite-wal");
    let started = Instant::now();
    loop {
        let answered = run.join("augment/manifest.json").exists()
            && std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        if answered {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "augmentation never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let seed_manifest = std::fs::read_to_string(run.join("seed/manifest.json")).unwrap();
    let augment: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("augment/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(augment["status"], "running");
    assert!(
        !run.join("augment/sit.jsonl").exists(),
        "killed before the end"
    );

    let log = SEQIT.run_experiment(&config, Some(&run));
    assert!(
        log.lines()
            .any(|l| l.contains("] seed: finished earlier, skipped")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("] augment: resuming")),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("seed/manifest.json")).unwrap(),
        seed_manifest
    );
    for file in ["augment/sit.jsonl", "augment/it.jsonl", "mixture/sit.jsonl"] {
        assert_eq!(
            std::fs::read_to_string(run.join(file)).unwrap(),
            std::fs::read_to_string(straight.join(file)).unwrap(),
            "{file}"
        );
    }
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(
        md.contains("Seq-Instruct option shares") && md.contains("| 1 | 6 |"),
        "{md}"
    );
}
