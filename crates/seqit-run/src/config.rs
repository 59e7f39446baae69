//! The experiment config (`seqit run CONFIG.toml`): raw TOML sections, parsed strictly,
//! then checked (files exist, model references resolve) before any work starts. Every
//! error names the config file, the line and the key path.

pub use seqit_train::Preset;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A config problem: where it is and what was expected.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; `None` when the key is absent from the file (a missing required key).
    pub line: Option<usize>,
    /// Dotted key path with array indices, e.g. `train[1].base`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in one config file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the config; nothing was run",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub run: RunSection,
    /// Named models: the teacher, students' base models, judges.
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
    pub data: DataSection,
    /// Seq-Instruct over `data.seed`; without it, `data.it` and `data.sit` are used.
    pub augment: Option<AugmentSection>,
    #[serde(default)]
    pub mixture: MixtureSection,
    #[serde(default)]
    pub train: Vec<TrainSection>,
    pub seqeval: Option<SeqevalSection>,
    #[serde(default)]
    pub eval: Vec<EvalSection>,
    #[serde(default)]
    pub report: ReportSection,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// The run directory (relative to the config file).
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// Seed of every stage that samples or shuffles.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Request cache shared by all stages (default `RUN_DIR/cache.sqlite`).
    pub cache: Option<PathBuf>,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            output: default_output(),
            seed: default_seed(),
            cache: None,
        }
    }
}

fn default_output() -> PathBuf {
    PathBuf::from("runs/experiment")
}

fn default_seed() -> u64 {
    42
}

/// A model: local (a name such as `smollm2-135m`, a `.gguf` file or a Hugging Face
/// directory) or an OpenAI-compatible endpoint serving `model`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub model: String,
    pub endpoint: Option<String>,
    /// Environment variable holding the endpoint's API key (its value never leaves it).
    pub api_key_env: Option<String>,
    pub concurrency: Option<usize>,
    /// A command that serves this model on loopback while the stages that query it run
    /// (any OpenAI-compatible server, e.g. `vllm serve {checkpoint} --port {port}
    /// --served-model-name {name}`), started and stopped by the runner. Placeholders:
    /// `{checkpoint}`, `{port}`, `{name}` (this section's `model`, the name requests
    /// use) and `{seqit}` (the runner's binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve: Option<String>,
    /// What `serve` loads: a path or a name. Not given for a model that a training run
    /// serves (`serve_as`): its checkpoint is that run's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Seconds a served model may take to answer `GET /v1/models` (default 900).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve_timeout: Option<u64>,
}

/// Placeholders a model's `serve` command may use.
pub const SERVE_PLACEHOLDERS: [&str; 4] = ["checkpoint", "port", "name", "seqit"];
/// Placeholders a training run's `launch` command may use.
pub const LAUNCH_PLACEHOLDERS: [&str; 5] = ["recipe", "data", "base", "output", "seqit"];

/// Replaces `{key}` by its value for every pair; other text is kept.
pub fn expand(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

/// The `{...}` names in a command template that are not in `allowed`.
fn unknown_placeholders(template: &str, allowed: &[&str]) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        let is_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_name && !allowed.contains(&name) {
            unknown.push(format!("{{{name}}}"));
        }
        rest = &after[close + 1..];
    }
    unknown
}

/// The problem (under `key`) with a command template that uses placeholders not in
/// `allowed`, if it does.
fn placeholder_problem(key: String, template: &str, allowed: &[&str]) -> Option<(String, String)> {
    let unknown = unknown_placeholders(template, allowed);
    (!unknown.is_empty()).then(|| {
        (
            key,
            format!(
                "unknown placeholder {}; the command may use {}",
                unknown.join(", "),
                braced(allowed)
            ),
        )
    })
}

