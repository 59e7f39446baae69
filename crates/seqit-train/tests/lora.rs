//! LoRA: only the adapters are trained and receive gradients, and the adapters seqit
//! writes or reads in PEFT's layout give the same model as merging them.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{examples, loss_of_rows};
use seqit_model::{
    apply_peft_adapter, load_hf_dir, load_model, save_peft_adapter, LinearWeight, LoadOptions,
};
use seqit_testkit::{
    fixture, logits_at_every_position, tiny_hf_dir, TinyModel, TinyModelSpec, RENAMED_LLAMA,
};
use seqit_train::{
    lora, LoraSettings, Schedule, TokenizedExample, TrainConfig, TrainableModel, Trainer,
};

fn settings(dropout: f64) -> LoraSettings {
    LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout,
        ..LoraSettings::default()
    }
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 40,
        lr: 1e-2,
        batch_size: 4,
        max_len: 64,
        warmup_ratio: 0.0,
        schedule: Schedule::Constant,
        seed: 9,
        lora: Some(settings(0.1)),
        ..TrainConfig::default()
    }
}

fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn batch_loss(model: &TrainableModel) -> Tensor {
    let ex = examples();
    let rows: Vec<Vec<&TokenizedExample>> = ex.iter().take(4).map(|e| vec![e]).collect();
    loss_of_rows(&model.llama, &rows)
}

/// Every tensor of the base model: embedding, norms, projections, LM head.
fn frozen_tensors(model: &mut TrainableModel) -> Vec<(String, Tensor)> {
    let llama = &mut model.llama;
    let mut out = vec![
        ("embed".to_string(), llama.embed_tokens.0.clone()),
        ("norm".to_string(), llama.norm.weight().clone()),
    ];
    if let LinearWeight::Dense(w) = llama.lm_head.weight() {
        out.push(("lm_head".into(), w.clone()));
    }
    for (i, block) in llama.layers.iter().enumerate() {
        for (part, norm) in block.norms() {
            out.push((format!("{i}.{part:?}"), norm.weight().clone()));
        }
    }
    for (name, linear) in llama.projections_mut() {
        let LinearWeight::Dense(w) = linear.weight() else {
            panic!("dense")
        };
        out.push((name, w.clone()));
    }
    out
}

#[test]
fn only_adapters_receive_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let base = load_hf_dir(&tiny_hf_dir(dir.path()), &Device::Cpu, DType::F32).unwrap();
    let before = logits_at_every_position(&base, &[5, 6, 7, 8]);
    let model = lora(base, &settings(0.0), 1).unwrap();
    // B starts at zero: the adapted model is the base model (up to the differentiable
    // kernels' rounding).
    let d = max_difference(
        &before,
        &logits_at_every_position(&model.llama, &[5, 6, 7, 8]),
    );
    assert!(d < 1e-5, "{d}");
    // 2 layers × 7 projections × (A, B).
    assert_eq!(model.params.len(), 28);
    assert!(model.params[0]
        .0
        .starts_with("base_model.model.model.layers.0.self_attn.q_proj.lora_A"));

    // With B = 0, A's gradient is zero (as in PEFT): one update makes B non-zero.
    let mut trainer = Trainer::new(
        model,
        TrainConfig {
            max_steps: Some(1),
            ..config()
        },
        &dir.path().join("run"),
        false,
    )
    .unwrap();
    trainer.train(&examples(), &mut |_| {}).unwrap();
    let mut model = trainer.model;

    let grads = batch_loss(&model).backward().unwrap();
    for (name, var) in &model.params {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "{name}: {norm}");
    }
    let frozen = frozen_tensors(&mut model);
    assert_eq!(frozen.len(), 3 + 2 * 2 + 14);
    for (name, t) in frozen {
        assert!(grads.get(&t).is_none(), "frozen `{name}` got a gradient");
    }
}

