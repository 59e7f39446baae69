//! Model code of seqit: the Llama-family decoder in candle and its weights.
//!
//! * [`Llama`] — one definition for inference (fused kernels, quantized matmuls) and
//!   training (differentiable ops), with a batched [`KvCache`]; its [`Block`]s load
//!   themselves and run their forward pass.
//! * [`arch`] — what sets each architecture apart, stated once in an [`ArchSpec`]:
//!   `config.json` and GGUF metadata to [`ModelConfig`], tensor names in both formats,
//!   block details. Llama, Mistral, Qwen2 and Qwen3 are in `arch/llama.rs`; loading, export,
//!   GGUF and PEFT code ask the spec (`docs/architecture.md`, "Adding a model
//!   architecture").
//! * [`PackedDecoder`] — the generation forward pass on the packed kernels, with its own
//!   copy of the weights; it can outlive the [`Llama`] to free candle's copies.
//! * [`load_model`] — reads GGUF files (quantized or not) and Hugging Face directories
//!   (`config.json` + safetensors, sharded or not), checking every tensor's shape;
//!   [`load_hf_dir_as`] for an architecture that is not registered.
//! * [`save_hf_weights`] — writes a dense model as Hugging Face safetensors + `config.json`.
//! * [`apply_peft_adapter`] / [`save_peft_adapter`] — LoRA adapters in PEFT's layout.
//! * [`parse_device`] — `cpu`, `cuda` or `cuda:N` (CUDA in builds with the `cuda` feature).
//! * [`gguf`] — GGUF metadata, tensor-name mapping and the RoPE row permutation.
//! * [`packed`] — the packed decoder's quantized kernels for AVX-512 VNNI, AVX2, NEON
//!   and portable Rust, with one arithmetic on all of them.

#![deny(missing_docs)]

pub mod arch;
mod cache;
mod config;
mod decoder;
mod device;
mod export;
pub mod gguf;
mod linear;
mod llama;
mod load;
pub mod packed;
mod peft;
mod pool;
mod train_ops;

pub use arch::ArchSpec;
pub use cache::{KvBlock, KvCache};
pub use config::{Architecture, Llama3RopeScaling, ModelConfig, RopeLayout};
pub use decoder::{PackedDecoder, PREFILL_CHUNK_TOKENS};
pub use device::parse_device;
pub use export::{named_weights, save_hf_weights};
pub use linear::{DropoutState, Linear, LinearWeight, LoraAdapter, LoraDropout};
pub use llama::{padded_causal_mask, Block, Embedding, Kernels, Llama, LogitsFor, RmsNorm};
pub use load::{
    load_gguf, load_hf_dir, load_hf_dir_as, load_model, load_packed_gguf, LoadOptions, LoadedModel,
    WeightStorage,
};
pub use peft::{
    apply_peft_adapter, peft_tensor_name, read_peft_config, save_peft_adapter, PeftConfig,
    ADAPTER_CONFIG, ADAPTER_WEIGHTS,
};