impl ModelSpec {
    /// True when `model` names a file or directory (hashed as an input) rather than a
    /// built-in name, a hub id handed to a trainer (`org/name`) or a served model.
    /// Paths next to the config are absolute once loaded.
    pub fn is_local_path(&self) -> bool {
        self.endpoint.is_none() && self.serve.is_none() && looks_like_path(&self.model)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The seed instruction data (any format `seqit data` reads), augmented by `[augment]`.
    pub seed: Option<PathBuf>,
    /// Keep only the first N seed records.
    pub limit: Option<usize>,
    /// Ready-made IT and SIT training data (e.g. the paper's released sets), instead of
    /// augmenting seed data.
    pub it: Option<PathBuf>,
    pub sit: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AugmentSection {
    /// Name of the teacher in `[models]`.
    pub teacher: String,
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// A directory overriding the packaged Seq-Instruct prompts.
    pub prompts: Option<PathBuf>,
    /// Further `seqit augment` flags, passed as given.
    #[serde(default)]
    pub args: Vec<String>,
}

fn default_iterations() -> usize {
    2
}

/// General data mixed into both the IT and the SIT training sets.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MixtureSection {
    #[serde(default)]
    pub extra: Vec<MixSource>,
    /// Records per training set (default: all, without repeats).
    pub total: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MixSource {
    pub path: PathBuf,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

/// Which augmented set a training run uses.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrainData {
    It,
    Sit,
}

impl TrainData {
    pub fn as_str(self) -> &'static str {
        match self {
            TrainData::It => "it",
            TrainData::Sit => "sit",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrainMethod {
    Lora,
    Full,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Names the run (`train-NAME` stage) and the model it produces.
    pub name: String,
    pub data: TrainData,
    /// Base model: a name in `[models]`.
    pub base: String,
    #[serde(default = "default_method")]
    pub method: TrainMethod,
    pub lora_rank: Option<usize>,
    pub lora_alpha: Option<f64>,
    pub epochs: Option<usize>,
    pub lr: Option<f64>,
    pub batch_size: Option<usize>,
    pub grad_accum: Option<usize>,
    pub max_len: Option<usize>,
    pub max_steps: Option<usize>,
    pub template: Option<String>,
    #[serde(default)]
    pub packing: bool,
    /// Checkpoint every N updates, so that an interrupted run resumes.
    pub save_every: Option<usize>,
    /// `seqit train --dtype`: f32, bf16 or f16.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// `seqit train --device`: cpu, cuda or cuda:N.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Hand training off to a distributed trainer (`trl`, `llamafactory`, `axolotl`)
    /// instead of training here: the stage writes its data and config.
    pub handoff: Option<String>,
    /// With `handoff`: the command that trains from the written recipe (e.g.
    /// `accelerate launch -m trl.cli sft --config {recipe}/trl.yaml`, `sbatch --wait
    /// job.sh`), run by the runner, which then checks the checkpoint in `{output}`.
    /// Placeholders: `{recipe}` (the recipe directory), `{data}`, `{base}` (the base
    /// model), `{output}` (`{recipe}/checkpoints`, where the recipes save) and `{seqit}`.
    /// Without it the stage writes the recipe and stops there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
    /// The model evaluations use for this run (a name in `[models]`, e.g. one whose
    /// `serve` command serves the trained checkpoint).
    pub serve_as: Option<String>,
    /// `paper`: the SIT paper's recipe (full fine-tuning, lr 2e-5, 3 epochs, effective
    /// batch 128, max length 2048, 3% warm-up, linear decay, no weight decay, Tulu
    /// format); settings left out take its values, settings that differ are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Further `seqit train` flags, passed as given.
    #[serde(default)]
    pub args: Vec<String>,
}

/// The problems of a training run held to the paper's recipe: (key, message).
fn paper_preset_problems(i: usize, train: &TrainSection) -> Vec<(String, String)> {
    use seqit_train::paper;
    let mut problems = Vec::new();
    let mut differs = |key: &str, given: String, papers: String| {
        problems.push((
            format!("train[{i}].{key}"),
            format!(
                "`preset = \"paper\"` trains with {key} = {papers}, not {given}: drop one of them"
            ),
        ));
    };
    if train.method != TrainMethod::Full {
        differs("method", "\"lora\"".into(), "\"full\"".into());
    }
    if let Some(lr) = train.lr.filter(|&lr| lr != paper::LR) {
        differs("lr", lr.to_string(), paper::LR.to_string());
    }
    if let Some(epochs) = train.epochs.filter(|&e| e != paper::EPOCHS) {
        differs("epochs", epochs.to_string(), paper::EPOCHS.to_string());
    }
    if let Some(max_len) = train.max_len.filter(|&m| m != paper::MAX_LEN) {
        differs("max_len", max_len.to_string(), paper::MAX_LEN.to_string());
    }
    if let Some(template) = train.template.as_deref().filter(|&t| t != paper::TEMPLATE) {
        differs(
            "template",
            format!("\"{template}\""),
            format!("\"{}\"", paper::TEMPLATE),
        );
    }
    if train.handoff.is_none() {
        let batch = train.batch_size.unwrap_or(PAPER_MICRO_BATCH);
        let effective = batch
            * train
                .grad_accum
                .unwrap_or(paper::EFFECTIVE_BATCH / batch.max(1));
        if batch == 0 || effective != paper::EFFECTIVE_BATCH {
            differs(
                "batch_size",
                format!("{batch} (x grad_accum: {effective} per step)"),
                format!(
                    "a divisor of {} (x grad_accum = {0})",
                    paper::EFFECTIVE_BATCH
                ),
            );
        }
    }
    problems
}

/// `seqit train`'s micro-batch under the paper's preset when the run names none.
pub const PAPER_MICRO_BATCH: usize = 4;

fn default_method() -> TrainMethod {
    TrainMethod::Lora
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeqevalSection {
    /// A ready SeqEval set; or build one from `source` with `teacher`.
    pub set: Option<PathBuf>,
    pub source: Option<PathBuf>,
    pub teacher: Option<String>,
    pub max_tokens: Option<usize>,
    /// Further `seqit seqeval build` flags, passed as given.
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Benchmark {
    Seqeval,
    Humaneval,
    Gsm8k,
    Mgsm,
    Xquad,
}

impl Benchmark {
    pub fn as_str(self) -> &'static str {
        match self {
            Benchmark::Seqeval => "seqeval",
            Benchmark::Humaneval => "humaneval",
            Benchmark::Gsm8k => "gsm8k",
            Benchmark::Mgsm => "mgsm",
            Benchmark::Xquad => "xquad",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub benchmark: Benchmark,
    /// Stage name suffix (default: the benchmark's name).
    pub name: Option<String>,
    /// Models to evaluate: training run names or names in `[models]` (default: every
    /// training run).
    #[serde(default)]
    pub models: Vec<String>,
    /// Judge (a name in `[models]`), for SeqEval.
    pub judge: Option<String>,
    /// Benchmark data (GSM8K JSONL, HumanEval problems; for MGSM and XQuAD a file or a
    /// directory of per-language files: `mgsm_*.tsv`/`.jsonl`, `xquad.*.json`); SeqEval
    /// uses `[seqeval]`'s set unless this names another (e.g. a verifiable set from
    /// `seqit seqeval synth`).
    pub data: Option<PathBuf>,
    pub limit: Option<usize>,
    pub max_tokens: Option<usize>,
    /// Samples per problem (HumanEval).
    pub samples: Option<usize>,
    pub temperature: Option<f64>,
    /// MGSM: the train split's per-language exemplars (`<language>.jsonl`), so that
    /// each question gets 8 shots in its own language, as in the paper.
    pub exemplars: Option<PathBuf>,
    /// Further `seqit eval` flags, passed as given.
    #[serde(default)]
    pub args: Vec<String>,
}

impl EvalSection {
    pub fn stage_suffix(&self) -> &str {
        self.name.as_deref().unwrap_or(self.benchmark.as_str())
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    pub title: Option<String>,
}

/// A checked config: paths resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub path: PathBuf,
    pub config: Config,
    pub run_dir: PathBuf,
    /// The loopback port of each served model (`[models.X] serve`), chosen by the
    /// runner before planning.
    pub ports: BTreeMap<String, u16>,
}

impl Experiment {
    /// The model named `name` as the stages query it: a served model at its loopback
    /// endpoint.
    pub fn model(&self, name: &str) -> ModelSpec {
        let spec = &self.config.models[name];
        match self.ports.get(name) {
            Some(port) if spec.serve.is_some() => ModelSpec {
                model: spec.model.clone(),
                endpoint: Some(format!("http://127.0.0.1:{port}/v1")),
                concurrency: spec.concurrency,
                ..ModelSpec::default()
            },
            _ => spec.clone(),
        }
    }

    /// The training run whose output a served model serves (`serve_as`).
    pub fn run_serving(&self, name: &str) -> Option<&TrainSection> {
        self.config
            .train
            .iter()
            .find(|t| t.serve_as.as_deref() == Some(name))
    }

    /// Where a training run's model ends up: `checkpoints/` of a hand-off recipe
    /// directory (where the recipes save), `model/` of `seqit train`'s output.
    pub fn checkpoint_dir(&self, train: &TrainSection) -> PathBuf {
        let dir = self.run_dir.join(format!("train-{}", train.name));
        match train.handoff {
            Some(_) => dir.join("checkpoints"),
            None => dir.join("model"),
        }
    }
}

/// Reads, parses and checks a config file; all problems are reported together.
pub fn load(path: &Path, output_override: Option<&Path>) -> Result<Experiment, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the config: {e}"),
        }])
    })?;
    let mut config = parse(path, &text).map_err(|e| ConfigErrors(vec![e]))?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    resolve_paths(&mut config, &base);
    let errors = check(&config)
        .into_iter()
        .map(|(key, message)| ConfigError {
            file: path.to_path_buf(),
            line: locate(&text, &key),
            key,
            message,
        })
        .collect::<Vec<_>>();
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let run_dir = output_override
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config.run.output.clone());
    Ok(Experiment {
        path: path.to_path_buf(),
        config,
        run_dir,
        ports: BTreeMap::new(),
    })
}

