//! The training loop on a tiny random model: it learns (in f32, bf16 and f16), and
//! resuming from a checkpoint continues the exact same loss curve.

mod common;

use candle_core::{DType, Device};
use common::examples;
use seqit_model::{load_hf_dir, Kernels};
use seqit_testkit::{TinyModel, TinyModelSpec};
use seqit_train::{full_finetuning, Precision, Schedule, TrainConfig, Trainer};

fn model(dir: &std::path::Path) -> seqit_train::TrainableModel {
    model_in(dir, Precision::F32)
}

fn model_in(dir: &std::path::Path, precision: Precision) -> seqit_train::TrainableModel {
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir)
        .unwrap();
    let dtype = precision.dtype();
    full_finetuning(load_hf_dir(&hf, &Device::Cpu, dtype).unwrap()).unwrap()
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
    assert_resume_is_exact(Precision::F32);
}

/// bf16 weights train through f32 master weights: the loss falls as in f32, and what a
/// checkpoint saves (masters and moments in f32) resumes exactly.
#[test]
fn bf16_training_learns_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        precision: Precision::Bf16,
        ..config()
    };
    let mut trainer = Trainer::new(
        model_in(&dir.path().join("m"), Precision::Bf16),
        config,
        &dir.path().join("run"),
        false,
    )
    .unwrap();
    assert!(trainer
        .model
        .params
        .iter()
        .all(|(_, v)| v.dtype() == DType::BF16));
    let metrics = trainer.train(&examples(), &mut |_| {}).unwrap();
    let (first, last) = (metrics[0].loss, metrics.last().unwrap().loss);
    assert!(first > 2.0 && last < 0.1, "loss {first} -> {last}");
    assert!(metrics.iter().all(|m| m.loss_scale.is_none()));
    let weights = trainer.trained_weights().unwrap();
    assert!(weights.iter().all(|(_, w)| w.dtype() == DType::F32));
    assert_resume_is_exact(Precision::Bf16);
}

/// bf16 on candle's elementary ops, the path CUDA runs, learns along the same loss curve
/// as the CPU's fused training ops (which compute in f32 between bf16 tensors).
#[test]
fn bf16_elementary_ops_follow_the_fused_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 20,
        precision: Precision::Bf16,
        ..config()
    };
    let run = |name: &str, kernels: Kernels| {
        let mut model = model_in(&dir.path().join(name), Precision::Bf16);
        model.llama.kernels = kernels;
        let run_dir = dir.path().join(format!("{name}-run"));
        let mut trainer = Trainer::new(model, config.clone(), &run_dir, false).unwrap();
        let metrics = trainer.train(&examples(), &mut |_| {}).unwrap();
        metrics.iter().map(|m| m.loss).collect::<Vec<f64>>()
    };
    let fused = run("fused", Kernels::Differentiable);
    let elementary = run("elementary", Kernels::Elementary);
    assert!(fused[19] < 0.5 * fused[0], "{fused:?}");
    for (step, (a, b)) in fused.iter().zip(&elementary).enumerate() {
        assert!(
            (a - b).abs() < 0.05 * a,
            "step {step}: fused {a} vs elementary {b}"
        );
    }
}

/// f16 scales the loss (2^16 at first), skips updates whose gradients overflow and
/// halves the scale; it learns, and the scale is part of what resumes.
#[test]
fn f16_training_scales_the_loss_learns_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        precision: Precision::F16,
        ..config()
    };
    let mut trainer = Trainer::new(
        model_in(&dir.path().join("m"), Precision::F16),
        config,
        &dir.path().join("run"),
        false,
    )
    .unwrap();
    let metrics = trainer.train(&examples(), &mut |_| {}).unwrap();
    assert_eq!(metrics[0].loss_scale, Some(65536.0));
    for pair in metrics.windows(2) {
        let (scale, next) = (pair[0].loss_scale.unwrap(), pair[1].loss_scale.unwrap());
        if pair[0].overflow {
            assert_eq!(pair[0].grad_norm, 0.0);
            assert_eq!(next, scale / 2.0, "an overflow halves the scale");
        } else {
            assert_eq!(next, scale, "no growth within 2000 clean updates");
        }
    }
    let applied: Vec<f64> = metrics
        .iter()
        .filter(|m| !m.overflow)
        .map(|m| m.loss)
        .collect();
    let (first, last) = (applied[0], *applied.last().unwrap());
    assert!(applied.len() > metrics.len() / 2, "most updates apply");
    assert!(first > 2.0 && last < 0.1, "loss {first} -> {last}");
    assert_resume_is_exact(Precision::F16);
}

/// Train N updates straight, and N/2 + a crash + resume: the same losses.
fn assert_resume_is_exact(precision: Precision) {
    let dir = tempfile::tempdir().unwrap();
    let short = TrainConfig {
        epochs: 16,
        save_every: 3,
        precision,
        ..config()
    };
    let model = |name: &str| model_in(&dir.path().join(name), precision);
    let straight = {
        let mut t = Trainer::new(
            model("a"),
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
        model("b"),
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
    let mut second = Trainer::new(model("c"), short, &run, true).unwrap();
    assert_eq!(second.step(), 6);
    let rest = second.train(&examples(), &mut |_| {}).unwrap();
    assert_eq!(rest.len(), 10);
    for (a, b) in straight[6..].iter().zip(&rest) {
        assert_eq!((a.step, a.loss_scale), (b.step, b.loss_scale));
        assert!(
            (a.loss - b.loss).abs() < 1e-6,
            "{precision:?} step {}: {} vs {}",
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
