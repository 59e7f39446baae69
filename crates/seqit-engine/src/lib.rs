//! The local inference engine of seqit, the embedded default backend of every stage.
//!
//! * [`Engine`] — loads a GGUF file or Hugging Face directory with its tokenizer and
//!   chat template and generates for batches of [`GenerationRequest`]s.
//! * [`Tokenizer`] — from `tokenizer.json`, or rebuilt from GGUF metadata.
//! * [`ChatTemplate`] — the model's Jinja template rendered like transformers does.
//! * [`PrefixCache`] — keys and values of prompt prefixes reused across requests
//!   (automatic prefix caching), with its [`PrefixCacheStats`].
//! * [`ConstraintCompiler`] — structured outputs: JSON Schema, regex, choice and Lark
//!   constraints compiled by llguidance into per-step token masks.
//! * [`Sampler`] — greedy / temperature / top-k / top-p with per-request seeds.
//! * [`scheduler::Scheduler`] — the one batching loop over an engine shared by
//!   concurrent callers (`seqit serve` and the local `Llm` backend).
//! * [`resolve_model`] — `smollm2-135m` (or nothing) → the packaged default model.
//! * [`convert_gguf_to_hf`] — GGUF → Hugging Face directory.

#![deny(missing_docs)]

mod assets;
mod chat_template;
mod constraint;
mod convert;
mod engine;
mod model_files;
mod prefix_cache;
mod sampler;
pub mod scheduler;
mod tokenizer;

pub use assets::{
    asset_packages, assets_dir, easy_vqa_dir, install_assets, install_dir, installed_packages,
    resolve_model, user_assets_dir, ASSETS_STAMP, DEFAULT_MODEL_FILE, DEFAULT_MODEL_SHA256,
};
pub use chat_template::{parse_template_variable, ChatTemplate, TemplateVariables};
pub use constraint::{ConstraintCompiler, MatchStep, TextChecker, TokenMatcher};
pub use convert::{convert_gguf_to_hf, write_tokenizer_files};
pub use engine::{Engine, EngineOptions, GenerationRequest, DEFAULT_PREFIX_CACHE_MIB};
pub use model_files::load_tokenizer;
pub use prefix_cache::{kv_bytes_per_token, PrefixCache, PrefixCacheStats, PREFIX_BLOCK_TOKENS};
pub use sampler::{argmax, Sampler};
pub use tokenizer::{TextStream, Tokenizer};
