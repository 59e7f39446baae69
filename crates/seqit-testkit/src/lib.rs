//! Test support for seqit (never part of the CLI): tiny random-weight Llama models that
//! tests build on the fly, in Hugging Face and GGUF layout, with a byte-level tokenizer
//! and a ChatML template, so engine, server and trainer tests run in milliseconds on
//! real files.

mod tiny_model;

pub use candle_core::quantized::gguf_file::Value as GgufValue;
pub use candle_core::quantized::GgmlDType;
pub use tiny_model::{rewrite_gguf_metadata, set_tensor_type, TinyModel, TinyModelSpec};

use std::path::PathBuf;

/// The packaged default model, or `None` when the assets are not installed.
pub fn default_model_path() -> Option<PathBuf> {
    seqit_engine::resolve_model(None).ok()
}

/// Path of a file under the repository's `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// Every line of a JSON Lines file, parsed (panics with the path on any error: tests).
pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("`{}`: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// Waits until `path` exists (a process under test got that far); panics after `limit`.
pub fn wait_for_path(path: &std::path::Path, limit: std::time::Duration) {
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < limit,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
