//! The stage graph of an experiment: which stages exist, what each reads and writes,
//! the command that runs it, the config slice that decides when it must run again,
//! and rough request/token estimates for `--dry-run`.

use std::path::{Path, PathBuf};

use seqit_augment::{AugmentOptions, SeqevalBuildOptions, TeacherSettings};
use seqit_core::flags::{clap_defaults, ToFlags};
use seqit_data::MixOptions;
use seqit_eval::run::{
    AnswererSettings, Gsm8kSettings, HumanevalSettings, JudgeSettings, MgsmSettings,
    SeqevalSettings, XquadSettings,
};
use seqit_train::{RecipeOptions, TrainSettings};
use serde_json::{json, Value};

use crate::config::{
    expand, Benchmark, EvalSection, Experiment, ModelSpec, Preset, TrainMethod, TrainSection,
    PAPER_MICRO_BATCH,
};

/// Default new tokens per teacher reply when the config gives none (the paper's).
const PAPER_MAX_TOKENS: usize = 2048;
/// Rough prompt overhead of a Seq-Instruct request (instructions and few-shot examples).
const AUGMENT_PROMPT_TOKENS: u64 = 700;
/// HumanEval's problem count.
const HUMANEVAL_PROBLEMS: u64 = 164;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Seed,
    Augment,
    Mixture,
    Train,
    SeqevalBuild,
    Eval,
    Report,
}

/// How a stage does its work.
#[derive(Debug, Clone)]
pub enum Action {
    /// Copy the seed data (first `limit` records) into the run, validated.
    Seed {
        input: PathBuf,
        limit: Option<usize>,
        output: PathBuf,
    },
    /// `seqit` subcommands run as child processes, in order; each resumes on its own.
    Commands(Vec<Vec<String>>),
    /// An external trainer: `seqit export-recipe` (`recipe`), then `command` (a shell
    /// command line, `{seqit}` still to expand) under a supervisor with its output in
    /// `log`; then the checkpoint in `checkpoint` is checked.
    Launch {
        recipe: Vec<String>,
        command: String,
        log: PathBuf,
        checkpoint: PathBuf,
    },
    /// Write the HTML and Markdown reports of the run directory.
    Report {
        html: PathBuf,
        markdown: PathBuf,
        title: Option<String>,
    },
}

/// Requests and tokens a stage is expected to use at most.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    pub requests: u64,
    pub tokens: u64,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub kind: Kind,
    pub dir: PathBuf,
    pub deps: Vec<String>,
    /// The part of the config this stage depends on.
    pub slice: Value,
    /// Files and directories whose contents the stage reads.
    pub inputs: Vec<PathBuf>,
    /// What must exist when the stage is done (hashed into its manifest).
    pub outputs: Vec<PathBuf>,
    /// Served models (`[models.X] serve`) the stage queries: running while it runs.
    pub servers: Vec<String>,
    pub action: Action,
    pub estimate: Estimate,
}

