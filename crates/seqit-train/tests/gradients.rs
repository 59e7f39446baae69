//! Gradients of the trainable Llama: every parameter gets one, and they agree with finite
//! differences of the loss.

mod common;

use candle_core::{DType, Device, Tensor};
use common::loss_of_rows;
use seqit_model::{load_hf_dir, Kernels};
use seqit_testkit::{TinyModel, TinyModelSpec};
use seqit_train::{full_finetuning, TokenizedExample, TrainableModel};

fn tiny(spec: TinyModelSpec) -> (tempfile::TempDir, TrainableModel) {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&spec)
        .unwrap()
        .write_hf_dir(dir.path())
        .unwrap();
    let model = full_finetuning(load_hf_dir(&hf, &Device::Cpu, DType::F32).unwrap()).unwrap();
    (dir, model)
}

fn examples() -> Vec<TokenizedExample> {
    vec![
        TokenizedExample {
            input_ids: vec![72, 101, 108, 108, 111, 260, 33],
            trained: vec![false, false, false, true, true, true, true],
        },
        TokenizedExample {
            input_ids: vec![97, 98, 99],
            trained: vec![false, true, true],
        },
    ]
}

fn loss(model: &TrainableModel, packed: bool) -> Tensor {
    let ex = examples();
    let rows = if packed {
        vec![vec![&ex[0], &ex[1]]]
    } else {
        vec![vec![&ex[0]], vec![&ex[1]]]
    };
    loss_of_rows(&model.llama, &rows)
}

#[test]
fn every_parameter_receives_a_gradient() {
    for spec in [
        TinyModelSpec::default(),
        TinyModelSpec {
            tie_word_embeddings: true,
            ..TinyModelSpec::default()
        },
        TinyModelSpec::qwen3(),
    ] {
        let qk_norms = spec.architecture.has_qk_norm();
        let (_dir, model) = tiny(spec);
        let grads = loss(&model, true).backward().unwrap();
        assert!(model.params.len() >= 20);
        let per_head_norms = model
            .params
            .iter()
            .filter(|(name, _)| name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight"))
            .count();
        assert_eq!(per_head_norms, if qk_norms { 4 } else { 0 });
        for (name, var) in &model.params {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient norm {norm}"
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    for spec in [TinyModelSpec::default(), TinyModelSpec::qwen3()] {
        finite_differences(spec);
    }
}

fn finite_differences(spec: TinyModelSpec) {
    let (_dir, model) = tiny(spec);
    let grads = loss(&model, false).backward().unwrap();
    let eps = 1e-2f32;
    let mut checked = 0;
    for (name, var) in &model.params {
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let values: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        // The coordinate with the largest gradient gives a well-conditioned check.
        let i = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        let at = |delta: f32| {
            let mut v = values.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss(&model, false).to_scalar::<f32>().unwrap() as f64
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
        let analytic = g[i] as f64;
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        assert!(
            rel < 0.05,
            "{name}[{i}]: analytic {analytic}, numeric {numeric}"
        );
        checked += 1;
    }
    assert_eq!(checked, model.params.len());
}

#[test]
fn packing_gives_the_same_loss_as_padding() {
    for spec in [TinyModelSpec::default(), TinyModelSpec::qwen3()] {
        let (_dir, model) = tiny(spec);
        let packed = loss(&model, true).to_scalar::<f32>().unwrap();
        let padded = loss(&model, false).to_scalar::<f32>().unwrap();
        assert!(
            (packed - padded).abs() < 1e-5,
            "packed {packed} vs padded {padded}"
        );
    }
}

/// Every gradient, flattened in parameter order.
fn all_gradients(model: &TrainableModel) -> Vec<f32> {
    let grads = loss(model, true).backward().unwrap();
    model
        .params
        .iter()
        .flat_map(|(_, var)| {
            let g = grads.get(var.as_tensor()).unwrap();
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
        .collect()
}

/// candle's elementary ops, the path CUDA trains on, give the gradients of the CPU's
/// training ops, per-head norms included.
#[test]
fn elementary_ops_give_the_training_ops_gradients() {
    for spec in [TinyModelSpec::default(), TinyModelSpec::qwen3()] {
        let (_dir, mut model) = tiny(spec);
        let fused = all_gradients(&model);
        model.llama.kernels = Kernels::Elementary;
        let elementary = all_gradients(&model);
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let diff: Vec<f32> = fused.iter().zip(&elementary).map(|(a, b)| a - b).collect();
        let error = norm(&diff) / norm(&fused);
        assert!(error < 1e-4, "relative L2 error {error}");
    }
}
