//! One module per subcommand, plus the helpers they share.

pub(crate) mod augment;
mod batch;
pub mod build;
mod data;
mod data_show;
mod endpoint;
mod eval;
mod eval_run;
mod generate;
mod model;
mod recipe;
mod report;
mod run;
pub(crate) mod seqeval;
mod serve;
mod train;
pub mod vqa;

use anyhow::Result;
use seqit_core::SamplingParams;
use seqit_engine::{resolve_model, Engine, EngineOptions};
use seqit_model::GgufWeights;

use crate::cli::{Cli, Command, DecodingArgs, ModelArgs, ModelCommand, WeightsArg};

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
    }
}

fn load_engine(args: &ModelArgs) -> Result<Engine> {
    let path = resolve_model(args.model.as_deref())?;
    let mut engine = Engine::load(
        &path,
        EngineOptions {
            gguf_weights: match args.weights {
                WeightsArg::Fast => GgufWeights::Fast,
                WeightsArg::AsStored => GgufWeights::AsStored,
                WeightsArg::F32 => GgufWeights::Dequantized,
            },
            max_batch: args.batch_size.max(1),
            prefix_cache_mib: args.prefix_cache_mib,
        },
    )?;
    if let Some(adapter) = &args.adapter {
        engine.apply_adapter(adapter)?;
    }
    Ok(engine)
}

fn sampling_params(args: &DecodingArgs) -> Result<SamplingParams> {
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
    };
    params.validate().map_err(anyhow::Error::msg)?;
    Ok(params)
}