/// The stages in the order they run (each after all of its dependencies).
pub fn plan(exp: &Experiment, seed_count: usize, source_count: usize) -> Vec<Stage> {
    let c = &exp.config;
    let run = &exp.run_dir;
    let seed = c.run.seed;
    let cache = c
        .run
        .cache
        .clone()
        .unwrap_or_else(|| run.join("cache.sqlite"));
    let mut stages = Vec::new();

    // The IT and SIT training data: Seq-Instruct over the seed data (SIT) and the same
    // teacher's answers to the original instructions (IT), or ready-made files.
    let (it, sit) = match &c.augment {
        Some(a) => {
            let seed_input = c
                .data
                .seed
                .clone()
                .expect("checked: [augment] has seed data");
            let seed_dir = run.join("seed");
            let seed_file = seed_dir.join("seed.jsonl");
            stages.push(Stage {
                name: "seed".into(),
                kind: Kind::Seed,
                dir: seed_dir,
                deps: vec![],
                slice: json!({ "seed": c.data.seed, "limit": c.data.limit }),
                inputs: vec![seed_input.clone()],
                outputs: vec![seed_file.clone()],
                servers: vec![],
                action: Action::Seed {
                    input: seed_input,
                    limit: c.data.limit,
                    output: seed_file.clone(),
                },
                estimate: Estimate {
                    note: format!("{seed_count} records"),
                    ..Estimate::default()
                },
            });
            let teacher = exp.model(&a.teacher);
            let augment_dir = run.join("augment");
            let (sit, it) = (augment_dir.join("sit.jsonl"), augment_dir.join("it.jsonl"));
            let mut options: AugmentOptions = clap_defaults();
            options.read.input = seed_file.clone();
            options.output = sit.clone();
            options.it_output = Some(it.clone());
            options.iterations = a.iterations as u32;
            options.teacher = teacher_settings(&teacher, &cache, seed);
            let decoding = &mut options.teacher;
            decoding.max_tokens = a.max_tokens.unwrap_or(decoding.max_tokens);
            decoding.temperature = a.temperature.unwrap_or(decoding.temperature);
            decoding.top_p = a.top_p.unwrap_or(decoding.top_p);
            decoding.top_k = a.top_k.unwrap_or(decoding.top_k);
            options.teacher.prompts = a.prompts.clone();
            let mut cmd = strings(&["augment"]);
            cmd.extend(options.to_flags());
            cmd.extend(a.args.iter().cloned());
            let max_tokens = a.max_tokens.unwrap_or(PAPER_MAX_TOKENS) as u64;
            let requests = seed_count as u64 * (3 * a.iterations as u64 + 1);
            stages.push(Stage {
                name: "augment".into(),
                kind: Kind::Augment,
                dir: augment_dir,
                deps: vec!["seed".into()],
                slice: json!({ "augment": a, "teacher": c.models[&a.teacher], "seed": seed }),
                inputs: [Some(seed_file), a.prompts.clone()]
                    .into_iter()
                    .flatten()
                    .chain(model_inputs(exp, &a.teacher))
                    .collect(),
                outputs: vec![sit.clone(), it.clone()],
                servers: served(exp, &[&a.teacher]),
                action: Action::Commands(vec![cmd]),
                estimate: Estimate {
                    requests,
                    tokens: requests * (AUGMENT_PROMPT_TOKENS + max_tokens),
                    note: format!(
                        "{seed_count} items x {} rounds (classify, rewrite, answer) + IT answers; D items stop early",
                        a.iterations
                    ),
                },
            });
            (it, sit)
        }
        None => (
            c.data
                .it
                .clone()
                .expect("checked: it and sit without [augment]"),
            c.data
                .sit
                .clone()
                .expect("checked: it and sit without [augment]"),
        ),
    };

    // Mixture: the same extra data and seed for both, so IT and SIT differ only in
    // the augmented part.
    let mixture_dir = run.join("mixture");
    let mix = |source: &Path, out: &Path| {
        let mut options: MixOptions = clap_defaults();
        options.sources = std::iter::once(format!("{}:1", path_str(source)))
            .chain(
                c.mixture
                    .extra
                    .iter()
                    .map(|extra| format!("{}:{}", path_str(&extra.path), extra.weight)),
            )
            .collect();
        options.output = out.to_path_buf();
        options.seed = seed;
        options.total = c.mixture.total;
        let mut cmd = strings(&["data", "mix"]);
        cmd.extend(options.sources.iter().cloned());
        cmd.extend(options.to_flags());
        cmd
    };
    let mixed = |data: &str| mixture_dir.join(format!("{data}.jsonl"));
    stages.push(Stage {
        name: "mixture".into(),
        kind: Kind::Mixture,
        dir: mixture_dir.clone(),
        deps: stages
            .iter()
            .map(|s| s.name.clone())
            .filter(|n| n == "augment")
            .collect(),
        slice: json!({ "mixture": c.mixture, "seed": seed }),
        inputs: [it.clone(), sit.clone()]
            .into_iter()
            .chain(c.mixture.extra.iter().map(|e| e.path.clone()))
            .collect(),
        outputs: vec![mixed("it"), mixed("sit")],
        servers: vec![],
        action: Action::Commands(vec![mix(&it, &mixed("it")), mix(&sit, &mixed("sit"))]),
        estimate: Estimate::default(),
    });

    let train_examples = c.mixture.total.unwrap_or(seed_count) as u64;
    for t in &c.train {
        stages.push(train_stage(exp, t, &mixed(t.data.as_str()), train_examples));
    }

    // SeqEval: a given set, or one built from source prompts by the teacher.
    let seqeval_set = c.seqeval.as_ref().map(|s| match &s.set {
        Some(set) => (set.clone(), None),
        None => {
            let dir = run.join("seqeval-build");
            let out = dir.join("seqeval.jsonl");
            let teacher = s
                .teacher
                .as_deref()
                .or(c.augment.as_ref().map(|a| a.teacher.as_str()));
            let teacher = teacher.expect("checked: SeqEval build has a teacher");
            let builder = exp.model(teacher);
            let mut options: SeqevalBuildOptions = clap_defaults();
            options.read.input = s.source.clone().expect("checked: set or source");
            options.output = out.clone();
            options.teacher = teacher_settings(&builder, &cache, seed);
            options.teacher.max_tokens = s.max_tokens.unwrap_or(options.teacher.max_tokens);
            let mut cmd = strings(&["seqeval", "build"]);
            cmd.extend(options.to_flags());
            cmd.extend(s.args.iter().cloned());
            let items = source_count as u64;
            let stage = Stage {
                name: "seqeval-build".into(),
                kind: Kind::SeqevalBuild,
                dir,
                deps: vec![],
                slice: json!({ "seqeval": s, "teacher": c.models[teacher], "seed": seed }),
                inputs: s
                    .source
                    .clone()
                    .into_iter()
                    .chain(model_inputs(exp, teacher))
                    .collect(),
                outputs: vec![out.clone()],
                servers: served(exp, &[teacher]),
                action: Action::Commands(vec![cmd]),
                estimate: Estimate {
                    requests: items * 4,
                    tokens: items
                        * 4
                        * (AUGMENT_PROMPT_TOKENS + s.max_tokens.unwrap_or(PAPER_MAX_TOKENS) as u64),
                    note: format!("{items} prompts x up to 4 rewrites"),
                },
            };
            (out, Some(stage))
        }
    });
    let seqeval_path = seqeval_set.as_ref().map(|(p, _)| p.clone());
    if let Some((_, Some(stage))) = seqeval_set {
        stages.push(stage);
    }

    // One model's evaluations run together, so that a served model starts once.
    let mut evals: Vec<(String, &EvalSection)> = Vec::new();
    for e in &c.eval {
        let models: Vec<String> = if e.models.is_empty() {
            c.train.iter().map(|t| t.name.clone()).collect()
        } else {
            e.models.clone()
        };
        evals.extend(models.into_iter().map(|m| (m, e)));
    }
    let mut model_order: Vec<String> = Vec::new();
    for (model, _) in &evals {
        if !model_order.contains(model) {
            model_order.push(model.clone());
        }
    }
    evals.sort_by_key(|(model, _)| model_order.iter().position(|m| m == model));
    for (model, e) in evals {
        stages.push(eval_stage(
            exp,
            e,
            &model,
            seqeval_path.as_deref(),
            source_count,
        ));
    }

    let report_dir = run.join("report");
    let deps: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    let inputs: Vec<PathBuf> = stages.iter().flat_map(|s| s.outputs.clone()).collect();
    stages.push(Stage {
        name: "report".into(),
        kind: Kind::Report,
        dir: report_dir.clone(),
        deps,
        slice: json!({ "report": c.report }),
        inputs,
        outputs: vec![report_dir.join("report.html"), report_dir.join("report.md")],
        servers: vec![],
        action: Action::Report {
            html: report_dir.join("report.html"),
            markdown: report_dir.join("report.md"),
            title: c.report.title.clone(),
        },
        estimate: Estimate::default(),
    });
    stages
}