#[test]
fn lora_learns_and_resumes_exactly_with_dropout() {
    let dir = tempfile::tempdir().unwrap();
    let hf = tiny_hf_dir(&dir.path().join("m"));
    let model = || {
        let base = load_hf_dir(&hf, &Device::Cpu, DType::F32).unwrap();
        lora(base, &settings(0.1), 9).unwrap()
    };
    let short = TrainConfig {
        epochs: 8,
        save_every: 2,
        ..config()
    };
    let straight = Trainer::new(model(), short.clone(), &dir.path().join("a"), false)
        .unwrap()
        .train(&examples(), &mut |_| {})
        .unwrap();
    let run = dir.path().join("b");
    Trainer::new(
        model(),
        TrainConfig {
            max_steps: Some(9),
            ..short.clone()
        },
        &run,
        false,
    )
    .unwrap()
    .train(&examples(), &mut |_| {})
    .unwrap();
    std::fs::remove_dir_all(run.join("checkpoint-00000009")).unwrap();
    let mut resumed = Trainer::new(model(), short, &run, true).unwrap();
    assert_eq!(resumed.step(), 8);
    let rest = resumed.train(&examples(), &mut |_| {}).unwrap();
    assert_eq!(rest.len(), 8);
    for (a, b) in straight[8..].iter().zip(&rest) {
        assert!(
            (a.loss - b.loss).abs() < 1e-6,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }

    let long = Trainer::new(model(), config(), &dir.path().join("c"), false)
        .unwrap()
        .train(&examples(), &mut |_| {})
        .unwrap();
    let (first, last) = (long[0].loss, long.last().unwrap().loss);
    assert!(last < first * 0.5, "LoRA loss {first} -> {last}");
}

/// The adapter written in PEFT's layout, read back onto the base model (merged, dense)
/// and onto a GGUF copy of it (kept beside quantized matrices, rows permuted for
/// llama.cpp's RoPE), gives the logits of the model it was trained in.
#[test]
fn saved_adapter_applied_equals_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = TinyModel::new(&TinyModelSpec::default()).unwrap();
    let hf = tiny.write_hf_dir(&dir.path().join("hf")).unwrap();
    let gguf = tiny
        .write_gguf(
            &dir.path().join("m.gguf"),
            candle_core::quantized::GgmlDType::F32,
        )
        .unwrap();
    let base = load_hf_dir(&hf, &Device::Cpu, DType::F32).unwrap();
    let mut trainer = Trainer::new(
        lora(base, &settings(0.0), 3).unwrap(),
        TrainConfig {
            max_steps: Some(5),
            ..config()
        },
        &dir.path().join("run"),
        false,
    )
    .unwrap();
    trainer.train(&examples(), &mut |_| {}).unwrap();
    let ids = [3u32, 70, 71, 72, 9, 100, 101];
    let trained = logits_at_every_position(&trainer.model.llama, &ids);

    let adapter = dir.path().join("adapter");
    let tensors: Vec<(String, Tensor)> = trainer
        .model
        .params
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let config = settings(0.0)
        .peft_config(&seqit_model::arch::LLAMA.hf_names)
        .unwrap();
    save_peft_adapter(&adapter, &config, &tensors).unwrap();

    let mut merged = load_hf_dir(&hf, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(apply_peft_adapter(&mut merged, &adapter).unwrap(), 14);
    let base_logits =
        logits_at_every_position(&load_hf_dir(&hf, &Device::Cpu, DType::F32).unwrap(), &ids);
    assert!(
        max_difference(&trained, &base_logits) > 1e-2,
        "training changed the model"
    );
    let d = max_difference(&trained, &logits_at_every_position(&merged, &ids));
    assert!(d < 1e-4, "merged vs trained: {d}");

    let mut quantized = load_model(&gguf, &Device::Cpu, LoadOptions::default())
        .unwrap()
        .llama;
    apply_peft_adapter(&mut quantized, &adapter).unwrap();
    let d = max_difference(&trained, &logits_at_every_position(&quantized, &ids));
    assert!(d < 1e-3, "applied on GGUF weights vs trained: {d}");
}

/// An adapter written by PEFT itself (random A and B on every projection of a tiny Llama
/// made by transformers) reproduces PEFT's logits.
#[test]
fn adapter_written_by_peft_gives_peft_logits() {
    let root = fixture("peft_lora");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("logits.json")).unwrap()).unwrap();
    let mut model = load_hf_dir(&root.join("base"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        apply_peft_adapter(&mut model, &root.join("adapter")).unwrap(),
        14
    );
    for (row, ids) in expected["input_ids"].as_array().unwrap().iter().enumerate() {
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<Vec<f32>> = serde_json::from_value(expected["logits"][row].clone()).unwrap();
        let want = Tensor::new(want, &Device::Cpu).unwrap();
        let d = max_difference(&logits_at_every_position(&model, &ids), &want);
        assert!(d < 1e-4, "row {row}: max logit difference {d}");
    }
}

