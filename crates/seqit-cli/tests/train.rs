//! `seqit train` as a real process: trains, writes a model that `seqit generate` loads,
//! and after `kill -9` resumes to the same loss curve.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use seqit_testkit::{TinyModel, TinyModelSpec};

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
    let bin = env!("CARGO_BIN_EXE_seqit");

    let straight = dir.path().join("straight");
    let out = Command::new(bin)
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
    let mut child = Command::new(bin)
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
    let resumed = Command::new(bin)
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
    let gen = Command::new(bin)
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
    let out = Command::new(env!("CARGO_BIN_EXE_seqit"))
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
        let out = Command::new(env!("CARGO_BIN_EXE_seqit"))
            .args(args)
            .output()
            .unwrap();
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
