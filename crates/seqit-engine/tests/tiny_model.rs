//! The tiny random model built by the testkit, loaded from every supported layout, must
//! compute the same function; batched generation must equal one-at-a-time generation.

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use seqit_core::{FinishReason, SamplingParams};
use seqit_engine::{Engine, EngineOptions, GenerationRequest};
use seqit_model::{load_model, Architecture, LoadOptions, WeightStorage};
use seqit_testkit::{
    greedy_exactly, logits_at_every_position, user_prompt, TinyModel, TinyModelSpec,
};

const TOKENS: [u32; 9] = [72, 101, 108, 108, 111, 32, 259, 33, 10];

fn logits(path: &std::path::Path, weights: WeightStorage) -> Vec<f32> {
    let options = LoadOptions {
        weights,
        ..LoadOptions::default()
    };
    let model = load_model(path, &Device::Cpu, options).unwrap().llama;
    let logits = logits_at_every_position(&model, &TOKENS);
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn relative_rms_error(got: &[f32], want: &[f32]) -> f32 {
    let diff: Vec<f32> = got.iter().zip(want).map(|(x, y)| x - y).collect();
    rms(&diff) / rms(want)
}

fn rms(a: &[f32]) -> f32 {
    (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt()
}

fn check_layouts(spec: TinyModelSpec) {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::new(&spec).unwrap();
    let hf = model.write_hf_dir(&dir.path().join("hf")).unwrap();
    let reference = logits(&hf, WeightStorage::AsStored);
    assert!(rms(&reference) > 0.1, "logits should not be degenerate");
    // A checkpoint directory loaded `Fast` holds Q8_0 matrices (where rows are whole
    // blocks) and computes nearly what its dense weights compute.
    let fast_hf = logits(&hf, WeightStorage::Fast);
    let error = relative_rms_error(&fast_hf, &reference);
    assert!(
        error > 0.0 && error < 0.03,
        "HF directory as Q8_0: relative error {error}"
    );

    let f32_gguf = model
        .write_gguf(&dir.path().join("f32.gguf"), GgmlDType::F32)
        .unwrap();
    for weights in [
        WeightStorage::AsStored,
        WeightStorage::Dequantized,
        WeightStorage::Fast,
    ] {
        let diff = max_abs_diff(&reference, &logits(&f32_gguf, weights));
        assert!(
            diff < 1e-4,
            "{:?} F32 GGUF ({weights:?}) differs from HF by {diff}",
            spec.architecture
        );
    }
    // A quantized file approximates the same function (tolerance by format), and its
    // quantized kernels compute what its dequantized weights compute.
    for (dtype, tolerance) in [
        (GgmlDType::F16, 0.01),
        (GgmlDType::Q8_0, 0.03),
        (GgmlDType::Q4_0, 0.25),
        (GgmlDType::Q4_1, 0.25),
    ] {
        let path = model
            .write_gguf(&dir.path().join(format!("{dtype:?}.gguf")), dtype)
            .unwrap();
        let dequantized = logits(&path, WeightStorage::Dequantized);
        let error = relative_rms_error(&dequantized, &reference);
        assert!(
            error < tolerance,
            "{dtype:?} dequantized vs HF: relative error {error}"
        );
        for weights in [WeightStorage::AsStored, WeightStorage::Fast] {
            let error = relative_rms_error(&logits(&path, weights), &dequantized);
            assert!(
                error < 0.03,
                "{dtype:?} {weights:?} vs its dequantized weights: relative error {error}"
            );
        }
    }
}

#[test]
fn llama_hf_and_gguf_layouts_give_equal_logits() {
    check_layouts(TinyModelSpec::default());
}

#[test]
fn tied_embeddings_load_from_both_layouts() {
    check_layouts(TinyModelSpec {
        tie_word_embeddings: true,
        ..TinyModelSpec::default()
    });
}

#[test]
fn qwen2_with_qkv_bias_loads_from_both_layouts() {
    check_layouts(TinyModelSpec {
        architecture: Architecture::Qwen2,
        ..TinyModelSpec::default()
    });
}

#[test]
fn qwen3_with_per_head_norms_and_wide_heads_loads_from_both_layouts() {
    check_layouts(TinyModelSpec::qwen3());
}

#[test]
fn batched_generation_equals_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir.path())
        .unwrap();
    let engine = Engine::load(
        &hf,
        EngineOptions {
            max_batch: 8,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    // Different prompt lengths exercise left padding; different max_tokens exercise
    // dropping finished rows from the batch.
    let requests: Vec<GenerationRequest> = [
        "a",
        "the cat sat",
        "hello there, how are you today?",
        "xy",
        "in an inn",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| GenerationRequest {
        prompt: user_prompt(p),
        params: greedy_exactly(4 + 6 * i),
    })
    .collect();
    let batched = engine.generate(&requests, &mut |_, _| {}).unwrap();
    for (request, together) in requests.iter().zip(&batched) {
        let alone = engine
            .generate(std::slice::from_ref(request), &mut |_, _| {})
            .unwrap();
        assert_eq!(
            alone[0].token_ids, together.token_ids,
            "prompt {:?}",
            request.prompt
        );
        assert_eq!(together.token_ids.len(), request.params.max_tokens);
        assert_eq!(together.finish_reason, FinishReason::Length);
    }
}

#[test]
fn hf_directory_and_gguf_generate_the_same_tokens_dense_and_quantized() {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::new(&TinyModelSpec::default()).unwrap();
    let hf = model.write_hf_dir(&dir.path().join("hf")).unwrap();
    let request = [GenerationRequest {
        prompt: user_prompt("the answer"),
        params: greedy_exactly(24),
    }];
    let generate = |path: &std::path::Path, weights: WeightStorage| {
        let options = EngineOptions {
            weights,
            ..EngineOptions::default()
        };
        let engine = Engine::load(path, options).unwrap();
        let packed = engine.packed_decoder().is_some();
        (engine.generate(&request, &mut |_, _| {}).unwrap(), packed)
    };
    // Dense: the directory and an F32 GGUF of the same weights.
    let f32_gguf = model
        .write_gguf(&dir.path().join("f32.gguf"), GgmlDType::F32)
        .unwrap();
    let (from_hf, _) = generate(&hf, WeightStorage::AsStored);
    let (from_gguf, _) = generate(&f32_gguf, WeightStorage::AsStored);
    assert_eq!(from_hf[0].token_ids, from_gguf[0].token_ids);
    assert_eq!(from_hf[0].prompt_tokens, from_gguf[0].prompt_tokens);
    // Fast: the directory is quantized on load to the blocks a Q8_0 GGUF stores, and both
    // run the packed decoder.
    let q8_gguf = model
        .write_gguf(&dir.path().join("q8.gguf"), GgmlDType::Q8_0)
        .unwrap();
    let (from_hf, hf_packed) = generate(&hf, WeightStorage::Fast);
    let (from_gguf, gguf_packed) = generate(&q8_gguf, WeightStorage::Fast);
    assert!(hf_packed && gguf_packed);
    assert_eq!(from_hf[0].token_ids, from_gguf[0].token_ids);
}

#[test]
fn streaming_deltas_and_stop_strings() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir.path())
        .unwrap();
    let engine = Engine::load(&hf, EngineOptions::default()).unwrap();
    let free = engine
        .generate(
            &[GenerationRequest {
                prompt: user_prompt("stop test"),
                params: greedy_exactly(40),
            }],
            &mut |_, _| {},
        )
        .unwrap()
        .remove(0);
    assert!(
        free.text.chars().count() >= 10,
        "random model produced too little text: {:?}",
        free.text
    );
    // A stop string taken from the middle of the free-running text.
    let chars: Vec<char> = free.text.chars().collect();
    let stop: String = chars[6..9].iter().collect();
    let cut = free.text.find(&stop).unwrap();
    let mut params = greedy_exactly(40);
    params.stop = vec![stop.clone()];
    let mut streamed = String::new();
    let stopped = engine
        .generate(
            &[GenerationRequest {
                prompt: user_prompt("stop test"),
                params,
            }],
            &mut |i, delta| {
                assert_eq!(i, 0);
                streamed.push_str(delta);
            },
        )
        .unwrap()
        .remove(0);
    assert_eq!(stopped.text, free.text[..cut]);
    assert_eq!(
        streamed, stopped.text,
        "streamed text must equal the final text"
    );
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir.path())
        .unwrap();
    let engine = Engine::load(&hf, EngineOptions::default()).unwrap();
    let sample = |seed| {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            top_k: 50,
            seed,
            ..greedy_exactly(16)
        };
        engine
            .generate(
                &[GenerationRequest {
                    prompt: user_prompt("x"),
                    params,
                }],
                &mut |_, _| {},
            )
            .unwrap()
            .remove(0)
            .token_ids
    };
    assert_eq!(sample(1), sample(1));
    assert_ne!(sample(1), sample(2));
}