fn train_stage(exp: &Experiment, t: &TrainSection, data: &Path, examples: u64) -> Stage {
    let c = &exp.config;
    let dir = exp.run_dir.join(format!("train-{}", t.name));
    let base = &c.models[&t.base];
    let checkpoint = exp.checkpoint_dir(t);
    let action = match &t.handoff {
        Some(to) => {
            let mut options: RecipeOptions = clap_defaults();
            options.to = to.clone();
            options.model = base.model.clone();
            options.preset = t.preset;
            options.data = data.to_path_buf();
            options.output = dir.clone();
            options.max_len = t.max_len.unwrap_or(options.max_len);
            let mut recipe = strings(&["export-recipe"]);
            recipe.extend(options.to_flags());
            recipe.extend(t.args.iter().cloned());
            match &t.launch {
                Some(template) => Action::Launch {
                    recipe,
                    command: expand(
                        template,
                        &[
                            ("recipe", &path_str(&dir)),
                            ("data", &path_str(data)),
                            ("base", &base.model),
                            ("output", &path_str(&checkpoint)),
                        ],
                    ),
                    log: dir.join("launch.log"),
                    checkpoint: checkpoint.clone(),
                },
                None => Action::Commands(vec![recipe]),
            }
        }
        None => {
            let mut settings = train_settings(t);
            settings.model = Some(base.model.clone());
            settings.data = Some(data.to_path_buf());
            settings.output = Some(dir.clone());
            settings.seed = Some(c.run.seed);
            settings.resume = true;
            if t.preset == Some(Preset::Paper) {
                apply_paper_recipe(&mut settings);
            }
            let mut cmd = strings(&["train"]);
            cmd.extend(settings.to_flags());
            cmd.extend(t.args.iter().cloned());
            Action::Commands(vec![cmd])
        }
    };
    let epochs = t.epochs.unwrap_or(3) as u64;
    Stage {
        name: format!("train-{}", t.name),
        kind: Kind::Train,
        outputs: vec![match (&t.handoff, &t.launch) {
            (Some(_), None) => dir.clone(),
            _ => checkpoint,
        }],
        servers: vec![],
        dir,
        deps: vec!["mixture".into()],
        slice: json!({ "train": t, "base": base, "seed": c.run.seed }),
        inputs: [Some(data.to_path_buf()), local_model(base)]
            .into_iter()
            .flatten()
            .collect(),
        action,
        estimate: Estimate {
            note: match (&t.handoff, &t.launch) {
                (Some(to), None) => {
                    format!("hand-off to {to}: writes data and config, trains nothing here")
                }
                (Some(to), Some(_)) => {
                    format!("hand-off to {to}: writes the recipe, then runs the launch command")
                }
                (None, _) => format!("{examples} examples x {epochs} epochs"),
            },
            ..Estimate::default()
        },
    }
}