/// Strict TOML → `Config`: syntax, unknown keys and wrong types, with the key path.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let error = |key: String, err: &toml::de::Error| ConfigError {
        file: file.to_path_buf(),
        line: err.span().map(|s| line_of(text, s.start)),
        key,
        message: err.message().trim().to_string(),
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| error(String::new(), &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let mut key = e.path().to_string();
        if key == "." {
            key.clear();
        }
        let inner = e.into_inner();
        error(key, &inner)
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where the value at `key` (`a.b[2].c`) is written.
fn locate(text: &str, key: &str) -> Option<usize> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut span = root.span();
    let root = toml::de::DeValue::Table(root.into_inner());
    let mut value = &root;
    for segment in key.split('.') {
        let (name, indices) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        let next = value.get(name)?;
        (value, span) = (next.get_ref(), next.span());
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            let next = value.get(index.parse::<usize>().ok()?)?;
            (value, span) = (next.get_ref(), next.span());
        }
    }
    Some(line_of(text, span.start))
}

fn resolve_paths(config: &mut Config, base: &Path) {
    let join = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    join(&mut config.run.output);
    if let Some(cache) = &mut config.run.cache {
        join(cache);
    }
    for p in [
        &mut config.data.seed,
        &mut config.data.it,
        &mut config.data.sit,
    ]
    .into_iter()
    .flatten()
    {
        join(p);
    }
    if let Some(p) = config.augment.as_mut().and_then(|a| a.prompts.as_mut()) {
        join(p);
    }
    for source in &mut config.mixture.extra {
        join(&mut source.path);
    }
    if let Some(seqeval) = &mut config.seqeval {
        for p in [&mut seqeval.set, &mut seqeval.source]
            .into_iter()
            .flatten()
        {
            join(p);
        }
    }
    for eval in &mut config.eval {
        if let Some(p) = &mut eval.data {
            join(p);
        }
        if let Some(p) = &mut eval.exemplars {
            join(p);
        }
    }
    // A name that is a file or directory next to the config is a path too; `org/name`
    // that is not one is a hub id.
    let local = |name: &str| looks_like_path(name) || base.join(name).exists();
    let resolve = |name: &mut String| {
        let mut p = PathBuf::from(&*name);
        join(&mut p);
        *name = p.to_string_lossy().into_owned();
    };
    for model in config.models.values_mut() {
        if model.endpoint.is_none() && model.serve.is_none() && local(&model.model) {
            resolve(&mut model.model);
        }
        if let Some(checkpoint) = model.checkpoint.as_mut().filter(|c| local(c)) {
            resolve(checkpoint);
        }
    }
}

