//! The CUDA path against the CPU on a tiny random-weight Llama (and Qwen3, whose per-head
//! norms add ops, for the forward pass and the gradients): the forward pass, one
//! training step's gradients, one AdamW update, and checkpoints that move between the two
//! devices. They need an NVIDIA GPU and a build with the `cuda` feature, so they are
//! ignored by default:
//!
//! ```text
//! cargo test -p seqit-train --features cuda --test gpu -- --ignored
//! ```
//!
//! `scripts/check-cuda` compiles them without a GPU; `scripts/gpu-check` runs them on one.
//! With `SEQIT_GPU_TESTS_ON_CPU=1` the device under test is the CPU running the ops the
//! GPU runs (candle's elementary ones, [`Kernels::Elementary`]): a dry run of every
//! comparison and tolerance below on a machine without a GPU. (The test binary still
//! needs CUDA's libraries to start: there, a directory on `LD_LIBRARY_PATH` with the stubs
//! of `.cuda-toolkit/lib64/stubs` linked under their sonames — `libcuda.so.1`,
//! `libcublas.so.13`, `libcublasLt.so.13`, `libcurand.so.10`, `libnvrtc.so.13` — and
//! `.cuda-toolkit/lib64` do, as nothing calls into them.)
//!
//! The reference is always the CPU in f32 (seqit's fused training ops). Tolerances:
//! * f32 on the GPU: the same maths summed in another order, so relative L2 errors of
//!   [`F32_TOLERANCE`] (logits, gradients) and absolute 1e-5 (AdamW weights).
//! * bf16 on the GPU: 8 bits of mantissa (relative rounding 2^-9 ≈ 0.2% per op) through
//!   two layers: [`BF16_LOGITS_TOLERANCE`] for logits, [`BF16_GRADS_TOLERANCE`] for the
//!   gradients of all parameters together.

#![cfg(feature = "cuda")]

mod common;

use common::{examples, logits_of_rows, loss_of_rows};
use std::path::Path;
use std::sync::OnceLock;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use seqit_model::{load_hf_dir, Kernels, Llama};
use seqit_testkit::{TinyModel, TinyModelSpec};
use seqit_train::{
    full_finetuning, lora, AdamW, AdamWConfig, LoraSettings, Precision, Schedule, StepMetrics,
    TokenizedExample, TrainConfig, TrainableModel, Trainer,
};

/// Relative L2 error allowed between f32 on the device under test and f32 on the CPU.
const F32_TOLERANCE: f64 = 1e-3;
/// Relative L2 error allowed between bf16 logits on the device and f32 ones on the CPU.
const BF16_LOGITS_TOLERANCE: f64 = 0.03;
/// Relative L2 error allowed between bf16 gradients (all parameters together) on the
/// device and f32 ones on the CPU.
const BF16_GRADS_TOLERANCE: f64 = 0.05;

/// The device under test: CUDA device 0 (opened once, shared by the tests), or the CPU
/// on candle's elementary ops with `SEQIT_GPU_TESTS_ON_CPU=1`.
fn gpu() -> Device {
    if on_cpu() {
        return Device::Cpu;
    }
    static GPU: OnceLock<Device> = OnceLock::new();
    GPU.get_or_init(|| {
        seqit_model::parse_device("cuda").expect("these tests need an NVIDIA GPU (CUDA device 0)")
    })
    .clone()
}

fn on_cpu() -> bool {
    std::env::var_os("SEQIT_GPU_TESTS_ON_CPU").is_some_and(|v| v != "0")
}

/// What the device under test runs: training on the GPU takes candle's elementary ops
/// ([`Kernels::Differentiable`] means those there); on the CPU they must be asked for.
fn for_gpu(mut model: TrainableModel) -> TrainableModel {
    if on_cpu() {
        model.llama.kernels = Kernels::Elementary;
    }
    model
}

fn load(hf: &Path, device: &Device, dtype: DType) -> Llama {
    load_hf_dir(hf, device, dtype).unwrap()
}

/// Rows that exercise the mask: two examples packed in one row, one padded row.
fn rows(ex: &[TokenizedExample]) -> Vec<Vec<&TokenizedExample>> {
    vec![vec![&ex[0], &ex[3]], vec![&ex[1]]]
}

