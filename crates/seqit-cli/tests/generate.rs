//! `seqit generate` and `seqit model convert` run as real processes.

use seqit_core::{ChatMessage, Prompt, SamplingParams};
use seqit_engine::{Engine, EngineOptions, GenerationRequest};
use seqit_testkit::cli::{stderr, stdout, Seqit};
use seqit_testkit::{read_jsonl, tiny_hf_dir, GgmlDType, TinyModel, TinyModelSpec};
use serde_json::Value;

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

/// The CLI prints exactly the engine's greedy reply. (Its text is not asserted: the first
/// token of this answer is a near-tie, 0.08 logits between "The" and "L'"; the engine's
/// numerics are tested in seqit-engine's smollm2_golden.)
#[test]
fn default_model_answers_a_prompt() {
    let Some(path) = seqit_testkit::require_model() else {
        return;
    };
    let question = "What is the capital of France?";
    let out = SEQIT.output(["generate", "--prompt", question, "--max-tokens", "24"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let engine = Engine::load(&path, EngineOptions::default()).unwrap();
    let reply = engine
        .generate(
            &[GenerationRequest {
                prompt: Prompt::Chat(vec![ChatMessage::user(question)]),
                params: SamplingParams::greedy(24),
            }],
            &mut |_, _| {},
        )
        .unwrap()
        .remove(0);
    assert!(!reply.text.trim().is_empty());
    assert_eq!(stdout(&out).trim_end(), reply.text.trim_end());
}

#[test]
fn batch_file_keeps_ids_and_order_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("m"))
        .unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"id": "a", "prompt": "the cat"}"#,
            r#"{"id": 7, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}"#,
            "",
            r#"{"prompt": "no id here"}"#,
            r#"{"id": "z", "prompt": "last one"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    let model = hf.to_str().unwrap();
    let args = [
        "generate",
        "--model",
        model,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--max-tokens",
        "8",
        "--batch-size",
        "2",
    ];
    let run = SEQIT.output(args);
    assert!(run.status.success(), "{}", stderr(&run));
    let records = read_jsonl(&output);
    let ids: Vec<String> = records.iter().map(|r| r["id"].to_string()).collect();
    assert_eq!(ids, ["\"a\"", "7", "2", "\"z\""]);
    for r in &records {
        assert!(r["completion_tokens"].as_u64().unwrap() <= 8);
        assert!(r["prompt_tokens"].as_u64().unwrap() > 0);
    }

    // An interrupted run left two finished records and a torn line: only the rest is
    // generated, and the finished records are kept as they were.
    let partial = dir.path().join("out.jsonl.partial");
    std::fs::remove_file(&output).unwrap();
    std::fs::write(
        &partial,
        "{\"id\":\"a\",\"output\":\"KEPT\",\"finish_reason\":\"stop\",\"prompt_tokens\":1,\"completion_tokens\":1}\n\
         {\"id\":7,\"output\":\"KEPT TOO\",\"finish_reason\":\"stop\",\"prompt_tokens\":1,\"completion_tokens\":1}\n{\"id\":2,\"out",
    )
    .unwrap();
    let resumed = SEQIT.output(args);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("2 of 4 records already generated"),
        "{}",
        stderr(&resumed)
    );
    let again = read_jsonl(&output);
    assert_eq!(again.len(), 4);
    assert_eq!(again[0]["output"], "KEPT");
    assert_eq!(again[1]["output"], "KEPT TOO");
    assert_eq!(again[2], records[2]);
    assert_eq!(again[3], records[3]);
    assert!(!partial.exists());
}