/// The `seqit train` settings a run's `[[train]]` section gives (the run adds the
/// model, data, output and seed).
fn train_settings(t: &TrainSection) -> TrainSettings {
    let lora = t.method == TrainMethod::Lora;
    TrainSettings {
        full: !lora,
        lora_rank: t.lora_rank.filter(|_| lora),
        lora_alpha: t.lora_alpha.filter(|_| lora),
        epochs: t.epochs,
        lr: t.lr,
        batch_size: t.batch_size,
        grad_accum: t.grad_accum,
        max_len: t.max_len,
        max_steps: t.max_steps,
        template: t.template.clone(),
        save_every: t.save_every,
        dtype: t.dtype.clone(),
        device: t.device.clone(),
        packing: t.packing,
        ..TrainSettings::default()
    }
}

/// Fills in the paper's recipe for the settings the run leaves out (the config check
/// refused the ones that differ).
fn apply_paper_recipe(settings: &mut TrainSettings) {
    use seqit_train::paper;
    let batch = *settings.batch_size.get_or_insert(PAPER_MICRO_BATCH);
    settings.lr.get_or_insert(paper::LR);
    settings.epochs.get_or_insert(paper::EPOCHS);
    settings.max_len.get_or_insert(paper::MAX_LEN);
    settings
        .template
        .get_or_insert_with(|| paper::TEMPLATE.to_string());
    settings
        .grad_accum
        .get_or_insert(paper::EFFECTIVE_BATCH / batch);
    settings.warmup_ratio = Some(paper::WARMUP_SHARE);
    settings.schedule = Some("linear".to_string());
    settings.weight_decay = Some(paper::WEIGHT_DECAY);
}

