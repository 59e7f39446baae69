//! `convert_gguf_to_hf`: the written Hugging Face directory must hold the same model.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::{convert_gguf_to_hf, Engine, EngineOptions, GenerationRequest};
use seqit_model::{named_weights, WeightStorage};
use seqit_testkit::{TinyModel, TinyModelSpec};

#[test]
fn tiny_models_round_trip_through_gguf_and_back() {
    // Llama's Q/K rows are permuted in GGUF; Qwen3's are not, and it adds per-head norms.
    for spec in [TinyModelSpec::default(), TinyModelSpec::qwen3()] {
        round_trip(spec);
    }
}

fn round_trip(spec: TinyModelSpec) {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::new(&spec).unwrap();
    let gguf = model
        .write_gguf(&dir.path().join("m.gguf"), GgmlDType::F32)
        .unwrap();
    let out = dir.path().join("hf");
    convert_gguf_to_hf(&gguf, &out, DType::F32).unwrap();
    let converted = seqit_model::load_hf_dir(&out, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(converted.config, model.config);
    // Q/K rows are un-permuted back to the Hugging Face layout: every tensor is exact.
    let converted: std::collections::HashMap<String, _> =
        named_weights(&converted).unwrap().into_iter().collect();
    assert_eq!(converted.len(), model.weights.len());
    for (name, original) in &model.weights {
        let diff = (original - &converted[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{name}");
    }
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(config["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
}

#[test]
fn converted_default_model_generates_the_same_tokens_as_the_gguf() {
    let Some(gguf) = seqit_testkit::require_model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    convert_gguf_to_hf(&gguf, dir.path(), DType::F32).unwrap();
    let requests: Vec<GenerationRequest> = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
    ]
    .iter()
    .map(|p| GenerationRequest {
        prompt: Prompt::Chat(vec![ChatMessage::user(*p)]),
        params: SamplingParams::greedy(32),
    })
    .collect();
    let dense = EngineOptions {
        weights: WeightStorage::Dequantized,
        ..EngineOptions::default()
    };
    let from_gguf = Engine::load(&gguf, dense.clone())
        .unwrap()
        .generate(&requests, &mut |_, _| {})
        .unwrap();
    let from_hf = Engine::load(dir.path(), dense.clone())
        .unwrap()
        .generate(&requests, &mut |_, _| {})
        .unwrap();
    for (a, b) in from_gguf.iter().zip(&from_hf) {
        assert_eq!(a.token_ids, b.token_ids);
        assert_eq!(a.prompt_tokens, b.prompt_tokens);
    }
    assert!(from_hf[0].text.contains("Paris"), "{:?}", from_hf[0].text);

    // transformers, given the same directory (fixture made by
    // scripts/fixtures/make_transformers_golden.py), renders, tokenizes and generates alike.
    let engine = Engine::load(dir.path(), dense).unwrap();
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(seqit_testkit::fixture("smollm2_transformers_golden.json"))
            .unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for case in golden["cases"].as_array().unwrap() {
        let prompt = Prompt::Chat(vec![ChatMessage::user(case["prompt"].as_str().unwrap())]);
        assert_eq!(
            engine.render(&prompt).unwrap(),
            case["rendered"].as_str().unwrap()
        );
        assert_eq!(
            engine.prompt_ids(&prompt).unwrap(),
            ids(&case["prompt_ids"])
        );
        let reply = engine
            .generate(
                &[GenerationRequest {
                    prompt,
                    params: SamplingParams::greedy(32),
                }],
                &mut |_, _| {},
            )
            .unwrap()
            .remove(0);
        assert_eq!(
            reply.token_ids,
            ids(&case["greedy_ids"]),
            "{:?}",
            case["prompt"]
        );
        assert_eq!(reply.text, case["greedy_text"].as_str().unwrap());
    }
}