/// An engine that frees candle's weights generates what the full engine does, and says
/// so when asked for what it no longer has.
#[test]
fn an_engine_keeping_only_packed_weights_generates_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyModelSpec {
        tie_word_embeddings: true,
        ..TinyModelSpec::default()
    };
    let model = TinyModel::new(&spec).unwrap();
    let requests: Vec<GenerationRequest> = ["the answer", "a longer question about the answer"]
        .iter()
        .map(|text| GenerationRequest {
            prompt: user_prompt(text),
            params: greedy_exactly(24),
        })
        .collect();
    // Q8_0 and Q4_1 rows dequantize to the exact embedding table; an F32 file's matrices
    // are re-quantized for the packed kernels, so its table stays.
    for (dtype, embeds_from_lm_head) in [
        (GgmlDType::Q8_0, true),
        (GgmlDType::Q4_1, true),
        (GgmlDType::F32, false),
    ] {
        let gguf = model
            .write_gguf(&dir.path().join(format!("{dtype:?}.gguf")), dtype)
            .unwrap();
        let full = Engine::load(&gguf, EngineOptions::default()).unwrap();
        let want = full.generate(&requests, &mut |_, _| {}).unwrap();
        // Freed after loading, or read straight into the packed layout.
        let released = Engine::load(&gguf, EngineOptions::default())
            .unwrap()
            .keep_packed_weights_only();
        let streamed = Engine::load_for_inference(&gguf, EngineOptions::default()).unwrap();
        for mut lean in [released, streamed] {
            assert!(lean.model().is_none(), "{dtype:?}");
            let decoder = lean.packed_decoder().unwrap();
            assert_eq!(decoder.embeds_from_lm_head(), embeds_from_lm_head);
            let got = lean.generate(&requests, &mut |_, _| {}).unwrap();
            for (got, want) in got.iter().zip(&want) {
                assert_eq!(got.token_ids, want.token_ids, "{dtype:?}");
            }
            let refused = lean.apply_adapter(dir.path()).unwrap_err().to_string();
            assert!(
                refused.contains("before `keep_packed_weights_only`"),
                "{refused}"
            );
        }
    }
    // Weights held as stored run on candle's kernels: the model stays.
    let gguf = dir.path().join("Q8_0.gguf");
    let options = EngineOptions {
        weights: WeightStorage::AsStored,
        ..EngineOptions::default()
    };
    let engine = Engine::load(&gguf, options)
        .unwrap()
        .keep_packed_weights_only();
    assert!(engine.model().is_some() && engine.packed_decoder().is_none());
}