#[test]
fn unsupported_or_mismatched_adapters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = fixture("peft_lora");
    let adapter = dir.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::copy(
        root.join("adapter/adapter_model.safetensors"),
        adapter.join("adapter_model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(root.join("adapter/adapter_config.json")).unwrap();
    std::fs::write(
        adapter.join("adapter_config.json"),
        config.replace("\"use_dora\": false", "\"use_dora\": true"),
    )
    .unwrap();
    let mut model = load_hf_dir(&root.join("base"), &Device::Cpu, DType::F32).unwrap();
    let err = apply_peft_adapter(&mut model, &adapter).unwrap_err();
    assert!(format!("{err:#}").contains("use_dora"), "{err:#}");

    // The tiny testkit model has other shapes than the fixture's base.
    let other = load_hf_dir(
        &tiny_hf_dir(&dir.path().join("m")),
        &Device::Cpu,
        DType::F32,
    );
    let err = apply_peft_adapter(&mut other.unwrap(), &root.join("adapter")).unwrap_err();
    assert!(format!("{err:#}").contains("has shape"), "{err:#}");
}

#[test]
fn targets_name_the_same_projections_under_any_architecture() {
    use seqit_model::arch::{Param, LLAMA};
    let dir = tempfile::tempdir().unwrap();
    let llama_dir = tiny_hf_dir(&dir.path().join("llama"));
    // The tiny model's tensors and config under RENAMED_LLAMA's names.
    let renamed_dir = dir.path().join("renamed");
    std::fs::create_dir_all(&renamed_dir).unwrap();
    let tensors = candle_core::safetensors::load(llama_dir.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let (module, param) = LLAMA.hf_names.parse_tensor(&name).unwrap();
            (RENAMED_LLAMA.hf_names.tensor(module, param), t)
        })
        .collect::<std::collections::HashMap<_, _>>();
    assert!(tensors.contains_key(&RENAMED_LLAMA.hf_names.tensor(
        seqit_model::arch::Module::Layer(0, seqit_model::arch::LayerModule::Q),
        Param::Weight
    )));
    candle_core::safetensors::save(&tensors, renamed_dir.join("model.safetensors")).unwrap();
    let llama = load_hf_dir(&llama_dir, &Device::Cpu, DType::F32).unwrap();
    let config = RENAMED_LLAMA
        .config_to_hf(&llama.config, "float32")
        .to_string();
    std::fs::write(renamed_dir.join("config.json"), config).unwrap();
    let renamed =
        seqit_model::load_hf_dir_as(&renamed_dir, &RENAMED_LLAMA, &Device::Cpu, DType::F32)
            .unwrap();
    let layers = renamed.config.num_hidden_layers;

    let targets = LoraSettings::parse_targets("q,o,down").unwrap();
    let settings = LoraSettings {
        targets,
        ..settings(0.0)
    };
    let model = lora(renamed, &settings, 1).unwrap();
    let names: Vec<&str> = model.params.iter().map(|(n, _)| n.as_str()).collect();
    // An A and a B for each targeted projection of each layer, under RENAMED_LLAMA's names.
    assert_eq!(names.len(), 2 * 3 * layers, "{names:?}");
    for layer in 0..layers {
        for module in ["attn.q", "attn.out", "ffn.down"] {
            for matrix in ["lora_A", "lora_B"] {
                let name =
                    format!("base_model.model.transformer.h.{layer}.{module}.{matrix}.weight");
                assert!(names.contains(&name.as_str()), "{name} not in {names:?}");
            }
        }
    }
    let config = settings.peft_config(&RENAMED_LLAMA.hf_names).unwrap();
    assert_eq!(config.target_modules, ["q", "out", "down"]);
    let config = settings.peft_config(&LLAMA.hf_names).unwrap();
    assert_eq!(config.target_modules, ["q_proj", "o_proj", "down_proj"]);
}