#[test]
fn convert_writes_a_directory_that_generates_like_the_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_gguf(&dir.path().join("m.gguf"), GgmlDType::Q8_0)
        .unwrap();
    let out = dir.path().join("hf");
    let convert = SEQIT.output([
        "model",
        "convert",
        "--model",
        gguf.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(convert.status.success(), "{}", stderr(&convert));
    let gen = |model: &str, weights: &str| {
        let o = SEQIT.output([
            "generate",
            "--model",
            model,
            "--weights",
            weights,
            "--prompt",
            "the",
            "--max-tokens",
            "12",
            "--ignore-eos",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(
        gen(gguf.to_str().unwrap(), "f32"),
        gen(out.to_str().unwrap(), "fast")
    );
}

/// `--regex`, `--choice`, `--json-schema` and `--logprobs` on the local engine: every
/// reply matches its constraint (checked here with the `regex` crate and serde_json),
/// records say so, and log-probabilities come with their alternatives.
#[test]
fn constrained_generation_from_the_command_line() {
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"prompt\": \"Pick a number.\"}\n{\"id\": 2, \"prompt\": \"What year is it?\"}\n",
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    let out = SEQIT.output([
        "generate",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--regex",
        "[1-9][0-9]{2}",
        "--logprobs",
        "2",
        "--max-tokens",
        "8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let three_digits = regex::Regex::new("^[1-9][0-9]{2}$").unwrap();
    for record in read_jsonl(&output) {
        let text = record["output"].as_str().unwrap();
        assert!(three_digits.is_match(text), "{record}");
        assert_eq!(record["constraint_met"], true);
        let logprobs = record["logprobs"].as_array().unwrap();
        assert!(!logprobs.is_empty());
        assert!(logprobs
            .iter()
            .all(|t| t["top"].as_array().unwrap().len() == 2));
    }

    let out = SEQIT.output([
        "generate",
        "--prompt",
        "Is the sea salty?",
        "--choice",
        "yes,no",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        ["yes", "no"].contains(&stdout(&out).trim_end()),
        "{}",
        stdout(&out)
    );

    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "legs": {"type": "integer", "minimum": 0, "maximum": 8}}, "required": ["name", "legs"], "additionalProperties": false}"#,
    )
    .unwrap();
    let out = SEQIT.output([
        "generate",
        "--prompt",
        "Describe a cat as JSON.",
        "--json-schema",
        schema.to_str().unwrap(),
        "--max-tokens",
        "48",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: Value = serde_json::from_str(stdout(&out).trim_end()).unwrap();
    assert!(
        value["name"].is_string() && value["legs"].is_i64(),
        "{value}"
    );
}

#[test]
fn bad_constraints_are_reported_before_generation() {
    // The default model is resolved before the constraints are checked.
    if seqit_testkit::require_model().is_none() {
        return;
    }
    let out = SEQIT.output(["generate", "--prompt", "x", "--regex", "(unclosed"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("regex"), "{}", stderr(&out));
    let out = SEQIT.output([
        "generate",
        "--prompt",
        "x",
        "--json-schema",
        "/no/such/schema.json",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/no/such/schema.json"),
        "{}",
        stderr(&out)
    );
    let out = SEQIT.output(["generate", "--prompt", "x", "--regex", "a", "--choice", "b"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}

/// `--device`/`--dtype` reach the engine: a bf16 run of a file on the CPU takes the
/// dense path a GPU takes (batched, padded, no packed decoder) and answers every record
/// with the requested number of tokens; a CUDA device in a build without the feature is
/// refused with the way to get one.
#[test]
fn device_and_dtype_flags_reach_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("m"))
        .unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": 2, \"prompt\": \"a much longer prompt\"}\n",
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    let out = SEQIT.output([
        "generate",
        "--model",
        hf.to_str().unwrap(),
        "--dtype",
        "bf16",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--max-tokens",
        "5",
        "--ignore-eos",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(record["completion_tokens"], 5, "{record}");
    }
    if cfg!(feature = "cuda") {
        return;
    }
    let out = SEQIT.output(["generate", "--prompt", "hi", "--device", "cuda"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("built without CUDA support"),
        "{}",
        stderr(&out)
    );
}

/// `--chat-template-var` reaches the model's template: a Qwen3-style switch adds the
/// closed reasoning block to every prompt; names the renderer owns are refused.
#[test]
fn chat_template_variables_reach_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let hf = tiny_hf_dir(&dir.path().join("m"));
    std::fs::write(
        hf.join("chat_template.jinja"),
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n\
         {% endfor %}<|im_start|>assistant\n\
         {% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}",
    )
    .unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"id\": 1, \"prompt\": \"2+2?\"}\n").unwrap();
    let prompt_tokens = |vars: &[&str]| {
        let output = dir.path().join("out.jsonl");
        let _ = std::fs::remove_file(&output);
        let mut args = vec!["generate", "--model", hf.to_str().unwrap()];
        args.extend([
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        args.extend(["--max-tokens", "1"]);
        for var in vars {
            args.extend(["--chat-template-var", var]);
        }
        let out = SEQIT.output(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        read_jsonl(&output)[0]["prompt_tokens"].as_u64().unwrap()
    };
    let plain = prompt_tokens(&[]);
    // A string "false" is not the boolean the template tests for.
    assert_eq!(prompt_tokens(&["enable_thinking=\"false\""]), plain);
    let closed = prompt_tokens(&["enable_thinking=false"]);
    // `<think>\n\n</think>\n\n` is 19 bytes: at least 10 tokens of the tiny byte-level BPE.
    assert!(closed >= plain + 10, "{closed} vs {plain}");

    let model = hf.to_str().unwrap();
    let err = SEQIT.fails([
        "generate",
        "--model",
        model,
        "--prompt",
        "hi",
        "--chat-template-var",
        "messages=[]",
    ]);
    assert!(
        err.contains("chat template variable `messages` is set by seqit"),
        "{err}"
    );
}
