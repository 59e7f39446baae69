//! A full run on a tiny model: train, export, and the exported model (loaded by the
//! inference engine) answers with what it was taught.

use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::{Engine, EngineOptions, GenerationRequest};
use seqit_testkit::tiny_hf_dir;
use seqit_train::{
    run_training, ChatFormat, LoraSettings, Precision, Schedule, TrainConfig, TrainJob,
};

fn conversations() -> Vec<Vec<ChatMessage>> {
    vec![
        vec![
            ChatMessage::user("capital of france?"),
            ChatMessage::assistant("paris"),
        ],
        vec![
            ChatMessage::user("two plus two?"),
            ChatMessage::assistant("four"),
        ],
    ]
}

#[test]
fn trained_and_exported_model_answers_what_it_learned() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_hf_dir(&dir.path().join("base"));
    let conversations = conversations();
    let job = TrainJob {
        model: base,
        conversations: conversations.clone(),
        format: ChatFormat::Tulu,
        template_variables: Default::default(),
        output: dir.path().join("run"),
        config: TrainConfig {
            epochs: 80,
            lr: 3e-3,
            batch_size: 2,
            warmup_ratio: 0.0,
            schedule: Schedule::Constant,
            ..TrainConfig::default()
        },
        resume: false,
        eval_conversations: Vec::new(),
        eval_every: 0,
        device: candle_core::Device::Cpu,
    };
    let mut steps = 0;
    let summary = run_training(&job, &mut |_, total| {
        steps += 1;
        assert_eq!(total, 80);
    })
    .unwrap();
    assert_eq!((summary.updates, steps), (80, 80));
    assert!(summary.last_loss.unwrap() < 0.05, "{summary:?}");

    assert_answers(&summary.model_dir, &conversations);
}

/// The model as exported, loaded by the engine, answers each conversation's first turn
/// with its second.
fn assert_answers(model_dir: &std::path::Path, conversations: &[Vec<ChatMessage>]) {
    let expected: Vec<&str> = conversations
        .iter()
        .map(|c| c[1].content.as_str())
        .collect();
    assert_eq!(
        greedy_replies(model_dir, conversations),
        expected,
        "it learned to answer and to stop"
    );
}

/// The exported model's greedy replies to each conversation's first turn.
fn greedy_replies(model_dir: &std::path::Path, conversations: &[Vec<ChatMessage>]) -> Vec<String> {
    let engine = Engine::load(model_dir, EngineOptions::default()).unwrap();
    // The export carries the Tulu template it was trained with.
    assert!(engine
        .chat_template()
        .unwrap()
        .source()
        .contains("<|assistant|>"));
    conversations
        .iter()
        .map(|conversation| {
            let request = GenerationRequest {
                prompt: Prompt::Chat(conversation[..1].to_vec()),
                params: SamplingParams::greedy(10),
            };
            let mut replies = engine.generate(&[request], &mut |_, _| {}).unwrap();
            replies.remove(0).text
        })
        .collect()
}

/// LoRA in bf16: the base model is loaded in bf16 and the adapters train through f32
/// master weights. The loss follows the f32 run's; the merged export is bf16 and the PEFT
/// adapter f32. (LoRA cannot memorise on this model: its final norm and LM head are
/// frozen and random, which bounds how confident it can get.)
#[test]
fn bf16_lora_follows_f32_and_exports_a_bf16_model_and_an_f32_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_hf_dir(&dir.path().join("base"));
    let conversations = conversations();
    let run = |precision: Precision| {
        let job = TrainJob {
            model: base.clone(),
            conversations: conversations.clone(),
            format: ChatFormat::Tulu,
            template_variables: Default::default(),
            output: dir.path().join(format!("{precision:?}")),
            config: TrainConfig {
                epochs: 60,
                lr: 1e-2,
                batch_size: 2,
                warmup_ratio: 0.0,
                schedule: Schedule::Constant,
                lora: Some(LoraSettings {
                    rank: 8,
                    alpha: 16.0,
                    dropout: 0.0,
                    ..LoraSettings::default()
                }),
                precision,
                ..TrainConfig::default()
            },
            resume: false,
            eval_conversations: Vec::new(),
            eval_every: 0,
            device: candle_core::Device::Cpu,
        };
        let mut losses = Vec::new();
        let summary = run_training(&job, &mut |m, _| losses.push(m.loss)).unwrap();
        (summary, losses)
    };
    let (f32_run, f32_losses) = run(Precision::F32);
    let (bf16_run, bf16_losses) = run(Precision::Bf16);
    assert!(
        f32_losses[59] < 0.3 * f32_losses[0],
        "f32 LoRA learns: {f32_losses:?}"
    );
    for (step, (a, b)) in f32_losses.iter().zip(&bf16_losses).enumerate() {
        assert!((a - b).abs() < 0.05 * a, "step {step}: f32 {a} vs bf16 {b}");
    }
    let dtypes = |file: std::path::PathBuf| {
        let tensors = candle_core::safetensors::load(file, &candle_core::Device::Cpu).unwrap();
        let mut dtypes: Vec<String> = tensors
            .values()
            .map(|t| format!("{:?}", t.dtype()))
            .collect();
        dtypes.sort();
        dtypes.dedup();
        dtypes
    };
    let model_dir = &bf16_run.model_dir;
    assert_eq!(dtypes(model_dir.join("model.safetensors")), ["BF16"]);
    let adapter = bf16_run.adapter_dir.as_ref().unwrap();
    assert_eq!(dtypes(adapter.join("adapter_model.safetensors")), ["F32"]);
    let config = std::fs::read_to_string(model_dir.join("config.json")).unwrap();
    assert!(config.contains("\"torch_dtype\": \"bfloat16\""), "{config}");
    let reply = |model: &std::path::Path| greedy_replies(model, &conversations);
    assert_eq!(reply(model_dir), reply(&f32_run.model_dir));
}
