//! The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) against llama.cpp.
//!
//! `tests/fixtures/smollm2_llamacpp_golden.json` was recorded with llama-cpp-python by
//! `scripts/fixtures/make_llamacpp_golden.py`: rendered prompts, token ids, llama.cpp's
//! greedy tokens and its ten best logits at each generated step.

use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::{argmax, Engine, EngineOptions, GenerationRequest};
use seqit_model::{GgufWeights, LogitsFor};
use serde_json::Value;

fn golden() -> &'static Value {
    static GOLDEN: OnceLock<Value> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let text = std::fs::read_to_string(seqit_testkit::fixture("smollm2_llamacpp_golden.json"))
            .unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn engine(weights: GgufWeights) -> Engine {
    let path =
        seqit_testkit::default_model_path().expect("assets missing: run scripts/setup first");
    Engine::load(
        &path,
        EngineOptions {
            gguf_weights: weights,
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn user(text: &str) -> Prompt {
    Prompt::Chat(vec![ChatMessage::user(text)])
}

#[test]
fn tokenizer_and_chat_template_match_llama_cpp() {
    let engine = engine(GgufWeights::AsStored);
    for case in golden()["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            engine.tokenizer().encode(text).unwrap(),
            ids(&case["ids"]),
            "tokenizing {text:?}"
        );
    }
    for chat in golden()["chats"].as_array().unwrap() {
        let prompt = user(chat["prompt"].as_str().unwrap());
        assert_eq!(
            engine.render(&prompt).unwrap(),
            chat["rendered"].as_str().unwrap()
        );
        assert_eq!(
            engine.prompt_ids(&prompt).unwrap(),
            ids(&chat["prompt_ids"])
        );
    }
}

/// Feeds llama.cpp's own greedy continuation and compares, step by step, seqit's logits
/// for llama.cpp's five best tokens and seqit's choice. llama.cpp keeps its KV cache in
/// f16 and rounds differently, so logits differ by a few tenths; where llama.cpp's two
/// best tokens are closer than `NEAR_TIE`, seqit may pick either of them.
#[test]
fn as_stored_weights_follow_llama_cpp_step_by_step() {
    const NEAR_TIE: f32 = 1.0;
    let engine = engine(GgufWeights::AsStored);
    let model = engine.model();
    let (mut diffs, mut steps, mut agreements) = (Vec::new(), 0, 0);
    for chat in golden()["chats"].as_array().unwrap() {
        let prompt = ids(&chat["prompt_ids"]);
        let generated = ids(&chat["greedy_ids"]);
        let sequence: Vec<u32> = prompt.iter().chain(&generated).copied().collect();
        let n = sequence.len();
        let input = Tensor::new(sequence.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let positions = Tensor::arange(0u32, n as u32, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = seqit_model::padded_causal_mask(&[0], 0, n, &Device::Cpu).unwrap();
        let logits = model
            .forward(
                &input,
                &positions,
                Some(&mask),
                None,
                LogitsFor::AllPositions,
            )
            .unwrap();
        let logits: Vec<Vec<f32>> = logits.squeeze(0).unwrap().to_vec2().unwrap();
        for (step, top) in chat["top_logits"].as_array().unwrap().iter().enumerate() {
            let row = &logits[prompt.len() - 1 + step];
            let top: Vec<(u32, f32)> = top
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
                .collect();
            let ours = argmax(row);
            steps += 1;
            agreements += usize::from(ours == top[0].0);
            if top[0].1 - top[1].1 >= NEAR_TIE {
                assert_eq!(
                    ours, top[0].0,
                    "step {step} of {:?}: llama.cpp's top {top:?}",
                    chat["prompt"]
                );
            } else {
                assert!(
                    ours == top[0].0 || ours == top[1].0,
                    "step {step}: picked {ours}, llama.cpp's top two {top:?}"
                );
            }
            diffs.extend(
                top[..5]
                    .iter()
                    .map(|(token, theirs)| (row[*token as usize] - theirs).abs()),
            );
        }
    }
    let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
    let max = diffs.iter().copied().fold(0.0, f32::max);
    assert!(
        mean < 0.3 && max < 1.0,
        "logits differ from llama.cpp's by {mean} on average, {max} at most"
    );
    assert!(
        agreements * 10 >= steps * 8,
        "seqit agreed with llama.cpp at {agreements} of {steps} steps"
    );
}

#[test]
fn first_greedy_tokens_equal_llama_cpp() {
    // Free-running generation: the first tokens before any near-tie are exactly llama.cpp's.
    let engine = engine(GgufWeights::AsStored);
    let chat = &golden()["chats"][0];
    let expected = ids(&chat["greedy_ids"]);
    let completion = engine
        .generate(
            &[GenerationRequest {
                prompt: user(chat["prompt"].as_str().unwrap()),
                params: SamplingParams::greedy(6),
            }],
            &mut |_, _| {},
        )
        .unwrap()
        .remove(0);
    assert_eq!(completion.token_ids, expected[..6]);
    assert!(
        completion.text.starts_with("L'Étoile"),
        "{:?}",
        completion.text
    );
}

#[test]
fn default_model_answers_paris() {
    // The default (fast) weights and the dequantized f32 weights both answer like
    // transformers does in f32.
    for weights in [GgufWeights::Fast, GgufWeights::Dequantized] {
        let reply = engine(weights)
            .generate(
                &[GenerationRequest {
                    prompt: user("What is the capital of France?"),
                    params: SamplingParams::greedy(24),
                }],
                &mut |_, _| {},
            )
            .unwrap()
            .remove(0);
        assert!(
            reply.text.contains("Paris"),
            "{weights:?}: {:?}",
            reply.text
        );
    }
}
