//! Test support for seqit (never part of the CLI): the one home of what the crates' tests
//! share.
//!
//! - Tiny random-weight Llama models that tests build on the fly, in Hugging Face and GGUF
//!   layout, with a byte-level tokenizer and a ChatML template, so engine, server and
//!   trainer tests run in milliseconds on real files ([`TinyModel`], [`tiny_hf_dir`]), and
//!   requests for them ([`raw_request`]).
//! - A toy architecture, Llama under other names ([`RENAMED_LLAMA`]).
//! - A prompt's logits at every position, the quantity logit comparisons compare
//!   ([`logits_at_every_position`]).
//! - The downloaded assets and the one skip policy for tests that need them
//!   ([`require_model`], [`require_asset`]).
//! - The seqit binary as seqit-cli's tests run it ([`cli::Seqit`]).
//! - JSON Lines files ([`read_jsonl`]) and the repository's fixtures ([`fixture`]).

#![deny(missing_docs)]

mod arch;
mod assets;
pub mod cli;
mod jsonl;
mod logits;
mod requests;
mod tiny_model;

pub use arch::RENAMED_LLAMA;
pub use assets::{assets_dir, assets_missing, require_asset, require_model, REQUIRE_ASSETS_ENV};
pub use candle_core::quantized::gguf_file::Value as GgufValue;
pub use candle_core::quantized::GgmlDType;
pub use jsonl::{read_json, read_jsonl, write_jsonl};
pub use logits::logits_at_every_position;
pub use requests::{greedy_exactly, raw_request, user_prompt};
pub use tiny_model::{
    rewrite_gguf_metadata, set_tensor_type, tiny_hf_dir, tiny_q8_gguf, TinyModel, TinyModelSpec,
};

use std::path::PathBuf;

/// Path of a file under the repository's `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
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
