//! One module per subcommand, plus the helpers they share.

pub(crate) mod augment;
mod batch;
pub mod build;
mod data;
mod data_show;
pub(crate) mod doctor;
mod endpoint;
mod eval;
mod generate;
mod model;
mod recipe;
mod report;
mod run;
pub(crate) mod seqeval;
mod serve;
pub(crate) mod setup;
mod train;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::DType;
use seqit_core::{Constraint, SamplingParams};
use seqit_engine::{resolve_model, Engine, EngineOptions};
use seqit_model::WeightStorage;

use crate::cli::{Cli, Command, ConstraintArgs, DecodingArgs, ModelArgs, ModelCommand, WeightsArg};

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Train(args) => {
            crate::allocator::tune_for_training();
            train::run(args)
        }
        Command::ExportRecipe(args) => recipe::run(args),
        Command::Model(ModelCommand::Convert(args)) => model::convert(args),
        Command::Batch(command) => batch::run(command),
        Command::Data(command) => data::run(command),
        Command::Eval(command) => eval::run(command),
        Command::Build(command) => build::run(command),
        Command::Augment(args) => augment::run(args),
        Command::Seqeval(command) => seqeval::run(command),
        Command::Run(args) => {
            crate::allocator::tune_for_training();
            run::run(args)
        }
        Command::Report(args) => report::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Setup(args) => setup::setup(args),
        Command::Completions(args) => setup::completions(args),
        Command::Man(args) => setup::man(args),
        Command::Supervise(args) => {
            let code = seqit_run::supervise(args.parent, &args.command, &args.log)?;
            std::process::exit(code)
        }
    }
}

fn load_engine(args: &ModelArgs) -> Result<Engine> {
    let path = resolve_model(args.model.as_deref())?;
    let device = seqit_model::parse_device(&args.device)?;
    let options = EngineOptions {
        weights: match args.weights {
            WeightsArg::Fast => WeightStorage::Fast,
            WeightsArg::AsStored => WeightStorage::AsStored,
            WeightsArg::F32 => WeightStorage::Dequantized,
        },
        max_batch: args.batch_size.max(1),
        prefix_cache_mib: args.prefix_cache_mib,
        device: device.clone(),
        dtype: match args.dtype.as_deref() {
            Some(name) => seqit_train::Precision::parse(name)?.dtype(),
            None if device.is_cpu() => DType::F32,
            None => DType::BF16,
        },
        chat_template_variables: args.chat_template_variables.iter().cloned().collect(),
    };
    let Some(adapter) = &args.adapter else {
        let engine = Engine::load_for_inference(&path, options)?;
        crate::allocator::return_freed_memory();
        return Ok(engine);
    };
    let mut engine = Engine::load(&path, options)?;
    engine.apply_adapter(adapter)?;
    Ok(engine)
}

fn sampling_params(args: &DecodingArgs) -> Result<SamplingParams> {
    let params = SamplingParams {
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        constraint: constraint(&args.constraint)?,
        logprobs: args.logprobs,
        ..args
            .sampling
            .params(args.max_tokens)
            .map_err(anyhow::Error::msg)?
    };
    params.validate().map_err(anyhow::Error::msg)?;
    Ok(params)
}

/// The constraint the flags ask for; files are read here so that a missing or invalid
/// one is reported before any model loads.
fn constraint(args: &ConstraintArgs) -> Result<Option<Constraint>> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))
    };
    Ok(if let Some(path) = &args.json_schema {
        let schema = serde_json::from_str(&read(path)?)
            .with_context(|| format!("`{}` (--json-schema) is not valid JSON", path.display()))?;
        Some(Constraint::JsonSchema { schema })
    } else if args.json_object {
        Some(Constraint::JsonObject)
    } else if let Some(pattern) = &args.regex {
        Some(Constraint::Regex {
            pattern: pattern.clone(),
        })
    } else if let Some(options) = &args.choice {
        Some(Constraint::Choice {
            options: options.clone(),
        })
    } else if let Some(path) = &args.grammar {
        Some(Constraint::Grammar { lark: read(path)? })
    } else {
        None
    })
}