/// Logits of every position of [`rows`], in f32 on the CPU.
fn logits(model: &Llama, ex: &[TokenizedExample]) -> Vec<f32> {
    values(&logits_of_rows(model, &rows(ex)))
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `‖got − want‖ / ‖want‖`.
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut diff, mut norm) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        diff += (*g as f64 - *w as f64).powi(2);
        norm += (*w as f64).powi(2);
    }
    diff.sqrt() / norm.sqrt().max(f64::MIN_POSITIVE)
}

fn max_difference(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

/// (a) The inference forward pass (candle's fused kernels) on the GPU in f32 and bf16
/// gives the CPU's f32 logits.
#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on one"]
fn forward_on_cuda_matches_the_cpu() {
    for spec in [TinyModelSpec::default(), TinyModelSpec::qwen3()] {
        forward_matches(spec);
    }
}

fn forward_matches(spec: TinyModelSpec) {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&spec)
        .unwrap()
        .write_hf_dir(dir.path())
        .unwrap();
    let ex = examples();
    let want = logits(&load(&hf, &Device::Cpu, DType::F32), &ex);
    assert!(want.iter().all(|v| v.is_finite()));
    for (dtype, tolerance) in [
        (DType::F32, F32_TOLERANCE),
        (DType::BF16, BF16_LOGITS_TOLERANCE),
    ] {
        let model = load(&hf, &gpu(), dtype);
        assert_eq!(model.dtype(), dtype);
        let got = logits(&model, &ex);
        let error = relative_error(&got, &want);
        eprintln!(
            "forward {:?} {dtype:?}: relative error {error:.2e} (allowed {tolerance:.0e})",
            spec.architecture
        );
        assert!(
            error < tolerance,
            "{dtype:?} logits: relative error {error} (allowed {tolerance})"
        );
    }
}

/// The loss of [`rows`] and the gradient of every parameter (f32, on the CPU).
fn loss_and_gradients(model: &TrainableModel) -> (f32, Vec<(String, Vec<f32>)>) {
    let ex = examples();
    let loss = loss_of_rows(&model.llama, &rows(&ex));
    let grads = loss.backward().unwrap();
    let gradients = model
        .params
        .iter()
        .map(|(name, var)| {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            (name.clone(), values(g))
        })
        .collect();
    (values(&loss)[0], gradients)
}

/// (b) One training step's loss and gradients: full fine-tuning in f32 and bf16, and
/// LoRA (dropout on: its masks are drawn on the host, so both devices use the same).
#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on one"]
fn training_step_gradients_on_cuda_match_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let hf = seqit_testkit::tiny_hf_dir(dir.path());
    let qwen3 = TinyModel::new(&TinyModelSpec::qwen3())
        .unwrap()
        .write_hf_dir(&dir.path().join("qwen3"))
        .unwrap();
    // `tolerance` bounds the loss's relative error and that of all gradients together;
    // in f32 (`each`) also that of every parameter's gradient.
    let check =
        |what: &str, got: &TrainableModel, want: &TrainableModel, tolerance: f64, each: bool| {
            let (got_loss, got_grads) = loss_and_gradients(got);
            let (want_loss, want_grads) = loss_and_gradients(want);
            let loss_error = ((got_loss - want_loss) / want_loss).abs() as f64;
            assert!(
                loss_error < tolerance,
                "{what}: loss {got_loss} vs {want_loss} on the CPU"
            );
            let (mut all_got, mut all_want) = (Vec::new(), Vec::new());
            for ((name, g), (_, w)) in got_grads.iter().zip(&want_grads) {
                assert!(g.iter().all(|v| v.is_finite()), "{what}: {name} not finite");
                if each {
                    let error = relative_error(g, w);
                    assert!(
                        error < tolerance,
                        "{what}: gradient of {name}: error {error}"
                    );
                }
                all_got.extend_from_slice(g);
                all_want.extend_from_slice(w);
            }
            let error = relative_error(&all_got, &all_want);
            eprintln!(
                "{what}: loss {got_loss} vs {want_loss}, gradients' relative error {error:.2e} \
             (allowed {tolerance:.0e})"
            );
            assert!(
                error < tolerance,
                "{what}: gradients' relative error {error}"
            );
        };
    let full =
        |hf: &Path, device: &Device, dtype| full_finetuning(load(hf, device, dtype)).unwrap();
    // (what, model directory, dtype on the GPU, tolerance, every gradient on its own)
    for (what, dir, dtype, tolerance, each) in [
        ("full f32", &hf, DType::F32, F32_TOLERANCE, true),
        ("full bf16", &hf, DType::BF16, BF16_GRADS_TOLERANCE, false),
        ("Qwen3 full f32", &qwen3, DType::F32, F32_TOLERANCE, true),
    ] {
        let reference = full(dir, &Device::Cpu, DType::F32);
        let on_gpu = for_gpu(full(dir, &gpu(), dtype));
        check(what, &on_gpu, &reference, tolerance, each);
    }

    // LoRA's B starts at zero (so A gets no gradient): set B so that both do.
    let settings = LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        ..LoraSettings::default()
    };
    let adapted = |device: &Device| {
        let model = lora(load(&hf, device, DType::F32), &settings, 5).unwrap();
        for (i, (name, var)) in model.params.iter().enumerate() {
            if name.contains("lora_B") {
                let n = var.elem_count();
                let b: Vec<f32> = (0..n)
                    .map(|j| ((i * 31 + j) as f32 * 0.7).sin() * 0.05)
                    .collect();
                var.set(&Tensor::from_vec(b, var.shape(), device).unwrap())
                    .unwrap();
            }
        }
        model.lora.as_ref().unwrap().1.enable(11);
        model
    };
    check(
        "LoRA f32",
        &for_gpu(adapted(&gpu())),
        &adapted(&Device::Cpu),
        F32_TOLERANCE,
        true,
    );
}

