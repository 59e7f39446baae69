//! `seqit train` as a real process: trains, writes a model that `seqit generate` loads,
//! and after `kill -9` resumes to the same loss curve.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use seqit_testkit::cli::Seqit;
use seqit_testkit::{TinyModel, TinyModelSpec};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

fn data(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("train.json");
    let items: Vec<serde_json::Value> = (0..6)
        .map(|i| serde_json::json!({"instruction": format!("item {i}: repeat the word"), "input": if i % 2 == 0 { "cat" } else { "" }, "output": format!("word {i}")}))
        .collect();
    std::fs::write(&path, serde_json::to_string(&items).unwrap()).unwrap();
    path
}

fn train_args<'a>(
    model: &'a str,
    data: &'a str,
    output: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--full",
        "--model",
        model,
        "--data",
        data,
        "--output",
        output,
        "--template",
        "chatml",
        "--epochs",
        "150",
        "--lr",
        "1e-3",
        "--batch-size",
        "2",
        "--save-every",
        "20",
        "--seed",
        "5",
    ];
    args.extend_from_slice(extra);
    args
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn train_kill_resume_and_generate() {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("base"))
        .unwrap();
    let data = data(dir.path());
    let (model, data_s) = (
        model.to_str().unwrap().to_string(),
        data.to_str().unwrap().to_string(),
    );

    let straight = dir.path().join("straight");
    let out = SEQIT
        .command()
        .args(train_args(&model, &data_s, straight.to_str().unwrap(), &[]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = losses(&straight);
    assert_eq!(reference.len(), 450);
    assert!(
        reference.last().unwrap().1 < reference[0].1 / 4.0,
        "loss should fall: {:?} → {:?}",
        reference[0],
        reference.last()
    );

    // Kill -9 once a checkpoint exists, then resume.
    let crashed = dir.path().join("crashed");
    let mut child = SEQIT
        .command()
        .args(train_args(&model, &data_s, crashed.to_str().unwrap(), &[]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !crashed.join("checkpoint-00000060").exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let resumed = SEQIT
        .command()
        .args(train_args(
            &model,
            &data_s,
            crashed.to_str().unwrap(),
            &["--resume"],
        ))
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let after = losses(&crashed);
    assert_eq!(
        after.len(),
        reference.len(),
        "every step logged exactly once"
    );
    for ((s1, l1), (s2, l2)) in reference.iter().zip(&after) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1e-6, "step {s1}: {l1} vs {l2}");
    }

    // The exported model is a Hugging Face directory that `seqit generate` runs.
    let gen = SEQIT
        .command()
        .args([
            "generate",
            "--model",
            crashed.join("model").to_str().unwrap(),
            "--prompt",
            "item 3: repeat the word",
            "--max-tokens",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&gen.stdout).trim(), "word 3");
}

#[test]
fn bad_training_input_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("base"))
        .unwrap();
    let data = dir.path().join("prompts.jsonl");
    std::fs::write(&data, "{\"prompt\": \"no response here\"}\n").unwrap();
    let out = SEQIT
        .command()
        .args([
            "train",
            "--full",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--output",
            dir.path().join("o").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("prompts.jsonl") && err.contains("record 0 has no response"),
        "{err}"
    );
}

/// `--dtype f16` reaches the trainer (its metrics carry the loss scale); `--device`
/// names a CUDA GPU only in builds with the `cuda` feature, and says so otherwise.
#[test]
fn dtype_and_device_flags() {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("base"))
        .unwrap();
    let data = data(dir.path());
    let (model, data) = (model.to_str().unwrap(), data.to_str().unwrap());
    let train = |output: &str, extra: &[&str]| {
        let output = dir.path().join(output);
        let args = train_args(model, data, output.to_str().unwrap(), extra);
        let out = SEQIT.output(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
            output,
        )
    };
    let (code, err, run) = train("f16", &["--dtype", "f16", "--max-steps", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["loss_scale"], 65536.0, "{first}");
    let config = std::fs::read_to_string(run.join("model/config.json")).unwrap();
    assert!(config.contains("\"torch_dtype\": \"float16\""), "{config}");

    let (code, err, _) = train("tpu", &["--device", "tpu"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("device `tpu`: expected cpu, cuda or cuda:N"),
        "{err}"
    );
    if !cfg!(feature = "cuda") {
        let (code, err, _) = train("cuda", &["--device", "cuda:0"]);
        assert_eq!(code, Some(1));
        assert!(
            err.contains("built without CUDA support") && err.contains("--features cuda"),
            "{err}"
        );
    }
}

/// The steps of the `checkpoint-N` directories in `run`.
fn checkpoint_steps(run: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(run) else {
        return Vec::new();
    };
    let mut steps: Vec<u64> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("checkpoint-")?.parse().ok()
        })
        .collect();
    steps.sort();
    steps
}