/// What an evaluation runs against: a trained model (its checkpoint directory, or the
/// model that serves it), or a configured model; and the training stage it needs.
fn eval_target(exp: &Experiment, name: &str) -> (String, ModelSpec, Option<String>) {
    match exp.config.train.iter().find(|t| t.name == name) {
        Some(t) => {
            let stage = Some(format!("train-{}", t.name));
            match &t.serve_as {
                Some(served) => (served.clone(), exp.model(served), stage),
                None => {
                    let spec = ModelSpec {
                        model: path_str(&exp.checkpoint_dir(t)),
                        ..ModelSpec::default()
                    };
                    (name.to_string(), spec, stage)
                }
            }
        }
        None => (name.to_string(), exp.model(name), None),
    }
}

/// The served models among `names`.
fn served(exp: &Experiment, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|n| exp.config.models[**n].serve.is_some())
        .map(|n| n.to_string())
        .collect()
}

/// The files a stage that queries model `name` reads: a local model file or directory,
/// or what its server loads.
fn model_inputs(exp: &Experiment, name: &str) -> Vec<PathBuf> {
    let spec = &exp.config.models[name];
    if spec.serve.is_none() {
        return local_model(spec).into_iter().collect();
    }
    match (exp.run_serving(name), &spec.checkpoint) {
        (Some(t), _) => vec![exp.checkpoint_dir(t)],
        (None, Some(checkpoint)) if Path::new(checkpoint).exists() => {
            vec![PathBuf::from(checkpoint)]
        }
        _ => vec![],
    }
}

