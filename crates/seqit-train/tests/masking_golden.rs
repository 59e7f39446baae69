//! Token ids and loss masks equal the ones computed with transformers'
//! `apply_chat_template` and fast tokenizer (fixture made by
//! scripts/fixtures/make_masking_golden.py on the converted default model).

use seqit_core::ChatMessage;
use seqit_engine::{Engine, EngineOptions};
use seqit_train::{tokenize_example, ChatFormat};

#[test]
fn ids_and_masks_match_transformers() {
    let Some(gguf) = seqit_testkit::require_model() else {
        return;
    };
    let engine = Engine::load(&gguf, EngineOptions::default()).unwrap();
    let tokenizer = engine.tokenizer();
    let golden = seqit_testkit::read_json(&seqit_testkit::fixture("masking_golden.json"));
    let llama3 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../prompts/templates/llama3-style.jinja"
    ))
    .unwrap();
    let mut checked = 0;
    for case in golden["cases"].as_array().unwrap() {
        let format = match case["template"].as_str().unwrap() {
            "model" => ChatFormat::Model,
            "tulu" => ChatFormat::Tulu,
            _ => ChatFormat::Custom(llama3.clone()),
        };
        let template = format.template(tokenizer, engine.chat_template()).unwrap();
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        assert_eq!(
            template.render(&messages, false).unwrap(),
            case["text"].as_str().unwrap()
        );
        let example = tokenize_example(tokenizer, &template, &messages).unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let trained: Vec<bool> = case["trained"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64() == Some(1))
            .collect();
        assert_eq!(example.input_ids, ids, "{}", case["template"]);
        assert_eq!(
            example.trained, trained,
            "{}: {:?}",
            case["template"], case["text"]
        );
        assert!(example.trained_tokens() > 0);
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn end_of_turn_is_trained_and_prompt_is_not() {
    let Some(gguf) = seqit_testkit::require_model() else {
        return;
    };
    let engine = Engine::load(&gguf, EngineOptions::default()).unwrap();
    let tokenizer = engine.tokenizer();
    let template = ChatFormat::Model
        .template(tokenizer, engine.chat_template())
        .unwrap();
    let messages = [ChatMessage::user("Say hi."), ChatMessage::assistant("Hi!")];
    let example = tokenize_example(tokenizer, &template, &messages).unwrap();
    let trained: Vec<String> = example
        .input_ids
        .iter()
        .zip(&example.trained)
        .filter(|(_, t)| **t)
        .map(|(id, _)| tokenizer.id_to_token(*id).unwrap())
        .collect();
    assert_eq!(trained, ["Hi", "!", "<|im_end|>"]);
    let err =
        tokenize_example(tokenizer, &template, &[ChatMessage::user("no answer")]).unwrap_err();
    assert!(err.to_string().contains("no assistant turn"));
}
