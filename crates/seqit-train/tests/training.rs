//! The training loop on a tiny random model: it learns, and resuming from a checkpoint
//! continues the exact same loss curve.

use candle_core::{DType, Device};
use seqit_model::load_hf_dir;
use seqit_testkit::{TinyModel, TinyModelSpec};
use seqit_train::{full_finetuning, Schedule, TokenizedExample, TrainConfig, Trainer};

fn examples() -> Vec<TokenizedExample> {
    (0..8u32)
        .map(|i| {
            // A prompt of 4 tokens, then a 6-token answer that depends on the prompt.
            let prompt: Vec<u32> = (0..4).map(|j| 97 + (i * 3 + j) % 26).collect();
            let answer: Vec<u32> = (0..6).map(|j| 65 + (i * 5 + j * 7) % 26).collect();
            let trained = [vec![false; 4], vec![true; 6]].concat();
            TokenizedExample {
                input_ids: [prompt, answer].concat(),
                trained,
            }
        })
        .collect()
}

fn model(dir: &std::path::Path) -> seqit_train::TrainableModel {
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir)
        .unwrap();
    full_finetuning(load_hf_dir(&hf, &Device::Cpu, DType::F32).unwrap()).unwrap()
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 60,
        lr: 3e-3,
        batch_size: 4,
        grad_accum: 2,
        max_len: 64,
        warmup_ratio: 0.05,
        schedule: Schedule::Cosine,
        seed: 3,
        ..TrainConfig::default()
    }
}

#[test]
fn tiny_model_memorises_eight_examples() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(
        model(&dir.path().join("m")),
        config(),
        &dir.path().join("run"),
        false,
    )
    .unwrap();
    let metrics = trainer.train(&examples(), &mut |_| {}).unwrap();
    let first = metrics[0].loss;
    let last = metrics.last().unwrap().loss;
    assert!(first > 2.0, "initial loss {first}");
    assert!(last < 0.05, "final loss {last} (from {first})");
    assert!(
        metrics.iter().all(|m| m.trained_tokens == 48),
        "every update sees all 8 × 6 answer tokens"
    );
}

#[test]
fn resume_continues_the_same_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let short = TrainConfig {
        epochs: 16,
        save_every: 3,
        ..config()
    };
    let straight = {
        let mut t = Trainer::new(
            model(&dir.path().join("a")),
            short.clone(),
            &dir.path().join("straight"),
            false,
        )
        .unwrap();
        t.train(&examples(), &mut |_| {}).unwrap()
    };
    assert_eq!(straight.len(), 16);
    // First run stops after 7 updates (checkpoint at 6); the resumed run starts from the
    // checkpoint, as after a crash, and redoes update 7 onwards.
    let run = dir.path().join("resumed");
    let mut first = Trainer::new(
        model(&dir.path().join("b")),
        TrainConfig {
            max_steps: Some(7),
            ..short.clone()
        },
        &run,
        false,
    )
    .unwrap();
    first.train(&examples(), &mut |_| {}).unwrap();
    std::fs::remove_dir_all(run.join("checkpoint-00000007")).unwrap();
    let mut second = Trainer::new(model(&dir.path().join("c")), short, &run, true).unwrap();
    assert_eq!(second.step(), 6);
    let rest = second.train(&examples(), &mut |_| {}).unwrap();
    assert_eq!(rest.len(), 10);
    for (a, b) in straight[6..].iter().zip(&rest) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.loss - b.loss).abs() < 1e-6,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    let logged = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(logged.lines().count(), 16, "each step logged once");
}

#[test]
fn refuses_to_overwrite_a_run_without_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut t = Trainer::new(
        model(&dir.path().join("m")),
        TrainConfig {
            max_steps: Some(1),
            ..config()
        },
        &run,
        false,
    )
    .unwrap();
    t.train(&examples(), &mut |_| {}).unwrap();
    let err = Trainer::new(model(&dir.path().join("m2")), config(), &run, false)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--resume"), "{err}");
}