/// Every file of checkpoint `dir` reads back: progress for `step`, weights, optimizer.
fn assert_complete_checkpoint(dir: &Path, step: u64) {
    let progress: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("progress.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
    )
    .unwrap_or_else(|e| panic!("{}: progress.json: {e}", dir.display()));
    assert_eq!(progress["step"], step, "{}", dir.display());
    for file in ["weights.safetensors", "optimizer.safetensors"] {
        let tensors = candle_core::safetensors::load(dir.join(file), &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()));
        assert!(!tensors.is_empty(), "{}/{file} is empty", dir.display());
    }
}

/// Whether `run` holds a checkpoint being written (`.checkpoint-N.tmp/`).
fn checkpoint_in_progress(run: &Path) -> bool {
    std::fs::read_dir(run).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with(".checkpoint-"))
    })
}

/// `kill -9` at random moments of a run that writes a checkpoint after every update, 20
/// times (each resumed run is killed again; half the kills aimed at the moment a
/// checkpoint is being written): every checkpoint left is complete, resume starts from
/// the newest, and the run finished at the end has the loss curve of one that was never
/// interrupted, each step logged once.
#[test]
fn kill_9_while_writing_checkpoints_always_leaves_a_complete_one() {
    const KILLS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("base"))
        .unwrap();
    let data = data(dir.path());
    let args = |run: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "--full",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--output",
            run.to_str().unwrap(),
            "--template",
            "chatml",
            "--epochs",
            "1000",
            "--lr",
            "1e-3",
            "--batch-size",
            "2",
            "--save-every",
            "1",
            "--seed",
            "5",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // Random delays, from a seed printed so that a failure can be replayed.
    let mut seed = std::env::var("SEQIT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("SEQIT_KILL_SEED={seed}");
    let mut random_us = |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_micros(seed % (max + 1))
    };

    let run = dir.path().join("run");
    let started = Instant::now();
    let mut killed_mid_write = 0;
    for kill in 0..KILLS {
        let before = checkpoint_steps(&run).last().copied().unwrap_or(0);
        let mut child = SEQIT
            .command()
            .args(args(&run, &["--resume"]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Once this run has saved a checkpoint of its own (it is in its loop of update,
        // metrics line, checkpoint), kill it at a random moment: every other time within
        // a few milliseconds of a checkpoint write starting.
        let deadline = Instant::now() + Duration::from_secs(60);
        let wait_for = |done: &dyn Fn() -> bool, child: &mut std::process::Child| {
            while !done() {
                assert!(Instant::now() < deadline, "kill {kill}: no progress");
                assert!(child.try_wait().unwrap().is_none(), "kill {kill}: exited");
                std::thread::sleep(Duration::from_micros(200));
            }
        };
        wait_for(
            &|| checkpoint_steps(&run).last().copied().unwrap_or(0) > before,
            &mut child,
        );
        if kill % 2 == 0 {
            wait_for(&|| checkpoint_in_progress(&run), &mut child);
            std::thread::sleep(random_us(3_000));
        } else {
            std::thread::sleep(random_us(40_000));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        killed_mid_write += usize::from(checkpoint_in_progress(&run));
        let steps = checkpoint_steps(&run);
        for step in &steps {
            assert_complete_checkpoint(&run.join(format!("checkpoint-{step:08}")), *step);
        }
        let newest = run.join(format!("checkpoint-{:08}", steps.last().unwrap()));
        assert_eq!(
            seqit_train::latest_checkpoint(&run).unwrap(),
            Some(newest),
            "kill {kill}"
        );
    }
    let kills_took = started.elapsed();

    // Resume once more and finish a few updates later.
    let newest = *checkpoint_steps(&run).last().unwrap();
    let last = (newest + 3).to_string();
    let finished = SEQIT
        .command()
        .args(args(&run, &["--resume", "--max-steps", &last]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "{stderr}");
    let from = run.join(format!("checkpoint-{newest:08}"));
    assert!(
        stderr.contains(&format!("resuming from `{}`", from.display())),
        "{stderr}"
    );
    assert!(!checkpoint_in_progress(&run), "the leftover was removed");
    let straight = dir.path().join("straight");
    let reference = SEQIT
        .command()
        .args(args(&straight, &["--max-steps", &last]))
        .output()
        .unwrap();
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let (after, expected) = (losses(&run), losses(&straight));
    assert_eq!(
        after.len(),
        expected.len(),
        "every step logged exactly once"
    );
    for ((s1, l1), (s2, l2)) in expected.iter().zip(&after) {
        assert_eq!(s1, s2);
        assert!((l1 - l2).abs() < 1e-6, "step {s1}: {l1} vs {l2}");
    }
    eprintln!(
        "{KILLS} kills in {:.1}s, {killed_mid_write} of them while a checkpoint was being written; resumed from step {newest} to {last}",
        kills_took.as_secs_f64()
    );
}
