//! The architecture seam: a toy architecture that differs from Llama only in its tensor
//! and class names, declared here and not registered, loads the same weights into a model
//! whose logits equal Llama's, and exports and takes PEFT adapters under its own names.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use seqit_model::arch::{ArchSpec, LayerModule, Module, Param, LLAMA};
use seqit_model::{
    apply_peft_adapter, load_hf_dir, load_hf_dir_as, peft_tensor_name, save_hf_weights,
    save_peft_adapter, Llama, ModelConfig, PeftConfig,
};
use seqit_testkit::{logits_at_every_position, RENAMED_LLAMA};

const TOKENS: [u32; 6] = [3, 41, 7, 0, 29, 12];

fn config() -> ModelConfig {
    ModelConfig::from_hf_json(
        r#"{"architectures": ["LlamaForCausalLM"], "vocab_size": 48, "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "tie_word_embeddings": false}"#,
    )
    .unwrap()
}

/// Seeded values in `[-scale, scale)` (a linear congruential generator).
fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Every weight of a model of `config`, by module.
fn weights(c: &ModelConfig) -> Vec<(Module, Tensor)> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let mut out = vec![(Module::Embedding, random(&[v, h], 1, 1.0))];
    for layer in 0..c.num_hidden_layers {
        for (n, part) in c.architecture.spec().layer_modules().enumerate() {
            let shape = match part {
                LayerModule::AttnNorm | LayerModule::MlpNorm => vec![h],
                LayerModule::QNorm | LayerModule::KNorm => vec![c.head_dim],
                LayerModule::Q => vec![q, h],
                LayerModule::K | LayerModule::V => vec![kv, h],
                LayerModule::O => vec![h, q],
                LayerModule::Gate | LayerModule::Up => vec![i, h],
                LayerModule::Down => vec![h, i],
            };
            let t = random(&shape, (10 * layer + n) as u64 + 2, 0.3);
            // Norm weights near 1, as trained ones are.
            let t = if shape.len() == 1 {
                (t + 1.0).unwrap()
            } else {
                t
            };
            out.push((Module::Layer(layer, part), t));
        }
    }
    out.push((Module::FinalNorm, (random(&[h], 98, 0.2) + 1.0).unwrap()));
    out.push((Module::LmHead, random(&[v, h], 99, 0.3)));
    out
}

/// A fresh directory under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seqit-arch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `config.json` and `model.safetensors` as `arch` names them.
fn write_hf_dir(dir: &Path, arch: &ArchSpec, config: &ModelConfig) {
    let tensors: HashMap<String, Tensor> = weights(config)
        .into_iter()
        .map(|(module, t)| (arch.hf_names.tensor(module, Param::Weight), t))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let json = arch.config_to_hf(config, "float32").to_string();
    std::fs::write(dir.join("config.json"), json).unwrap();
}

fn logits(model: &Llama) -> Vec<f32> {
    let logits = logits_at_every_position(model, &TOKENS);
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

fn tensor_names(dir: &Path) -> BTreeSet<String> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect()
}

/// A rank-2 adapter on every layer's Q and down projections, named as `arch` names them.
fn write_adapter(dir: &Path, arch: &ArchSpec, config: &ModelConfig) {
    let mut tensors = Vec::new();
    for layer in 0..config.num_hidden_layers {
        for (part, (out, inp)) in [
            (LayerModule::Q, (config.hidden_size, config.hidden_size)),
            (
                LayerModule::Down,
                (config.hidden_size, config.intermediate_size),
            ),
        ] {
            let module = arch.hf_names.module(Module::Layer(layer, part));
            let seed = 200 + 2 * layer as u64 + (part == LayerModule::Q) as u64;
            tensors.push((
                peft_tensor_name(&module, "lora_A"),
                random(&[2, inp], seed, 0.5),
            ));
            tensors.push((
                peft_tensor_name(&module, "lora_B"),
                random(&[out, 2], seed + 50, 0.5),
            ));
        }
    }
    let peft = PeftConfig::lora(2, 4.0, 0.0, vec!["q_proj".into(), "down_proj".into()]);
    save_peft_adapter(dir, &peft, &tensors).unwrap();
}

#[test]
fn a_toy_architecture_loads_exports_and_adapts_under_its_own_names() {
    let config = config();
    let (llama_dir, toy_dir) = (scratch("llama"), scratch("toy"));
    write_hf_dir(&llama_dir, &LLAMA, &config);
    write_hf_dir(&toy_dir, &RENAMED_LLAMA, &config);

    let mut llama = load_hf_dir(&llama_dir, &Device::Cpu, DType::F32).unwrap();
    let mut toy = load_hf_dir_as(&toy_dir, &RENAMED_LLAMA, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(toy.arch().name, "Toy");
    assert_eq!(toy.config, llama.config);
    let expected = logits(&llama);
    assert_eq!(logits(&toy), expected);

    // Unregistered, the toy is not found by the class its config.json names.
    let err = load_hf_dir(&toy_dir, &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        format!("{err:#}").contains("unsupported architecture `ToyForCausalLM`"),
        "{err:#}"
    );

    // Export writes the toy's names and class, and reads back to the same model.
    let exported = scratch("toy-export");
    save_hf_weights(&toy, &exported, DType::F32).unwrap();
    assert_eq!(tensor_names(&exported), tensor_names(&toy_dir));
    assert!(tensor_names(&exported).contains("transformer.h.1.attn.out.weight"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exported.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(json["architectures"][0], "ToyForCausalLM");
    let reloaded = load_hf_dir_as(&exported, &RENAMED_LLAMA, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(logits(&reloaded), expected);

    // The same adapter, under each architecture's module names, adapts both alike.
    let (llama_adapter, toy_adapter) = (scratch("llama-adapter"), scratch("toy-adapter"));
    write_adapter(&llama_adapter, &LLAMA, &config);
    write_adapter(&toy_adapter, &RENAMED_LLAMA, &config);
    assert_eq!(apply_peft_adapter(&mut llama, &llama_adapter).unwrap(), 4);
    assert_eq!(apply_peft_adapter(&mut toy, &toy_adapter).unwrap(), 4);
    let adapted = logits(&toy);
    assert_ne!(adapted, expected);
    assert_eq!(adapted, logits(&llama));
    let err = apply_peft_adapter(&mut toy, &llama_adapter).unwrap_err();
    assert!(err.to_string().contains("matches no projection"), "{err}");

    for dir in [llama_dir, toy_dir, exported, llama_adapter, toy_adapter] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
