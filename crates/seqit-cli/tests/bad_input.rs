//! Bad models and bad input files: one clear error naming the file and the problem,
//! a non-zero exit status and no panic, even with RUST_BACKTRACE set.

use std::path::Path;

use seqit_testkit::cli::Seqit;
use seqit_testkit::{
    rewrite_gguf_metadata, set_tensor_type, tiny_q8_gguf, GgufValue, TinyModel, TinyModelSpec,
};

const SEQIT: Seqit = Seqit::new(env!("CARGO_BIN_EXE_seqit"));

/// Runs `seqit generate ARGS` and returns its stderr after checking it failed cleanly.
fn fails(args: &[&str]) -> String {
    SEQIT.fails(std::iter::once(&"generate").chain(args))
}

fn with_model(model: &Path) -> String {
    fails(&["--model", model.to_str().unwrap(), "--prompt", "hi"])
}

#[test]
fn missing_model_file() {
    let err = with_model(Path::new("/nonexistent/model.gguf"));
    assert!(
        err.contains("/nonexistent/model.gguf") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn file_that_is_not_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.gguf");
    std::fs::write(&path, b"this is not a model").unwrap();
    let err = with_model(&path);
    assert!(
        err.contains("garbage.gguf") && err.contains("not a readable GGUF file"),
        "{err}"
    );
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q8_gguf(&dir.path().join("ok.gguf"), 512);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = with_model(&path);
    assert!(err.contains("ok.gguf"), "{err}");
    assert!(
        err.contains("remaining in file") || err.contains("not a readable GGUF"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_in_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2.gguf");
    rewrite_gguf_metadata(
        &tiny_q8_gguf(&dir.path().join("ok.gguf"), 512),
        &path,
        "general.architecture",
        GgufValue::String("gpt2".into()),
    )
    .unwrap();
    let err = with_model(&path);
    assert!(
        err.contains("gpt2.gguf") && err.contains("unsupported architecture `gpt2`"),
        "{err}"
    );
}

#[test]
fn unknown_quantization_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_q8_gguf(&dir.path().join("ok.gguf"), 512);
    set_tensor_type(&path, "blk.0.attn_q.weight", 99).unwrap();
    let err = with_model(&path);
    assert!(
        err.contains("ok.gguf") && err.contains("unknown dtype for tensor 99"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_in_hf_directory() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(dir.path())
        .unwrap();
    let config = std::fs::read_to_string(hf.join("config.json"))
        .unwrap()
        .replace("LlamaForCausalLM", "GPT2LMHeadModel");
    std::fs::write(hf.join("config.json"), config).unwrap();
    let err = with_model(&hf);
    assert!(
        err.contains("config.json") && err.contains("GPT2LMHeadModel"),
        "{err}"
    );
}

#[test]
fn hf_directory_missing_a_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = TinyModel::new(&TinyModelSpec::default()).unwrap();
    let mut broken = model;
    broken
        .weights
        .retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight");
    let hf = broken.write_hf_dir(dir.path()).unwrap();
    let err = with_model(&hf);
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
}

#[test]
fn bad_prompt_files_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let hf = TinyModel::new(&TinyModelSpec::default())
        .unwrap()
        .write_hf_dir(&dir.path().join("m"))
        .unwrap();
    let cases = [
        (
            "{\"prompt\": \"ok\"}\n{\"prompt\": \"ok\"}\n{bad json\n",
            ":3: invalid JSON",
        ),
        ("{\"prompt\": 5}\n", ":1: field `prompt`: expected a string"),
        ("{\"id\": 1}\n", ":1: missing field `prompt` or `messages`"),
        (
            "{\"messages\": [{\"role\": \"user\"}]}\n",
            ":1: field `messages`",
        ),
        (
            "{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": 1, \"prompt\": \"b\"}\n",
            ":2: field `id`: 1 appears twice",
        ),
    ];
    for (i, (content, expected)) in cases.iter().enumerate() {
        let input = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&input, content).unwrap();
        let output = dir.path().join(format!("out{i}.jsonl"));
        let err = fails(&[
            "--model",
            hf.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(
            err.contains(&format!("bad{i}.jsonl{expected}")),
            "case {i}: {err}"
        );
        assert!(
            !output.exists(),
            "no output may be written for a bad input file"
        );
    }
}