/// The GPU path of the engine (candle's model with dense weights in bf16, no packed
/// decoder, batched and padded) run on the CPU: every position's log-probabilities of a
/// batch follow the f32 engine's within bf16 precision, and the greedy tokens agree
/// wherever f32's margin is clear. A GPU runs the same code with another device.
#[test]
fn the_bf16_dense_path_follows_f32() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir.path())
        .unwrap();
    let requests: Vec<GenerationRequest> = ["a", "a longer prompt to pad the others", "three"]
        .into_iter()
        .map(|text| GenerationRequest {
            prompt: user_prompt(text),
            params: SamplingParams {
                logprobs: Some(3),
                ..greedy_exactly(6)
            },
        })
        .collect();
    let run = |dtype| {
        let options = EngineOptions {
            weights: WeightStorage::AsStored,
            dtype,
            ..EngineOptions::default()
        };
        let engine = Engine::load(&hf, options).unwrap();
        assert!(engine.packed_decoder().is_none());
        assert_eq!(engine.model().unwrap().dtype(), dtype);
        engine.generate(&requests, &mut |_, _| {}).unwrap()
    };
    let (f32_run, bf16_run) = (run(candle_core::DType::F32), run(candle_core::DType::BF16));
    for (exact, half) in f32_run.iter().zip(&bf16_run) {
        let (exact, half) = (
            exact.logprobs.as_ref().unwrap(),
            half.logprobs.as_ref().unwrap(),
        );
        for (position, (e, h)) in exact.iter().zip(half).enumerate() {
            let margin = e.top[0].logprob - e.top[1].logprob;
            if e.token != h.token {
                assert!(margin < 0.05, "position {position}: margin {margin}");
                break; // The continuations differ from here on.
            }
            assert!(
                (e.logprob - h.logprob).abs() < 0.05,
                "position {position}: {} vs {}",
                e.logprob,
                h.logprob
            );
        }
    }
}