fn eval_stage(
    exp: &Experiment,
    e: &EvalSection,
    model_name: &str,
    seqeval: Option<&Path>,
    source_count: usize,
) -> Stage {
    let c = &exp.config;
    let name = format!("eval-{}-{}", e.stage_suffix(), model_name);
    let dir = exp.run_dir.join(&name);
    let (target, model, train_stage) = eval_target(exp, model_name);
    let mut inputs: Vec<PathBuf> = Vec::new();
    let mut deps: Vec<String> = train_stage.into_iter().collect();
    if train_stage_output(&model, exp) {
        inputs.push(PathBuf::from(&model.model));
    } else if exp.config.models.contains_key(&target) {
        inputs.extend(model_inputs(exp, &target));
    }
    // A SeqEval section may name its own set (a verifiable one from `seqit seqeval
    // synth`); otherwise it uses `[seqeval]`'s.
    let data = match e.benchmark {
        Benchmark::Seqeval => e.data.clone().or_else(|| seqeval.map(Path::to_path_buf)),
        _ => e.data.clone(),
    };
    let files = data
        .as_deref()
        .map_or_else(Vec::new, |data| benchmark_files(e.benchmark, data));
    let data_items: usize = files.iter().map(|f| count_items(e.benchmark, f)).sum();
    if let Some(data) = &data {
        inputs.push(data.clone());
        if e.benchmark == Benchmark::Seqeval
            && e.data.is_none()
            && c.seqeval.as_ref().is_some_and(|s| s.set.is_none())
        {
            deps.push("seqeval-build".into());
        }
    }
    if let Some(name) = &e.judge {
        inputs.extend(model_inputs(exp, name));
    }
    inputs.extend(e.exemplars.iter().cloned());
    let mut answerer = answerer_settings(&model, dir.clone());
    answerer.run.limit = e.limit;
    if e.benchmark != Benchmark::Humaneval {
        let cache = c.run.cache.clone();
        answerer.run.cache = Some(cache.unwrap_or_else(|| exp.run_dir.join("cache.sqlite")));
    }
    let judge = e.judge.as_ref().map(|j| judge_settings(&exp.model(j)));
    let mut cmd = vec!["eval".to_string(), e.benchmark.as_str().to_string()];
    cmd.extend(eval_flags(e, files, answerer, judge));
    cmd.extend(e.args.iter().cloned());

    let items = match e.benchmark {
        Benchmark::Seqeval => source_count,
        Benchmark::Humaneval => HUMANEVAL_PROBLEMS as usize,
        Benchmark::Gsm8k | Benchmark::Mgsm | Benchmark::Xquad => data_items,
    };
    let items = e
        .limit
        .map_or(items, |l| if items == 0 { l } else { l.min(items) }) as u64;
    let per_item = match e.benchmark {
        // answer, following verdict, quality score
        Benchmark::Seqeval => 3,
        Benchmark::Humaneval => e.samples.unwrap_or(20) as u64,
        Benchmark::Gsm8k | Benchmark::Mgsm | Benchmark::Xquad => 1,
    };
    let max_tokens = e.max_tokens.unwrap_or(PAPER_MAX_TOKENS) as u64;
    Stage {
        name,
        kind: Kind::Eval,
        dir: dir.clone(),
        deps,
        slice: json!({
            "eval": e,
            "target": model_name,
            "model": exp.config.models.get(&target).unwrap_or(&model),
            "judge": e.judge.as_ref().map(|j| &c.models[j]),
        }),
        inputs,
        outputs: vec![dir.join("metrics.json")],
        servers: served(
            exp,
            &[Some(target.as_str()), e.judge.as_deref()]
                .into_iter()
                .flatten()
                .filter(|n| exp.config.models.contains_key(*n))
                .collect::<Vec<_>>(),
        ),
        action: Action::Commands(vec![cmd]),
        estimate: Estimate {
            requests: items * per_item,
            tokens: items * per_item * (max_tokens + 300),
            note: format!("{items} items x {per_item} requests"),
        },
    }
}

/// The flags of `seqit eval <benchmark>` for an evaluation section: its data `files`
/// (the problems of HumanEval), the model under test and, for SeqEval, the judge.
fn eval_flags(
    e: &EvalSection,
    files: Vec<PathBuf>,
    answerer: AnswererSettings,
    judge: Option<JudgeSettings>,
) -> Vec<String> {
    let first = files.first().cloned().unwrap_or_default();
    match e.benchmark {
        Benchmark::Gsm8k => {
            let mut settings = Gsm8kSettings::new(first, answerer);
            settings.max_tokens = e.max_tokens.unwrap_or(settings.max_tokens);
            settings.to_flags()
        }
        Benchmark::Mgsm => {
            let mut settings = MgsmSettings::new(files, answerer);
            settings.max_tokens = e.max_tokens.unwrap_or(settings.max_tokens);
            settings.exemplars = e.exemplars.clone();
            settings.to_flags()
        }
        Benchmark::Xquad => {
            let mut settings = XquadSettings::new(files, answerer);
            settings.max_tokens = e.max_tokens.unwrap_or(settings.max_tokens);
            settings.to_flags()
        }
        Benchmark::Seqeval => {
            let mut settings = SeqevalSettings::new(first, answerer, judge.unwrap_or_default());
            settings.max_tokens = e.max_tokens.unwrap_or(settings.max_tokens);
            settings.to_flags()
        }
        Benchmark::Humaneval => {
            let mut settings = HumanevalSettings::new(answerer);
            settings.problems = files.into_iter().next();
            settings.max_tokens = e.max_tokens.unwrap_or(settings.max_tokens);
            settings.samples = e.samples.unwrap_or(settings.samples);
            settings.temperature = e.temperature.unwrap_or(settings.temperature);
            settings.to_flags()
        }
    }
}

