//! Command-line definitions (what the user typed); commands turn them into checked
//! settings before doing any work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "seqit", version, about = "Sequential Instruction Tuning toolkit: augment, train, evaluate, serve")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate replies with a local model for one prompt or a JSONL file of prompts.
    Generate(GenerateArgs),
    /// Serve a local model over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Model utilities.
    #[command(subcommand)]
    Model(ModelCommand),
}

/// Which model to run.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A `.gguf` file, a Hugging Face directory, or `smollm2-135m` (the default).
    #[arg(long, env = "SEQIT_MODEL")]
    pub model: Option<String>,
    /// How GGUF weights are held: `fast` (quantized; types without SIMD kernels
    /// re-quantized to Q8_0), `as-stored` (bit-comparable with llama.cpp) or `f32`.
    #[arg(long, value_enum, default_value_t = WeightsArg::Fast)]
    pub weights: WeightsArg,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

/// Decoding settings shared by the commands that generate.
#[derive(Debug, Args, Clone)]
pub struct DecodingArgs {
    /// Most new tokens per reply.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 disables top-k filtering.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Generate exactly `--max-tokens` tokens, ignoring end-of-sequence (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// The user message to answer.
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    pub prompt: Option<String>,
    /// System message placed before the prompt(s).
    #[arg(long)]
    pub system: Option<String>,
    /// Use the prompt as raw text instead of rendering it with the chat template.
    #[arg(long)]
    pub raw: bool,
    /// JSONL file of records with `prompt` (text) or `messages` (chat), and an optional `id`.
    #[arg(long, requires = "output")]
    pub input: Option<PathBuf>,
    /// JSONL file of replies, one per input record, keeping its id. Resumes if interrupted.
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Print a JSON line with token counts and throughput to stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind; loopback by default.
    #[arg(long, env = "SEQIT_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "SEQIT_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer <key>` on every request.
    #[arg(long, env = "SEQIT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Name the model is served under (defaults to the file or directory name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Convert a GGUF file into a Hugging Face directory (dequantized safetensors).
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The `.gguf` file (or `smollm2-135m`).
    #[arg(long)]
    pub model: Option<String>,
    /// Directory to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Weight dtype of the written safetensors.
    #[arg(long, value_parser = ["f32", "bf16", "f16"], default_value = "f32")]
    pub dtype: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WeightsArg {
    Fast,
    AsStored,
    F32,
}
