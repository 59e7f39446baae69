//! The architectures that differ from Llama compute what transformers computes: tiny
//! random Qwen2 and Qwen3 checkpoints saved by transformers, with its logits at every
//! position (`scripts/fixtures/make_architecture_golden.py`), reproduced by each of
//! seqit's paths: the inference kernels, both training paths, the KV cache one token at a
//! time, and the packed CPU decoder on Q8_0 weights.

use std::path::PathBuf;

use candle_core::{DType, Device};
use seqit_model::arch::{ArchSpec, QWEN3};
use seqit_model::{
    load_hf_dir, load_hf_dir_as, load_model, save_hf_weights, Kernels, KvCache, Llama, LoadOptions,
};
use seqit_testkit::{fixture, logits_at_every_position};

struct Golden {
    dir: PathBuf,
    ids: Vec<u32>,
    /// `[positions][vocab]`
    logits: Vec<Vec<f32>>,
}

fn golden(model_type: &str) -> Golden {
    let dir = fixture("architectures").join(model_type);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("logits.json")).unwrap()).unwrap();
    Golden {
        ids: serde_json::from_value(json["ids"].clone()).unwrap(),
        logits: serde_json::from_value(json["logits"].clone()).unwrap(),
        dir,
    }
}

/// Logits of every position of `ids` in one pass, `[positions][vocab]`.
fn all_positions(model: &Llama, ids: &[u32]) -> Vec<Vec<f32>> {
    logits_at_every_position(model, ids).to_vec2().unwrap()
}

/// Largest difference, relative to the largest reference logit.
fn relative_max_diff(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), want.len());
    let (mut worst, mut scale) = (0f32, 0f32);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    worst / scale
}

/// The dense f32 model against transformers, on every kernel path of one forward pass.
fn check_kernels(model_type: &str) {
    let g = golden(model_type);
    let mut model = load_hf_dir(&g.dir, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(model.arch().model_type, model_type);
    for kernels in [Kernels::Fused, Kernels::Differentiable, Kernels::Elementary] {
        model.kernels = kernels;
        let diff = relative_max_diff(&all_positions(&model, &g.ids), &g.logits);
        eprintln!("{model_type} {kernels:?}: relative difference {diff:.1e}");
        assert!(
            diff < 1e-5,
            "{model_type} {kernels:?}: relative difference {diff}"
        );
    }
}

/// One token at a time through a KV cache: candle's path on the dense model, and on the
/// weights quantized to Q8_0 both candle's path and the packed decoder.
fn check_incremental(model_type: &str) {
    let g = golden(model_type);
    let dense = load_hf_dir(&g.dir, &Device::Cpu, DType::F32).unwrap();
    let quantized = load_model(&g.dir, &Device::Cpu, LoadOptions::default())
        .unwrap()
        .llama;
    let packed = quantized
        .packed_decoder()
        .expect("the fixture's shapes fit the packed kernels");
    let layers = dense.config.num_hidden_layers;
    let mut caches: [KvCache; 3] = std::array::from_fn(|_| KvCache::new(layers));
    let mut steps: [Vec<Vec<f32>>; 3] = Default::default();
    for &id in &g.ids {
        let [dense_cache, quantized_cache, packed_cache] = &mut caches;
        steps[0].push(dense.forward_padded(&[id], 1, &[0], dense_cache).unwrap());
        steps[1].push(
            quantized
                .forward_padded(&[id], 1, &[0], quantized_cache)
                .unwrap(),
        );
        steps[2].push(packed.forward(&[id], 1, &[0], packed_cache).unwrap());
    }
    let [dense_diff, quantized_diff, packed_diff] =
        steps.each_ref().map(|s| relative_max_diff(s, &g.logits));
    eprintln!(
        "{model_type} with a KV cache, relative difference: dense {dense_diff:.1e}, \
         Q8_0 on candle {quantized_diff:.1e}, Q8_0 packed {packed_diff:.1e}"
    );
    assert!(dense_diff < 1e-5, "{model_type} dense: {dense_diff}");
    // Q8_0 weights: close, not equal. The packed decoder also quantizes activations (to 8
    // bits per 32 values, twice) and keeps its cache in f16: it may add a little.
    assert!(
        quantized_diff < 0.05,
        "{model_type} Q8_0 on candle: {quantized_diff}"
    );
    assert!(
        packed_diff < 0.05 && packed_diff < 1.5 * quantized_diff,
        "{model_type} packed {packed_diff} vs candle's Q8_0 path {quantized_diff}"
    );
}

#[test]
fn qwen2_matches_transformers_on_every_kernel_path() {
    check_kernels("qwen2");
}

#[test]
fn qwen3_matches_transformers_on_every_kernel_path() {
    check_kernels("qwen3");
}

#[test]
fn qwen2_matches_transformers_token_by_token_and_packed() {
    check_incremental("qwen2");
}

#[test]
fn qwen3_matches_transformers_token_by_token_and_packed() {
    check_incremental("qwen3");
}

/// The test above can fail: the same checkpoint read without Qwen3's per-head norms is
/// another function.
#[test]
fn qwen3_without_its_qk_norms_does_not_match() {
    let g = golden("qwen3");
    let without = ArchSpec {
        qk_norm: false,
        ..QWEN3
    };
    let without: &'static ArchSpec = Box::leak(Box::new(without));
    let model = load_hf_dir_as(&g.dir, without, &Device::Cpu, DType::F32).unwrap();
    let diff = relative_max_diff(&all_positions(&model, &g.ids), &g.logits);
    eprintln!("qwen3 without its q/k norms: relative difference {diff:.1e}");
    assert!(diff > 0.05, "relative difference {diff}");
}

fn tensor_names(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect()
}

/// Export writes the tensors transformers saved, under its names, and a `config.json`
/// that reads back as the same configuration.
#[test]
fn exports_write_the_tensors_and_config_transformers_saved() {
    for model_type in ["qwen2", "qwen3"] {
        let g = golden(model_type);
        let model = load_hf_dir(&g.dir, &Device::Cpu, DType::F32).unwrap();
        let out = tempfile::tempdir().unwrap();
        save_hf_weights(&model, out.path(), DType::F32).unwrap();
        assert_eq!(
            tensor_names(out.path()),
            tensor_names(&g.dir),
            "{model_type}"
        );
        let exported = load_hf_dir(out.path(), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(exported.config, model.config);
        assert_eq!(
            all_positions(&exported, &g.ids),
            all_positions(&model, &g.ids)
        );
    }
}