/// The model under test, writing to `output`: its key variable and concurrency count
/// only with an endpoint.
fn answerer_settings(model: &ModelSpec, output: PathBuf) -> AnswererSettings {
    let mut settings = AnswererSettings::new(output);
    settings.model = Some(model.model.clone());
    if model.endpoint.is_some() {
        settings.endpoint = model.endpoint.clone();
        settings.run.api_key_env = model
            .api_key_env
            .clone()
            .unwrap_or(settings.run.api_key_env);
        settings.run.concurrency = model.concurrency.unwrap_or(settings.run.concurrency);
    }
    settings
}

/// A judge: its key variable and concurrency count only with an endpoint.
fn judge_settings(model: &ModelSpec) -> JudgeSettings {
    let remote = model.endpoint.is_some();
    JudgeSettings {
        judge_model: Some(model.model.clone()),
        judge_endpoint: model.endpoint.clone(),
        judge_api_key_env: model.api_key_env.clone().filter(|_| remote),
        judge_concurrency: model.concurrency.filter(|_| remote),
        ..JudgeSettings::default()
    }
}

/// The files of a benchmark's `data`: a directory of MGSM or XQuAD files stands for
/// each language's file in it (`mgsm_*`, `xquad.*`), in name order.
fn benchmark_files(benchmark: Benchmark, data: &Path) -> Vec<PathBuf> {
    let prefix = match benchmark {
        Benchmark::Mgsm => "mgsm_",
        Benchmark::Xquad => "xquad.",
        _ => return vec![data.to_path_buf()],
    };
    let Ok(entries) = std::fs::read_dir(data) else {
        return vec![data.to_path_buf()];
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    files.sort();
    files
}

/// Items in a benchmark file, for estimates (0 when it cannot be read yet): lines of
/// GSM8K and MGSM files, questions of an XQuAD (SQuAD-format) file.
fn count_items(benchmark: Benchmark, file: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(file) else {
        return 0;
    };
    match benchmark {
        Benchmark::Xquad => serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("data").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .flat_map(|article| {
                article["paragraphs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|p| p["qas"].as_array().map_or(0, Vec::len))
            .sum(),
        _ => text.lines().filter(|l| !l.trim().is_empty()).count(),
    }
}

/// True when the model is a directory a training stage of this run writes.
fn train_stage_output(model: &ModelSpec, exp: &Experiment) -> bool {
    model.endpoint.is_none() && Path::new(&model.model).starts_with(&exp.run_dir)
}

/// The teacher flags for `model`, with the run's request cache and seed (the decoding
/// left at its defaults for the caller to set).
fn teacher_settings(model: &ModelSpec, cache: &Path, seed: u64) -> TeacherSettings {
    let mut teacher: TeacherSettings = clap_defaults();
    teacher.teacher_model = Some(model.model.clone());
    if let Some(endpoint) = &model.endpoint {
        teacher.teacher_endpoint = Some(endpoint.clone());
        teacher.api_key_env = model.api_key_env.clone().unwrap_or(teacher.api_key_env);
        teacher.concurrency = model.concurrency.unwrap_or(teacher.concurrency);
    }
    teacher.cache = Some(cache.to_path_buf());
    teacher.seed = seed;
    teacher
}

/// A model given as a local file or directory (hashed as an input).
fn local_model(model: &ModelSpec) -> Option<PathBuf> {
    model.is_local_path().then(|| PathBuf::from(&model.model))
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--flag value` pairs (or lone switches) of a command line, sorted: flags built
    /// from settings come in the order their fields serialize.
    fn pairs(flags: &[String]) -> Vec<String> {
        let mut pairs: Vec<String> = Vec::new();
        for flag in flags {
            match pairs.last_mut() {
                Some(last) if !flag.starts_with("--") => *last = format!("{last} {flag}"),
                _ => pairs.push(flag.clone()),
            }
        }
        pairs.sort();
        pairs
    }

    #[test]
    fn a_judges_and_a_teachers_key_variable_and_concurrency_reach_them() {
        let model = ModelSpec {
            model: "gpt-4o".into(),
            endpoint: Some("https://api.example.com/v1".into()),
            api_key_env: Some("JUDGE_KEY".into()),
            concurrency: Some(8),
            ..ModelSpec::default()
        };
        assert_eq!(
            pairs(&judge_settings(&model).to_flags()),
            [
                "--judge-api-key-env JUDGE_KEY",
                "--judge-concurrency 8",
                "--judge-endpoint https://api.example.com/v1",
                "--judge-model gpt-4o",
            ]
        );
        let teacher = teacher_settings(&model, Path::new("run/cache.sqlite"), 3);
        assert_eq!(
            pairs(&teacher.to_flags()),
            [
                "--api-key-env JUDGE_KEY",
                "--cache run/cache.sqlite",
                "--concurrency 8",
                "--seed 3",
                "--teacher-endpoint https://api.example.com/v1",
                "--teacher-model gpt-4o",
            ]
        );
    }

    #[test]
    fn eval_flags_name_only_what_the_section_sets() {
        let section = |toml: &str| toml::from_str::<EvalSection>(toml).unwrap();
        let served = ModelSpec {
            model: "sit".into(),
            endpoint: Some("http://127.0.0.1:8000/v1".into()),
            concurrency: Some(4),
            ..ModelSpec::default()
        };
        let local = ModelSpec {
            model: "smollm2-135m".into(),
            api_key_env: Some("IGNORED".into()),
            ..ModelSpec::default()
        };
        let mut answerer = answerer_settings(&served, "runs/x/eval".into());
        answerer.run.limit = Some(5);
        answerer.run.cache = Some("runs/x/cache.sqlite".into());
        let seqeval = section("benchmark = \"seqeval\"\nmax_tokens = 256\n");
        assert_eq!(
            pairs(&eval_flags(
                &seqeval,
                vec!["set.jsonl".into()],
                answerer,
                Some(judge_settings(&local))
            )),
            [
                "--cache runs/x/cache.sqlite",
                "--concurrency 4",
                "--data set.jsonl",
                "--endpoint http://127.0.0.1:8000/v1",
                "--judge-model smollm2-135m",
                "--limit 5",
                "--max-tokens 256",
                "--model sit",
                "--output runs/x/eval",
            ]
        );
        let humaneval = section("benchmark = \"humaneval\"\nsamples = 5\ntemperature = 0.2\n");
        assert_eq!(
            pairs(&eval_flags(
                &humaneval,
                vec![],
                answerer_settings(&local, "runs/x/he".into()),
                None
            )),
            [
                "--model smollm2-135m",
                "--output runs/x/he",
                "--samples 5",
                "--temperature 0.2",
            ]
        );
        let mgsm = section("benchmark = \"mgsm\"\nexemplars = \"train\"\n");
        assert_eq!(
            pairs(&eval_flags(
                &mgsm,
                vec!["mgsm_de.tsv".into(), "mgsm_fr.tsv".into()],
                answerer_settings(&local, "runs/x/mgsm".into()),
                None
            )),
            [
                "--data mgsm_de.tsv",
                "--data mgsm_fr.tsv",
                "--exemplars train",
                "--model smollm2-135m",
                "--output runs/x/mgsm",
            ]
        );
    }

    #[test]
    fn the_paper_preset_fills_in_the_papers_settings() {
        let run: TrainSection = toml::from_str(
            "name = \"sit\"\ndata = \"sit\"\nbase = \"smol\"\nmethod = \"full\"\npreset = \"paper\"\nbatch_size = 8\n",
        )
        .unwrap();
        let mut settings = train_settings(&run);
        apply_paper_recipe(&mut settings);
        assert_eq!(
            settings,
            TrainSettings {
                full: true,
                lr: Some(2e-5),
                epochs: Some(3),
                max_len: Some(2048),
                template: Some("tulu".into()),
                batch_size: Some(8),
                grad_accum: Some(16),
                warmup_ratio: Some(0.03),
                schedule: Some("linear".into()),
                weight_decay: Some(0.0),
                ..TrainSettings::default()
            }
        );
    }
}
