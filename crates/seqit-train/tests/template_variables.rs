//! `--chat-template-var`: training renders its conversations with the variables given, as
//! inference does (a Qwen3-style template closes an empty reasoning block before the
//! answer when `enable_thinking` is false).

use seqit_core::progress::Silent;
use seqit_core::ChatMessage;
use seqit_engine::TemplateVariables;
use seqit_testkit::tiny_hf_dir;
use seqit_train::{chat_tokenizer, explain_example, ChatFormat, TrainSettings};
use serde_json::json;

/// A switch written as Qwen3's template writes it: the reasoning block is closed empty
/// when `enable_thinking` is false.
const SWITCH: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n\
{% if m['role'] == 'assistant' and enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}\
{{ m['content'] }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n\
{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}";

/// (untrained text, trained text) of one conversation rendered with `variables`.
fn rendered(dir: &std::path::Path, variables: TemplateVariables) -> (String, String) {
    let (tokenizer, template) = chat_tokenizer(dir, &ChatFormat::Model, &variables).unwrap();
    let conversation = [ChatMessage::user("2+2?"), ChatMessage::assistant("4")];
    let pieces = explain_example(&tokenizer, &template, &conversation).unwrap();
    let text = |trained: bool| -> String {
        pieces
            .iter()
            .filter(|p| p.trained == trained)
            .map(|p| p.text.as_str())
            .collect()
    };
    (text(false), text(true))
}

#[test]
fn training_renders_with_the_template_variables() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_hf_dir(dir.path());
    std::fs::write(model.join("chat_template.jinja"), SWITCH).unwrap();

    let (prompt, answer) = rendered(&model, TemplateVariables::new());
    // (The newline after the end-of-turn token is not trained either.)
    assert_eq!(
        prompt,
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n\n"
    );
    assert_eq!(answer, "4<|im_end|>");

    let off: TemplateVariables = [("enable_thinking".to_string(), json!(false))].into();
    let (prompt, answer) = rendered(&model, off);
    // The closed block belongs to the prompt, as the generation prompt renders it: only
    // the answer and its end-of-turn token carry loss.
    assert_eq!(
        prompt,
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n\n"
    );
    assert_eq!(answer, "4<|im_end|>");
}

#[test]
fn the_flag_reaches_the_job_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_hf_dir(&dir.path().join("model"));
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, r#"{"instruction": "2+2?", "output": "4"}"#).unwrap();
    let settings = |vars: &[&str]| TrainSettings {
        model: Some(model.display().to_string()),
        data: Some(data.clone()),
        output: Some(dir.path().join("run")),
        chat_template_var: vars.iter().map(|v| v.to_string()).collect(),
        ..TrainSettings::default()
    };
    let job = settings(&["enable_thinking=false", "depth=2"])
        .job(&Silent)
        .unwrap();
    assert_eq!(
        job.template_variables,
        [
            ("depth".to_string(), json!(2)),
            ("enable_thinking".to_string(), json!(false))
        ]
        .into()
    );
    let err = settings(&["enable_thinking"]).job(&Silent).err().unwrap();
    assert_eq!(
        err.to_string(),
        "--chat-template-var `enable_thinking`: expected NAME=VALUE, e.g. enable_thinking=false"
    );
}