/// Three AdamW updates (clipped, with weight decay) of a parameter of `n` values from
/// `start` on `device` in `dtype`: with `constant` a gradient of 1 (loss `Σ x`),
/// otherwise the gradient `x` (loss `Σ x²/2`).
fn three_updates(device: &Device, dtype: DType, start: &[f32], constant: bool) -> (AdamW, Var) {
    let config = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let t = Tensor::from_vec(start.to_vec(), start.len(), device)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let var = Var::from_tensor(&t).unwrap();
    let mut opt = AdamW::new(vec![var.clone()], config).unwrap();
    for _ in 0..3 {
        let x = var.as_tensor().to_dtype(DType::F32).unwrap();
        let loss = if constant {
            x.sum_all().unwrap()
        } else {
            (x.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
        };
        let grads: GradStore = loss.backward().unwrap();
        opt.step(&grads, 0.01, Some(1.0), 1.0).unwrap();
    }
    (opt, var)
}

/// (c) AdamW on the GPU (the tensor-op update) and on the CPU (the fused one, f32) give
/// the same weights and moments: for an f32 parameter, and for a bf16 one through its f32
/// master copy (with a constant gradient, which its rounded values cannot change).
#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on one"]
fn adamw_update_on_cuda_matches_the_cpu() {
    let init: Vec<f32> = (0..5_000).map(|i| (i as f32 * 0.37 + 1.0).sin()).collect();
    for dtype in [DType::F32, DType::BF16] {
        // Values the dtype holds exactly, so that both sides start from the same weights.
        let start = values(
            &Tensor::new(init.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        );
        let constant = dtype != DType::F32;
        let (want, _) = three_updates(&Device::Cpu, DType::F32, &start, constant);
        let (got, var) = three_updates(&gpu(), dtype, &start, constant);
        let got_w = values(&got.f32_weights().unwrap()[0]);
        let want_w = values(&want.f32_weights().unwrap()[0]);
        let w_error = max_difference(&got_w, &want_w);
        assert!(w_error < 1e-5, "{dtype:?}: weights differ by {w_error}");
        assert_ne!(got_w, start, "{dtype:?}: the update moved the weights");
        let (got_m, want_m) = (&got.moments().unwrap()[0], &want.moments().unwrap()[0]);
        let m_error = max_difference(&got_m.m, &want_m.m).max(max_difference(&got_m.v, &want_m.v));
        assert!(m_error < 1e-6, "{dtype:?}: moments differ by {m_error}");
        assert_eq!(var.dtype(), dtype);
        if dtype != DType::F32 {
            // The low-precision parameter is its master copy rounded.
            let rounded = Tensor::new(got_w.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert_eq!(values(var.as_tensor()), values(&rounded));
        }
        eprintln!("AdamW {dtype:?}: weights within {w_error:.1e}, moments within {m_error:.1e}");
    }
}

fn run_config(lora_settings: Option<LoraSettings>) -> TrainConfig {
    TrainConfig {
        epochs: 12,
        lr: 3e-3,
        batch_size: 4,
        grad_accum: 1,
        max_len: 64,
        warmup_ratio: 0.1,
        schedule: Schedule::Cosine,
        seed: 3,
        save_every: 3,
        precision: Precision::F32,
        lora: lora_settings,
        ..TrainConfig::default()
    }
}

/// The two sides of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Cpu,
    Gpu,
}

impl Side {
    fn device(self) -> Device {
        match self {
            Side::Cpu => Device::Cpu,
            Side::Gpu => gpu(),
        }
    }
}

fn trainable(hf: &Path, side: Side, config: &TrainConfig) -> TrainableModel {
    let llama = load(hf, &side.device(), config.precision.dtype());
    let model = match &config.lora {
        Some(settings) => lora(llama, settings, config.seed).unwrap(),
        None => full_finetuning(llama).unwrap(),
    };
    match side {
        Side::Cpu => model,
        Side::Gpu => for_gpu(model),
    }
}

/// Trains `config` on `first` until update 6 (checkpoints at 3 and 6), then resumes the
/// run on `second`; returns the metrics of updates 7 onwards.
fn switch_sides(
    hf: &Path,
    run: &Path,
    config: &TrainConfig,
    first: Side,
    second: Side,
) -> Vec<StepMetrics> {
    let stop = TrainConfig {
        max_steps: Some(6),
        ..config.clone()
    };
    let mut trainer = Trainer::new(trainable(hf, first, &stop), stop, run, false).unwrap();
    trainer.train(&examples(), &mut |_| {}).unwrap();
    let mut resumed =
        Trainer::new(trainable(hf, second, config), config.clone(), run, true).unwrap();
    assert_eq!(resumed.step(), 6, "resumed from checkpoint-6");
    let rest = resumed.train(&examples(), &mut |_| {}).unwrap();
    let logged = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        logged.lines().count(),
        6 + rest.len(),
        "each step logged once"
    );
    rest
}

/// (d) A checkpoint written by a GPU run resumes on the CPU, and one written on the CPU
/// resumes on the GPU, continuing the loss curve of a run that stayed on the CPU
/// (full fine-tuning and LoRA, in f32).
#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on one"]
fn checkpoints_move_between_cuda_and_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let hf = seqit_testkit::tiny_hf_dir(&dir.path().join("model"));
    let lora_settings = LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        ..LoraSettings::default()
    };
    for (what, config) in [
        ("full", run_config(None)),
        ("LoRA", run_config(Some(lora_settings))),
    ] {
        let straight = {
            let run = dir.path().join(format!("{what}-cpu"));
            let mut t = Trainer::new(
                trainable(&hf, Side::Cpu, &config),
                config.clone(),
                &run,
                false,
            )
            .unwrap();
            t.train(&examples(), &mut |_| {}).unwrap()
        };
        assert_eq!(straight.len(), 24);
        assert!(straight[23].loss < straight[0].loss, "{what}: it learns");
        for (order, first, second) in [
            ("cuda→cpu", Side::Gpu, Side::Cpu),
            ("cpu→cuda", Side::Cpu, Side::Gpu),
        ] {
            let run = dir.path().join(format!("{what}-{order}"));
            let rest = switch_sides(&hf, &run, &config, first, second);
            assert_eq!(rest.len(), 18);
            let worst = straight[6..]
                .iter()
                .zip(&rest)
                .map(|(a, b)| {
                    assert_eq!(a.step, b.step);
                    ((a.loss - b.loss) / a.loss).abs()
                })
                .fold(0.0, f64::max);
            eprintln!("{what} {order}: loss curve within {worst:.1e} of the CPU's");
            assert!(
                worst < F32_TOLERANCE,
                "{what} {order}: the resumed loss curve differs by up to {worst} (relative)"
            );
        }
    }
}
