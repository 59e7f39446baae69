//! `seqit run examples/paper-scale-local.toml`, the at-scale topology on one machine:
//! teacher, judge and both trained checkpoints served by child `seqit serve` processes
//! on loopback, training launched through the hand-off recipe's command template, every
//! evaluation and the report. `kill -9` of the runner during the launched training and
//! during a served evaluation leaves no process behind, and the re-run ends with the
//! same metrics as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_seqit");
/// Marks every process a run starts (the environment is inherited), to find survivors.
const MARK: &str = "SEQIT_AT_SCALE_TEST";

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/paper-scale-local.toml")
}

fn runner(output: &Path, mark: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .arg(config())
        .arg("--output")
        .arg(output)
        .env(MARK, mark);
    command
}

fn run_to_the_end(output: &Path, mark: &str) -> String {
    let out = runner(output, mark).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn spawn(output: &Path, mark: &str) -> Child {
    runner(output, mark)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Command lines of the live processes whose environment carries `MARK=mark`.
fn processes_marked(mark: &str) -> Vec<String> {
    let needle = format!("{MARK}={mark}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // A zombie has no command line: it is gone, only not reaped yet.
            if !cmdline.trim().is_empty() {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

/// Fails unless every process marked `mark` is gone within `limit`.
fn assert_nothing_left(mark: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let left = processes_marked(mark);
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "still running after the runner was killed:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The evaluation stages of the config, by benchmark and trained model.
fn eval_stages() -> Vec<String> {
    let mut stages = Vec::new();
    for bench in ["seqeval", "gsm8k", "mgsm", "xquad", "humaneval"] {
        for model in ["it", "sit"] {
            stages.push(format!("eval-{bench}-{model}"));
        }
    }
    stages
}

/// What a stage measured: its metrics without their settings (which name the run's
/// ports and paths) and timings.
fn metrics(run: &Path, stage: &str) -> Value {
    let text = std::fs::read_to_string(run.join(stage).join("metrics.json"))
        .unwrap_or_else(|e| panic!("{stage}: {e}"));
    let mut value: Value = serde_json::from_str(&text).unwrap();
    let object = value.as_object_mut().unwrap();
    assert!(object.remove("settings").is_some(), "{stage}: {text}");
    object.remove("seconds");
    assert!(object.len() >= 3, "{stage}: {text}");
    value
}

#[test]
fn the_at_scale_topology_runs_and_a_killed_runner_leaves_nothing_behind() {
    // Every model of the example config is the default one (smollm2-135m).
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mark = format!("{}-{}", std::process::id(), dir.path().display());

    // Uninterrupted: servers, launched trainers, every evaluation, the report.
    let straight = dir.path().join("straight");
    let log = run_to_the_end(&straight, &mark);
    for run in ["it", "sit"] {
        let checkpoint = straight.join(format!("train-{run}/checkpoints"));
        assert!(checkpoint.join("config.json").exists(), "{log}");
        assert!(straight.join(format!("train-{run}/trl.yaml")).exists());
        assert!(straight.join(format!("train-{run}/launch.log")).exists());
    }
    for served in ["teacher", "judge", "it-served", "sit-served"] {
        assert!(
            straight.join(format!("servers/{served}.log")).exists(),
            "{served} was never served:\n{log}"
        );
    }
    for stage in eval_stages() {
        metrics(&straight, &stage);
    }
    // MGSM shows each question 8 shots in its own language (`exemplars`).
    let items = std::fs::read_to_string(straight.join("eval-mgsm-sit/items.jsonl")).unwrap();
    for line in items.lines() {
        let item: Value = serde_json::from_str(line).unwrap();
        let (prompt, language) = (item["prompt"].as_str().unwrap(), &item["language"]);
        let first_shot = match language.as_str() {
            Some("de") => "Ein Bauer hat 12 Hühner",
            Some("fr") => "Un fermier a 12 poules",
            other => panic!("unexpected language {other:?}"),
        };
        assert!(prompt.contains(first_shot), "{language}: {prompt}");
        assert_eq!(prompt.matches("Question: ").count(), 9, "{prompt}");
    }
    assert!(straight.join("report/report.html").exists());
    assert!(log.contains("stopping the server of `teacher`"), "{log}");
    assert_nothing_left(&mark, Duration::from_secs(5));

    // Killed during the launched training of the SIT run.
    let run = dir.path().join("run");
    let mut child = spawn(&run, &mark);
    seqit_testkit::wait_for_path(&run.join("train-sit/launch.log"), Duration::from_secs(600));
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!run.join("train-sit/checkpoints/config.json").exists());
    assert_nothing_left(&mark, Duration::from_secs(30));

    // Killed during a served evaluation (the SIT model's second).
    let mut child = spawn(&run, &mark);
    seqit_testkit::wait_for_path(&run.join("eval-gsm8k-sit"), Duration::from_secs(600));
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_nothing_left(&mark, Duration::from_secs(30));

    // The re-run finishes with the same results.
    let log = run_to_the_end(&run, &mark);
    assert!(log.contains("train-it: finished earlier, skipped"), "{log}");
    for stage in eval_stages() {
        assert_eq!(metrics(&run, &stage), metrics(&straight, &stage), "{stage}");
    }
    assert_nothing_left(&mark, Duration::from_secs(5));
}

/// The paper-scale config plans every stage, evaluations included, with the external
/// commands and estimates, without starting anything.
#[test]
fn the_paper_scale_config_plans_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/paper-scale.toml");
    let out = Command::new(BIN)
        .arg("run")
        .arg(&config)
        .arg("--dry-run")
        .arg("--output")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    // The plan goes to stderr, like the progress of a real run.
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let mut stages = vec![
        "seed",
        "augment",
        "mixture",
        "train-it",
        "train-sit",
        "seqeval-build",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for bench in ["seqeval", "gsm8k", "mgsm", "xquad", "humaneval"] {
        for model in ["it", "sit"] {
            stages.push(format!("eval-{bench}-{model}"));
        }
    }
    stages.push("report".into());
    for stage in &stages {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(stage.as_str())),
            "no `{stage}` in the plan:\n{text}"
        );
    }
    assert!(
        text.contains("$ accelerate launch --num_processes 8 -m trl.cli sft --config"),
        "{text}"
    );
    assert!(text.contains("serves `llama70b`: vllm serve meta-llama/Meta-Llama-3-70B-Instruct --tensor-parallel-size 8 --port"), "{text}");
    assert!(text.contains("serves `it8b`: vllm serve"), "{text}");
    assert!(text.contains("train-it/checkpoints --port"), "{text}");
    assert!(
        text.contains("3 items x 1 requests"),
        "GSM8K's demo items: {text}"
    );
    assert!(
        text.contains("4 items x 1 requests"),
        "MGSM's two languages: {text}"
    );
    assert!(!dir.path().join("run").exists(), "a dry run writes nothing");
}
