//! A full run on a tiny model: train, export, and the exported model (loaded by the
//! inference engine) answers with what it was taught.

use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::{Engine, EngineOptions, GenerationRequest};
use seqit_testkit::{TinyModel, TinyModelSpec};
use seqit_train::{run_training, ChatFormat, Schedule, TrainConfig, TrainJob};

#[test]
fn trained_and_exported_model_answers_what_it_learned() {
    let dir = tempfile::tempdir().unwrap();
    let base = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("base"))
        .unwrap();
    let conversations = vec![
        vec![
            ChatMessage::user("capital of france?"),
            ChatMessage::assistant("paris"),
        ],
        vec![
            ChatMessage::user("two plus two?"),
            ChatMessage::assistant("four"),
        ],
    ];
    let job = TrainJob {
        model: base,
        conversations: conversations.clone(),
        format: ChatFormat::Tulu,
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
    };
    let mut steps = 0;
    let summary = run_training(&job, &mut |_, total| {
        steps += 1;
        assert_eq!(total, 80);
    })
    .unwrap();
    assert_eq!((summary.updates, steps), (80, 80));
    assert!(summary.last_loss.unwrap() < 0.05, "{summary:?}");

    let engine = Engine::load(&summary.model_dir, EngineOptions::default()).unwrap();
    // The export carries the Tulu template it was trained with.
    assert!(engine
        .chat_template()
        .unwrap()
        .source()
        .contains("<|assistant|>"));
    for conversation in &conversations {
        let reply = engine
            .generate(
                &[GenerationRequest {
                    prompt: Prompt::Chat(conversation[..1].to_vec()),
                    params: SamplingParams::greedy(10),
                }],
                &mut |_, _| {},
            )
            .unwrap()
            .remove(0);
        assert_eq!(
            reply.text, conversation[1].content,
            "it learned to answer and to stop"
        );
    }
}