/// Semantic checks: (key path, message) per problem.
fn check(config: &Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut need_file = |key: String, path: &Path, what: &str| {
        if !path.exists() {
            problems.push((key, format!("{what} `{}` does not exist", path.display())));
        }
    };
    for (key, path) in [
        ("data.seed", &config.data.seed),
        ("data.it", &config.data.it),
        ("data.sit", &config.data.sit),
    ] {
        if let Some(p) = path {
            need_file(key.into(), p, "data file");
        }
    }
    if let Some(p) = config.augment.as_ref().and_then(|a| a.prompts.as_ref()) {
        need_file("augment.prompts".into(), p, "prompts directory");
    }
    for (i, source) in config.mixture.extra.iter().enumerate() {
        need_file(
            format!("mixture.extra[{i}].path"),
            &source.path,
            "mixture file",
        );
    }
    if let Some(seqeval) = &config.seqeval {
        if let Some(p) = &seqeval.set {
            need_file("seqeval.set".into(), p, "SeqEval set");
        }
        if let Some(p) = &seqeval.source {
            need_file("seqeval.source".into(), p, "SeqEval source prompts");
        }
    }
    for (i, eval) in config.eval.iter().enumerate() {
        if let Some(p) = &eval.data {
            need_file(format!("eval[{i}].data"), p, "benchmark data");
        }
        if let Some(p) = &eval.exemplars {
            need_file(format!("eval[{i}].exemplars"), p, "exemplar directory");
        }
    }
    for (name, model) in &config.models {
        if model.is_local_path() {
            need_file(
                format!("models.{name}.model"),
                Path::new(&model.model),
                "model",
            );
        }
    }

    let model_names = |names: &BTreeMap<String, ModelSpec>| {
        let list: Vec<&str> = names.keys().map(String::as_str).collect();
        if list.is_empty() {
            "no models are defined; add a `[models.NAME]` table".to_string()
        } else {
            format!("defined: {}", list.join(", "))
        }
    };
    let need_model = |key: String, name: &str| -> Option<(String, String)> {
        (!config.models.contains_key(name)).then(|| {
            (
                key,
                format!(
                    "model `{name}` is not defined in `[models]` ({})",
                    model_names(&config.models)
                ),
            )
        })
    };
    match &config.augment {
        Some(augment) => {
            problems.extend(need_model("augment.teacher".into(), &augment.teacher));
            if augment.iterations == 0 {
                problems.push(("augment.iterations".into(), "must be at least 1".into()));
            }
            if config.data.seed.is_none() {
                problems.push((
                    "data.seed".into(),
                    "`[augment]` needs seed data to augment".into(),
                ));
            }
            if config.data.it.is_some() || config.data.sit.is_some() {
                problems.push((
                    "data.it".into(),
                    "give either seed data with `[augment]`, or ready `it`/`sit` files, not both"
                        .into(),
                ));
            }
        }
        None if config.data.it.is_none() || config.data.sit.is_none() => problems.push((
            "data".into(),
            "needs `seed` and an `[augment]` section, or ready-made `it` and `sit` files".into(),
        )),
        None => {}
    }
    for (name, model) in &config.models {
        let Some(serve) = &model.serve else {
            if model.checkpoint.is_some() || model.serve_timeout.is_some() {
                problems.push((
                    format!("models.{name}.serve"),
                    "`checkpoint` and `serve_timeout` belong to a served model: give `serve`"
                        .into(),
                ));
            }
            continue;
        };
        if model.endpoint.is_some() {
            problems.push((
                format!("models.{name}.endpoint"),
                "a served model's endpoint is the runner's (loopback, a free port): drop `endpoint` or `serve`".into(),
            ));
        }
        problems.extend(placeholder_problem(
            format!("models.{name}.serve"),
            serve,
            &SERVE_PLACEHOLDERS,
        ));
        let trained = config
            .train
            .iter()
            .any(|t| t.serve_as.as_deref() == Some(name.as_str()));
        match (&model.checkpoint, trained) {
            (Some(_), true) => problems.push((
                format!("models.{name}.checkpoint"),
                "a training run serves its output as this model (`serve_as`): drop `checkpoint`"
                    .into(),
            )),
            (None, false) if serve.contains("{checkpoint}") => problems.push((
                format!("models.{name}.checkpoint"),
                "the `serve` command loads `{checkpoint}`: say what it is".into(),
            )),
            _ => {}
        }
    }
    let mut run_names: Vec<&str> = Vec::new();
    for (i, train) in config.train.iter().enumerate() {
        problems.extend(need_model(format!("train[{i}].base"), &train.base));
        if let Some(served) = &train.serve_as {
            problems.extend(need_model(format!("train[{i}].serve_as"), served));
        }
        if !valid_stage_part(&train.name) {
            problems.push((
                format!("train[{i}].name"),
                format!(
                    "`{}` must be letters, digits, `-` or `_` (it names a directory)",
                    train.name
                ),
            ));
        } else if run_names.contains(&train.name.as_str()) {
            problems.push((
                format!("train[{i}].name"),
                format!("training run `{}` is defined twice", train.name),
            ));
        }
        if let Some(handoff) = &train.handoff {
            if !["trl", "llamafactory", "axolotl"].contains(&handoff.as_str()) {
                problems.push((
                    format!("train[{i}].handoff"),
                    format!("`{handoff}` is not one of trl, llamafactory, axolotl"),
                ));
            }
        }
        if train.preset == Some(Preset::Paper) {
            problems.extend(paper_preset_problems(i, train));
        }
        if let Some(launch) = &train.launch {
            if train.handoff.is_none() {
                problems.push((
                    format!("train[{i}].launch"),
                    "`launch` runs a hand-off recipe: give `handoff` too".into(),
                ));
            }
            problems.extend(placeholder_problem(
                format!("train[{i}].launch"),
                launch,
                &LAUNCH_PLACEHOLDERS,
            ));
        }
        run_names.push(train.name.as_str());
    }
    if let Some(seqeval) = &config.seqeval {
        match (&seqeval.set, &seqeval.source) {
            (Some(_), Some(_)) => problems.push((
                "seqeval.set".into(),
                "give either `set` (a ready SeqEval set) or `source` (prompts to build one from), not both".into(),
            )),
            (None, None) => problems.push((
                "seqeval".into(),
                "needs `set` (a ready SeqEval set) or `source` (prompts to build one from)".into(),
            )),
            (None, Some(_)) => match (&seqeval.teacher, &config.augment) {
                (Some(t), _) => problems.extend(need_model("seqeval.teacher".into(), t)),
                (None, Some(_)) => {} // the augmentation teacher, checked above
                (None, None) => problems.push((
                    "seqeval.teacher".into(),
                    "building SeqEval needs a teacher (a model in `[models]`)".into(),
                )),
            },
            (Some(_), None) => {}
        }
    }
    let mut eval_names = Vec::new();
    for (i, eval) in config.eval.iter().enumerate() {
        for (j, model) in eval.models.iter().enumerate() {
            if !run_names.contains(&model.as_str()) && !config.models.contains_key(model) {
                problems.push((
                    format!("eval[{i}].models[{j}]"),
                    format!(
                        "`{model}` is neither a training run ({}) nor a model in `[models]` ({})",
                        if run_names.is_empty() {
                            "none".to_string()
                        } else {
                            run_names.join(", ")
                        },
                        model_names(&config.models)
                    ),
                ));
            }
        }
        if eval.models.is_empty() && run_names.is_empty() {
            problems.push((
                format!("eval[{i}].models"),
                "no models to evaluate: list some, or define `[[train]]` runs".into(),
            ));
        }
        if let Some(judge) = &eval.judge {
            problems.extend(need_model(format!("eval[{i}].judge"), judge));
        }
        match eval.benchmark {
            Benchmark::Seqeval => {
                if config.seqeval.is_none() && eval.data.is_none() {
                    problems.push((
                        format!("eval[{i}].benchmark"),
                        "a SeqEval evaluation needs a `[seqeval]` section (a set, or prompts to build one) or its own `data`".into(),
                    ));
                }
                let verifiable_only = eval.args.iter().any(|a| a == "--verifiable-only");
                if eval.judge.is_none() && !verifiable_only {
                    problems.push((
                        format!("eval[{i}]"),
                        "a SeqEval evaluation needs `judge` (a model in `[models]`), or `args = [\"--verifiable-only\"]` for a verifiable set".into(),
                    ));
                }
                if let Some(data) = eval.data.as_ref().filter(|d| !d.exists()) {
                    problems.push((
                        format!("eval[{i}].data"),
                        format!("SeqEval set `{}` does not exist", data.display()),
                    ));
                }
            }
            Benchmark::Gsm8k if eval.data.is_none() => problems.push((
                format!("eval[{i}]"),
                "GSM8K needs `data` (a GSM8K JSONL file)".into(),
            )),
            Benchmark::Mgsm | Benchmark::Xquad if eval.data.is_none() => problems.push((
                format!("eval[{i}]"),
                format!(
                    "{} needs `data` (a per-language file, or a directory of them)",
                    eval.benchmark.as_str()
                ),
            )),
            _ => {}
        }
        // Options the benchmark's command does not take are refused here, not dropped
        // or passed on to fail when the stage runs.
        let benchmark = eval.benchmark.as_str();
        for (option, given, takes) in [
            (
                "judge",
                eval.judge.is_some(),
                eval.benchmark == Benchmark::Seqeval,
            ),
            (
                "samples",
                eval.samples.is_some(),
                eval.benchmark == Benchmark::Humaneval,
            ),
            (
                "temperature",
                eval.temperature.is_some(),
                eval.benchmark == Benchmark::Humaneval,
            ),
            (
                "exemplars",
                eval.exemplars.is_some(),
                eval.benchmark == Benchmark::Mgsm,
            ),
        ] {
            if given && !takes {
                problems.push((
                    format!("eval[{i}].{option}"),
                    format!("`{benchmark}` does not take `{option}`"),
                ));
            }
        }
        let name = eval.stage_suffix();
        if !valid_stage_part(name) {
            problems.push((
                format!("eval[{i}].name"),
                format!("`{name}` must be letters, digits, `-` or `_`"),
            ));
        } else if eval_names.contains(&name) {
            problems.push((
                format!("eval[{i}].name"),
                format!("evaluation `{name}` is defined twice; give one a different `name`"),
            ));
        }
        eval_names.push(name);
    }
    problems
}

/// A model string written as a path: absolute, `./` or `../`, or a `.gguf` file.
fn looks_like_path(name: &str) -> bool {
    name.starts_with('/')
        || name.starts_with("./")
        || name.starts_with("../")
        || name.ends_with(".gguf")
        || name == "."
}

/// `{a}, {b}, ...`
fn braced(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn valid_stage_part(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
